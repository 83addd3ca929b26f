//! A stream decoder's batch (contract 0.3's `sse-batch`) read as events
//! borrowed from its text.

/// One server-sent event of a batch: its fields, borrowed from the
/// batch's text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event<'a> {
    /// The `event:` field, when present.
    pub event: Option<&'a str>,
    /// The `data:` field.
    pub data: &'a str,
}

/// The `len` bytes of `text` from byte `start`: a field of a batch. The
/// host gives spans of whole characters within the text; any other is a
/// broken host, and panics (the call traps).
pub fn field(text: &str, start: u32, len: u32) -> &str {
    &text[start as usize..][..len as usize]
}

/// The events of an `sse-batch` (any plugin's generated type: a `text`
/// and `events` whose `event` is an optional span and `data` a span, each
/// a `start` and a `len`), as a `Vec<Event>` borrowed from its text.
#[macro_export]
macro_rules! batch_events {
    ($batch:expr) => {{
        let batch = &$batch;
        batch
            .events
            .iter()
            .map(|e| $crate::sse::Event {
                event: e
                    .event
                    .as_ref()
                    .map(|s| $crate::sse::field(&batch.text, s.start, s.len)),
                data: $crate::sse::field(&batch.text, e.data.start, e.data.len),
            })
            .collect::<Vec<_>>()
    }};
}

/// In tests: events borrowed from owned `(event, data)` pairs.
#[cfg(feature = "test-support")]
pub fn events_of(owned: &[(Option<String>, String)]) -> Vec<Event<'_>> {
    owned
        .iter()
        .map(|(event, data)| Event {
            event: event.as_deref(),
            data,
        })
        .collect()
}

/// In a plugin's tests: an `SseBatch` of `(event, data)` pairs, built
/// as the host builds one, with the plugin's generated `SseBatch`,
/// `SseEvent` and `Span` (in scope where it is expanded).
#[cfg(feature = "test-support")]
#[macro_export]
macro_rules! sse_batch {
    ($events:expr) => {{
        let mut text = String::new();
        let mut span = |field: &str| {
            let start = text.len() as u32;
            text.push_str(field);
            Span {
                start,
                len: field.len() as u32,
            }
        };
        let events: Vec<SseEvent> = ::core::iter::IntoIterator::into_iter($events)
            .map(|(event, data): (Option<&str>, &str)| SseEvent {
                event: event.map(&mut span),
                data: span(data),
            })
            .collect();
        SseBatch { text, events }
    }};
}

#[cfg(test)]
mod tests {
    use super::Event;

    // The shape `wit-bindgen` generates for contract 0.3.
    struct Span {
        start: u32,
        len: u32,
    }
    struct SseEvent {
        event: Option<Span>,
        data: Span,
    }
    struct SseBatch {
        text: String,
        events: Vec<SseEvent>,
    }

    #[test]
    fn a_batch_reads_as_events_borrowed_from_its_text() {
        let batch = SseBatch {
            text: "message_start{\"é\":1}[DONE]".into(),
            events: vec![
                SseEvent {
                    event: Some(Span { start: 0, len: 13 }),
                    data: Span { start: 13, len: 8 },
                },
                SseEvent {
                    event: None,
                    data: Span { start: 21, len: 0 },
                },
                SseEvent {
                    event: None,
                    data: Span { start: 21, len: 6 },
                },
            ],
        };
        assert_eq!(
            crate::batch_events!(batch),
            [
                Event {
                    event: Some("message_start"),
                    data: "{\"é\":1}",
                },
                Event {
                    event: None,
                    data: "",
                },
                Event {
                    event: None,
                    data: "[DONE]",
                },
            ]
        );
    }

    #[test]
    #[should_panic]
    fn a_span_inside_a_character_is_a_broken_host() {
        super::field("é", 1, 1);
    }
}
