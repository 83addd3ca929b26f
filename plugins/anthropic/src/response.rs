//! Anthropic Messages response -> OpenAI `chat.completion`.

use crate::switchboard::plugin::types::Usage;
use crate::{finish_reason, usage_from, usage_json};
use serde_json::{Value, json};

pub fn translate(message: &Value, json_tool: &str) -> Result<(Value, Usage), String> {
    if message.get("type").and_then(Value::as_str) != Some("message") {
        return Err("provider answer is not a message".into());
    }
    let blocks = message
        .get("content")
        .and_then(Value::as_array)
        .ok_or("message has no content")?;
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut thinking_blocks = Vec::new();
    let mut tool_calls = Vec::new();
    let mut structured = None;
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("thinking") => {
                reasoning.push_str(block.get("thinking").and_then(Value::as_str).unwrap_or(""));
                thinking_blocks.push(block.clone());
            }
            Some("redacted_thinking") => thinking_blocks.push(block.clone()),
            Some("tool_use") => {
                let name = block.get("name").and_then(Value::as_str).unwrap_or("");
                let input = block.get("input").cloned().unwrap_or(json!({}));
                if name == json_tool {
                    structured = Some(input.to_string());
                    continue;
                }
                tool_calls.push(json!({
                    "id": block.get("id").and_then(Value::as_str).unwrap_or(""),
                    "type": "function",
                    "function": {"name": name, "arguments": input.to_string()},
                }));
            }
            _ => {}
        }
    }
    let stop_reason = message.get("stop_reason").and_then(Value::as_str);
    let mut finish = finish_reason(stop_reason);
    if let Some(json) = structured {
        // The structured-output tool's input *is* the answer.
        text = json;
        if finish == "tool_calls" && tool_calls.is_empty() {
            finish = "stop";
        }
    }
    let mut reply = json!({"role": "assistant", "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(text) }});
    if !tool_calls.is_empty() {
        reply["tool_calls"] = Value::Array(tool_calls);
    }
    if !thinking_blocks.is_empty() {
        reply["reasoning_content"] = json!(reasoning);
        reply["thinking_blocks"] = Value::Array(thinking_blocks);
    }
    // OpenAI's schema requires `refusal` on every message: null when there is none.
    reply["refusal"] = if stop_reason == Some("refusal") {
        json!(text)
    } else {
        Value::Null
    };
    let raw_usage = message.get("usage").cloned().unwrap_or(json!({}));
    let usage = usage_from(&raw_usage, None);
    let cache_creation = raw_usage
        .get("cache_creation_input_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0) as u32;
    let body = json!({
        "id": message.get("id").and_then(Value::as_str).unwrap_or("msg"),
        "object": "chat.completion",
        "created": 0,
        "model": message.get("model").and_then(Value::as_str).unwrap_or(""),
        "choices": [{"index": 0, "message": reply, "finish_reason": finish, "logprobs": null}],
        "usage": usage_json(&usage, cache_creation),
    });
    Ok((body, usage))
}
