//! Contract `switchboard:plugin@0.1.0` (frozen in `wit/v0.1/`): its
//! generated bindings, and the conversions between them and the host's own
//! types ([`super::types`]). What 0.1 lacks gets its neutral value: no
//! cache-write or reasoning counts, no answering model, no hedge request.
//! Nothing outside `plugin/` names a type from here.

use super::types as host;

/// Host bindings of the `adapter` world.
pub mod adapter {
    wasmtime::component::bindgen!({
        world: "adapter",
        path: "../wit/v0.1",
        exports: { default: async },
    });
    pub use self::switchboard::plugin::types::{Capabilities, Usage};
    pub use exports::switchboard::plugin::provider::*;
}

/// Host bindings of the `policy` world.
pub mod policy {
    wasmtime::component::bindgen!({
        world: "policy",
        path: "../wit/v0.1",
        exports: { default: async },
    });
    pub use self::switchboard::plugin::types::Capabilities;
    pub use exports::switchboard::plugin::router::*;
}

const FLAGS: [host::Capabilities; 4] = [
    host::Capabilities::TOOLS,
    host::Capabilities::IMAGES,
    host::Capabilities::JSON_SCHEMA,
    host::Capabilities::STREAMING,
];

impl From<adapter::Capabilities> for host::Capabilities {
    fn from(c: adapter::Capabilities) -> Self {
        let theirs = [
            adapter::Capabilities::TOOLS,
            adapter::Capabilities::IMAGES,
            adapter::Capabilities::JSON_SCHEMA,
            adapter::Capabilities::STREAMING,
        ];
        FLAGS
            .into_iter()
            .zip(theirs)
            .filter(|(_, t)| c.contains(*t))
            .fold(host::Capabilities::empty(), |acc, (ours, _)| acc | ours)
    }
}

impl From<host::Capabilities> for policy::Capabilities {
    fn from(c: host::Capabilities) -> Self {
        let theirs = [
            policy::Capabilities::TOOLS,
            policy::Capabilities::IMAGES,
            policy::Capabilities::JSON_SCHEMA,
            policy::Capabilities::STREAMING,
        ];
        FLAGS
            .into_iter()
            .zip(theirs)
            .filter(|(ours, _)| c.contains(*ours))
            .fold(policy::Capabilities::empty(), |acc, (_, t)| acc | t)
    }
}

impl From<&host::Target> for adapter::Target {
    fn from(t: &host::Target) -> Self {
        adapter::Target {
            provider: t.provider.clone(),
            model: t.model.clone(),
            options: t.options.clone(),
        }
    }
}

impl From<adapter::OutboundRequest> for host::OutboundRequest {
    fn from(r: adapter::OutboundRequest) -> Self {
        host::OutboundRequest {
            method: r.method,
            path: r.path,
            headers: r.headers,
            body: r.body,
            // `stream` is ignored: the host knows what it asked for.
            credential: match r.credential {
                adapter::CredentialPlacement::Bearer => host::CredentialPlacement::Bearer,
                adapter::CredentialPlacement::Header(name) => host::CredentialPlacement::Header(name),
                adapter::CredentialPlacement::Query(name) => host::CredentialPlacement::Query(name),
                adapter::CredentialPlacement::None => host::CredentialPlacement::None,
            },
        }
    }
}

impl From<host::InboundResponse> for adapter::InboundResponse {
    fn from(r: host::InboundResponse) -> Self {
        adapter::InboundResponse {
            status: r.status,
            headers: r.header_pairs(),
            body: r.body,
        }
    }
}

impl From<&host::InboundResponse> for adapter::InboundResponse {
    fn from(r: &host::InboundResponse) -> Self {
        adapter::InboundResponse {
            status: r.status,
            headers: r.header_pairs(),
            body: r.body.clone(),
        }
    }
}

impl From<adapter::Usage> for host::Usage {
    fn from(u: adapter::Usage) -> Self {
        host::Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cache_read_tokens: u.cached_prompt_tokens,
            ..host::Usage::default()
        }
    }
}

impl From<adapter::Completion> for host::Completion {
    fn from(c: adapter::Completion) -> Self {
        host::Completion {
            body: c.body,
            usage: c.usage.map(Into::into),
            model: None,
        }
    }
}

super::convert::provider_error!();

impl From<host::SseEvent> for adapter::SseEvent {
    fn from(e: host::SseEvent) -> Self {
        adapter::SseEvent {
            event: e.event,
            data: e.data,
        }
    }
}

impl host::Decoded {
    /// Add what a 0.1 decoder made of one more event of the batch.
    pub(super) fn add_v0_1(&mut self, d: adapter::Decoded) {
        self.events
            .extend(d.chunks.into_iter().map(|data| host::OutEvent {
                event: None,
                data: host::EventData::Written(data),
            }));
        if let Some(usage) = d.usage {
            self.usage = Some(usage.into());
        }
        self.done |= d.done;
    }
}

impl From<adapter::AdapterInfo> for host::AdapterInfo {
    /// `name` is dropped: the configuration names an adapter by its file.
    fn from(i: adapter::AdapterInfo) -> Self {
        host::AdapterInfo {
            version: i.version,
            capabilities: i.capabilities.into(),
            native_formats: Vec::new(),
            stateless: false,
        }
    }
}

impl From<&host::RequestFacts> for policy::RequestFacts {
    fn from(f: &host::RequestFacts) -> Self {
        policy::RequestFacts {
            model: f.model.clone(),
            estimated_prompt_tokens: f.estimated_prompt_tokens,
            max_output_tokens: f.max_output_tokens,
            needs: f.needs.into(),
            tags: f.tags.clone(),
        }
    }
}

impl From<&host::Candidate> for policy::Candidate {
    fn from(c: &host::Candidate) -> Self {
        let h = &c.health;
        policy::Candidate {
            index: c.index,
            provider: c.provider.clone(),
            model: c.model.clone(),
            input_price_per_mtok: c.input_price_per_mtok,
            output_price_per_mtok: c.output_price_per_mtok,
            context_window: c.context_window,
            capabilities: c.capabilities.into(),
            health: policy::Health {
                latency_ewma_ms: h.latency_ewma_ms,
                ttft_ewma_ms: h.ttft_ewma_ms,
                error_rate: h.error_rate,
                in_flight: h.in_flight,
                circuit: match h.circuit {
                    host::CircuitState::Closed => policy::CircuitState::Closed,
                    host::CircuitState::Open => policy::CircuitState::Open,
                    host::CircuitState::HalfOpen => policy::CircuitState::HalfOpen,
                },
                rate_limited_for_ms: h.rate_limited_for_ms,
            },
        }
    }
}

impl From<policy::Attempt> for host::PlanStep {
    fn from(a: policy::Attempt) -> Self {
        host::PlanStep {
            candidate: a.candidate,
            timeout_ms: a.timeout_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_cross_both_ways_flag_for_flag() {
        let theirs = adapter::Capabilities::TOOLS | adapter::Capabilities::STREAMING;
        let ours = host::Capabilities::from(theirs);
        assert_eq!(ours, host::Capabilities::TOOLS | host::Capabilities::STREAMING);
        let back = policy::Capabilities::from(ours);
        assert_eq!(
            back,
            policy::Capabilities::TOOLS | policy::Capabilities::STREAMING
        );
        // 0.1 has no embeddings flag.
        assert_eq!(
            host::Capabilities::from(adapter::Capabilities::all()),
            host::Capabilities::TOOLS
                | host::Capabilities::IMAGES
                | host::Capabilities::JSON_SCHEMA
                | host::Capabilities::STREAMING
        );
    }
}
