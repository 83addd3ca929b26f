//! The caller's request as an attempt sends it: the caller's own bytes
//! with only `model` changed, for an adapter that speaks the caller's
//! format (chat too: most requests pass through), else canonical chat JSON
//! written from the parsed request.

use crate::plugin::types::ApiFormat;
use bytes::Bytes;
use serde_json::{Map, Value};
use std::ops::Range;
use switchboard_guest::scan::{ScanError, Scanner};

/// One request's body in the forms its attempts may need.
#[derive(Clone, Debug)]
pub struct RequestBody {
    /// Canonical chat JSON, `model` set per attempt; for a caller of
    /// another API, as much of its request as chat can say.
    canonical: Map<String, Value>,
    /// A chat caller's own body, when it can be sent as it came (no name
    /// twice in any of its objects: see [`AsSent::of`]): `canonical` is
    /// what it says, so it is sent instead of `canonical` written out again.
    chat: Option<AsSent>,
    /// Why the caller's request cannot be sent as chat, when it cannot:
    /// then only a target that speaks the caller's format can take it.
    untranslatable: Option<String>,
    /// The caller's own body, when it spoke another API than chat.
    native: Option<Native>,
}

#[derive(Clone, Debug)]
struct Native {
    format: ApiFormat,
    /// The caller's bytes, found once with their `model` (nested repeats
    /// are the provider's to read, as the caller meant them); else, a body
    /// without a plain `model`, parsed to be written out with one.
    body: Result<AsSent, Map<String, Value>>,
    /// Caller headers of the format's own (Anthropic's `anthropic-beta`),
    /// merged into what a target that speaks it is sent.
    headers: Vec<(String, String)>,
}

impl RequestBody {
    /// A chat request: `canonical` parsed from the caller's `bytes`.
    pub fn chat(bytes: Bytes, canonical: Map<String, Value>) -> RequestBody {
        RequestBody {
            canonical,
            chat: AsSent::of(bytes, true),
            untranslatable: None,
            native: None,
        }
    }

    /// A chat request the gateway wrote itself (a broken stream's
    /// continuation): sent as `canonical` says.
    pub fn rewritten(canonical: Map<String, Value>) -> RequestBody {
        RequestBody {
            canonical,
            chat: None,
            untranslatable: None,
            native: None,
        }
    }

    /// A request in `format` (not chat): the caller's `bytes`, their
    /// translation to chat, and why that cannot be sent when it cannot.
    pub fn native(
        format: ApiFormat,
        bytes: impl Into<Bytes>,
        canonical: Map<String, Value>,
        untranslatable: Option<String>,
    ) -> RequestBody {
        let bytes = bytes.into();
        // Else, what the body says, to write it out from (empty where it
        // is not a JSON object).
        let body = AsSent::of(bytes.clone(), false)
            .ok_or_else(|| serde_json::from_slice(&bytes).unwrap_or_default());
        RequestBody {
            canonical,
            chat: None,
            untranslatable,
            native: Some(Native {
                format,
                body,
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
        match (&self.native, &self.untranslatable) {
            (Some(native), _) if native.format == format => Ok(match &native.body {
                Ok(sent) => sent.with_model(model),
                Err(parsed) => chat_bytes(parsed, model),
            }),
            (_, Some(why)) => Err(why.clone()),
            (_, None) => Ok(match &self.chat {
                Some(sent) => sent.with_model(model),
                None => chat_bytes(&self.canonical, model),
            }),
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

/// A JSON object as the caller sent it, and where its top-level `model`
/// value is: read once, then each attempt's body is three copies.
#[derive(Clone, Debug)]
struct AsSent {
    bytes: Bytes,
    model: Range<usize>,
}

impl AsSent {
    /// `bytes`, when they are one JSON object with a `model` and no object
    /// in them (only the outermost, unless `nested`) names a member twice:
    /// where one does, the gateway read the last, and a provider (or an
    /// adapter's parser, which may refuse the repeat) might read the
    /// first, so such a body is written out from what the gateway read. So
    /// is one with a name written with an escape (`mod\u0065l`, which no
    /// caller writes), which is not compared, and one with an object of
    /// more than [`NAMES`] members.
    fn of(bytes: Bytes, nested: bool) -> Option<AsSent> {
        let model = std::str::from_utf8(&bytes).ok().and_then(|text| {
            let mut scanner = Scanner::new(text);
            let mut names = Vec::with_capacity(32);
            let mut model = None;
            (members(&mut scanner, text, &mut names, |scanner, name, names| {
                scanner.peek();
                let start = scanner.at();
                match nested {
                    true => unique(scanner, text, names)?,
                    false => scanner.skip()?,
                }
                if name == b"model" {
                    model = Some(start..scanner.at());
                }
                Ok(())
            }))
            .ok()?;
            scanner.end().ok()?;
            model
        });
        model.map(|model| AsSent { bytes, model })
    }

    /// The body with `model` as its model, every other byte as it came.
    fn with_model(&self, model: &str) -> Vec<u8> {
        let quoted = serde_json::to_string(model).expect("a string serialises");
        let (before, after) = (&self.bytes[..self.model.start], &self.bytes[self.model.end..]);
        let mut out = Vec::with_capacity(before.len() + quoted.len() + after.len());
        out.extend_from_slice(before);
        out.extend_from_slice(quoted.as_bytes());
        out.extend_from_slice(after);
        out
    }
}

/// The most members of one object whose names are compared: past them,
/// comparing each name with all would cost more than writing the body out.
const NAMES: usize = 64;

/// An object's members, each name new to it, plain (not escaped) and
/// within [`NAMES`] (else an error), its value read by `value`. The names
/// of the objects being read are kept in `names` (where each is in `text`).
fn members(
    scanner: &mut Scanner,
    text: &str,
    names: &mut Vec<Range<usize>>,
    mut value: impl FnMut(&mut Scanner, &[u8], &mut Vec<Range<usize>>) -> Result<(), ScanError>,
) -> Result<(), ScanError> {
    let from = names.len();
    scanner.object("an object", |scanner, name| {
        // A plain name is a slice of `text`; an escaped one is not.
        let start = (name.as_ptr() as usize).wrapping_sub(text.as_ptr() as usize);
        if start >= text.len()
            || names.len() - from == NAMES
            || (names[from..].iter()).any(|seen| text.as_bytes()[seen.clone()] == *name)
        {
            return Err(scanner.error("not sent as it came"));
        }
        names.push(start..start + name.len());
        value(scanner, name, names)
    })?;
    names.truncate(from);
    Ok(())
}

/// Past a value, refused (an error) where an object in it names a member
/// twice, with an escape, or past [`NAMES`].
fn unique(scanner: &mut Scanner, text: &str, names: &mut Vec<Range<usize>>) -> Result<(), ScanError> {
    match scanner.peek() {
        Some(b'{') => members(scanner, text, names, |scanner, _, names| {
            unique(scanner, text, names)
        }),
        Some(b'[') => scanner.array(|scanner| unique(scanner, text, names)),
        _ => scanner.skip(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body in the caller's own API as a target that speaks it is sent it.
    fn with_model(bytes: &Bytes, model: &str) -> Vec<u8> {
        let body = RequestBody::native(ApiFormat::AnthropicMessages, bytes.clone(), Map::new(), None);
        body.bytes_for(ApiFormat::AnthropicMessages, model).unwrap()
    }

    #[test]
    fn only_the_model_changes_in_a_native_body() {
        let caller = Bytes::from_static(
            br#"{ "z": 1.50, "model" : "claude-route", "thinking": {"signature": "a\u00e9b"} }"#,
        );
        let out = with_model(&caller, "claude-sonnet-4-5");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{ "z": 1.50, "model" : "claude-sonnet-4-5", "thinking": {"signature": "a\u00e9b"} }"#
        );
        // The same model: the caller's bytes as they are.
        assert_eq!(with_model(&caller, "claude-route"), caller.to_vec());
        // Deeper in, what the caller's API reads is the provider's to read.
        let deeper = Bytes::from_static(br#"{"model": "r", "tools": [{"schema": {"a": 1, "a": 2}}]}"#);
        assert_eq!(
            String::from_utf8(with_model(&deeper, "m")).unwrap(),
            r#"{"model": "m", "tools": [{"schema": {"a": 1, "a": 2}}]}"#
        );
        // No model at all: one is added.
        let added: Value =
            serde_json::from_slice(&with_model(&Bytes::from_static(br#"{"a":1}"#), "m")).unwrap();
        assert_eq!(added, serde_json::json!({"a": 1, "model": "m"}));
    }

    /// A chat body as an attempt sends it to a chat adapter.
    fn sent(caller: &str, model: &str) -> String {
        let canonical = serde_json::from_str(caller).unwrap();
        let body = RequestBody::chat(Bytes::copy_from_slice(caller.as_bytes()), canonical);
        String::from_utf8(body.bytes_for(ApiFormat::OpenAiChat, model).unwrap()).unwrap()
    }

    #[test]
    fn a_chat_body_goes_as_it_came_but_for_its_model() {
        // Its order, spacing, numbers and escapes; a `model` deeper in is
        // not the request's; the target's model is written as a JSON string.
        assert_eq!(
            sent(
                r#" {"messages":[{"role":"user","content":"h\u00e9\"","model":"x"}], "temperature": 1.50,"model" : "route", "n":1e2 } "#,
                "gpt-4o"
            ),
            r#" {"messages":[{"role":"user","content":"h\u00e9\"","model":"x"}], "temperature": 1.50,"model" : "gpt-4o", "n":1e2 } "#
        );
        assert_eq!(sent(r#"{"model":"route"}"#, "o\"ne"), r#"{"model":"o\"ne"}"#);
    }

    #[test]
    fn a_chat_body_with_a_name_twice_is_written_from_what_the_gateway_read() {
        // serde_json reads the last `model` (and the last of any name, at
        // any depth); a provider, or an adapter's parser, might read the
        // first or refuse it: the body is written as read. So is one with
        // an escaped name, which may be another's twin, and one with more
        // than 64 names in an object.
        let with_names = |n: usize| -> String {
            let names: String = (0..n).map(|i| format!(r#" "n{i}": {i},"#)).collect();
            format!(r#"{{{names} "x": 0}}"#)
        };
        let many = format!(r#"{{"model":"route","messages":[{}]}}"#, with_names(64));
        for caller in [
            r#"{"mod\u0065l":"route","a":[]}"#,
            r#"{"model":"a","messages":[],"model":"route"}"#,
            r#"{"model":"route","n":1,"n":2}"#,
            r#"{"model":"route","\u006e":1,"n":2}"#,
            r#"{"model":"route","messages":[{"role":"user","content":"a","content":"b"}]}"#,
            r#"{"model":"route","tools":[[{"a":{"b":1,"b":2}}]]}"#,
            r#"{"model":"route","messages":[{"r\u006fle":"user","role":"user"}]}"#,
            many.as_str(),
        ] {
            let mut read: Value = serde_json::from_str(caller).unwrap();
            read["model"] = "m".into();
            assert_eq!(sent(caller, "m"), read.to_string(), "{caller}");
        }
        // Names repeated in different objects are not twins; 64 names in
        // one object are compared.
        let caller = format!(
            r#"{{"model":"route", "messages":[{{"role":"user"}}, {{"role":"user", "n": {}}}]}}"#,
            with_names(63)
        );
        assert_eq!(
            sent(&caller, "m"),
            caller.replace(r#""model":"route""#, r#""model":"m""#)
        );
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
