//! One request's record in the making. Every stage that learns something
//! adds it; when the last holder lets go (the response sent, or the stream
//! ended, or the caller gone) the record is complete: it is logged as one
//! line and handed to the ledger. So every request leaves exactly one.

use super::Ledger;
use super::record::{AttemptRecord, RequestRecord};
use crate::access::admit::{self, Settlement};
use crate::access::limits::SharedState;
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

/// A shared handle on one request's record.
#[derive(Clone)]
pub struct Trail(Arc<Mutex<Entry>>);

impl std::fmt::Debug for Trail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Trail")
    }
}

struct Entry {
    record: RequestRecord,
    started: Instant,
    ledger: Ledger,
    /// What admission took or reserved, settled when the request ends.
    settle: Vec<(Arc<dyn SharedState>, Vec<Settlement>)>,
}

impl Trail {
    /// A request that arrived at `started` (`at_ms` in wall-clock time).
    pub fn begin(
        ledger: Ledger,
        id: String,
        caller_request_id: Option<String>,
        at_ms: i64,
        started: Instant,
    ) -> Trail {
        Trail(Arc::new(Mutex::new(Entry {
            record: RequestRecord {
                id,
                caller_request_id,
                at_ms,
                // Until someone says otherwise, the caller went away.
                outcome: "cancelled",
                status: 499,
                ..RequestRecord::default()
            },
            started,
            ledger,
            settle: Vec::new(),
        })))
    }

    /// Settle these against `state` when the request ends, to what it was
    /// charged and the tokens it used.
    pub fn settle_with(&self, state: Arc<dyn SharedState>, settlements: Vec<Settlement>) {
        if !settlements.is_empty() {
            self.0.lock().unwrap().settle.push((state, settlements));
        }
    }

    /// The caller's key name (empty with open access).
    pub fn key_name(&self) -> String {
        self.0.lock().unwrap().record.key.clone().unwrap_or_default()
    }

    /// A trail that goes nowhere (tests, benches).
    pub fn detached() -> Trail {
        Trail::begin(Ledger::off(), String::new(), None, 0, Instant::now())
    }

    /// Change the record.
    pub fn note(&self, f: impl FnOnce(&mut RequestRecord)) {
        f(&mut self.0.lock().unwrap().record);
    }

    /// Add one attempt.
    pub fn attempt(&self, attempt: AttemptRecord) {
        self.note(|r| r.attempts.push(attempt));
    }

    /// The answering attempt: who answered, its tokens and what it cost.
    pub fn answered(&self, attempt: AttemptRecord, answered_model: Option<String>) {
        self.note(|r| {
            r.provider = Some(attempt.provider);
            r.model = Some(attempt.model);
            r.answered_model = answered_model;
            r.usage = attempt.usage;
            r.charged_usd = attempt.cost_usd;
            r.ttft_ms = attempt.ttft_ms;
            r.outcome = "answered";
            r.attempts.push(attempt);
        });
    }

    /// The status the caller got, and why it failed if it did.
    pub fn status(&self, status: u16, error_class: Option<String>) {
        self.note(|r| {
            r.status = status;
            if status >= 400 {
                r.outcome = "failed";
                r.error_class = error_class;
            }
        });
    }

    /// A stream that had begun ended: `answered`, `broken` or `cancelled`.
    pub fn stream_ended(&self, outcome: &'static str, error_class: Option<String>) {
        self.note(|r| {
            r.outcome = outcome;
            if error_class.is_some() {
                r.error_class = error_class;
            }
        });
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        let mut record = std::mem::take(&mut self.record);
        record.latency_ms = self.started.elapsed().as_millis() as u64;
        record.provider_cost_usd = provider_cost(&record.attempts);
        record.cost_estimated = record.attempts.iter().any(|a| a.estimated);
        let tokens = record.usage.map_or(0, |u| u.prompt_tokens + u.completion_tokens);
        for (state, settlements) in self.settle.drain(..) {
            admit::settle(&state, &settlements, record.charged_usd, tokens);
        }
        if record.id.is_empty() {
            return;
        }
        log(&record);
        self.ledger.submit(record);
    }
}

/// The one line per request (`--log-format json` makes each field a key).
fn log(r: &RequestRecord) {
    // Its fields cost a few microseconds to format; not when nobody reads them.
    if !tracing::enabled!(target: "switchboard::request", tracing::Level::INFO) {
        return;
    }
    let attempts = serde_json::to_string(&r.attempts).unwrap_or_default();
    let tags = serde_json::to_string(&r.tags).unwrap_or_default();
    let u = r.usage.unwrap_or_default();
    tracing::info!(
        target: "switchboard::request",
        request_id = %r.id,
        caller_request_id = r.caller_request_id.as_deref(),
        key = r.key.as_deref(),
        team = r.team.as_deref(),
        route = r.route,
        endpoint = r.endpoint,
        %tags,
        stream = r.stream,
        plan = %r.plan.join(","),
        %attempts,
        provider = r.provider,
        model = r.model,
        answered_model = r.answered_model.as_deref(),
        prompt_tokens = u.prompt_tokens,
        cache_read_tokens = u.cache_read_tokens,
        cache_write_tokens = u.cache_write_tokens,
        completion_tokens = u.completion_tokens,
        reasoning_tokens = u.reasoning_tokens,
        provider_cost_usd = r.provider_cost_usd,
        cost_estimated = r.cost_estimated,
        charged_usd = r.charged_usd,
        latency_ms = r.latency_ms,
        ttft_ms = r.ttft_ms,
        status = r.status,
        error_class = r.error_class.as_deref(),
        outcome = r.outcome,
        "request"
    );
}

/// What every attempt cost together: `0.0` for none (a float `sum` of
/// nothing is `-0.0`, which logs and serialises with its sign).
fn provider_cost(attempts: &[AttemptRecord]) -> f64 {
    attempts.iter().fold(0.0, |sum, a| sum + a.cost_usd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_without_attempts_cost_a_positive_zero() {
        let cost = provider_cost(&[]);
        assert!(cost == 0.0 && cost.is_sign_positive());
        assert_eq!(serde_json::to_string(&cost).unwrap(), "0.0");
    }
}
