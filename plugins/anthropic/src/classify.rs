//! Classifies a failed Anthropic response (HTTP status or an `error` event).

use crate::exports::switchboard::plugin::provider::{ErrorClass, ProviderError};
use serde_json::Value;
use switchboard_guest::response;

pub fn classify(status: u16, headers: &str, body: &[u8]) -> ProviderError {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let error = parsed.get("error").cloned().unwrap_or(Value::Null);
    let mut classified = from_error(Some(status), &error, body);
    if matches!(classified.class, ErrorClass::RateLimited | ErrorClass::Overloaded) {
        classified.retry_after_ms = response::retry_after_ms(headers);
    }
    classified
}

/// Classify an `error` object (from a body or a stream `error` event).
pub fn from_error(status: Option<u16>, error: &Value, raw: &[u8]) -> ProviderError {
    let kind = error.get("type").and_then(Value::as_str).unwrap_or("");
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| response::body_text(raw, status.unwrap_or(0), 500));
    let lower = message.to_lowercase();
    let class = if lower.contains("prompt is too long")
        || lower.contains("context window")
        || lower.contains("too many tokens")
    {
        ErrorClass::ContextLength
    } else {
        match (kind, status) {
            ("rate_limit_error", _) | (_, Some(429)) => ErrorClass::RateLimited,
            ("overloaded_error", _) | (_, Some(529)) | (_, Some(503)) => ErrorClass::Overloaded,
            ("authentication_error", _) | ("permission_error", _) | (_, Some(401 | 403)) => ErrorClass::Auth,
            ("not_found_error", _) | (_, Some(404)) => ErrorClass::NotFound,
            ("request_too_large", _) | (_, Some(413)) => ErrorClass::ContextLength,
            ("timeout_error", _) | (_, Some(408 | 504)) => ErrorClass::Timeout,
            ("invalid_request_error", _) | (_, Some(400..=499)) => ErrorClass::BadRequest,
            _ => ErrorClass::Server,
        }
    };
    ProviderError {
        class,
        message,
        retry_after_ms: None,
    }
}
