//! The log's lines, as `tracing_subscriber`'s own formatters write them,
//! at a fraction of their cost: the text log's fields byte for byte (when
//! colours are off), the JSON log's lines key for key.
//!
//! The request line has about 25 fields. The default formatter writes each
//! with `write!` through two layers of `dyn fmt::Write`, and quotes every
//! string through `Debug`, one character at a time: that was most of what
//! the line cost (callgrind: 28 000 of the 45 000 instructions a request
//! spends logging at `info`). Here numbers go through `itoa`, and a string
//! with nothing to escape is written as it is between quotes. The message,
//! errors, and any string that needs escaping go the default way.
//!
//! The JSON log (`--log-format json`) has its own line writer for the same
//! reason: `tracing_subscriber`'s keeps a span's fields as a JSON text and
//! parses it back into a tree for every line, twice (the `span` and the
//! `spans` keys), and collects the event's fields through an I/O adaptor
//! (callgrind: 88 000 instructions a request at `info`, against 29 000 for
//! text). [`JsonLines`] writes the same keys and values: a span's fields
//! are kept as the members of a JSON object and spliced in as they are.

use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::field::{MakeVisitor, RecordFields, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::{LookupSpan, SpanRef};

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

    fn integer(&mut self, field: &Field, value: impl itoa::Integer + fmt::Debug) {
        if field.name() == "message" {
            return self.by_default(field, |d| d.record_debug(field, &value));
        }
        if self.start(field).is_some() {
            self.result = self.writer.write_str(itoa::Buffer::new().format(value));
        }
    }

    /// What the default formatter does with this field. (It writes nothing
    /// for the `log` crate's metadata: then neither does this, nor does it
    /// count as written.)
    fn by_default(&mut self, field: &Field, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if self.result.is_err() || field.name().starts_with("log.") {
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
            return self.by_default(field, |d| d.record_str(field, value));
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
        if field.name() == "message" {
            return self.by_default(field, |d| d.record_bool(field, value));
        }
        if self.start(field).is_some() {
            self.result = self.writer.write_str(if value { "true" } else { "false" });
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name() == "message" {
            return self.by_default(field, |d| d.record_f64(field, value));
        }
        if self.start(field).is_some() {
            self.result = write!(self.writer, "{value:?}");
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.by_default(field, |d| d.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            return self.by_default(field, |d| d.record_debug(field, value));
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

/// The JSON log's lines: the keys and values of `tracing_subscriber`'s
/// JSON format with flattened events (`timestamp`, `level`, the event's
/// fields, `target`, `span`, `spans`), with a span's fields in the order
/// they were recorded rather than sorted (until the span records a field a
/// second time: then they are sorted, as a map merges them).
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonLines;

/// A span's fields for [`JsonLines`]: the members of a JSON object,
/// `"id":"…","method":"POST"`, without the braces.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonSpanFields;

impl<'w> FormatFields<'w> for JsonSpanFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut members = Members::default();
        fields.record(&mut FieldMembers {
            out: &mut members,
            of_span: true,
        });
        writer.write_str(&members.text())
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut added = Members::default();
        fields.record(&mut FieldMembers {
            out: &mut added,
            of_span: true,
        });
        let added = added.text();
        if added.is_empty() {
            return Ok(());
        }
        if current.fields.is_empty() {
            current.fields = added;
            return Ok(());
        }
        // A field recorded again replaces its value (as with
        // `tracing_subscriber`'s JSON fields): merged through a map, which
        // only a span recording one field twice pays for.
        // A name is looked for as written and without `r#` (a `Debug`
        // field's is stored without it); a value that happens to hold the
        // text only costs the merge.
        let (mut again, mut key) = (false, String::new());
        fields.record(&mut |field: &Field, _: &dyn fmt::Debug| {
            let name = field.name();
            for name in [name, name.strip_prefix("r#").unwrap_or(name)] {
                key.clear();
                key.push('"');
                key.push_str(name);
                key.push_str("\":");
                again |= current.fields.contains(&key);
            }
        });
        if !again {
            current.fields.push(',');
            current.fields.push_str(&added);
            return Ok(());
        }
        let mut merged: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&format!("{{{}}}", current.fields)).map_err(|_| fmt::Error)?;
        let added: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&format!("{{{added}}}")).map_err(|_| fmt::Error)?;
        merged.extend(added);
        let text = serde_json::to_string(&merged).map_err(|_| fmt::Error)?;
        current.fields = text[1..text.len() - 1].to_string();
        Ok(())
    }
}

impl<S> FormatEvent<S, JsonSpanFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonSpanFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let mut line = Members {
            out: Vec::with_capacity(1024),
            comma: false,
        };
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        line.entry("timestamp", &timestamp);
        line.entry("level", meta.level().as_str());
        event.record(&mut FieldMembers {
            out: &mut line,
            of_span: false,
        });
        line.entry("target", meta.target());
        let current = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = &current {
            line.key("span");
            span_object(&mut line, span);
            line.key("spans");
            line.out.push(b'[');
            if let Some(leaf) = ctx.lookup_current() {
                for (i, span) in leaf.scope().from_root().enumerate() {
                    if i > 0 {
                        line.out.push(b',');
                    }
                    span_object(&mut line, &span);
                }
            }
            line.out.push(b']');
        }
        writer.write_char('{')?;
        writer.write_str(&line.text())?;
        writer.write_str("}\n")
    }
}

/// `{<its fields>,"name":"<its name>"}`.
fn span_object<S>(line: &mut Members, span: &SpanRef<'_, S>)
where
    S: for<'a> LookupSpan<'a>,
{
    line.out.push(b'{');
    let extensions = span.extensions();
    let fields = extensions
        .get::<FormattedFields<JsonSpanFields>>()
        .map_or("", |f| f.fields.as_str());
    line.out.extend_from_slice(fields.as_bytes());
    line.comma = !fields.is_empty();
    line.entry("name", span.name());
    line.out.push(b'}');
    line.comma = true;
}

/// JSON object members written one after another.
#[derive(Default)]
struct Members {
    out: Vec<u8>,
    /// A member was written: the next one follows a comma.
    comma: bool,
}

impl Members {
    fn key(&mut self, name: &str) {
        if std::mem::replace(&mut self.comma, true) {
            self.out.push(b',');
        }
        self.json(name);
        self.out.push(b':');
    }

    fn json(&mut self, value: &(impl serde::Serialize + ?Sized)) {
        // Writing to a `Vec` cannot fail, and these values all serialise.
        let _ = serde_json::to_writer(&mut self.out, value);
    }

    fn entry(&mut self, name: &str, value: &(impl serde::Serialize + ?Sized)) {
        self.key(name);
        self.json(value);
    }

    fn text(self) -> String {
        // serde_json writes UTF-8.
        String::from_utf8(self.out).unwrap_or_default()
    }
}

/// Fields as JSON members. An event's as `tracing-serde` writes them for
/// `tracing_subscriber`'s flattened JSON events: every field under its own
/// name, anything but a number, bool or string as its `Debug` text. A
/// span's as `tracing_subscriber`'s JSON fields keep them: the same, but
/// without the `log` crate's metadata and with `r#` taken off a `Debug`
/// field's name.
struct FieldMembers<'a> {
    out: &'a mut Members,
    of_span: bool,
}

impl Visit for FieldMembers<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut name = field.name();
        if self.of_span {
            if name.starts_with("log.") {
                return;
            }
            name = name.strip_prefix("r#").unwrap_or(name);
        }
        self.out.entry(name, &format_args!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.out.entry(field.name(), value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.out.entry(field.name(), &value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.out.entry(field.name(), &value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.out.entry(field.name(), &value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.out.entry(field.name(), &value);
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        if self.of_span {
            // An array of numbers, as `tracing_subscriber` keeps them.
            return self.out.entry(field.name(), value);
        }
        /// `tracing`'s own `Debug` text of bytes, which is what
        /// `tracing-serde` writes for an event's.
        struct AsDebug<'a, 'b>(&'a mut FieldMembers<'b>);
        impl Visit for AsDebug<'_, '_> {
            fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
                self.0.record_debug(field, value);
            }
        }
        AsDebug(self).record_bytes(field, value);
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
        tracing::info!(message = 5_u64, flag = true);
        tracing::info!(message = false, ratio = 0.5_f64);
        tracing::info!(message = 0.25_f64, bytes = &b"\x01\xff"[..]);
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
        assert!(default.lines().count() == 6, "{default}");
        assert!(default.contains("tokens=12"), "{default}");
        assert_eq!(capture(TextFields), default);
    }

    /// The JSON lines of `log_everything` and of a few more shapes: no
    /// span, nested spans, a span field recorded twice.
    fn log_json_shapes() {
        tracing::info!(outside = 1_u64, "no span");
        log_everything();
        let outer = tracing::info_span!("outer", tenant = "t1", n = 2_u64);
        let _outer = outer.enter();
        let inner = tracing::info_span!(
            "inner",
            r#type = ?"x",
            key = tracing::field::Empty,
            raw = &b"ab"[..]
        );
        let _inner = inner.enter();
        inner.record("key", "first");
        inner.record("key", "second");
        inner.record("type", tracing::field::debug("y"));
        inner.record("late", 1_u64);
        tracing::warn!(ratio = 0.5_f64, nan = f64::NAN, "nested");
        let bare = tracing::info_span!("bare");
        let _bare = bare.enter();
        tracing::info!("in a span without fields");
    }

    fn json_lines(
        subscriber: impl tracing::Subscriber + Send + Sync,
        out: &Captured,
    ) -> Vec<serde_json::Value> {
        tracing::subscriber::with_default(subscriber, log_json_shapes);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| {
                let mut value: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
                let timestamp = value.as_object_mut().unwrap().remove("timestamp").unwrap();
                assert!(timestamp.as_str().unwrap().ends_with('Z'), "{timestamp}");
                value
            })
            .collect()
    }

    #[test]
    fn json_lines_hold_the_default_json_formats_keys_and_values() {
        let out = Captured::default();
        let default = json_lines(
            tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_writer(out.clone())
                .finish(),
            &out,
        );
        let out = Captured::default();
        let ours = json_lines(
            tracing_subscriber::fmt()
                .fmt_fields(JsonSpanFields)
                .event_format(JsonLines)
                .with_writer(out.clone())
                .finish(),
            &out,
        );
        assert_eq!(default.len(), 9, "{default:#?}");
        assert!(default[1]["span"]["key"] == "team-a", "{:#}", default[1]);
        let nested = &default[7];
        assert!(nested["spans"][1]["key"] == "second", "{nested:#}");
        assert!(nested["spans"][1]["type"] == "\"y\"", "{nested:#}");
        assert!(nested["span"]["raw"] == serde_json::json!([97, 98]), "{nested:#}");
        assert_eq!(ours, default);
        // A value recorded again replaced the first rather than joining it
        // (a parsed object hides a repeated key: the last one wins).
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains(r#""key":"first""#), "{text}");
        assert!(!text.contains(r#""type":"\"x\"""#), "{text}");
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
