//! Streaming answers. Before the first chunk reaches the caller, a failing
//! target is abandoned for the next one. After it, a stream that breaks is
//! never passed off as complete: it ends with an in-band error event and
//! never with `[DONE]`, unless the route continues broken streams and the
//! next target can carry the answer on (see [`super::resume`]).

use super::Received;
use super::attempts::{Attempt, Attempts};
use super::failure::{Answer, Failure, FlowError, StreamFailure};
use super::hedge::{Hedge, Start, first_success};
use super::plan::PlannedAttempt;
use super::request::RequestBody;
use super::resume::{Delivered, Splice, Strategy};
use super::whole::AnsweredBy;
use crate::chunk::Seen;
use crate::config::{Capability, OnStreamBreak};
use crate::cost::Prices;
use crate::gateway::Gateway;
use crate::plugin::types::ApiFormat;
use crate::plugin::types::{SseEvent, Usage};
use crate::plugin::{Fed, PluginSet, StreamSession};
use crate::redact::Redactor;
use crate::sse::{Event, SseParser};
use crate::upstream::TransportError;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Batches (the chunks of one provider read each) buffered between the
/// upstream reader and a slow caller.
const CHANNEL_DEPTH: usize = 8;

/// What a started stream delivers, in order: chunks in the stream's
/// format, then either the end of a complete answer or the failure that
/// ended it early. The inbound API frames them.
#[derive(Debug)]
pub enum StreamEvent {
    Chunk(Chunk),
    Done,
    Failed(FlowError),
}

impl StreamEvent {
    /// About how many bytes the event takes framed (a buffer's capacity).
    pub fn framed_size(&self) -> usize {
        match self {
            StreamEvent::Chunk(chunk) => chunk.data.len() + chunk.event.as_ref().map_or(0, String::len) + 16,
            StreamEvent::Done => 16,
            StreamEvent::Failed(_) => 256,
        }
    }
}

/// One event of an answer: for chat a `chat.completion.chunk` (no event
/// name); for a format that names its events, the name and its data.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub event: Option<String>,
    pub data: Vec<u8>,
    /// What a chat chunk said, read when its adapter session checked it, for
    /// a stream that may be continued (else it is read again if needed).
    pub seen: Option<Seen>,
}

impl Chunk {
    /// A chat chunk.
    pub fn chat(data: Vec<u8>) -> Chunk {
        Chunk {
            event: None,
            data,
            seen: None,
        }
    }
}

/// A stream that has its first chunk: who answers it, in which format
/// (chat, or the caller's own when the answering target speaks it), and
/// its events, a batch per provider read.
pub struct Streaming {
    pub by: AnsweredBy,
    pub format: ApiFormat,
    pub events: mpsc::Receiver<Vec<StreamEvent>>,
}

type Head = Result<Streaming, FlowError>;

/// One streaming request, ready to be served.
pub struct StreamRequest {
    pub route: usize,
    pub plan: Vec<PlannedAttempt>,
    /// The request body.
    pub body: RequestBody,
    /// The caller asked for the final usage chunk.
    pub include_usage: bool,
    /// Race the next target against a silent first one.
    pub hedge: Option<Hedge>,
    pub received: Received,
    /// Cancelled when the server's shutdown grace period ends.
    pub cut: CancellationToken,
}

/// Serve a streaming request: the response head once the first chunk is
/// ready (or the error). The stream starts on the caller's task, so its
/// first byte waits for no hand-over to another worker; once it has its
/// head, the rest of it runs in a task of its own.
pub async fn serve(gw: Arc<Gateway>, plugins: Arc<PluginSet>, request: StreamRequest) -> Head {
    let (head_tx, mut head_rx) = oneshot::channel();
    let mut stream = Box::pin(run(gw, plugins, request, head_tx).in_current_span());
    let (head, running) = tokio::select! {
        biased;
        head = &mut head_rx => (head, true),
        // It ended in the poll that sent its head (or without one).
        () = &mut stream => (head_rx.await, false),
    };
    if running {
        tokio::spawn(stream);
    }
    head.unwrap_or_else(|_| {
        Err(FlowError::new(
            Answer::Internal,
            "the stream ended before it started",
        ))
    })
}

/// A stream being read: its attempt, its pump and the chunks it has ready.
type Opened<'g> = (Attempt<'g>, Box<Pump>, Vec<Chunk>);

async fn run(
    gw: Arc<Gateway>,
    plugins: Arc<PluginSet>,
    stream: StreamRequest,
    mut head_tx: oneshot::Sender<Head>,
) {
    let StreamRequest {
        route,
        plan,
        body: request,
        include_usage,
        hedge,
        received,
        cut,
    } = stream;
    let gw = &*gw;
    let mut attempts = Attempts::new(true, gw, &plugins, gw.route(route), plan, &received);
    let wants_continue = gw.route(route).config.on_stream_break == OnStreamBreak::Continue;
    let opened = tokio::select! {
        biased;
        // The caller went away before the first chunk: stop trying.
        _ = head_tx.closed() => return,
        _ = cut.cancelled() => {
            let _ = head_tx.send(Err(FlowError::new(
                Answer::ShuttingDown,
                "The gateway is shutting down; retry on another instance.",
            )));
            return;
        }
        opened = open(&mut attempts, &request, include_usage, wants_continue, hedge) => opened,
    };
    let (mut attempt, mut pump, first) = match opened {
        Ok(opened) => opened,
        Err(error) => {
            let _ = head_tx.send(Err(error));
            return;
        }
    };
    let mut ttft = attempt.started.elapsed();
    let (tx, events) = mpsc::channel::<Vec<StreamEvent>>(CHANNEL_DEPTH);
    let format = attempt.context.format;
    let head = Streaming {
        by: AnsweredBy::of(&attempt, attempts.made()),
        format,
        events,
    };
    if head_tx.send(Ok(head)).is_err() {
        return;
    }

    // Only a chat stream is continued: continuation reads and rewrites chat
    // chunks, and goes on in chat whatever the next target speaks.
    let continues = wants_continue && format == ApiFormat::OpenAiChat;
    let delivered = match request.canonical() {
        Some(canonical) if continues => Some(Delivered::new(canonical)),
        _ => None,
    };
    if delivered.is_some() {
        attempts.chat_only();
    }
    let mut relay = Relay {
        tx,
        sent: 0,
        delivered,
        splice: None,
        cut,
    };
    let mut batch = Ok(Batch::Chunks(first));
    // Why the last break happened, for the ledger.
    let mut broke_as;
    loop {
        let end = relay
            .run(&mut *pump, batch, attempt.to.provider.idle_timeout)
            .await;
        let source =
            |attempt: &Attempt<'_>| format!("{}/{}", attempt.to.provider.name, attempt.to.target.model);
        // Why the answer broke, and whether the break itself rules out
        // going on elsewhere (a content filter mid-stream, say).
        let (broken, stop) = match end {
            End::Complete => {
                attempts.succeeded(&attempt, pump.usage, pump.model.take(), Some(ttft));
                received.trail.stream_ended("answered", None);
                return;
            }
            End::CallerGone => {
                received.trail.stream_ended("cancelled", None);
                return attempts.cancelled(attempt);
            }
            End::Cut => {
                attempts.shut_down(attempt);
                received
                    .trail
                    .stream_ended("broken", Some("shutting_down".into()));
                let error = FlowError::new(
                    Answer::ShuttingDown,
                    format!(
                        "The gateway is shutting down; the stream was ended after {} chunk(s).",
                        relay.sent
                    ),
                );
                relay.last_word(StreamEvent::Failed(error)).await;
                return;
            }
            End::Broken(failure) => {
                let broken = incomplete(&source(&attempt), &failure.summary());
                broke_as = failure.verdict().label;
                (broken, attempts.broke(attempt, failure))
            }
            End::Diverged => {
                broke_as = "diverged";
                let broken = incomplete(
                    &source(&attempt),
                    "the continuing target's answer did not start with the text already delivered",
                );
                attempts.diverged(attempt);
                (broken, None)
            }
        };
        // The broken stream's connection, decoder instance and memory go now,
        // not after another target has taken the answer up.
        drop(pump);
        let resumed = match (&relay.delivered, stop) {
            (None, _) if wants_continue && !continues => Err(format!(
                "{broken}; it is not continued: it passed through in the caller's API, and what it delivered (thinking, tool use) only its own kind of target could carry on"
            )),
            (None, _) | (Some(_), Some(_)) => Err(broken),
            (Some(delivered), None) => tokio::select! {
                _ = relay.tx.closed() => return,
                resumed = resume(&mut attempts, delivered, &request, include_usage) => {
                    resumed.map_err(|why| format!("{broken}; it could not be continued: {why}"))
                }
            },
        };
        match resumed {
            Ok(((next, next_pump, first), splice)) => {
                attempts.stream_broke("continued");
                (attempt, pump, relay.splice) = (next, next_pump, Some(splice));
                ttft = attempt.started.elapsed();
                batch = Ok(Batch::Chunks(first));
            }
            Err(message) => {
                attempts.stream_broke("error");
                received.trail.stream_ended("broken", Some(broke_as.into()));
                let error = FlowError::new(
                    Answer::BadGateway,
                    format!("The stream broke after {} chunk(s); {message}", relay.sent),
                );
                relay.last_word(StreamEvent::Failed(error)).await;
                return;
            }
        }
    }
}

/// Sends a stream's chunks to the caller, a batch per provider read.
struct Relay {
    tx: mpsc::Sender<Vec<StreamEvent>>,
    /// Chunks the caller has been sent.
    sent: usize,
    /// What the caller has, when a break may be continued.
    delivered: Option<Delivered>,
    /// Rewrites a continuation's chunks.
    splice: Option<Splice>,
    /// Cancelled when the server's shutdown grace period ends.
    cut: CancellationToken,
}

enum End {
    Complete,
    CallerGone,
    /// The server's shutdown grace period ended.
    Cut,
    Broken(Failure),
    /// A continuation parted from the delivered answer.
    Diverged,
}

/// How long the last event of a stream may wait for room in the buffer.
const LAST_WORD: std::time::Duration = std::time::Duration::from_secs(1);

impl Relay {
    /// Send the stream's last event, if the caller makes room for it soon.
    async fn last_word(&self, event: StreamEvent) {
        let _ = tokio::time::timeout(LAST_WORD, self.tx.send(vec![event])).await;
    }

    /// Hand the caller a batch of chunks; the end, if the caller is gone
    /// or the cut came first.
    async fn deliver(&mut self, batch: Vec<StreamEvent>, idle: std::time::Duration) -> Option<End> {
        if batch.is_empty() {
            return None;
        }
        let count = batch.len();
        // A caller who stops reading is gone once the buffer stays full
        // past the idle deadline; the cut ends it too.
        tokio::select! {
            sent = self.tx.send(batch) => {
                if sent.is_err() {
                    return Some(End::CallerGone);
                }
            }
            _ = tokio::time::sleep(idle) => return Some(End::CallerGone),
            _ = self.cut.cancelled() => return Some(End::Cut),
        }
        self.sent += count;
        None
    }

    /// Relay `batch` and the rest of the attempt's stream, until it ends.
    async fn run(
        &mut self,
        pump: &mut impl Source,
        mut batch: Result<Batch, Failure>,
        idle: std::time::Duration,
    ) -> End {
        loop {
            match batch {
                Ok(Batch::Chunks(chunks)) => {
                    let mut out = Vec::with_capacity(chunks.len());
                    let mut diverged = false;
                    for mut chunk in chunks {
                        let seen = chunk.seen.take();
                        let chunk = match self.splice.as_mut().map(|s| s.rewrite(&chunk.data)) {
                            None => chunk,
                            // What the caller gets is the rewritten chunk.
                            Some(Ok(Some(rewritten))) => Chunk::chat(rewritten),
                            Some(Ok(None)) => continue,
                            Some(Err(_)) => {
                                diverged = true;
                                break;
                            }
                        };
                        if let Some(delivered) = self.delivered.as_mut() {
                            match seen.filter(|_| self.splice.is_none()) {
                                Some(seen) => delivered.note(seen),
                                None => delivered.observe(&chunk.data),
                            }
                        }
                        out.push(StreamEvent::Chunk(chunk));
                    }
                    // What came before a divergence is the caller's.
                    if let Some(end) = self.deliver(out, idle).await {
                        return end;
                    }
                    if diverged {
                        return End::Diverged;
                    }
                }
                Ok(Batch::Done) => {
                    self.last_word(StreamEvent::Done).await;
                    return End::Complete;
                }
                Err(failure) => return End::Broken(failure),
            }
            batch = tokio::select! {
                // The caller went away: drop the upstream stream now, not at its next event.
                _ = self.tx.closed() => return End::CallerGone,
                _ = self.cut.cancelled() => return End::Cut,
                next = tokio::time::timeout(idle, pump.next()) => match next {
                    Ok(next) => next,
                    Err(_) => Err(Failure::Stream(StreamFailure::Idle(idle))),
                },
            };
        }
    }
}

fn incomplete(source: &str, reason: &str) -> String {
    format!("the answer from {source} is incomplete: {reason}")
}

/// Try targets until one produces its first chunk (hedging if asked).
async fn open<'g>(
    attempts: &mut Attempts<'g>,
    request: &RequestBody,
    include_usage: bool,
    track: bool,
    hedge: Option<Hedge>,
) -> Result<Opened<'g>, FlowError> {
    let start = FirstChunk { include_usage, track };
    let (attempt, (pump, first)) = first_success(attempts, request, hedge, start).await?;
    Ok((attempt, pump, first))
}

/// A streaming attempt, up to its first chunk.
struct FirstChunk {
    include_usage: bool,
    /// The route continues broken streams: keep what each chunk says.
    track: bool,
}

impl Start for FirstChunk {
    type Answer = (Box<Pump>, Vec<Chunk>);

    fn start<'a>(
        &'a self,
        attempt: &'a Attempt<'_>,
        request: &'a RequestBody,
    ) -> impl Future<Output = Started> + Send + 'a {
        first_chunk(attempt, request, self.include_usage, self.track)
    }
}

/// Continue a broken answer on the next target that produces a first chunk:
/// with the delivered text as a prefill where the target takes one, else by
/// asking again and suppressing what was delivered. The reason when no
/// target can.
async fn resume<'g>(
    attempts: &mut Attempts<'g>,
    delivered: &Delivered,
    request: &RequestBody,
    include_usage: bool,
) -> Result<(Opened<'g>, Splice), String> {
    if let Some(why) = delivered.unresumable() {
        return Err(why.into());
    }
    let Some(request) = request.canonical() else {
        return Err("the request has no chat form".into());
    };
    while let Some(attempt) = attempts.next().await {
        let model = &attempt.to.provider.models[&attempt.to.target.model];
        let strategy = if model.capabilities.contains(&Capability::Prefill) {
            Strategy::Prefill
        } else {
            Strategy::Regenerate
        };
        tracing::info!(provider = %attempt.to.provider.name, model = %attempt.to.target.model, ?strategy, "continuing a broken stream");
        let (continuation, splice) = delivered.continuation(request, strategy);
        let continuation = RequestBody::rewritten(continuation);
        match first_chunk(&attempt, &continuation, include_usage, true).await {
            Ok((pump, first)) => return Ok(((attempt, pump, first), splice)),
            Err(failure) => {
                if let Some(stop) = attempts.failed(attempt, failure) {
                    return Err(stop.message);
                }
            }
        }
    }
    Err("no other target could take it up in time".into())
}

type Started = Result<(Box<Pump>, Vec<Chunk>), Failure>;

/// Start an attempt and read up to its first chunk, within its first-token deadline.
async fn first_chunk(
    attempt: &Attempt<'_>,
    request: &RequestBody,
    include_usage: bool,
    track: bool,
) -> Started {
    // A streaming attempt's deadline is its first-token deadline.
    match tokio::time::timeout_at(attempt.deadline, start(attempt, request, include_usage, track)).await {
        Ok(started) => started,
        Err(_) => Err(Failure::Transport(TransportError::Timeout)),
    }
}

async fn start(
    attempt: &Attempt<'_>,
    request: &RequestBody,
    include_usage: bool,
    track: bool,
) -> Result<(Box<Pump>, Vec<Chunk>), Failure> {
    let response = attempt.send(request).await?;
    if !response.status().is_success() {
        let inbound = attempt.read(response).await?;
        return Err(attempt.classify(&inbound).await);
    }
    let body = response.into_body();
    let mut session = attempt
        .adapter
        .open_stream(&attempt.adapter_target, &attempt.context, include_usage)
        .await
        .map_err(Failure::Plugin)?;
    if track {
        session.track_text();
    }
    let redactor = attempt.to.upstream.redactor().clone();
    let mut pump = Pump {
        body,
        parser: {
            // Each read is searched once for a credential; only the events
            // of one that may hold one are scrubbed.
            let redactor = redactor.clone();
            SseParser::watching(Box::new(move |text| redactor.may_find(text)))
        },
        pending: Vec::new(),
        failed: None,
        session,
        redactor,
        usage: None,
        model: None,
        prices: attempt.to.model.prices.clone(),
        eof: false,
        finished: false,
        answer_finished: false,
    };
    match pump.next().await? {
        Batch::Chunks(first) => Ok((Box::new(pump), first)),
        Batch::Done => Err(Failure::Stream(StreamFailure::Empty)),
    }
}

/// Where a relay's batches come from: the provider stream through its
/// decoder (a [`Pump`]), or a scripted one in the tests.
trait Source {
    fn next(&mut self) -> impl Future<Output = Result<Batch, Failure>> + Send;
}

impl Source for Pump {
    fn next(&mut self) -> impl Future<Output = Result<Batch, Failure>> + Send {
        Pump::next(self)
    }
}

enum Batch {
    /// One or more chunks.
    Chunks(Vec<Chunk>),
    /// The provider marked the normal end of the answer.
    Done,
}

/// Reads the provider stream, frames events and runs them through the
/// adapter's decoder.
struct Pump {
    body: Incoming,
    parser: SseParser,
    /// Events read but not yet decoded.
    pending: Vec<Event>,
    /// The provider error that ends the stream, once the chunks decoded
    /// before it are delivered.
    failed: Option<Failure>,
    session: StreamSession,
    redactor: Arc<Redactor>,
    usage: Option<Usage>,
    /// The model the provider said answered.
    model: Option<String>,
    /// The target's prices: the final usage chunk carries the cost.
    prices: Prices,
    eof: bool,
    finished: bool,
    /// A chunk carried a finish reason.
    answer_finished: bool,
}

impl Pump {
    async fn next(&mut self) -> Result<Batch, Failure> {
        loop {
            // A provider error comes after the chunks decoded before it.
            if let Some(failure) = self.failed.take() {
                return Err(failure);
            }
            if self.finished {
                return Ok(Batch::Done);
            }
            if !self.pending.is_empty() {
                // The events of one socket read cross into the decoder in
                // one call. A provider's error event may echo our key; the
                // adapter must not see it either.
                let batch = self
                    .pending
                    .drain(..)
                    .map(|mut event| {
                        if event.marked {
                            self.redactor.string(&mut event.data);
                            if let Some(name) = event.event.as_mut() {
                                self.redactor.string(name);
                            }
                        }
                        SseEvent {
                            event: event.event,
                            data: event.data,
                        }
                    })
                    .collect();
                let Fed {
                    decoded,
                    finished,
                    seen,
                    usage_at,
                } = self.session.feed(batch).await.map_err(Failure::Plugin)?;
                self.answer_finished |= finished;
                if decoded.usage.is_some() {
                    self.usage = decoded.usage;
                }
                if decoded.model.is_some() {
                    self.model = decoded.model;
                }
                self.finished = decoded.done;
                self.failed = decoded.error.map(Failure::Provider);
                let mut seen = seen.into_iter();
                let mut chunks: Vec<Chunk> = decoded
                    .events
                    .into_iter()
                    .map(|e| Chunk {
                        event: e.event,
                        data: e.data.into_bytes(),
                        seen: seen.next(),
                    })
                    .collect();
                // The usage chunk the caller asked for carries the cost.
                if let (Some(usage), Some(at)) = (decoded.usage, usage_at) {
                    with_cost(&mut chunks[at].data, self.prices.cost(&usage));
                }
                if !chunks.is_empty() {
                    return Ok(Batch::Chunks(chunks));
                }
                continue;
            }
            if self.eof {
                // Ended cleanly without the provider's end marker: complete
                // if the answer had finished, else cut short.
                if self.answer_finished {
                    return Ok(Batch::Done);
                }
                return Err(Failure::Stream(StreamFailure::EndedEarly));
            }
            // `pending` is empty: one read's events become the next batch.
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.parser
                            .push(&data, &mut self.pending)
                            .map_err(|e| Failure::Stream(e.into()))?;
                    }
                }
                Some(Err(e)) => return Err(Failure::Transport(TransportError::Io(e.to_string()))),
                None => {
                    self.eof = true;
                    self.parser
                        .finish(&mut self.pending)
                        .map_err(|e| Failure::Stream(e.into()))?;
                }
            }
        }
    }
}

/// Add `usage.cost_usd` to a usage chunk.
fn with_cost(chunk: &mut Vec<u8>, cost_usd: f64) {
    let Ok(mut value) = serde_json::from_slice::<Value>(chunk) else {
        return;
    };
    if let Some(usage) = value.get_mut("usage").and_then(Value::as_object_mut) {
        usage.insert("cost_usd".into(), serde_json::json!(cost_usd));
        *chunk = serde_json::to_vec(&value).expect("a JSON value serialises");
    }
}

#[cfg(test)]
mod tests {
    //! The relay's timing rules in paused time, against a scripted source.
    use super::*;
    use std::collections::VecDeque;
    use std::time::Duration;
    use tokio::time::Instant;

    /// Batches after delays (milliseconds); then silence.
    struct Scripted(VecDeque<(u64, Batch)>);

    impl Source for Scripted {
        fn next(&mut self) -> impl Future<Output = Result<Batch, Failure>> + Send {
            let step = self.0.pop_front();
            async move {
                match step {
                    Some((ms, batch)) => {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        Ok(batch)
                    }
                    None => std::future::pending().await,
                }
            }
        }
    }

    fn text(text: &str) -> Chunk {
        Chunk::chat(format!(r#"{{"choices":[{{"index":0,"delta":{{"content":"{text}"}}}}]}}"#).into_bytes())
    }

    fn chunk(text_of: &str) -> Batch {
        Batch::Chunks(vec![text(text_of)])
    }

    fn relay(cut: CancellationToken) -> (Relay, mpsc::Receiver<Vec<StreamEvent>>) {
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        let relay = Relay {
            tx,
            sent: 0,
            delivered: None,
            splice: None,
            cut,
        };
        (relay, rx)
    }

    #[tokio::test(start_paused = true)]
    async fn silence_past_the_idle_deadline_breaks_the_stream_exactly_then() {
        let (mut relay, mut rx) = relay(CancellationToken::new());
        let mut source = Scripted(VecDeque::from([(400, chunk(" b")), (900, chunk(" c"))]));
        let started = Instant::now();
        let end = relay
            .run(&mut source, Ok(chunk("a")), Duration::from_secs(1))
            .await;
        // Events 400 and 900 ms apart are within the deadline; then silence.
        assert!(matches!(
            end,
            End::Broken(Failure::Stream(StreamFailure::Idle(_)))
        ));
        assert_eq!(Instant::now() - started, Duration::from_millis(2300));
        assert_eq!(relay.sent, 3);
        for _ in 0..3 {
            assert!(matches!(rx.try_recv().as_deref(), Ok([StreamEvent::Chunk(_)])));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_end_of_the_grace_period_cuts_the_stream_at_once() {
        let cut = CancellationToken::new();
        let (mut relay, _rx) = relay(cut.clone());
        let mut source = Scripted(VecDeque::new());
        let cancel = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(250)).await;
            cut.cancel();
        });
        let started = Instant::now();
        let end = relay
            .run(&mut source, Ok(chunk("a")), Duration::from_secs(30))
            .await;
        assert!(matches!(end, End::Cut));
        assert_eq!(Instant::now() - started, Duration::from_millis(250));
        cancel.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_who_leaves_ends_the_relay_without_waiting_for_the_provider() {
        let (mut relay, rx) = relay(CancellationToken::new());
        let mut source = Scripted(VecDeque::from([(5_000, chunk(" b"))]));
        drop(rx);
        let started = Instant::now();
        let end = relay
            .run(&mut source, Ok(chunk("a")), Duration::from_secs(30))
            .await;
        assert!(matches!(end, End::CallerGone));
        assert_eq!(Instant::now() - started, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_who_stops_reading_is_let_go_after_the_idle_deadline() {
        let (mut relay, _unread) = relay(CancellationToken::new());
        let mut source = Scripted((0..100).map(|_| (1, chunk("x"))).collect());
        let started = Instant::now();
        let end = relay
            .run(&mut source, Ok(chunk("a")), Duration::from_secs(1))
            .await;
        assert!(matches!(end, End::CallerGone));
        // The buffer filled after CHANNEL_DEPTH batches (a millisecond each
        // after the first); then a second with no room.
        assert_eq!(relay.sent, CHANNEL_DEPTH);
        assert_eq!(
            Instant::now() - started,
            Duration::from_millis(CHANNEL_DEPTH as u64) + Duration::from_secs(1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_finished_stream_ends_with_done() {
        let (mut relay, mut rx) = relay(CancellationToken::new());
        let mut source = Scripted(VecDeque::from([(10, Batch::Done)]));
        let end = relay
            .run(&mut source, Ok(chunk("a")), Duration::from_secs(1))
            .await;
        assert!(matches!(end, End::Complete));
        assert!(matches!(rx.try_recv().as_deref(), Ok([StreamEvent::Chunk(_)])));
        assert!(matches!(rx.try_recv().as_deref(), Ok([StreamEvent::Done])));
    }

    #[tokio::test(start_paused = true)]
    async fn the_chunks_of_one_read_reach_the_caller_together() {
        let (mut relay, mut rx) = relay(CancellationToken::new());
        let three = Batch::Chunks(vec![text("a"), text("b"), text("c")]);
        let mut source = Scripted(VecDeque::from([(10, three), (10, Batch::Done)]));
        let end = relay
            .run(&mut source, Ok(chunk("first")), Duration::from_secs(1))
            .await;
        assert!(matches!(end, End::Complete));
        assert_eq!(relay.sent, 4, "chunks are counted, not batches");
        assert_eq!(rx.try_recv().map(|b| b.len()), Ok(1));
        assert_eq!(rx.try_recv().map(|b| b.len()), Ok(3));
        assert!(matches!(rx.try_recv().as_deref(), Ok([StreamEvent::Done])));
    }

    #[test]
    fn the_cost_goes_into_the_usage_object() {
        let mut chunk = br#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#.to_vec();
        with_cost(&mut chunk, 0.5);
        let priced: Value = serde_json::from_slice(&chunk).unwrap();
        assert_eq!(priced["usage"]["cost_usd"], 0.5);
        assert_eq!(priced["usage"]["completion_tokens"], 2);
    }
}
