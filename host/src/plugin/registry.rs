//! The loaded plugin versions. Requests take a snapshot and finish on it;
//! a reload swaps in a new set atomically; refused files are remembered.

use super::adapter::AdapterPlugin;
use super::policy::PolicyPlugin;
use super::sandbox::PluginRuntime;
use arc_swap::ArcSwap;
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// How many refusals `/admin/plugins` remembers.
const REFUSALS_KEPT: usize = 50;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    Adapter,
    Policy,
}

impl PluginKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Adapter => "adapter",
            PluginKind::Policy => "policy",
        }
    }
}

/// Every plugin version serving right now.
#[derive(Clone, Default)]
pub struct PluginSet {
    pub adapters: HashMap<String, Arc<AdapterPlugin>>,
    pub policies: HashMap<String, Arc<PolicyPlugin>>,
}

/// A plugin file that was not loaded, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Refusal {
    pub kind: PluginKind,
    pub file: PathBuf,
    pub reason: String,
    #[serde(with = "unix_seconds")]
    pub at: SystemTime,
}

/// Bundled plugins (compiled into the binary) overlaid by the files of the
/// plugin folders: a file named `<name>.wasm` serves as plugin `<name>`.
pub struct Registry {
    runtime: Arc<PluginRuntime>,
    current: ArcSwap<PluginSet>,
    refusals: Mutex<Vec<Refusal>>,
    bundled_adapters: &'static [(&'static str, &'static [u8])],
    bundled_policies: &'static [(&'static str, &'static [u8])],
    /// Told of every load: its kind and whether it now serves.
    on_load: Box<dyn Fn(PluginKind, bool) + Send + Sync>,
    /// A hash of the bytes last tried from each file, loaded or refused: a
    /// version is tried (and refused) once, however often it is saved.
    tried: Mutex<HashMap<PathBuf, u64>>,
}

impl Registry {
    pub fn new(
        runtime: Arc<PluginRuntime>,
        bundled_adapters: &'static [(&'static str, &'static [u8])],
        bundled_policies: &'static [(&'static str, &'static [u8])],
        on_load: Box<dyn Fn(PluginKind, bool) + Send + Sync>,
    ) -> Self {
        Registry {
            runtime,
            current: ArcSwap::from_pointee(PluginSet::default()),
            refusals: Mutex::new(Vec::new()),
            bundled_adapters,
            bundled_policies,
            on_load,
            tried: Mutex::new(HashMap::new()),
        }
    }

    /// Load the bundled plugins, then every `.wasm` file of the folders.
    /// A bundled plugin that fails to load is a build defect, so it is fatal.
    pub async fn load_all(&self, adapter_dir: &Path, policy_dir: &Path) -> Result<(), String> {
        for (name, bytes) in self.bundled_adapters {
            let plugin = AdapterPlugin::load(&self.runtime, name, "bundled".into(), bytes.to_vec())
                .await
                .map_err(|e| format!("bundled adapter `{name}`: {e}"))?;
            self.install_adapter(name, Some(plugin));
        }
        for (name, bytes) in self.bundled_policies {
            let plugin = PolicyPlugin::load(&self.runtime, name, "bundled".into(), bytes.to_vec())
                .await
                .map_err(|e| format!("bundled policy `{name}`: {e}"))?;
            self.install_policy(name, Some(plugin));
        }
        for (kind, dir) in [
            (PluginKind::Adapter, adapter_dir),
            (PluginKind::Policy, policy_dir),
        ] {
            let entries =
                std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
            let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            files.sort();
            for file in files.iter().filter(|f| plugin_name(f).is_some()) {
                self.reload_file(kind, file).await;
            }
        }
        Ok(())
    }

    /// The set serving now; a request keeps it until it finishes.
    pub fn snapshot(&self) -> Arc<PluginSet> {
        self.current.load_full()
    }

    pub fn refusals(&self) -> Vec<Refusal> {
        self.refusals.lock().unwrap().clone()
    }

    /// (Re)load one plugin file; compilation runs on the blocking pool. A
    /// file whose bytes were already tried is left as it is.
    pub async fn reload_file(&self, kind: PluginKind, file: &Path) {
        let Some(name) = plugin_name(file) else {
            return;
        };
        let source = file.display().to_string();
        let bytes = tokio::fs::read(file).await;
        if let Ok(bytes) = &bytes {
            let hash = content_hash(bytes);
            if self.tried.lock().unwrap().insert(file.to_path_buf(), hash) == Some(hash) {
                return;
            }
        }
        let loaded = match bytes {
            Err(e) => Err(format!("cannot read file: {e}")),
            Ok(bytes) => match kind {
                PluginKind::Adapter => AdapterPlugin::load(&self.runtime, name, source, bytes)
                    .await
                    .map(|p| self.install_adapter(name, Some(p))),
                PluginKind::Policy => PolicyPlugin::load(&self.runtime, name, source, bytes)
                    .await
                    .map(|p| self.install_policy(name, Some(p))),
            },
        };
        (self.on_load)(kind, loaded.is_ok());
        match loaded {
            Ok(()) => {
                tracing::info!(kind = ?kind, plugin = name, file = %file.display(), "plugin loaded");
            }
            Err(reason) => {
                tracing::error!(kind = ?kind, plugin = name, file = %file.display(), %reason, "plugin refused; the last good version keeps serving");
                let refusal = Refusal {
                    kind,
                    file: file.to_path_buf(),
                    reason,
                    at: SystemTime::now(),
                };
                let mut refusals = self.refusals.lock().unwrap();
                if refusals.len() == REFUSALS_KEPT {
                    refusals.remove(0);
                }
                refusals.push(refusal);
            }
        }
    }

    /// A plugin file was deleted: fall back to the bundled version, if any.
    pub async fn remove_file(&self, kind: PluginKind, file: &Path) {
        let Some(name) = plugin_name(file) else { return };
        self.tried.lock().unwrap().remove(file);
        let snapshot = self.snapshot();
        let from_file = match kind {
            PluginKind::Adapter => snapshot.adapters.get(name).map(|p| p.source != "bundled"),
            PluginKind::Policy => snapshot.policies.get(name).map(|p| p.source != "bundled"),
        };
        if from_file != Some(true) {
            return;
        }
        let bundled = match kind {
            PluginKind::Adapter => self.bundled_adapters,
            PluginKind::Policy => self.bundled_policies,
        };
        let fallback = bundled.iter().find(|(n, _)| *n == name).map(|(_, bytes)| *bytes);
        match (kind, fallback) {
            (PluginKind::Adapter, Some(bytes)) => {
                let plugin = AdapterPlugin::load(&self.runtime, name, "bundled".into(), bytes.to_vec()).await;
                self.install_adapter(name, plugin.ok())
            }
            (PluginKind::Policy, Some(bytes)) => {
                let plugin = PolicyPlugin::load(&self.runtime, name, "bundled".into(), bytes.to_vec()).await;
                self.install_policy(name, plugin.ok())
            }
            (PluginKind::Adapter, None) => self.install_adapter(name, None),
            (PluginKind::Policy, None) => self.install_policy(name, None),
        }
        tracing::info!(kind = ?kind, plugin = name, file = %file.display(), "plugin file removed; unloaded");
    }

    fn install_adapter(&self, name: &str, plugin: Option<AdapterPlugin>) {
        let plugin = plugin.map(Arc::new);
        self.current.rcu(|set| {
            let mut next = PluginSet::clone(set);
            match &plugin {
                Some(p) => next.adapters.insert(name.to_string(), p.clone()),
                None => next.adapters.remove(name),
            };
            next
        });
    }

    fn install_policy(&self, name: &str, plugin: Option<PolicyPlugin>) {
        let plugin = plugin.map(Arc::new);
        self.current.rcu(|set| {
            let mut next = PluginSet::clone(set);
            match &plugin {
                Some(p) => next.policies.insert(name.to_string(), p.clone()),
                None => next.policies.remove(name),
            };
            next
        });
    }
}

fn content_hash(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

/// `<dir>/<name>.wasm` -> `name`; anything else is not a plugin file.
pub fn plugin_name(file: &Path) -> Option<&str> {
    if file.extension()? != "wasm" {
        return None;
    }
    file.file_stem()?
        .to_str()
        .filter(|s| !s.is_empty() && !s.starts_with('.'))
}

mod unix_seconds {
    use std::time::{SystemTime, UNIX_EPOCH};

    pub fn serialize<S: serde::Serializer>(at: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
    }
}
