"""The official `anthropic` Python SDK against the gateway, unchanged.

Usage: anthropic_sdk.py BASE_URL GATEWAY_KEY ROUTE

Each step takes one scripted answer from the mock behind ROUTE (see
tests/e2e/sdk.rs). Every answer and stream event is validated against the
SDK's own types (pydantic, strict about required fields and their types).
Prints `SUMMARY <json>` of what the SDK saw.
"""

import base64
import json
import sys

import anthropic
import pydantic
from anthropic.types import Message, RawMessageStreamEvent

base_url, key, route = sys.argv[1], sys.argv[2], sys.argv[3]
# The SDK retries 429, 5xx and 529 by default; the checks want each answer as it is.
client = anthropic.Anthropic(base_url=base_url, api_key=key, max_retries=0)
events_adapter = pydantic.TypeAdapter(RawMessageStreamEvent)
summary = {}

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def validated(raw):
    """The raw HTTP answer as a Message, validated field by field."""
    assert raw.http_response.status_code == 200, raw.http_response.text
    return Message.model_validate(json.loads(raw.http_response.text))


def create(**kwargs):
    kwargs.setdefault("max_tokens", 256)
    raw = client.messages.with_raw_response.create(model=route, **kwargs)
    return validated(raw), raw.http_response.headers


def text_of(message):
    return "".join(b.text for b in message.content if b.type == "text")


# 1. A plain answer.
message, headers = create(messages=[{"role": "user", "content": "Say hello"}])
summary["text"] = text_of(message)
summary["stop_reason"] = message.stop_reason
summary["usage"] = [message.usage.input_tokens, message.usage.output_tokens]
summary["provider_header"] = headers.get("x-switchboard-provider")

# 2. The same, streamed: every raw event validated, then the SDK's own accumulation.
names = []
with client.messages.stream(
    model=route, max_tokens=256, messages=[{"role": "user", "content": "Say hello"}]
) as stream:
    for event in stream:
        if event.type in ("text", "input_json", "citation", "thinking", "signature"):
            continue  # the helper's own derived events
        events_adapter.validate_python(event.model_dump())
        names.append(event.type)
    final = stream.get_final_message()
Message.model_validate(final.model_dump())
summary["stream_text"] = text_of(final)
summary["stream_stop_reason"] = final.stop_reason
summary["stream_first_last"] = [names[0], names[-1]]
summary["stream_output_tokens"] = final.usage.output_tokens

# 3. A tool round trip.
ask = [{"role": "user", "content": "What is the weather in Paris?"}]
message, _ = create(messages=ask, tools=[WEATHER])
call = next(b for b in message.content if b.type == "tool_use")
summary["tool"] = [message.stop_reason, call.name, call.input]
message, _ = create(
    messages=ask
    + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in message.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 21 C"}]},
    ],
    tools=[WEATHER],
)
summary["after_tool"] = text_of(message)

# 4. Thinking asked for: whatever comes back is a valid message.
message, _ = create(
    messages=[{"role": "user", "content": "Think, then say hello"}],
    thinking={"type": "enabled", "budget_tokens": 1024},
    max_tokens=2048,
)
summary["thinking_blocks"] = [b.type for b in message.content]

# 5. An image.
png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()
message, _ = create(
    messages=[
        {
            "role": "user",
            "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}},
                {"type": "text", "text": "What is this?"},
            ],
        }
    ]
)
summary["image_text"] = text_of(message)

# 6. A stream that breaks: the SDK raises, after the text that came first.
received = []
try:
    with client.messages.stream(
        model=route, max_tokens=256, messages=[{"role": "user", "content": "Say hello"}]
    ) as stream:
        for text in stream.text_stream:
            received.append(text)
    summary["broken"] = "completed"
except anthropic.APIStatusError as error:
    summary["broken"] = [type(error).__name__, "".join(received), error.body["error"]["type"]]

# 7. Errors, in the SDK's own classes.
errors = []
try:
    client.messages.create(model="no-such-model", max_tokens=8, messages=[{"role": "user", "content": "x"}])
except anthropic.NotFoundError as error:
    errors.append(["not_found", error.status_code, error.body["error"]["type"]])
try:
    anthropic.Anthropic(base_url=base_url, api_key="wrong", max_retries=0).messages.create(
        model=route, max_tokens=8, messages=[{"role": "user", "content": "x"}]
    )
except anthropic.AuthenticationError as error:
    errors.append(["auth", error.status_code, error.body["error"]["type"]])
try:
    client.messages.create(model=route, max_tokens=8, messages=[{"role": "user", "content": "x"}])
except anthropic.APIStatusError as error:
    errors.append(["overloaded", error.status_code, error.body["error"]["type"]])
summary["errors"] = errors

# 8. Counting tokens.
summary["count_tokens"] = client.messages.count_tokens(
    model=route, messages=[{"role": "user", "content": "x" * 400}]
).input_tokens

print("SUMMARY " + json.dumps(summary))
