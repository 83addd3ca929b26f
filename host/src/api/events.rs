//! Framing named server-sent events, as the Messages and Responses APIs
//! send them: `event: <name>` then `data: <json>`.

use crate::flow::stream::Chunk;
use bytes::Bytes;
use serde_json::Value;

/// A provider's event passed through as it came; a provider that left the
/// event name out has it filled in from the data's `type`.
pub fn passed_through(chunk: &Chunk) -> Bytes {
    let name = match &chunk.event {
        Some(name) => name.clone(),
        None => serde_json::from_slice::<Value>(&chunk.data)
            .ok()
            .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_default(),
    };
    let mut out = Vec::with_capacity(chunk.data.len() + name.len() + 16);
    if !name.is_empty() {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(&chunk.data);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// Events the gateway wrote, framed in order.
pub fn framed(events: Vec<(&'static str, Value)>) -> Bytes {
    let mut out = Vec::new();
    for (name, data) in events {
        out.extend_from_slice(format!("event: {name}\ndata: {data}\n\n").as_bytes());
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nameless_event_is_named_by_its_type() {
        let chunk = Chunk::chat(br#"{"type":"ping"}"#.to_vec());
        assert_eq!(
            &passed_through(&chunk)[..],
            b"event: ping\ndata: {\"type\":\"ping\"}\n\n"
        );
        let named = Chunk {
            event: Some("x".into()),
            data: b"{}".to_vec(),
        };
        assert_eq!(&passed_through(&named)[..], b"event: x\ndata: {}\n\n");
    }
}
