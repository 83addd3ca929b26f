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
    /// Names come from the configuration, interned ([`super::names`]).
    pub route: Option<&'static str>,
    /// The API it came in on: its path, such as `/v1/messages`.
    pub endpoint: &'static str,
    /// Caller tags (`x-switchboard-tag-*` and `user`).
    pub tags: Vec<(String, String)>,
    pub stream: bool,
    /// The plan's targets in order, `provider/model`.
    pub plan: Vec<&'static str>,
    pub attempts: Vec<AttemptRecord>,
    /// Who answered.
    pub provider: Option<&'static str>,
    pub model: Option<&'static str>,
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

/// One attempt of a request. In the ledger's `attempts` column (JSON), a
/// field that is null, zero or false is left out: every byte of a record
/// is written twice (the WAL, then the database), so the writer's cost
/// follows the record's size.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AttemptRecord {
    pub provider: &'static str,
    pub model: &'static str,
    /// `success`, or the failure's label (`server_error`, `timeout`, ...),
    /// `cancelled`, `diverged`, `shutdown`.
    pub outcome: &'static str,
    /// The provider's HTTP status, when it answered with one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    pub latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<u64>,
    /// Its tokens, by kind; the kinds it had none of are left out.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "tokens")]
    pub usage: Option<Usage>,
    #[serde(skip_serializing_if = "is_zero")]
    pub cost_usd: f64,
    /// `cost_usd` is an estimate: the attempt consumed tokens without a
    /// usage report.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub estimated: bool,
}

fn is_zero(value: &f64) -> bool {
    *value == 0.0
}

/// A usage as an object of its non-zero token counts.
fn tokens<S: serde::Serializer>(usage: &Option<Usage>, serializer: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let u = usage.unwrap_or_default();
    let counts = [
        ("prompt_tokens", u.prompt_tokens),
        ("completion_tokens", u.completion_tokens),
        ("cache_read_tokens", u.cache_read_tokens),
        ("cache_write_tokens", u.cache_write_tokens),
        ("cache_write_hour_tokens", u.cache_write_hour_tokens),
        ("reasoning_tokens", u.reasoning_tokens),
    ];
    let mut map = serializer.serialize_map(None)?;
    for (kind, count) in counts.into_iter().filter(|(_, count)| *count != 0) {
        map.serialize_entry(kind, &count)?;
    }
    map.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_leaves_out_what_it_does_not_have() {
        let failed = AttemptRecord {
            provider: "a",
            model: "m",
            outcome: "timeout",
            latency_ms: 30_000,
            ..AttemptRecord::default()
        };
        assert_eq!(
            serde_json::to_string(&failed).unwrap(),
            r#"{"provider":"a","model":"m","outcome":"timeout","latency_ms":30000}"#
        );
        let answered = AttemptRecord {
            outcome: "success",
            http_status: Some(200),
            ttft_ms: Some(0),
            usage: Some(Usage {
                prompt_tokens: 11,
                completion_tokens: 7,
                cache_read_tokens: 3,
                ..Usage::default()
            }),
            cost_usd: 0.25,
            estimated: true,
            ..failed
        };
        assert_eq!(
            serde_json::to_string(&answered).unwrap(),
            r#"{"provider":"a","model":"m","outcome":"success","http_status":200,"latency_ms":30000,"ttft_ms":0,"usage":{"prompt_tokens":11,"completion_tokens":7,"cache_read_tokens":3},"cost_usd":0.25,"estimated":true}"#
        );
    }
}
