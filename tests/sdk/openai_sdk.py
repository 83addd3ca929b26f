"""Drives a running Switchboard with the official `openai` Python SDK.

Usage: python3 openai_sdk.py BASE_URL GATEWAY_KEY ROUTE

The route's provider must, in order: answer "Hello from the mock"; stream
"Hello from the mock"; call tool `get_weather` with {"city": "Paris"}; answer
the tool result with "It is sunny"; cut a stream after "Hello from". Every
answer reports 11 prompt and 7 completion tokens.

Prints one line per check, then a JSON summary of what the client saw (the
test compares summaries across providers), and exits non-zero on failure.
"""

import json
import sys

import openai
from openai import OpenAI

base_url, key, route = sys.argv[1], sys.argv[2], sys.argv[3]
client = OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0)
messages = [{"role": "user", "content": "Say hello"}]
summary = {}

# Non-streaming, with the raw response for the gateway's headers.
raw = client.chat.completions.with_raw_response.create(model=route, messages=messages)
completion = raw.parse()
summary["text"] = completion.choices[0].message.content
summary["finish_reason"] = completion.choices[0].finish_reason
summary["usage"] = [completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens]
summary["object"] = completion.object
summary["model"] = completion.model
summary["provider_header"] = raw.headers["x-switchboard-provider"]
print("non-streaming: ok")

# Streaming, with the usage chunk.
stream = client.chat.completions.create(
    model=route, messages=messages, stream=True, stream_options={"include_usage": True}
)
text, finish, usage = "", None, None
for chunk in stream:
    if chunk.choices:
        text += chunk.choices[0].delta.content or ""
        finish = chunk.choices[0].finish_reason or finish
    if chunk.usage:
        usage = chunk.usage
summary["stream_text"] = text
summary["stream_finish_reason"] = finish
summary["stream_usage"] = [usage.prompt_tokens, usage.completion_tokens] if usage else None
print("streaming: ok")

# A tool call round trip.
tools = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}]
ask = [{"role": "user", "content": "Weather in Paris?"}]
first = client.chat.completions.create(model=route, messages=ask, tools=tools)
call = first.choices[0].message.tool_calls[0]
summary["tool_finish_reason"] = first.choices[0].finish_reason
summary["tool_call"] = [call.type, call.function.name, json.loads(call.function.arguments)]
followup = ask + [
    {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
    {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"},
]
second = client.chat.completions.create(model=route, messages=followup, tools=tools)
summary["tool_answer"] = second.choices[0].message.content
print("tools: ok")

# Models.
summary["listed"] = route in [m.id for m in client.models.list()]
print("models: ok")

# Errors arrive as the SDK's typed exceptions.
try:
    client.chat.completions.create(model="nope", messages=messages)
    summary["unknown_model"] = "accepted"
except openai.NotFoundError as e:
    summary["unknown_model"] = e.code
try:
    OpenAI(base_url=f"{base_url}/v1", api_key="wrong", max_retries=0).chat.completions.create(
        model=route, messages=messages
    )
    summary["wrong_key"] = "accepted"
except openai.AuthenticationError as e:
    summary["wrong_key"] = e.status_code
print("errors: ok")

# A stream cut after its first chunks raises instead of ending quietly.
stream = client.chat.completions.create(model=route, messages=messages, stream=True)
received = ""
try:
    for chunk in stream:
        if chunk.choices:
            received += chunk.choices[0].delta.content or ""
    summary["broken_stream"] = "ended quietly"
except openai.APIError as e:
    summary["broken_stream"] = "raised" if "incomplete" in str(e.message) else str(e.message)
summary["broken_stream_text"] = received
print("broken stream: ok")

print("SUMMARY " + json.dumps(summary, sort_keys=True))
