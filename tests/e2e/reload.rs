//! Config-file hot reload: a changed file goes live without a restart, a
//! broken one is refused while the last good one serves, requests in flight
//! finish on the config they started with, and live health carries over.

use crate::support::*;
use std::time::Duration;
use tokio::time::Instant;

/// Post to `model` until the answer comes from `provider` (the reload landed).
async fn until_served_by(gw: &Gateway, model: &str, provider: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = post(&gw.chat_url(), &chat(model)).await;
        if reply.header("x-switchboard-provider") == provider {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{model} still not served by {provider}: {} {}\n{}",
            reply.status,
            reply.text(),
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn admin_config(gw: &Gateway) -> serde_json::Value {
    get(&format!("{}/admin/config", gw.url), &[]).await.json()
}

#[tokio::test]
async fn a_changed_config_goes_live_and_a_broken_one_is_refused() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let config = two_providers(&a, &b, "");
    let gw = Gateway::start(&config, KEYS);
    assert_eq!(post(&gw.chat_url(), &chat("chat2")).await.status, 404);

    let with_chat2 = format!("{config}\n[routes.chat2]\ntargets = [\"b/model-b\"]\n");
    gw.rewrite_config(&with_chat2);
    until_served_by(&gw, "chat2", "b").await;
    let status = admin_config(&gw).await;
    assert_eq!(status["routes"], serde_json::json!(["chat", "chat2"]), "{status}");
    assert!(status["refused"].is_null());

    let broken = format!("{with_chat2}\n[routes.broken]\ntargets = [\"nowhere/x\"]\n");
    gw.rewrite_config(&broken);
    assert!(
        gw.wait_for_log("configuration refused", Duration::from_secs(10))
            .await,
        "{}",
        gw.logs()
    );
    let status = admin_config(&gw).await;
    let refused = status["refused"].as_str().unwrap();
    assert!(
        refused.contains("routes.broken.targets[0]") && refused.contains("unknown provider"),
        "{refused}"
    );
    let reply = post(&gw.chat_url(), &chat("chat2")).await;
    assert_eq!(
        reply.header("x-switchboard-provider"),
        "b",
        "the last good config serves"
    );
    // Writing the same text again is not another reload.
    gw.rewrite_config(&broken);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let metrics = gw.metrics().await;
    for line in [
        "switchboard_config_reloads_total{outcome=\"applied\"} 1\n",
        "switchboard_config_reloads_total{outcome=\"refused\"} 1\n",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
}

#[tokio::test]
async fn a_request_in_flight_finishes_on_the_config_it_started_with() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    a.set_default(Script::Slow(800, "a"));
    let config = two_providers(&a, &b, "");
    let gw = Gateway::start(&config, KEYS);
    let url = gw.chat_url();
    let in_flight = tokio::spawn(async move { post(&url, &chat("chat")).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Route `chat` now points at b only.
    gw.rewrite_config(&config.replace(
        r#"targets = ["a/model-a", "b/model-b"]"#,
        r#"targets = ["b/model-b"]"#,
    ));
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("x-switchboard-provider"),
        "a",
        "started on the old config"
    );
    until_served_by(&gw, "chat", "b").await;
    assert_eq!(a.hits(), 1);
}

#[tokio::test]
async fn live_health_and_cooldowns_survive_a_reload() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    a.set_default(Script::Status(
        429,
        vec![("retry-after", "30".into())],
        r#"{"error":{"message":"slow down"}}"#.into(),
    ));
    let config = two_providers(&a, &b, "");
    let gw = Gateway::start(&config, KEYS);
    assert_eq!(
        post(&gw.chat_url(), &chat("chat"))
            .await
            .header("x-switchboard-provider"),
        "b"
    );
    gw.rewrite_config(&format!("{config}\n[routes.other]\ntargets = [\"a/model-a\"]\n"));
    assert!(
        gw.wait_for_log("configuration reloaded", Duration::from_secs(10))
            .await
    );
    let cooldown = gw.target_health("a").await["rate_limited_for_ms"]
        .as_u64()
        .unwrap();
    assert!(cooldown > 25_000, "a's 30 s cooldown carried over: {cooldown}");
    assert_eq!(
        post(&gw.chat_url(), &chat("chat"))
            .await
            .header("x-switchboard-provider"),
        "b"
    );
    assert_eq!(a.hits(), 1, "a is not asked again inside its cooldown");
}

#[tokio::test]
async fn sighup_reloads_when_the_watch_is_off() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let config = format!("[server]\nwatch_config = false\n\n{}", two_providers(&a, &b, ""));
    let gw = Gateway::start(&config, KEYS);
    gw.rewrite_config(&format!("{config}\n[routes.chat2]\ntargets = [\"b/model-b\"]\n"));
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(
        post(&gw.chat_url(), &chat("chat2")).await.status,
        404,
        "not watched: nothing changes yet"
    );
    gw.signal("HUP");
    until_served_by(&gw, "chat2", "b").await;
}
