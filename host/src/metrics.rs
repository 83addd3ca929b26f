//! Prometheus metrics: requests, attempts, latency, tokens, cost and plugin
//! health, rendered in the text exposition format at `/metrics`.

use crate::plugin::types::Usage;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    pub provider: String,
    pub model: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub provider: String,
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub provider: String,
    pub model: String,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    pub plugin: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteOutcomeLabels {
    pub route: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoadLabels {
    pub kind: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TeamLabels {
    pub team: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabels {
    pub key: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

pub struct Metrics {
    registry: Registry,
    /// Spend and what is left of each team's budget in its current period.
    pub budget_spent: Family<TeamLabels, Gauge<f64, AtomicU64>>,
    pub budget_remaining: Family<TeamLabels, Gauge<f64, AtomicU64>>,
    /// The same per key, when `[budgets] key_metrics` asks for it.
    pub key_budget_spent: Family<KeyLabels, Gauge<f64, AtomicU64>>,
    pub key_budget_remaining: Family<KeyLabels, Gauge<f64, AtomicU64>>,
    /// Chat requests by the config file's gateway key that made them.
    pub key_requests: Family<KeyLabels, Counter>,
    /// Requests refused by a key's limits, by kind (`requests`, `tokens`, `budget`).
    pub limit_rejections: Family<KindLabels, Counter>,
    /// Ledger records waiting for the writer.
    pub ledger_queue: Gauge,
    /// Ledger records written.
    pub ledger_written: Counter,
    /// Ledger records lost, by why (`queue_full`, `write_failed`).
    pub ledger_dropped: Family<ReasonLabels, Counter>,
    pub requests: Family<RequestLabels, Counter>,
    pub attempts: Family<AttemptLabels, Counter>,
    pub attempt_seconds: Family<TargetLabels, Histogram>,
    pub ttft_seconds: Family<TargetLabels, Histogram>,
    pub tokens: Family<TokenLabels, Counter>,
    pub cost_usd: Family<TargetLabels, Counter<f64, AtomicU64>>,
    pub plugin_failures: Family<PluginLabels, Counter>,
    pub plugin_refusals: Counter,
    /// Plugin files tried, by kind and outcome (`loaded`, `refused`).
    pub plugin_loads: Family<LoadLabels, Counter>,
    pub policy_fallbacks: Family<PluginLabels, Counter>,
    /// Streams that broke after the caller had part of the answer, by how they ended.
    pub stream_breaks: Family<RouteOutcomeLabels, Counter>,
    /// Hedges started, by which attempt won.
    pub hedges: Family<RouteOutcomeLabels, Counter>,
    /// Config-file reloads, applied or refused.
    pub config_reloads: Family<ReloadLabels, Counter>,
    /// Client connections open now.
    pub connections_open: Gauge,
    /// Client connections the gateway closed, by why (`header_timeout`, `idle`).
    pub connections_closed: Family<ConnectionLabels, Counter>,
    /// Times the accept loop reached `server.max_connections` and paused.
    pub connection_limit_reached: Counter,
    /// Failed `accept` calls (usually: out of file descriptors).
    pub accept_errors: Counter,
    /// Linear memory of all plugin instances, now and at its highest.
    pub plugin_memory: Gauge,
    pub plugin_memory_peak: Gauge,
    /// Plugins none of whose versions can take calls.
    pub plugins_quarantined: Gauge,
}

fn latency_histogram() -> Histogram {
    Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0])
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("switchboard");
        let requests = Family::default();
        let attempts = Family::default();
        let attempt_seconds = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let ttft_seconds = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let tokens = Family::default();
        let cost_usd = Family::default();
        let plugin_failures = Family::default();
        let plugin_refusals = Counter::default();
        let plugin_loads = Family::default();
        let policy_fallbacks = Family::default();
        let stream_breaks = Family::default();
        let hedges = Family::default();
        let config_reloads = Family::default();
        let connections_open = Gauge::default();
        let connections_closed = Family::default();
        let connection_limit_reached = Counter::default();
        let accept_errors = Counter::default();
        let plugin_memory = Gauge::default();
        let plugin_memory_peak = Gauge::default();
        let plugins_quarantined = Gauge::default();
        let budget_spent = Family::default();
        let budget_remaining = Family::default();
        let limit_rejections = Family::default();
        let key_requests = Family::default();
        registry.register(
            "key_requests",
            "Chat requests by the config file's gateway key (database keys are not labelled: unbounded)",
            key_requests.clone(),
        );
        let key_budget_spent = Family::default();
        let key_budget_remaining = Family::default();
        registry.register(
            "key_budget_spent_usd",
            "Spend of each key's budget in its current period (with [budgets] key_metrics)",
            key_budget_spent.clone(),
        );
        registry.register(
            "key_budget_remaining_usd",
            "What is left of each key's budget in its current period (with [budgets] key_metrics)",
            key_budget_remaining.clone(),
        );
        registry.register(
            "budget_spent_usd",
            "Spend of each team's budget in its current period (settled and reserved)",
            budget_spent.clone(),
        );
        registry.register(
            "budget_remaining_usd",
            "What is left of each team's budget in its current period",
            budget_remaining.clone(),
        );
        registry.register(
            "limit_rejections",
            "Requests refused by a key's limits, by kind (requests, tokens, budget)",
            limit_rejections.clone(),
        );
        let ledger_queue = Gauge::default();
        let ledger_written = Counter::default();
        let ledger_dropped = Family::default();
        registry.register(
            "ledger_queue_depth",
            "Ledger records waiting for the writer",
            ledger_queue.clone(),
        );
        registry.register(
            "ledger_records_written",
            "Ledger records written to the database",
            ledger_written.clone(),
        );
        registry.register(
            "ledger_records_dropped",
            "Ledger records lost, by reason (queue_full, write_failed)",
            ledger_dropped.clone(),
        );
        registry.register(
            "requests",
            "Client requests by route and HTTP status",
            requests.clone(),
        );
        registry.register(
            "attempts",
            "Provider attempts by target and outcome",
            attempts.clone(),
        );
        registry.register(
            "attempt_duration_seconds",
            "Duration of successful attempts",
            attempt_seconds.clone(),
        );
        registry.register(
            "time_to_first_token_seconds",
            "Time to the first streamed token",
            ttft_seconds.clone(),
        );
        registry.register(
            "tokens",
            "Tokens billed by target and kind (prompt, completion, and their parts cached, cache_write, reasoning)",
            tokens.clone(),
        );
        registry.register(
            "cost_usd",
            "Cost in USD by target, from configured prices",
            cost_usd.clone(),
        );
        registry.register(
            "plugin_failures",
            "Plugin calls that trapped, timed out or broke the contract",
            plugin_failures.clone(),
        );
        registry.register(
            "plugin_refusals",
            "Plugin files refused at load",
            plugin_refusals.clone(),
        );
        registry.register(
            "plugin_loads",
            "Plugin files tried, by kind and outcome (loaded, refused)",
            plugin_loads.clone(),
        );
        registry.register(
            "policy_fallbacks",
            "Requests routed in configured order because the policy failed",
            policy_fallbacks.clone(),
        );
        registry.register(
            "stream_breaks",
            "Streams broken after the first chunk, by outcome (continued, error)",
            stream_breaks.clone(),
        );
        registry.register(
            "hedges",
            "Hedged attempts started, by winner (first, hedge, neither)",
            hedges.clone(),
        );
        registry.register(
            "config_reloads",
            "Config-file reloads by outcome (applied, refused)",
            config_reloads.clone(),
        );
        registry.register(
            "connections_open",
            "Client connections open now",
            connections_open.clone(),
        );
        registry.register(
            "connections_closed",
            "Client connections closed by the gateway, by reason (header_timeout, idle)",
            connections_closed.clone(),
        );
        registry.register(
            "connection_limit_reached",
            "Times accepting paused at server.max_connections",
            connection_limit_reached.clone(),
        );
        registry.register(
            "accept_errors",
            "Failed accepts of client connections",
            accept_errors.clone(),
        );
        registry.register(
            "plugin_memory_bytes",
            "Linear memory held by all plugin instances",
            plugin_memory.clone(),
        );
        registry.register(
            "plugin_memory_peak_bytes",
            "The most linear memory all plugin instances have held at once",
            plugin_memory_peak.clone(),
        );
        registry.register(
            "plugins_quarantined",
            "Plugins none of whose versions can take calls",
            plugins_quarantined.clone(),
        );
        Metrics {
            registry,
            budget_spent,
            budget_remaining,
            key_requests,
            key_budget_spent,
            key_budget_remaining,
            limit_rejections,
            ledger_queue,
            ledger_written,
            ledger_dropped,
            requests,
            attempts,
            attempt_seconds,
            ttft_seconds,
            tokens,
            cost_usd,
            plugin_failures,
            plugin_refusals,
            plugin_loads,
            policy_fallbacks,
            stream_breaks,
            hedges,
            config_reloads,
            connections_open,
            connections_closed,
            connection_limit_reached,
            accept_errors,
            plugin_memory,
            plugin_memory_peak,
            plugins_quarantined,
        }
    }
}

/// What a target's every success updates, taken from their families once
/// (labels cloned and hashed once, not on every answer). Clones of a
/// family's metric share its value, so the exposition is the same.
pub struct SuccessMetrics {
    pub attempts: Counter,
    pub seconds: Histogram,
    /// In [`TOKEN_KINDS`] order.
    tokens: [Counter; 5],
    pub cost_usd: Counter<f64, AtomicU64>,
    /// Taken at the first success that has a time to first token (a
    /// stream's): whole answers leave no empty series.
    ttft: OnceLock<Histogram>,
    target: TargetLabels,
}

/// The `kind` labels of `tokens_total`, in the order [`SuccessMetrics::tokens`] counts them.
const TOKEN_KINDS: [&str; 5] = ["prompt", "completion", "cached", "cache_write", "reasoning"];

impl SuccessMetrics {
    /// Count an answer's tokens by kind.
    pub fn tokens(&self, usage: &Usage) {
        let counts = [
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.cache_read_tokens,
            usage.cache_write_tokens,
            usage.reasoning_tokens,
        ];
        for (counter, n) in self.tokens.iter().zip(counts) {
            counter.inc_by(n.into());
        }
    }

    /// Observe an answer's time to first token.
    pub fn ttft(&self, metrics: &Metrics, seconds: f64) {
        self.ttft
            .get_or_init(|| metrics.ttft_seconds.get_or_create(&self.target).clone())
            .observe(seconds);
    }
}

impl Metrics {
    /// The metrics a success on `provider`'s `model` updates.
    pub fn success(&self, provider: &str, model: &str) -> SuccessMetrics {
        let target = TargetLabels {
            provider: provider.to_string(),
            model: model.to_string(),
        };
        SuccessMetrics {
            attempts: self
                .attempts
                .get_or_create(&AttemptLabels {
                    provider: provider.to_string(),
                    model: model.to_string(),
                    outcome: "success".to_string(),
                })
                .clone(),
            seconds: self.attempt_seconds.get_or_create(&target).clone(),
            tokens: TOKEN_KINDS.map(|kind| {
                self.tokens
                    .get_or_create(&TokenLabels {
                        provider: provider.to_string(),
                        model: model.to_string(),
                        kind,
                    })
                    .clone()
            }),
            cost_usd: self.cost_usd.get_or_create(&target).clone(),
            ttft: OnceLock::new(),
            target,
        }
    }

    /// A plugin file was tried (bundled plugins are not counted).
    pub fn plugin_loaded(&self, kind: &'static str, loaded: bool) {
        let outcome = if loaded { "loaded" } else { "refused" };
        self.plugin_loads
            .get_or_create(&LoadLabels { kind, outcome })
            .inc();
        if !loaded {
            self.plugin_refusals.inc();
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_targets_success_handles_count_in_the_families_series() {
        let metrics = Metrics::default();
        let first = metrics.success("a", "m");
        first.attempts.inc();
        first.tokens(&Usage {
            completion_tokens: 7,
            ..Usage::default()
        });
        first.cost_usd.inc_by(0.5);
        // Taken again (after a reload, say): the same series, not new ones.
        metrics.success("a", "m").tokens(&Usage {
            completion_tokens: 3,
            ..Usage::default()
        });
        let text = metrics.render();
        for line in [
            r#"switchboard_attempts_total{provider="a",model="m",outcome="success"} 1"#,
            r#"switchboard_tokens_total{provider="a",model="m",kind="completion"} 10"#,
            r#"switchboard_tokens_total{provider="a",model="m",kind="reasoning"} 0"#,
            r#"switchboard_cost_usd_total{provider="a",model="m"} 0.5"#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
