//! A one-pass reader of JSON text: the whole text checked against the JSON
//! grammar (RFC 8259), the few values a caller reads handed over borrowed.
//! The host checks every chat chunk and whole answer with it; an adapter
//! that passes an answer on reads what it needs of it with it too. Why
//! not serde_json: BENCHMARKS.md (ninth and tenth sessions).

use std::borrow::Cow;

/// Whether `bytes` are one JSON value (valid UTF-8 and grammar throughout),
/// nested at most 128 levels deep.
pub fn is_json_text(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    let mut scanner = Scanner::new(text);
    scanner.skip().and_then(|()| scanner.end()).is_ok()
}

/// A member a reader takes, seen at most once in its object (which of two
/// would count is anyone's guess).
#[derive(Default, Clone, Copy)]
pub struct Once(bool);

impl Once {
    /// Whether it was seen.
    pub fn seen(self) -> bool {
        self.0
    }

    /// An error the second time.
    pub fn check(&mut self, scanner: &Scanner) -> Result<(), ScanError> {
        if std::mem::replace(&mut self.0, true) {
            return Err(scanner.error("duplicate member"));
        }
        Ok(())
    }
}

/// Where and why a text is not JSON, or not what its reader wants.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{what} at byte {at}")]
pub struct ScanError {
    pub what: &'static str,
    pub at: usize,
}

/// Nesting deeper than this is refused, so hostile text cannot exhaust
/// the stack. serde_json refuses it in what it reads (from 128 levels) but
/// skips values of any depth; no chunk comes near it.
const MAX_DEPTH: u32 = 128;

/// A string as written (valid JSON, in text checked as UTF-8), with its
/// quotes, so an escaped one decodes with serde_json's own rules.
#[derive(Debug, Clone, Copy)]
pub struct Str<'a> {
    quoted: &'a [u8],
    escaped: bool,
}

impl<'a> Str<'a> {
    pub fn decode(self) -> Cow<'a, str> {
        let text = std::str::from_utf8(self.quoted).expect("a string of text checked as UTF-8");
        if !self.escaped {
            return Cow::Borrowed(&text[1..text.len() - 1]);
        }
        // Checked when read (escapes, paired surrogates), so it decodes.
        Cow::Owned(serde_json::from_str(text).expect("a string checked when read"))
    }

    /// A member's name, compared as bytes.
    fn name(self) -> Cow<'a, [u8]> {
        match self.decode() {
            Cow::Borrowed(name) => Cow::Borrowed(name.as_bytes()),
            Cow::Owned(name) => Cow::Owned(name.into_bytes()),
        }
    }

    pub fn is_empty(self) -> bool {
        self.quoted.len() == 2
    }

    /// The string whose opening quote is at byte `quote` of `text`, read as
    /// a string value is (its escapes and surrogate pairs checked); none
    /// where there is no such string.
    pub fn at(text: &'a str, quote: usize) -> Option<Str<'a>> {
        if text.as_bytes().get(quote) != Some(&b'"') {
            return None;
        }
        let mut scanner = Scanner::new(text);
        scanner.at = quote;
        scanner.string().ok()
    }

    /// Its length as written, quotes included.
    pub fn written_len(self) -> usize {
        self.quoted.len()
    }
}

/// Where a [`Str`] is in its text, to take it again from another text
/// that holds the same bytes there.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    start: usize,
    end: usize,
    escaped: bool,
}

impl Span {
    /// The same string where it starts at byte `start` of another text
    /// that holds the same bytes there.
    pub fn moved_to(self, start: usize) -> Span {
        Span {
            start,
            end: start + (self.end - self.start),
            escaped: self.escaped,
        }
    }

    /// Where it starts: its opening quote.
    pub fn start(self) -> usize {
        self.start
    }
}

pub struct Scanner<'a> {
    text: &'a str,
    at: usize,
    depth: u32,
}

impl<'a> Scanner<'a> {
    pub fn new(text: &'a str) -> Self {
        Scanner {
            text,
            at: 0,
            depth: 0,
        }
    }

    #[inline]
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// Where the scanner is: the byte it reads next.
    pub fn at(&self) -> usize {
        self.at
    }

    /// Where `string`, read from this scanner's text, is in it.
    pub fn span(&self, string: Str<'a>) -> Span {
        let start = string.quoted.as_ptr() as usize - self.bytes().as_ptr() as usize;
        Span {
            start,
            end: start + string.quoted.len(),
            escaped: string.escaped,
        }
    }

    /// The string at `span` of this scanner's text.
    pub fn string_at(&self, span: Span) -> Str<'a> {
        Str {
            quoted: &self.bytes()[span.start..span.end],
            escaped: span.escaped,
        }
    }

    pub fn error(&self, what: &'static str) -> ScanError {
        ScanError { what, at: self.at }
    }

    /// The next byte that is not whitespace, not taken.
    #[inline]
    pub fn peek(&mut self) -> Option<u8> {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes().get(self.at) {
            self.at += 1;
        }
        self.bytes().get(self.at).copied()
    }

    #[inline]
    fn expect(&mut self, byte: u8, what: &'static str) -> Result<(), ScanError> {
        if self.peek() != Some(byte) {
            return Err(self.error(what));
        }
        self.at += 1;
        Ok(())
    }

    /// Only whitespace is left.
    pub fn end(&mut self) -> Result<(), ScanError> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.error("trailing characters")),
        }
    }

    /// An object (else the error `what`), each member's value read by
    /// `member` (which must read it whole) given the member's name.
    pub fn object(
        &mut self,
        what: &'static str,
        member: impl FnMut(&mut Self, &[u8]) -> Result<(), ScanError>,
    ) -> Result<(), ScanError> {
        self.members(true, what, member)
    }

    /// The rest of an object whose reading from its start had come to just
    /// past one of its members' values at `at`, one level in: its later
    /// members, each read by `member` as [`Scanner::object`] reads them,
    /// then its end. A text holding the same bytes up to `at` (and at it:
    /// a number stops there) was in this state there, so what the first
    /// members said is taken from that reading, not read again.
    pub fn object_after(
        &mut self,
        at: usize,
        mut member: impl FnMut(&mut Self, &[u8]) -> Result<(), ScanError>,
    ) -> Result<(), ScanError> {
        self.at = at;
        self.depth = 1;
        self.after_item(b'}', |scanner| scanner.member(true, &mut member))
    }

    /// An object's members. Names are decoded when `read_names`; those of
    /// an object skipped are only checked, as serde_json checks them (half
    /// a surrogate pair allowed), and `member` gets an empty one for an
    /// escaped name.
    fn members(
        &mut self,
        read_names: bool,
        what: &'static str,
        mut member: impl FnMut(&mut Self, &[u8]) -> Result<(), ScanError>,
    ) -> Result<(), ScanError> {
        self.items(b'{', b'}', what, |scanner| {
            scanner.member(read_names, &mut member)
        })
    }

    /// One member: its name, its colon, and its value read by `member`.
    #[inline]
    fn member(
        &mut self,
        read_names: bool,
        member: &mut impl FnMut(&mut Self, &[u8]) -> Result<(), ScanError>,
    ) -> Result<(), ScanError> {
        if self.peek() != Some(b'"') {
            return Err(self.error("expected a member name"));
        }
        // Names are short and plain: read here, without the call.
        let bytes = self.bytes();
        let end = plain_end(bytes, self.at + 1);
        if bytes.get(end) == Some(&b'"') {
            let name = &bytes[self.at + 1..end];
            self.at = end + 1;
            self.expect(b':', "expected `:`")?;
            member(self, name)
        } else if read_names {
            let name = self.string()?;
            self.expect(b':', "expected `:`")?;
            member(self, &name.name())
        } else {
            self.skip_string()?;
            self.expect(b':', "expected `:`")?;
            member(self, b"")
        }
    }

    /// An array, each element read by `element` (which must read it whole).
    pub fn array(
        &mut self,
        element: impl FnMut(&mut Self) -> Result<(), ScanError>,
    ) -> Result<(), ScanError> {
        self.items(b'[', b']', "expected an array", element)
    }

    /// The items of an object or an array, from `open` (else the error
    /// `what`) to `close`, separated by commas, one level deeper.
    fn items(
        &mut self,
        open: u8,
        close: u8,
        what: &'static str,
        mut item: impl FnMut(&mut Self) -> Result<(), ScanError>,
    ) -> Result<(), ScanError> {
        self.expect(open, what)?;
        self.enter()?;
        if self.peek() != Some(close) {
            item(self)?;
        }
        self.after_item(close, item)
    }

    /// After an item (or an empty container's opening): the items left,
    /// each after a comma, then `close`, one level out.
    fn after_item(
        &mut self,
        close: u8,
        mut item: impl FnMut(&mut Self) -> Result<(), ScanError>,
    ) -> Result<(), ScanError> {
        loop {
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(byte) if byte == close => break,
                _ if close == b'}' => return Err(self.error("expected `,` or `}`")),
                _ => return Err(self.error("expected `,` or `]`")),
            }
            item(self)?;
        }
        self.at += 1;
        self.depth -= 1;
        Ok(())
    }

    fn enter(&mut self) -> Result<(), ScanError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        Ok(())
    }

    /// Any value, checked and skipped.
    pub fn skip(&mut self) -> Result<(), ScanError> {
        match self.peek() {
            Some(b'"') => self.skip_string(),
            Some(b'{') => self.members(false, "expected an object", |scanner, _| scanner.skip()),
            Some(b'[') => self.array(Self::skip),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal("true"),
            Some(b'f') => self.literal("false"),
            Some(b'n') => self.literal("null"),
            _ => Err(self.error("expected a value")),
        }
    }

    /// Any value, checked and skipped; whether it was something, not null.
    pub fn present(&mut self) -> Result<bool, ScanError> {
        if self.null()? {
            return Ok(false);
        }
        self.skip()?;
        Ok(true)
    }

    /// Takes a `null` if one is next.
    #[inline]
    pub fn null(&mut self) -> Result<bool, ScanError> {
        if self.peek() != Some(b'n') {
            return Ok(false);
        }
        self.literal("null")?;
        Ok(true)
    }

    /// A string or null. Its escapes are checked as a Rust string needs
    /// them (surrogates in pairs), so it decodes.
    pub fn optional_string(&mut self, what: &'static str) -> Result<Option<Str<'a>>, ScanError> {
        match self.peek() {
            Some(b'"') => self.string().map(Some),
            _ if self.null()? => Ok(None),
            _ => Err(self.error(what)),
        }
    }

    /// An integer from 0 to `u64::MAX`, written without a fraction or an
    /// exponent, or null.
    pub fn optional_u64(&mut self, what: &'static str) -> Result<Option<u64>, ScanError> {
        if self.null()? {
            return Ok(None);
        }
        let start = self.at;
        self.number()?;
        // As `u64::from_str` takes it, without its call: digits only
        // (no sign, fraction or exponent), within range.
        let digits = &self.bytes()[start..self.at];
        digits
            .iter()
            .try_fold(0_u64, |n, digit| {
                let digit = digit.checked_sub(b'0').filter(|d| *d < 10)?;
                n.checked_mul(10)?.checked_add(u64::from(digit))
            })
            .map(Some)
            .ok_or(ScanError { what, at: start })
    }

    fn literal(&mut self, word: &'static str) -> Result<(), ScanError> {
        if !self.bytes()[self.at..].starts_with(word.as_bytes()) {
            return Err(self.error("expected a value"));
        }
        self.at += word.len();
        Ok(())
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Result<(), ScanError> {
        let bytes = self.bytes();
        if bytes.get(self.at) == Some(&b'-') {
            self.at += 1;
        }
        match bytes.get(self.at) {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.error("invalid number")),
        }
        if bytes.get(self.at) == Some(&b'.') {
            self.at += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = bytes.get(self.at) {
            self.at += 1;
            if let Some(b'+' | b'-') = bytes.get(self.at) {
                self.at += 1;
            }
            self.some_digits()?;
        }
        // What follows (`01`, `1x`) is the container's to refuse.
        Ok(())
    }

    fn some_digits(&mut self) -> Result<(), ScanError> {
        if !self.bytes().get(self.at).is_some_and(u8::is_ascii_digit) {
            return Err(self.error("invalid number"));
        }
        self.digits();
        Ok(())
    }

    fn digits(&mut self) {
        self.at = digits_end(self.bytes(), self.at);
    }

    /// A string the view reads, from its opening quote. Its escapes are
    /// checked as a Rust string needs them (no half of a surrogate pair),
    /// so it decodes.
    fn string(&mut self) -> Result<Str<'a>, ScanError> {
        let start = self.at;
        let escaped = self.past_string(true)?;
        Ok(Str {
            quoted: &self.bytes()[start..self.at],
            escaped,
        })
    }

    /// A string skipped, as serde_json skips one: half a surrogate pair
    /// is allowed.
    fn skip_string(&mut self) -> Result<(), ScanError> {
        self.past_string(false).map(drop)
    }

    /// Past a string, from its opening quote; whether it had escapes.
    fn past_string(&mut self, strict: bool) -> Result<bool, ScanError> {
        let bytes = self.bytes();
        let mut at = self.at + 1;
        let mut escaped = false;
        loop {
            at = plain_end(bytes, at);
            match bytes.get(at) {
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    self.at = at;
                    self.escape(strict)?;
                    at = self.at;
                }
                Some(_) => {
                    return Err(ScanError {
                        what: "control character in a string",
                        at,
                    });
                }
                None => {
                    return Err(ScanError {
                        what: "unterminated string",
                        at,
                    });
                }
            }
        }
        self.at = at + 1;
        Ok(escaped)
    }

    /// One escape, from its backslash.
    fn escape(&mut self, strict: bool) -> Result<(), ScanError> {
        self.at += 1;
        match self.bytes().get(self.at) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.at += 1;
                Ok(())
            }
            Some(b'u') => {
                let unit = self.hex4()?;
                if !strict {
                    return Ok(());
                }
                match unit {
                    0xD800..=0xDBFF => {
                        let low = match self.bytes().get(self.at..self.at + 2) {
                            Some(br"\u") => {
                                self.at += 1;
                                self.hex4()?
                            }
                            _ => 0,
                        };
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err(self.error("unpaired surrogate in a string"));
                        }
                        Ok(())
                    }
                    0xDC00..=0xDFFF => Err(self.error("unpaired surrogate in a string")),
                    _ => Ok(()),
                }
            }
            _ => Err(self.error("invalid escape")),
        }
    }

    /// The four hex digits after a `u`, at the `u`.
    fn hex4(&mut self) -> Result<u16, ScanError> {
        let digits = self
            .text
            .get(self.at + 1..self.at + 5)
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| self.error("invalid \\u escape"))?;
        self.at += 5;
        Ok(u16::from_str_radix(digits, 16).expect("four hex digits"))
    }
}

/// Where the run of a string's plain characters from `at` ends: at its
/// closing quote, an escape, or a control character (which JSON does not
/// allow unescaped), or the end of `bytes`. Eight bytes at a time: a
/// chunk's strings are most of it.
#[inline]
fn plain_end(bytes: &[u8], mut at: usize) -> usize {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGHS: u64 = ONES << 7;
    // Per byte, its high bit set where the byte is zero (or, only above
    // such a byte, where a borrow ran): the lowest set bit is exact.
    let zero = |word: u64| word.wrapping_sub(ONES) & !word & HIGHS;
    while let Some(eight) = bytes.get(at..at + 8) {
        let word = u64::from_le_bytes(eight.try_into().expect("eight bytes"));
        let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
        let stops =
            zero(word ^ (ONES * u64::from(b'"'))) | zero(word ^ (ONES * u64::from(b'\\'))) | below_space;
        if stops != 0 {
            return at + stops.trailing_zeros() as usize / 8;
        }
        at += 8;
    }
    let stop = |byte: &u8| *byte < 0x20 || *byte == b'"' || *byte == b'\\';
    at + bytes[at..].iter().position(stop).unwrap_or(bytes.len() - at)
}

/// Where the run of ASCII digits from `at` ends. Eight bytes at a time:
/// an embeddings answer is thousands of numbers of a dozen digits.
#[inline]
fn digits_end(bytes: &[u8], mut at: usize) -> usize {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    while let Some(eight) = bytes.get(at..at + 8) {
        let word = u64::from_le_bytes(eight.try_into().expect("eight bytes"));
        // Per byte, a high-nibble bit set unless the byte is 0x30 to 0x39:
        // its high nibble is 3, and its low one plus 6 does not carry into
        // the high one (no carry leaves a byte: a nibble plus 6 fits).
        let high = (word & (ONES * 0xf0)) ^ (ONES * 0x30);
        let low = ((word & (ONES * 0x0f)) + ONES * 0x06) & (ONES * 0xf0);
        let stops = high | low;
        if stops != 0 {
            return at + stops.trailing_zeros() as usize / 8;
        }
        at += 8;
    }
    at + bytes[at..]
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(bytes.len() - at)
}

#[cfg(test)]
mod tests {
    use super::{digits_end, is_json_text, plain_end};

    #[test]
    fn json_text_is_one_value_in_valid_utf8() {
        for value in [
            &br#" {"a":[1,-2.5e3,true,false,null,{"b":"\u00e9\ud83d\ude00"}]} "#[..],
            b"[]",
            b"\"caf\xc3\xa9\"",
            b"0",
            b" null\n",
        ] {
            assert!(is_json_text(value), "{}", String::from_utf8_lossy(value));
        }
        let deep = |depth| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(is_json_text(deep(128).as_bytes()));
        for not_one in [
            &b""[..],
            b" ",
            b"{} {}",
            b"[1,]",
            b"\"\xff\"",
            b"\"a\x01\"",
            b"{\"a\" 1}",
            b"nul",
            deep(129).as_bytes(),
        ] {
            assert!(!is_json_text(not_one), "{}", String::from_utf8_lossy(not_one));
        }
    }

    #[test]
    fn a_run_of_digits_ends_where_the_byte_by_byte_rule_ends_it() {
        let rule = |bytes: &[u8], from: usize| {
            from + bytes[from..]
                .iter()
                .position(|b| !b.is_ascii_digit())
                .unwrap_or(bytes.len() - from)
        };
        for len in 0..20 {
            let mut bytes = vec![b'7'; len];
            assert_eq!(digits_end(&bytes, 0), rule(&bytes, 0));
            for at in 0..len {
                for byte in 0..=255 {
                    bytes[at] = byte;
                    for from in 0..=at.min(8) {
                        assert_eq!(
                            digits_end(&bytes, from),
                            rule(&bytes, from),
                            "from {from}: {bytes:?}"
                        );
                    }
                }
                bytes[at] = b'0' + (at % 10) as u8;
            }
        }
    }

    #[test]
    fn a_plain_run_ends_where_the_byte_by_byte_rule_ends_it() {
        let rule = |bytes: &[u8], from: usize| {
            let stop = |byte: &u8| *byte < 0x20 || *byte == b'"' || *byte == b'\\';
            from + bytes[from..].iter().position(stop).unwrap_or(bytes.len() - from)
        };
        // From every start a string's run can have within a word.
        let plain_run = |bytes: &[u8]| {
            for from in 0..=bytes.len().min(8) {
                assert_eq!(
                    plain_end(bytes, from),
                    rule(bytes, from),
                    "from {from}: {bytes:?}"
                );
            }
            plain_end(bytes, 0)
        };
        let rule = |bytes: &[u8]| rule(bytes, 0);
        // Fillers next to the stops in value, and above them, where a
        // borrow of the word-wide test could run on.
        for filler in [b'a', b' ', b'!', b'#', b'[', b']', 0x7f, 0x80, 0xe9, 0xff] {
            for len in 0..20 {
                let mut bytes = vec![filler; len];
                assert_eq!(plain_run(&bytes), rule(&bytes));
                for at in 0..len {
                    for byte in 0..=255 {
                        bytes[at] = byte;
                        assert_eq!(plain_run(&bytes), rule(&bytes), "{bytes:?}");
                        // A second stop after the first changes nothing.
                        if at + 1 < len {
                            bytes[at + 1] = 0;
                            assert_eq!(plain_run(&bytes), rule(&bytes), "{bytes:?}");
                            bytes[at + 1] = filler;
                        }
                    }
                    bytes[at] = filler;
                }
            }
        }
    }
}
