//! Helpers for Switchboard plugin authors: reading the canonical request
//! (OpenAI Chat Completions JSON) and provider responses. Free of host
//! concerns and of any WIT binding, so every adapter can share it.

pub mod canonical;
pub mod config;
#[cfg(feature = "test-support")]
pub mod mutate;
pub mod response;
pub mod scan;
pub mod sse;

/// `$ty::cached(text)`: `$ty::parse(text)` (a `fn(&str) -> Result<$ty,
/// String>`) through a [`config::LastParsed`] of its own, so a plugin parses
/// its options or config once per text, not once per call.
#[macro_export]
macro_rules! parse_once_per_text {
    ($ty:ty) => {
        impl $ty {
            /// `parse`, once per text (`switchboard_guest::config::LastParsed`).
            pub fn cached(text: &str) -> Result<std::rc::Rc<$ty>, String> {
                thread_local! {
                    static LAST: $crate::config::LastParsed<$ty> =
                        const { $crate::config::LastParsed::new() };
                }
                LAST.with(|last| last.parse(text, <$ty>::parse))
            }
        }
    };
}

/// Helpers for a policy crate's unit tests, expanded inside its `tests`
/// module (each crate has its own generated types, so they cannot be
/// shared as functions): `candidate(index, provider, output price,
/// latency ms, in flight)`, `facts(tags)` and `order(plan)`.
#[macro_export]
macro_rules! policy_test_helpers {
    () => {
        use exports::switchboard::plugin::router::Health;
        use switchboard::plugin::types::{ApiFormat, Capabilities};

        /// Candidate `index` of `provider/m` at an output price, latency and load.
        fn candidate(index: u32, provider: &str, price: f64, latency_ms: f64, in_flight: u32) -> Candidate {
            Candidate {
                index,
                provider: provider.into(),
                model: "m".into(),
                input_price_per_mtok: price / 2.0,
                output_price_per_mtok: price,
                context_window: 128_000,
                capabilities: Capabilities::all(),
                health: Health {
                    latency_ewma_ms: latency_ms,
                    latency_p95_ms: 0.0,
                    ttft_ewma_ms: latency_ms / 2.0,
                    ttft_p95_ms: 0.0,
                    error_rate: 0.0,
                    in_flight,
                    circuit: exports::switchboard::plugin::router::CircuitState::Closed,
                },
            }
        }

        #[allow(dead_code)]
        fn facts(tags: &[(&str, &str)]) -> RequestFacts {
            RequestFacts {
                model: "route".into(),
                estimated_prompt_tokens: 100,
                max_output_tokens: Some(100),
                needs: Capabilities::empty(),
                tags: tags
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                stream: false,
                format: ApiFormat::OpenaiChat,
                last_user_excerpt: None,
                system_excerpt: None,
                budget_remaining: None,
            }
        }

        fn order(plan: AttemptPlan) -> Vec<u32> {
            plan.attempts.into_iter().map(|a| a.candidate).collect()
        }
    };
}
