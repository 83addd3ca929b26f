//! What the benches share: a loopback upstream answering a fixed chat
//! completion or SSE stream, the release gateway in front of it, and the
//! gateway process's CPU and memory read from /proc.

#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
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

/// A 783-byte chat completion (the reference workload of issue 13).
pub fn completion_783() -> String {
    let text = "Hello! I can help with that. Here is a short answer that runs to a few sentences, \
as a typical small completion does: the gateway must pass it on unchanged, count its tokens and \
price them, and say who answered. Nothing in it is special; its size is what matters here, \
about the median of real traffic.";
    let body = format!(
        r#"{{"id":"chatcmpl-bench0000000000000000000001","object":"chat.completion","created":1733000000,"model":"m","choices":[{{"index":0,"message":{{"role":"assistant","content":"{text}","refusal":null}},"logprobs":null,"finish_reason":"stop"}}],"usage":{{"prompt_tokens":20,"completion_tokens":62,"total_tokens":82,"prompt_tokens_details":{{"cached_tokens":0}}}},"system_fingerprint":"fp_b"}}"#
    );
    let pad = 783usize.saturating_sub(body.len());
    body.replacen("fp_b", &format!("fp_b{}", "0".repeat(pad)), 1)
}

/// A 41-event stream: a role chunk, 38 content chunks, the finish and the
/// usage chunk, then `[DONE]` (about 10 KiB, sent in one write). As OpenAI
/// sends it when usage is asked for (the gateway asks by default), every
/// chunk before the usage chunk says `"usage":null`.
pub fn stream_41() -> String {
    let chunk = |delta: &str, finish: &str| {
        format!(
            "data: {{\"id\":\"chatcmpl-bench0000000000000000000001\",\"object\":\"chat.completion.chunk\",\"created\":1733000000,\"model\":\"m\",\"system_fingerprint\":\"fp_b\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"logprobs\":null,\"finish_reason\":{finish}}}],\"usage\":null}}\n\n"
        )
    };
    let mut out = chunk(r#"{"role":"assistant","content":"","refusal":null}"#, "null");
    for i in 0..38 {
        out.push_str(&chunk(&format!(r#"{{"content":" word{i:02}"}}"#), "null"));
    }
    out.push_str(&chunk("{}", "\"stop\""));
    out.push_str("data: {\"id\":\"chatcmpl-bench0000000000000000000001\",\"object\":\"chat.completion.chunk\",\"created\":1733000000,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":39,\"total_tokens\":59}}\n\ndata: [DONE]\n\n");
    out
}

pub async fn upstream() -> std::net::SocketAddr {
    upstream_with(
        Bytes::from_static(COMPLETION.as_bytes()),
        Bytes::from(stream_body()),
    )
    .await
}

/// An upstream answering `completion` to a whole request and `stream` (one
/// write) to a streaming one.
pub async fn upstream_with(completion: Bytes, stream: Bytes) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (stream, completion) = (stream.clone(), completion.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (stream, completion) = (stream.clone(), completion.clone());
                    async move {
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let streaming = memchr_stream(&body);
                        let (content_type, body) = if streaming {
                            ("text/event-stream", stream)
                        } else {
                            ("application/json", completion)
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
    warm(upstream);
    spawn(upstream, extra, files, true, "", QUIET, &[])
}

/// A variant of the bench gateway: `keyed` (else its provider takes no key,
/// so there is no credential to scrub from its answers), and `plugins`
/// added to its `[plugins]` table.
pub fn start_gateway_variant(
    upstream: std::net::SocketAddr,
    extra: &str,
    keyed: bool,
    plugins: &str,
    log: &str,
) -> Gateway {
    warm(upstream);
    spawn(upstream, extra, &[], keyed, plugins, log, &[])
}

/// A bench gateway run by another program (`wrapper`, then the gateway's
/// command line): valgrind, for the instruction counts.
pub fn start_gateway_under(
    upstream: std::net::SocketAddr,
    extra: &str,
    plugins: &str,
    log: &str,
    wrapper: &[String],
) -> Gateway {
    warm(upstream);
    spawn(upstream, extra, &[], true, plugins, log, wrapper)
}

/// Whether the gateway variant `name` is measured:
/// `SWITCHBOARD_BENCH_ONLY=default,log` keeps the variants whose names
/// contain one of the words; unset, every one is.
pub fn measured(name: &str) -> bool {
    std::env::var("SWITCHBOARD_BENCH_ONLY")
        .map_or(true, |only| only.split(',').any(|word| name.contains(word)))
}

/// The benches' log filter: warnings, and the start-up lines the harness
/// reads the address from; no line per request (as nginx has no access log).
pub const QUIET: &str = "warn,switchboard::app=info";

/// Warm the plugin compile cache the benches' gateways start from. A
/// deployed gateway keeps one (on by default) and starts from it; the
/// benches' gateways run with a cleared environment (no `HOME`, so no
/// default cache), and without one every start would compile every
/// component, so the peak resident memory read after the load would be the
/// compiler's, not the load's. The cache lives in the target folder; the
/// first start of a bench process fills it if it is empty, and is not
/// measured.
fn warm(upstream: std::net::SocketAddr) {
    static WARM: std::sync::Once = std::sync::Once::new();
    WARM.call_once(|| drop(spawn(upstream, "", &[], true, "", QUIET, &[])));
}

fn spawn(
    upstream: std::net::SocketAddr,
    extra: &str,
    files: &[(&str, &str, PathBuf)],
    keyed: bool,
    plugins: &str,
    log: &str,
    wrapper: &[String],
) -> Gateway {
    let cache = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-plugin-cache");
    // SWITCHBOARD_BENCH_PLUGIN_DIR=<folder> loads plugins from its
    // `adapters` and `policies` folders over the bundled ones of the same
    // name (another build of a plugin, or one whose functions keep their
    // names for a profile).
    // (Made absolute: the gateway reads a relative folder from its config's.)
    let plugin_dir = std::env::var_os("SWITCHBOARD_BENCH_PLUGIN_DIR").map(|dir| {
        let dir = std::path::absolute(&dir).unwrap();
        assert!(
            dir.is_dir(),
            "SWITCHBOARD_BENCH_PLUGIN_DIR {} is not a folder",
            dir.display()
        );
        dir
    });
    let folder = |name: &str| {
        plugin_dir
            .as_ref()
            .map_or_else(|| name.into(), |dir| dir.join(name))
    };
    let (adapters, policies) = (folder("adapters"), folder("policies"));
    assert!(
        plugin_dir.is_none() || files.is_empty(),
        "this bench brings plugin files of its own: run it without SWITCHBOARD_BENCH_PLUGIN_DIR"
    );
    let key = if keyed { "api_key_env = \"UP_KEY\"" } else { "" };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bench.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
[plugins]
adapter_dir = {adapters:?}
policy_dir = {policies:?}
watch = false
compile_cache_dir = {cache:?}
{plugins}
[providers.up]
adapter = "openai"
base_url = "http://{upstream}/v1"
{key}
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
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(binary);
            command
        }
        None => Command::new(binary),
    };
    let mut child = command
        .args(["--log-format", "json", "--config"])
        .arg(&config)
        .env_clear()
        .env("UP_KEY", "sk-bench-0123456789abcdef0123456789abcdef")
        .env("RUST_LOG", log)
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
    let cpu = cpu_seconds(&format!("/proc/{pid}/stat"));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap()
    };
    (cpu, kib("VmRSS:"), kib("VmHWM:"))
}

/// User + system CPU seconds from a `/proc` `stat` file (a process's or a
/// thread's).
fn cpu_seconds(stat: &str) -> f64 {
    let stat = std::fs::read_to_string(stat).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let clk_tck: f64 = String::from_utf8(Command::new("getconf").arg("CLK_TCK").output().unwrap().stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    ticks as f64 / clk_tck
}

/// CPU seconds used so far by the thread of process `pid` named `name`
/// (0 when there is none).
pub fn thread_cpu(pid: u32, name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        return cpu_seconds(&task.path().join("stat").display().to_string());
    }
    0.0
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
    let (timings, wall) = load_on(client, url, body, count, CONCURRENCY).await;
    assert!(timings.iter().all(|t| t.ok), "every answer is a 200");
    let mut latencies: Vec<Duration> = timings.iter().map(|t| t.total).collect();
    latencies.sort();
    (latencies, wall)
}

/// One request's times: until the whole answer, and until its first body
/// byte; `ok` is false for an answer other than 200 (counted, not timed).
#[derive(Clone, Copy)]
pub struct Timing {
    pub total: Duration,
    pub first_byte: Duration,
    pub ok: bool,
}

/// Send `count` requests with `connections` in flight; the timings (in no
/// particular order) and the wall time.
pub async fn load_on(
    client: &HttpClient,
    url: &str,
    body: &'static str,
    count: usize,
    connections: usize,
) -> (Vec<Timing>, Duration) {
    let started = Instant::now();
    let per_task = count / connections;
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (client, url) = (client.clone(), url.to_string());
            tokio::spawn(async move {
                let mut timings = Vec::with_capacity(per_task);
                for _ in 0..per_task {
                    let request = http::Request::post(&url)
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from_static(body.as_bytes())))
                        .unwrap();
                    let t = Instant::now();
                    let response = client.request(request).await.unwrap();
                    if response.status() != 200 {
                        let _ = response.into_body().collect().await;
                        timings.push(Timing {
                            total: t.elapsed(),
                            first_byte: t.elapsed(),
                            ok: false,
                        });
                        continue;
                    }
                    let mut body = response.into_body();
                    let mut first_byte = None;
                    let mut size = 0;
                    while let Some(frame) = body.frame().await {
                        if let Ok(data) = frame.unwrap().into_data() {
                            first_byte.get_or_insert_with(|| t.elapsed());
                            size += data.len();
                        }
                    }
                    assert!(size > 0);
                    timings.push(Timing {
                        total: t.elapsed(),
                        first_byte: first_byte.unwrap(),
                        ok: true,
                    });
                }
                timings
            })
        })
        .collect();
    let mut all = Vec::with_capacity(count);
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    (all, started.elapsed())
}

/// The floor under the gateway on its own stack: a reverse proxy built of
/// exactly what the gateway's HTTP sides are built of (tokio's runtime,
/// hyper-util's auto server and pooled client with `TCP_NODELAY`) that
/// passes bodies through untouched: no JSON, no plugins, no ledger. What
/// the gateway costs above it is what its own work costs; what this costs
/// above nginx is the stack's. It runs in a process of its own (the bench's
/// executable again, with `SWITCHBOARD_BENCH_ROLE=hyper-proxy`), its CPU
/// read like the others'.
pub struct HyperProxy {
    pub child: std::process::Child,
    pub url: String,
}

impl Drop for HyperProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const ROLE: &str = "SWITCHBOARD_BENCH_ROLE";

pub fn start_hyper_proxy(upstream: std::net::SocketAddr) -> HyperProxy {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(ROLE, "hyper-proxy")
        .env("SWITCHBOARD_BENCH_UPSTREAM", upstream.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    HyperProxy {
        child,
        url: format!("http://{}", line.trim()),
    }
}

/// Serve as the hyper proxy when this process was started as one (call
/// first thing in `main`); false in the bench itself.
pub fn serve_as_hyper_proxy() -> bool {
    if std::env::var(ROLE).as_deref() != Ok("hyper-proxy") {
        return false;
    }
    let upstream = std::env::var("SWITCHBOARD_BENCH_UPSTREAM").unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async move {
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_nodelay(true);
        let client: Client<_, hyper::body::Incoming> = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(256)
            .build(connector);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap());
        let server = std::sync::Arc::new(hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()));
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let _ = tcp.set_nodelay(true);
            let (client, upstream, server) = (client.clone(), upstream.clone(), server.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let (client, upstream) = (client.clone(), upstream.clone());
                    async move {
                        let (mut parts, body) = request.into_parts();
                        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                        parts.uri = format!("http://{upstream}{path}").parse().unwrap();
                        client.request(hyper::Request::from_parts(parts, body)).await
                    }
                });
                let _ = server.serve_connection(TokioIo::new(tcp), service).await;
            });
        }
    })
}

/// A plain nginx reverse proxy in front of `upstream`, one process (no
/// master), its CPU read like the gateway's. Installed from Debian's
/// packages when missing and run as root; none when it cannot be had.
pub struct Nginx {
    pub child: std::process::Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_binary() -> Option<PathBuf> {
    let found = || {
        ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
    };
    if let Some(path) = found() {
        return Some(path);
    }
    let root = Command::new("id").arg("-u").output().ok()?.stdout == b"0\n";
    if root {
        eprintln!("nginx is missing: installing Debian's nginx-light for the reference");
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-qq", "nginx-light"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
    }
    found()
}

pub fn start_nginx(upstream: std::net::SocketAddr) -> Option<Nginx> {
    let binary = nginx_binary()?;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let prefix = dir.path().display();
    let config = format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream up {{ server {upstream}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"#
    );
    let file = dir.path().join("nginx.conf");
    std::fs::write(&file, config).unwrap();
    let child = Command::new(binary)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&file)
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    // Ready once it accepts connections.
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(Nginx {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    })
}
