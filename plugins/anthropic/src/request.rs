//! OpenAI Chat Completions request -> Anthropic Messages request.

use crate::options::Options;
use serde_json::{Map, Value, json};
use switchboard_guest::canonical::{self, Image, ToolChoice};

/// Default name of the tool that carries structured output.
const JSON_TOOL: &str = "json_output";

pub struct Translated {
    pub body: Value,
    pub stream: bool,
}

pub fn json_tool_name(options: &Options) -> String {
    options.json_tool_name.clone().unwrap_or_else(|| JSON_TOOL.into())
}

pub fn translate(openai: &Value, model: &str, options: &Options) -> Result<Translated, String> {
    let request = openai.as_object().ok_or("request body is not a JSON object")?;
    let mut body = Map::new();
    body.insert("model".into(), json!(model));

    let (system, messages) = messages(
        request
            .get("messages")
            .and_then(Value::as_array)
            .ok_or("`messages` is missing")?,
    )?;
    if !system.is_empty() {
        body.insert("system".into(), Value::Array(system));
    }
    body.insert("messages".into(), Value::Array(messages));

    let thinking = thinking(request);
    let budget = thinking
        .as_ref()
        .and_then(|t| t.get("budget_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let max_tokens = canonical::max_tokens(request).unwrap_or_else(|| {
        // Anthropic requires max_tokens, and above any thinking budget.
        let default = options
            .max_tokens_by_model
            .get(model)
            .copied()
            .unwrap_or(options.default_max_tokens);
        budget + default as u64
    });
    body.insert("max_tokens".into(), json!(max_tokens));
    for key in ["temperature", "top_p", "top_k"] {
        if let Some(v) = request.get(key).filter(|v| !v.is_null()) {
            body.insert(key.into(), v.clone());
        }
    }
    if let Some(stop) = canonical::stop_sequences(request) {
        body.insert("stop_sequences".into(), Value::Array(stop));
    }
    if let Some(user) = request.get("user").and_then(Value::as_str) {
        body.insert("metadata".into(), json!({"user_id": user}));
    }
    let stream = request.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if stream {
        body.insert("stream".into(), json!(true));
    }

    let mut tools: Vec<Value> = match request.get("tools").and_then(Value::as_array) {
        Some(list) => list.iter().map(tool).collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    let mut tool_choice = request
        .get("tool_choice")
        .map(|c| tool_choice(c, request))
        .transpose()?
        .flatten();
    if let Some((name, schema)) = structured_output(request, options)? {
        tools.push(json!({"name": name, "description": "Respond with the answer as this tool's input.", "input_schema": schema}));
        tool_choice = Some(json!({"type": "tool", "name": name}));
    }
    if !tools.is_empty() {
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(mut choice) = tool_choice {
        if request.get("parallel_tool_calls") == Some(&Value::Bool(false))
            && let Some(choice) = choice.as_object_mut()
            && choice.get("type").and_then(Value::as_str) != Some("none")
        {
            choice.insert("disable_parallel_tool_use".into(), json!(true));
        }
        body.insert("tool_choice".into(), choice);
    }
    if let Some(thinking) = thinking {
        body.insert("thinking".into(), thinking);
    }
    Ok(Translated {
        body: Value::Object(body),
        stream,
    })
}

/// System and developer messages become `system`; the rest become alternating
/// user/assistant turns, tool results folded into the following user turn.
fn messages(list: &[Value]) -> Result<(Vec<Value>, Vec<Value>), String> {
    let mut system = Vec::new();
    let mut turns: Vec<(String, Vec<Value>)> = Vec::new();
    for (i, message) in list.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        let (turn_role, blocks) = match role {
            "system" | "developer" => {
                system.extend(text_blocks(message.get("content"), i)?);
                continue;
            }
            "user" => ("user", content_blocks(message.get("content"), i)?),
            "assistant" => ("assistant", assistant_blocks(message, i)?),
            "tool" => ("user", vec![tool_result(message, i)?]),
            "function" => {
                return Err(format!(
                    "messages[{i}]: the legacy `function` role is not supported; use tools"
                ));
            }
            other => return Err(format!("messages[{i}]: unknown role {other:?}")),
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            // Anthropic needs alternating turns: merge consecutive same-role messages.
            Some((last, existing)) if last == turn_role => existing.extend(blocks),
            _ => turns.push((turn_role.to_string(), blocks)),
        }
    }
    let messages = turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    Ok((system, messages))
}

fn text_blocks(content: Option<&Value>, i: usize) -> Result<Vec<Value>, String> {
    Ok(canonical::texts(content, i)?
        .into_iter()
        .map(|t| json!({"type": "text", "text": t}))
        .collect())
}

fn content_blocks(content: Option<&Value>, i: usize) -> Result<Vec<Value>, String> {
    let Some(Value::Array(parts)) = content else {
        return text_blocks(content, i);
    };
    let mut blocks = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        match part.get("type").and_then(Value::as_str) {
            Some("text") => {
                if let Some(text) = part.get("text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                    blocks.push(json!({"type": "text", "text": text}));
                }
            }
            // A data URL becomes a base64 source; an http(s) URL a url source.
            Some("image_url") => blocks.push(match canonical::image(part, i, j)? {
                Image::Inline { media_type, data } => {
                    json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}})
                }
                Image::Url(url) => json!({"type": "image", "source": {"type": "url", "url": url}}),
            }),
            other => {
                return Err(format!(
                    "messages[{i}].content[{j}]: content part {other:?} is not supported by Anthropic"
                ));
            }
        }
    }
    Ok(blocks)
}

fn assistant_blocks(message: &Value, i: usize) -> Result<Vec<Value>, String> {
    let mut blocks = Vec::new();
    // Thinking from an earlier answer must go back first, signature intact.
    if let Some(thinking) = message.get("thinking_blocks").and_then(Value::as_array) {
        blocks.extend(thinking.iter().cloned());
    }
    blocks.extend(text_blocks(message.get("content"), i)?);
    for call in canonical::tool_calls(message, i)? {
        blocks.push(json!({"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}));
    }
    Ok(blocks)
}

fn tool_result(message: &Value, i: usize) -> Result<Value, String> {
    let id = message
        .get("tool_call_id")
        .and_then(Value::as_str)
        .ok_or(format!("messages[{i}].tool_call_id is missing"))?;
    let content = match message.get("content") {
        Some(Value::String(text)) => json!(text),
        other => Value::Array(text_blocks(other, i)?),
    };
    Ok(json!({"type": "tool_result", "tool_use_id": id, "content": content}))
}

fn tool(tool: &Value) -> Result<Value, String> {
    let function = tool.get("function").ok_or("every tool needs a `function`")?;
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or("every tool function needs a `name`")?;
    let mut out = json!({
        "name": name,
        "input_schema": function.get("parameters").cloned().unwrap_or(json!({"type": "object", "properties": {}})),
    });
    if let Some(description) = function.get("description").and_then(Value::as_str) {
        out["description"] = json!(description);
    }
    Ok(out)
}

fn tool_choice(choice: &Value, request: &Map<String, Value>) -> Result<Option<Value>, String> {
    if request
        .get("tools")
        .and_then(Value::as_array)
        .is_none_or(|t| t.is_empty())
    {
        return Ok(None);
    }
    Ok(Some(match canonical::tool_choice(choice)? {
        ToolChoice::Auto => json!({"type": "auto"}),
        ToolChoice::None => json!({"type": "none"}),
        ToolChoice::Required => json!({"type": "any"}),
        ToolChoice::Named(name) => json!({"type": "tool", "name": name}),
    }))
}

/// `response_format` json_schema/json_object: Anthropic's way is a tool whose
/// input schema is the wanted output, forced with `tool_choice`.
fn structured_output(
    request: &Map<String, Value>,
    options: &Options,
) -> Result<Option<(String, Value)>, String> {
    let Some(format) = request.get("response_format") else {
        return Ok(None);
    };
    let name = json_tool_name(options);
    match format.get("type").and_then(Value::as_str) {
        Some("json_schema") => {
            let schema = format
                .get("json_schema")
                .and_then(|s| s.get("schema"))
                .cloned()
                .ok_or("response_format.json_schema.schema is missing")?;
            Ok(Some((name, schema)))
        }
        Some("json_object") => Ok(Some((name, json!({"type": "object"})))),
        Some("text") | None => Ok(None),
        Some(other) => Err(format!("unsupported response_format type {other:?}")),
    }
}

/// Anthropic's own `thinking` passes through; OpenAI's `reasoning_effort`
/// maps to a thinking budget.
fn thinking(request: &Map<String, Value>) -> Option<Value> {
    if let Some(thinking) = request.get("thinking").filter(|t| t.is_object()) {
        return Some(thinking.clone());
    }
    let budget = match request.get("reasoning_effort").and_then(Value::as_str)? {
        "minimal" | "low" => 1024,
        "medium" => 4096,
        "high" => 16384,
        _ => return None,
    };
    Some(json!({"type": "enabled", "budget_tokens": budget}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translated(openai: Value) -> Value {
        translate(&openai, "claude", &Options::parse("{}").unwrap())
            .unwrap()
            .body
    }

    #[test]
    fn system_messages_lift_and_turns_merge() {
        let body = translated(json!({"messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "developer", "content": "Use metric."},
            {"role": "user", "content": "Hi"},
            {"role": "user", "content": "There?"}
        ]}));
        assert_eq!(
            body["system"],
            json!([{"type": "text", "text": "Be terse."}, {"type": "text", "text": "Use metric."}])
        );
        assert_eq!(
            body["messages"].as_array().unwrap().len(),
            1,
            "consecutive user turns merge"
        );
        assert_eq!(body["max_tokens"], 4096, "always sent");
        assert_eq!(body["model"], "claude");
    }

    #[test]
    fn tool_calls_and_results_keep_their_ids() {
        let body = translated(json!({"messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
        ], "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
           "tool_choice": "required"}));
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages[1]["content"][0]["type"], "tool_use");
        assert_eq!(messages[1]["content"][0]["id"], "call_1");
        assert_eq!(messages[1]["content"][0]["input"], json!({"city": "Paris"}));
        assert_eq!(messages[2]["content"][0]["type"], "tool_result");
        assert_eq!(messages[2]["content"][0]["tool_use_id"], "call_1");
        assert_eq!(body["tools"][0]["input_schema"], json!({"type": "object"}));
        assert_eq!(body["tool_choice"], json!({"type": "any"}));
    }

    #[test]
    fn a_json_schema_becomes_a_forced_tool() {
        let body = translated(json!({"messages": [{"role": "user", "content": "Give JSON"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object"}}}}));
        assert_eq!(
            body["tool_choice"],
            json!({"type": "tool", "name": "json_output"})
        );
        assert_eq!(body["tools"][0]["name"], "json_output");
    }
}
