//! The attempt loop: follows a plan across targets within the request's
//! deadline, waits out short cooldowns and backoffs, and records what each
//! failure decides ([`super::failure`]); and the steps of one attempt
//! (build and send, read, classify).

use super::Received;
use super::account::record_success;
use super::failure::{Answer, Blame, Failure, FlowError, Next};
use super::plan::PlannedAttempt;
use super::request::RequestBody;
use crate::config::{Model, Provider};
use crate::gateway::{Gateway, RouteRef, RouteTarget, TargetRef};
use crate::health::InFlight;
use crate::ledger::{AttemptRecord, Trail};
use crate::metrics::{AttemptLabels, PluginLabels, RouteOutcomeLabels};
use crate::plugin::types::CircuitState;
use crate::plugin::types::{
    ApiFormat, ErrorClass, InboundResponse, OutboundRequest, ProviderError, RequestContext, Target, Usage,
};
use crate::plugin::{AdapterPlugin, PluginSet, Unavailable};
use crate::upstream::TransportError;
use hyper::body::Incoming;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Cooldown after a 429 that named no wait.
const DEFAULT_RATE_LIMIT_COOLDOWN: Duration = Duration::from_secs(1);
/// First backoff when a plan retries the same target; doubles each time.
const BACKOFF_BASE: Duration = Duration::from_millis(100);

/// One attempt in progress.
pub struct Attempt<'g> {
    /// The target, with its provider, model, upstream client and health.
    pub to: TargetRef<'g>,
    pub adapter: Arc<AdapterPlugin>,
    pub adapter_target: Target,
    /// The request's id, time and format, as the adapter sees them.
    pub context: Arc<RequestContext>,
    pub started: Instant,
    /// This attempt's deadline (its timeout, capped by the request's).
    pub deadline: Instant,
    _in_flight: InFlight<'g>,
}

/// The attempts of one request.
pub struct Attempts<'g> {
    /// The request's context in the caller's format, for an adapter that
    /// speaks it, and in chat for the others.
    context: Arc<RequestContext>,
    chat_context: Arc<RequestContext>,
    /// Why the request cannot be sent as chat, when it cannot.
    untranslatable: Option<String>,
    /// Only chat attempts from now on (continuing a chat stream).
    chat_only: bool,
    /// The request's record in the making.
    trail: Trail,
    /// The prompt estimate, for the cost of an attempt that consumed tokens
    /// without reporting them.
    prompt_estimate: u32,
    streaming: bool,
    gw: &'g Gateway,
    plugins: &'g PluginSet,
    route: RouteRef<'g>,
    plan: std::vec::IntoIter<PlannedAttempt>,
    pub deadline: Instant,
    made: u32,
    last_target: Option<usize>,
    same_target_retries: u32,
    summaries: Vec<String>,
    last: Option<Failure>,
    /// A provider said 429 (or a target was cooling down) in this request.
    rate_limited: bool,
    /// Targets not to try again in this request (they went silent).
    skip: Vec<usize>,
    /// After a context-length failure: only targets with a larger window.
    min_context_window: Option<u32>,
}

impl<'g> Attempts<'g> {
    /// `streaming`: each attempt's deadline is its first-token deadline
    /// (after the first chunk, the stream's idle deadline takes over).
    pub fn new(
        streaming: bool,
        gw: &'g Gateway,
        plugins: &'g PluginSet,
        route: RouteRef<'g>,
        plan: Vec<PlannedAttempt>,
        received: &Received,
    ) -> Self {
        let chat_context = match received.context.format {
            ApiFormat::OpenAiChat => received.context.clone(),
            _ => Arc::new(RequestContext {
                format: ApiFormat::OpenAiChat,
                ..(*received.context).clone()
            }),
        };
        Attempts {
            context: received.context.clone(),
            chat_context,
            untranslatable: received.untranslatable.clone(),
            chat_only: false,
            trail: received.trail.clone(),
            prompt_estimate: received.prompt_estimate,
            streaming,
            gw,
            plugins,
            route,
            plan: plan.into_iter(),
            deadline: received.started + route.config.timeout,
            made: 0,
            last_target: None,
            same_target_retries: 0,
            summaries: Vec::new(),
            last: None,
            rate_limited: false,
            skip: Vec::new(),
            min_context_window: None,
        }
    }

    /// From now on, send only chat: a stream being continued was chat, and
    /// its continuation must be too.
    pub fn chat_only(&mut self) {
        self.chat_only = true;
    }

    /// Attempts sent so far.
    pub fn made(&self) -> u32 {
        self.made
    }

    /// The next attempt to make, after any wait it needs; `None` when the
    /// plan, the attempt budget or the deadline is used up. Cancel-safe: a
    /// call dropped during its wait leaves the plan as it was (a hedge waits
    /// this way while the first attempt may still answer).
    pub async fn next(&mut self) -> Option<Attempt<'g>> {
        let route = self.route.config;
        loop {
            if self.made >= route.max_attempts {
                return None;
            }
            // Taken from the plan only once it is certain to be used or dropped.
            let planned = *self.plan.as_slice().first()?;
            let resolved = self.route.target(planned.target);
            let (target, provider) = (resolved.target, resolved.provider);
            let now = Instant::now();
            if now >= self.deadline {
                return None;
            }
            if self.skip.contains(&planned.target)
                || self
                    .min_context_window
                    .is_some_and(|min| resolved.model.context_window <= min)
            {
                self.plan.next();
                continue;
            }
            if target.health.circuit(now) == CircuitState::Open {
                self.plan.next();
                self.note(provider, target, Failure::CircuitOpen);
                continue;
            }
            let same_target = self.last_target == Some(planned.target);
            let cooldown = target.health.cooldown(now);
            let mut wait = cooldown;
            if same_target {
                wait = wait.max(backoff(self.same_target_retries));
            }
            if !wait.is_zero() {
                if now + wait >= self.deadline || cooldown > route.max_cooldown_wait {
                    self.plan.next();
                    self.note(provider, target, Failure::CoolingDown(wait));
                    continue;
                }
                tokio::time::sleep(wait).await;
            }
            self.plan.next();
            if same_target {
                self.same_target_retries += 1;
            }
            let adapter = match self.plugins.adapter(&provider.adapter) {
                Ok(adapter) => adapter,
                Err(why) => {
                    if why == Unavailable::Quarantined {
                        self.gw
                            .metrics
                            .plugin_failures
                            .get_or_create(&PluginLabels {
                                plugin: provider.adapter.clone(),
                                reason: "quarantined",
                            })
                            .inc();
                    }
                    self.note(
                        provider,
                        target,
                        Failure::AdapterUnavailable(provider.adapter.clone(), why),
                    );
                    continue;
                }
            };
            let native =
                adapter.speaks_natively(self.context.format) && provider.passes_through(self.context.format);
            let context = if !self.chat_only && native {
                self.context.clone()
            } else {
                self.chat_context.clone()
            };
            if context.format == ApiFormat::OpenAiChat
                && let Some(why) = &self.untranslatable
            {
                let failure = Failure::Untranslatable(why.clone());
                self.note(provider, target, failure);
                continue;
            }
            self.made += 1;
            self.last_target = Some(planned.target);
            let started = Instant::now();
            let default = if self.streaming {
                provider.first_token_timeout
            } else {
                provider.timeout
            };
            let timeout = planned.timeout.unwrap_or(default);
            return Some(Attempt {
                to: resolved,
                adapter: adapter.clone(),
                adapter_target: Target {
                    provider: provider.name.clone(),
                    model: target.model.clone(),
                    options: provider.options_json.clone(),
                },
                context,
                started,
                deadline: (started + timeout).min(self.deadline),
                _in_flight: target.health.begin(started),
            });
        }
    }

    /// Record a failed attempt. `Some(error)` means stop and answer with it:
    /// the request itself is at fault and no other target would do better.
    pub fn failed(&mut self, attempt: Attempt<'g>, failure: Failure) -> Option<FlowError> {
        let spent = consumed(&failure);
        self.failed_having(attempt, failure, spent)
    }

    /// A stream that broke after it had begun: as [`Self::failed`], and the
    /// provider spent tokens on it whatever the failure.
    pub fn broke(&mut self, attempt: Attempt<'g>, failure: Failure) -> Option<FlowError> {
        self.failed_having(attempt, failure, true)
    }

    fn failed_having(&mut self, attempt: Attempt<'g>, failure: Failure, spent: bool) -> Option<FlowError> {
        let now = Instant::now();
        let verdict = failure.verdict();
        attempt
            .to
            .target
            .health
            .record(now, verdict.health, now - attempt.started, None);
        if let Failure::Provider(e) = &failure
            && e.class == ErrorClass::RateLimited
        {
            let wait = e
                .retry_after_ms
                .map_or(DEFAULT_RATE_LIMIT_COOLDOWN, Duration::from_millis);
            attempt.to.target.health.rate_limited(now, wait);
        }
        if let Failure::Plugin(e) = &failure {
            self.gw
                .metrics
                .plugin_failures
                .get_or_create(&PluginLabels {
                    plugin: attempt.adapter.name.clone(),
                    reason: e.kind(),
                })
                .inc();
        }
        let label = verdict.label;
        attempt.count(&self.gw.metrics, label);
        let status = match &failure {
            Failure::Provider(e) => e.http_status,
            _ => None,
        };
        self.trail
            .attempt(attempt.record(label, status, None, spent, self.prompt_estimate));
        tracing::warn!(
            route = %self.route.name(),
            provider = %attempt.to.provider.name,
            model = %attempt.to.target.model,
            attempt = self.made,
            outcome = label,
            reason = %failure.summary(),
            "attempt failed"
        );
        match verdict.next {
            Next::NextAttempt => {}
            // A silent target is not asked again; the next one is.
            Next::NotThisTarget => self.skip.push(attempt.to.index),
            Next::LargerWindow => {
                let window = attempt.model().context_window;
                // Only a target the loop would still try counts.
                let now = Instant::now();
                let larger_left = self.plan.as_slice().iter().any(|p| {
                    let target = self.route.target(p.target);
                    target.model.context_window > window
                        && !self.skip.contains(&p.target)
                        && target.target.health.circuit(now) != CircuitState::Open
                });
                if !larger_left || self.made >= self.route.config.max_attempts {
                    return Some(self.stop(&attempt, &failure, verdict.answer));
                }
                self.min_context_window = Some(window);
            }
            Next::Stop => return Some(self.stop(&attempt, &failure, verdict.answer)),
        }
        self.note(attempt.to.provider, attempt.to.target, failure);
        None
    }

    /// The answer for a failure that ends the request: the provider's own
    /// words (the caller's request is at fault), and who said them.
    fn stop(&self, attempt: &Attempt<'_>, failure: &Failure, answer: Answer) -> FlowError {
        let said = match failure {
            Failure::Provider(e) => e.message.clone(),
            other => other.summary(),
        };
        let message = format!(
            "{said} ({}/{})",
            attempt.to.provider.name, attempt.to.target.model
        );
        FlowError::new(answer, message)
    }

    /// A hedge was settled; `winner` is `first`, `hedge` or `neither`.
    pub fn hedged(&self, winner: &'static str) {
        self.count_route(&self.gw.metrics.hedges, winner);
    }

    /// A stream broke after the caller had part of it; `outcome` is
    /// `continued` or `error`.
    pub fn stream_broke(&self, outcome: &'static str) {
        self.count_route(&self.gw.metrics.stream_breaks, outcome);
    }

    fn count_route(&self, family: &Family<RouteOutcomeLabels, Counter>, outcome: &'static str) {
        family
            .get_or_create(&RouteOutcomeLabels {
                route: self.route.name().to_string(),
                outcome,
            })
            .inc();
    }

    /// A continuation whose new answer did not start with what the caller
    /// already had: dropped, not the target's fault, not billed.
    pub fn diverged(&mut self, attempt: Attempt<'g>) {
        attempt.count(&self.gw.metrics, "diverged");
        self.consumed(&attempt, "diverged", Some(200));
        tracing::info!(provider = %attempt.to.provider.name, model = %attempt.to.target.model, "continuation diverged from the delivered answer; dropped");
    }

    /// The caller went away mid-answer: not the target's fault, not billed.
    pub fn cancelled(&mut self, attempt: Attempt<'g>) {
        attempt.count(&self.gw.metrics, "cancelled");
        self.consumed(&attempt, "cancelled", Some(200));
        tracing::info!(provider = %attempt.to.provider.name, model = %attempt.to.target.model, "caller went away; upstream stream dropped");
    }

    /// A hedge race's loser, stopped before it answered: not the target's
    /// fault, not billed to the caller; it had the prompt, so its cost is
    /// estimated. No status: it may not have had one yet.
    pub fn lost_race(&mut self, attempt: Attempt<'g>) {
        attempt.count(&self.gw.metrics, "cancelled");
        self.consumed(&attempt, "cancelled", None);
    }

    /// The server's shutdown grace period ended mid-stream: not billed.
    pub fn shut_down(&mut self, attempt: Attempt<'g>) {
        attempt.count(&self.gw.metrics, "shutdown");
        self.consumed(&attempt, "shutdown", Some(200));
        tracing::warn!(provider = %attempt.to.provider.name, model = %attempt.to.target.model, "stream ended by shutdown");
    }

    /// An attempt that ended without an answer but, having reached the
    /// provider, consumed tokens.
    fn consumed(&self, attempt: &Attempt<'g>, outcome: &'static str, http_status: Option<u16>) {
        let record = attempt.record(outcome, http_status, None, true, self.prompt_estimate);
        self.trail.attempt(record);
    }

    /// The attempt that answered: its health, metrics and log line, and the
    /// request's record. Returns what it cost (what the caller is charged).
    pub fn succeeded(
        &self,
        attempt: &Attempt<'g>,
        usage: Option<Usage>,
        answered_model: Option<String>,
        ttft: Option<Duration>,
    ) -> f64 {
        record_success(self.gw, attempt, usage, answered_model.as_deref(), ttft);
        let mut record = attempt.record("success", Some(200), usage, true, self.prompt_estimate);
        record.ttft_ms = ttft.map(|t| t.as_millis() as u64);
        let cost = record.cost_usd;
        self.trail.answered(record, answered_model);
        cost
    }

    fn note(&mut self, provider: &Provider, target: &RouteTarget, failure: Failure) {
        self.summaries.push(format!(
            "{}/{}: {}",
            provider.name,
            target.model,
            failure.summary()
        ));
        let verdict = failure.verdict();
        self.rate_limited |= verdict.answer == Answer::RateLimited;
        // A target that cannot take this request says nothing of the ones
        // that failed it: it is the answer only when nothing else was said.
        let cannot_take = verdict.label == "untranslatable";
        if !(cannot_take && self.last.is_some()) {
            self.last = Some(failure);
        }
    }

    /// The plan is used up without an answer: the error that says so.
    pub fn exhausted(&self) -> FlowError {
        let route = self.route.config;
        let message = if self.summaries.is_empty() {
            format!(
                "No provider of `{}` could be tried before the deadline.",
                route.name
            )
        } else {
            format!(
                "No provider of `{}` could answer after {} attempt(s): {}",
                route.name,
                self.made,
                self.summaries.join("; ")
            )
        };
        let answer = match self.last.as_ref().map(Failure::verdict) {
            None => Answer::GatewayTimeout,
            // The last word was the gateway's own state (an open circuit):
            // if a target is only cooling down, saying when to retry helps more.
            Some(last) if last.blame == Blame::Gateway && self.rate_limited => Answer::RateLimited,
            Some(last) => last.answer,
        };
        let retry_after = (answer == Answer::RateLimited).then(|| {
            let now = Instant::now();
            self.route
                .targets()
                .map(|t| t.target.health.cooldown(now))
                .filter(|d| !d.is_zero())
                .min()
                .unwrap_or(DEFAULT_RATE_LIMIT_COOLDOWN)
        });
        FlowError {
            answer,
            message,
            retry_after,
        }
    }
}

/// Whether a failed attempt made the provider spend tokens: it got the
/// request and did not refuse it (a timeout after sending, a stream that
/// broke, an answer we could not read).
fn consumed(failure: &Failure) -> bool {
    match failure {
        Failure::Transport(TransportError::Timeout) | Failure::Stream(_) | Failure::Malformed(_) => true,
        Failure::Provider(_)
        | Failure::Transport(_)
        | Failure::Plugin(_)
        | Failure::Untranslatable(_)
        | Failure::AdapterUnavailable(..)
        | Failure::CoolingDown(_)
        | Failure::CircuitOpen => false,
    }
}

/// Exponential backoff with full jitter in [base/2, base].
fn backoff(retry: u32) -> Duration {
    let base = BACKOFF_BASE.saturating_mul(1 << retry.min(6));
    let jitter = rand::random::<f64>() * 0.5 + 0.5;
    base.mul_f64(jitter)
}

impl Attempt<'_> {
    /// The target model's settings (prices, context window, capabilities).
    pub fn model(&self) -> &Model {
        self.to.model
    }

    /// Build the provider request with the adapter and send it; resolves
    /// with the response head.
    pub async fn send(&self, request: &RequestBody) -> Result<http::Response<Incoming>, Failure> {
        let body = request
            .bytes_for(self.context.format, &self.to.target.model)
            .map_err(Failure::Untranslatable)?;
        let mut outbound = self
            .adapter
            .build_request(body, &self.adapter_target, &self.context)
            .await
            .map_err(Failure::Plugin)?;
        request.merge_headers(self.context.format, &mut outbound.headers);
        self.send_built(&outbound).await
    }

    /// Send a request the adapter built; resolves with the response head.
    pub async fn send_built(&self, outbound: &OutboundRequest) -> Result<http::Response<Incoming>, Failure> {
        let sent = self
            .to
            .upstream
            .send(outbound, self.to.provider.credential.as_ref());
        match tokio::time::timeout_at(self.deadline, sent).await {
            Err(_) => Err(Failure::Transport(TransportError::Timeout)),
            Ok(response) => response.map_err(Failure::Transport),
        }
    }

    /// Read a whole response, bounded in size and by the attempt's deadline.
    pub async fn read(&self, response: http::Response<Incoming>) -> Result<InboundResponse, Failure> {
        let (parts, body) = response.into_parts();
        let bytes = self
            .to
            .upstream
            .read_body(body, self.deadline)
            .await
            .map_err(Failure::Transport)?;
        Ok(InboundResponse {
            status: parts.status.as_u16(),
            headers: self.to.upstream.header_lines(&parts.headers),
            body: bytes.to_vec(),
        })
    }

    /// Read a whole response: a success as it came, anything else as the
    /// adapter classifies it.
    pub async fn read_success(&self, response: http::Response<Incoming>) -> Result<InboundResponse, Failure> {
        let inbound = self.read(response).await?;
        if !(200..300).contains(&inbound.status) {
            return Err(self.classify(&inbound).await);
        }
        Ok(inbound)
    }

    /// The adapter's verdict on a failed response.
    pub async fn classify(&self, inbound: &InboundResponse) -> Failure {
        match self.adapter.classify_error(inbound, &self.adapter_target).await {
            Ok(error) => Failure::Provider(ProviderError {
                http_status: Some(inbound.status),
                ..error
            }),
            Err(error) => Failure::Plugin(error),
        }
    }

    /// The ledger's record of this attempt. Its cost is from `usage`, or,
    /// when it `consumed` tokens without reporting them, estimated from the
    /// prompt (the output it may have produced is not known).
    pub fn record(
        &self,
        outcome: &'static str,
        http_status: Option<u16>,
        usage: Option<Usage>,
        consumed: bool,
        prompt_estimate: u32,
    ) -> AttemptRecord {
        let prices = &self.to.model.prices;
        let (cost_usd, estimated) = match usage {
            Some(usage) => (prices.cost(&usage), false),
            None if consumed => {
                let guess = Usage {
                    prompt_tokens: prompt_estimate,
                    ..Usage::default()
                };
                (prices.cost(&guess), true)
            }
            None => (0.0, false),
        };
        AttemptRecord {
            provider: self.to.target.names.provider,
            model: self.to.target.names.model,
            outcome,
            http_status,
            latency_ms: self.started.elapsed().as_millis() as u64,
            ttft_ms: None,
            usage,
            cost_usd,
            estimated,
        }
    }

    pub fn count(&self, metrics: &crate::metrics::Metrics, outcome: &str) {
        metrics
            .attempts
            .get_or_create(&AttemptLabels {
                provider: self.to.provider.name.clone(),
                model: self.to.target.model.clone(),
                outcome: outcome.to_string(),
            })
            .inc();
    }
}
