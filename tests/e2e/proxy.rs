//! The gateway as a proxy: answers, streams, headers, pass-through fields.

use crate::support::*;
use serde_json::json;

#[tokio::test]
async fn answers_through_the_first_target_with_its_credential() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let gw = Gateway::start(&two_providers(&a, &b, ""), KEYS);
    let reply = post(&gw.chat_url(), &chat("chat")).await;

    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.completion();
    assert_eq!(body["choices"][0]["message"]["content"], "a");
    assert_eq!(body["model"], "model-a", "the body names the model that answered");
    assert_eq!(reply.header("x-switchboard-provider"), "a");
    assert_eq!(reply.header("x-switchboard-model"), "model-a");
    assert_eq!(reply.header("x-switchboard-attempts"), "1");
    assert!(!reply.header("x-request-id").is_empty());

    let seen = a.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert_eq!(seen[0].headers["authorization"], "Bearer secret-key-a");
    assert_eq!(
        seen[0].headers["accept-encoding"], "identity",
        "answers come uncompressed, to be scrubbed"
    );
    assert_eq!(
        seen[0].body["model"], "model-a",
        "the route name is replaced by the target model"
    );
    assert_eq!(b.hits(), 0);
    assert!(
        !gw.logs().contains("secret-key-a"),
        "credentials never reach the logs"
    );
}

#[tokio::test]
async fn passes_tools_images_and_response_format_through_unchanged() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let gw = Gateway::start(&two_providers(&a, &b, ""), KEYS);
    let request = json!({
        "model": "chat",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"x\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "42"}
        ],
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
        "tool_choice": "auto",
        "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object"}}},
        "temperature": 0.2,
        "some_future_field": {"kept": true}
    });
    let reply = post(&gw.chat_url(), &request).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let sent = &a.seen()[0].body;
    for field in [
        "messages",
        "tools",
        "tool_choice",
        "response_format",
        "temperature",
        "some_future_field",
    ] {
        assert_eq!(sent[field], request[field], "{field} passes through");
    }
}

#[tokio::test]
async fn a_chat_request_reaches_the_provider_as_sent_but_for_its_model() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let gw = Gateway::start(&two_providers(&a, &b, ""), KEYS);
    // Its order, spacing, escapes, and numbers a parsed tree would have
    // rewritten (`1.50`, an integer past `u64`, an exponent).
    let caller = r#"{ "temperature": 1.50, "messages": [{"role":"user","content":"caf\u00e9 \"q\""}],
  "model" : "chat", "seed": 123456789012345678901234, "logit_bias": {"50256": -1e2} }"#;
    let reply = post_with(&gw.chat_url(), caller.as_bytes().to_vec(), &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let sent = &a.seen()[0];
    assert_eq!(
        std::str::from_utf8(&sent.raw).unwrap(),
        caller.replace(r#""model" : "chat""#, r#""model" : "model-a""#)
    );
}

#[tokio::test]
async fn streams_chunks_and_usage_only_when_asked() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    a.set_default(Script::Answer("Hello from a stream"));
    let gw = Gateway::start(&two_providers(&a, &b, ""), KEYS);

    let mut request = chat("chat");
    request["stream"] = json!(true);
    let reply = post(&gw.chat_url(), &request).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), "text/event-stream");
    assert_eq!(reply.streamed_text(), "Hello from a stream");
    reply.valid_chunks();
    let data = reply.sse_data();
    assert_eq!(data.last().unwrap(), "[DONE]");
    assert!(
        !reply.text().contains("\"usage\""),
        "no usage chunk unless the caller asked"
    );
    // The gateway always asks upstream for usage, to account the stream.
    assert_eq!(a.seen()[0].body["stream_options"]["include_usage"], true);

    request["stream_options"] = json!({"include_usage": true});
    let reply = post(&gw.chat_url(), &request).await;
    let data = reply.sse_data();
    let usage: serde_json::Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 7);

    // `null` options are no options: usage is asked for, and not sent on.
    request["stream_options"] = json!(null);
    let reply = post(&gw.chat_url(), &request).await;
    reply.valid_chunks();
    assert!(!reply.text().contains("\"usage\""), "{}", reply.text());
    assert_eq!(a.seen()[2].body["stream_options"]["include_usage"], true);

    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"switchboard_tokens_total{provider="a",model="model-a",kind="completion"} 21"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn accounts_tokens_and_cost_from_configured_prices() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let gw = Gateway::start(&two_providers(&a, &b, ""), KEYS);
    for _ in 0..2 {
        assert_eq!(post(&gw.chat_url(), &chat("chat")).await.status, 200);
    }
    let metrics = gw.metrics().await;
    // 2 x (11 prompt tokens at $1/M + 7 completion tokens at $2/M) = $0.00005
    let cost: f64 = metrics
        .lines()
        .find(|l| l.starts_with(r#"switchboard_cost_usd_total{provider="a",model="model-a"}"#))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .expect("cost metric");
    assert!((cost - 0.00005).abs() < 1e-12, "{cost}");
    assert!(metrics.contains(r#"switchboard_tokens_total{provider="a",model="model-a",kind="cached"} 6"#));
    assert!(metrics.contains(r#"switchboard_requests_total{route="chat",status="200"} 2"#));
}

#[tokio::test]
async fn lists_models_and_reports_health_and_readiness() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let gw = Gateway::start(&two_providers(&a, &b, "aliases = [\"default\"]"), KEYS);
    let models = get(&format!("{}/v1/models", gw.url), &[]).await.json();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["chat", "default"]);
    assert_eq!(get(&format!("{}/healthz", gw.url), &[]).await.status, 200);
    assert_eq!(get(&format!("{}/readyz", gw.url), &[]).await.status, 200);
    let reply = post(&gw.chat_url(), &chat("default")).await;
    assert_eq!(reply.status, 200, "an alias routes like its route");
}

#[tokio::test]
async fn the_default_config_answers_without_any_provider_key() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let default = std::fs::read_to_string(root.join("switchboard.toml")).unwrap();
    // Keep its providers and routes; the harness supplies server and plugin folders.
    let body = &default[default.find("[providers.openai]").unwrap()..];
    let gw = Gateway::start(body, &[]);
    let reply = post(&gw.chat_url(), &chat("gpt-4o-mini")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-switchboard-provider"), "simulated");
    assert!(
        reply.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("simulated")
    );
}
