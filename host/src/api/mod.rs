//! The OpenAI-compatible HTTP surface: handlers, bodies and errors.

pub mod accounts;
pub mod admin;
pub mod admission;
pub mod auth;
pub mod body;
pub mod chat;
pub mod embeddings;
pub mod error;
pub mod events;
pub mod messages;
pub mod models;
pub mod responses;
pub mod serve;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use std::convert::Infallible;

pub use error::ApiError;

/// Every response body the gateway sends.
pub type Body = BoxBody<Bytes, Infallible>;

/// A request's ids, stamped into its extensions by the server: the
/// gateway's own, unique and time-ordered (`x-switchboard-request-id`),
/// and the caller's `x-request-id` when it sent a usable one.
#[derive(Clone, Debug)]
pub struct RequestIds {
    pub gateway: String,
    pub caller: Option<String>,
}

impl RequestIds {
    /// A fresh gateway id for a request that carried `caller`.
    pub fn new(caller: Option<String>) -> RequestIds {
        RequestIds {
            gateway: uuid::Uuid::now_v7().simple().to_string(),
            caller,
        }
    }
}

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
