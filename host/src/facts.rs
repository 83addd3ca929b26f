//! Request facts: what routing needs to know about a request, derived once
//! from the parsed body and headers.

use crate::plugin::types::{ApiFormat, Capabilities, RequestFacts};
use http::HeaderMap;
use serde_json::{Map, Value};

/// Header prefix of caller tags (`x-switchboard-tag-team: search`).
const TAG_PREFIX: &str = "x-switchboard-tag-";
/// Rough cost of one image input, in tokens (OpenAI's high-detail tile base).
const IMAGE_TOKENS: u32 = 765;
/// Framing tokens per message.
const MESSAGE_OVERHEAD_TOKENS: u32 = 4;

pub struct Facts {
    pub estimated_prompt_tokens: u32,
    pub max_output_tokens: Option<u32>,
    pub needs: Capabilities,
    pub stream: bool,
    pub include_usage: bool,
    pub tags: Vec<(String, String)>,
    /// The start of the last user message and of the system prompt, when
    /// the route lets its policy see them.
    pub last_user_excerpt: Option<String>,
    pub system_excerpt: Option<String>,
    /// The smallest share of the caller's budgets left, when one applies.
    pub budget_remaining: Option<f64>,
    /// The API the caller spoke.
    pub format: ApiFormat,
}

impl Facts {
    /// `excerpt_chars`: how much of the last user message and of the system
    /// prompt the policy may see (the route's `facts_excerpt_chars`; 0 = none).
    pub fn derive(body: &Map<String, Value>, headers: &HeaderMap, excerpt_chars: usize) -> Facts {
        let mut needs = Capabilities::empty();
        let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
        if stream {
            needs |= Capabilities::STREAMING;
        }
        if body
            .get("tools")
            .and_then(Value::as_array)
            .is_some_and(|t| !t.is_empty())
        {
            needs |= Capabilities::TOOLS;
        }
        if let Some(kind) = body
            .get("response_format")
            .and_then(|f| f.get("type"))
            .and_then(Value::as_str)
            && (kind == "json_schema" || kind == "json_object")
        {
            needs |= Capabilities::JSON_SCHEMA;
        }
        let mut chars: usize = 0;
        let mut images: u32 = 0;
        let messages = body
            .get("messages")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for message in messages {
            if message.get("role").and_then(Value::as_str) == Some("tool")
                || message.get("tool_calls").is_some()
            {
                needs |= Capabilities::TOOLS;
            }
            match message.get("content") {
                Some(Value::String(text)) => chars += text.len(),
                Some(Value::Array(parts)) => {
                    for part in parts {
                        match part.get("type").and_then(Value::as_str) {
                            Some("image_url") => {
                                needs |= Capabilities::IMAGES;
                                images += 1;
                            }
                            _ => chars += part.get("text").and_then(Value::as_str).map_or(0, str::len),
                        }
                    }
                }
                _ => {}
            }
            if let Some(calls) = message.get("tool_calls") {
                chars += calls.to_string().len();
            }
        }
        if let Some(tools) = body.get("tools") {
            chars += tools.to_string().len();
        }
        // ~4 characters per token is the usual estimate for English text and JSON.
        let estimated =
            (chars / 4) as u32 + images * IMAGE_TOKENS + messages.len() as u32 * MESSAGE_OVERHEAD_TOKENS;
        let max_output_tokens = ["max_completion_tokens", "max_tokens"]
            .iter()
            .find_map(|k| body.get(*k).and_then(Value::as_u64))
            .map(|n| n.min(u32::MAX as u64) as u32);
        let include_usage = body
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mut tags: Vec<(String, String)> = headers
            .iter()
            .filter_map(|(name, value)| {
                let tag = name.as_str().strip_prefix(TAG_PREFIX)?;
                Some((tag.to_string(), value.to_str().ok()?.to_string()))
            })
            .collect();
        if let Some(user) = body.get("user").and_then(Value::as_str) {
            tags.push(("user".into(), user.to_string()));
        }
        let (last_user_excerpt, system_excerpt) = if excerpt_chars == 0 {
            (None, None)
        } else {
            excerpts(messages, excerpt_chars)
        };
        Facts {
            estimated_prompt_tokens: estimated,
            max_output_tokens,
            needs,
            stream,
            include_usage,
            tags,
            last_user_excerpt,
            system_excerpt,
            budget_remaining: None,
            format: ApiFormat::OpenAiChat,
        }
    }

    /// The facts of an embeddings request (`input` a string, strings, or
    /// token arrays, checked by the caller).
    pub fn for_embeddings(body: &Map<String, Value>, headers: &HeaderMap) -> Facts {
        let tokens = |input: &Value| -> u32 {
            match input {
                Value::String(text) => (text.len() / 4).max(1) as u32,
                // A token array counts its tokens.
                Value::Array(items) if items.iter().all(Value::is_number) => items.len() as u32,
                Value::Array(items) => items
                    .iter()
                    .map(|item| match item {
                        Value::String(text) => (text.len() / 4).max(1) as u32,
                        Value::Array(ids) => ids.len() as u32,
                        _ => 0,
                    })
                    .sum(),
                _ => 0,
            }
        };
        let mut facts = Facts::derive(&Map::new(), headers, 0);
        facts.estimated_prompt_tokens = body.get("input").map_or(0, tokens);
        facts.needs = Capabilities::EMBEDDINGS;
        if let Some(user) = body.get("user").and_then(Value::as_str) {
            facts.tags.push(("user".into(), user.to_string()));
        }
        facts
    }

    pub fn for_policy(&self, route: &str) -> RequestFacts {
        RequestFacts {
            model: route.to_string(),
            estimated_prompt_tokens: self.estimated_prompt_tokens,
            max_output_tokens: self.max_output_tokens,
            needs: self.needs,
            tags: self.tags.clone(),
            stream: self.stream,
            format: self.format,
            last_user_excerpt: self.last_user_excerpt.clone(),
            system_excerpt: self.system_excerpt.clone(),
            budget_remaining: self.budget_remaining,
        }
    }
}

/// The text of a message: its string content, or its text parts joined.
fn text_of(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The first `limit` characters of `text` (never splitting a character).
fn bounded(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((end, _)) => text[..end].to_string(),
        None => text.to_string(),
    }
}

/// The last user message and the system prompt (system and developer
/// messages joined by a blank line), each cut to `limit` characters.
fn excerpts(messages: &[Value], limit: usize) -> (Option<String>, Option<String>) {
    let role = |m: &Value| m.get("role").and_then(Value::as_str).unwrap_or("").to_string();
    let last_user = messages
        .iter()
        .rev()
        .find(|m| role(m) == "user")
        .map(|m| bounded(&text_of(m), limit));
    let system: Vec<String> = messages
        .iter()
        .filter(|m| matches!(role(m).as_str(), "system" | "developer"))
        .map(text_of)
        .collect();
    let system = (!system.is_empty()).then(|| bounded(&system.join("\n\n"), limit));
    (last_user, system)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn facts(body: Value) -> Facts {
        let mut headers = HeaderMap::new();
        headers.insert("x-switchboard-tag-team", "search".parse().unwrap());
        Facts::derive(body.as_object().unwrap(), &headers, 0)
    }

    #[test]
    fn excerpts_are_bounded_by_characters_and_only_given_when_asked() {
        let body = json!({"model": "m", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "first question"},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "héllo wörld, a long last question"}]},
        ]});
        let f = Facts::derive(body.as_object().unwrap(), &HeaderMap::new(), 11);
        assert_eq!(f.last_user_excerpt.as_deref(), Some("héllo wörld"));
        assert_eq!(f.system_excerpt.as_deref(), Some("Be brief.\n\n"));
        let f = Facts::derive(body.as_object().unwrap(), &HeaderMap::new(), 13);
        assert_eq!(f.system_excerpt.as_deref(), Some("Be brief.\n\nAn"));
        let policy = f.for_policy("route");
        assert_eq!(policy.last_user_excerpt, f.last_user_excerpt);
        let none = facts(body);
        assert_eq!((none.last_user_excerpt, none.system_excerpt), (None, None));
    }

    #[test]
    fn needs_follow_the_request() {
        let f = facts(json!({
            "model": "m", "stream": true, "stream_options": {"include_usage": true},
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "response_format": {"type": "json_schema"},
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
            ]}],
            "max_tokens": 50, "user": "u1"
        }));
        let four =
            Capabilities::TOOLS | Capabilities::IMAGES | Capabilities::JSON_SCHEMA | Capabilities::STREAMING;
        assert_eq!(f.needs, four);
        assert!(f.stream && f.include_usage);
        assert_eq!(f.max_output_tokens, Some(50));
        assert!(f.estimated_prompt_tokens >= IMAGE_TOKENS);
        assert_eq!(
            f.tags,
            vec![("team".into(), "search".into()), ("user".into(), "u1".into())]
        );
    }

    #[test]
    fn plain_text_needs_nothing_and_is_estimated_by_length() {
        let f = facts(json!({"model": "m", "messages": [{"role": "user", "content": "a".repeat(400)}]}));
        assert_eq!(f.needs, Capabilities::empty());
        assert_eq!(f.estimated_prompt_tokens, 100 + MESSAGE_OVERHEAD_TOKENS);
        assert_eq!(f.max_output_tokens, None);
    }

    #[test]
    fn tool_history_needs_tools() {
        let f = facts(json!({"model": "m", "messages": [
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "42"}
        ]}));
        assert!(f.needs.contains(Capabilities::TOOLS));
    }
}
