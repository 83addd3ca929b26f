//! Plugin bulkheads measured from outside: a healthy route's latency while a
//! hostile policy on another route is hammered, against its idle latency.
//!
//! Run: `cargo bench --bench bulkhead` (release build). Results are recorded
//! in BENCHMARKS.md. The hostile route's policy is the misbehave test guest,
//! asked to loop or to allocate without bound; eight callers hammer it while
//! one caller measures the healthy route (the bundled `priority` policy).

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::{HttpClient, percentile, process_usage, start_gateway, upstream};

const HEALTHY: &str = r#"{"model":"bench","messages":[{"role":"user","content":"Say hello in one short sentence, please."}],"max_tokens":64}"#;
const MEASURED: usize = 2_000;
const HOSTILE_CALLERS: usize = 8;

fn hostile(mode: &str) -> String {
    format!(
        r#"{{"model":"hostile","user":"misbehave:{mode}","messages":[{{"role":"user","content":"hi"}}]}}"#
    )
}

async fn send(client: &HttpClient, url: &str, body: String) -> u16 {
    let request = http::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    match client.request(request).await {
        Ok(response) => {
            let status = response.status().as_u16();
            let _ = response.into_body().collect().await;
            status
        }
        Err(_) => 0,
    }
}

/// One caller's latencies on the healthy route, and how many failed.
async fn measure(client: &HttpClient, url: &str) -> (Vec<Duration>, usize) {
    let (mut latencies, mut failed) = (Vec::with_capacity(MEASURED), 0);
    for _ in 0..MEASURED {
        let started = Instant::now();
        if send(client, url, HEALTHY.to_string()).await != 200 {
            failed += 1;
        }
        latencies.push(started.elapsed());
    }
    latencies.sort();
    (latencies, failed)
}

#[tokio::main]
async fn main() {
    let upstream = upstream().await;
    let misbehave =
        std::path::Path::new(env!("SWITCHBOARD_WASM_DIR")).join("switchboard_test_misbehave.wasm");
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build_http();
    println!(
        "| scenario | healthy p50 (µs) | healthy p99 (µs) | healthy errors | hostile requests (non-200) | gateway peak RSS (MiB) | plugin memory peak (MiB) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (scenario, mode, quarantine_after) in [
        ("idle (nothing else running)", None, 5),
        (
            "well-behaved policy hammered (the same load, no hostility)",
            Some("reverse"),
            5,
        ),
        ("looping policy hammered, quarantine off", Some("loop"), 0),
        (
            "looping policy hammered, quarantine after 5 (default)",
            Some("loop"),
            5,
        ),
        ("allocating policy hammered, quarantine off", Some("alloc"), 0),
    ] {
        let extra = format!(
            "[routes.hostile]\ntargets = [\"up/m\"]\npolicy = \"custom\"\n[plugins.policies.custom]\nquarantine_after = {quarantine_after}\n"
        );
        let gateway = start_gateway(
            upstream,
            &extra,
            &[("policies", "custom.wasm", misbehave.clone())],
        );
        let url = format!("{}/v1/chat/completions", gateway.url);
        // Warm up the healthy route's pooled connections and caches.
        for _ in 0..200 {
            send(&client, &url, HEALTHY.to_string()).await;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (hostile_sent, hostile_failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let hammers: Vec<_> = (0..HOSTILE_CALLERS)
            .filter(|_| mode.is_some())
            .map(|_| {
                let (client, url, body) = (client.clone(), url.clone(), hostile(mode.unwrap_or_default()));
                let (stop, sent, failed) = (stop.clone(), hostile_sent.clone(), hostile_failed.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        if send(&client, &url, body.clone()).await != 200 {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        let (latencies, failed) = measure(&client, &url).await;
        stop.store(true, Ordering::Relaxed);
        for hammer in hammers {
            let _ = hammer.await;
        }
        let (_, _, peak_kib) = process_usage(gateway.child.id());
        let metrics = send_get(&client, &format!("{}/metrics", gateway.url)).await;
        let plugin_peak = metrics
            .lines()
            .find_map(|l| l.strip_prefix("switchboard_plugin_memory_peak_bytes "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        println!(
            "| {scenario} | {:.0} | {:.0} | {failed} | {} ({}) | {} | {:.0} |",
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            hostile_sent.load(Ordering::Relaxed),
            hostile_failed.load(Ordering::Relaxed),
            peak_kib / 1024,
            plugin_peak / (1 << 20) as f64,
        );
    }
    println!(
        "\nmachine: {} cores; load generator, upstream and gateway share them; one caller measures, {HOSTILE_CALLERS} hammer",
        std::thread::available_parallelism().unwrap()
    );
}

async fn send_get(client: &HttpClient, url: &str) -> String {
    let request = http::Request::get(url).body(Full::new(Bytes::new())).unwrap();
    let response = client.request(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}
