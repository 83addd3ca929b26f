//! Framing named server-sent events, as the Messages and Responses APIs
//! send them: `event: <name>` then `data: <json>`.

use super::Body;
use super::chat::with_answered_by;
use crate::flow::stream::{Chunk, StreamEvent, Streaming};
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::Value;
use std::convert::Infallible;

/// A stream as a `text/event-stream` response saying who answers it:
/// `frame` writes each event as the bytes the caller gets, in order
/// (nothing for an event that says nothing in the caller's API). The events
/// of one provider read go out as one frame: one buffer, one write.
pub fn response(
    streaming: Streaming,
    frame: impl FnMut(StreamEvent, &mut Vec<u8>) + Send + Sync + 'static,
) -> http::Response<Body> {
    let frames =
        futures_util::stream::unfold((streaming.events, frame), |(mut events, mut frame)| async move {
            loop {
                let batch = events.recv().await?;
                let size = batch.iter().map(StreamEvent::framed_size).sum();
                let mut out = Vec::with_capacity(size);
                for event in batch {
                    frame(event, &mut out);
                }
                if !out.is_empty() {
                    return Some((
                        Ok::<_, Infallible>(Frame::data(Bytes::from(out))),
                        (events, frame),
                    ));
                }
            }
        });
    with_answered_by(http::Response::builder(), &streaming.by)
        .header(http::header::CONTENT_TYPE, "text/event-stream")
        .header(http::header::CACHE_CONTROL, "no-cache")
        .body(BodyExt::boxed(StreamBody::new(frames)))
        .expect("valid response")
}

/// A provider's event passed through as it came; a provider that left the
/// event name out has it filled in from the data's `type`.
pub fn passed_through(chunk: &Chunk, out: &mut Vec<u8>) {
    let name = match &chunk.event {
        Some(name) => name.clone(),
        None => serde_json::from_slice::<Value>(&chunk.data)
            .ok()
            .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_default(),
    };
    if !name.is_empty() {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(&chunk.data);
    out.extend_from_slice(b"\n\n");
}

/// Events the gateway wrote, framed in order.
pub fn framed(events: Vec<(&'static str, Value)>, out: &mut Vec<u8>) {
    use std::io::Write;
    for (name, data) in events {
        write!(out, "event: {name}\ndata: {data}\n\n").expect("writing to a Vec cannot fail");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nameless_event_is_named_by_its_type() {
        let chunk = Chunk::chat(br#"{"type":"ping"}"#.to_vec());
        let mut out = Vec::new();
        passed_through(&chunk, &mut out);
        assert_eq!(out, b"event: ping\ndata: {\"type\":\"ping\"}\n\n");
        let named = Chunk {
            event: Some("x".into()),
            data: b"{}".to_vec(),
            seen: None,
        };
        out.clear();
        passed_through(&named, &mut out);
        assert_eq!(out, b"event: x\ndata: {}\n\n");
    }
}
