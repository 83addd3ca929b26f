//! A deliberately misbehaving guest that drives the sandbox tests.
//!
//! It exports both plugin interfaces. As a policy its mode is the route's
//! `policy_config.mode`; as an adapter, the provider's `options.mode`:
//!
//! * `reverse` or no mode (policy): a well-behaved policy that tries targets last-first;
//! * `excerpt` (policy): configured order when the excerpt of the last user
//!   message it is shown says "route to a", else last-first;
//! * `echo` (adapter): a well-behaved OpenAI pass-through;
//! * `reveal` (adapter): the pass-through, whose error messages repeat every
//!   header and the body it was given, to show what an adapter can see;
//! * `panic`: traps; `loop`: spins forever; `alloc`: allocates without bound;
//!   `hold:<MiB>`: holds that much memory for the call, then behaves;
//! * `garbage`: returns output that breaks the contract (an unknown candidate,
//!   a body that is not JSON);
//! * `stream_panic`, `stream_loop`, `stream_garbage` (adapter): a stream
//!   decoder that passes its first batch of events through, then traps,
//!   spins, or returns a chunk that is not JSON;
//! * `stream_beyond` (adapter): a decoder that forwards an event its batch
//!   does not have;
//! * `read_past_end`, `read_near_4gib`, `read_across_4gib`: a load just past
//!   the linear memory's end, one near the top of the 32-bit space, and an
//!   8-byte load whose last bytes are past 4 GiB (each at an address known
//!   only at run time, as a pointer is): each must trap.
//!
//! A request whose `user` is `misbehave:<mode>` asks for that mode itself
//! (the policy sees it as the `user` tag), so one loaded version can serve
//! well and misbehave on demand.

wit_bindgen::generate!({
    world: "test:misbehave/misbehave",
    path: ["../../../wit/v0.2", "wit"],
    generate_all,
});

use exports::switchboard::plugin::provider::{
    self, AdapterInfo, Completion, CredentialPlacement, Decoded, Embeddings, Emitted, ErrorClass,
    InboundResponse, OutEvent, OutboundRequest, ProviderError, RequestContext, SseEvent, Target,
};
use exports::switchboard::plugin::router::{
    self, Attempt, AttemptPlan, Candidate, Hedge, PolicyInfo, RequestFacts,
};
use switchboard::plugin::types::{Body, Capabilities};

fn mode(json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v.get("mode").and_then(|m| m.as_str()).map(str::to_string))
        .unwrap_or_default()
}

fn misbehave(mode: &str) {
    match mode {
        "panic" => panic!("misbehave: asked to panic"),
        "loop" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "alloc" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        held if held.starts_with("hold:") => {
            let mib: usize = held["hold:".len()..].parse().expect("hold:<MiB>");
            std::hint::black_box(vec![1u8; mib << 20]);
        }
        // Loads outside the linear memory: just past its end, near the top
        // of the 32-bit space (inside what the host may reserve for guard
        // pages), and across 4 GiB into the guard itself. Each must trap,
        // never read the host's memory.
        "read_past_end" => read_at::<u8>(memory_end() + 16),
        "read_near_4gib" => read_at::<u8>(u32::MAX as usize - 16),
        "read_across_4gib" => read_at::<u64>(u32::MAX as usize - 3),
        _ => {}
    }
}

/// Where the linear memory ends now.
#[cfg(target_arch = "wasm32")]
fn memory_end() -> usize {
    core::arch::wasm32::memory_size(0) * 65536
}

/// (Built for the host only by `cargo clippy --workspace`; never run there.)
#[cfg(not(target_arch = "wasm32"))]
fn memory_end() -> usize {
    unreachable!("a Wasm guest")
}

/// A load of a `T` at `address`, which the compiler cannot fold into the
/// instruction's constant offset: the address is the run-time index, as a
/// pointer into the memory would be.
#[allow(unsafe_code)]
fn read_at<T: Copy>(address: usize) {
    let address = std::hint::black_box(address);
    // SAFETY: none; a sandbox escape test. The load must trap.
    let value = unsafe { core::ptr::read_unaligned(core::ptr::with_exposed_provenance::<T>(address)) };
    std::hint::black_box(value);
}

struct Misbehave;

impl router::Guest for Misbehave {
    fn describe() -> PolicyInfo {
        PolicyInfo {
            version: "0.0.0".into(),
            stateless: false,
        }
    }

    fn validate_config(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn plan(facts: RequestFacts, candidates: Vec<Candidate>, config: String) -> Result<AttemptPlan, String> {
        let asked = facts
            .tags
            .iter()
            .find(|(k, _)| k == "user")
            .and_then(|(_, v)| v.strip_prefix("misbehave:"))
            .map(str::to_string);
        let mode = asked.unwrap_or_else(|| mode(&config));
        misbehave(&mode);
        if mode == "garbage" {
            return Ok(AttemptPlan {
                attempts: vec![Attempt {
                    candidate: 9999,
                    timeout_ms: None,
                }],
                hedge: Hedge::Route,
            });
        }
        let mut order: Vec<u32> = candidates.iter().map(|c| c.index).collect();
        order.sort_unstable();
        let asked_for_a = facts
            .last_user_excerpt
            .as_deref()
            .is_some_and(|e| e.contains("route to a"));
        if !(mode == "excerpt" && asked_for_a) {
            order.reverse();
        }
        Ok(AttemptPlan {
            attempts: order
                .into_iter()
                .map(|candidate| Attempt {
                    candidate,
                    timeout_ms: None,
                })
                .collect(),
            hedge: Hedge::Route,
        })
    }
}

impl provider::Guest for Misbehave {
    type StreamDecoder = StreamDecoder;

    fn describe() -> AdapterInfo {
        AdapterInfo {
            version: "0.0.0".into(),
            capabilities: Capabilities::all() - Capabilities::EMBEDDINGS,
            native_formats: Vec::new(),
            stateless: false,
        }
    }

    /// Any options: this adapter reads only `mode`, and its tests give others.
    fn validate_options(_options: String) -> Result<(), String> {
        Ok(())
    }

    fn build_request(
        request: Vec<u8>,
        target: Target,
        _context: RequestContext,
    ) -> Result<OutboundRequest, String> {
        let mut body: serde_json::Value = serde_json::from_slice(&request).map_err(|e| e.to_string())?;
        let asked = body["user"].as_str().and_then(|u| u.strip_prefix("misbehave:"));
        misbehave(&asked.map_or_else(|| mode(&target.options), str::to_string));
        body["model"] = target.model.into();
        Ok(OutboundRequest {
            method: "POST".into(),
            path: "/chat/completions".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: Body::Bytes(serde_json::to_vec(&body).unwrap()),
            credential: CredentialPlacement::Bearer,
        })
    }

    fn parse_response(
        response: InboundResponse,
        target: Target,
        _context: RequestContext,
    ) -> Result<Completion, String> {
        if mode(&target.options) == "garbage" {
            return Ok(Completion {
                body: Body::Bytes(b"\xff not json".to_vec()),
                usage: None,
                model: None,
            });
        }
        Ok(Completion {
            body: Body::Bytes(response.body),
            usage: None,
            model: None,
        })
    }

    fn build_embeddings_request(_request: Vec<u8>, _target: Target) -> Result<OutboundRequest, String> {
        Err(Misbehave::no_embeddings())
    }

    fn parse_embeddings_response(_response: InboundResponse, _target: Target) -> Result<Embeddings, String> {
        Err(Misbehave::no_embeddings())
    }

    fn classify_error(response: InboundResponse, target: Target) -> ProviderError {
        let mut message = format!("HTTP {}", response.status);
        if mode(&target.options) == "reveal" {
            message = format!(
                "{message}; headers {:?}; body {}",
                response.headers,
                String::from_utf8_lossy(&response.body)
            );
        }
        ProviderError {
            class: ErrorClass::Server,
            message,
            retry_after_ms: None,
        }
    }
}

pub struct StreamDecoder {
    mode: String,
    batches: std::cell::Cell<u32>,
}

impl provider::GuestStreamDecoder for StreamDecoder {
    fn new(target: Target, _context: RequestContext, _include_usage: bool) -> Self {
        StreamDecoder {
            mode: mode(&target.options),
            batches: std::cell::Cell::new(0),
        }
    }

    fn feed(&self, events: Vec<SseEvent>) -> Decoded {
        let mut decoded = Decoded {
            events: Vec::new(),
            usage: None,
            model: None,
            done: false,
            error: None,
        };
        self.batches.set(self.batches.get() + 1);
        if self.batches.get() > 1 {
            match self.mode.as_str() {
                "stream_panic" => misbehave("panic"),
                "stream_loop" => misbehave("loop"),
                "stream_garbage" => {
                    decoded.events.push(Emitted::Write(OutEvent {
                        event: None,
                        data: b"\xff not a chunk".to_vec(),
                    }));
                    return decoded;
                }
                "stream_beyond" => {
                    decoded.events.push(Emitted::Forward(events.len() as u32));
                    return decoded;
                }
                _ => {}
            }
        }
        for (i, event) in events.iter().enumerate() {
            if event.data.trim() == "[DONE]" {
                decoded.done = true;
                break;
            }
            decoded.events.push(Emitted::Forward(i as u32));
        }
        decoded
    }
}

impl Misbehave {
    fn no_embeddings() -> String {
        "the misbehave adapter has no embeddings".into()
    }
}

export!(Misbehave);
