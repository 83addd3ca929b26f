//! The `switchboard` command: load the configuration and serve.

use clap::{Parser, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use switchboard::cli::{self, KeysCommand, TeamsCommand};
use switchboard::config::Config;

/// jemalloc, not glibc's malloc. The runtime's workers free what other
/// workers allocated (a body read on one is written out on another), and
/// glibc frees such memory under the lock of the arena it came from: with
/// arenas few enough to keep memory down, busy workers queued on each
/// other's locks (a futex call and a context switch on most requests).
/// jemalloc frees into the freeing thread's cache. Measured in BENCHMARKS.md.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read when it starts (before `main`): one arena (the
/// workers' thread caches take the frees from other threads that glibc's
/// arenas contended on), thread caches for sizes up to 4 KiB, looked over
/// for blocks a thread left unused (a few of their bins each time, at most
/// every 10 ms) once per 4 MiB it allocates or frees, where jemalloc's
/// 64 KiB default did so several times a stream, handing back blocks the
/// next stream fetched again from the arena (3 % of a request's
/// instructions), and freed pages returned within a second, so resident
/// memory stays near glibc's.
/// Built into the binary however it is built: this defines jemalloc's weak
/// `malloc_conf`, a C string pointer (its first byte, the rest following).
/// `_RJEM_MALLOC_CONF` overrides any of them at start.
#[cfg(not(target_env = "msvc"))]
#[allow(unsafe_code)] // Naming a symbol for C is `unsafe` in Rust 2024; no code runs.
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &u8 =
    &b"narenas:1,tcache_max:4096,tcache_gc_incr_bytes:4194304,dirty_decay_ms:1000,muzzy_decay_ms:0\0"[0];

#[derive(Parser)]
#[command(
    version,
    about = "Multi-provider LLM gateway with WebAssembly adapters and routing policies"
)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(long, short, env = "SWITCHBOARD_CONFIG", default_value = "switchboard.toml")]
    config: PathBuf,
    /// Listen on this address instead of `server.listen`.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "SWITCHBOARD_LOG_FORMAT")]
    log_format: LogFormat,
    /// Check the configuration and exit.
    #[arg(long)]
    check: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Gateway keys kept in the ledger database.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Teams and their budgets, kept in the ledger database.
    Teams {
        #[command(subcommand)]
        command: TeamsCommand,
    },
    /// Usage from the ledger: requests, errors, tokens, cost, latency and feedback.
    Report {
        /// Group by these, comma-separated: provider, model, route, key, team, day.
        #[arg(long, default_value = "provider,model")]
        by: String,
        /// From: a span back (7d, 24h, 30m) or a UTC date (2026-12-01, 2026-12-01T12:00:00Z).
        #[arg(long, default_value = "7d")]
        since: String,
        /// Until (now when absent), read like --since.
        #[arg(long)]
        until: Option<String>,
        /// JSON rows instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Log lines queued for the log writer before a worker waits for it.
const LOG_LINES_BUFFERED: usize = 16 * 1024;

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The commands print their answer; only their warnings go to stderr.
    let default_level = if cli.command.is_some() { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colours only for a terminal: a redirected log is read by tools.
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    // A thread of its own writes the log, in batches: written by the
    // request's worker, a request's two lines at `info` cost two system
    // calls on its path (about a third more CPU per request; BENCHMARKS.md).
    // Lines wait for it rather than being dropped; `_log` flushes what is
    // left when `main` returns.
    let (writer, _log) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_LINES_BUFFERED)
        .thread_name("log-writer")
        .finish(std::io::BufWriter::with_capacity(64 * 1024, std::io::stderr()));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(writer);
    match cli.log_format {
        LogFormat::Text if colour => subscriber.init(),
        LogFormat::Text => subscriber.fmt_fields(switchboard::logfmt::TextFields).init(),
        LogFormat::Json => subscriber
            .fmt_fields(switchboard::logfmt::JsonSpanFields)
            .event_format(switchboard::logfmt::JsonLines)
            .init(),
    }
    let config = match Config::load(&cli.config, &|name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(%error, "invalid configuration");
            return std::process::ExitCode::from(2);
        }
    };
    if let Some(command) = cli.command {
        let out = match command {
            Command::Keys { command } => cli::keys(&config, command),
            Command::Teams { command } => cli::teams(&config, command),
            Command::Report {
                by,
                since,
                until,
                json,
            } => cli::report(&config, &by, &since, until.as_deref(), json),
        };
        return match out {
            Ok(text) => {
                print!("{text}");
                std::process::ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("switchboard: {error}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    if cli.check {
        println!(
            "{}: ok ({} providers, {} routes)",
            cli.config.display(),
            config.providers.len(),
            config.routes.len()
        );
        for provider in &config.providers {
            if let Some(why) = &provider.disabled {
                println!("provider {} will be disabled: {why}", provider.name);
            }
        }
        return std::process::ExitCode::SUCCESS;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(switchboard::app::run(config, cli.listen, shutdown_signal())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "switchboard stopped");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
