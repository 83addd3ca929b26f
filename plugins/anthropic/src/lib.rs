//! The `anthropic` provider adapter: OpenAI Chat Completions to and from the
//! Anthropic Messages API (`POST /v1/messages`), streaming included.

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

/// The API version this adapter speaks.
const ANTHROPIC_VERSION: &str = "2023-06-01";

struct Anthropic;

impl Guest for Anthropic {
    type StreamDecoder = stream::Decoder;

    fn describe() -> AdapterInfo {
        AdapterInfo {
            name: "anthropic".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            capabilities: Capabilities::all(),
        }
    }

    fn build_request(request: Vec<u8>, target: Target) -> Result<OutboundRequest, String> {
        let options = Options::parse(&target.options)?;
        let openai: serde_json::Value =
            serde_json::from_slice(&request).map_err(|e| format!("request body is not JSON: {e}"))?;
        let translated = request::translate(&openai, &target.model, &options)?;
        let mut headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            (
                "anthropic-version".to_string(),
                options
                    .version
                    .clone()
                    .unwrap_or_else(|| ANTHROPIC_VERSION.into()),
            ),
        ];
        if !options.beta.is_empty() {
            headers.push(("anthropic-beta".into(), options.beta.join(",")));
        }
        if translated.stream {
            headers.push(("accept".into(), "text/event-stream".into()));
        }
        Ok(OutboundRequest {
            method: "POST".into(),
            path: options.path.clone(),
            headers,
            body: serde_json::to_vec(&translated.body).map_err(|e| e.to_string())?,
            credential: CredentialPlacement::Header("x-api-key".into()),
            stream: translated.stream,
        })
    }

    fn parse_response(response: InboundResponse, target: Target) -> Result<Completion, String> {
        let message: serde_json::Value = serde_json::from_slice(&response.body)
            .map_err(|e| format!("provider answer is not JSON: {e}"))?;
        let json_tool = request::json_tool_name(&Options::parse(&target.options)?);
        let (body, usage) = response::translate(&message, &json_tool)?;
        Ok(Completion {
            body: serde_json::to_vec(&body).map_err(|e| e.to_string())?,
            usage: Some(usage),
        })
    }

    fn classify_error(response: InboundResponse, _target: Target) -> ProviderError {
        classify::classify(response.status, &response.headers, &response.body)
    }
}

/// Anthropic `usage` to the host's usage record. Anthropic's `input_tokens`
/// excludes cached tokens; OpenAI's `prompt_tokens` includes them.
pub(crate) fn usage_from(usage: &serde_json::Value, previous: Option<Usage>) -> Usage {
    let n = |key: &str| usage.get(key).and_then(|v| v.as_u64()).map(|v| v as u32);
    let previous = previous.unwrap_or(Usage {
        prompt_tokens: 0,
        completion_tokens: 0,
        cached_prompt_tokens: 0,
    });
    let input = n("input_tokens");
    let creation = n("cache_creation_input_tokens").unwrap_or(0);
    let read = n("cache_read_input_tokens");
    Usage {
        prompt_tokens: match input {
            Some(input) => input + creation + read.unwrap_or(0),
            None => previous.prompt_tokens,
        },
        completion_tokens: n("output_tokens").unwrap_or(previous.completion_tokens),
        cached_prompt_tokens: read.unwrap_or(previous.cached_prompt_tokens),
    }
}

/// OpenAI's `usage` object for a usage record (with Anthropic's cache detail).
pub(crate) fn usage_json(usage: &Usage, cache_creation: u32) -> serde_json::Value {
    serde_json::json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_prompt_tokens},
        "cache_creation_input_tokens": cache_creation,
        "cache_read_input_tokens": usage.cached_prompt_tokens,
    })
}

/// Anthropic `stop_reason` to OpenAI `finish_reason`.
pub(crate) fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

export!(Anthropic);
