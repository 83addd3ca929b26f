//! `/admin/*`: what operators need to see — loaded plugins, refused files,
//! and live target health.

use super::{ApiError, Body, json_response};
use crate::auth;
use crate::gateway::Gateway;
use crate::plugin::policy_wit::CircuitState;
use serde_json::json;
use std::sync::Arc;
use tokio::time::Instant;

fn authorize(gw: &Gateway, headers: &http::HeaderMap) -> Result<(), ApiError> {
    let caller = auth::authenticate(&gw.config.keys, headers)?;
    if caller.is_admin() {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "This gateway key may not use the admin endpoints.",
        ))
    }
}

pub fn plugins(gw: &Gateway, headers: &http::HeaderMap) -> Result<http::Response<Body>, ApiError> {
    authorize(gw, headers)?;
    let set = gw.registry.snapshot();
    let mut adapters: Vec<_> = set
        .adapters
        .iter()
        .map(|(name, versions)| {
            let serving = versions.serving().ok();
            let all: Vec<_> = versions
                .all()
                .iter()
                .map(|a| {
                    json!({
                        "source": a.source, "version": a.version,
                        "serving": serving.is_some_and(|s| Arc::ptr_eq(s, a)),
                        "calls": a.bulkhead.view(),
                    })
                })
                .collect();
            json!({
                "name": name,
                "version": serving.map(|a| &a.version),
                "source": serving.map(|a| &a.source),
                "quarantined": serving.is_none(),
                "versions": all,
            })
        })
        .collect();
    let mut policies: Vec<_> = set
        .policies
        .iter()
        .map(|(name, versions)| {
            let serving = versions.serving().ok();
            let all: Vec<_> = versions
                .all()
                .iter()
                .map(|p| {
                    json!({
                        "source": p.source,
                        "serving": serving.is_some_and(|s| Arc::ptr_eq(s, p)),
                        "calls": p.bulkhead.view(),
                    })
                })
                .collect();
            json!({
                "name": name,
                "source": serving.map(|p| &p.source),
                "quarantined": serving.is_none(),
                "versions": all,
            })
        })
        .collect();
    adapters.sort_by_key(|v| v["name"].as_str().unwrap_or_default().to_string());
    policies.sort_by_key(|v| v["name"].as_str().unwrap_or_default().to_string());
    Ok(json_response(
        http::StatusCode::OK,
        &json!({
            "adapters": adapters,
            "policies": policies,
            "refused": gw.registry.refusals(),
            "memory_bytes": gw.registry.memory_in_use(),
        }),
    ))
}

pub fn config(
    gw: &Gateway,
    status: &crate::reload::ReloadStatus,
    headers: &http::HeaderMap,
) -> Result<http::Response<Body>, ApiError> {
    authorize(gw, headers)?;
    let config = &gw.config;
    Ok(json_response(
        http::StatusCode::OK,
        &json!({
            "file": config.file.display().to_string(),
            "loaded_at": status.loaded_at,
            "providers": config.providers.iter().map(|p| &p.name).collect::<Vec<_>>(),
            "routes": config.routes.iter().map(|r| &r.name).collect::<Vec<_>>(),
            "refused": status.refused,
            "pending_restart": status.pending_restart,
        }),
    ))
}

pub fn targets(gw: &Gateway, headers: &http::HeaderMap) -> Result<http::Response<Body>, ApiError> {
    authorize(gw, headers)?;
    let now = Instant::now();
    let mut targets: Vec<_> = gw
        .health
        .iter()
        .map(|((provider, model), health)| {
            let h = health.view(now);
            let provider = &gw.config.providers[*provider];
            json!({
                "provider": provider.name,
                "model": model,
                "enabled": provider.disabled.is_none(),
                "disabled_reason": provider.disabled,
                "latency_ewma_ms": h.latency_ewma_ms,
                "ttft_ewma_ms": h.ttft_ewma_ms,
                "latency_p95_ms": health.latency_p95().map(|d| d.as_millis() as u64),
                "ttft_p95_ms": health.ttft_p95().map(|d| d.as_millis() as u64),
                "error_rate": h.error_rate,
                "in_flight": h.in_flight,
                "circuit": match h.circuit {
                    CircuitState::Closed => "closed",
                    CircuitState::Open => "open",
                    CircuitState::HalfOpen => "half_open",
                },
                "rate_limited_for_ms": h.rate_limited_for_ms,
            })
        })
        .collect();
    targets.sort_by_key(|t| format!("{}/{}", t["provider"], t["model"]));
    Ok(json_response(http::StatusCode::OK, &json!({"targets": targets})))
}
