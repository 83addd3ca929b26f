//! A plugin built against contract 0.1 (`wit/v0.1/`), as one written before
//! 0.2 would be: the tests check that the host still loads and routes with
//! it next to 0.2 plugins.
//!
//! As an adapter it is an OpenAI pass-through that reads usage and says it
//! cannot translate images (so the host must send image requests to
//! another target); as a policy it plans the candidates in their
//! configured order.

wit_bindgen::generate!({
    world: "test:legacy/legacy",
    path: ["../../../wit/v0.1", "wit"],
    generate_all,
});

use exports::switchboard::plugin::provider::{
    self, AdapterInfo, Completion, CredentialPlacement, Decoded, ErrorClass, InboundResponse,
    OutboundRequest, ProviderError, SseEvent, Target,
};
use exports::switchboard::plugin::router::{self, Attempt, Candidate, RequestFacts};
use switchboard::plugin::types::{Capabilities, Usage};

struct Legacy;

/// Usage from an OpenAI answer or chunk, if it has one.
fn usage(json: &serde_json::Value) -> Option<Usage> {
    let usage = json.get("usage").filter(|u| u.is_object())?;
    let n = |key: &str| usage.get(key).and_then(|v| v.as_u64()).unwrap_or(0) as u32;
    Some(Usage {
        prompt_tokens: n("prompt_tokens"),
        completion_tokens: n("completion_tokens"),
        cached_prompt_tokens: 0,
    })
}

impl router::Guest for Legacy {
    fn validate_config(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn plan(
        _facts: RequestFacts,
        mut candidates: Vec<Candidate>,
        _config: String,
    ) -> Result<Vec<Attempt>, String> {
        candidates.sort_by_key(|c| c.index);
        Ok(candidates
            .into_iter()
            .map(|c| Attempt {
                candidate: c.index,
                timeout_ms: None,
            })
            .collect())
    }
}

impl provider::Guest for Legacy {
    type StreamDecoder = StreamDecoder;

    fn describe() -> AdapterInfo {
        AdapterInfo {
            name: "legacy".into(),
            version: "0.1.0".into(),
            capabilities: Capabilities::all() - Capabilities::IMAGES,
        }
    }

    fn build_request(request: Vec<u8>, target: Target) -> Result<OutboundRequest, String> {
        let mut body: serde_json::Value = serde_json::from_slice(&request).map_err(|e| e.to_string())?;
        body["model"] = target.model.into();
        let stream = body["stream"].as_bool().unwrap_or(false);
        if stream {
            body["stream_options"] = serde_json::json!({"include_usage": true});
        }
        Ok(OutboundRequest {
            method: "POST".into(),
            path: "/chat/completions".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(&body).map_err(|e| e.to_string())?,
            credential: CredentialPlacement::Bearer,
            stream,
        })
    }

    fn parse_response(response: InboundResponse, _target: Target) -> Result<Completion, String> {
        let answer: serde_json::Value = serde_json::from_slice(&response.body).map_err(|e| e.to_string())?;
        Ok(Completion {
            usage: usage(&answer),
            body: response.body,
        })
    }

    fn classify_error(response: InboundResponse, _target: Target) -> ProviderError {
        ProviderError {
            class: if response.status == 429 {
                ErrorClass::RateLimited
            } else {
                ErrorClass::Server
            },
            message: format!("HTTP {}", response.status),
            retry_after_ms: None,
        }
    }
}

pub struct StreamDecoder {
    include_usage: bool,
}

impl provider::GuestStreamDecoder for StreamDecoder {
    fn new(_target: Target, include_usage: bool) -> Self {
        StreamDecoder { include_usage }
    }

    fn feed(&self, event: SseEvent) -> Result<Decoded, ProviderError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            return Ok(Decoded {
                chunks: Vec::new(),
                usage: None,
                done: true,
            });
        }
        let chunk: serde_json::Value = serde_json::from_str(data).map_err(|e| ProviderError {
            class: ErrorClass::Server,
            message: e.to_string(),
            retry_after_ms: None,
        })?;
        let usage = usage(&chunk);
        let usage_only = usage.is_some() && chunk["choices"].as_array().is_none_or(|c| c.is_empty());
        Ok(Decoded {
            chunks: if usage_only && !self.include_usage {
                Vec::new()
            } else {
                vec![data.as_bytes().to_vec()]
            },
            usage,
            done: false,
        })
    }
}

export!(Legacy);
