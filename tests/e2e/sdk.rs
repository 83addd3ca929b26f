//! The official `openai` Python SDK against the gateway, unchanged.

use crate::support::*;

#[tokio::test]
async fn the_official_python_sdk_works_unchanged() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    a.script([
        Script::Answer("Hello from the mock"),
        Script::Answer("Hello from the mock"),
        Script::StreamCut(vec!["Hello", " from"]),
    ]);
    let config = format!(
        "{}\n[[gateway_keys]]\nname = \"sdk\"\nkey_env = \"GW_KEY\"\n",
        two_providers(&a, &b, "")
    );
    let gw = Gateway::start(&config, &[("KEY_A", "ka"), ("KEY_B", "kb"), ("GW_KEY", "sk-sdk")]);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/sdk/openai_sdk.py");
    let url = gw.url.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(script)
            .arg(url)
            .arg("sk-sdk")
            .output()
    })
    .await
    .unwrap()
    .expect("python3 runs (the test set-up installs it with the openai package)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "SDK checks failed:\n{stdout}\n{stderr}");
    for check in [
        "non-streaming: ok",
        "streaming: ok",
        "models: ok",
        "not found: ok",
        "auth: ok",
    ] {
        assert!(stdout.contains(check), "{check} missing:\n{stdout}");
    }
}
