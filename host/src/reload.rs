//! Config-file hot reload. The gateway in use sits behind an [`ArcSwap`]:
//! each request takes the current one and finishes on it. A changed file
//! (or SIGHUP) is loaded and checked off the request path: the new routes,
//! providers and keys go live at once, live health and cooldowns carry over
//! for targets that stay the same, and a file that fails any check is refused
//! while the last good configuration keeps serving.

use crate::config::{Config, ConfigError, text_hash};
use crate::fswatch::{self, FolderWatch, canonical};
use crate::gateway::{Gateway, GatewayError};
use crate::metrics::ReloadLabels;
use arc_swap::ArcSwap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Editors write in several steps; act once the folder is quiet.
const QUIET: Duration = Duration::from_millis(200);
/// A file is read once its size and modification time hold still this long
/// (an editor that truncates, then writes, leaves an empty file between).
const SETTLE: Duration = Duration::from_millis(100);
/// How long to wait for a file being written to settle.
const SETTLE_AT_MOST: Duration = Duration::from_secs(2);

/// The gateway serving now, and how the last reload went.
pub struct Live {
    current: ArcSwap<Gateway>,
    /// Where the built-in simulator listens, when it runs.
    simulator_url: Option<String>,
    last: Mutex<ReloadStatus>,
    /// One reload at a time; holds a hash of the file text last tried, so a
    /// file whose text did not change is not reloaded again.
    reloading: tokio::sync::Mutex<Option<u64>>,
}

/// What started a reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The file changed on disk (skipped when its text did not).
    FileChanged,
    /// An explicit request (SIGHUP): always reloads.
    Signal,
}

/// What `/admin/config` reports.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ReloadStatus {
    /// Seconds since the Unix epoch of the configuration in use.
    pub loaded_at: u64,
    /// Why the newest version of the file was refused, if it was.
    pub refused: Option<String>,
    /// Settings changed in the file that only a restart applies.
    pub pending_restart: Vec<String>,
}

impl Live {
    pub fn new(gateway: Gateway, simulator_url: Option<String>) -> Live {
        let started_with = Some(gateway.config.text_hash);
        Live {
            current: ArcSwap::from_pointee(gateway),
            simulator_url,
            last: Mutex::new(ReloadStatus {
                loaded_at: unix_now(),
                ..Default::default()
            }),
            reloading: tokio::sync::Mutex::new(started_with),
        }
    }

    /// The gateway to serve one request with.
    pub fn current(&self) -> Arc<Gateway> {
        self.current.load_full()
    }

    pub fn status(&self) -> ReloadStatus {
        self.last.lock().unwrap().clone()
    }

    /// Load the config file again and, if it passes every check, serve with it.
    pub async fn reload(&self, trigger: Trigger) {
        let mut last_tried = self.reloading.lock().await;
        let old = self.current();
        let text = settled(&old.config.file).await;
        let hash = text.as_deref().ok().map(text_hash);
        if trigger == Trigger::FileChanged && hash.is_some() && hash == *last_tried {
            old.metrics
                .config_reloads
                .get_or_create(&ReloadLabels { outcome: "unchanged" })
                .inc();
            return;
        }
        *last_tried = hash;
        let outcome = match self.prepare(&old, text).await {
            Ok((gateway, pending_restart)) => {
                tracing::info!(
                    file = %old.config.file.display(),
                    routes = gateway.config.routes.len(),
                    providers = gateway.config.providers.len(),
                    "configuration reloaded"
                );
                for key in &pending_restart {
                    tracing::warn!(%key, "changed in the configuration file; takes effect at the next restart");
                }
                self.current.store(Arc::new(gateway));
                *self.last.lock().unwrap() = ReloadStatus {
                    loaded_at: unix_now(),
                    refused: None,
                    pending_restart,
                };
                "applied"
            }
            Err(reason) => {
                tracing::error!(%reason, "configuration refused; the last good one keeps serving");
                self.last.lock().unwrap().refused = Some(reason.to_string());
                "refused"
            }
        };
        old.metrics
            .config_reloads
            .get_or_create(&ReloadLabels { outcome })
            .inc();
    }

    /// The new gateway and the changed settings that need a restart.
    async fn prepare(
        &self,
        old: &Gateway,
        text: std::io::Result<String>,
    ) -> Result<(Gateway, Vec<String>), ReloadError> {
        let file = &old.config.file;
        let text = text.map_err(|source| ReloadError::Read {
            file: file.clone(),
            source,
        })?;
        let config = Config::parse(&text, file, &|name| std::env::var(name).ok())?;
        refuse_dangerous(&old.config, &config).map_err(ReloadError::Dangerous)?;
        let pending_restart = restart_only_changes(&old.config, &config);
        let gateway = Gateway::new(
            config,
            old.registry.clone(),
            old.metrics.clone(),
            old.shared.clone(),
            self.simulator_url.as_deref(),
            Some(old),
        )?;
        gateway.check_plugins().await?;
        Ok((gateway, pending_restart))
    }
}

/// Why a new version of the config file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{}: {source}", file.display())]
    Read { file: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// What a half-written file or a slip looks like.
    #[error("{0}")]
    Dangerous(String),
    #[error(transparent)]
    Gateway(#[from] GatewayError),
}

/// A reload an editor's half-written file or an operator's slip would
/// cause: every route gone, or gateway keys no longer required.
fn refuse_dangerous(old: &Config, new: &Config) -> Result<(), String> {
    if !old.routes.is_empty() && new.routes.is_empty() {
        return Err(format!(
            "{}: the new file has no routes (a half-written file?); a reload may not remove every route",
            new.file.display()
        ));
    }
    if !old.keys.is_empty() && new.keys.is_empty() && !new.server.open_access {
        return Err(format!(
            "{}: the new file has no [[gateway_keys]], which would open the API to anyone; set `[server] open_access = true` to allow that",
            new.file.display()
        ));
    }
    Ok(())
}

/// The file's text once its size and modification time have held still
/// for [`SETTLE`] (or after [`SETTLE_AT_MOST`]).
async fn settled(file: &Path) -> std::io::Result<String> {
    let stamp = |file: &Path| std::fs::metadata(file).map(|m| (m.len(), m.modified().ok()));
    let give_up = tokio::time::Instant::now() + SETTLE_AT_MOST;
    let mut last = stamp(file)?;
    while tokio::time::Instant::now() < give_up {
        tokio::time::sleep(SETTLE).await;
        let now = stamp(file)?;
        if now == last {
            break;
        }
        last = now;
    }
    tokio::fs::read_to_string(file).await
}

/// Settings read only at start-up that differ between `old` and `new`.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<String> {
    let (a, b) = (&old.server, &new.server);
    let (p, q) = (&old.plugins, &new.plugins);
    [
        ("server.listen", a.listen != b.listen),
        (
            "server.shutdown_grace_ms",
            a.shutdown_grace_ms != b.shutdown_grace_ms,
        ),
        ("server.watch_config", a.watch_config != b.watch_config),
        ("server.max_connections", a.max_connections != b.max_connections),
        ("ledger", old.ledger != new.ledger),
        ("plugins.adapter_dir", p.adapter_dir != q.adapter_dir),
        ("plugins.policy_dir", p.policy_dir != q.policy_dir),
        ("plugins.watch", p.watch != q.watch),
        ("plugins.call_timeout_ms", p.call_timeout_ms != q.call_timeout_ms),
        (
            "plugins.adapter_call_timeout_ms",
            p.adapter_call_timeout_ms != q.adapter_call_timeout_ms,
        ),
        (
            "plugins.policy_call_timeout_ms",
            p.policy_call_timeout_ms != q.policy_call_timeout_ms,
        ),
        (
            "plugins.adapter_call_timeout_per_mib_ms",
            p.adapter_call_timeout_per_mib_ms != q.adapter_call_timeout_per_mib_ms,
        ),
        (
            "plugins.max_concurrent_calls",
            p.max_concurrent_calls != q.max_concurrent_calls,
        ),
        (
            "plugins.quarantine_after",
            p.quarantine_after != q.quarantine_after,
        ),
        (
            "plugins.total_memory_mib",
            p.total_memory_mib != q.total_memory_mib,
        ),
        ("plugins.adapters", p.adapters != q.adapters),
        ("plugins.policies", p.policies != q.policies),
        (
            "plugins.memory_limit_mib",
            p.memory_limit_mib != q.memory_limit_mib,
        ),
        ("plugins.max_instances", p.max_instances != q.max_instances),
        ("plugins.compile_cache", p.compile_cache != q.compile_cache),
        (
            "plugins.compile_cache_dir",
            p.compile_cache_dir != q.compile_cache_dir,
        ),
    ]
    .into_iter()
    .filter(|(_, changed)| *changed)
    .map(|(key, _)| key.to_string())
    .collect()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Reload when the config file changes. The folder is watched, not the file:
/// editors and deploy tools replace the file by renaming a new one over it.
/// Must be called inside the Tokio runtime.
pub fn watch_config(live: Arc<Live>, file: &Path) -> Result<FolderWatch, String> {
    let file = canonical(file);
    let dir = file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let name = file.file_name().map(ToOwned::to_owned);
    let (watch, mut batches) = fswatch::watch(&[dir], QUIET, move |path| path.file_name() == name.as_deref())
        .map_err(|e| format!("cannot watch the config file: {e}"))?;
    tokio::spawn(async move {
        while let Some(paths) = batches.recv().await {
            if paths.contains(&file) {
                live.reload(Trigger::FileChanged).await;
            }
        }
    });
    Ok(watch)
}

/// Reload on SIGHUP, the Unix convention (and the way when the watch is off).
pub fn reload_on_hangup(live: Arc<Live>) -> Result<(), String> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = signal(SignalKind::hangup()).map_err(|e| format!("cannot handle SIGHUP: {e}"))?;
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the configuration");
                live.reload(Trigger::Signal).await;
            }
        });
    }
    #[cfg(not(unix))]
    let _ = live;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse(text, Path::new("/etc/switchboard/switchboard.toml"), &|_| None).unwrap()
    }

    #[test]
    fn a_reload_may_not_empty_the_routes_or_open_the_api() {
        let env = |name: &str| (name == "K").then(|| "key".to_string());
        let file = Path::new("/etc/switchboard/switchboard.toml");
        let routed = "[providers.p]\nadapter = \"openai\"\nbase_url = \"http://127.0.0.1:1\"\n[providers.p.models.m]\n[routes.r]\ntargets = [\"p/m\"]\n";
        let keyed = format!("{routed}[[gateway_keys]]\nname = \"k\"\nkey_env = \"K\"\n");
        let parse = |text: &str| Config::parse(text, file, &env).unwrap();
        let (closed, open) = (parse(&keyed), parse(routed));
        assert!(
            refuse_dangerous(&closed, &parse(""))
                .unwrap_err()
                .contains("no routes")
        );
        assert!(
            refuse_dangerous(&closed, &open)
                .unwrap_err()
                .contains("open_access")
        );
        let said_so = parse(&format!("[server]\nopen_access = true\n{routed}"));
        assert!(refuse_dangerous(&closed, &said_so).is_ok());
        assert!(
            refuse_dangerous(&open, &closed).is_ok(),
            "closing it is always fine"
        );
        assert!(
            refuse_dangerous(&parse(""), &parse("")).is_ok(),
            "nothing was routed before"
        );
    }

    #[test]
    fn settings_read_at_start_up_are_named_when_they_change() {
        let old = parse("[server]\nlisten = \"127.0.0.1:8787\"\n");
        let same = parse("[server]\nlisten = \"127.0.0.1:8787\"\nmax_body_bytes = 10\n");
        assert!(
            restart_only_changes(&old, &same).is_empty(),
            "max_body_bytes applies live"
        );
        let moved = parse("[server]\nlisten = \"127.0.0.1:9000\"\n[plugins]\nmax_instances = 5\n");
        assert_eq!(
            restart_only_changes(&old, &moved),
            ["server.listen", "plugins.max_instances"]
        );
    }
}
