//! `POST /v1/chat/completions`: the hot path, bytes in to bytes out.

use super::{ApiError, Body};
use crate::facts::Facts;
use crate::gateway::Gateway;
use crate::hedge::Hedge;
use crate::{attempt, auth, routing, streaming};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Map, Value};
use std::sync::Arc;
use tokio::time::Instant;

/// Handle one chat completion; returns the route it resolved to (for metrics).
pub async fn handle(
    gw: &Arc<Gateway>,
    request: http::Request<Incoming>,
) -> (Option<usize>, Result<http::Response<Body>, ApiError>) {
    let started = Instant::now();
    let mut route = None;
    let result = serve(gw, request, started, &mut route).await;
    (route, result)
}

async fn serve(
    gw: &Arc<Gateway>,
    request: http::Request<Incoming>,
    started: Instant,
    resolved: &mut Option<usize>,
) -> Result<http::Response<Body>, ApiError> {
    let caller = auth::authenticate(&gw.config.keys, request.headers())?;
    let (parts, body) = request.into_parts();
    let bytes = read_body(&parts.headers, body, gw.config.server.max_body_bytes).await?;
    let mut body = parse(&bytes)?;
    let model = body.get("model").and_then(Value::as_str).unwrap_or_default();
    let route_index = *gw
        .config
        .route_names
        .get(model)
        .ok_or_else(|| ApiError::unknown_model(model))?;
    *resolved = Some(route_index);
    caller.may_use(&gw.config.routes[route_index])?;

    let facts = Facts::derive(&body, &parts.headers);
    // Requests finish on the plugin versions they started with.
    let plugins = gw.registry.snapshot();
    let plan = routing::plan(gw, &plugins, route_index, &facts).await?;
    let hedge = Hedge::for_request(gw, route_index, &facts);
    if facts.stream {
        let request = streaming::StreamRequest {
            route: route_index,
            plan,
            body,
            include_usage: facts.include_usage,
            hedge,
            started,
        };
        streaming::serve(gw.clone(), plugins, request).await
    } else {
        attempt::complete(gw, &plugins, route_index, plan, &mut body, hedge, started).await
    }
}

/// Bytes of an oversized body read and thrown away before answering 413, so
/// the caller can finish sending and read the error instead of a reset.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

async fn read_body(headers: &http::HeaderMap, mut body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut buffer = bytes::BytesMut::new();
    let mut too_large = declared.is_some_and(|n| n > limit as u64);
    let mut drained = 0usize;
    let drain_until = Instant::now() + DRAIN_TIME;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::invalid_request(format!("Could not read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        if !too_large && buffer.len() + data.len() > limit {
            too_large = true;
            buffer = bytes::BytesMut::new();
        }
        if too_large {
            drained += data.len();
            if drained > DRAIN_LIMIT || Instant::now() > drain_until {
                break;
            }
        } else {
            buffer.extend_from_slice(&data);
        }
    }
    if too_large {
        return Err(ApiError::too_large(limit));
    }
    Ok(buffer.freeze())
}

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
    if body
        .get("stream")
        .is_some_and(|s| !s.is_boolean() && !s.is_null())
    {
        return Err(ApiError::invalid_param("stream", "`stream` must be a boolean."));
    }
    Ok(body)
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
                b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}],\"stream\":\"yes\"}",
                "stream",
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
