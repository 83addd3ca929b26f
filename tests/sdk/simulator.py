"""The simulated provider through the gateway, driven by the official openai
SDK as a newcomer's first client would: structured outputs with a nested
pydantic model, JSON mode, a tool round trip, tool calls streamed in
pieces, and n choices. Usage: simulator.py <base_url> <route>."""

import json
import sys
from enum import Enum
from typing import List, Optional

from openai import OpenAI
from pydantic import BaseModel

base_url, route = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base_url, api_key="anything", max_retries=0)
ask = [{"role": "user", "content": "Tell me about someone."}]


class Role(str, Enum):
    admin = "admin"
    member = "member"


class Address(BaseModel):
    street: str
    city: str


class Person(BaseModel):
    name: str
    age: int
    role: Role
    addresses: List[Address]
    nickname: Optional[str] = None


parsed = client.chat.completions.parse(model=route, messages=ask, response_format=Person)
person = parsed.choices[0].message.parsed
assert isinstance(person, Person), person
assert person.addresses and isinstance(person.addresses[0], Address), person
assert parsed.id.startswith("chatcmpl-sim-") and parsed.created > 1_700_000_000, parsed

plain = client.chat.completions.create(model=route, messages=ask, response_format={"type": "json_object"})
assert isinstance(json.loads(plain.choices[0].message.content), dict)

tools = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}]
question = [{"role": "user", "content": "What is the weather in Paris?"}]
first = client.chat.completions.create(model=route, messages=question, tools=tools, tool_choice="required")
assert first.choices[0].finish_reason == "tool_calls", first
call = first.choices[0].message.tool_calls[0]
arguments = json.loads(call.function.arguments)
assert set(arguments) == {"city", "unit"} and arguments["unit"] in ("c", "f"), arguments
followed = question + [first.choices[0].message, {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}]
second = client.chat.completions.create(model=route, messages=followed, tools=tools)
assert "sunny, 21 C" in second.choices[0].message.content, second

# Under `auto`, naming the tool asks for it.
auto = client.chat.completions.create(
    model=route, messages=[{"role": "user", "content": "Please call get_weather for Oslo."}], tools=tools
)
assert auto.choices[0].message.tool_calls, auto

streamed = client.chat.completions.create(
    model=route,
    messages=question,
    tools=tools,
    tool_choice={"type": "function", "function": {"name": "get_weather"}},
    stream=True,
)
pieces = []
for chunk in streamed:
    for delta in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
        if delta.function and delta.function.arguments:
            pieces.append(delta.function.arguments)
assert len(pieces) > 1, pieces
assert set(json.loads("".join(pieces))) == {"city", "unit"}, pieces

two = client.chat.completions.create(model=route, messages=ask, n=2)
assert [c.index for c in two.choices] == [0, 1], two
assert "[simulated answer" in two.choices[0].message.content

print("simulator ok")
