//! Serving one model request, whichever API it came in: auth, body,
//! route, facts, admission, plan, budgets, then a whole answer or a stream.
//! Each inbound API parses its own body first and frames the outcome after.

use super::auth;
use super::body::read_within;
use super::{ApiError, RequestIds, admission};
use crate::access::admit::{self, Rates};
use crate::facts::Facts;
use crate::flow::hedge::Hedge;
use crate::flow::request::RequestBody;
use crate::flow::stream::Streaming;
use crate::flow::whole::Answered;
use crate::flow::{Received, plan, stream, whole};
use crate::gateway::{Gateway, RouteRef};
use crate::ledger::{self, Trail};
use crate::lifecycle::Lifecycle;
use crate::plugin::types::{ApiFormat, RequestContext, Usage};
use bytes::Bytes;
use hyper::body::Incoming;
use std::sync::Arc;
use tokio::time::Instant;

/// A request as its inbound API parsed it.
pub struct Parsed {
    /// The model (route or alias) the caller asked for.
    pub model: String,
    pub body: RequestBody,
    /// An embeddings request (else a chat request in some API's form).
    pub embeddings: bool,
}

/// How a request was answered, for its API to frame.
pub enum Outcome {
    Whole(Answered),
    Stream(Streaming),
}

/// An answered request: its outcome, the response headers every answer
/// carries (a limited key's `x-ratelimit-*`), and its id and time.
pub struct Served {
    pub outcome: Outcome,
    pub headers: Vec<(&'static str, String)>,
    pub id: String,
    /// When it arrived, in whole seconds since the Unix epoch.
    pub created: u64,
    /// The gateway's estimate of its prompt tokens.
    pub prompt_estimate: u32,
}

/// The endpoints that serve model requests, as the ledger records them.
const ENDPOINTS: [&str; 4] = [
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/messages",
    "/v1/responses",
];

/// Serve one request in `format`, whose body `parse` reads; returns the
/// route it resolved to (for metrics).
pub async fn serve(
    gw: &Arc<Gateway>,
    lifecycle: &Lifecycle,
    mut request: http::Request<Incoming>,
    format: ApiFormat,
    parse: impl FnOnce(&Bytes, &http::HeaderMap) -> Result<Parsed, ApiError>,
) -> (Option<usize>, Result<Served, ApiError>) {
    let started = Instant::now();
    let ids = request
        .extensions_mut()
        .remove::<RequestIds>()
        .unwrap_or_else(|| RequestIds::new(None));
    let trail = Trail::begin(
        gw.shared.ledger.clone(),
        ids.gateway.clone(),
        ids.caller,
        ledger::unix_ms(std::time::SystemTime::now()),
        started,
    );
    let path = request.uri().path();
    trail.note(|r| r.endpoint = ENDPOINTS.into_iter().find(|e| *e == path).unwrap_or_default());
    let mut route = None;
    let arrived = Arrived {
        id: &ids.gateway,
        trail: &trail,
        started,
        format,
    };
    let result = admit_and_answer(gw, lifecycle, request, arrived, parse, &mut route).await;
    match &result {
        Ok(_) => trail.status(200, None),
        Err(error) => trail.status(
            error.status.as_u16(),
            Some(error.code.unwrap_or(error.kind).to_string()),
        ),
    }
    (route, result)
}

/// What is known of a request from its arrival.
struct Arrived<'a> {
    id: &'a str,
    trail: &'a Trail,
    started: Instant,
    format: ApiFormat,
}

/// Now, in whole seconds since the Unix epoch: a translated answer's `created`.
fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn admit_and_answer(
    gw: &Arc<Gateway>,
    lifecycle: &Lifecycle,
    request: http::Request<Incoming>,
    arrived: Arrived<'_>,
    parse: impl FnOnce(&Bytes, &http::HeaderMap) -> Result<Parsed, ApiError>,
    resolved: &mut Option<usize>,
) -> Result<Served, ApiError> {
    let trail = arrived.trail;
    let keyring = gw.shared.keyring.current();
    let caller = auth::authenticate(&gw.config.keys, &keyring, request.headers())?;
    if let Some(name) = caller.key_name() {
        tracing::Span::current().record("key", name);
    }
    if let Some(name) = caller.file_key_name() {
        gw.metrics
            .key_requests
            .get_or_create(&crate::metrics::KeyLabels {
                key: name.to_string(),
            })
            .inc();
    }
    trail.note(|r| {
        r.key = caller.key_name().map(str::to_string);
        r.team = caller.key().and_then(|k| k.team.clone());
    });
    let (parts, body) = request.into_parts();
    let bytes = read_within(&gw.config.server, &parts.headers, body).await?;
    let Parsed {
        model,
        body,
        embeddings,
    } = parse(&bytes, &parts.headers)?;
    let route = gw
        .route_named(&model)
        .ok_or_else(|| ApiError::unknown_model(&model))?;
    *resolved = Some(route.index);
    trail.note(|r| r.route = Some(route.name()));
    caller.may_use(route.config)?;

    let mut facts = if embeddings {
        Facts::for_embeddings(body.facts_source(), &parts.headers)
    } else {
        Facts::derive(
            body.facts_source(),
            &parts.headers,
            route.config.facts_excerpt_chars,
        )
    };
    facts.format = arrived.format;
    trail.note(|r| {
        r.stream = facts.stream;
        r.tags = facts.tags.clone();
    });

    // Admission: the key's rates now, its budgets once the plan says
    // what the request could cost at worst.
    let state = &gw.shared.state;
    let mut settlements = Vec::new();
    let (rates, budgets) = match caller.key() {
        None => (Rates::default(), Vec::new()),
        Some(key) => {
            let tokens = facts
                .estimated_prompt_tokens
                .saturating_add(facts.max_output_tokens.unwrap_or(0));
            let rates = admit::take_rates(&**state, key, tokens, &mut settlements)
                .map_err(|(refusal, rates)| admission::refused(&gw.metrics, refusal, &key.name, &rates))?;
            let team = key.team.as_ref().and_then(|t| gw.team_budget(&keyring, t));
            (rates, admit::budgets(key, team))
        }
    };
    trail.settle_with(state.clone(), std::mem::take(&mut settlements));
    let now_ms = ledger::unix_ms(std::time::SystemTime::now());
    facts.budget_remaining = admit::remaining(&**state, &budgets, now_ms);
    let headers = admission::rate_headers(&rates);
    let created = unix_seconds();
    let id = arrived.id.to_string();
    let prompt_estimate = facts.estimated_prompt_tokens;
    let asked = Asked {
        route,
        body,
        embeddings,
        facts,
        budgets,
        created,
        arrived,
    };
    match answer(gw, lifecycle, asked).await {
        Ok(outcome) => Ok(Served {
            outcome,
            headers,
            id,
            created,
            prompt_estimate,
        }),
        Err(mut error) => {
            error.headers.extend(headers);
            Err(error)
        }
    }
}

/// An admitted request, ready to plan and answer.
struct Asked<'a> {
    route: RouteRef<'a>,
    body: RequestBody,
    embeddings: bool,
    facts: Facts,
    budgets: Vec<admit::Applies>,
    created: u64,
    arrived: Arrived<'a>,
}

/// Plan, reserve the worst case against the budgets, and answer.
async fn answer(gw: &Arc<Gateway>, lifecycle: &Lifecycle, asked: Asked<'_>) -> Result<Outcome, ApiError> {
    let Asked {
        route,
        body,
        embeddings,
        facts,
        budgets,
        created,
        arrived,
    } = asked;
    let trail = arrived.trail;
    let received = Received {
        context: Arc::new(RequestContext {
            id: arrived.id.to_string(),
            created,
            format: arrived.format,
        }),
        started: arrived.started,
        trail: trail.clone(),
        prompt_estimate: facts.estimated_prompt_tokens,
        untranslatable: body.untranslatable().map(str::to_string),
    };
    // Requests finish on the plugin versions they started with.
    let plugins = gw.registry.snapshot();
    let planned = plan::plan(gw, &plugins, route, &facts, arrived.started).await?;
    trail.note(|r| {
        r.decision = planned.decision.clone();
        r.plan = planned
            .attempts
            .iter()
            .map(|a| route.target(a.target).target.names.label)
            .collect();
    });
    if !budgets.is_empty() {
        let worst = worst_case(route, &planned, &facts, gw.config.budgets.assumed_output_tokens);
        let now_ms = ledger::unix_ms(std::time::SystemTime::now());
        let mut settlements = Vec::new();
        let key = trail.key_name();
        admit::reserve(&*gw.shared.state, &budgets, worst, now_ms, &mut settlements)
            .map_err(|refusal| admission::refused(&gw.metrics, refusal, &key, &Rates::default()))?;
        trail.settle_with(gw.shared.state.clone(), settlements);
    }
    let hedge = Hedge::for_request(route, &facts, planned.hedge);
    if embeddings {
        let answered = whole::embed(gw, &plugins, route, planned.attempts, &body, hedge, &received).await?;
        Ok(Outcome::Whole(answered))
    } else if facts.stream {
        let request = stream::StreamRequest {
            route: route.index,
            plan: planned.attempts,
            body,
            include_usage: facts.include_usage,
            hedge,
            received,
            cut: lifecycle.cutting.clone(),
        };
        let streaming = stream::serve(gw.clone(), plugins, request).await?;
        Ok(Outcome::Stream(streaming))
    } else {
        let answered =
            whole::complete(gw, &plugins, route, planned.attempts, &body, hedge, &received).await?;
        Ok(Outcome::Whole(answered))
    }
}

/// The most the request could cost: its prompt estimate and `max_tokens`
/// (or the configured assumption) at the dearest target of its plan.
fn worst_case(route: RouteRef<'_>, planned: &plan::Planned, facts: &Facts, assumed_output: u32) -> f64 {
    let usage = Usage {
        prompt_tokens: facts.estimated_prompt_tokens,
        completion_tokens: facts.max_output_tokens.unwrap_or(assumed_output),
        ..Usage::default()
    };
    planned
        .attempts
        .iter()
        .map(|a| route.target(a.target).model.prices.cost(&usage))
        .fold(0.0, f64::max)
}
