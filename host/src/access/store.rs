//! Gateway keys and teams in the ledger database: what the `keys` and
//! `teams` commands and `/admin/keys` change, and what a running gateway
//! loads. Only a key's SHA-256 is kept, never the key.

use super::{Budget, KeyInfo, Period, Stored, digest, new_secret};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("a key named `{0}` exists already")]
    KeyTaken(String),
    #[error("a team named `{0}` exists already")]
    TeamTaken(String),
    #[error("no key named `{0}`")]
    NoSuchKey(String),
    #[error("no team named `{0}`")]
    NoSuchTeam(String),
    #[error("team `{0}` is defined in the configuration file (`[teams.{0}]`); change it there")]
    TeamInConfig(String),
    #[error("{0}")]
    Invalid(String),
    #[error("ledger database: {0}")]
    Db(#[from] rusqlite::Error),
}

/// What a new key may do (its name, team and limits).
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub name: String,
    pub team: Option<String>,
    #[serde(default)]
    pub admin: bool,
    pub models: Option<Vec<String>>,
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    pub budget_usd: Option<f64>,
    pub period: Option<Period>,
}

/// A key as listed: everything but its secret.
#[derive(Clone, Debug, Serialize)]
pub struct KeyRow {
    #[serde(flatten)]
    pub info: KeyInfo,
    /// The first characters of the secret, to tell keys apart.
    pub prefix: String,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
}

/// A team as listed.
#[derive(Clone, Debug, Serialize)]
pub struct TeamRow {
    pub name: String,
    pub budget: Option<Budget>,
}

fn now_ms() -> i64 {
    crate::ledger::unix_ms(std::time::SystemTime::now())
}

fn valid_name(name: &str) -> Result<(), AccessError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(AccessError::Invalid(format!(
            "invalid name {name:?}: 1 to 64 letters, digits, `-`, `_` or `.`"
        )))
    }
}

/// The names the config file gives keys and teams. A key made in the
/// database may join one of the file's teams, but not take the name of one
/// of its keys: the two would share a budget, a name in the ledger, and
/// each other's requests to score.
#[derive(Clone, Debug, Default)]
pub struct InConfig {
    pub keys: Vec<String>,
    pub teams: Vec<String>,
}

impl InConfig {
    pub fn of(config: &crate::config::Config) -> InConfig {
        InConfig {
            keys: config.keys.iter().map(|k| k.info.name.clone()).collect(),
            teams: config.teams.keys().cloned().collect(),
        }
    }

    fn has_team(&self, name: &str) -> bool {
        self.teams.iter().any(|t| t == name)
    }
}

/// Create a key; the secret is returned once and never stored. Its team
/// is one of the database's or of the config file's.
pub fn create_key(
    conn: &Connection,
    new: &NewKey,
    in_config: &InConfig,
) -> Result<(String, KeyInfo), AccessError> {
    valid_name(&new.name)?;
    let budget = Budget::from_parts(new.budget_usd, new.period).map_err(AccessError::Invalid)?;
    if let Some(team) = &new.team
        && !in_config.has_team(team)
        && !team_exists(conn, team)?
    {
        return Err(AccessError::NoSuchTeam(team.clone()));
    }
    if [new.rpm, new.tpm].contains(&Some(0)) {
        return Err(AccessError::Invalid("rpm and tpm must be above 0".into()));
    }
    if in_config.keys.contains(&new.name) {
        return Err(AccessError::KeyTaken(new.name.clone()));
    }
    let secret = new_secret();
    let taken: bool = conn
        .query_row("SELECT 1 FROM keys WHERE name = ?1", [&new.name], |_| Ok(true))
        .optional()?
        .is_some();
    if taken {
        return Err(AccessError::KeyTaken(new.name.clone()));
    }
    // Checked above, but another process may have taken the name since.
    let inserted = conn.execute(
        "INSERT INTO keys (name, team, hash, prefix, admin, models, rpm, tpm, budget_usd, period, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            new.name,
            new.team,
            hex::encode(digest(secret.as_bytes())),
            &secret[..10],
            new.admin,
            new.models
                .as_ref()
                .map(|m| serde_json::to_string(m).expect("names serialise")),
            new.rpm,
            new.tpm,
            budget.map(|b| b.limit_usd),
            budget.map(|b| b.period.as_str()),
            now_ms(),
        ],
    );
    if is_clash(&inserted) {
        return Err(AccessError::KeyTaken(new.name.clone()));
    }
    inserted?;
    let info = KeyInfo {
        name: new.name.clone(),
        team: new.team.clone(),
        models: new.models.clone(),
        admin: new.admin,
        rpm: new.rpm,
        tpm: new.tpm,
        budget,
    };
    Ok((secret, info))
}

/// Revoke a key: it stops working within a second on every gateway that
/// shares the database.
pub fn revoke_key(conn: &Connection, name: &str) -> Result<(), AccessError> {
    let changed = conn.execute(
        "UPDATE keys SET revoked_ms = ?2 WHERE name = ?1 AND revoked_ms IS NULL",
        params![name, now_ms()],
    )?;
    if changed == 0 {
        return Err(AccessError::NoSuchKey(name.to_string()));
    }
    Ok(())
}

pub fn list_keys(conn: &Connection) -> Result<Vec<KeyRow>, AccessError> {
    let mut query = conn.prepare(
        "SELECT name, team, admin, models, rpm, tpm, budget_usd, period, prefix, created_ms, revoked_ms
         FROM keys ORDER BY name",
    )?;
    let rows = query.query_map([], |r| {
        Ok(KeyRow {
            info: KeyInfo {
                name: r.get(0)?,
                team: r.get(1)?,
                admin: r.get(2)?,
                models: r
                    .get::<_, Option<String>>(3)?
                    .and_then(|m| serde_json::from_str(&m).ok()),
                rpm: r.get(4)?,
                tpm: r.get(5)?,
                budget: budget(r.get(6)?, r.get(7)?),
            },
            prefix: r.get(8)?,
            created_ms: r.get(9)?,
            revoked_ms: r.get(10)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn budget(limit: Option<f64>, period: Option<String>) -> Option<Budget> {
    Some(Budget {
        limit_usd: limit?,
        period: period.as_deref().and_then(Period::parse).unwrap_or(Period::Month),
    })
}

fn team_exists(conn: &Connection, name: &str) -> Result<bool, AccessError> {
    Ok(conn
        .query_row("SELECT 1 FROM teams WHERE name = ?1", [name], |_| Ok(true))
        .optional()?
        .is_some())
}

/// Create a team. A team of the config file's is refused: the two would
/// share a name, and the database's budget would silently replace the file's.
pub fn create_team(
    conn: &Connection,
    name: &str,
    budget: Option<Budget>,
    in_config: &InConfig,
) -> Result<(), AccessError> {
    valid_name(name)?;
    if in_config.has_team(name) {
        return Err(AccessError::TeamInConfig(name.to_string()));
    }
    if team_exists(conn, name)? {
        return Err(AccessError::TeamTaken(name.to_string()));
    }
    let inserted = conn.execute(
        "INSERT INTO teams (name, budget_usd, period, created_ms) VALUES (?1, ?2, ?3, ?4)",
        params![
            name,
            budget.map(|b| b.limit_usd),
            budget.map(|b| b.period.as_str()),
            now_ms()
        ],
    );
    if is_clash(&inserted) {
        return Err(AccessError::TeamTaken(name.to_string()));
    }
    inserted?;
    Ok(())
}

/// An insert refused by a uniqueness constraint: a name taken between the
/// check and the write.
fn is_clash(inserted: &Result<usize, rusqlite::Error>) -> bool {
    matches!(
        inserted,
        Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation
    )
}

/// Change a team's budget (none: no budget); a config file's team is
/// changed in the file.
pub fn set_team(
    conn: &Connection,
    name: &str,
    budget: Option<Budget>,
    in_config: &InConfig,
) -> Result<(), AccessError> {
    if in_config.has_team(name) {
        return Err(AccessError::TeamInConfig(name.to_string()));
    }
    let changed = conn.execute(
        "UPDATE teams SET budget_usd = ?2, period = ?3 WHERE name = ?1",
        params![
            name,
            budget.map(|b| b.limit_usd),
            budget.map(|b| b.period.as_str())
        ],
    )?;
    if changed == 0 {
        return Err(AccessError::NoSuchTeam(name.to_string()));
    }
    Ok(())
}

pub fn list_teams(conn: &Connection) -> Result<Vec<TeamRow>, AccessError> {
    let mut query = conn.prepare("SELECT name, budget_usd, period FROM teams ORDER BY name")?;
    let rows = query.query_map([], |r| {
        Ok(TeamRow {
            name: r.get(0)?,
            budget: budget(r.get(1)?, r.get(2)?),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The change counter of keys and teams: a gateway reloads them when it moves.
pub fn version(conn: &Connection) -> Result<i64, AccessError> {
    Ok(
        conn.query_row("SELECT version FROM changes WHERE what = 'access'", [], |r| {
            r.get(0)
        })?,
    )
}

/// Every active key and every team.
pub fn load(conn: &Connection) -> Result<Stored, AccessError> {
    let mut stored = Stored::default();
    let mut query = conn.prepare(
        "SELECT hash, name, team, admin, models, rpm, tpm, budget_usd, period FROM keys WHERE revoked_ms IS NULL",
    )?;
    let rows = query.query_map([], |r| {
        let hash: String = r.get(0)?;
        let info = KeyInfo {
            name: r.get(1)?,
            team: r.get(2)?,
            admin: r.get(3)?,
            models: r
                .get::<_, Option<String>>(4)?
                .and_then(|m| serde_json::from_str(&m).ok()),
            rpm: r.get(5)?,
            tpm: r.get(6)?,
            budget: budget(r.get(7)?, r.get(8)?),
        };
        Ok((hash, info))
    })?;
    for row in rows {
        let (hash, info) = row?;
        let mut digest = [0u8; 32];
        if hex::decode_to_slice(&hash, &mut digest).is_ok() {
            stored.keys.insert(digest, Arc::new(info));
        }
    }
    for team in list_teams(conn)? {
        stored.teams.insert(team.name, team.budget);
    }
    Ok(stored)
}

/// Whether the database holds any active key.
pub fn any_key(conn: &Connection) -> Result<bool, AccessError> {
    Ok(conn
        .query_row("SELECT 1 FROM keys WHERE revoked_ms IS NULL LIMIT 1", [], |_| {
            Ok(true)
        })
        .optional()?
        .is_some())
}

/// What a key or a team was charged since `since_ms` (to resume budgets).
pub fn spent_since(conn: &Connection, column: &str, name: &str, since_ms: i64) -> Result<f64, AccessError> {
    debug_assert!(column == "key_name" || column == "team");
    Ok(conn.query_row(
        &format!("SELECT coalesce(sum(charged_usd), 0.0) FROM requests WHERE id >= ?2 AND {column} = ?1"),
        params![name, crate::ledger::id_from(since_ms)],
        |r| r.get(0),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Store;

    #[test]
    fn keys_are_kept_as_hashes_checked_and_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("l.db")).unwrap();
        let conn = store.connection();
        let v0 = version(conn).unwrap();
        assert!(!any_key(conn).unwrap());
        create_team(
            conn,
            "search",
            Budget::from_parts(Some(5.0), Some(Period::Day)).unwrap(),
            &InConfig::default(),
        )
        .unwrap();
        let new = NewKey {
            name: "ci".into(),
            team: Some("search".into()),
            rpm: Some(60),
            ..NewKey::default()
        };
        let (secret, info) = create_key(conn, &new, &InConfig::default()).unwrap();
        assert!(secret.starts_with("sk-sb-") && secret.len() == 46);
        assert_eq!(info.team.as_deref(), Some("search"));
        let stored: String = conn.query_row("SELECT hash FROM keys", [], |r| r.get(0)).unwrap();
        assert!(!stored.contains(&secret[6..]), "only the hash is kept");
        assert!(version(conn).unwrap() > v0, "a change moves the counter");
        let loaded = load(conn).unwrap();
        assert_eq!(loaded.keys[&digest(secret.as_bytes())].rpm, Some(60));
        assert_eq!(
            loaded.teams["search"],
            Some(Budget {
                limit_usd: 5.0,
                period: Period::Day
            })
        );
        assert!(matches!(
            create_key(conn, &new, &InConfig::default()),
            Err(AccessError::KeyTaken(_))
        ));
        let orphan = NewKey {
            name: "x".into(),
            team: Some("nowhere".into()),
            ..NewKey::default()
        };
        assert!(matches!(
            create_key(conn, &orphan, &InConfig::default()),
            Err(AccessError::NoSuchTeam(_))
        ));
        let negative = NewKey {
            name: "y".into(),
            budget_usd: Some(-1.0),
            ..NewKey::default()
        };
        assert!(matches!(
            create_key(conn, &negative, &InConfig::default()),
            Err(AccessError::Invalid(_))
        ));
        // The config file's key names are taken too; its teams may be joined.
        let config = InConfig {
            keys: vec!["deploy".into()],
            teams: vec!["nowhere".into()],
        };
        let clash = NewKey {
            name: "deploy".into(),
            ..NewKey::default()
        };
        assert!(matches!(
            create_key(conn, &clash, &config),
            Err(AccessError::KeyTaken(name)) if name == "deploy"
        ));
        create_key(conn, &orphan, &config).unwrap();
        revoke_key(conn, "x").unwrap();
        revoke_key(conn, "ci").unwrap();
        assert!(load(conn).unwrap().keys.is_empty());
        assert!(matches!(revoke_key(conn, "ci"), Err(AccessError::NoSuchKey(_))));
        assert!(list_keys(conn).unwrap()[0].revoked_ms.is_some());
    }

    #[test]
    fn a_config_files_team_is_changed_in_the_file_not_shadowed_in_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("l.db")).unwrap();
        let conn = store.connection();
        let config = InConfig {
            keys: vec![],
            teams: vec!["search".into()],
        };
        let budget = Budget::from_parts(Some(5.0), None).unwrap();
        assert!(matches!(
            create_team(conn, "search", budget, &config),
            Err(AccessError::TeamInConfig(name)) if name == "search"
        ));
        assert!(matches!(
            set_team(conn, "search", None, &config),
            Err(AccessError::TeamInConfig(_))
        ));
        assert!(load(conn).unwrap().teams.is_empty(), "nothing was written");
        assert!(matches!(
            set_team(conn, "ads", None, &config),
            Err(AccessError::NoSuchTeam(_))
        ));
        create_team(conn, "ads", budget, &config).unwrap();
        set_team(conn, "ads", None, &config).unwrap();
        assert_eq!(load(conn).unwrap().teams["ads"], None);
    }
}
