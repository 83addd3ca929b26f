//! The `latency` routing policy: power of two choices over the targets'
//! latency, respecting their load.
//!
//! Each target's score is its latency EWMA (time to first token for streams)
//! times one plus its in-flight attempts. Two targets are drawn at random and
//! the better one goes first; the rest follow best score first. A target
//! without measurements scores 0, so new targets get explored.

wit_bindgen::generate!({
    world: "policy",
    path: "../../wit",
});

use exports::switchboard::plugin::router::{
    Attempt, Candidate, Capabilities, CircuitState, Guest, RequestFacts,
};
use serde::Deserialize;
use std::hash::{BuildHasher, Hasher};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    attempt_timeout_ms: Option<u64>,
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

fn random(bound: usize) -> usize {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u8(0);
    (hasher.finish() % bound as u64) as usize
}

struct Latency;

impl Guest for Latency {
    fn validate_config(config: String) -> Result<(), String> {
        Config::parse(&config).map(|_| ())
    }

    fn plan(
        facts: RequestFacts,
        mut candidates: Vec<Candidate>,
        config: String,
    ) -> Result<Vec<Attempt>, String> {
        let config = Config::parse(&config)?;
        let streaming = facts.needs.contains(Capabilities::STREAMING);
        candidates.retain(|c| c.health.rate_limited_for_ms == 0 && c.health.circuit != CircuitState::Open);
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
        Ok(candidates
            .into_iter()
            .map(|c| Attempt {
                candidate: c.index,
                timeout_ms: config.attempt_timeout_ms,
            })
            .collect())
    }
}

export!(Latency);

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
}
