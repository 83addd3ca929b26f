//! Streaming answers. Before the first chunk reaches the caller, a failing
//! target is abandoned for the next one; after it, there is no silent
//! failover: a stream that breaks ends with an in-band error event and never
//! with `[DONE]`, so it is never mistaken for a complete answer.

use crate::api::{ApiError, Body};
use crate::attempt::{Attempt, Attempts, Failure, answered, record_success};
use crate::gateway::Gateway;
use crate::plugin::adapter_wit::{SseEvent, Usage};
use crate::plugin::{PluginSet, StreamSession};
use crate::routing::PlannedAttempt;
use crate::sse::{Event, SseParser};
use crate::upstream::TransportError;
use bytes::Bytes;
use futures_util::future::Either;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::Instrument;

/// Chunks buffered between the upstream reader and a slow caller.
const CHANNEL_DEPTH: usize = 32;

type Head = Result<http::Response<Body>, ApiError>;

/// One streaming request, ready to be served.
pub struct StreamRequest {
    pub route: usize,
    pub plan: Vec<PlannedAttempt>,
    /// The canonical request body.
    pub body: Map<String, Value>,
    /// The caller asked for the final usage chunk.
    pub include_usage: bool,
    /// Race the next target when the first is silent this long.
    pub hedge_after: Option<Duration>,
    pub started: Instant,
}

/// Serve a streaming request. The stream runs in its own task, which hands
/// back the response head once the first chunk is ready (or the error).
pub async fn serve(gw: Arc<Gateway>, plugins: Arc<PluginSet>, request: StreamRequest) -> Head {
    let (head_tx, head_rx) = oneshot::channel();
    tokio::spawn(run(gw, plugins, request, head_tx).in_current_span());
    head_rx
        .await
        .unwrap_or_else(|_| Err(ApiError::internal("the stream ended before it started")))
}

async fn run(
    gw: Arc<Gateway>,
    plugins: Arc<PluginSet>,
    stream: StreamRequest,
    mut head_tx: oneshot::Sender<Head>,
) {
    let StreamRequest {
        route,
        plan,
        body: mut request,
        include_usage,
        hedge_after,
        started,
    } = stream;
    let gw = &*gw;
    let mut attempts = Attempts::new(true, gw, &plugins, route, plan, started);
    let opened = tokio::select! {
        biased;
        // The caller went away before the first chunk: stop trying.
        _ = head_tx.closed() => return,
        opened = open(&mut attempts, &mut request, include_usage, hedge_after) => opened,
    };
    let (attempt, mut pump, first) = match opened {
        Ok(opened) => opened,
        Err(error) => {
            let _ = head_tx.send(Err(error));
            return;
        }
    };
    let ttft = attempt.started.elapsed();
    let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
    let body = StreamBody::new(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(Frame::data(bytes)), rx))
    }));
    let head = answered(http::Response::builder(), &attempt, attempts.made())
        .header(http::header::CONTENT_TYPE, "text/event-stream")
        .header(http::header::CACHE_CONTROL, "no-cache")
        .body(BodyExt::boxed(body))
        .expect("valid response");
    if head_tx.send(Ok(head)).is_err() {
        return;
    }

    let idle = attempt.provider.idle_timeout;
    let mut delivered = 0usize;
    let mut batch = Ok(Batch::Chunks(first));
    let end = loop {
        match batch {
            Ok(Batch::Chunks(chunks)) => {
                for chunk in chunks {
                    if tx.send(sse_data(&chunk)).await.is_err() {
                        break;
                    }
                    delivered += 1;
                }
                if tx.is_closed() {
                    break End::CallerGone;
                }
            }
            Ok(Batch::Done) => {
                let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
                break End::Complete;
            }
            Err(failure) => break End::Broken(failure),
        }
        batch = tokio::select! {
            // The caller went away: drop the upstream stream now, not at its next event.
            _ = tx.closed() => break End::CallerGone,
            next = tokio::time::timeout(idle, pump.next()) => match next {
                Ok(next) => next,
                Err(_) => Err(Failure::Stream(format!("no event from the provider for {} ms", idle.as_millis()))),
            },
        };
    };
    match end {
        End::Complete => record_success(gw, &attempt, pump.usage, Some(ttft)),
        End::CallerGone => attempts.cancelled(attempt),
        End::Broken(failure) => {
            let error = ApiError::bad_gateway(format!(
                "The stream from {}/{} broke after {delivered} chunk(s); the answer is incomplete: {}",
                attempt.provider.name,
                attempt.target.model,
                failure_text(&failure),
            ));
            let _ = tx.send(sse_data(error.to_json().to_string().as_bytes())).await;
            let _ = attempts.failed(attempt, failure);
        }
    }
}

enum End {
    Complete,
    CallerGone,
    Broken(Failure),
}

fn failure_text(failure: &Failure) -> String {
    match failure {
        Failure::Provider(e) => e.message.clone(),
        Failure::Stream(reason) | Failure::Malformed(reason) => reason.clone(),
        Failure::Transport(e) => e.to_string(),
        Failure::Plugin(e) => e.to_string(),
        other => format!("{other:?}"),
    }
}

fn sse_data(json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// Try targets until one produces its first chunk. With `hedge_after`, a
/// first attempt still silent after that delay is raced against the next
/// target: the first to produce a chunk wins, the other is cancelled (and
/// not billed).
async fn open<'g>(
    attempts: &mut Attempts<'g>,
    request: &mut Map<String, Value>,
    include_usage: bool,
    hedge_after: Option<Duration>,
) -> Result<(Attempt<'g>, Box<Pump>, Vec<Vec<u8>>), ApiError> {
    while let Some(attempt) = attempts.next().await {
        let mut hedge_request = hedge_after.map(|_| request.clone());
        let first = first_chunk(&attempt, request, include_usage);
        let raced = match (hedge_after, hedge_request.as_mut()) {
            (Some(delay), Some(hedge_request)) => {
                race(attempts, first, delay, hedge_request, include_usage).await
            }
            _ => Raced::First(first.await),
        };
        let failure = match raced {
            Raced::First(Ok((pump, chunks))) => return Ok((attempt, pump, chunks)),
            Raced::First(Err(failure)) => failure,
            Raced::Hedge(won) => {
                let HedgeWin {
                    attempt: hedge,
                    pump,
                    chunks,
                    first_failure,
                } = *won;
                match first_failure {
                    Some(failure) => {
                        let _ = attempts.failed(attempt, failure);
                    }
                    None => attempts.cancelled(attempt),
                }
                return Ok((hedge, pump, chunks));
            }
        };
        if let Some(stop) = attempts.failed(attempt, failure) {
            return Err(stop);
        }
    }
    Err(attempts.exhausted())
}

type Started = Result<(Box<Pump>, Vec<Vec<u8>>), Failure>;

/// Start an attempt and read up to its first chunk, within its first-token deadline.
async fn first_chunk(
    attempt: &Attempt<'_>,
    request: &mut Map<String, Value>,
    include_usage: bool,
) -> Started {
    // A streaming attempt's deadline is its first-token deadline.
    match tokio::time::timeout_at(attempt.deadline, start(attempt, request, include_usage)).await {
        Ok(started) => started,
        Err(_) => Err(Failure::Transport(TransportError::Timeout)),
    }
}

/// How a hedged start ended.
enum Raced<'g> {
    /// The first attempt's outcome (any hedge has been settled).
    First(Started),
    /// The hedge produced the first chunk; the first attempt failed (with
    /// this failure) or is to be cancelled.
    Hedge(Box<HedgeWin<'g>>),
}

/// The hedge that produced the first chunk, and what became of the first attempt.
struct HedgeWin<'g> {
    attempt: Attempt<'g>,
    pump: Box<Pump>,
    chunks: Vec<Vec<u8>>,
    /// The first attempt's failure; `None` if it is still running and to be cancelled.
    first_failure: Option<Failure>,
}

async fn race<'g>(
    attempts: &mut Attempts<'g>,
    first: impl std::future::Future<Output = Started>,
    delay: Duration,
    hedge_request: &mut Map<String, Value>,
    include_usage: bool,
) -> Raced<'g> {
    let mut first = std::pin::pin!(first);
    tokio::select! {
        started = &mut first => return Raced::First(started),
        _ = tokio::time::sleep(delay) => {}
    }
    let Some(hedge) = attempts.next().await else {
        return Raced::First(first.await);
    };
    tracing::info!(provider = %hedge.provider.name, model = %hedge.target.model, "hedging a silent first attempt");
    // Settle the race inside a block, so the futures (which borrow the hedge
    // attempt) are gone before the attempt itself is recorded.
    let settled = {
        let second = Box::pin(first_chunk(&hedge, hedge_request, include_usage));
        match futures_util::future::select(first, second).await {
            Either::Left((Ok(started), _)) => Settled::FirstWon(started),
            Either::Right((Ok(started), _)) => Settled::HedgeWon(started, None),
            Either::Left((Err(first_failure), second)) => match second.await {
                Ok(started) => Settled::HedgeWon(started, Some(first_failure)),
                Err(hedge_failure) => Settled::HedgeFailed(hedge_failure, Err(first_failure)),
            },
            Either::Right((Err(hedge_failure), first)) => Settled::HedgeFailed(hedge_failure, first.await),
        }
    };
    match settled {
        Settled::FirstWon(started) => {
            attempts.cancelled(hedge);
            Raced::First(Ok(started))
        }
        Settled::HedgeWon((pump, chunks), first_failure) => Raced::Hedge(Box::new(HedgeWin {
            attempt: hedge,
            pump,
            chunks,
            first_failure,
        })),
        Settled::HedgeFailed(hedge_failure, first) => {
            let _ = attempts.failed(hedge, hedge_failure);
            Raced::First(first)
        }
    }
}

enum Settled {
    FirstWon((Box<Pump>, Vec<Vec<u8>>)),
    HedgeWon((Box<Pump>, Vec<Vec<u8>>), Option<Failure>),
    HedgeFailed(Failure, Started),
}

async fn start(
    attempt: &Attempt<'_>,
    request: &mut Map<String, Value>,
    include_usage: bool,
) -> Result<(Box<Pump>, Vec<Vec<u8>>), Failure> {
    let response = attempt.send(request).await?;
    if !response.status().is_success() {
        let inbound = attempt.read(response).await?;
        return Err(attempt.classify(&inbound).await);
    }
    let body = response.into_body();
    let session = attempt
        .adapter
        .open_stream(&attempt.wit_target, include_usage)
        .await
        .map_err(Failure::Plugin)?;
    let mut pump = Pump {
        body,
        parser: SseParser::default(),
        pending: VecDeque::new(),
        session,
        usage: None,
        eof: false,
        finished: false,
        answer_finished: false,
    };
    match pump.next().await? {
        Batch::Chunks(first) => Ok((Box::new(pump), first)),
        Batch::Done => Err(Failure::Stream(
            "the provider's stream ended without any content".into(),
        )),
    }
}

enum Batch {
    /// One or more canonical chunks (JSON).
    Chunks(Vec<Vec<u8>>),
    /// The provider marked the normal end of the answer.
    Done,
}

/// Reads the provider stream, frames events and runs them through the
/// adapter's decoder.
struct Pump {
    body: Incoming,
    parser: SseParser,
    pending: VecDeque<Event>,
    session: StreamSession,
    usage: Option<Usage>,
    eof: bool,
    finished: bool,
    /// A chunk carried a finish reason.
    answer_finished: bool,
}

impl Pump {
    async fn next(&mut self) -> Result<Batch, Failure> {
        loop {
            if self.finished {
                return Ok(Batch::Done);
            }
            if let Some(event) = self.pending.pop_front() {
                let event = SseEvent {
                    event: event.event,
                    data: event.data,
                };
                let fed = self
                    .session
                    .feed(&event)
                    .await
                    .map_err(Failure::Plugin)?
                    .map_err(Failure::Provider)?;
                self.answer_finished |= fed.finished;
                let decoded = fed.decoded;
                if decoded.usage.is_some() {
                    self.usage = decoded.usage;
                }
                self.finished = decoded.done;
                if !decoded.chunks.is_empty() {
                    return Ok(Batch::Chunks(decoded.chunks));
                }
                continue;
            }
            if self.eof {
                // Ended cleanly without the provider's end marker: complete
                // if the answer had finished, else cut short.
                if self.answer_finished {
                    return Ok(Batch::Done);
                }
                return Err(Failure::Stream(
                    "the provider's stream ended before the answer was complete".into(),
                ));
            }
            let mut events = Vec::new();
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.parser
                            .push(&data, &mut events)
                            .map_err(|e| Failure::Stream(e.to_string()))?;
                    }
                }
                Some(Err(e)) => return Err(Failure::Transport(TransportError::Io(e.to_string()))),
                None => {
                    self.eof = true;
                    self.parser
                        .finish(&mut events)
                        .map_err(|e| Failure::Stream(e.to_string()))?;
                }
            }
            self.pending.extend(events);
        }
    }
}
