//! Translations at the edge between the inbound APIs the gateway serves and
//! the canonical chat form every adapter speaks: a request in, its answer
//! and stream events out. Used only when the answering target does not
//! speak the caller's API itself (then the body passes through).

pub mod messages;
pub mod messages_stream;
pub mod responses;
pub mod responses_stream;
