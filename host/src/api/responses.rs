//! `POST /v1/responses` (OpenAI Responses, the stateless subset). A
//! provider whose host serves the API itself (`responses_api = true`) gets
//! the caller's body with only `model` changed, and its answer and events
//! pass back as they came; any other target gets the chat translation, and
//! its answer is translated back into a `response` and semantic events.

use super::body::{json_object, no_duplicate_keys};
use super::chat::{with_answered_by, with_dropped, with_headers};
use super::serve::{self, Outcome, Parsed, Served};
use super::{ApiError, Body, events, full};
use crate::flow::request::RequestBody;
use crate::flow::stream::{StreamEvent, Streaming};
use crate::gateway::Gateway;
use crate::lifecycle::Lifecycle;
use crate::plugin::types::ApiFormat;
use crate::translate::responses;
use crate::translate::responses_stream::ToResponses;
use bytes::Bytes;
use hyper::body::Incoming;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// Handle one Responses request; returns the route it resolved to (for metrics).
pub async fn handle(
    gw: &Arc<Gateway>,
    lifecycle: &Lifecycle,
    request: http::Request<Incoming>,
) -> (Option<usize>, Result<http::Response<Body>, ApiError>) {
    let mut echo = Map::new();
    let mut dropped = Vec::new();
    let (route, served) = serve::serve(gw, lifecycle, request, ApiFormat::OpenAiResponses, |bytes, _| {
        let request = parse(bytes)?;
        let responses::ToChat {
            chat,
            cannot_cross,
            dropped: left_out,
        } = responses::to_chat(&request);
        dropped = left_out;
        let untranslatable = (!cannot_cross.is_empty()).then(|| {
            format!(
                "the request has what cannot be sent to a provider that does not serve the Responses API: {}",
                cannot_cross.join("; ")
            )
        });
        echo = responses::echo(&request);
        // OpenAI stores a response unless told not to; the gateway promises
        // statelessness, so a body that says nothing says no.
        let native = if request.contains_key("store") {
            bytes.clone()
        } else {
            Bytes::from(with_store_false(bytes))
        };
        Ok(Parsed {
            model: request["model"].as_str().unwrap_or_default().to_string(),
            body: RequestBody::native(ApiFormat::OpenAiResponses, native, chat, untranslatable),
            embeddings: false,
        })
    })
    .await;
    (route, served.and_then(|served| respond(served, echo, &dropped)))
}

fn parse(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let request = json_object(bytes)?;
    no_duplicate_keys(bytes)?;
    responses::check(&request).map_err(|(param, message)| ApiError::invalid_param(param, message))?;
    Ok(request)
}

/// `bytes` (a JSON object) with `"store":false` as its first member, every
/// other byte as the caller sent it.
fn with_store_false(bytes: &[u8]) -> Vec<u8> {
    let open = bytes.iter().position(|b| *b == b'{').map_or(0, |i| i + 1);
    let mut out = Vec::with_capacity(bytes.len() + 15);
    out.extend_from_slice(&bytes[..open]);
    out.extend_from_slice(b"\"store\":false,");
    out.extend_from_slice(&bytes[open..]);
    out
}

/// A `response`: the provider's own when it served the API, else the chat
/// answer translated (saying which hosted tools it was offered without).
fn respond(
    served: Served,
    echo: Map<String, Value>,
    dropped: &[String],
) -> Result<http::Response<Body>, ApiError> {
    let translated = match &served.outcome {
        Outcome::Whole(answered) => answered.format != ApiFormat::OpenAiResponses,
        Outcome::Stream(streaming) => streaming.format != ApiFormat::OpenAiResponses,
    };
    let mut response = match served.outcome {
        Outcome::Whole(answered) => {
            let body = match answered.format {
                ApiFormat::OpenAiResponses => answered.body,
                _ => {
                    let response = responses::from_chat(
                        &answered.body,
                        &served.id,
                        served.created,
                        &echo,
                        answered.usage,
                    )
                    .map_err(ApiError::bad_gateway)?;
                    serde_json::to_vec(&response).expect("a JSON value serialises")
                }
            };
            with_answered_by(http::Response::builder(), &answered.by)
                .header(http::header::CONTENT_TYPE, "application/json")
                .header("x-switchboard-cost-usd", format!("{:.8}", answered.cost_usd))
                .body(full(body))
                .expect("valid response")
        }
        Outcome::Stream(streaming) => event_stream(streaming, &served.id, served.created, echo),
    };
    with_headers(&mut response, served.headers);
    with_dropped(&mut response, translated, dropped);
    Ok(response)
}

/// How a stream's events become Responses events.
enum Framing {
    /// The provider served the API: its events as they came, and the last
    /// sequence number seen (an error event follows it).
    Native(u64),
    Translated(Box<ToResponses>),
}

/// A stream as Responses server-sent events. A stream that breaks ends
/// with `response.failed` (or, passed through, an `error` event), never
/// `response.completed`.
fn event_stream(
    streaming: Streaming,
    id: &str,
    created: u64,
    echo: Map<String, Value>,
) -> http::Response<Body> {
    let framing = match streaming.format {
        ApiFormat::OpenAiResponses => Framing::Native(0),
        _ => Framing::Translated(Box::new(ToResponses::new(id, created, echo))),
    };
    let mut framing = framing;
    events::response(streaming, move |event, out| match (event, &mut framing) {
        (StreamEvent::Chunk(chunk), Framing::Native(last)) => {
            *last = sequence_number(&chunk.data).unwrap_or(*last);
            events::passed_through(&chunk, out)
        }
        (StreamEvent::Chunk(chunk), Framing::Translated(to)) => events::framed(to.chunk(&chunk.data), out),
        (StreamEvent::Done, Framing::Native(_)) => {}
        (StreamEvent::Done, Framing::Translated(to)) => events::framed(to.finish(), out),
        (StreamEvent::Failed(error), Framing::Native(last)) => {
            let error = ApiError::from(error);
            events::framed(
                vec![(
                    "error",
                    json!({"type": "error", "code": error.code.unwrap_or(error.kind), "message": error.message,
                           "param": null, "sequence_number": *last + 1}),
                )],
                out,
            )
        }
        (StreamEvent::Failed(error), Framing::Translated(to)) => {
            events::framed(to.failed(&error.message), out)
        }
    })
}

/// The `sequence_number` of an event's data, read without parsing it whole.
fn sequence_number(data: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"sequence_number\":";
    /// Built once: building a searcher costs more than one search.
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(KEY));
    let at = FINDER.find(data)? + KEY.len();
    let rest = &data[at..];
    let digits = &rest[rest.iter().position(|b| !b.is_ascii_whitespace())?..];
    let end = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::sequence_number;

    #[test]
    fn a_body_that_says_nothing_of_store_says_no() {
        let body = super::with_store_false(br#" {"model": "m", "input": "hi"}"#);
        assert_eq!(body, br#" {"store":false,"model": "m", "input": "hi"}"#.to_vec());
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["store"], false);
    }

    #[test]
    fn the_sequence_number_is_read_from_the_bytes() {
        assert_eq!(
            sequence_number(br#"{"type":"x","sequence_number": 41,"a":1}"#),
            Some(41)
        );
        assert_eq!(sequence_number(br#"{"type":"x"}"#), None);
    }
}
