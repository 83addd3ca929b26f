//! Adapter options from the provider's `options` table.

use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    api_version: Option<String>,
}

pub struct Options {
    /// Path prefix before `/models/...` (default `/v1beta`).
    pub prefix: String,
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
        })
    }
}
