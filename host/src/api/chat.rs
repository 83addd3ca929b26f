//! `POST /v1/chat/completions`: OpenAI Chat Completions in, the canonical
//! form; the request is served by [`super::serve`] and framed here.

use super::body::json_object;
use super::serve::{self, Outcome, Parsed, Served};
use super::{ApiError, Body, events, full};
use crate::flow::request::RequestBody;
use crate::flow::stream::{StreamEvent, Streaming};
use crate::flow::whole::AnsweredBy;
use crate::gateway::Gateway;
use crate::lifecycle::Lifecycle;
use crate::plugin::types::ApiFormat;
use http::HeaderName;
use hyper::body::Incoming;
use serde_json::{Map, Value};
use std::sync::Arc;

/// Handle one chat completion; returns the route it resolved to (for metrics).
pub async fn handle(
    gw: &Arc<Gateway>,
    lifecycle: &Lifecycle,
    request: http::Request<Incoming>,
) -> (Option<usize>, Result<http::Response<Body>, ApiError>) {
    let (route, served) = serve::serve(gw, lifecycle, request, ApiFormat::OpenAiChat, |bytes, _| {
        let body = parse(bytes)?;
        let model = body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        Ok(Parsed {
            model,
            body: RequestBody::chat(bytes.clone(), body),
            embeddings: false,
        })
    })
    .await;
    (route, served.map(respond))
}

/// A chat answer: the completion JSON, or the stream's events.
fn respond(served: Served) -> http::Response<Body> {
    let mut response = match served.outcome {
        Outcome::Whole(answered) => with_answered_by(http::Response::builder(), &answered.by)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("x-switchboard-cost-usd", format!("{:.8}", answered.cost_usd))
            .body(full(answered.body))
            .expect("valid response"),
        Outcome::Stream(streaming) => event_stream(streaming),
    };
    with_headers(&mut response, served.headers);
    response
}

/// `x-switchboard-dropped-tools`: the provider-hosted tools a translated
/// request was sent without (none when the answer passed through).
pub fn with_dropped(response: &mut http::Response<Body>, translated: bool, dropped: &[String]) {
    if translated
        && !dropped.is_empty()
        && let Ok(value) = http::HeaderValue::from_str(&dropped.join(","))
    {
        response
            .headers_mut()
            .insert("x-switchboard-dropped-tools", value);
    }
}

/// Add the headers every answer carries.
pub fn with_headers(response: &mut http::Response<Body>, headers: Vec<(&'static str, String)>) {
    for (name, value) in headers {
        if let Ok(value) = http::HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
}

/// Headers that say who answered and after how many attempts, in a map
/// with room for the answer's own and the request's (ids, rate limits,
/// budgets) too, so it does not grow while they are added.
pub fn with_answered_by(mut builder: http::response::Builder, by: &AnsweredBy) -> http::response::Builder {
    const PROVIDER: HeaderName = HeaderName::from_static("x-switchboard-provider");
    const MODEL: HeaderName = HeaderName::from_static("x-switchboard-model");
    const ATTEMPTS: HeaderName = HeaderName::from_static("x-switchboard-attempts");
    if let Some(headers) = builder.headers_mut() {
        headers.reserve(16);
    }
    let value = |s: &str| http::HeaderValue::from_str(s).unwrap_or(http::HeaderValue::from_static("invalid"));
    builder
        .header(PROVIDER, value(&by.provider))
        .header(MODEL, value(&by.model))
        .header(ATTEMPTS, by.attempts)
}

/// A stream as OpenAI's server-sent events: a `data:` line per chunk,
/// `data: [DONE]` after a complete answer, the error object in band when it
/// broke (never `[DONE]` then).
fn event_stream(streaming: Streaming) -> http::Response<Body> {
    events::response(streaming, |event, out| match event {
        StreamEvent::Chunk(chunk) => sse_data(&chunk.data, out),
        StreamEvent::Done => out.extend_from_slice(b"data: [DONE]\n\n"),
        StreamEvent::Failed(error) => sse_data(ApiError::from(error).to_json().to_string().as_bytes(), out),
    })
}

/// One `data:` event.
fn sse_data(json: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
}

/// The message roles of OpenAI's Chat Completions API.
const ROLES: [&str; 6] = ["system", "developer", "user", "assistant", "tool", "function"];

/// Parse the body once and check what every route relies on.
fn parse(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let body = json_object(bytes)?;
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
