//! The `priority` routing policy: try targets in the configured order,
//! skipping those the host reports as rate-limited or with an open circuit,
//! and moving degraded ones (high recent error rate) to the end.

wit_bindgen::generate!({
    world: "policy",
    path: "../../wit",
});

use exports::switchboard::plugin::router::{Attempt, Candidate, CircuitState, Guest, RequestFacts};
use serde::Deserialize;

/// The route's `policy_config` for this policy.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Deadline of each attempt; the host's default when absent.
    attempt_timeout_ms: Option<u64>,
    /// A target whose recent error rate is at or above this goes last.
    #[serde(default = "default_max_error_rate")]
    max_error_rate: f64,
    /// Extra attempts on the same target before moving on (the host backs
    /// off between them and waits out a `Retry-After` that fits the deadline).
    #[serde(default)]
    retries_per_target: u32,
}

fn default_max_error_rate() -> f64 {
    0.5
}

impl Config {
    fn parse(json: &str) -> Result<Self, String> {
        let json = if json.trim().is_empty() { "{}" } else { json };
        let config: Config =
            serde_json::from_str(json).map_err(|e| format!("invalid priority policy config: {e}"))?;
        if !(0.0..=1.0).contains(&config.max_error_rate) {
            return Err(format!(
                "invalid priority policy config: max_error_rate = {} is not between 0 and 1",
                config.max_error_rate
            ));
        }
        if config.retries_per_target > 10 {
            return Err("invalid priority policy config: retries_per_target is at most 10".into());
        }
        if config.attempt_timeout_ms == Some(0) {
            return Err("invalid priority policy config: attempt_timeout_ms must be above 0".into());
        }
        Ok(config)
    }
}

struct Priority;

impl Guest for Priority {
    fn validate_config(config: String) -> Result<(), String> {
        Config::parse(&config).map(|_| ())
    }

    fn plan(
        _facts: RequestFacts,
        mut candidates: Vec<Candidate>,
        config: String,
    ) -> Result<Vec<Attempt>, String> {
        let config = Config::parse(&config)?;
        candidates.retain(|c| c.health.rate_limited_for_ms == 0 && c.health.circuit != CircuitState::Open);
        candidates.sort_by_key(|c| c.index);
        // Stable: healthy targets keep their order, degraded ones follow in theirs.
        candidates.sort_by_key(|c| c.health.error_rate >= config.max_error_rate);
        let tries = 1 + config.retries_per_target as usize;
        Ok(candidates
            .into_iter()
            .flat_map(|c| std::iter::repeat_n(c.index, tries))
            .map(|candidate| Attempt {
                candidate,
                timeout_ms: config.attempt_timeout_ms,
            })
            .collect())
    }
}

export!(Priority);
