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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_written_configs_never_empty_the_routes_or_open_the_api() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let open = two_providers(&a, &b, "");
    let closed = format!("{open}\n[[gateway_keys]]\nname = \"app\"\nkey_env = \"GW\"\nadmin = true\n");
    let env = [KEYS, &[("GW", "gw-key")]].concat();
    let gw = Gateway::start(&closed, &env);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (url, stop) = (gw.chat_url(), stop.clone());
        tokio::spawn(async move {
            let body = chat("chat").to_string().into_bytes();
            let mut served = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let keyed = post_with(&url, body.clone(), &[("authorization", "Bearer gw-key")]).await;
                assert_eq!(keyed.status, 200, "a request failed: {}", keyed.text());
                let anonymous = post_with(&url, body.clone(), &[]).await;
                assert_eq!(anonymous.status, 401, "the API opened: {}", anonymous.text());
                served += 1;
            }
            served
        })
    };
    // An editor truncates the file, then writes it; then one whose write
    // stops before the keys. Each window lasts well past the watch's quiet
    // period and the settle check.
    let write_in_place = |text: String| {
        let gw = &gw;
        async move {
            tokio::task::block_in_place(|| gw.write_config_in_place(&text, Duration::from_millis(800)));
            tokio::time::sleep(Duration::from_millis(800)).await;
        }
    };
    write_in_place(closed.clone()).await;
    let cut = std::fs::read_to_string(gw.dir.path().join("switchboard.toml")).unwrap();
    let cut = cut[..cut.find("[[gateway_keys]]").unwrap()].to_string();
    {
        let path = gw.dir.path().join("switchboard.toml");
        std::fs::write(&path, &cut).unwrap();
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let served = load.await.unwrap();
    assert!(served > 20, "the load ran throughout: {served}");

    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("switchboard_config_reloads_total{outcome=\"refused\"} 2"),
        "{metrics}"
    );
    let status = get(
        &format!("{}/admin/config", gw.url),
        &[("authorization", "Bearer gw-key")],
    )
    .await
    .json();
    assert!(
        status["refused"].as_str().unwrap().contains("open_access"),
        "{status}"
    );
    assert!(gw.logs().contains("a reload may not remove every route"));
}

#[tokio::test]
async fn an_idle_gateway_does_not_reread_its_config() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let gw = Gateway::start(&two_providers(&a, &b, ""), KEYS);
    // Reading the file (as the gateway and anyone else may) is no change.
    for _ in 0..5 {
        let _ = std::fs::read_to_string(gw.dir.path().join("switchboard.toml")).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let metrics = gw.metrics().await;
    assert!(
        !metrics.contains("switchboard_config_reloads_total{"),
        "{metrics}"
    );
}
