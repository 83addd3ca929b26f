//! Bad input and access control: clear OpenAI-format errors, right statuses,
//! and the process carries on.

use crate::support::*;

fn keyed(a: &MockProvider, b: &MockProvider) -> String {
    format!(
        "{}\n[[gateway_keys]]\nname = \"full\"\nkey_env = \"GW_FULL\"\nadmin = true\n\n[[gateway_keys]]\nname = \"limited\"\nkey_env = \"GW_LIMITED\"\nmodels = [\"other\"]\n\n[routes.other]\ntargets = [\"b/model-b\"]\n",
        two_providers(a, b, "")
    )
}

const ENV: &[(&str, &str)] = &[
    ("KEY_A", "ka"),
    ("KEY_B", "kb"),
    ("GW_FULL", "sk-gw-full"),
    ("GW_LIMITED", "sk-gw-limited"),
];

fn error_of(reply: &Reply) -> serde_json::Value {
    let body = reply.json();
    assert!(
        body["error"]["message"].is_string(),
        "OpenAI error format: {body}"
    );
    assert!(body["error"]["type"].is_string(), "OpenAI error format: {body}");
    body["error"].clone()
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_the_gateway_stays_up() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let mut gw = Gateway::start(&two_providers(&a, &b, ""), KEYS);
    let url = gw.chat_url();

    let reply = post_with(&url, b"{\"model\": \"chat\", \"messages\": [".to_vec(), &[]).await;
    assert_eq!(reply.status, 400);
    assert!(
        error_of(&reply)["message"]
            .as_str()
            .unwrap()
            .contains("parse the JSON")
    );

    let reply = post_with(&url, br#"{"model":"chat"}"#.to_vec(), &[]).await;
    assert_eq!(
        (reply.status, error_of(&reply)["param"].as_str()),
        (400, Some("messages"))
    );

    let reply = post(&url, &chat("no-such-model")).await;
    assert_eq!(reply.status, 404);
    assert_eq!(error_of(&reply)["code"], "model_not_found");

    // A wrong type in a nested field the gateway reads is refused, not ignored.
    let mut request = streamed_chat("chat");
    request["stream_options"]["include_usage"] = serde_json::json!("yes");
    let reply = post(&url, &request).await;
    assert_eq!(
        (reply.status, error_of(&reply)["param"].as_str()),
        (400, Some("stream_options.include_usage"))
    );
    let reply = post_with(&format!("{}/admin/config", gw.url), Vec::new(), &[]).await;
    assert_eq!(reply.status, 405);
    error_of(&reply);

    let huge = vec![b'x'; 5 * 1024 * 1024];
    let reply = post_with(&url, huge, &[]).await;
    assert_eq!(reply.status, 413);
    assert_eq!(error_of(&reply)["code"], "request_too_large");

    let reply = get(&url, &[]).await;
    assert_eq!(reply.status, 405);
    let reply = get(&format!("{}/v1/nothing", gw.url), &[]).await;
    assert_eq!(reply.status, 404);
    error_of(&reply);

    assert_eq!(a.hits(), 0, "nothing invalid reached a provider");
    let reply = post(&url, &chat("chat")).await;
    assert_eq!(reply.status, 200, "the gateway still serves");
    assert!(gw.is_running());
}

#[tokio::test]
async fn a_request_no_target_can_take_is_refused_before_any_attempt() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let config = two_providers(&a, &b, "").replace(
        "context_window = 8000",
        "context_window = 8000\ncapabilities = [\"streaming\"]",
    );
    let gw = Gateway::start(&config, KEYS);
    let mut request = chat("chat");
    request["tools"] = serde_json::json!([{"type": "function", "function": {"name": "f"}}]);
    let reply = post(&gw.chat_url(), &request).await;
    assert_eq!(reply.status, 400);
    assert!(error_of(&reply)["message"].as_str().unwrap().contains("tools"));

    let mut request = chat("chat");
    request["max_tokens"] = serde_json::json!(100_000);
    let reply = post(&gw.chat_url(), &request).await;
    assert_eq!(
        (reply.status, error_of(&reply)["code"].as_str()),
        (400, Some("context_length_exceeded"))
    );
    assert_eq!(a.hits() + b.hits(), 0);
}

#[tokio::test]
async fn gateway_keys_are_required_and_scoped() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let gw = Gateway::start(&keyed(&a, &b), ENV);
    let url = gw.chat_url();
    let body = chat("chat").to_string().into_bytes();

    let reply = post_with(&url, body.clone(), &[]).await;
    assert_eq!(
        (reply.status, error_of(&reply)["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
    let reply = post_with(&url, body.clone(), &[("authorization", "Bearer sk-wrong")]).await;
    assert_eq!(reply.status, 401);
    let reply = post_with(&url, body.clone(), &[("authorization", "Bearer sk-gw-limited")]).await;
    assert_eq!(reply.status, 403, "the limited key may not use `chat`");
    let reply = post_with(&url, body, &[("authorization", "Bearer sk-gw-full")]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        a.seen()[0].headers["authorization"],
        "Bearer ka",
        "the caller's key is never forwarded"
    );

    let models = get(
        &format!("{}/v1/models", gw.url),
        &[("authorization", "Bearer sk-gw-limited")],
    )
    .await
    .json();
    assert_eq!(
        models["data"].as_array().unwrap().len(),
        1,
        "a key sees only its routes"
    );
    assert_eq!(get(&format!("{}/v1/models", gw.url), &[]).await.status, 401);
    assert_eq!(
        get(
            &format!("{}/admin/plugins", gw.url),
            &[("authorization", "Bearer sk-gw-limited")]
        )
        .await
        .status,
        403
    );
    assert_eq!(
        get(
            &format!("{}/admin/plugins", gw.url),
            &[("authorization", "Bearer sk-gw-full")]
        )
        .await
        .status,
        200
    );
    assert!(
        !gw.logs().contains("sk-gw-full") && !gw.logs().contains("sk-wrong"),
        "keys are never logged"
    );
}

#[tokio::test]
async fn config_errors_name_the_file_the_key_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[providers.x]\nadapter = \"openai\"\nbase_url = \"ftp://nope\"\n[providers.x.models.m]\n",
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["--check", "--config"])
        .arg(&file)
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.toml")
            && stderr.contains("providers.x.base_url")
            && stderr.contains("not an http(s) URL"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_shipped_configs_are_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    for file in ["switchboard.toml", "examples/providers.toml"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["--check", "--config"])
            .arg(root.join(file))
            .env_clear()
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// jemalloc's settings come with the binary, not with the folder it was
/// built from (they were an environment variable of this repository's
/// `.cargo/config.toml`, which a build from elsewhere does not read).
#[test]
fn the_allocator_settings_are_built_into_the_binary() {
    let settings = |extra: &str| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("--version")
            .env_clear()
            .env("_RJEM_MALLOC_CONF", format!("confirm_conf:true{extra}"))
            .output()
            .unwrap();
        assert!(output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let stderr = settings("");
    let built_in = stderr
        .lines()
        .find(|l| l.contains("global variable malloc_conf"))
        .unwrap_or_else(|| panic!("no built-in settings: {stderr}"));
    for setting in ["narenas:1", "tcache_max:4096", "dirty_decay_ms:1000"] {
        assert!(built_in.contains(setting), "{built_in}");
    }
    assert!(stderr.contains("Set conf value: narenas:1"), "{stderr}");
    // The environment still has the last word.
    let stderr = settings(",narenas:2");
    assert!(stderr.contains("Set conf value: narenas:2"), "{stderr}");
}
