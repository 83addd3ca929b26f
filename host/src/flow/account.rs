//! Accounting a successful attempt: the target's health, latency and TTFT
//! histograms, tokens and cost, and the log line.

use super::attempts::Attempt;
use crate::gateway::Gateway;
use crate::health::Outcome;
use crate::plugin::types::Usage;
use std::time::Duration;
use tokio::time::Instant;

/// Account a successful attempt: health, latency, tokens and cost.
/// `answered_by` is the model the provider said answered, when it said.
pub fn record_success(
    gw: &Gateway,
    attempt: &Attempt<'_>,
    usage: Option<Usage>,
    answered_by: Option<&str>,
    ttft: Option<Duration>,
) {
    let now = Instant::now();
    let latency = now - attempt.started;
    attempt
        .to
        .target
        .health
        .record(now, Outcome::Success, latency, ttft);
    let (provider, model) = (&attempt.to.provider.name, &attempt.to.target.model);
    let metrics = attempt
        .to
        .target
        .success_metrics
        .get_or_init(|| gw.metrics.success(provider, model));
    metrics.attempts.inc();
    metrics.seconds.observe(latency.as_secs_f64());
    if let Some(ttft) = ttft {
        metrics.ttft(&gw.metrics, ttft.as_secs_f64());
    }
    if let Some(usage) = usage {
        metrics.tokens(&usage);
        metrics.cost_usd.inc_by(attempt.to.model.prices.cost(&usage));
    }
    // The request's own line (`switchboard::request`, at info) lists every
    // attempt with its tokens, latency and cost; this one is for debugging.
    tracing::debug!(
        provider = %provider,
        model = %model,
        answered_by,
        latency_ms = latency.as_millis() as u64,
        ttft_ms = ttft.map(|t| t.as_millis() as u64),
        prompt_tokens = usage.map(|u| u.prompt_tokens),
        completion_tokens = usage.map(|u| u.completion_tokens),
        cache_read_tokens = usage.map(|u| u.cache_read_tokens),
        cache_write_tokens = usage.map(|u| u.cache_write_tokens),
        reasoning_tokens = usage.map(|u| u.reasoning_tokens),
        "attempt answered"
    );
}
