//! Failure handling: fallback, rate limits, deadlines, broken streams.

use crate::support::*;
use serde_json::json;
use std::time::Duration;
use tokio::time::Instant;

fn status(code: u16, body: &str) -> Script {
    Script::Status(code, vec![], body.to_string())
}

#[tokio::test]
async fn falls_back_from_a_failing_first_target() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    a.set_default(status(
        500,
        r#"{"error":{"message":"boom","type":"server_error"}}"#,
    ));
    let gw = Gateway::start(&two_providers(&a, &b, ""), KEYS);
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["choices"][0]["message"]["content"], "b");
    assert_eq!(reply.header("x-switchboard-provider"), "b");
    assert_eq!(reply.header("x-switchboard-attempts"), "2");
    assert_eq!((a.hits(), b.hits()), (1, 1));
    assert_eq!(b.seen()[0].headers["authorization"], "Bearer secret-key-b");
}

#[tokio::test]
async fn exhausted_plan_is_a_clear_502_naming_each_attempt() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    a.set_default(status(500, r#"{"error":{"message":"a is down"}}"#));
    b.set_default(status(502, "bad gateway upstream"));
    let gw = Gateway::start(&two_providers(&a, &b, ""), KEYS);
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(reply.status, 502);
    let error = &reply.json()["error"];
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("a/model-a: a is down") && message.contains("b/model-b: bad gateway upstream"),
        "{message}"
    );
    assert_eq!(error["type"], "api_error");
}

#[tokio::test]
async fn honours_retry_after_and_does_not_hammer_a_rate_limited_target() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    a.set_default(Script::Status(
        429,
        vec![("retry-after", "30".into())],
        r#"{"error":{"message":"slow down","type":"requests"}}"#.into(),
    ));
    let gw = Gateway::start(&two_providers(&a, &b, ""), KEYS);
    for _ in 0..3 {
        let reply = post(&gw.chat_url(), &chat("chat")).await;
        assert_eq!(reply.header("x-switchboard-provider"), "b");
    }
    assert_eq!(a.hits(), 1, "a said wait 30 s: it is not asked again meanwhile");
    assert_eq!(b.hits(), 3);
    let a_health = gw.target_health("a").await;
    assert!(
        a_health["rate_limited_for_ms"].as_u64().unwrap() > 25_000,
        "{a_health}"
    );
}

#[tokio::test]
async fn answers_429_with_retry_after_when_every_target_is_rate_limited() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    for mock in [&a, &b] {
        mock.set_default(Script::Status(
            429,
            vec![("retry-after-ms", "4500".into())],
            "{}".into(),
        ));
    }
    let gw = Gateway::start(&two_providers(&a, &b, ""), KEYS);
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.json()["error"]["type"], "rate_limit_error");
    let wait: u64 = reply.header("retry-after").parse().unwrap();
    assert!((4..=5).contains(&wait), "Retry-After {wait}");
    // While both cool down, the gateway answers 429 itself without calling anyone.
    let again = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(again.status, 429);
    assert!(!again.header("retry-after").is_empty());
    assert_eq!((a.hits(), b.hits()), (1, 1));
}

#[tokio::test]
async fn a_short_cooldown_on_every_target_is_waited_out_before_planning() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    for mock in [&a, &b] {
        mock.script([Script::Status(
            429,
            vec![("retry-after-ms", "300".into())],
            "{}".into(),
        )]);
    }
    let gw = Gateway::start(&two_providers(&a, &b, ""), KEYS);
    assert_eq!(post(&gw.chat_url(), &chat("chat")).await.status, 429);
    // Both cool down for 300 ms, well within max_cooldown_wait_ms (2 s):
    // the next request waits for the first to come back, then asks it.
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-switchboard-provider"), "a");
    assert_eq!((a.hits(), b.hits()), (2, 1));
}

#[tokio::test]
async fn a_hung_upstream_ends_at_its_timeout_and_the_next_target_answers() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    a.set_default(Script::Hang);
    let gw = Gateway::start(&two_providers(&a, &b, ""), KEYS);
    let started = Instant::now();
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    let took = started.elapsed();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-switchboard-provider"), "b");
    assert!(took >= Duration::from_millis(1000), "a had 1 s: {took:?}");
    assert!(took < Duration::from_secs(10), "the deadline fired: {took:?}");
}

#[tokio::test]
async fn a_route_deadline_bounds_the_whole_request_with_a_504() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    a.set_default(Script::Hang);
    b.set_default(Script::Hang);
    let gw = Gateway::start(&two_providers(&a, &b, "timeout_ms = 1500"), KEYS);
    let started = Instant::now();
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert_eq!(reply.json()["error"]["code"], "upstream_timeout");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_bad_request_is_not_retried_elsewhere() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    a.set_default(status(400, r#"{"error":{"message":"Invalid 'temperature': must be <= 2","type":"invalid_request_error","code":null}}"#));
    let gw = Gateway::start(&two_providers(&a, &b, ""), KEYS);
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(reply.status, 400);
    assert!(
        reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Invalid 'temperature'")
    );
    assert_eq!(b.hits(), 0);
}

#[tokio::test]
async fn context_length_and_content_filter_errors_keep_their_codes() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    a.script([
        status(400, r#"{"error":{"message":"This model's maximum context length is 8192 tokens","type":"invalid_request_error","code":"context_length_exceeded"}}"#),
        status(400, r#"{"error":{"message":"flagged","type":"invalid_request_error","code":"content_filter"}}"#),
    ]);
    let gw = Gateway::start(&two_providers(&a, &b, ""), KEYS);
    let first = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(
        (first.status, first.json()["error"]["code"].clone()),
        (400, json!("context_length_exceeded"))
    );
    let second = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(
        (second.status, second.json()["error"]["code"].clone()),
        (400, json!("content_filter"))
    );
    assert_eq!(b.hits(), 0);
}

#[tokio::test]
async fn a_malformed_answer_costs_one_attempt() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    a.set_default(Script::Malformed);
    let gw = Gateway::start(&two_providers(&a, &b, ""), KEYS);
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-switchboard-provider"), "b");
}

#[tokio::test]
async fn an_answer_with_invalid_utf8_where_nobody_reads_is_malformed_and_costs_one_attempt() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    // Valid JSON but for one byte, in a string neither the adapter nor the
    // host reads: passed on, the caller would get text that is not UTF-8.
    let mut answer = mock::completion("model-a", "hi");
    answer["system_fingerprint"] = json!("fp_\u{1}");
    let body = serde_json::to_vec(&answer).unwrap();
    let at = body.windows(6).position(|w| w == b"\\u0001").unwrap();
    let body = [&body[..at], b"\xff", &body[at + 6..]].concat();
    a.set_default(Script::RawFrames(vec![body]));
    let gw = Gateway::start(&two_providers(&a, &b, ""), KEYS);
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-switchboard-provider"), "b");
    assert_eq!(a.hits(), 1, "a was tried first");
    // The provider's fault, not the adapter's.
    assert!(
        !gw.metrics()
            .await
            .contains("switchboard_plugin_failures_total{plugin=\"openai\"")
    );
}

#[tokio::test]
async fn the_provider_auth_error_never_echoes_the_key() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    for mock in [&a, &b] {
        mock.set_default(status(401, r#"{"error":{"message":"Incorrect API key provided: secret-key","type":"invalid_request_error","code":"invalid_api_key"}}"#));
    }
    let gw = Gateway::start(&two_providers(&a, &b, ""), KEYS);
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(reply.status, 502);
    assert!(!reply.text().contains("secret-key"), "{}", reply.text());
    assert!(reply.text().contains("rejected the gateway's credential"));
}

fn stream_request() -> serde_json::Value {
    let mut request = chat("chat");
    request["stream"] = json!(true);
    request
}

/// The stream ended with an error event saying `what`, never `[DONE]`.
fn assert_broke_off(reply: &Reply, what: &str) {
    let data = reply.sse_data();
    assert!(data.last().is_some_and(|last| last.contains(what)), "{data:?}");
    assert!(!data.contains(&"[DONE]".to_string()), "{data:?}");
}

/// A stream whose first target, provider a, answers as `script`: checks
/// that b answered it in full, and returns the reply and a.
async fn stream_failed_over_to_b(script: Script) -> (Reply, MockProvider) {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    a.set_default(script);
    b.set_default(Script::Answer("from b"));
    let gw = Gateway::start(&two_providers(&a, &b, ""), KEYS);
    let reply = post(&gw.chat_url(), &stream_request()).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-switchboard-provider"), "b");
    assert_eq!(reply.streamed_text(), "from b");
    (reply, a)
}

#[tokio::test]
async fn a_stream_fails_over_before_its_first_byte() {
    let (reply, _) = stream_failed_over_to_b(Script::StreamEmpty).await;
    assert_eq!(reply.sse_data().last().unwrap(), "[DONE]");
}

#[tokio::test]
async fn a_stream_whose_first_event_is_malformed_fails_over() {
    // The first event names no model, so the openai adapter forwards it
    // unread; the host's check finds it malformed before anything went to
    // the caller, and the next target answers.
    let malformed = Script::RawStream("data: {not json\n\ndata: [DONE]\n\n".into());
    let (_, a) = stream_failed_over_to_b(malformed).await;
    assert_eq!(a.hits(), 1);
}

#[tokio::test]
async fn a_silent_stream_fails_over_at_its_first_token_deadline() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    a.set_default(Script::Hang);
    let gw = Gateway::start(&two_providers(&a, &b, ""), KEYS);
    let started = Instant::now();
    let reply = post(&gw.chat_url(), &stream_request()).await;
    assert_eq!(reply.header("x-switchboard-provider"), "b");
    assert_eq!(reply.streamed_text(), "b");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1000) && took < Duration::from_secs(10),
        "{took:?}"
    );
}

#[tokio::test]
async fn a_stream_cut_midway_ends_with_an_error_event_not_done() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    a.set_default(Script::StreamCut(vec!["The answer", " is"]));
    let gw = Gateway::start(&two_providers(&a, &b, ""), KEYS);
    let reply = post(&gw.chat_url(), &stream_request()).await;
    assert_eq!(reply.status, 200, "headers went out with the first chunk");
    assert_eq!(reply.streamed_text(), "The answer is");
    let data = reply.sse_data();
    assert!(
        !data.contains(&"[DONE]".to_string()),
        "a cut stream is never complete"
    );
    let error: serde_json::Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert!(
        error["error"]["message"].as_str().unwrap().contains("incomplete"),
        "{error}"
    );
    assert_eq!(b.hits(), 0, "no silent failover after bytes reached the caller");
}

#[tokio::test]
async fn a_stalled_stream_ends_at_the_idle_deadline_with_an_error_event() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    a.set_default(Script::StreamStall(vec!["partial"]));
    let gw = Gateway::start(&two_providers(&a, &b, ""), KEYS);
    let started = Instant::now();
    let reply = post(&gw.chat_url(), &stream_request()).await;
    let took = started.elapsed();
    assert_eq!(reply.streamed_text(), "partial");
    assert_broke_off(&reply, "no event from the provider");
    assert!(
        took >= Duration::from_millis(1000) && took < Duration::from_secs(10),
        "{took:?}"
    );
}

#[tokio::test]
async fn a_malformed_event_mid_stream_ends_with_an_error_event() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let good = r#"{"id":"x","object":"chat.completion.chunk","created":1,"model":"model-a","choices":[{"index":0,"delta":{"content":"ok"},"finish_reason":null}]}"#;
    a.set_default(Script::RawStream(format!(
        "data: {good}\n\ndata: {{not json\n\ndata: [DONE]\n\n"
    )));
    let gw = Gateway::start(&two_providers(&a, &b, ""), KEYS);
    let reply = post(&gw.chat_url(), &stream_request()).await;
    assert_eq!(reply.streamed_text(), "ok");
    assert_broke_off(&reply, "malformed stream event");
}

#[tokio::test]
async fn a_chunk_the_adapter_passed_on_unread_that_is_not_one_is_the_providers_fault() {
    // After the first read names the model, the openai adapter forwards
    // chunks without usage or an error unread: the host's check of every
    // chunk catches this one (JSON, but its choices are not objects) and
    // blames the provider, not the plugin.
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let chunk = |text: &str| {
        format!(
            "data: {{\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"model-a\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}},\"finish_reason\":null}}]}}\n\n"
        )
    };
    a.set_default(Script::RawFrames(vec![
        chunk("ok").into_bytes(),
        format!(
            "{}data: {{\"choices\":[1,2]}}\n\n{}",
            chunk(" more"),
            chunk(" never")
        )
        .into_bytes(),
        b"data: [DONE]\n\n".to_vec(),
    ]));
    let gw = Gateway::start(&two_providers(&a, &b, ""), KEYS);
    let reply = post(&gw.chat_url(), &stream_request()).await;
    assert_eq!(reply.streamed_text(), "ok more");
    assert_broke_off(&reply, "malformed stream event from provider");
    let metrics = gw.metrics().await;
    assert!(
        !metrics.contains("switchboard_plugin_failures_total{plugin=\"openai\""),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_stream_without_done_is_not_passed_off_as_complete() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let good = r#"{"id":"x","object":"chat.completion.chunk","created":1,"model":"model-a","choices":[{"index":0,"delta":{"content":"half"},"finish_reason":null}]}"#;
    a.set_default(Script::RawStream(format!("data: {good}\n\n")));
    let gw = Gateway::start(&two_providers(&a, &b, ""), KEYS);
    let reply = post(&gw.chat_url(), &stream_request()).await;
    assert_eq!(reply.streamed_text(), "half");
    assert_broke_off(&reply, "ended before the answer was complete");
}

#[tokio::test]
async fn a_caller_that_goes_away_cancels_the_upstream_stream() {
    use http_body_util::BodyExt;
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    a.set_default(Script::StreamStall(vec!["first", "second"]));
    let gw = Gateway::start(
        &two_providers(&a, &b, "").replace("idle_timeout_ms = 1000", "idle_timeout_ms = 60000"),
        KEYS,
    );
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let request = http::Request::post(gw.chat_url())
        .body(http_body_util::Full::new(bytes::Bytes::from(
            stream_request().to_string(),
        )))
        .unwrap();
    let mut response = client.request(request).await.unwrap();
    let first = response.body_mut().frame().await.unwrap().unwrap();
    assert!(first.is_data());
    drop(response);
    drop(client);

    let deadline = Instant::now() + Duration::from_secs(5);
    while a.streams_dropped() == 0 {
        assert!(
            Instant::now() < deadline,
            "the upstream stream was not dropped after the caller left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let metrics = gw.metrics().await;
    assert!(metrics.contains(r#"outcome="cancelled"} 1"#), "{metrics}");
    assert_eq!(b.hits(), 0);
}

#[tokio::test]
async fn retries_on_the_same_target_wait_out_a_retry_after_that_fits() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    a.script([
        Script::Status(500, vec![], "{}".into()),
        Script::Status(429, vec![("retry-after", "1".into())], "{}".into()),
    ]);
    let gw = Gateway::start(
        &two_providers(
            &a,
            &b,
            "policy_config = { retries_per_target = 2 }\nmax_attempts = 3",
        ),
        KEYS,
    );
    let started = Instant::now();
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    let took = started.elapsed();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.header("x-switchboard-provider"),
        "a",
        "the third try on `a` answered"
    );
    assert_eq!(reply.header("x-switchboard-attempts"), "3");
    assert_eq!((a.hits(), b.hits()), (3, 0));
    assert!(
        took >= Duration::from_millis(1000),
        "the 1 s Retry-After was honoured: {took:?}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[tokio::test]
async fn a_retry_after_past_the_deadline_moves_on_at_once() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    a.set_default(Script::Status(
        429,
        vec![("retry-after", "60".into())],
        "{}".into(),
    ));
    let gw = Gateway::start(
        &two_providers(
            &a,
            &b,
            "policy_config = { retries_per_target = 1 }\ntimeout_ms = 5000",
        ),
        KEYS,
    );
    let started = Instant::now();
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(reply.header("x-switchboard-provider"), "b");
    assert_eq!(a.hits(), 1, "a is not hit again inside its cooldown");
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn a_connection_reset_before_headers_fails_over() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    a.set_default(Script::Reset);
    let gw = Gateway::start(&two_providers(&a, &b, ""), KEYS);
    for request in [chat("chat"), stream_request()] {
        let reply = post(&gw.chat_url(), &request).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.header("x-switchboard-provider"), "b");
        assert_eq!(reply.header("x-switchboard-attempts"), "2");
    }
    assert_eq!((a.hits(), b.hits()), (2, 2));
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"provider="a",model="model-a",outcome="transport"} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_single_500_is_retried_on_the_same_target_after_a_backoff() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    a.script([status(500, r#"{"error":{"message":"hiccup"}}"#)]);
    let config = two_providers(&a, &b, "policy_config = { retries_per_target = 1 }");
    let gw = Gateway::start(&config, KEYS);
    let started = Instant::now();
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    let took = started.elapsed();
    assert_eq!(reply.json()["choices"][0]["message"]["content"], "a");
    assert_eq!(reply.header("x-switchboard-attempts"), "2");
    assert_eq!((a.hits(), b.hits()), (2, 0));
    assert!(
        took >= Duration::from_millis(50) && took < Duration::from_secs(5),
        "one backoff (100 ms with jitter down to 50 ms) between the two: {took:?}"
    );
}

#[tokio::test]
async fn targets_that_stay_overloaded_end_in_a_503_after_one_attempt_each() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let overloaded = status(503, r#"{"error":{"message":"overloaded, try later"}}"#);
    a.set_default(overloaded.clone());
    b.set_default(overloaded);
    let gw = Gateway::start(&two_providers(&a, &b, ""), KEYS);
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    let message = reply.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("a/model-a") && message.contains("b/model-b"),
        "{message}"
    );
    assert_eq!(
        (a.hits(), b.hits()),
        (1, 1),
        "max_attempts 3, but no target is hammered"
    );
}

#[tokio::test]
async fn a_caller_that_goes_away_cancels_a_whole_answer_attempt_and_every_retry() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    a.set_default(Script::Hang);
    let gw = Gateway::start(&two_providers(&a, &b, ""), KEYS);
    let gave_up = tokio::time::timeout(Duration::from_millis(300), post(&gw.chat_url(), &chat("chat"))).await;
    assert!(gave_up.is_err(), "a hangs: the caller gives up first");
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.streams_dropped() == 0 {
        assert!(
            Instant::now() < deadline,
            "the upstream request was not dropped after the caller left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // a's own 1 s deadline has passed by now: had the request lived on, b would have been tried.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!((a.hits(), b.hits()), (1, 0), "no retry for a caller who left");
}
