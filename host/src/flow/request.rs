//! The caller's request as an attempt sends it: canonical chat JSON for any
//! adapter, or, for an adapter that speaks the caller's own format, the
//! caller's bytes with only `model` changed (pass-through).

use crate::plugin::types::ApiFormat;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// One request's body in the forms its attempts may need.
#[derive(Clone, Debug)]
pub struct RequestBody {
    /// Canonical chat JSON, `model` set per attempt; for a caller of
    /// another API, as much of its request as chat can say.
    canonical: Map<String, Value>,
    /// Why the caller's request cannot be sent as chat, when it cannot:
    /// then only a target that speaks the caller's format can take it.
    untranslatable: Option<String>,
    /// The caller's own body, when it spoke another API than chat.
    native: Option<Native>,
}

#[derive(Clone, Debug)]
struct Native {
    format: ApiFormat,
    bytes: Arc<[u8]>,
    /// Caller headers of the format's own (Anthropic's `anthropic-beta`),
    /// merged into what a target that speaks it is sent.
    headers: Vec<(String, String)>,
}

impl RequestBody {
    /// A chat request.
    pub fn chat(canonical: Map<String, Value>) -> RequestBody {
        RequestBody {
            canonical,
            untranslatable: None,
            native: None,
        }
    }

    /// A request in `format` (not chat): the caller's `bytes`, their
    /// translation to chat, and why that cannot be sent when it cannot.
    pub fn native(
        format: ApiFormat,
        bytes: impl Into<Arc<[u8]>>,
        canonical: Map<String, Value>,
        untranslatable: Option<String>,
    ) -> RequestBody {
        RequestBody {
            canonical,
            untranslatable,
            native: Some(Native {
                format,
                bytes: bytes.into(),
                headers: Vec::new(),
            }),
        }
    }

    /// Forward these caller headers to targets that speak its format: a
    /// comma-separated list is merged with the adapter's own value.
    pub fn forwarding(mut self, headers: Vec<(String, String)>) -> RequestBody {
        if let Some(native) = self.native.as_mut() {
            native.headers = headers;
        }
        self
    }

    /// Merge the forwarded caller headers into a request built for `format`.
    pub fn merge_headers(&self, format: ApiFormat, into: &mut Vec<(String, String)>) {
        let Some(native) = self.native.as_ref().filter(|n| n.format == format) else {
            return;
        };
        for (name, value) in &native.headers {
            match into.iter_mut().find(|(n, _)| n == name) {
                None => into.push((name.clone(), value.clone())),
                Some((_, theirs)) => {
                    let mut merged: Vec<&str> = theirs.split(',').map(str::trim).collect();
                    for item in value.split(',').map(str::trim) {
                        if !item.is_empty() && !merged.contains(&item) {
                            merged.push(item);
                        }
                    }
                    *theirs = merged.join(",");
                }
            }
        }
    }

    /// The caller's format when it is not chat.
    pub fn native_format(&self) -> Option<ApiFormat> {
        self.native.as_ref().map(|n| n.format)
    }

    /// Why the request cannot be sent as chat, when it cannot.
    pub fn untranslatable(&self) -> Option<&str> {
        self.untranslatable.as_deref()
    }

    /// The canonical body, when it can be sent (what continuation of a
    /// broken stream rewrites).
    pub fn canonical(&self) -> Option<&Map<String, Value>> {
        self.untranslatable.is_none().then_some(&self.canonical)
    }

    /// As much of the request as chat can say: what its facts are derived
    /// from, sendable or not.
    pub fn facts_source(&self) -> &Map<String, Value> {
        &self.canonical
    }

    /// The body for a target of `model` that is sent `format`.
    pub fn bytes_for(&self, format: ApiFormat, model: &str) -> Result<Vec<u8>, String> {
        match &self.native {
            Some(native) if native.format == format => Ok(with_model(&native.bytes, model)),
            _ => match &self.untranslatable {
                Some(why) => Err(why.clone()),
                None => Ok(chat_bytes(&self.canonical, model)),
            },
        }
    }
}

/// The canonical request for one target: the caller's body with `model`
/// set, written straight from the shared map (attempts and hedges read one
/// body; none copies it).
pub fn chat_bytes(request: &Map<String, Value>, model: &str) -> Vec<u8> {
    serde_json::to_vec(&WithModel { request, model }).expect("a JSON map serialises")
}

/// A map serialised with its `model` replaced (in its place), or added last.
struct WithModel<'a> {
    request: &'a Map<String, Value>,
    model: &'a str,
}

impl serde::Serialize for WithModel<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let has_model = self.request.contains_key("model");
        let mut map = serializer.serialize_map(Some(self.request.len() + usize::from(!has_model)))?;
        for (key, value) in self.request {
            if key == "model" {
                map.serialize_entry(key, self.model)?;
            } else {
                map.serialize_entry(key, value)?;
            }
        }
        if !has_model {
            map.serialize_entry("model", self.model)?;
        }
        map.end()
    }
}

/// `bytes` (a JSON object) with its top-level `model` replaced, every other
/// byte as the caller sent it. A body whose `model` cannot be located this
/// way (an escaped key, say) is rewritten whole.
fn with_model(bytes: &[u8], model: &str) -> Vec<u8> {
    let quoted = serde_json::to_string(model).expect("a string serialises");
    if let Ok(fields) = serde_json::from_slice::<HashMap<&str, &RawValue>>(bytes)
        && let Some(raw) = fields.get("model")
    {
        let raw = raw.get().as_bytes();
        let start = raw.as_ptr() as usize - bytes.as_ptr() as usize;
        let end = start + raw.len();
        if raw == quoted.as_bytes() {
            return bytes.to_vec();
        }
        let mut out = Vec::with_capacity(bytes.len() + quoted.len());
        out.extend_from_slice(&bytes[..start]);
        out.extend_from_slice(quoted.as_bytes());
        out.extend_from_slice(&bytes[end..]);
        return out;
    }
    let map: Map<String, Value> = serde_json::from_slice(bytes).unwrap_or_default();
    chat_bytes(&map, model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_model_changes_in_a_native_body() {
        let caller = br#"{ "z": 1.50, "model" : "claude-route", "thinking": {"signature": "a\u00e9b"} }"#;
        let out = with_model(caller, "claude-sonnet-4-5");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{ "z": 1.50, "model" : "claude-sonnet-4-5", "thinking": {"signature": "a\u00e9b"} }"#
        );
        // The same model: the caller's bytes as they are.
        assert_eq!(with_model(caller, "claude-route"), caller.to_vec());
        // No model at all: one is added.
        let added: Value = serde_json::from_slice(&with_model(br#"{"a":1}"#, "m")).unwrap();
        assert_eq!(added, serde_json::json!({"a": 1, "model": "m"}));
    }

    #[test]
    fn the_chat_body_has_the_targets_model_in_place_or_added() {
        let mut request = Map::new();
        request.insert("a".into(), Value::from(1));
        request.insert("model".into(), Value::from("route"));
        request.insert("z".into(), Value::from(2));
        let sent: Value = serde_json::from_slice(&chat_bytes(&request, "m")).unwrap();
        assert_eq!(sent, serde_json::json!({"a": 1, "model": "m", "z": 2}));
        assert_eq!(request["model"], "route", "the shared body is not changed");
        request.remove("model");
        let sent: Value = serde_json::from_slice(&chat_bytes(&request, "m")).unwrap();
        assert_eq!(sent, serde_json::json!({"a": 1, "model": "m", "z": 2}));
    }

    #[test]
    fn a_format_the_target_does_not_speak_gets_the_translation_or_why_not() {
        let body = RequestBody::native(
            ApiFormat::AnthropicMessages,
            br#"{"model":"r"}"#.to_vec(),
            Map::new(),
            Some("server tools cannot cross".into()),
        );
        assert_eq!(
            body.bytes_for(ApiFormat::AnthropicMessages, "m").unwrap(),
            br#"{"model":"m"}"#.to_vec()
        );
        assert_eq!(
            body.bytes_for(ApiFormat::OpenAiChat, "m").unwrap_err(),
            "server tools cannot cross"
        );
    }

    #[test]
    fn forwarded_headers_merge_with_the_adapters_only_for_the_callers_format() {
        let body = RequestBody::native(ApiFormat::AnthropicMessages, b"{}".to_vec(), Map::new(), None)
            .forwarding(vec![("anthropic-beta".into(), "b2, b1".into())]);
        let mut headers = vec![("anthropic-beta".into(), "b1".into())];
        body.merge_headers(ApiFormat::AnthropicMessages, &mut headers);
        assert_eq!(headers, [("anthropic-beta".to_string(), "b1,b2".to_string())]);
        let mut chat = Vec::new();
        body.merge_headers(ApiFormat::OpenAiChat, &mut chat);
        assert!(chat.is_empty());
    }
}
