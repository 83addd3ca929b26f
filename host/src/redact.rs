//! Scrubs the gateway's own credentials out of everything a provider sends
//! back, before an adapter, a caller, a log line or a metric sees it.
//! Providers echo the key they received ("Incorrect API key provided:
//! sk-..."), in a body, a header or a stream's error event; the host knows
//! every credential it attaches, so it looks for each in every form it may
//! come back in.

use crate::secret::Secret;
use aho_corasick::{AhoCorasick, MatchKind};
use std::borrow::Cow;

/// What a credential is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Credentials shorter than this are not looked for: a placeholder such as
/// `ollama` or `x`, given to a host that ignores keys, would otherwise be
/// cut out of every answer that happens to contain it. No provider issues
/// keys this short.
pub const MIN_SCRUBBED_LEN: usize = 8;

/// Finds and replaces a set of credentials. Text without one is returned
/// as it is, without a copy: answers never carry one, so they pass through
/// byte for byte.
#[derive(Default)]
pub struct Redactor {
    /// `None` when there is no credential to look for.
    finder: Option<AhoCorasick>,
    /// The shortest form of any credential: shorter text (most header
    /// values) cannot hold one and is not searched.
    shortest: usize,
    /// Per credential, its longest run of ASCII letters and digits. Every
    /// form keeps those runs whole (the encodings escape only other
    /// characters), so text without any anchor holds no form, and one SIMD
    /// substring search clears it (answers and stream events almost always).
    /// Empty when some credential has no such run: then every text is
    /// searched in full.
    anchors: Vec<memchr::memmem::Finder<'static>>,
}

impl Redactor {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a Secret>) -> Redactor {
        let secrets: Vec<&str> = secrets
            .into_iter()
            .map(Secret::expose)
            .filter(|s| s.len() >= MIN_SCRUBBED_LEN)
            .collect();
        let mut patterns: Vec<String> = secrets.iter().flat_map(|s| forms(s)).collect();
        patterns.sort();
        patterns.dedup();
        if patterns.is_empty() {
            return Redactor::default();
        }
        // Leftmost-longest: a form that contains another is replaced whole.
        let shortest = patterns.iter().map(String::len).min().unwrap_or(0);
        let finder = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
            .expect("literal patterns always build");
        let anchors: Option<Vec<_>> = secrets.iter().map(|s| anchor(s)).collect();
        Redactor {
            finder: Some(finder),
            shortest,
            anchors: anchors.unwrap_or_default(),
        }
    }

    /// Whether `text` may hold a form of a credential (false: it cannot).
    fn may_hold(&self, text: &[u8]) -> bool {
        text.len() >= self.shortest && self.anchored(text)
    }

    /// Whether `text` holds some credential's anchor, or some has none.
    fn anchored(&self, text: &[u8]) -> bool {
        self.anchors.is_empty() || self.anchors.iter().any(|a| a.find(text).is_some())
    }

    /// Whether `text` holds the anchor of a credential (its longest run of
    /// letters and digits), or some credential has none. Every form of a
    /// credential holds its anchor whole, and an anchor holds no line
    /// break: a stream's event can hold a credential only if a read that
    /// carried one of its lines may, so each read is asked once.
    pub fn may_find(&self, text: &[u8]) -> bool {
        self.finder.is_some() && self.anchored(text)
    }

    pub fn bytes<'a>(&self, text: &'a [u8]) -> Cow<'a, [u8]> {
        match &self.finder {
            Some(finder) if self.may_hold(text) && finder.is_match(text) => {
                let replacements = vec![REDACTED.as_bytes(); finder.patterns_len()];
                Cow::Owned(finder.replace_all_bytes(text, &replacements))
            }
            _ => Cow::Borrowed(text),
        }
    }

    pub fn text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match &self.finder {
            Some(finder) if self.may_hold(text.as_bytes()) && finder.is_match(text) => {
                let replacements = vec![REDACTED; finder.patterns_len()];
                Cow::Owned(finder.replace_all(text, &replacements))
            }
            _ => Cow::Borrowed(text),
        }
    }

    /// Scrub in place; allocates only when a credential is found.
    pub fn string(&self, text: &mut String) {
        if let Cow::Owned(clean) = self.text(text) {
            *text = clean;
        }
    }

    pub fn vec(&self, bytes: &mut Vec<u8>) {
        if let Cow::Owned(clean) = self.bytes(bytes) {
            *bytes = clean;
        }
    }
}

/// The forms a credential may come back in: as sent, percent-encoded (as a
/// query parameter carries it, with either case of hex digit), and escaped
/// inside a JSON string (with and without `\/`).
fn forms(value: &str) -> Vec<String> {
    let mut forms = vec![value.to_string()];
    let upper = percent_encode(value);
    forms.push(lowercase_hex(&upper));
    forms.push(upper);
    let json = serde_json::to_string(value).expect("a string serialises");
    let json = json[1..json.len() - 1].to_string();
    forms.push(json.replace('/', "\\/"));
    forms.push(json);
    // Encoders that escape every non-alphanumeric ASCII character as \u00XX
    // (Go's escapes `&`, `<`, `>`, some escape all punctuation).
    forms.push(value.chars().map(unicode_escape).collect());
    forms.push(value.chars().map(html_safe_escape).collect());
    forms.retain(|f| !f.is_empty());
    forms
}

/// The longest run of ASCII letters and digits in `secret`, which every
/// one of its [`forms`] holds; none when it has no letter or digit.
fn anchor(secret: &str) -> Option<memchr::memmem::Finder<'static>> {
    let run = secret
        .split(|c: char| !c.is_ascii_alphanumeric())
        .max_by_key(|run| run.len())
        .filter(|run| !run.is_empty())?;
    Some(memchr::memmem::Finder::new(run.as_bytes()).into_owned())
}

fn unicode_escape(c: char) -> String {
    if c.is_ascii_alphanumeric() || !c.is_ascii() {
        c.to_string()
    } else {
        format!("\\u{:04x}", c as u32)
    }
}

/// Only the characters Go's `encoding/json` escapes by default.
fn html_safe_escape(c: char) -> String {
    match c {
        '&' | '<' | '>' => format!("\\u{:04x}", c as u32),
        '"' => "\\\"".into(),
        '\\' => "\\\\".into(),
        c => c.to_string(),
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `%2F` -> `%2f`, leaving the unescaped characters as they are.
fn lowercase_hex(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut escape = 0;
    for c in encoded.chars() {
        if c == '%' {
            escape = 2;
            out.push(c);
        } else if escape > 0 {
            escape -= 1;
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor(keys: &[&str]) -> Redactor {
        let secrets: Vec<Secret> = keys.iter().map(|k| Secret::new(k.to_string())).collect();
        Redactor::new(&secrets)
    }

    #[test]
    fn a_placeholder_too_short_to_be_a_key_leaves_answers_alone() {
        let r = redactor(&["ollama", "k", "sk-real-key-0123"]);
        let text = "ollama says: tokens ok; sk-real-key-0123";
        assert_eq!(r.text(text), "ollama says: tokens ok; [redacted]");
    }

    #[test]
    fn every_form_of_a_credential_is_replaced() {
        let r = redactor(&["sk/a+b=\"c\""]);
        for echoed in [
            "sk/a+b=\"c\"",
            "sk%2Fa%2Bb%3D%22c%22",
            "sk%2fa%2bb%3d%22c%22",
            "sk/a+b=\\\"c\\\"",
            "sk\\/a+b=\\\"c\\\"",
        ] {
            let text = format!("Incorrect API key provided: {echoed}.");
            assert_eq!(
                r.text(&text),
                "Incorrect API key provided: [redacted].",
                "{echoed}"
            );
            assert_eq!(
                r.bytes(text.as_bytes()).as_ref(),
                b"Incorrect API key provided: [redacted]."
            );
        }
    }

    #[test]
    fn a_text_that_holds_no_anchor_may_not_find_a_credential() {
        let r = redactor(&["sk/a+b=\"c\""]);
        // Every form, and text that takes no more than the anchor of one.
        for holds in ["sk%2Fa%2Bb%3D%22c%22", "sk\\/a+b", "x sk/", "sk"] {
            assert!(r.may_find(holds.as_bytes()), "{holds}");
        }
        assert!(!r.may_find(b"s k, a+b=c"));
        assert!(!redactor(&[]).may_find(b"sk anything"));
        // A credential without letters or digits has no anchor: all text may.
        assert!(redactor(&["--------+"]).may_find(b"x"));
    }

    #[test]
    fn unicode_escaped_forms_are_replaced_too() {
        let r = redactor(&["sk-a&b<c"]);
        for echoed in ["sk\\u002da\\u0026b\\u003cc", "sk-a\\u0026b\\u003cc"] {
            assert_eq!(r.text(&format!("key {echoed}!")), "key [redacted]!", "{echoed}");
        }
    }

    #[test]
    fn text_without_a_credential_is_not_copied() {
        let r = redactor(&["secret-key-a", "secret-key-b"]);
        assert!(matches!(r.text("a clean answer"), Cow::Borrowed(_)));
        assert!(matches!(r.bytes(b"{\"ok\":true}"), Cow::Borrowed(_)));
        assert_eq!(
            r.text("secret-key-b and secret-key-a"),
            "[redacted] and [redacted]"
        );
        assert!(matches!(
            Redactor::default().text("secret-key-a"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn text_as_long_as_the_credential_is_searched_shorter_text_is_not() {
        let r = redactor(&["k3y-value"]);
        assert_eq!(r.text("k3y-value"), "[redacted]");
        assert_eq!(r.bytes(b"k3y-value").as_ref(), b"[redacted]");
        assert!(matches!(r.text("k3y-valu"), Cow::Borrowed(_)));
    }

    #[test]
    fn the_anchor_only_clears_text_the_full_search_decides_the_rest() {
        let r = redactor(&["key-0123456789"]);
        assert_eq!(r.anchors.len(), 1);
        // Its longest letter-and-digit run alone is not the credential.
        assert!(matches!(r.text("0123456789 alone"), Cow::Borrowed(_)));
        assert_eq!(r.text("a key-0123456789 here"), "a [redacted] here");
        // An escaped form holds the anchor whole.
        assert_eq!(r.text("key\\u002d0123456789"), "[redacted]");
        // A credential with no letter or digit has no anchor: everything is
        // searched in full, and it is still found.
        let r = redactor(&["key-0123456789", "!!!!----????"]);
        assert!(r.anchors.is_empty());
        assert_eq!(r.text("say !!!!----????"), "say [redacted]");
    }

    #[test]
    fn in_place_forms() {
        let r = redactor(&["k3y-value"]);
        let mut text = "key=k3y-value".to_string();
        r.string(&mut text);
        assert_eq!(text, "key=[redacted]");
        let mut bytes = b"Bearer k3y-value".to_vec();
        r.vec(&mut bytes);
        assert_eq!(bytes, b"Bearer [redacted]");
    }
}
