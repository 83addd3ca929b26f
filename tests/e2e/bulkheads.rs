//! Plugin bulkheads: a hostile plugin on one route keeps its deadline under
//! load, cannot take more than its share of calls or the plugins' memory,
//! is quarantined after repeated traps, and the routes that do not use it
//! never notice.

use crate::support::*;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::time::Instant;

const PRIORITY: &str = "switchboard_policy_priority";
const MISBEHAVE: &str = "switchboard_test_misbehave";

/// Route `chat` on the bundled `priority`, route `hostile` on the policy
/// file `custom.wasm` (the misbehave guest), both over providers a and b.
fn config(plugins: &str, a: &MockProvider, b: &MockProvider) -> String {
    format!(
        "[plugins]\n{plugins}\n{}\n[routes.hostile]\ntargets = [\"a/model-a\", \"b/model-b\"]\npolicy = \"custom\"\n",
        two_providers(a, b, "")
    )
}

/// A gateway whose route `hostile` is planned by the misbehave guest.
fn hostile(plugins: &str, a: &MockProvider, b: &MockProvider) -> Gateway {
    Gateway::start_with_files(
        &config(plugins, a, b),
        KEYS,
        &[("policies", "custom.wasm", wasm(MISBEHAVE))],
    )
}

/// A request that asks the misbehave guest for `mode`.
fn asking(route: &str, mode: &str) -> Value {
    let mut request = chat(route);
    request["user"] = json!(format!("misbehave:{mode}"));
    request
}

/// `n` requests to `route` from `width` concurrent callers; each one's
/// status and latency.
async fn hammer(gw: &Gateway, request: Value, n: usize, width: usize) -> Vec<(u16, Duration)> {
    let url = gw.chat_url();
    let mut results = Vec::new();
    for _ in 0..n.div_ceil(width) {
        let calls = (0..width).map(|_| {
            let (url, request) = (url.clone(), request.clone());
            async move {
                let started = Instant::now();
                let reply = post(&url, &request).await;
                (reply.status, started.elapsed())
            }
        });
        results.extend(futures_util::future::join_all(calls).await);
    }
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_policy_keeps_its_deadline_under_load_and_its_neighbours_are_unharmed() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    // Never quarantined here: the deadline itself is under test.
    let plugins = "policy_call_timeout_ms = 40\nquarantine_after = 0\nmax_concurrent_calls = 8\n";
    let gw = hostile(plugins, &a, &b);
    let (hostile, healthy) = tokio::join!(
        hammer(&gw, asking("hostile", "loop"), 48, 8),
        hammer(&gw, chat("chat"), 60, 2)
    );
    assert!(healthy.iter().all(|(status, _)| *status == 200), "{healthy:?}");
    // The looping policy costs its deadline, then the configured order answers.
    assert!(hostile.iter().all(|(status, _)| *status == 200), "{hostile:?}");
    let slowest = hostile.iter().map(|(_, took)| *took).max().unwrap();
    // Counted in yields, eight callers stretched a deadline five-fold; in
    // wall time it holds to within the scheduling of eight looping calls.
    held_to_its_deadline(slowest);
    let (fallbacks, metrics) = deadline_fallbacks(&gw).await;
    assert!(fallbacks >= 40, "{metrics}");
}

/// A 40 ms policy deadline, held to within the scheduling of looping calls.
fn held_to_its_deadline(took: Duration) {
    assert!(
        took < Duration::from_millis(160),
        "a 40 ms deadline held to {took:?}"
    );
}

/// The `custom` policy's calls that fell back to the configured order at
/// their deadline, and the metrics text they were read from.
async fn deadline_fallbacks(gw: &Gateway) -> (u64, String) {
    let metrics = gw.metrics().await;
    let fallbacks = sample(
        &metrics,
        "switchboard_policy_fallbacks_total{plugin=\"custom\",reason=\"deadline\"}",
    );
    (fallbacks, metrics)
}

#[tokio::test]
async fn calls_beyond_the_bound_fail_at_once_and_are_counted() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let plugins = "policy_call_timeout_ms = 300\nquarantine_after = 0\n[plugins.policies.custom]\nmax_concurrent_calls = 1\n";
    let gw = hostile(plugins, &a, &b);
    let results = hammer(&gw, asking("hostile", "loop"), 8, 8).await;
    assert!(results.iter().all(|(status, _)| *status == 200), "{results:?}");
    let fast = results
        .iter()
        .filter(|(_, took)| *took < Duration::from_millis(200))
        .count();
    assert!(fast >= 6, "the calls past the bound did not wait: {results:?}");
    let metrics = gw.metrics().await;
    assert!(
        sample(
            &metrics,
            "switchboard_policy_fallbacks_total{plugin=\"custom\",reason=\"busy\"}"
        ) >= 6,
        "{metrics}"
    );
    let calls = &gw.plugins_admin().await["policies"];
    let custom = calls
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "custom")
        .unwrap();
    assert!(custom["versions"][0]["calls"]["calls_rejected"].as_u64().unwrap() >= 6);
}

/// A `/proc/<pid>/status` figure in KiB (`VmRSS:`, `VmHWM:`).
fn kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn plugins_together_stay_under_the_memory_cap() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    // Four allocating instances of 32 MiB would need 128: the cap is 48.
    // A generous deadline: under a loaded machine the guests must still get
    // to allocate until the cap stops them, not be cut short by time.
    let plugins = "memory_limit_mib = 32\ntotal_memory_mib = 48\nquarantine_after = 0\npolicy_call_timeout_ms = 300\n[plugins.policies.custom]\nmax_concurrent_calls = 4\n";
    let mut gw = hostile(plugins, &a, &b);
    let before_kib = kib(gw.pid(), "VmRSS:");
    let results = hammer(&gw, asking("hostile", "alloc"), 32, 8).await;
    // While the cap is full another plugin may be refused memory: that
    // attempt fails cleanly; nothing hangs and nothing crashes.
    assert!(
        results.iter().all(|(status, _)| matches!(status, 200 | 502)),
        "{results:?}"
    );
    let metrics = gw.metrics().await;
    let peak = sample(&metrics, "switchboard_plugin_memory_peak_bytes");
    assert!(peak > 24 << 20, "the guests did allocate: {peak}");
    assert!(peak <= 48 << 20, "at most the cap: {peak}");
    // Eight instances of 32 MiB at once would have taken 256 MiB more than
    // the process held before; the cap allows 48 (measured: about 54 with
    // the allocator's slack).
    let grew_kib = kib(gw.pid(), "VmHWM:").saturating_sub(before_kib);
    assert!(grew_kib < 80 * 1024, "peak RSS grew by {grew_kib} KiB");
    assert!(gw.is_running());
    assert_eq!(post(&gw.chat_url(), &chat("chat")).await.status, 200);
}

#[tokio::test]
async fn a_call_that_grows_gets_the_memory_kept_instances_held() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    // 16 MiB for all plugins. The bundled policies and the adapter keep
    // instances that hold several of them; then the custom policy's call
    // grows by 13 MiB, which fits only once those are let go. Refused, the
    // policy would fail and the configured order (a first) would answer.
    let gw = hostile("memory_limit_mib = 16\ntotal_memory_mib = 16\n", &a, &b);
    assert_eq!(post(&gw.chat_url(), &chat("chat")).await.status, 200);
    let reply = post(&gw.chat_url(), &asking("hostile", "hold:13")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.header("x-switchboard-provider"),
        "b",
        "the policy planned the request"
    );
    assert_eq!(post(&gw.chat_url(), &chat("chat")).await.status, 200);
}

#[tokio::test]
async fn a_trapping_policy_version_is_quarantined_and_the_previous_one_serves() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let gw = Gateway::start_with_files(
        &config("quarantine_after = 3\n", &a, &b),
        KEYS,
        &[("policies", "custom.wasm", wasm(PRIORITY))],
    );
    let provider = |reply: Reply| reply.header("x-switchboard-provider").to_string();
    assert_eq!(provider(post(&gw.chat_url(), &chat("hostile")).await), "a");

    // The new version plans last-first, and traps when asked to.
    install(
        &gw.policy_dir(),
        "custom.wasm",
        &std::fs::read(wasm(MISBEHAVE)).unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while provider(post(&gw.chat_url(), &chat("hostile")).await) != "b" {
        assert!(Instant::now() < deadline, "the new version never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..3 {
        let reply = post(&gw.chat_url(), &asking("hostile", "panic")).await;
        assert_eq!(reply.status, 200, "the configured order answers");
    }
    assert!(
        gw.wait_for_log("policy quarantined", Duration::from_secs(5))
            .await
    );
    // The last good version (priority: first-first) serves again.
    assert_eq!(provider(post(&gw.chat_url(), &chat("hostile")).await), "a");
    let admin = gw.plugins_admin().await;
    let custom = admin["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "custom")
        .unwrap()
        .clone();
    assert_eq!(custom["quarantined"], false, "{custom}");
    assert_eq!(custom["versions"][0]["calls"]["quarantined"], true, "{custom}");
    assert_eq!(custom["versions"][1]["serving"], true, "{custom}");
    assert!(gw.metrics().await.contains("switchboard_plugins_quarantined 0"));

    // A new version lifts the quarantine.
    let mut fresh = std::fs::read(wasm(MISBEHAVE)).unwrap();
    fresh.extend_from_slice(&custom_section("another build"));
    install(&gw.policy_dir(), "custom.wasm", &fresh);
    let deadline = Instant::now() + Duration::from_secs(10);
    while provider(post(&gw.chat_url(), &chat("hostile")).await) != "b" {
        assert!(Instant::now() < deadline, "the new version never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_quarantined_adapter_override_falls_back_to_the_bundled_build() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let gw = Gateway::start_with_files(
        &format!("[plugins]\nquarantine_after = 3\n{}", two_providers(&a, &b, "")),
        KEYS,
        &[("adapters", "openai.wasm", wasm(MISBEHAVE))],
    );
    // Traps 1 and 2 (a, then b); trap 3 quarantines it during the second
    // request, whose next attempt already goes to the bundled build.
    let reply = post(&gw.chat_url(), &asking("chat", "panic")).await;
    assert_eq!(
        reply.status,
        502,
        "both targets' adapter trapped: {}",
        reply.text()
    );
    let reply = post(&gw.chat_url(), &asking("chat", "panic")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-switchboard-provider"), "b");
    assert!(
        gw.wait_for_log("adapter quarantined", Duration::from_secs(5))
            .await
    );
    let reply = post(&gw.chat_url(), &asking("chat", "panic")).await;
    assert_eq!(
        reply.header("x-switchboard-provider"),
        "a",
        "the bundled openai adapter serves"
    );
}

/// A Wasm custom section: appended to a component, it changes the file's
/// bytes (a new version) without changing what it does.
fn custom_section(text: &str) -> Vec<u8> {
    let name = b"note";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(text.as_bytes());
    let mut section = vec![0u8, payload.len() as u8];
    section.extend(payload);
    section
}

#[tokio::test]
async fn sixty_four_callers_at_once_are_all_served_on_the_default_bounds() {
    // Calls are async: under load many are in progress at once though few
    // run. The old default bound (twice the cores) turned well-behaved
    // calls away as `busy` at 64 connections.
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    a.set_default(Script::Slow(5, "hello"));
    let gw = Gateway::start(&two_providers(&a, &b, ""), KEYS);
    let url = gw.chat_url();
    for _ in 0..3 {
        let calls: Vec<_> = (0..64)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { post(&url, &chat("chat")).await })
            })
            .collect();
        for call in calls {
            let reply = call.await.unwrap();
            assert_eq!(reply.status, 200, "{}", reply.text());
            assert_eq!(reply.header("x-switchboard-provider"), "a");
        }
    }
    assert_eq!(b.hits(), 0, "no call was turned away to the next target");
}

/// How many times the plugin epoch ticker thread has slept and woken.
fn ticker_wakeups(pid: u32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    let ticker = tasks
        .map(|t| t.unwrap().path())
        .find(|t| std::fs::read_to_string(t.join("comm")).unwrap().trim() == "plugin-epoch")
        .expect("a plugin-epoch thread");
    std::fs::read_to_string(ticker.join("status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn the_deadline_ticker_sleeps_while_no_plugin_runs_and_wakes_for_a_looping_one() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let plugins = "policy_call_timeout_ms = 40\nquarantine_after = 0\n";
    let gw = hostile(plugins, &a, &b);
    // It sleeps once no plugin has run for 100 ms.
    let idle_wakeups = || async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = ticker_wakeups(gw.pid());
        tokio::time::sleep(Duration::from_millis(500)).await;
        ticker_wakeups(gw.pid()) - before
    };
    assert_eq!(post(&gw.chat_url(), &chat("chat")).await.status, 200);
    let mut streamed = chat("chat");
    streamed["stream"] = json!(true);
    let reply = post(&gw.chat_url(), &streamed).await;
    assert!(
        reply.status == 200 && reply.text().contains("[DONE]"),
        "{}",
        reply.text()
    );
    // Ticking every 2 ms would be 250 wake-ups.
    let idle = idle_wakeups().await;
    assert!(idle <= 2, "{idle} wake-ups while idle");
    // A call that starts while the ticker sleeps still ends at its deadline.
    let started = Instant::now();
    assert_eq!(post(&gw.chat_url(), &asking("hostile", "loop")).await.status, 200);
    held_to_its_deadline(started.elapsed());
    let (fallbacks, metrics) = deadline_fallbacks(&gw).await;
    assert_eq!(fallbacks, 1, "{metrics}");
    let idle = idle_wakeups().await;
    assert!(idle <= 2, "{idle} wake-ups while idle after the loop");
}
