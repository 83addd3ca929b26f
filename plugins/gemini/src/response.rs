//! Gemini `GenerateContentResponse` -> OpenAI `chat.completion`.

use crate::exports::switchboard::plugin::provider::RequestContext;
use crate::switchboard::plugin::types::Usage;
use crate::{answer_id, finish_reason, usage_from, usage_json};
use serde_json::{Value, json};

/// Translate one candidate's parts: (text, reasoning, tool calls). Calls
/// without an id get `call_<choice>_<n>` with `n` counting from `first_call`.
pub fn parts(candidate: &Value, choice: usize, first_call: u32) -> (String, String, Vec<Value>) {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    let parts = candidate
        .get("content")
        .and_then(|c| c.get("parts"))
        .and_then(Value::as_array);
    for part in parts.map(Vec::as_slice).unwrap_or(&[]) {
        if let Some(call) = part.get("functionCall") {
            let name = call.get("name").and_then(Value::as_str).unwrap_or("");
            // Gemini gives no call ids (or optional ones): make stable ones.
            let id = call
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("call_{choice}_{}", first_call as usize + calls.len()));
            let args = call.get("args").cloned().unwrap_or(json!({}));
            calls.push(json!({"id": id, "type": "function", "function": {"name": name, "arguments": args.to_string()}}));
        } else if let Some(t) = part.get("text").and_then(Value::as_str) {
            if part.get("thought").and_then(Value::as_bool) == Some(true) {
                reasoning.push_str(t);
            } else {
                text.push_str(t);
            }
        }
    }
    (text, reasoning, calls)
}

pub fn translate(
    answer: &Value,
    model: &str,
    context: &RequestContext,
) -> Result<(Value, Option<Usage>), String> {
    let candidates = answer
        .get("candidates")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let mut choices = Vec::new();
    if candidates.is_empty() {
        // The prompt itself was blocked: an empty answer filtered for content.
        let reason = answer
            .get("promptFeedback")
            .and_then(|f| f.get("blockReason"))
            .and_then(Value::as_str)
            .ok_or("provider answer has no candidates")?;
        choices.push(json!({"index": 0, "message": {"role": "assistant", "content": null, "refusal": format!("prompt blocked: {reason}")}, "finish_reason": "content_filter", "logprobs": null}));
    }
    for (i, candidate) in candidates.iter().enumerate() {
        let (text, reasoning, calls) = parts(candidate, i, 0);
        let reason = candidate
            .get("finishReason")
            .and_then(Value::as_str)
            .unwrap_or("STOP");
        let finish = finish_reason(reason, !calls.is_empty())?;
        let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }, "refusal": null});
        if !calls.is_empty() {
            message["tool_calls"] = Value::Array(calls);
        }
        if !reasoning.is_empty() {
            message["reasoning_content"] = json!(reasoning);
        }
        let index = candidate.get("index").and_then(Value::as_u64).unwrap_or(i as u64);
        choices.push(json!({"index": index, "message": message, "finish_reason": finish, "logprobs": null}));
    }
    let metadata = answer.get("usageMetadata");
    let mut body = json!({
        "id": answer_id(context),
        "object": "chat.completion",
        "created": context.created,
        "model": answer.get("modelVersion").and_then(Value::as_str).unwrap_or(model),
        "choices": choices,
    });
    // `usage` is an object when present, never null.
    if let Some(metadata) = metadata {
        body["usage"] = usage_json(metadata);
    }
    Ok((body, metadata.map(usage_from)))
}
