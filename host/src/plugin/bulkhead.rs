//! One plugin version's bulkhead: a bound on its calls in progress, its
//! call deadline, and quarantine after repeated traps or timeouts, so one
//! broken plugin cannot slow down the routes that do not use it.

use super::PluginError;
use super::sandbox::SlowLane;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Semaphore, SemaphorePermit};

/// The limits of one plugin version's calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallLimits {
    /// Wall-clock deadline of one call on a small input...
    pub timeout: Duration,
    /// ...plus this for every MiB of input (a 4 MiB body is parsed in tens
    /// of milliseconds, a normal one in tens of microseconds).
    pub timeout_per_mib: Duration,
    /// Calls in progress at once; more fail at once. An open stream's
    /// decoder counts only while it is being fed.
    pub max_concurrent: u32,
    /// Calls that may run past an epoch tick at once; the others wait
    /// (within their deadline) until one ends.
    pub max_slow: u32,
    /// Traps or timeouts in a row that quarantine the version (0: never).
    pub quarantine_after: u32,
    /// Keep instances between calls when the plugin declares itself stateless.
    pub reuse: bool,
}

pub struct Bulkhead {
    limits: CallLimits,
    calls: Semaphore,
    /// Places for calls that run past an epoch tick.
    slow: Arc<Semaphore>,
    /// Bundled versions are never quarantined: only counted and reported.
    may_quarantine: bool,
    failures_in_a_row: AtomicU32,
    quarantined: AtomicBool,
    rejected: AtomicU64,
    failed: AtomicU64,
}

/// What `/admin/plugins` shows of a bulkhead.
#[derive(Serialize)]
pub struct BulkheadView {
    pub call_timeout_ms: u64,
    pub call_timeout_per_mib_ms: u64,
    pub max_concurrent_calls: u32,
    pub max_slow_calls: u32,
    pub calls_in_progress: u32,
    pub calls_rejected: u64,
    pub calls_failed: u64,
    pub failures_in_a_row: u32,
    pub quarantined: bool,
}

impl CallLimits {
    /// The deadline of a call given `input` bytes.
    pub fn deadline(&self, input: usize) -> Duration {
        let mib = input.div_ceil(1 << 20) as u32;
        self.timeout + self.timeout_per_mib * mib
    }
}

impl Bulkhead {
    pub fn new(limits: CallLimits, may_quarantine: bool) -> Bulkhead {
        Bulkhead {
            limits,
            calls: Semaphore::new(limits.max_concurrent.max(1) as usize),
            slow: Arc::new(Semaphore::new(limits.max_slow.max(1) as usize)),
            may_quarantine,
            failures_in_a_row: AtomicU32::new(0),
            quarantined: AtomicBool::new(false),
            rejected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    pub fn limits(&self) -> CallLimits {
        self.limits
    }

    /// The slow lane a call's store joins.
    pub fn slow_lane(&self) -> SlowLane {
        SlowLane::new(&self.slow)
    }

    pub fn is_quarantined(&self) -> bool {
        self.quarantined.load(Ordering::Relaxed)
    }

    /// A place for one call, or `Busy` at once when every place is taken.
    pub fn enter(&self, plugin: &str) -> Result<SemaphorePermit<'_>, PluginError> {
        self.calls.try_acquire().map_err(|_| {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            PluginError::Busy {
                plugin: plugin.to_string(),
                limit: self.limits.max_concurrent,
            }
        })
    }

    /// Record how a call ended; `true` when this ending quarantined the version.
    pub fn record<T>(&self, result: &Result<T, PluginError>) -> bool {
        match result {
            Err(PluginError::Deadline { .. } | PluginError::Trap { .. }) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let in_a_row = self.failures_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
                let threshold = self.limits.quarantine_after;
                self.may_quarantine
                    && threshold > 0
                    && in_a_row >= threshold
                    && !self.quarantined.swap(true, Ordering::Relaxed)
            }
            // Busy, refused or contract-breaking calls say nothing of a trap streak.
            Err(_) => false,
            Ok(_) => {
                self.failures_in_a_row.store(0, Ordering::Relaxed);
                false
            }
        }
    }

    pub fn view(&self) -> BulkheadView {
        let max = self.limits.max_concurrent.max(1);
        BulkheadView {
            call_timeout_ms: self.limits.timeout.as_millis() as u64,
            call_timeout_per_mib_ms: self.limits.timeout_per_mib.as_millis() as u64,
            max_concurrent_calls: max,
            max_slow_calls: self.limits.max_slow.max(1),
            calls_in_progress: max.saturating_sub(self.calls.available_permits() as u32),
            calls_rejected: self.rejected.load(Ordering::Relaxed),
            calls_failed: self.failed.load(Ordering::Relaxed),
            failures_in_a_row: self.failures_in_a_row.load(Ordering::Relaxed),
            quarantined: self.is_quarantined(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: CallLimits = CallLimits {
        timeout: Duration::from_millis(10),
        timeout_per_mib: Duration::from_millis(40),
        max_concurrent: 2,
        max_slow: 1,
        quarantine_after: 3,
        reuse: true,
    };

    fn trap() -> Result<(), PluginError> {
        Err(PluginError::Trap {
            plugin: "p".into(),
            detail: "boom".into(),
        })
    }

    #[test]
    fn the_deadline_grows_with_the_input() {
        assert_eq!(LIMITS.deadline(0), Duration::from_millis(10));
        assert_eq!(LIMITS.deadline(2_000), Duration::from_millis(50));
        assert_eq!(LIMITS.deadline(4 << 20), Duration::from_millis(170));
    }

    #[test]
    fn calls_beyond_the_bound_are_refused_at_once() {
        let bulkhead = Bulkhead::new(LIMITS, true);
        let (first, second) = (bulkhead.enter("p").unwrap(), bulkhead.enter("p").unwrap());
        assert!(matches!(
            bulkhead.enter("p"),
            Err(PluginError::Busy { limit: 2, .. })
        ));
        drop(first);
        assert!(bulkhead.enter("p").is_ok());
        drop(second);
        assert_eq!(bulkhead.view().calls_rejected, 1);
    }

    #[test]
    fn traps_in_a_row_quarantine_once_and_a_success_resets_the_streak() {
        let bulkhead = Bulkhead::new(LIMITS, true);
        assert!(!bulkhead.record(&trap()));
        assert!(!bulkhead.record(&trap()));
        assert!(!bulkhead.record(&Ok(())), "a success breaks the streak");
        assert!(!bulkhead.record(&trap()));
        assert!(!bulkhead.record(&trap()));
        let busy: Result<(), _> = Err(PluginError::Busy {
            plugin: "p".into(),
            limit: 2,
        });
        assert!(!bulkhead.record(&busy), "being busy is not the plugin's fault");
        assert!(bulkhead.record(&trap()), "the third in a row quarantines");
        assert!(!bulkhead.record(&trap()), "only once");
        assert!(bulkhead.is_quarantined());
    }

    #[test]
    fn bundled_versions_are_counted_but_never_quarantined() {
        let bulkhead = Bulkhead::new(LIMITS, false);
        for _ in 0..10 {
            assert!(!bulkhead.record(&trap()));
        }
        assert!(!bulkhead.is_quarantined());
        assert_eq!(bulkhead.view().calls_failed, 10);
    }
}
