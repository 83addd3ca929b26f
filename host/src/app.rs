//! Start-up: configuration, plugins, the simulator if configured, the
//! gateway state, the folder and config watches and the server — composed
//! in one place.

use crate::access;
use crate::config::PluginsConfig;
use crate::config::{Config, Endpoint};
use crate::gateway::{Gateway, GatewayError, Shared};
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::plugin::{
    CallLimits, LimitTable, PluginKind, PluginRuntime, Registry, SandboxLimits, watch_folders,
};
use crate::reload::{self, Live};
use crate::{server, simulator};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How long the ledger gets to write its last records at exit.
const LEDGER_FLUSH: Duration = Duration::from_secs(5);

mod bundled {
    include!(concat!(env!("OUT_DIR"), "/bundled.rs"));
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create {}: {source}", dir.display())]
    PluginFolder { dir: PathBuf, source: std::io::Error },
    #[error("cannot start the Wasm engine: {0}")]
    Engine(String),
    /// A bundled plugin failed to load (a build defect) or a folder is unreadable.
    #[error("{0}")]
    Plugins(String),
    #[error("cannot start the simulator: {0}")]
    Simulator(std::io::Error),
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    #[error("{0}")]
    Watch(String),
    #[error(transparent)]
    Ledger(#[from] crate::ledger::OpenError),
    #[error("cannot read the gateway keys from the ledger: {0}")]
    Keys(access::store::AccessError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Load everything and serve until `shutdown` resolves.
pub async fn run(
    config: Config,
    listen: Option<SocketAddr>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StartError> {
    for dir in [&config.plugins.adapter_dir, &config.plugins.policy_dir] {
        std::fs::create_dir_all(dir).map_err(|source| StartError::PluginFolder {
            dir: dir.clone(),
            source,
        })?;
    }
    let metrics = Arc::new(Metrics::default());
    let runtime = Arc::new(
        PluginRuntime::new(SandboxLimits {
            memory_bytes: config.plugins.memory_limit_mib * 1024 * 1024,
            total_memory_bytes: config.plugins.total_memory_mib * 1024 * 1024,
            max_instances: config.plugins.max_instances,
            compile_cache: config.plugins.compile_cache_dir(),
        })
        .map_err(|e| StartError::Engine(format!("{e:#}")))?,
    );
    let load_metrics = metrics.clone();
    let registry = Arc::new(Registry::new(
        runtime,
        bundled::ADAPTER,
        bundled::POLICY,
        limit_table(&config.plugins),
        Box::new(move |kind, loaded| load_metrics.plugin_loaded(kind.as_str(), loaded)),
    ));
    let (adapter_dir, policy_dir) = (
        config.plugins.adapter_dir.clone(),
        config.plugins.policy_dir.clone(),
    );
    registry
        .load_all(&adapter_dir, &policy_dir)
        .await
        .map_err(StartError::Plugins)?;

    let simulator_url = if config
        .providers
        .iter()
        .any(|p| matches!(p.endpoint, Endpoint::Simulated))
    {
        let url = simulator::start().await.map_err(StartError::Simulator)?;
        tracing::warn!(%url, "simulated provider running: its answers are not from a real model");
        Some(url)
    } else {
        None
    };
    for provider in config.providers.iter() {
        if let Some(reason) = &provider.disabled {
            tracing::warn!(provider = %provider.name, %reason, "provider disabled");
        }
    }
    let ledger = match &config.ledger {
        Some(settings) => {
            let ledger = Ledger::open(settings.clone(), metrics.clone())?;
            tracing::info!(path = %settings.path.display(), "ledger open");
            ledger
        }
        None => Ledger::off(),
    };
    let shared = Shared::local(ledger.clone());
    if let Some(settings) = &config.ledger {
        access::watch::start(
            &settings.path,
            shared.keyring.clone(),
            shared.state.clone(),
            config_budgets(&config),
        )
        .map_err(StartError::Keys)?;
    }
    let ledger_has_keys = !shared.keyring.current().keys.is_empty();
    let watch = config.plugins.watch;
    let watch_config = config.server.watch_config;
    let grace = Duration::from_millis(config.server.shutdown_grace_ms);
    let max_connections = server::connection_capacity(config.server.max_connections);
    let listen = listen.unwrap_or(config.server.listen);
    if config.keys.is_empty() && !ledger_has_keys && !listen.ip().is_loopback() && !config.server.open_access
    {
        tracing::warn!(%listen, "no [[gateway_keys]]: the API is open to anyone who can reach this address (set [server] open_access = true to say that is intended)");
    }
    let gw = Gateway::new(
        config,
        registry.clone(),
        metrics,
        shared,
        simulator_url.as_deref(),
        None,
    )?;
    gw.check_plugins().await?;
    describe_routes(&gw);
    let config_file = gw.config.file.clone();
    let routes = gw.config.routes.len();
    let live = Arc::new(Live::new(gw, simulator_url));
    let _watch = if watch {
        Some(watch_folders(registry, &adapter_dir, &policy_dir).map_err(StartError::Watch)?)
    } else {
        None
    };
    let _config_watch = if watch_config {
        Some(reload::watch_config(live.clone(), &config_file).map_err(StartError::Watch)?)
    } else {
        None
    };
    reload::reload_on_hangup(live.clone()).map_err(StartError::Watch)?;

    let metrics_open = !live.current().config.server.metrics_need_admin_key;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| StartError::Listen { addr: listen, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| StartError::Listen { addr: listen, source })?;
    tracing::info!(
        addr = %addr,
        routes,
        pid = std::process::id(),
        adapters = %adapter_dir.display(),
        policies = %policy_dir.display(),
        "listening"
    );
    tracing::info!(
        "endpoints: POST /v1/chat/completions, POST /v1/messages (and /count_tokens), POST /v1/responses, POST /v1/embeddings, GET /v1/models, POST /v1/feedback; admin: /admin/plugins, /admin/targets, /admin/config, /admin/usage, /admin/keys; open without a key: /healthz, /readyz{}",
        if metrics_open { ", /metrics" } else { "" }
    );
    server::serve(
        live,
        listener,
        shutdown,
        grace,
        max_connections,
        server::Lifecycle::default(),
    )
    .await;
    // What the last requests left is written before the process exits.
    let flushed = tokio::task::spawn_blocking(move || ledger.flush(LEDGER_FLUSH))
        .await
        .unwrap_or(false);
    if !flushed {
        tracing::warn!("the ledger did not finish writing before exit");
    }
    Ok(())
}

/// What each route will do: its policy and targets, and which of those
/// are disabled and why.
fn describe_routes(gw: &Gateway) {
    for route in &gw.config.routes {
        let targets: Vec<String> = route
            .targets
            .iter()
            .map(|(provider, model)| {
                let p = &gw.config.providers[*provider];
                match &p.disabled {
                    Some(why) => format!("{}/{model} (disabled: {why})", p.name),
                    None => format!("{}/{model}", p.name),
                }
            })
            .collect();
        tracing::info!(route = %route.name, policy = %route.policy, targets = %targets.join(", "), "route");
    }
}

/// The budgets of the config file's keys and teams.
fn config_budgets(config: &Config) -> Vec<access::admit::Applies> {
    let keys = config
        .keys
        .iter()
        .flat_map(|k| access::admit::budgets(&k.info, None));
    let teams = config.teams.iter().filter_map(|(name, budget)| {
        budget.map(|budget| access::admit::Applies {
            id: format!("team:{name}"),
            label: format!("team `{name}`"),
            budget,
        })
    });
    keys.chain(teams).collect()
}

/// Every plugin's call limits: the kind's defaults, overridden by name.
fn limit_table(plugins: &PluginsConfig) -> LimitTable {
    let base = |timeout_ms: u64, per_mib_ms: u64| CallLimits {
        timeout: Duration::from_millis(timeout_ms),
        timeout_per_mib: Duration::from_millis(per_mib_ms),
        max_concurrent: plugins.max_concurrent_calls(),
        max_slow: plugins.max_slow_calls(),
        quarantine_after: plugins.quarantine_after,
        reuse: plugins.reuse_instances,
    };
    let (adapter, policy) = (
        base(
            plugins.adapter_call_timeout_ms(),
            plugins.adapter_call_timeout_per_mib_ms,
        ),
        base(plugins.policy_call_timeout_ms(), 0),
    );
    let own = |defaults: CallLimits, settings: &crate::config::PluginSettings| CallLimits {
        timeout: settings
            .call_timeout_ms
            .map_or(defaults.timeout, Duration::from_millis),
        timeout_per_mib: settings
            .call_timeout_per_mib_ms
            .map_or(defaults.timeout_per_mib, Duration::from_millis),
        max_concurrent: settings.max_concurrent_calls.unwrap_or(defaults.max_concurrent),
        max_slow: settings.max_slow_calls.unwrap_or(defaults.max_slow),
        quarantine_after: settings.quarantine_after.unwrap_or(defaults.quarantine_after),
        reuse: settings.reuse_instances.unwrap_or(defaults.reuse),
    };
    let overrides = plugins
        .adapters
        .iter()
        .map(|(name, s)| ((PluginKind::Adapter, name.clone()), own(adapter, s)))
        .chain(
            plugins
                .policies
                .iter()
                .map(|(name, s)| ((PluginKind::Policy, name.clone()), own(policy, s))),
        )
        .collect();
    LimitTable {
        adapter,
        policy,
        overrides,
    }
}
