//! What the ledger costs: how many records a second its writer sustains,
//! what one request's record costs on the request path, and the gateway's
//! CPU per request with the ledger off and on (runs alternated A B A B).
//!
//! Run: `cargo bench --bench ledger` (release build). Results are recorded
//! in BENCHMARKS.md.

mod support;

use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{HttpClient, load, process_usage, start_gateway, thread_cpu, upstream};
use switchboard::ledger::{AttemptRecord, Ledger, LedgerSettings, Trail};
use switchboard::metrics::Metrics;
use switchboard::plugin::types::Usage;

const RECORDS: usize = 100_000;
const REQUESTS: usize = 20_000;
const ROUNDS: usize = 2;

fn settings(dir: &std::path::Path) -> LedgerSettings {
    LedgerSettings {
        path: dir.join("ledger.db"),
        retention: Duration::from_secs(86_400),
        queue: RECORDS * 2,
        record_decisions: false,
    }
}

/// One request's record, as a two-attempt failover leaves it.
fn fill(trail: &Trail, n: usize) {
    trail.note(|r| {
        r.key = Some("bench".into());
        r.route = Some("bench");
        r.plan = vec!["up/m", "other/m"];
        r.tags = vec![("team".into(), "search".into())];
    });
    trail.attempt(AttemptRecord {
        provider: "up",
        model: "m",
        outcome: "server_error",
        http_status: Some(500),
        latency_ms: 3,
        ..AttemptRecord::default()
    });
    let usage = Usage {
        prompt_tokens: 20 + n as u32 % 7,
        completion_tokens: 9,
        ..Usage::default()
    };
    trail.answered(
        AttemptRecord {
            provider: "other",
            model: "m",
            outcome: "success",
            http_status: Some(200),
            latency_ms: 12,
            usage: Some(usage),
            cost_usd: 38e-6,
            ..AttemptRecord::default()
        },
        Some("m-2024".into()),
    );
    trail.status(200, None);
}

/// Build `RECORDS` records as requests do, each handed to `ledger` when
/// its trail ends; how long that took on this thread.
fn request_path(ledger: &Ledger) -> Duration {
    let started = Instant::now();
    for n in 0..RECORDS {
        let trail = Trail::begin(
            ledger.clone(),
            format!("{n:032x}"),
            None,
            1_700_000_000_000 + n as i64,
            tokio::time::Instant::now(),
        );
        fill(&trail, n);
    }
    started.elapsed()
}

fn writer_and_request_path() {
    // Requests build their record with the ledger off too (for the log
    // line and budget settlement) and drop it where they are; the ledger's
    // own share of the request path is the difference.
    let dropped = request_path(&Ledger::off());
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(settings(dir.path()), Arc::new(Metrics::default())).unwrap();
    let started = Instant::now();
    let handed_over = request_path(&ledger);
    assert!(ledger.flush(Duration::from_secs(120)));
    let written = started.elapsed();
    // Everything the writer thread did since it started was these records.
    let writer_cpu = thread_cpu(std::process::id(), "ledger-writer");
    println!("| measure | value |");
    println!("| --- | ---: |");
    let per_record = |d: Duration| d.as_secs_f64() * 1e6 / RECORDS as f64;
    println!(
        "| request path, ledger off: one record built and dropped | {:.2} µs |",
        per_record(dropped)
    );
    println!(
        "| request path, ledger on: one record built and queued | {:.2} µs |",
        per_record(handed_over)
    );
    println!(
        "| writer: CPU per record (the writer thread's own time) | {:.2} µs |",
        writer_cpu * 1e6 / RECORDS as f64
    );
    println!(
        "| writer: records written per second ({RECORDS} records, 2 attempts each, WAL, synchronous=NORMAL) | {:.0} |",
        RECORDS as f64 / written.as_secs_f64()
    );
}

async fn gateway_cpu() {
    const BODY: &str = r#"{"model":"bench","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello in one short sentence, please."}],"max_tokens":64}"#;
    let upstream = upstream().await;
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build_http();
    let ledger_dir = tempfile::tempdir().unwrap();
    let with_ledger = format!(
        "[ledger]\npath = {:?}\n",
        ledger_dir.path().join("ledger.db").display().to_string()
    );
    println!();
    println!(
        "| gateway, JSON | round | requests | throughput (req/s) | gateway CPU per request (µs) | writer thread CPU per request (µs) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for round in 1..=ROUNDS {
        for (name, extra) in [("ledger off", ""), ("ledger on", with_ledger.as_str())] {
            let gateway = start_gateway(upstream, extra, &[]);
            let pid = gateway.child.id();
            let url = format!("{}/v1/chat/completions", gateway.url);
            load(&client, &url, BODY, 1_000).await;
            let (before, _, _) = process_usage(pid);
            let writer_before = thread_cpu(pid, "ledger-writer");
            let (latencies, wall) = load(&client, &url, BODY, REQUESTS).await;
            // The last window's records: written before the figures are read.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (after, _, _) = process_usage(pid);
            let writer = thread_cpu(pid, "ledger-writer") - writer_before;
            println!(
                "| {name} | {round} | {} | {:.0} | {:.1} | {:.1} |",
                latencies.len(),
                latencies.len() as f64 / wall.as_secs_f64(),
                (after - before) / latencies.len() as f64 * 1e6,
                writer / latencies.len() as f64 * 1e6
            );
        }
    }
}

#[tokio::main]
async fn main() {
    writer_and_request_path();
    gateway_cpu().await;
    println!();
    println!(
        "machine: {} cores; load generator, upstream and gateway share them",
        std::thread::available_parallelism().unwrap()
    );
}
