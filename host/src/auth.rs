//! Gateway keys: who may call, and which routes they may use.

use crate::api::ApiError;
use crate::config::{GatewayKey, Route};
use http::HeaderMap;

/// The authenticated caller of one request.
pub struct Caller<'a> {
    /// `None` when the gateway has no keys configured (open access).
    key: Option<&'a GatewayKey>,
}

impl Caller<'_> {
    pub fn name(&self) -> &str {
        self.key.map_or("anonymous", |k| &k.name)
    }

    pub fn may_use(&self, route: &Route) -> Result<(), ApiError> {
        match self.key.and_then(|k| k.models.as_ref()) {
            Some(models)
                if !models
                    .iter()
                    .any(|m| *m == route.name || route.aliases.contains(m)) =>
            {
                Err(ApiError::forbidden(format!(
                    "This gateway key may not use the model `{}`.",
                    route.name
                )))
            }
            _ => Ok(()),
        }
    }

    pub fn is_admin(&self) -> bool {
        self.key.is_none_or(|k| k.admin)
    }

    /// Whether the caller may see the route in `/v1/models`.
    pub fn sees(&self, route: &Route) -> bool {
        self.may_use(route).is_ok()
    }
}

/// Check `Authorization: Bearer <key>` against the configured keys. Every
/// key is compared, each in constant time.
pub fn authenticate<'a>(keys: &'a [GatewayKey], headers: &HeaderMap) -> Result<Caller<'a>, ApiError> {
    if keys.is_empty() {
        return Ok(Caller { key: None });
    }
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .ok_or_else(|| {
            ApiError::unauthorized("Missing gateway key: send it as `Authorization: Bearer <key>`.")
        })?;
    let mut found = None;
    for key in keys {
        if key.secret.matches(presented) {
            found = Some(key);
        }
    }
    found
        .map(|key| Caller { key: Some(key) })
        .ok_or_else(|| ApiError::unauthorized("Incorrect gateway key provided."))
}
