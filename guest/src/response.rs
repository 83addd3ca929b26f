//! Reading provider responses: headers and error text.

/// A header's value (names are lower case, as the host gives them).
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim())
}

/// The wait a provider asked for, in milliseconds: `retry-after-ms`, else
/// `retry-after` in seconds. (An HTTP-date `retry-after` is not read: a
/// plugin has no trustworthy clock to subtract from.)
pub fn retry_after_ms(headers: &[(String, String)]) -> Option<u64> {
    if let Some(ms) = header(headers, "retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return Some(ms.max(0.0).ceil() as u64);
    }
    let seconds = header(headers, "retry-after")?.parse::<f64>().ok()?;
    Some((seconds.max(0.0) * 1000.0).ceil() as u64)
}

/// A provider body as an error message when it has no structured one:
/// trimmed, at most `max` characters, or `HTTP <status>` when empty.
pub fn body_text(body: &[u8], status: u16, max: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return format!("HTTP {status}");
    }
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_waits_and_bodies() {
        let h = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            retry_after_ms(&h(&[("retry-after", "2"), ("retry-after-ms", "1500.2")])),
            Some(1501)
        );
        assert_eq!(retry_after_ms(&h(&[("retry-after", "2.5")])), Some(2500));
        assert_eq!(
            retry_after_ms(&h(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")])),
            None
        );
        assert_eq!(body_text(b"  ", 502, 10), "HTTP 502");
        assert_eq!(body_text("héllo wörld".as_bytes(), 500, 5), "héllo...");
    }
}
