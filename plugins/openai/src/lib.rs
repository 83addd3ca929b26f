//! The `openai` provider adapter: OpenAI Chat Completions and every host that speaks it.
//!
//! The canonical format *is* OpenAI's, so requests and answers mostly pass
//! through untouched; the adapter's work is in the options that make it fit
//! OpenAI-compatible hosts, in reading usage, and in classifying failures.

mod classify;
mod options;
mod stream;

wit_bindgen::generate!({
    world: "adapter",
    path: "../../wit",
});

use exports::switchboard::plugin::provider::{
    AdapterInfo, Completion, CredentialPlacement, Guest, InboundResponse, OutboundRequest, ProviderError,
    Target,
};
use options::Options;
use serde::Deserialize;
use serde_json::{Map, Value};
use switchboard::plugin::types::{Capabilities, Usage};

struct OpenAi;

impl Guest for OpenAi {
    type StreamDecoder = stream::Decoder;

    fn describe() -> AdapterInfo {
        AdapterInfo {
            name: "openai".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            capabilities: Capabilities::all(),
        }
    }

    fn build_request(request: Vec<u8>, target: Target) -> Result<OutboundRequest, String> {
        let options = Options::parse(&target.options)?;
        let mut body: Map<String, Value> = serde_json::from_slice(&request)
            .map_err(|e| format!("request body is not a JSON object: {e}"))?;
        // `{model}` in the path names the deployment (Azure OpenAI).
        let path = options.path.replace("{model}", &target.model);
        body.insert("model".into(), Value::String(target.model));
        let streaming = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
        options.rewrite(&mut body, streaming);

        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        if streaming {
            headers.push(("accept".into(), "text/event-stream".into()));
        }
        headers.extend(options.headers.iter().map(|(k, v)| (k.to_lowercase(), v.clone())));
        Ok(OutboundRequest {
            method: "POST".into(),
            path,
            headers,
            body: serde_json::to_vec(&body).map_err(|e| e.to_string())?,
            credential: options.credential(),
            stream: streaming,
        })
    }

    fn parse_response(response: InboundResponse, _target: Target) -> Result<Completion, String> {
        /// Only what is needed to check the shape and read usage; the body
        /// itself passes through byte for byte.
        #[derive(Deserialize)]
        struct Shape {
            choices: Vec<serde::de::IgnoredAny>,
            usage: Option<WireUsage>,
        }
        let shape: Shape = serde_json::from_slice(&response.body)
            .map_err(|e| format!("provider answer is not a chat completion: {e}"))?;
        if shape.choices.is_empty() {
            return Err("provider answer has no choices".into());
        }
        Ok(Completion {
            usage: shape.usage.map(WireUsage::into_usage),
            body: response.body,
        })
    }

    fn classify_error(response: InboundResponse, _target: Target) -> ProviderError {
        classify::classify(response.status, &response.headers, &response.body)
    }
}

/// `usage` as OpenAI sends it.
#[derive(Deserialize)]
pub(crate) struct WireUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: u32,
}

impl WireUsage {
    pub(crate) fn into_usage(self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            cached_prompt_tokens: self.prompt_tokens_details.map_or(0, |d| d.cached_tokens),
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
