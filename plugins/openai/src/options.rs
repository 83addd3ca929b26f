//! Adapter options from the provider's `options` table: what makes one adapter
//! fit OpenAI, Azure-style auth, vLLM, Ollama, Groq and the rest.

use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    /// Path appended to the base URL.
    path: Option<String>,
    /// Path of the embeddings endpoint.
    embeddings_path: Option<String>,
    /// Path of the Responses endpoint (for `responses_api` providers).
    responses_path: Option<String>,
    /// `bearer` (default), `none`, `header:<name>` or `query:<name>`.
    auth: Option<String>,
    /// Static headers added to every request (e.g. OpenRouter's `http-referer`).
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Send `max_tokens` under this name instead (`max_completion_tokens`), or
    /// rename `max_completion_tokens` back to `max_tokens` for older hosts.
    max_tokens_field: Option<String>,
    /// Request fields this host rejects; they are removed before sending.
    #[serde(default)]
    drop_params: Vec<String>,
    /// Ask the host for a usage chunk on streams (default true) so the gateway
    /// can account them even when the caller did not ask.
    stream_usage: Option<bool>,
}

pub enum Auth {
    Bearer,
    Header(String),
    Query(String),
    None,
}

pub struct Options {
    pub path: String,
    pub embeddings_path: String,
    pub responses_path: String,
    pub auth: Auth,
    pub headers: BTreeMap<String, String>,
    max_tokens_field: Option<String>,
    drop_params: Vec<String>,
    stream_usage: bool,
}

impl Options {
    pub fn parse(json: &str) -> Result<Self, String> {
        let raw: Raw = serde_json::from_str(if json.trim().is_empty() { "{}" } else { json })
            .map_err(|e| format!("invalid openai adapter options: {e}"))?;
        let auth = match raw.auth.as_deref() {
            None | Some("bearer") => Auth::Bearer,
            Some("none") => Auth::None,
            Some(other) => match other.split_once(':') {
                Some(("header", name)) if !name.is_empty() => Auth::Header(name.to_lowercase()),
                Some(("query", name)) if !name.is_empty() => Auth::Query(name.to_string()),
                _ => {
                    return Err(format!(
                        "invalid openai adapter option auth = {other:?}: expected bearer, none, header:<name> or query:<name>"
                    ));
                }
            },
        };
        if let Some(field) = &raw.max_tokens_field
            && field != "max_tokens"
            && field != "max_completion_tokens"
        {
            return Err(format!(
                "invalid openai adapter option max_tokens_field = {field:?}: expected max_tokens or max_completion_tokens"
            ));
        }
        let path = raw.path.unwrap_or_else(|| "/chat/completions".into());
        let embeddings_path = raw.embeddings_path.unwrap_or_else(|| "/embeddings".into());
        let responses_path = raw.responses_path.unwrap_or_else(|| "/responses".into());
        for (name, value) in [
            ("path", &path),
            ("embeddings_path", &embeddings_path),
            ("responses_path", &responses_path),
        ] {
            if !value.starts_with('/') {
                return Err(format!(
                    "invalid openai adapter option {name} = {value:?}: must start with /"
                ));
            }
        }
        Ok(Options {
            path,
            embeddings_path,
            responses_path,
            auth,
            headers: raw.headers,
            max_tokens_field: raw.max_tokens_field,
            drop_params: raw.drop_params,
            stream_usage: raw.stream_usage.unwrap_or(true),
        })
    }

    /// How the request goes out when that can be told without building
    /// its tree: as it came, when its model is already `model` and no
    /// option would change it, or, for a stream that did not ask for
    /// usage, with `stream_options` added at its end. `None` when it must
    /// be rewritten from its tree (or read whole to tell).
    pub fn without_tree(&self, request: &[u8], model: &str) -> Option<Untouched> {
        #[derive(serde::Deserialize)]
        struct Peek<'a> {
            #[serde(borrow)]
            model: Option<std::borrow::Cow<'a, str>>,
            stream: Option<bool>,
            /// Absent (`None`) told from `null` (`Some(None)`): only an
            /// absent member can be added without a duplicate.
            #[serde(default, deserialize_with = "present")]
            stream_options: Option<Option<StreamOptions>>,
        }
        #[derive(serde::Deserialize)]
        struct StreamOptions {
            include_usage: Option<bool>,
        }
        fn present<'de, D: serde::Deserializer<'de>>(
            value: D,
        ) -> Result<Option<Option<StreamOptions>>, D::Error> {
            serde::Deserialize::deserialize(value).map(Some)
        }
        if self.max_tokens_field.is_some() || !self.drop_params.is_empty() {
            return None;
        }
        let peek: Peek = serde_json::from_slice(request).ok()?;
        if peek.model.as_deref() != Some(model) {
            return None;
        }
        let streaming = peek.stream.unwrap_or(false);
        let usage_asked = peek
            .stream_options
            .as_ref()
            .is_some_and(|o| o.as_ref().and_then(|o| o.include_usage) == Some(true));
        if !(streaming && self.stream_usage) || usage_asked {
            return Some(Untouched::AsItCame { streaming });
        }
        if peek.stream_options.is_some() {
            return None;
        }
        // The closing brace of the object read above (an array of its
        // fields would have read too).
        let end = request.trim_ascii_end();
        let object = end.strip_suffix(b"}")?;
        let mut body = Vec::with_capacity(end.len() + USAGE_ASKED.len());
        body.extend_from_slice(object);
        body.extend_from_slice(USAGE_ASKED);
        Some(Untouched::UsageAsked(body))
    }

    /// Adjust a canonical request body to what this host accepts; true
    /// when anything changed.
    pub fn rewrite(&self, body: &mut Map<String, Value>, streaming: bool) -> bool {
        let mut changed = false;
        if let Some(field) = &self.max_tokens_field {
            let other = if field == "max_tokens" {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            if let Some(value) = body.remove(other) {
                body.entry(field.clone()).or_insert(value);
                changed = true;
            }
        }
        for name in &self.drop_params {
            changed |= body.remove(name).is_some();
        }
        if streaming && self.stream_usage {
            // `null` is no options, as OpenAI reads it: usage is asked for.
            let options = body.entry("stream_options").or_insert(Value::Null);
            if options.is_null() {
                *options = Value::Object(Map::new());
            }
            if let Value::Object(options) = options {
                let asked = Value::Bool(true);
                changed |= options.insert("include_usage".into(), asked.clone()) != Some(asked);
            }
        }
        changed
    }
}

switchboard_guest::parse_once_per_text!(Options);

/// A request that goes out without its tree being built.
#[derive(Debug, PartialEq)]
pub enum Untouched {
    /// As it came; whether it streams.
    AsItCame { streaming: bool },
    /// A stream whose request did not ask for usage: its bytes with
    /// `stream_options` asking for it as their last member.
    UsageAsked(Vec<u8>),
}

/// The last member a stream's request gets when it did not ask for usage
/// (a request always has a `model` before it), and the object's end.
const USAGE_ASKED: &[u8] = br#","stream_options":{"include_usage":true}}"#;
