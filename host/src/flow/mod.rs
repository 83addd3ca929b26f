//! The request spine, one file per stage: [`plan`] (candidates and the
//! policy's plan), [`attempts`] (the loop over the plan: waits, deadlines,
//! what a failure does), [`hedge`] (racing a silent first attempt),
//! [`whole`] (a whole answer), [`stream`] (a stream, up to its end),
//! [`resume`] (continuing a broken stream), [`account`] (health, metrics
//! and log of a success), and [`failure`] (the one table that decides what
//! a failure does). The flow returns typed outcomes ([`whole::Answered`],
//! [`stream::Streaming`], [`failure::FlowError`]); only `api/` turns them
//! into HTTP statuses, bodies and headers.

use crate::ledger::Trail;
use crate::plugin::types::RequestContext;
use std::sync::Arc;
use tokio::time::Instant;

pub mod account;
pub mod attempts;
pub mod failure;
pub mod hedge;
pub mod plan;
pub mod request;
pub mod resume;
pub mod stream;
pub mod whole;

#[cfg(test)]
mod timing;

/// A request as the flow knows it from its arrival: its id, time and
/// format for the adapters, and the instant its deadline counts from.
#[derive(Clone, Debug)]
pub struct Received {
    pub context: Arc<RequestContext>,
    pub started: Instant,
    /// The request's record in the making.
    pub trail: Trail,
    /// Estimated prompt tokens (for the cost of attempts that report none).
    pub prompt_estimate: u32,
    /// Why the request cannot be sent as chat, when the caller spoke another
    /// API whose request does not translate: only targets that speak that
    /// API natively can take it.
    pub untranslatable: Option<String>,
}
