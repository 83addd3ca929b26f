//! A mock OpenAI-compatible provider on loopback. Each request takes the
//! next scripted behaviour (or the default one) and is recorded.

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type BoxBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// What the mock does with one request.
#[derive(Clone, Debug)]
pub enum Script {
    /// A chat completion (or, for a streaming request, a complete stream) whose text is given.
    Answer(&'static str),
    /// A status with headers and a body.
    Status(u16, Vec<(&'static str, String)>, String),
    /// Accept the request and never answer.
    Hang,
    /// Read the request, then drop the connection without a status line.
    Reset,
    /// Answer like `Answer`, after a delay in milliseconds.
    Slow(u64, &'static str),
    /// Stream like `Answer`, after a delay in milliseconds (nothing before it).
    StreamAfter(u64, &'static str),
    /// Stream these pieces, then reset the connection.
    StreamCut(Vec<&'static str>),
    /// Stream these pieces, then go silent.
    StreamStall(Vec<&'static str>),
    /// Send 200 stream headers, then close without any event.
    StreamEmpty,
    /// A 200 whose body is not a chat completion.
    Malformed,
    /// Send this raw SSE body.
    RawStream(String),
    /// Send these bytes as separate writes of an SSE body (to split characters).
    RawFrames(Vec<Vec<u8>>),
    /// Answer (or stream) this text in a provider's own wire format.
    Wire(Wire, &'static str),
    /// Answer with one call of tool `name` with these JSON arguments, in a provider's format.
    WireTool(Wire, &'static str, &'static str),
    /// Stream these pieces in a provider's format, then reset the connection.
    WireCut(Wire, Vec<&'static str>),
}

/// The wire formats the mock speaks.
#[derive(Clone, Copy, Debug)]
pub enum Wire {
    OpenAi,
    Anthropic,
    Gemini,
    /// OpenAI's Responses API (`POST /v1/responses`).
    Responses,
}

/// A request the mock received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub query: String,
    pub headers: http::HeaderMap,
    pub body: Value,
    /// The body's bytes as they came.
    pub raw: Bytes,
}

#[derive(Clone)]
pub struct MockProvider {
    pub addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Arc<Mutex<VecDeque<Script>>>,
    default: Arc<Mutex<Script>>,
    streams_dropped: Arc<AtomicUsize>,
}

/// Counts a response stream as dropped when the gateway lets go of it.
struct DropCount(Arc<AtomicUsize>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl MockProvider {
    /// Start a mock whose default behaviour is to answer with its own name.
    pub async fn start(name: &'static str) -> MockProvider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mock = MockProvider {
            addr: listener.local_addr().unwrap(),
            seen: Default::default(),
            script: Default::default(),
            default: Arc::new(Mutex::new(Script::Answer(name))),
            streams_dropped: Default::default(),
        };
        let server = mock.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let mock = server.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let mock = mock.clone();
                        // An error drops the connection without a response.
                        async move { mock.handle(req).await.ok_or("reset by the script") }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        mock
    }

    /// The base URL to configure (`http://127.0.0.1:PORT/v1`).
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queue behaviours for the next requests.
    pub fn script(&self, steps: impl IntoIterator<Item = Script>) {
        self.script.lock().unwrap().extend(steps);
    }

    /// Behaviour once the script is used up.
    pub fn set_default(&self, script: Script) {
        *self.default.lock().unwrap() = script;
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Streamed responses, and hung requests, the gateway has let go of
    /// (finished or cancelled).
    pub fn streams_dropped(&self) -> usize {
        self.streams_dropped.load(Ordering::SeqCst)
    }

    pub fn hits(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The response to send, or `None` to reset the connection instead.
    async fn handle(&self, req: http::Request<Incoming>) -> Option<http::Response<BoxBody>> {
        let (parts, body) = req.into_parts();
        let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        self.seen.lock().unwrap().push(Seen {
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or_default().to_string(),
            headers: parts.headers.clone(),
            body: body.clone(),
            raw: bytes.clone(),
        });
        let step = self.script.lock().unwrap().pop_front();
        let step = step.unwrap_or_else(|| self.default.lock().unwrap().clone());
        // Gemini names the model in the path (`/models/<model>:generateContent`).
        let model = match body["model"].as_str() {
            Some(model) => model.to_string(),
            None => parts
                .uri
                .path()
                .split("/models/")
                .nth(1)
                .and_then(|m| m.split(':').next())
                .unwrap_or("unknown")
                .to_string(),
        };
        let streaming =
            body["stream"].as_bool() == Some(true) || parts.uri.path().contains("streamGenerateContent");
        let include_usage = body["stream_options"]["include_usage"].as_bool() == Some(true);
        Some(match step {
            Script::Reset => return None,
            Script::Answer(text) | Script::Wire(Wire::OpenAi, text) if streaming => self.sse(
                complete_stream(&model, text, include_usage)
                    .into_iter()
                    .map(Ok)
                    .collect(),
                false,
            ),
            Script::Answer(text) => json_reply(200, &[], completion(&model, text).to_string()),
            Script::Status(status, headers, body) => json_reply(status, &headers, body),
            Script::StreamAfter(ms, text) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                self.sse(
                    complete_stream(&model, text, include_usage)
                        .into_iter()
                        .map(Ok)
                        .collect(),
                    false,
                )
            }
            Script::Slow(ms, text) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                json_reply(200, &[], completion(&model, text).to_string())
            }
            Script::Hang => {
                // Counted as dropped when the gateway gives up the request.
                let _held = DropCount(self.streams_dropped.clone());
                std::future::pending::<()>().await;
                unreachable!()
            }
            Script::StreamCut(pieces) => {
                let mut events: Vec<Result<String, ()>> =
                    stream_events(&model, &pieces).into_iter().map(Ok).collect();
                events.push(Err(()));
                self.sse(events, false)
            }
            Script::StreamStall(pieces) => {
                self.sse(stream_events(&model, &pieces).into_iter().map(Ok).collect(), true)
            }
            Script::StreamEmpty => self.sse(Vec::new(), false),
            Script::Malformed => json_reply(200, &[], "this is not a chat completion".into()),
            Script::Wire(wire, text) if streaming => self.sse(
                wire_stream(wire, &model, &split(text), true)
                    .into_iter()
                    .map(Ok)
                    .collect(),
                false,
            ),
            Script::Wire(wire, text) => json_reply(200, &[], wire_answer(wire, &model, text).to_string()),
            Script::WireTool(wire, name, arguments) => {
                json_reply(200, &[], wire_tool(wire, &model, name, arguments).to_string())
            }
            Script::WireCut(wire, pieces) => {
                let mut events: Vec<Result<String, ()>> = match wire {
                    Wire::OpenAi => stream_events(&model, &pieces),
                    _ => wire_stream(wire, &model, &pieces, false),
                }
                .into_iter()
                .map(Ok)
                .collect();
                events.push(Err(()));
                self.sse(events, false)
            }
            Script::RawFrames(frames) => {
                let stream = futures_util::stream::iter(frames).then(|frame| async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    Ok::<_, std::io::Error>(Frame::data(Bytes::from(frame)))
                });
                http::Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(BodyExt::boxed(StreamBody::new(stream)))
                    .unwrap()
            }
            Script::RawStream(raw) => {
                let body = http_body_util::Full::new(Bytes::from(raw))
                    .map_err(|e| match e {})
                    .boxed();
                http::Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(body)
                    .unwrap()
            }
        })
    }
}

fn split(text: &'static str) -> Vec<&'static str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    for (i, _) in text.match_indices(' ') {
        pieces.push(&text[start..i]);
        start = i;
    }
    pieces.push(&text[start..]);
    pieces
}

pub fn completion(model: &str, text: &str) -> Value {
    json!({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": null}, "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18,
                  "prompt_tokens_details": {"cached_tokens": 3}}
    })
}

fn chunk(model: &str, delta: Value, finish: Value) -> String {
    json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1, "model": model,
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    .to_string()
}

fn usage_chunk(model: &str) -> String {
    json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [],
           "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}})
    .to_string()
}

/// A complete OpenAI stream of `text`: chunks, the finish, usage when asked, `[DONE]`.
fn complete_stream(model: &str, text: &'static str, include_usage: bool) -> Vec<String> {
    let mut events = stream_events(model, &split(text));
    events.push(chunk(model, json!({}), json!("stop")));
    if include_usage {
        events.push(usage_chunk(model));
    }
    events.push("[DONE]".into());
    events
}

fn stream_events(model: &str, pieces: &[&str]) -> Vec<String> {
    let mut events = vec![chunk(
        model,
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    events.extend(
        pieces
            .iter()
            .map(|p| chunk(model, json!({"content": p}), Value::Null)),
    );
    events
}

fn json_reply(status: u16, headers: &[(&str, String)], body: String) -> http::Response<BoxBody> {
    let mut response = http::Response::builder()
        .status(status)
        .header("content-type", "application/json");
    for (name, value) in headers {
        response = response.header(*name, value);
    }
    response
        .body(
            http_body_util::Full::new(Bytes::from(body))
                .map_err(|e| match e {})
                .boxed(),
        )
        .unwrap()
}

impl MockProvider {
    /// An SSE response sending each event with a short pause; `Err` resets the
    /// connection; `stall` keeps it open and silent after the last event.
    fn sse(&self, events: Vec<Result<String, ()>>, stall: bool) -> http::Response<BoxBody> {
        let guard = DropCount(self.streams_dropped.clone());
        let state = (events.into_iter(), stall, guard);
        let stream = futures_util::stream::unfold(state, |(mut events, stall, guard)| async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            match events.next() {
                Some(Ok(data)) => Some((
                    Ok(Frame::data(Bytes::from(sse_event(&data)))),
                    (events, stall, guard),
                )),
                Some(Err(())) => Some((Err(std::io::Error::other("cut")), (events, stall, guard))),
                None if stall => {
                    std::future::pending::<()>().await;
                    None
                }
                None => None,
            }
        });
        http::Response::builder()
            .header("content-type", "text/event-stream")
            .body(BodyExt::boxed(StreamBody::new(stream)))
            .unwrap()
    }
}

/// One server-sent event: Anthropic's events are named by their `type`, as
/// its API names them; OpenAI's and Gemini's have data only.
fn sse_event(data: &str) -> String {
    let named = serde_json::from_str::<Value>(data)
        .ok()
        .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_string));
    match named {
        Some(name) => format!("event: {name}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    }
}

/// A complete answer with `text` in `wire`'s format (11 prompt, 7 completion tokens).
fn wire_answer(wire: Wire, model: &str, text: &str) -> Value {
    match wire {
        Wire::OpenAi => completion(model, text),
        Wire::Anthropic => json!({
            "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 11, "output_tokens": 7}
        }),
        Wire::Gemini => json!({
            "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 11, "candidatesTokenCount": 7, "totalTokenCount": 18},
            "modelVersion": model
        }),
        Wire::Responses => responses_answer(
            model,
            json!([{"type": "message", "id": "msg_mock", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}]),
        ),
    }
}

/// A Responses API `response` with this output (11 input, 7 output tokens).
fn responses_answer(model: &str, output: Value) -> Value {
    json!({
        "id": "resp_mock", "object": "response", "created_at": 1, "status": "completed", "error": null,
        "incomplete_details": null, "instructions": null, "max_output_tokens": null, "model": model,
        "output": output, "parallel_tool_calls": true, "previous_response_id": null, "reasoning": null,
        "store": false, "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "auto",
        "tools": [], "top_p": 1.0, "truncation": "disabled", "metadata": {},
        "usage": {"input_tokens": 11, "input_tokens_details": {"cached_tokens": 3, "cache_write_tokens": 0},
                  "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 18}
    })
}

/// A tool call answer in `wire`'s format.
fn wire_tool(wire: Wire, model: &str, name: &str, arguments: &str) -> Value {
    let args: Value = serde_json::from_str(arguments).unwrap();
    match wire {
        Wire::OpenAi => json!({
            "id": "chatcmpl-mock", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": null, "message": {"role": "assistant", "content": null, "refusal": null,
                "tool_calls": [{"id": "call_mock", "type": "function", "function": {"name": name, "arguments": arguments}}]}}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        }),
        Wire::Anthropic => json!({
            "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "tool_use", "id": "toolu_mock", "name": name, "input": args}],
            "stop_reason": "tool_use", "stop_sequence": null, "usage": {"input_tokens": 11, "output_tokens": 7}
        }),
        Wire::Gemini => json!({
            "candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": name, "args": args}}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 11, "candidatesTokenCount": 7, "totalTokenCount": 18},
            "modelVersion": model
        }),
        Wire::Responses => responses_answer(
            model,
            json!([{"type": "function_call", "id": "fc_mock", "call_id": "call_mock", "name": name,
                    "arguments": arguments, "status": "completed"}]),
        ),
    }
}

/// The events of a streamed answer in Anthropic's or Gemini's format;
/// `complete` adds the closing events.
fn wire_stream(wire: Wire, model: &str, pieces: &[&str], complete: bool) -> Vec<String> {
    match wire {
        Wire::OpenAi => unreachable!("OpenAI streams are built by stream_events"),
        Wire::Responses => {
            let item = json!({"type": "message", "id": "msg_mock", "status": "in_progress", "role": "assistant", "content": []});
            let mut events = vec![
                json!({"type": "response.created", "sequence_number": 0, "response": responses_answer(model, json!([]))}),
                json!({"type": "response.output_item.added", "sequence_number": 1, "output_index": 0, "item": item}),
                json!({"type": "response.content_part.added", "sequence_number": 2, "item_id": "msg_mock", "output_index": 0,
                    "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
            ];
            for (i, piece) in pieces.iter().enumerate() {
                events.push(json!({"type": "response.output_text.delta", "sequence_number": 3 + i, "item_id": "msg_mock",
                    "output_index": 0, "content_index": 0, "delta": piece, "logprobs": []}));
            }
            if complete {
                let text: String = pieces.concat();
                let part = json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
                let done = json!({"type": "message", "id": "msg_mock", "status": "completed", "role": "assistant", "content": [part]});
                let n = 3 + pieces.len();
                events.push(
                    json!({"type": "response.output_text.done", "sequence_number": n, "item_id": "msg_mock",
                    "output_index": 0, "content_index": 0, "text": text, "logprobs": []}),
                );
                events.push(json!({"type": "response.content_part.done", "sequence_number": n + 1, "item_id": "msg_mock",
                    "output_index": 0, "content_index": 0, "part": part}));
                events.push(json!({"type": "response.output_item.done", "sequence_number": n + 2, "output_index": 0, "item": done}));
                events.push(json!({"type": "response.completed", "sequence_number": n + 3,
                    "response": responses_answer(model, json!([done]))}));
            }
            events.into_iter().map(|e| e.to_string()).collect()
        }
        Wire::Anthropic => {
            let mut events = vec![
                json!({"type": "message_start", "message": {"id": "msg_mock", "type": "message", "role": "assistant", "model": model, "content": [],
                    "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 11, "output_tokens": 1}}}),
                json!({"type": "ping"}),
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ];
            events.extend(pieces.iter().map(|p| json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}})));
            if complete {
                events.push(json!({"type": "content_block_stop", "index": 0}));
                events.push(json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 7}}));
                events.push(json!({"type": "message_stop"}));
            }
            events.into_iter().map(|e| e.to_string()).collect()
        }
        Wire::Gemini => {
            let last = pieces.len().saturating_sub(1);
            pieces
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let mut event = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": p}]}, "index": 0}], "modelVersion": model});
                    if complete && i == last {
                        event["candidates"][0]["finishReason"] = json!("STOP");
                        event["usageMetadata"] = json!({"promptTokenCount": 11, "candidatesTokenCount": 7, "totalTokenCount": 18});
                    }
                    event.to_string()
                })
                .collect()
        }
    }
}
