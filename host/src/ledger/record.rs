//! What the ledger keeps of one request: who asked, where it went, each
//! attempt, tokens, cost and timings. Never a prompt, an answer or a secret.

use crate::plugin::types::Usage;
use serde::Serialize;

/// One request, answered or not.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RequestRecord {
    /// The gateway's own unique id (`x-switchboard-request-id`).
    pub id: String,
    /// The caller's `x-request-id`, when it sent one.
    pub caller_request_id: Option<String>,
    /// When the request arrived, milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The gateway key's name, and its team.
    pub key: Option<String>,
    pub team: Option<String>,
    pub route: Option<String>,
    /// The API it came in on: its path, such as `/v1/messages`.
    pub endpoint: &'static str,
    /// Caller tags (`x-switchboard-tag-*` and `user`).
    pub tags: Vec<(String, String)>,
    pub stream: bool,
    /// The plan's targets in order, `provider/model`.
    pub plan: Vec<String>,
    pub attempts: Vec<AttemptRecord>,
    /// Who answered.
    pub provider: Option<String>,
    pub model: Option<String>,
    /// The model the provider said answered.
    pub answered_model: Option<String>,
    /// The answering attempt's tokens.
    pub usage: Option<Usage>,
    /// What every attempt cost us.
    pub provider_cost_usd: f64,
    /// Some attempt's cost is an estimate (it consumed tokens but reported
    /// no usage: a broken stream, a cancelled hedge).
    pub cost_estimated: bool,
    /// What the caller is billed and budgets count: the answering attempt.
    pub charged_usd: f64,
    pub latency_ms: u64,
    pub ttft_ms: Option<u64>,
    /// The status the caller got (for a stream, of its head).
    pub status: u16,
    /// Why it failed, when it did (the failure's label or the API error's
    /// type).
    pub error_class: Option<String>,
    /// How it ended: `answered`, `failed`, `broken` (a stream that broke
    /// after its head), `cancelled` (the caller went away).
    pub outcome: &'static str,
    /// The policy's inputs and plan, JSON, when decisions are recorded.
    #[serde(skip)]
    pub decision: Option<String>,
}

/// One attempt of a request.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AttemptRecord {
    pub provider: String,
    pub model: String,
    /// `success`, or the failure's label (`server_error`, `timeout`, ...),
    /// `cancelled`, `diverged`, `shutdown`.
    pub outcome: String,
    /// The provider's HTTP status, when it answered with one.
    pub http_status: Option<u16>,
    pub latency_ms: u64,
    pub ttft_ms: Option<u64>,
    pub usage: Option<Usage>,
    pub cost_usd: f64,
    /// `cost_usd` is an estimate: the attempt consumed tokens without a
    /// usage report.
    pub estimated: bool,
}
