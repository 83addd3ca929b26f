//! A request's admission as the caller sees it: the `x-ratelimit-*`
//! headers, and OpenAI-format refusals for a key over its rates or a key
//! or team over its budget.

use super::ApiError;
use crate::access::admit::{Rates, Refusal};
use crate::access::calendar;
use crate::access::limits::{RateState, openai_duration};
use crate::metrics::{KindLabels, Metrics};
use std::time::{Duration, SystemTime};

/// The `x-ratelimit-*` headers of the limits a key has.
pub fn rate_headers(rates: &Rates) -> Vec<(&'static str, String)> {
    let mut headers = Vec::new();
    let mut add = |state: &Option<RateState>, names: [&'static str; 3]| {
        if let Some(state) = state {
            headers.push((names[0], state.limit.to_string()));
            headers.push((names[1], state.remaining.to_string()));
            headers.push((names[2], openai_duration(state.reset)));
        }
    };
    add(
        &rates.requests,
        [
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
        ],
    );
    add(
        &rates.tokens,
        [
            "x-ratelimit-limit-tokens",
            "x-ratelimit-remaining-tokens",
            "x-ratelimit-reset-tokens",
        ],
    );
    headers
}

/// Dollars to six places, without trailing zeros: `0.0001`, `12.5`.
fn usd(amount: f64) -> String {
    let text = format!("{amount:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text.contains('.') {
        text.to_string()
    } else {
        format!("{text}.00")
    }
}

/// The error for a refused request (counted by kind).
pub fn refused(metrics: &Metrics, refusal: Refusal, key: &str, rates: &Rates) -> ApiError {
    let kind = match &refusal {
        Refusal::Rate { kind, .. } => kind,
        Refusal::Budget { .. } => "budget",
    };
    metrics.limit_rejections.get_or_create(&KindLabels { kind }).inc();
    let mut error = match refusal {
        Refusal::Rate { kind, refused } => {
            let per_minute = if kind == "requests" { "RPM" } else { "TPM" };
            ApiError::over_rate(
                kind,
                format!(
                    "Rate limit reached for gateway key `{key}` on {kind} per min ({per_minute}): limit {}, remaining {}. Please try again in {}.",
                    refused.state.limit,
                    refused.state.remaining,
                    openai_duration(refused.retry_after)
                ),
                refused.retry_after,
            )
        }
        Refusal::Budget {
            label,
            budget,
            spend,
            resets_ms,
        } => {
            let now = crate::ledger::unix_ms(SystemTime::now());
            let wait = Duration::from_millis(resets_ms.saturating_sub(now).max(0) as u64);
            ApiError::budget_exceeded(
                format!(
                    "The budget of {label} (${} per {}) is spent: ${} charged and ${} reserved by requests in flight; it resets at {}.",
                    usd(budget.limit_usd),
                    budget.period.as_str(),
                    usd(spend.spent),
                    usd(spend.reserved),
                    calendar::format(resets_ms)
                ),
                wait,
            )
        }
    };
    error.headers = rate_headers(rates);
    error
}
