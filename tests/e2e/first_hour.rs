//! What the gateway says to a newcomer: what it runs at start-up, which
//! endpoints exist, which key a request came with, and clear refusals.

use crate::support::*;
use std::time::Duration;

/// `two_providers` with an admin key and a plain one.
fn with_keys(a: &MockProvider, b: &MockProvider, server: &str) -> String {
    format!(
        "[server]\n{server}\n{}\n[[gateway_keys]]\nname = \"ops\"\nkey_env = \"GW_OPS\"\nadmin = true\n\n[[gateway_keys]]\nname = \"app\"\nkey_env = \"GW_APP\"\n",
        two_providers(a, b, "")
    )
}

const ENV: &[(&str, &str)] = &[
    ("KEY_A", "secret-key-a"),
    ("KEY_B", "secret-key-b"),
    ("GW_OPS", "sk-ops"),
    ("GW_APP", "sk-app"),
];

#[tokio::test]
async fn start_up_says_what_runs_and_a_request_logs_its_key() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    // `b` has no key in the environment: it is disabled, and start-up says so.
    let env = [
        ("KEY_A", "secret-key-a"),
        ("GW_OPS", "sk-ops"),
        ("GW_APP", "sk-app"),
        ("KEY_B", ""),
    ];
    let gw = Gateway::start(&with_keys(&a, &b, ""), &env);
    assert!(
        gw.wait_for_log("endpoints: POST /v1/chat/completions", Duration::from_secs(5))
            .await
    );
    let logs = gw.logs();
    assert!(logs.contains("\"message\":\"route\""), "{logs}");
    assert!(logs.contains("a/model-a, b/model-b (disabled: "), "{logs}");
    assert!(logs.contains("\"pid\":"), "{logs}");
    let reply = post_with(
        &gw.chat_url(),
        serde_json::to_vec(&chat("chat")).unwrap(),
        &[("authorization", "Bearer sk-app")],
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(
        gw.wait_for_log("\"key\":\"app\"", Duration::from_secs(5)).await,
        "the key's name is in its request's log lines: {}",
        gw.logs()
    );
    let metrics = get(&format!("{}/metrics", gw.url), &[]).await.text();
    assert_eq!(
        sample(&metrics, "switchboard_key_requests_total{key=\"app\"}"),
        1,
        "{metrics}"
    );
}

#[tokio::test]
async fn unknown_endpoints_wrong_methods_and_roles_are_refused_clearly_logged_and_counted() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let gw = Gateway::start(&two_providers(&a, &b, ""), KEYS);
    let wrong = post(&format!("{}/v1/completions", gw.url), &chat("chat")).await;
    assert_eq!(wrong.status, 404);
    let method = get(&gw.chat_url(), &[]).await;
    assert_eq!(method.status, 405);
    assert!(gw.wait_for_log("no such endpoint", Duration::from_secs(5)).await);
    let metrics = gw.metrics().await;
    for status in [404, 405] {
        let series = format!("switchboard_requests_total{{route=\"unknown\",status=\"{status}\"}}");
        assert_eq!(sample(&metrics, &series), 1, "{metrics}");
    }
    let mut wizard = chat("chat");
    wizard["messages"][0]["role"] = serde_json::json!("wizard");
    let refused = post(&gw.chat_url(), &wizard).await;
    assert_eq!(refused.status, 400);
    let message = refused.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("\"wizard\"") && message.contains("system, developer, user, assistant"),
        "{message}"
    );
    assert_eq!(a.hits() + b.hits(), 0, "never sent on");
    // Nothing was spent: 0, not the -0 of a float sum of no attempts.
    assert!(
        gw.wait_for_log("\"message\":\"request\"", Duration::from_secs(5))
            .await
    );
    let logs = gw.logs();
    assert!(
        logs.contains("\"provider_cost_usd\":0.0") && !logs.contains("_usd\":-0"),
        "{logs}"
    );
}

#[tokio::test]
async fn admin_refusals_say_an_admin_key_is_needed_and_metrics_can_require_one() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let gw = Gateway::start(&with_keys(&a, &b, "metrics_need_admin_key = true"), ENV);
    let admin = get(
        &format!("{}/admin/config", gw.url),
        &[("authorization", "Bearer sk-app")],
    )
    .await;
    assert_eq!(admin.status, 403);
    assert_eq!(admin.json()["error"]["code"], "admin_key_required");
    let metrics_url = format!("{}/metrics", gw.url);
    assert_eq!(get(&metrics_url, &[]).await.status, 401);
    assert_eq!(
        get(&metrics_url, &[("authorization", "Bearer sk-app")])
            .await
            .status,
        403
    );
    let scraped = get(&metrics_url, &[("authorization", "Bearer sk-ops")]).await;
    assert_eq!(scraped.status, 200);
    assert!(scraped.text().contains("switchboard_connections_open"));
    // Without the setting, /metrics stays open beside /healthz and /readyz.
    let open = Gateway::start(&with_keys(&a, &b, ""), ENV);
    assert_eq!(get(&format!("{}/metrics", open.url), &[]).await.status, 200);
    assert_eq!(get(&format!("{}/healthz", open.url), &[]).await.status, 200);
}

#[tokio::test]
async fn check_names_the_providers_it_would_disable_and_logs_carry_no_colour_codes_into_a_file() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("switchboard.toml");
    std::fs::write(&file, two_providers(&a, &b, "")).unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("--config")
            .arg(&file)
            .args(args)
            .env_clear()
            .env("KEY_A", "secret-key-a")
            .env("KEY_B", "")
            .output()
            .unwrap()
    };
    let checked = run(&["--check"]);
    assert!(checked.status.success());
    let stdout = String::from_utf8_lossy(&checked.stdout);
    assert!(stdout.contains("provider b will be disabled: "), "{stdout}");
    // A broken file: the error log goes to a pipe, in plain text.
    std::fs::write(&file, "[server]\nlisten = 7\n").unwrap();
    let failed = run(&[]);
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("invalid configuration"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "no ANSI codes into a pipe: {stderr:?}"
    );
}
