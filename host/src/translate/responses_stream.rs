//! A chat stream as the Responses API's semantic events:
//! `response.created`, `response.in_progress`, per output item its
//! `output_item.added`, text or argument deltas and `.done` events, then
//! `response.completed` (or `.incomplete`), or `response.failed`.

use super::responses::response;
use serde_json::{Map, Value, json};

/// One event: its name and data.
pub type Event = (&'static str, Value);

/// The output item being streamed.
enum Open {
    Text {
        item_id: String,
        text: String,
    },
    Call {
        /// The chat `tool_calls` index.
        tool: u64,
        item_id: String,
        call_id: Value,
        name: Value,
        arguments: String,
    },
}

/// Turns one answer's chat chunks into Responses events.
pub struct ToResponses {
    id: String,
    created: u64,
    echo: Map<String, Value>,
    model: Value,
    sequence: u64,
    started: bool,
    /// The finished output items.
    items: Vec<Value>,
    open: Option<Open>,
    calls: u32,
    usage: Option<Value>,
    incomplete: Option<&'static str>,
}

impl ToResponses {
    /// For the request with gateway id `id`, received at `created`, whose
    /// fields `echo` the response repeats.
    pub fn new(id: &str, created: u64, echo: Map<String, Value>) -> ToResponses {
        ToResponses {
            id: id.to_string(),
            created,
            echo,
            model: Value::Null,
            sequence: 0,
            started: false,
            items: Vec::new(),
            open: None,
            calls: 0,
            usage: None,
            incomplete: None,
        }
    }

    fn event(&mut self, name: &'static str, mut data: Value, events: &mut Vec<Event>) {
        data["type"] = json!(name);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        events.push((name, data));
    }

    fn snapshot(&self, status: &str) -> Value {
        let usage = (status != "in_progress").then(|| self.usage.clone()).flatten();
        response(
            &self.id,
            self.created,
            &self.model,
            &self.echo,
            status,
            self.items.clone(),
            usage,
        )
    }

    /// The events one chat chunk makes. A chunk that is not JSON makes none.
    pub fn chunk(&mut self, data: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        let Ok(chunk) = serde_json::from_slice::<Value>(data) else {
            return events;
        };
        if !self.started {
            self.started = true;
            self.model = chunk["model"].clone();
            let snapshot = self.snapshot("in_progress");
            self.event(
                "response.created",
                json!({"response": snapshot.clone()}),
                &mut events,
            );
            self.event("response.in_progress", json!({"response": snapshot}), &mut events);
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            let n = |v: &Value| v.as_u64().unwrap_or(0);
            let (input, output) = (n(&usage["prompt_tokens"]), n(&usage["completion_tokens"]));
            self.usage = Some(json!({
                "input_tokens": input,
                "input_tokens_details": {"cached_tokens": n(&usage["prompt_tokens_details"]["cached_tokens"]), "cache_write_tokens": 0},
                "output_tokens": output,
                "output_tokens_details": {"reasoning_tokens": n(&usage["completion_tokens_details"]["reasoning_tokens"])},
                "total_tokens": input + output,
            }));
        }
        let choice = &chunk["choices"][0];
        let delta = &choice["delta"];
        if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            if !matches!(self.open, Some(Open::Text { .. })) {
                self.close(&mut events);
                let item_id = format!("msg_{}", self.id);
                let output_index = self.items.len();
                self.event(
                    "response.output_item.added",
                    json!({"output_index": output_index, "item": {"type": "message", "id": item_id, "status": "in_progress", "role": "assistant", "content": []}}),
                    &mut events,
                );
                self.event(
                    "response.content_part.added",
                    json!({"item_id": item_id, "output_index": output_index, "content_index": 0,
                           "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
                    &mut events,
                );
                self.open = Some(Open::Text {
                    item_id,
                    text: String::new(),
                });
            }
            let output_index = self.items.len();
            let Some(Open::Text { item_id, text: all }) = self.open.as_mut() else {
                unreachable!("a text item is open")
            };
            all.push_str(text);
            let data = json!({"item_id": item_id, "output_index": output_index, "content_index": 0, "delta": text, "logprobs": []});
            self.event("response.output_text.delta", data, &mut events);
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let tool = call["index"].as_u64().unwrap_or(0);
            if !matches!(self.open, Some(Open::Call { tool: open, .. }) if open == tool) {
                self.close(&mut events);
                let item_id = format!("fc_{}_{}", self.id, self.calls);
                self.calls += 1;
                let (call_id, name) = (call["id"].clone(), call["function"]["name"].clone());
                self.event(
                    "response.output_item.added",
                    json!({"output_index": self.items.len(), "item": {"type": "function_call", "id": item_id, "call_id": call_id,
                           "name": name, "arguments": "", "status": "in_progress"}}),
                    &mut events,
                );
                self.open = Some(Open::Call {
                    tool,
                    item_id,
                    call_id,
                    name,
                    arguments: String::new(),
                });
            }
            if let Some(piece) = call["function"]["arguments"].as_str().filter(|a| !a.is_empty()) {
                let output_index = self.items.len();
                let Some(Open::Call {
                    item_id, arguments, ..
                }) = self.open.as_mut()
                else {
                    unreachable!("a call item is open")
                };
                arguments.push_str(piece);
                let data = json!({"item_id": item_id, "output_index": output_index, "delta": piece});
                self.event("response.function_call_arguments.delta", data, &mut events);
            }
        }
        match choice["finish_reason"].as_str() {
            Some("length") => self.incomplete = Some("max_output_tokens"),
            Some("content_filter") => self.incomplete = Some("content_filter"),
            _ => {}
        }
        if !choice["finish_reason"].is_null() {
            self.close(&mut events);
        }
        events
    }

    /// The closing events of a complete answer.
    pub fn finish(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        self.close(&mut events);
        let (name, status) = match self.incomplete {
            Some(_) => ("response.incomplete", "incomplete"),
            None => ("response.completed", "completed"),
        };
        let mut snapshot = self.snapshot(status);
        if let Some(reason) = self.incomplete {
            snapshot["incomplete_details"] = json!({"reason": reason});
        }
        self.event(name, json!({"response": snapshot}), &mut events);
        events
    }

    /// The event that ends a stream that broke.
    pub fn failed(&mut self, message: &str) -> Vec<Event> {
        let mut events = Vec::new();
        let mut snapshot = self.snapshot("failed");
        snapshot["error"] = json!({"code": "server_error", "message": message});
        self.event("response.failed", json!({"response": snapshot}), &mut events);
        events
    }

    fn close(&mut self, events: &mut Vec<Event>) {
        let output_index = self.items.len();
        let item = match self.open.take() {
            None => return,
            Some(Open::Text { item_id, text }) => {
                let part = json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
                self.event(
                    "response.output_text.done",
                    json!({"item_id": item_id, "output_index": output_index, "content_index": 0, "text": text, "logprobs": []}),
                    events,
                );
                self.event(
                    "response.content_part.done",
                    json!({"item_id": item_id, "output_index": output_index, "content_index": 0, "part": part}),
                    events,
                );
                json!({"type": "message", "id": item_id, "status": "completed", "role": "assistant", "content": [part]})
            }
            Some(Open::Call {
                item_id,
                call_id,
                name,
                arguments,
                ..
            }) => {
                self.event(
                    "response.function_call_arguments.done",
                    json!({"item_id": item_id, "name": name, "output_index": output_index, "arguments": arguments}),
                    events,
                );
                json!({"type": "function_call", "id": item_id, "call_id": call_id, "name": name,
                       "arguments": arguments, "status": "completed"})
            }
        };
        self.event(
            "response.output_item.done",
            json!({"output_index": output_index, "item": item}),
            events,
        );
        self.items.push(item);
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
    fn text_then_a_call_stream_as_items_in_sequence() {
        let mut to = ToResponses::new("r1", 5, Map::new());
        let mut events = Vec::new();
        for data in [
            chunk(json!({"role": "assistant", "content": "Hi"}), Value::Null),
            chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "weather", "arguments": "{\"a\":"}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
                json!("tool_calls"),
            ),
        ] {
            events.extend(to.chunk(&data));
        }
        events.extend(to.finish());
        let names: Vec<&str> = events.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed"
            ]
        );
        let sequence: Vec<u64> = events
            .iter()
            .map(|(_, e)| e["sequence_number"].as_u64().unwrap())
            .collect();
        assert_eq!(sequence, (0..14).collect::<Vec<_>>());
        let done = &events[13].1["response"];
        assert_eq!(done["output"][1]["arguments"], "{\"a\":1}");
        assert_eq!(done["output"][0]["content"][0]["text"], "Hi");
        assert_eq!(events[9].1["output_index"], 1);
    }

    #[test]
    fn a_cut_answer_is_incomplete_and_a_broken_one_failed() {
        let mut to = ToResponses::new("r", 0, Map::new());
        to.chunk(&chunk(json!({"content": "x"}), json!("length")));
        let done = to.finish();
        assert_eq!(done[0].0, "response.incomplete");
        assert_eq!(
            done[0].1["response"]["incomplete_details"]["reason"],
            "max_output_tokens"
        );
        let failed = ToResponses::new("r", 0, Map::new()).failed("the stream broke");
        assert_eq!(failed[0].1["response"]["status"], "failed");
        assert_eq!(failed[0].1["response"]["error"]["message"], "the stream broke");
    }
}
