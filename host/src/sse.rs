//! Server-sent event framing: bytes from the provider in, whole events out.
//! Lines are decoded only once complete, so a multi-byte character split
//! across network reads is never damaged.

/// Largest event accepted; a provider sending more is misbehaving.
const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub event: Option<String>,
    pub data: String,
    /// A line of the event came from text its parser's watch marked (see
    /// [`SseParser::watching`]); always, for a parser without one.
    pub marked: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SseError {
    #[error("stream event is not valid UTF-8")]
    InvalidUtf8,
    #[error("stream event exceeds {MAX_EVENT_BYTES} bytes")]
    TooLarge,
}

/// Whether text may hold what a parser watches for.
pub type Watch = Box<dyn Fn(&[u8]) -> bool + Send + Sync>;

#[derive(Default)]
pub struct SseParser {
    buf: Vec<u8>,
    event: Option<String>,
    data: String,
    has_data: bool,
    /// A line of the pending event came from marked text.
    marked: bool,
    watch: Option<Watch>,
}

impl SseParser {
    /// A parser that asks `watch` once of each read's complete lines, and
    /// marks the events that took a line from text it said yes to. A
    /// string without a line break that is in an event's data or name is
    /// in one of its lines, so in text the watch was asked about: an
    /// unmarked event cannot hold it. One search of a read instead of one
    /// per event.
    pub fn watching(watch: Watch) -> SseParser {
        SseParser {
            watch: Some(watch),
            ..SseParser::default()
        }
    }

    fn marks(&self, text: &[u8]) -> bool {
        self.watch.as_ref().is_none_or(|watch| watch(text))
    }

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
        let marked = self.marks(bytes);
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
            self.line(&text[start..end], marked, out);
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
            let marked = self.marks(line.as_bytes());
            self.line(line.trim_end_matches('\r'), marked, out);
        }
        self.line("", false, out);
        Ok(())
    }

    /// One line, `marked` when its text was.
    fn line(&mut self, line: &str, marked: bool, out: &mut Vec<Event>) {
        if line.is_empty() {
            if self.has_data {
                out.push(Event {
                    event: self.event.take(),
                    data: std::mem::take(&mut self.data),
                    marked: self.marked,
                });
            }
            self.event = None;
            self.has_data = false;
            self.marked = false;
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
            "event" => {
                self.event = Some(value.to_string());
                self.marked |= marked;
            }
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
                self.marked |= marked;
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
                data: "{}".into(),
                marked: true,
            }
        );
        assert_eq!(
            events[1],
            Event {
                event: None,
                data: "a\nb".into(),
                marked: true,
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
                data: "{\"t\":\"héllo 世界\"}".into(),
                marked: true,
            }]
        );
    }

    #[test]
    fn an_event_is_marked_when_a_line_of_it_came_from_marked_text() {
        let watched = |reads: &[&[u8]]| {
            let mut parser = SseParser::watching(Box::new(|text| text.windows(3).any(|w| w == b"KEY")));
            let mut out = Vec::new();
            for read in reads {
                parser.push(read, &mut out).unwrap();
            }
            parser.finish(&mut out).unwrap();
            out.iter().map(|e| (e.data.clone(), e.marked)).collect::<Vec<_>>()
        };
        let plain = |data: &str| (data.to_string(), false);
        let marked = |data: &str| (data.to_string(), true);
        assert_eq!(
            watched(&[b"data: a\n\ndata: KEY\n\n", b"data: b\n\n"]),
            [marked("a"), marked("KEY"), plain("b")]
        );
        // Its data line in one read, its end in the next.
        assert_eq!(
            watched(&[b"data: x KEY\n", b"\ndata: c\n\n"]),
            [marked("x KEY"), plain("c")]
        );
        // A line cut between reads is read whole, from the two together.
        assert_eq!(watched(&[b"data: K", b"EY\n\n"]), [marked("KEY")]);
        // One of its lines, or its name.
        assert_eq!(watched(&[b"data: 1\n", b"data: KEY\n\n"]), [marked("1\nKEY")]);
        assert_eq!(watched(&[b"event: KEY\n", b"data: 1\n\n"]), [marked("1")]);
        // At the end of a stream without its blank line.
        assert_eq!(
            watched(&[b"data: 1\n\n", b"data: KEY"]),
            [plain("1"), marked("KEY")]
        );
        // A comment is no line of an event.
        assert_eq!(watched(&[b": KEY\n", b"data: 1\n\n"]), [plain("1")]);
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
