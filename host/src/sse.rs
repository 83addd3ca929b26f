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
    /// Feed bytes; complete events are appended to `out`. Lines are read
    /// where the bytes are; only an incomplete last line is kept (copied)
    /// for the next read.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Event>) -> Result<(), SseError> {
        let mut buf = std::mem::take(&mut self.buf);
        let read = if buf.is_empty() {
            self.lines(bytes, out)
                .map(|used| buf.extend_from_slice(&bytes[used..]))
        } else {
            buf.extend_from_slice(bytes);
            self.lines(&buf, out).map(|used| {
                buf.drain(..used);
            })
        };
        self.buf = buf;
        read?;
        if self.buf.len() + self.data.len() > MAX_EVENT_BYTES {
            return Err(SseError::TooLarge);
        }
        Ok(())
    }

    /// Handle the complete lines of `input`; how many bytes they took.
    fn lines(&mut self, input: &[u8], out: &mut Vec<Event>) -> Result<usize, SseError> {
        // The complete lines' text, checked as UTF-8 at once (a line ends
        // in an ASCII byte, so no character spans its end). A CR at the
        // very end may be the first half of CRLF: it waits for more.
        let Some(last) = memchr::memrchr2(b'\n', b'\r', input) else {
            return Ok(0);
        };
        let complete = if input[last] == b'\r' && last + 1 == input.len() {
            last
        } else {
            last + 1
        };
        // The lines before invalid bytes are still handled, as they came.
        let (text, valid) = match std::str::from_utf8(&input[..complete]) {
            Ok(text) => (text, true),
            Err(e) => {
                let before =
                    std::str::from_utf8(&input[..e.valid_up_to()]).map_err(|_| SseError::InvalidUtf8)?;
                (before, false)
            }
        };
        let bytes = text.as_bytes();
        let mut start = 0;
        while let Some(&first) = bytes.get(start) {
            // A blank line, the end of an event, mostly follows the line
            // before it at once: found without a search.
            let end = match first {
                b'\n' | b'\r' => start,
                _ => match memchr::memchr2(b'\n', b'\r', &bytes[start..]) {
                    Some(pos) => start + pos,
                    None => break,
                },
            };
            let terminator = bytes[end];
            self.line(&text[start..end], out);
            start = end + 1;
            if terminator == b'\r' && input.get(start) == Some(&b'\n') {
                start += 1;
            }
        }
        if !valid {
            return Err(SseError::InvalidUtf8);
        }
        Ok(start)
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
        // Most lines are data: no search for their colon. Others find it
        // by its byte (`split_once(':')` searches by char, and took a
        // tenth of a stream event's framing; callgrind).
        let (field, value) = match line.strip_prefix("data:") {
            Some(value) => ("data", value),
            None => match memchr::memchr(b':', line.as_bytes()) {
                Some(colon) => (&line[..colon], &line[colon + 1..]),
                None => (line, ""),
            },
        };
        let value = value.strip_prefix(' ').unwrap_or(value);
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
    fn any_cut_of_the_reads_gives_the_same_events() {
        let text =
            "event: a\r\ndata: {\"t\":\"héllo\"}\r\n\r\n: note\ndata: 1\ndata: 2\n\ndata: end\r\r".as_bytes();
        let whole = parse(&[text]);
        assert_eq!(whole.len(), 3);
        for size in 1..=9 {
            let reads: Vec<&[u8]> = text.chunks(size).collect();
            assert_eq!(parse(&reads), whole, "reads of {size} bytes");
        }
    }

    #[test]
    fn dispatches_an_unterminated_last_event() {
        assert_eq!(parse(&[b"data: [DONE]"])[0].data, "[DONE]");
    }

    #[test]
    fn rejects_invalid_utf8_after_the_events_before_it() {
        let mut parser = SseParser::default();
        assert_eq!(
            parser.push(b"data: \xff\xfe\n", &mut Vec::new()),
            Err(SseError::InvalidUtf8)
        );
        // In one read: the events before the bad bytes are delivered.
        let (mut parser, mut out) = (SseParser::default(), Vec::new());
        let read = b"data: a\n\ndata: b\r\n\r\ndata: c\xff\n\ndata: d\n\n";
        assert_eq!(parser.push(read, &mut out), Err(SseError::InvalidUtf8));
        let data: Vec<_> = out.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(data, ["a", "b"]);
    }
}
