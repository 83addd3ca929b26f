//! Watches the plugin folders and reloads changed `.wasm` files off the
//! request path, one change at a time.

use super::registry::{PluginKind, Registry, plugin_name};
use notify_debouncer_mini::notify::RecursiveMode;
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Editors and copies write in several steps; act once the folder is quiet.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Keeps the watch alive; dropping it stops watching.
pub struct FolderWatch {
    _debouncer: Debouncer<notify_debouncer_mini::notify::RecommendedWatcher>,
}

/// Watch both folders; must be called inside the Tokio runtime.
pub fn watch_folders(
    registry: Arc<Registry>,
    adapter_dir: &Path,
    policy_dir: &Path,
) -> Result<FolderWatch, String> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let mut debouncer = new_debouncer(DEBOUNCE, move |result: DebounceEventResult| match result {
        Ok(events) => {
            for event in events {
                let _ = tx.send(event.path);
            }
        }
        Err(error) => tracing::warn!(%error, "plugin folder watch error"),
    })
    .map_err(|e| format!("cannot watch plugin folders: {e}"))?;
    let adapter_dir = canonical(adapter_dir);
    let policy_dir = canonical(policy_dir);
    for dir in [&adapter_dir, &policy_dir] {
        debouncer
            .watcher()
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    }
    tokio::spawn(async move {
        while let Some(path) = rx.recv().await {
            if plugin_name(&path).is_none() {
                continue;
            }
            let parent = path.parent().map(canonical);
            let kind = if parent.as_deref() == Some(adapter_dir.as_path()) {
                PluginKind::Adapter
            } else if parent.as_deref() == Some(policy_dir.as_path()) {
                PluginKind::Policy
            } else {
                continue;
            };
            if path.exists() {
                registry.reload_file(kind, &path).await;
            } else {
                registry.remove_file(kind, &path).await;
            }
        }
    });
    Ok(FolderWatch {
        _debouncer: debouncer,
    })
}

fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}
