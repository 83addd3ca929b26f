//! Classifies a failed Gemini response (google.rpc.Status errors).

use crate::exports::switchboard::plugin::provider::{ErrorClass, ProviderError};
use serde_json::Value;
use switchboard_guest::response;

pub fn classify(status: u16, headers: &str, body: &[u8]) -> ProviderError {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    // Some endpoints wrap the error in an array.
    let error = parsed
        .get("error")
        .or_else(|| parsed.get(0).and_then(|e| e.get("error")))
        .cloned()
        .unwrap_or(Value::Null);
    let rpc = error.get("status").and_then(Value::as_str).unwrap_or("");
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| response::body_text(body, status, 500));
    let lower = message.to_lowercase();
    let class = if lower.contains("exceeds the maximum number of tokens")
        || lower.contains("input token count")
    {
        ErrorClass::ContextLength
    } else {
        match (rpc, status) {
            ("RESOURCE_EXHAUSTED", _) | (_, 429) => ErrorClass::RateLimited,
            ("UNAVAILABLE", _) | (_, 503) => ErrorClass::Overloaded,
            ("DEADLINE_EXCEEDED", _) | (_, 504) => ErrorClass::Timeout,
            ("UNAUTHENTICATED", _) | ("PERMISSION_DENIED", _) | (_, 401 | 403) => ErrorClass::Auth,
            ("NOT_FOUND", _) | (_, 404) => ErrorClass::NotFound,
            ("INVALID_ARGUMENT", _) | ("FAILED_PRECONDITION", _) | (_, 400..=499) => ErrorClass::BadRequest,
            _ => ErrorClass::Server,
        }
    };
    let retry_after_ms = if class == ErrorClass::RateLimited || class == ErrorClass::Overloaded {
        retry_info(&error).or_else(|| response::retry_after_ms(headers))
    } else {
        None
    };
    ProviderError {
        class,
        message,
        retry_after_ms,
    }
}

/// `google.rpc.RetryInfo.retryDelay`, a duration such as `"30s"` or `"1.5s"`.
fn retry_info(error: &Value) -> Option<u64> {
    error.get("details")?.as_array()?.iter().find_map(|detail| {
        let kind = detail.get("@type")?.as_str()?;
        if !kind.ends_with("google.rpc.RetryInfo") {
            return None;
        }
        let delay = detail.get("retryDelay")?.as_str()?;
        let seconds: f64 = delay.strip_suffix('s')?.parse().ok()?;
        Some((seconds.max(0.0) * 1000.0).ceil() as u64)
    })
}
