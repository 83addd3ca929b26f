//! What the benches share: a loopback upstream answering a fixed chat
//! completion or SSE stream, the release gateway in front of it, and the
//! gateway process's CPU and memory read from /proc.

#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioIo;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Requests in flight at once in the load runs.
pub const CONCURRENCY: usize = 16;

pub type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

pub const COMPLETION: &str = r#"{"id":"chatcmpl-b","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":20,"completion_tokens":9,"total_tokens":29}}"#;

pub fn stream_body() -> String {
    let mut out = String::new();
    for word in ["Hello!", " How", " can", " I", " help", " you", " today", "?"] {
        out.push_str(&format!(
            "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{word}\"}},\"finish_reason\":null}}]}}\n\n"
        ));
    }
    out.push_str("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":8,\"total_tokens\":28}}\n\ndata: [DONE]\n\n");
    out
}

pub async fn upstream() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stream = Bytes::from(stream_body());
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let stream = stream.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let stream = stream.clone();
                    async move {
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let streaming = memchr_stream(&body);
                        let (content_type, body) = if streaming {
                            ("text/event-stream", stream)
                        } else {
                            ("application/json", Bytes::from_static(COMPLETION.as_bytes()))
                        };
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .header("content-type", content_type)
                                .body(Full::new(body))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

fn memchr_stream(body: &[u8]) -> bool {
    body.windows(13).any(|w| w == b"\"stream\":true")
}

pub struct Gateway {
    pub child: std::process::Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// The gateway with the `bench` route over the upstream; `extra` is appended
/// to the config, `files` are (folder, name, source) plugin files.
pub fn start_gateway(
    upstream: std::net::SocketAddr,
    extra: &str,
    files: &[(&str, &str, PathBuf)],
) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bench.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
[plugins]
adapter_dir = "adapters"
policy_dir = "policies"
watch = false
[providers.up]
adapter = "openai"
base_url = "http://{upstream}/v1"
api_key_env = "UP_KEY"
[providers.up.models.m]
input_price = 1.0
output_price = 2.0
[routes.bench]
targets = ["up/m"]
{extra}
"#
        ),
    )
    .unwrap();
    for (folder, name, source) in files {
        let folder = dir.path().join(folder);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::copy(source, folder.join(name)).unwrap();
    }
    // SWITCHBOARD_BENCH_BIN measures another build (an A/B against an older commit).
    let binary = std::env::var_os("SWITCHBOARD_BENCH_BIN").map_or_else(
        || env!("CARGO_BIN_EXE_switchboard").into(),
        std::path::PathBuf::from,
    );
    let mut child = Command::new(binary)
        .args(["--log-format", "json", "--config"])
        .arg(&config)
        .env_clear()
        .env("UP_KEY", "k")
        .env("RUST_LOG", "warn,switchboard::app=info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut lines = stderr.lines();
    let addr = loop {
        let line = lines.next().expect("gateway exited").unwrap();
        let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if event["message"] == "listening" {
            break event["addr"].as_str().unwrap().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Gateway {
        child,
        url: format!("http://{addr}"),
        _dir: dir,
    }
}

/// (user + system CPU seconds, current RSS KiB, peak RSS KiB) of a process.
pub fn process_usage(pid: u32) -> (f64, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let clk_tck: f64 = String::from_utf8(Command::new("getconf").arg("CLK_TCK").output().unwrap().stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap()
    };
    (ticks as f64 / clk_tck, kib("VmRSS:"), kib("VmHWM:"))
}

pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)].as_secs_f64() * 1e6
}

/// Send `count` requests with `CONCURRENCY` in flight; returns sorted latencies and the wall time.
pub async fn load(
    client: &HttpClient,
    url: &str,
    body: &'static str,
    count: usize,
) -> (Vec<Duration>, Duration) {
    let started = Instant::now();
    let per_task = count / CONCURRENCY;
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (client, url) = (client.clone(), url.to_string());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_task);
                for _ in 0..per_task {
                    let request = http::Request::post(&url)
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from_static(body.as_bytes())))
                        .unwrap();
                    let t = Instant::now();
                    let response = client.request(request).await.unwrap();
                    assert_eq!(response.status(), 200);
                    let bytes = response.into_body().collect().await.unwrap().to_bytes();
                    assert!(!bytes.is_empty());
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::with_capacity(count);
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort();
    (all, started.elapsed())
}
