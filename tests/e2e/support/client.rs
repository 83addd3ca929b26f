//! A plain HTTP/1 client for talking to the gateway under test.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::OnceLock;
use std::time::Duration;

/// A whole response as the caller saw it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The body as a chat completion, checked against the official schema.
    pub fn completion(&self) -> serde_json::Value {
        let answer = self.json();
        super::schema::completion(&answer);
        answer
    }

    /// The JSON chunks of an SSE body, each checked against the official
    /// schema (an in-band error event is not a chunk and is skipped).
    pub fn valid_chunks(&self) -> Vec<serde_json::Value> {
        let chunks = self.chunks();
        for chunk in chunks.iter().filter(|c| c.get("error").is_none()) {
            super::schema::chunk(chunk);
        }
        chunks
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
    }

    /// The `data:` payloads of an SSE body, in order.
    pub fn sse_data(&self) -> Vec<String> {
        self.text()
            .split("\n\n")
            .filter_map(|event| event.strip_prefix("data: "))
            .map(str::to_string)
            .collect()
    }

    /// The JSON chunks of an SSE body (all but `[DONE]`).
    pub fn chunks(&self) -> Vec<serde_json::Value> {
        self.sse_data()
            .iter()
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("chunk not JSON ({e}): {d}")))
            .collect()
    }

    /// The text of a streamed answer, joined from its chunks' deltas.
    pub fn streamed_text(&self) -> String {
        self.sse_data()
            .iter()
            .filter(|d| *d != "[DONE]")
            .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_string))
            .collect()
    }
}

fn client() -> &'static Client<HttpConnector, Full<Bytes>> {
    static CLIENT: OnceLock<Client<HttpConnector, Full<Bytes>>> = OnceLock::new();
    CLIENT.get_or_init(|| Client::builder(TokioExecutor::new()).build_http())
}

pub async fn send(request: http::Request<Full<Bytes>>) -> Reply {
    let response = tokio::time::timeout(Duration::from_secs(60), client().request(request))
        .await
        .expect("gateway answered within 60 s")
        .expect("request reached the gateway");
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(60), body.collect())
        .await
        .expect("body finished within 60 s")
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

pub async fn post(url: &str, body: &serde_json::Value) -> Reply {
    post_with(url, body.to_string().into_bytes(), &[]).await
}

pub async fn post_with(url: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> Reply {
    let mut request = http::Request::post(url).header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(request.body(Full::new(Bytes::from(body))).unwrap()).await
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = http::Request::get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(request.body(Full::new(Bytes::new())).unwrap()).await
}
