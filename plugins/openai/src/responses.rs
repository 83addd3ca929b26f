//! Pass-through of the Responses API (`POST /v1/responses`) to a host that
//! serves it: the caller's body goes on as it came (the host has set
//! `model`), answers and events come back untouched; usage is read.

use crate::exports::switchboard::plugin::provider::{
    Completion, Decoded, Emitted, ErrorClass, ProviderError,
};
use crate::switchboard::plugin::types::{Body, Usage};
use serde::Deserialize;
use serde_json::Value;
use switchboard_guest::sse::Event;

/// `usage` as the Responses API reports it.
#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: u32,
    #[serde(default)]
    output_tokens: u32,
    #[serde(default)]
    input_tokens_details: Option<Value>,
    #[serde(default)]
    output_tokens_details: Option<Value>,
}

fn usage(value: &Value) -> Option<Usage> {
    let wire: WireUsage = serde_json::from_value(value.clone()).ok()?;
    let detail = |d: &Option<Value>, key: &str| {
        d.as_ref()
            .and_then(|d| d.get(key))
            .and_then(Value::as_u64)
            .unwrap_or(0) as u32
    };
    Some(Usage {
        prompt_tokens: wire.input_tokens,
        completion_tokens: wire.output_tokens,
        cache_read_tokens: detail(&wire.input_tokens_details, "cached_tokens"),
        cache_write_tokens: 0,
        cache_write_hour_tokens: 0,
        reasoning_tokens: detail(&wire.output_tokens_details, "reasoning_tokens"),
    })
}

/// Whether a Responses request asks for a stream.
pub fn streaming(request: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Peek {
        #[serde(default)]
        stream: bool,
    }
    serde_json::from_slice::<Peek>(request).is_ok_and(|p| p.stream)
}

/// A whole `response` passed back as it came, with its usage and model.
pub fn parse(body: &[u8]) -> Result<Completion, String> {
    let response: Value =
        serde_json::from_slice(body).map_err(|e| format!("provider answer is not JSON: {e}"))?;
    if response.get("object").and_then(Value::as_str) != Some("response") {
        return Err("provider answer is not a response".into());
    }
    Ok(Completion {
        body: Body::Unchanged,
        usage: response.get("usage").and_then(usage),
        model: response.get("model").and_then(Value::as_str).map(str::to_string),
    })
}

/// A Responses stream passed back event by event: the terminal events
/// carry usage and end it; `response.failed` and `error` are the provider's
/// errors.
#[derive(Default)]
pub struct Relay {
    usage: Option<Usage>,
    model: Option<String>,
}

impl Relay {
    pub fn feed(&mut self, events: &[Event]) -> Decoded {
        let mut decoded = Decoded {
            events: Vec::new(),
            usage: None,
            model: None,
            done: false,
            error: None,
        };
        for (i, event) in events.iter().enumerate() {
            match self.read(event) {
                Err(error) => {
                    decoded.error = Some(error);
                    break;
                }
                Ok(done) => {
                    decoded.events.push(Emitted::Forward(i as u32));
                    if done {
                        decoded.done = true;
                        break;
                    }
                }
            }
        }
        decoded.usage = self.usage;
        decoded.model = self.model.clone();
        decoded
    }

    /// Read one event; true at the end of the answer.
    fn read(&mut self, event: &Event) -> Result<bool, ProviderError> {
        let malformed = |detail: String| ProviderError {
            class: ErrorClass::Server,
            message: format!("malformed stream event from provider: {detail}"),
            retry_after_ms: None,
        };
        // Deltas are passed on unread; only events that may end the
        // stream or name the model are parsed.
        if let Some(name) = event.event
            && name.contains(".delta")
        {
            return Ok(false);
        }
        let data: Value = serde_json::from_str(event.data).map_err(|e| malformed(e.to_string()))?;
        let kind = data.get("type").and_then(Value::as_str).unwrap_or("");
        let response = data.get("response");
        if let Some(model) = response.and_then(|r| r.get("model")).and_then(Value::as_str) {
            self.model = Some(model.to_string());
        }
        match kind {
            "response.completed" | "response.incomplete" => {
                self.usage = response.and_then(|r| r.get("usage")).and_then(usage);
                Ok(true)
            }
            "response.failed" => {
                let error = response.and_then(|r| r.get("error"));
                Err(provider_error(error, "the provider reported the response failed"))
            }
            "error" => Err(provider_error(Some(&data), "the provider reported an error")),
            _ => Ok(false),
        }
    }
}

fn provider_error(error: Option<&Value>, fallback: &str) -> ProviderError {
    let code = error
        .and_then(|e| e.get("code"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let class = match code {
        "rate_limit_exceeded" => ErrorClass::RateLimited,
        "server_is_overloaded" | "slow_down" => ErrorClass::Overloaded,
        "context_length_exceeded" => ErrorClass::ContextLength,
        "invalid_prompt" => ErrorClass::BadRequest,
        _ => ErrorClass::Server,
    };
    ProviderError {
        class,
        message: error
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .unwrap_or(fallback)
            .to_string(),
        retry_after_ms: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use switchboard_guest::sse::events_of;

    fn sse(event: Value) -> (Option<String>, String) {
        (event["type"].as_str().map(str::to_string), event.to_string())
    }

    #[test]
    fn answers_pass_back_with_their_usage() {
        let parsed = parse(
            json!({"object": "response", "model": "gpt-5", "output": [],
                   "usage": {"input_tokens": 30, "input_tokens_details": {"cached_tokens": 10},
                             "output_tokens": 8, "output_tokens_details": {"reasoning_tokens": 5}, "total_tokens": 38}})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        assert!(matches!(parsed.body, Body::Unchanged));
        let u = parsed.usage.unwrap();
        assert_eq!(
            (
                u.prompt_tokens,
                u.cache_read_tokens,
                u.completion_tokens,
                u.reasoning_tokens
            ),
            (30, 10, 8, 5)
        );
        assert!(parse(br#"{"object":"chat.completion"}"#).is_err());
    }

    #[test]
    fn events_are_forwarded_until_the_response_completes() {
        let mut relay = Relay::default();
        let decoded = relay.feed(&events_of(&[
            sse(json!({"type": "response.created", "response": {"model": "gpt-5"}})),
            sse(json!({"type": "response.output_text.delta", "delta": "Hi"})),
            sse(json!({"type": "response.completed", "response": {"model": "gpt-5", "usage": {"input_tokens": 3, "output_tokens": 1}}})),
            sse(json!({"type": "ignored.after.the.end"})),
        ]));
        assert_eq!(decoded.events.len(), 3);
        assert!(decoded.done);
        assert_eq!(decoded.usage.map(|u| u.prompt_tokens), Some(3));
        assert_eq!(decoded.model.as_deref(), Some("gpt-5"));
        let failed = Relay::default().feed(&events_of(&[sse(
            json!({"type": "response.failed", "response": {"error": {"code": "server_error", "message": "boom"}}}),
        )]));
        assert_eq!(failed.error.map(|e| e.message), Some("boom".into()));
    }
}
