//! Anthropic Messages response -> OpenAI `chat.completion`.

use crate::exports::switchboard::plugin::provider::RequestContext;
use crate::switchboard::plugin::types::Usage;
use crate::{answer_id, finish_reason, usage_from, usage_json};
use serde_json::{Value, json};

pub fn translate(
    message: &Value,
    json_tool: &str,
    context: &RequestContext,
) -> Result<(Value, Usage), String> {
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
    let body = json!({
        "id": answer_id(context),
        "object": "chat.completion",
        "created": context.created,
        "model": message.get("model").and_then(Value::as_str).unwrap_or(""),
        "choices": [{"index": 0, "message": reply, "finish_reason": finish, "logprobs": null}],
        "usage": usage_json(&usage),
    });
    Ok((body, usage))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::switchboard::plugin::types::ApiFormat;

    fn context() -> RequestContext {
        RequestContext {
            id: "req-7".into(),
            created: 1_700_000_000,
            format: ApiFormat::OpenaiChat,
        }
    }

    #[test]
    fn text_tool_use_and_usage_translate_and_refusal_is_always_there() {
        let message = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
            "content": [{"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 4, "cache_creation_input_tokens": 2}});
        let (body, usage) = translate(&message, "json_output", &context()).unwrap();
        let choice = &body["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], "Checking.");
        assert_eq!(choice["message"]["refusal"], Value::Null);
        assert_eq!(choice["logprobs"], Value::Null);
        let call = &choice["message"]["tool_calls"][0];
        assert_eq!(call["id"], "toolu_1");
        assert_eq!(call["function"]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(usage.completion_tokens, 5);
        assert_eq!(usage.cache_read_tokens, 4);
        assert_eq!(usage.cache_write_tokens, 2);
        assert_eq!(
            usage.prompt_tokens, 16,
            "all input, cache reads and writes included"
        );
        assert_eq!(body["id"], "chatcmpl-req-7");
        assert_eq!(body["created"], 1_700_000_000);
    }

    #[test]
    fn a_refusal_is_a_content_filter_with_its_text() {
        let message = json!({"id": "m", "type": "message", "role": "assistant", "model": "claude", "content": [{"type": "text", "text": "I can't help."}],
            "stop_reason": "refusal", "usage": {"input_tokens": 1, "output_tokens": 1}});
        let (body, _) = translate(&message, "json_output", &context()).unwrap();
        assert_eq!(body["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(body["choices"][0]["message"]["refusal"], "I can't help.");
    }
}
