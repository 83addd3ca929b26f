//! `/admin/*`: what operators need to see — loaded plugins, refused files,
//! and live target health.

use super::auth;
use super::{ApiError, Body, json_response};
use crate::gateway::Gateway;
use crate::plugin::types::{Capabilities, CircuitState};
use crate::plugin::{Guarded, Versions};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::time::Instant;

/// The caller holds an admin key, or key checking is off.
pub fn authorize(gw: &Gateway, headers: &http::HeaderMap) -> Result<(), ApiError> {
    let caller = auth::authenticate(&gw.config.keys, &gw.shared.keyring.current(), headers)?;
    if caller.is_admin() {
        Ok(())
    } else {
        Err(ApiError::admin_only(
            "This gateway key may not use the admin endpoints.",
        ))
    }
}

pub fn plugins(gw: &Gateway, headers: &http::HeaderMap) -> Result<http::Response<Body>, ApiError> {
    authorize(gw, headers)?;
    let set = gw.registry.snapshot();
    let adapters = listing(&set.adapters, |a| {
        json!({
            "version": a.info.version,
            "contract": a.contract.label(),
            "stateless": a.info.stateless,
            "capabilities": capability_names(a.capabilities()),
        })
    });
    let policies = listing(&set.policies, |p| {
        json!({
            "version": Some(&p.info.version).filter(|v| !v.is_empty()),
            "contract": p.contract.label(),
            "stateless": p.info.stateless,
        })
    });
    Ok(json_response(
        http::StatusCode::OK,
        &json!({
            "adapters": adapters,
            "policies": policies,
            "refused": gw.registry.refusals(),
            "memory_bytes": gw.registry.memory_in_use(),
            "memory_bounds": gw.registry.memory_bounds().as_str(),
        }),
    ))
}

/// Capabilities by their configuration names.
fn capability_names(caps: Capabilities) -> Vec<&'static str> {
    [
        (Capabilities::TOOLS, "tools"),
        (Capabilities::IMAGES, "images"),
        (Capabilities::JSON_SCHEMA, "json_schema"),
        (Capabilities::STREAMING, "streaming"),
        (Capabilities::EMBEDDINGS, "embeddings"),
    ]
    .into_iter()
    .filter(|(c, _)| caps.contains(*c))
    .map(|(_, name)| name)
    .collect()
}

/// Each plugin name, sorted: the version serving (if any) and every
/// version kept, with its bulkhead. `about` says what the plugin says of
/// itself (its `version`, contract, ...).
fn listing<P: Guarded>(plugins: &HashMap<String, Versions<P>>, about: impl Fn(&P) -> Value) -> Vec<Value> {
    let mut names: Vec<_> = plugins.iter().collect();
    names.sort_by_key(|(name, _)| *name);
    names
        .into_iter()
        .map(|(name, versions)| {
            let serving = versions.serving().ok();
            let all: Vec<_> = versions
                .all()
                .iter()
                .map(|p| {
                    let mut entry = about(p);
                    entry["source"] = json!(p.source());
                    entry["serving"] = json!(serving.is_some_and(|s| Arc::ptr_eq(s, p)));
                    entry["calls"] = json!(p.bulkhead().view());
                    let (reused, kept) = p.reuse();
                    entry["instances"] = json!({"reused_calls": reused, "kept": kept});
                    entry
                })
                .collect();
            json!({
                "name": name,
                "version": serving.map(|p| about(p)["version"].clone()),
                "source": serving.map(|p| p.source()),
                "quarantined": serving.is_none(),
                "versions": all,
            })
        })
        .collect()
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
