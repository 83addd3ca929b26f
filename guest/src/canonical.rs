//! Reading the canonical request: the pieces every adapter translates.

use serde_json::{Map, Value};

/// The caller's output limit: `max_completion_tokens`, else `max_tokens`.
pub fn max_tokens(request: &Map<String, Value>) -> Option<u64> {
    ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| request.get(*k).and_then(Value::as_u64))
}

/// `stop` as a list of sequences (a single string is a list of one).
pub fn stop_sequences(request: &Map<String, Value>) -> Option<Vec<Value>> {
    match request.get("stop") {
        Some(Value::String(s)) => Some(vec![Value::String(s.clone())]),
        Some(Value::Array(list)) if !list.is_empty() => Some(list.clone()),
        _ => None,
    }
}

/// The non-empty texts of a message's `content` (a string, or text parts).
/// `i` is the message's position, for the error.
pub fn texts(content: Option<&Value>, i: usize) -> Result<Vec<&str>, String> {
    Ok(match content {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) if text.is_empty() => Vec::new(),
        Some(Value::String(text)) => vec![text.as_str()],
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .filter(|t| !t.is_empty())
            .collect(),
        Some(_) => return Err(format!("messages[{i}].content must be a string or an array")),
    })
}

/// An image input.
#[derive(Debug, PartialEq, Eq)]
pub enum Image<'a> {
    /// A base64 `data:` URL, split.
    Inline { media_type: &'a str, data: &'a str },
    /// An `http(s)` URL.
    Url(&'a str),
}

/// The image of an `image_url` content part (`messages[i].content[j]`).
pub fn image<'a>(part: &'a Value, i: usize, j: usize) -> Result<Image<'a>, String> {
    let url = part
        .get("image_url")
        .and_then(|u| u.get("url").or(Some(u)))
        .and_then(Value::as_str)
        .ok_or(format!("messages[{i}].content[{j}].image_url.url is missing"))?;
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or(format!("messages[{i}].content[{j}]: malformed data URL"))?;
        let media_type = meta.strip_suffix(";base64").ok_or(format!(
            "messages[{i}].content[{j}]: only base64 data URLs are supported"
        ))?;
        return Ok(Image::Inline { media_type, data });
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(Image::Url(url));
    }
    Err(format!(
        "messages[{i}].content[{j}]: image URLs must be data: or http(s): URLs"
    ))
}

/// One of an assistant message's `tool_calls`, with its arguments parsed.
pub struct ToolCall<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub arguments: Value,
}

/// The tool calls of `messages[i]` (an assistant message), in order.
pub fn tool_calls(message: &Value, i: usize) -> Result<Vec<ToolCall<'_>>, String> {
    let calls = message
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    calls
        .iter()
        .enumerate()
        .map(|(j, call)| {
            let function = call
                .get("function")
                .ok_or(format!("messages[{i}].tool_calls[{j}].function is missing"))?;
            let text = function.get("arguments").and_then(Value::as_str).unwrap_or("{}");
            let arguments = if text.trim().is_empty() {
                Value::Object(Map::new())
            } else {
                serde_json::from_str(text).map_err(|e| {
                    format!("messages[{i}].tool_calls[{j}].function.arguments is not JSON: {e}")
                })?
            };
            Ok(ToolCall {
                id: call.get("id").and_then(Value::as_str).unwrap_or_default(),
                name: function.get("name").and_then(Value::as_str).unwrap_or_default(),
                arguments,
            })
        })
        .collect()
}

/// `tool_choice`, read.
#[derive(Debug, PartialEq, Eq)]
pub enum ToolChoice<'a> {
    Auto,
    None,
    Required,
    Named(&'a str),
}

pub fn tool_choice(choice: &Value) -> Result<ToolChoice<'_>, String> {
    match choice {
        Value::String(s) if s == "auto" => Ok(ToolChoice::Auto),
        Value::String(s) if s == "none" => Ok(ToolChoice::None),
        Value::String(s) if s == "required" => Ok(ToolChoice::Required),
        Value::Object(o) => o
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .map(ToolChoice::Named)
            .ok_or("tool_choice.function.name is missing".into()),
        other => Err(format!("unsupported tool_choice {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_common_request_fields() {
        let request = json!({"max_tokens": 10, "max_completion_tokens": 20, "stop": "END"});
        let request = request.as_object().unwrap();
        assert_eq!(max_tokens(request), Some(20));
        assert_eq!(stop_sequences(request), Some(vec![json!("END")]));
        assert_eq!(
            texts(
                Some(&json!([{"type": "text", "text": "a"}, {"type": "text", "text": ""}])),
                0
            )
            .unwrap(),
            ["a"]
        );
        assert!(texts(Some(&json!(3)), 2).unwrap_err().contains("messages[2]"));
    }

    #[test]
    fn splits_images_and_parses_tool_calls() {
        let inline = json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}});
        assert_eq!(
            image(&inline, 0, 0).unwrap(),
            Image::Inline {
                media_type: "image/png",
                data: "AAA"
            }
        );
        let remote = json!({"type": "image_url", "image_url": {"url": "https://x/y.jpg"}});
        assert_eq!(image(&remote, 0, 1).unwrap(), Image::Url("https://x/y.jpg"));
        assert!(
            image(&json!({"image_url": {"url": "ftp://x"}}), 1, 2)
                .unwrap_err()
                .contains("[1].content[2]")
        );
        let message =
            json!({"tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{\"a\":1}"}}]});
        let calls = tool_calls(&message, 0).unwrap();
        assert_eq!(
            (calls[0].id, calls[0].name, &calls[0].arguments),
            ("c", "f", &json!({"a": 1}))
        );
        let broken = json!({"tool_calls": [{"function": {"name": "f", "arguments": "{"}}]});
        assert!(tool_calls(&broken, 3).is_err());
        assert_eq!(
            tool_choice(&json!({"function": {"name": "f"}})).unwrap(),
            ToolChoice::Named("f")
        );
        assert_eq!(tool_choice(&json!("required")).unwrap(), ToolChoice::Required);
    }
}
