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

mod schema;

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
    let answer = Answer::for_request(&request);
    if request["stream"].as_bool() == Some(true) {
        let include_usage = request["stream_options"]["include_usage"].as_bool() == Some(true);
        reply(
            200,
            "text/event-stream",
            answer.stream(include_usage).into_bytes(),
        )
    } else {
        reply(200, "application/json", answer.whole().to_string().into_bytes())
    }
}

/// What one choice says.
#[derive(Clone, Debug, PartialEq)]
enum Said {
    Text(String),
    /// A call of the tool `name` with these JSON arguments.
    Tool {
        name: String,
        arguments: String,
    },
}

/// The simulator's answer to one request: the shape a real model's answer
/// would have (its JSON validating against the schema asked for, its tool
/// arguments against the tool's parameters, `n` choices), with made-up
/// content that says it is simulated.
struct Answer {
    id: String,
    created: u64,
    model: String,
    choices: Vec<Said>,
    prompt_tokens: u64,
}

impl Answer {
    fn for_request(request: &Value) -> Answer {
        let n = request["n"].as_u64().unwrap_or(1).clamp(1, 8) as usize;
        let said = decide(request);
        let prompt_tokens = request["messages"]
            .as_array()
            .map_or(0, |m| m.iter().map(|m| text_of(m).len() as u64 / 4 + 4).sum());
        Answer {
            id: format!("chatcmpl-sim-{}", uuid::Uuid::now_v7().simple()),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            model: request["model"]
                .as_str()
                .unwrap_or("switchboard-simulator")
                .to_string(),
            choices: vec![said; n],
            prompt_tokens,
        }
    }

    fn completion_tokens(&self) -> u64 {
        self.choices
            .iter()
            .map(|c| match c {
                Said::Text(text) => text.split_whitespace().count() as u64,
                Said::Tool { name, arguments } => (name.len() + arguments.len()) as u64 / 4 + 1,
            })
            .sum()
    }

    fn usage(&self) -> Value {
        let completion = self.completion_tokens();
        json!({"prompt_tokens": self.prompt_tokens, "completion_tokens": completion,
               "total_tokens": self.prompt_tokens + completion})
    }

    fn call_id(&self, index: usize) -> String {
        format!("call_sim_{}_{index}", &self.id[self.id.len() - 8..])
    }

    fn whole(&self) -> Value {
        let choices: Vec<Value> = self
            .choices
            .iter()
            .enumerate()
            .map(|(index, said)| {
                let (message, finish) = match said {
                    Said::Text(text) => (
                        json!({"role": "assistant", "content": text, "refusal": null}),
                        "stop",
                    ),
                    Said::Tool { name, arguments } => (
                        json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                            {"id": self.call_id(index), "type": "function", "function": {"name": name, "arguments": arguments}}]}),
                        "tool_calls",
                    ),
                };
                json!({"index": index, "message": message, "finish_reason": finish, "logprobs": null})
            })
            .collect();
        json!({"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
               "system_fingerprint": "switchboard-simulator", "choices": choices, "usage": self.usage()})
    }

    fn stream(&self, include_usage: bool) -> String {
        let chunk = |index: usize, delta: Value, finish: Value| {
            json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                   "model": self.model, "system_fingerprint": "switchboard-simulator",
                   "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": null}]})
        };
        let mut out = String::new();
        let mut push = |v: Value| out.push_str(&format!("data: {v}\n\n"));
        for (index, said) in self.choices.iter().enumerate() {
            match said {
                Said::Text(text) => {
                    push(chunk(
                        index,
                        json!({"role": "assistant", "content": ""}),
                        Value::Null,
                    ));
                    for (i, word) in text.split(' ').enumerate() {
                        let piece = if i == 0 {
                            word.to_string()
                        } else {
                            format!(" {word}")
                        };
                        push(chunk(index, json!({"content": piece}), Value::Null));
                    }
                    push(chunk(index, json!({}), json!("stop")));
                }
                Said::Tool { name, arguments } => {
                    let call = json!([{"index": 0, "id": self.call_id(index), "type": "function",
                                       "function": {"name": name, "arguments": ""}}]);
                    push(chunk(
                        index,
                        json!({"role": "assistant", "content": null, "tool_calls": call}),
                        Value::Null,
                    ));
                    // The arguments arrive in pieces, as a real model's do.
                    for piece in pieces(arguments, 3) {
                        let delta = json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]});
                        push(chunk(index, delta, Value::Null));
                    }
                    push(chunk(index, json!({}), json!("tool_calls")));
                }
            }
        }
        if include_usage {
            push(
                json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                        "model": self.model, "system_fingerprint": "switchboard-simulator",
                        "choices": [], "usage": self.usage()}),
            );
        }
        out.push_str("data: [DONE]\n\n");
        out
    }
}

/// `text` in about `count` pieces, split on character boundaries.
fn pieces(text: &str, count: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let size = chars.len().div_ceil(count).max(1);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

/// What the request asks for: the answer to a tool's result, a tool call
/// (forced by `tool_choice`, or under `auto` when the last user message
/// names the tool), a JSON value of the asked-for schema, or text.
fn decide(request: &Value) -> Said {
    let messages = request["messages"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if let Some(last) = messages.last()
        && last["role"] == "tool"
    {
        let result: String = text_of(last).chars().take(200).collect();
        return Said::Text(format!("{NOTICE} The tool answered: {result}"));
    }
    let tools: Vec<&Value> = request["tools"]
        .as_array()
        .map(|t| t.iter().filter(|t| t["type"] == "function").collect())
        .unwrap_or_default();
    let said = last_user_text(request);
    let named = |name: &str| tools.iter().find(|t| t["function"]["name"] == name).copied();
    let tool = match &request["tool_choice"] {
        Value::String(choice) if choice == "none" => None,
        Value::String(choice) if choice == "required" => tools.first().copied(),
        Value::Object(choice) => choice
            .get("function")
            .and_then(|f| f["name"].as_str())
            .and_then(named),
        // `auto`: a tool the user's message names.
        _ => tools.iter().copied().find(|t| {
            t["function"]["name"]
                .as_str()
                .is_some_and(|name| !name.is_empty() && said.contains(name))
        }),
    };
    if let Some(tool) = tool {
        let parameters = tool["function"]
            .get("parameters")
            .cloned()
            .unwrap_or(json!({"type": "object"}));
        return Said::Tool {
            name: tool["function"]["name"].as_str().unwrap_or("").to_string(),
            arguments: schema::example(&parameters).to_string(),
        };
    }
    match request["response_format"]["type"].as_str() {
        Some("json_schema") => {
            let schema = request["response_format"]["json_schema"]
                .get("schema")
                .cloned()
                .unwrap_or(json!({"type": "object"}));
            Said::Text(schema::example(&schema).to_string())
        }
        Some("json_object") => {
            Said::Text(json!({"simulated": true, "answer": format!("{NOTICE} You said: {said}")}).to_string())
        }
        _ => Said::Text(format!("{NOTICE} You said: {said}")),
    }
}

/// A message's text: its string content, or its text parts joined.
fn text_of(message: &Value) -> String {
    match &message["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn last_user_text(request: &Value) -> String {
    let messages = request["messages"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let Some(message) = messages.iter().rev().find(|m| m["role"] == "user") else {
        return String::new();
    };
    text_of(message).chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_are_called_when_forced_or_named_and_answered_after_their_result() {
        let tools = json!([{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
        let ask = |text: &str, choice: Value| json!({"messages": [{"role": "user", "content": text}], "tools": tools, "tool_choice": choice});
        let Said::Tool { name, arguments } = decide(&ask("hi", json!("required"))) else {
            panic!("required forces a call");
        };
        assert_eq!(name, "get_weather");
        assert_eq!(
            serde_json::from_str::<Value>(&arguments).unwrap(),
            json!({"city": "simulated"})
        );
        assert!(matches!(
            decide(&ask("use get_weather please", json!("auto"))),
            Said::Tool { .. }
        ));
        assert!(matches!(decide(&ask("hello", json!("auto"))), Said::Text(_)));
        assert!(matches!(
            decide(&ask("use get_weather", json!("none"))),
            Said::Text(_)
        ));
        let after = json!({"messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "tool_calls": []},
            {"role": "tool", "tool_call_id": "x", "content": "sunny"}], "tools": tools, "tool_choice": "required"});
        assert_eq!(
            decide(&after),
            Said::Text(format!("{NOTICE} The tool answered: sunny"))
        );
    }

    #[test]
    fn n_choices_unique_ids_and_streamed_argument_pieces() {
        let request = json!({"model": "m", "n": 2, "messages": [{"role": "user", "content": "hi"}]});
        let (one, two) = (Answer::for_request(&request), Answer::for_request(&request));
        assert_ne!(one.id, two.id);
        let whole = one.whole();
        assert_eq!(whole["choices"].as_array().unwrap().len(), 2);
        assert!(whole["created"].as_u64().unwrap() > 1_700_000_000);
        assert_eq!(pieces("{\"a\":1}", 3).concat(), "{\"a\":1}");
    }
}
