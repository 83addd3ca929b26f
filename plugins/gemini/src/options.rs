//! Adapter options from the provider's `options` table.

use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    api_version: Option<String>,
    #[serde(default)]
    schema: SchemaField,
}

/// Where a `json_schema` response format goes.
#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub enum SchemaField {
    /// `responseJsonSchema`: JSON Schema as it is (`additionalProperties`,
    /// `$defs`/`$ref`, `anyOf`...).
    #[default]
    JsonSchema,
    /// `responseSchema`: Gemini's OpenAPI subset, for models that need it;
    /// keywords outside it are dropped.
    Openapi,
}

pub struct Options {
    /// Path prefix before `/models/...` (default `/v1beta`).
    pub prefix: String,
    pub schema: SchemaField,
}

impl Options {
    pub fn parse(json: &str) -> Result<Self, String> {
        let raw: Raw = serde_json::from_str(if json.trim().is_empty() { "{}" } else { json })
            .map_err(|e| format!("invalid gemini adapter options: {e}"))?;
        let version = raw.api_version.unwrap_or_else(|| "v1beta".into());
        if version.is_empty() || version.contains('/') {
            return Err(format!("invalid gemini adapter option api_version = {version:?}"));
        }
        Ok(Options {
            prefix: format!("/{version}"),
            schema: raw.schema,
        })
    }
}

switchboard_guest::parse_once_per_text!(Options);
