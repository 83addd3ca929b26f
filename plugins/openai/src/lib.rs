//! The `openai` provider adapter: OpenAI Chat Completions and every host that speaks it.
//!
//! The canonical format *is* OpenAI's, so requests and answers mostly pass
//! through untouched; the adapter's work is in the options that make it fit
//! OpenAI-compatible hosts, in reading usage, and in classifying failures.

mod classify;
mod options;
mod responses;
mod stream;

wit_bindgen::generate!({
    world: "adapter",
    path: "../../wit",
});

use exports::switchboard::plugin::provider::{
    AdapterInfo, Completion, CredentialPlacement, Embeddings, Guest, InboundResponse, OutboundRequest,
    ProviderError, RequestContext, Target,
};
use options::{Options, Untouched};
use serde::Deserialize;
use serde_json::{Map, Value};
use switchboard::plugin::types::{ApiFormat, Body, Capabilities, Usage};
use switchboard_guest::scan::{Once, ScanError, Scanner};

struct OpenAi;

impl Guest for OpenAi {
    type StreamDecoder = stream::Decoder;

    fn describe() -> AdapterInfo {
        AdapterInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            capabilities: Capabilities::all(),
            // Passed through only to providers whose host serves it
            // (`responses_api = true` in the gateway's configuration).
            native_formats: vec![ApiFormat::OpenaiResponses],
            stateless: true,
        }
    }

    fn validate_options(options: String) -> Result<(), String> {
        Options::parse(&options).map(|_| ())
    }

    fn build_request(
        request: Vec<u8>,
        target: Target,
        context: RequestContext,
    ) -> Result<OutboundRequest, String> {
        let options = Options::cached(&target.options)?;
        if context.format == ApiFormat::OpenaiResponses {
            // The caller's bytes as they are: the host has set the model.
            let streaming = responses::streaming(&request);
            let path = options.responses_path.clone();
            return Ok(post(&options, path, streaming, Body::Unchanged));
        }
        let path = deployment_path(&options.path, &target.model);
        match options.without_tree(&request, &target.model) {
            Some(Untouched::AsItCame { streaming }) => {
                return Ok(post(&options, path, streaming, Body::Unchanged));
            }
            Some(Untouched::UsageAsked(body)) => return Ok(post(&options, path, true, Body::Bytes(body))),
            None => {}
        }
        let (mut body, mut changed) = with_model(&request, target.model)?;
        let streaming = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
        changed |= options.rewrite(&mut body, streaming);
        Ok(post(&options, path, streaming, tree_body(&body, changed)?))
    }

    fn parse_response(
        response: InboundResponse,
        _target: Target,
        context: RequestContext,
    ) -> Result<Completion, String> {
        if context.format == ApiFormat::OpenaiResponses {
            return responses::parse(&response.body);
        }
        let (usage, model) = COMPLETION.read(&response.body)?;
        Ok(Completion {
            usage: usage.map(WireUsage::into_usage),
            model,
            body: Body::Unchanged,
        })
    }

    fn classify_error(response: InboundResponse, _target: Target) -> ProviderError {
        classify::classify(response.status, &response.headers, &response.body)
    }

    fn build_embeddings_request(request: Vec<u8>, target: Target) -> Result<OutboundRequest, String> {
        let options = Options::cached(&target.options)?;
        let path = deployment_path(&options.embeddings_path, &target.model);
        // The host has set the model (its inputs, thousands of strings at
        // times, are not built into a tree to be told so).
        #[derive(Deserialize)]
        struct Model<'a> {
            #[serde(borrow)]
            model: Option<std::borrow::Cow<'a, str>>,
        }
        if let Ok(Model { model: Some(model) }) = serde_json::from_slice(&request)
            && model == target.model
        {
            return Ok(post(&options, path, false, Body::Unchanged));
        }
        let (body, changed) = with_model(&request, target.model)?;
        Ok(post(&options, path, false, tree_body(&body, changed)?))
    }

    fn parse_embeddings_response(response: InboundResponse, _target: Target) -> Result<Embeddings, String> {
        let (usage, _) = EMBEDDINGS.read(&response.body)?;
        Ok(Embeddings {
            usage: usage.map(WireUsage::into_usage),
            body: Body::Unchanged,
        })
    }
}

/// An answer the adapter passes on byte for byte, and what it reads of it.
struct Answer {
    /// The provider's name for it, in errors: "a chat completion".
    kind: &'static str,
    /// The array that must hold at least one item: `choices`.
    list: &'static [u8],
    /// What the items are, in the error when there are none: "choices".
    items: &'static str,
    /// Whether its `model` is read (a string where present and not null).
    model: bool,
}

const COMPLETION: Answer = Answer {
    kind: "a chat completion",
    list: b"choices",
    items: "choices",
    model: true,
};

const EMBEDDINGS: Answer = Answer {
    kind: "an embeddings list",
    list: b"data",
    items: "embeddings",
    model: false,
};

impl Answer {
    /// Its `usage` and `model` where present and not null, once it is one
    /// JSON object whose list is an array of at least one item. One pass of
    /// the scanner over it (its `usage` object alone is handed to serde): a
    /// Wasm serde_json skipping every member, the choices' text or the
    /// embeddings' numbers, cost more.
    fn read(&self, body: &[u8]) -> Result<(Option<WireUsage>, Option<String>), String> {
        let not_one = |e: &dyn std::fmt::Display| format!("provider answer is not {}: {e}", self.kind);
        let text = std::str::from_utf8(body).map_err(|e| not_one(&e))?;
        let mut scanner = Scanner::new(text);
        let (mut items, mut usage, mut model) = (None, None, None);
        scanner
            .object("expected an object", |scanner, name| {
                let read_model = self.model && name == b"model";
                let seen = match name {
                    _ if name == self.list => items.is_some(),
                    b"usage" => usage.is_some(),
                    _ => read_model && model.is_some(),
                };
                if seen {
                    return Err(scanner.error("duplicate member"));
                }
                if name == self.list {
                    let mut count = 0_usize;
                    scanner.array(|scanner| {
                        count += 1;
                        scanner.skip()
                    })?;
                    items = Some(count);
                } else if name == b"usage" {
                    scanner.peek();
                    let start = scanner.at();
                    let present = scanner.present()?;
                    usage = Some(present.then(|| &text[start..scanner.at()]));
                } else if read_model {
                    let named = scanner.optional_string("`model` is not a string")?;
                    model = Some(named.map(|model| model.decode().into_owned()));
                } else {
                    scanner.skip()?;
                }
                Ok(())
            })
            .and_then(|()| scanner.end())
            .map_err(|e| not_one(&e))?;
        match items {
            None => {
                return Err(not_one(&format_args!(
                    "no `{}`",
                    String::from_utf8_lossy(self.list)
                )));
            }
            Some(0) => return Err(format!("provider answer has no {}", self.items)),
            Some(_) => {}
        }
        let usage = (usage.flatten())
            .map(WireUsage::read)
            .transpose()
            .map_err(|e| not_one(&format_args!("`usage`: {e}")))?;
        Ok((usage, model.flatten()))
    }
}

/// `path` with `{model}` replaced by `model`: there, it names the
/// deployment (Azure OpenAI). Looked for only where there is a brace: a
/// substring search is set up afresh for every call.
fn deployment_path(path: &str, model: &str) -> String {
    if path.as_bytes().contains(&b'{') {
        path.replace("{model}", model)
    } else {
        path.to_string()
    }
}

/// The request as a JSON object with `model` set, and whether that changed it.
fn with_model(request: &[u8], model: String) -> Result<(Map<String, Value>, bool), String> {
    let mut body: Map<String, Value> =
        serde_json::from_slice(request).map_err(|e| format!("request body is not a JSON object: {e}"))?;
    let changed = body.get("model").and_then(Value::as_str) != Some(&model);
    body.insert("model".into(), Value::String(model));
    Ok((body, changed))
}

/// A JSON `POST` to `path` with the options' headers and credential.
fn post(options: &Options, path: String, streaming: bool, body: Body) -> OutboundRequest {
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    if streaming {
        headers.push(("accept".into(), "text/event-stream".into()));
    }
    headers.extend(options.headers.iter().map(|(k, v)| (k.to_lowercase(), v.clone())));
    OutboundRequest {
        method: "POST".into(),
        path,
        headers,
        body,
        credential: options.credential(),
    }
}

/// A body rewritten from its tree; when nothing changed it, the host sends
/// the caller's bytes as they are.
fn tree_body(body: &Map<String, Value>, changed: bool) -> Result<Body, String> {
    if !changed {
        return Ok(Body::Unchanged);
    }
    serde_json::to_vec(body)
        .map(Body::Bytes)
        .map_err(|e| e.to_string())
}

/// `usage` as OpenAI sends it: cached and reasoning tokens are already
/// parts of the totals.
#[derive(Deserialize)]
pub(crate) struct WireUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u32>,
}

#[derive(Deserialize)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<u32>,
}

impl WireUsage {
    /// From a `usage` value's text (checked JSON), as serde's derive reads
    /// it: by the scanner where it is the usual object of counts, else by
    /// serde itself (the errors and the rare forms, such as an array of
    /// the fields, are its own). Serde in Wasm cost a quarter of reading
    /// a whole 783-byte answer.
    pub(crate) fn read(text: &str) -> Result<WireUsage, serde_json::Error> {
        Self::plain(text).map_or_else(|| serde_json::from_str(text), Ok)
    }

    /// An object whose counts are written as plain integers that fit (or,
    /// where optional, null), each named once; `None` for anything else.
    pub(crate) fn plain(text: &str) -> Option<WireUsage> {
        Self::scan(&mut Scanner::new(text)).ok()
    }

    /// [`WireUsage::plain`] where `scanner` is: an error for anything not
    /// plain (the text is JSON already, so that is all an error says).
    pub(crate) fn scan(scanner: &mut Scanner) -> Result<WireUsage, ScanError> {
        let mut usage = WireUsage {
            prompt_tokens: 0,
            completion_tokens: 0,
            prompt_tokens_details: None,
            completion_tokens_details: None,
        };
        let count = |scanner: &mut Scanner| -> Result<Option<u32>, ScanError> {
            let count = scanner.optional_u64("")?;
            count.map_or(Ok(None), |n| {
                u32::try_from(n)
                    .map(Some)
                    .map_err(|_| scanner.error("a count past u32"))
            })
        };
        // `{"<key>": count or null, ...}` or null: the count, if any.
        let detail = |scanner: &mut Scanner, key: &[u8]| -> Result<Option<Option<u32>>, ScanError> {
            if scanner.null()? {
                return Ok(None);
            }
            let (mut value, mut once) = (None, Once::default());
            scanner.object("", |scanner, name| {
                if name != key {
                    return scanner.skip();
                }
                once.check(scanner)?;
                value = count(scanner)?;
                Ok(())
            })?;
            Ok(Some(value))
        };
        let [
            mut prompt,
            mut completion,
            mut prompt_details,
            mut completion_details,
        ] = [Once::default(); 4];
        scanner.object("", |scanner, name| {
            match name {
                b"prompt_tokens" => {
                    prompt.check(scanner)?;
                    usage.prompt_tokens = count(scanner)?.ok_or_else(|| scanner.error("a null count"))?;
                }
                b"completion_tokens" => {
                    completion.check(scanner)?;
                    usage.completion_tokens = count(scanner)?.ok_or_else(|| scanner.error("a null count"))?;
                }
                b"prompt_tokens_details" => {
                    prompt_details.check(scanner)?;
                    usage.prompt_tokens_details = detail(scanner, b"cached_tokens")?
                        .map(|cached_tokens| PromptDetails { cached_tokens });
                }
                b"completion_tokens_details" => {
                    completion_details.check(scanner)?;
                    usage.completion_tokens_details = detail(scanner, b"reasoning_tokens")?
                        .map(|reasoning_tokens| CompletionDetails { reasoning_tokens });
                }
                _ => scanner.skip()?,
            }
            Ok(())
        })?;
        Ok(usage)
    }

    pub(crate) fn into_usage(self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            cache_read_tokens: self
                .prompt_tokens_details
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            cache_write_tokens: 0,
            cache_write_hour_tokens: 0,
            reasoning_tokens: self
                .completion_tokens_details
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
        }
    }
}

impl Options {
    fn credential(&self) -> CredentialPlacement {
        match &self.auth {
            options::Auth::Bearer => CredentialPlacement::Bearer,
            options::Auth::Header(name) => CredentialPlacement::Header(name.clone()),
            options::Auth::Query(name) => CredentialPlacement::Query(name.clone()),
            options::Auth::None => CredentialPlacement::None,
        }
    }
}

export!(OpenAi);

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_guest::mutate::Mutator;

    /// What a reading of an answer said: usage counts and model.
    type Said = Option<(Option<(u32, u32, u32, u32)>, Option<String>)>;

    /// Its counts, the adapter's reading of a usage compared whole.
    pub(crate) fn counts(usage: Option<WireUsage>) -> Option<(u32, u32, u32, u32)> {
        usage.map(|u| {
            let u = u.into_usage();
            (
                u.prompt_tokens,
                u.completion_tokens,
                u.cache_read_tokens,
                u.reasoning_tokens,
            )
        })
    }

    /// `answer.read` says what `serde` (the derive it replaces) said, of
    /// `seeds` and of 30 000 mutations of them.
    fn reads_as_serde_did(answer: &Answer, serde: impl Fn(&[u8]) -> Said, seeds: &[&str], exact: &[&str]) {
        let ours = |body: &[u8]| {
            answer
                .read(body)
                .ok()
                .map(|(usage, model)| (counts(usage), model))
        };
        for body in seeds.iter().chain(exact) {
            assert_eq!(ours(body.as_bytes()), serde(body.as_bytes()), "{body}");
        }
        let mut mutator = Mutator::new(
            0x2545_f491_4f6c_dd1d,
            b"{}[]:,\" \\0123456789.eE+-abfnrtuxlsDd\x01\xc3\xa9",
            true,
        );
        let (mut compared, mut both_read) = (0, 0);
        for round in 0..30_000 {
            let mut body = seeds[round % seeds.len()].as_bytes().to_vec();
            for _ in 0..1 + mutator.below(3) {
                mutator.change(&mut body);
            }
            let (ours, theirs) = (ours(&body), serde(&body));
            compared += 1;
            both_read += usize::from(ours.is_some() && theirs.is_some());
            // serde's derive also takes an array of a struct's fields.
            let array = body.trim_ascii_start().starts_with(b"[");
            if !(array && ours.is_none()) {
                assert_eq!(ours, theirs, "{}", String::from_utf8_lossy(&body));
            }
        }
        assert!(
            both_read > compared / 10 && both_read < compared * 9 / 10,
            "{both_read} of {compared}"
        );
    }

    #[test]
    fn a_completion_is_read_as_serde_read_it() {
        #[derive(Deserialize)]
        struct Shape {
            choices: Vec<serde::de::IgnoredAny>,
            usage: Option<WireUsage>,
            model: Option<String>,
        }
        let serde = |body: &[u8]| {
            let shape: Shape = switchboard_guest::response::json(body).ok()?;
            (!shape.choices.is_empty()).then(|| (counts(shape.usage), shape.model))
        };
        let seeds = [
            r#"{"id":"chatcmpl-1","object":"chat.completion","created":1733000000,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! \u00e9\n\"q\"","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":20,"completion_tokens":62,"total_tokens":82,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":7}},"system_fingerprint":"fp_b"}"#,
            r#" { "choices" : [ {} , [ ] ] , "model" : null , "usage" : null } "#,
            r#"{"ch\u006fices":[1],"m\u006fdel":"m\ud83d\ude00","usage":{"prompt_tokens":1}}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2},"x":[true,false,-0.5e3,{"\ud800":"\udc00"}]}"#,
            r#"{"model":"m","choices":[{"message":{"tool_calls":[{"function":{"arguments":"{\"a\":1}"}}]}}]}"#,
        ];
        let exact = [
            r#"{"choices":[1],"model":"a","model":"b"}"#,
            r#"{"choices":[1],"usage":null,"usage":null}"#,
            r#"{"choices":[1],"choices":[2]}"#,
            r#"{"choices":[1],"usage":{"prompt_tokens":-1}}"#,
            r#"{"choices":[1],"model":7}"#,
        ];
        reads_as_serde_did(&COMPLETION, serde, &seeds, &exact);
    }

    #[test]
    fn usage_is_read_as_serde_read_it_and_the_usual_one_without_serde() {
        let seeds = [
            r#"{"prompt_tokens":20,"completion_tokens":62,"total_tokens":82,"prompt_tokens_details":{"cached_tokens":4,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":7,"accepted_prediction_tokens":0}}"#,
            r#"{"prompt_tokens":1,"prompt_tokens_details":null,"completion_tokens_details":{"reasoning_tokens":null}}"#,
            r#" { "pr\u006fmpt_tokens" : 4294967295 , "completion_tokens" : 0 , "x" : [ { } , "s" , -1.5e3 ] } "#,
            r#"[20,62,{"cached_tokens":1},null]"#,
            r#"{"prompt_tokens":1,"prompt_tokens":2}"#,
            r#"{"prompt_tokens":4294967296,"completion_tokens_details":{"reasoning_tokens":1,"reasoning_tokens":2}}"#,
            r#"{"prompt_tokens":null,"completion_tokens":-0,"prompt_tokens_details":{"cached_tokens":1.0}}"#,
            r#"{"completion_tokens":null,"prompt_tokens_details":[3],"completion_tokens_details":{"reasoning_tokens":1e1}}"#,
        ];
        // The usual ones are read by the scanner.
        for seed in &seeds[..3] {
            assert!(WireUsage::plain(seed).is_some(), "{seed}");
        }
        let counted = |usage: Result<WireUsage, serde_json::Error>| {
            usage.map(|u| counts(Some(u))).map_err(|e| e.to_string())
        };
        let mut mutator = Mutator::new(0x9e37_79b9_7f4a_7c15, b"{}[]:,\" \\0123456789.eE+-nul_t", true);
        let (mut compared, mut plain) = (0, 0);
        for text in mutator.texts(&seeds, 30_000) {
            // What it is given is JSON: the answer's reading checked it.
            let Some(text) = std::str::from_utf8(&text)
                .ok()
                .filter(|t| switchboard_guest::scan::is_json_text(t.as_bytes()))
            else {
                continue;
            };
            compared += 1;
            plain += usize::from(WireUsage::plain(text).is_some());
            assert_eq!(
                counted(WireUsage::read(text)),
                counted(serde_json::from_str(text)),
                "{text}"
            );
        }
        assert!(
            plain > compared / 10 && plain < compared * 9 / 10,
            "{plain} of {compared}"
        );
    }

    #[test]
    fn an_embeddings_list_is_read_as_serde_read_it() {
        #[derive(Deserialize)]
        struct Shape {
            data: Vec<serde::de::IgnoredAny>,
            usage: Option<WireUsage>,
        }
        let serde = |body: &[u8]| {
            let shape: Shape = switchboard_guest::response::json(body).ok()?;
            (!shape.data.is_empty()).then(|| (counts(shape.usage), None))
        };
        let seeds = [
            r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.0023064255,-0.009327292,1e-7,-4.5E+2]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}"#,
            r#"{"data":[{"embedding":"AAAAAA=="},{"embedding":[]}],"usage":null,"model":null}"#,
            r#" { "d\u0061ta" : [ 1 ] , "usage" : { "prompt_tokens" : 3 } } "#,
            r#"{"data":[],"usage":{"prompt_tokens":1}}"#,
        ];
        let exact = [
            r#"{"data":[1],"model":7,"model":[]}"#,
            r#"{"data":[1],"data":[2]}"#,
            r#"{"data":[1],"usage":{},"usage":{}}"#,
        ];
        reads_as_serde_did(&EMBEDDINGS, serde, &seeds, &exact);
    }

    fn target(options: &str) -> Target {
        Target {
            provider: "openai".into(),
            model: "gpt-4o-mini".into(),
            options: options.into(),
        }
    }

    fn context() -> RequestContext {
        RequestContext {
            id: "req-1".into(),
            created: 1_700_000_000,
            format: switchboard::plugin::types::ApiFormat::OpenaiChat,
        }
    }

    #[test]
    fn a_request_nothing_changes_is_sent_unchanged() {
        let request = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
        let built = OpenAi::build_request(request.to_vec(), target("{}"), context()).unwrap();
        assert!(matches!(built.body, Body::Unchanged));
        assert_eq!(built.path, "/chat/completions");
        // A stream gets include_usage added, so its body changes.
        let request = br#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#;
        let built = OpenAi::build_request(request.to_vec(), target("{}"), context()).unwrap();
        let Body::Bytes(body) = built.body else {
            panic!("the stream request was not rewritten");
        };
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["stream_options"]["include_usage"], true);
        // One that asked for usage already goes as it is, streamed.
        let request =
            br#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#;
        let built = OpenAi::build_request(request.to_vec(), target("{}"), context()).unwrap();
        assert!(matches!(built.body, Body::Unchanged));
        assert!(
            built
                .headers
                .contains(&("accept".into(), "text/event-stream".into()))
        );
        // Another model, or fields of another type than expected, are read whole.
        let request = br#"{"model":"route","messages":[]}"#;
        let built = OpenAi::build_request(request.to_vec(), target("{}"), context()).unwrap();
        let Body::Bytes(body) = built.body else {
            panic!("the model was not set");
        };
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap()["model"],
            "gpt-4o-mini"
        );
        let request = br#"{"model":"gpt-4o-mini","stream":"yes","messages":[]}"#;
        let built = OpenAi::build_request(request.to_vec(), target("{}"), context()).unwrap();
        assert!(
            matches!(built.body, Body::Unchanged),
            "a non-boolean stream is not a stream"
        );
        assert!(OpenAi::build_request(b"[1]".to_vec(), target("{}"), context()).is_err());
    }

    #[test]
    fn a_stream_asks_for_usage_with_its_bytes_kept() {
        let body = |request: &[u8]| {
            let built = OpenAi::build_request(request.to_vec(), target("{}"), context()).unwrap();
            let Body::Bytes(body) = built.body else {
                panic!("the stream request was not rewritten");
            };
            body
        };
        let request =
            br#"{ "model":"gpt-4o-mini","stream":true,"messages":[{"content":"a\u00e9 1.50"}], "z":1.50 } "#;
        assert_eq!(
            String::from_utf8(body(request)).unwrap(),
            r#"{ "model":"gpt-4o-mini","stream":true,"messages":[{"content":"a\u00e9 1.50"}], "z":1.50 ,"stream_options":{"include_usage":true}}"#
        );
        // Whitespace after the object stays out of it.
        let request = b"{\"model\":\"gpt-4o-mini\",\"stream\":true}\n";
        assert_eq!(
            body(request),
            br#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true}}"#
        );
        // Not asked for when the options say so.
        let request = br#"{"model":"gpt-4o-mini","stream":true}"#;
        let unasked = OpenAi::build_request(request.to_vec(), target(r#"{"stream_usage":false}"#), context());
        assert!(matches!(unasked.unwrap().body, Body::Unchanged));
        // An array of a request's fields is no request.
        let fields = br#"["gpt-4o-mini",true]"#.to_vec();
        assert!(OpenAi::build_request(fields, target("{}"), context()).is_err());
        // Options already there (null, or without include_usage, or under
        // an escaped name) are merged from the tree: never a member twice.
        for options in ["null", "{}", r#"{"include_usage":false,"x":1}"#] {
            let request = format!(r#"{{"model":"gpt-4o-mini","stream":true,"stream_options":{options}}}"#);
            let body = body(request.as_bytes());
            let text = String::from_utf8(body.clone()).unwrap();
            assert_eq!(text.matches("stream_options").count(), 1, "{text}");
            let body: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["stream_options"]["include_usage"], true, "{text}");
        }
        let escaped = br#"{"model":"gpt-4o-mini","stream":true,"stream\u005foptions":{}}"#;
        let body: Value = serde_json::from_slice(&body(escaped)).unwrap();
        assert_eq!(body["stream_options"], serde_json::json!({"include_usage": true}));
    }

    #[test]
    fn options_rewrite_and_are_checked() {
        let request = br#"{"model":"gpt-4o-mini","max_tokens":5,"seed":1,"messages":[]}"#;
        let options = r#"{"max_tokens_field":"max_completion_tokens","drop_params":["seed"],"path":"/deployments/{model}/chat"}"#;
        let built = OpenAi::build_request(request.to_vec(), target(options), context()).unwrap();
        let Body::Bytes(body) = built.body else {
            panic!("options changed nothing");
        };
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["max_completion_tokens"], 5);
        assert!(body.get("max_tokens").is_none() && body.get("seed").is_none());
        assert_eq!(built.path, "/deployments/gpt-4o-mini/chat");
        let refused = OpenAi::validate_options(r#"{"max_token_field":"x"}"#.into()).unwrap_err();
        assert!(refused.contains("unknown field `max_token_field`"), "{refused}");
        assert!(OpenAi::validate_options(options.into()).is_ok());
    }

    #[test]
    fn usage_reads_cached_and_reasoning_tokens_as_parts_of_the_totals() {
        let answer = br#"{"id":"x","model":"gpt-4o-mini-2024-07-18","choices":[{"index":0}],
            "usage":{"prompt_tokens":100,"completion_tokens":50,
              "prompt_tokens_details":{"cached_tokens":80},"completion_tokens_details":{"reasoning_tokens":30}}}"#;
        let response = InboundResponse {
            status: 200,
            headers: String::new(),
            body: answer.to_vec(),
        };
        let completion = OpenAi::parse_response(response, target("{}"), context()).unwrap();
        assert!(matches!(completion.body, Body::Unchanged));
        assert_eq!(completion.model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
        let usage = completion.usage.unwrap();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.cache_read_tokens,
                usage.reasoning_tokens
            ),
            (100, 50, 80, 30)
        );
    }

    #[test]
    fn embeddings_pass_through_with_their_usage() {
        let request = br#"{"model":"text-embedding-3-small","input":"hi"}"#;
        let mut t = target("{}");
        t.model = "text-embedding-3-small".into();
        let built = OpenAi::build_embeddings_request(request.to_vec(), t.clone()).unwrap();
        assert_eq!(built.path, "/embeddings");
        assert!(matches!(built.body, Body::Unchanged));
        // Another model (or none) is set: the body is written out with it.
        for other in [&br#"{"model":"e","input":["a"]}"#[..], br#"{"input":["a"]}"#] {
            let built = OpenAi::build_embeddings_request(other.to_vec(), t.clone()).unwrap();
            let Body::Bytes(body) = built.body else {
                panic!("written out")
            };
            let body: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                body,
                serde_json::json!({"model": "text-embedding-3-small", "input": ["a"]})
            );
        }
        let answer = br#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1]}],
            "model":"text-embedding-3-small","usage":{"prompt_tokens":2,"total_tokens":2}}"#;
        let response = InboundResponse {
            status: 200,
            headers: String::new(),
            body: answer.to_vec(),
        };
        let parsed = OpenAi::parse_embeddings_response(response, t).unwrap();
        assert_eq!(parsed.usage.unwrap().prompt_tokens, 2);
    }
}
