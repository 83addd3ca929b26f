//! Health-aware attempts: circuits that open, probe and close; silent
//! targets not retried; context-length errors moving to a larger window;
//! streams that end without their marker.

use crate::support::*;
use serde_json::json;
use std::time::Duration;

async fn circuit_of(gw: &Gateway, provider: &str) -> String {
    gw.target_health(provider).await["circuit"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_primary_that_is_down_for_a_while_opens_its_circuit_then_is_probed_and_serves_again() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    a.set_default(Script::Status(500, vec![], "{}".into()));
    let config = format!(
        "[circuit]\nfailures = 2\ncool_down_ms = 700\n{}",
        two_providers(&a, &b, "")
    );
    let gw = Gateway::start(&config, KEYS);
    for _ in 0..2 {
        assert_eq!(
            post(&gw.chat_url(), &chat("chat"))
                .await
                .header("x-switchboard-provider"),
            "b"
        );
    }
    assert_eq!(circuit_of(&gw, "a").await, "open");
    // While open, the fallback serves without touching the primary.
    for _ in 0..3 {
        let reply = post(&gw.chat_url(), &chat("chat")).await;
        assert_eq!(
            (
                reply.header("x-switchboard-provider"),
                reply.header("x-switchboard-attempts")
            ),
            ("b", "1")
        );
    }
    assert_eq!(a.hits(), 2);

    a.set_default(Script::Answer("a"));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(circuit_of(&gw, "a").await, "half_open");
    assert_eq!(
        post(&gw.chat_url(), &chat("chat"))
            .await
            .header("x-switchboard-provider"),
        "a",
        "the probe"
    );
    assert_eq!(circuit_of(&gw, "a").await, "closed");
    assert_eq!(
        post(&gw.chat_url(), &chat("chat"))
            .await
            .header("x-switchboard-provider"),
        "a",
        "traffic returns"
    );
    assert_eq!(a.hits(), 4);
}

#[tokio::test]
async fn a_failed_probe_opens_the_circuit_again() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    a.set_default(Script::Status(503, vec![], "{}".into()));
    let config = format!(
        "[circuit]\nfailures = 1\ncool_down_ms = 300\n{}",
        two_providers(&a, &b, "")
    );
    let gw = Gateway::start(&config, KEYS);
    post(&gw.chat_url(), &chat("chat")).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        post(&gw.chat_url(), &chat("chat"))
            .await
            .header("x-switchboard-provider"),
        "b"
    );
    assert_eq!(a.hits(), 2, "one probe went to a");
    assert_eq!(circuit_of(&gw, "a").await, "open");
    post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(a.hits(), 2, "open again: a is left alone");
}

#[tokio::test]
async fn a_silent_target_is_not_retried_even_when_retries_are_allowed() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    a.set_default(Script::Hang);
    let gw = Gateway::start(
        &two_providers(&a, &b, "policy_config = { retries_per_target = 2 }"),
        KEYS,
    );
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(reply.header("x-switchboard-provider"), "b");
    assert_eq!(a.hits(), 1);
}

#[tokio::test]
async fn a_context_length_error_moves_to_a_target_with_a_larger_window() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    a.set_default(Script::Status(
        400,
        vec![],
        json!({"error": {"message": "This model's maximum context length is 8000 tokens", "code": "context_length_exceeded"}}).to_string(),
    ));
    // b's window is larger: it gets the request.
    let config = two_providers(&a, &b, "");
    let config = {
        let second = config.rfind("context_window = 8000").unwrap();
        format!(
            "{}context_window = 200000{}",
            &config[..second],
            &config[second + "context_window = 8000".len()..]
        )
    };
    let gw = Gateway::start(&config, KEYS);
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!((reply.status, reply.header("x-switchboard-provider")), (200, "b"));

    // With no larger window left, the caller gets the provider's reason.
    let (c, d) = (MockProvider::start("a").await, MockProvider::start("b").await);
    c.set_default(Script::Status(
        400,
        vec![],
        json!({"error": {"message": "maximum context length is 8000", "code": "context_length_exceeded"}})
            .to_string(),
    ));
    let gw = Gateway::start(&two_providers(&c, &d, ""), KEYS);
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(
        (reply.status, reply.json()["error"]["code"].clone()),
        (400, json!("context_length_exceeded"))
    );
    assert_eq!(d.hits(), 0, "same window: no point trying");
}

#[tokio::test]
async fn a_stream_that_finished_but_lacks_done_is_finalised_at_once_with_usage() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let chunk = |delta: serde_json::Value, finish: serde_json::Value| json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "model-a", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    let usage = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "model-a", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}});
    a.set_default(Script::RawStream(format!(
        "data: {}\n\ndata: {}\n\ndata: {usage}\n\n",
        chunk(json!({"content": "done"}), json!(null)),
        chunk(json!({}), json!("stop"))
    )));
    let gw = Gateway::start(&two_providers(&a, &b, ""), KEYS);
    let mut request = chat("chat");
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let reply = post(&gw.chat_url(), &request).await;
    let data = reply.sse_data();
    assert_eq!(reply.streamed_text(), "done");
    assert_eq!(data.last().unwrap(), "[DONE]", "{data:?}");
    assert!(data[data.len() - 2].contains("\"usage\""));
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"switchboard_tokens_total{provider="a",model="model-a",kind="completion"} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_silent_first_stream_is_hedged_and_the_loser_is_cancelled_unbilled() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    a.set_default(Script::StreamAfter(5_000, "slow a"));
    let config = two_providers(&a, &b, "hedge_after_ms = 200")
        .replace("first_token_timeout_ms = 1000", "first_token_timeout_ms = 3000");
    let gw = Gateway::start(&config, KEYS);
    let started = tokio::time::Instant::now();
    let reply = post(&gw.chat_url(), &streamed_chat("chat")).await;
    let took = started.elapsed();
    assert_eq!(reply.header("x-switchboard-provider"), "b");
    assert_eq!(reply.streamed_text(), "b");
    assert_eq!(reply.header("x-switchboard-attempts"), "2");
    assert!(
        took < Duration::from_millis(2_500),
        "the hedge answered before a's 3 s first-token deadline: {took:?}"
    );
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"switchboard_attempts_total{provider="a",model="model-a",outcome="cancelled"} 1"#),
        "{metrics}"
    );
    assert!(
        !metrics.contains(r#"tokens_total{provider="a""#),
        "the loser is not billed"
    );
    assert_eq!(a.hits(), 1);
}

#[tokio::test]
async fn no_hedge_when_it_could_cost_more_than_the_cap() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    a.set_default(Script::StreamAfter(5_000, "slow a"));
    let config = two_providers(&a, &b, "hedge_after_ms = 200\nhedge_max_cost_usd = 0.000001")
        .replace("first_token_timeout_ms = 1000", "first_token_timeout_ms = 1500");
    let gw = Gateway::start(&config, KEYS);
    let started = tokio::time::Instant::now();
    let reply = post(&gw.chat_url(), &streamed_chat("chat")).await;
    assert_eq!(reply.header("x-switchboard-provider"), "b");
    assert!(
        started.elapsed() >= Duration::from_millis(1_500),
        "b came only after a's first-token deadline"
    );
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"provider="a",model="model-a",outcome="timeout"} 1"#),
        "{metrics}"
    );
}

/// Provider timeouts long enough that only a hedge can beat a slow first target.
fn patient(config: String) -> String {
    config
        .replace("\ntimeout_ms = 1000", "\ntimeout_ms = 5000")
        .replace("first_token_timeout_ms = 1000", "first_token_timeout_ms = 5000")
}

#[tokio::test]
async fn a_slow_whole_answer_is_hedged_and_the_loser_is_cancelled_unbilled() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    a.set_default(Script::Slow(4_000, "slow a"));
    let gw = Gateway::start(&patient(two_providers(&a, &b, "hedge_after_ms = 200")), KEYS);
    let started = tokio::time::Instant::now();
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    let took = started.elapsed();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["choices"][0]["message"]["content"], "b");
    assert_eq!(reply.header("x-switchboard-attempts"), "2");
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(3_000),
        "b raced a after the 200 ms hedge delay, long before a's 4 s answer: {took:?}"
    );
    let metrics = gw.metrics().await;
    for line in [
        r#"switchboard_attempts_total{provider="a",model="model-a",outcome="cancelled"} 1"#,
        r#"switchboard_hedges_total{route="chat",outcome="hedge"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    assert!(
        !metrics.contains(r#"tokens_total{provider="a""#),
        "the loser is not billed"
    );
}

#[tokio::test]
async fn a_fast_first_answer_starts_no_hedge() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let gw = Gateway::start(&patient(two_providers(&a, &b, "hedge_after_ms = 500")), KEYS);
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(reply.json()["choices"][0]["message"]["content"], "a");
    assert_eq!((a.hits(), b.hits()), (1, 0));
}

#[tokio::test]
async fn the_hedge_delay_follows_the_observed_p95_once_enough_answers_were_seen() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let route = "hedge_after_ms = 4000\nhedge_delay = \"ttft_p95\"";
    let gw = Gateway::start(&patient(two_providers(&a, &b, route)), KEYS);
    // Twenty quick answers from a: its p95 is a few milliseconds.
    for _ in 0..20 {
        assert_eq!(
            post(&gw.chat_url(), &chat("chat"))
                .await
                .header("x-switchboard-provider"),
            "a"
        );
    }
    let a_health = gw.target_health("a").await;
    let p95 = a_health["latency_p95_ms"]
        .as_u64()
        .expect("a p95 after 20 answers");
    assert!(p95 < 1_000, "{a_health}");
    a.script([Script::Slow(4_500, "slow a")]);
    let started = tokio::time::Instant::now();
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    let took = started.elapsed();
    assert_eq!(reply.header("x-switchboard-provider"), "b");
    assert!(
        took < Duration::from_millis(3_000),
        "hedged after a's p95, not after the 4 s fixed delay: {took:?}"
    );
}

#[tokio::test]
async fn a_hedge_may_retry_the_same_target_after_its_backoff() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    a.script([Script::Slow(4_000, "first"), Script::Answer("second")]);
    let config = patient(two_providers(&a, &b, "hedge_after_ms = 100")).replace(
        r#"targets = ["a/model-a", "b/model-b"]"#,
        r#"targets = ["a/model-a"]"#,
    ) + "policy_config = { retries_per_target = 1 }\n";
    let gw = Gateway::start(&config, KEYS);
    let started = tokio::time::Instant::now();
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    let took = started.elapsed();
    assert_eq!(reply.json()["choices"][0]["message"]["content"], "second");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!((a.hits(), b.hits()), (2, 0));
    assert!(
        gw.metrics()
            .await
            .contains(r#"switchboard_hedges_total{route="chat",outcome="hedge"} 1"#)
    );
}
