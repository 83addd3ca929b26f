//! Contract `switchboard:plugin@0.2.0` (`wit/switchboard.wit`): its
//! generated bindings, and the conversions between them and the host's own
//! types ([`super::types`]). Nothing outside `plugin/` names a type from here.

use super::types as host;

/// Host bindings of the `adapter` world.
pub mod adapter {
    wasmtime::component::bindgen!({
        world: "adapter",
        path: "../wit",
        exports: { default: async },
    });
    pub use self::switchboard::plugin::types::{ApiFormat, Body, Capabilities, Usage};
    pub use exports::switchboard::plugin::provider::*;
}

/// Host bindings of the `policy` world.
pub mod policy {
    wasmtime::component::bindgen!({
        world: "policy",
        path: "../wit",
        exports: { default: async },
    });
    pub use self::switchboard::plugin::types::{ApiFormat, Capabilities};
    pub use exports::switchboard::plugin::router::*;
}

/// The host's flags in the contract's order.
const FLAGS: [host::Capabilities; 5] = [
    host::Capabilities::TOOLS,
    host::Capabilities::IMAGES,
    host::Capabilities::JSON_SCHEMA,
    host::Capabilities::STREAMING,
    host::Capabilities::EMBEDDINGS,
];

impl From<adapter::Capabilities> for host::Capabilities {
    fn from(c: adapter::Capabilities) -> Self {
        use adapter::Capabilities as C;
        let theirs = [C::TOOLS, C::IMAGES, C::JSON_SCHEMA, C::STREAMING, C::EMBEDDINGS];
        FLAGS
            .into_iter()
            .zip(theirs)
            .filter(|(_, t)| c.contains(*t))
            .fold(host::Capabilities::empty(), |acc, (ours, _)| acc | ours)
    }
}

impl From<host::Capabilities> for policy::Capabilities {
    fn from(c: host::Capabilities) -> Self {
        use policy::Capabilities as C;
        let theirs = [C::TOOLS, C::IMAGES, C::JSON_SCHEMA, C::STREAMING, C::EMBEDDINGS];
        FLAGS
            .into_iter()
            .zip(theirs)
            .filter(|(ours, _)| c.contains(*ours))
            .fold(policy::Capabilities::empty(), |acc, (_, t)| acc | t)
    }
}

fn format_of(f: adapter::ApiFormat) -> host::ApiFormat {
    match f {
        adapter::ApiFormat::OpenaiChat => host::ApiFormat::OpenAiChat,
        adapter::ApiFormat::AnthropicMessages => host::ApiFormat::AnthropicMessages,
        adapter::ApiFormat::OpenaiResponses => host::ApiFormat::OpenAiResponses,
    }
}

impl From<host::ApiFormat> for adapter::ApiFormat {
    fn from(f: host::ApiFormat) -> Self {
        match f {
            host::ApiFormat::OpenAiChat => adapter::ApiFormat::OpenaiChat,
            host::ApiFormat::AnthropicMessages => adapter::ApiFormat::AnthropicMessages,
            host::ApiFormat::OpenAiResponses => adapter::ApiFormat::OpenaiResponses,
        }
    }
}

impl From<host::ApiFormat> for policy::ApiFormat {
    fn from(f: host::ApiFormat) -> Self {
        match f {
            host::ApiFormat::OpenAiChat => policy::ApiFormat::OpenaiChat,
            host::ApiFormat::AnthropicMessages => policy::ApiFormat::AnthropicMessages,
            host::ApiFormat::OpenAiResponses => policy::ApiFormat::OpenaiResponses,
        }
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

impl From<&host::RequestContext> for adapter::RequestContext {
    fn from(c: &host::RequestContext) -> Self {
        adapter::RequestContext {
            id: c.id.clone(),
            created: c.created,
            format: c.format.into(),
        }
    }
}

/// A body: `unchanged` is the bytes the host passed in.
fn body(body: adapter::Body, passed_in: Vec<u8>) -> Vec<u8> {
    match body {
        adapter::Body::Bytes(bytes) => bytes,
        adapter::Body::Unchanged => passed_in,
    }
}

/// The provider request an adapter built from `request`.
pub fn outbound(r: adapter::OutboundRequest, request: Vec<u8>) -> host::OutboundRequest {
    host::OutboundRequest {
        method: r.method,
        path: r.path,
        headers: r.headers,
        body: body(r.body, request),
        credential: match r.credential {
            adapter::CredentialPlacement::Bearer => host::CredentialPlacement::Bearer,
            adapter::CredentialPlacement::Header(name) => host::CredentialPlacement::Header(name),
            adapter::CredentialPlacement::Query(name) => host::CredentialPlacement::Query(name),
            adapter::CredentialPlacement::None => host::CredentialPlacement::None,
        },
    }
}

impl From<host::InboundResponse> for adapter::InboundResponse {
    fn from(r: host::InboundResponse) -> Self {
        adapter::InboundResponse {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    }
}

impl From<&host::InboundResponse> for adapter::InboundResponse {
    fn from(r: &host::InboundResponse) -> Self {
        adapter::InboundResponse {
            status: r.status,
            headers: r.headers.clone(),
            body: r.body.clone(),
        }
    }
}

impl From<adapter::Usage> for host::Usage {
    fn from(u: adapter::Usage) -> Self {
        host::Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cache_read_tokens: u.cache_read_tokens,
            cache_write_tokens: u.cache_write_tokens,
            cache_write_hour_tokens: u.cache_write_hour_tokens,
            reasoning_tokens: u.reasoning_tokens,
        }
    }
}

/// A whole answer; `unchanged` is the provider's body.
pub fn completion(c: adapter::Completion, answered: Vec<u8>) -> host::Completion {
    host::Completion {
        body: body(c.body, answered),
        usage: c.usage.map(Into::into),
        model: c.model,
    }
}

/// An embeddings answer; `unchanged` is the provider's body.
pub fn embeddings(e: adapter::Embeddings, answered: Vec<u8>) -> host::Embeddings {
    host::Embeddings {
        body: body(e.body, answered),
        usage: e.usage.map(Into::into),
    }
}

impl From<adapter::ProviderError> for host::ProviderError {
    fn from(e: adapter::ProviderError) -> Self {
        use adapter::ErrorClass as E;
        use host::ErrorClass as H;
        host::ProviderError {
            class: match e.class {
                E::RateLimited => H::RateLimited,
                E::Overloaded => H::Overloaded,
                E::Server => H::Server,
                E::Timeout => H::Timeout,
                E::Auth => H::Auth,
                E::BadRequest => H::BadRequest,
                E::ContextLength => H::ContextLength,
                E::ContentFilter => H::ContentFilter,
                E::NotFound => H::NotFound,
            },
            message: e.message,
            retry_after_ms: e.retry_after_ms,
            http_status: None,
        }
    }
}

impl From<host::SseEvent> for adapter::SseEvent {
    fn from(e: host::SseEvent) -> Self {
        adapter::SseEvent {
            event: e.event,
            data: e.data,
        }
    }
}

/// What a decoder made of `batch`: a forwarded event is taken out of the
/// batch (the host's copy), not copied back out of the guest.
pub fn decoded(d: adapter::Decoded, batch: &mut [adapter::SseEvent]) -> Result<host::Decoded, String> {
    let mut events = Vec::with_capacity(d.events.len());
    // An event forwarded twice would go out empty the second time, and be
    // taken for the provider's malformed event.
    let mut taken = vec![false; batch.len()];
    for emitted in d.events {
        events.push(match emitted {
            adapter::Emitted::Write(out) => host::OutEvent {
                event: out.event,
                data: host::EventData::Written(out.data),
            },
            adapter::Emitted::Forward(i) => {
                let Some(input) = batch.get_mut(i as usize) else {
                    return Err(format!("forwarded event {i} of a batch of {}", batch.len()));
                };
                if std::mem::replace(&mut taken[i as usize], true) {
                    return Err(format!("forwarded event {i} twice"));
                }
                host::OutEvent {
                    event: input.event.clone(),
                    data: host::EventData::Forwarded(std::mem::take(&mut input.data)),
                }
            }
        });
    }
    Ok(host::Decoded {
        events,
        usage: d.usage.map(Into::into),
        model: d.model,
        done: d.done,
        error: d.error.map(Into::into),
    })
}

impl From<adapter::AdapterInfo> for host::AdapterInfo {
    fn from(i: adapter::AdapterInfo) -> Self {
        host::AdapterInfo {
            version: i.version,
            capabilities: i.capabilities.into(),
            native_formats: i.native_formats.into_iter().map(format_of).collect(),
            stateless: i.stateless,
        }
    }
}

impl From<policy::PolicyInfo> for host::PolicyInfo {
    fn from(i: policy::PolicyInfo) -> Self {
        host::PolicyInfo {
            version: i.version,
            stateless: i.stateless,
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
            stream: f.stream,
            format: f.format.into(),
            last_user_excerpt: f.last_user_excerpt.clone(),
            system_excerpt: f.system_excerpt.clone(),
            budget_remaining: f.budget_remaining,
        }
    }
}

impl From<&host::Candidate> for policy::Candidate {
    /// Only candidates that can be tried now are offered, so an open
    /// circuit never crosses.
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
                latency_p95_ms: h.latency_p95_ms,
                ttft_ewma_ms: h.ttft_ewma_ms,
                ttft_p95_ms: h.ttft_p95_ms,
                error_rate: h.error_rate,
                in_flight: h.in_flight,
                circuit: match h.circuit {
                    host::CircuitState::Closed => policy::CircuitState::Closed,
                    host::CircuitState::HalfOpen | host::CircuitState::Open => policy::CircuitState::HalfOpen,
                },
            },
        }
    }
}

impl From<policy::AttemptPlan> for host::Plan {
    fn from(p: policy::AttemptPlan) -> Self {
        host::Plan {
            steps: p
                .attempts
                .into_iter()
                .map(|a| host::PlanStep {
                    candidate: a.candidate,
                    timeout_ms: a.timeout_ms,
                })
                .collect(),
            hedge: match p.hedge {
                policy::Hedge::Route => host::HedgeChoice::Route,
                policy::Hedge::Never => host::HedgeChoice::Never,
                policy::Hedge::AfterMs(ms) => host::HedgeChoice::After(std::time::Duration::from_millis(ms)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_cross_both_ways_flag_for_flag() {
        let theirs = adapter::Capabilities::TOOLS | adapter::Capabilities::EMBEDDINGS;
        let ours = host::Capabilities::from(theirs);
        assert_eq!(ours, host::Capabilities::TOOLS | host::Capabilities::EMBEDDINGS);
        let back = policy::Capabilities::from(ours);
        assert_eq!(
            back,
            policy::Capabilities::TOOLS | policy::Capabilities::EMBEDDINGS
        );
        assert_eq!(
            host::Capabilities::from(adapter::Capabilities::all()),
            host::Capabilities::all()
        );
    }

    #[test]
    fn forwarded_events_are_taken_from_the_batch_and_bad_positions_or_repeats_refused() {
        let event = |data: &str| adapter::SseEvent {
            event: Some("e".into()),
            data: data.into(),
        };
        let mut batch = vec![event("a"), event("b")];
        let two = adapter::Decoded {
            events: vec![
                adapter::Emitted::Forward(1),
                adapter::Emitted::Write(adapter::OutEvent {
                    event: None,
                    data: b"new".to_vec(),
                }),
            ],
            usage: None,
            model: Some("m-2024".into()),
            done: true,
            error: None,
        };
        let ours = decoded(two, &mut batch).expect("a valid batch");
        assert_eq!(
            ours.events,
            vec![
                host::OutEvent {
                    event: Some("e".into()),
                    data: host::EventData::Forwarded("b".into()),
                },
                host::OutEvent {
                    event: None,
                    data: host::EventData::Written(b"new".to_vec()),
                },
            ]
        );
        assert_eq!(ours.model.as_deref(), Some("m-2024"));
        let beyond = adapter::Decoded {
            events: vec![adapter::Emitted::Forward(2)],
            usage: None,
            model: None,
            done: false,
            error: None,
        };
        assert_eq!(
            decoded(beyond, &mut batch).unwrap_err(),
            "forwarded event 2 of a batch of 2"
        );
        let twice = adapter::Decoded {
            events: vec![adapter::Emitted::Forward(0), adapter::Emitted::Forward(0)],
            usage: None,
            model: None,
            done: false,
            error: None,
        };
        assert_eq!(decoded(twice, &mut batch).unwrap_err(), "forwarded event 0 twice");
    }
}
