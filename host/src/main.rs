//! The `switchboard` command: load the configuration and serve.

use clap::{Parser, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use switchboard::cli::{self, KeysCommand, TeamsCommand};
use switchboard::config::Config;

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

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// glibc gives each thread that allocates under contention an arena of its
/// own, up to eight per core, and keeps what each arena once held: under
/// load that was 35 MiB of the gateway's 72 MiB resident. One arena per
/// core measured the same CPU with 59 MiB (BENCHMARKS.md). An operator's
/// `MALLOC_ARENA_MAX` still wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let arenas = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
    // SAFETY: `mallopt` only sets a tunable of glibc's allocator; called
    // first thing in `main`, before any other thread exists.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    // The commands print their answer; only their warnings go to stderr.
    let default_level = if cli.command.is_some() { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colours only for a terminal: a redirected log is read by tools.
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => subscriber.init(),
        LogFormat::Json => subscriber.json().flatten_event(true).init(),
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
