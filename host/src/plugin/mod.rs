//! The Wasm plugin layer: one engine, sandboxed stores, typed calls into
//! adapters and policies, the registry of loaded versions and hot reload.

mod adapter;
mod bulkhead;
mod contract;
mod convert;
mod policy;
mod pool;
mod registry;
mod sandbox;
pub mod types;
mod v0_1;
mod v0_2;
mod v0_3;
mod watch;

pub use crate::fswatch::FolderWatch;
pub use adapter::{AdapterPlugin, Fed, StreamSession};
pub use bulkhead::{Bulkhead, BulkheadView, CallLimits};
pub use policy::PolicyPlugin;
pub use registry::{Guarded, LimitTable, PluginKind, PluginSet, Refusal, Registry, Unavailable, Versions};
pub use sandbox::{PluginRuntime, SandboxLimits};
pub use watch::watch_folders;

/// Why a plugin call did not produce a usable answer. Each costs one attempt
/// (or, for a policy, falls back to the configured order); none takes the
/// process down.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin `{plugin}` exceeded its {limit_ms} ms deadline")]
    Deadline { plugin: String, limit_ms: u64 },
    #[error("plugin `{plugin}` trapped: {detail}")]
    Trap { plugin: String, detail: String },
    #[error("plugin `{plugin}` could not be instantiated: {detail}")]
    Instantiate { plugin: String, detail: String },
    #[error("plugin `{plugin}` broke the contract: {detail}")]
    Contract { plugin: String, detail: String },
    #[error("plugin `{plugin}` could not handle the request: {reason}")]
    Refused { plugin: String, reason: String },
    #[error("plugin `{plugin}` is at its limit of {limit} calls in progress")]
    Busy { plugin: String, limit: u32 },
    #[error(
        "plugin `{plugin}` was refused memory: all plugins together hold plugins.total_memory_mib ({limit_mib} MiB)"
    )]
    MemoryBudget { plugin: String, limit_mib: usize },
}

impl PluginError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PluginError::Deadline { .. } => "deadline",
            PluginError::Trap { .. } => "trap",
            PluginError::Instantiate { .. } => "instantiate",
            PluginError::Contract { .. } => "contract",
            PluginError::Refused { .. } => "refused",
            PluginError::Busy { .. } => "busy",
            PluginError::MemoryBudget { .. } => "memory_budget",
        }
    }
}
