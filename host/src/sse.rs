//! Server-sent event framing: bytes from the provider in, whole events out.
//! Lines are decoded only once complete, so a multi-byte character split
//! across network reads is never damaged.

/// Largest event accepted; a provider sending more is misbehaving.
const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub event: Option<String>,
    pub data: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SseError {
    #[error("stream event is not valid UTF-8")]
    InvalidUtf8,
    #[error("stream event exceeds {MAX_EVENT_BYTES} bytes")]
    TooLarge,
}

#[derive(Default)]
pub struct SseParser {
    buf: Vec<u8>,
    event: Option<String>,
    data: String,
    has_data: bool,
}

impl SseParser {
    /// Feed bytes; complete events are appended to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Event>) -> Result<(), SseError> {
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(pos) = self.buf[start..].iter().position(|&b| b == b'\n' || b == b'\r') {
            let end = start + pos;
            let terminator = self.buf[end];
            // A CR at the very end may be the first half of CRLF: wait for more.
            if terminator == b'\r' && end + 1 == self.buf.len() {
                break;
            }
            let line = std::str::from_utf8(&self.buf[start..end]).map_err(|_| SseError::InvalidUtf8)?;
            let line = line.to_owned();
            self.line(&line, out);
            start = end + 1;
            if terminator == b'\r' && self.buf.get(start) == Some(&b'\n') {
                start += 1;
            }
        }
        self.buf.drain(..start);
        if self.buf.len() + self.data.len() > MAX_EVENT_BYTES {
            return Err(SseError::TooLarge);
        }
        Ok(())
    }

    /// The stream ended: dispatch an event left without its blank line.
    pub fn finish(&mut self, out: &mut Vec<Event>) -> Result<(), SseError> {
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            let line = std::str::from_utf8(&rest).map_err(|_| SseError::InvalidUtf8)?;
            self.line(line.trim_end_matches('\r'), out);
        }
        self.line("", out);
        Ok(())
    }

    fn line(&mut self, line: &str, out: &mut Vec<Event>) {
        if line.is_empty() {
            if self.has_data {
                out.push(Event {
                    event: self.event.take(),
                    data: std::mem::take(&mut self.data),
                });
            }
            self.event = None;
            self.has_data = false;
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(chunks: &[&[u8]]) -> Vec<Event> {
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.push(chunk, &mut out).unwrap();
        }
        parser.finish(&mut out).unwrap();
        out
    }

    #[test]
    fn frames_events_with_names_and_multiline_data() {
        let events = parse(&[b"event: ping\ndata: {}\n\n: comment\ndata: a\ndata: b\n\n"]);
        assert_eq!(
            events[0],
            Event {
                event: Some("ping".into()),
                data: "{}".into()
            }
        );
        assert_eq!(
            events[1],
            Event {
                event: None,
                data: "a\nb".into()
            }
        );
    }

    #[test]
    fn survives_multibyte_characters_split_across_reads() {
        let text = "data: {\"t\":\"héllo 世界\"}\n\n".as_bytes();
        let split = text.iter().position(|&b| b >= 0x80).unwrap() + 1;
        let events = parse(&[&text[..split], &text[split..]]);
        assert_eq!(
            events,
            vec![Event {
                event: None,
                data: "{\"t\":\"héllo 世界\"}".into()
            }]
        );
    }

    #[test]
    fn handles_crlf_split_between_reads_and_cr_only() {
        let events = parse(&[b"data: x\r", b"\n\r\ndata: y\r\r"]);
        assert_eq!(
            events.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
            vec!["x", "y"]
        );
    }

    #[test]
    fn dispatches_an_unterminated_last_event() {
        assert_eq!(parse(&[b"data: [DONE]"])[0].data, "[DONE]");
    }

    #[test]
    fn rejects_invalid_utf8() {
        let mut parser = SseParser::default();
        assert_eq!(
            parser.push(b"data: \xff\xfe\n", &mut Vec::new()),
            Err(SseError::InvalidUtf8)
        );
    }
}
