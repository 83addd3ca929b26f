//! `POST /v1/messages` (Anthropic Messages) and its `count_tokens`. A
//! target that speaks Messages gets the caller's body with only `model`
//! changed, and its answer and events pass back as they came; any other
//! target gets the chat translation, and its answer is translated back.

use super::auth;
use super::body::{json_object, no_duplicate_keys, read_within};
use super::chat::{with_answered_by, with_dropped, with_headers};
use super::serve::{self, Outcome, Parsed, Served};
use super::{ApiError, Body, events, full, json_response};
use crate::facts::Facts;
use crate::flow::request::RequestBody;
use crate::flow::stream::{StreamEvent, Streaming};
use crate::gateway::Gateway;
use crate::lifecycle::Lifecycle;
use crate::plugin::types::ApiFormat;
use crate::translate::messages::{self, ToChat};
use crate::translate::messages_stream::ToMessages;
use hyper::body::Incoming;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// Caller headers of the Messages API a target that speaks it is sent.
const FORWARDED: [&str; 1] = ["anthropic-beta"];

/// Handle one Messages request; returns the route it resolved to (for metrics).
pub async fn handle(
    gw: &Arc<Gateway>,
    lifecycle: &Lifecycle,
    request: http::Request<Incoming>,
) -> (Option<usize>, Result<http::Response<Body>, ApiError>) {
    let forwarded: Vec<(String, String)> = FORWARDED
        .iter()
        .filter_map(|name| {
            let value = request.headers().get(*name)?.to_str().ok()?;
            Some((name.to_string(), value.to_string()))
        })
        .collect();
    let mut dropped = Vec::new();
    let (route, served) = serve::serve(
        gw,
        lifecycle,
        request,
        ApiFormat::AnthropicMessages,
        |bytes, _| {
            let (model, _, translated) = parse(bytes, false)?;
            let ToChat {
                chat,
                cannot_cross,
                dropped: left_out,
            } = translated;
            dropped = left_out;
            let untranslatable = (!cannot_cross.is_empty()).then(|| {
                format!(
                    "the request has what cannot be sent to a provider that does not speak the Messages API: {}",
                    cannot_cross.join("; ")
                )
            });
            Ok(Parsed {
                model,
                body: RequestBody::native(ApiFormat::AnthropicMessages, bytes.clone(), chat, untranslatable)
                    .forwarding(forwarded),
                embeddings: false,
            })
        },
    )
    .await;
    (route, served.and_then(|served| respond(served, &dropped)))
}

/// Parse and check a Messages body: its model, its JSON and its chat form.
fn parse(bytes: &[u8], counting: bool) -> Result<(String, Map<String, Value>, ToChat), ApiError> {
    let request = json_object(bytes)?;
    no_duplicate_keys(bytes)?;
    messages::check(&request, counting)
        .map_err(|(param, message)| ApiError::invalid_param(param, message))?;
    let model = request["model"].as_str().unwrap_or_default().to_string();
    let chat = messages::to_chat(&request);
    Ok((model, request, chat))
}

/// A Messages answer: the target's own when it spoke Messages, else the
/// chat answer translated (saying which server tools it was offered without).
fn respond(served: Served, dropped: &[String]) -> Result<http::Response<Body>, ApiError> {
    let translated = match &served.outcome {
        Outcome::Whole(answered) => answered.format != ApiFormat::AnthropicMessages,
        Outcome::Stream(streaming) => streaming.format != ApiFormat::AnthropicMessages,
    };
    let mut response = match served.outcome {
        Outcome::Whole(answered) => {
            let body = match answered.format {
                ApiFormat::AnthropicMessages => answered.body,
                _ => {
                    let message = messages::from_chat(&answered.body, &served.id, answered.usage)
                        .map_err(ApiError::bad_gateway)?;
                    serde_json::to_vec(&message).expect("a JSON value serialises")
                }
            };
            with_answered_by(http::Response::builder(), &answered.by)
                .header(http::header::CONTENT_TYPE, "application/json")
                .header("x-switchboard-cost-usd", format!("{:.8}", answered.cost_usd))
                .body(full(body))
                .expect("valid response")
        }
        Outcome::Stream(streaming) => event_stream(streaming, &served.id),
    };
    with_headers(&mut response, served.headers);
    with_dropped(&mut response, translated, dropped);
    Ok(response)
}

/// How a stream's events become Messages events.
enum Framing {
    /// The target spoke Messages: its events as they came.
    Native,
    /// Chat chunks translated.
    Translated(ToMessages),
}

/// A stream as Messages server-sent events. A stream that breaks ends with
/// an `error` event, never `message_stop`.
fn event_stream(streaming: Streaming, id: &str) -> http::Response<Body> {
    let framing = match streaming.format {
        ApiFormat::AnthropicMessages => Framing::Native,
        _ => Framing::Translated(ToMessages::new(id)),
    };
    let mut framing = framing;
    events::response(streaming, move |event, out| match (event, &mut framing) {
        (StreamEvent::Chunk(chunk), Framing::Native) => events::passed_through(&chunk, out),
        (StreamEvent::Chunk(chunk), Framing::Translated(to)) => events::framed(to.chunk(&chunk.data), out),
        // A native stream's `message_stop` was its last chunk.
        (StreamEvent::Done, Framing::Native) => {}
        (StreamEvent::Done, Framing::Translated(to)) => events::framed(to.finish(), out),
        (StreamEvent::Failed(error), _) => {
            events::framed(vec![("error", ApiError::from(error).to_anthropic_json())], out)
        }
    })
}

/// `POST /v1/messages/count_tokens`: the gateway's estimate of the
/// request's input tokens (the estimate routing and budgets use), for the
/// route the model names.
pub async fn count_tokens(
    gw: &Gateway,
    request: http::Request<Incoming>,
) -> Result<http::Response<Body>, ApiError> {
    let keyring = gw.shared.keyring.current();
    let caller = auth::authenticate(&gw.config.keys, &keyring, request.headers())?;
    let (parts, body) = request.into_parts();
    let bytes = read_within(&gw.config.server, &parts.headers, body).await?;
    let (model, _, ToChat { chat, .. }) = parse(&bytes, true)?;
    let route = gw
        .route_named(&model)
        .ok_or_else(|| ApiError::unknown_model(&model))?;
    caller.may_use(route.config)?;
    let facts = Facts::derive(&chat, &parts.headers, 0);
    Ok(json_response(
        http::StatusCode::OK,
        &json!({"input_tokens": facts.estimated_prompt_tokens}),
    ))
}
