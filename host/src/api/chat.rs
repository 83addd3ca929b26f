//! `POST /v1/chat/completions`: the hot path, bytes in to bytes out.

use super::auth;
use super::body::read_body;
use super::{ApiError, Body, RequestIds, admission, full};
use crate::access::admit::{self, Rates};
use crate::facts::Facts;
use crate::flow::hedge::Hedge;
use crate::flow::stream::{StreamEvent, Streaming};
use crate::flow::whole::AnsweredBy;
use crate::flow::{Received, plan, stream, whole};
use crate::gateway::Gateway;
use crate::gateway::RouteRef;
use crate::ledger::{self, Trail};
use crate::lifecycle::Lifecycle;
use crate::plugin::types::{ApiFormat, RequestContext, Usage};
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Map, Value};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Handle one chat completion; returns the route it resolved to (for metrics).
pub async fn handle(
    gw: &Arc<Gateway>,
    lifecycle: &Lifecycle,
    mut request: http::Request<Incoming>,
) -> (Option<usize>, Result<http::Response<Body>, ApiError>) {
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
    let mut route = None;
    let result = serve(gw, lifecycle, request, &ids.gateway, &trail, started, &mut route).await;
    match &result {
        Ok(response) => trail.status(response.status().as_u16(), None),
        Err(error) => trail.status(
            error.status.as_u16(),
            Some(error.code.unwrap_or(error.kind).to_string()),
        ),
    }
    (route, result)
}

/// Now, in whole seconds since the Unix epoch: a translated answer's `created`.
fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn serve(
    gw: &Arc<Gateway>,
    lifecycle: &Lifecycle,
    request: http::Request<Incoming>,
    id: &str,
    trail: &Trail,
    started: Instant,
    resolved: &mut Option<usize>,
) -> Result<http::Response<Body>, ApiError> {
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
    let server = &gw.config.server;
    let body_timeout = Duration::from_millis(server.body_read_timeout_ms);
    let bytes = tokio::time::timeout(
        body_timeout,
        read_body(&parts.headers, body, server.max_body_bytes),
    )
    .await
    .map_err(|_| ApiError::body_timeout(body_timeout))??;
    let body = parse(&bytes)?;
    let model = body.get("model").and_then(Value::as_str).unwrap_or_default();
    let route = gw
        .route_named(model)
        .ok_or_else(|| ApiError::unknown_model(model))?;
    *resolved = Some(route.index);
    trail.note(|r| r.route = Some(route.name().to_string()));
    caller.may_use(route.config)?;

    let mut facts = Facts::derive(&body, &parts.headers, route.config.facts_excerpt_chars);
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
            let tokens = facts.estimated_prompt_tokens + facts.max_output_tokens.unwrap_or(0);
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
    let answer = answer(
        gw,
        lifecycle,
        Asked {
            route,
            body,
            facts,
            budgets,
            id,
            trail,
            started,
        },
    )
    .await;
    match answer {
        Ok(mut response) => {
            for (name, value) in headers {
                if let Ok(value) = http::HeaderValue::from_str(&value) {
                    response.headers_mut().insert(name, value);
                }
            }
            Ok(response)
        }
        Err(mut error) => {
            error.headers.extend(headers);
            Err(error)
        }
    }
}

/// An admitted request, ready to plan and answer.
struct Asked<'a> {
    route: RouteRef<'a>,
    body: Map<String, Value>,
    facts: Facts,
    budgets: Vec<admit::Applies>,
    id: &'a str,
    trail: &'a Trail,
    started: Instant,
}

/// Plan, reserve the worst case against the budgets, and answer.
async fn answer(
    gw: &Arc<Gateway>,
    lifecycle: &Lifecycle,
    asked: Asked<'_>,
) -> Result<http::Response<Body>, ApiError> {
    let Asked {
        route,
        mut body,
        facts,
        budgets,
        id,
        trail,
        started,
    } = asked;
    let received = Received {
        context: Arc::new(RequestContext {
            id: id.to_string(),
            created: unix_seconds(),
            format: ApiFormat::OpenAiChat,
        }),
        started,
        trail: trail.clone(),
        prompt_estimate: facts.estimated_prompt_tokens,
    };
    // Requests finish on the plugin versions they started with.
    let plugins = gw.registry.snapshot();
    let planned = plan::plan(gw, &plugins, route, &facts, started).await?;
    trail.note(|r| {
        r.decision = planned.decision.clone();
        r.plan = planned
            .attempts
            .iter()
            .map(|a| {
                let t = route.target(a.target);
                format!("{}/{}", t.provider.name, t.target.model)
            })
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
    if facts.stream {
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
        Ok(event_stream(streaming))
    } else {
        let answered =
            whole::complete(gw, &plugins, route, planned.attempts, &mut body, hedge, &received).await?;
        Ok(with_answered_by(http::Response::builder(), &answered.by)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("x-switchboard-cost-usd", format!("{:.8}", answered.cost_usd))
            .body(full(answered.body))
            .expect("valid response"))
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

/// Headers that say who answered and after how many attempts.
fn with_answered_by(builder: http::response::Builder, by: &AnsweredBy) -> http::response::Builder {
    let value = |s: &str| http::HeaderValue::from_str(s).unwrap_or(http::HeaderValue::from_static("invalid"));
    builder
        .header("x-switchboard-provider", value(&by.provider))
        .header("x-switchboard-model", value(&by.model))
        .header("x-switchboard-attempts", by.attempts)
}

/// A stream as OpenAI's server-sent events: a `data:` line per chunk,
/// `data: [DONE]` after a complete answer, the error object in band when it
/// broke (never `[DONE]` then).
fn event_stream(streaming: Streaming) -> http::Response<Body> {
    let frames = futures_util::stream::unfold(streaming.events, |mut events| async move {
        let data = match events.recv().await? {
            StreamEvent::Chunk(chunk) => sse_data(&chunk),
            StreamEvent::Done => Bytes::from_static(b"data: [DONE]\n\n"),
            StreamEvent::Failed(error) => sse_data(ApiError::from(error).to_json().to_string().as_bytes()),
        };
        Some((Ok::<_, Infallible>(Frame::data(data)), events))
    });
    with_answered_by(http::Response::builder(), &streaming.by)
        .header(http::header::CONTENT_TYPE, "text/event-stream")
        .header(http::header::CACHE_CONTROL, "no-cache")
        .body(BodyExt::boxed(StreamBody::new(frames)))
        .expect("valid response")
}

fn sse_data(json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// The message roles of OpenAI's Chat Completions API.
const ROLES: [&str; 6] = ["system", "developer", "user", "assistant", "tool", "function"];

/// Parse the body once and check what every route relies on.
fn parse(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::invalid_request(format!("We could not parse the JSON body of your request: {e}"))
    })?;
    let Value::Object(body) = value else {
        return Err(ApiError::invalid_request(
            "The request body must be a JSON object.",
        ));
    };
    match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => {}
        _ => {
            return Err(ApiError::invalid_param(
                "model",
                "You must provide a model parameter.",
            ));
        }
    }
    let messages = match body.get("messages") {
        Some(Value::Array(messages)) if !messages.is_empty() => messages,
        _ => {
            return Err(ApiError::invalid_param(
                "messages",
                "`messages` must be a non-empty array.",
            ));
        }
    };
    if let Some(i) = messages
        .iter()
        .position(|m| m.get("role").and_then(Value::as_str).is_none())
    {
        return Err(ApiError::invalid_param(
            "messages",
            format!("messages[{i}] must be an object with a string `role`."),
        ));
    }
    // A role the API does not define would reach a provider that refuses it
    // (or, worse, reads it as something else).
    if let Some((i, role)) = messages.iter().enumerate().find_map(|(i, m)| {
        let role = m.get("role").and_then(Value::as_str)?;
        (!ROLES.contains(&role)).then_some((i, role))
    }) {
        return Err(ApiError::invalid_param(
            "messages",
            format!(
                "messages[{i}].role {role:?} is not a role of the Chat Completions API: use one of {}.",
                ROLES.join(", ")
            ),
        ));
    }
    if let Some(i) = messages.iter().position(|m| {
        m.get("content")
            .is_some_and(|c| !(c.is_string() || c.is_array() || c.is_null()))
    }) {
        return Err(ApiError::invalid_param(
            "messages",
            format!("messages[{i}].content must be a string, an array of parts or null."),
        ));
    }
    check_fields_we_read(&body)?;
    Ok(body)
}

/// A field, its value if present, its type test, and the type in words.
type FieldCheck<'a> = (&'static str, Option<&'a Value>, fn(&Value) -> bool, &'static str);

/// The fields the gateway itself reads (to route, account and stream) must
/// have the type the API gives them; a wrong one is refused here rather
/// than silently read as absent and passed on.
fn check_fields_we_read(body: &Map<String, Value>) -> Result<(), ApiError> {
    let count = |v: &Value| v.as_u64().is_some();
    let checks: [FieldCheck; 8] = [
        ("stream", body.get("stream"), Value::is_boolean, "a boolean"),
        (
            "stream_options",
            body.get("stream_options"),
            Value::is_object,
            "an object",
        ),
        (
            "stream_options.include_usage",
            body.get("stream_options").and_then(|o| o.get("include_usage")),
            Value::is_boolean,
            "a boolean",
        ),
        (
            "max_tokens",
            body.get("max_tokens"),
            count,
            "a non-negative integer",
        ),
        (
            "max_completion_tokens",
            body.get("max_completion_tokens"),
            count,
            "a non-negative integer",
        ),
        (
            "n",
            body.get("n"),
            |v| v.as_u64().is_some_and(|n| n >= 1),
            "a positive integer",
        ),
        ("tools", body.get("tools"), Value::is_array, "an array"),
        ("user", body.get("user"), Value::is_string, "a string"),
    ];
    for (param, value, valid, expected) in checks {
        if let Some(value) = value
            && !value.is_null()
            && !valid(value)
        {
            return Err(ApiError::invalid_param(
                param,
                format!("`{param}` must be {expected}."),
            ));
        }
    }
    match body.get("response_format") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(format)) if format.get("type").is_some_and(Value::is_string) => Ok(()),
        Some(_) => Err(ApiError::invalid_param(
            "response_format",
            "`response_format` must be an object with a string `type`.",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn rejects_what_no_provider_could_take() {
        for (body, needle) in [
            (&b"{not json"[..], "could not parse"),
            (b"[1]", "JSON object"),
            (
                b"{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
                "model",
            ),
            (b"{\"model\":\"m\",\"messages\":[]}", "messages"),
            (b"{\"model\":\"m\",\"messages\":[{\"content\":\"hi\"}]}", "role"),
            (
                b"{\"model\":\"m\",\"messages\":[{\"role\":\"wizard\",\"content\":\"hi\"}]}",
                "use one of system, developer, user, assistant, tool, function",
            ),
            (
                b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}],\"stream\":\"yes\"}",
                "stream",
            ),
            (
                b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}],\"stream_options\":{\"include_usage\":\"yes\"}}",
                "stream_options.include_usage",
            ),
            (
                b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}],\"stream_options\":true}",
                "stream_options",
            ),
            (
                b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}],\"max_tokens\":\"100\"}",
                "max_tokens",
            ),
            (b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}],\"tools\":{}}", "tools"),
            (b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}],\"n\":-1}", "n"),
            (
                b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}],\"response_format\":\"json\"}",
                "response_format",
            ),
            (
                b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":5}]}",
                "content",
            ),
        ] {
            let error = parse(body).unwrap_err();
            assert_eq!(error.status, 400);
            assert!(
                error.message.contains(needle),
                "{} should mention {needle}",
                error.message
            );
        }
        assert!(parse(b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}").is_ok());
    }
}
