//! Anthropic Messages to and from chat: a request to the canonical chat
//! request (and what cannot cross), a chat completion to a `message`.

use crate::plugin::types::Usage;
use serde_json::{Map, Value, json};

/// A Messages request as chat, and the reasons it cannot be sent as chat
/// (empty when it can).
pub struct ToChat {
    pub chat: Map<String, Value>,
    pub cannot_cross: Vec<String>,
    /// Server tools left out of the chat request (offered, not required:
    /// the model answers without them).
    pub dropped: Vec<String>,
}

/// Check what every target relies on: the reason when the request is not a
/// Messages request at all (a 400 whatever the target). Counting tokens
/// needs no `max_tokens`.
pub fn check(request: &Map<String, Value>, counting: bool) -> Result<(), (&'static str, String)> {
    match request.get("model") {
        Some(Value::String(m)) if !m.is_empty() => {}
        _ => return Err(("model", "model: Field required".into())),
    }
    match request.get("max_tokens") {
        Some(v) if v.as_u64().is_some() => {}
        None if counting => {}
        Some(_) => return Err(("max_tokens", "max_tokens: must be a non-negative integer".into())),
        None => return Err(("max_tokens", "max_tokens: Field required".into())),
    }
    let Some(messages) = request.get("messages").and_then(Value::as_array) else {
        return Err(("messages", "messages: Field required (an array)".into()));
    };
    for (i, message) in messages.iter().enumerate() {
        // Which roles a model takes is the provider's to say (Claude Code
        // sends `system` turns mid-conversation, a beta): only the shape is
        // checked here.
        if !message.get("role").is_some_and(Value::is_string) {
            return Err((
                "messages",
                format!("messages.{i}.role: Field required (a string)"),
            ));
        }
        match message.get("content") {
            Some(Value::String(_)) => {}
            Some(Value::Array(blocks))
                if blocks.iter().all(|b| b.get("type").is_some_and(Value::is_string)) => {}
            _ => {
                return Err((
                    "messages",
                    format!(
                        "messages.{i}.content: must be a string or an array of content blocks with a `type`"
                    ),
                ));
            }
        }
    }
    for (field, valid, expected) in [
        ("stream", Value::is_boolean as fn(&Value) -> bool, "a boolean"),
        ("tools", Value::is_array, "an array"),
        (
            "system",
            |v: &Value| v.is_string() || v.is_array(),
            "a string or an array of text blocks",
        ),
    ] {
        if let Some(value) = request.get(field)
            && !valid(value)
        {
            return Err(("messages", format!("{field}: must be {expected}")));
        }
    }
    Ok(())
}

/// Translate a (checked) Messages request to chat.
pub fn to_chat(request: &Map<String, Value>) -> ToChat {
    let mut out = ToChat {
        chat: Map::new(),
        cannot_cross: Vec::new(),
        dropped: Vec::new(),
    };
    let forced = request
        .get("tool_choice")
        .filter(|c| c.get("type").and_then(Value::as_str) == Some("tool"))
        .and_then(|c| c.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let chat = &mut out.chat;
    let mut messages = Vec::new();
    match request.get("system") {
        Some(Value::String(text)) if !text.is_empty() => {
            messages.push(json!({"role": "system", "content": text}))
        }
        Some(Value::Array(blocks)) => {
            let text = texts(blocks);
            if !text.is_empty() {
                messages.push(json!({"role": "system", "content": text}));
            }
        }
        _ => {}
    }
    for message in request
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("user");
        match (role, message.get("content")) {
            ("user" | "assistant" | "system", Some(Value::String(text))) => {
                messages.push(json!({"role": role, "content": text}));
            }
            ("assistant", Some(Value::Array(blocks))) => {
                messages.push(assistant(blocks, &mut out.cannot_cross));
            }
            ("user", Some(Value::Array(blocks))) => user(blocks, &mut messages, &mut out.cannot_cross),
            ("system", Some(Value::Array(blocks))) => {
                messages.push(json!({"role": "system", "content": texts(blocks)}));
            }
            (other, _) => out.cannot_cross.push(format!("a `{other}` turn")),
        }
    }
    chat.insert(
        "model".into(),
        request.get("model").cloned().unwrap_or(Value::Null),
    );
    chat.insert("messages".into(), Value::Array(messages));
    if let Some(max) = request.get("max_tokens") {
        chat.insert("max_tokens".into(), max.clone());
    }
    for key in ["temperature", "top_p"] {
        if let Some(value) = request.get(key) {
            chat.insert(key.into(), value.clone());
        }
    }
    if let Some(stop) = request
        .get("stop_sequences")
        .filter(|s| s.as_array().is_some_and(|a| !a.is_empty()))
    {
        chat.insert("stop".into(), stop.clone());
    }
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        chat.insert("stream".into(), Value::Bool(true));
        // `message_delta` reports usage: ask for it.
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(user) = request
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
    {
        chat.insert("user".into(), json!(user));
    }
    if let Some(tools) = request
        .get("tools")
        .and_then(Value::as_array)
        .filter(|t| !t.is_empty())
    {
        let mut functions = Vec::new();
        for tool in tools {
            match tool.get("type").and_then(Value::as_str) {
                None | Some("custom") => {
                    let mut function = json!({
                        "name": tool.get("name").cloned().unwrap_or(Value::Null),
                        "parameters": tool.get("input_schema").cloned().unwrap_or(json!({"type": "object"})),
                    });
                    if let Some(description) = tool.get("description") {
                        function["description"] = description.clone();
                    }
                    functions.push(json!({"type": "function", "function": function}));
                }
                // A server tool runs at Anthropic: offered, it is left out;
                // required, the request cannot be answered elsewhere.
                Some(server) => {
                    let name = tool.get("name").and_then(Value::as_str).unwrap_or(server);
                    if forced.as_deref() == Some(name) {
                        out.cannot_cross
                            .push(format!("the server tool `{server}` runs only at Anthropic"));
                    } else {
                        out.dropped.push(name.to_string());
                    }
                }
            }
        }
        if !functions.is_empty() {
            chat.insert("tools".into(), Value::Array(functions));
        }
    }
    if let Some(choice) = request.get("tool_choice") {
        match choice.get("type").and_then(Value::as_str) {
            Some("auto") => {
                chat.insert("tool_choice".into(), json!("auto"));
            }
            Some("any") => {
                chat.insert("tool_choice".into(), json!("required"));
            }
            Some("none") => {
                chat.insert("tool_choice".into(), json!("none"));
            }
            Some("tool") => {
                let name = choice.get("name").cloned().unwrap_or(Value::Null);
                chat.insert(
                    "tool_choice".into(),
                    json!({"type": "function", "function": {"name": name}}),
                );
            }
            _ => {}
        }
        if choice.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true) {
            chat.insert("parallel_tool_calls".into(), Value::Bool(false));
        }
    }
    if !chat.contains_key("tools") {
        // Chat takes a tool choice only with tools.
        chat.remove("tool_choice");
        chat.remove("parallel_tool_calls");
    }
    if let Some(thinking) = request.get("thinking") {
        let budget = thinking.get("budget_tokens").and_then(Value::as_u64);
        let effort = match (thinking.get("type").and_then(Value::as_str), budget) {
            (Some("enabled"), Some(b)) if b < 4096 => Some("low"),
            (Some("enabled"), Some(b)) if b < 16384 => Some("medium"),
            (Some("enabled"), _) => Some("high"),
            (Some("adaptive"), _) => Some("medium"),
            _ => None,
        };
        if let Some(effort) = effort {
            chat.insert("reasoning_effort".into(), json!(effort));
        }
    }
    out
}

/// The text of text blocks, joined by blank lines.
fn texts(blocks: &[Value]) -> String {
    blocks
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// A user turn: its tool results become `tool` messages (first, as chat
/// wants them right after the assistant's calls), the rest one user message.
fn user(blocks: &[Value], messages: &mut Vec<Value>, cannot_cross: &mut Vec<String>) {
    let mut parts = Vec::new();
    for block in blocks {
        match block.get("type").and_then(Value::as_str).unwrap_or("") {
            "text" => {
                parts.push(json!({"type": "text", "text": block.get("text").cloned().unwrap_or(json!(""))}))
            }
            "image" => match image_url(block) {
                Some(url) => parts.push(json!({"type": "image_url", "image_url": {"url": url}})),
                None => {
                    cannot_cross.push("an image from the Files API (only base64 and URL images cross)".into())
                }
            },
            "document" => match document(block) {
                Some(part) => parts.push(part),
                None => cannot_cross.push("a document that is not base64 PDF or plain text".into()),
            },
            "tool_result" => {
                let content = match block.get("content") {
                    Some(Value::String(text)) => text.clone(),
                    Some(Value::Array(inner)) => {
                        if inner
                            .iter()
                            .any(|b| b.get("type").and_then(Value::as_str) != Some("text"))
                        {
                            cannot_cross.push("a tool result with images or documents".into());
                        }
                        texts(inner)
                    }
                    _ => String::new(),
                };
                // Chat has no error flag on a tool message: the text says it.
                let content = if block.get("is_error").and_then(Value::as_bool) == Some(true) {
                    format!("Error: {content}")
                } else {
                    content
                };
                messages.push(json!({
                    "role": "tool",
                    "tool_call_id": block.get("tool_use_id").cloned().unwrap_or(json!("")),
                    "content": content,
                }));
            }
            other => cannot_cross.push(format!("a `{other}` content block")),
        }
    }
    if !parts.is_empty() {
        let all_text = parts.iter().all(|p| p["type"] == "text");
        let content = if all_text && parts.len() == 1 {
            parts[0]["text"].clone()
        } else {
            Value::Array(parts)
        };
        messages.push(json!({"role": "user", "content": content}));
    }
}

/// An assistant turn: its text and tool calls; thinking is dropped (its
/// signature means something only to Anthropic).
fn assistant(blocks: &[Value], cannot_cross: &mut Vec<String>) -> Value {
    let mut text = Vec::new();
    let mut calls = Vec::new();
    for block in blocks {
        match block.get("type").and_then(Value::as_str).unwrap_or("") {
            "text" => text.push(block.get("text").and_then(Value::as_str).unwrap_or("")),
            "tool_use" => calls.push(json!({
                "id": block.get("id").cloned().unwrap_or(json!("")),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or(json!("")),
                    "arguments": block.get("input").map_or("{}".to_string(), Value::to_string),
                },
            })),
            "thinking" | "redacted_thinking" => {}
            other => cannot_cross.push(format!("an assistant `{other}` block")),
        }
    }
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text.concat()) }});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    message
}

fn image_url(block: &Value) -> Option<String> {
    let source = block.get("source")?;
    match source.get("type").and_then(Value::as_str)? {
        "base64" => Some(format!(
            "data:{};base64,{}",
            source.get("media_type")?.as_str()?,
            source.get("data")?.as_str()?
        )),
        "url" => Some(source.get("url")?.as_str()?.to_string()),
        _ => None,
    }
}

fn document(block: &Value) -> Option<Value> {
    let source = block.get("source")?;
    match source.get("type").and_then(Value::as_str)? {
        "base64" if source.get("media_type").and_then(Value::as_str) == Some("application/pdf") => {
            let name = block
                .get("title")
                .and_then(Value::as_str)
                .unwrap_or("document.pdf");
            Some(json!({"type": "file", "file": {
                "filename": name,
                "file_data": format!("data:application/pdf;base64,{}", source.get("data")?.as_str()?),
            }}))
        }
        "text" => Some(json!({"type": "text", "text": source.get("data")?.as_str()?})),
        _ => None,
    }
}

/// Anthropic's `stop_reason` for a chat `finish_reason`.
pub fn stop_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls") | Some("function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic's `usage` for the host's: its `input_tokens` leaves cache
/// reads and writes out.
pub fn usage(usage: Option<Usage>) -> Value {
    let u = usage.unwrap_or_default();
    json!({
        "input_tokens": u
            .prompt_tokens
            .saturating_sub(u.cache_read_tokens.saturating_add(u.cache_write_tokens)),
        "output_tokens": u.completion_tokens,
        "cache_creation_input_tokens": u.cache_write_tokens,
        "cache_read_input_tokens": u.cache_read_tokens,
    })
}

/// A `msg_` id from the gateway's request id.
pub fn message_id(request_id: &str) -> String {
    format!("msg_{request_id}")
}

/// A chat completion as a Messages `message`.
pub fn from_chat(completion: &[u8], id: &str, usage_seen: Option<Usage>) -> Result<Value, String> {
    let completion: Value =
        serde_json::from_slice(completion).map_err(|e| format!("the answer is not JSON: {e}"))?;
    let choice = &completion["choices"][0];
    let message = &choice["message"];
    let mut content = Vec::new();
    if let Some(text) = message["content"].as_str().filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": text}));
    }
    if let Some(refusal) = message["refusal"].as_str().filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": refusal}));
    }
    for call in message["tool_calls"].as_array().into_iter().flatten() {
        let arguments = call["function"]["arguments"].as_str().unwrap_or("{}");
        let input: Value = serde_json::from_str(arguments).unwrap_or_else(|_| json!({}));
        content.push(json!({
            "type": "tool_use",
            "id": call["id"],
            "name": call["function"]["name"],
            "input": if input.is_object() { input } else { json!({}) },
        }));
    }
    Ok(json!({
        "id": message_id(id),
        "type": "message",
        "role": "assistant",
        "model": completion["model"],
        "content": content,
        "stop_reason": stop_reason(choice["finish_reason"].as_str()),
        "stop_sequence": null,
        "usage": usage(usage_seen),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(request: Value) -> ToChat {
        let request = request.as_object().unwrap().clone();
        check(&request, false).unwrap();
        to_chat(&request)
    }

    #[test]
    fn a_tool_round_trip_crosses_in_chat_order() {
        let out = chat(json!({
            "model": "m", "max_tokens": 100, "system": [{"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}}],
            "tools": [{"name": "weather", "description": "Weather", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "sig"},
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "Sunny"}]},
                    {"type": "text", "text": "And tomorrow?"}]}
            ]
        }));
        assert!(out.cannot_cross.is_empty(), "{:?}", out.cannot_cross);
        assert_eq!(
            Value::Object(out.chat),
            json!({
                "model": "m", "max_tokens": 100, "reasoning_effort": "low",
                "tools": [{"type": "function", "function": {"name": "weather", "description": "Weather", "parameters": {"type": "object"}}}],
                "tool_choice": "required", "parallel_tool_calls": false,
                "messages": [
                    {"role": "system", "content": "Be terse."},
                    {"role": "user", "content": "Weather in Paris?"},
                    {"role": "assistant", "content": "Checking.", "tool_calls": [
                        {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                    {"role": "tool", "tool_call_id": "toolu_1", "content": "Sunny"},
                    {"role": "user", "content": "And tomorrow?"}
                ]
            })
        );
    }

    #[test]
    fn images_and_pdfs_cross_and_server_tools_do_not() {
        let out = chat(json!({
            "model": "m", "max_tokens": 1, "stream": true,
            "tools": [{"type": "web_search_20250305", "name": "web_search"}],
            "tool_choice": {"type": "tool", "name": "web_search"},
            "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}},
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}},
                {"type": "image", "source": {"type": "file", "file_id": "f"}}]}]
        }));
        let parts = &out.chat["messages"][0]["content"];
        assert_eq!(parts[0]["image_url"]["url"], "data:image/png;base64,AAA");
        assert_eq!(parts[1]["file"]["file_data"], "data:application/pdf;base64,JVBE");
        assert_eq!(out.chat["stream_options"]["include_usage"], true);
        assert_eq!(out.cannot_cross.len(), 2, "{:?}", out.cannot_cross);
        assert!(
            out.cannot_cross
                .iter()
                .any(|why| why.contains("web_search_20250305"))
        );
        assert!(out.cannot_cross.iter().any(|why| why.contains("Files API")));
        // Offered, not required: left out, and said so.
        let offered = chat(json!({"model": "m", "max_tokens": 1,
            "tools": [{"type": "web_search_20250305", "name": "web_search"}, {"name": "f", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": "hi"}]}));
        assert!(offered.cannot_cross.is_empty());
        assert_eq!(offered.dropped, ["web_search"]);
        assert_eq!(offered.chat["tools"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn requests_without_what_every_target_needs_are_refused() {
        for (body, param) in [
            (json!({"max_tokens": 1, "messages": []}), "model"),
            (json!({"model": "m", "messages": []}), "max_tokens"),
            (json!({"model": "m", "max_tokens": 1}), "messages"),
            (
                json!({"model": "m", "max_tokens": 1, "messages": [{"role": 5, "content": "x"}]}),
                "messages",
            ),
            (
                json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": 5}]}),
                "messages",
            ),
        ] {
            assert_eq!(
                check(body.as_object().unwrap(), false).unwrap_err().0,
                param,
                "{body}"
            );
        }
    }

    #[test]
    fn a_chat_answer_becomes_a_message_with_anthropic_usage() {
        let completion = json!({"model": "gpt-4o", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Let me look.",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]}}]});
        let usage = Usage {
            prompt_tokens: 100,
            completion_tokens: 7,
            cache_read_tokens: 60,
            ..Usage::default()
        };
        let message = from_chat(completion.to_string().as_bytes(), "r1", Some(usage)).unwrap();
        assert_eq!(
            message,
            json!({"id": "msg_r1", "type": "message", "role": "assistant", "model": "gpt-4o",
                "content": [{"type": "text", "text": "Let me look."},
                            {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}}],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": 40, "output_tokens": 7, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 60}})
        );
    }
}
