//! The `openai` adapter's options: one adapter for every OpenAI-compatible
//! host, and its reading of the providers' rate-limit headers.

use crate::support::*;
use serde_json::json;
use std::time::Duration;

/// Give the `nth` provider of `config` (0 = `a`) these adapter options.
fn set_options(config: &str, nth: usize, options: &str) -> String {
    let (at, _) = config
        .match_indices("adapter = \"openai\"\n")
        .nth(nth)
        .expect("provider");
    let end = at + "adapter = \"openai\"\n".len();
    format!("{}options = {options}\n{}", &config[..end], &config[end..])
}

fn with_options(a: &MockProvider, b: &MockProvider, options: &str) -> String {
    set_options(&two_providers(a, b, ""), 0, options)
}

#[tokio::test]
async fn azure_style_header_auth_custom_path_and_static_headers() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let options = r#"{ auth = "header:api-key", path = "/deployments/{model}/chat/completions?api-version=2024-10-21", headers = { "x-tenant" = "blue" } }"#;
    let gw = Gateway::start(&with_options(&a, &b, options), KEYS);
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = &a.seen()[0];
    assert_eq!(
        seen.path, "/v1/deployments/model-a/chat/completions",
        "the deployment is the target model"
    );
    assert_eq!(seen.query, "api-version=2024-10-21");
    assert_eq!(seen.headers["api-key"], "secret-key-a");
    assert!(seen.headers.get("authorization").is_none());
    assert_eq!(seen.headers["x-tenant"], "blue");
}

#[tokio::test]
async fn query_auth_and_keyless_hosts() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let config = set_options(
        &with_options(&a, &b, r#"{ auth = "query:key" }"#),
        1,
        r#"{ auth = "none" }"#,
    );
    let gw = Gateway::start(&config, KEYS);
    assert_eq!(post(&gw.chat_url(), &chat("chat")).await.status, 200);
    let seen = &a.seen()[0];
    assert!(seen.headers.get("authorization").is_none());
    assert_eq!(seen.query, "key=secret-key-a");
    b.set_default(Script::Answer("b"));
    a.set_default(Script::Status(500, vec![], "{}".into()));
    assert_eq!(
        post(&gw.chat_url(), &chat("chat"))
            .await
            .header("x-switchboard-provider"),
        "b"
    );
    assert!(
        b.seen()[0].headers.get("authorization").is_none(),
        "auth = none sends no credential"
    );
}

#[tokio::test]
async fn parameter_differences_are_options_not_forks() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let options = r#"{ max_tokens_field = "max_completion_tokens", drop_params = ["logit_bias"], stream_usage = false }"#;
    let gw = Gateway::start(&with_options(&a, &b, options), KEYS);
    let mut request = chat("chat");
    request["max_tokens"] = json!(64);
    request["logit_bias"] = json!({"50256": -100});
    request["stream"] = json!(true);
    let reply = post(&gw.chat_url(), &request).await;
    assert_eq!(reply.status, 200);
    let sent = &a.seen()[0].body;
    assert_eq!(sent["max_completion_tokens"], 64);
    assert!(sent.get("max_tokens").is_none() && sent.get("logit_bias").is_none());
    assert!(
        sent.get("stream_options").is_none(),
        "stream_usage = false leaves stream_options alone"
    );
}

#[tokio::test]
async fn a_typo_in_adapter_options_is_refused_at_start_up_and_on_reload_with_the_reason() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let bad_auth = with_options(&a, &b, r#"{ auth = "carrier-pigeon" }"#);
    let stderr = refused_start(&bad_auth);
    assert!(
        stderr.contains("providers.a.options") && stderr.contains("invalid openai adapter option auth"),
        "{stderr}"
    );
    let typo = with_options(&a, &b, r#"{ max_token_field = "max_completion_tokens" }"#);
    let stderr = refused_start(&typo);
    assert!(
        stderr.contains("providers.a.options") && stderr.contains("unknown field `max_token_field`"),
        "{stderr}"
    );

    // On reload the old configuration keeps serving, and says why.
    let gw = Gateway::start(&two_providers(&a, &b, ""), KEYS);
    gw.rewrite_config(&typo);
    assert!(
        gw.wait_for_log("configuration refused", Duration::from_secs(10))
            .await,
        "{}",
        gw.logs()
    );
    let status = get(&format!("{}/admin/config", gw.url), &[]).await.json();
    let refused = status["refused"].as_str().unwrap();
    assert!(
        refused.contains("providers.a.options") && refused.contains("unknown field `max_token_field`"),
        "{refused}"
    );
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("x-switchboard-provider"),
        "a",
        "the old options serve"
    );
}

/// The cooldown `/admin/targets` reports for provider `a`, in ms.
async fn cooldown_of_a(gw: &Gateway) -> u64 {
    gw.target_health("a").await["rate_limited_for_ms"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn reads_every_form_of_rate_limit_wait() {
    for (headers, low, high) in [
        (vec![("retry-after-ms", "20000".to_string())], 15_000, 20_000),
        (vec![("retry-after", "40".to_string())], 35_000, 40_000),
        (
            vec![
                ("x-ratelimit-reset-requests", "1m30s".to_string()),
                ("x-ratelimit-reset-tokens", "6m0s".to_string()),
            ],
            85_000,
            90_000,
        ),
    ] {
        let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
        a.set_default(Script::Status(
            429,
            headers.clone(),
            r#"{"error":{"message":"Rate limit reached"}}"#.into(),
        ));
        let gw = Gateway::start(&two_providers(&a, &b, ""), KEYS);
        assert_eq!(
            post(&gw.chat_url(), &chat("chat"))
                .await
                .header("x-switchboard-provider"),
            "b"
        );
        let cooldown = cooldown_of_a(&gw).await;
        assert!((low..=high).contains(&cooldown), "{headers:?}: {cooldown} ms");
    }
}

#[tokio::test]
async fn an_exhausted_quota_is_not_mistaken_for_a_short_rate_limit() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    a.set_default(Script::Status(
        429,
        vec![],
        r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#.into(),
    ));
    let gw = Gateway::start(&two_providers(&a, &b, ""), KEYS);
    assert_eq!(
        post(&gw.chat_url(), &chat("chat"))
            .await
            .header("x-switchboard-provider"),
        "b"
    );
    assert_eq!(cooldown_of_a(&gw).await, 0);
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"switchboard_attempts_total{provider="a",model="model-a",outcome="auth"} 1"#),
        "{metrics}"
    );
}
