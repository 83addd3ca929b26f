//! The request ledger: one record per request in an embedded SQLite
//! database, handed off the request path to one batching writer thread.
//! The request path never waits on the disk: a full queue or a failing
//! disk loses records (counted, logged once per interval), never requests.

pub mod names;
mod record;
pub mod report;
mod store;
mod trail;

pub use record::{AttemptRecord, RequestRecord};
pub use store::Store;
pub use store::id_from;
pub use trail::Trail;

use crate::metrics::{Metrics, ReasonLabels};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime};

/// Records written in one transaction at most.
const MAX_BATCH: usize = 8192;
/// How long the writer gathers records after the first of a batch: one
/// transaction per window, not per record. A crash loses at most this
/// much (plus what waits in the queue).
pub const BATCH_WINDOW: Duration = Duration::from_millis(100);
/// How often a failing disk is logged.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// How often old records are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Where the ledger lives and how long it keeps records.
#[derive(Clone, Debug, PartialEq)]
pub struct LedgerSettings {
    pub path: PathBuf,
    pub retention: Duration,
    /// Records waiting for the writer at most; more are dropped.
    pub queue: usize,
    /// Keep each request's policy inputs and plan (for offline replay).
    pub record_decisions: bool,
}

/// A handle on the ledger; cheap to clone. Off: records go nowhere.
#[derive(Clone, Default)]
pub struct Ledger {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    path: PathBuf,
    tx: SyncSender<Message>,
    metrics: Arc<Metrics>,
    /// When the last "queue full" line was logged.
    logged_full: std::sync::Mutex<Option<Instant>>,
}

enum Message {
    Record(Box<RequestRecord>),
    /// Answered once everything sent before it is written (or lost).
    Flush(std::sync::mpsc::Sender<()>),
}

/// Why the ledger could not be opened at start-up.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the ledger {}: {source}", path.display())]
pub struct OpenError {
    pub path: PathBuf,
    pub source: rusqlite::Error,
}

impl Ledger {
    /// A ledger that records nothing.
    pub fn off() -> Ledger {
        Ledger::default()
    }

    /// Open the database (so a bad path stops start-up with the reason) and
    /// start the writer thread.
    pub fn open(settings: LedgerSettings, metrics: Arc<Metrics>) -> Result<Ledger, OpenError> {
        let store = Store::open(&settings.path).map_err(|source| OpenError {
            path: settings.path.clone(),
            source,
        })?;
        let (tx, rx) = std::sync::mpsc::sync_channel(settings.queue.max(1));
        let path = settings.path.clone();
        let writer_metrics = metrics.clone();
        std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || Writer::new(settings, store, writer_metrics).run(rx))
            .expect("spawn the ledger writer");
        Ok(Ledger {
            inner: Some(Arc::new(Inner {
                path,
                tx,
                metrics,
                logged_full: std::sync::Mutex::new(None),
            })),
        })
    }

    pub fn is_on(&self) -> bool {
        self.inner.is_some()
    }

    /// A connection of its own to the database (for reports, feedback and
    /// keys, off the request path); none when the ledger is off.
    pub fn connect(&self) -> Option<Result<rusqlite::Connection, rusqlite::Error>> {
        let inner = self.inner.as_ref()?;
        Some(rusqlite::Connection::open(&inner.path).and_then(|conn| {
            conn.busy_timeout(Duration::from_secs(2))?;
            Ok(conn)
        }))
    }

    /// Hand a record to the writer without waiting; a full queue drops it.
    pub fn submit(&self, record: RequestRecord) {
        let Some(inner) = &self.inner else { return };
        match inner.tx.try_send(Message::Record(Box::new(record))) {
            Ok(()) => {
                inner.metrics.ledger_queue.inc();
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                inner
                    .metrics
                    .ledger_dropped
                    .get_or_create(&ReasonLabels { reason: "queue_full" })
                    .inc();
                let mut logged = inner.logged_full.lock().unwrap();
                if logged.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
                    *logged = Some(Instant::now());
                    tracing::error!(
                        "ledger queue full: records are being dropped (see switchboard_ledger_records_dropped_total)"
                    );
                }
            }
        }
    }

    /// Wait until what was submitted so far is written, at most `within`.
    pub fn flush(&self, within: Duration) -> bool {
        let Some(inner) = &self.inner else { return true };
        let (done, wait) = std::sync::mpsc::channel();
        // A full queue is waited on here, at shutdown, not on the request path.
        if inner.tx.send(Message::Flush(done)).is_err() {
            return false;
        }
        wait.recv_timeout(within).is_ok()
    }
}

/// The writer thread: batches what is queued, writes it in one transaction,
/// reopens the database after a failure, prunes old records.
struct Writer {
    settings: LedgerSettings,
    store: Option<Store>,
    metrics: Arc<Metrics>,
    logged_failure: Option<Instant>,
    next_prune: Instant,
}

impl Writer {
    fn new(settings: LedgerSettings, store: Store, metrics: Arc<Metrics>) -> Writer {
        Writer {
            settings,
            store: Some(store),
            metrics,
            logged_failure: None,
            next_prune: Instant::now(),
        }
    }

    fn run(mut self, rx: Receiver<Message>) {
        // A full batch means more is waiting: the next one does not sleep.
        let mut behind = false;
        loop {
            self.prune_if_due();
            let first = match rx.recv_timeout(PRUNE_EVERY) {
                Ok(message) => message,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            // Sleep through a window, then take what arrived: the request
            // path never wakes this thread per record (a flush does not wait
            // for the window).
            let mut batch = Vec::new();
            let mut flushes = Vec::new();
            let take = |message: Message, batch: &mut Vec<RequestRecord>, flushes: &mut Vec<_>| match message
            {
                Message::Record(record) => batch.push(*record),
                Message::Flush(done) => flushes.push(done),
            };
            take(first, &mut batch, &mut flushes);
            if flushes.is_empty() && !behind {
                std::thread::sleep(BATCH_WINDOW);
            }
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(message) => take(message, &mut batch, &mut flushes),
                    Err(_) => break,
                }
            }
            behind = batch.len() >= MAX_BATCH;
            self.metrics.ledger_queue.dec_by(batch.len() as i64);
            if !batch.is_empty() {
                self.write(&batch);
            }
            for done in flushes {
                let _ = done.send(());
            }
        }
    }

    fn write(&mut self, batch: &[RequestRecord]) {
        let result = match self.store.as_mut() {
            Some(store) => store.insert(batch),
            // Reopen after a failure: the disk may be back.
            None => Store::open(&self.settings.path).and_then(|mut store| {
                let written = store.insert(batch);
                self.store = Some(store);
                written
            }),
        };
        match result {
            Ok(()) => {
                self.metrics.ledger_written.inc_by(batch.len() as u64);
                if self.logged_failure.take().is_some() {
                    tracing::info!(path = %self.settings.path.display(), "ledger writes recovered");
                }
            }
            Err(error) => {
                self.store = None;
                self.metrics
                    .ledger_dropped
                    .get_or_create(&ReasonLabels {
                        reason: "write_failed",
                    })
                    .inc_by(batch.len() as u64);
                if self.logged_failure.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
                    self.logged_failure = Some(Instant::now());
                    tracing::error!(path = %self.settings.path.display(), %error, "ledger write failed; records are dropped until the database is writable again (requests are still served)");
                }
            }
        }
    }

    fn prune_if_due(&mut self) {
        if Instant::now() < self.next_prune {
            return;
        }
        self.next_prune = Instant::now() + PRUNE_EVERY;
        let Some(store) = self.store.as_mut() else { return };
        let before = unix_ms(SystemTime::now() - self.settings.retention);
        match store.prune(before) {
            Ok(0) => {}
            Ok(n) => tracing::info!(records = n, "ledger pruned records past retention"),
            Err(error) => tracing::warn!(%error, "ledger pruning failed"),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(at: SystemTime) -> i64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
