//! The simulated provider: a tiny OpenAI-compatible server on loopback so a
//! first run without any provider key still answers. Its answers say plainly
//! that they are simulated.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::net::SocketAddr;

const NOTICE: &str =
    "[simulated answer: Switchboard's built-in simulator replied because no provider key is set]";

/// Start the simulator on an ephemeral loopback port; returns its base URL.
pub async fn start() -> std::io::Result<String> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(|req| async move { Ok::<_, Infallible>(answer(req).await) });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(format!("http://{addr}/v1"))
}

async fn answer(req: http::Request<Incoming>) -> http::Response<Full<Bytes>> {
    let reply = |status: u16, content_type: &str, body: Vec<u8>| {
        http::Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("valid response")
    };
    if req.uri().path() != "/v1/chat/completions" {
        return reply(
            404,
            "application/json",
            br#"{"error":{"message":"not found","type":"invalid_request_error"}}"#.to_vec(),
        );
    }
    let body = match Limited::new(req.into_body(), 16 * 1024 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return reply(
                400,
                "application/json",
                br#"{"error":{"message":"unreadable body","type":"invalid_request_error"}}"#.to_vec(),
            );
        }
    };
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return reply(
            400,
            "application/json",
            br#"{"error":{"message":"invalid JSON","type":"invalid_request_error"}}"#.to_vec(),
        );
    };
    let model = request["model"]
        .as_str()
        .unwrap_or("switchboard-simulator")
        .to_string();
    let said = last_user_text(&request);
    let text = format!("{NOTICE} You said: {said}");
    let prompt_tokens = (body.len() / 4) as u64;
    let completion_tokens = text.split_whitespace().count() as u64;
    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens});
    if request["stream"].as_bool() != Some(true) {
        let completion = json!({
            "id": "chatcmpl-simulated", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": usage,
        });
        return reply(200, "application/json", completion.to_string().into_bytes());
    }
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-simulated", "object": "chat.completion.chunk", "created": 0, "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut out = String::new();
    let mut push = |v: Value| out.push_str(&format!("data: {v}\n\n"));
    push(chunk(json!({"role": "assistant", "content": ""}), Value::Null));
    for (i, word) in text.split(' ').enumerate() {
        let piece = if i == 0 {
            word.to_string()
        } else {
            format!(" {word}")
        };
        push(chunk(json!({"content": piece}), Value::Null));
    }
    push(chunk(json!({}), json!("stop")));
    if request["stream_options"]["include_usage"].as_bool() == Some(true) {
        push(
            json!({"id": "chatcmpl-simulated", "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [], "usage": usage}),
        );
    }
    out.push_str("data: [DONE]\n\n");
    reply(200, "text/event-stream", out.into_bytes())
}

fn last_user_text(request: &Value) -> String {
    let messages = request["messages"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let Some(message) = messages.iter().rev().find(|m| m["role"] == "user") else {
        return String::new();
    };
    let text = match &message["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    };
    text.chars().take(200).collect()
}
