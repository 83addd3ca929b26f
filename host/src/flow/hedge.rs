//! Trying targets until one answers, with optional hedging: a first attempt
//! still silent after the hedge delay is raced against the next target. The
//! first to produce a token (a stream's first chunk, or a whole answer) wins;
//! the other is cancelled and not billed.

use super::attempts::{Attempt, Attempts};
use super::failure::{Failure, FlowError};
use super::request::RequestBody;
use crate::config::HedgeDelay;
use crate::facts::Facts;
use crate::gateway::RouteRef;
use crate::plugin::types::HedgeChoice;
use futures_util::future::Either;
use std::future::Future;
use std::time::Duration;

/// Output tokens assumed for the hedge cost estimate when the caller set no limit.
const ASSUMED_OUTPUT_TOKENS: f64 = 1000.0;

/// When to race the next target against a silent first attempt.
#[derive(Clone, Copy, Debug)]
pub struct Hedge {
    /// The fixed delay, also used until a target's p95 is known.
    after: Duration,
    /// Use the target's observed p95 (of time to first token for streams,
    /// of whole answers otherwise).
    observed: bool,
    streaming: bool,
}

impl Hedge {
    /// The hedge for a request: what the policy's plan asked for, else the
    /// route's; none when neither hedges, or when a hedge could cost more
    /// than the route's cap (estimated at the dearest target's prices),
    /// which a policy cannot raise.
    pub fn for_request(route: RouteRef<'_>, facts: &Facts, asked: HedgeChoice) -> Option<Hedge> {
        let config = route.config;
        let (after, observed) = match asked {
            HedgeChoice::Never => return None,
            HedgeChoice::After(after) => (after, false),
            HedgeChoice::Route => (config.hedge_after?, config.hedge_delay == HedgeDelay::TtftP95),
        };
        let output = facts.max_output_tokens.map_or(ASSUMED_OUTPUT_TOKENS, f64::from);
        let dearest = route
            .targets()
            .map(|t| {
                let model = t.model;
                (facts.estimated_prompt_tokens as f64 * model.input_price + output * model.output_price) / 1e6
            })
            .fold(0.0, f64::max);
        (dearest <= config.hedge_max_cost_usd).then_some(Hedge {
            after,
            observed,
            streaming: facts.stream,
        })
    }

    /// How long to wait for `attempt` before hedging it.
    fn delay(&self, attempt: &Attempt<'_>) -> Duration {
        let health = &attempt.to.target.health;
        let observed = match (self.observed, self.streaming) {
            (false, _) => None,
            (true, true) => health.ttft_p95(),
            (true, false) => health.latency_p95(),
        };
        observed.unwrap_or(self.after)
    }
}

/// What [`first_success`] starts on each target: a whole answer, or a
/// stream up to its first chunk.
pub trait Start {
    type Answer;

    fn start<'a>(
        &'a self,
        attempt: &'a Attempt<'_>,
        request: &'a RequestBody,
    ) -> impl Future<Output = Result<Self::Answer, Failure>> + Send + 'a;
}

/// Try the plan's targets until one succeeds: `start` makes one attempt.
/// Stops early when a failure says no other target would do better.
pub async fn first_success<'g, S: Start>(
    attempts: &mut Attempts<'g>,
    request: &RequestBody,
    hedge: Option<Hedge>,
    kind: S,
) -> Result<(Attempt<'g>, S::Answer), FlowError> {
    while let Some(attempt) = attempts.next().await {
        let raced = match hedge {
            // Boxed: a race holds two attempts' futures, and without it in
            // line this future, and every one above it up to the
            // connection's, is a few KiB smaller (hyper moves the
            // connection's for every request).
            Some(hedge) => {
                let delay = hedge.delay(&attempt);
                let first = kind.start(&attempt, request);
                Box::pin(race(attempts, first, delay, request, &kind)).await
            }
            None => Raced::First(kind.start(&attempt, request).await, None),
        };
        let (failure, hedge_stop) = match raced {
            Raced::First(Ok(answer), _) => return Ok((attempt, answer)),
            Raced::First(Err(failure), hedge_stop) => (failure, hedge_stop),
            Raced::Hedge(won, first_failure) => {
                match first_failure {
                    Some(failure) => {
                        let _ = attempts.failed(attempt, failure);
                    }
                    None => attempts.lost_race(attempt),
                }
                return Ok(*won);
            }
        };
        if let Some(stop) = attempts.failed(attempt, failure).or(hedge_stop) {
            return Err(stop);
        }
    }
    Err(attempts.exhausted())
}

/// How a hedged attempt ended.
enum Raced<'g, T> {
    /// The first attempt's outcome (any hedge has been settled), and what
    /// a failed hedge decided if it said stop.
    First(Result<T, Failure>, Option<FlowError>),
    /// The hedge won; the first attempt failed (with this failure) or is to
    /// be cancelled (`None`).
    Hedge(Box<(Attempt<'g>, T)>, Option<Failure>),
}

async fn race<'g, S: Start>(
    attempts: &mut Attempts<'g>,
    first: impl Future<Output = Result<S::Answer, Failure>>,
    delay: Duration,
    request: &RequestBody,
    kind: &S,
) -> Raced<'g, S::Answer> {
    let mut first = std::pin::pin!(first);
    tokio::select! {
        answer = &mut first => return Raced::First(answer, None),
        _ = tokio::time::sleep(delay) => {}
    }
    // The next target may have a backoff or cooldown to wait out; the first
    // attempt keeps running (and may still win) meanwhile.
    let next = tokio::select! {
        answer = &mut first => return Raced::First(answer, None),
        next = attempts.next() => next,
    };
    let Some(hedge) = next else {
        return Raced::First(first.await, None);
    };
    tracing::info!(
        provider = %hedge.to.provider.name,
        model = %hedge.to.target.model,
        delay_ms = delay.as_millis() as u64,
        "hedging a silent first attempt"
    );
    // Settle the race inside a block, so the futures (which borrow the hedge
    // attempt) are gone before the attempt itself is recorded.
    let settled = {
        let second = Box::pin(kind.start(&hedge, request));
        match futures_util::future::select(first, second).await {
            Either::Left((Ok(answer), _)) => Settled::FirstWon(answer),
            Either::Right((Ok(answer), _)) => Settled::HedgeWon(answer, None),
            Either::Left((Err(first_failure), second)) => match second.await {
                Ok(answer) => Settled::HedgeWon(answer, Some(first_failure)),
                Err(hedge_failure) => Settled::HedgeFailed(hedge_failure, Err(first_failure)),
            },
            Either::Right((Err(hedge_failure), first)) => Settled::HedgeFailed(hedge_failure, first.await),
        }
    };
    match settled {
        Settled::FirstWon(answer) => {
            attempts.hedged("first");
            attempts.lost_race(hedge);
            Raced::First(Ok(answer), None)
        }
        Settled::HedgeWon(answer, first_failure) => {
            attempts.hedged("hedge");
            Raced::Hedge(Box::new((hedge, answer)), first_failure)
        }
        Settled::HedgeFailed(hedge_failure, first) => {
            attempts.hedged(if first.is_ok() { "first" } else { "neither" });
            let stop = attempts.failed(hedge, hedge_failure);
            Raced::First(first, stop)
        }
    }
}

enum Settled<T> {
    FirstWon(T),
    HedgeWon(T, Option<Failure>),
    HedgeFailed(Failure, Result<T, Failure>),
}
