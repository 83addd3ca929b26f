//! The text log's fields, written byte for byte as `tracing_subscriber`'s
//! default formatter writes them when colours are off, at a fraction of its
//! cost.
//!
//! The request line has about 25 fields. The default formatter writes each
//! with `write!` through two layers of `dyn fmt::Write`, and quotes every
//! string through `Debug`, one character at a time: that was most of what
//! the line cost (callgrind: 28 000 of the 45 000 instructions a request
//! spends logging at `info`). Here numbers go through `itoa`, and a string
//! with nothing to escape is written as it is between quotes. The message,
//! errors, and any string that needs escaping go the default way.

use std::fmt;
use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};

/// Field formatting for the uncoloured text log; the same output as
/// [`tracing_subscriber::fmt::format::DefaultFields`].
#[derive(Debug, Default, Clone, Copy)]
pub struct TextFields;

impl<'a> MakeVisitor<Writer<'a>> for TextFields {
    type Visitor = TextVisitor<'a>;

    fn make_visitor(&self, writer: Writer<'a>) -> TextVisitor<'a> {
        TextVisitor {
            writer,
            is_empty: true,
            result: Ok(()),
        }
    }
}

pub struct TextVisitor<'a> {
    writer: Writer<'a>,
    is_empty: bool,
    result: fmt::Result,
}

impl TextVisitor<'_> {
    /// Start `name=`, after a space unless it is the first field; `None`
    /// for a field the default formatter would not write at all, or after
    /// a failed write.
    fn start(&mut self, field: &Field) -> Option<()> {
        let name = field.name();
        // The `log` crate's metadata, already written as the line's target.
        if self.result.is_err() || name.starts_with("log.") {
            return None;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        let separator = if std::mem::take(&mut self.is_empty) {
            ""
        } else {
            " "
        };
        self.result = self
            .writer
            .write_str(separator)
            .and_then(|()| self.writer.write_str(name))
            .and_then(|()| self.writer.write_char('='));
        self.result.is_ok().then_some(())
    }

    fn integer(&mut self, field: &Field, value: impl itoa::Integer) {
        if self.start(field).is_some() {
            self.result = self.writer.write_str(itoa::Buffer::new().format(value));
        }
    }

    /// What the default formatter does with this field.
    fn by_default(&mut self, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if self.result.is_err() {
            return;
        }
        let mut default = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut default);
        self.result = default.finish();
        self.is_empty = false;
    }
}

/// Whether `Debug` writes `s` as it is between quotes: printable ASCII,
/// without the two characters it escapes.
fn needs_no_escape(s: &str) -> bool {
    s.bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
}

impl Visit for TextVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" || !needs_no_escape(value) {
            return self.by_default(|d| d.record_str(field, value));
        }
        if self.start(field).is_some() {
            self.result = self
                .writer
                .write_char('"')
                .and_then(|()| self.writer.write_str(value))
                .and_then(|()| self.writer.write_char('"'));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.integer(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.integer(field, value);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.integer(field, value);
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.integer(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.start(field).is_some() {
            self.result = self.writer.write_str(if value { "true" } else { "false" });
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.start(field).is_some() {
            self.result = write!(self.writer, "{value:?}");
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.by_default(|d| d.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            return self.by_default(|d| d.record_debug(field, value));
        }
        if self.start(field).is_some() {
            self.result = write!(self.writer, "{value:?}");
        }
    }
}

impl VisitOutput<fmt::Result> for TextVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for TextVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::fmt::format::DefaultFields;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    #[derive(Debug)]
    struct Failed;
    impl fmt::Display for Failed {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("upstream \"refused\"")
        }
    }
    impl std::error::Error for Failed {}

    /// Every kind of field the gateway logs, and the awkward ones.
    fn log_everything() {
        let span = tracing::info_span!(
            "request",
            id = %"0193-abc",
            caller_id = Some("caller \"7\""),
            absent = None::<&str>,
            key = tracing::field::Empty
        );
        let _entered = span.enter();
        span.record("key", "team-a");
        tracing::info!(
            route = "bench",
            quoted = "say \"hi\"",
            backslash = "C:\\models",
            newline = "two\nlines",
            unicode = "héllo ✓",
            control = "bell\u{7}",
            empty = "",
            r#type = "chat",
            tokens = 12_u64,
            debt = -3_i64,
            big = u128::MAX,
            stream = true,
            cost = 0.000_123_f64,
            tiny = 1e-9_f64,
            zero = 0.0_f64,
            whole = 2.0_f64,
            missing = None::<u32>,
            present = Some(7_u32),
            plan = %"a/m,b/n",
            debugged = ?vec!["x", "y\"z"],
            error = &Failed as &(dyn std::error::Error + 'static),
            "request {} done", 1
        );
        tracing::warn!("message \u{1b}[31m with an escape");
        tracing::info!(only = "fields");
    }

    fn capture<N>(fields: N) -> String
    where
        N: for<'w> tracing_subscriber::fmt::FormatFields<'w> + Send + Sync + 'static,
    {
        let out = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .fmt_fields(fields)
            .with_writer(out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, log_everything);
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn lines_are_the_default_formatters_byte_for_byte() {
        let default = capture(DefaultFields::new());
        assert!(default.lines().count() == 3, "{default}");
        assert!(default.contains("tokens=12"), "{default}");
        assert_eq!(capture(TextFields), default);
    }

    #[test]
    fn only_printable_ascii_without_quotes_or_backslashes_is_written_as_it_is() {
        assert!(needs_no_escape("gpt-4o-mini /v1/chat ~'x'"));
        for escaped in ["a\"b", "a\\b", "tab\t", "\u{7f}"] {
            assert!(!needs_no_escape(escaped), "{escaped:?}");
            assert_ne!(format!("{escaped:?}"), format!("\"{escaped}\""));
        }
        // Beyond ASCII it does not look: such strings take the default way.
        assert!(!needs_no_escape("héllo"));
    }
}
