//! Helpers for Switchboard plugin authors: reading the canonical request
//! (OpenAI Chat Completions JSON) and provider responses. Free of host
//! concerns and of any WIT binding, so every adapter can share it.

pub mod canonical;
pub mod response;
