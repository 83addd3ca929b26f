//! What the host reads of an OpenAI chat stream chunk: the adapter
//! session's check that each chunk an adapter emits is one, and what
//! continuing a broken stream needs to know of it, read in one pass.

/// What the host reads of a chat chunk, borrowed from its bytes (no tree of
/// values, no copies of strings without escapes): the adapter session's
/// check that a chunk is one reads it, and continuation keeps what it says
/// ([`Seen`]) from the same pass.
#[derive(serde::Deserialize)]
pub struct ChunkView<'a> {
    #[serde(borrow, default)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    choices: Vec<ChoiceView<'a>>,
    /// Present and not null: the usage chunk (OpenAI sends `"usage":null`
    /// in the others when usage is asked for).
    #[serde(default)]
    usage: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
struct ChoiceView<'a> {
    #[serde(default)]
    index: Option<u64>,
    /// Present and not null: the choice has finished (its value is not
    /// needed, so not read).
    #[serde(default)]
    finish_reason: Option<serde::de::IgnoredAny>,
    #[serde(borrow, default)]
    delta: Option<DeltaView<'a>>,
}

#[derive(serde::Deserialize)]
struct DeltaView<'a> {
    #[serde(borrow, default)]
    content: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    tool_calls: Option<serde::de::IgnoredAny>,
}

impl<'a> ChunkView<'a> {
    /// Read a chunk's bytes: a JSON object (serde would also take an array
    /// of the fields, which no caller would take for a chunk).
    pub fn read(data: &'a [u8]) -> Result<Self, serde_json::Error> {
        if data.trim_ascii_start().first() != Some(&b'{') {
            return Err(serde::de::Error::custom("a chunk is a JSON object"));
        }
        // Checked as UTF-8 once and whole: read from bytes, serde_json
        // checks each string it reads on its own, and a chunk's dozen keys
        // and values made that a third of the read (callgrind). Stricter
        // too: it did not check the strings of values the view skips, so a
        // chunk with invalid UTF-8 there passed on to the caller.
        let text = std::str::from_utf8(data).map_err(serde::de::Error::custom)?;
        serde_json::from_str(text)
    }

    /// Whether a choice of the chunk has finished.
    pub fn finished(&self) -> bool {
        self.choices.iter().any(|c| c.finish_reason.is_some())
    }

    /// Whether the chunk carries the answer's usage.
    pub fn has_usage(&self) -> bool {
        self.usage.is_some()
    }

    /// What the chunk adds to the answer, for continuation; its id only
    /// when `want_id` (only the stream's first is kept).
    pub fn seen(self, want_id: bool) -> Seen {
        let mut seen = Seen {
            // Azure's first chunk (its prompt filter's) has an empty id.
            id: self
                .id
                .filter(|id| want_id && !id.is_empty())
                .map(|id| id.into_owned()),
            ..Seen::default()
        };
        for choice in self.choices {
            let delta = choice.delta;
            if choice.index.unwrap_or(0) != 0 {
                seen.unresumable = Some("several choices were streamed");
            } else if choice.finish_reason.is_some() {
                seen.unresumable = Some("the answer had already finished");
            } else if delta.as_ref().is_some_and(|d| d.tool_calls.is_some()) {
                seen.unresumable = Some("tool calls were already streamed");
            } else if let Some(text) = delta.and_then(|d| d.content) {
                seen.text.push_str(&text);
            }
        }
        seen
    }
}

/// What one chunk sent to the caller adds to the answer.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Seen {
    pub id: Option<String>,
    pub text: String,
    /// Why the answer can no longer be continued after this chunk.
    pub unresumable: Option<&'static str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_is_a_json_object_with_choices_of_objects() {
        assert!(ChunkView::read(br#" {"choices":[{"index":0,"delta":{"content":"a"}}]}"#).is_ok());
        assert!(ChunkView::read(b"{}").is_ok());
        // What serde alone would take for the struct: its fields in order.
        assert!(serde_json::from_slice::<ChunkView>(br#"["c1", []]"#).is_ok());
        for not_one in [
            &br#"["c1", []]"#[..],
            b"null",
            b"{not json",
            br#"{"choices":[1]}"#,
            br#"{"choices":null}"#,
            br#"{"choices":[{"delta":{"content":5}}]}"#,
            b"{\"id\":\"c\xff\"}",
            b"{\"object\":\"\xc3\"}",
        ] {
            assert!(
                ChunkView::read(not_one).is_err(),
                "{}",
                String::from_utf8_lossy(not_one)
            );
        }
        let finished = ChunkView::read(br#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#).unwrap();
        assert!(finished.finished());
    }

    #[test]
    fn the_usage_chunk_is_told_from_a_null_usage() {
        let usage = br#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#;
        assert!(ChunkView::read(usage).unwrap().has_usage());
        let null = br#"{"choices":[{"index":0,"delta":{"content":"a"}}],"usage" : null}"#;
        assert!(!ChunkView::read(null).unwrap().has_usage());
        assert!(!ChunkView::read(b"{}").unwrap().has_usage());
    }

    #[test]
    fn an_id_is_kept_only_when_wanted_and_never_an_empty_one() {
        let chunk = br#"{"id":"c1","choices":[{"index":0,"delta":{"content":"a"}}]}"#;
        assert_eq!(
            ChunkView::read(chunk).unwrap().seen(true).id.as_deref(),
            Some("c1")
        );
        assert_eq!(ChunkView::read(chunk).unwrap().seen(false).id, None);
        // Azure's prompt-filter chunk comes first, with an empty id.
        let filter = br#"{"id":"","choices":[],"prompt_filter_results":[]}"#;
        assert_eq!(ChunkView::read(filter).unwrap().seen(true).id, None);
    }
}
