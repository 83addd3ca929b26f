//! What one plugin call costs: each bundled adapter's calls on a normal and
//! on a 4 MiB body, a stream event, and each bundled policy's plan. The
//! default call deadlines (`adapter_call_timeout_ms`,
//! `policy_call_timeout_ms`) are chosen from these figures.
//!
//! Run: `cargo bench --bench plugin_calls`. Instances are reused between calls
//! as on the request path; the figure is wall time per call on one task.
//! `SWITCHBOARD_BENCH_WASM_DIR` loads the plugins from another folder (to
//! compare two builds of a plugin).

use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard::facts::Facts;
use switchboard::plugin::types::{ApiFormat, InboundResponse, RequestContext, SseEvent, Target};
use switchboard::plugin::types::{Candidate, Capabilities, CircuitState, Health};
use switchboard::plugin::{AdapterPlugin, CallLimits, PluginRuntime, PolicyPlugin, SandboxLimits};

const LIMITS: CallLimits = CallLimits {
    timeout: Duration::from_secs(10),
    timeout_per_mib: Duration::ZERO,
    max_concurrent: 64,
    max_slow: 64,
    quarantine_after: 0,
    reuse: true,
};

mod support;

fn wasm(name: &str) -> Vec<u8> {
    let dir =
        std::env::var("SWITCHBOARD_BENCH_WASM_DIR").unwrap_or_else(|_| env!("SWITCHBOARD_WASM_DIR").into());
    std::fs::read(std::path::Path::new(&dir).join(format!("{name}.wasm"))).unwrap()
}

/// The events of the overhead bench's 41-event stream, as one socket read
/// frames them (the usage chunk included, `[DONE]` not).
fn events_41() -> Vec<SseEvent> {
    support::stream_41()
        .split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .map(|data| SseEvent {
            event: None,
            data: data.into(),
        })
        .collect()
}

/// Median and 99th percentile of `runs` timed calls.
async fn time<F: AsyncFnMut()>(runs: usize, mut call: F) -> (Duration, Duration) {
    for _ in 0..runs / 10 {
        call().await;
    }
    let mut took = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        call().await;
        took.push(started.elapsed());
    }
    took.sort();
    (took[runs / 2], took[runs * 99 / 100])
}

fn request(content_bytes: usize) -> Vec<u8> {
    let text = "lorem ipsum dolor sit amet ".repeat(content_bytes / 27 + 1);
    serde_json::to_vec(&serde_json::json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": &text[..content_bytes]}
        ],
        "max_tokens": 256
    }))
    .unwrap()
}

fn row(what: &str, (p50, p99): (Duration, Duration)) {
    println!(
        "| {what} | {:.1} | {:.1} |",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let runtime = Arc::new(
        PluginRuntime::new(SandboxLimits {
            memory_bytes: 256 << 20,
            total_memory_bytes: 1 << 30,
            max_instances: 100,
            compile_cache: None,
        })
        .unwrap(),
    );
    println!("| call | p50 (µs) | p99 (µs) |\n| --- | ---: | ---: |");
    let small = request(600);
    let large = request(4 << 20);
    for (name, wire, answer, event) in [
        (
            "openai",
            "openai",
            r#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":20,"completion_tokens":9,"total_tokens":29}}"#,
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":" help"},"finish_reason":null}]}"#,
        ),
        (
            "anthropic",
            "anthropic",
            r#"{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[{"type":"text","text":"Hello! How can I help you today?"}],"stop_reason":"end_turn","usage":{"input_tokens":20,"output_tokens":9}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" help"}}"#,
        ),
        (
            "gemini",
            "gemini",
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hello! How can I help you today?"}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":20,"candidatesTokenCount":9,"totalTokenCount":29}}"#,
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":" help"}]},"index":0}]}"#,
        ),
    ] {
        let bytes = wasm(&format!("switchboard_adapter_{wire}"));
        let adapter = Arc::new(
            AdapterPlugin::load(&runtime, name, "bench".into(), bytes, LIMITS)
                .await
                .unwrap(),
        );
        let target = Target {
            provider: "p".into(),
            model: "m".into(),
            options: "{}".into(),
        };
        let context = RequestContext {
            id: "bench".into(),
            created: 1_700_000_000,
            format: ApiFormat::OpenAiChat,
        };
        row(
            &format!("{name} build-request, 1 KiB body"),
            time(2000, async || {
                adapter
                    .build_request(small.clone(), &target, &context)
                    .await
                    .unwrap();
            })
            .await,
        );
        row(
            &format!("{name} build-request, 4 MiB body"),
            time(20, async || {
                adapter
                    .build_request(large.clone(), &target, &context)
                    .await
                    .unwrap();
            })
            .await,
        );
        let response = InboundResponse {
            status: 200,
            headers: "content-type: application/json\n".into(),
            body: answer.as_bytes().to_vec(),
        };
        row(
            &format!("{name} parse-response"),
            time(2000, async || {
                adapter
                    .parse_response(response.clone(), &target, &context)
                    .await
                    .unwrap()
                    .unwrap();
            })
            .await,
        );
        let before = runtime.memory_in_use();
        let mut session = adapter.open_stream(&target, &context, true).await.unwrap();
        println!(
            "| {name}: linear memory of one open stream | {} KiB | |",
            (runtime.memory_in_use() - before) >> 10
        );
        let event = SseEvent {
            event: None,
            data: event.into(),
        };
        row(
            &format!("{name} stream event"),
            time(2000, async || {
                let _ = session.feed(vec![event.clone()]).await.unwrap();
            })
            .await,
        );
        if name == "openai" {
            let batch = events_41();
            row(
                "openai stream, one read of 41 events (10 KiB)",
                time(2000, async || {
                    let _ = session.feed(batch.clone()).await.unwrap();
                })
                .await,
            );
        }
    }
    let body: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&small).unwrap();
    let facts = Facts::derive(&body, &http::HeaderMap::new(), 0).for_policy("bench");
    let candidates: Vec<Candidate> = (0..4)
        .map(|i| Candidate {
            index: i,
            provider: format!("p{i}"),
            model: "m".into(),
            input_price_per_mtok: 1.0 + i as f64,
            output_price_per_mtok: 2.0 + i as f64,
            context_window: 128_000,
            capabilities: Capabilities::all(),
            health: Health {
                latency_ewma_ms: 300.0,
                latency_p95_ms: 450.0,
                ttft_ewma_ms: 120.0,
                ttft_p95_ms: 200.0,
                error_rate: 0.0,
                in_flight: i,
                circuit: CircuitState::Closed,
                rate_limited_for_ms: 0,
            },
        })
        .collect();
    for (name, config) in [
        ("priority", "{}"),
        (
            "weighted",
            r#"{"weights": {"p0/m": 90, "p1/m": 10}, "sticky": "user"}"#,
        ),
        ("cost", "{}"),
        ("latency", "{}"),
    ] {
        let policy = PolicyPlugin::load(
            &runtime,
            name,
            "bench".into(),
            wasm(&format!("switchboard_policy_{name}")),
            LIMITS,
        )
        .await
        .unwrap();
        row(
            &format!("{name} plan, 4 candidates"),
            time(2000, async || {
                policy.plan(&facts, &candidates, config).await.unwrap();
            })
            .await,
        );
    }
}
