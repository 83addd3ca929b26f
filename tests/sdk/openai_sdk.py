"""Drives a running Switchboard with the official `openai` Python SDK.

Usage: python3 openai_sdk.py BASE_URL GATEWAY_KEY
The gateway's route `chat` must answer "Hello from the mock" from provider `a`
twice, then cut its third (streamed) answer after "Hello from".
Prints one line per check and exits non-zero on the first failure.
"""

import sys

import openai
from openai import OpenAI

base_url, key = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0)
messages = [{"role": "user", "content": "Say hello"}]

# Non-streaming, with the raw response for the gateway's headers.
raw = client.chat.completions.with_raw_response.create(model="chat", messages=messages)
completion = raw.parse()
assert completion.choices[0].message.content == "Hello from the mock", completion
assert completion.model == "model-a", completion.model
assert completion.usage.total_tokens == 18, completion.usage
assert raw.headers["x-switchboard-provider"] == "a", raw.headers
print("non-streaming: ok")

# Streaming, with the usage chunk.
stream = client.chat.completions.create(
    model="chat", messages=messages, stream=True, stream_options={"include_usage": True}
)
text, usage = "", None
for chunk in stream:
    if chunk.choices:
        text += chunk.choices[0].delta.content or ""
    if chunk.usage:
        usage = chunk.usage
assert text == "Hello from the mock", text
assert usage is not None and usage.completion_tokens == 7, usage
print("streaming: ok")

# Models.
assert [m.id for m in client.models.list()] == ["chat"]
print("models: ok")

# Errors arrive as the SDK's typed exceptions.
try:
    client.chat.completions.create(model="nope", messages=messages)
    raise AssertionError("unknown model accepted")
except openai.NotFoundError as e:
    assert e.code == "model_not_found", e
print("not found: ok")

try:
    OpenAI(base_url=f"{base_url}/v1", api_key="wrong", max_retries=0).chat.completions.create(
        model="chat", messages=messages
    )
    raise AssertionError("wrong key accepted")
except openai.AuthenticationError:
    pass
print("auth: ok")

# A stream cut after its first chunks raises instead of ending quietly.
stream = client.chat.completions.create(model="chat", messages=messages, stream=True)
received = ""
try:
    for chunk in stream:
        if chunk.choices:
            received += chunk.choices[0].delta.content or ""
    raise AssertionError(f"a broken stream ended quietly after {received!r}")
except openai.APIError as e:
    assert "incomplete" in str(e.message), e
assert received == "Hello from", received
print("broken stream: ok")
