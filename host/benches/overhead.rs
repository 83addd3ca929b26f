//! What the gateway costs next to a plain reverse proxy: nginx and the
//! gateway (bundled `openai` adapter and `priority` policy in the path) in
//! front of the same loopback upstream, answering a 783-byte completion
//! and a 41-event stream (about 10 KiB in one write). Rounds alternate the
//! targets (nginx, gateway, gateway variants, nginx, ...) so drift on a
//! shared machine falls on all of them. A third reference, a pass-through
//! proxy built of the gateway's own HTTP stack (tokio, hyper), shows how
//! much of the gap to nginx is the stack's and how much the gateway's work.
//!
//! Per target: CPU per request (the process's own user + system time from
//! /proc, so the load generator sharing the machine does not count) and
//! throughput at 64 connections, for JSON and streams; added latency at one
//! connection (p50 and p99 over calling the upstream directly, measured in
//! the same round); a stream's added time to first byte; peak resident
//! memory. The gateway runs as configured by default (ledger on, provider
//! credential scrubbed) and with each of those off, with
//! `on_stream_break = "continue"`, and with hedging configured but not
//! firing.
//!
//! Run: `cargo bench --bench overhead` (release build; installs Debian's
//! nginx when missing and run as root). Results are recorded in
//! BENCHMARKS.md.

mod support;

use bytes::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;
use support::{
    HttpClient, Timing, completion_783, load_on, process_usage, start_gateway_variant, start_hyper_proxy,
    start_nginx, stream_41, thread_cpu,
};

const ROUNDS: usize = 3;
/// The floor on the gateway's own stack (see `support::HyperProxy`).
const HYPER: &str = "hyper pass-through proxy (the stack's floor)";
const CONNECTIONS: usize = 64;
const JSON_REQUESTS: usize = 19_200;
const STREAMS: usize = 6_400;
const ONE_CONNECTION: usize = 2_000;
const WARM_UP: usize = 1_280;

const JSON: &str = r#"{"model":"bench","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello in one short sentence, please."}],"max_tokens":64}"#;
const STREAM: &str = r#"{"model":"bench","stream":true,"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello in one short sentence, please."}],"max_tokens":64}"#;

/// The figures of one target in one round.
#[derive(Clone, Copy, Default)]
struct Figures {
    json_cpu_us: f64,
    json_rps: f64,
    stream_cpu_us: f64,
    stream_rps: f64,
    added_p50_us: f64,
    added_p99_us: f64,
    ttfb_added_p50_us: f64,
    peak_rss_mib: f64,
    /// The ledger writer thread's CPU per JSON request (0 without one).
    ledger_writer_us: f64,
    /// Answers other than 200 (a plugin deadline missed on the overloaded
    /// machine, say), of all the requests of the round.
    errors: usize,
}

fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[((values.len() as f64 * q) as usize).min(values.len() - 1)]
}

fn totals(timings: &[Timing]) -> Vec<f64> {
    timings
        .iter()
        .filter(|t| t.ok)
        .map(|t| t.total.as_secs_f64() * 1e6)
        .collect()
}

fn first_bytes(timings: &[Timing]) -> Vec<f64> {
    timings
        .iter()
        .filter(|t| t.ok)
        .map(|t| t.first_byte.as_secs_f64() * 1e6)
        .collect()
}

fn errors(timings: &[Timing]) -> usize {
    timings.iter().filter(|t| !t.ok).count()
}

/// The direct figures a round's added latencies are measured against.
struct Direct {
    p50: f64,
    p99: f64,
    ttfb_p50: f64,
}

async fn direct(client: &HttpClient, url: &str) -> Direct {
    load_on(client, url, JSON, WARM_UP, 1).await;
    let (json, _) = load_on(client, url, JSON, ONE_CONNECTION, 1).await;
    let (stream, _) = load_on(client, url, STREAM, ONE_CONNECTION / 2, 1).await;
    Direct {
        p50: quantile(&mut totals(&json), 0.5),
        p99: quantile(&mut totals(&json), 0.99),
        ttfb_p50: quantile(&mut first_bytes(&stream), 0.5),
    }
}

async fn measure(client: &HttpClient, url: &str, pid: u32, direct: &Direct) -> Figures {
    let cpu = || process_usage(pid).0;
    load_on(client, url, JSON, WARM_UP, CONNECTIONS).await;
    load_on(client, url, STREAM, WARM_UP, CONNECTIONS).await;
    let before = cpu();
    let writer_before = thread_cpu(pid, "ledger-writer");
    let (json, wall) = load_on(client, url, JSON, JSON_REQUESTS, CONNECTIONS).await;
    let json_cpu_us = (cpu() - before) / json.len() as f64 * 1e6;
    let ledger_writer_us = (thread_cpu(pid, "ledger-writer") - writer_before) / json.len() as f64 * 1e6;
    let json_rps = json.len() as f64 / wall.as_secs_f64();
    let before = cpu();
    let (streams, wall) = load_on(client, url, STREAM, STREAMS, CONNECTIONS).await;
    let stream_cpu_us = (cpu() - before) / streams.len() as f64 * 1e6;
    let stream_rps = streams.len() as f64 / wall.as_secs_f64();
    let (one, _) = load_on(client, url, JSON, ONE_CONNECTION, 1).await;
    let (one_stream, _) = load_on(client, url, STREAM, ONE_CONNECTION / 2, 1).await;
    Figures {
        json_cpu_us,
        json_rps,
        stream_cpu_us,
        stream_rps,
        added_p50_us: quantile(&mut totals(&one), 0.5) - direct.p50,
        added_p99_us: quantile(&mut totals(&one), 0.99) - direct.p99,
        ttfb_added_p50_us: quantile(&mut first_bytes(&one_stream), 0.5) - direct.ttfb_p50,
        peak_rss_mib: process_usage(pid).2 as f64 / 1024.0,
        ledger_writer_us,
        errors: errors(&json) + errors(&streams) + errors(&one) + errors(&one_stream),
    }
}

/// A gateway variant: its name, what it adds to the route (and after it),
/// whether its provider has a key to scrub, its `[plugins]` settings, and
/// its log filter.
struct Variant {
    name: &'static str,
    extra: String,
    keyed: bool,
    plugins: &'static str,
    log: &'static str,
}

fn variants(ledger: &str) -> Vec<Variant> {
    let variant = |name, extra: String, keyed, plugins| Variant {
        name,
        extra,
        keyed,
        plugins,
        log: support::QUIET,
    };
    vec![
        variant(
            "gateway (default: ledger on, scrubbing on)",
            ledger.to_string(),
            true,
            "",
        ),
        variant("gateway, ledger off", String::new(), true, ""),
        variant(
            "gateway, scrubbing off (keyless provider)",
            ledger.to_string(),
            false,
            "",
        ),
        variant(
            "gateway, plugin instances not reused",
            ledger.to_string(),
            true,
            "reuse_instances = false",
        ),
        variant(
            "gateway, on_stream_break = \"continue\"",
            format!("on_stream_break = \"continue\"\n{ledger}"),
            true,
            "",
        ),
        variant(
            "gateway, hedging configured, not firing",
            format!("hedge_after_ms = 60000\n{ledger}"),
            true,
            "",
        ),
        // The level the gateway starts with when `RUST_LOG` is unset: a JSON
        // line per request.
        Variant {
            log: "info",
            ..variant(
                "gateway, request log on (`info`, the level it starts with)",
                ledger.to_string(),
                true,
                "",
            )
        },
    ]
}

fn main() {
    if support::serve_as_hyper_proxy() {
        return;
    }
    bench();
}

#[tokio::main]
async fn bench() {
    let upstream = support::upstream_with(Bytes::from(completion_783()), Bytes::from(stream_41())).await;
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http();
    let direct_url = format!("http://{upstream}/v1/chat/completions");
    let ledger_dir = tempfile::tempdir().unwrap();
    // The route table's keys come first in `extra`; the ledger is a table of its own.
    let ledger = format!(
        "\n[ledger]\npath = {:?}\n",
        ledger_dir.path().join("ledger.db").display().to_string()
    );
    // nginx and the hyper proxy always run.
    let variants: Vec<Variant> = variants(&ledger)
        .into_iter()
        .filter(|v| support::measured(v.name))
        .collect();
    let rounds = std::env::var("SWITCHBOARD_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(ROUNDS);
    let mut results: Vec<(String, Vec<Figures>)> = Vec::new();
    let mut record = |name: &str, figures: Figures| match results.iter_mut().find(|(n, _)| n == name) {
        Some((_, all)) => all.push(figures),
        None => results.push((name.to_string(), vec![figures])),
    };
    println!(
        "| round | target | JSON CPU/req (µs) | JSON req/s | stream CPU/req (µs) | stream req/s | added p50 / p99 (µs) | stream TTFB added p50 (µs) | peak RSS (MiB) | ledger writer CPU/JSON req (µs) | errors |"
    );
    println!("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let show = |round: usize, name: &str, f: &Figures| {
        println!(
            "| {round} | {name} | {:.1} | {:.0} | {:.1} | {:.0} | {:.0} / {:.0} | {:.0} | {:.0} | {:.1} | {} |",
            f.json_cpu_us,
            f.json_rps,
            f.stream_cpu_us,
            f.stream_rps,
            f.added_p50_us,
            f.added_p99_us,
            f.ttfb_added_p50_us,
            f.peak_rss_mib,
            f.ledger_writer_us,
            f.errors
        );
    };
    for round in 1..=rounds {
        let direct = direct(&client, &direct_url).await;
        if let Some(nginx) = start_nginx(upstream) {
            let url = format!("{}/v1/chat/completions", nginx.url);
            let figures = measure(&client, &url, nginx.child.id(), &direct).await;
            show(round, "nginx", &figures);
            record("nginx", figures);
        }
        {
            let proxy = start_hyper_proxy(upstream);
            let url = format!("{}/v1/chat/completions", proxy.url);
            let figures = measure(&client, &url, proxy.child.id(), &direct).await;
            show(round, HYPER, &figures);
            record(HYPER, figures);
        }
        for variant in &variants {
            let gateway = start_gateway_variant(
                upstream,
                &variant.extra,
                variant.keyed,
                variant.plugins,
                variant.log,
            );
            let url = format!("{}/v1/chat/completions", gateway.url);
            let figures = measure(&client, &url, gateway.child.id(), &direct).await;
            show(round, variant.name, &figures);
            record(variant.name, figures);
        }
    }

    // Medians over the rounds, and the gateway's as a ratio to nginx's.
    let median = |all: &[Figures], get: fn(&Figures) -> f64| {
        let mut values: Vec<f64> = all.iter().map(get).collect();
        quantile(&mut values, 0.5)
    };
    println!();
    println!(
        "| target (median of {rounds} rounds) | JSON CPU/req | JSON req/s | stream CPU/req | stream req/s | added p50 | added p99 | TTFB added | peak RSS |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let nginx = results.iter().find(|(n, _)| n == "nginx").map(|(_, f)| f.clone());
    for (name, all) in &results {
        let ratio = |get: fn(&Figures) -> f64| match &nginx {
            Some(reference) if name != "nginx" => {
                format!(" ({:.2}x)", median(all, get) / median(reference, get))
            }
            _ => String::new(),
        };
        println!(
            "| {name} | {:.1} µs{} | {:.0}{} | {:.1} µs{} | {:.0}{} | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} MiB |",
            median(all, |f| f.json_cpu_us),
            ratio(|f| f.json_cpu_us),
            median(all, |f| f.json_rps),
            ratio(|f| f.json_rps),
            median(all, |f| f.stream_cpu_us),
            ratio(|f| f.stream_cpu_us),
            median(all, |f| f.stream_rps),
            ratio(|f| f.stream_rps),
            median(all, |f| f.added_p50_us),
            median(all, |f| f.added_p99_us),
            median(all, |f| f.ttfb_added_p50_us),
            median(all, |f| f.peak_rss_mib),
        );
    }
    println!();
    println!(
        "machine: {} cores, load average {}; the load generator, upstream, nginx and gateway share them; {CONNECTIONS} connections, one for the latency figures",
        std::thread::available_parallelism().unwrap(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}
