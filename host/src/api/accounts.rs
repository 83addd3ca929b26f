//! What the ledger answers over HTTP: `POST /v1/feedback` (how good an
//! answer was), `GET /admin/usage` (reports), and `/admin/keys` (gateway
//! keys without editing the config). The database is reached off the
//! async runtime.

use super::auth::{self, Caller};
use super::body::read_body;
use super::{ApiError, Body, json_response};
use crate::access::store::{self, AccessError, NewKey};
use crate::gateway::Gateway;
use crate::ledger::report::{self, Dimension};
use crate::ledger::unix_ms;
use hyper::body::Incoming;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Largest feedback or key request body.
const SMALL_BODY: usize = 64 * 1024;

fn caller(gw: &Gateway, headers: &http::HeaderMap) -> Result<Caller, ApiError> {
    auth::authenticate(&gw.config.keys, &gw.shared.keyring.current(), headers)
}

/// Run `f` on a connection of its own, on the blocking pool.
async fn with_db<R: Send + 'static>(
    gw: &Gateway,
    f: impl FnOnce(&Connection) -> Result<R, ApiError> + Send + 'static,
) -> Result<R, ApiError> {
    let Some(conn) = gw.shared.ledger.connect() else {
        return Err(ApiError::not_found_with(
            "There is no ledger: configure `[ledger] path` to keep requests, keys and feedback.",
        ));
    };
    tokio::task::spawn_blocking(move || {
        let conn = conn.map_err(db_error)?;
        f(&conn)
    })
    .await
    .map_err(|e| ApiError::internal(format!("ledger task failed: {e}")))?
}

fn db_error(e: rusqlite::Error) -> ApiError {
    tracing::error!(error = %e, "ledger database error");
    ApiError::unavailable("The ledger database cannot be read right now; retry later.")
}

fn access_error(e: AccessError) -> ApiError {
    match e {
        AccessError::KeyTaken(_) | AccessError::TeamTaken(_) | AccessError::TeamInConfig(_) => {
            ApiError::conflict(e.to_string())
        }
        AccessError::NoSuchKey(_) | AccessError::NoSuchTeam(_) => ApiError::not_found_with(e.to_string()),
        AccessError::Invalid(_) => ApiError::invalid_request(e.to_string()),
        AccessError::Db(e) => db_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Feedback {
    /// The gateway's id (`x-switchboard-request-id`) or the caller's own
    /// `x-request-id` (then the key's latest request with it).
    request_id: String,
    score: f64,
    label: Option<String>,
    comment: Option<String>,
}

/// `POST /v1/feedback`: a caller scores one of its own answers.
pub async fn feedback(
    gw: &Arc<Gateway>,
    request: http::Request<Incoming>,
) -> Result<http::Response<Body>, ApiError> {
    let caller = caller(gw, request.headers())?;
    let (parts, body) = request.into_parts();
    let bytes = read_body(&parts.headers, body, SMALL_BODY).await?;
    let feedback: Feedback = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid_request(format!("Invalid feedback: {e}.")))?;
    if !(0.0..=1.0).contains(&feedback.score) {
        return Err(ApiError::invalid_param(
            "score",
            "`score` must be between 0 and 1.",
        ));
    }
    for (name, text, limit) in [
        ("label", &feedback.label, 200),
        ("comment", &feedback.comment, 4000),
    ] {
        if text.as_ref().is_some_and(|t| t.len() > limit) {
            return Err(ApiError::invalid_param(
                name,
                format!("`{name}` is longer than {limit} bytes."),
            ));
        }
    }
    let key = caller.key_name().map(str::to_string);
    // The record may still be in the writer's queue.
    let ledger = gw.shared.ledger.clone();
    tokio::task::spawn_blocking(move || ledger.flush(Duration::from_secs(2)))
        .await
        .ok();
    let id = with_db(gw, move |conn| {
        let found: Option<String> = conn
            .query_row(
                "SELECT id FROM requests WHERE (id = ?1 OR caller_request_id = ?1) AND key_name IS ?2
                 ORDER BY (id = ?1) DESC, at_ms DESC LIMIT 1",
                params![feedback.request_id, key],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_error)?;
        let Some(id) = found else {
            return Err(ApiError::not_found_with(format!(
                "No request `{}` of this key is in the ledger.",
                feedback.request_id
            )));
        };
        conn.execute(
            "INSERT INTO feedback (request_id, key_name, score, label, comment, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                id,
                key,
                feedback.score,
                feedback.label,
                feedback.comment,
                unix_ms(SystemTime::now())
            ],
        )
        .map_err(db_error)?;
        Ok(id)
    })
    .await?;
    Ok(json_response(
        http::StatusCode::CREATED,
        &json!({"object": "feedback", "request_id": id}),
    ))
}

/// `GET /admin/usage?group_by=provider,model&since=7d&until=...`.
pub async fn usage(
    gw: &Arc<Gateway>,
    request: &http::Request<Incoming>,
) -> Result<http::Response<Body>, ApiError> {
    if !caller(gw, request.headers())?.is_admin() {
        return Err(ApiError::admin_only(
            "This gateway key may not use the admin endpoints.",
        ));
    }
    let query: Vec<(String, String)> = request
        .uri()
        .query()
        .map(|q| {
            q.split('&')
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.to_string(), v.replace("%2C", ",").replace("%3A", ":")))
                .collect()
        })
        .unwrap_or_default();
    let get = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let by = Dimension::parse(get("group_by").unwrap_or("provider,model"))
        .map_err(|e| ApiError::invalid_param("group_by", e))?;
    let now = unix_ms(SystemTime::now());
    let since = report::parse_time(get("since").unwrap_or("7d"), now)
        .map_err(|e| ApiError::invalid_param("since", e))?;
    let until = match get("until") {
        Some(until) => report::parse_time(until, now).map_err(|e| ApiError::invalid_param("until", e))?,
        None => now + 1,
    };
    let rows = with_db(gw, move |conn| {
        report::usage(conn, &by, since, until).map_err(db_error)
    })
    .await?;
    Ok(json_response(
        http::StatusCode::OK,
        &json!({"since_ms": since, "until_ms": until, "rows": rows}),
    ))
}

/// `/admin/keys`: needs an admin key, even with open access (creating the
/// first key closes an open API; without an admin key anywhere, keys are
/// managed with the `switchboard keys` command on the machine).
pub async fn keys(
    gw: &Arc<Gateway>,
    request: http::Request<Incoming>,
) -> Result<http::Response<Body>, ApiError> {
    if !caller(gw, request.headers())?.has_admin_key() {
        return Err(ApiError::admin_only(
            "Managing keys needs an admin gateway key (create the first one with `switchboard keys create --admin`).",
        ));
    }
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    match (method, path.strip_prefix("/admin/keys").unwrap_or("")) {
        (http::Method::GET, "") => {
            let keys = with_db(gw, |conn| store::list_keys(conn).map_err(access_error)).await?;
            Ok(json_response(http::StatusCode::OK, &json!({"keys": keys})))
        }
        (http::Method::POST, "") => {
            let (parts, body) = request.into_parts();
            let bytes = read_body(&parts.headers, body, SMALL_BODY).await?;
            let new: NewKey = serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::invalid_request(format!("Invalid key: {e}.")))?;
            let in_config = store::InConfig::of(&gw.config);
            let (secret, info) = with_db(gw, move |conn| {
                store::create_key(conn, &new, &in_config).map_err(access_error)
            })
            .await?;
            tracing::info!(key = %info.name, team = info.team.as_deref(), admin = info.admin, "gateway key created");
            Ok(json_response(
                http::StatusCode::CREATED,
                &json!({"key": info, "secret": secret, "note": "The secret is shown once; only its hash is kept."}),
            ))
        }
        (http::Method::DELETE, name) if name.len() > 1 => {
            let name = name[1..].to_string();
            let shown = name.clone();
            with_db(gw, move |conn| {
                store::revoke_key(conn, &name).map_err(access_error)
            })
            .await?;
            tracing::info!(key = %shown, "gateway key revoked");
            Ok(json_response(http::StatusCode::OK, &json!({"revoked": shown})))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}
