//! What the gateway costs: added latency, CPU time per request and memory,
//! with the bundled `openai` adapter and `priority` policy in the path,
//! against calling the same loopback upstream directly.
//!
//! Run: `cargo bench --bench overhead` (release build). Results are recorded
//! in BENCHMARKS.md. CPU time is the gateway process's own (user + system,
//! from /proc), so the load generator sharing the machine does not count.

mod support;

use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use support::{CONCURRENCY, HttpClient, load, percentile, process_usage, start_gateway, upstream};

const REQUESTS: usize = 20_000;
const STREAMS: usize = 5_000;
const WARM_UP: usize = 1_000;

#[tokio::main]
async fn main() {
    const PLAIN: &str = r#"{"model":"bench","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello in one short sentence, please."}],"max_tokens":64}"#;
    const STREAM: &str = r#"{"model":"bench","stream":true,"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello in one short sentence, please."}],"max_tokens":64}"#;
    let upstream = upstream().await;
    let gateway = Arc::new(start_gateway(upstream, "", &[]));
    let pid = gateway.child.id();
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build_http();
    let direct = format!("http://{upstream}/v1/chat/completions");
    let via = format!("{}/v1/chat/completions", gateway.url);
    let (_, idle_rss, _) = process_usage(pid);

    println!(
        "| scenario | requests | throughput (req/s) | p50 (µs) | p99 (µs) | gateway CPU per request (µs) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (name, url, body, count, through_gateway) in [
        ("direct to upstream, JSON", &direct, PLAIN, REQUESTS, false),
        ("through the gateway, JSON", &via, PLAIN, REQUESTS, true),
        (
            "direct to upstream, SSE stream (8 chunks)",
            &direct,
            STREAM,
            STREAMS,
            false,
        ),
        (
            "through the gateway, SSE stream (8 chunks)",
            &via,
            STREAM,
            STREAMS,
            true,
        ),
    ] {
        load(&client, url, body, WARM_UP).await;
        let (cpu_before, _, _) = process_usage(pid);
        let (latencies, wall) = load(&client, url, body, count).await;
        let (cpu_after, _, _) = process_usage(pid);
        let cpu = if through_gateway {
            format!("{:.0}", (cpu_after - cpu_before) / latencies.len() as f64 * 1e6)
        } else {
            "-".into()
        };
        println!(
            "| {name} | {} | {:.0} | {:.0} | {:.0} | {cpu} |",
            latencies.len(),
            latencies.len() as f64 / wall.as_secs_f64(),
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
        );
    }
    let (_, rss, peak) = process_usage(pid);
    println!();
    println!(
        "gateway memory: {} MiB resident idle after start-up, {} MiB after the runs, {} MiB peak",
        idle_rss / 1024,
        rss / 1024,
        peak / 1024
    );
    println!(
        "machine: {} cores; load generator, upstream and gateway share them; concurrency {CONCURRENCY}",
        std::thread::available_parallelism().unwrap()
    );
}
