//! Why an attempt failed, and what that decides: who is to blame, what it
//! does to the target's health, what the attempt loop does next, and what
//! the caller is told if it is the last word. One table ([`Failure::verdict`]),
//! read by the loop and tested as a table.

use crate::health::Outcome;
use crate::plugin::types::{ErrorClass, ProviderError};
use crate::plugin::{PluginError, Unavailable};
use crate::sse::SseError;
use crate::upstream::TransportError;
use std::time::Duration;

/// Why one attempt failed.
#[derive(Debug)]
pub enum Failure {
    /// The provider answered with an error the adapter classified.
    Provider(ProviderError),
    /// The provider's success answer could not be translated.
    Malformed(String),
    Transport(TransportError),
    Plugin(PluginError),
    /// No version of the adapter can take calls (not loaded, or quarantined).
    AdapterUnavailable(String, Unavailable),
    /// A stream broke.
    Stream(StreamFailure),
    /// The target is cooling down past the request's deadline.
    CoolingDown(Duration),
    /// The target's circuit is open (or its one half-open probe is out).
    CircuitOpen,
    /// The target does not speak the caller's API, and the request cannot
    /// be translated to chat (the reason says what cannot cross).
    Untranslatable(String),
}

/// How a provider's stream broke (an error event it sent is a
/// [`Failure::Provider`]).
#[derive(Debug, thiserror::Error)]
pub enum StreamFailure {
    #[error("no event from the provider for {} ms", .0.as_millis())]
    Idle(Duration),
    #[error("the provider's stream ended before the answer was complete")]
    EndedEarly,
    #[error("the provider's stream ended without any content")]
    Empty,
    #[error("{0}")]
    Framing(#[from] SseError),
}

/// Who a failure is laid at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blame {
    /// The provider said no, or said something we could not read.
    Provider,
    /// The network or the provider's silence.
    Transport,
    /// An adapter or policy.
    Plugin,
    /// The request itself: no other provider would do better.
    Caller,
    /// The gateway's own state (cooldowns, open circuits).
    Gateway,
}

/// What the attempt loop does after a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// The next planned attempt (the same target only after a backoff, when
    /// the plan repeats it).
    NextAttempt,
    /// The target went silent: the next attempt, and never this target
    /// again in this request.
    NotThisTarget,
    /// Only a target with a larger context window may take it.
    LargerWindow,
    /// Answer the caller now.
    Stop,
}

/// What the caller is told when this failure is the answer. The HTTP
/// surface of each inbound API turns it into its own status and error shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    BadRequest,
    ContentFilter,
    ContextLength,
    RateLimited,
    /// The provider is over capacity (Anthropic's 529 says so apart).
    Overloaded,
    Unavailable,
    GatewayTimeout,
    BadGateway,
    /// The gateway is shutting down.
    ShuttingDown,
    /// A fault of the gateway itself.
    Internal,
}

/// Why a request got no answer (or a stream no end): what the caller is
/// told, in words, and how long it should wait before trying again.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct FlowError {
    pub answer: Answer,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl FlowError {
    pub fn new(answer: Answer, message: impl Into<String>) -> FlowError {
        FlowError {
            answer,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn rate_limited(message: impl Into<String>, wait: Duration) -> FlowError {
        FlowError {
            retry_after: Some(wait),
            ..FlowError::new(Answer::RateLimited, message)
        }
    }
}

/// Everything the flow decides from a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub blame: Blame,
    pub health: Outcome,
    pub next: Next,
    pub answer: Answer,
    /// The `outcome` label of `attempts_total`.
    pub label: &'static str,
}

const fn verdict(blame: Blame, health: Outcome, next: Next, answer: Answer, label: &'static str) -> Verdict {
    Verdict {
        blame,
        health,
        next,
        answer,
        label,
    }
}

impl Failure {
    /// The table.
    pub fn verdict(&self) -> Verdict {
        use Answer::*;
        use Blame::*;
        use Next::*;
        use Outcome::{Failure as Fails, Neutral};
        match self {
            Failure::Provider(e) => match e.class {
                ErrorClass::RateLimited => {
                    verdict(Provider, Neutral, NextAttempt, RateLimited, "rate_limited")
                }
                ErrorClass::Overloaded => verdict(Provider, Fails, NextAttempt, Overloaded, "overloaded"),
                ErrorClass::Server => verdict(Provider, Fails, NextAttempt, BadGateway, "server_error"),
                ErrorClass::Timeout => verdict(Provider, Fails, NotThisTarget, GatewayTimeout, "timeout"),
                ErrorClass::Auth => verdict(Provider, Fails, NextAttempt, BadGateway, "auth"),
                ErrorClass::NotFound => verdict(Provider, Fails, NextAttempt, BadGateway, "not_found"),
                ErrorClass::BadRequest => verdict(Caller, Neutral, Stop, BadRequest, "bad_request"),
                ErrorClass::ContentFilter => verdict(Caller, Neutral, Stop, ContentFilter, "content_filter"),
                ErrorClass::ContextLength => {
                    verdict(Caller, Neutral, LargerWindow, ContextLength, "context_length")
                }
            },
            Failure::Malformed(_) => verdict(Provider, Fails, NextAttempt, BadGateway, "malformed"),
            Failure::Transport(TransportError::Timeout) => {
                verdict(Transport, Fails, NotThisTarget, GatewayTimeout, "timeout")
            }
            Failure::Transport(_) => verdict(Transport, Fails, NextAttempt, BadGateway, "transport"),
            // The adapter says the request cannot be expressed for its
            // provider: another target may take it; if none can, the request
            // is at fault.
            Failure::Plugin(PluginError::Refused { .. }) => {
                verdict(Caller, Neutral, NextAttempt, BadRequest, "untranslatable")
            }
            Failure::Plugin(_) | Failure::AdapterUnavailable(..) => {
                verdict(Plugin, Neutral, NextAttempt, BadGateway, "plugin")
            }
            Failure::Stream(StreamFailure::Idle(_)) => {
                verdict(Transport, Fails, NotThisTarget, GatewayTimeout, "timeout")
            }
            Failure::Stream(_) => verdict(Provider, Fails, NextAttempt, BadGateway, "stream"),
            Failure::CoolingDown(_) => verdict(Gateway, Neutral, NextAttempt, RateLimited, "cooling_down"),
            Failure::CircuitOpen => verdict(Gateway, Neutral, NextAttempt, Unavailable, "circuit_open"),
            // Another target may speak the caller's API; if none does, the
            // request is at fault.
            Failure::Untranslatable(_) => verdict(Caller, Neutral, NextAttempt, BadRequest, "untranslatable"),
        }
    }

    /// A description safe to show the caller (no credentials, no URLs).
    pub fn summary(&self) -> String {
        match self {
            Failure::Provider(e) if e.class == ErrorClass::Auth => {
                "the provider rejected the gateway's credential".into()
            }
            Failure::Provider(e) => truncate(&e.message, 300),
            Failure::Malformed(reason) => format!("malformed answer: {}", truncate(reason, 200)),
            Failure::Transport(e) => e.to_string(),
            Failure::Plugin(e) => e.to_string(),
            Failure::AdapterUnavailable(name, Unavailable::NotLoaded) => {
                format!("adapter `{name}` is not loaded")
            }
            Failure::AdapterUnavailable(name, Unavailable::Quarantined) => {
                format!("every version of adapter `{name}` is quarantined")
            }
            Failure::Stream(failure) => failure.to_string(),
            Failure::CoolingDown(wait) => format!("rate-limited for another {} ms", wait.as_millis()),
            Failure::CircuitOpen => "circuit open after repeated failures".into(),
            Failure::Untranslatable(why) => format!("it does not speak the caller's API, and {why}"),
        }
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Answer::*;
    use Blame::*;
    use Next::*;
    use Outcome::{Failure as Fails, Neutral};

    fn provider(class: ErrorClass) -> Failure {
        Failure::Provider(ProviderError {
            class,
            message: "said no".into(),
            retry_after_ms: None,
            http_status: None,
        })
    }

    #[test]
    fn the_table() {
        let plugin = PluginError::Trap {
            plugin: "p".into(),
            detail: "boom".into(),
        };
        let rows: Vec<(Failure, Verdict)> = vec![
            (
                provider(ErrorClass::RateLimited),
                verdict(Provider, Neutral, NextAttempt, RateLimited, "rate_limited"),
            ),
            (
                provider(ErrorClass::Overloaded),
                verdict(Provider, Fails, NextAttempt, Overloaded, "overloaded"),
            ),
            (
                provider(ErrorClass::Server),
                verdict(Provider, Fails, NextAttempt, BadGateway, "server_error"),
            ),
            (
                provider(ErrorClass::Timeout),
                verdict(Provider, Fails, NotThisTarget, GatewayTimeout, "timeout"),
            ),
            (
                provider(ErrorClass::Auth),
                verdict(Provider, Fails, NextAttempt, BadGateway, "auth"),
            ),
            (
                provider(ErrorClass::NotFound),
                verdict(Provider, Fails, NextAttempt, BadGateway, "not_found"),
            ),
            (
                provider(ErrorClass::BadRequest),
                verdict(Caller, Neutral, Stop, BadRequest, "bad_request"),
            ),
            (
                provider(ErrorClass::ContentFilter),
                verdict(Caller, Neutral, Stop, ContentFilter, "content_filter"),
            ),
            (
                provider(ErrorClass::ContextLength),
                verdict(Caller, Neutral, LargerWindow, ContextLength, "context_length"),
            ),
            (
                Failure::Malformed("x".into()),
                verdict(Provider, Fails, NextAttempt, BadGateway, "malformed"),
            ),
            (
                Failure::Transport(TransportError::Timeout),
                verdict(Transport, Fails, NotThisTarget, GatewayTimeout, "timeout"),
            ),
            (
                Failure::Transport(TransportError::Connect("refused".into())),
                verdict(Transport, Fails, NextAttempt, BadGateway, "transport"),
            ),
            (
                Failure::Plugin(plugin),
                verdict(Plugin, Neutral, NextAttempt, BadGateway, "plugin"),
            ),
            (
                Failure::AdapterUnavailable("a".into(), crate::plugin::Unavailable::Quarantined),
                verdict(Plugin, Neutral, NextAttempt, BadGateway, "plugin"),
            ),
            (
                Failure::Stream(StreamFailure::Idle(Duration::from_secs(1))),
                verdict(Transport, Fails, NotThisTarget, GatewayTimeout, "timeout"),
            ),
            (
                Failure::Stream(StreamFailure::EndedEarly),
                verdict(Provider, Fails, NextAttempt, BadGateway, "stream"),
            ),
            (
                Failure::Stream(StreamFailure::Empty),
                verdict(Provider, Fails, NextAttempt, BadGateway, "stream"),
            ),
            (
                Failure::Stream(StreamFailure::Framing(SseError::InvalidUtf8)),
                verdict(Provider, Fails, NextAttempt, BadGateway, "stream"),
            ),
            (
                Failure::CoolingDown(Duration::from_secs(1)),
                verdict(Gateway, Neutral, NextAttempt, RateLimited, "cooling_down"),
            ),
            (
                Failure::CircuitOpen,
                verdict(Gateway, Neutral, NextAttempt, Unavailable, "circuit_open"),
            ),
            (
                Failure::Plugin(PluginError::Refused {
                    plugin: "gemini".into(),
                    reason: "Gemini embeds text only".into(),
                }),
                verdict(Caller, Neutral, NextAttempt, BadRequest, "untranslatable"),
            ),
            (
                Failure::Untranslatable("server tools cannot cross".into()),
                verdict(Caller, Neutral, NextAttempt, BadRequest, "untranslatable"),
            ),
        ];
        for (failure, expected) in rows {
            assert_eq!(failure.verdict(), expected, "{failure:?}");
        }
    }

    #[test]
    fn summaries_never_carry_an_auth_message() {
        let failure = Failure::Provider(ProviderError {
            class: ErrorClass::Auth,
            message: "Incorrect API key provided: sk-live".into(),
            retry_after_ms: None,
            http_status: None,
        });
        assert!(!failure.summary().contains("sk-live"));
        assert_eq!(
            Failure::Stream(StreamFailure::Idle(Duration::from_millis(1500))).summary(),
            "no event from the provider for 1500 ms"
        );
    }
}
