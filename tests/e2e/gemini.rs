//! The `gemini` adapter against a mock speaking Gemini's `generateContent`
//! and `streamGenerateContent?alt=sse` as Google documents them.

use crate::support::*;
use serde_json::{Value, json};

fn config(gemini: &MockProvider, b: &MockProvider) -> String {
    format!(
        r#"
[providers.google]
adapter = "gemini"
base_url = "http://{gemini}"
api_key_env = "GEMINI_KEY"
timeout_ms = 2000
first_token_timeout_ms = 2000
idle_timeout_ms = 2000

[providers.google.models."gemini-2.5-flash"]
input_price = 0.30
output_price = 2.50
cached_input_price = 0.03
context_window = 1048576

[providers.b]
adapter = "openai"
base_url = "{b}"
api_key_env = "KEY_B"

[providers.b.models.model-b]

[routes.chat]
targets = ["google/gemini-2.5-flash", "b/model-b"]
"#,
        gemini = gemini.addr,
        b = b.url()
    )
}

const ENV: &[(&str, &str)] = &[("GEMINI_KEY", "AIza-secret"), ("KEY_B", "kb")];

async fn start() -> (MockProvider, MockProvider, Gateway) {
    let (gemini, b) = (
        MockProvider::start("gemini").await,
        MockProvider::start("b").await,
    );
    let gw = Gateway::start(&config(&gemini, &b), ENV);
    (gemini, b, gw)
}

fn answer(parts: Value, finish: &str) -> Value {
    json!({
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}],
        "usageMetadata": {"promptTokenCount": 120, "candidatesTokenCount": 30, "totalTokenCount": 190,
                          "cachedContentTokenCount": 64, "thoughtsTokenCount": 40},
        "modelVersion": "gemini-2.5-flash-001",
        "responseId": "resp-1"
    })
}

fn ok(parts: Value, finish: &str) -> Script {
    Script::Status(200, vec![], answer(parts, finish).to_string())
}

#[tokio::test]
async fn translates_a_full_request_field_by_field() {
    let (gemini, _b, gw) = start().await;
    gemini.set_default(ok(json!([{"text": "ok"}]), "STOP"));
    let schema =
        json!({"type": "object", "properties": {"q": {"type": "string"}}, "additionalProperties": false});
    let request = json!({
        "model": "chat",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [
                {"type": "text", "text": "Look:"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.webp"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_x", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"cat\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_x", "content": "a cat"},
            {"role": "user", "content": "So?"}
        ],
        "tools": [{"type": "function", "function": {"name": "lookup", "description": "Search", "parameters": schema}}],
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
        "temperature": 0.3, "top_p": 0.8, "max_tokens": 256, "stop": ["END"], "n": 1
    });
    let reply = post(&gw.chat_url(), &request).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = &gemini.seen()[0];
    assert_eq!(seen.path, "/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(seen.headers["x-goog-api-key"], "AIza-secret");
    assert!(
        seen.headers.get("authorization").is_none() && seen.query.is_empty(),
        "the key travels in its header only"
    );
    let sent = &seen.body;
    assert_eq!(
        sent["systemInstruction"],
        json!({"parts": [{"text": "You are terse."}]})
    );
    assert_eq!(
        sent["contents"],
        json!([
            {"role": "user", "parts": [
                {"text": "Look:"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/cat.webp"}}
            ]},
            {"role": "model", "parts": [{"functionCall": {"name": "lookup", "args": {"q": "cat"}}}]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "lookup", "response": {"content": "a cat"}}},
                {"text": "So?"}
            ]}
        ])
    );
    assert_eq!(
        sent["generationConfig"],
        json!({"temperature": 0.3, "topP": 0.8, "maxOutputTokens": 256, "stopSequences": ["END"], "candidateCount": 1})
    );
    assert_eq!(
        sent["tools"],
        json!([{"functionDeclarations": [{"name": "lookup", "description": "Search",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}]}]),
        "JSON Schema keywords Gemini rejects are dropped"
    );
    assert_eq!(
        sent["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["lookup"]}})
    );
}

#[tokio::test]
async fn json_output_and_tool_choice_modes() {
    let (gemini, _b, gw) = start().await;
    gemini.set_default(ok(json!([{"text": "{\"a\":1}"}]), "STOP"));
    let mut request = chat("chat");
    request["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}});
    request["tools"] = json!([{"type": "function", "function": {"name": "f"}}]);
    for (choice, mode) in [("auto", "AUTO"), ("none", "NONE"), ("required", "ANY")] {
        request["tool_choice"] = json!(choice);
        assert_eq!(post(&gw.chat_url(), &request).await.status, 200);
        let sent = gemini.seen().last().unwrap().body.clone();
        assert_eq!(sent["toolConfig"]["functionCallingConfig"]["mode"], mode);
        assert_eq!(sent["generationConfig"]["responseMimeType"], "application/json");
        assert_eq!(
            sent["generationConfig"]["responseJsonSchema"],
            json!({"type": "object", "properties": {"a": {"type": "integer"}}})
        );
    }
}

#[tokio::test]
async fn penalties_pass_and_a_json_schema_goes_whole_unless_the_openapi_subset_is_asked_for() {
    let (gemini, b, gw) = start().await;
    gemini.set_default(ok(json!([{"text": "{\"a\":1}"}]), "STOP"));
    let schema = json!({"type": "object", "properties": {"a": {"$ref": "#/$defs/n"}}, "$defs": {"n": {"type": "integer"}}, "required": ["a"], "additionalProperties": false});
    let mut request = chat("chat");
    request["presence_penalty"] = json!(0.5);
    request["frequency_penalty"] = json!(-0.25);
    request["response_format"] =
        json!({"type": "json_schema", "json_schema": {"name": "r", "strict": true, "schema": schema}});
    assert_eq!(post(&gw.chat_url(), &request).await.status, 200);
    let sent = gemini.seen().last().unwrap().body["generationConfig"].clone();
    assert_eq!(sent["presencePenalty"], 0.5);
    assert_eq!(sent["frequencyPenalty"], -0.25);
    assert_eq!(sent["responseJsonSchema"], schema, "JSON Schema as it is");
    assert!(sent.get("responseSchema").is_none());

    // `schema = "openapi"`: Gemini's own subset, for models that need it.
    gw.rewrite_config(&config(&gemini, &b).replace(
        "adapter = \"gemini\"",
        "adapter = \"gemini\"\noptions = { schema = \"openapi\" }",
    ));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        assert_eq!(post(&gw.chat_url(), &request).await.status, 200);
        let sent = gemini.seen().last().unwrap().body["generationConfig"].clone();
        if sent.get("responseSchema").is_some() {
            assert!(sent["responseSchema"].get("additionalProperties").is_none());
            assert!(sent.get("responseJsonSchema").is_none());
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the option never took effect"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn answers_with_text_tool_calls_and_usage_including_cached_and_thought_tokens() {
    let (gemini, _b, gw) = start().await;
    gemini.set_default(ok(
        json!([
            {"text": "Thinking about weather.", "thought": true},
            {"text": "Checking."},
            {"functionCall": {"name": "weather", "args": {"city": "Paris"}}},
            {"functionCall": {"name": "time", "args": {}}}
        ]),
        "STOP",
    ));
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    let body = reply.completion();
    assert_eq!(body["model"], "gemini-2.5-flash-001");
    assert_eq!(
        body["id"],
        format!("chatcmpl-{}", reply.header("x-switchboard-request-id"))
    );
    crate::anthropic::assert_recent(&body["created"]);
    let choice = &body["choices"][0];
    assert_eq!(
        choice["finish_reason"], "tool_calls",
        "a STOP with function calls is a tool call"
    );
    assert_eq!(choice["message"]["content"], "Checking.");
    assert_eq!(choice["message"]["reasoning_content"], "Thinking about weather.");
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(
        calls[0]["function"],
        json!({"name": "weather", "arguments": "{\"city\":\"Paris\"}"})
    );
    assert_ne!(calls[0]["id"], calls[1]["id"], "generated ids are distinct");
    assert_eq!(body["usage"]["prompt_tokens"], 120);
    assert_eq!(
        body["usage"]["completion_tokens"], 70,
        "thought tokens are billed as output"
    );
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 64);
    assert_eq!(body["usage"]["completion_tokens_details"]["reasoning_tokens"], 40);
    // 56 plain and 64 cached prompt tokens, 70 completion tokens (40 of
    // them thoughts, priced as output).
    let cost: f64 = reply.header("x-switchboard-cost-usd").parse().unwrap();
    let by_hand = (56.0 * 0.30 + 64.0 * 0.03 + 70.0 * 2.50) / 1e6;
    assert!((cost - by_hand).abs() < 1e-9, "{cost} != {by_hand}");
}

#[tokio::test]
async fn maps_finish_reasons_and_never_passes_a_malformed_call_as_a_stop() {
    let (gemini, b, gw) = start().await;
    for (reason, finish) in [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
    ] {
        gemini.script([ok(json!([{"text": "x"}]), reason)]);
        let body = post(&gw.chat_url(), &chat("chat")).await.completion();
        assert_eq!(body["choices"][0]["finish_reason"], finish, "{reason}");
    }
    gemini.script([ok(json!([]), "MALFORMED_FUNCTION_CALL")]);
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(
        reply.header("x-switchboard-provider"),
        "b",
        "a malformed call is a failed attempt"
    );
    assert_eq!(b.hits(), 1);

    gemini.script([Script::Status(
        200,
        vec![],
        json!({"promptFeedback": {"blockReason": "SAFETY"}}).to_string(),
    )]);
    let body = post(&gw.chat_url(), &chat("chat")).await.completion();
    assert_eq!(body["choices"][0]["finish_reason"], "content_filter");
    assert!(
        body["choices"][0]["message"]["refusal"]
            .as_str()
            .unwrap()
            .contains("SAFETY")
    );
}

fn stream(events: &[Value]) -> String {
    events.iter().map(|e| format!("data: {e}\r\n\r\n")).collect()
}

#[tokio::test]
async fn streams_text_tool_calls_finish_and_usage() {
    let (gemini, _b, gw) = start().await;
    let usage = json!({"promptTokenCount": 10, "candidatesTokenCount": 6, "totalTokenCount": 16, "cachedContentTokenCount": 4});
    gemini.set_default(Script::RawStream(stream(&[
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Let me "}]}, "index": 0}], "modelVersion": "gemini-2.5-flash-001"}),
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "check."}]}, "index": 0}], "modelVersion": "gemini-2.5-flash-001"}),
        json!({"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": "weather", "args": {"city": "Oslo"}}}]}, "finishReason": "STOP", "index": 0}],
               "usageMetadata": usage, "modelVersion": "gemini-2.5-flash-001"}),
    ])));
    let mut request = chat("chat");
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let reply = post(&gw.chat_url(), &request).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = &gemini.seen()[0];
    assert_eq!(seen.path, "/v1beta/models/gemini-2.5-flash:streamGenerateContent");
    assert_eq!(seen.query, "alt=sse");
    assert_eq!(reply.streamed_text(), "Let me check.");
    assert_eq!(
        reply.sse_data().last().unwrap(),
        "[DONE]",
        "the finishReason event completes a Gemini stream"
    );
    let chunks = reply.valid_chunks();
    let call = chunks
        .iter()
        .find_map(|c| c["choices"][0]["delta"].get("tool_calls"))
        .unwrap();
    assert_eq!(call[0]["index"], 0);
    assert_eq!(
        call[0]["function"],
        json!({"name": "weather", "arguments": "{\"city\":\"Oslo\"}"})
    );
    let finish: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, vec![&json!("tool_calls")]);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(
        (usage["prompt_tokens"].clone(), usage["completion_tokens"].clone()),
        (json!(10), json!(6))
    );
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 4);
}

#[tokio::test]
async fn a_stream_split_inside_a_multibyte_character_arrives_intact() {
    let (gemini, _b, gw) = start().await;
    let bytes = stream(&[
        json!({"candidates": [{"content": {"parts": [{"text": "naïve 日本語 ✓"}]}, "finishReason": "STOP"}]}),
    ])
    .into_bytes();
    let split = bytes.windows(3).position(|w| w == "本".as_bytes()).unwrap() + 2;
    gemini.set_default(Script::RawFrames(vec![
        bytes[..split].to_vec(),
        bytes[split..].to_vec(),
    ]));
    let mut request = chat("chat");
    request["stream"] = json!(true);
    let reply = post(&gw.chat_url(), &request).await;
    assert_eq!(reply.streamed_text(), "naïve 日本語 ✓");
}

#[tokio::test]
async fn a_stream_without_a_finish_reason_is_incomplete() {
    let (gemini, _b, gw) = start().await;
    gemini.set_default(Script::RawStream(stream(&[
        json!({"candidates": [{"content": {"parts": [{"text": "half"}]}}]}),
    ])));
    let mut request = chat("chat");
    request["stream"] = json!(true);
    let reply = post(&gw.chat_url(), &request).await;
    assert_eq!(reply.streamed_text(), "half");
    assert!(reply.sse_data().last().unwrap().contains("incomplete"));
}

#[tokio::test]
async fn classifies_gemini_errors_with_retry_info() {
    let (gemini, b, gw) = start().await;
    let exhausted = json!({"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).", "status": "RESOURCE_EXHAUSTED",
        "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "42s"}]}});
    gemini.script([Script::Status(429, vec![], exhausted.to_string())]);
    assert_eq!(
        post(&gw.chat_url(), &chat("chat"))
            .await
            .header("x-switchboard-provider"),
        "b"
    );
    let cooldown = gw.target_health("google").await["rate_limited_for_ms"]
        .as_u64()
        .unwrap();
    assert!(
        (37_000..=42_000).contains(&cooldown),
        "RetryInfo's 42 s: {cooldown}"
    );

    let (gemini, b2, gw) = start().await;
    gemini.script([
        Script::Status(503, vec![], json!({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}).to_string()),
        Script::Status(400, vec![], json!({"error": {"code": 400, "message": "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).", "status": "INVALID_ARGUMENT"}}).to_string()),
        Script::Status(400, vec![], json!({"error": {"code": 400, "message": "Invalid JSON payload received.", "status": "INVALID_ARGUMENT"}}).to_string()),
    ]);
    assert_eq!(
        post(&gw.chat_url(), &chat("chat"))
            .await
            .header("x-switchboard-provider"),
        "b"
    );
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(
        (reply.status, reply.json()["error"]["code"].clone()),
        (400, json!("context_length_exceeded"))
    );
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(reply.status, 400);
    assert!(reply.text().contains("Invalid JSON payload"));
    assert_eq!(b2.hits(), 1);
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"provider="google",model="gemini-2.5-flash",outcome="overloaded"} 1"#),
        "{metrics}"
    );
    drop(b);
}
