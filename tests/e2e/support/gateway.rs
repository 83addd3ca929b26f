//! Runs the real `switchboard` binary on an ephemeral port with a config
//! written for the test, and stops it when the test ends.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Gateway {
    child: Child,
    pub url: String,
    pub dir: tempfile::TempDir,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Gateway {
    /// Start with `config` (TOML without `[server] listen`/`[plugins]` folders,
    /// which are filled in) and the given environment.
    pub fn start(config: &str, env: &[(&str, &str)]) -> Gateway {
        Self::start_with_files(config, env, &[])
    }

    /// As `start`, with plugin files placed before start-up:
    /// (`adapters` or `policies`, file name, source file).
    pub fn start_with_files(config: &str, env: &[(&str, &str)], files: &[(&str, &str, PathBuf)]) -> Gateway {
        Self::launch(config, env, files, None)
    }

    /// As `start`, with the process's file-descriptor limit (soft and hard)
    /// lowered to `nofile`.
    pub fn start_with_fd_limit(config: &str, env: &[(&str, &str)], nofile: u32) -> Gateway {
        Self::launch(config, env, &[], Some(format!("-n {nofile}")))
    }

    /// As `start_with_files`, with the process's address space (`ulimit -v`)
    /// limited to `kib`.
    pub fn start_with_address_space(
        config: &str,
        env: &[(&str, &str)],
        files: &[(&str, &str, PathBuf)],
        kib: u64,
    ) -> Gateway {
        Self::launch(config, env, files, Some(format!("-v {kib}")))
    }

    fn launch(
        config: &str,
        env: &[(&str, &str)],
        files: &[(&str, &str, PathBuf)],
        ulimit: Option<String>,
    ) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["adapters", "policies"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        for (sub, name, source) in files {
            std::fs::copy(source, dir.path().join(sub).join(name)).unwrap();
        }
        let config_path = dir.path().join("switchboard.toml");
        std::fs::write(&config_path, with_test_sections(config)).unwrap();
        Self::run_in(dir, env, ulimit)
    }

    /// Stop the process and start it again on the same folder, config and
    /// ledger (its port changes).
    pub fn restart(mut self, env: &[(&str, &str)]) -> Gateway {
        self.kill();
        let dir = tempfile::TempDir::new_in(std::env::temp_dir()).unwrap();
        let old = std::mem::replace(&mut self.dir, dir);
        Self::run_in(old, env, None)
    }

    /// Run `switchboard <args>` on this gateway's config (the `keys`,
    /// `teams` and `report` commands): its exit status, stdout and stderr.
    pub fn command(&self, env: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
        let output = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("--config")
            .arg(self.dir.path().join("switchboard.toml"))
            .args(args)
            .env_clear()
            .envs(env.iter().copied())
            .output()
            .expect("run switchboard");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Run the binary on `dir`'s config; `ulimit` (the arguments of the
    /// shell's `ulimit`, as `-n 256`) limits the process.
    fn run_in(dir: tempfile::TempDir, env: &[(&str, &str)], ulimit: Option<String>) -> Gateway {
        let config_path = dir.path().join("switchboard.toml");
        let binary = env!("CARGO_BIN_EXE_switchboard");
        let mut command = match ulimit {
            None => Command::new(binary),
            Some(limit) => {
                // The shell's own `ulimit`, then `exec`: the limit is the gateway's.
                let mut shell = Command::new("/bin/sh");
                shell
                    .arg("-c")
                    .arg(format!("ulimit {limit} && exec \"$0\" \"$@\""))
                    .arg(binary);
                shell
            }
        };
        let mut child = command
            .arg("--config")
            .arg(&config_path)
            .arg("--log-format")
            .arg("json")
            .env_clear()
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start switchboard");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line)
                    && event["message"] == "listening"
                {
                    let _ = addr_tx.send(event["addr"].as_str().unwrap_or_default().to_string());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = match addr_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("switchboard did not start:\n{}", logs.lock().unwrap().join("\n"));
            }
        };
        Gateway {
            child,
            url: format!("http://{addr}"),
            dir,
            logs,
        }
    }

    /// One target's live health as `/admin/targets` reports it.
    pub async fn target_health(&self, provider: &str) -> serde_json::Value {
        let targets = super::get(&format!("{}/admin/targets", self.url), &[])
            .await
            .json();
        targets["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["provider"] == provider)
            .unwrap_or_else(|| panic!("no target of {provider} in {targets}"))
            .clone()
    }

    /// Replace the config file the way deploy tools do: write a new file
    /// and rename it over the old one.
    pub fn rewrite_config(&self, config: &str) {
        let staged = self.dir.path().join(".switchboard.toml.new");
        std::fs::write(&staged, with_test_sections(config)).unwrap();
        std::fs::rename(staged, self.dir.path().join("switchboard.toml")).unwrap();
    }

    /// Write the config file in place, as an editor that truncates it and
    /// then writes does: empty for `pause` first.
    pub fn write_config_in_place(&self, config: &str, pause: Duration) {
        let path = self.dir.path().join("switchboard.toml");
        let file = std::fs::File::create(&path).unwrap();
        drop(file);
        std::thread::sleep(pause);
        std::fs::write(&path, with_test_sections(config)).unwrap();
    }

    /// Send the process a signal (`HUP`, `TERM`, ...).
    pub fn signal(&self, name: &str) {
        // The shell's own `kill`: no procps needed.
        let sent = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -{name} {}", self.child.id()))
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// What `/admin/plugins` reports.
    pub async fn plugins_admin(&self) -> serde_json::Value {
        super::get(&format!("{}/admin/plugins", self.url), &[])
            .await
            .json()
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        super::get(&format!("{}/metrics", self.url), &[]).await.text()
    }

    pub fn chat_url(&self) -> String {
        format!("{}/v1/chat/completions", self.url)
    }

    pub fn policy_dir(&self) -> PathBuf {
        self.dir.path().join("policies")
    }

    pub fn adapter_dir(&self) -> PathBuf {
        self.dir.path().join("adapters")
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kill the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Wait until a log line contains `needle`.
    pub async fn wait_for_log(&self, needle: &str, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if self.logs.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

/// `config` with what every test gateway needs: an ephemeral port and plugin
/// folders inside its own directory. A `[server]` or `[plugins]` table of
/// the test's own gets them added to it.
fn with_test_sections(config: &str) -> String {
    let mut config = config.to_string();
    // One compile cache for every test gateway: the bundled plugins are
    // compiled once per build, not at every start.
    let mut plugins = format!(
        "adapter_dir = \"adapters\"\npolicy_dir = \"policies\"\ncompile_cache_dir = {:?}\n",
        concat!(env!("CARGO_TARGET_TMPDIR"), "/wasm-cache")
    );
    // The production deadlines (25 and 10 ms) are wall-clock: on two cores
    // busy with the whole suite a well-behaved call can miss them. Tests of
    // deadlines set their own.
    for (key, ms) in [("adapter_call_timeout_ms", 250), ("policy_call_timeout_ms", 250)] {
        if !config.contains(key) {
            plugins.push_str(&format!("{key} = {ms}\n"));
        }
    }
    for (table, ours) in [
        (
            "[server]\n",
            "listen = \"127.0.0.1:0\"\nshutdown_grace_ms = 1000\n",
        ),
        ("[plugins]\n", plugins.as_str()),
    ] {
        config = if config.contains(table) {
            config.replacen(table, &format!("{table}{ours}"), 1)
        } else {
            format!("{table}{ours}\n{config}")
        };
    }
    config
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- switchboard log ---\n{}", self.logs());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
