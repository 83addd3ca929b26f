//! The `gemini` provider adapter: OpenAI Chat Completions to and from Google's
//! Gemini API (`generateContent`, `streamGenerateContent?alt=sse`).

mod classify;
mod embeddings;
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
use switchboard::plugin::types::{Body, Capabilities, Usage};

struct Gemini;

impl Guest for Gemini {
    type StreamDecoder = stream::Decoder;

    fn describe() -> AdapterInfo {
        AdapterInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            capabilities: Capabilities::all(),
            native_formats: Vec::new(),
            stateless: true,
        }
    }

    fn validate_options(options: String) -> Result<(), String> {
        Options::parse(&options).map(|_| ())
    }

    fn build_request(
        request: Vec<u8>,
        target: Target,
        _context: RequestContext,
    ) -> Result<OutboundRequest, String> {
        let options = Options::cached(&target.options)?;
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
            body: Body::Bytes(serde_json::to_vec(&body).map_err(|e| e.to_string())?),
            credential: CredentialPlacement::Header("x-goog-api-key".into()),
        })
    }

    fn parse_response(
        response: InboundResponse,
        target: Target,
        context: RequestContext,
    ) -> Result<Completion, String> {
        let answer: serde_json::Value = serde_json::from_slice(&response.body)
            .map_err(|e| format!("provider answer is not JSON: {e}"))?;
        let (body, usage) = response::translate(&answer, &target.model, &context)?;
        Ok(Completion {
            model: body["model"].as_str().map(str::to_string),
            body: Body::Bytes(serde_json::to_vec(&body).map_err(|e| e.to_string())?),
            usage,
        })
    }

    fn classify_error(response: InboundResponse, _target: Target) -> ProviderError {
        classify::classify(response.status, &response.headers, &response.body)
    }

    fn build_embeddings_request(request: Vec<u8>, target: Target) -> Result<OutboundRequest, String> {
        let options = Options::cached(&target.options)?;
        let openai: serde_json::Value =
            serde_json::from_slice(&request).map_err(|e| format!("request body is not JSON: {e}"))?;
        let body = embeddings::request(&openai, &target.model)?;
        Ok(OutboundRequest {
            method: "POST".into(),
            path: format!("{}/models/{}:batchEmbedContents", options.prefix, target.model),
            headers: vec![("content-type".to_string(), "application/json".to_string())],
            body: Body::Bytes(serde_json::to_vec(&body).map_err(|e| e.to_string())?),
            credential: CredentialPlacement::Header("x-goog-api-key".into()),
        })
    }

    fn parse_embeddings_response(response: InboundResponse, target: Target) -> Result<Embeddings, String> {
        let answer: serde_json::Value = serde_json::from_slice(&response.body)
            .map_err(|e| format!("provider answer is not JSON: {e}"))?;
        let (list, prompt) = embeddings::response(&answer, &target.model)?;
        Ok(Embeddings {
            body: Body::Bytes(serde_json::to_vec(&list).map_err(|e| e.to_string())?),
            usage: prompt.map(|n| Usage {
                prompt_tokens: n,
                completion_tokens: 0,
                cache_read_tokens: 0,
                cache_write_tokens: 0,
                cache_write_hour_tokens: 0,
                reasoning_tokens: 0,
            }),
        })
    }
}

/// The `id` of a translated answer: the gateway's request id.
pub(crate) fn answer_id(context: &RequestContext) -> String {
    format!("chatcmpl-{}", context.id)
}

/// Gemini `usageMetadata` to the host's usage record. `promptTokenCount`
/// already includes cached content; thought tokens are billed as output but
/// not counted in `candidatesTokenCount`, so they are added to the
/// completion and reported as its reasoning part. Gemini reports no cache
/// writes (explicit caches are created apart from requests).
pub(crate) fn usage_from(metadata: &serde_json::Value) -> Usage {
    let n = |key: &str| metadata.get(key).and_then(|v| v.as_u64()).unwrap_or(0) as u32;
    Usage {
        prompt_tokens: n("promptTokenCount"),
        completion_tokens: n("candidatesTokenCount") + n("thoughtsTokenCount"),
        cache_read_tokens: n("cachedContentTokenCount"),
        cache_write_tokens: 0,
        cache_write_hour_tokens: 0,
        reasoning_tokens: n("thoughtsTokenCount"),
    }
}

/// OpenAI's `usage` object, with cached and reasoning token details.
pub(crate) fn usage_json(metadata: &serde_json::Value) -> serde_json::Value {
    let usage = usage_from(metadata);
    serde_json::json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn thoughts_are_part_of_the_completion_and_cached_content_part_of_the_prompt() {
        let usage = usage_from(&json!({"promptTokenCount": 100, "cachedContentTokenCount": 60,
            "candidatesTokenCount": 20, "thoughtsTokenCount": 30}));
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.cache_read_tokens,
                usage.completion_tokens,
                usage.reasoning_tokens
            ),
            (100, 60, 50, 30)
        );
    }

    #[test]
    fn options_are_checked_by_validate_options() {
        assert!(Gemini::validate_options("{}".into()).is_ok());
        assert!(Gemini::validate_options(r#"{"schema":"nonsense"}"#.into()).is_err());
    }
}
