//! Errors in OpenAI's error format, with the status each deserves.

use super::{Body, full};
use crate::flow::failure::{Answer, FlowError};
use http::StatusCode;
use serde_json::json;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    /// OpenAI's `error.type`.
    pub kind: &'static str,
    /// OpenAI's `error.code`.
    pub code: Option<&'static str>,
    pub param: Option<&'static str>,
    pub message: String,
    /// Sent as `Retry-After` (whole seconds, rounded up).
    pub retry_after: Option<Duration>,
    /// More headers (the `x-ratelimit-*` set of a limited key).
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    fn new(
        status: StatusCode,
        kind: &'static str,
        code: Option<&'static str>,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            kind,
            code,
            param: None,
            message: message.into(),
            retry_after: None,
            headers: Vec::new(),
        }
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", None, message)
    }

    pub fn invalid_param(param: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            param: Some(param),
            ..Self::invalid_request(message)
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            Some("invalid_api_key"),
            message,
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            Some("model_not_allowed"),
            message,
        )
    }

    /// A key that is not an admin key asked for an admin endpoint.
    pub fn admin_only(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            Some("admin_key_required"),
            message,
        )
    }

    pub fn unknown_model(model: &str) -> Self {
        ApiError {
            param: Some("model"),
            ..Self::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("model_not_found"),
                format!(
                    "The model `{model}` does not exist on this gateway. GET /v1/models lists the models you can use."
                ),
            )
        }
    }

    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("unknown_url"),
            "Unknown endpoint.",
        )
    }

    /// A 404 that says what was not found.
    pub fn not_found_with(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("not_found"),
            message,
        )
    }

    /// A 409: the name is taken.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "invalid_request_error",
            Some("conflict"),
            message,
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            None,
            "Method not allowed for this endpoint.",
        )
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            Some("request_too_large"),
            format!("The request body exceeds the gateway's limit of {limit} bytes."),
        )
    }

    pub fn body_timeout(limit: Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            Some("request_timeout"),
            format!("The request body did not arrive within {} ms.", limit.as_millis()),
        )
    }

    /// A request that arrived on an open connection after shutdown began.
    pub fn shutting_down() -> Self {
        ApiError {
            retry_after: Some(Duration::from_secs(1)),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                Some("shutting_down"),
                "The gateway is shutting down; retry on another instance.",
            )
        }
    }

    pub fn context_length(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("context_length_exceeded"),
            message,
        )
    }

    pub fn content_filter(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("content_filter"),
            message,
        )
    }

    pub fn rate_limited(message: impl Into<String>, retry_after: Duration) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                Some("rate_limit_exceeded"),
                message,
            )
        }
    }

    /// Over a key's requests or tokens per minute, as OpenAI words it.
    pub fn over_rate(kind: &'static str, message: impl Into<String>, retry_after: Duration) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                kind,
                Some("rate_limit_exceeded"),
                message,
            )
        }
    }

    /// A key's or team's budget is spent for its period.
    pub fn budget_exceeded(message: impl Into<String>, retry_after: Duration) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "insufficient_quota",
                Some("budget_exceeded"),
                message,
            )
        }
    }

    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            "api_error",
            Some("upstream_error"),
            message,
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            Some("upstream_unavailable"),
            message,
        )
    }

    /// The providers that could answer are over capacity.
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            Some("upstream_overloaded"),
            message,
        )
    }

    pub fn gateway_timeout(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "api_error",
            Some("upstream_timeout"),
            message,
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "api_error", None, message)
    }

    /// The `{"error": {...}}` object, also used as an in-stream error event.
    pub fn to_json(&self) -> serde_json::Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }

    pub fn into_response(self) -> http::Response<Body> {
        let body = serde_json::to_vec(&self.to_json()).expect("serialisable");
        let status = self.status;
        self.respond(status, body)
    }

    /// The response: `body` with `status`, `Retry-After`, the error's own
    /// headers, and a close when the connection cannot be reused.
    fn respond(self, status: StatusCode, body: Vec<u8>) -> http::Response<Body> {
        let mut builder = http::Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(wait) = self.retry_after {
            builder = builder.header(
                http::header::RETRY_AFTER,
                wait.as_secs_f64().ceil().max(1.0).to_string(),
            );
        }
        for (name, value) in &self.headers {
            builder = builder.header(*name, value);
        }
        // The connection cannot be trusted with another request: a body
        // left unread (too large, too slow), or the server going away.
        if matches!(self.status.as_u16(), 408 | 413) || self.code == Some("shutting_down") {
            builder = builder.header(http::header::CONNECTION, "close");
        }
        builder.body(full(body)).expect("valid response")
    }
}

/// The same errors in Anthropic's format, for callers of the Messages API.
impl ApiError {
    /// Anthropic's error type and status for this error: its own names for
    /// the same statuses, and 529 when the providers were overloaded.
    fn anthropic(&self) -> (StatusCode, &'static str) {
        if self.code == Some("upstream_overloaded") {
            return (
                StatusCode::from_u16(529).expect("529 is a valid status"),
                "overloaded_error",
            );
        }
        let kind = match self.status.as_u16() {
            400 | 405 | 408 | 409 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            504 => "timeout_error",
            _ => "api_error",
        };
        (self.status, kind)
    }

    /// `{"type": "error", "error": {...}}`, also the data of an in-stream
    /// `error` event.
    pub fn to_anthropic_json(&self) -> serde_json::Value {
        json!({"type": "error", "error": {"type": self.anthropic().1, "message": self.message}})
    }

    pub fn into_anthropic_response(self) -> http::Response<Body> {
        let body = serde_json::to_vec(&self.to_anthropic_json()).expect("serialisable");
        let status = self.anthropic().0;
        self.respond(status, body)
    }
}

/// What the flow decided the caller is told, as an OpenAI error.
impl From<FlowError> for ApiError {
    fn from(error: FlowError) -> Self {
        let FlowError {
            answer,
            message,
            retry_after,
        } = error;
        let error = match answer {
            Answer::BadRequest => Self::invalid_request(message),
            Answer::ContentFilter => Self::content_filter(message),
            Answer::ContextLength => Self::context_length(message),
            Answer::RateLimited => Self::rate_limited(message, retry_after.unwrap_or(Duration::from_secs(1))),
            Answer::Overloaded => Self::overloaded(message),
            Answer::Unavailable => Self::unavailable(message),
            Answer::GatewayTimeout => Self::gateway_timeout(message),
            Answer::BadGateway => Self::bad_gateway(message),
            Answer::ShuttingDown => ApiError {
                message,
                ..Self::shutting_down()
            },
            Answer::Internal => Self::internal(message),
        };
        ApiError {
            retry_after: retry_after.or(error.retry_after),
            ..error
        }
    }
}
