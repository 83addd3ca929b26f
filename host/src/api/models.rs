//! `GET /v1/models`: the names a caller may ask for (routes and aliases),
//! with who serves them and the endpoints they answer on; in Anthropic's
//! shape when the caller speaks Anthropic's API (`anthropic-version`).

use super::auth;
use super::{ApiError, Body, json_response};
use crate::config::Capability;
use crate::gateway::{Gateway, RouteRef};
use serde_json::{Value, json};

/// What a route's chat models answer on.
const CHAT_ENDPOINTS: [&str; 3] = ["/v1/chat/completions", "/v1/messages", "/v1/responses"];
const EMBEDDINGS_ENDPOINTS: [&str; 1] = ["/v1/embeddings"];

pub fn list(gw: &Gateway, headers: &http::HeaderMap) -> Result<http::Response<Body>, ApiError> {
    let caller = auth::authenticate(&gw.config.keys, &gw.shared.keyring.current(), headers)?;
    let visible: Vec<(String, RouteRef<'_>)> = (0..gw.config.routes.len())
        .map(|i| gw.route(i))
        .filter(|route| caller.sees(route.config))
        .flat_map(|route| {
            std::iter::once(&route.config.name)
                .chain(&route.config.aliases)
                .map(move |name| (name.clone(), route))
        })
        .collect();
    let body = if headers.contains_key("anthropic-version") {
        anthropic(&visible)
    } else {
        openai(&visible)
    };
    Ok(json_response(http::StatusCode::OK, &body))
}

/// The endpoints a route answers on: chat's three for its chat models,
/// embeddings for its embedding models.
fn endpoints(route: RouteRef<'_>) -> Vec<&'static str> {
    let embeds = |embedding: bool| {
        route
            .targets()
            .any(|t| t.model.capabilities.contains(&Capability::Embeddings) == embedding)
    };
    let mut endpoints = Vec::new();
    if embeds(false) {
        endpoints.extend(CHAT_ENDPOINTS);
    }
    if embeds(true) {
        endpoints.extend(EMBEDDINGS_ENDPOINTS);
    }
    endpoints
}

/// The provider that serves a route, or `switchboard` when several do.
fn owned_by(route: RouteRef<'_>) -> String {
    let mut providers = route.targets().map(|t| t.provider.name.as_str());
    let first = providers.next().unwrap_or("switchboard");
    if providers.all(|p| p == first) {
        first.to_string()
    } else {
        "switchboard".to_string()
    }
}

fn openai(visible: &[(String, RouteRef<'_>)]) -> Value {
    let data: Vec<Value> = visible
        .iter()
        .map(|(name, route)| {
            let targets: Vec<String> = route
                .targets()
                .map(|t| format!("{}/{}", t.provider.name, t.target.model))
                .collect();
            json!({"id": name, "object": "model", "created": 0, "owned_by": owned_by(*route),
                   "endpoints": endpoints(*route), "targets": targets})
        })
        .collect();
    json!({"object": "list", "data": data})
}

/// Anthropic's list: the routes a Messages caller can use.
fn anthropic(visible: &[(String, RouteRef<'_>)]) -> Value {
    let data: Vec<Value> = visible
        .iter()
        .filter(|(_, route)| endpoints(*route).contains(&"/v1/messages"))
        .map(|(name, _)| {
            json!({"type": "model", "id": name, "display_name": name, "created_at": "1970-01-01T00:00:00Z"})
        })
        .collect();
    let id = |i: Option<&Value>| i.map_or(Value::Null, |m| m["id"].clone());
    json!({"data": data, "has_more": false, "first_id": id(data.first()), "last_id": id(data.last())})
}
