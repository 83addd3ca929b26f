//! Adapter options from the provider's `options` table.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    path: Option<String>,
    version: Option<String>,
    #[serde(default)]
    beta: Vec<String>,
    default_max_tokens: Option<u32>,
    #[serde(default)]
    max_tokens_by_model: BTreeMap<String, u32>,
    json_tool_name: Option<String>,
}

pub struct Options {
    /// Path appended to the base URL (default `/v1/messages`).
    pub path: String,
    /// `anthropic-version` header (default 2023-06-01).
    pub version: Option<String>,
    /// `anthropic-beta` features to enable.
    pub beta: Vec<String>,
    /// `max_tokens` when the caller gives none (Anthropic requires it).
    pub default_max_tokens: u32,
    /// Per-model overrides of `default_max_tokens`.
    pub max_tokens_by_model: BTreeMap<String, u32>,
    /// Name of the tool used to obtain structured (JSON) output.
    pub json_tool_name: Option<String>,
}

impl Options {
    pub fn parse(json: &str) -> Result<Self, String> {
        let raw: Raw = serde_json::from_str(if json.trim().is_empty() { "{}" } else { json })
            .map_err(|e| format!("invalid anthropic adapter options: {e}"))?;
        let path = raw.path.unwrap_or_else(|| "/v1/messages".into());
        if !path.starts_with('/') {
            return Err(format!(
                "invalid anthropic adapter option path = {path:?}: must start with /"
            ));
        }
        Ok(Options {
            path,
            version: raw.version,
            beta: raw.beta,
            default_max_tokens: raw.default_max_tokens.unwrap_or(4096),
            max_tokens_by_model: raw.max_tokens_by_model,
            json_tool_name: raw.json_tool_name,
        })
    }
}

switchboard_guest::parse_once_per_text!(Options);
