//! The OpenAI-compatible HTTP surface: handlers, bodies and errors.

pub mod admin;
pub mod auth;
pub mod chat;
pub mod error;
pub mod models;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use std::convert::Infallible;

pub use error::ApiError;

/// Every response body the gateway sends.
pub type Body = BoxBody<Bytes, Infallible>;

/// The id a request is answered with (`x-request-id`): the caller's, when
/// it sent a usable one, else a fresh one. The server stamps it into every
/// request's extensions.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

pub fn json_response(status: http::StatusCode, value: &impl serde::Serialize) -> http::Response<Body> {
    let body = serde_json::to_vec(value).expect("serialisable response");
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(full(body))
        .expect("valid response")
}
