//! The `priority` routing policy: try targets in the configured order,
//! moving degraded ones (high recent error rate) to the end. (The host
//! offers only targets that can be tried now: none cooling down after a
//! 429, none with an open circuit.)

wit_bindgen::generate!({
    world: "policy",
    path: "../../wit",
});

use exports::switchboard::plugin::router::{
    Attempt, AttemptPlan, Candidate, Guest, Hedge, PolicyInfo, RequestFacts,
};
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
    fn describe() -> PolicyInfo {
        PolicyInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            stateless: true,
        }
    }

    fn validate_config(config: String) -> Result<(), String> {
        Config::parse(&config).map(|_| ())
    }

    fn plan(
        _facts: RequestFacts,
        mut candidates: Vec<Candidate>,
        config: String,
    ) -> Result<AttemptPlan, String> {
        let config = Config::cached(&config)?;
        candidates.sort_by_key(|c| c.index);
        // Stable: healthy targets keep their order, degraded ones follow in theirs.
        candidates.sort_by_key(|c| c.health.error_rate >= config.max_error_rate);
        let tries = 1 + config.retries_per_target as usize;
        Ok(AttemptPlan {
            attempts: candidates
                .into_iter()
                .flat_map(|c| std::iter::repeat_n(c.index, tries))
                .map(|candidate| Attempt {
                    candidate,
                    timeout_ms: config.attempt_timeout_ms,
                })
                .collect(),
            hedge: Hedge::Route,
        })
    }
}

export!(Priority);

switchboard_guest::parse_once_per_text!(Config);

#[cfg(test)]
mod tests {
    use super::*;
    switchboard_guest::policy_test_helpers!();

    #[test]
    fn configured_order_with_degraded_targets_last_and_retries_repeated() {
        let mut degraded = candidate(0, "a", 1.0, 100.0, 0);
        degraded.health.error_rate = 0.9;
        let candidates = vec![
            candidate(3, "d", 1.0, 100.0, 0),
            degraded,
            candidate(2, "c", 1.0, 100.0, 0),
        ];
        let plan = Priority::plan(facts(&[]), candidates.clone(), "{}".into()).unwrap();
        assert_eq!(order(plan), [2, 3, 0], "configured order, degraded last");
        let plan = Priority::plan(
            facts(&[]),
            candidates,
            r#"{"retries_per_target": 1, "attempt_timeout_ms": 900}"#.into(),
        )
        .unwrap();
        assert_eq!(plan.attempts[0].timeout_ms, Some(900));
        assert_eq!(order(plan), [2, 2, 3, 3, 0, 0]);
        assert!(Priority::validate_config(r#"{"max_error_rate": 2}"#.into()).is_err());
    }
}
