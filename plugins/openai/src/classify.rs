//! Classifies a failed OpenAI-style response into an error class, with the
//! provider's own message and any wait it asked for.

use crate::exports::switchboard::plugin::provider::{ErrorClass, ProviderError};
use serde::Deserialize;
use switchboard_guest::response;

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    error: Option<ErrorDetail>,
}

#[derive(Deserialize, Default)]
struct ErrorDetail {
    #[serde(default)]
    message: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    code: Option<serde_json::Value>,
}

impl ErrorDetail {
    fn code(&self) -> String {
        match &self.code {
            Some(serde_json::Value::String(s)) => s.clone(),
            _ => String::new(),
        }
    }
}

pub fn classify(status: u16, headers: &str, body: &[u8]) -> ProviderError {
    let detail = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .and_then(|b| b.error)
        .unwrap_or_default();
    let message = detail
        .message
        .clone()
        .unwrap_or_else(|| response::body_text(body, status, 500));
    let mut error = error_from_detail(status, &detail, message);
    if error.class == ErrorClass::RateLimited || matches!(status, 429 | 503) {
        error.retry_after_ms = retry_after_ms(headers);
    }
    error
}

/// Classify an `error` object that arrived inside a stream.
pub fn classify_stream_error(value: &serde_json::Value) -> ProviderError {
    let detail: ErrorDetail = serde_json::from_value(value.clone()).unwrap_or_default();
    let message = detail.message.clone().unwrap_or_else(|| value.to_string());
    let status = match detail.kind.as_deref() {
        Some("invalid_request_error") => 400,
        Some("rate_limit_error") => 429,
        _ => 500,
    };
    error_from_detail(status, &detail, message)
}

fn error_from_detail(status: u16, detail: &ErrorDetail, message: String) -> ProviderError {
    let code = detail.code();
    let kind = detail.kind.as_deref().unwrap_or("");
    let lower = message.to_lowercase();
    let class = if code == "context_length_exceeded"
        || lower.contains("maximum context length")
        || lower.contains("context window")
    {
        ErrorClass::ContextLength
    } else if code == "content_filter" || code == "content_policy_violation" || kind == "content_filter" {
        ErrorClass::ContentFilter
    } else {
        match status {
            429 if code == "insufficient_quota" => ErrorClass::Auth,
            429 => ErrorClass::RateLimited,
            401 | 403 => ErrorClass::Auth,
            404 => ErrorClass::NotFound,
            408 | 504 => ErrorClass::Timeout,
            503 | 529 => ErrorClass::Overloaded,
            400..=499 => ErrorClass::BadRequest,
            _ => ErrorClass::Server,
        }
    };
    ProviderError {
        class,
        message,
        retry_after_ms: None,
    }
}

/// The wait the provider asked for: `retry-after-ms`, then `retry-after`
/// (seconds), then the earliest `x-ratelimit-reset-*` duration.
fn retry_after_ms(headers: &str) -> Option<u64> {
    response::retry_after_ms(headers).or_else(|| {
        ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"]
            .iter()
            .filter_map(|name| response::header(headers, name).and_then(parse_go_duration))
            .min()
    })
}

/// Parses OpenAI's reset durations such as `1s`, `6m0s`, `20ms`, `1h2m3.5s`.
fn parse_go_duration(text: &str) -> Option<u64> {
    let mut total = 0.0;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let split = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let (number, tail) = rest.split_at(split);
        let value: f64 = number.parse().ok()?;
        let unit_len = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        total += value
            * match unit {
                "ms" => 1.0,
                "s" => 1000.0,
                "m" => 60_000.0,
                "h" => 3_600_000.0,
                _ => return None,
            };
        rest = tail;
    }
    Some(total.ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> String {
        pairs.iter().map(|(k, v)| format!("{k}: {v}\n")).collect()
    }

    #[test]
    fn classes_by_status_and_code() {
        let body = |code: &str| format!(r#"{{"error":{{"message":"m","code":"{code}"}}}}"#).into_bytes();
        for (status, body, class) in [
            (400, body("context_length_exceeded"), ErrorClass::ContextLength),
            (400, body("content_filter"), ErrorClass::ContentFilter),
            (400, body("x"), ErrorClass::BadRequest),
            (401, body("invalid_api_key"), ErrorClass::Auth),
            (429, body("insufficient_quota"), ErrorClass::Auth),
            (429, body("rate_limit_exceeded"), ErrorClass::RateLimited),
            (500, body("x"), ErrorClass::Server),
            (503, body("x"), ErrorClass::Overloaded),
        ] {
            assert_eq!(
                classify(status, "", &body).class,
                class,
                "{status} {}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    #[test]
    fn waits_come_from_every_rate_limit_header() {
        let body = br#"{"error":{"message":"slow down"}}"#;
        for (pairs, ms) in [
            (vec![("retry-after", "2")], 2000),
            (vec![("retry-after-ms", "150")], 150),
            (vec![("x-ratelimit-reset-requests", "1m30s")], 90_000),
        ] {
            assert_eq!(
                classify(429, &headers(&pairs), body).retry_after_ms,
                Some(ms),
                "{pairs:?}"
            );
        }
        assert_eq!(classify(429, "", body).message, "slow down");
    }
}
