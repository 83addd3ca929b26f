//! The loaded plugin versions. Requests take a snapshot and finish on it;
//! a reload swaps in a new set atomically; refused files are remembered.
//! Each name keeps its newest file version, the last good one before it
//! and the bundled build: a quarantined version is skipped for the next.

use super::adapter::AdapterPlugin;
use super::bulkhead::{Bulkhead, CallLimits};
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
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

/// Every plugin version loaded right now, by name.
#[derive(Clone, Default)]
pub struct PluginSet {
    pub adapters: HashMap<String, Versions<AdapterPlugin>>,
    pub policies: HashMap<String, Versions<PolicyPlugin>>,
}

/// Why no version of a plugin can take a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unavailable {
    NotLoaded,
    /// Every loaded version is quarantined.
    Quarantined,
}

impl PluginSet {
    pub fn adapter(&self, name: &str) -> Result<&Arc<AdapterPlugin>, Unavailable> {
        self.adapters.get(name).ok_or(Unavailable::NotLoaded)?.serving()
    }

    pub fn policy(&self, name: &str) -> Result<&Arc<PolicyPlugin>, Unavailable> {
        self.policies.get(name).ok_or(Unavailable::NotLoaded)?.serving()
    }
}

/// What the registry needs of a plugin version.
pub trait Guarded {
    fn source(&self) -> &str;
    fn bulkhead(&self) -> &Bulkhead;
    /// Calls served by a kept instance, and instances kept now.
    fn reuse(&self) -> (u64, usize) {
        (0, 0)
    }
}

impl Guarded for AdapterPlugin {
    fn source(&self) -> &str {
        &self.source
    }
    fn bulkhead(&self) -> &Bulkhead {
        &self.bulkhead
    }
    fn reuse(&self) -> (u64, usize) {
        AdapterPlugin::reuse(self)
    }
}

impl Guarded for PolicyPlugin {
    fn source(&self) -> &str {
        &self.source
    }
    fn bulkhead(&self) -> &Bulkhead {
        &self.bulkhead
    }
    fn reuse(&self) -> (u64, usize) {
        PolicyPlugin::reuse(self)
    }
}

/// The versions of one plugin, preferred first: the newest file version,
/// the last good file version before it, the bundled build.
pub struct Versions<P> {
    chain: Vec<Arc<P>>,
}

impl<P> Clone for Versions<P> {
    fn clone(&self) -> Self {
        Versions {
            chain: self.chain.clone(),
        }
    }
}

impl<P: Guarded> Versions<P> {
    /// The version that takes calls: the first not quarantined.
    pub fn serving(&self) -> Result<&Arc<P>, Unavailable> {
        self.chain
            .iter()
            .find(|p| !p.bulkhead().is_quarantined())
            .ok_or(Unavailable::Quarantined)
    }

    pub fn all(&self) -> &[Arc<P>] {
        &self.chain
    }

    fn bundled(&self) -> Option<&Arc<P>> {
        self.chain.iter().find(|p| p.source() == "bundled")
    }

    /// `new` in front: of the file versions before it only the newest is
    /// kept, as the fallback; the bundled build stays last.
    fn with(previous: Option<&Self>, new: Arc<P>) -> Self {
        let mut chain = vec![new.clone()];
        if let Some(previous) = previous {
            if new.source() != "bundled" {
                // The last good version: not bundled, not quarantined.
                chain.extend(
                    previous
                        .chain
                        .iter()
                        .find(|p| p.source() != "bundled" && !p.bulkhead().is_quarantined())
                        .cloned(),
                );
            }
            chain.extend(previous.bundled().filter(|_| new.source() != "bundled").cloned());
        }
        Versions { chain }
    }
}

/// The call limits of every plugin: a default per kind, and overrides by name.
#[derive(Clone, Debug)]
pub struct LimitTable {
    pub adapter: CallLimits,
    pub policy: CallLimits,
    pub overrides: HashMap<(PluginKind, String), CallLimits>,
}

impl LimitTable {
    pub fn get(&self, kind: PluginKind, name: &str) -> CallLimits {
        self.overrides
            .get(&(kind, name.to_string()))
            .copied()
            .unwrap_or(match kind {
                PluginKind::Adapter => self.adapter,
                PluginKind::Policy => self.policy,
            })
    }
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
    limits: LimitTable,
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
        limits: LimitTable,
        on_load: Box<dyn Fn(PluginKind, bool) + Send + Sync>,
    ) -> Self {
        Registry {
            runtime,
            current: ArcSwap::from_pointee(PluginSet::default()),
            refusals: Mutex::new(Vec::new()),
            bundled_adapters,
            bundled_policies,
            limits,
            on_load,
            tried: Mutex::new(HashMap::new()),
        }
    }

    /// Load the bundled plugins, then every `.wasm` file of the folders.
    /// A bundled plugin that fails to load is a build defect, so it is fatal.
    pub async fn load_all(&self, adapter_dir: &Path, policy_dir: &Path) -> Result<(), String> {
        for (name, bytes) in self.bundled_adapters {
            self.load(PluginKind::Adapter, name, "bundled".into(), bytes.to_vec())
                .await
                .map_err(|e| format!("bundled adapter `{name}`: {e}"))?;
        }
        for (name, bytes) in self.bundled_policies {
            self.load(PluginKind::Policy, name, "bundled".into(), bytes.to_vec())
                .await
                .map_err(|e| format!("bundled policy `{name}`: {e}"))?;
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

    /// Linear memory held by all plugin instances now, in bytes.
    pub fn memory_in_use(&self) -> usize {
        self.runtime.memory_in_use()
    }

    pub fn memory_peak(&self) -> usize {
        self.runtime.memory_peak()
    }

    /// How the guests' memory accesses are kept in bounds.
    pub fn memory_bounds(&self) -> super::sandbox::MemoryBounds {
        self.runtime.memory_bounds()
    }

    /// Plugin names none of whose versions can take calls.
    pub fn quarantined(&self) -> usize {
        let set = self.snapshot();
        let adapters = set.adapters.values().filter(|v| v.serving().is_err()).count();
        adapters + set.policies.values().filter(|v| v.serving().is_err()).count()
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
            Ok(bytes) => self.load(kind, name, source, bytes).await,
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
        self.current.rcu(|set| {
            let mut next = PluginSet::clone(set);
            match kind {
                PluginKind::Adapter => only_bundled(&mut next.adapters, name),
                PluginKind::Policy => only_bundled(&mut next.policies, name),
            }
            next
        });
        tracing::info!(kind = ?kind, plugin = name, file = %file.display(), "plugin file removed; unloaded");
    }

    /// Compile, check and smoke-call one version, and put it in front of
    /// that name's versions.
    async fn load(&self, kind: PluginKind, name: &str, source: String, bytes: Vec<u8>) -> Result<(), String> {
        let limits = self.limits.get(kind, name);
        match kind {
            PluginKind::Adapter => {
                let plugin = Arc::new(AdapterPlugin::load(&self.runtime, name, source, bytes, limits).await?);
                self.current.rcu(|set| {
                    let mut next = PluginSet::clone(set);
                    let versions = Versions::with(set.adapters.get(name), plugin.clone());
                    next.adapters.insert(name.to_string(), versions);
                    next
                });
            }
            PluginKind::Policy => {
                let plugin = Arc::new(PolicyPlugin::load(&self.runtime, name, source, bytes, limits).await?);
                self.current.rcu(|set| {
                    let mut next = PluginSet::clone(set);
                    let versions = Versions::with(set.policies.get(name), plugin.clone());
                    next.policies.insert(name.to_string(), versions);
                    next
                });
            }
        }
        Ok(())
    }
}

/// Keep only the bundled build of `name`, or forget the name.
fn only_bundled<P: Guarded>(plugins: &mut HashMap<String, Versions<P>>, name: &str) {
    let bundled = plugins.get(name).and_then(|v| v.bundled().cloned());
    match bundled {
        Some(bundled) => plugins.insert(name.to_string(), Versions::with(None, bundled)),
        None => plugins.remove(name),
    };
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct Fake {
        source: &'static str,
        bulkhead: Bulkhead,
    }

    impl Guarded for Fake {
        fn source(&self) -> &str {
            self.source
        }
        fn bulkhead(&self) -> &Bulkhead {
            &self.bulkhead
        }
    }

    fn fake(source: &'static str) -> Arc<Fake> {
        let limits = CallLimits {
            timeout: Duration::from_millis(10),
            timeout_per_mib: Duration::ZERO,
            max_concurrent: 4,
            max_slow: 1,
            quarantine_after: 1,
            reuse: true,
        };
        Arc::new(Fake {
            source,
            bulkhead: Bulkhead::new(limits, source != "bundled"),
        })
    }

    fn quarantine(p: &Fake) {
        assert!(p.bulkhead.record::<()>(&Err(super::super::PluginError::Trap {
            plugin: "p".into(),
            detail: "boom".into(),
        })));
    }

    fn sources(v: &Versions<Fake>) -> Vec<&str> {
        v.all().iter().map(|p| p.source).collect()
    }

    #[test]
    fn a_name_keeps_the_newest_file_the_last_good_one_and_the_bundled_build() {
        let bundled = Versions::with(None, fake("bundled"));
        let one = Versions::with(Some(&bundled), fake("v1"));
        let two = Versions::with(Some(&one), fake("v2"));
        let three = Versions::with(Some(&two), fake("v3"));
        assert_eq!(sources(&three), ["v3", "v2", "bundled"]);
        assert_eq!(three.serving().unwrap().source, "v3");
        quarantine(&three.all()[0]);
        assert_eq!(three.serving().unwrap().source, "v2");
        quarantine(&three.all()[1]);
        assert_eq!(three.serving().unwrap().source, "bundled");
    }

    #[test]
    fn a_new_version_keeps_the_last_good_one_not_a_quarantined_one() {
        let bundled = Versions::with(None, fake("bundled"));
        let one = Versions::with(Some(&bundled), fake("v1"));
        let two = Versions::with(Some(&one), fake("v2"));
        quarantine(&two.all()[0]);
        assert_eq!(two.serving().unwrap().source, "v1");
        let three = Versions::with(Some(&two), fake("v3"));
        assert_eq!(sources(&three), ["v3", "v1", "bundled"]);
    }

    #[test]
    fn without_a_bundled_build_a_fully_quarantined_name_is_unavailable() {
        let one = Versions::with(None, fake("v1"));
        quarantine(&one.all()[0]);
        assert_eq!(one.serving().err(), Some(Unavailable::Quarantined));
        let two = Versions::with(Some(&one), fake("v2"));
        assert_eq!(two.serving().unwrap().source, "v2", "a new file lifts it");
    }
}
