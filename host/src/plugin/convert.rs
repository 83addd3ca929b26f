//! Code that is the same in several contract versions, written once as
//! macros: conversions between the host's own types ([`super::types`])
//! and a contract's bindings (the same from 0.2 on, or in every version),
//! and matches on an instance of any version. Each version's bindings are
//! types of their own, generated from its WIT, so the same code is
//! expanded in each version's module (`v0_1`, `v0_2`, `v0_3`), where
//! `adapter`, `policy` and `host` name that version's bindings and the
//! host's types, or where `Instance` and `Pre` name an adapter's or a
//! policy's.

/// The conversion of a provider error, the same in every version: expanded
/// by [`since_0_2`] and in `v0_1`.
macro_rules! provider_error {
    () => {
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
    };
}

pub(super) use provider_error;

/// Expands the conversions shared from 0.2 on in the module that invokes
/// it.
macro_rules! since_0_2 {
    () => {
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
                let theirs = [
                    C::TOOLS,
                    C::IMAGES,
                    C::JSON_SCHEMA,
                    C::STREAMING,
                    C::EMBEDDINGS,
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
                use policy::Capabilities as C;
                let theirs = [
                    C::TOOLS,
                    C::IMAGES,
                    C::JSON_SCHEMA,
                    C::STREAMING,
                    C::EMBEDDINGS,
                ];
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

        super::convert::provider_error!();

        /// What a decoder made of `batch`: a forwarded event is taken out of the
        /// batch (the host's copy), not copied back out of the guest.
        pub fn decoded(d: adapter::Decoded, batch: &mut [host::SseEvent]) -> Result<host::Decoded, String> {
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
                            host::CircuitState::HalfOpen | host::CircuitState::Open => {
                                policy::CircuitState::HalfOpen
                            }
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
                        policy::Hedge::AfterMs(ms) => {
                            host::HedgeChoice::After(std::time::Duration::from_millis(ms))
                        }
                    },
                }
            }
        }
    };
}

pub(super) use since_0_2;

/// A match on an adapter's or a policy's `Instance` whose 0.2 and 0.3 arms
/// are the same code: in `$body`, `$i` is the instance and `$v`, when
/// named, its version's module (`v0_2` or `v0_3`). The older versions'
/// arms follow.
macro_rules! on_0_2_or_0_3 {
    ($instance:expr, |$i:ident| $body:expr, $($older:pat => $other:expr),+ $(,)?) => {
        match $instance {
            Instance::V0_2($i) => $body,
            Instance::V0_3($i) => $body,
            $($older => $other),+
        }
    };
    ($instance:expr, |$v:ident, $i:ident| $body:expr, $($older:pat => $other:expr),+ $(,)?) => {
        match $instance {
            Instance::V0_2($i) => {
                use super::v0_2 as $v;
                $body
            }
            Instance::V0_3($i) => {
                use super::v0_3 as $v;
                $body
            }
            $($older => $other),+
        }
    };
}

pub(super) use on_0_2_or_0_3;

/// A match on an adapter's or a policy's `Instance` whose arms are the same
/// code in every version: in `$body`, `$i` is the instance and `$v`, when
/// named, its version's module.
macro_rules! on_every_version {
    ($instance:expr, |$i:ident| $body:expr) => {
        on_0_2_or_0_3!($instance, |$i| $body, Instance::V0_1($i) => $body)
    };
    ($instance:expr, |$v:ident, $i:ident| $body:expr) => {
        on_0_2_or_0_3!($instance, |$v, $i| $body, Instance::V0_1($i) => {
            use super::v0_1 as $v;
            $body
        })
    };
}

pub(super) use on_every_version;

/// A fresh `Instance` of whichever contract version the pre-instantiated
/// `pre` is, in `store` (an adapter's and a policy's `Pre` and `Instance`
/// are types of their own, each named so where the macro is used).
macro_rules! instantiate_pre {
    ($pre:expr, $store:expr) => {
        match $pre {
            Pre::V0_1(pre) => pre.instantiate_async($store).await.map(Instance::V0_1),
            Pre::V0_2(pre) => pre.instantiate_async($store).await.map(Instance::V0_2),
            Pre::V0_3(pre) => pre.instantiate_async($store).await.map(Instance::V0_3),
        }
    };
}

pub(super) use instantiate_pre;
