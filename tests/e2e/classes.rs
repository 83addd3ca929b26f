//! Every error class, for every adapter: each provider's documented error
//! responses end up in the right class (seen in the attempt metrics).

use crate::support::mock::Wire;
use crate::support::*;
use serde_json::json;

/// (HTTP status, body, outcome label the attempt must be counted under).
type Case = (u16, serde_json::Value, &'static str);

async fn check(adapter: &str, wire: Wire, base: impl Fn(&MockProvider) -> String, mut cases: Vec<Case>) {
    cases.sort_by_key(|(status, _, _)| *status == 429);
    let (x, b) = (MockProvider::start("x").await, MockProvider::start("b").await);
    let config = format!(
        r#"
[providers.x]
adapter = "{adapter}"
base_url = "{}"
api_key_env = "KEY_A"
[providers.x.models.m]

[providers.b]
adapter = "openai"
base_url = "{}"
api_key_env = "KEY_B"
[providers.b.models.model-b]

[routes.chat]
targets = ["x/m", "b/model-b"]
"#,
        base(&x),
        b.url()
    );
    let gw = Gateway::start(&config, KEYS);
    // A success after each error keeps the circuit closed; the rate limit comes
    // last, as its cooldown takes `x` out of the plan.
    for (status, body, _) in &cases {
        x.script([
            Script::Status(*status, vec![], body.to_string()),
            Script::Wire(wire, "ok"),
        ]);
        post(&gw.chat_url(), &chat("chat")).await;
        if *status != 429 {
            assert_eq!(
                post(&gw.chat_url(), &chat("chat"))
                    .await
                    .header("x-switchboard-provider"),
                "x"
            );
        }
    }
    let metrics = gw.metrics().await;
    for (status, body, outcome) in &cases {
        let expected = format!(r#"switchboard_attempts_total{{provider="x",model="m",outcome="{outcome}"}}"#);
        assert!(
            metrics.contains(&expected),
            "{adapter}: {status} {body} should be {outcome}:\n{metrics}"
        );
    }
}

#[tokio::test]
async fn openai_error_classes() {
    let error = |message: &str, kind: &str, code: serde_json::Value| json!({"error": {"message": message, "type": kind, "code": code}});
    check(
        "openai",
        Wire::OpenAi,
        |m| m.url(),
        vec![
            (
                429,
                error("Rate limit reached", "requests", json!("rate_limit_exceeded")),
                "rate_limited",
            ),
            (
                503,
                error("The engine is currently overloaded", "server_error", json!(null)),
                "overloaded",
            ),
            (
                500,
                error("The server had an error", "server_error", json!(null)),
                "server_error",
            ),
            (
                504,
                error("Gateway timeout", "server_error", json!(null)),
                "timeout",
            ),
            (
                401,
                error(
                    "Incorrect API key provided",
                    "invalid_request_error",
                    json!("invalid_api_key"),
                ),
                "auth",
            ),
            (
                400,
                error(
                    "Invalid value for 'temperature'",
                    "invalid_request_error",
                    json!(null),
                ),
                "bad_request",
            ),
            (
                400,
                error(
                    "This model's maximum context length is 128000 tokens",
                    "invalid_request_error",
                    json!("context_length_exceeded"),
                ),
                "context_length",
            ),
            (
                400,
                error(
                    "Your request was rejected by the safety system",
                    "invalid_request_error",
                    json!("content_policy_violation"),
                ),
                "content_filter",
            ),
            (
                404,
                error(
                    "The model `gpt-9` does not exist",
                    "invalid_request_error",
                    json!("model_not_found"),
                ),
                "not_found",
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn anthropic_error_classes() {
    let error =
        |kind: &str, message: &str| json!({"type": "error", "error": {"type": kind, "message": message}});
    check(
        "anthropic",
        Wire::Anthropic,
        |m| format!("http://{}", m.addr),
        vec![
            (
                429,
                error(
                    "rate_limit_error",
                    "Number of requests has exceeded your rate limit",
                ),
                "rate_limited",
            ),
            (529, error("overloaded_error", "Overloaded"), "overloaded"),
            (500, error("api_error", "Internal server error"), "server_error"),
            (401, error("authentication_error", "invalid x-api-key"), "auth"),
            (
                403,
                error("permission_error", "Your API key does not have permission"),
                "auth",
            ),
            (
                400,
                error("invalid_request_error", "messages: roles must alternate"),
                "bad_request",
            ),
            (
                400,
                error(
                    "invalid_request_error",
                    "prompt is too long: 201000 tokens > 200000 maximum",
                ),
                "context_length",
            ),
            (
                413,
                error(
                    "request_too_large",
                    "Request exceeds the maximum allowed number of bytes",
                ),
                "context_length",
            ),
            (404, error("not_found_error", "model: claude-9"), "not_found"),
        ],
    )
    .await;
}

#[tokio::test]
async fn gemini_error_classes() {
    let error = |code: u16, status: &str, message: &str| json!({"error": {"code": code, "status": status, "message": message}});
    check(
        "gemini",
        Wire::Gemini,
        |m| format!("http://{}", m.addr),
        vec![
            (
                429,
                error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted"),
                "rate_limited",
            ),
            (
                503,
                error(503, "UNAVAILABLE", "The model is overloaded"),
                "overloaded",
            ),
            (
                500,
                error(500, "INTERNAL", "An internal error has occurred"),
                "server_error",
            ),
            (
                504,
                error(504, "DEADLINE_EXCEEDED", "Deadline exceeded"),
                "timeout",
            ),
            (403, error(403, "PERMISSION_DENIED", "API key not valid"), "auth"),
            (
                401,
                error(
                    401,
                    "UNAUTHENTICATED",
                    "Request had invalid authentication credentials",
                ),
                "auth",
            ),
            (
                400,
                error(400, "INVALID_ARGUMENT", "Invalid JSON payload received"),
                "bad_request",
            ),
            (
                400,
                error(
                    400,
                    "INVALID_ARGUMENT",
                    "The input token count (2000000) exceeds the maximum number of tokens allowed (1048576)",
                ),
                "context_length",
            ),
            (
                404,
                error(404, "NOT_FOUND", "models/gemini-9 is not found"),
                "not_found",
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn openai_streams_tool_call_arguments_and_survives_split_characters() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "model-a",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let events = [
        chunk(json!({"role": "assistant", "content": "Prüfe 天気"}), json!(null)),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "weather", "arguments": ""}}]}),
            json!(null),
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
            json!(null),
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Köln\"}"}}]}),
            json!(null),
        ),
        chunk(json!({}), json!("tool_calls")),
    ];
    let mut bytes: Vec<u8> = events
        .iter()
        .map(|e| format!("data: {e}\n\n"))
        .collect::<String>()
        .into_bytes();
    bytes.extend_from_slice(b"data: [DONE]\n\n");
    let split = bytes.windows(3).position(|w| w == "天".as_bytes()).unwrap() + 1;
    a.set_default(Script::RawFrames(vec![
        bytes[..split].to_vec(),
        bytes[split..].to_vec(),
    ]));
    let gw = Gateway::start(&two_providers(&a, &b, ""), KEYS);
    let mut request = chat("chat");
    request["stream"] = json!(true);
    let reply = post(&gw.chat_url(), &request).await;
    assert_eq!(reply.streamed_text(), "Prüfe 天気");
    let arguments: String = reply
        .sse_data()
        .iter()
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(arguments, "{\"city\":\"Köln\"}");
    assert_eq!(reply.sse_data().last().unwrap(), "[DONE]");
}
