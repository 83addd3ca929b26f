//! Decodes Gemini's SSE stream (each event a partial `GenerateContentResponse`)
//! into OpenAI chunks. The event carrying a `finishReason` ends the answer.

use crate::exports::switchboard::plugin::provider::{
    Decoded, Emitted, ErrorClass, GuestStreamDecoder, OutEvent, ProviderError, RequestContext, SseBatch,
    Target,
};
use crate::switchboard::plugin::types::Usage;
use crate::{answer_id, finish_reason, response, usage_from, usage_json};
use serde_json::{Value, json};
use std::cell::Cell;
use switchboard_guest::sse::Event;

/// What one event decoded to.
struct One {
    chunks: Vec<Vec<u8>>,
    usage: Option<Usage>,
    model: String,
    done: bool,
}

pub struct Decoder {
    model: String,
    id: String,
    created: u64,
    include_usage: bool,
    started: Cell<bool>,
    /// Tool calls sent so far, for their OpenAI indices.
    tools: Cell<u32>,
}

fn failure(class: ErrorClass, message: String) -> ProviderError {
    ProviderError {
        class,
        message,
        retry_after_ms: None,
    }
}

impl GuestStreamDecoder for Decoder {
    fn new(target: Target, context: RequestContext, include_usage: bool) -> Self {
        Decoder {
            model: target.model,
            id: answer_id(&context),
            created: context.created,
            include_usage,
            started: Cell::new(false),
            tools: Cell::new(0),
        }
    }

    fn feed(&self, batch: SseBatch) -> Decoded {
        let events = switchboard_guest::batch_events!(batch);
        let mut decoded = Decoded {
            events: Vec::new(),
            usage: None,
            model: None,
            done: false,
            error: None,
        };
        for event in &events {
            match self.feed_one(event) {
                Err(error) => {
                    decoded.error = Some(error);
                    break;
                }
                Ok(one) => {
                    decoded.events.extend(
                        one.chunks
                            .into_iter()
                            .map(|data| Emitted::Write(OutEvent { event: None, data })),
                    );
                    decoded.usage = one.usage.or(decoded.usage);
                    decoded.model = Some(one.model);
                    if one.done {
                        decoded.done = true;
                        break;
                    }
                }
            }
        }
        decoded
    }
}

impl Decoder {
    fn feed_one(&self, event: &Event) -> Result<One, ProviderError> {
        let answer: Value = serde_json::from_str(event.data).map_err(|e| {
            failure(
                ErrorClass::Server,
                format!("malformed stream event from provider: {e}"),
            )
        })?;
        if let Some(error) = answer.get("error") {
            let body = json!({"error": error}).to_string();
            let status = error.get("code").and_then(Value::as_u64).unwrap_or(500) as u16;
            return Err(crate::classify::classify(status, "", body.as_bytes()));
        }
        let id = &self.id;
        let model = answer
            .get("modelVersion")
            .and_then(Value::as_str)
            .unwrap_or(&self.model)
            .to_string();
        let chunk = |delta: Value, finish: Option<&str>| {
            json!({"id": id, "object": "chat.completion.chunk", "created": self.created, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            .to_string()
            .into_bytes()
        };
        let mut chunks = Vec::new();
        if !self.started.replace(true) {
            chunks.push(chunk(json!({"role": "assistant", "content": ""}), None));
        }
        let candidate = answer.get("candidates").and_then(|c| c.get(0));
        let mut done = false;
        match candidate {
            None => {
                if let Some(reason) = answer
                    .get("promptFeedback")
                    .and_then(|f| f.get("blockReason"))
                    .and_then(Value::as_str)
                {
                    chunks.push(chunk(
                        json!({"refusal": format!("prompt blocked: {reason}")}),
                        Some("content_filter"),
                    ));
                    done = true;
                }
            }
            Some(candidate) => {
                let (text, reasoning, calls) = response::parts(candidate, 0, self.tools.get());
                if !reasoning.is_empty() {
                    chunks.push(chunk(json!({"reasoning_content": reasoning}), None));
                }
                if !text.is_empty() {
                    chunks.push(chunk(json!({"content": text}), None));
                }
                for call in calls {
                    // Gemini sends each call whole: one chunk with id, name and arguments.
                    let index = self.tools.get();
                    self.tools.set(index + 1);
                    let mut call = call;
                    call["index"] = json!(index);
                    chunks.push(chunk(json!({"tool_calls": [call]}), None));
                }
                if let Some(reason) = candidate.get("finishReason").and_then(Value::as_str) {
                    let finish = finish_reason(reason, self.tools.get() > 0)
                        .map_err(|m| failure(ErrorClass::Server, m))?;
                    chunks.push(chunk(json!({}), Some(finish)));
                    done = true;
                }
            }
        }
        let metadata = answer.get("usageMetadata");
        if done
            && self.include_usage
            && let Some(metadata) = metadata
        {
            let usage = json!({"id": id, "object": "chat.completion.chunk", "created": self.created, "model": model,
                               "choices": [], "usage": usage_json(metadata)});
            chunks.push(usage.to_string().into_bytes());
        }
        Ok(One {
            chunks,
            usage: metadata.map(usage_from),
            model,
            done,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder() -> Decoder {
        <Decoder as GuestStreamDecoder>::new(
            Target {
                provider: "p".into(),
                model: "gemini-2.5-flash".into(),
                options: "{}".into(),
            },
            RequestContext {
                id: "req-3".into(),
                created: 1_700_000_000,
                format: crate::switchboard::plugin::types::ApiFormat::OpenaiChat,
            },
            true,
        )
    }

    /// One event without a name, as a batch.
    fn batch(data: &str) -> SseBatch {
        use crate::exports::switchboard::plugin::provider::{Span, SseEvent};
        switchboard_guest::sse_batch!([(None, data)])
    }

    fn feed(decoder: &Decoder, event: Value) -> Result<(Vec<Value>, Decoded), ProviderError> {
        let mut decoded = decoder.feed(batch(&event.to_string()));
        if let Some(error) = decoded.error.take() {
            return Err(error);
        }
        let chunks = decoded
            .events
            .iter()
            .map(|e| match e {
                Emitted::Write(out) => serde_json::from_slice(&out.data).unwrap(),
                Emitted::Forward(_) => panic!("a translated stream forwards nothing"),
            })
            .collect();
        Ok((chunks, decoded))
    }

    #[test]
    fn text_then_a_finish_with_usage_ends_the_answer() {
        let decoder = decoder();
        let (chunks, decoded) = feed(
            &decoder,
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}, "index": 0}]}),
        )
        .unwrap();
        assert!(!decoded.done);
        assert_eq!(chunks[0]["id"], "chatcmpl-req-3");
        assert_eq!(chunks[0]["created"], 1_700_000_000);
        assert_eq!(
            chunks[0]["choices"][0]["delta"]["role"], "assistant",
            "the first chunk has the role"
        );
        let (chunks, decoded) = feed(
            &decoder,
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "lo"}]}, "finishReason": "STOP", "index": 0}],
                   "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 3, "totalTokenCount": 15}}),
        )
        .unwrap();
        assert!(decoded.done, "the finishReason event ends a Gemini stream");
        let finish: Vec<&Value> = chunks
            .iter()
            .map(|c| &c["choices"][0]["finish_reason"])
            .filter(|f| !f.is_null())
            .collect();
        assert_eq!(finish, [&json!("stop")]);
        let usage = decoded.usage.unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (12, 3));
        assert!(
            chunks.iter().any(|c| c["usage"]["total_tokens"] == 15),
            "a usage chunk when asked"
        );
    }

    #[test]
    fn an_error_in_the_stream_is_classified_and_garbage_is_a_server_error() {
        let decoder = decoder();
        let error = feed(
            &decoder,
            json!({"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}),
        )
        .unwrap_err();
        assert_eq!(error.class, ErrorClass::RateLimited);
        let garbage = decoder
            .feed(batch("{not json"))
            .error
            .expect("garbage fails the stream");
        assert_eq!(garbage.class, ErrorClass::Server);
    }
}
