//! The `latency` routing policy: power of two choices over the targets'
//! latency, respecting their load.
//!
//! Each target's score is its latency EWMA (time to first token for streams)
//! times one plus its in-flight attempts. Two targets are drawn at random and
//! the better one goes first; the rest follow best score first. A target
//! without measurements scores 0, so new targets get explored.
//!
//! With `hedge_at_p95 = true` the plan asks the host to hedge once the first
//! target has taken longer than its own p95 (time to first token for
//! streams, whole-answer latency otherwise): a request slower than 95 % of
//! its recent ones races the next target. Until the first target has data,
//! the route's own hedging applies.

wit_bindgen::generate!({
    world: "policy",
    path: "../../wit",
});

use exports::switchboard::plugin::router::{
    Attempt, AttemptPlan, Candidate, Guest, Hedge, PolicyInfo, RequestFacts,
};
use serde::Deserialize;
use std::hash::{BuildHasher, Hasher};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    attempt_timeout_ms: Option<u64>,
    /// Hedge after the first target's own p95.
    #[serde(default)]
    hedge_at_p95: bool,
}

impl Config {
    fn parse(json: &str) -> Result<Self, String> {
        serde_json::from_str(json).map_err(|e| format!("invalid latency policy config: {e}"))
    }
}

fn score(candidate: &Candidate, streaming: bool) -> f64 {
    let health = &candidate.health;
    let latency = if streaming && health.ttft_ewma_ms > 0.0 {
        health.ttft_ewma_ms
    } else {
        health.latency_ewma_ms
    };
    latency * (1.0 + health.in_flight as f64)
}

/// The first target's p95 for this kind of request, when it has one.
fn p95(candidate: &Candidate, streaming: bool) -> Option<u64> {
    let health = &candidate.health;
    let p95 = if streaming {
        health.ttft_p95_ms
    } else {
        health.latency_p95_ms
    };
    (p95 > 0.0).then(|| p95.ceil() as u64)
}

fn random(bound: usize) -> usize {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u8(0);
    (hasher.finish() % bound as u64) as usize
}

struct Latency;

impl Guest for Latency {
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
        facts: RequestFacts,
        mut candidates: Vec<Candidate>,
        config: String,
    ) -> Result<AttemptPlan, String> {
        let config = Config::cached(&config)?;
        let streaming = facts.stream;
        candidates.sort_by(|a, b| {
            score(a, streaming)
                .total_cmp(&score(b, streaming))
                .then(a.index.cmp(&b.index))
        });
        if candidates.len() >= 2 {
            let first = random(candidates.len());
            let second = (first + 1 + random(candidates.len() - 1)) % candidates.len();
            // Sorted by score: the lower position of the two is the better choice.
            let winner = candidates.remove(first.min(second));
            candidates.insert(0, winner);
        }
        let hedge = match candidates.first().and_then(|c| p95(c, streaming)) {
            Some(ms) if config.hedge_at_p95 => Hedge::AfterMs(ms),
            _ => Hedge::Route,
        };
        Ok(AttemptPlan {
            attempts: candidates
                .into_iter()
                .map(|c| Attempt {
                    candidate: c.index,
                    timeout_ms: config.attempt_timeout_ms,
                })
                .collect(),
            hedge,
        })
    }
}

export!(Latency);

switchboard_guest::parse_once_per_text!(Config);

#[cfg(test)]
mod tests {
    use super::*;
    switchboard_guest::policy_test_helpers!();

    #[test]
    fn the_faster_and_less_loaded_target_leads() {
        let candidates = vec![
            candidate(0, "slow", 1.0, 900.0, 0),
            candidate(1, "fast", 1.0, 100.0, 0),
        ];
        for _ in 0..50 {
            let plan = Latency::plan(facts(&[]), candidates.clone(), "{}".into()).unwrap();
            assert_eq!(order(plan), [1, 0]);
        }
        let busy = vec![
            candidate(0, "idle", 1.0, 200.0, 0),
            candidate(1, "busy", 1.0, 150.0, 40),
        ];
        let plan = Latency::plan(facts(&[]), busy, "{}".into()).unwrap();
        assert_eq!(order(plan)[0], 0, "latency times load");
    }

    #[test]
    fn hedging_at_p95_asks_for_the_first_targets_own_p95_once_it_has_one() {
        let mut measured = candidate(0, "a", 1.0, 100.0, 0);
        measured.health.latency_p95_ms = 420.2;
        measured.health.ttft_p95_ms = 180.0;
        let config = r#"{"hedge_at_p95": true}"#;
        let plan = Latency::plan(facts(&[]), vec![measured.clone()], config.into()).unwrap();
        assert!(matches!(plan.hedge, Hedge::AfterMs(421)));
        let mut streaming = facts(&[]);
        streaming.stream = true;
        let plan = Latency::plan(streaming, vec![measured.clone()], config.into()).unwrap();
        assert!(matches!(plan.hedge, Hedge::AfterMs(180)));
        let unmeasured = candidate(0, "a", 1.0, 100.0, 0);
        let plan = Latency::plan(facts(&[]), vec![unmeasured], config.into()).unwrap();
        assert!(
            matches!(plan.hedge, Hedge::Route),
            "no data yet: the route decides"
        );
        let plan = Latency::plan(facts(&[]), vec![measured], "{}".into()).unwrap();
        assert!(matches!(plan.hedge, Hedge::Route), "off unless asked");
    }
}
