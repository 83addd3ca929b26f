//! Continuing a stream that broke after the caller had part of the answer.
//!
//! [`Delivered`] keeps what the caller has received. When the stream breaks,
//! the next target either takes the delivered text as an assistant prefill
//! and continues it, or answers afresh and [`Splice`] suppresses the prefix
//! the caller already has, which works only if the new answer starts with
//! exactly that text. The continuation's chunks are rewritten to carry the
//! first stream's id and no second `role`, so the caller sees one answer.

use crate::chunk::{ChunkView, Seen};
use serde_json::{Map, Value, json};

/// How a broken stream may be continued on another target.
#[derive(Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Send the delivered text as the last (assistant) message.
    Prefill,
    /// Ask again and drop the delivered prefix from the new answer.
    Regenerate,
}

/// What the caller has received of a stream.
#[derive(Debug, Default)]
pub struct Delivered {
    id: Option<String>,
    text: String,
    /// Why the answer cannot be continued, once something other than text of
    /// one choice has gone out.
    unresumable: Option<&'static str>,
}

impl Delivered {
    /// Start keeping track of a stream of `request`.
    pub fn new(request: &Map<String, Value>) -> Self {
        let several = request.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1);
        Delivered {
            unresumable: several.then_some("the request asked for several choices"),
            ..Default::default()
        }
    }

    /// Note one canonical chunk sent to the caller, reading it. A chunk the
    /// adapter session has read already comes as [`Seen`] (`note`).
    pub fn observe(&mut self, chunk: &[u8]) {
        if self.unresumable.is_some() {
            return;
        }
        match ChunkView::read(chunk) {
            Ok(view) => {
                let seen = view.seen(self.id.is_none());
                self.note(seen)
            }
            Err(_) => self.unresumable = Some("a chunk was not a JSON object"),
        }
    }

    /// Note what one chunk sent to the caller said.
    pub fn note(&mut self, seen: Seen) {
        if self.unresumable.is_some() {
            return;
        }
        if self.id.is_none() {
            self.id = seen.id;
        }
        self.text.push_str(&seen.text);
        self.unresumable = seen.unresumable;
    }

    /// Why the answer cannot be continued, if it cannot.
    pub fn unresumable(&self) -> Option<&'static str> {
        self.unresumable
    }

    /// The request to send to the continuing target, and how to splice its
    /// answer onto what was delivered.
    pub fn continuation(
        &self,
        request: &Map<String, Value>,
        strategy: Strategy,
    ) -> (Map<String, Value>, Splice) {
        let mut request = request.clone();
        let suppress = match strategy {
            Strategy::Regenerate => Suppress::Exact(self.text.clone()),
            Strategy::Prefill => {
                // Providers refuse a prefill that ends in whitespace (Anthropic
                // does): send it trimmed and drop the same whitespace if the
                // continuation repeats it.
                let prefill = self.text.trim_end();
                if !prefill.is_empty() {
                    let message = json!({"role": "assistant", "content": prefill});
                    if let Some(Value::Array(messages)) = request.get_mut("messages") {
                        messages.push(message);
                    }
                }
                Suppress::Whitespace(self.text[prefill.len()..].to_string())
            }
        };
        let splice = Splice {
            id: self.id.clone(),
            suppress,
        };
        (request, splice)
    }
}

/// The continuation's new answer does not start with what was delivered.
#[derive(Debug, PartialEq, Eq)]
pub struct Diverged;

/// Rewrites the continuing target's chunks so they extend the delivered answer.
#[derive(Debug)]
pub struct Splice {
    id: Option<String>,
    suppress: Suppress,
}

#[derive(Debug)]
enum Suppress {
    /// Text the new answer must start with; it is dropped.
    Exact(String),
    /// Whitespace trimmed from a prefill; dropped if the continuation repeats it.
    Whitespace(String),
}

impl Splice {
    /// The chunk to send the caller, `None` when nothing of it is left, or
    /// [`Diverged`] when the new answer parts from the delivered one.
    pub fn rewrite(&mut self, chunk: &[u8]) -> Result<Option<Vec<u8>>, Diverged> {
        let Ok(Value::Object(mut chunk)) = serde_json::from_slice::<Value>(chunk) else {
            return Err(Diverged);
        };
        if let Some(id) = &self.id {
            chunk.insert("id".into(), Value::String(id.clone()));
        }
        let mut keep = chunk.get("usage").is_some_and(|u| !u.is_null());
        if let Some(Value::Array(choices)) = chunk.get_mut("choices") {
            for choice in choices.iter_mut() {
                keep |= self.rewrite_choice(choice)?;
            }
        }
        Ok(keep.then(|| serde_json::to_vec(&chunk).expect("a JSON map serialises")))
    }

    /// Rewrite one choice's delta; whether anything is left to send.
    fn rewrite_choice(&mut self, choice: &mut Value) -> Result<bool, Diverged> {
        let finished = choice.get("finish_reason").is_some_and(|f| !f.is_null());
        let Some(Value::Object(delta)) = choice.get_mut("delta") else {
            return Ok(finished);
        };
        delta.remove("role");
        if let Some(Value::String(text)) = delta.get_mut("content") {
            *text = self.suppress.apply(text)?;
            if text.is_empty() {
                delta.remove("content");
            }
        }
        let other = delta.iter().any(|(_, v)| !v.is_null());
        if let Suppress::Exact(rest) = &self.suppress
            && !rest.is_empty()
            && (finished || delta.get("tool_calls").is_some_and(|t| !t.is_null()))
        {
            // The new answer ended or turned to tools before reaching what was delivered.
            return Err(Diverged);
        }
        Ok(other || finished)
    }
}

impl Suppress {
    /// What is left of `text` after dropping what the caller already has.
    fn apply(&mut self, text: &str) -> Result<String, Diverged> {
        match self {
            Suppress::Exact(rest) => {
                if rest.is_empty() {
                    Ok(text.to_string())
                } else if let Some(tail) = text.strip_prefix(rest.as_str()) {
                    rest.clear();
                    Ok(tail.to_string())
                } else if let Some(left) = rest.strip_prefix(text) {
                    *rest = left.to_string();
                    Ok(String::new())
                } else {
                    Err(Diverged)
                }
            }
            Suppress::Whitespace(ws) => {
                let out = if let Some(tail) = text.strip_prefix(ws.as_str()) {
                    tail.to_string()
                } else if let Some(left) = ws.strip_prefix(text) {
                    let left = left.to_string();
                    *ws = left;
                    return Ok(String::new());
                } else {
                    text.to_string()
                };
                ws.clear();
                Ok(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_is_read_for_its_text_whatever_it_leaves_null() {
        let mut delivered = Delivered::default();
        delivered.observe(br#"{"id":"c1","choices":[]}"#);
        delivered.observe(br#"{"choices":[{"index":0,"delta":null,"finish_reason":null}]}"#);
        delivered.observe(br#"{"choices":[{"index":0,"delta":{"content":"say \"hi\"","tool_calls":null}}]}"#);
        assert_eq!(delivered.unresumable(), None);
        assert_eq!(delivered.text, "say \"hi\"");
        assert_eq!(delivered.id.as_deref(), Some("c1"));
        delivered.observe(b"[1]");
        assert_eq!(delivered.unresumable(), Some("a chunk was not a JSON object"));
        // `choices` must be a list, as the adapter session's check demands
        // of every chunk (the same reading).
        let mut delivered = Delivered::default();
        delivered.observe(br#"{"id":"c1","choices":null}"#);
        assert_eq!(delivered.unresumable(), Some("a chunk was not a JSON object"));
    }

    #[test]
    fn what_the_session_read_of_a_chunk_counts_as_reading_it_again() {
        let chunks: [&[u8]; 4] = [
            br#"{"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            br#"{"id":"c1","choices":[{"index":0,"delta":{"content":"Hel"}}]}"#,
            br#"{"id":"c1","choices":[{"index":0,"delta":{"content":"lo"}}]}"#,
            br#"{"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        ];
        let (mut read, mut noted) = (Delivered::default(), Delivered::default());
        for chunk in chunks {
            read.observe(chunk);
            let view = ChunkView::read(chunk).unwrap();
            noted.note(view.seen(true));
        }
        for delivered in [&read, &noted] {
            assert_eq!(delivered.text, "Hello");
            assert_eq!(delivered.id.as_deref(), Some("c1"));
            assert_eq!(delivered.unresumable(), Some("the answer had already finished"));
        }
    }

    fn chunk(id: &str, delta: Value, finish: Value) -> Vec<u8> {
        json!({"id": id, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            .to_string()
            .into_bytes()
    }

    fn text_of(chunk: &[u8]) -> Option<String> {
        let value: Value = serde_json::from_slice(chunk).unwrap();
        value["choices"][0]["delta"]["content"]
            .as_str()
            .map(str::to_string)
    }

    fn delivered(pieces: &[&str]) -> Delivered {
        let request = json!({"messages": [{"role": "user", "content": "hi"}]});
        let mut delivered = Delivered::new(request.as_object().unwrap());
        delivered.observe(&chunk(
            "first",
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        ));
        for piece in pieces {
            delivered.observe(&chunk("first", json!({"content": piece}), Value::Null));
        }
        delivered
    }

    #[test]
    fn regenerating_drops_the_delivered_prefix_across_chunk_boundaries() {
        let request = json!({"messages": [{"role": "user", "content": "hi"}]});
        let (sent, mut splice) = delivered(&["The ans", "wer is"])
            .continuation(request.as_object().unwrap(), Strategy::Regenerate);
        assert_eq!(sent["messages"].as_array().unwrap().len(), 1, "no prefill");
        let role = splice
            .rewrite(&chunk(
                "second",
                json!({"role": "assistant", "content": ""}),
                Value::Null,
            ))
            .unwrap();
        assert_eq!(role, None, "the caller already has the role");
        assert_eq!(
            splice.rewrite(&chunk("second", json!({"content": "The"}), Value::Null)),
            Ok(None)
        );
        let out = splice
            .rewrite(&chunk("second", json!({"content": " answer is 42"}), Value::Null))
            .unwrap()
            .unwrap();
        assert_eq!(text_of(&out).as_deref(), Some(" 42"));
        let value: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["id"], "first", "one answer, one id");
        let end = splice
            .rewrite(&chunk("second", json!({}), json!("stop")))
            .unwrap();
        assert!(end.is_some(), "the finish reason goes through");
    }

    #[test]
    fn regenerating_a_different_answer_diverges() {
        let request = json!({"messages": []});
        let (_, mut splice) =
            delivered(&["The answer is"]).continuation(request.as_object().unwrap(), Strategy::Regenerate);
        assert_eq!(
            splice.rewrite(&chunk("x", json!({"content": "The"}), Value::Null)),
            Ok(None)
        );
        assert_eq!(
            splice.rewrite(&chunk("x", json!({"content": " reply"}), Value::Null)),
            Err(Diverged)
        );
        let (_, mut short) =
            delivered(&["The answer is"]).continuation(request.as_object().unwrap(), Strategy::Regenerate);
        assert_eq!(
            short.rewrite(&chunk("x", json!({"content": "The"}), Value::Null)),
            Ok(None)
        );
        assert_eq!(
            short.rewrite(&chunk("x", json!({}), json!("stop"))),
            Err(Diverged),
            "ended before reaching what was delivered"
        );
    }

    #[test]
    fn prefill_sends_the_trimmed_text_and_drops_repeated_whitespace() {
        let request = json!({"messages": [{"role": "user", "content": "hi"}]});
        let (sent, mut splice) = delivered(&["Hello,", " wor", "ld! "])
            .continuation(request.as_object().unwrap(), Strategy::Prefill);
        assert_eq!(
            sent["messages"][1],
            json!({"role": "assistant", "content": "Hello, world!"})
        );
        let out = splice
            .rewrite(&chunk("x", json!({"content": " How are you?"}), Value::Null))
            .unwrap()
            .unwrap();
        assert_eq!(text_of(&out).as_deref(), Some("How are you?"));
        let out = splice
            .rewrite(&chunk("x", json!({"content": " Fine."}), Value::Null))
            .unwrap()
            .unwrap();
        assert_eq!(
            text_of(&out).as_deref(),
            Some(" Fine."),
            "only the trimmed whitespace is dropped"
        );
    }

    #[test]
    fn tool_calls_finished_answers_and_several_choices_cannot_be_continued() {
        let mut tools = delivered(&["Let me look"]);
        tools.observe(&chunk(
            "x",
            json!({"tool_calls": [{"index": 0, "id": "c"}]}),
            Value::Null,
        ));
        assert!(tools.unresumable().is_some());
        let mut finished = delivered(&["Done"]);
        finished.observe(&chunk("x", json!({}), json!("stop")));
        assert!(finished.unresumable().is_some());
        let request = json!({"n": 2, "messages": []});
        assert!(
            Delivered::new(request.as_object().unwrap())
                .unresumable()
                .is_some()
        );
        assert_eq!(delivered(&["fine"]).unresumable(), None);
    }
}
