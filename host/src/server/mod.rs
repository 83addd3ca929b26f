//! The HTTP server: accepts connections up to a cap, gives each a clock
//! (header, idle and HTTP/2 keep-alive deadlines), dispatches requests, and
//! on shutdown stops accepting, drains what is in flight and, when the grace
//! period ends, cuts open streams with an in-band error first.

mod clock;
mod dispatch;

pub use crate::lifecycle::Lifecycle;
pub use clock::{ClockSettings, ConnectionClock, Expiry};

use crate::api::Body;
use crate::metrics::{ConnectionLabels, Metrics};
use crate::reload::Live;
use clock::{InFlight, Watched};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// HTTP/2 connections are pinged this often, and dropped when a ping is not
/// answered in `H2_PING_TIMEOUT`: a peer that vanished is noticed.
const H2_PING_INTERVAL: Duration = Duration::from_secs(20);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);
/// After the grace period, how long cut streams get to send their error.
const CUT_FLUSH: Duration = Duration::from_millis(500);
/// Accept failures are logged at most this often.
const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Serve until `shutdown` resolves, then give requests in flight `grace` to
/// finish. At most `max_connections` are open at once.
pub async fn serve(
    live: Arc<Live>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Duration,
    max_connections: u32,
    lifecycle: Lifecycle,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT);
    let builder = Arc::new(builder);
    let metrics = live.current().metrics.clone();
    let slots = Arc::new(Semaphore::new(max_connections as usize));
    let mut last_accept_error: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                metrics.connection_limit_reached.inc();
                tracing::warn!(
                    max_connections,
                    "connection limit reached; not accepting until a connection closes"
                );
                tokio::select! {
                    slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                    _ = &mut shutdown => break,
                }
            }
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    // Out of file descriptors, most likely: wait for some to free
                    // up instead of spinning, and say so once in a while.
                    metrics.accept_errors.inc();
                    if last_accept_error.is_none_or(|at| at.elapsed() >= ACCEPT_ERROR_LOG_INTERVAL) {
                        tracing::warn!(%error, "accept failed; retrying");
                        last_accept_error = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        tokio::spawn(connection(
            live.clone(),
            builder.clone(),
            stream,
            slot,
            lifecycle.clone(),
        ));
    }
    // New connections are refused from here on; requests on open ones get a 503.
    drop(listener);
    lifecycle.draining.cancel();
    tracing::info!("shutting down; draining requests in flight");
    let all_closed = slots.acquire_many(max_connections);
    tokio::pin!(all_closed);
    if tokio::time::timeout(grace, all_closed.as_mut()).await.is_err() {
        tracing::warn!("requests still in flight after the grace period; ending them");
        lifecycle.cutting.cancel();
        let _ = tokio::time::timeout(CUT_FLUSH, all_closed).await;
    }
}

/// Serve one connection until it closes, its clock runs out or the server
/// drains.
async fn connection(
    live: Arc<Live>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    lifecycle: Lifecycle,
) {
    let _ = stream.set_nodelay(true);
    let gw = live.current();
    let metrics = gw.metrics.clone();
    let server = &gw.config.server;
    let clock = Arc::new(ConnectionClock::new(ClockSettings {
        header_read: Duration::from_millis(server.header_read_timeout_ms),
        keep_alive: Duration::from_millis(server.keep_alive_timeout_ms),
    }));
    drop(gw);
    metrics.connections_open.inc();
    let service = {
        let clock = clock.clone();
        let lifecycle = lifecycle.clone();
        service_fn(move |req: http::Request<Incoming>| {
            let in_flight = clock.request_started(req.version() == http::Version::HTTP_2);
            let (live, lifecycle) = (live.clone(), lifecycle.clone());
            async move {
                let response = dispatch::dispatch(&live, &lifecycle, req).await;
                Ok::<_, Infallible>(response.map(|body| Tracked {
                    body,
                    _in_flight: in_flight,
                }))
            }
        })
    };
    let io = TokioIo::new(Watched::new(stream, clock.clone()));
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        tokio::select! {
            _ = connection.as_mut() => break,
            expiry = clock.expired(), if !closing => {
                count_expiry(&metrics, expiry);
                match expiry {
                    // Too slow to say what it wants: no answer is owed.
                    Expiry::Headers => break,
                    Expiry::Idle => {
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            }
            _ = lifecycle.draining.cancelled(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
    metrics.connections_open.dec();
}

fn count_expiry(metrics: &Metrics, expiry: Expiry) {
    let reason = match expiry {
        Expiry::Headers => "header_timeout",
        Expiry::Idle => "idle",
    };
    metrics
        .connections_closed
        .get_or_create(&ConnectionLabels { reason })
        .inc();
}

/// A response body that holds its request's place on the connection clock
/// until it has been sent.
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// The connections this process can hold: `wanted`, or less when the file
/// descriptor limit would not allow it (each client connection may need an
/// upstream one too, and the process needs some for itself). The soft limit
/// is raised to the hard one first, as most servers do.
pub fn connection_capacity(wanted: u32) -> u32 {
    const RESERVED_FDS: u64 = 64;
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(u64::MAX);
    let fits = (limit.saturating_sub(RESERVED_FDS) / 2).clamp(1, u32::MAX as u64) as u32;
    if fits < wanted {
        tracing::info!(
            wanted,
            allowed = fits,
            fd_limit = limit,
            "server.max_connections lowered to fit the file descriptor limit"
        );
    }
    wanted.min(fits)
}
