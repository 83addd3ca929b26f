//! The `cost` routing policy: the cheapest target that can take the request,
//! with tiers that send routine work to small models and hard work to strong
//! ones.
//!
//! A request's estimated cost on a target is its estimated prompt tokens at
//! the input price plus its `max_tokens` (or `expected_output_tokens`) at the
//! output price. The first tier whose conditions the request meets puts its
//! targets first, cheapest first; every other target follows, cheapest first.
//!
//! With `economy_below_budget`, a caller whose remaining budget (the
//! host's `budget-remaining`) has fallen below that share skips the tiers:
//! every target cheapest first, so a team nearing its cap spends less.

wit_bindgen::generate!({
    world: "policy",
    path: "../../wit",
});

use exports::switchboard::plugin::router::{
    Attempt, AttemptPlan, Candidate, Capabilities, Guest, Hedge, PolicyInfo, RequestFacts,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Tier {
    /// For the operator's logs and docs.
    #[allow(dead_code)]
    name: Option<String>,
    /// The request's estimated prompt tokens are at most this.
    max_prompt_tokens: Option<u32>,
    /// Whether requests with tools may use this tier (default true).
    #[serde(default = "yes")]
    tools: bool,
    /// Whether requests with images may use this tier (default true).
    #[serde(default = "yes")]
    images: bool,
    /// The tier's targets, `"provider/model"`.
    targets: Vec<String>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    tiers: Vec<Tier>,
    /// Output tokens assumed when the request gives no `max_tokens`.
    #[serde(default = "default_output")]
    expected_output_tokens: u32,
    attempt_timeout_ms: Option<u64>,
    /// Below this share of budget left (0 to 1), tiers are skipped.
    economy_below_budget: Option<f64>,
}

fn default_output() -> u32 {
    500
}

impl Config {
    fn parse(json: &str) -> Result<Self, String> {
        let config: Config =
            serde_json::from_str(json).map_err(|e| format!("invalid cost policy config: {e}"))?;
        if config
            .economy_below_budget
            .is_some_and(|share| !(0.0..=1.0).contains(&share))
        {
            return Err("invalid cost policy config: economy_below_budget must be between 0 and 1".into());
        }
        for (i, tier) in config.tiers.iter().enumerate() {
            if tier.targets.is_empty() {
                return Err(format!("invalid cost policy config: tiers[{i}] has no targets"));
            }
        }
        Ok(config)
    }

    fn tier(&self, facts: &RequestFacts) -> Option<&Tier> {
        let saving = self
            .economy_below_budget
            .zip(facts.budget_remaining)
            .is_some_and(|(floor, left)| left < floor);
        if saving {
            return None;
        }
        self.tiers.iter().find(|tier| {
            tier.max_prompt_tokens
                .is_none_or(|max| facts.estimated_prompt_tokens <= max)
                && (tier.tools || !facts.needs.contains(Capabilities::TOOLS))
                && (tier.images || !facts.needs.contains(Capabilities::IMAGES))
        })
    }
}

fn cost(candidate: &Candidate, facts: &RequestFacts, config: &Config) -> f64 {
    let output = facts.max_output_tokens.unwrap_or(config.expected_output_tokens) as f64;
    facts.estimated_prompt_tokens as f64 * candidate.input_price_per_mtok
        + output * candidate.output_price_per_mtok
}

struct Cost;

impl Guest for Cost {
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
        let tier = config.tier(&facts);
        let in_tier = |c: &Candidate| {
            tier.is_some_and(|t| {
                t.targets
                    .iter()
                    .any(|target| *target == format!("{}/{}", c.provider, c.model))
            })
        };
        candidates.sort_by(|a, b| {
            in_tier(b)
                .cmp(&in_tier(a))
                .then(cost(a, &facts, &config).total_cmp(&cost(b, &facts, &config)))
                .then(a.index.cmp(&b.index))
        });
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

export!(Cost);

switchboard_guest::parse_once_per_text!(Config);

#[cfg(test)]
mod tests {
    use super::*;
    switchboard_guest::policy_test_helpers!();

    #[test]
    fn cheapest_first() {
        let candidates = vec![
            candidate(0, "dear", 10.0, 100.0, 0),
            candidate(1, "cheap", 0.5, 100.0, 0),
            candidate(2, "middle", 2.0, 100.0, 0),
        ];
        let plan = Cost::plan(facts(&[]), candidates, "{}".into()).unwrap();
        assert_eq!(order(plan), [1, 2, 0]);
    }

    #[test]
    fn a_caller_near_its_budget_skips_the_tiers_for_the_cheapest() {
        let candidates = vec![
            candidate(0, "dear", 10.0, 100.0, 0),
            candidate(1, "cheap", 0.5, 100.0, 0),
        ];
        let config = r#"{"tiers": [{"targets": ["dear/m"]}], "economy_below_budget": 0.25}"#;
        let mut plenty = facts(&[]);
        plenty.budget_remaining = Some(0.8);
        assert_eq!(
            order(Cost::plan(plenty, candidates.clone(), config.into()).unwrap()),
            [0, 1]
        );
        let mut nearly_spent = facts(&[]);
        nearly_spent.budget_remaining = Some(0.1);
        assert_eq!(
            order(Cost::plan(nearly_spent, candidates.clone(), config.into()).unwrap()),
            [1, 0]
        );
        // No budget applies: the tiers hold.
        assert_eq!(
            order(Cost::plan(facts(&[]), candidates, config.into()).unwrap()),
            [0, 1]
        );
        assert!(Cost::validate_config(r#"{"economy_below_budget": 2}"#.into()).is_err());
    }
}
