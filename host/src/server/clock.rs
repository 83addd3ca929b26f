//! One connection's clock: how long it may take to send a request's
//! headers, and how long it may sit idle between requests.
//!
//! A connection opens with `header_read` to deliver its first request
//! (protocol detection included: the HTTP/1-or-2 sniffing has no timer of
//! its own). Between requests it may stay idle for `keep_alive`; once the
//! first byte of the next HTTP/1 request arrives, the headers must be
//! complete within `header_read`. While a request is in flight the clock
//! does not run: bodies and answers have deadlines of their own.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

const NONE: u64 = u64::MAX;

#[derive(Clone, Copy, Debug)]
pub struct ClockSettings {
    pub header_read: Duration,
    pub keep_alive: Duration,
}

/// Why a connection's time ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// Its request headers did not arrive in time: drop it.
    Headers,
    /// It sat idle too long: close it gracefully.
    Idle,
}

pub struct ConnectionClock {
    opened: Instant,
    settings: ClockSettings,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// Microseconds after `opened` when the last request ended.
    idle_since: AtomicU64,
    /// Microseconds after `opened` of the first byte read while idle, or `NONE`.
    head_started: AtomicU64,
    /// HTTP/2 reads control frames while idle, so only HTTP/1 times heads.
    http2: AtomicBool,
    changed: Notify,
}

impl ConnectionClock {
    pub fn new(settings: ClockSettings) -> ConnectionClock {
        ConnectionClock {
            opened: Instant::now(),
            settings,
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(NONE),
            http2: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        (Instant::now() - self.opened).as_micros() as u64
    }

    fn at(&self, micros: u64) -> Instant {
        self.opened + Duration::from_micros(micros)
    }

    /// Bytes arrived from the client.
    pub fn read(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == NONE
            && self
                .head_started
                .compare_exchange(NONE, self.now(), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.changed.notify_waiters();
        }
    }

    /// A request's headers arrived; the clock stops until its answer is done.
    pub fn request_started(self: &Arc<Self>, http2: bool) -> InFlight {
        if http2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(NONE, Ordering::Relaxed);
        self.changed.notify_waiters();
        InFlight(self.clone())
    }

    /// When the connection's time runs out, and why; `None` while a request
    /// is in flight.
    fn deadline(&self) -> Option<(Instant, Expiry)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let header_read = self.settings.header_read;
        if self.requests.load(Ordering::Relaxed) == 0 {
            return Some((self.opened + header_read, Expiry::Headers));
        }
        let head = self.head_started.load(Ordering::Relaxed);
        if head != NONE && !self.http2.load(Ordering::Relaxed) {
            return Some((self.at(head) + header_read, Expiry::Headers));
        }
        let idle = self.idle_since.load(Ordering::Relaxed);
        Some((self.at(idle) + self.settings.keep_alive, Expiry::Idle))
    }

    /// Resolves when the connection's time has run out.
    pub async fn expired(&self) -> Expiry {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.deadline() {
                Some((at, why)) if at <= Instant::now() => return why,
                Some((at, _)) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

/// A request in flight on the connection; dropped when its answer has been
/// sent (or abandoned).
pub struct InFlight(Arc<ConnectionClock>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let clock = &self.0;
        clock.idle_since.store(clock.now(), Ordering::Relaxed);
        if clock.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            clock.changed.notify_waiters();
        }
    }
}

/// A client socket that tells its clock when bytes arrive.
pub struct Watched<T> {
    io: T,
    clock: Arc<ConnectionClock>,
}

impl<T> Watched<T> {
    pub fn new(io: T, clock: Arc<ConnectionClock>) -> Self {
        Watched { io, clock }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.clock.read();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: ClockSettings = ClockSettings {
        header_read: Duration::from_secs(10),
        keep_alive: Duration::from_secs(60),
    };

    async fn expires_after(clock: &ConnectionClock) -> (Duration, Expiry) {
        let start = Instant::now();
        let why = clock.expired().await;
        (Instant::now() - start, why)
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_gets_the_header_deadline() {
        let clock = ConnectionClock::new(SETTINGS);
        assert_eq!(
            expires_after(&clock).await,
            (Duration::from_secs(10), Expiry::Headers)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_request_stops_the_clock_and_its_end_starts_the_idle_one() {
        let clock = Arc::new(ConnectionClock::new(SETTINGS));
        tokio::time::advance(Duration::from_secs(3)).await;
        let request = clock.request_started(false);
        let waiter = {
            let clock = clock.clone();
            tokio::spawn(async move { expires_after(&clock).await })
        };
        // A long answer: the connection is not idle while it runs.
        tokio::time::sleep(Duration::from_secs(500)).await;
        drop(request);
        let (waited, why) = waiter.await.unwrap();
        assert_eq!(why, Expiry::Idle);
        assert_eq!(waited, Duration::from_secs(560));
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_started_while_idle_must_finish_in_time() {
        let clock = Arc::new(ConnectionClock::new(SETTINGS));
        drop(clock.request_started(false));
        let waiter = {
            let clock = clock.clone();
            tokio::spawn(async move { expires_after(&clock).await })
        };
        tokio::time::sleep(Duration::from_secs(30)).await;
        clock.read();
        tokio::time::sleep(Duration::from_secs(1)).await;
        clock.read(); // more trickled bytes do not extend it
        let (waited, why) = waiter.await.unwrap();
        assert_eq!((waited, why), (Duration::from_secs(40), Expiry::Headers));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_http2_reads_do_not_start_a_header_deadline() {
        let clock = Arc::new(ConnectionClock::new(SETTINGS));
        drop(clock.request_started(true));
        clock.read(); // a PING
        assert_eq!(
            expires_after(&clock).await,
            (Duration::from_secs(60), Expiry::Idle)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn reads_during_a_request_are_its_body() {
        let clock = Arc::new(ConnectionClock::new(SETTINGS));
        let request = clock.request_started(false);
        clock.read();
        tokio::time::sleep(Duration::from_secs(20)).await;
        drop(request);
        assert_eq!(
            expires_after(&clock).await,
            (Duration::from_secs(60), Expiry::Idle)
        );
    }
}
