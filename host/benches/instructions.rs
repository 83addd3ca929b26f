//! The instructions the gateway executes per request, counted by
//! valgrind's callgrind: the `overhead` bench's default gateway (bundled
//! `openai` adapter and `priority` policy, ledger on, credential scrubbed)
//! in front of the same loopback upstream, answering the 783-byte
//! completion and the 41-event stream, one request at a time; then with
//! the ledger off, with `on_stream_break = "continue"`, with hedging
//! configured but not firing, and with the request log on
//! (`SWITCHBOARD_BENCH_ONLY=default,log` keeps the variants whose names
//! hold one of the words).
//!
//! CPU time on a shared machine moves by 20 % and more between two starts
//! of one build; these counts move by under 1 %, so an A B of two builds
//! (`SWITCHBOARD_BENCH_BIN`) shows a change of a few percent that timing
//! cannot. They count user-space instructions of every thread of the
//! process (the ledger writer's too), not the kernel's work, cache misses
//! or waits: a guide to where the gateway's own work goes, next to the
//! `overhead` bench's times, not a replacement for them.
//!
//! Run: `cargo bench --bench instructions` (needs valgrind: Debian's
//! `valgrind` package). Results are recorded in BENCHMARKS.md. Where the
//! instructions go: `SWITCHBOARD_BENCH_CALLGRIND=<folder>` keeps the
//! counts, then `callgrind_annotate <folder>/callgrind.<variant>.1` (JSON)
//! or `.2` (streams); the plugins' functions are named by their index
//! (`wasm[0]::function[123]`), or by name where the plugin keeps its
//! names: `SWITCHBOARD_BENCH_PLUGIN_DIR=<folder>` loads the plugins in its
//! `adapters` and `policies` folders over the bundled ones, say builds
//! with `--config profile.plugin.strip=false`
//! (`SWITCHBOARD_WASM_PERFMAP=1` makes any gateway write the map of its
//! plugins' functions that `perf` reads). `SWITCHBOARD_BENCH_PROMPT_KIB=32` pads the request's
//! user message with 32 KiB of prose (real conversations are longer than
//! the bench's 170 bytes).

mod support;

use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::{HttpClient, completion_783, load_on, start_gateway_under, stream_41};

const WARM_UP: usize = 200;
const JSON_REQUESTS: usize = 1_000;
const STREAMS: usize = 500;

/// The bench's request, streamed or not, its user message padded with
/// `SWITCHBOARD_BENCH_PROMPT_KIB` KiB of prose (none when unset: the
/// `overhead` bench's request).
fn request(stream: bool) -> &'static str {
    let kib: usize =
        std::env::var("SWITCHBOARD_BENCH_PROMPT_KIB").map_or(0, |kib| kib.parse().expect("a number of KiB"));
    let line = r#"The quick brown fox, \"Sir Reynard\", jumps over the lazy dog.\n"#;
    let prose = line.repeat(kib * 1024 / line.len());
    let stream = if stream { r#""stream":true,"# } else { "" };
    format!(
        r#"{{"model":"bench",{stream}"messages":[{{"role":"system","content":"You are terse."}},{{"role":"user","content":"{prose}Say hello in one short sentence, please."}}],"max_tokens":64}}"#
    )
    .leak()
}

/// Under valgrind the plugin pool's address reservation must be small (it
/// reserves every slot up front, 4 GiB of address space per memory, and
/// valgrind manages 64 GiB at most: six instances' twelve memories fit),
/// and calls run about fifty times slower than their deadlines expect.
const UNDER_VALGRIND: &str = "max_instances = 6\ncall_timeout_ms = 5000";

fn main() {
    let Some(valgrind) = on_path("valgrind") else {
        eprintln!("valgrind is not installed (Debian: apt-get install valgrind); nothing measured");
        return;
    };
    bench(valgrind);
}

#[tokio::main]
async fn bench(valgrind: PathBuf) {
    let upstream = support::upstream_with(completion_783().into(), stream_41().into()).await;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let ledger_dir = tempfile::tempdir().unwrap();
    let ledger = format!(
        "\n[ledger]\npath = {:?}\n",
        ledger_dir.path().join("ledger.db").display().to_string()
    );
    // What each variant adds to the route (and after it), and its log filter.
    let variants = [
        (
            "gateway (default: ledger on, scrubbing on)",
            ledger.clone(),
            support::QUIET,
        ),
        ("gateway, ledger off", String::new(), support::QUIET),
        (
            "gateway, on_stream_break = \"continue\"",
            format!("on_stream_break = \"continue\"\n{ledger}"),
            support::QUIET,
        ),
        (
            "gateway, hedging configured, not firing",
            format!("hedge_after_ms = 60000\n{ledger}"),
            support::QUIET,
        ),
        (
            "gateway, request log on (`info`, JSON lines)",
            ledger.clone(),
            "info",
        ),
    ];
    println!("| target | instructions per JSON request | instructions per 41-event stream |");
    println!("| --- | ---: | ---: |");
    for (name, extra, log) in variants.into_iter().filter(|(name, ..)| support::measured(name)) {
        let (json, stream) = count(&valgrind, upstream, &client, name, &extra, log).await;
        println!("| {name} | {json} | {stream} |");
    }
    println!();
    println!(
        "{JSON_REQUESTS} JSON requests and {STREAMS} streams, one at a time, after {WARM_UP} of each unmeasured; every thread of the gateway counted"
    );
}

/// Instructions per JSON request and per stream of the gateway variant
/// `name`, whose route has `extra`, logging at `log`.
async fn count(
    valgrind: &Path,
    upstream: std::net::SocketAddr,
    client: &HttpClient,
    name: &str,
    extra: &str,
    log: &str,
) -> (u64, u64) {
    let out = tempfile::tempdir().unwrap();
    // SWITCHBOARD_BENCH_CALLGRIND=<folder> keeps each variant's counts
    // there, per function, for `callgrind_annotate` (`.1` JSON, `.2` streams).
    let keep = std::env::var_os("SWITCHBOARD_BENCH_CALLGRIND");
    let file = match &keep {
        Some(folder) => {
            std::fs::create_dir_all(folder).unwrap();
            let words: Vec<&str> = (name.split(|c: char| !c.is_ascii_alphanumeric()))
                .filter(|word| !word.is_empty())
                .collect();
            let name = words.join("-");
            PathBuf::from(folder).join(format!("callgrind.{name}"))
        }
        None => out.path().join("callgrind.out"),
    };
    // Kept counts name the plugins' compiled functions (from the map the
    // gateway writes, below), not only their addresses.
    let named = keep.map(|_| ["/usr/bin/env".to_string(), "SWITCHBOARD_WASM_PERFMAP=1".into()]);
    let wrapper: Vec<String> = named
        .into_iter()
        .flatten()
        .chain([
            valgrind.display().to_string(),
            "--tool=callgrind".into(),
            // Counted only between the `callgrind_control` commands below.
            "--instr-atstart=no".into(),
            // The plugins' code is compiled at run time.
            "--smc-check=all-non-file".into(),
            format!("--callgrind-out-file={}", file.display()),
        ])
        .collect();
    let gateway = start_gateway_under(upstream, extra, UNDER_VALGRIND, log, &wrapper);
    let url = format!("{}/v1/chat/completions", gateway.url);
    let pid = gateway.child.id().to_string();
    let control = |args: &[&str]| callgrind_control(args, &pid);
    // Counting the fallback (bounds-checked guest code, when the guard
    // pages' address space is not there) would not be counting the default.
    // (A build from before guard pages does not say, and is counted as it is.)
    let plugins = client
        .get(format!("{}/admin/plugins", gateway.url).parse().unwrap())
        .await
        .expect("the gateway answers /admin/plugins");
    let plugins = plugins.into_body().collect().await.unwrap().to_bytes();
    let plugins: serde_json::Value = serde_json::from_slice(&plugins).unwrap();
    assert_ne!(plugins["memory_bounds"], "checked", "{plugins}");
    let run = async |body: &'static str, count: usize| {
        let (timings, _) = load_on(client, &url, body, count, 1).await;
        assert!(timings.iter().all(|t| t.ok), "every answer is a 200");
    };
    let (json, stream) = (request(false), request(true));
    run(json, WARM_UP).await;
    run(stream, WARM_UP).await;

    // Each dump writes what was counted since the last one, then zeroes it.
    control(&["--instr=on"]);
    run(json, JSON_REQUESTS).await;
    control(&["--dump=json"]);
    run(stream, STREAMS).await;
    control(&["--dump=stream"]);
    control(&["--instr=off"]);
    drop(gateway);
    let map = PathBuf::from(format!("/tmp/perf-{pid}.map"));
    if let Ok(text) = std::fs::read_to_string(&map) {
        for part in [1, 2] {
            name_guest_functions(&PathBuf::from(format!("{}.{part}", file.display())), &text);
        }
        let _ = std::fs::remove_file(&map);
    }
    (
        total(&file, 1) / JSON_REQUESTS as u64,
        total(&file, 2) / STREAMS as u64,
    )
}

/// Tell the gateway's callgrind what to do, within a minute (vgdb can hang
/// where it cannot reach the process).
fn callgrind_control(args: &[&str], pid: &str) {
    let mut child = Command::new("callgrind_control")
        .args(args)
        .arg(pid)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("callgrind_control (installed with valgrind)");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("callgrind_control {args:?} did not answer within a minute");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut said = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut said).unwrap();
    assert!(status.success(), "callgrind_control {args:?}: {said}");
}

/// The instruction total of callgrind's `part`-th dump.
fn total(file: &Path, part: usize) -> u64 {
    let dump = PathBuf::from(format!("{}.{part}", file.display()));
    let text = std::fs::read_to_string(&dump).unwrap_or_else(|e| panic!("{}: {e}", dump.display()));
    text.lines()
        .find_map(|line| line.strip_prefix("totals: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no totals in {}", dump.display()))
}

/// Put the names of the plugins' functions in a callgrind dump, which
/// knows them only by address (`fn=(7) 0x000000000727cbe0`): a perf map
/// has a line `0x<start> <size> <name>` (hex) per compiled function. The
/// name keeps the address, as one function compiled for two plugins has
/// two.
fn name_guest_functions(dump: &Path, map: &str) {
    let mut functions: Vec<(u64, u64, &str)> = map
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ' ');
            let start = fields.next()?.trim_start_matches("0x");
            let start = u64::from_str_radix(start, 16).ok()?;
            let size = u64::from_str_radix(fields.next()?, 16).ok()?;
            Some((start, size, fields.next()?))
        })
        .collect();
    // wasmtime maps a component's code once per core module in it, naming
    // only the functions of that module: of the entries for one function,
    // the named one is the longest (`wasm[0]::function[7]::<its name>`).
    functions.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)).then(b.2.len().cmp(&a.2.len())));
    functions.dedup_by_key(|f| (f.0, f.1));
    let name = |address: u64| {
        let i = functions.partition_point(|f| f.0 <= address).checked_sub(1)?;
        let (start, size, name) = functions[i];
        (address < start + size).then_some(name)
    };
    let Ok(text) = std::fs::read_to_string(dump) else {
        return;
    };
    // `fn=(7) 0x...` (or `cfn=`) with the function's name put in.
    let guest = |line: &str| -> Option<String> {
        if !(line.starts_with("fn=(") || line.starts_with("cfn=(")) {
            return None;
        }
        let (head, tail) = line.split_once(") 0x")?;
        let (digits, rest) = tail.split_at(tail.find(|c: char| !c.is_ascii_hexdigit()).unwrap_or(tail.len()));
        let name = name(u64::from_str_radix(digits, 16).ok()?)?;
        Some(format!("{head}) {name} [0x{digits}]{rest}"))
    };
    let mut named = String::with_capacity(text.len());
    for line in text.lines() {
        named.push_str(guest(line).as_deref().unwrap_or(line));
        named.push('\n');
    }
    std::fs::write(dump, named).unwrap();
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}
