//! Dispatches requests by path, stamps request ids and counts requests;
//! while the server drains, new requests get a `503`.

use super::Lifecycle;
use crate::api::{self, ApiError, Body, RequestIds, full, json_response};
use crate::gateway::Gateway;
use crate::metrics::RequestLabels;
use crate::reload::Live;
use hyper::body::Incoming;
use std::sync::Arc;
use tracing::Instrument;

pub async fn dispatch(
    live: &Live,
    lifecycle: &Lifecycle,
    req: http::Request<Incoming>,
) -> http::Response<Body> {
    // The request finishes on the configuration it started with.
    let gw = live.current();
    let caller_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 128)
        .map(str::to_string);
    let ids = RequestIds::new(caller_id);
    // `key` is filled in once the caller is known.
    let span = tracing::info_span!(
        "request",
        id = %ids.gateway,
        caller_id = ids.caller.as_deref(),
        method = %req.method(),
        path = %req.uri().path(),
        key = tracing::field::Empty
    );
    let mut req = req;
    req.extensions_mut().insert(ids.clone());
    let mut response = if lifecycle.draining.is_cancelled() {
        // Arrived on an open connection after shutdown began.
        ApiError::shutting_down().into_response()
    } else {
        route(&gw, live, lifecycle, req).instrument(span).await
    };
    // The caller's id back as it sent it, or ours.
    let echoed = ids.caller.as_deref().unwrap_or(&ids.gateway);
    if let Ok(value) = http::HeaderValue::from_str(echoed) {
        response.headers_mut().insert("x-request-id", value);
    }
    if let Ok(value) = http::HeaderValue::from_str(&ids.gateway) {
        response.headers_mut().insert("x-switchboard-request-id", value);
    }
    response
}

async fn route(
    gw: &Arc<Gateway>,
    live: &Live,
    lifecycle: &Lifecycle,
    req: http::Request<Incoming>,
) -> http::Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let result = match (method, path.as_str()) {
        (http::Method::POST, "/v1/chat/completions") => {
            counted(gw, api::chat::handle(gw, lifecycle, req).await)
        }
        (http::Method::POST, "/v1/embeddings") => {
            counted(gw, api::embeddings::handle(gw, lifecycle, req).await)
        }
        (http::Method::POST, "/v1/responses") => {
            counted(gw, api::responses::handle(gw, lifecycle, req).await)
        }
        (http::Method::POST, "/v1/messages") => {
            let result = counted(gw, api::messages::handle(gw, lifecycle, req).await);
            return result.unwrap_or_else(ApiError::into_anthropic_response);
        }
        (http::Method::POST, "/v1/messages/count_tokens") => {
            return api::messages::count_tokens(gw, req)
                .await
                .unwrap_or_else(ApiError::into_anthropic_response);
        }
        (http::Method::GET, "/v1/models") => api::models::list(gw, req.headers()),
        (http::Method::POST, "/v1/feedback") => api::accounts::feedback(gw, req).await,
        (http::Method::GET, "/admin/usage") => api::accounts::usage(gw, &req).await,
        (_, "/admin/keys") => api::accounts::keys(gw, req).await,
        (_, keyed) if keyed.starts_with("/admin/keys/") => api::accounts::keys(gw, req).await,
        (http::Method::GET, "/healthz") => Ok(json_response(
            http::StatusCode::OK,
            &serde_json::json!({"status": "ok"}),
        )),
        (http::Method::GET, "/readyz") => Ok(ready(gw)),
        (http::Method::GET, "/metrics") if gw.config.server.metrics_need_admin_key => {
            api::admin::authorize(gw, req.headers()).map(|()| metrics(gw))
        }
        (http::Method::GET, "/metrics") => Ok(metrics(gw)),
        (http::Method::GET, "/admin/plugins") => api::admin::plugins(gw, req.headers()),
        (http::Method::GET, "/admin/targets") => api::admin::targets(gw, req.headers()),
        (http::Method::GET, "/admin/config") => api::admin::config(gw, &live.status(), req.headers()),
        (
            _,
            "/v1/chat/completions"
            | "/v1/embeddings"
            | "/v1/messages"
            | "/v1/messages/count_tokens"
            | "/v1/responses"
            | "/v1/models"
            | "/v1/feedback"
            | "/admin/usage"
            | "/healthz"
            | "/readyz"
            | "/metrics"
            | "/admin/plugins"
            | "/admin/targets"
            | "/admin/config",
        ) => Err(stray(gw, &path, ApiError::method_not_allowed())),
        _ => Err(stray(gw, &path, ApiError::not_found())),
    };
    result.unwrap_or_else(ApiError::into_response)
}

/// A model request's outcome, counted by route and status, and logged
/// when refused.
fn counted(
    gw: &Gateway,
    (route, result): (Option<usize>, Result<http::Response<Body>, ApiError>),
) -> Result<http::Response<Body>, ApiError> {
    let status = result.as_ref().map_or_else(|e| e.status, |r| r.status());
    let route = route.map_or("-".to_string(), |i| gw.route(i).name().to_string());
    gw.metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            status: status.as_u16(),
        })
        .inc();
    if let Err(error) = &result {
        tracing::info!(status = status.as_u16(), error = %error, "request refused");
    }
    result
}

/// A request for a path the gateway does not serve, or with a wrong
/// method: logged and counted (route `unknown`), so a client pointed at the
/// wrong endpoint shows up.
fn stray(gw: &Gateway, path: &str, error: ApiError) -> ApiError {
    tracing::warn!(%path, status = error.status.as_u16(), "no such endpoint");
    gw.metrics
        .requests
        .get_or_create(&RequestLabels {
            route: "unknown".into(),
            status: error.status.as_u16(),
        })
        .inc();
    error
}

/// The Prometheus text, with the gauges read at scrape time brought up to date.
fn metrics(gw: &Gateway) -> http::Response<Body> {
    let metrics = &gw.metrics;
    metrics.plugin_memory.set(gw.registry.memory_in_use() as i64);
    metrics.plugin_memory_peak.set(gw.registry.memory_peak() as i64);
    metrics.plugins_quarantined.set(gw.registry.quarantined() as i64);
    budget_gauges(gw);
    http::Response::builder()
        .header(
            http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
        .body(full(gw.metrics.render()))
        .expect("valid response")
}

/// Each team budget's spend and remainder in its current period (and each
/// key's, when asked for).
fn budget_gauges(gw: &Gateway) {
    let stored = gw.shared.keyring.current();
    let now_ms = crate::ledger::unix_ms(std::time::SystemTime::now());
    if gw.config.budgets.key_metrics {
        let keys = gw.config.keys.iter().map(|k| &k.info).chain(stored.keys.values());
        for key in keys {
            for applies in crate::access::admit::budgets(key, None) {
                let spend = gw
                    .shared
                    .state
                    .spend(&crate::access::admit::period_of(&applies, now_ms));
                let labels = crate::metrics::KeyLabels {
                    key: key.name.clone(),
                };
                let used = spend.spent + spend.reserved;
                gw.metrics.key_budget_spent.get_or_create(&labels).set(used);
                gw.metrics
                    .key_budget_remaining
                    .get_or_create(&labels)
                    .set((applies.budget.limit_usd - used).max(0.0));
            }
        }
    }
    let teams = gw.config.teams.keys().chain(stored.teams.keys());
    for team in teams {
        let Some(budget) = gw.team_budget(&stored, team) else {
            continue;
        };
        let applies = crate::access::admit::Applies {
            id: format!("team:{team}"),
            label: String::new(),
            budget,
        };
        let spend = gw
            .shared
            .state
            .spend(&crate::access::admit::period_of(&applies, now_ms));
        let labels = crate::metrics::TeamLabels { team: team.clone() };
        let used = spend.spent + spend.reserved;
        gw.metrics.budget_spent.get_or_create(&labels).set(used);
        gw.metrics
            .budget_remaining
            .get_or_create(&labels)
            .set((budget.limit_usd - used).max(0.0));
    }
}

/// Ready when every route's policy and every provider's adapter is loaded.
fn ready(gw: &Gateway) -> http::Response<Body> {
    let plugins = gw.registry.snapshot();
    let missing: Vec<String> = gw
        .config
        .providers
        .iter()
        // Loaded, quarantined or not: a quarantined adapter fails its own
        // attempts, and taking the instance out of a balancer would not help.
        .filter(|p| !plugins.adapters.contains_key(&p.adapter))
        .map(|p| format!("adapter {}", p.adapter))
        .chain(
            gw.config
                .routes
                .iter()
                .filter(|r| !plugins.policies.contains_key(&r.policy))
                .map(|r| format!("policy {}", r.policy)),
        )
        .collect();
    if missing.is_empty() {
        json_response(http::StatusCode::OK, &serde_json::json!({"status": "ready"}))
    } else {
        json_response(
            http::StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"status": "not ready", "missing": missing}),
        )
    }
}
