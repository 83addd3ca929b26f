//! The host's own types for what crosses the plugin boundary. The bindings
//! of each contract version ([`super::v0_1`]) convert to and from them at
//! the edge, so the rest of the host never names a generated type and a
//! new contract version touches only `plugin/`.

use std::ops::{BitOr, BitOrAssign};

/// What a target supports (or a request needs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Capabilities(u8);

impl Capabilities {
    pub const TOOLS: Capabilities = Capabilities(1);
    pub const IMAGES: Capabilities = Capabilities(1 << 1);
    pub const JSON_SCHEMA: Capabilities = Capabilities(1 << 2);
    pub const STREAMING: Capabilities = Capabilities(1 << 3);

    pub const fn empty() -> Capabilities {
        Capabilities(0)
    }

    pub const fn all() -> Capabilities {
        Capabilities(0b1111)
    }

    pub const fn contains(self, other: Capabilities) -> bool {
        self.0 & other.0 == other.0
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
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Tokens of one answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub cached_prompt_tokens: u32,
}

/// A translated whole answer: canonical chat completion JSON.
#[derive(Clone, Debug)]
pub struct Completion {
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
}

/// One server-sent event of a provider stream.
#[derive(Clone, Debug)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// What a stream decoder made of one event.
#[derive(Clone, Debug, Default)]
pub struct Decoded {
    /// Canonical chat completion chunks (JSON).
    pub chunks: Vec<Vec<u8>>,
    pub usage: Option<Usage>,
    /// The provider marked the end of the answer.
    pub done: bool,
}

/// What an adapter says of itself.
#[derive(Clone, Debug)]
pub struct AdapterInfo {
    pub name: String,
    pub version: String,
    pub capabilities: Capabilities,
}

/// A target's circuit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

/// A target's live health, as policies see it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Health {
    pub latency_ewma_ms: f64,
    pub ttft_ewma_ms: f64,
    pub error_rate: f64,
    pub in_flight: u32,
    pub circuit: CircuitState,
    pub rate_limited_for_ms: u64,
}

/// What a policy knows of a request.
#[derive(Clone, Debug)]
pub struct RequestFacts {
    /// The route name.
    pub model: String,
    pub estimated_prompt_tokens: u32,
    pub max_output_tokens: Option<u32>,
    pub needs: Capabilities,
    pub tags: Vec<(String, String)>,
}

/// A target a policy may plan.
#[derive(Clone, Debug)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanStep {
    pub candidate: u32,
    pub timeout_ms: Option<u64>,
}
