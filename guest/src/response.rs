//! Reading provider responses: their JSON, headers and error text.

/// A provider body read as JSON, checked as UTF-8 whole first: reading
/// from bytes, serde_json checks only the strings it reads, so a body with
/// invalid UTF-8 in a value the plugin skips would pass (and an adapter
/// that passes the body on unchanged would hand it to the caller). Reading
/// from checked text is also cheaper than checking string by string.
pub fn json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
    serde_json::from_str(text).map_err(|e| e.to_string())
}

/// A header's value, its first: `headers` is the host's `header-lines`
/// (a `name: value` line per field, names in lower case). `name` is lower
/// case.
pub fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.lines().find_map(|line| {
        let (field, value) = line.split_once(':')?;
        (field == name).then(|| value.trim())
    })
}

/// The wait a provider asked for, in milliseconds: `retry-after-ms`, else
/// `retry-after` in seconds. (An HTTP-date `retry-after` is not read: a
/// plugin has no trustworthy clock to subtract from.)
pub fn retry_after_ms(headers: &str) -> Option<u64> {
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
    fn a_body_is_json_text_even_where_it_is_not_read() {
        #[derive(serde::Deserialize)]
        struct Usage {
            usage: u32,
        }
        let read: Result<Usage, _> = json(br#"{"skipped":"fp","usage":3}"#);
        assert_eq!(read.map(|u| u.usage), Ok(3));
        // Invalid UTF-8 in a value nobody reads still refuses the body.
        assert!(json::<Usage>(b"{\"skipped\":\"f\xff\",\"usage\":3}").is_err());
        assert!(json::<Usage>(b"{not json").is_err());
    }

    #[test]
    fn a_header_is_the_first_line_of_its_name() {
        let lines = "set-cookie: a=1\nx-ratelimit-reset-requests: 1s\nset-cookie: b=2\nempty: \n";
        assert_eq!(header(lines, "set-cookie"), Some("a=1"));
        assert_eq!(header(lines, "x-ratelimit-reset-requests"), Some("1s"));
        assert_eq!(header(lines, "empty"), Some(""));
        assert_eq!(header(lines, "reset-requests"), None);
        assert_eq!(header(lines, "x-ratelimit"), None);
    }

    #[test]
    fn reads_waits_and_bodies() {
        assert_eq!(
            retry_after_ms("retry-after: 2\nretry-after-ms: 1500.2\n"),
            Some(1501)
        );
        assert_eq!(retry_after_ms("x-retry-after: 9\nretry-after: 2.5\n"), Some(2500));
        assert_eq!(
            retry_after_ms("retry-after: Wed, 21 Oct 2015 07:28:00 GMT\n"),
            None
        );
        assert_eq!(retry_after_ms(""), None);
        assert_eq!(body_text(b"  ", 502, 10), "HTTP 502");
        assert_eq!(body_text("héllo wörld".as_bytes(), 500, 5), "héllo...");
    }
}
