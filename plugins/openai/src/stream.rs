//! Decodes an OpenAI server-sent event stream: chunks pass through as they
//! are (forwarded, not copied back); usage is read for accounting; `[DONE]`
//! ends it; `error` objects fail it.
//!
//! Only chunks that may say something the decoder needs are parsed: those
//! with a `usage` or `error` that is not `null`, and those naming the model
//! until one has. The rest (every chunk of an answer but the first and the
//! usage chunk) are forwarded unread: the host parses every chunk of a chat
//! stream, and a forwarded event that does not parse as one ends the stream
//! as the provider's malformed event.

use crate::exports::switchboard::plugin::provider::{
    Decoded, Emitted, ErrorClass, GuestStreamDecoder, ProviderError, RequestContext, SseBatch, Target,
};
use crate::switchboard::plugin::types::ApiFormat;
use crate::{WireUsage, classify, responses};
use serde::Deserialize;
use serde::de::IgnoredAny;
use std::cell::{Cell, RefCell};
use switchboard_guest::scan::{Once, Scanner};

pub struct Decoder {
    /// A Responses caller passed through: its events as they come.
    responses: Option<RefCell<responses::Relay>>,
    include_usage: bool,
    done: Cell<bool>,
    /// An earlier batch named the model.
    model_seen: Cell<bool>,
}

/// Whether a chunk may carry what the decoder reads: a `usage` or `error`
/// key whose value is not `null` (OpenAI sends `"usage":null` in every chunk
/// but the last when usage is asked for), or a `model` key when `model` is
/// wanted. A key is its name between quotes; inside a string a quote is
/// escaped, so text cannot hide a key, only look like one (then the chunk
/// is parsed). A key spelled with `\u` escapes is not recognised; no
/// provider writes one.
///
/// All three names have five letters: a vector search finds the quotes
/// with another quote six bytes on (a chunk has a handful), sixteen
/// positions at a time, and only those are compared with the names. Three
/// substring searches, one per name, cost 2.3 % more of a stream's
/// instructions (callgrind); memchr's pair finder, which starts its search
/// again after each candidate, cost a quarter more than this loop.
fn must_read(data: &str, model: bool) -> bool {
    let bytes = data.as_bytes();
    let says = |at: usize| {
        let from = &bytes[at + 1..];
        let named = |key: &[u8]| from.strip_prefix(key).is_some_and(|after| !null_value(after));
        // By the first letter: most candidates are `"index"` and `"delta"`.
        match from.first() {
            Some(b'u') => named(b"usage\""),
            Some(b'e') => named(b"error\""),
            Some(b'm') => model && from.starts_with(b"model\""),
            _ => false,
        }
    };
    let mut block = 0;
    while let Some(window) = bytes.get(block..).and_then(<[u8]>::first_chunk) {
        let mut candidates = quote_pairs::of(window);
        while candidates != 0 {
            if says(block + candidates.trailing_zeros() as usize) {
                return true;
            }
            candidates &= candidates - 1;
        }
        block += 16;
    }
    // The last bytes, too few for a window.
    (block..bytes.len().saturating_sub(6)).any(|at| bytes[at] == b'"' && bytes[at + 6] == b'"' && says(at))
}

/// Which of a window's first sixteen bytes are a quote with another quote
/// six bytes on: bit `i` for `window[i]`. Wasm SIMD in the plugin as built
/// (`.cargo/config.toml`), SSE2 where its unit tests run, a byte at a time
/// elsewhere.
mod quote_pairs {
    /// Bytes a window holds: sixteen positions and the six after the last.
    pub const WINDOW: usize = 22;

    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    pub fn of(window: &[u8; WINDOW]) -> u16 {
        use core::arch::wasm32::{u8x16_bitmask, u8x16_eq, u8x16_splat, v128_and, v128_load};
        let quote = u8x16_splat(b'"');
        // SAFETY: bytes 0..16 and 6..22 are within the window; Wasm loads
        // need no alignment.
        let (at, on) = unsafe {
            (
                v128_load(window.as_ptr().cast()),
                v128_load(window.as_ptr().add(6).cast()),
            )
        };
        u8x16_bitmask(v128_and(u8x16_eq(at, quote), u8x16_eq(on, quote)))
    }

    #[cfg(target_arch = "x86_64")]
    pub fn of(window: &[u8; WINDOW]) -> u16 {
        use core::arch::x86_64::{
            _mm_and_si128, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
        };
        // SAFETY: x86_64 has SSE2; bytes 0..16 and 6..22 are within the
        // window, and the loads need no alignment.
        unsafe {
            let quote = _mm_set1_epi8(b'"' as i8);
            let at = _mm_loadu_si128(window.as_ptr().cast());
            let on = _mm_loadu_si128(window.as_ptr().add(6).cast());
            _mm_movemask_epi8(_mm_and_si128(
                _mm_cmpeq_epi8(at, quote),
                _mm_cmpeq_epi8(on, quote),
            )) as u16
        }
    }

    #[cfg(not(any(
        all(target_arch = "wasm32", target_feature = "simd128"),
        target_arch = "x86_64"
    )))]
    pub fn of(window: &[u8; WINDOW]) -> u16 {
        one_by_one(window)
    }

    /// The same, a byte at a time (what the others are tested against).
    #[cfg(any(
        test,
        not(any(
            all(target_arch = "wasm32", target_feature = "simd128"),
            target_arch = "x86_64"
        ))
    ))]
    pub fn one_by_one(window: &[u8; WINDOW]) -> u16 {
        (0..16)
            .filter(|&i| window[i] == b'"' && window[i + 6] == b'"')
            .fold(0, |bits, i| bits | 1 << i)
    }
}

/// `data` without the whitespace around it, as `str::trim` takes it off.
/// A chunk starts and ends with a bracket: looked at first, that costs a
/// tenth of what `trim` costs (callgrind), which decodes a character from
/// each end to ask whether it is white space.
fn trimmed(data: &str) -> &str {
    match data.as_bytes() {
        // Printable ASCII is never white space, and a whole character.
        [first, .., last] if first.is_ascii_graphic() && last.is_ascii_graphic() => data,
        _ => data.trim(),
    }
}

/// Whether the bytes after a quoted key are `: null`: the key says nothing.
fn null_value(after: &[u8]) -> bool {
    after
        .trim_ascii_start()
        .strip_prefix(b":")
        .is_some_and(|value| value.trim_ascii_start().starts_with(b"null"))
}

/// What the decoder reads of a chunk; the chunk itself is forwarded verbatim.
#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Option<Vec<IgnoredAny>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

impl Chunk {
    /// `data` as serde's derive reads it: by the scanner where it is the
    /// usual chunk, else by serde itself (an `error`, the rare forms, and
    /// every malformed chunk, whose error says where in it the fault is).
    /// Serde in Wasm cost a fifth of a stream's guest instructions for the
    /// two chunks it read (the first, for the model, and the usage chunk).
    fn read(data: &str) -> Result<Chunk, serde_json::Error> {
        Self::plain(data).map_or_else(|| serde_json::from_str(data), Ok)
    }

    /// An object naming each of the decoder's members at most once, with
    /// `choices` an array or null, a plain `usage` ([`WireUsage::read`]) or
    /// null, `model` a string or null, and `error` null or absent; `None`
    /// for anything else.
    fn plain(data: &str) -> Option<Chunk> {
        // Any error below means "not plain", or not JSON: serde says which.
        let mut scanner = Scanner::new(data);
        let mut chunk = Chunk {
            choices: None,
            usage: None,
            model: None,
            error: None,
        };
        let [mut choices, mut usage, mut model, mut error] = [Once::default(); 4];
        scanner
            .object("", |scanner, name| {
                match name {
                    b"choices" => {
                        choices.check(scanner)?;
                        if !scanner.null()? {
                            let mut count = 0;
                            scanner.array(|scanner| {
                                count += 1;
                                scanner.skip()
                            })?;
                            chunk.choices = Some(vec![IgnoredAny; count]);
                        }
                    }
                    b"usage" => {
                        usage.check(scanner)?;
                        if !scanner.null()? {
                            chunk.usage = Some(WireUsage::scan(scanner)?);
                        }
                    }
                    b"model" => {
                        model.check(scanner)?;
                        chunk.model = scanner.optional_string("")?.map(|m| m.decode().into_owned());
                    }
                    b"error" => {
                        error.check(scanner)?;
                        if !scanner.null()? {
                            return Err(scanner.error("an error: serde reads it"));
                        }
                    }
                    _ => scanner.skip()?,
                }
                Ok(())
            })
            .and_then(|()| scanner.end())
            .ok()?;
        Some(chunk)
    }
}

impl GuestStreamDecoder for Decoder {
    fn new(_target: Target, context: RequestContext, include_usage: bool) -> Self {
        Decoder {
            responses: (context.format == ApiFormat::OpenaiResponses).then(RefCell::default),
            include_usage,
            done: Cell::new(false),
            model_seen: Cell::new(false),
        }
    }

    fn feed(&self, batch: SseBatch) -> Decoded {
        let events = switchboard_guest::batch_events!(batch);
        if let Some(relay) = &self.responses {
            return relay.borrow_mut().feed(&events);
        }
        let mut decoded = Decoded {
            events: Vec::with_capacity(events.len()),
            usage: None,
            model: None,
            done: false,
            error: None,
        };
        for (i, event) in events.iter().enumerate() {
            if self.done.get() {
                break;
            }
            let data = trimmed(event.data);
            if data == "[DONE]" {
                self.done.set(true);
                decoded.done = true;
                break;
            }
            if data.is_empty() {
                continue;
            }
            if !must_read(data, !self.model_seen.get()) {
                decoded.events.push(Emitted::Forward(i as u32));
                continue;
            }
            let chunk = match Chunk::read(data) {
                Ok(chunk) => chunk,
                Err(e) => {
                    decoded.error = Some(ProviderError {
                        class: ErrorClass::Server,
                        message: format!("malformed stream event from provider: {e}"),
                        retry_after_ms: None,
                    });
                    break;
                }
            };
            if let Some(error) = &chunk.error {
                decoded.error = Some(classify::classify_stream_error(error));
                break;
            }
            // Azure's first chunk (its prompt filter's) names no model: "".
            if let Some(model) = chunk.model.filter(|m| !m.is_empty())
                && !self.model_seen.get()
            {
                decoded.model = Some(model);
                self.model_seen.set(true);
            }
            let usage = chunk.usage.map(WireUsage::into_usage);
            // The usage-only chunk (empty choices) is forwarded only when the caller asked for it.
            let usage_only = usage.is_some() && chunk.choices.as_ref().is_none_or(|c| c.is_empty());
            if usage.is_some() {
                decoded.usage = usage;
            }
            if !usage_only || self.include_usage {
                decoded.events.push(Emitted::Forward(i as u32));
            }
        }
        decoded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_is_read_as_serde_read_it_and_the_usual_one_without_serde() {
        let seeds = [
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1733000000,"model":"gpt-4o","system_fingerprint":"fp_b","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}"#,
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1733000000,"model":"m","choices":[],"usage":{"prompt_tokens":20,"completion_tokens":39,"total_tokens":59,"prompt_tokens_details":{"cached_tokens":3}}}"#,
            r#" { "ch\u006fices" : null , "m\u006fdel" : "m\ud83d\ude00" , "x" : [ { } , "s" , -1.5e3 ] , "error" : null } "#,
            r#"{"choices":[1],"error":{"message":"overloaded","type":"server_error","code":null}}"#,
            r#"{"model":"a","model":"b","choices":[]}"#,
            r#"{"choices":[],"choices":[1],"usage":null,"usage":{"prompt_tokens":1},"error":null,"error":null}"#,
            r#"{"usage":{"prompt_tokens":-1},"choices":{}}"#,
            r#"[[1],null,"m"]"#,
        ];
        // The usual ones are read by the scanner.
        for seed in &seeds[..3] {
            assert!(Chunk::plain(seed).is_some(), "{seed}");
        }
        type Read = Result<
            (
                Option<usize>,
                Option<(u32, u32, u32, u32)>,
                Option<String>,
                Option<String>,
            ),
            String,
        >;
        let said = |chunk: Result<Chunk, serde_json::Error>| -> Read {
            chunk
                .map(|c| {
                    (
                        c.choices.map(|c| c.len()),
                        crate::tests::counts(c.usage),
                        c.model,
                        c.error.map(|e| e.to_string()),
                    )
                })
                .map_err(|e| e.to_string())
        };
        let mut mutator = switchboard_guest::mutate::Mutator::new(
            0x2545_f491_4f6c_dd1d,
            b"{}[]:,\" \\0123456789.eE+-nul_t",
            true,
        );
        let (mut compared, mut plain) = (0, 0);
        for data in mutator.texts(&seeds, 30_000) {
            // The decoder reads text: the host's framing checked it.
            let Ok(data) = std::str::from_utf8(&data) else {
                continue;
            };
            compared += 1;
            plain += usize::from(Chunk::plain(data).is_some());
            assert_eq!(
                said(Chunk::read(data)),
                said(serde_json::from_str(data)),
                "{data}"
            );
        }
        assert!(
            plain > compared / 10 && plain < compared * 9 / 10,
            "{plain} of {compared}"
        );
    }

    #[test]
    fn data_is_trimmed_as_trim_trims_it() {
        for data in [
            "",
            "x",
            "{}",
            " {} ",
            "\t[DONE]\r\n",
            "\u{b}{}",
            "{}\u{c}",
            "\u{a0}{}\u{2003}",
            "{\u{a0}",
            "é",
            " é ",
            "{ }",
        ] {
            assert_eq!(trimmed(data), data.trim(), "{data:?}");
        }
    }

    fn decoder(include_usage: bool) -> Decoder {
        let target = Target {
            provider: "openai".into(),
            model: "m".into(),
            options: "{}".into(),
        };
        let context = RequestContext {
            id: "r".into(),
            created: 1,
            format: ApiFormat::OpenaiChat,
        };
        Decoder::new(target, context, include_usage)
    }

    fn events(data: &[&str]) -> SseBatch {
        use crate::exports::switchboard::plugin::provider::{Span, SseEvent};
        switchboard_guest::sse_batch!(data.iter().map(|d| (None, *d)))
    }

    fn forwarded(decoded: &Decoded) -> Vec<u32> {
        decoded
            .events
            .iter()
            .map(|e| match e {
                Emitted::Forward(i) => *i,
                Emitted::Write(_) => panic!("the openai decoder writes no events of its own"),
            })
            .collect()
    }

    const TEXT: &str = r#"{"model":"m-1","choices":[{"index":0,"delta":{"content":"hi"}}]}"#;
    const USAGE: &str = r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#;

    #[test]
    fn a_batch_forwards_its_chunks_and_stops_at_done() {
        let decoded = decoder(true).feed(events(&[TEXT, "", TEXT, USAGE, "[DONE]", TEXT]));
        assert_eq!(forwarded(&decoded), vec![0, 2, 3]);
        assert!(decoded.done);
        assert_eq!(decoded.usage.map(|u| u.completion_tokens), Some(2));
        assert_eq!(decoded.model.as_deref(), Some("m-1"));
    }

    #[test]
    fn the_usage_chunk_is_kept_back_unless_asked_for() {
        let decoded = decoder(false).feed(events(&[TEXT, USAGE]));
        assert_eq!(forwarded(&decoded), vec![0]);
        assert_eq!(decoded.usage.map(|u| u.prompt_tokens), Some(3));
    }

    #[test]
    fn an_error_ends_the_batch_after_what_came_before_it() {
        let error = r#"{"error":{"message":"overloaded","type":"server_error"}}"#;
        let decoded = decoder(true).feed(events(&[TEXT, error, TEXT]));
        assert_eq!(forwarded(&decoded), vec![0]);
        assert_eq!(decoded.error.map(|e| e.message), Some("overloaded".into()));
        let garbage = decoder(true).feed(events(&[r#"{"usage": {not json"#]));
        assert_eq!(garbage.error.map(|e| e.class), Some(ErrorClass::Server));
    }

    #[test]
    fn chunks_that_can_say_nothing_the_decoder_reads_pass_unread() {
        // The host parses every chunk it delivers and calls a forwarded one
        // that is not JSON the provider's malformed event.
        let decoder = decoder(true);
        let unread = decoder.feed(events(&[
            r#"{"choices":[{"delta":{"content":"hi"}}]}"#,
            "{not json",
        ]));
        assert_eq!(forwarded(&unread), vec![0, 1]);
        assert!(unread.error.is_none() && unread.model.is_none());
        // Until one names the model, chunks with a `model` key are read;
        // then only those that may carry usage or an error.
        let first = decoder.feed(events(&[TEXT]));
        assert_eq!(first.model.as_deref(), Some("m-1"));
        let quoted = r#"{"model":"m-2","choices":[{"delta":{"content":"say \"usage\" and \"error\" now"}}]}"#;
        let later = decoder.feed(events(&[quoted, "{not json either"]));
        assert_eq!(forwarded(&later), vec![0, 1]);
        assert!(later.model.is_none() && later.usage.is_none() && later.error.is_none());
        assert_eq!(
            decoder.feed(events(&[USAGE])).usage.map(|u| u.prompt_tokens),
            Some(3)
        );
    }

    #[test]
    fn a_null_usage_or_error_says_nothing_and_an_empty_model_is_no_model() {
        let decoder = decoder(true);
        // Azure's prompt-filter chunk comes first, with an empty model.
        let filter = r#"{"choices":[],"model":"","prompt_filter_results":[]}"#;
        assert_eq!(decoder.feed(events(&[filter])).model, None);
        assert_eq!(decoder.feed(events(&[TEXT])).model.as_deref(), Some("m-1"));
        // With usage asked for, OpenAI sends `"usage":null` in every other chunk.
        let null_usage =
            r#"{"model":"m-1","choices":[{"delta":{"content":"x"}}],"usage" : null,"error":null}"#;
        assert!(!must_read(null_usage, false));
        let decoded = decoder.feed(events(&[null_usage, "{not json", USAGE]));
        assert_eq!(forwarded(&decoded), vec![0, 1, 2]);
        assert!(decoded.error.is_none());
        assert_eq!(decoded.usage.map(|u| u.completion_tokens), Some(2));
    }

    #[test]
    fn a_key_is_found_wherever_it_falls_for_the_vector_search() {
        // The rule read naively: at every position, a quoted name that says something.
        fn naive(data: &str, model: bool) -> bool {
            let bytes = data.as_bytes();
            (0..bytes.len()).any(|at| {
                let from = &bytes[at..];
                let named = |key: &[u8]| from.strip_prefix(key).is_some_and(|after| !null_value(after));
                named(br#""usage""#) || named(br#""error""#) || (model && from.starts_with(br#""model""#))
            })
        }
        let keys = [
            r#""usage":{"prompt_tokens":1}"#,
            r#""usage" : null"#,
            r#""error":{"message":"x"}"#,
            r#""model":"m""#,
            r#""index":0,"delta":{}"#,
            r#""usage""#,
        ];
        // A candidate's closing quote opening the key (not JSON, but the
        // search must not skip past a candidate's own end).
        assert!(must_read(
            r#"{"x":"abcde"usage":{}, "padding to a vector's length"}"#,
            false
        ));
        // Before, across and after each 16-byte block, and in the tail too
        // short for a vector.
        for pad in 0..48 {
            for key in keys {
                let chunk = format!(r#"{{"x":"{}",{key}}}"#, "a".repeat(pad));
                for model in [false, true] {
                    assert_eq!(must_read(&chunk, model), naive(&chunk, model), "{chunk} {model}");
                }
            }
        }
    }

    #[test]
    fn a_window_finds_the_quote_pairs_a_byte_at_a_time_finds() {
        let mut mutator = switchboard_guest::mutate::Mutator::new(0x5eed, b"", false);
        for _ in 0..20_000 {
            // Mostly quotes, so that pairs are common.
            let window: [u8; quote_pairs::WINDOW] =
                std::array::from_fn(|_| if mutator.below(3) == 0 { b'a' } else { b'"' });
            assert_eq!(
                quote_pairs::of(&window),
                quote_pairs::one_by_one(&window),
                "{window:?}"
            );
        }
        let all = [b'"'; quote_pairs::WINDOW];
        assert_eq!(quote_pairs::of(&all), u16::MAX);
    }

    #[test]
    fn a_key_is_told_from_text_that_mentions_it() {
        assert!(must_read(r#"{"choices":[],"usage":{}}"#, false));
        assert!(must_read(r#"{"error":{"message":"x"}}"#, false));
        assert!(must_read(r#"{"model":"m"}"#, true));
        assert!(!must_read(r#"{"model":"m"}"#, false));
        assert!(must_read(
            r#"{"x":{"usage":null},"usage":{"prompt_tokens":1}}"#,
            false
        ));
        // Escaped quotes inside a string are not keys.
        assert!(!must_read(
            r#"{"choices":[{"delta":{"content":"\"usage\""}}]}"#,
            false
        ));
        assert!(!must_read(
            r#"{"choices":[{"delta":{"content":"usage error"}}]}"#,
            false
        ));
        // Text ending in an escaped quote then `usage` looks like a key: read, harmlessly.
        assert!(must_read(
            r#"{"choices":[{"delta":{"content":"\"usage"}}]}"#,
            false
        ));
    }
}
