//! The host's own types for what crosses the plugin boundary. The bindings
//! of each contract version ([`super::v0_1`], [`super::v0_2`]) convert to
//! and from them at the edge, so the rest of the host never names a
//! generated type and a new contract version touches only `plugin/`. They
//! follow the newest contract; an older plugin gets what its version has.

use std::ops::{BitOr, BitOrAssign};

/// What a target supports (or a request needs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Capabilities(u8);

impl Capabilities {
    pub const TOOLS: Capabilities = Capabilities(1);
    pub const IMAGES: Capabilities = Capabilities(1 << 1);
    pub const JSON_SCHEMA: Capabilities = Capabilities(1 << 2);
    pub const STREAMING: Capabilities = Capabilities(1 << 3);
    pub const EMBEDDINGS: Capabilities = Capabilities(1 << 4);

    pub const fn empty() -> Capabilities {
        Capabilities(0)
    }

    pub const fn all() -> Capabilities {
        Capabilities(0b1_1111)
    }

    pub const fn contains(self, other: Capabilities) -> bool {
        self.0 & other.0 == other.0
    }

    /// What both have.
    pub const fn intersection(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 & other.0)
    }
}

/// As the names the configuration uses: `["tools", "streaming"]`.
impl serde::Serialize for Capabilities {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let names = [
            (Capabilities::TOOLS, "tools"),
            (Capabilities::IMAGES, "images"),
            (Capabilities::JSON_SCHEMA, "json_schema"),
            (Capabilities::STREAMING, "streaming"),
            (Capabilities::EMBEDDINGS, "embeddings"),
        ];
        s.collect_seq(names.iter().filter(|(c, _)| self.contains(*c)).map(|(_, n)| n))
    }
}

impl BitOr for Capabilities {
    type Output = Capabilities;
    fn bitor(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 | other.0)
    }
}

impl BitOrAssign for Capabilities {
    fn bitor_assign(&mut self, other: Capabilities) {
        self.0 |= other.0;
    }
}

/// The API a caller speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiFormat {
    /// OpenAI Chat Completions, the canonical format.
    #[default]
    OpenAiChat,
    AnthropicMessages,
    OpenAiResponses,
}

/// The request an attempt belongs to, as an adapter sees it.
#[derive(Clone, Debug)]
pub struct RequestContext {
    /// The gateway's request id (`x-request-id`).
    pub id: String,
    /// When the request arrived, seconds since the Unix epoch.
    pub created: u64,
    pub format: ApiFormat,
}

/// A target as an adapter sees it.
#[derive(Clone, Debug)]
pub struct Target {
    pub provider: String,
    pub model: String,
    /// The provider's `options` as a JSON object.
    pub options: String,
}

/// Where the host puts the provider credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialPlacement {
    Bearer,
    Header(String),
    Query(String),
    None,
}

/// A provider request described by value; the host sends it.
#[derive(Clone, Debug)]
pub struct OutboundRequest {
    pub method: String,
    /// Appended to the provider's base URL.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub credential: CredentialPlacement,
}

/// A provider's answer as the adapter gets it (credentials scrubbed).
#[derive(Clone, Debug)]
pub struct InboundResponse {
    pub status: u16,
    /// A line per field, `name: value\n` (contract 0.3's `header-lines`).
    pub headers: String,
    pub body: Vec<u8>,
}

impl InboundResponse {
    /// The header fields, in order, as (name, value).
    pub fn header_fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.lines().filter_map(|line| line.split_once(": "))
    }

    /// The header fields as contracts before 0.3 have them: a pair each.
    pub fn header_pairs(&self) -> Vec<(String, String)> {
        self.header_fields()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }
}

/// Tokens of one answer. The cache and reasoning counts are parts of the
/// totals, never added to them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// All prompt tokens, cache reads and writes included.
    pub prompt_tokens: u32,
    /// All generated tokens, reasoning included.
    pub completion_tokens: u32,
    pub cache_read_tokens: u32,
    pub cache_write_tokens: u32,
    /// The part of `cache_write_tokens` kept for an hour, priced apart.
    pub cache_write_hour_tokens: u32,
    pub reasoning_tokens: u32,
}

/// A translated whole answer: canonical chat completion JSON (or, for a
/// native format, that format's answer).
#[derive(Clone, Debug)]
pub struct Completion {
    pub body: Vec<u8>,
    pub usage: Option<Usage>,
    /// The model that answered, when the answer said.
    pub model: Option<String>,
}

/// A translated embeddings answer: an OpenAI embeddings list.
#[derive(Clone, Debug)]
pub struct Embeddings {
    pub body: Vec<u8>,
    pub usage: Option<Usage>,
}

/// How an adapter classified a provider's failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    RateLimited,
    Overloaded,
    Server,
    Timeout,
    Auth,
    BadRequest,
    ContextLength,
    ContentFilter,
    NotFound,
}

#[derive(Clone, Debug)]
pub struct ProviderError {
    pub class: ErrorClass,
    pub message: String,
    pub retry_after_ms: Option<u64>,
    /// The HTTP status of the answer it was read from (set by the host;
    /// none for an error event inside a stream).
    pub http_status: Option<u16>,
}

/// One server-sent event of a provider stream.
#[derive(Clone, Debug)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// One event toward the caller: for `openai-chat` a chunk without an
/// event name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutEvent {
    pub event: Option<String>,
    pub data: EventData,
}

/// An event's data as a decoder emitted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventData {
    /// Written by the adapter: bytes, any.
    Written(Vec<u8>),
    /// The provider's own event, passed on by the adapter unchanged: text
    /// already (the host's framing checked it). If it is not a valid
    /// event, the provider sent it malformed.
    Forwarded(String),
}

impl EventData {
    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            EventData::Written(bytes) => bytes,
            EventData::Forwarded(text) => text.into_bytes(),
        }
    }
}

/// What a stream decoder made of one batch of events.
#[derive(Clone, Debug, Default)]
pub struct Decoded {
    /// Events for the caller, in order.
    pub events: Vec<OutEvent>,
    pub usage: Option<Usage>,
    pub model: Option<String>,
    /// The provider marked the end of the answer.
    pub done: bool,
    /// An in-stream provider error after `events`; the stream ends there.
    pub error: Option<ProviderError>,
}

/// What an adapter says of itself.
#[derive(Clone, Debug)]
pub struct AdapterInfo {
    pub version: String,
    pub capabilities: Capabilities,
    pub native_formats: Vec<ApiFormat>,
    pub stateless: bool,
}

/// What a policy says of itself.
#[derive(Clone, Debug, Default)]
pub struct PolicyInfo {
    pub version: String,
    pub stateless: bool,
}

/// A target's circuit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

/// A target's live health, as policies see it.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Health {
    pub latency_ewma_ms: f64,
    pub latency_p95_ms: f64,
    pub ttft_ewma_ms: f64,
    pub ttft_p95_ms: f64,
    pub error_rate: f64,
    pub in_flight: u32,
    pub circuit: CircuitState,
    pub rate_limited_for_ms: u64,
}

/// What a policy knows of a request.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RequestFacts {
    /// The route name.
    pub model: String,
    pub estimated_prompt_tokens: u32,
    pub max_output_tokens: Option<u32>,
    pub needs: Capabilities,
    pub tags: Vec<(String, String)>,
    pub stream: bool,
    pub format: ApiFormat,
    /// Bounded excerpts, when the route asks for them.
    pub last_user_excerpt: Option<String>,
    pub system_excerpt: Option<String>,
    /// Share of the caller's budget left, when one applies.
    pub budget_remaining: Option<f64>,
}

/// A target a policy may plan.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Candidate {
    /// Position in the route's targets.
    pub index: u32,
    pub provider: String,
    pub model: String,
    pub input_price_per_mtok: f64,
    pub output_price_per_mtok: f64,
    pub context_window: u32,
    pub capabilities: Capabilities,
    pub health: Health,
}

/// One attempt of a policy's plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PlanStep {
    pub candidate: u32,
    pub timeout_ms: Option<u64>,
}

/// Whether a plan races a second attempt against a slow first one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HedgeChoice {
    /// What the route configures.
    #[default]
    Route,
    Never,
    After(std::time::Duration),
}

/// A policy's plan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<PlanStep>,
    pub hedge: HedgeChoice,
}
