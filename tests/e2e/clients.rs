//! Real coding agents through the gateway, unchanged: Claude Code in print
//! mode (Anthropic Messages) and the Codex CLI in exec mode (Responses),
//! each against a provider that speaks its API (pass-through) and one that
//! speaks chat (translated). `tests/run` installs both from npm into
//! `.tools/` and points `SWITCHBOARD_TEST_CLIENTS` at their `bin` folder;
//! neither needs a network (their non-essential traffic is switched off).

use crate::support::mock::Wire;
use crate::support::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn client(name: &str) -> PathBuf {
    let dir = std::env::var("SWITCHBOARD_TEST_CLIENTS")
        .expect("SWITCHBOARD_TEST_CLIENTS names the folder of the claude and codex CLIs: run ./tests/run, which installs them");
    PathBuf::from(dir).join(name)
}

/// Providers `ant` (Anthropic), `native` (serves the Responses API) and
/// `chat` (chat only), one route each.
fn config(ant: &MockProvider, native: &MockProvider, chat: &MockProvider) -> String {
    format!(
        r#"
[[gateway_keys]]
name = "agent"
key_env = "GW_KEY"

[providers.ant]
adapter = "anthropic"
base_url = "http://{}"
api_key_env = "KEY_A"
[providers.ant.models.claude-sonnet-4-5]

[providers.native]
adapter = "openai"
base_url = "{}"
api_key_env = "KEY_A"
responses_api = true
[providers.native.models.gpt-5]

[providers.chat]
adapter = "openai"
base_url = "{}"
api_key_env = "KEY_B"
[providers.chat.models.llama-3]

[routes.via-anthropic]
targets = ["ant/claude-sonnet-4-5"]
[routes.via-responses]
targets = ["native/gpt-5"]
[routes.via-chat]
targets = ["chat/llama-3"]
"#,
        ant.addr,
        native.url(),
        chat.url()
    )
}

const ENV: &[(&str, &str)] = &[
    ("GW_KEY", "gw-secret"),
    ("KEY_A", "secret-key-a"),
    ("KEY_B", "secret-key-b"),
];

/// Run a CLI with a fresh home, the given environment and a deadline; its
/// exit status and everything it printed.
async fn run(program: PathBuf, args: Vec<String>, env: Vec<(String, String)>) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let home = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let mut command = Command::new(program);
        command
            .args(&args)
            .current_dir(work.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("CODEX_HOME", home.path())
            .envs(env)
            .stdin(std::process::Stdio::null());
        std::fs::write(
            home.path().join("config.toml"),
            "model_provider = \"switchboard\"\n",
        )
        .unwrap();
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the CLI starts");
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let output = child.wait_with_output().unwrap();
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), printed)
    })
    .await
    .unwrap()
}

async fn claude(gw: &Gateway, route: &str) -> (bool, String) {
    let env = [
        ("ANTHROPIC_BASE_URL", gw.url.as_str()),
        ("ANTHROPIC_API_KEY", "gw-secret"),
        ("ANTHROPIC_DEFAULT_HAIKU_MODEL", route),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
        ("DISABLE_AUTOUPDATER", "1"),
        ("DISABLE_TELEMETRY", "1"),
        ("DISABLE_ERROR_REPORTING", "1"),
    ];
    run(
        client("claude"),
        vec!["-p".into(), "Say hello".into(), "--model".into(), route.into()],
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    )
    .await
}

async fn codex(gw: &Gateway, route: &str) -> (bool, String) {
    let provider = format!(
        "model_providers.switchboard={{ name = \"Switchboard\", base_url = \"{}/v1\", env_key = \"SWITCHBOARD_KEY\", wire_api = \"responses\" }}",
        gw.url
    );
    run(
        client("codex"),
        vec![
            "exec".into(),
            "--skip-git-repo-check".into(),
            "-c".into(),
            provider,
            "-m".into(),
            route.into(),
            "Say hello".into(),
        ],
        vec![("SWITCHBOARD_KEY".into(), "gw-secret".into())],
    )
    .await
}

#[tokio::test]
async fn claude_code_works_through_the_gateway_passed_through_and_translated() {
    let (ant, native, chat) = (
        MockProvider::start("ant").await,
        MockProvider::start("native").await,
        MockProvider::start("chat").await,
    );
    ant.set_default(Script::Wire(Wire::Anthropic, "Hello from the mock"));
    chat.set_default(Script::Answer("Hello from chat"));
    let gw = Gateway::start(&config(&ant, &native, &chat), ENV);

    let (ok, printed) = claude(&gw, "via-anthropic").await;
    assert!(ok && printed.contains("Hello from the mock"), "{printed}");
    let asked = ant
        .seen()
        .into_iter()
        .find(|s| s.path == "/v1/messages")
        .expect("a Messages request");
    assert_eq!(asked.headers["x-api-key"], "secret-key-a");
    assert!(
        asked.headers["anthropic-beta"]
            .to_str()
            .unwrap()
            .contains("claude-code"),
        "Claude Code's beta header is passed on"
    );
    assert!(asked.body["tools"].as_array().is_some_and(|t| !t.is_empty()));

    let (ok, printed) = claude(&gw, "via-chat").await;
    assert!(ok && printed.contains("Hello from chat"), "{printed}");
    let asked = chat.seen().into_iter().next().expect("a chat request");
    assert_eq!(asked.path, "/v1/chat/completions");
    assert_eq!(asked.body["stream"], true);
    assert!(asked.body["tools"].as_array().is_some_and(|t| !t.is_empty()));
}

#[tokio::test]
async fn the_codex_cli_works_through_the_gateway_passed_through_and_translated() {
    let (ant, native, chat) = (
        MockProvider::start("ant").await,
        MockProvider::start("native").await,
        MockProvider::start("chat").await,
    );
    native.set_default(Script::Wire(Wire::Responses, "Hello from the mock"));
    chat.set_default(Script::Answer("Hello from chat"));
    let gw = Gateway::start(&config(&ant, &native, &chat), ENV);

    let (ok, printed) = codex(&gw, "via-responses").await;
    assert!(ok && printed.contains("Hello from the mock"), "{printed}");
    let asked = native.seen().into_iter().next().expect("a Responses request");
    assert_eq!(asked.path, "/v1/responses");
    assert_eq!(asked.body["model"], "gpt-5");
    assert_eq!(asked.body["store"], false);

    let (ok, printed) = codex(&gw, "via-chat").await;
    assert!(ok && printed.contains("Hello from chat"), "{printed}");
    let asked = chat.seen().into_iter().next().expect("a chat request");
    assert_eq!(asked.path, "/v1/chat/completions");
    assert!(asked.body["tools"].as_array().is_some_and(|t| !t.is_empty()));
}
