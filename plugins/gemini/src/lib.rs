//! The `gemini` provider adapter: OpenAI Chat Completions to and from Google's
//! Gemini API (`generateContent`, `streamGenerateContent?alt=sse`).

mod classify;
mod options;
mod request;
mod response;
mod stream;

wit_bindgen::generate!({
    world: "adapter",
    path: "../../wit",
});

use exports::switchboard::plugin::provider::{
    AdapterInfo, Completion, CredentialPlacement, Guest, InboundResponse, OutboundRequest, ProviderError,
    Target,
};
use options::Options;
use switchboard::plugin::types::{Capabilities, Usage};

struct Gemini;

impl Guest for Gemini {
    type StreamDecoder = stream::Decoder;

    fn describe() -> AdapterInfo {
        AdapterInfo {
            name: "gemini".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            capabilities: Capabilities::all(),
        }
    }

    fn build_request(request: Vec<u8>, target: Target) -> Result<OutboundRequest, String> {
        let options = Options::parse(&target.options)?;
        let openai: serde_json::Value =
            serde_json::from_slice(&request).map_err(|e| format!("request body is not JSON: {e}"))?;
        let stream = openai.get("stream").and_then(|s| s.as_bool()).unwrap_or(false);
        let body = request::translate(&openai, options.schema)?;
        let path = if stream {
            format!(
                "{}/models/{}:streamGenerateContent?alt=sse",
                options.prefix, target.model
            )
        } else {
            format!("{}/models/{}:generateContent", options.prefix, target.model)
        };
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        if stream {
            headers.push(("accept".into(), "text/event-stream".into()));
        }
        Ok(OutboundRequest {
            method: "POST".into(),
            path,
            headers,
            body: serde_json::to_vec(&body).map_err(|e| e.to_string())?,
            credential: CredentialPlacement::Header("x-goog-api-key".into()),
            stream,
        })
    }

    fn parse_response(response: InboundResponse, target: Target) -> Result<Completion, String> {
        let answer: serde_json::Value = serde_json::from_slice(&response.body)
            .map_err(|e| format!("provider answer is not JSON: {e}"))?;
        let (body, usage) = response::translate(&answer, &target.model)?;
        Ok(Completion {
            body: serde_json::to_vec(&body).map_err(|e| e.to_string())?,
            usage,
        })
    }

    fn classify_error(response: InboundResponse, _target: Target) -> ProviderError {
        classify::classify(response.status, &response.headers, &response.body)
    }
}

/// Gemini `usageMetadata` to the host's usage record. Thought tokens are
/// billed as output.
pub(crate) fn usage_from(metadata: &serde_json::Value) -> Usage {
    let n = |key: &str| metadata.get(key).and_then(|v| v.as_u64()).unwrap_or(0) as u32;
    Usage {
        prompt_tokens: n("promptTokenCount"),
        completion_tokens: n("candidatesTokenCount") + n("thoughtsTokenCount"),
        cached_prompt_tokens: n("cachedContentTokenCount"),
    }
}

/// OpenAI's `usage` object, with cached and reasoning token details.
pub(crate) fn usage_json(metadata: &serde_json::Value) -> serde_json::Value {
    let usage = usage_from(metadata);
    let thoughts = metadata
        .get("thoughtsTokenCount")
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    serde_json::json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_prompt_tokens},
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    })
}

/// A Gemini finish reason as an OpenAI `finish_reason`; `Err` for the ones
/// that mean the answer is unusable.
pub(crate) fn finish_reason(reason: &str, has_tool_calls: bool) -> Result<&'static str, String> {
    Ok(match reason {
        "STOP" | "FINISH_REASON_UNSPECIFIED" if has_tool_calls => "tool_calls",
        "STOP" | "FINISH_REASON_UNSPECIFIED" => "stop",
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY"
        | "LANGUAGE" => "content_filter",
        "MALFORMED_FUNCTION_CALL" | "UNEXPECTED_TOOL_CALL" => {
            return Err(format!(
                "Gemini ended the answer with {reason}: the model produced an invalid tool call"
            ));
        }
        other => return Err(format!("Gemini ended the answer with {other}")),
    })
}

export!(Gemini);
