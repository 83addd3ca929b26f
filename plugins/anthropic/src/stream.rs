//! Decodes Anthropic's streaming events into OpenAI `chat.completion.chunk`s:
//! text, tool calls with incremental arguments, thinking, the finish reason
//! and a final usage chunk.

use crate::exports::switchboard::plugin::provider::{
    Decoded, Emitted, ErrorClass, GuestStreamDecoder, OutEvent, ProviderError, RequestContext, SseBatch,
    Target,
};
use crate::options::Options;
use crate::switchboard::plugin::types::ApiFormat;
use crate::switchboard::plugin::types::Usage;
use crate::{answer_id, classify, finish_reason, native, request, usage_from, usage_json};
use serde_json::{Value, json};
use std::cell::RefCell;
use std::collections::HashMap;
use switchboard_guest::sse::Event;

enum Block {
    Text,
    Thinking,
    /// A tool call, by its OpenAI `tool_calls` index.
    Tool(u32),
    /// The structured-output tool: its arguments are the answer's text.
    Json,
}

#[derive(Default)]
struct State {
    id: String,
    model: String,
    blocks: HashMap<u64, Block>,
    tools: u32,
    used_json_tool: bool,
    usage: Option<Usage>,
}

/// What one event decoded to.
struct One {
    chunks: Vec<Vec<u8>>,
    done: bool,
}

pub struct Decoder {
    /// A caller that speaks the Messages API: its events pass through.
    native: Option<RefCell<native::Relay>>,
    include_usage: bool,
    created: u64,
    json_tool: String,
    state: RefCell<State>,
}

fn malformed(detail: impl std::fmt::Display) -> ProviderError {
    ProviderError {
        class: ErrorClass::Server,
        message: format!("malformed stream event from provider: {detail}"),
        retry_after_ms: None,
    }
}

impl Decoder {
    fn chunk(&self, state: &State, delta: Value, finish: Option<&str>) -> Vec<u8> {
        json!({
            "id": state.id, "object": "chat.completion.chunk", "created": self.created, "model": state.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
        .to_string()
        .into_bytes()
    }
}

impl GuestStreamDecoder for Decoder {
    fn new(target: Target, context: RequestContext, include_usage: bool) -> Self {
        let json_tool = Options::cached(&target.options)
            .map(|o| request::json_tool_name(&o))
            .unwrap_or_default();
        let native = (context.format == ApiFormat::AnthropicMessages).then(RefCell::default);
        Decoder {
            native,
            include_usage,
            created: context.created,
            json_tool,
            state: RefCell::new(State {
                id: answer_id(&context),
                ..State::default()
            }),
        }
    }

    fn feed(&self, batch: SseBatch) -> Decoded {
        let events = switchboard_guest::batch_events!(batch);
        if let Some(native) = &self.native {
            return native.borrow_mut().feed(&events);
        }
        let mut decoded = Decoded {
            events: Vec::new(),
            usage: None,
            model: None,
            done: false,
            error: None,
        };
        for event in &events {
            match self.feed_one(event) {
                Err(error) => {
                    decoded.error = Some(error);
                    break;
                }
                Ok(one) => {
                    decoded.events.extend(
                        one.chunks
                            .into_iter()
                            .map(|data| Emitted::Write(OutEvent { event: None, data })),
                    );
                    if one.done {
                        decoded.done = true;
                        break;
                    }
                }
            }
        }
        let state = self.state.borrow();
        decoded.usage = state.usage;
        decoded.model = Some(state.model.clone()).filter(|m| !m.is_empty());
        decoded
    }
}

impl Decoder {
    fn feed_one(&self, event: &Event) -> Result<One, ProviderError> {
        let data: Value = serde_json::from_str(event.data).map_err(malformed)?;
        let kind = event
            .event
            .or(data.get("type").and_then(Value::as_str))
            .unwrap_or("");
        let mut state = self.state.borrow_mut();
        let mut chunks = Vec::new();
        let mut done = false;
        match kind {
            "message_start" => {
                let message = data
                    .get("message")
                    .ok_or_else(|| malformed("message_start without message"))?;
                state.model = message
                    .get("model")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                if let Some(usage) = message.get("usage") {
                    state.usage = Some(usage_from(usage, state.usage));
                }
                chunks.push(self.chunk(&state, json!({"role": "assistant", "content": ""}), None));
            }
            "content_block_start" => {
                let index = data
                    .get("index")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| malformed("block without index"))?;
                let block = data
                    .get("content_block")
                    .ok_or_else(|| malformed("block without content_block"))?;
                match block.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        let name = block.get("name").and_then(Value::as_str).unwrap_or("");
                        if name == self.json_tool {
                            state.used_json_tool = true;
                            state.blocks.insert(index, Block::Json);
                        } else {
                            let tool = state.tools;
                            state.tools += 1;
                            state.blocks.insert(index, Block::Tool(tool));
                            let id = block.get("id").and_then(Value::as_str).unwrap_or("");
                            let delta = json!({"tool_calls": [{"index": tool, "id": id, "type": "function",
                                "function": {"name": name, "arguments": ""}}]});
                            chunks.push(self.chunk(&state, delta, None));
                        }
                    }
                    Some("thinking") | Some("redacted_thinking") => {
                        state.blocks.insert(index, Block::Thinking);
                    }
                    _ => {
                        state.blocks.insert(index, Block::Text);
                        if let Some(text) = block
                            .get("text")
                            .and_then(Value::as_str)
                            .filter(|t| !t.is_empty())
                        {
                            chunks.push(self.chunk(&state, json!({"content": text}), None));
                        }
                    }
                }
            }
            "content_block_delta" => {
                let index = data
                    .get("index")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| malformed("delta without index"))?;
                let delta = data
                    .get("delta")
                    .ok_or_else(|| malformed("delta without delta"))?;
                let text = |key: &str| delta.get(key).and_then(Value::as_str).unwrap_or("").to_string();
                let out = match (
                    delta.get("type").and_then(Value::as_str),
                    state.blocks.get(&index),
                ) {
                    (Some("text_delta"), _) => json!({"content": text("text")}),
                    (Some("input_json_delta"), Some(Block::Json)) => json!({"content": text("partial_json")}),
                    (Some("input_json_delta"), Some(Block::Tool(tool))) => {
                        json!({"tool_calls": [{"index": tool, "function": {"arguments": text("partial_json")}}]})
                    }
                    (Some("thinking_delta"), _) => json!({"reasoning_content": text("thinking")}),
                    (Some("signature_delta"), _) => json!({"thinking_signature": text("signature")}),
                    _ => Value::Null,
                };
                if !out.is_null() {
                    chunks.push(self.chunk(&state, out, None));
                }
            }
            "message_delta" => {
                if let Some(usage) = data.get("usage") {
                    state.usage = Some(usage_from(usage, state.usage));
                }
                let stop = data
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str);
                if stop.is_some() {
                    let mut finish = finish_reason(stop);
                    if finish == "tool_calls" && state.used_json_tool && state.tools == 0 {
                        finish = "stop";
                    }
                    chunks.push(self.chunk(&state, json!({}), Some(finish)));
                }
            }
            "message_stop" => {
                done = true;
                if self.include_usage
                    && let Some(usage) = &state.usage
                {
                    let chunk = json!({
                        "id": state.id, "object": "chat.completion.chunk", "created": self.created, "model": state.model,
                        "choices": [], "usage": usage_json(usage),
                    });
                    chunks.push(chunk.to_string().into_bytes());
                }
            }
            "error" => {
                let error = data.get("error").cloned().unwrap_or(Value::Null);
                return Err(classify::from_error(None, &error, event.data.as_bytes()));
            }
            // `ping` and event types added later carry nothing to translate.
            _ => {}
        }
        Ok(One { chunks, done })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder(include_usage: bool) -> Decoder {
        let target = Target {
            provider: "p".into(),
            model: "claude".into(),
            options: "{}".into(),
        };
        let context = RequestContext {
            id: "req-9".into(),
            created: 1_700_000_000,
            format: ApiFormat::OpenaiChat,
        };
        <Decoder as GuestStreamDecoder>::new(target, context, include_usage)
    }

    /// The events as one batch, as the host sends a socket read's.
    fn batch(events: &[Value]) -> SseBatch {
        use crate::exports::switchboard::plugin::provider::{Span, SseEvent};
        let owned: Vec<(Option<&str>, String)> = events
            .iter()
            .map(|event| (event["type"].as_str(), event.to_string()))
            .collect();
        switchboard_guest::sse_batch!(owned.iter().map(|(event, data)| (*event, data.as_str())))
    }

    fn written(decoded: &Decoded) -> Vec<Value> {
        decoded
            .events
            .iter()
            .map(|e| match e {
                Emitted::Write(out) => serde_json::from_slice::<Value>(&out.data).unwrap(),
                Emitted::Forward(_) => panic!("a translated stream forwards nothing"),
            })
            .collect()
    }

    /// Each event in its own batch, as a slow provider would send them.
    fn feed_all(events: &[Value]) -> (Vec<Value>, Option<Usage>, bool) {
        let decoder = decoder(true);
        let (mut chunks, mut usage, mut done) = (Vec::new(), None, false);
        for event in events {
            let decoded = decoder.feed(batch(std::slice::from_ref(event)));
            assert!(decoded.error.is_none());
            chunks.extend(written(&decoded));
            usage = decoded.usage.or(usage);
            done |= decoded.done;
        }
        (chunks, usage, done)
    }

    #[test]
    fn text_and_tool_arguments_stream_as_chunks_with_the_finish_and_usage() {
        let (chunks, usage, done) = feed_all(&[
            json!({"type": "message_start", "message": {"id": "msg_1", "model": "claude", "usage": {"input_tokens": 10, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Checking"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\":"}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}}),
            json!({"type": "content_block_stop", "index": 1}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 7}}),
            json!({"type": "message_stop"}),
        ]);
        assert!(done, "message_stop ends the stream");
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "Checking");
        let arguments: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
            .collect();
        assert_eq!(arguments, "{\"city\":\"Paris\"}");
        let finish: Vec<&Value> = chunks
            .iter()
            .map(|c| &c["choices"][0]["finish_reason"])
            .filter(|f| !f.is_null())
            .collect();
        assert_eq!(finish, [&json!("tool_calls")]);
        assert_eq!(chunks[0]["id"], "chatcmpl-req-9");
        assert!(chunks.iter().all(|c| c["created"] == 1_700_000_000));
        let usage = usage.expect("usage from message_start and message_delta");
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (10, 7));
    }

    #[test]
    fn one_batch_decodes_like_the_same_events_one_by_one() {
        let events = [
            json!({"type": "message_start", "message": {"id": "msg_1", "model": "claude-x", "usage": {"input_tokens": 3, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}}),
            json!({"type": "message_stop"}),
        ];
        let (one_by_one, _, _) = feed_all(&events);
        let batch = decoder(true).feed(batch(&events));
        assert!(batch.done);
        assert_eq!(written(&batch), one_by_one);
        assert_eq!(batch.model.as_deref(), Some("claude-x"));
        assert_eq!(batch.usage.map(|u| u.completion_tokens), Some(2));
    }

    #[test]
    fn an_error_event_is_a_provider_error_after_what_came_before() {
        let decoded = decoder(false).feed(batch(&[
            json!({"type": "message_start", "message": {"id": "m", "model": "claude"}}),
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ]));
        assert_eq!(
            written(&decoded).len(),
            1,
            "the role chunk before the error is kept"
        );
        assert_eq!(decoded.error.map(|e| e.class), Some(ErrorClass::Overloaded));
    }
}
