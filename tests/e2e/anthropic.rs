//! The `anthropic` adapter against a mock speaking the Messages API as
//! Anthropic documents it: requests checked field by field, answers,
//! streams and errors translated to OpenAI's format.

use crate::support::*;
use serde_json::{Value, json};

/// Provider `claude` (the anthropic adapter) first, provider `b` (openai) second.
fn config(claude: &MockProvider, b: &MockProvider, options: &str) -> String {
    format!(
        r#"
[providers.claude]
adapter = "anthropic"
base_url = "http://{claude}"
api_key_env = "ANTHROPIC_KEY"
options = {options}
timeout_ms = 2000
first_token_timeout_ms = 2000
idle_timeout_ms = 2000

[providers.claude.models.claude-sonnet-4-5]
input_price = 3.0
output_price = 15.0
cached_input_price = 0.30
cache_write_price = 3.75
context_window = 200000

[providers.b]
adapter = "openai"
base_url = "{b}"
api_key_env = "KEY_B"

[providers.b.models.model-b]

[routes.chat]
targets = ["claude/claude-sonnet-4-5", "b/model-b"]
"#,
        claude = claude.addr,
        b = b.url()
    )
}

/// A `created` of the last minute: a real time, not 0.
pub fn assert_recent(created: &Value) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let created = created.as_u64().expect("created is a number");
    assert!(
        now - 60 <= created && created <= now,
        "created {created}, now {now}"
    );
}

const ENV: &[(&str, &str)] = &[("ANTHROPIC_KEY", "sk-ant-secret"), ("KEY_B", "kb")];

fn message(content: Value, stop_reason: &str) -> Script {
    let body = json!({
        "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
        "content": content, "stop_reason": stop_reason, "stop_sequence": null,
        "usage": {"input_tokens": 100, "output_tokens": 20, "cache_creation_input_tokens": 10, "cache_read_input_tokens": 50}
    });
    Script::Status(200, vec![], body.to_string())
}

async fn start(options: &str) -> (MockProvider, MockProvider, Gateway) {
    let (claude, b) = (
        MockProvider::start("claude").await,
        MockProvider::start("b").await,
    );
    let gw = Gateway::start(&config(&claude, &b, options), ENV);
    (claude, b, gw)
}

#[tokio::test]
async fn translates_a_full_request_field_by_field() {
    let (claude, _b, gw) = start("{ default_max_tokens = 1024 }").await;
    claude.set_default(message(json!([{"type": "text", "text": "ok"}]), "end_turn"));
    let request = json!({
        "model": "chat",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
            {"role": "user", "content": "What is in this picture?"},
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
            ]},
            {"role": "assistant", "content": "Let me look it up.", "tool_calls": [
                {"id": "toolu_01", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"cat\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "toolu_01", "content": "a cat"},
            {"role": "user", "content": "So?"}
        ],
        "tools": [{"type": "function", "function": {"name": "lookup", "description": "Search", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}],
        "tool_choice": "required",
        "parallel_tool_calls": false,
        "temperature": 0.5, "top_p": 0.9, "stop": "END", "user": "user-42"
    });
    let reply = post(&gw.chat_url(), &request).await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    let seen = &claude.seen()[0];
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.headers["x-api-key"], "sk-ant-secret");
    assert_eq!(seen.headers["anthropic-version"], "2023-06-01");
    assert!(seen.headers.get("authorization").is_none());
    let sent = &seen.body;
    assert_eq!(sent["model"], "claude-sonnet-4-5");
    assert_eq!(
        sent["max_tokens"], 1024,
        "always sent; the configured default when the caller gives none"
    );
    assert_eq!(
        sent["system"],
        json!([{"type": "text", "text": "You are terse."}, {"type": "text", "text": "Answer in English."}])
    );
    assert_eq!(sent["temperature"], 0.5);
    assert_eq!(sent["top_p"], 0.9);
    assert_eq!(sent["stop_sequences"], json!(["END"]));
    assert_eq!(sent["metadata"], json!({"user_id": "user-42"}));
    assert_eq!(
        sent["tools"],
        json!([{"name": "lookup", "description": "Search", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}])
    );
    assert_eq!(
        sent["tool_choice"],
        json!({"type": "any", "disable_parallel_tool_use": true})
    );
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
            ]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Let me look it up."},
                {"type": "tool_use", "id": "toolu_01", "name": "lookup", "input": {"q": "cat"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "a cat"},
                {"type": "text", "text": "So?"}
            ]}
        ]),
        "consecutive user turns merge; the tool result opens the next user turn"
    );
}

#[tokio::test]
async fn tool_choice_variants_and_the_callers_max_tokens() {
    let (claude, _b, gw) = start("{}").await;
    claude.set_default(message(json!([{"type": "text", "text": "ok"}]), "end_turn"));
    let tools = json!([{"type": "function", "function": {"name": "f"}}]);
    for (choice, expected) in [
        (json!("auto"), json!({"type": "auto"})),
        (json!("none"), json!({"type": "none"})),
        (
            json!({"type": "function", "function": {"name": "f"}}),
            json!({"type": "tool", "name": "f"}),
        ),
    ] {
        let mut request = chat("chat");
        request["tools"] = tools.clone();
        request["tool_choice"] = choice;
        request["max_completion_tokens"] = json!(77);
        assert_eq!(post(&gw.chat_url(), &request).await.status, 200);
        let sent = claude.seen().last().unwrap().body.clone();
        assert_eq!(sent["tool_choice"], expected);
        assert_eq!(sent["max_tokens"], 77);
        assert_eq!(
            sent["tools"][0]["input_schema"],
            json!({"type": "object", "properties": {}})
        );
    }
}

#[tokio::test]
async fn answers_with_text_tool_calls_thinking_and_cached_usage() {
    let (claude, _b, gw) = start("{}").await;
    claude.set_default(message(
        json!([
            {"type": "thinking", "thinking": "The user wants weather.", "signature": "sig-abc"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_9", "name": "weather", "input": {"city": "Paris"}}
        ]),
        "tool_use",
    ));
    let request = serde_json::to_vec(&chat("chat")).unwrap();
    let reply = post_with(&gw.chat_url(), request, &[("x-request-id", "trace-42")]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.completion();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "claude-sonnet-4-5-20250929");
    assert_eq!(reply.header("x-request-id"), "trace-42", "the caller's id, back");
    let ours = reply.header("x-switchboard-request-id");
    assert_eq!(ours.len(), 32, "the gateway's own id: {ours}");
    assert_eq!(
        body["id"],
        format!("chatcmpl-{ours}"),
        "the answer's id is the request's"
    );
    assert_recent(&body["created"]);
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], "Checking.");
    assert_eq!(
        choice["message"]["tool_calls"],
        json!([{"id": "toolu_9", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}])
    );
    assert_eq!(choice["message"]["reasoning_content"], "The user wants weather.");
    assert_eq!(choice["message"]["thinking_blocks"][0]["signature"], "sig-abc");
    // input 100 + cache creation 10 + cache read 50
    assert_eq!(body["usage"]["prompt_tokens"], 160);
    assert_eq!(body["usage"]["completion_tokens"], 20);
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 50);
    assert_eq!(body["usage"]["cache_creation_input_tokens"], 10);
    // Each part at its own price: 100 plain, 50 read, 10 written, 20 out.
    let cost: f64 = reply.header("x-switchboard-cost-usd").parse().unwrap();
    let by_hand = (100.0 * 3.0 + 50.0 * 0.30 + 10.0 * 3.75 + 20.0 * 15.0) / 1e6;
    assert!((cost - by_hand).abs() < 1e-9, "{cost} != {by_hand}");
}

#[tokio::test]
async fn thinking_blocks_go_back_with_the_next_turn() {
    let (claude, _b, gw) = start("{}").await;
    claude.set_default(message(json!([{"type": "text", "text": "ok"}]), "end_turn"));
    let thinking = json!({"type": "thinking", "thinking": "hmm", "signature": "sig"});
    let request = json!({"model": "chat", "reasoning_effort": "medium", "messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": null, "thinking_blocks": [thinking],
         "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "r"}
    ]});
    assert_eq!(post(&gw.chat_url(), &request).await.status, 200);
    let sent = &claude.seen()[0].body;
    assert_eq!(sent["messages"][1]["content"][0], thinking);
    assert_eq!(
        sent["thinking"],
        json!({"type": "enabled", "budget_tokens": 4096})
    );
    assert!(
        sent["max_tokens"].as_u64().unwrap() > 4096,
        "max_tokens stays above the thinking budget"
    );
}

#[tokio::test]
async fn maps_every_stop_reason() {
    let (claude, _b, gw) = start("{}").await;
    for (stop, finish) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ] {
        claude.script([message(json!([{"type": "text", "text": "x"}]), stop)]);
        let body = post(&gw.chat_url(), &chat("chat")).await.completion();
        assert_eq!(body["choices"][0]["finish_reason"], finish, "{stop}");
    }
}

#[tokio::test]
async fn json_schema_output_uses_a_forced_tool_and_returns_its_input_as_content() {
    let (claude, _b, gw) = start("{}").await;
    claude.set_default(message(
        json!([{"type": "tool_use", "id": "toolu_j", "name": "json_output", "input": {"answer": 42}}]),
        "tool_use",
    ));
    let mut request = chat("chat");
    let schema =
        json!({"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]});
    request["response_format"] =
        json!({"type": "json_schema", "json_schema": {"name": "result", "schema": schema}});
    let body = post(&gw.chat_url(), &request).await.completion();
    let sent = &claude.seen()[0].body;
    assert_eq!(sent["tools"][0]["name"], "json_output");
    assert_eq!(sent["tools"][0]["input_schema"], schema);
    assert_eq!(
        sent["tool_choice"],
        json!({"type": "tool", "name": "json_output"})
    );
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(
        serde_json::from_str::<Value>(choice["message"]["content"].as_str().unwrap()).unwrap(),
        json!({"answer": 42})
    );
    assert!(choice["message"].get("tool_calls").is_none());
}

fn sse(events: &[(&str, Value)]) -> String {
    events
        .iter()
        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
        .collect()
}

/// The event sequence of Anthropic's streaming documentation: text, then a
/// tool call whose arguments arrive in pieces.
fn documented_stream() -> String {
    sse(&[
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_s", "type": "message", "role": "assistant", "content": [], "model": "claude-sonnet-4-5-20250929", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 472, "output_tokens": 2, "cache_read_input_tokens": 100}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        ("ping", json!({"type": "ping"})),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Okay, let's check"}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " the weather."}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_01T1x", "name": "get_weather", "input": {}}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"location\":"}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": " \"San Francisco, CA\"}"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 89}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ])
}

#[tokio::test]
async fn streams_text_incremental_tool_arguments_finish_and_usage() {
    let (claude, _b, gw) = start("{}").await;
    claude.set_default(Script::RawStream(documented_stream()));
    let mut request = chat("chat");
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let reply = post(&gw.chat_url(), &request).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(claude.seen()[0].body["stream"], true);
    assert_eq!(reply.sse_data().last().unwrap(), "[DONE]");
    assert_eq!(reply.streamed_text(), "Okay, let's check the weather.");
    let chunks = reply.valid_chunks();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk" && c["model"] == "claude-sonnet-4-5-20250929")
    );
    let id = format!("chatcmpl-{}", reply.header("x-switchboard-request-id"));
    assert!(
        chunks.iter().all(|c| c["id"] == id.as_str()),
        "every chunk has the request's id"
    );
    assert_recent(&chunks[0]["created"]);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
        .collect();
    assert_eq!(calls[0][0]["id"], "toolu_01T1x");
    assert_eq!(calls[0][0]["function"]["name"], "get_weather");
    let arguments: String = calls
        .iter()
        .filter_map(|c| c[0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(arguments, "{\"location\": \"San Francisco, CA\"}");
    assert!(calls.len() >= 3, "arguments arrive incrementally");
    let finish: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, vec![&json!("tool_calls")]);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["prompt_tokens"], 572);
    assert_eq!(usage["completion_tokens"], 89);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 100);
}

#[tokio::test]
async fn an_error_event_mid_stream_ends_with_an_error_not_done() {
    let (claude, b, gw) = start("{}").await;
    let stream = documented_stream();
    let cut = stream.find("event: content_block_stop").unwrap();
    let error = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
    claude.set_default(Script::RawStream(format!(
        "{}event: error\ndata: {error}\n\n",
        &stream[..cut]
    )));
    let mut request = chat("chat");
    request["stream"] = json!(true);
    let reply = post(&gw.chat_url(), &request).await;
    let data = reply.sse_data();
    assert_eq!(reply.streamed_text(), "Okay, let's check the weather.");
    assert!(data.last().unwrap().contains("Overloaded"), "{data:?}");
    assert!(!data.contains(&"[DONE]".to_string()));
    assert_eq!(b.hits(), 0);
}

#[tokio::test]
async fn a_stream_split_inside_a_multibyte_character_arrives_intact() {
    let (claude, _b, gw) = start("{}").await;
    let stream = sse(&[
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "m", "model": "claude-sonnet-4-5", "usage": {"input_tokens": 5, "output_tokens": 1}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "héllo 世界 🎉"}}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 4}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ]);
    let bytes = stream.into_bytes();
    let split = bytes.windows(3).position(|w| w == "世".as_bytes()).unwrap() + 1;
    claude.set_default(Script::RawFrames(vec![
        bytes[..split].to_vec(),
        bytes[split..].to_vec(),
    ]));
    let mut request = chat("chat");
    request["stream"] = json!(true);
    let reply = post(&gw.chat_url(), &request).await;
    assert_eq!(reply.streamed_text(), "héllo 世界 🎉");
    assert_eq!(reply.sse_data().last().unwrap(), "[DONE]");
}

#[tokio::test]
async fn classifies_anthropic_errors() {
    // 529 overloaded and 429 move on to `b`; a 429's retry-after cools `claude` down.
    let (claude, b, gw) = start("{}").await;
    claude.script([
        Script::Status(529, vec![], json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}).to_string()),
        Script::Status(429, vec![("retry-after", "30".into())], json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Number of request tokens has exceeded your per-minute rate limit"}}).to_string()),
    ]);
    for _ in 0..3 {
        assert_eq!(
            post(&gw.chat_url(), &chat("chat"))
                .await
                .header("x-switchboard-provider"),
            "b"
        );
    }
    assert_eq!((claude.hits(), b.hits()), (2, 3));
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"provider="claude",model="claude-sonnet-4-5",outcome="overloaded"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"provider="claude",model="claude-sonnet-4-5",outcome="rate_limited"} 1"#),
        "{metrics}"
    );

    let (claude, b, gw) = start("{}").await;
    claude.script([
        Script::Status(400, vec![], json!({"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long: 210000 tokens > 200000 maximum"}}).to_string()),
        Script::Status(401, vec![], json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}).to_string()),
    ]);
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(
        (reply.status, reply.json()["error"]["code"].clone()),
        (400, json!("context_length_exceeded"))
    );
    assert!(reply.text().contains("prompt is too long"));
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(
        reply.header("x-switchboard-provider"),
        "b",
        "an auth failure moves on"
    );
    assert_eq!(b.hits(), 1);
}
