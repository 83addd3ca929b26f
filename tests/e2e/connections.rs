//! Slow and abusive connections, with real sockets: trickled headers and
//! bodies, idle and silent connections, a file-descriptor limit, a declared
//! body far over the limit, and requests during the shutdown drain.

use crate::support::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Short deadlines so the tests see them fire.
const SERVER: &str =
    "[server]\nheader_read_timeout_ms = 500\nbody_read_timeout_ms = 500\nkeep_alive_timeout_ms = 700\n";

async fn gateway() -> (MockProvider, MockProvider, Gateway) {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let config = format!("{SERVER}{}", two_providers(&a, &b, ""));
    let gw = Gateway::start(&config, KEYS);
    (a, b, gw)
}

async fn connect(gw: &Gateway) -> TcpStream {
    TcpStream::connect(gw.url.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Read until the gateway closes the connection; what it sent, and how long
/// that took. Panics if it is still open after `within`.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(started + within, stream.read(&mut buf)).await {
            Err(_) => panic!(
                "still open after {within:?}; received {:?}",
                String::from_utf8_lossy(&received)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
    (String::from_utf8_lossy(&received).into_owned(), started.elapsed())
}

fn chat_head(content_length: usize) -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: {content_length}\r\n\r\n"
    )
}

#[tokio::test]
async fn silent_and_trickling_connections_are_closed_after_the_header_deadline() {
    let (_a, _b, gw) = gateway().await;
    // Nothing at all; the first bytes of the HTTP/2 preface (protocol
    // detection); a request line and headers trickled a byte at a time.
    let mut silent = connect(&gw).await;
    let mut sniffing = connect(&gw).await;
    sniffing.write_all(b"PRI * HT").await.unwrap();
    let mut trickling = connect(&gw).await;
    let trickle = tokio::spawn(async move {
        for byte in b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nx-slow: 1234567890" {
            if trickling.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        trickling
    });
    for (name, stream) in [("silent", &mut silent), ("sniffing", &mut sniffing)] {
        let (received, _) = read_until_closed(stream, Duration::from_secs(5)).await;
        assert_eq!(received, "", "{name}: closed without an answer");
    }
    let mut trickling = trickle.await.unwrap();
    let (received, _) = read_until_closed(&mut trickling, Duration::from_secs(5)).await;
    assert_eq!(received, "");
    assert!(
        gw.metrics()
            .await
            .contains("switchboard_connections_closed_total{reason=\"header_timeout\"} 3"),
        "{}",
        gw.metrics().await
    );
    // The gateway still serves.
    assert_eq!(post(&gw.chat_url(), &chat("chat")).await.status, 200);
}

#[tokio::test]
async fn a_body_that_never_completes_gets_408_and_a_close() {
    let (a, _b, gw) = gateway().await;
    let mut stream = connect(&gw).await;
    stream.write_all(chat_head(100).as_bytes()).await.unwrap();
    stream.write_all(b"{\"model\": \"chat\",").await.unwrap();
    let (received, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(received.starts_with("HTTP/1.1 408"), "{received}");
    assert!(received.contains("connection: close"), "{received}");
    assert!(received.contains("\"code\":\"request_timeout\""), "{received}");
    assert_eq!(a.hits(), 0);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let (_a, _b, gw) = gateway().await;
    let mut stream = connect(&gw).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: gw\r\n\r\n")
        .await
        .unwrap();
    let (received, took) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(received.starts_with("HTTP/1.1 200"), "{received}");
    assert!(
        took >= Duration::from_millis(600),
        "kept alive for a while first: {took:?}"
    );
    assert!(
        gw.metrics()
            .await
            .contains("switchboard_connections_closed_total{reason=\"idle\"} 1")
    );
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_refused_at_once() {
    let (a, _b, gw) = gateway().await;
    let mut stream = connect(&gw).await;
    stream
        .write_all(chat_head(1_000_000_000).as_bytes())
        .await
        .unwrap();
    stream.write_all(b"{}").await.unwrap();
    let mut buf = [0u8; 4096];
    // The answer comes without waiting for the body (or any deadline).
    let n = tokio::time::timeout(Duration::from_millis(400), stream.read(&mut buf))
        .await
        .expect("413 at once")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(a.hits(), 0);
}

#[tokio::test]
async fn the_scheme_of_a_gateway_key_is_case_insensitive() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let config = format!(
        "{}\n[[gateway_keys]]\nname = \"app\"\nkey_env = \"GW_KEY\"\n",
        two_providers(&a, &b, "")
    );
    let env = [KEYS, &[("GW_KEY", "gw-secret")]].concat();
    let gw = Gateway::start(&config, &env);
    let body = chat("chat").to_string().into_bytes();
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let auth = format!("{scheme} gw-secret");
        let reply = post_with(&gw.chat_url(), body.clone(), &[("authorization", &auth)]).await;
        assert_eq!(reply.status, 200, "{scheme}");
    }
    let reply = post_with(&gw.chat_url(), body, &[("authorization", "Basic gw-secret")]).await;
    assert_eq!(reply.status, 401);
}

#[tokio::test]
async fn at_the_connection_cap_the_gateway_waits_instead_of_failing() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let config = format!(
        "[server]\nheader_read_timeout_ms = 1000\n{}",
        two_providers(&a, &b, "")
    );
    // 256 descriptors leave room for 96 client connections.
    let gw = Gateway::start_with_fd_limit(&config, KEYS, 256);
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(connect(&gw).await);
    }
    // Behind 300 silent connections, a real request is served once the
    // header deadline has cleared them out.
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(reply.status, 200);
    let logs = gw.logs();
    assert!(!logs.contains("accept failed"), "never accepted into EMFILE");
    assert!(logs.contains("connection limit reached"));
    let metrics = gw.metrics().await;
    assert!(
        !metrics.contains("switchboard_connection_limit_reached_total 0"),
        "{metrics}"
    );
    assert!(metrics.contains("switchboard_accept_errors_total 0"), "{metrics}");
}

#[tokio::test]
async fn shutdown_refuses_new_work_cleanly_and_ends_open_streams_with_an_error() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    a.set_default(Script::StreamStall(vec!["Hello", " there"]));
    // The stall must outlast the 1 s grace, not the stream's idle deadline.
    let config = two_providers(&a, &b, "").replace("idle_timeout_ms = 1000", "idle_timeout_ms = 30000");
    let gw = Gateway::start(&config, KEYS);
    let addr = gw.url.trim_start_matches("http://").to_string();

    // A stream in flight, and a request whose headers are half sent.
    let body = streamed_chat("chat").to_string();
    let mut stream = connect(&gw).await;
    stream
        .write_all(format!("{}{body}", chat_head(body.len())).as_bytes())
        .await
        .unwrap();
    let mut first = [0u8; 1024];
    let n = stream.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    let mut late = connect(&gw).await;
    late.write_all(b"GET /v1/models HTTP/1.1\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    gw.signal("TERM");
    // New connections are refused at once, not reset after the drain.
    let refused = async {
        loop {
            if TcpStream::connect(&addr).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_millis(500), refused)
        .await
        .expect("the listener closes when the drain begins");

    // The half-sent request, completed during the drain, gets a clean 503.
    late.write_all(b"host: gw\r\n\r\n").await.unwrap();
    let (answer, _) = read_until_closed(&mut late, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert!(answer.contains("shutting_down"), "{answer}");

    // The stall outlives the 1 s grace: the stream ends with the in-band error.
    let (rest, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    let events: Vec<&str> = rest
        .split("\n\n")
        .filter_map(|e| e.split("data: ").nth(1))
        .collect();
    let last = events.last().expect("events after the first read");
    assert!(last.contains("\"code\":\"shutting_down\""), "{rest}");
    assert!(!rest.contains("[DONE]"));
}

#[tokio::test]
async fn the_log_is_written_out_before_the_process_exits() {
    let (_a, _b, mut gw) = gateway().await;
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(reply.status, 200);
    let id = reply.header("x-switchboard-request-id").to_string();
    gw.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.is_running() {
        assert!(Instant::now() < deadline, "still running after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A thread of its own writes the log: what it had queued is not lost.
    for needle in [id.as_str(), "shutting down"] {
        assert!(
            gw.wait_for_log(needle, Duration::from_secs(2)).await,
            "{needle} not logged: {}",
            gw.logs()
        );
    }
}
