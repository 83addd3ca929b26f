//! The policy library: weighted splits, cost tiers and latency-aware choice,
//! each a bundled Wasm component.

use crate::support::*;
use serde_json::json;

async fn providers_of(
    gw: &Gateway,
    requests: usize,
    body: impl Fn(usize) -> serde_json::Value,
) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..requests {
        let reply = post(&gw.chat_url(), &body(i)).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        out.push(reply.header("x-switchboard-provider").to_string());
    }
    out
}

#[tokio::test]
async fn weighted_splits_traffic_by_percentage() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let config = two_providers(
        &a,
        &b,
        "policy = \"weighted\"\npolicy_config = { weights = { \"a/model-a\" = 80, \"b/model-b\" = 20 } }",
    );
    let gw = Gateway::start(&config, KEYS);
    let providers = providers_of(&gw, 200, |_| chat("chat")).await;
    let to_b = providers.iter().filter(|p| *p == "b").count();
    // Binomial(200, 0.2): mean 40, standard deviation about 5.7.
    assert!((15..=65).contains(&to_b), "{to_b} of 200 went to the 20% target");
}

#[tokio::test]
async fn weighted_is_sticky_per_caller_when_asked() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let config = two_providers(
        &a,
        &b,
        "policy = \"weighted\"\npolicy_config = { weights = { \"a/model-a\" = 50, \"b/model-b\" = 50 }, sticky = \"user\" }",
    );
    let gw = Gateway::start(&config, KEYS);
    let with_user = |user: String| {
        let mut request = chat("chat");
        request["user"] = json!(user);
        request
    };
    let same = providers_of(&gw, 20, |_| with_user("alice".into())).await;
    assert!(
        same.iter().all(|p| *p == same[0]),
        "one caller stays on one target: {same:?}"
    );
    let many = providers_of(&gw, 60, |i| with_user(format!("user-{i}"))).await;
    assert!(
        many.contains(&"a".to_string()) && many.contains(&"b".to_string()),
        "callers spread: {many:?}"
    );
}

#[tokio::test]
async fn weighted_refuses_a_config_without_weights_at_start() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let config = two_providers(&a, &b, "policy = \"weighted\"\npolicy_config = { weights = {} }");
    let stderr = refused_start(&config);
    assert!(
        stderr.contains("routes.chat.policy_config") && stderr.contains("at least one positive weight"),
        "{stderr}"
    );
}

#[tokio::test]
async fn cost_sends_routine_work_to_the_small_tier_and_hard_work_to_the_strong_one() {
    let (small, strong) = (MockProvider::start("a").await, MockProvider::start("b").await);
    // a: $0.15/$0.60 small model; b: $2.50/$10 strong model.
    let config = two_providers(
        &small,
        &strong,
        r#"policy = "cost"
policy_config = { tiers = [ { name = "small", max_prompt_tokens = 200, tools = false, targets = ["a/model-a"] }, { name = "strong", targets = ["b/model-b"] } ] }"#,
    )
    .replacen("input_price = 1.0\noutput_price = 2.0", "input_price = 0.15\noutput_price = 0.60", 1)
    .replacen("input_price = 1.0\noutput_price = 2.0", "input_price = 2.50\noutput_price = 10.0", 1);
    let gw = Gateway::start(&config, KEYS);
    assert_eq!(
        post(&gw.chat_url(), &chat("chat"))
            .await
            .header("x-switchboard-provider"),
        "a",
        "short and tool-free"
    );
    let mut long = chat("chat");
    long["messages"][0]["content"] = json!("word ".repeat(400));
    assert_eq!(
        post(&gw.chat_url(), &long).await.header("x-switchboard-provider"),
        "b",
        "long prompt"
    );
    let mut tools = chat("chat");
    tools["tools"] = json!([{"type": "function", "function": {"name": "f"}}]);
    assert_eq!(
        post(&gw.chat_url(), &tools)
            .await
            .header("x-switchboard-provider"),
        "b",
        "uses tools"
    );
    // The tier's target down: the rest follow, cheapest first.
    small.set_default(Script::Status(500, vec![], "{}".into()));
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(
        (
            reply.header("x-switchboard-provider"),
            reply.header("x-switchboard-attempts")
        ),
        ("b", "2")
    );
}

#[tokio::test]
async fn cost_without_tiers_picks_the_cheapest_for_this_request() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    // a is cheaper to read, b cheaper to write.
    let config = two_providers(&a, &b, "policy = \"cost\"\npolicy_config = {}")
        .replacen(
            "input_price = 1.0\noutput_price = 2.0",
            "input_price = 0.1\noutput_price = 20.0",
            1,
        )
        .replacen(
            "input_price = 1.0\noutput_price = 2.0",
            "input_price = 5.0\noutput_price = 1.0",
            1,
        );
    let gw = Gateway::start(&config, KEYS);
    let mut reading = chat("chat");
    reading["messages"][0]["content"] = json!("word ".repeat(2000));
    reading["max_tokens"] = json!(10);
    assert_eq!(
        post(&gw.chat_url(), &reading)
            .await
            .header("x-switchboard-provider"),
        "a"
    );
    let mut writing = chat("chat");
    writing["max_tokens"] = json!(4000);
    assert_eq!(
        post(&gw.chat_url(), &writing)
            .await
            .header("x-switchboard-provider"),
        "b"
    );
}

#[tokio::test]
async fn latency_moves_traffic_to_the_faster_target() {
    let (slow, fast) = (MockProvider::start("a").await, MockProvider::start("b").await);
    slow.set_default(Script::Slow(300, "a"));
    let gw = Gateway::start(
        &two_providers(&slow, &fast, "policy = \"latency\"\npolicy_config = {}"),
        KEYS,
    );
    let providers = providers_of(&gw, 12, |_| chat("chat")).await;
    assert!(
        providers[6..].iter().all(|p| p == "b"),
        "once measured, the fast target serves: {providers:?}"
    );
    assert!(
        slow.hits() <= 3,
        "the slow target was only explored: {providers:?}"
    );
}
