//! The `weighted` routing policy: split traffic by percentage for canaries,
//! A/B tests and migrations, optionally sticky per caller.
//!
//! The first attempt is drawn by weight among the targets that can take the
//! request now; the others follow by descending weight as fallbacks.

wit_bindgen::generate!({
    world: "policy",
    path: "../../wit",
});

use exports::switchboard::plugin::router::{
    Attempt, AttemptPlan, Candidate, Guest, Hedge, PolicyInfo, RequestFacts,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hash, Hasher};

/// The route's `policy_config` for this policy.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Relative weight per target, keyed `"provider/model"`; unlisted targets weigh 0
    /// (they serve only as fallbacks).
    weights: BTreeMap<String, u32>,
    /// Keep a caller on one target: the name of a caller tag (`user` for the
    /// request's `user` field, or `<name>` for an `x-switchboard-tag-<name>` header).
    sticky: Option<String>,
    /// Deadline of each attempt; the host's default when absent.
    attempt_timeout_ms: Option<u64>,
}

impl Config {
    fn parse(json: &str) -> Result<Self, String> {
        let config: Config =
            serde_json::from_str(json).map_err(|e| format!("invalid weighted policy config: {e}"))?;
        if config.weights.values().all(|w| *w == 0) {
            return Err(
                "invalid weighted policy config: `weights` needs at least one positive weight".into(),
            );
        }
        if let Some(bad) = config.weights.keys().find(|k| !k.contains('/')) {
            return Err(format!(
                "invalid weighted policy config: weight key {bad:?} is not \"provider/model\""
            ));
        }
        Ok(config)
    }

    fn weight(&self, candidate: &Candidate) -> u32 {
        self.weights
            .get(&format!("{}/{}", candidate.provider, candidate.model))
            .copied()
            .unwrap_or(0)
    }
}

/// A number in `0..bound`: from the sticky key when there is one, else random.
fn draw(bound: u64, key: Option<&str>) -> u64 {
    let mut hasher = match key {
        // A fixed hasher: the same key lands on the same target on every instance.
        Some(_) => std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .build_hasher(),
        // RandomState is seeded from the host's random source for each instance.
        None => std::collections::hash_map::RandomState::new().build_hasher(),
    };
    key.unwrap_or("").hash(&mut hasher);
    hasher.finish() % bound
}

struct Weighted;

impl Guest for Weighted {
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
        // Fallback order: heaviest first, then configured order.
        candidates.sort_by_key(|c| (std::cmp::Reverse(config.weight(c)), c.index));
        let total: u64 = candidates.iter().map(|c| config.weight(c) as u64).sum();
        if total > 0 {
            let key = config.sticky.as_ref().and_then(|tag| {
                facts
                    .tags
                    .iter()
                    .find(|(name, _)| name == tag)
                    .map(|(_, value)| value.as_str())
            });
            let mut ticket = draw(total, key);
            let chosen = candidates
                .iter()
                .position(|c| {
                    let weight = config.weight(c) as u64;
                    if ticket < weight {
                        true
                    } else {
                        ticket -= weight;
                        false
                    }
                })
                .unwrap_or(0);
            let first = candidates.remove(chosen);
            candidates.insert(0, first);
        }
        Ok(AttemptPlan {
            attempts: candidates
                .into_iter()
                .map(|c| Attempt {
                    candidate: c.index,
                    timeout_ms: config.attempt_timeout_ms,
                })
                .collect(),
            hedge: Hedge::Route,
        })
    }
}

export!(Weighted);

switchboard_guest::parse_once_per_text!(Config);

#[cfg(test)]
mod tests {
    use super::*;
    switchboard_guest::policy_test_helpers!();

    #[test]
    fn sticky_splits_land_every_caller_on_one_target_in_proportion() {
        let candidates = vec![candidate(0, "a", 1.0, 100.0, 0), candidate(1, "b", 1.0, 100.0, 0)];
        let config = r#"{"weights": {"a/m": 80, "b/m": 20}, "sticky": "user"}"#;
        let mut firsts = [0u32; 2];
        for user in 0..1000 {
            let user = format!("user-{user}");
            let plan =
                order(Weighted::plan(facts(&[("user", &user)]), candidates.clone(), config.into()).unwrap());
            let again =
                order(Weighted::plan(facts(&[("user", &user)]), candidates.clone(), config.into()).unwrap());
            assert_eq!(plan, again, "sticky: the same caller, the same order");
            assert_eq!(plan.len(), 2, "the other target stays as the fallback");
            firsts[plan[0] as usize] += 1;
        }
        assert!((700..=900).contains(&firsts[0]), "about 80 %: {firsts:?}");
        assert!(
            Weighted::validate_config("{}".into()).is_err(),
            "weights are required"
        );
    }
}
