//! Watches the plugin folders and reloads changed `.wasm` files off the
//! request path, one change at a time.

use super::registry::{PluginKind, Registry, plugin_name};
use crate::fswatch::{self, FolderWatch, canonical};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Editors and copies write in several steps; act once the folder is quiet.
const QUIET: Duration = Duration::from_millis(200);

/// Watch both folders; must be called inside the Tokio runtime.
pub fn watch_folders(
    registry: Arc<Registry>,
    adapter_dir: &Path,
    policy_dir: &Path,
) -> Result<FolderWatch, String> {
    let adapter_dir = canonical(adapter_dir);
    let policy_dir = canonical(policy_dir);
    let (watch, mut batches) = fswatch::watch(&[adapter_dir.clone(), policy_dir.clone()], QUIET, |path| {
        plugin_name(path).is_some()
    })
    .map_err(|e| format!("cannot watch plugin folders: {e}"))?;
    tokio::spawn(async move {
        while let Some(paths) = batches.recv().await {
            // Only `*.wasm` paths come: the watch drops the rest.
            for path in paths {
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
        }
    });
    Ok(watch)
}
