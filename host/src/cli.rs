//! The `keys`, `teams` and `report` commands: the ledger database managed
//! and read from the machine, with or without a running gateway (one that
//! is running applies key changes within a second).

use crate::access::store::{self, InConfig, NewKey};
use crate::access::{Budget, Period};
use crate::config::Config;
use crate::ledger::report::{self, Dimension, Row};
use crate::ledger::{Store, unix_ms};
use std::fmt::Write as _;
use std::time::SystemTime;

#[derive(clap::Subcommand)]
pub enum KeysCommand {
    /// Create a key; its secret is printed once and only its hash is kept.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        team: Option<String>,
        /// May use /admin/* (and manage keys there).
        #[arg(long)]
        admin: bool,
        /// Routes it may use (all when absent), comma-separated.
        #[arg(long, value_delimiter = ',')]
        models: Option<Vec<String>>,
        /// Requests per minute.
        #[arg(long)]
        rpm: Option<u32>,
        /// Tokens per minute.
        #[arg(long)]
        tpm: Option<u32>,
        /// Spend per period, USD.
        #[arg(long, allow_negative_numbers = true)]
        budget_usd: Option<f64>,
        /// The budget's calendar period in UTC (default: month).
        #[arg(long, value_enum)]
        period: Option<Period>,
    },
    /// List keys (never their secrets).
    List,
    /// Revoke a key.
    Revoke { name: String },
}

#[derive(clap::Subcommand)]
pub enum TeamsCommand {
    /// Create a team, optionally with a budget.
    Create {
        name: String,
        #[arg(long, allow_negative_numbers = true)]
        budget_usd: Option<f64>,
        #[arg(long, value_enum)]
        period: Option<Period>,
    },
    /// Change a team's budget (`--no-budget` removes it).
    Set {
        name: String,
        #[arg(long, allow_negative_numbers = true)]
        budget_usd: Option<f64>,
        #[arg(long, value_enum)]
        period: Option<Period>,
        #[arg(long, conflicts_with_all = ["budget_usd", "period"])]
        no_budget: bool,
    },
    /// List teams and their budgets.
    List,
}

fn open(config: &Config) -> Result<Store, String> {
    let settings = config.ledger.as_ref().ok_or_else(|| {
        format!(
            "{}: keys, teams and reports live in the ledger; configure `[ledger] path`",
            config.file.display()
        )
    })?;
    Store::open(&settings.path)
        .map_err(|e| format!("cannot open the ledger {}: {e}", settings.path.display()))
}

fn budget_text(budget: &Option<Budget>) -> String {
    budget.map_or("-".into(), |b| {
        format!("${:.2}/{}", b.limit_usd, b.period.as_str())
    })
}

pub fn keys(config: &Config, command: KeysCommand) -> Result<String, String> {
    let store = open(config)?;
    let conn = store.connection();
    let e = |e: store::AccessError| e.to_string();
    match command {
        KeysCommand::Create {
            name,
            team,
            admin,
            models,
            rpm,
            tpm,
            budget_usd,
            period,
        } => {
            if let Some(route) = models
                .iter()
                .flatten()
                .find(|m| !config.route_names.contains_key(*m))
            {
                return Err(format!("unknown route {route:?}"));
            }
            let first = config.keys.is_empty() && !store::any_key(conn).map_err(e)?;
            let new = NewKey {
                name,
                team,
                admin,
                models,
                rpm,
                tpm,
                budget_usd,
                period,
            };
            let (secret, info) = store::create_key(conn, &new, &InConfig::of(config)).map_err(e)?;
            let mut out = format!(
                "created key `{}`{}\n{secret}\n(the secret is shown once; only its hash is kept)\n",
                info.name,
                info.team.map(|t| format!(" in team `{t}`")).unwrap_or_default()
            );
            if first {
                out.push_str(
                    "This is the first gateway key: key checking is now on, and every API call needs a key.\n",
                );
            }
            Ok(out)
        }
        KeysCommand::List => {
            let mut out = String::from("name\tteam\tadmin\tmodels\trpm\ttpm\tbudget\tprefix\tstate\n");
            for k in store::list_keys(conn).map_err(e)? {
                let i = &k.info;
                let _ = writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}…\t{}",
                    i.name,
                    i.team.as_deref().unwrap_or("-"),
                    i.admin,
                    i.models.as_ref().map_or("all".into(), |m| m.join(",")),
                    i.rpm.map_or("-".into(), |n| n.to_string()),
                    i.tpm.map_or("-".into(), |n| n.to_string()),
                    budget_text(&i.budget),
                    k.prefix,
                    if k.revoked_ms.is_some() {
                        "revoked"
                    } else {
                        "active"
                    }
                );
            }
            Ok(out)
        }
        KeysCommand::Revoke { name } => {
            store::revoke_key(conn, &name).map_err(e)?;
            Ok(format!("revoked key `{name}`\n"))
        }
    }
}

pub fn teams(config: &Config, command: TeamsCommand) -> Result<String, String> {
    let store = open(config)?;
    let conn = store.connection();
    let e = |e: store::AccessError| e.to_string();
    match command {
        TeamsCommand::Create {
            name,
            budget_usd,
            period,
        } => {
            let budget = Budget::from_parts(budget_usd, period)?;
            store::create_team(conn, &name, budget, &InConfig::of(config)).map_err(e)?;
            Ok(format!("created team `{name}` ({})\n", budget_text(&budget)))
        }
        TeamsCommand::Set {
            name,
            budget_usd,
            period,
            no_budget,
        } => {
            let budget = if no_budget {
                None
            } else {
                Budget::from_parts(budget_usd, period)?
            };
            store::set_team(conn, &name, budget, &InConfig::of(config)).map_err(e)?;
            Ok(format!("team `{name}`: {}\n", budget_text(&budget)))
        }
        TeamsCommand::List => {
            let mut out = String::from("name\tbudget\n");
            for t in store::list_teams(conn).map_err(e)? {
                let _ = writeln!(out, "{}\t{}", t.name, budget_text(&t.budget));
            }
            for (name, budget) in &config.teams {
                let _ = writeln!(out, "{name}\t{} (config file)", budget_text(budget));
            }
            Ok(out)
        }
    }
}

/// `report --by provider,model --since 7d`: the usage table.
pub fn report(
    config: &Config,
    by: &str,
    since: &str,
    until: Option<&str>,
    json: bool,
) -> Result<String, String> {
    let store = open(config)?;
    let by = Dimension::parse(by)?;
    let now = unix_ms(SystemTime::now());
    let since = report::parse_time(since, now)?;
    let until = until.map_or(Ok(now + 1), |u| report::parse_time(u, now))?;
    let rows = report::usage(store.connection(), &by, since, until).map_err(|e| e.to_string())?;
    if json {
        return Ok(serde_json::to_string_pretty(&rows).expect("rows serialise") + "\n");
    }
    Ok(table(&by, &rows))
}

fn table(by: &[Dimension], rows: &[Row]) -> String {
    let ms = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
    let mut lines: Vec<Vec<String>> = vec![
        by.iter()
            .map(|d| d.name().to_string())
            .chain(
                [
                    "requests",
                    "errors",
                    "prompt",
                    "cached",
                    "completion",
                    "reasoning",
                    "cost_usd",
                    "charged_usd",
                    "p50_ms",
                    "p95_ms",
                    "ttft_p50",
                    "ttft_p95",
                    "feedback",
                ]
                .map(String::from),
            )
            .collect(),
    ];
    for row in rows {
        let errors: u64 = row.errors.values().sum();
        let feedback = row
            .feedback_mean
            .map_or("-".into(), |m| format!("{m:.2} ({})", row.feedback_count));
        lines.push(
            by.iter()
                .map(|d| row.group[d.name()].clone())
                .chain([
                    row.requests.to_string(),
                    errors.to_string(),
                    row.prompt_tokens.to_string(),
                    row.cache_read_tokens.to_string(),
                    row.completion_tokens.to_string(),
                    row.reasoning_tokens.to_string(),
                    format!("{:.6}", row.provider_cost_usd),
                    format!("{:.6}", row.charged_usd),
                    ms(row.latency_p50_ms),
                    ms(row.latency_p95_ms),
                    ms(row.ttft_p50_ms),
                    ms(row.ttft_p95_ms),
                    feedback,
                ])
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|i| lines.iter().map(|l| l[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for line in lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    out
}
