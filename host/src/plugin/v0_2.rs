//! Contract `switchboard:plugin@0.2.0` (frozen in `wit/v0.2/`): its
//! generated bindings, and the conversions between them and the host's own
//! types ([`super::types`]): those shared with 0.3 ([`super::convert`]), and
//! response headers as pairs and stream events as strings of their own.
//! Nothing outside `plugin/` names a type from here.

use super::types as host;

/// Host bindings of the `adapter` world.
pub mod adapter {
    wasmtime::component::bindgen!({
        world: "adapter",
        path: "../wit/v0.2",
        exports: { default: async },
    });
    pub use self::switchboard::plugin::types::{ApiFormat, Body, Capabilities, Usage};
    pub use exports::switchboard::plugin::provider::*;
}

/// Host bindings of the `policy` world.
pub mod policy {
    wasmtime::component::bindgen!({
        world: "policy",
        path: "../wit/v0.2",
        exports: { default: async },
    });
    pub use self::switchboard::plugin::types::{ApiFormat, Capabilities};
    pub use exports::switchboard::plugin::router::*;
}

super::convert::since_0_2!();

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

impl From<host::SseEvent> for adapter::SseEvent {
    fn from(e: host::SseEvent) -> Self {
        adapter::SseEvent {
            event: e.event,
            data: e.data,
        }
    }
}

impl From<adapter::SseEvent> for host::SseEvent {
    fn from(e: adapter::SseEvent) -> Self {
        host::SseEvent {
            event: e.event,
            data: e.data,
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
}
