//! The gateway's shared state: configuration, plugins, provider clients,
//! per-target health and metrics. Built at start-up and again, from the
//! previous one, on each config reload.

use crate::access::limits::{InMemory, SharedState};
use crate::access::{Budget, Keyring, Stored};
use crate::config::{Config, Endpoint, Model, Provider, Route};
use crate::health::{CircuitSettings, TargetHealth};
use crate::ledger::Ledger;
use crate::ledger::names::intern;
use crate::metrics::Metrics;
use crate::plugin::{PluginError, Registry, Unavailable};
use crate::redact::Redactor;
use crate::upstream::Upstream;
use std::collections::HashMap;
use std::sync::Arc;

/// Why a configuration cannot be served: the key it is about, and why.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("provider {provider}: {reason}")]
    Provider { provider: String, reason: String },
    #[error("{key}: {reason}")]
    Plugin { key: String, reason: String },
}

/// One target of a route, resolved to its provider and health record.
pub struct RouteTarget {
    pub provider: usize,
    pub model: String,
    pub health: Arc<TargetHealth>,
    /// Its success metrics, fetched at its first success.
    pub success_metrics: std::sync::OnceLock<crate::metrics::SuccessMetrics>,
    /// Its names as request records carry them.
    pub names: TargetNames,
}

/// A target's names, interned ([`crate::ledger::names`]).
#[derive(Clone, Copy, Debug)]
pub struct TargetNames {
    pub provider: &'static str,
    pub model: &'static str,
    /// `provider/model`, as plans name it.
    pub label: &'static str,
}

/// A route resolved: its settings and its targets, each resolved in turn.
#[derive(Clone, Copy)]
pub struct RouteRef<'g> {
    pub index: usize,
    pub config: &'g Route,
    gw: &'g Gateway,
}

/// One target of a route, with everything an attempt on it needs.
#[derive(Clone, Copy)]
pub struct TargetRef<'g> {
    /// Position in the route's targets (what plans name).
    pub index: usize,
    pub target: &'g RouteTarget,
    pub provider: &'g Provider,
    pub upstream: &'g Upstream,
    pub model: &'g Model,
}

impl<'g> RouteRef<'g> {
    /// The route's name, interned: request records carry it as it is.
    pub fn name(&self) -> &'static str {
        self.gw.route_names[self.index]
    }

    pub fn target(&self, index: usize) -> TargetRef<'g> {
        let target = &self.gw.routes[self.index][index];
        let provider = &self.gw.config.providers[target.provider];
        TargetRef {
            index,
            target,
            provider,
            upstream: &self.gw.upstreams[target.provider],
            model: &provider.models[&target.model],
        }
    }

    pub fn targets(&self) -> impl Iterator<Item = TargetRef<'g>> + 'g {
        let route = *self;
        (0..self.gw.routes[self.index].len()).map(move |i| route.target(i))
    }
}

/// What outlives a configuration: the ledger's writer, the database's keys
/// and teams, and the state limits and budgets count in.
#[derive(Clone)]
pub struct Shared {
    pub ledger: Ledger,
    pub keyring: Arc<Keyring>,
    pub state: Arc<dyn SharedState>,
}

impl Shared {
    /// This instance's own state, with `ledger`.
    pub fn local(ledger: Ledger) -> Shared {
        Shared {
            ledger,
            keyring: Arc::default(),
            state: Arc::new(InMemory::default()),
        }
    }
}

pub struct Gateway {
    pub config: Config,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    /// The ledger, keys and limits: the same across reloads.
    pub shared: Shared,
    /// Index-aligned with `config.providers`.
    pub upstreams: Vec<Upstream>,
    /// Index-aligned with `config.routes`.
    pub routes: Vec<Vec<RouteTarget>>,
    /// Index-aligned with `config.routes`: their names, interned.
    pub route_names: Vec<&'static str>,
    /// Health by (provider, model), shared by every route that uses the target.
    pub health: HashMap<(usize, String), Arc<TargetHealth>>,
}

impl Gateway {
    /// `simulator_url` is where the built-in simulated provider listens, if
    /// it runs. Targets of `previous` that stay the same keep their health.
    pub fn new(
        config: Config,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        shared: Shared,
        simulator_url: Option<&str>,
        previous: Option<&Gateway>,
    ) -> Result<Gateway, GatewayError> {
        // Every provider's answers are scrubbed of every credential we hold
        // (but placeholders too short to be a key).
        for provider in &config.providers {
            if provider
                .credential
                .as_ref()
                .is_some_and(|c| c.expose().len() < crate::redact::MIN_SCRUBBED_LEN)
            {
                tracing::warn!(provider = %provider.name, "the provider's key is shorter than {} characters: taken for a placeholder, it is not scrubbed from answers", crate::redact::MIN_SCRUBBED_LEN);
            }
        }
        let redactor = Arc::new(Redactor::new(
            config.providers.iter().filter_map(|p| p.credential.as_ref()),
        ));
        let mut upstreams = Vec::new();
        for provider in &config.providers {
            let base = match &provider.endpoint {
                Endpoint::Url(url) => url.clone(),
                Endpoint::Simulated => simulator_url
                    .ok_or_else(|| GatewayError::Provider {
                        provider: provider.name.clone(),
                        reason: "the simulator is not running (a simulated provider added by a reload needs a restart)"
                            .into(),
                    })?
                    .to_string(),
            };
            let upstream = Upstream::new(
                base,
                provider.connect_timeout,
                provider.ca_file.as_deref(),
                provider.max_response_bytes,
                redactor.clone(),
            )
            .map_err(|reason| GatewayError::Provider {
                provider: provider.name.clone(),
                reason,
            })?;
            upstreams.push(upstream);
        }
        let circuit = CircuitSettings::from(&config.circuit);
        let mut health: HashMap<(usize, String), Arc<TargetHealth>> = HashMap::new();
        let routes = config
            .routes
            .iter()
            .map(|route| {
                route
                    .targets
                    .iter()
                    .map(|(provider, model)| RouteTarget {
                        provider: *provider,
                        model: model.clone(),
                        health: health
                            .entry((*provider, model.clone()))
                            .or_insert_with(|| {
                                previous
                                    .and_then(|old| old.same_target(&config, *provider, model))
                                    .unwrap_or_else(|| Arc::new(TargetHealth::new(circuit)))
                            })
                            .clone(),
                        success_metrics: std::sync::OnceLock::new(),
                        names: {
                            let provider = &config.providers[*provider].name;
                            TargetNames {
                                provider: intern(provider),
                                model: intern(model),
                                label: intern(&format!("{provider}/{model}")),
                            }
                        },
                    })
                    .collect()
            })
            .collect();
        let route_names = config.routes.iter().map(|r| intern(&r.name)).collect();
        Ok(Gateway {
            config,
            registry,
            metrics,
            shared,
            upstreams,
            routes,
            route_names,
            health,
        })
    }

    /// A team's budget: the database's team if it has one by that name,
    /// else the config file's.
    pub fn team_budget(&self, stored: &Stored, team: &str) -> Option<Budget> {
        match stored.teams.get(team) {
            Some(budget) => *budget,
            None => self.config.teams.get(team).copied().flatten(),
        }
    }

    /// Route `index`, resolved.
    pub fn route(&self, index: usize) -> RouteRef<'_> {
        RouteRef {
            index,
            config: &self.config.routes[index],
            gw: self,
        }
    }

    /// The route a caller's `model` names (a route name or alias).
    pub fn route_named(&self, name: &str) -> Option<RouteRef<'_>> {
        self.config.route_names.get(name).map(|&index| self.route(index))
    }

    /// This gateway's health of a target of `config`, if the target is the
    /// same here: same provider name, adapter, endpoint and model, and the
    /// same circuit settings.
    fn same_target(&self, config: &Config, provider: usize, model: &str) -> Option<Arc<TargetHealth>> {
        if self.config.circuit != config.circuit {
            return None;
        }
        let new = &config.providers[provider];
        let (index, old) = self
            .config
            .providers
            .iter()
            .enumerate()
            .find(|(_, p)| p.name == new.name)?;
        let same = old.adapter == new.adapter && old.endpoint == new.endpoint;
        same.then(|| self.health.get(&(index, model.to_string())).cloned())
            .flatten()
    }

    /// Check that every route's policy and every provider's adapter is loaded,
    /// that each adapter accepts its provider's options, and that each
    /// policy accepts its route's configuration.
    pub async fn check_plugins(&self) -> Result<(), GatewayError> {
        let plugins = self.registry.snapshot();
        for provider in &self.config.providers {
            // A quarantined adapter cannot say; its attempts fail until a new file comes.
            if let Ok(adapter) = plugins.adapter(&provider.adapter) {
                adapter
                    .validate_options(&provider.options_json)
                    .await
                    .map_err(|e| GatewayError::Plugin {
                        key: format!("providers.{}.options", provider.name),
                        reason: match e {
                            PluginError::Refused { reason, .. } => reason,
                            other => other.to_string(),
                        },
                    })?;
            }
            if !plugins.adapters.contains_key(&provider.adapter) {
                return Err(GatewayError::Plugin {
                    key: format!("providers.{}.adapter", provider.name),
                    reason: format!(
                        "no adapter named {:?} (bundled: {}; or put {}.wasm in {})",
                        provider.adapter,
                        plugins.adapters.keys().cloned().collect::<Vec<_>>().join(", "),
                        provider.adapter,
                        self.config.plugins.adapter_dir.display()
                    ),
                });
            }
        }
        for route in &self.config.routes {
            let policy = match plugins.policy(&route.policy) {
                Ok(policy) => policy,
                // Its routes use the configured order until a new file comes.
                Err(Unavailable::Quarantined) => continue,
                Err(Unavailable::NotLoaded) => {
                    return Err(GatewayError::Plugin {
                        key: format!("routes.{}.policy", route.name),
                        reason: format!(
                            "no policy named {:?} (put {}.wasm in {})",
                            route.policy,
                            route.policy,
                            self.config.plugins.policy_dir.display()
                        ),
                    });
                }
            };
            policy
                .validate_config(&route.policy_config_json)
                .await
                .map_err(|e| GatewayError::Plugin {
                    key: format!("routes.{}.policy_config", route.name),
                    reason: e.to_string(),
                })?;
        }
        Ok(())
    }
}
