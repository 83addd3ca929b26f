//! State that gateway instances would share: request and token rate
//! buckets, and budget spend with reservations. Behind one small trait, so
//! a shared backend (Redis) replaces the in-memory one without touching
//! the request path.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// A rate bucket's state after a take: what the `x-ratelimit-*` headers say.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateState {
    pub limit: u32,
    pub remaining: u32,
    /// Until the bucket is full again.
    pub reset: Duration,
}

/// A take the bucket could not give: when it could.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateRefused {
    pub state: RateState,
    pub retry_after: Duration,
}

/// A budget's period: its name (`key:ci`, `team:search`) and bounds.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BudgetPeriod {
    pub budget: String,
    pub start_ms: i64,
    pub end_ms: i64,
}

/// Spend of a budget's period: settled, and reserved by requests in flight.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Spend {
    pub spent: f64,
    pub reserved: f64,
}

pub trait SharedState: Send + Sync {
    /// Take `amount` from the bucket that refills `limit` per minute (and
    /// holds at most `limit`). An amount above the limit takes a full bucket.
    fn take(&self, bucket: &str, limit: u32, amount: u32, now: Instant) -> Result<RateState, RateRefused>;
    /// Take more (`delta > 0`) or give back once the real amount is known;
    /// a bucket may go below zero, which later takes then wait out.
    fn adjust(&self, bucket: &str, limit: u32, delta: i64, now: Instant);
    /// Reserve `amount` unless spent plus reserved plus it exceeds `limit`.
    fn reserve(&self, period: &BudgetPeriod, limit: f64, amount: f64) -> Result<Spend, Spend>;
    /// A reservation of `reserved` turned out to cost `actual`.
    fn settle(&self, period: &BudgetPeriod, reserved: f64, actual: f64);
    /// Spend recorded elsewhere (the ledger, at start-up).
    fn seed(&self, period: &BudgetPeriod, spent: f64);
    fn spend(&self, period: &BudgetPeriod) -> Spend;
}

/// One gateway's own state.
#[derive(Default)]
pub struct InMemory {
    buckets: Mutex<HashMap<String, Bucket>>,
    budgets: Mutex<HashMap<BudgetPeriod, Spend>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Refill at `limit` per minute, up to `limit`.
    fn refill(&mut self, limit: u32, now: Instant) {
        let per_second = limit as f64 / 60.0;
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(limit as f64);
        self.at = now;
    }

    fn state(&self, limit: u32) -> RateState {
        let missing = (limit as f64 - self.tokens).max(0.0);
        RateState {
            limit,
            remaining: self.tokens.max(0.0).floor() as u32,
            reset: Duration::from_secs_f64(missing * 60.0 / limit as f64),
        }
    }
}

impl SharedState for InMemory {
    fn take(&self, bucket: &str, limit: u32, amount: u32, now: Instant) -> Result<RateState, RateRefused> {
        let mut buckets = self.buckets.lock().unwrap();
        let b = buckets.entry(bucket.to_string()).or_insert(Bucket {
            tokens: limit as f64,
            at: now,
        });
        b.refill(limit, now);
        let wanted = amount.min(limit) as f64;
        if b.tokens >= wanted {
            b.tokens -= wanted;
            return Ok(b.state(limit));
        }
        let per_second = limit as f64 / 60.0;
        Err(RateRefused {
            state: b.state(limit),
            retry_after: Duration::from_secs_f64((wanted - b.tokens) / per_second),
        })
    }

    fn adjust(&self, bucket: &str, limit: u32, delta: i64, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap();
        if let Some(b) = buckets.get_mut(bucket) {
            b.refill(limit, now);
            b.tokens = (b.tokens - delta as f64).min(limit as f64);
        }
    }

    fn reserve(&self, period: &BudgetPeriod, limit: f64, amount: f64) -> Result<Spend, Spend> {
        let mut budgets = self.budgets.lock().unwrap();
        let spend = budgets.entry(period.clone()).or_default();
        if spend.spent + spend.reserved + amount > limit {
            return Err(*spend);
        }
        spend.reserved += amount;
        Ok(*spend)
    }

    fn settle(&self, period: &BudgetPeriod, reserved: f64, actual: f64) {
        let mut budgets = self.budgets.lock().unwrap();
        let spend = budgets.entry(period.clone()).or_default();
        spend.reserved = (spend.reserved - reserved).max(0.0);
        spend.spent += actual;
    }

    fn seed(&self, period: &BudgetPeriod, spent: f64) {
        self.budgets
            .lock()
            .unwrap()
            .entry(period.clone())
            .or_default()
            .spent += spent;
    }

    fn spend(&self, period: &BudgetPeriod) -> Spend {
        self.budgets
            .lock()
            .unwrap()
            .get(period)
            .copied()
            .unwrap_or_default()
    }
}

/// A duration as OpenAI's rate-limit headers write it: `1s`, `6m0s`, `17ms`.
pub fn openai_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let seconds = d.as_secs_f64().ceil() as u64;
    match (seconds / 3600, seconds / 60 % 60, seconds % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_bucket_refills_at_its_rate_and_says_when_to_retry() {
        let state = InMemory::default();
        let now = Instant::now();
        for left in (0..3).rev() {
            let taken = state.take("rpm:k", 3, 1, now).unwrap();
            assert_eq!(taken.remaining, left);
        }
        let refused = state.take("rpm:k", 3, 1, now).unwrap_err();
        // 3 per minute: one every 20 s.
        assert_eq!(refused.retry_after, Duration::from_secs(20));
        assert_eq!(refused.state.reset, Duration::from_secs(60));
        let later = now + Duration::from_secs(20);
        assert_eq!(state.take("rpm:k", 3, 1, later).unwrap().remaining, 0);
        // Giving back what was not used makes room at once.
        state.adjust("rpm:k", 3, -2, later);
        assert_eq!(state.take("rpm:k", 3, 1, later).unwrap().remaining, 1);
        // More than the limit takes a full bucket rather than never passing.
        assert!(state.take("tpm:k", 100, 5000, now).is_ok());
        assert!(state.take("tpm:k", 100, 1, now).is_err());
    }

    #[test]
    fn reservations_hold_room_until_settled_to_the_real_cost() {
        let state = InMemory::default();
        let period = BudgetPeriod {
            budget: "team:t".into(),
            start_ms: 0,
            end_ms: 1,
        };
        state.seed(&period, 0.5);
        assert!(state.reserve(&period, 1.0, 0.3).is_ok());
        let refused = state.reserve(&period, 1.0, 0.3).unwrap_err();
        assert_eq!(
            refused,
            Spend {
                spent: 0.5,
                reserved: 0.3
            }
        );
        state.settle(&period, 0.3, 0.1);
        assert_eq!(
            state.spend(&period),
            Spend {
                spent: 0.6,
                reserved: 0.0
            }
        );
        assert!(state.reserve(&period, 1.0, 0.3).is_ok());
    }

    #[test]
    fn durations_read_like_openais() {
        assert_eq!(openai_duration(Duration::from_millis(17)), "17ms");
        assert_eq!(openai_duration(Duration::from_millis(1200)), "2s");
        assert_eq!(openai_duration(Duration::from_secs(360)), "6m0s");
        assert_eq!(openai_duration(Duration::from_secs(3725)), "1h2m5s");
    }
}
