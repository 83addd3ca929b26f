//! What the host reads of an OpenAI chat stream chunk: the adapter
//! session's check that each chunk an adapter emits is one, and what
//! continuing a broken stream needs to know of it, read in one pass.

mod template;

use switchboard_guest::scan::{Once, ScanError, Scanner, Span, Str};
use template::Template;

/// What the host reads of a chat chunk, borrowed from its bytes (no tree of
/// values, no copies of strings without escapes): the adapter session's
/// check that a chunk is one reads it, and continuation keeps what it says
/// ([`Seen`]) from the same pass.
#[derive(Default)]
pub struct ChunkView<'a> {
    id: Option<Str<'a>>,
    /// A choice has finished (a `finish_reason` not null).
    finished: bool,
    /// The usage chunk: `usage` present and not null (OpenAI sends
    /// `"usage":null` in the others when usage is asked for).
    usage: bool,
    /// What the choices add to the answer, in order: the text of the
    /// first choice's deltas (a chunk has one, kept without a vector: a
    /// vector cost an allocation per chunk, 1 % of a stream's
    /// instructions), and the last reason the answer can no longer be
    /// continued.
    text: Option<Str<'a>>,
    more_text: Vec<Str<'a>>,
    unresumable: Option<&'static str>,
}

/// What the view reads of one choice.
#[derive(Default)]
struct ChoiceView<'a> {
    index: Option<u64>,
    finished: bool,
    content: Option<Str<'a>>,
    tool_calls: bool,
}

impl<'a> ChunkView<'a> {
    /// Read a chunk's bytes: one JSON object, checked whole (its UTF-8 and
    /// its grammar, the values the view skips too), whose `id` is a string,
    /// `choices` an array of objects, each one's `index` an integer and
    /// `delta` an object whose `content` is a string, where present and not
    /// null.
    pub fn read(data: &'a [u8]) -> Result<Self, ScanError> {
        Self::read_text(utf8(data)?)
    }

    /// Read a chunk's text, as [`ChunkView::read`] reads its bytes.
    pub fn read_text(text: &'a str) -> Result<Self, ScanError> {
        Self::read_from(text, None, None)
    }

    /// Read `text` from its start, or from `from`: a mark of a text with
    /// the same bytes up to it and at it. The marks of its top-level
    /// members before `choices`, past that, are pushed on `marks`.
    fn read_from(
        text: &'a str,
        from: Option<Mark>,
        mut marks: Option<&mut Vec<Mark>>,
    ) -> Result<Self, ScanError> {
        let mut scanner = Scanner::new(text);
        let mut view = ChunkView::default();
        let mut top = from.map_or_else(Top::default, |mark| mark.top);
        let mut choices = Once::default();
        let member = |scanner: &mut Scanner<'a>, name: &[u8]| {
            match name {
                b"id" => {
                    top.id_once.check(scanner)?;
                    let id = scanner.optional_string("`id` is not a string")?;
                    top.id = id.map(|id| scanner.span(id));
                }
                b"choices" => {
                    choices.check(scanner)?;
                    scanner.array(|scanner| {
                        let choice = ChoiceView::read(scanner)?;
                        view.add(choice);
                        Ok(())
                    })?;
                }
                b"usage" => {
                    top.usage_once.check(scanner)?;
                    top.usage = scanner.present()?;
                }
                _ => scanner.skip()?,
            }
            if let Some(marks) = marks.as_deref_mut()
                && !choices.seen()
            {
                marks.push(Mark {
                    at: scanner.at(),
                    top,
                });
            }
            Ok(())
        };
        match from {
            None => scanner.object("a chunk is a JSON object", member)?,
            Some(mark) => scanner.object_after(mark.at, member)?,
        }
        scanner.end()?;
        view.id = top.id.map(|span| scanner.string_at(span));
        view.usage = top.usage;
        Ok(view)
    }

    fn add(&mut self, choice: ChoiceView<'a>) {
        self.finished |= choice.finished;
        if choice.index.unwrap_or(0) != 0 {
            self.unresumable = Some("several choices were streamed");
        } else if choice.finished {
            self.unresumable = Some("the answer had already finished");
        } else if choice.tool_calls {
            self.unresumable = Some("tool calls were already streamed");
        } else if let Some(content) = choice.content {
            // Most deltas carry text (an empty one adds none, but is kept:
            // the next chunk may have text in its place).
            self.push_text(content);
        }
    }

    /// One more piece of the chunk's text.
    fn push_text(&mut self, text: Str<'a>) {
        match self.text {
            None => self.text = Some(text),
            Some(_) => self.more_text.push(text),
        }
    }

    /// Whether a choice of the chunk has finished.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Whether the chunk carries the answer's usage.
    pub fn has_usage(&self) -> bool {
        self.usage
    }

    /// What the chunk adds to the answer, for continuation; its id only
    /// when `want_id` (only the stream's first is kept).
    pub fn seen(self, want_id: bool) -> Seen {
        let mut seen = Seen {
            // Azure's first chunk (its prompt filter's) has an empty id.
            id: self
                .id
                .filter(|id| want_id && !id.is_empty())
                .map(|id| id.decode().into_owned()),
            unresumable: self.unresumable,
            ..Seen::default()
        };
        for text in self.text.into_iter().chain(self.more_text) {
            seen.text.push_str(&text.decode());
        }
        seen
    }
}

impl<'a> ChoiceView<'a> {
    /// What a choice says. None of it may depend on what a string value
    /// says (a finish reason is there or null, whatever its words): chunk
    /// templates (`template.rs`) take a chunk alike but inside its
    /// strings to say what the template said.
    fn read(scanner: &mut Scanner<'a>) -> Result<Self, ScanError> {
        let mut choice = ChoiceView::default();
        let [mut index, mut finish_reason, mut delta] = [Once::default(); 3];
        scanner.object("a choice is not an object", |scanner, name| {
            match name {
                b"index" => {
                    index.check(scanner)?;
                    choice.index = scanner.optional_u64("`index` is not an integer")?;
                }
                b"finish_reason" => {
                    finish_reason.check(scanner)?;
                    choice.finished = scanner.present()?;
                }
                b"delta" => {
                    delta.check(scanner)?;
                    if scanner.null()? {
                        return Ok(());
                    }
                    let [mut content, mut tool_calls] = [Once::default(); 2];
                    scanner.object("a delta is not an object", |scanner, name| match name {
                        b"content" => {
                            content.check(scanner)?;
                            choice.content = scanner.optional_string("`content` is not a string")?;
                            Ok(())
                        }
                        b"tool_calls" => {
                            tool_calls.check(scanner)?;
                            choice.tool_calls = scanner.present()?;
                            Ok(())
                        }
                        _ => scanner.skip(),
                    })?;
                }
                _ => scanner.skip()?,
            }
            Ok(())
        })?;
        Ok(choice)
    }
}

/// Reads the chunks of one stream, in order. A stream's chunks begin
/// alike: `id`, `object`, `created`, `model` and `system_fingerprint` are
/// the same bytes in each, and only `choices` and what follows differ. The
/// top-level members before `choices` that a chunk shares byte for byte
/// with the chunk before it are not read again: reading resumes where
/// reading that chunk was past them, with what they said. A chunk is still
/// checked whole, and what it says (or where and why it is refused) is
/// what [`ChunkView::read`] says of it alone; a test holds the two to that.
///
/// Before that, most chunks are read by the last chunk read whole (its
/// [`Template`]): a chunk with its bytes everywhere but inside string
/// values says what it said, with its own id and text.
#[derive(Default)]
pub struct ChunkReader {
    /// The last chunk read, up to its last mark and the byte at it.
    last: Vec<u8>,
    /// Where reading the last chunk was just past each of its top-level
    /// members' values before `choices`, and what those had said.
    marks: Vec<Mark>,
    template: Option<Template>,
    /// Chunks in a row no template read.
    unalike: u32,
}

/// A template is made of a chunk read whole that follows another read
/// whole (a stream's first chunk, with the answer's role, is rarely like
/// the next; its last two, the finish and the usage, come once each), and
/// at most this many times in a row: a stream whose chunks are unalike
/// stops making them (each costs a copy of the chunk and a pass over it).
const TEMPLATES_IN_A_ROW: u32 = 3;

impl ChunkReader {
    /// Read the stream's next chunk, as [`ChunkView::read`] reads it.
    pub fn read<'a>(&mut self, data: &'a [u8]) -> Result<ChunkView<'a>, ScanError> {
        self.read_text(utf8(data)?)
    }

    /// Read the stream's next chunk, as [`ChunkView::read_text`] reads it.
    pub fn read_text<'a>(&mut self, text: &'a str) -> Result<ChunkView<'a>, ScanError> {
        if let Some(view) = self.template.as_ref().and_then(|template| template.read(text)) {
            self.unalike = 0;
            return Ok(view);
        }
        self.unalike += 1;
        let read = self.read_whole(text);
        self.template = match &read {
            Ok(view) if (2..2 + TEMPLATES_IN_A_ROW).contains(&self.unalike) => Template::of(text, view),
            _ => None,
        };
        read
    }

    /// Read a chunk whole (from a kept mark, where one applies).
    fn read_whole<'a>(&mut self, text: &'a str) -> Result<ChunkView<'a>, ScanError> {
        let bytes = text.as_bytes();
        // The last mark this chunk shares the bytes up to and at (a number
        // ends where the byte after it is not a digit).
        let kept =
            (self.marks.iter()).rposition(|mark| bytes.get(..=mark.at) == Some(&self.last[..=mark.at]));
        let from = kept.map(|kept| self.marks[kept]);
        self.marks.truncate(kept.map_or(0, |kept| kept + 1));
        self.last.truncate(from.map_or(0, |mark| mark.at + 1));
        let read = ChunkView::read_from(text, from, Some(&mut self.marks));
        match (&read, self.marks.last()) {
            (Ok(_), Some(mark)) => self.last.extend_from_slice(&bytes[self.last.len()..=mark.at]),
            (Ok(_), None) => {}
            // The stream ends at a chunk that is refused; nothing is kept.
            (Err(_), _) => {
                self.marks.clear();
                self.last.clear();
            }
        }
        read
    }
}

/// Where reading a chunk was just past one of its top-level members'
/// values, and what the members up to it had said.
#[derive(Clone, Copy)]
struct Mark {
    at: usize,
    top: Top,
}

/// What a chunk's top-level members other than `choices` say.
#[derive(Default, Clone, Copy)]
struct Top {
    id: Option<Span>,
    id_once: Once,
    usage: bool,
    usage_once: Once,
}

fn utf8(data: &[u8]) -> Result<&str, ScanError> {
    std::str::from_utf8(data).map_err(|e| ScanError {
        what: "invalid UTF-8",
        at: e.valid_up_to(),
    })
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
    use switchboard_guest::mutate::Mutator;

    #[test]
    fn a_chunk_is_a_json_object_with_choices_of_objects() {
        assert!(ChunkView::read(br#" {"choices":[{"index":0,"delta":{"content":"a"}}]}"#).is_ok());
        assert!(ChunkView::read(b"{}").is_ok());
        assert!(ChunkView::read(b" \t\r\n{ } \n").is_ok());
        for not_one in [
            // serde would take an array of a struct's fields in order.
            &br#"["c1", []]"#[..],
            br#"{"choices":[["c1"]]}"#,
            br#"{"choices":[{"delta":[null]}]}"#,
            b"null",
            b"",
            b"{not json",
            b"{} {}",
            br#"{"choices":[1]}"#,
            br#"{"choices":null}"#,
            br#"{"choices":[{"delta":{"content":5}}]}"#,
            br#"{"id":7}"#,
            br#"{"choices":[{"index":1.0}]}"#,
            br#"{"choices":[{"index":-1}]}"#,
            br#"{"choices":[{"index":18446744073709551616}]}"#,
            br#"{"choices":[{"index":-0}]}"#,
            br#"{"choices":[{"index":1e0}]}"#,
            br#"{"choices":[],"choices":[]}"#,
            br#"{"choices":[{"delta":{"content":"a","content":"b"}}]}"#,
            b"{\"id\":\"c\xff\"}",
            b"{\"object\":\"\xc3\"}",
            b"{\"object\":\"a\tb\"}",
            br#"{"object":"\x"}"#,
            br#"{"object":"\u12"}"#,
            br#"{"n":01}"#,
            br#"{"n":1.}"#,
            br#"{"n":-}"#,
            br#"{"n":1e}"#,
            br#"{"n":+1}"#,
            br#"{"n":tru}"#,
            br#"{"n":[1,]}"#,
            br#"{"n":{"a":1,}}"#,
            br#"{"n" 1}"#,
        ] {
            assert!(
                ChunkView::read(not_one).is_err(),
                "{}",
                String::from_utf8_lossy(not_one)
            );
        }
        let index = |chunk: &[u8]| ChunkView::read(chunk).map(|view| view.unresumable);
        assert_eq!(
            index(br#"{"choices":[{"index":18446744073709551615}]}"#),
            Ok(Some("several choices were streamed"))
        );
        assert_eq!(index(br#"{"choices":[{"index":0}]}"#), Ok(None));
        let values = br#"{"n":[-0.5E-3,1e5,0,true,false,null,{"":"\u00e9\n\"\/"}],"id":null}"#;
        assert!(ChunkView::read(values).is_ok());
        let finished = ChunkView::read(br#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#).unwrap();
        assert!(finished.finished());
    }

    #[test]
    fn deep_nesting_is_refused_without_exhausting_the_stack() {
        let nested = |depth| format!(r#"{{"x":{}{}}}"#, "[".repeat(depth), "]".repeat(depth));
        // The chunk's own object is the first level.
        assert!(ChunkView::read(nested(127).as_bytes()).is_ok());
        for depth in [128, 100_000] {
            let error = ChunkView::read(nested(depth).as_bytes()).err().unwrap();
            assert_eq!(error.what, "nested too deeply");
        }
    }

    #[test]
    fn escaped_strings_are_decoded_as_serde_json_decodes_them() {
        let chunk =
            br#"{"\u0069d":"c\"1","choices":[{"index":0,"delta":{"content":"a\n\u00e9 \ud83d\ude00\\"}}]}"#;
        let seen = ChunkView::read(chunk).unwrap().seen(true);
        assert_eq!(seen.id.as_deref(), Some("c\"1"));
        assert_eq!(seen.text, "a\n\u{e9} \u{1f600}\\");
        // Half a surrogate pair: no Rust string can hold it, so a string
        // the view reads may not carry one; one it skips may, as in serde.
        for unpaired in [r#""\ud83d""#, r#""\ude00""#, r#""\ud83d\u0041""#, r#""\ud83dx""#] {
            let content = format!(r#"{{"choices":[{{"delta":{{"content":{unpaired}}}}}]}}"#);
            assert!(ChunkView::read(content.as_bytes()).is_err(), "{content}");
            let skipped = format!(r#"{{"object":{unpaired}}}"#);
            assert!(ChunkView::read(skipped.as_bytes()).is_ok(), "{skipped}");
            let skipped_name = format!(r#"{{"usage":{{{unpaired}:1}}}}"#);
            assert!(ChunkView::read(skipped_name.as_bytes()).is_ok(), "{skipped_name}");
            let read_name = format!(r#"{{{unpaired}:1}}"#);
            assert!(ChunkView::read(read_name.as_bytes()).is_err(), "{read_name}");
        }
    }

    /// The view as it was read with serde's derive: what the scanner must
    /// agree with, apart from serde taking an array for a struct.
    mod reference {
        use std::borrow::Cow;

        #[derive(serde::Deserialize)]
        pub struct ChunkView<'a> {
            #[serde(borrow, default)]
            pub id: Option<Cow<'a, str>>,
            #[serde(borrow, default)]
            pub choices: Vec<ChoiceView<'a>>,
            #[serde(default)]
            pub usage: Option<serde::de::IgnoredAny>,
        }

        #[derive(serde::Deserialize)]
        pub struct ChoiceView<'a> {
            #[serde(default)]
            pub index: Option<u64>,
            #[serde(default)]
            pub finish_reason: Option<serde::de::IgnoredAny>,
            #[serde(borrow, default)]
            pub delta: Option<DeltaView<'a>>,
        }

        #[derive(serde::Deserialize)]
        pub struct DeltaView<'a> {
            #[serde(borrow, default)]
            pub content: Option<Cow<'a, str>>,
            #[serde(default)]
            pub tool_calls: Option<serde::de::IgnoredAny>,
        }

        /// `(finished, has_usage, seen(true))` as the serde view said it.
        pub fn read(data: &[u8]) -> Option<(bool, bool, super::Seen)> {
            if data.trim_ascii_start().first() != Some(&b'{') {
                return None;
            }
            let view: ChunkView = serde_json::from_str(std::str::from_utf8(data).ok()?).ok()?;
            let mut seen = super::Seen {
                id: view.id.filter(|id| !id.is_empty()).map(Cow::into_owned),
                ..super::Seen::default()
            };
            let finished = view.choices.iter().any(|c| c.finish_reason.is_some());
            for choice in view.choices {
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
            Some((finished, view.usage.is_some(), seen))
        }

        /// The chunk with the arrays serde took for a choice or a delta
        /// made objects, if it had any: what the view must then take.
        pub fn structs_for_arrays(data: &[u8]) -> Option<Vec<u8>> {
            use serde_json::Value;
            let mut chunk: Value = serde_json::from_slice(data).ok()?;
            let mut changed = false;
            let mut object_for_array = |value: &mut Value| {
                if value.is_array() {
                    *value = Value::Object(Default::default());
                    changed = true;
                }
            };
            for choice in chunk.get_mut("choices")?.as_array_mut()? {
                object_for_array(choice);
                if let Some(delta) = choice.get_mut("delta") {
                    object_for_array(delta);
                }
            }
            changed.then(|| serde_json::to_vec(&chunk).unwrap())
        }
    }

    /// Chunks as providers send them, and some they could.
    const CHUNKS: &[&str] = &[
        r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1733000000,"model":"m","system_fingerprint":"fp_b","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}"#,
        r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1733000000,"model":"m","choices":[{"index":0,"delta":{"content":" w\u00f6rd\n\"q\" \ud83d\ude00"},"logprobs":null,"finish_reason":null}]}"#,
        r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}"#,
        r#"{"id":"chatcmpl-1","choices":[],"usage":{"prompt_tokens":20,"completion_tokens":62,"total_tokens":82,"prompt_tokens_details":{"cached_tokens":0}}}"#,
        r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1.5e-3}"}}]},"finish_reason":null}]}"#,
        r#"{"id":"","choices":[],"prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}]}"#,
        r#"{"id":"c","choices":[{"index":1,"delta":{"content":"b"}},{"index":0,"delta":{"content":"a"}}],"x":[true,false,-0.25,1E+2,{}]}"#,
        r#" { "choices" : [ { "index" : 0 , "delta" : { "content" : "\u00e9 café" } } ] } "#,
        r#"{"\u0069d":"x","choices":[{"\u0069ndex":1,"fin\u0069sh_reason":"stop"}]}"#,
        r#"{"usage":{"\ud800":1,"a":[[{"\udc00":[]}]]},"choices":[{"delta":{"tool_calls":[{"\ud83d\ude00":0}]}}]}"#,
    ];

    #[test]
    fn the_scanner_agrees_with_serde_on_chunks_and_their_mutations() {
        let mut mutator = Mutator::new(
            0x2545_f491_4f6c_dd1d,
            b"{}[]:,\"\\ \t0123456789.eE+-abfnrtuxlsDd\x01\x7f\xc3\xa9",
            true,
        );
        let (mut compared, mut both_read) = (0, 0);
        for round in 0..60_000 {
            let mut data = CHUNKS[round % CHUNKS.len()].as_bytes().to_vec();
            for _ in 0..1 + mutator.below(3) {
                mutator.change(&mut data);
            }
            let ours = ChunkView::read(&data)
                .ok()
                .map(|view| (view.finished(), view.has_usage(), view.seen(true)));
            let theirs = reference::read(&data);
            // Whole answers are checked by the same scanner.
            let json = std::str::from_utf8(&data)
                .is_ok_and(|text| serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok());
            assert_eq!(
                switchboard_guest::scan::is_json_text(&data),
                json,
                "{}",
                String::from_utf8_lossy(&data)
            );
            compared += 1;
            match (&ours, &theirs) {
                (Some(_), Some(_)) => {
                    both_read += 1;
                    assert_eq!(ours, theirs, "{}", String::from_utf8_lossy(&data));
                }
                (None, None) => {}
                (None, Some(_))
                    if reference::structs_for_arrays(&data)
                        .is_some_and(|objects| ChunkView::read(&objects).is_ok()) => {}
                _ => panic!(
                    "scanner {:?}, serde {:?}: {}",
                    ours.is_some(),
                    theirs.is_some(),
                    String::from_utf8_lossy(&data)
                ),
            }
        }
        // Both outcomes are well represented.
        assert!(
            both_read > compared / 10 && both_read < compared * 9 / 10,
            "{both_read} of {compared}"
        );
    }

    /// What a reading says: the view's answers, or where and why not.
    type Said = Result<(bool, bool, Seen), ScanError>;

    fn said(read: Result<ChunkView, ScanError>) -> Said {
        read.map(|view| (view.finished(), view.has_usage(), view.seen(true)))
    }

    #[test]
    fn a_stream_read_chunk_after_chunk_says_what_each_says_alone() {
        // Digits and separators too: where a member's value ends is where
        // a kept reading resumes.
        let mut mutator = Mutator::new(
            0x9e37_79b9_7f4a_7c15,
            b"{}[]:,\" \\0123456789.eE-anul\xc3\xa9",
            false,
        );
        let (mut resumed, mut templated, mut refused) = (0, 0, 0);
        let mut reader = ChunkReader::default();
        let mut previous = CHUNKS[0].as_bytes().to_vec();
        for round in 0..60_000 {
            if round % 40 == 0 {
                reader = ChunkReader::default();
            }
            // Mostly the chunk before, changed a little, as a stream goes.
            let mut data = match mutator.below(4) {
                0 => CHUNKS[mutator.below(CHUNKS.len())].as_bytes().to_vec(),
                _ => previous.clone(),
            };
            for _ in 0..mutator.below(3) {
                mutator.change(&mut data);
            }
            // Whether a kept reading applies: a mark whose bytes, and the
            // byte at it, the chunk shares (that it is then used, the test
            // below shows).
            let applies =
                (reader.marks.iter()).any(|mark| data.get(..=mark.at) == reader.last.get(..=mark.at));
            // Whether the template reads it (that it is then used, the
            // test below shows).
            let by_template = std::str::from_utf8(&data).is_ok_and(|text| {
                (reader.template.as_ref()).is_some_and(|template| template.read(text).is_some())
            });
            let ours = said(reader.read(&data));
            let alone = said(ChunkView::read(&data));
            assert_eq!(ours, alone, "{}", String::from_utf8_lossy(&data));
            resumed += usize::from(applies && ours.is_ok() && !by_template);
            templated += usize::from(by_template);
            refused += usize::from(ours.is_err());
            if ours.is_ok() {
                previous = data;
            }
        }
        // Templates read, readings resumed, and refusals were met on the way.
        assert!(
            templated > 1_000 && resumed > 5_000 && refused > 5_000,
            "{templated} by template, {resumed} resumed, {refused} refused"
        );
    }

    #[test]
    fn a_kept_reading_resumes_only_where_the_bytes_are_the_same() {
        let mut reader = ChunkReader::default();
        let first = br#"{"id":"c1","created":17,"model":"m","choices":[{"delta":{"content":"a"}}]}"#;
        assert_eq!(said(reader.read(first)), said(ChunkView::read(first)));
        // Kept: the members before `choices`, and the byte after the last.
        assert_eq!(reader.last, br#"{"id":"c1","created":17,"model":"m","#);
        for next in [
            &br#"{"id":"c1","created":17,"model":"m","choices":[{"delta":{"content":"b"}}]}"#[..],
            // A number that goes on past where the last one ended.
            br#"{"id":"c1","created":171,"model":"m","choices":[]}"#,
            br#"{"id":"c1","created":17x,"model":"m","choices":[]}"#,
            br#"{"id":"c2","created":17,"model":"m","choices":[]}"#,
            br#"{"id":"c1","created":17,"model":"m","id":"c1","choices":[]}"#,
            br#"{"id":"c1","created":17,"model":"m","choices":[],"choices":[]}"#,
            br#"{"id":"c1","created":17,"model":"m"}"#,
            br#"{"id":"c1","created":17,"model":"m","#,
            br#"{"id":"c1","created":17,"model":"m",}"#,
            br#"{"id":"c1","created":17,"model":"m","usage":{"total_tokens":1},"choices":[]}"#,
            first,
        ] {
            assert_eq!(
                said(reader.read(next)),
                said(ChunkView::read(next)),
                "{}",
                String::from_utf8_lossy(next)
            );
        }
        // A kept reading is used: what it says of the members before
        // `choices` is taken, not read again (here, made to say otherwise).
        reader.marks.last_mut().unwrap().top.usage = true;
        assert!(reader.read(first).unwrap().has_usage());
        let mut id = |data: &[u8]| reader.read(data).unwrap().seen(true).id;
        assert_eq!(
            id(br#"{"id":"c3","created":17,"model":"m","choices":[]}"#).as_deref(),
            Some("c3")
        );
        assert_eq!(
            id(br#"{"id":"c3","created":17,"model":"m","choices":[]}"#).as_deref(),
            Some("c3")
        );
    }

    #[test]
    fn chunks_whose_strings_change_say_what_each_says_alone() {
        // What goes into a string: text, escapes (a surrogate pair, an
        // unpaired one), and what ends or breaks it.
        const PIECES: &[&str] = &[
            "a",
            "é",
            " ",
            r#"\""#,
            r"\\",
            r"\n",
            r"\u00e9",
            r"\ud83d\ude00",
            r"\ud800",
            r"\x",
            "\"",
            "\t",
            "\\",
        ];
        let mut mutator = Mutator::new(0x243f_6a88_85a3_08d3, b"", false);
        let (mut templated, mut refused) = (0, 0);
        let mut reader = ChunkReader::default();
        for round in 0..30_000 {
            if round % 50 == 0 {
                reader = ChunkReader::default();
            }
            // Mostly the template's own chunk with pieces put inside its
            // string values, or taken out of them.
            let data = match &reader.template {
                Some(template) if mutator.below(8) != 0 && !template.values.is_empty() => {
                    let mut data = template.text.clone();
                    // From the last value back, so earlier places hold.
                    let mut values = template.values.clone();
                    values.retain(|_| mutator.below(3) == 0);
                    for &(open, close) in values.iter().rev() {
                        let at = open + 1 + mutator.below(close - open);
                        if !data.is_char_boundary(at) {
                            continue;
                        }
                        match mutator.below(4) {
                            0 => {
                                let end = (at + 1..=close).find(|&end| data.is_char_boundary(end));
                                data.replace_range(at..end.unwrap_or(at), "");
                            }
                            _ => data.insert_str(at, PIECES[mutator.below(PIECES.len())]),
                        }
                    }
                    data
                }
                _ => CHUNKS[mutator.below(CHUNKS.len())].to_string(),
            };
            let by_template =
                (reader.template.as_ref()).is_some_and(|template| template.read(&data).is_some());
            let ours = said(reader.read_text(&data));
            let alone = said(ChunkView::read_text(&data));
            assert_eq!(ours, alone, "{data}");
            templated += usize::from(by_template);
            refused += usize::from(ours.is_err());
        }
        assert!(
            templated > 8_000 && refused > 2_000,
            "{templated} by template, {refused} refused"
        );
    }

    #[test]
    fn a_chunk_alike_but_inside_strings_is_read_by_the_template() {
        let mut reader = ChunkReader::default();
        let first = r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}],"obfuscation":"xy"}"#;
        reader.read_text(first).unwrap();
        assert!(reader.template.is_none(), "a stream's first chunk makes none");
        reader.read_text(first).unwrap();
        // A template that says otherwise is used: it is what read the chunk.
        reader.template.as_mut().unwrap().finished = true;
        let next = r#"{"id":"c2","choices":[{"index":0,"delta":{"content":"b\"c\u00e9"},"finish_reason":null}],"obfuscation":""}"#;
        let view = reader.read_text(next).unwrap();
        assert!(view.finished());
        assert_eq!(
            view.seen(true),
            Seen {
                id: Some("c2".into()),
                text: "b\"c\u{e9}".into(),
                unresumable: None,
            }
        );
        // Not alike outside strings (a member's name, a number, a literal,
        // one more byte), or not a string inside (an unpaired surrogate, a
        // quote left open): read whole.
        for unalike in [
            r#"{"id":"c1","choices":[{"index":0,"delta":{"contenu":"a"},"finish_reason":null}],"obfuscation":"xy"}"#,
            r#"{"id":"c1","choices":[{"index":1,"delta":{"content":"a"},"finish_reason":null}],"obfuscation":"xy"}"#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop"}],"obfuscation":"xy"}"#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}],"obfuscation":"xy"} "#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"\ud800"},"finish_reason":null}],"obfuscation":"xy"}"#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"a}]}"#,
        ] {
            let template = reader.template.as_ref().unwrap();
            assert!(template.read(unalike).is_none(), "{unalike}");
        }
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
