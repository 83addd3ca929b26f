//! Keeps a running gateway's copy of the database's keys and teams current:
//! loads them at start, then polls their change counter so a key created,
//! changed or revoked by the `keys` command applies within a second. The
//! spend of each budget's current period is read from the ledger the first
//! time the budget is seen, so a restart resumes where it was.

use super::admit::{self, Applies};
use super::limits::SharedState;
use super::store::{self, AccessError};
use super::{Budget, Keyring, Stored};
use rusqlite::Connection;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How often the change counter is read.
const POLL: Duration = Duration::from_millis(250);

/// Load the keys now (an error stops start-up), then keep them current.
/// `config_budgets`: the budgets of the config file's keys and teams.
pub fn start(
    path: &Path,
    keyring: Arc<Keyring>,
    state: Arc<dyn SharedState>,
    config_budgets: Vec<Applies>,
) -> Result<(), AccessError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(2))?;
    let mut version = store::version(&conn)?;
    let stored = store::load(&conn)?;
    seed(&conn, &*state, &config_budgets, &stored);
    keyring.replace(stored);
    std::thread::Builder::new()
        .name("keyring-watch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(POLL);
                match store::version(&conn) {
                    Ok(now) if now != version => match store::load(&conn) {
                        Ok(stored) => {
                            seed(&conn, &*state, &[], &stored);
                            let keys = stored.keys.len();
                            keyring.replace(stored);
                            version = now;
                            tracing::info!(keys, "gateway keys and teams reloaded from the ledger");
                        }
                        Err(error) => {
                            tracing::warn!(%error, "cannot reload gateway keys; the last ones stay")
                        }
                    },
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "cannot read the gateway keys' change counter"),
                }
            }
        })
        .expect("spawn the keyring watch");
    Ok(())
}

/// Seed every budget's current period not counted yet with what the
/// ledger says it was charged.
fn seed(conn: &Connection, state: &dyn SharedState, config: &[Applies], stored: &Stored) {
    let now_ms = crate::ledger::unix_ms(std::time::SystemTime::now());
    let from_db = stored
        .keys
        .values()
        .filter_map(|k| {
            k.budget.map(|budget| Applies {
                id: format!("key:{}", k.name),
                label: String::new(),
                budget,
            })
        })
        .chain(stored.teams.iter().filter_map(|(name, budget)| {
            budget.map(|budget: Budget| Applies {
                id: format!("team:{name}"),
                label: String::new(),
                budget,
            })
        }))
        .collect::<Vec<_>>();
    for applies in config.iter().chain(&from_db) {
        let period = admit::period_of(applies, now_ms);
        if state.spend(&period) != Default::default() {
            continue;
        }
        let (column, name) = match applies.id.split_once(':') {
            Some(("key", name)) => ("key_name", name),
            Some(("team", name)) => ("team", name),
            _ => continue,
        };
        match store::spent_since(conn, column, name, period.start_ms) {
            Ok(spent) if spent > 0.0 => state.seed(&period, spent),
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(budget = %applies.id, %error, "cannot read a budget's spend from the ledger")
            }
        }
    }
}
