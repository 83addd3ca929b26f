//! `POST /v1/embeddings`: OpenAI's embeddings API, routed like chat to the
//! route's embedding models, through each adapter's embeddings translation.

use super::body::json_object;
use super::chat::{with_answered_by, with_headers};
use super::serve::{self, Outcome, Parsed, Served};
use super::{ApiError, Body, full};
use crate::flow::request::RequestBody;
use crate::gateway::Gateway;
use crate::lifecycle::Lifecycle;
use crate::plugin::types::ApiFormat;
use base64::Engine;
use hyper::body::Incoming;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// OpenAI's bound on the inputs of one request.
const MAX_INPUTS: usize = 2048;

/// Handle one embeddings request; returns the route it resolved to (for metrics).
pub async fn handle(
    gw: &Arc<Gateway>,
    lifecycle: &Lifecycle,
    request: http::Request<Incoming>,
) -> (Option<usize>, Result<http::Response<Body>, ApiError>) {
    let mut base64 = false;
    let (route, served) = serve::serve(gw, lifecycle, request, ApiFormat::OpenAiChat, |bytes, _| {
        let body = parse(bytes)?;
        base64 = body.get("encoding_format").and_then(Value::as_str) == Some("base64");
        let model = body["model"].as_str().unwrap_or_default().to_string();
        Ok(Parsed {
            model,
            body: RequestBody::chat(bytes.clone(), body),
            embeddings: true,
        })
    })
    .await;
    (route, served.and_then(|served| respond(served, base64)))
}

/// Parse and check an embeddings request.
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
    let valid_input = match body.get("input") {
        Some(Value::String(text)) => !text.is_empty(),
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= MAX_INPUTS => {
            items.iter().all(|i| i.as_str().is_some_and(|t| !t.is_empty()))
                || items.iter().all(|i| i.as_u64().is_some())
                || items.iter().all(|i| {
                    i.as_array()
                        .is_some_and(|ids| !ids.is_empty() && ids.iter().all(|id| id.as_u64().is_some()))
                })
        }
        _ => false,
    };
    if !valid_input {
        return Err(ApiError::invalid_param(
            "input",
            format!(
                "`input` must be a non-empty string, an array of up to {MAX_INPUTS} non-empty strings, an array of token ids, or an array of arrays of token ids."
            ),
        ));
    }
    match body.get("encoding_format") {
        None | Some(Value::Null) => {}
        Some(Value::String(f)) if f == "float" || f == "base64" => {}
        Some(_) => {
            return Err(ApiError::invalid_param(
                "encoding_format",
                "`encoding_format` must be \"float\" or \"base64\".",
            ));
        }
    }
    if let Some(dimensions) = body.get("dimensions").filter(|d| !d.is_null())
        && dimensions.as_u64().is_none_or(|d| d < 1)
    {
        return Err(ApiError::invalid_param(
            "dimensions",
            "`dimensions` must be a positive integer.",
        ));
    }
    if body.get("user").is_some_and(|u| !u.is_string() && !u.is_null()) {
        return Err(ApiError::invalid_param("user", "`user` must be a string."));
    }
    Ok(body)
}

/// The embeddings list: base64 where the caller asked for it and the
/// provider gave floats, and the gateway's estimate of usage where the
/// provider reported none.
fn respond(served: Served, base64: bool) -> Result<http::Response<Body>, ApiError> {
    let Outcome::Whole(answered) = served.outcome else {
        return Err(ApiError::internal(
            "an embeddings request was answered as a stream",
        ));
    };
    let body = if base64 || answered.usage.is_none() {
        let mut list: Value = serde_json::from_slice(&answered.body)
            .map_err(|e| ApiError::bad_gateway(format!("the embeddings answer is not JSON: {e}")))?;
        if !list.is_object() {
            return Err(ApiError::bad_gateway(
                "the embeddings answer is not a JSON object",
            ));
        }
        finish(&mut list, base64, served.prompt_estimate);
        serde_json::to_vec(&list).expect("a JSON value serialises")
    } else {
        answered.body
    };
    let mut response = with_answered_by(http::Response::builder(), &answered.by)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("x-switchboard-cost-usd", format!("{:.8}", answered.cost_usd))
        .body(full(body))
        .expect("valid response");
    with_headers(&mut response, served.headers);
    Ok(response)
}

/// Encode float embeddings as base64 (little-endian `f32`, as OpenAI
/// does) when asked, and fill in `usage` when the answer has none.
fn finish(list: &mut Value, base64: bool, prompt_estimate: u32) {
    if base64 {
        for item in list["data"]
            .as_array_mut()
            .into_iter()
            .flatten()
            .filter(|i| i.is_object())
        {
            if let Some(floats) = item["embedding"].as_array() {
                let bytes: Vec<u8> = floats
                    .iter()
                    .flat_map(|f| (f.as_f64().unwrap_or(0.0) as f32).to_le_bytes())
                    .collect();
                item["embedding"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
            }
        }
    }
    if !list.get("usage").is_some_and(Value::is_object) {
        list["usage"] = json!({"prompt_tokens": prompt_estimate, "total_tokens": prompt_estimate});
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_strings_or_token_arrays() {
        for ok in [
            json!({"model": "e", "input": "hi"}),
            json!({"model": "e", "input": ["a", "b"], "encoding_format": "base64", "dimensions": 256}),
            json!({"model": "e", "input": [1, 2, 3]}),
            json!({"model": "e", "input": [[1, 2], [3]]}),
        ] {
            assert!(parse(ok.to_string().as_bytes()).is_ok(), "{ok}");
        }
        for (bad, param) in [
            (json!({"input": "hi"}), "model"),
            (json!({"model": "e", "input": ""}), "input"),
            (json!({"model": "e", "input": []}), "input"),
            (json!({"model": "e", "input": ["a", 1]}), "input"),
            (json!({"model": "e", "input": {"text": "a"}}), "input"),
            (
                json!({"model": "e", "input": "a", "encoding_format": "int8"}),
                "encoding_format",
            ),
            (json!({"model": "e", "input": "a", "dimensions": 0}), "dimensions"),
        ] {
            assert_eq!(
                parse(bad.to_string().as_bytes()).unwrap_err().param,
                Some(param),
                "{bad}"
            );
        }
    }

    #[test]
    fn floats_become_openais_base64_and_missing_usage_the_estimate() {
        let mut list = json!({"object": "list", "model": "e", "data": [{"object": "embedding", "index": 0, "embedding": [1.0, -0.5]}]});
        finish(&mut list, true, 7);
        let encoded = list["data"][0]["embedding"].as_str().unwrap();
        let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).unwrap();
        let floats: Vec<f32> = bytes
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(floats, [1.0, -0.5]);
        assert_eq!(list["usage"], json!({"prompt_tokens": 7, "total_tokens": 7}));
    }
}
