"""The official `openai` Python SDK's Responses and embeddings calls against
the gateway, unchanged.

Usage: openai_apis.py BASE_URL GATEWAY_KEY ROUTE EMBEDDING_ROUTE

Each Responses step takes one scripted answer from the mock behind ROUTE
(see tests/e2e/sdk.rs); the embeddings steps take two from the mock behind
EMBEDDING_ROUTE. Answers are validated against the SDK's own types.
Prints `SUMMARY <json>` of what the SDK saw.
"""

import json
import sys

import openai
from openai.types import CreateEmbeddingResponse
from openai.types.responses import Response

base_url, key, route, embed_route = sys.argv[1:5]
client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0)
summary = {}

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def create(**kwargs):
    raw = client.responses.with_raw_response.create(model=route, store=False, **kwargs)
    assert raw.http_response.status_code == 200, raw.http_response.text
    return Response.model_validate(json.loads(raw.http_response.text)), raw.http_response.headers


# 1. Plain.
response, headers = create(input="Say hello")
summary["text"] = response.output_text
summary["status"] = response.status
summary["provider_header"] = headers.get("x-switchboard-provider")

# 2. Streamed: the SDK's own accumulation of the semantic events.
kinds = []
with client.responses.stream(model=route, input="Say hello", store=False) as stream:
    for event in stream:
        kinds.append(event.type)
    final = stream.get_final_response()
summary["stream_text"] = final.output_text
summary["stream_first_last"] = [kinds[0], kinds[-1]]
summary["stream_deltas"] = kinds.count("response.output_text.delta") > 0

# 3. A function call round trip.
ask = [{"role": "user", "content": "What is the weather in Paris?"}]
response, _ = create(input=ask, tools=[WEATHER])
call = next(item for item in response.output if item.type == "function_call")
summary["call"] = [call.name, json.loads(call.arguments)]
response, _ = create(
    input=ask
    + [
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"},
    ],
    tools=[WEATHER],
)
summary["after_call"] = response.output_text

# 4. Structured output.
response, _ = create(
    input="Where is the Eiffel tower?",
    text={
        "format": {
            "type": "json_schema",
            "name": "place",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": False,
            },
        }
    },
)
summary["structured"] = json.loads(response.output_text)

# 5. State the gateway does not keep is refused, saying so.
try:
    client.responses.create(model=route, input="Hi", previous_response_id="resp_123")
    summary["previous_response_id"] = "accepted"
except openai.BadRequestError as error:
    summary["previous_response_id"] = [error.status_code, "stateless" in error.message]

# 6. Embeddings: the SDK's default (base64, decoded by the SDK) and floats.
default = client.embeddings.create(model=embed_route, input=["hello", "world"])
CreateEmbeddingResponse.model_validate(default.model_dump())
floats = client.embeddings.create(model=embed_route, input="hello", encoding_format="float")
CreateEmbeddingResponse.model_validate(floats.model_dump())
summary["embeddings"] = [[round(x, 4) for x in e.embedding] for e in default.data]
summary["float_embedding"] = [round(x, 4) for x in floats.data[0].embedding]

print("SUMMARY " + json.dumps(summary))
