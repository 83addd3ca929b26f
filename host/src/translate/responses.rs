//! OpenAI Responses to and from chat, the stateless subset: `input` as a
//! string or items (messages, function calls and their outputs),
//! `instructions`, function tools, `tool_choice`, `text.format`,
//! `reasoning`, `max_output_tokens`; a chat completion to a `response`.

use crate::plugin::types::Usage;
use serde_json::{Map, Value, json};

/// What is refused whatever the target: state the gateway does not keep.
pub fn check(request: &Map<String, Value>) -> Result<(), (&'static str, String)> {
    match request.get("model") {
        Some(Value::String(m)) if !m.is_empty() => {}
        _ => return Err(("model", "You must provide a model parameter.".into())),
    }
    match request.get("input") {
        Some(Value::String(_)) => {}
        Some(Value::Array(items)) if items.iter().all(Value::is_object) => {}
        _ => {
            return Err((
                "input",
                "`input` must be a string or an array of input items.".into(),
            ));
        }
    }
    let stateless =
        "this gateway keeps no responses (it is stateless): send the whole conversation in `input`";
    if request.get("previous_response_id").is_some_and(|v| !v.is_null()) {
        return Err((
            "previous_response_id",
            format!("`previous_response_id` is not supported: {stateless}."),
        ));
    }
    if request.get("conversation").is_some_and(|v| !v.is_null()) {
        return Err((
            "conversation",
            format!("`conversation` is not supported: {stateless}."),
        ));
    }
    if request.get("store").and_then(Value::as_bool) == Some(true) {
        return Err((
            "store",
            format!("`store: true` is not supported: {stateless}; send `store: false`."),
        ));
    }
    if request.get("background").and_then(Value::as_bool) == Some(true) {
        return Err((
            "background",
            format!("`background: true` is not supported: {stateless}."),
        ));
    }
    for (field, valid, expected) in [
        ("stream", Value::is_boolean as fn(&Value) -> bool, "a boolean"),
        ("tools", Value::is_array, "an array"),
        ("instructions", Value::is_string, "a string"),
        (
            "max_output_tokens",
            |v: &Value| v.as_u64().is_some(),
            "a non-negative integer",
        ),
    ] {
        if let Some(value) = request.get(field).filter(|v| !v.is_null())
            && !valid(value)
        {
            return Err((field, format!("`{field}` must be {expected}.")));
        }
    }
    Ok(())
}

/// A Responses request as chat: what cannot cross, and the hosted tools
/// left out (offered, not required: the model answers without them).
pub struct ToChat {
    pub chat: Map<String, Value>,
    pub cannot_cross: Vec<String>,
    pub dropped: Vec<String>,
}

/// A (checked) Responses request as chat.
pub fn to_chat(request: &Map<String, Value>) -> ToChat {
    let mut cannot_cross = Vec::new();
    let mut dropped = Vec::new();
    // A hosted tool the caller requires (`tool_choice: {"type": "web_search"}`).
    let forced = request
        .get("tool_choice")
        .and_then(|c| c.get("type"))
        .and_then(Value::as_str)
        .filter(|t| *t != "function")
        .map(str::to_string);
    let mut chat = Map::new();
    let mut messages = Vec::new();
    if let Some(instructions) = request.get("instructions").and_then(Value::as_str) {
        messages.push(json!({"role": "system", "content": instructions}));
    }
    match request.get("input") {
        Some(Value::String(text)) => messages.push(json!({"role": "user", "content": text})),
        Some(Value::Array(items)) => {
            for item in items {
                input_item(item, &mut messages, &mut cannot_cross);
            }
        }
        _ => {}
    }
    chat.insert(
        "model".into(),
        request.get("model").cloned().unwrap_or(Value::Null),
    );
    chat.insert("messages".into(), Value::Array(messages));
    if let Some(max) = request.get("max_output_tokens").filter(|v| !v.is_null()) {
        chat.insert("max_tokens".into(), max.clone());
    }
    for key in ["temperature", "top_p", "parallel_tool_calls", "user"] {
        if let Some(value) = request.get(key).filter(|v| !v.is_null()) {
            chat.insert(key.into(), value.clone());
        }
    }
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        chat.insert("stream".into(), Value::Bool(true));
        // `response.completed` reports usage: ask for it.
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(effort) = request
        .get("reasoning")
        .and_then(|r| r.get("effort"))
        .and_then(Value::as_str)
    {
        chat.insert("reasoning_effort".into(), json!(effort));
    }
    if let Some(tools) = request
        .get("tools")
        .and_then(Value::as_array)
        .filter(|t| !t.is_empty())
    {
        let mut functions = Vec::new();
        for tool in tools {
            match tool.get("type").and_then(Value::as_str) {
                Some("function") => {
                    let mut function = json!({
                        "name": tool.get("name").cloned().unwrap_or(Value::Null),
                        "parameters": tool.get("parameters").cloned().unwrap_or(json!({"type": "object"})),
                    });
                    for key in ["description", "strict"] {
                        if let Some(value) = tool.get(key).filter(|v| !v.is_null()) {
                            function[key] = value.clone();
                        }
                    }
                    functions.push(json!({"type": "function", "function": function}));
                }
                other => {
                    let kind = other.unwrap_or("?");
                    if forced.as_deref() == Some(kind) {
                        cannot_cross.push(format!("the hosted tool `{kind}` runs only at OpenAI"));
                    } else {
                        let name = tool.get("name").and_then(Value::as_str).unwrap_or(kind);
                        dropped.push(name.to_string());
                    }
                }
            }
        }
        if !functions.is_empty() {
            chat.insert("tools".into(), Value::Array(functions));
        }
    }
    match request.get("tool_choice") {
        Some(Value::String(choice)) => {
            chat.insert("tool_choice".into(), json!(choice));
        }
        Some(choice) if choice.get("type").and_then(Value::as_str) == Some("function") => {
            chat.insert(
                "tool_choice".into(),
                json!({"type": "function", "function": {"name": choice.get("name").cloned().unwrap_or(Value::Null)}}),
            );
        }
        // A hosted tool required: said above.
        Some(Value::Null) | None | Some(_) => {}
    }
    if !chat.contains_key("tools") {
        // Chat takes a tool choice only with tools.
        chat.remove("tool_choice");
        chat.remove("parallel_tool_calls");
    }
    if let Some(format) = request.get("text").and_then(|t| t.get("format")) {
        match format.get("type").and_then(Value::as_str) {
            Some("json_schema") => {
                let mut schema = json!({
                    "name": format.get("name").cloned().unwrap_or(json!("response")),
                    "schema": format.get("schema").cloned().unwrap_or(json!({})),
                });
                for key in ["strict", "description"] {
                    if let Some(value) = format.get(key).filter(|v| !v.is_null()) {
                        schema[key] = value.clone();
                    }
                }
                chat.insert(
                    "response_format".into(),
                    json!({"type": "json_schema", "json_schema": schema}),
                );
            }
            Some("json_object") => {
                chat.insert("response_format".into(), json!({"type": "json_object"}));
            }
            _ => {}
        }
    }
    ToChat {
        chat,
        cannot_cross,
        dropped,
    }
}

/// One input item as chat messages.
fn input_item(item: &Value, messages: &mut Vec<Value>, cannot_cross: &mut Vec<String>) {
    let kind = item.get("type").and_then(Value::as_str).unwrap_or("message");
    match kind {
        "message" => {
            let role = item.get("role").and_then(Value::as_str).unwrap_or("user");
            let content = match item.get("content") {
                Some(Value::String(text)) => json!(text),
                Some(Value::Array(parts)) => {
                    let mut out = Vec::new();
                    for part in parts {
                        match part.get("type").and_then(Value::as_str).unwrap_or("") {
                            "input_text" | "output_text" | "text" => out.push(json!({"type": "text", "text": part.get("text").cloned().unwrap_or(json!(""))})),
                            "input_image" => match part.get("image_url").and_then(Value::as_str) {
                                Some(url) => {
                                    let mut image = json!({"url": url});
                                    if let Some(detail) = part.get("detail").filter(|d| !d.is_null()) {
                                        image["detail"] = detail.clone();
                                    }
                                    out.push(json!({"type": "image_url", "image_url": image}));
                                }
                                None => cannot_cross.push("an image by file id (only URLs and data URLs cross)".into()),
                            },
                            "input_file" => match part.get("file_data").and_then(Value::as_str) {
                                Some(data) => out.push(json!({"type": "file", "file": {
                                    "file_data": data,
                                    "filename": part.get("filename").cloned().unwrap_or(json!("file")),
                                }})),
                                None => cannot_cross.push("a file by id or URL (only inline file data crosses)".into()),
                            },
                            "refusal" => out.push(json!({"type": "text", "text": part.get("refusal").cloned().unwrap_or(json!(""))})),
                            other => cannot_cross.push(format!("a `{other}` content part")),
                        }
                    }
                    // Assistant turns and plain text are strings in chat.
                    if role == "assistant" || out.iter().all(|p| p["type"] == "text") {
                        json!(
                            out.iter()
                                .filter_map(|p| p["text"].as_str())
                                .collect::<Vec<_>>()
                                .join("")
                        )
                    } else {
                        Value::Array(out)
                    }
                }
                _ => json!(""),
            };
            messages.push(json!({"role": role, "content": content}));
        }
        "function_call" => {
            let call = json!({
                "id": item.get("call_id").cloned().unwrap_or(json!("")),
                "type": "function",
                "function": {
                    "name": item.get("name").cloned().unwrap_or(json!("")),
                    "arguments": item.get("arguments").cloned().unwrap_or(json!("{}")),
                },
            });
            // Calls made in one turn are one assistant message in chat.
            match messages.last_mut() {
                Some(last) if last["role"] == "assistant" && last.get("tool_calls").is_some() => {
                    last["tool_calls"].as_array_mut().expect("an array").push(call);
                }
                _ => messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
            }
        }
        "function_call_output" => {
            let output = match item.get("output") {
                Some(Value::String(text)) => text.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            messages.push(json!({
                "role": "tool",
                "tool_call_id": item.get("call_id").cloned().unwrap_or(json!("")),
                "content": output,
            }));
        }
        // Reasoning items are the model's own state: another model cannot use them.
        "reasoning" => {}
        other => cannot_cross.push(format!("a `{other}` input item")),
    }
}

/// The Responses `usage` for the host's usage.
pub fn usage(usage: Option<Usage>) -> Value {
    let u = usage.unwrap_or_default();
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cache_read_tokens, "cache_write_tokens": u.cache_write_tokens},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.prompt_tokens.saturating_add(u.completion_tokens),
    })
}

/// The fields of a `response` that echo the request.
pub fn echo(request: &Map<String, Value>) -> Map<String, Value> {
    let get = |key: &str, default: Value| {
        request
            .get(key)
            .filter(|v| !v.is_null())
            .cloned()
            .unwrap_or(default)
    };
    let mut echo = Map::new();
    echo.insert("instructions".into(), get("instructions", Value::Null));
    echo.insert("max_output_tokens".into(), get("max_output_tokens", Value::Null));
    echo.insert("metadata".into(), get("metadata", json!({})));
    echo.insert(
        "parallel_tool_calls".into(),
        get("parallel_tool_calls", json!(true)),
    );
    echo.insert("previous_response_id".into(), Value::Null);
    echo.insert("reasoning".into(), get("reasoning", Value::Null));
    echo.insert("store".into(), json!(false));
    echo.insert("temperature".into(), get("temperature", json!(1.0)));
    echo.insert("text".into(), get("text", json!({"format": {"type": "text"}})));
    echo.insert("tool_choice".into(), get("tool_choice", json!("auto")));
    // Function tools as the response states them: `strict` and
    // `parameters` always present.
    let mut tools = get("tools", json!([]));
    for tool in tools.as_array_mut().into_iter().flatten() {
        if tool.get("type").and_then(Value::as_str) == Some("function") {
            for key in ["strict", "parameters"] {
                if tool.get(key).is_none() {
                    tool[key] = Value::Null;
                }
            }
        }
    }
    echo.insert("tools".into(), tools);
    echo.insert("top_p".into(), get("top_p", json!(1.0)));
    echo.insert("truncation".into(), json!("disabled"));
    echo
}

/// A `response` object: its id, time, model, state and output.
pub fn response(
    id: &str,
    created: u64,
    model: &Value,
    echo: &Map<String, Value>,
    status: &str,
    output: Vec<Value>,
    usage: Option<Value>,
) -> Value {
    let mut response = Map::new();
    response.insert("id".into(), json!(format!("resp_{id}")));
    response.insert("object".into(), json!("response"));
    response.insert("created_at".into(), json!(created));
    response.insert("status".into(), json!(status));
    response.insert("error".into(), Value::Null);
    response.insert("incomplete_details".into(), Value::Null);
    response.insert("model".into(), model.clone());
    response.insert("output".into(), Value::Array(output));
    if let Some(usage) = usage {
        response.insert("usage".into(), usage);
    }
    response.extend(echo.clone());
    Value::Object(response)
}

/// A chat completion as a `response`.
pub fn from_chat(
    completion: &[u8],
    id: &str,
    created: u64,
    echo: &Map<String, Value>,
    usage_seen: Option<Usage>,
) -> Result<Value, String> {
    let completion: Value =
        serde_json::from_slice(completion).map_err(|e| format!("the answer is not JSON: {e}"))?;
    let choice = &completion["choices"][0];
    let message = &choice["message"];
    let mut output = Vec::new();
    let text = message["content"].as_str().unwrap_or_default();
    let refusal = message["refusal"].as_str().filter(|r| !r.is_empty());
    if !text.is_empty() || refusal.is_some() {
        let part = match refusal {
            Some(refusal) if text.is_empty() => json!({"type": "refusal", "refusal": refusal}),
            _ => json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []}),
        };
        output.push(json!({"type": "message", "id": format!("msg_{id}"), "status": "completed", "role": "assistant", "content": [part]}));
    }
    for (i, call) in message["tool_calls"].as_array().into_iter().flatten().enumerate() {
        output.push(json!({
            "type": "function_call",
            "id": format!("fc_{id}_{i}"),
            "call_id": call["id"],
            "name": call["function"]["name"],
            "arguments": call["function"]["arguments"],
            "status": "completed",
        }));
    }
    let (status, incomplete) = match choice["finish_reason"].as_str() {
        Some("length") => ("incomplete", json!({"reason": "max_output_tokens"})),
        Some("content_filter") => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    };
    let mut response = response(
        id,
        created,
        &completion["model"],
        echo,
        status,
        output,
        Some(usage(usage_seen)),
    );
    response["incomplete_details"] = incomplete;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_become_chat_in_order_with_calls_grouped() {
        let request = json!({
            "model": "m", "instructions": "Be terse.", "max_output_tokens": 50, "reasoning": {"effort": "low"},
            "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": true}},
            "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}, "strict": true}],
            "tool_choice": {"type": "function", "name": "weather"},
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "Weather?"},
                                             {"type": "input_image", "image_url": "data:image/png;base64,AA"}]},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"},
                {"type": "function_call", "call_id": "c2", "name": "weather", "arguments": "{\"city\":\"Rome\"}"},
                {"type": "function_call_output", "call_id": "c1", "output": "Sunny"},
                {"type": "function_call_output", "call_id": "c2", "output": "Rain"}
            ]
        });
        let request = request.as_object().unwrap();
        check(request).unwrap();
        let ToChat {
            chat, cannot_cross, ..
        } = to_chat(request);
        assert!(cannot_cross.is_empty(), "{cannot_cross:?}");
        assert_eq!(chat["max_tokens"], 50);
        assert_eq!(chat["reasoning_effort"], "low");
        assert_eq!(chat["response_format"]["json_schema"]["strict"], true);
        assert_eq!(
            chat["tool_choice"],
            json!({"type": "function", "function": {"name": "weather"}})
        );
        let messages = chat["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 5);
        assert_eq!(messages[0], json!({"role": "system", "content": "Be terse."}));
        assert_eq!(
            messages[1]["content"][1]["image_url"]["url"],
            "data:image/png;base64,AA"
        );
        assert_eq!(messages[2]["tool_calls"].as_array().unwrap().len(), 2);
        assert_eq!(
            messages[4],
            json!({"role": "tool", "tool_call_id": "c2", "content": "Rain"})
        );
    }

    #[test]
    fn state_the_gateway_does_not_keep_is_refused_saying_so() {
        for (body, param) in [
            (
                json!({"model": "m", "input": "hi", "previous_response_id": "resp_1"}),
                "previous_response_id",
            ),
            (json!({"model": "m", "input": "hi", "store": true}), "store"),
            (json!({"model": "m", "input": 5}), "input"),
            (json!({"input": "hi"}), "model"),
        ] {
            let (found, message) = check(body.as_object().unwrap()).unwrap_err();
            assert_eq!(found, param, "{body}");
            assert!(param == "input" || param == "model" || message.contains("stateless"));
        }
        assert!(
            check(
                json!({"model": "m", "input": "hi", "store": false})
                    .as_object()
                    .unwrap()
            )
            .is_ok()
        );
        let offered = to_chat(
            json!({"model": "m", "input": "hi", "tools": [{"type": "web_search"}]})
                .as_object()
                .unwrap(),
        );
        assert!(offered.cannot_cross.is_empty());
        assert_eq!(offered.dropped, ["web_search"]);
        assert!(!offered.chat.contains_key("tools"), "no empty tool list");
        let forced = to_chat(
            json!({"model": "m", "input": "hi", "tools": [{"type": "web_search"}], "tool_choice": {"type": "web_search"}})
                .as_object()
                .unwrap(),
        );
        assert!(forced.cannot_cross[0].contains("web_search"));
    }

    #[test]
    fn a_chat_answer_with_a_call_becomes_a_response() {
        let completion = json!({"model": "gpt-4o", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": null,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]}}]});
        let echo = echo(json!({"model": "m", "input": "hi"}).as_object().unwrap());
        let response = from_chat(completion.to_string().as_bytes(), "r1", 7, &echo, None).unwrap();
        assert_eq!(response["id"], "resp_r1");
        assert_eq!(response["status"], "completed");
        assert_eq!(response["output"][0]["type"], "function_call");
        assert_eq!(response["output"][0]["call_id"], "call_1");
        assert_eq!(response["store"], false);
    }
}
