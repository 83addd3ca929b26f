//! The attempt loop's timing rules, asserted exactly in paused time: a
//! scripted fake takes the place of "send this attempt" (a socket would
//! let paused time run on while a task waits on it), so retries, backoff,
//! cooldowns, deadlines and hedging are checked to the millisecond.

use super::Received;
use super::attempts::{Attempt, Attempts};
use super::failure::{Answer, Failure};
use super::hedge::{Hedge, Start, first_success};
use super::plan::{self, PlannedAttempt};
use super::request::RequestBody;
use crate::config::Config;
use crate::facts::Facts;
use crate::gateway::{Gateway, Shared};
use crate::ledger::{Ledger, Trail};
use crate::metrics::Metrics;
use crate::plugin::types::{ApiFormat, ErrorClass, HedgeChoice, ProviderError, RequestContext};
use crate::plugin::{CallLimits, LimitTable, PluginRuntime, PluginSet, Registry, SandboxLimits};
use crate::upstream::TransportError;
use serde_json::{Map, json};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

const OPENAI: &[(&str, &[u8])] = &[(
    "openai",
    include_bytes!(concat!(
        env!("SWITCHBOARD_WASM_DIR"),
        "/switchboard_adapter_openai.wasm"
    )),
)];

/// A policy that plans every candidate it is offered, last first.
const MISBEHAVE: &[(&str, &[u8])] = &[(
    "misbehave",
    include_bytes!(concat!(
        env!("SWITCHBOARD_WASM_DIR"),
        "/switchboard_test_misbehave.wasm"
    )),
)];

/// What one attempt on a provider does: answer or fail, after a delay.
#[derive(Clone)]
enum Step {
    Answer(u64),
    Fail(u64, fn() -> Failure),
    /// Never answers: its deadline ends it.
    Hang,
}

fn provider_error(class: ErrorClass, retry_after_ms: Option<u64>) -> Failure {
    Failure::Provider(ProviderError {
        class,
        message: "scripted".into(),
        retry_after_ms,
        http_status: None,
    })
}

/// The fake "send this attempt": each provider's steps in order, and when
/// each attempt started (milliseconds after the test began).
#[derive(Clone)]
struct Script {
    steps: Arc<Mutex<HashMap<String, VecDeque<Step>>>>,
    started: Arc<Mutex<Vec<(String, u64)>>>,
    epoch: Instant,
}

impl Script {
    fn new(steps: &[(&str, Vec<Step>)]) -> Script {
        Script {
            steps: Arc::new(Mutex::new(
                steps
                    .iter()
                    .map(|(p, s)| (p.to_string(), s.iter().cloned().collect()))
                    .collect(),
            )),
            started: Arc::default(),
            epoch: Instant::now(),
        }
    }

    fn ms(&self) -> u64 {
        (Instant::now() - self.epoch).as_millis() as u64
    }

    fn started(&self) -> Vec<(String, u64)> {
        self.started.lock().unwrap().clone()
    }
}

impl Start for Script {
    type Answer = (String, u64);

    fn start<'a>(
        &'a self,
        attempt: &'a Attempt<'_>,
        _request: &'a RequestBody,
    ) -> impl Future<Output = Result<Self::Answer, Failure>> + Send + 'a {
        let provider = attempt.to.provider.name.clone();
        self.started.lock().unwrap().push((provider.clone(), self.ms()));
        let step = self
            .steps
            .lock()
            .unwrap()
            .get_mut(&provider)
            .and_then(VecDeque::pop_front);
        let deadline = attempt.deadline;
        async move {
            let run = async {
                match step.unwrap_or(Step::Hang) {
                    Step::Answer(ms) => {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        Ok((provider.clone(), self.ms()))
                    }
                    Step::Fail(ms, failure) => {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        Err(failure())
                    }
                    Step::Hang => std::future::pending().await,
                }
            };
            // As a real attempt: bounded by its deadline.
            tokio::time::timeout_at(deadline, run)
                .await
                .unwrap_or(Err(Failure::Transport(TransportError::Timeout)))
        }
    }
}

/// A gateway with providers `a` and `b` (attempt timeout 1 s) and route
/// `chat` over both; `route` is appended to the route.
async fn gateway(route: &str) -> (Gateway, Arc<PluginSet>) {
    build(route, "[providers.b.models.m]").await
}

/// As [`gateway`], with `b`'s model table given.
async fn gateway_with_models(b_model: &str) -> (Gateway, Arc<PluginSet>) {
    build("", b_model).await
}

async fn build(route: &str, b_model: &str) -> (Gateway, Arc<PluginSet>) {
    let text = format!(
        r#"
[providers.a]
adapter = "openai"
base_url = "http://127.0.0.1:9"
timeout_ms = 1000
[providers.a.models.m]
[providers.b]
adapter = "openai"
base_url = "http://127.0.0.1:9"
timeout_ms = 1000
{b_model}
[routes.chat]
targets = ["a/m", "b/m"]
{route}
"#
    );
    let config = Config::parse(&text, std::path::Path::new("/tmp/timing.toml"), &|_| None).unwrap();
    let runtime = PluginRuntime::new(SandboxLimits {
        memory_bytes: 64 << 20,
        total_memory_bytes: 256 << 20,
        max_instances: 8,
        compile_cache: Some(concat!(env!("OUT_DIR"), "/test-wasm-cache").into()),
    })
    .unwrap();
    let limits = CallLimits {
        timeout: Duration::from_secs(10),
        timeout_per_mib: Duration::ZERO,
        max_concurrent: 8,
        max_slow: 8,
        quarantine_after: 0,
        reuse: true,
    };
    let table = LimitTable {
        adapter: limits,
        policy: limits,
        overrides: HashMap::new(),
    };
    let registry = Arc::new(Registry::new(
        Arc::new(runtime),
        OPENAI,
        MISBEHAVE,
        table,
        Box::new(|_, _| {}),
    ));
    let none = std::path::Path::new("/nonexistent-switchboard-test-dir");
    let _ = registry.load_all(none, none).await;
    let plugins = registry.snapshot();
    assert!(plugins.adapter("openai").is_ok(), "the openai adapter loaded");
    let gw = Gateway::new(
        config,
        registry,
        Arc::new(Metrics::default()),
        Shared::local(Ledger::off()),
        None,
        None,
    )
    .unwrap();
    (gw, plugins)
}

fn plan(targets: &[usize]) -> Vec<PlannedAttempt> {
    targets
        .iter()
        .map(|&target| PlannedAttempt {
            target,
            timeout: None,
        })
        .collect()
}

fn hedge(gw: &Gateway) -> Option<Hedge> {
    planned_hedge(gw, HedgeChoice::Route)
}

/// The hedge when the policy's plan asked for `asked`.
fn planned_hedge(gw: &Gateway, asked: HedgeChoice) -> Option<Hedge> {
    Hedge::for_request(gw.route(0), &facts(), asked)
}

fn facts() -> Facts {
    let body = json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]});
    Facts::derive(body.as_object().unwrap(), &http::HeaderMap::new(), 0)
}

/// A request that arrives now.
fn received() -> Received {
    Received {
        context: Arc::new(RequestContext {
            id: "test".into(),
            created: 0,
            format: ApiFormat::OpenAiChat,
        }),
        started: Instant::now(),
        trail: Trail::detached(),
        prompt_estimate: 10,
        untranslatable: None,
    }
}

async fn run(
    gw: &Gateway,
    plugins: &PluginSet,
    targets: &[usize],
    script: &Script,
    hedge: Option<Hedge>,
) -> Result<(String, u64), Answer> {
    let mut attempts = Attempts::new(false, gw, plugins, gw.route(0), plan(targets), &received());
    let request = RequestBody::rewritten(Map::new());
    first_success(&mut attempts, &request, hedge, script.clone())
        .await
        .map(|(_, answer)| answer)
        .map_err(|e| e.answer)
}

fn started(list: &[(&str, u64)]) -> Vec<(String, u64)> {
    list.iter().map(|(p, ms)| (p.to_string(), *ms)).collect()
}

#[tokio::test(start_paused = true)]
async fn a_silent_target_ends_at_its_deadline_and_is_not_asked_again() {
    let (gw, plugins) = gateway("max_attempts = 3").await;
    let script = Script::new(&[
        ("a", vec![Step::Hang, Step::Answer(0)]),
        ("b", vec![Step::Answer(50)]),
    ]);
    let answer = run(&gw, &plugins, &[0, 0, 1], &script, None).await;
    assert_eq!(answer, Ok(("b".into(), 1050)));
    assert_eq!(
        script.started(),
        started(&[("a", 0), ("b", 1000)]),
        "the repeat of a is skipped"
    );
}

#[tokio::test(start_paused = true)]
async fn the_route_deadline_caps_every_attempt() {
    let (gw, plugins) = gateway("timeout_ms = 400").await;
    let script = Script::new(&[("a", vec![Step::Hang]), ("b", vec![Step::Answer(0)])]);
    let started_at = Instant::now();
    let answer = run(&gw, &plugins, &[0, 1], &script, None).await;
    assert_eq!(answer, Err(Answer::GatewayTimeout));
    assert_eq!(Instant::now() - started_at, Duration::from_millis(400));
    assert_eq!(script.started(), started(&[("a", 0)]), "no time was left for b");
}

#[tokio::test(start_paused = true)]
async fn a_short_cooldown_on_a_repeated_target_is_waited_out_exactly() {
    let (gw, plugins) = gateway("").await;
    let limited = || provider_error(ErrorClass::RateLimited, Some(300));
    let script = Script::new(&[("a", vec![Step::Fail(10, limited), Step::Answer(5)])]);
    let answer = run(&gw, &plugins, &[0, 0], &script, None).await;
    assert_eq!(answer, Ok(("a".into(), 315)));
    assert_eq!(script.started(), started(&[("a", 0), ("a", 310)]));
}

#[tokio::test(start_paused = true)]
async fn a_cooldown_longer_than_max_cooldown_wait_is_skipped() {
    let (gw, plugins) = gateway("max_cooldown_wait_ms = 200").await;
    let limited = || provider_error(ErrorClass::RateLimited, Some(300));
    let script = Script::new(&[("a", vec![Step::Fail(10, limited)]), ("b", vec![Step::Answer(5)])]);
    let answer = run(&gw, &plugins, &[0, 0, 1], &script, None).await;
    assert_eq!(answer, Ok(("b".into(), 15)));
    assert_eq!(script.started(), started(&[("a", 0), ("b", 10)]));
}

#[tokio::test(start_paused = true)]
async fn a_retry_on_the_same_target_backs_off_between_half_and_all_of_100_ms() {
    let (gw, plugins) = gateway("").await;
    let server = || provider_error(ErrorClass::Server, None);
    let script = Script::new(&[("a", vec![Step::Fail(0, server), Step::Answer(0)])]);
    let answer = run(&gw, &plugins, &[0, 0], &script, None).await;
    let (_, at) = answer.unwrap();
    assert!((50..=100).contains(&at), "backoff with jitter: {at} ms");
}

#[tokio::test(start_paused = true)]
async fn a_bad_request_stops_at_once() {
    let (gw, plugins) = gateway("").await;
    let bad = || provider_error(ErrorClass::BadRequest, None);
    let script = Script::new(&[("a", vec![Step::Fail(20, bad)]), ("b", vec![Step::Answer(0)])]);
    assert_eq!(
        run(&gw, &plugins, &[0, 1], &script, None).await,
        Err(Answer::BadRequest)
    );
    assert_eq!(script.started(), started(&[("a", 0)]));
}

#[tokio::test(start_paused = true)]
async fn a_hedge_starts_exactly_at_its_delay_and_the_faster_answer_wins() {
    let (gw, plugins) = gateway("hedge_after_ms = 200").await;
    let script = Script::new(&[("a", vec![Step::Answer(1000)]), ("b", vec![Step::Answer(100)])]);
    let answer = run(&gw, &plugins, &[0, 1], &script, hedge(&gw)).await;
    assert_eq!(answer, Ok(("b".into(), 300)));
    assert_eq!(script.started(), started(&[("a", 0), ("b", 200)]));
}

#[tokio::test(start_paused = true)]
async fn a_plan_may_ask_for_a_hedge_where_the_route_has_none_or_turn_the_routes_off() {
    let (gw, plugins) = gateway("").await;
    let script = Script::new(&[("a", vec![Step::Answer(1000)]), ("b", vec![Step::Answer(100)])]);
    let asked = planned_hedge(&gw, HedgeChoice::After(Duration::from_millis(350)));
    let answer = run(&gw, &plugins, &[0, 1], &script, asked).await;
    assert_eq!(answer, Ok(("b".into(), 450)));
    assert_eq!(script.started(), started(&[("a", 0), ("b", 350)]));

    let (gw, plugins) = gateway("hedge_after_ms = 200").await;
    assert!(planned_hedge(&gw, HedgeChoice::Never).is_none());
    let script = Script::new(&[("a", vec![Step::Answer(1000)]), ("b", vec![Step::Answer(100)])]);
    let answer = run(
        &gw,
        &plugins,
        &[0, 1],
        &script,
        planned_hedge(&gw, HedgeChoice::Never),
    )
    .await;
    assert_eq!(answer, Ok(("a".into(), 1000)), "never: no race");
    assert_eq!(script.started(), started(&[("a", 0)]));
}

#[tokio::test(start_paused = true)]
async fn a_plan_cannot_hedge_past_the_routes_cost_cap() {
    // About 0.01 USD on `b`: 1000 assumed output tokens at $10 per million.
    let text = "hedge_max_cost_usd = 0.00001";
    let (gw, _) = build(text, "[providers.b.models.m]\noutput_price = 10.0").await;
    let asked = HedgeChoice::After(Duration::from_millis(10));
    assert!(planned_hedge(&gw, asked).is_none());
    let (gw, _) = build("", "[providers.b.models.m]\noutput_price = 10.0").await;
    assert!(planned_hedge(&gw, asked).is_some(), "the default cap allows it");
}

#[tokio::test(start_paused = true)]
async fn the_policy_is_offered_only_targets_that_can_be_tried_now() {
    let (gw, plugins) = gateway("policy = \"misbehave\"").await;
    // The misbehaving policy plans whatever it is offered, last first.
    let planned = plan::plan(&gw, &plugins, gw.route(0), &facts(), Instant::now())
        .await
        .unwrap();
    assert_eq!(targets_of(&planned), [1, 0]);
    gw.route(0)
        .target(1)
        .target
        .health
        .rate_limited(Instant::now(), Duration::from_secs(30));
    let planned = plan::plan(&gw, &plugins, gw.route(0), &facts(), Instant::now())
        .await
        .unwrap();
    assert_eq!(targets_of(&planned), [0], "the cooling target was not offered");
    gw.route(0)
        .target(0)
        .target
        .health
        .rate_limited(Instant::now(), Duration::from_secs(10));
    let started = Instant::now();
    let error = plan::plan(&gw, &plugins, gw.route(0), &facts(), started)
        .await
        .unwrap_err();
    assert_eq!(error.answer, Answer::RateLimited);
    assert_eq!(
        error.retry_after,
        Some(Duration::from_secs(10)),
        "the shortest cooldown"
    );
    assert_eq!(
        Instant::now(),
        started,
        "beyond max_cooldown_wait_ms: no wait, no policy call"
    );
}

fn targets_of(planned: &plan::Planned) -> Vec<usize> {
    planned.attempts.iter().map(|a| a.target).collect()
}

#[tokio::test(start_paused = true)]
async fn no_hedge_when_the_first_answers_before_the_delay() {
    let (gw, plugins) = gateway("hedge_after_ms = 200").await;
    let script = Script::new(&[("a", vec![Step::Answer(150)]), ("b", vec![Step::Answer(0)])]);
    let answer = run(&gw, &plugins, &[0, 1], &script, hedge(&gw)).await;
    assert_eq!(answer, Ok(("a".into(), 150)));
    assert_eq!(script.started(), started(&[("a", 0)]));
}

#[tokio::test(start_paused = true)]
async fn a_context_length_failure_stops_when_no_larger_target_is_left_to_try() {
    // `b` has the larger window but went silent first, so it is not asked
    // again: the context-length error is the answer, naming who said it.
    let text = "[providers.b.models.m]\ncontext_window = 200000";
    let (gw, plugins) = gateway_with_models(text).await;
    let long = || provider_error(ErrorClass::ContextLength, None);
    let script = Script::new(&[("b", vec![Step::Hang]), ("a", vec![Step::Fail(5, long)])]);
    let mut attempts = Attempts::new(false, &gw, &plugins, gw.route(0), plan(&[1, 0, 1]), &received());
    let error = first_success(
        &mut attempts,
        &RequestBody::rewritten(Map::new()),
        None,
        script.clone(),
    )
    .await
    .err()
    .unwrap();
    assert_eq!(error.answer, Answer::ContextLength);
    assert_eq!(
        error.message, "scripted (a/m)",
        "the provider's words, and who said them"
    );
    assert_eq!(script.started(), started(&[("b", 0), ("a", 1000)]));
}

#[tokio::test(start_paused = true)]
async fn a_hedge_refused_as_a_bad_request_is_the_answer_when_the_first_fails_too() {
    let (gw, plugins) = gateway("hedge_after_ms = 200").await;
    let bad = || provider_error(ErrorClass::BadRequest, None);
    let script = Script::new(&[("a", vec![Step::Hang]), ("b", vec![Step::Fail(50, bad)])]);
    let answer = run(&gw, &plugins, &[0, 1], &script, hedge(&gw)).await;
    // The first keeps its chance until its deadline; then the stop stands.
    assert_eq!(answer, Err(Answer::BadRequest));
    assert_eq!(script.started(), started(&[("a", 0), ("b", 200)]));
}

#[tokio::test(start_paused = true)]
async fn a_429_then_an_open_circuit_answers_429_with_when_to_retry() {
    let (gw, plugins) = gateway("").await;
    let health = &gw.route(0).target(1).target.health;
    for _ in 0..5 {
        health.record(
            Instant::now(),
            crate::health::Outcome::Failure,
            Duration::ZERO,
            None,
        );
    }
    let limited = || provider_error(ErrorClass::RateLimited, Some(5_000));
    let script = Script::new(&[("a", vec![Step::Fail(0, limited)]), ("b", vec![Step::Answer(0)])]);
    let mut attempts = Attempts::new(false, &gw, &plugins, gw.route(0), plan(&[0, 1]), &received());
    let error = first_success(
        &mut attempts,
        &RequestBody::rewritten(Map::new()),
        None,
        script.clone(),
    )
    .await
    .err()
    .unwrap();
    assert_eq!(error.answer, Answer::RateLimited);
    assert_eq!(error.retry_after, Some(Duration::from_secs(5)));
    assert_eq!(script.started(), started(&[("a", 0)]), "b's circuit is open");
}
