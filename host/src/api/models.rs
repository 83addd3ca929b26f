//! `GET /v1/models`: the names a caller may ask for (routes and aliases).

use super::auth;
use super::{ApiError, Body, json_response};
use crate::gateway::Gateway;
use serde_json::json;

pub fn list(gw: &Gateway, headers: &http::HeaderMap) -> Result<http::Response<Body>, ApiError> {
    let caller = auth::authenticate(&gw.config.keys, &gw.shared.keyring.current(), headers)?;
    let data: Vec<_> = gw
        .config
        .routes
        .iter()
        .filter(|route| caller.sees(route))
        .flat_map(|route| std::iter::once(&route.name).chain(&route.aliases))
        .map(|name| json!({"id": name, "object": "model", "created": 0, "owned_by": "switchboard"}))
        .collect();
    Ok(json_response(
        http::StatusCode::OK,
        &json!({"object": "list", "data": data}),
    ))
}
