//! The `anthropic` provider adapter: OpenAI Chat Completions to and from the
//! Anthropic Messages API (`POST /v1/messages`), streaming included.

mod classify;
mod native;
mod options;
mod request;
mod response;
mod stream;

wit_bindgen::generate!({
    world: "adapter",
    path: "../../wit",
});

use exports::switchboard::plugin::provider::{
    AdapterInfo, Completion, CredentialPlacement, Embeddings, Guest, InboundResponse, OutboundRequest,
    ProviderError, RequestContext, Target,
};
use options::Options;
use switchboard::plugin::types::{ApiFormat, Body, Capabilities, Usage};

/// The API version this adapter speaks.
const ANTHROPIC_VERSION: &str = "2023-06-01";

struct Anthropic;

impl Guest for Anthropic {
    type StreamDecoder = stream::Decoder;

    fn describe() -> AdapterInfo {
        AdapterInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            // Anthropic has no embeddings API.
            capabilities: Capabilities::all() - Capabilities::EMBEDDINGS,
            native_formats: vec![ApiFormat::AnthropicMessages],
            stateless: true,
        }
    }

    fn validate_options(options: String) -> Result<(), String> {
        Options::parse(&options).map(|_| ())
    }

    fn build_request(
        request: Vec<u8>,
        target: Target,
        context: RequestContext,
    ) -> Result<OutboundRequest, String> {
        let options = Options::cached(&target.options)?;
        if context.format == ApiFormat::AnthropicMessages {
            return native::build(request, &target.model, &options);
        }
        let openai: serde_json::Value =
            serde_json::from_slice(&request).map_err(|e| format!("request body is not JSON: {e}"))?;
        let translated = request::translate(&openai, &target.model, &options)?;
        let mut headers = headers(&options);
        if translated.stream {
            headers.push(("accept".into(), "text/event-stream".into()));
        }
        Ok(OutboundRequest {
            method: "POST".into(),
            path: options.path.clone(),
            headers,
            body: Body::Bytes(serde_json::to_vec(&translated.body).map_err(|e| e.to_string())?),
            credential: CredentialPlacement::Header("x-api-key".into()),
        })
    }

    fn parse_response(
        response: InboundResponse,
        target: Target,
        context: RequestContext,
    ) -> Result<Completion, String> {
        if context.format == ApiFormat::AnthropicMessages {
            return native::parse(&response.body);
        }
        let message: serde_json::Value = serde_json::from_slice(&response.body)
            .map_err(|e| format!("provider answer is not JSON: {e}"))?;
        let json_tool = request::json_tool_name(&*Options::cached(&target.options)?);
        let (body, usage) = response::translate(&message, &json_tool, &context)?;
        Ok(Completion {
            model: message.get("model").and_then(|m| m.as_str()).map(str::to_string),
            body: Body::Bytes(serde_json::to_vec(&body).map_err(|e| e.to_string())?),
            usage: Some(usage),
        })
    }

    fn classify_error(response: InboundResponse, _target: Target) -> ProviderError {
        classify::classify(response.status, &response.headers, &response.body)
    }

    fn build_embeddings_request(_request: Vec<u8>, _target: Target) -> Result<OutboundRequest, String> {
        Err("Anthropic has no embeddings API".into())
    }

    fn parse_embeddings_response(_response: InboundResponse, _target: Target) -> Result<Embeddings, String> {
        Err("Anthropic has no embeddings API".into())
    }
}

/// The headers every request carries: JSON, the API version and the
/// configured beta features.
pub(crate) fn headers(options: &Options) -> Vec<(String, String)> {
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
    headers
}

/// The `id` of a translated answer: the gateway's request id.
pub(crate) fn answer_id(context: &RequestContext) -> String {
    format!("chatcmpl-{}", context.id)
}

/// Anthropic `usage` to the host's usage record. Anthropic's `input_tokens`
/// excludes cache reads and writes; the contract's `prompt-tokens` includes
/// them. `cache_creation` splits writes by retention (5 minutes or 1 hour).
/// Anthropic does not count thinking apart from `output_tokens`, so
/// `reasoning-tokens` stays 0. A stream reports usage in parts (input in
/// `message_start`, output in `message_delta`): what an event lacks is kept
/// from `previous`.
pub(crate) fn usage_from(usage: &serde_json::Value, previous: Option<Usage>) -> Usage {
    let n = |value: &serde_json::Value, key: &str| value.get(key).and_then(|v| v.as_u64()).map(|v| v as u32);
    let previous = previous.unwrap_or(Usage {
        prompt_tokens: 0,
        completion_tokens: 0,
        cache_read_tokens: 0,
        cache_write_tokens: 0,
        cache_write_hour_tokens: 0,
        reasoning_tokens: 0,
    });
    let Some(input) = n(usage, "input_tokens") else {
        return Usage {
            completion_tokens: n(usage, "output_tokens").unwrap_or(previous.completion_tokens),
            ..previous
        };
    };
    let read = n(usage, "cache_read_input_tokens").unwrap_or(0);
    let write = n(usage, "cache_creation_input_tokens").unwrap_or(0);
    let hour = usage
        .get("cache_creation")
        .and_then(|c| n(c, "ephemeral_1h_input_tokens"))
        .unwrap_or(0)
        .min(write);
    Usage {
        prompt_tokens: input + read + write,
        completion_tokens: n(usage, "output_tokens").unwrap_or(previous.completion_tokens),
        cache_read_tokens: read,
        cache_write_tokens: write,
        cache_write_hour_tokens: hour,
        reasoning_tokens: 0,
    }
}

/// OpenAI's `usage` object for a usage record (with Anthropic's cache detail).
pub(crate) fn usage_json(usage: &Usage) -> serde_json::Value {
    serde_json::json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens},
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn usage_counts_cache_reads_and_writes_inside_the_prompt_and_splits_hour_writes() {
        let usage = usage_from(
            &json!({"input_tokens": 10, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 30,
                    "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 20},
                    "output_tokens": 7}),
            None,
        );
        assert_eq!(usage.prompt_tokens, 140);
        assert_eq!(
            (
                usage.cache_read_tokens,
                usage.cache_write_tokens,
                usage.cache_write_hour_tokens
            ),
            (100, 30, 20)
        );
        assert_eq!(usage.completion_tokens, 7);
        // A later stream event with output only keeps the prompt counts.
        let later = usage_from(&json!({"output_tokens": 12}), Some(usage));
        assert_eq!(
            (
                later.prompt_tokens,
                later.completion_tokens,
                later.cache_read_tokens
            ),
            (140, 12, 100)
        );
    }

    #[test]
    fn options_are_checked_by_validate_options() {
        assert!(Anthropic::validate_options("{}".into()).is_ok());
        assert!(Anthropic::validate_options(r#"{"no_such_option": 1}"#.into()).is_err());
    }
}
