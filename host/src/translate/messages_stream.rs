//! A chat stream as Anthropic's Messages events: `message_start`, `ping`,
//! one `content_block_start`/`_delta`/`_stop` run per text or tool-use
//! block, then `message_delta` (stop reason and usage) and `message_stop`.

use super::messages::{message_id, stop_reason};
use serde_json::{Value, json};

/// One event: its name and data.
pub type Event = (&'static str, Value);

/// The block being streamed.
#[derive(Clone, Copy, PartialEq)]
enum Open {
    Text(u32),
    /// A tool call: its chat `tool_calls` index and its block.
    Tool(u64, u32),
}

/// Turns one answer's chat chunks into Messages events.
pub struct ToMessages {
    id: String,
    started: bool,
    open: Option<Open>,
    blocks: u32,
    stop_reason: Option<&'static str>,
    usage: Option<Value>,
}

impl ToMessages {
    /// For the request with the gateway id `id`.
    pub fn new(id: &str) -> ToMessages {
        ToMessages {
            id: message_id(id),
            started: false,
            open: None,
            blocks: 0,
            stop_reason: None,
            usage: None,
        }
    }

    /// Whether `message_start` has gone out.
    pub fn started(&self) -> bool {
        self.started
    }

    /// The events one chat chunk makes. A chunk that is not JSON makes none.
    pub fn chunk(&mut self, data: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        let Ok(chunk) = serde_json::from_slice::<Value>(data) else {
            return events;
        };
        self.start(chunk["model"].as_str().unwrap_or_default(), &mut events);
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            let n = |v: &Value| v.as_u64().unwrap_or(0);
            let cached = n(&usage["prompt_tokens_details"]["cached_tokens"]);
            self.usage = Some(json!({
                "input_tokens": n(&usage["prompt_tokens"]).saturating_sub(cached),
                "output_tokens": n(&usage["completion_tokens"]),
                "cache_read_input_tokens": cached,
            }));
        }
        let choice = &chunk["choices"][0];
        let delta = &choice["delta"];
        if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            let index = match self.open {
                Some(Open::Text(index)) => index,
                _ => {
                    let index = self.open_block(json!({"type": "text", "text": ""}), &mut events);
                    self.open = Some(Open::Text(index));
                    index
                }
            };
            events.push((
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}),
            ));
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let tool = call["index"].as_u64().unwrap_or(0);
            let index = match self.open {
                Some(Open::Tool(open, index)) if open == tool => index,
                _ => {
                    let block = json!({"type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": {}});
                    let index = self.open_block(block, &mut events);
                    self.open = Some(Open::Tool(tool, index));
                    index
                }
            };
            if let Some(arguments) = call["function"]["arguments"].as_str().filter(|a| !a.is_empty()) {
                events.push((
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": arguments}}),
                ));
            }
        }
        if let Some(finish) = choice["finish_reason"].as_str() {
            self.stop_reason = Some(stop_reason(Some(finish)));
            self.close(&mut events);
        }
        events
    }

    /// The closing events of a complete answer.
    pub fn finish(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        self.start("", &mut events);
        self.close(&mut events);
        let usage = self.usage.take().unwrap_or(json!({"output_tokens": 0}));
        events.push((
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": self.stop_reason.unwrap_or("end_turn"), "stop_sequence": null}, "usage": usage}),
        ));
        events.push(("message_stop", json!({"type": "message_stop"})));
        events
    }

    fn start(&mut self, model: &str, events: &mut Vec<Event>) {
        if self.started {
            return;
        }
        self.started = true;
        events.push((
            "message_start",
            json!({"type": "message_start", "message": {
                "id": self.id, "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 0, "output_tokens": 0}}}),
        ));
        events.push(("ping", json!({"type": "ping"})));
    }

    fn open_block(&mut self, block: Value, events: &mut Vec<Event>) -> u32 {
        self.close(events);
        let index = self.blocks;
        self.blocks += 1;
        events.push((
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
        index
    }

    fn close(&mut self, events: &mut Vec<Event>) {
        if let Some(Open::Text(index) | Open::Tool(_, index)) = self.open.take() {
            events.push((
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(delta: Value, finish: Value) -> Vec<u8> {
        json!({"model": "gpt-4o", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn text_then_a_tool_call_stream_as_blocks_in_order() {
        let mut to = ToMessages::new("r1");
        let mut events = Vec::new();
        for data in [
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            chunk(json!({"content": "Let me"}), Value::Null),
            chunk(json!({"content": " look."}), Value::Null),
            chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "weather", "arguments": ""}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
                Value::Null,
            ),
            chunk(json!({}), json!("tool_calls")),
            json!({"model": "gpt-4o", "choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 9, "prompt_tokens_details": {"cached_tokens": 5}}}).to_string().into_bytes(),
        ] {
            events.extend(to.chunk(&data));
        }
        events.extend(to.finish());
        let names: Vec<&str> = events.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(events[0].1["message"]["id"], "msg_r1");
        assert_eq!(events[0].1["message"]["model"], "gpt-4o");
        assert_eq!(events[6].1["content_block"]["name"], "weather");
        assert_eq!(events[6].1["index"], 1);
        let arguments: String = events
            .iter()
            .filter_map(|(_, e)| e["delta"]["partial_json"].as_str())
            .collect();
        assert_eq!(arguments, "{\"city\":\"Paris\"}");
        assert_eq!(events[10].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(
            events[10].1["usage"],
            json!({"input_tokens": 15, "output_tokens": 9, "cache_read_input_tokens": 5})
        );
    }

    #[test]
    fn an_empty_answer_still_opens_and_closes_the_message() {
        let names: Vec<&str> = ToMessages::new("r").finish().iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["message_start", "ping", "message_delta", "message_stop"]);
    }
}
