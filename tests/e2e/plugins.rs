//! Plugins: hot reload under load, refusal of broken files, the contract
//! version check, and the sandbox containing misbehaving guests.

use crate::support::*;
use std::time::Duration;
use tokio::time::Instant;

const PRIORITY: &str = "switchboard_policy_priority";
const OPENAI: &str = "switchboard_adapter_openai";
const MISBEHAVE: &str = "switchboard_test_misbehave";

/// A route whose policy is `custom`, served from the policy folder.
fn custom_policy(a: &MockProvider, b: &MockProvider, config: &str) -> String {
    two_providers(a, b, &format!("policy = \"custom\"\npolicy_config = {config}"))
}

#[tokio::test]
async fn a_policy_swapped_on_disk_takes_over_without_failing_a_request() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let gw = Gateway::start_with_files(
        &custom_policy(&a, &b, "{}"),
        KEYS,
        &[("policies", "custom.wasm", wasm(PRIORITY))],
    );
    assert_eq!(
        post(&gw.chat_url(), &chat("chat"))
            .await
            .header("x-switchboard-provider"),
        "a"
    );

    // Keep requests running while the file is replaced.
    let url = gw.chat_url();
    let load = tokio::spawn(async move {
        let mut providers = Vec::new();
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            let request = chat("chat");
            let replies = futures_util::future::join_all((0..4).map(|_| post(&url, &request))).await;
            for reply in replies {
                assert_eq!(
                    reply.status,
                    200,
                    "no request fails during a swap: {}",
                    reply.text()
                );
                providers.push(reply.header("x-switchboard-provider").to_string());
            }
        }
        providers
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The misbehave guest, in its default mode, is a well-behaved last-first policy.
    install(
        &gw.policy_dir(),
        "custom.wasm",
        &std::fs::read(wasm(MISBEHAVE)).unwrap(),
    );
    let providers = load.await.unwrap();
    assert_eq!(providers.first().map(String::as_str), Some("a"));
    assert_eq!(
        providers.last().map(String::as_str),
        Some("b"),
        "the new policy is serving"
    );
    assert!(gw.logs().contains("plugin loaded"));
}

#[tokio::test]
async fn a_broken_or_foreign_file_is_refused_and_the_last_good_version_keeps_serving() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let gw = Gateway::start_with_files(
        &custom_policy(&a, &b, "{}"),
        KEYS,
        &[("policies", "custom.wasm", wasm(PRIORITY))],
    );

    install(
        &gw.policy_dir(),
        "custom.wasm",
        b"\0asm\x01\0\0\0 truncated garbage",
    );
    assert!(
        gw.wait_for_log("plugin refused", Duration::from_secs(10)).await,
        "{}",
        gw.logs()
    );
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(
        (reply.status, reply.header("x-switchboard-provider")),
        (200, "a"),
        "the last good version serves"
    );

    // An adapter is not a policy: refused with the contract named.
    install(
        &gw.policy_dir(),
        "custom.wasm",
        &std::fs::read(wasm(OPENAI)).unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let refused = gw.plugins_admin().await["refused"].as_array().unwrap().clone();
        if refused.len() >= 2 || Instant::now() > deadline {
            break refused;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused[0]["file"].as_str().unwrap().ends_with("custom.wasm"));
    assert!(
        refused[0]["reason"]
            .as_str()
            .unwrap()
            .contains("not a valid Wasm component"),
        "{refused:?}"
    );
    assert!(
        refused[1]["reason"]
            .as_str()
            .unwrap()
            .contains("does not export `switchboard:plugin/router` of switchboard:plugin@0.1.x and switchboard:plugin@0.2.x and switchboard:plugin@0.3.x"),
        "{refused:?}"
    );
    assert_eq!(
        post(&gw.chat_url(), &chat("chat"))
            .await
            .header("x-switchboard-provider"),
        "a"
    );
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("switchboard_plugin_refusals_total 2"),
        "{metrics}"
    );
}

/// Drop the test guest `guest` into the policy folder as `file`; the
/// reason it was refused.
async fn refusal_of(gw: &Gateway, file: &str, guest: &str) -> String {
    install(&gw.policy_dir(), file, &std::fs::read(wasm(guest)).unwrap());
    assert!(gw.wait_for_log("plugin refused", Duration::from_secs(10)).await);
    gw.plugins_admin().await["refused"][0]["reason"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_plugin_built_for_another_contract_version_is_refused_with_a_clear_message() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let gw = Gateway::start(&two_providers(&a, &b, ""), KEYS);
    let refused = refusal_of(&gw, "future.wasm", "switchboard_test_future").await;
    assert!(
        refused.contains("built for switchboard:plugin@9.0.0")
            && refused.contains("0.1.x and switchboard:plugin@0.2.x and switchboard:plugin@0.3.x"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_new_adapter_dropped_in_serves_a_provider_without_a_restart() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    // Provider `a` uses adapter `shiny`, which does not exist yet: its attempts fail over to `b`.
    let config = two_providers(&a, &b, "").replacen("adapter = \"openai\"", "adapter = \"shiny\"", 1);
    let gw = Gateway::start_with_files(&config, KEYS, &[("adapters", "shiny.wasm", wasm(OPENAI))]);
    assert_eq!(
        post(&gw.chat_url(), &chat("chat"))
            .await
            .header("x-switchboard-provider"),
        "a"
    );
    std::fs::remove_file(gw.adapter_dir().join("shiny.wasm")).unwrap();
    assert!(
        gw.wait_for_log("plugin file removed", Duration::from_secs(10))
            .await
    );
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(
        reply.header("x-switchboard-provider"),
        "b",
        "without its adapter `a` is skipped"
    );
    install(
        &gw.adapter_dir(),
        "shiny.wasm",
        &std::fs::read(wasm(OPENAI)).unwrap(),
    );
    assert!(
        gw.wait_for_log("\"plugin\":\"shiny\"", Duration::from_secs(10))
            .await
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while post(&gw.chat_url(), &chat("chat"))
        .await
        .header("x-switchboard-provider")
        != "a"
    {
        assert!(Instant::now() < deadline, "the dropped-in adapter serves again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_misbehaving_policy_never_fails_the_request() {
    for mode in ["panic", "loop", "alloc", "garbage"] {
        let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
        let config = custom_policy(&a, &b, &format!("{{ mode = \"{mode}\" }}"));
        let gw = Gateway::start_with_files(&config, KEYS, &[("policies", "custom.wasm", wasm(MISBEHAVE))]);
        let started = Instant::now();
        let reply = post(&gw.chat_url(), &chat("chat")).await;
        assert_eq!(reply.status, 200, "{mode}: {}", reply.text());
        assert_eq!(
            reply.header("x-switchboard-provider"),
            "a",
            "{mode}: the configured order serves"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{mode}: the sandbox deadline fired"
        );
        let metrics = gw.metrics().await;
        assert!(
            metrics.contains("switchboard_policy_fallbacks_total{plugin=\"custom\""),
            "{mode}: {metrics}"
        );
    }
}

/// Address space for a default gateway whose plugin memories cannot have
/// 4 GiB reservations (1000 instances would need 8 TiB) but fit as large as
/// their cap (about 130 GiB).
const NO_ROOM_FOR_GUARD_PAGES_KIB: u64 = 200 << 20;

#[tokio::test]
async fn a_guest_reading_outside_its_memory_traps_with_guard_pages_and_with_bounds_checks() {
    // Guard pages need 8 TiB of address space: not where the tests
    // themselves run under an address-space limit.
    let unlimited = std::fs::read_to_string("/proc/self/limits")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Max address space") && l.contains("unlimited"));
    let rooms = [None, Some(NO_ROOM_FOR_GUARD_PAGES_KIB)];
    for room in rooms.into_iter().filter(|room| unlimited || room.is_some()) {
        let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
        let config = custom_policy(&a, &b, "{}");
        let files = [("policies", "custom.wasm", wasm(MISBEHAVE))];
        let mut gw = match room {
            None => Gateway::start_with_files(&config, KEYS, &files),
            Some(kib) => Gateway::start_with_address_space(&config, KEYS, &files, kib),
        };
        let bounds = if room.is_none() { "guard_pages" } else { "checked" };
        assert_eq!(gw.plugins_admin().await["memory_bounds"], bounds);
        assert_eq!(
            gw.logs().contains("plugins run with explicit bounds checks"),
            room.is_some(),
            "{bounds}: {}",
            gw.logs()
        );
        for mode in ["read_past_end", "read_near_4gib", "read_across_4gib"] {
            let mut request = chat("chat");
            request["user"] = serde_json::json!(format!("misbehave:{mode}"));
            let reply = post(&gw.chat_url(), &request).await;
            assert_eq!(reply.status, 200, "{bounds} {mode}: {}", reply.text());
            assert_eq!(
                reply.header("x-switchboard-provider"),
                "a",
                "{bounds} {mode}: the configured order serves"
            );
        }
        let metrics = gw.metrics().await;
        let traps = metrics
            .lines()
            .find(|l| {
                l.starts_with("switchboard_plugin_failures_total{plugin=\"custom\"") && l.contains("trap")
            })
            .unwrap_or_else(|| panic!("{bounds}: {metrics}"));
        assert!(traps.ends_with(" 3"), "{bounds}: {traps}");
        // The plugin serves on, and so do the bundled ones.
        let reply = post(&gw.chat_url(), &chat("chat")).await;
        assert_eq!(reply.status, 200, "{bounds}: {}", reply.text());
        assert!(gw.is_running());
    }
}

#[tokio::test]
async fn a_misbehaving_adapter_costs_one_attempt_and_nothing_else() {
    for mode in ["panic", "loop", "alloc"] {
        let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
        let config = two_providers(&a, &b, "").replacen(
            "adapter = \"openai\"",
            &format!("adapter = \"misbehave\"\noptions = {{ mode = \"{mode}\" }}"),
            1,
        );
        let mut gw =
            Gateway::start_with_files(&config, KEYS, &[("adapters", "misbehave.wasm", wasm(MISBEHAVE))]);
        let reply = post(&gw.chat_url(), &chat("chat")).await;
        assert_eq!(reply.status, 200, "{mode}: {}", reply.text());
        assert_eq!(reply.header("x-switchboard-provider"), "b");
        assert_eq!(a.hits(), 0, "{mode}: the broken adapter never built a request");
        let metrics = gw.metrics().await;
        assert!(
            metrics.contains("switchboard_plugin_failures_total{plugin=\"misbehave\""),
            "{mode}: {metrics}"
        );
        assert!(gw.is_running());
    }
}

#[tokio::test]
async fn an_adapter_returning_garbage_is_caught_by_the_host() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let config = two_providers(&a, &b, "").replacen(
        "adapter = \"openai\"",
        "adapter = \"misbehave\"\noptions = { mode = \"garbage\" }",
        1,
    );
    let gw = Gateway::start_with_files(&config, KEYS, &[("adapters", "misbehave.wasm", wasm(MISBEHAVE))]);
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-switchboard-provider"), "b");
    assert_eq!(a.hits(), 1, "the request went out; its translation was refused");
}

#[tokio::test]
async fn a_dropped_file_is_loaded_once_and_a_junk_one_refused_once() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let gw = Gateway::start(&two_providers(&a, &b, ""), KEYS);
    let loaded = "switchboard_plugin_loads_total{kind=\"policy\",outcome=\"loaded\"}";
    let refused = "switchboard_plugin_loads_total{kind=\"policy\",outcome=\"refused\"}";
    install(
        &gw.policy_dir(),
        "custom.wasm",
        &std::fs::read(wasm(PRIORITY)).unwrap(),
    );
    install(&gw.policy_dir(), "junk.wasm", b"\0asm but not really");
    assert!(gw.wait_for_log("plugin refused", Duration::from_secs(10)).await);
    assert!(gw.wait_for_log("plugin loaded", Duration::from_secs(10)).await);
    // An idle gateway stays idle: its own reads of the files are no change.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let metrics = gw.metrics().await;
    assert_eq!(sample(&metrics, loaded), 1, "{metrics}");
    assert_eq!(sample(&metrics, refused), 1, "{metrics}");
    let refusals = gw.plugins_admin().await["refused"].as_array().unwrap().len();
    assert_eq!(refusals, 1);
    // Saving the same bytes again is not a new version either.
    install(&gw.policy_dir(), "junk.wasm", b"\0asm but not really");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(sample(&gw.metrics().await, refused), 1);
    // A new version is tried.
    install(&gw.policy_dir(), "junk.wasm", b"\0asm still not");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(sample(&gw.metrics().await, refused), 2);
}

#[tokio::test]
async fn a_stream_decoder_that_breaks_mid_stream_ends_the_stream_with_an_error() {
    for mode in ["stream_panic", "stream_loop", "stream_garbage", "stream_beyond"] {
        let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
        a.set_default(Script::Answer("several words of an answer"));
        let config = two_providers(&a, &b, "").replacen(
            "adapter = \"openai\"",
            &format!("adapter = \"misbehave\"\noptions = {{ mode = \"{mode}\" }}"),
            1,
        );
        let mut gw =
            Gateway::start_with_files(&config, KEYS, &[("adapters", "misbehave.wasm", wasm(MISBEHAVE))]);
        let reply = post(&gw.chat_url(), &streamed_chat("chat")).await;
        assert_eq!(reply.status, 200, "{mode}: the first event went through");
        let data = reply.sse_data();
        assert!(
            data.last().unwrap().contains("\"error\""),
            "{mode}: ends with the in-band error: {data:?}"
        );
        assert!(!data.iter().any(|d| d == "[DONE]"), "{mode}");
        let metrics = gw.metrics().await;
        assert!(
            metrics.contains("switchboard_plugin_failures_total{plugin=\"misbehave\"")
                || metrics.contains(
                    "switchboard_attempts_total{provider=\"a\",model=\"model-a\",outcome=\"plugin\"}"
                ),
            "{mode}: {metrics}"
        );
        assert!(gw.is_running());
        assert_eq!(
            post(&gw.chat_url(), &chat("chat")).await.status,
            200,
            "{mode}: still serving"
        );
    }
}

#[tokio::test]
async fn a_plugin_that_imports_what_the_sandbox_does_not_grant_is_refused() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let gw = Gateway::start(&two_providers(&a, &b, ""), KEYS);
    let refused = refusal_of(&gw, "greedy.wasm", "switchboard_test_forbidden").await;
    assert!(
        refused.contains("needs imports the sandbox does not provide"),
        "{refused}"
    );
    assert!(
        refused.contains("test:forbidden/steal"),
        "names the import: {refused}"
    );
}

#[tokio::test]
async fn the_readme_example_policy_is_the_one_built_and_it_routes() {
    let readme = include_str!("../../README.md");
    let example = include_str!("../../examples/cheapest-policy/src/policy.rs");
    assert!(
        readme.contains(&format!("```rust\n{example}```")),
        "README.md shows examples/cheapest-policy/src/policy.rs as it is"
    );
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    // `a` is the dearer target: the cheapest-first example plans `b` first.
    let config = two_providers(&a, &b, "policy = \"cheapest\"").replacen(
        "output_price = 2.0",
        "output_price = 9.0",
        1,
    );
    let gw = Gateway::start_with_files(
        &config,
        KEYS,
        &[("policies", "cheapest.wasm", wasm("switchboard_example_cheapest"))],
    );
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-switchboard-provider"), "b");
}

/// `instances` of the serving version of plugin `name` of `kind`.
fn instances(admin: &serde_json::Value, kind: &str, name: &str) -> serde_json::Value {
    let plugin = admin[kind]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{kind} {name} in {admin}"));
    plugin["versions"][0]["instances"].clone()
}

#[tokio::test]
async fn stateless_plugins_reuse_their_instances_and_requests_still_see_only_their_own() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let config = two_providers(&a, &b, "").replacen(
        "[providers.b]\nadapter = \"openai\"",
        "[providers.b]\nadapter = \"misbehave\"",
        1,
    );
    let gw = Gateway::start_with_files(&config, KEYS, &[("adapters", "misbehave.wasm", wasm(MISBEHAVE))]);
    for i in 0..5 {
        let mut request = chat("chat");
        request["messages"][0]["content"] = serde_json::json!(format!("question {i}"));
        let reply = post(&gw.chat_url(), &request).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    // Each request reached the provider with its own words only.
    for (i, seen) in a.seen().iter().enumerate() {
        assert_eq!(seen.body["messages"][0]["content"], format!("question {i}"));
    }
    let admin = gw.plugins_admin().await;
    // Five requests, two adapter calls each: all but the first on a kept instance.
    let openai = instances(&admin, "adapters", "openai");
    assert!(openai["reused_calls"].as_u64().unwrap() >= 9, "{openai}");
    assert!(openai["kept"].as_u64().unwrap() >= 1, "{openai}");
    let priority = instances(&admin, "policies", "priority");
    assert!(priority["reused_calls"].as_u64().unwrap() >= 4, "{priority}");
    // A plugin that does not say it is stateless gets a fresh instance every call.
    assert_eq!(
        instances(&admin, "adapters", "misbehave"),
        serde_json::json!({"reused_calls": 0, "kept": 0})
    );

    // Streams decode on kept instances too, and each stream's decoder is its
    // own: whether the caller asked for the usage chunk does not carry over.
    let reused = |admin: &serde_json::Value| {
        instances(admin, "adapters", "openai")["reused_calls"]
            .as_u64()
            .unwrap()
    };
    let before = reused(&gw.plugins_admin().await);
    for include_usage in [true, false, true, false] {
        let mut request = crate::support::streamed_chat("chat");
        request["stream_options"]["include_usage"] = serde_json::json!(include_usage);
        let reply = post(&gw.chat_url(), &request).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let usage_chunks = reply.chunks().iter().filter(|c| !c["usage"].is_null()).count();
        assert_eq!(usage_chunks, usize::from(include_usage), "{}", reply.text());
        // The decoder's instance goes back once the stream has ended and
        // its decoder is dropped in the guest, which runs after the last
        // byte has left.
        let back = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while instances(&gw.plugins_admin().await, "adapters", "openai")["kept"] == 0 {
            assert!(
                tokio::time::Instant::now() < back,
                "the stream's instance never went back"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    // Four streams, each building its request and decoding on a kept instance.
    let reused_by_streams = reused(&gw.plugins_admin().await) - before;
    assert!(reused_by_streams >= 8, "{reused_by_streams}");

    // Reuse can be turned off.
    let off = format!(
        "[plugins]\nreuse_instances = false\n{}",
        two_providers(&a, &b, "")
    );
    let gw = Gateway::start(&off, KEYS);
    for _ in 0..3 {
        assert_eq!(post(&gw.chat_url(), &chat("chat")).await.status, 200);
    }
    assert_eq!(
        instances(&gw.plugins_admin().await, "adapters", "openai"),
        serde_json::json!({"reused_calls": 0, "kept": 0})
    );
}

#[tokio::test]
async fn kept_instances_give_way_when_slots_or_memory_run_out() {
    // Four slots, or memory for about four instances. Each bundled policy
    // keeps the instance of its smoke call at load, so all of it is held
    // by idle instances before the first adapter is even asked about its
    // providers' options: that start, and every call after it, needs some
    // let go.
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    for limit in ["max_instances = 4", "memory_limit_mib = 4\ntotal_memory_mib = 5"] {
        let config = format!("[plugins]\n{limit}\n{}", two_providers(&a, &b, ""));
        let gw = Gateway::start(&config, KEYS);
        for i in 0..4 {
            let reply = post(&gw.chat_url(), &chat("chat")).await;
            assert_eq!(reply.status, 200, "{limit}, request {i}: {}", reply.text());
            let reply = post(&gw.chat_url(), &streamed_chat("chat")).await;
            assert_eq!(reply.status, 200, "{limit}, stream {i}: {}", reply.text());
            assert!(reply.text().ends_with("data: [DONE]\n\n"), "{}", reply.text());
        }
        // Instances are still kept and reused where there is room.
        let admin = gw.plugins_admin().await;
        let openai = instances(&admin, "adapters", "openai");
        assert!(openai["reused_calls"].as_u64().unwrap() >= 4, "{limit}: {openai}");
    }
}
