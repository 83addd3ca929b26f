//! The TOML configuration: its shape, defaults and validation. Errors name
//! the file, the key and the reason.

use crate::secret::Secret;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {reason}")]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    plugins: PluginsConfig,
    #[serde(default)]
    circuit: CircuitConfig,
    #[serde(default)]
    gateway_keys: Vec<RawGatewayKey>,
    #[serde(default)]
    providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    routes: BTreeMap<String, RawRoute>,
    ledger: Option<RawLedger>,
    #[serde(default)]
    teams: BTreeMap<String, RawTeam>,
    #[serde(default)]
    budgets: BudgetsConfig,
}

/// `[ledger]`: the request ledger (off when the section is absent).
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct RawLedger {
    /// The SQLite file, relative to the config file.
    path: PathBuf,
    #[serde(default = "defaults::retention_days")]
    retention_days: u32,
    #[serde(default = "defaults::ledger_queue")]
    queue_capacity: usize,
    #[serde(default)]
    record_decisions: bool,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the API listens on.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Time given to requests in flight on shutdown.
    pub shutdown_grace_ms: u64,
    /// Reload the configuration when its file changes.
    pub watch_config: bool,
    /// A connection's time to send a request's headers: from when it opens,
    /// or from the first byte of its next request.
    pub header_read_timeout_ms: u64,
    /// A request body's time to arrive in full, after its headers.
    pub body_read_timeout_ms: u64,
    /// How long a connection may sit idle between requests.
    pub keep_alive_timeout_ms: u64,
    /// Client connections open at once; more wait to be accepted.
    pub max_connections: u32,
    /// Allow a reload to turn gateway-key checking off.
    pub open_access: bool,
    /// `/metrics` needs an admin gateway key (when key checking is on).
    pub metrics_need_admin_key: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8787".parse().unwrap(),
            max_body_bytes: 4 * 1024 * 1024,
            shutdown_grace_ms: 10_000,
            watch_config: true,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            keep_alive_timeout_ms: 60_000,
            max_connections: 10_000,
            open_access: false,
            metrics_need_admin_key: false,
        }
    }
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsConfig {
    /// Folder of adapter `.wasm` files (relative to the config file).
    pub adapter_dir: PathBuf,
    /// Folder of policy `.wasm` files (relative to the config file).
    pub policy_dir: PathBuf,
    /// Watch the folders and reload changed files.
    pub watch: bool,
    /// Deadline of one call of any plugin, where the kind's own is not set.
    pub call_timeout_ms: Option<u64>,
    /// Deadline of one adapter call.
    pub adapter_call_timeout_ms: Option<u64>,
    /// Deadline of one policy call.
    pub policy_call_timeout_ms: Option<u64>,
    /// Added to an adapter call's deadline per MiB of input.
    pub adapter_call_timeout_per_mib_ms: u64,
    /// Calls of one plugin version in progress at once (0: 32 per core, at least 64).
    pub max_concurrent_calls: u32,
    /// Calls of one plugin version that may run past an epoch tick at once
    /// (0: half the cores, at least 1).
    pub max_slow_calls: u32,
    /// Traps or timeouts in a row that quarantine a plugin file's version (0: never).
    pub quarantine_after: u32,
    /// Reuse the instances of plugins that declare themselves stateless.
    pub reuse_instances: bool,
    /// Linear memory cap of one plugin instance.
    pub memory_limit_mib: usize,
    /// Linear memory cap of all plugin instances together.
    pub total_memory_mib: usize,
    /// Plugin instances alive at once (each open stream holds one).
    pub max_instances: u32,
    /// Keep compiled plugins between runs.
    pub compile_cache: bool,
    /// Where (relative to the config file); default: the user's cache
    /// folder (`$XDG_CACHE_HOME` or `~/.cache`) `/switchboard/wasm`.
    pub compile_cache_dir: Option<PathBuf>,
    /// Per-adapter settings, by adapter name.
    pub adapters: BTreeMap<String, PluginSettings>,
    /// Per-policy settings, by policy name.
    pub policies: BTreeMap<String, PluginSettings>,
}

/// One plugin's own call limits; unset ones take the `[plugins]` value.
#[derive(Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PluginSettings {
    pub call_timeout_ms: Option<u64>,
    pub call_timeout_per_mib_ms: Option<u64>,
    pub max_concurrent_calls: Option<u32>,
    pub max_slow_calls: Option<u32>,
    pub quarantine_after: Option<u32>,
    pub reuse_instances: Option<bool>,
}

/// Measured per-call costs (`cargo bench --bench plugin_calls`, BENCHMARKS.md):
/// 9-18 µs for the bundled plugins on a normal body (p99 under 45 µs) and
/// about 5 ms per MiB of body for an adapter in a release build (three
/// times that in a debug build). The defaults leave room for slower guests
/// (other languages, larger and slower to start) and loaded hosts, while a
/// looping plugin costs no more than that before it is interrupted.
pub const DEFAULT_ADAPTER_CALL_TIMEOUT_MS: u64 = 25;
pub const DEFAULT_ADAPTER_CALL_TIMEOUT_PER_MIB_MS: u64 = 25;
pub const DEFAULT_POLICY_CALL_TIMEOUT_MS: u64 = 10;

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig {
            adapter_dir: "wasm/adapters".into(),
            policy_dir: "wasm/policies".into(),
            watch: true,
            call_timeout_ms: None,
            adapter_call_timeout_ms: None,
            policy_call_timeout_ms: None,
            adapter_call_timeout_per_mib_ms: DEFAULT_ADAPTER_CALL_TIMEOUT_PER_MIB_MS,
            max_concurrent_calls: 0,
            max_slow_calls: 0,
            quarantine_after: 5,
            reuse_instances: true,
            memory_limit_mib: 64,
            total_memory_mib: 2048,
            max_instances: 1000,
            compile_cache: true,
            compile_cache_dir: None,
            adapters: BTreeMap::new(),
            policies: BTreeMap::new(),
        }
    }
}

impl PluginsConfig {
    /// The compile cache folder, if the cache is on and a folder is known.
    pub fn compile_cache_dir(&self) -> Option<PathBuf> {
        if !self.compile_cache {
            return None;
        }
        self.compile_cache_dir.clone().or_else(|| {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
            Some(base.join("switchboard").join("wasm"))
        })
    }

    pub fn adapter_call_timeout_ms(&self) -> u64 {
        self.adapter_call_timeout_ms
            .or(self.call_timeout_ms)
            .unwrap_or(DEFAULT_ADAPTER_CALL_TIMEOUT_MS)
    }

    pub fn policy_call_timeout_ms(&self) -> u64 {
        self.policy_call_timeout_ms
            .or(self.call_timeout_ms)
            .unwrap_or(DEFAULT_POLICY_CALL_TIMEOUT_MS)
    }

    /// `max_concurrent_calls`, with 0 resolved from the machine. Calls are
    /// async: one running at an epoch tick yields, and under load many are
    /// in progress at once though few run, so the bound is generous (CPU is
    /// bounded by `max_slow_calls`, memory by `total_memory_mib`). Twice
    /// the cores rejected well-behaved calls at 64 connections on two cores.
    pub fn max_concurrent_calls(&self) -> u32 {
        if self.max_concurrent_calls > 0 {
            return self.max_concurrent_calls;
        }
        (32 * cores()).max(64)
    }

    /// `max_slow_calls`, with 0 resolved from the machine: a looping plugin
    /// keeps at most half the workers.
    pub fn max_slow_calls(&self) -> u32 {
        if self.max_slow_calls > 0 {
            return self.max_slow_calls;
        }
        (cores() / 2).max(1)
    }
}

fn cores() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as u32
}

#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitConfig {
    /// Consecutive failures of a target that open its circuit.
    pub failures: u32,
    /// Failure rate over the window that opens the circuit (0 to 1).
    pub error_rate: f64,
    /// The window the failure rate is measured over.
    pub window_ms: u64,
    /// Attempts the window needs before its failure rate counts.
    pub min_attempts: u32,
    /// How long an open circuit stays open before one probe is let through.
    pub cool_down_ms: u64,
}

impl Default for CircuitConfig {
    fn default() -> Self {
        CircuitConfig {
            failures: 5,
            error_rate: 0.5,
            window_ms: 60_000,
            min_attempts: 20,
            cool_down_ms: 30_000,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGatewayKey {
    name: String,
    key_env: String,
    models: Option<Vec<String>>,
    #[serde(default)]
    admin: bool,
    team: Option<String>,
    rpm: Option<u32>,
    tpm: Option<u32>,
    budget_usd: Option<f64>,
    period: Option<crate::access::Period>,
}

/// `[teams.<name>]`: a team's own budget.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTeam {
    budget_usd: Option<f64>,
    period: Option<crate::access::Period>,
}

/// `[budgets]`: how requests reserve against a budget.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetsConfig {
    /// Output tokens a request that sets no `max_tokens` is assumed to use
    /// when it reserves its worst-case cost.
    pub assumed_output_tokens: u32,
    /// Export each key budget's spend in metrics too (keys in the database
    /// are unbounded labels, so this is off by default).
    pub key_metrics: bool,
}

impl Default for BudgetsConfig {
    fn default() -> Self {
        BudgetsConfig {
            assumed_output_tokens: 4096,
            key_metrics: false,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    adapter: String,
    base_url: Option<String>,
    #[serde(default)]
    simulated: bool,
    api_key_env: Option<String>,
    #[serde(default)]
    options: toml::Table,
    ca_file: Option<PathBuf>,
    #[serde(default = "defaults::connect_timeout_ms")]
    connect_timeout_ms: u64,
    #[serde(default = "defaults::timeout_ms")]
    timeout_ms: u64,
    #[serde(default = "defaults::first_token_timeout_ms")]
    first_token_timeout_ms: u64,
    #[serde(default = "defaults::idle_timeout_ms")]
    idle_timeout_ms: u64,
    #[serde(default = "defaults::max_response_bytes")]
    max_response_bytes: usize,
    /// The provider's host serves `POST /v1/responses` itself: Responses
    /// callers are passed through to it (its adapter must take the format).
    #[serde(default)]
    responses_api: bool,
    #[serde(default)]
    models: BTreeMap<String, RawModel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    #[serde(default)]
    input_price: f64,
    #[serde(default)]
    output_price: f64,
    cached_input_price: Option<f64>,
    cache_write_price: Option<f64>,
    cache_write_hour_price: Option<f64>,
    reasoning_price: Option<f64>,
    #[serde(default)]
    tiers: Vec<crate::cost::RawTier>,
    #[serde(default = "defaults::context_window")]
    context_window: u32,
    #[serde(default = "defaults::capabilities")]
    capabilities: Vec<Capability>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    #[serde(default = "defaults::policy")]
    policy: String,
    #[serde(default)]
    policy_config: toml::Table,
    targets: Vec<String>,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default = "defaults::max_attempts")]
    max_attempts: u32,
    #[serde(default = "defaults::route_timeout_ms")]
    timeout_ms: u64,
    hedge_after_ms: Option<u64>,
    #[serde(default)]
    hedge_delay: HedgeDelay,
    #[serde(default = "defaults::hedge_max_cost_usd")]
    hedge_max_cost_usd: f64,
    #[serde(default)]
    on_stream_break: OnStreamBreak,
    #[serde(default = "defaults::max_cooldown_wait_ms")]
    max_cooldown_wait_ms: u64,
    #[serde(default)]
    facts_excerpt_chars: u32,
}

mod defaults {
    pub fn retention_days() -> u32 {
        90
    }
    pub fn ledger_queue() -> usize {
        65_536
    }
    pub fn connect_timeout_ms() -> u64 {
        5_000
    }
    pub fn timeout_ms() -> u64 {
        60_000
    }
    pub fn first_token_timeout_ms() -> u64 {
        30_000
    }
    pub fn idle_timeout_ms() -> u64 {
        30_000
    }
    pub fn max_response_bytes() -> usize {
        32 * 1024 * 1024
    }
    pub fn context_window() -> u32 {
        128_000
    }
    pub fn capabilities() -> Vec<super::Capability> {
        use super::Capability::*;
        vec![Tools, Images, JsonSchema, Streaming]
    }
    pub fn policy() -> String {
        "priority".into()
    }
    pub fn max_attempts() -> u32 {
        3
    }
    pub fn route_timeout_ms() -> u64 {
        120_000
    }
    pub fn max_cooldown_wait_ms() -> u64 {
        2_000
    }
    pub fn hedge_max_cost_usd() -> f64 {
        0.05
    }
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    Tools,
    Images,
    JsonSchema,
    Streaming,
    /// An embedding model: it serves `POST /v1/embeddings`, and chat
    /// requests never go to it.
    Embeddings,
    /// Continues a final assistant message (prefill). Host-side only: it
    /// decides how a broken stream is continued, never what a request needs.
    Prefill,
}

/// How long a hedged request waits before racing the next target.
#[derive(Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HedgeDelay {
    /// `hedge_after_ms`.
    #[default]
    Fixed,
    /// The first target's observed time-to-first-token p95; `hedge_after_ms`
    /// until enough answers have been seen.
    TtftP95,
}

/// What a stream that breaks after the caller had part of the answer does.
#[derive(Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnStreamBreak {
    /// End with an in-band error event.
    #[default]
    Error,
    /// Continue the answer on the next target (prefill or regenerate), else the error.
    Continue,
}

/// A caller's key to the gateway, from the config file.
#[derive(Debug)]
pub struct GatewayKey {
    pub secret: Secret,
    /// Its name, team, routes, admin right, limits and budget.
    pub info: std::sync::Arc<crate::access::KeyInfo>,
}

/// Where a provider's requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Url(String),
    /// The built-in simulated provider (for a first run without keys).
    Simulated,
}

#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub adapter: String,
    pub endpoint: Endpoint,
    pub credential: Option<Secret>,
    /// Why the provider cannot be used (its key is not set), if so.
    pub disabled: Option<String>,
    /// Adapter options as a JSON object.
    pub options_json: String,
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub first_token_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_response_bytes: usize,
    /// Serves the OpenAI Responses API itself (pass-through for its callers).
    pub responses_api: bool,
    pub models: BTreeMap<String, Model>,
}

impl Provider {
    /// Whether a caller of `format` is passed through to this provider
    /// (given that its adapter takes the format).
    pub fn passes_through(&self, format: crate::plugin::types::ApiFormat) -> bool {
        use crate::plugin::types::ApiFormat;
        match format {
            ApiFormat::OpenAiChat | ApiFormat::AnthropicMessages => true,
            ApiFormat::OpenAiResponses => self.responses_api,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Model {
    /// Base USD per million input and output tokens (what policies see).
    pub input_price: f64,
    pub output_price: f64,
    /// Every price, tiers included, for the cost of an answer.
    pub prices: crate::cost::Prices,
    pub context_window: u32,
    pub capabilities: Vec<Capability>,
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub policy: String,
    pub policy_config_json: String,
    /// (provider index, model name) in configured order.
    pub targets: Vec<(usize, String)>,
    pub aliases: Vec<String>,
    pub max_attempts: u32,
    pub timeout: Duration,
    /// Start the next target when the first is silent this long.
    pub hedge_after: Option<Duration>,
    pub hedge_delay: HedgeDelay,
    /// No hedge when the request's estimated cost on the dearest target exceeds this.
    pub hedge_max_cost_usd: f64,
    pub on_stream_break: OnStreamBreak,
    /// The longest rate-limit cooldown a request waits out rather than
    /// moving on (or, when every target cools down, answering 429).
    pub max_cooldown_wait: Duration,
    /// How many characters of the last user message and of the system
    /// prompt the policy sees (0: none).
    pub facts_excerpt_chars: usize,
}

/// The longest excerpt a route may hand its policy.
const MAX_EXCERPT_CHARS: u32 = 16_384;

#[derive(Debug)]
pub struct Config {
    pub file: PathBuf,
    pub server: ServerConfig,
    pub plugins: PluginsConfig,
    pub circuit: CircuitConfig,
    pub keys: Vec<GatewayKey>,
    pub providers: Vec<Provider>,
    pub routes: Vec<Route>,
    /// Route name or alias -> index into `routes`.
    pub route_names: HashMap<String, usize>,
    /// [`text_hash`] of the text this was parsed from.
    pub text_hash: u64,
    /// The request ledger, when configured.
    pub ledger: Option<crate::ledger::LedgerSettings>,
    /// Teams from the file, with their budgets.
    pub teams: HashMap<String, Option<crate::access::Budget>>,
    pub budgets: BudgetsConfig,
}

impl Config {
    /// Whether each request's routing decision goes into the ledger.
    pub fn record_decisions(&self) -> bool {
        self.ledger.as_ref().is_some_and(|l| l.record_decisions)
    }
}

/// A hash of a config file's text, to tell a changed file from a re-save.
pub fn text_hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

impl Config {
    /// Read and validate a config file; `env` looks up environment variables.
    pub fn load(file: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: file.display().to_string(),
            key: "(file)".into(),
            reason: e.to_string(),
        })?;
        Self::parse(&text, file, env)
    }

    pub fn parse(
        text: &str,
        file: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let fail = |key: &str, reason: String| ConfigError {
            file: file.display().to_string(),
            key: key.to_string(),
            reason,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let reason = e.message().to_string();
            let key = e
                .span()
                .map(|s| {
                    let line = text[..s.start].lines().count().max(1);
                    format!("line {line}")
                })
                .unwrap_or_else(|| "(document)".into());
            fail(&key, reason)
        })?;
        let base = file.parent().unwrap_or(Path::new("."));
        let mut plugins = raw.plugins;
        plugins.adapter_dir = base.join(&plugins.adapter_dir);
        plugins.policy_dir = base.join(&plugins.policy_dir);
        plugins.compile_cache_dir = plugins.compile_cache_dir.map(|dir| base.join(dir));
        let timeouts = [
            ("plugins.call_timeout_ms".to_string(), plugins.call_timeout_ms),
            (
                "plugins.adapter_call_timeout_ms".to_string(),
                plugins.adapter_call_timeout_ms,
            ),
            (
                "plugins.policy_call_timeout_ms".to_string(),
                plugins.policy_call_timeout_ms,
            ),
        ]
        .into_iter()
        .chain(
            plugins
                .adapters
                .iter()
                .map(|(n, p)| (format!("plugins.adapters.{n}.call_timeout_ms"), p.call_timeout_ms)),
        )
        .chain(
            plugins
                .policies
                .iter()
                .map(|(n, p)| (format!("plugins.policies.{n}.call_timeout_ms"), p.call_timeout_ms)),
        );
        for (key, value) in timeouts {
            if value == Some(0) {
                return Err(fail(&key, "must be above 0".into()));
            }
        }
        if plugins.memory_limit_mib == 0 {
            return Err(fail("plugins.memory_limit_mib", "must be above 0".into()));
        }
        if plugins.total_memory_mib < plugins.memory_limit_mib {
            return Err(fail(
                "plugins.total_memory_mib",
                format!("must be at least memory_limit_mib ({})", plugins.memory_limit_mib),
            ));
        }
        if raw.circuit.failures == 0 || raw.circuit.cool_down_ms == 0 || raw.circuit.window_ms == 0 {
            return Err(fail(
                "circuit",
                "failures, window_ms and cool_down_ms must be above 0".into(),
            ));
        }
        if !(raw.circuit.error_rate > 0.0 && raw.circuit.error_rate <= 1.0) {
            return Err(fail("circuit.error_rate", "must be above 0 and at most 1".into()));
        }
        let server = &raw.server;
        for (key, value) in [
            ("max_body_bytes", server.max_body_bytes as u64),
            ("header_read_timeout_ms", server.header_read_timeout_ms),
            ("body_read_timeout_ms", server.body_read_timeout_ms),
            ("keep_alive_timeout_ms", server.keep_alive_timeout_ms),
            ("max_connections", server.max_connections as u64),
        ] {
            if value == 0 {
                return Err(fail(&format!("server.{key}"), "must be above 0".into()));
            }
        }

        let mut keys = Vec::new();
        for (i, key) in raw.gateway_keys.into_iter().enumerate() {
            let at = format!("gateway_keys[{i}].key_env");
            let value = env(&key.key_env)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| fail(&at, format!("environment variable {} is not set", key.key_env)))?;
            let budget = crate::access::Budget::from_parts(key.budget_usd, key.period)
                .map_err(|e| fail(&format!("gateway_keys[{i}].budget_usd"), e))?;
            if [key.rpm, key.tpm].contains(&Some(0)) {
                return Err(fail(
                    &format!("gateway_keys[{i}]"),
                    "rpm and tpm must be above 0".into(),
                ));
            }
            if let Some(team) = &key.team
                && !raw.teams.contains_key(team)
            {
                return Err(fail(
                    &format!("gateway_keys[{i}].team"),
                    format!("no [teams.{team}] table"),
                ));
            }
            keys.push(GatewayKey {
                secret: Secret::new(value),
                info: std::sync::Arc::new(crate::access::KeyInfo {
                    name: key.name,
                    team: key.team,
                    models: key.models,
                    admin: key.admin,
                    rpm: key.rpm,
                    tpm: key.tpm,
                    budget,
                }),
            });
        }

        let mut providers = Vec::new();
        for (name, p) in raw.providers {
            let at = |k: &str| format!("providers.{name}.{k}");
            if name.contains('/') || name.is_empty() {
                return Err(fail(
                    &format!("providers.{name}"),
                    "provider names may not be empty or contain '/'".into(),
                ));
            }
            let endpoint = match (p.simulated, p.base_url) {
                (true, None) => Endpoint::Simulated,
                (true, Some(_)) => {
                    return Err(fail(
                        &at("base_url"),
                        "a simulated provider has no base_url".into(),
                    ));
                }
                (false, Some(url)) => {
                    let parsed: http::Uri = url.parse().map_err(|e| fail(&at("base_url"), format!("{e}")))?;
                    if !matches!(parsed.scheme_str(), Some("http" | "https")) || parsed.host().is_none() {
                        return Err(fail(&at("base_url"), format!("{url:?} is not an http(s) URL")));
                    }
                    Endpoint::Url(url.trim_end_matches('/').to_string())
                }
                (false, None) => {
                    return Err(fail(&at("base_url"), "missing (or set simulated = true)".into()));
                }
            };
            let (credential, disabled) = match &p.api_key_env {
                None => (None, None),
                Some(var) => match env(var).filter(|v| !v.is_empty()) {
                    Some(value) => (Some(Secret::new(value)), None),
                    None => (None, Some(format!("environment variable {var} is not set"))),
                },
            };
            if p.models.is_empty() {
                return Err(fail(&at("models"), "at least one model is needed".into()));
            }
            for (duration, value) in [
                ("connect_timeout_ms", p.connect_timeout_ms),
                ("timeout_ms", p.timeout_ms),
                ("first_token_timeout_ms", p.first_token_timeout_ms),
                ("idle_timeout_ms", p.idle_timeout_ms),
            ] {
                if value == 0 {
                    return Err(fail(&at(duration), "must be above 0".into()));
                }
            }
            let models = p
                .models
                .into_iter()
                .map(|(model, m)| {
                    let rates = crate::cost::RawRates {
                        input_price: Some(m.input_price),
                        output_price: Some(m.output_price),
                        cached_input_price: m.cached_input_price,
                        cache_write_price: m.cache_write_price,
                        cache_write_hour_price: m.cache_write_hour_price,
                        reasoning_price: m.reasoning_price,
                    };
                    let prices = crate::cost::Prices::from_raw(&rates, &m.tiers)
                        .map_err(|e| fail(&at(&format!("models.{model}")), e))?;
                    let m = Model {
                        input_price: m.input_price,
                        output_price: m.output_price,
                        prices,
                        context_window: m.context_window,
                        capabilities: m.capabilities,
                    };
                    Ok((model, m))
                })
                .collect::<Result<_, _>>()?;
            providers.push(Provider {
                options_json: serde_json::to_string(&p.options).expect("TOML tables are valid JSON"),
                ca_file: p.ca_file.map(|f| base.join(f)),
                connect_timeout: Duration::from_millis(p.connect_timeout_ms),
                timeout: Duration::from_millis(p.timeout_ms),
                first_token_timeout: Duration::from_millis(p.first_token_timeout_ms),
                idle_timeout: Duration::from_millis(p.idle_timeout_ms),
                max_response_bytes: p.max_response_bytes,
                responses_api: p.responses_api,
                name,
                adapter: p.adapter,
                endpoint,
                credential,
                disabled,
                models,
            });
        }

        let mut routes = Vec::new();
        let mut route_names = HashMap::new();
        for (name, r) in raw.routes {
            let at = |k: &str| format!("routes.{name}.{k}");
            if r.targets.is_empty() {
                return Err(fail(&at("targets"), "at least one target is needed".into()));
            }
            if r.facts_excerpt_chars > MAX_EXCERPT_CHARS {
                return Err(fail(
                    &at("facts_excerpt_chars"),
                    format!("at most {MAX_EXCERPT_CHARS}"),
                ));
            }
            if r.hedge_delay == HedgeDelay::TtftP95 && r.hedge_after_ms.is_none() {
                return Err(fail(
                    &at("hedge_delay"),
                    "\"ttft_p95\" needs hedge_after_ms, the delay used until enough answers are seen".into(),
                ));
            }
            if r.max_attempts == 0 || r.timeout_ms == 0 {
                return Err(fail(
                    &at("max_attempts"),
                    "max_attempts and timeout_ms must be above 0".into(),
                ));
            }
            let mut targets = Vec::new();
            for (i, target) in r.targets.iter().enumerate() {
                let key = format!("routes.{name}.targets[{i}]");
                let (provider, model) = target
                    .split_once('/')
                    .ok_or_else(|| fail(&key, format!("{target:?} is not \"provider/model\"")))?;
                let index = providers
                    .iter()
                    .position(|p| p.name == provider)
                    .ok_or_else(|| fail(&key, format!("unknown provider {provider:?}")))?;
                if !providers[index].models.contains_key(model) {
                    return Err(fail(
                        &key,
                        format!("provider {provider:?} has no model {model:?} in its models table"),
                    ));
                }
                targets.push((index, model.to_string()));
            }
            for alias in std::iter::once(&name).chain(&r.aliases) {
                if route_names.insert(alias.clone(), routes.len()).is_some() {
                    return Err(fail(&at("aliases"), format!("{alias:?} names two routes")));
                }
            }
            routes.push(Route {
                policy_config_json: serde_json::to_string(&r.policy_config)
                    .expect("TOML tables are valid JSON"),
                policy: r.policy,
                targets,
                aliases: r.aliases,
                max_attempts: r.max_attempts,
                timeout: Duration::from_millis(r.timeout_ms),
                hedge_after: r.hedge_after_ms.map(Duration::from_millis),
                hedge_delay: r.hedge_delay,
                hedge_max_cost_usd: r.hedge_max_cost_usd,
                on_stream_break: r.on_stream_break,
                max_cooldown_wait: Duration::from_millis(r.max_cooldown_wait_ms),
                facts_excerpt_chars: r.facts_excerpt_chars as usize,
                name,
            });
        }
        for (i, key) in keys.iter().enumerate() {
            for model in key.info.models.iter().flatten() {
                if !route_names.contains_key(model) {
                    return Err(fail(
                        &format!("gateway_keys[{i}].models"),
                        format!("unknown route {model:?}"),
                    ));
                }
            }
        }
        let ledger = match raw.ledger {
            None => None,
            Some(l) if l.retention_days == 0 || l.queue_capacity == 0 => {
                return Err(fail(
                    "ledger",
                    "retention_days and queue_capacity must be above 0".into(),
                ));
            }
            Some(l) => Some(crate::ledger::LedgerSettings {
                path: base.join(l.path),
                retention: Duration::from_secs(l.retention_days as u64 * 86_400),
                queue: l.queue_capacity,
                record_decisions: l.record_decisions,
            }),
        };
        let mut teams = HashMap::new();
        for (name, team) in raw.teams {
            let budget = crate::access::Budget::from_parts(team.budget_usd, team.period)
                .map_err(|e| fail(&format!("teams.{name}.budget_usd"), e))?;
            teams.insert(name, budget);
        }
        Ok(Config {
            ledger,
            teams,
            budgets: raw.budgets,
            text_hash: text_hash(text),
            file: file.to_path_buf(),
            server: raw.server,
            plugins,
            circuit: raw.circuit,
            keys,
            providers,
            routes,
            route_names,
        })
    }
}
