//! Decodes an OpenAI server-sent event stream: chunks pass through as they
//! are; usage is read for accounting; `[DONE]` ends it; `error` objects fail it.

use crate::exports::switchboard::plugin::provider::{
    Decoded, ErrorClass, GuestStreamDecoder, ProviderError, SseEvent, Target,
};
use crate::{WireUsage, classify};
use serde::Deserialize;
use std::cell::Cell;

pub struct Decoder {
    include_usage: bool,
    done: Cell<bool>,
}

/// What the decoder reads of a chunk; the chunk itself is forwarded verbatim.
#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Option<Vec<serde::de::IgnoredAny>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

impl GuestStreamDecoder for Decoder {
    fn new(_target: Target, include_usage: bool) -> Self {
        Decoder {
            include_usage,
            done: Cell::new(false),
        }
    }

    fn feed(&self, event: SseEvent) -> Result<Decoded, ProviderError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            self.done.set(true);
            return Ok(Decoded {
                chunks: Vec::new(),
                usage: None,
                done: true,
            });
        }
        if data.is_empty() || self.done.get() {
            return Ok(Decoded {
                chunks: Vec::new(),
                usage: None,
                done: false,
            });
        }
        let chunk: Chunk = serde_json::from_str(data).map_err(|e| ProviderError {
            class: ErrorClass::Server,
            message: format!("malformed stream event from provider: {e}"),
            retry_after_ms: None,
        })?;
        if let Some(error) = &chunk.error {
            return Err(classify::classify_stream_error(error));
        }
        let usage = chunk.usage.map(WireUsage::into_usage);
        // The usage-only chunk (empty choices) is forwarded only when the caller asked for it.
        let usage_only = usage.is_some() && chunk.choices.as_ref().is_none_or(|c| c.is_empty());
        let chunks = if usage_only && !self.include_usage {
            Vec::new()
        } else {
            vec![data.as_bytes().to_vec()]
        };
        Ok(Decoded {
            chunks,
            usage,
            done: false,
        })
    }
}
