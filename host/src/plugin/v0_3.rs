//! Contract `switchboard:plugin@0.3.0` (`wit/switchboard.wit`): its
//! generated bindings, and the conversions between them and the host's own
//! types ([`super::types`]): those shared with 0.2 ([`super::convert`]), and
//! what 0.3 changed, a stream's events as one text with spans and response
//! headers as lines. Nothing outside `plugin/` names a type from here.

use super::types as host;

/// Host bindings of the `adapter` world.
pub mod adapter {
    wasmtime::component::bindgen!({
        world: "adapter",
        path: "../wit",
        exports: { default: async },
    });
    pub use self::switchboard::plugin::types::{ApiFormat, Body, Capabilities, Usage};
    pub use exports::switchboard::plugin::provider::*;
}

/// Host bindings of the `policy` world.
pub mod policy {
    wasmtime::component::bindgen!({
        world: "policy",
        path: "../wit",
        exports: { default: async },
    });
    pub use self::switchboard::plugin::types::{ApiFormat, Capabilities};
    pub use exports::switchboard::plugin::router::*;
}

super::convert::since_0_2!();

impl From<host::InboundResponse> for adapter::InboundResponse {
    fn from(r: host::InboundResponse) -> Self {
        adapter::InboundResponse {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    }
}

impl From<&host::InboundResponse> for adapter::InboundResponse {
    fn from(r: &host::InboundResponse) -> Self {
        adapter::InboundResponse {
            status: r.status,
            headers: r.headers.clone(),
            body: r.body.clone(),
        }
    }
}

/// The events of one read as one text, each field a span of it: the
/// batch crosses into the plugin as two allocations, not one per event.
pub fn batch(events: &[host::SseEvent]) -> adapter::SseBatch {
    let size = events
        .iter()
        .map(|e| e.data.len() + e.event.as_ref().map_or(0, String::len))
        .sum();
    let mut text = String::with_capacity(size);
    let mut span = |field: &str| {
        let start = text.len();
        text.push_str(field);
        adapter::Span {
            start: start as u32,
            len: field.len() as u32,
        }
    };
    let events = events
        .iter()
        .map(|e| adapter::SseEvent {
            event: e.event.as_deref().map(&mut span),
            data: span(&e.data),
        })
        .collect();
    adapter::SseBatch { text, events }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_one_text_and_each_field_a_span_of_it() {
        let events = [
            host::SseEvent {
                event: Some("delta".into()),
                data: "{\"a\":\"é\"}".into(),
            },
            host::SseEvent {
                event: None,
                data: String::new(),
            },
            host::SseEvent {
                event: None,
                data: "[DONE]".into(),
            },
        ];
        let batch = batch(&events);
        let field = |span: &adapter::Span| &batch.text[span.start as usize..][..span.len as usize];
        assert_eq!(batch.events.len(), 3);
        for (ours, theirs) in events.iter().zip(&batch.events) {
            assert_eq!(theirs.event.as_ref().map(field), ours.event.as_deref());
            assert_eq!(field(&theirs.data), ours.data);
        }
        assert_eq!(batch.text, "delta{\"a\":\"é\"}[DONE]");
    }

    #[test]
    fn forwarded_events_are_taken_from_the_batch_and_bad_positions_or_repeats_refused() {
        let event = |data: &str| host::SseEvent {
            event: Some("e".into()),
            data: data.into(),
        };
        let mut batch = vec![event("a"), event("b")];
        let two = adapter::Decoded {
            events: vec![
                adapter::Emitted::Forward(1),
                adapter::Emitted::Write(adapter::OutEvent {
                    event: None,
                    data: b"new".to_vec(),
                }),
            ],
            usage: None,
            model: Some("m-2024".into()),
            done: true,
            error: None,
        };
        let ours = decoded(two, &mut batch).expect("a valid batch");
        assert_eq!(
            ours.events,
            vec![
                host::OutEvent {
                    event: Some("e".into()),
                    data: host::EventData::Forwarded("b".into()),
                },
                host::OutEvent {
                    event: None,
                    data: host::EventData::Written(b"new".to_vec()),
                },
            ]
        );
        assert_eq!(ours.model.as_deref(), Some("m-2024"));
        let beyond = adapter::Decoded {
            events: vec![adapter::Emitted::Forward(2)],
            usage: None,
            model: None,
            done: false,
            error: None,
        };
        assert_eq!(
            decoded(beyond, &mut batch).unwrap_err(),
            "forwarded event 2 of a batch of 2"
        );
        let twice = adapter::Decoded {
            events: vec![adapter::Emitted::Forward(0), adapter::Emitted::Forward(0)],
            usage: None,
            model: None,
            done: false,
            error: None,
        };
        assert_eq!(decoded(twice, &mut batch).unwrap_err(), "forwarded event 0 twice");
    }
}
