//! The ledger's SQLite database: versioned migrations, batched inserts in
//! one transaction, pruning by age.

use super::record::RequestRecord;
use rusqlite::{Connection, params};
use std::path::Path;
use std::time::Duration;

/// Each migration takes the schema from version `i` to `i + 1`; applied in
/// order at open, recorded in `PRAGMA user_version`.
const MIGRATIONS: &[&str] = &[
    // 1: requests and their attempts.
    "CREATE TABLE requests (
        id TEXT PRIMARY KEY,
        caller_request_id TEXT,
        at_ms INTEGER NOT NULL,
        key_name TEXT,
        team TEXT,
        route TEXT,
        tags TEXT NOT NULL,
        stream INTEGER NOT NULL,
        plan TEXT NOT NULL,
        provider TEXT,
        model TEXT,
        answered_model TEXT,
        prompt_tokens INTEGER,
        cache_read_tokens INTEGER,
        cache_write_tokens INTEGER,
        cache_write_hour_tokens INTEGER,
        completion_tokens INTEGER,
        reasoning_tokens INTEGER,
        provider_cost_usd REAL NOT NULL,
        cost_estimated INTEGER NOT NULL,
        charged_usd REAL NOT NULL,
        latency_ms INTEGER NOT NULL,
        ttft_ms INTEGER,
        status INTEGER NOT NULL,
        error_class TEXT,
        outcome TEXT NOT NULL,
        -- Each attempt, in order: a JSON array of {provider, model, outcome,
        -- http_status, latency_ms, ttft_ms, usage, cost_usd, estimated}
        -- (one row per request keeps the writer cheap; `json_each` reads them).
        attempts TEXT NOT NULL
    ) WITHOUT ROWID;
    -- Requests are kept in id order, and ids are time-ordered (UUIDv7), so a
    -- time range is an id range (`id_from`): no other index to keep up on
    -- every insert. Only feedback by the caller's own id needs one.
    CREATE INDEX requests_caller_id ON requests (caller_request_id) WHERE caller_request_id IS NOT NULL;",
    // 2: gateway keys and teams managed without the config file, their
    // change counter (what a running gateway polls), and feedback.
    "CREATE TABLE teams (
        name TEXT PRIMARY KEY,
        budget_usd REAL,
        period TEXT,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE keys (
        name TEXT PRIMARY KEY,
        team TEXT,
        hash TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        admin INTEGER NOT NULL,
        models TEXT,
        rpm INTEGER,
        tpm INTEGER,
        budget_usd REAL,
        period TEXT,
        created_ms INTEGER NOT NULL,
        revoked_ms INTEGER
    );
    CREATE TABLE changes (what TEXT PRIMARY KEY, version INTEGER NOT NULL);
    INSERT INTO changes VALUES ('access', 0);
    CREATE TRIGGER keys_inserted AFTER INSERT ON keys BEGIN UPDATE changes SET version = version + 1 WHERE what = 'access'; END;
    CREATE TRIGGER keys_updated AFTER UPDATE ON keys BEGIN UPDATE changes SET version = version + 1 WHERE what = 'access'; END;
    CREATE TRIGGER keys_deleted AFTER DELETE ON keys BEGIN UPDATE changes SET version = version + 1 WHERE what = 'access'; END;
    CREATE TRIGGER teams_inserted AFTER INSERT ON teams BEGIN UPDATE changes SET version = version + 1 WHERE what = 'access'; END;
    CREATE TRIGGER teams_updated AFTER UPDATE ON teams BEGIN UPDATE changes SET version = version + 1 WHERE what = 'access'; END;
    CREATE TRIGGER teams_deleted AFTER DELETE ON teams BEGIN UPDATE changes SET version = version + 1 WHERE what = 'access'; END;
    CREATE TABLE feedback (
        request_id TEXT NOT NULL,
        key_name TEXT,
        score REAL NOT NULL,
        label TEXT,
        comment TEXT,
        at_ms INTEGER NOT NULL
    );
    CREATE INDEX feedback_request ON feedback (request_id);",
    // 3: routing decisions, for replaying traffic through another policy.
    "CREATE TABLE decisions (
        request_id TEXT PRIMARY KEY REFERENCES requests (id) ON DELETE CASCADE,
        decision TEXT NOT NULL
    );",
    // 4: the API a request came in on (null for records written before).
    "ALTER TABLE requests ADD COLUMN endpoint TEXT;",
];

/// An open ledger database.
pub struct Store {
    conn: Connection,
    /// Buffers the JSON columns are written into, kept between rows.
    json: [Vec<u8>; 3],
}

impl Store {
    /// Open (creating it and its folder if needed) and bring the schema up
    /// to date. WAL mode: readers never block the writer, and a crash
    /// leaves the last committed batch, never a corrupt file.
    pub fn open(path: &Path) -> Result<Store, rusqlite::Error> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // A missing folder is created; an unwritable one fails the open below.
            let _ = std::fs::create_dir_all(dir);
        }
        let mut conn = Connection::open(path)?;
        // Another writer (the `keys` command, an operator's tool) holds the
        // lock briefly; longer than this, the batch is counted as lost.
        conn.busy_timeout(Duration::from_secs(2))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn)?;
        Ok(Store {
            conn,
            json: Default::default(),
        })
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Write a batch in one transaction: all of it, or none.
    ///
    /// `INSERT OR IGNORE`, not `OR REPLACE`: ids are unique, and a replace
    /// may delete (cascading to `decisions`), which makes SQLite keep a
    /// statement journal for every row.
    pub fn insert(&mut self, batch: &[RequestRecord]) -> Result<(), rusqlite::Error> {
        let tx = self.conn.transaction()?;
        {
            let mut request = tx.prepare_cached(
                "INSERT OR IGNORE INTO requests VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12,
                 ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28)",
            )?;
            let mut decision = tx.prepare_cached("INSERT OR IGNORE INTO decisions VALUES (?1, ?2)")?;
            let [tags, plan, attempts] = &mut self.json;
            for r in batch {
                let u = r.usage;
                request.execute(params![
                    r.id,
                    r.caller_request_id,
                    r.at_ms,
                    r.key,
                    r.team,
                    r.route,
                    json(tags, &r.tags),
                    r.stream,
                    json(plan, &r.plan),
                    r.provider,
                    r.model,
                    r.answered_model,
                    u.map(|u| u.prompt_tokens),
                    u.map(|u| u.cache_read_tokens),
                    u.map(|u| u.cache_write_tokens),
                    u.map(|u| u.cache_write_hour_tokens),
                    u.map(|u| u.completion_tokens),
                    u.map(|u| u.reasoning_tokens),
                    r.provider_cost_usd,
                    r.cost_estimated,
                    r.charged_usd,
                    r.latency_ms as i64,
                    r.ttft_ms.map(|t| t as i64),
                    r.status,
                    r.error_class,
                    r.outcome,
                    json(attempts, &r.attempts),
                    (!r.endpoint.is_empty()).then_some(r.endpoint),
                ])?;
                if let Some(d) = &r.decision {
                    decision.execute(params![r.id, d])?;
                }
            }
        }
        tx.commit()
    }

    /// Delete requests older than `before_ms` (their attempts with them).
    pub fn prune(&mut self, before_ms: i64) -> Result<usize, rusqlite::Error> {
        self.conn
            .execute("DELETE FROM feedback WHERE at_ms < ?1", params![before_ms])?;
        self.conn
            .execute("DELETE FROM requests WHERE id < ?1", params![id_from(before_ms)])
    }
}

/// `value` as JSON text, written into `buffer` (reused from row to row).
fn json<'b>(buffer: &'b mut Vec<u8>, value: &impl serde::Serialize) -> &'b str {
    buffer.clear();
    serde_json::to_writer(&mut *buffer, value).expect("ledger columns serialise");
    std::str::from_utf8(buffer).expect("serde_json writes UTF-8")
}

/// The smallest request id of the millisecond `ms`: a UUIDv7 in simple
/// form starts with its Unix milliseconds as 12 hex digits, so ids sort by
/// time and `id >= id_from(a) AND id < id_from(b)` is the time range.
pub fn id_from(ms: i64) -> String {
    format!("{:012x}{}", ms.max(0), "0".repeat(20))
}

fn migrate(conn: &mut Connection) -> Result<(), rusqlite::Error> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(migration)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "ledger schema migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::record::AttemptRecord;
    use crate::plugin::types::Usage;

    fn record(id: &str, at_ms: i64) -> RequestRecord {
        RequestRecord {
            id: id.into(),
            at_ms,
            route: Some("chat"),
            endpoint: "/v1/messages",
            plan: vec!["a/m", "b/m"],
            attempts: vec![
                AttemptRecord {
                    provider: "a",
                    model: "m",
                    outcome: "server_error",
                    http_status: Some(500),
                    ..AttemptRecord::default()
                },
                AttemptRecord {
                    provider: "b",
                    model: "m",
                    outcome: "success",
                    http_status: Some(200),
                    cost_usd: 0.5,
                    ..AttemptRecord::default()
                },
            ],
            usage: Some(Usage {
                prompt_tokens: 10,
                completion_tokens: 5,
                ..Usage::default()
            }),
            charged_usd: 0.5,
            status: 200,
            outcome: "answered",
            ..RequestRecord::default()
        }
    }

    #[test]
    fn migrates_once_writes_batches_and_prunes_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/ledger.db");
        let mut store = Store::open(&path).unwrap();
        let id = |ms: i64| format!("{:012x}{:020x}", ms, 7);
        store
            .insert(&[record(&id(1_000), 1_000), record(&id(5_000), 5_000)])
            .unwrap();
        drop(store);
        // Reopening applies no migration twice and keeps the data.
        let mut store = Store::open(&path).unwrap();
        let version: i64 = store
            .connection()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let count = |store: &Store, table: &str| -> i64 {
            store
                .connection()
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(count(&store, "requests"), 2);
        let attempts: i64 = store
            .connection()
            .query_row("SELECT sum(json_array_length(attempts)) FROM requests", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(attempts, 4);
        let endpoint: String = store
            .connection()
            .query_row("SELECT DISTINCT endpoint FROM requests", [], |r| r.get(0))
            .unwrap();
        assert_eq!(endpoint, "/v1/messages");
        assert_eq!(store.prune(2_000).unwrap(), 1);
        assert_eq!(count(&store, "requests"), 1);
    }
}
