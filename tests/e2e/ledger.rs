//! The request ledger: one record per request in SQLite, exact cost, and
//! a database that is slow, locked or killed mid-write never costs a
//! request.

use crate::support::*;
use rusqlite::Connection;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::time::Instant;

/// `two_providers` with a ledger beside the config file, and `a`'s cached
/// input at half price.
fn with_ledger(a: &MockProvider, b: &MockProvider) -> String {
    ledger_with(a, b, "")
}

/// As `with_ledger`, with more `[ledger]` settings.
fn ledger_with(a: &MockProvider, b: &MockProvider, settings: &str) -> String {
    let config = two_providers(a, b, "").replacen(
        "output_price = 2.0\n",
        "output_price = 2.0\ncached_input_price = 0.5\n",
        2,
    );
    format!("[ledger]\npath = \"ledger.db\"\n{settings}\n{config}")
}

fn open(gw: &Gateway) -> Connection {
    Connection::open(gw.dir.path().join("ledger.db")).unwrap()
}

/// Wait until the ledger holds `n` requests.
pub async fn records(gw: &Gateway, n: i64) -> Connection {
    let db = open(gw);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let count: i64 = db
            .query_row("SELECT count(*) FROM requests", [], |r| r.get(0))
            .unwrap_or(0);
        if count >= n || Instant::now() > deadline {
            assert_eq!(count, n, "ledger records");
            return db;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One request's row as JSON, by the gateway's id.
pub fn row(db: &Connection, id: &str) -> Value {
    db.query_row(
        "SELECT route, plan, provider, model, answered_model, prompt_tokens, cache_read_tokens,
                completion_tokens, provider_cost_usd, cost_estimated, charged_usd, status, outcome,
                error_class, stream, caller_request_id, tags, endpoint
         FROM requests WHERE id = ?1",
        [id],
        |r| {
            Ok(json!({
                "route": r.get::<_, Option<String>>(0)?,
                "plan": serde_json::from_str::<Value>(&r.get::<_, String>(1)?).unwrap(),
                "provider": r.get::<_, Option<String>>(2)?,
                "model": r.get::<_, Option<String>>(3)?,
                "answered_model": r.get::<_, Option<String>>(4)?,
                "prompt_tokens": r.get::<_, Option<i64>>(5)?,
                "cache_read_tokens": r.get::<_, Option<i64>>(6)?,
                "completion_tokens": r.get::<_, Option<i64>>(7)?,
                "provider_cost_usd": r.get::<_, f64>(8)?,
                "cost_estimated": r.get::<_, bool>(9)?,
                "charged_usd": r.get::<_, f64>(10)?,
                "status": r.get::<_, i64>(11)?,
                "outcome": r.get::<_, String>(12)?,
                "error_class": r.get::<_, Option<String>>(13)?,
                "stream": r.get::<_, bool>(14)?,
                "caller_request_id": r.get::<_, Option<String>>(15)?,
                "tags": serde_json::from_str::<Value>(&r.get::<_, String>(16)?).unwrap(),
                "endpoint": r.get::<_, Option<String>>(17)?,
            }))
        },
    )
    .unwrap()
}

fn attempts(db: &Connection, id: &str) -> Vec<(String, String, Option<i64>, bool)> {
    let mut query = db
        .prepare(
            "SELECT a.value ->> 'provider', a.value ->> 'outcome', a.value ->> 'http_status',
                    coalesce(a.value ->> 'estimated', false)
             FROM requests r, json_each(r.attempts) a WHERE r.id = ?1 ORDER BY a.key",
        )
        .unwrap();
    query
        .query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The mock's usage (11 prompt tokens, 3 of them cached, 7 completion) at
/// $1 input, $0.50 cached input and $2 output per million.
const MOCK_COST: f64 = (8.0 * 1.0 + 3.0 * 0.5 + 7.0 * 2.0) / 1e6;

#[tokio::test]
async fn openai_cached_and_reasoning_tokens_are_priced_at_their_own_rates() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let config = with_ledger(&a, &b).replacen(
        "cached_input_price = 0.5\n",
        "cached_input_price = 0.5\nreasoning_price = 4.0\n",
        1,
    );
    let answer = json!({
        "id": "chatcmpl-r", "object": "chat.completion", "created": 1, "model": "model-a",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "42", "refusal": null},
                     "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150,
                  "prompt_tokens_details": {"cached_tokens": 40},
                  "completion_tokens_details": {"reasoning_tokens": 30}}
    });
    a.set_default(Script::Status(
        200,
        vec![("content-type", "application/json".into())],
        answer.to_string(),
    ));
    let gw = Gateway::start(&config, KEYS);
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // 60 fresh prompt tokens at $1, 40 cached at $0.50, 20 plain completion
    // tokens at $2 and 30 reasoning tokens at $4 per million: each counted once.
    let expected = (60.0 * 1.0 + 40.0 * 0.5 + 20.0 * 2.0 + 30.0 * 4.0) / 1e6;
    let cost: f64 = reply.header("x-switchboard-cost-usd").parse().unwrap();
    assert!((cost - expected).abs() < 1e-12, "{cost} != {expected}");
    let id = reply.header("x-switchboard-request-id").to_string();
    let db = records(&gw, 1).await;
    let (reasoning, charged): (i64, f64) = db
        .query_row(
            "SELECT reasoning_tokens, charged_usd FROM requests WHERE id = ?1",
            [&id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(reasoning, 30);
    assert!((charged - expected).abs() < 1e-12);
}

#[tokio::test]
async fn a_failover_leaves_one_record_with_both_attempts_and_the_exact_cost() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    a.set_default(Script::Status(500, vec![], "{}".into()));
    let gw = Gateway::start(&with_ledger(&a, &b), KEYS);
    let request = serde_json::to_vec(&chat("chat")).unwrap();
    let reply = post_with(
        &gw.chat_url(),
        request,
        &[("x-request-id", "caller-7"), ("x-switchboard-tag-team", "search")],
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-switchboard-provider"), "b");
    let cost: f64 = reply.header("x-switchboard-cost-usd").parse().unwrap();
    assert!((cost - MOCK_COST).abs() < 1e-9, "{cost} != {MOCK_COST}");
    let id = reply.header("x-switchboard-request-id").to_string();

    let db = records(&gw, 1).await;
    let r = row(&db, &id);
    assert_eq!(r["route"], "chat");
    assert_eq!(r["endpoint"], "/v1/chat/completions");
    assert_eq!(r["plan"], json!(["a/model-a", "b/model-b"]));
    assert_eq!(
        (r["provider"].clone(), r["model"].clone()),
        (json!("b"), json!("model-b"))
    );
    assert_eq!(r["answered_model"], "model-b", "what the answer said");
    assert_eq!(
        (
            r["prompt_tokens"].clone(),
            r["cache_read_tokens"].clone(),
            r["completion_tokens"].clone()
        ),
        (json!(11), json!(3), json!(7))
    );
    assert_eq!(
        (r["status"].clone(), r["outcome"].clone()),
        (json!(200), json!("answered"))
    );
    assert_eq!(r["caller_request_id"], "caller-7");
    assert_eq!(r["tags"], json!([["team", "search"]]));
    assert!((r["charged_usd"].as_f64().unwrap() - MOCK_COST).abs() < 1e-12);
    // `a`'s 500 cost nothing: providers do not bill a refusal.
    assert!((r["provider_cost_usd"].as_f64().unwrap() - MOCK_COST).abs() < 1e-12);
    assert_eq!(r["cost_estimated"], false);
    assert_eq!(
        attempts(&db, &id),
        vec![
            ("a".into(), "server_error".into(), Some(500), false),
            ("b".into(), "success".into(), Some(200), false),
        ]
    );
    assert!(
        gw.logs().contains(&format!("\"request_id\":\"{id}\"")),
        "one log line per request"
    );
}

#[tokio::test]
async fn streams_refusals_and_broken_streams_are_recorded_too() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let gw = Gateway::start(&with_ledger(&a, &b), KEYS);

    // A stream that asked for usage gets its cost in the usage chunk.
    let reply = post(&gw.chat_url(), &streamed_chat("chat")).await;
    let chunks = reply.valid_chunks();
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["prompt_tokens"], 11);
    let streamed_cost = usage["cost_usd"].as_f64().expect("the cost in the usage chunk");
    // The stream's usage chunk has no cached tokens: 11 at $1, 7 at $2.
    assert!((streamed_cost - 25e-6).abs() < 1e-12, "{streamed_cost}");
    let streamed = reply.header("x-switchboard-request-id").to_string();

    let unknown = post(&gw.chat_url(), &chat("no-such-route")).await;
    assert_eq!(unknown.status, 404);
    let refused = unknown.header("x-switchboard-request-id").to_string();

    // A stream that breaks after its first chunk, with no continuation.
    a.set_default(Script::StreamCut(vec!["Hel", "lo"]));
    let broken_reply = post(&gw.chat_url(), &streamed_chat("chat")).await;
    assert!(broken_reply.sse_data().last().unwrap().contains("\"error\""));
    let broken = broken_reply.header("x-switchboard-request-id").to_string();

    let db = records(&gw, 3).await;
    let r = row(&db, &streamed);
    assert_eq!(
        (r["stream"].clone(), r["outcome"].clone()),
        (json!(true), json!("answered"))
    );
    assert!((r["charged_usd"].as_f64().unwrap() - streamed_cost).abs() < 1e-12);
    let r = row(&db, &refused);
    assert_eq!(
        (r["status"].clone(), r["outcome"].clone()),
        (json!(404), json!("failed"))
    );
    assert_eq!(r["error_class"], "model_not_found");
    assert_eq!(r["route"], Value::Null);
    let r = row(&db, &broken);
    assert_eq!(
        (r["status"].clone(), r["outcome"].clone()),
        (json!(200), json!("broken"))
    );
    assert_eq!(r["provider"], Value::Null, "nobody answered");
    assert_eq!(r["charged_usd"], 0.0, "a broken answer is not charged");
    // It consumed tokens: the prompt is estimated and marked so.
    assert!(r["provider_cost_usd"].as_f64().unwrap() > 0.0);
    assert_eq!(r["cost_estimated"], true);
    let tried = attempts(&db, &broken);
    assert_eq!(tried.len(), 1);
    assert_eq!(tried[0].0, "a");
    assert!(tried[0].3, "estimated");
}

#[tokio::test]
async fn a_hedge_that_loses_is_recorded_cancelled_with_an_estimated_cost() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let config = with_ledger(&a, &b).replacen(
        "targets = [\"a/model-a\", \"b/model-b\"]\n",
        "targets = [\"a/model-a\", \"b/model-b\"]\nhedge_after_ms = 50\n",
        1,
    );
    // `a` is slow: `b` is started beside it after 50 ms and answers first.
    a.set_default(Script::Slow(800, "late"));
    let gw = Gateway::start(&config, KEYS);
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-switchboard-provider"), "b");
    let id = reply.header("x-switchboard-request-id").to_string();
    let db = records(&gw, 1).await;
    let r = row(&db, &id);
    assert_eq!(
        attempts(&db, &id),
        vec![
            ("a".into(), "cancelled".into(), None, true),
            ("b".into(), "success".into(), Some(200), false),
        ]
    );
    // The caller pays for the answer; the abandoned attempt read the whole
    // prompt, so what the providers cost is more, and marked estimated.
    assert!((r["charged_usd"].as_f64().unwrap() - MOCK_COST).abs() < 1e-12);
    assert!(r["provider_cost_usd"].as_f64().unwrap() > MOCK_COST);
    assert_eq!(r["cost_estimated"], true);
}

#[tokio::test]
async fn a_locked_database_costs_records_not_requests_and_the_writer_recovers() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let gw = Gateway::start(&with_ledger(&a, &b), KEYS);
    assert_eq!(post(&gw.chat_url(), &chat("chat")).await.status, 200);
    let db = records(&gw, 1).await;
    // Another process holds the database's write lock.
    db.execute_batch("BEGIN EXCLUSIVE").unwrap();
    for _ in 0..3 {
        let reply = post(&gw.chat_url(), &chat("chat")).await;
        assert_eq!(
            reply.status, 200,
            "requests are served while the ledger cannot write"
        );
    }
    let dropped = "switchboard_ledger_records_dropped_total{reason=\"write_failed\"}";
    let deadline = Instant::now() + Duration::from_secs(15);
    while sample(&gw.metrics().await, dropped) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        sample(&gw.metrics().await, dropped) >= 1,
        "{}",
        gw.metrics().await
    );
    assert!(gw.logs().contains("ledger write failed"));
    db.execute_batch("ROLLBACK").unwrap();
    // Writable again: the next records land.
    let lost = sample(&gw.metrics().await, dropped) as i64;
    assert_eq!(post(&gw.chat_url(), &chat("chat")).await.status, 200);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let count: i64 = db
            .query_row("SELECT count(*) FROM requests", [], |r| r.get(0))
            .unwrap();
        if count + lost >= 5 || Instant::now() > deadline {
            assert_eq!(count + lost, 5, "every record written or counted as lost");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        gw.wait_for_log("ledger writes recovered", Duration::from_secs(5))
            .await
    );
}

#[tokio::test]
async fn a_full_queue_drops_records_not_requests_and_counts_them() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let config = ledger_with(&a, &b, "queue_capacity = 2");
    let gw = Gateway::start(&config, KEYS);
    let db = open(&gw);
    db.execute_batch("BEGIN EXCLUSIVE").unwrap();
    // The writer takes the first record and waits on the lock (2 s)...
    assert_eq!(post(&gw.chat_url(), &chat("chat")).await.status, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    // ...so the queue fills with the next two, and the two after are dropped.
    for _ in 0..4 {
        assert_eq!(post(&gw.chat_url(), &chat("chat")).await.status, 200);
    }
    let metrics = gw.metrics().await;
    assert_eq!(sample(&metrics, "switchboard_ledger_queue_depth"), 2, "{metrics}");
    let full = "switchboard_ledger_records_dropped_total{reason=\"queue_full\"}";
    // Two, or three on a machine so busy the writer had not yet taken the first.
    let dropped = sample(&metrics, full);
    assert!((2..=3).contains(&dropped), "{metrics}");
    // The log has a writer thread of its own: the line may come a little later.
    assert!(gw.wait_for_log("ledger queue full", Duration::from_secs(5)).await);
    db.execute_batch("ROLLBACK").unwrap();
    // Every record is written or counted as lost, and the queue drains.
    let failed = "switchboard_ledger_records_dropped_total{reason=\"write_failed\"}";
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let metrics = gw.metrics().await;
        let written: i64 = db
            .query_row("SELECT count(*) FROM requests", [], |r| r.get(0))
            .unwrap();
        let accounted = written as u64 + sample(&metrics, full) + sample(&metrics, failed);
        if accounted == 5 && sample(&metrics, "switchboard_ledger_queue_depth") == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{written} written\n{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn records_past_retention_are_pruned_and_newer_ones_kept() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let config = ledger_with(&a, &b, "retention_days = 7");
    let gw = Gateway::start(&config, KEYS);
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    let kept = reply.header("x-switchboard-request-id").to_string();
    let db = records(&gw, 1).await;
    // Records of 8 and 6 days ago, as an older gateway would have left them
    // (ids are UUIDv7: their first 12 hex digits are the Unix milliseconds).
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for (days, id) in [(8, "old"), (6, "recent")] {
        let at_ms = now_ms - days * 86_400_000;
        db.execute(
            "INSERT INTO requests (id, caller_request_id, at_ms, tags, stream, plan, provider_cost_usd,
                 cost_estimated, charged_usd, latency_ms, status, outcome, attempts)
             VALUES (printf('%012x%020d', ?1, 1), ?2, ?1, '[]', 0, '[]', 0, 0, 0, 1, 200, 'answered', '[]')",
            rusqlite::params![at_ms, id],
        )
        .unwrap();
        db.execute(
            "INSERT INTO feedback (request_id, score, at_ms) VALUES (printf('%012x%020d', ?1, 1), 1.0, ?1)",
            [at_ms],
        )
        .unwrap();
    }
    // Pruning runs at start and every hour after.
    let gw = gw.restart(KEYS);
    let db = open(&gw);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<String> = db
            .prepare("SELECT coalesce(caller_request_id, id) FROM requests ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        if left.len() == 2 || Instant::now() > deadline {
            assert_eq!(left, ["recent", kept.as_str()]);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let feedback: i64 = db
        .query_row("SELECT count(*) FROM feedback", [], |r| r.get(0))
        .unwrap();
    assert_eq!(feedback, 1, "the old record's feedback went with it");
}

#[tokio::test]
async fn killing_the_gateway_mid_write_never_corrupts_the_ledger() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let mut gw = Gateway::start(&with_ledger(&a, &b), KEYS);
    let url = gw.chat_url();
    let load = tokio::spawn(async move {
        let request = chat("chat");
        loop {
            let calls = (0..16).map(|_| post(&url, &request));
            futures_util::future::join_all(calls).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gw.kill();
    load.abort();
    let db = open(&gw);
    let check: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    let count: i64 = db
        .query_row("SELECT count(*) FROM requests", [], |r| r.get(0))
        .unwrap();
    assert!(count > 0, "what was committed before the kill is there");
    let broken: i64 = db
        .query_row(
            "SELECT count(*) FROM requests WHERE NOT json_valid(attempts)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(broken, 0, "every record is whole");
}

#[tokio::test]
async fn a_ledger_that_cannot_be_opened_stops_start_up_naming_the_file() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let dir = tempfile::tempdir().unwrap();
    // Its folder is a file.
    std::fs::write(dir.path().join("blocker"), b"not a folder").unwrap();
    let config = format!(
        "[ledger]\npath = \"blocker/ledger.db\"\n{}",
        two_providers(&a, &b, "")
    );
    let stderr = refused_start_in(dir.path(), &config);
    assert!(
        stderr.contains("cannot open the ledger") && stderr.contains("blocker/ledger.db"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_caller_that_goes_away_leaves_a_cancelled_record_of_what_was_spent() {
    use http_body_util::BodyExt;
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    a.set_default(Script::StreamStall(vec!["first", "second"]));
    let config = with_ledger(&a, &b).replace("idle_timeout_ms = 1000", "idle_timeout_ms = 60000");
    let gw = Gateway::start(&config, KEYS);
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let request = http::Request::post(gw.chat_url())
        .body(http_body_util::Full::new(bytes::Bytes::from(
            streamed_chat("chat").to_string(),
        )))
        .unwrap();
    let mut response = client.request(request).await.unwrap();
    let id = response.headers()["x-switchboard-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(response.body_mut().frame().await.unwrap().unwrap().is_data());
    drop(response);
    drop(client);

    let db = records(&gw, 1).await;
    let r = row(&db, &id);
    assert_eq!(
        (r["status"].clone(), r["outcome"].clone()),
        (json!(200), json!("cancelled"))
    );
    assert_eq!(r["charged_usd"], 0.0, "an answer the caller left is not charged");
    assert_eq!(r["cost_estimated"], true, "but the provider spent its prompt");
    assert_eq!(
        attempts(&db, &id),
        vec![("a".into(), "cancelled".into(), Some(200), true)]
    );
}

#[tokio::test]
async fn decisions_are_recorded_only_when_asked_with_the_policys_inputs_and_plan() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let config = ledger_with(&a, &b, "record_decisions = true");
    let gw = Gateway::start(&config, KEYS);
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    let id = reply.header("x-switchboard-request-id").to_string();
    let db = records(&gw, 1).await;
    let decision: String = db
        .query_row(
            "SELECT decision FROM decisions WHERE request_id = ?1",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    let decision: Value = serde_json::from_str(&decision).unwrap();
    assert_eq!(decision["policy"], "priority");
    assert_eq!(decision["decided_by"], "priority");
    assert_eq!(decision["facts"]["model"], "chat");
    assert_eq!(decision["candidates"][1]["provider"], "b");
    assert_eq!(decision["candidates"][0]["health"]["circuit"], "closed");
    assert_eq!(decision["plan"], json!([0, 1]));

    let gw = Gateway::start(&with_ledger(&a, &b), KEYS);
    post(&gw.chat_url(), &chat("chat")).await;
    let db = records(&gw, 1).await;
    let kept: i64 = db
        .query_row("SELECT count(*) FROM decisions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(kept, 0, "off by default");
}
