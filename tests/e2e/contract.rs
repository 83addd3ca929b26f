//! The plugin contract across versions: 0.1 and 0.2 plugins still route
//! beside 0.3 ones, what an adapter declares is honoured, and what 0.2
//! gives a policy (bounded excerpts of the request) reaches it.

use crate::support::*;
use serde_json::json;

const LEGACY: &str = "switchboard_test_legacy";
const MISBEHAVE: &str = "switchboard_test_misbehave";

/// The contract version `/admin/plugins` shows for a loaded plugin.
fn contract_of(plugins: &serde_json::Value, kind: &str, name: &str) -> Option<serde_json::Value> {
    plugins[kind]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .map(|p| p["versions"][0]["contract"].clone())
}

#[tokio::test]
async fn a_0_1_adapter_and_policy_still_route_next_to_0_2_plugins() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let config = two_providers(&a, &b, "policy = \"legacy\"").replacen(
        "adapter = \"openai\"",
        "adapter = \"legacy\"",
        1,
    );
    let gw = Gateway::start_with_files(
        &config,
        KEYS,
        &[
            ("adapters", "legacy.wasm", wasm(LEGACY)),
            ("policies", "legacy.wasm", wasm(LEGACY)),
        ],
    );
    let plugins = gw.plugins_admin().await;
    let contract = |kind: &str, name: &str| contract_of(&plugins, kind, name);
    assert_eq!(contract("adapters", "legacy"), Some(json!("0.1")), "{plugins}");
    assert_eq!(contract("policies", "legacy"), Some(json!("0.1")));
    assert_eq!(contract("adapters", "openai"), Some(json!("0.3")));

    let reply = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.header("x-switchboard-provider"),
        "a",
        "the 0.1 policy's order"
    );
    reply.completion();
    let reply = post(&gw.chat_url(), &streamed_chat("chat")).await;
    assert_eq!(reply.header("x-switchboard-provider"), "a");
    let chunks = reply.valid_chunks();
    assert!(
        chunks.iter().any(|c| c["usage"].is_object()),
        "the usage chunk asked for"
    );
    assert_eq!(reply.sse_data().last().unwrap(), "[DONE]");
    let metrics = gw.metrics().await;
    assert!(
        sample(
            &metrics,
            "switchboard_tokens_total{provider=\"a\",model=\"model-a\",kind=\"prompt\"}"
        ) > 0,
        "0.1 usage is accounted: {metrics}"
    );

    // Its failures are classified by the 0.1 adapter and fail over.
    a.set_default(Script::Status(503, vec![], "{}".into()));
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(reply.header("x-switchboard-provider"), "b");
}

#[tokio::test]
async fn a_0_2_adapter_and_policy_still_route_and_stream_next_to_0_3_plugins() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    // `b` has the 0.2 adapter (a pass-through forwarding every event); the
    // 0.2 policy tries targets last-first, so `b` first.
    let mut config = two_providers(&a, &b, "policy = \"custom\"");
    let at = config.rfind("adapter = \"openai\"").unwrap();
    config.replace_range(
        at..at + "adapter = \"openai\"".len(),
        "adapter = \"misbehave\"\noptions = { mode = \"echo\" }",
    );
    let gw = Gateway::start_with_files(
        &config,
        KEYS,
        &[
            ("adapters", "misbehave.wasm", wasm(MISBEHAVE)),
            ("policies", "custom.wasm", wasm(MISBEHAVE)),
        ],
    );
    let plugins = gw.plugins_admin().await;
    let contract = |kind: &str, name: &str| contract_of(&plugins, kind, name);
    assert_eq!(contract("adapters", "misbehave"), Some(json!("0.2")), "{plugins}");
    assert_eq!(contract("policies", "custom"), Some(json!("0.2")));
    assert_eq!(contract("adapters", "openai"), Some(json!("0.3")));
    assert_eq!(contract("policies", "priority"), Some(json!("0.3")));

    let reply = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(
        reply.header("x-switchboard-provider"),
        "b",
        "the 0.2 policy's order"
    );
    reply.completion();
    let reply = post(&gw.chat_url(), &streamed_chat("chat")).await;
    assert_eq!(reply.header("x-switchboard-provider"), "b");
    let chunks = reply.valid_chunks();
    assert!(chunks.len() > 2, "every chunk forwarded: {chunks:?}");
    assert_eq!(reply.sse_data().last().unwrap(), "[DONE]");

    // Its failures are classified by the 0.2 adapter and fail over to the
    // 0.3 one.
    b.set_default(Script::Status(
        503,
        vec![("retry-after", "1".into())],
        "{}".into(),
    ));
    let reply = post(&gw.chat_url(), &streamed_chat("chat")).await;
    assert_eq!(reply.header("x-switchboard-provider"), "a");
    reply.valid_chunks();
    assert_eq!(reply.sse_data().last().unwrap(), "[DONE]");
}

#[tokio::test]
async fn a_request_an_adapter_says_it_cannot_translate_goes_to_another_target() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    // Both models are configured for images; the legacy adapter says it cannot.
    let config = two_providers(&a, &b, "").replacen("adapter = \"openai\"", "adapter = \"legacy\"", 1);
    let gw = Gateway::start_with_files(&config, KEYS, &[("adapters", "legacy.wasm", wasm(LEGACY))]);
    let mut request = chat("chat");
    request["messages"][0]["content"] = json!([
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    ]);
    let reply = post(&gw.chat_url(), &request).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-switchboard-provider"), "b");
    assert_eq!(a.hits(), 0, "never offered to the adapter that cannot");
    // Without an image, `a` is first as configured.
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(reply.header("x-switchboard-provider"), "a");
}

#[tokio::test]
async fn a_route_shows_its_policy_bounded_excerpts_of_the_request_only_when_asked() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let mut request = chat("chat");
    request["messages"] = json!([
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "please route to a"},
    ]);
    for (chars, expected) in [(40, "a"), (0, "b"), (8, "b")] {
        let route = format!(
            "policy = \"custom\"\npolicy_config = {{ mode = \"excerpt\" }}\nfacts_excerpt_chars = {chars}"
        );
        let gw = Gateway::start_with_files(
            &two_providers(&a, &b, &route),
            KEYS,
            &[("policies", "custom.wasm", wasm(MISBEHAVE))],
        );
        let reply = post(&gw.chat_url(), &request).await;
        assert_eq!(
            reply.header("x-switchboard-provider"),
            expected,
            "facts_excerpt_chars = {chars}"
        );
    }
}
