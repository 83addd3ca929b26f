//! Reading a request body within its size limit: an oversized one is
//! answered `413` at once, and what the caller still sends is drained in
//! the background so it reads the answer instead of a reset.

use super::ApiError;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// An oversized body is answered `413` at once; what the caller is still
/// sending is read and thrown away (up to this much, for this long) so it
/// can finish and read the error instead of a reset.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// The whole body, at most `limit` bytes.
pub async fn read_body(
    headers: &http::HeaderMap,
    mut body: Incoming,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        tokio::spawn(drain(body));
        return Err(ApiError::too_large(limit));
    }
    let mut buffer = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::invalid_request(format!("Could not read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        if buffer.len() + data.len() > limit {
            tokio::spawn(drain(body));
            return Err(ApiError::too_large(limit));
        }
        buffer.extend_from_slice(&data);
    }
    Ok(buffer.freeze())
}

/// The whole body within the server's size limit and body deadline.
pub async fn read_within(
    server: &crate::config::ServerConfig,
    headers: &http::HeaderMap,
    body: Incoming,
) -> Result<Bytes, ApiError> {
    let timeout = std::time::Duration::from_millis(server.body_read_timeout_ms);
    tokio::time::timeout(timeout, read_body(headers, body, server.max_body_bytes))
        .await
        .map_err(|_| ApiError::body_timeout(timeout))?
}

/// A body that must be one JSON object.
pub fn json_object(bytes: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::invalid_request(format!("We could not parse the JSON body of your request: {e}"))
    })?;
    match value {
        serde_json::Value::Object(object) => Ok(object),
        _ => Err(ApiError::invalid_request(
            "The request body must be a JSON object.",
        )),
    }
}

/// Refuse a body whose top level names a key twice: the gateway routes on
/// the last `model`, and a provider that read the first would answer with
/// another model than the one routed, priced and allowed. Checked where
/// the caller's bytes pass through to the provider.
pub fn no_duplicate_keys(bytes: &[u8]) -> Result<(), ApiError> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<String>, A::Error> {
            // Read to the end (serde checks the object closes), noting
            // the first key seen twice.
            let (mut seen, mut twice) = (std::collections::HashSet::new(), None);
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                if twice.is_none() && !seen.insert(key.clone()) {
                    twice = Some(key);
                }
            }
            Ok(twice)
        }
    }
    let mut reader = serde_json::Deserializer::from_slice(bytes);
    match reader.deserialize_map(Keys) {
        Ok(Some(key)) => Err(ApiError::invalid_request(format!(
            "The request body names `{key}` twice."
        ))),
        // Not an object, or not JSON: the parse that follows says so.
        _ => Ok(()),
    }
}

/// Read and discard the rest of a refused body, within bounds.
async fn drain(mut body: Incoming) {
    let mut drained = 0usize;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(frame)) = body.frame().await {
            drained += frame.data_ref().map_or(0, |d| d.len());
            if drained > DRAIN_LIMIT {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::no_duplicate_keys;

    #[test]
    fn a_key_named_twice_at_the_top_is_refused() {
        assert!(no_duplicate_keys(br#"{"model":"a","x":{"model":1,"model":2},"y":1}"#).is_ok());
        for body in [
            &br#"{"model":"opus","messages":[],"model":"cheap"}"#[..],
            br#"{"model": "opus", "model": "cheap", "messages": []}"#,
        ] {
            let error = no_duplicate_keys(body).unwrap_err();
            assert!(error.message.contains("`model` twice"), "{}", error.message);
        }
    }
}
