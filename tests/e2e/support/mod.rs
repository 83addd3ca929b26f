//! What every end-to-end test uses: the real `switchboard` binary, mock
//! providers on loopback, and a small HTTP client.

pub mod client;
pub mod gateway;
pub mod mock;
pub mod schema;

pub use client::{Reply, get, post, post_with};
pub use gateway::Gateway;
pub use mock::{MockProvider, Script};

/// Folder holding the freshly built Wasm guests (see host/build.rs).
pub fn wasm(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("SWITCHBOARD_WASM_DIR")).join(format!("{name}.wasm"))
}

/// A minimal chat request for `model`.
pub fn chat(model: &str) -> serde_json::Value {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": "Say hello"}]})
}

/// The same request, streamed, with the final usage chunk asked for.
pub fn streamed_chat(model: &str) -> serde_json::Value {
    let mut request = chat(model);
    request["stream"] = serde_json::json!(true);
    request["stream_options"] = serde_json::json!({"include_usage": true});
    request
}

/// Config with providers `a` and `b` (keys from `KEY_A`/`KEY_B`, 1 s
/// timeouts) and a route `chat` over both, in that order. `route_extra` is
/// appended to the route table.
pub fn two_providers(a: &MockProvider, b: &MockProvider, route_extra: &str) -> String {
    let provider = |name: &str, url: String| {
        format!(
            r#"
[providers.{name}]
adapter = "openai"
base_url = "{url}"
api_key_env = "KEY_{upper}"
timeout_ms = 1000
first_token_timeout_ms = 1000
idle_timeout_ms = 1000

[providers.{name}.models.model-{name}]
input_price = 1.0
output_price = 2.0
context_window = 8000
"#,
            upper = name.to_uppercase()
        )
    };
    format!(
        "{}{}\n[routes.chat]\ntargets = [\"a/model-a\", \"b/model-b\"]\n{route_extra}\n",
        provider("a", a.url()),
        provider("b", b.url())
    )
}

pub const KEYS: &[(&str, &str)] = &[("KEY_A", "secret-key-a"), ("KEY_B", "secret-key-b")];

/// Replace a plugin file atomically, as the README recommends.
pub fn install(dir: &std::path::Path, name: &str, bytes: &[u8]) {
    let staging = dir.join(format!(".{name}.tmp"));
    std::fs::write(&staging, bytes).unwrap();
    std::fs::rename(&staging, dir.join(name)).unwrap();
}

/// The value of one sample line of `/metrics`, 0 when absent.
pub fn sample(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Start the gateway on `config` (in a new folder) and expect it to refuse:
/// its stderr.
pub fn refused_start(config: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    refused_start_in(dir.path(), config)
}

/// As [`refused_start`], with the config file in `dir` (so it can point at
/// files the test put there).
pub fn refused_start_in(dir: &std::path::Path, config: &str) -> String {
    let file = dir.join("switchboard.toml");
    std::fs::write(
        &file,
        format!(
            "[plugins]\nadapter_dir = \"a\"\npolicy_dir = \"p\"\n[server]\nlisten = \"127.0.0.1:0\"\n{config}"
        ),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("--config")
        .arg(&file)
        .env_clear()
        .envs(KEYS.iter().copied())
        .output()
        .unwrap();
    assert!(!output.status.success(), "the gateway started on {config}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}
