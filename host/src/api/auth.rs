//! Gateway keys: who may call, and which routes they may use. Keys come
//! from the config file and from the ledger database; key checking is on
//! when either holds one.

use super::ApiError;
use crate::access::{KeyInfo, Stored, digest};
use crate::config::{GatewayKey, Route};
use http::HeaderMap;
use std::sync::Arc;

/// The authenticated caller of one request.
pub struct Caller {
    /// `None` when no key exists anywhere (open access).
    key: Option<Arc<KeyInfo>>,
    /// The key is one of the config file's (a bounded set, fit for a
    /// metrics label), not the database's.
    from_file: bool,
}

impl Caller {
    pub fn name(&self) -> &str {
        self.key.as_ref().map_or("anonymous", |k| &k.name)
    }

    /// The key, when key checking is on.
    pub fn key(&self) -> Option<&Arc<KeyInfo>> {
        self.key.as_ref()
    }

    /// The key's name when it comes from the config file: a label the
    /// metrics can carry without growing without bound.
    pub fn file_key_name(&self) -> Option<&str> {
        self.key_name().filter(|_| self.from_file)
    }

    /// The key's name; none with open access.
    pub fn key_name(&self) -> Option<&str> {
        self.key.as_ref().map(|k| k.name.as_str())
    }

    pub fn may_use(&self, route: &Route) -> Result<(), ApiError> {
        match self.key.as_ref().and_then(|k| k.models.as_ref()) {
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

    /// May read `/admin/*`: an admin key, or anyone with open access.
    pub fn is_admin(&self) -> bool {
        self.key.as_ref().is_none_or(|k| k.admin)
    }

    /// Holds an admin key (open access is not enough: `/admin/keys`).
    pub fn has_admin_key(&self) -> bool {
        self.key.as_ref().is_some_and(|k| k.admin)
    }

    /// Whether the caller may see the route in `/v1/models`.
    pub fn sees(&self, route: &Route) -> bool {
        self.may_use(route).is_ok()
    }
}

/// The token of `Bearer <token>`; the scheme is case-insensitive (RFC 9110).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || !token.starts_with(b" ") {
        return None;
    }
    let token = token.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Check `Authorization: Bearer <key>` (or, as Anthropic's clients send
/// it, `x-api-key: <key>`) against the config file's keys
/// (every one compared, each in constant time) and the database's (by the
/// SHA-256 of what was presented).
pub fn authenticate(keys: &[GatewayKey], stored: &Stored, headers: &HeaderMap) -> Result<Caller, ApiError> {
    if keys.is_empty() && stored.keys.is_empty() {
        return Ok(Caller {
            key: None,
            from_file: false,
        });
    }
    let presented = match headers.get(http::header::AUTHORIZATION) {
        Some(value) => bearer_token(value.as_bytes()),
        None => headers
            .get("x-api-key")
            .map(|v| v.as_bytes().trim_ascii())
            .filter(|v| !v.is_empty()),
    }
    .ok_or_else(|| {
        ApiError::unauthorized(
            "Missing gateway key: send it as `Authorization: Bearer <key>` (or `x-api-key: <key>`).",
        )
    })?;
    let mut found = None;
    for key in keys {
        if key.secret.matches(presented) {
            found = Some(key.info.clone());
        }
    }
    if let Some(key) = found {
        return Ok(Caller {
            key: Some(key),
            from_file: true,
        });
    }
    stored
        .keys
        .get(&digest(presented))
        .map(|key| Caller {
            key: Some(key.clone()),
            from_file: false,
        })
        .ok_or_else(|| ApiError::unauthorized("Incorrect gateway key provided."))
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["Bearer k", "bearer k", "BEARER k", "Bearer   k "] {
            assert_eq!(bearer_token(value.as_bytes()), Some(&b"k"[..]), "{value}");
        }
        for value in ["Basic k", "Bearerk", "Bearer ", "Bear k", ""] {
            assert_eq!(bearer_token(value.as_bytes()), None, "{value}");
        }
    }
}
