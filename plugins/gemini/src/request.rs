//! OpenAI Chat Completions request -> Gemini `GenerateContentRequest`.

use crate::options::SchemaField;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use switchboard_guest::canonical::{self, Image, ToolChoice};

pub fn translate(openai: &Value, schema_field: SchemaField) -> Result<Value, String> {
    let request = openai.as_object().ok_or("request body is not a JSON object")?;
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("`messages` is missing")?;
    let mut body = Map::new();

    let (system, contents) = contents(messages)?;
    if !system.is_empty() {
        body.insert("systemInstruction".into(), json!({"parts": system}));
    }
    body.insert("contents".into(), Value::Array(contents));

    let mut config = Map::new();
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
        ("seed", "seed"),
        ("n", "candidateCount"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ] {
        if let Some(v) = request.get(from).filter(|v| !v.is_null()) {
            config.insert(to.into(), v.clone());
        }
    }
    if let Some(max) = canonical::max_tokens(request) {
        config.insert("maxOutputTokens".into(), json!(max));
    }
    if let Some(stop) = canonical::stop_sequences(request) {
        config.insert("stopSequences".into(), Value::Array(stop));
    }
    match request
        .get("response_format")
        .and_then(|f| f.get("type"))
        .and_then(Value::as_str)
    {
        Some("json_object") => {
            config.insert("responseMimeType".into(), json!("application/json"));
        }
        Some("json_schema") => {
            let schema = request["response_format"]
                .get("json_schema")
                .and_then(|s| s.get("schema"))
                .ok_or("response_format.json_schema.schema is missing")?;
            config.insert("responseMimeType".into(), json!("application/json"));
            match schema_field {
                SchemaField::JsonSchema => config.insert("responseJsonSchema".into(), schema.clone()),
                SchemaField::Openapi => config.insert("responseSchema".into(), openapi_schema(schema)),
            };
        }
        Some("text") | None => {}
        Some(other) => return Err(format!("unsupported response_format type {other:?}")),
    }
    if let Some(effort) = request.get("reasoning_effort").and_then(Value::as_str) {
        let budget = match effort {
            "minimal" | "low" => 1024,
            "medium" => 8192,
            _ => 24576,
        };
        config.insert(
            "thinkingConfig".into(),
            json!({"thinkingBudget": budget, "includeThoughts": true}),
        );
    }
    if !config.is_empty() {
        body.insert("generationConfig".into(), Value::Object(config));
    }

    if let Some(tools) = request
        .get("tools")
        .and_then(Value::as_array)
        .filter(|t| !t.is_empty())
    {
        let declarations = tools.iter().map(declaration).collect::<Result<Vec<_>, _>>()?;
        body.insert("tools".into(), json!([{"functionDeclarations": declarations}]));
        if let Some(choice) = request.get("tool_choice") {
            body.insert(
                "toolConfig".into(),
                json!({"functionCallingConfig": tool_choice(choice)?}),
            );
        }
    }
    Ok(Value::Object(body))
}

/// System/developer messages become `systemInstruction`; user and tool
/// messages `user` turns, assistant messages `model` turns (merged when
/// consecutive, as Gemini expects alternation).
fn contents(messages: &[Value]) -> Result<(Vec<Value>, Vec<Value>), String> {
    let mut system = Vec::new();
    let mut turns: Vec<(&str, Vec<Value>)> = Vec::new();
    // Tool results name their function; OpenAI's only carry the call id.
    let mut call_names: HashMap<String, String> = HashMap::new();
    for (i, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        let (turn, parts) = match role {
            "system" | "developer" => {
                system.extend(text_parts(message.get("content"), i)?);
                continue;
            }
            "user" => ("user", user_parts(message.get("content"), i)?),
            "assistant" => {
                let mut parts = text_parts(message.get("content"), i)?;
                for call in canonical::tool_calls(message, i)? {
                    call_names.insert(call.id.to_string(), call.name.to_string());
                    parts.push(json!({"functionCall": {"name": call.name, "args": call.arguments}}));
                }
                ("model", parts)
            }
            "tool" => {
                let id = message
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let name = call_names.get(id).ok_or(format!(
                    "messages[{i}]: tool_call_id {id:?} answers no earlier tool call"
                ))?;
                let text = match message.get("content") {
                    Some(Value::String(s)) => s.clone(),
                    other => text_parts(other, i)?
                        .iter()
                        .filter_map(|p| p["text"].as_str())
                        .collect(),
                };
                // functionResponse.response must be an object.
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Object(object)) => Value::Object(object),
                    _ => json!({"content": text}),
                };
                (
                    "user",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
                )
            }
            other => return Err(format!("messages[{i}]: unknown role {other:?}")),
        };
        if parts.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, existing)) if *last == turn => existing.extend(parts),
            _ => turns.push((turn, parts)),
        }
    }
    let contents = turns
        .into_iter()
        .map(|(role, parts)| json!({"role": role, "parts": parts}))
        .collect();
    Ok((system, contents))
}

fn text_parts(content: Option<&Value>, i: usize) -> Result<Vec<Value>, String> {
    Ok(canonical::texts(content, i)?
        .into_iter()
        .map(|t| json!({"text": t}))
        .collect())
}

fn user_parts(content: Option<&Value>, i: usize) -> Result<Vec<Value>, String> {
    let Some(Value::Array(parts)) = content else {
        return text_parts(content, i);
    };
    let mut out = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        match part.get("type").and_then(Value::as_str) {
            Some("text") => {
                if let Some(text) = part.get("text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                    out.push(json!({"text": text}));
                }
            }
            Some("image_url") => out.push(image(canonical::image(part, i, j)?, url_of(part))),
            other => {
                return Err(format!(
                    "messages[{i}].content[{j}]: content part {other:?} is not supported by Gemini"
                ));
            }
        }
    }
    Ok(out)
}

fn url_of(part: &Value) -> &str {
    part.get("image_url")
        .and_then(|u| u.get("url").or(Some(u)))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Data URLs become `inlineData`; other URLs `fileData`, typed by extension.
fn image(image: Image<'_>, url: &str) -> Value {
    match image {
        Image::Inline { media_type, data } => json!({"inlineData": {"mimeType": media_type, "data": data}}),
        Image::Url(_) => {
            let lower = url.to_lowercase();
            let path = lower.split(['?', '#']).next().unwrap_or("");
            let mime = match path.rsplit('.').next() {
                Some("png") => "image/png",
                Some("webp") => "image/webp",
                Some("gif") => "image/gif",
                Some("heic") => "image/heic",
                _ => "image/jpeg",
            };
            json!({"fileData": {"mimeType": mime, "fileUri": url}})
        }
    }
}

fn declaration(tool: &Value) -> Result<Value, String> {
    let function = tool.get("function").ok_or("every tool needs a `function`")?;
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or("every tool function needs a `name`")?;
    let mut out = json!({"name": name});
    if let Some(description) = function.get("description").and_then(Value::as_str) {
        out["description"] = json!(description);
    }
    if let Some(parameters) = function.get("parameters") {
        out["parameters"] = openapi_schema(parameters);
    }
    Ok(out)
}

fn tool_choice(choice: &Value) -> Result<Value, String> {
    Ok(match canonical::tool_choice(choice)? {
        ToolChoice::Auto => json!({"mode": "AUTO"}),
        ToolChoice::None => json!({"mode": "NONE"}),
        ToolChoice::Required => json!({"mode": "ANY"}),
        ToolChoice::Named(name) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
    })
}

/// Gemini takes the OpenAPI subset of JSON Schema: drop the keywords it rejects.
fn openapi_schema(schema: &Value) -> Value {
    const UNSUPPORTED: &[&str] = &[
        "$schema",
        "additionalProperties",
        "strict",
        "$id",
        "$defs",
        "definitions",
    ];
    match schema {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !UNSUPPORTED.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), openapi_schema(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(openapi_schema).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_generation_config_and_penalties() {
        let body = translate(
            &json!({"messages": [
                {"role": "system", "content": "Be terse."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "Bye"}
            ], "temperature": 0.2, "max_tokens": 50, "presence_penalty": 0.5, "frequency_penalty": 0.1, "stop": ["END"]}),
            SchemaField::JsonSchema,
        )
        .unwrap();
        assert_eq!(
            body["systemInstruction"],
            json!({"parts": [{"text": "Be terse."}]})
        );
        let roles: Vec<&str> = body["contents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["user", "model", "user"]);
        let config = &body["generationConfig"];
        assert_eq!(config["temperature"], 0.2);
        assert_eq!(config["maxOutputTokens"], 50);
        assert_eq!(config["presencePenalty"], 0.5);
        assert_eq!(config["frequencyPenalty"], 0.1);
        assert_eq!(config["stopSequences"], json!(["END"]));
    }

    #[test]
    fn a_json_schema_goes_whole_or_as_the_openapi_subset() {
        let schema = json!({"type": "object", "additionalProperties": false, "properties": {"a": {"type": "integer"}}});
        let request = json!({"messages": [{"role": "user", "content": "JSON"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}});
        let whole = translate(&request, SchemaField::JsonSchema).unwrap();
        assert_eq!(whole["generationConfig"]["responseJsonSchema"], schema);
        let subset = translate(&request, SchemaField::Openapi).unwrap();
        assert_eq!(
            subset["generationConfig"]["responseSchema"],
            json!({"type": "object", "properties": {"a": {"type": "integer"}}})
        );
    }

    #[test]
    fn a_tool_result_is_named_from_its_call() {
        let body = translate(
            &json!({"messages": [
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                    "function": {"name": "weather", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"}
            ]}),
            SchemaField::JsonSchema,
        )
        .unwrap();
        let response = &body["contents"][2]["parts"][0]["functionResponse"];
        assert_eq!(response["name"], "weather");
        assert_eq!(response["response"], json!({"content": "sunny"}));
        let orphan = translate(
            &json!({"messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]}),
            SchemaField::JsonSchema,
        );
        assert!(orphan.unwrap_err().contains("answers no earlier tool call"));
    }
}
