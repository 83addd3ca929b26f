//! Pass-through for callers that speak the Messages API themselves: their
//! body goes on as it came (the host has set `model`), answers and stream
//! events come back untouched, and only usage and the model are read.

use crate::exports::switchboard::plugin::provider::{
    Completion, CredentialPlacement, Decoded, Emitted, ErrorClass, OutboundRequest, ProviderError,
};
use crate::options::Options;
use crate::switchboard::plugin::types::{Body, Usage};
use crate::{classify, usage_from};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use switchboard_guest::sse::Event;

/// What the adapter reads of a caller's Messages request.
#[derive(Deserialize)]
struct Peek {
    #[serde(default)]
    stream: bool,
    max_tokens: Option<Value>,
}

/// The caller's request for `model`: unchanged unless it lacks
/// `max_tokens` (then the configured default is added); the adapter's
/// version and beta headers (the host merges the caller's `anthropic-beta`).
pub fn build(request: Vec<u8>, model: &str, options: &Options) -> Result<OutboundRequest, String> {
    let peek: Peek = serde_json::from_slice(&request)
        .map_err(|e| format!("request body is not a Messages request: {e}"))?;
    let body = match peek.max_tokens {
        Some(_) => Body::Unchanged,
        None => {
            let mut body: Map<String, Value> = serde_json::from_slice(&request).map_err(|e| e.to_string())?;
            let default = options
                .max_tokens_by_model
                .get(model)
                .copied()
                .unwrap_or(options.default_max_tokens);
            body.insert("max_tokens".into(), json!(default));
            Body::Bytes(serde_json::to_vec(&body).map_err(|e| e.to_string())?)
        }
    };
    let mut headers = crate::headers(options);
    if peek.stream {
        headers.push(("accept".into(), "text/event-stream".into()));
    }
    Ok(OutboundRequest {
        method: "POST".into(),
        path: options.path.clone(),
        headers,
        body,
        credential: CredentialPlacement::Header("x-api-key".into()),
    })
}

/// A whole answer passed back as it came, with its usage and model.
pub fn parse(body: &[u8]) -> Result<Completion, String> {
    let message: Value =
        serde_json::from_slice(body).map_err(|e| format!("provider answer is not JSON: {e}"))?;
    if message.get("type").and_then(Value::as_str) != Some("message") {
        return Err("provider answer is not a message".into());
    }
    Ok(Completion {
        body: Body::Unchanged,
        usage: message.get("usage").map(|u| usage_from(u, None)),
        model: message.get("model").and_then(Value::as_str).map(str::to_string),
    })
}

/// A stream passed back event by event; usage and the model are read on
/// the way, `message_stop` ends it and an `error` event is the provider's.
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
        let malformed = |e: serde_json::Error| ProviderError {
            class: ErrorClass::Server,
            message: format!("malformed stream event from provider: {e}"),
            retry_after_ms: None,
        };
        // Only the events that carry what the host accounts are parsed
        // (and those that do not say their name).
        let mut data = None;
        let kind = match event.event {
            Some(kind) => kind.to_string(),
            None => {
                let parsed: Value = serde_json::from_str(event.data).map_err(malformed)?;
                let kind = parsed
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                data = Some(parsed);
                kind
            }
        };
        match kind.as_str() {
            "message_start" | "message_delta" | "error" => {}
            "message_stop" => return Ok(true),
            _ => return Ok(false),
        }
        let data = match data {
            Some(data) => data,
            None => serde_json::from_str(event.data).map_err(malformed)?,
        };
        match kind.as_str() {
            "message_start" => {
                let message = data.get("message");
                if let Some(model) = message.and_then(|m| m.get("model")).and_then(Value::as_str) {
                    self.model = Some(model.to_string());
                }
                if let Some(usage) = message.and_then(|m| m.get("usage")) {
                    self.usage = Some(usage_from(usage, self.usage));
                }
            }
            "message_delta" => {
                if let Some(usage) = data.get("usage") {
                    self.usage = Some(usage_from(usage, self.usage));
                }
            }
            _ => {
                let error = data.get("error").cloned().unwrap_or(Value::Null);
                return Err(classify::from_error(None, &error, event.data.as_bytes()));
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_guest::sse::events_of;

    fn sse(event: Value) -> (Option<String>, String) {
        (event["type"].as_str().map(str::to_string), event.to_string())
    }

    #[test]
    fn a_body_with_max_tokens_goes_on_unchanged_and_one_without_gets_the_default() {
        let options = Options::parse(r#"{"beta": ["b1"]}"#).unwrap();
        let built = build(
            br#"{"model":"claude","max_tokens":10,"stream":true,"messages":[]}"#.to_vec(),
            "claude",
            &options,
        )
        .unwrap();
        assert!(matches!(built.body, Body::Unchanged));
        assert!(built.headers.contains(&("anthropic-beta".into(), "b1".into())));
        assert!(
            built
                .headers
                .contains(&("accept".into(), "text/event-stream".into()))
        );
        let built = build(
            br#"{"model":"claude","messages":[]}"#.to_vec(),
            "claude",
            &options,
        )
        .unwrap();
        let Body::Bytes(bytes) = built.body else {
            panic!("max_tokens added")
        };
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["max_tokens"], 4096);
    }

    #[test]
    fn answers_pass_back_unchanged_with_their_usage() {
        let parsed = parse(
            br#"{"type":"message","model":"claude-x","content":[],"usage":{"input_tokens":5,"cache_read_input_tokens":20,"output_tokens":3}}"#,
        )
        .unwrap();
        assert!(matches!(parsed.body, Body::Unchanged));
        let usage = parsed.usage.unwrap();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.cache_read_tokens,
                usage.completion_tokens
            ),
            (25, 20, 3)
        );
        assert_eq!(parsed.model.as_deref(), Some("claude-x"));
    }

    #[test]
    fn stream_events_are_forwarded_and_only_accounting_is_read() {
        let mut relay = Relay::default();
        let decoded = relay.feed(&events_of(&[
            sse(json!({"type": "message_start", "message": {"model": "claude-x", "usage": {"input_tokens": 4, "output_tokens": 1}}})),
            sse(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}})),
        ]));
        assert!(matches!(
            decoded.events[..],
            [Emitted::Forward(0), Emitted::Forward(1)]
        ));
        assert!(!decoded.done);
        let decoded = relay.feed(&events_of(&[
            sse(json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}})),
            sse(json!({"type": "message_stop"})),
            sse(json!({"type": "ping"})),
        ]));
        assert!(decoded.done);
        assert_eq!(decoded.events.len(), 2, "nothing after message_stop");
        let usage = decoded.usage.unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (4, 9));
        assert_eq!(decoded.model.as_deref(), Some("claude-x"));
        let decoded = Relay::default().feed(&events_of(&[sse(
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        )]));
        assert!(decoded.events.is_empty());
        assert!(decoded.error.is_some());
    }
}
