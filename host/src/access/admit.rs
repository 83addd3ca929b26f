//! Admitting a request against its key's rates and its key's and team's
//! budgets: what it takes or reserves before it runs, and how that is
//! settled once its real tokens and cost are known.

use super::calendar;
use super::limits::{BudgetPeriod, RateRefused, RateState, SharedState, Spend};
use super::{Budget, KeyInfo};
use std::sync::Arc;
use tokio::time::Instant;

/// A budget that applies to a request: whose it is and its limit.
#[derive(Clone, Debug)]
pub struct Applies {
    /// `key:<name>` or `team:<name>`.
    pub id: String,
    /// As the caller is told: "team `search`".
    pub label: String,
    pub budget: Budget,
}

/// What is undone or corrected when the request ends.
#[derive(Clone, Debug)]
pub enum Settlement {
    /// A budget reservation, settled to the request's charge.
    Budget { period: BudgetPeriod, reserved: f64 },
    /// Tokens taken from a per-minute bucket on an estimate, corrected to
    /// the tokens really used.
    Tokens { bucket: String, limit: u32, taken: u32 },
}

/// Why a request was not admitted.
#[derive(Clone, Debug)]
pub enum Refusal {
    /// Over the key's requests (`kind = "requests"`) or tokens per minute.
    Rate {
        kind: &'static str,
        refused: RateRefused,
    },
    Budget {
        label: String,
        budget: Budget,
        spend: Spend,
        /// When its period ends, Unix milliseconds.
        resets_ms: i64,
    },
}

/// The request and token rates of a key after this request: for the
/// `x-ratelimit-*` headers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rates {
    pub requests: Option<RateState>,
    pub tokens: Option<RateState>,
}

/// Take one request and `tokens` (an estimate) from the key's buckets.
pub fn take_rates(
    state: &dyn SharedState,
    key: &KeyInfo,
    tokens: u32,
    settle: &mut Vec<Settlement>,
) -> Result<Rates, (Refusal, Rates)> {
    let now = Instant::now();
    let mut rates = Rates::default();
    if let Some(limit) = key.rpm {
        match state.take(&format!("rpm:{}", key.name), limit, 1, now) {
            Ok(taken) => rates.requests = Some(taken),
            Err(refused) => {
                rates.requests = Some(refused.state);
                return Err((
                    Refusal::Rate {
                        kind: "requests",
                        refused,
                    },
                    rates,
                ));
            }
        }
    }
    if let Some(limit) = key.tpm {
        let bucket = format!("tpm:{}", key.name);
        match state.take(&bucket, limit, tokens, now) {
            Ok(taken) => {
                rates.tokens = Some(taken);
                settle.push(Settlement::Tokens {
                    bucket,
                    limit,
                    taken: tokens.min(limit),
                });
            }
            Err(refused) => {
                rates.tokens = Some(refused.state);
                // The request taken a moment ago is not one that ran.
                if let Some(limit) = key.rpm {
                    state.adjust(&format!("rpm:{}", key.name), limit, -1, now);
                }
                return Err((
                    Refusal::Rate {
                        kind: "tokens",
                        refused,
                    },
                    rates,
                ));
            }
        }
    }
    Ok(rates)
}

/// The budgets of a key and of its team.
pub fn budgets(key: &KeyInfo, team: Option<Budget>) -> Vec<Applies> {
    let mut applies = Vec::new();
    if let Some(budget) = key.budget {
        applies.push(Applies {
            id: format!("key:{}", key.name),
            label: format!("key `{}`", key.name),
            budget,
        });
    }
    if let (Some(name), Some(budget)) = (&key.team, team) {
        applies.push(Applies {
            id: format!("team:{name}"),
            label: format!("team `{name}`"),
            budget,
        });
    }
    applies
}

/// The period of `applies` that contains `now_ms`.
pub fn period_of(applies: &Applies, now_ms: i64) -> BudgetPeriod {
    let (start_ms, end_ms) = calendar::bounds(applies.budget.period, now_ms);
    BudgetPeriod {
        budget: applies.id.clone(),
        start_ms,
        end_ms,
    }
}

/// Reserve `amount` (the request's worst case) against every budget; all
/// or none.
pub fn reserve(
    state: &dyn SharedState,
    applies: &[Applies],
    amount: f64,
    now_ms: i64,
    settle: &mut Vec<Settlement>,
) -> Result<(), Refusal> {
    let mut held = Vec::new();
    for budget in applies {
        let period = period_of(budget, now_ms);
        match state.reserve(&period, budget.budget.limit_usd, amount) {
            Ok(_) => held.push(period),
            Err(spend) => {
                for period in held {
                    state.settle(&period, amount, 0.0);
                }
                return Err(Refusal::Budget {
                    label: budget.label.clone(),
                    budget: budget.budget,
                    spend,
                    resets_ms: period.end_ms,
                });
            }
        }
    }
    settle.extend(held.into_iter().map(|period| Settlement::Budget {
        period,
        reserved: amount,
    }));
    Ok(())
}

/// The smallest share of any budget left unspent and unreserved (none
/// when no budget applies): what a policy sees as `budget-remaining`.
pub fn remaining(state: &dyn SharedState, applies: &[Applies], now_ms: i64) -> Option<f64> {
    applies
        .iter()
        .map(|budget| {
            let spend = state.spend(&period_of(budget, now_ms));
            let limit = budget.budget.limit_usd;
            if limit <= 0.0 {
                0.0
            } else {
                ((limit - spend.spent - spend.reserved) / limit).clamp(0.0, 1.0)
            }
        })
        .reduce(f64::min)
}

/// Undo or correct what admission took, once the request's `charged_usd`
/// and `tokens` are known.
pub fn settle(state: &Arc<dyn SharedState>, settlements: &[Settlement], charged_usd: f64, tokens: u32) {
    let now = Instant::now();
    for settlement in settlements {
        match settlement {
            Settlement::Budget { period, reserved } => state.settle(period, *reserved, charged_usd),
            Settlement::Tokens { bucket, limit, taken } => {
                state.adjust(bucket, *limit, tokens as i64 - *taken as i64, now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Period;
    use crate::access::limits::InMemory;

    fn key(rpm: Option<u32>, tpm: Option<u32>, budget: Option<f64>, team: Option<&str>) -> KeyInfo {
        KeyInfo {
            name: "k".into(),
            team: team.map(str::to_string),
            rpm,
            tpm,
            budget: budget.map(|limit_usd| Budget {
                limit_usd,
                period: Period::Day,
            }),
            ..KeyInfo::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_refused_for_tokens_does_not_count_as_a_request() {
        let state = InMemory::default();
        let k = key(Some(10), Some(100), None, None);
        let mut settle = Vec::new();
        let rates = take_rates(&state, &k, 60, &mut settle).unwrap();
        assert_eq!(rates.requests.unwrap().remaining, 9);
        assert_eq!(rates.tokens.unwrap().remaining, 40);
        let (refusal, rates) = take_rates(&state, &k, 60, &mut settle).unwrap_err();
        assert!(matches!(refusal, Refusal::Rate { kind: "tokens", .. }));
        assert_eq!(rates.requests.unwrap().remaining, 8, "as taken before the refund");
        let again = take_rates(&state, &k, 10, &mut Vec::new()).unwrap();
        assert_eq!(
            again.requests.unwrap().remaining,
            8,
            "the refused one was given back"
        );
        // The first request really used 20 tokens: 40 come back.
        used_twenty(&state, &settle);
        let after = take_rates(&state, &k, 0, &mut Vec::new()).unwrap();
        assert_eq!(after.tokens.unwrap().remaining, 70);
    }

    /// Correct token takes as if each request used 20 tokens.
    fn used_twenty(state: &InMemory, settlements: &[Settlement]) {
        for s in settlements {
            if let Settlement::Tokens { bucket, limit, taken } = s {
                state.adjust(bucket, *limit, 20 - *taken as i64, Instant::now());
            }
        }
    }

    #[test]
    fn both_budgets_must_have_room_and_a_refusal_holds_nothing() {
        let state = InMemory::default();
        let k = key(None, None, Some(1.0), Some("t"));
        let team = Some(Budget {
            limit_usd: 0.5,
            period: Period::Day,
        });
        let applies = budgets(&k, team);
        assert_eq!(applies.len(), 2);
        let now = 1_000;
        let mut held = Vec::new();
        reserve(&state, &applies, 0.4, now, &mut held).unwrap();
        let left = remaining(&state, &applies, now).unwrap();
        assert!((left - 0.2).abs() < 1e-12, "the team's 0.1 of 0.5: {left}");
        let Err(Refusal::Budget { label, spend, .. }) = reserve(&state, &applies, 0.4, now, &mut Vec::new())
        else {
            panic!("the team's budget is full");
        };
        assert_eq!(label, "team `t`");
        assert_eq!(spend.reserved, 0.4);
        // The key's reservation made before the team refused was released.
        assert_eq!(state.spend(&period_of(&applies[0], now)).reserved, 0.4);
        let shared: Arc<dyn SharedState> = Arc::new(state);
        super::settle(&shared, &held, 0.1, 0);
        assert_eq!(
            shared.spend(&period_of(&applies[1], now)),
            Spend {
                spent: 0.1,
                reserved: 0.0
            }
        );
    }
}
