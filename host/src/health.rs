//! Live health of every target (provider + model): latency and TTFT EWMAs
//! and p95s, failure rate over a sliding window, in-flight count, circuit
//! state and rate-limit cooldown. Policies see it as candidate health; the
//! attempt loop feeds it.

use crate::config::CircuitConfig;
use crate::plugin::types::{CircuitState, Health};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Weight of the newest sample in the moving averages.
const EWMA_ALPHA: f64 = 0.2;
/// Answers kept for the p95s.
const SAMPLES: usize = 128;
/// Answers needed before a p95 is given.
pub const MIN_SAMPLES_FOR_P95: usize = 20;
/// Buckets the failure-rate window slides by.
const BUCKETS: usize = 10;

/// When a target's circuit opens and for how long.
#[derive(Clone, Copy, Debug)]
pub struct CircuitSettings {
    /// Consecutive failures that open the circuit.
    pub failures: u32,
    /// Failure rate over `window` that opens the circuit.
    pub error_rate: f64,
    pub window: Duration,
    /// Attempts `window` needs before its failure rate counts.
    pub min_attempts: u32,
    /// How long an open circuit stays open before one probe is let through.
    pub cool_down: Duration,
}

impl From<&CircuitConfig> for CircuitSettings {
    fn from(c: &CircuitConfig) -> Self {
        CircuitSettings {
            failures: c.failures,
            error_rate: c.error_rate,
            window: Duration::from_millis(c.window_ms),
            min_attempts: c.min_attempts,
            cool_down: Duration::from_millis(c.cool_down_ms),
        }
    }
}

/// The `[circuit]` defaults: kept once, in the configuration.
impl Default for CircuitSettings {
    fn default() -> Self {
        (&CircuitConfig::default()).into()
    }
}

/// Attempts and failures over a sliding window, in buckets.
#[derive(Default)]
struct Window {
    /// (bucket number since `origin`, attempts, failures).
    buckets: [(u64, u32, u32); BUCKETS],
}

impl Window {
    fn add(&mut self, bucket: u64, failed: bool) {
        let slot = &mut self.buckets[(bucket % BUCKETS as u64) as usize];
        if slot.0 != bucket {
            *slot = (bucket, 0, 0);
        }
        slot.1 += 1;
        slot.2 += u32::from(failed);
    }

    /// (attempts, failures) in the window ending at `bucket`.
    fn totals(&self, bucket: u64) -> (u32, u32) {
        self.buckets
            .iter()
            .filter(|(b, _, _)| *b + (BUCKETS as u64) > bucket && *b <= bucket)
            .fold((0, 0), |(a, f), (_, attempts, failures)| {
                (a + attempts, f + failures)
            })
    }
}

/// The latest durations, for a percentile: kept in arrival order (to know
/// which one leaves) and in sorted order (so the p95 is an index). Every
/// answer adds one and every plan reads the p95; sorting a copy per read
/// cost more than the rest of the plan.
struct Samples {
    ring: Vec<Duration>,
    next: usize,
    sorted: Vec<Duration>,
}

impl Default for Samples {
    fn default() -> Self {
        Samples {
            ring: Vec::with_capacity(SAMPLES),
            next: 0,
            sorted: Vec::with_capacity(SAMPLES),
        }
    }
}

impl Samples {
    fn push(&mut self, sample: Duration) {
        if self.ring.len() < SAMPLES {
            self.ring.push(sample);
        } else {
            let leaving = std::mem::replace(&mut self.ring[self.next], sample);
            let at = self.sorted.partition_point(|d| *d < leaving);
            self.sorted.remove(at);
        }
        self.next = (self.next + 1) % SAMPLES;
        let at = self.sorted.partition_point(|d| *d < sample);
        self.sorted.insert(at, sample);
    }

    fn p95(&self) -> Option<Duration> {
        let n = self.sorted.len();
        (n >= MIN_SAMPLES_FOR_P95).then(|| self.sorted[(n * 95).div_ceil(100) - 1])
    }
}

/// How an attempt ended, as far as the target's health is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The target failed (5xx, timeout, overload, transport, bad answer).
    Failure,
    /// Says nothing about the target (a bad request, a rate limit handled by the cooldown, a broken plugin).
    Neutral,
}

#[derive(Default)]
struct State {
    latency_ewma_ms: f64,
    ttft_ewma_ms: f64,
    latencies: Samples,
    ttfts: Samples,
    window: Window,
    consecutive_failures: u32,
    open_until: Option<Instant>,
    half_open: bool,
    /// A half-open circuit lets exactly one probe through at a time.
    probing: bool,
    rate_limited_until: Option<Instant>,
}

impl State {
    fn circuit(&self, now: Instant) -> CircuitState {
        match self.open_until {
            Some(until) if now < until => CircuitState::Open,
            // While the one probe is out, everyone else sees the circuit open.
            _ if self.probing => CircuitState::Open,
            Some(_) => CircuitState::HalfOpen,
            None if self.half_open => CircuitState::HalfOpen,
            None => CircuitState::Closed,
        }
    }
}

pub struct TargetHealth {
    state: Mutex<State>,
    in_flight: AtomicU32,
    circuit: CircuitSettings,
    /// Where window bucket 0 starts.
    origin: Instant,
}

impl Default for TargetHealth {
    fn default() -> Self {
        TargetHealth::new(CircuitSettings::default())
    }
}

/// Decrements the in-flight count when the attempt ends, however it ends,
/// and frees the probe slot of a half-open circuit if this attempt held it.
pub struct InFlight<'a> {
    health: &'a TargetHealth,
    probe: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.health.in_flight.fetch_sub(1, Ordering::Relaxed);
        if self.probe {
            self.health.state.lock().unwrap().probing = false;
        }
    }
}

impl TargetHealth {
    pub fn new(circuit: CircuitSettings) -> Self {
        TargetHealth {
            state: Mutex::default(),
            in_flight: AtomicU32::new(0),
            circuit,
            origin: Instant::now(),
        }
    }

    fn bucket(&self, now: Instant) -> u64 {
        let width = (self.circuit.window / BUCKETS as u32).max(Duration::from_millis(1));
        (now.saturating_duration_since(self.origin).as_nanos() / width.as_nanos()) as u64
    }

    /// Failure rate over the window; 0 until the window holds enough
    /// attempts to judge by (one failure out of one attempt is not 100 %).
    fn error_rate(&self, s: &State, now: Instant) -> f64 {
        match s.window.totals(self.bucket(now)) {
            (attempts, failures) if attempts >= self.circuit.min_attempts.max(1) => {
                failures as f64 / attempts as f64
            }
            _ => 0.0,
        }
    }

    /// Observed time-to-first-token p95 of streams, once enough were seen.
    pub fn ttft_p95(&self) -> Option<Duration> {
        self.state.lock().unwrap().ttfts.p95()
    }

    /// Observed p95 of whole (non-streaming) answers, once enough were seen.
    pub fn latency_p95(&self) -> Option<Duration> {
        self.state.lock().unwrap().latencies.p95()
    }

    /// An attempt starts. On a half-open circuit it becomes the probe.
    pub fn begin(&self, now: Instant) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let mut s = self.state.lock().unwrap();
        let probe = s.circuit(now) == CircuitState::HalfOpen;
        if probe {
            s.probing = true;
        }
        InFlight { health: self, probe }
    }

    pub fn circuit(&self, now: Instant) -> CircuitState {
        self.state.lock().unwrap().circuit(now)
    }

    pub fn view(&self, now: Instant) -> Health {
        let s = self.state.lock().unwrap();
        let circuit = s.circuit(now);
        let ms = |p95: Option<Duration>| p95.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        Health {
            latency_ewma_ms: s.latency_ewma_ms,
            latency_p95_ms: ms(s.latencies.p95()),
            ttft_ewma_ms: s.ttft_ewma_ms,
            ttft_p95_ms: ms(s.ttfts.p95()),
            error_rate: self.error_rate(&s, now),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            circuit,
            rate_limited_for_ms: s
                .rate_limited_until
                .map_or(0, |until| until.saturating_duration_since(now).as_millis() as u64),
        }
    }

    /// Time left in the provider's rate-limit cooldown.
    pub fn cooldown(&self, now: Instant) -> Duration {
        let s = self.state.lock().unwrap();
        s.rate_limited_until
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now))
    }

    pub fn record(&self, now: Instant, outcome: Outcome, latency: Duration, ttft: Option<Duration>) {
        let mut s = self.state.lock().unwrap();
        match outcome {
            Outcome::Success => {
                s.probing = false;
                s.latency_ewma_ms = ewma(s.latency_ewma_ms, latency.as_secs_f64() * 1000.0);
                match ttft {
                    Some(ttft) => {
                        s.ttft_ewma_ms = ewma(s.ttft_ewma_ms, ttft.as_secs_f64() * 1000.0);
                        s.ttfts.push(ttft);
                    }
                    None => s.latencies.push(latency),
                }
                s.window.add(self.bucket(now), false);
                s.consecutive_failures = 0;
                s.open_until = None;
                s.half_open = false;
            }
            Outcome::Failure => {
                s.probing = false;
                s.window.add(self.bucket(now), true);
                s.consecutive_failures += 1;
                let probing = s.half_open || s.open_until.is_some_and(|until| now >= until);
                let failing_often = self.error_rate(&s, now) >= self.circuit.error_rate;
                if probing || failing_often || s.consecutive_failures >= self.circuit.failures {
                    s.open_until = Some(now + self.circuit.cool_down);
                    s.half_open = true;
                    // The next verdict starts from the probe, not from the failures that opened it.
                    s.window = Window::default();
                }
            }
            Outcome::Neutral => {}
        }
    }

    /// The provider said to wait (429 with a delay, or our own default).
    pub fn rate_limited(&self, now: Instant, wait: Duration) {
        let mut s = self.state.lock().unwrap();
        let until = now + wait;
        s.rate_limited_until = Some(s.rate_limited_until.map_or(until, |u| u.max(until)));
    }
}

fn ewma(previous: f64, sample: f64) -> f64 {
    if previous == 0.0 {
        sample
    } else {
        previous + EWMA_ALPHA * (sample - previous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn circuit_opens_after_repeated_failures_then_half_opens_and_closes() {
        let health = TargetHealth::default();
        let settings = CircuitSettings::default();
        let ms = Duration::from_millis(10);
        for _ in 0..settings.failures - 1 {
            health.record(Instant::now(), Outcome::Failure, ms, None);
        }
        assert_eq!(health.view(Instant::now()).circuit, CircuitState::Closed);
        health.record(Instant::now(), Outcome::Failure, ms, None);
        assert_eq!(health.view(Instant::now()).circuit, CircuitState::Open);
        tokio::time::advance(settings.cool_down).await;
        assert_eq!(health.view(Instant::now()).circuit, CircuitState::HalfOpen);
        // A failed probe opens it again for a full cool-down.
        health.record(Instant::now(), Outcome::Failure, ms, None);
        assert_eq!(health.view(Instant::now()).circuit, CircuitState::Open);
        tokio::time::advance(settings.cool_down).await;
        health.record(Instant::now(), Outcome::Success, ms, None);
        let view = health.view(Instant::now());
        assert_eq!(view.circuit, CircuitState::Closed);
        assert_eq!(
            view.error_rate, 0.0,
            "the window restarted when the circuit opened"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_high_failure_rate_over_the_window_opens_the_circuit_without_a_streak() {
        let settings = CircuitSettings {
            failures: 5,
            error_rate: 0.5,
            window: Duration::from_secs(10),
            min_attempts: 10,
            cool_down: Duration::from_secs(30),
        };
        let health = TargetHealth::new(settings);
        let ms = Duration::from_millis(10);
        // Alternating: never two failures in a row, but half of them fail.
        for i in 0..9 {
            let outcome = if i % 2 == 0 {
                Outcome::Success
            } else {
                Outcome::Failure
            };
            health.record(Instant::now(), outcome, ms, None);
        }
        let view = health.view(Instant::now());
        assert_eq!(view.circuit, CircuitState::Closed);
        assert_eq!(view.error_rate, 0.0, "9 attempts are too few to judge by");
        health.record(Instant::now(), Outcome::Failure, ms, None);
        assert_eq!(
            health.view(Instant::now()).circuit,
            CircuitState::Open,
            "5 of 10 failed"
        );

        let healthy = TargetHealth::new(settings);
        for i in 0..10 {
            let outcome = if i % 3 == 0 {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            healthy.record(Instant::now(), outcome, ms, None);
        }
        let view = healthy.view(Instant::now());
        assert_eq!((view.circuit, view.error_rate), (CircuitState::Closed, 0.4));
    }

    #[tokio::test(start_paused = true)]
    async fn the_failure_window_slides() {
        let health = TargetHealth::new(CircuitSettings {
            window: Duration::from_secs(10),
            min_attempts: 2,
            error_rate: 0.9,
            ..CircuitSettings::default()
        });
        let ms = Duration::from_millis(10);
        health.record(Instant::now(), Outcome::Failure, ms, None);
        tokio::time::advance(Duration::from_secs(5)).await;
        health.record(Instant::now(), Outcome::Success, ms, None);
        health.record(Instant::now(), Outcome::Success, ms, None);
        assert_eq!(health.view(Instant::now()).error_rate, 1.0 / 3.0);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(
            health.view(Instant::now()).error_rate,
            0.0,
            "the failure left the window"
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        let view = health.view(Instant::now());
        assert_eq!((view.error_rate, view.circuit), (0.0, CircuitState::Closed));
    }

    #[test]
    fn p95s_need_enough_answers_and_follow_the_latest_ones() {
        let health = TargetHealth::default();
        let now = Instant::now();
        for ms in 1..MIN_SAMPLES_FOR_P95 as u64 {
            health.record(
                now,
                Outcome::Success,
                Duration::ZERO,
                Some(Duration::from_millis(ms)),
            );
        }
        assert_eq!(health.ttft_p95(), None);
        for ms in 1..=100 {
            health.record(
                now,
                Outcome::Success,
                Duration::ZERO,
                Some(Duration::from_millis(ms)),
            );
        }
        // 119 answers: 1..=19 ms twice, 20..=100 ms once.
        let p95 = health.ttft_p95().unwrap();
        assert!(
            (Duration::from_millis(93)..=Duration::from_millis(96)).contains(&p95),
            "{p95:?}"
        );
        assert_eq!(health.latency_p95(), None, "streams say nothing of whole answers");
    }

    #[test]
    fn the_p95_is_the_sorted_latest_samples_at_the_95th_rank() {
        let mut samples = Samples::default();
        let mut latest = std::collections::VecDeque::new();
        // Repeats and an order that is neither rising nor falling, well past
        // the window so that samples leave it.
        for i in 0..3 * SAMPLES as u64 {
            let sample = Duration::from_millis((i * 37) % 101);
            samples.push(sample);
            latest.push_back(sample);
            if latest.len() > SAMPLES {
                latest.pop_front();
            }
            let mut sorted: Vec<_> = latest.iter().copied().collect();
            sorted.sort();
            let expected =
                (sorted.len() >= MIN_SAMPLES_FOR_P95).then(|| sorted[(sorted.len() * 95).div_ceil(100) - 1]);
            assert_eq!(samples.p95(), expected, "after {} samples", i + 1);
            assert_eq!(samples.sorted, sorted);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_cooldown_counts_down_and_keeps_the_longest_wait() {
        let health = TargetHealth::default();
        health.rate_limited(Instant::now(), Duration::from_secs(5));
        health.rate_limited(Instant::now(), Duration::from_secs(1));
        assert_eq!(health.view(Instant::now()).rate_limited_for_ms, 5000);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(health.cooldown(Instant::now()), Duration::from_secs(3));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(health.view(Instant::now()).rate_limited_for_ms, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_half_open_circuit_lets_one_probe_through_at_a_time() {
        let settings = CircuitSettings {
            failures: 1,
            cool_down: Duration::from_secs(10),
            ..CircuitSettings::default()
        };
        let health = TargetHealth::new(settings);
        health.record(Instant::now(), Outcome::Failure, Duration::ZERO, None);
        tokio::time::advance(settings.cool_down).await;
        let now = Instant::now();
        assert_eq!(health.circuit(now), CircuitState::HalfOpen);
        let probe = health.begin(now);
        assert_eq!(
            health.circuit(now),
            CircuitState::Open,
            "others wait for the probe"
        );
        drop(probe);
        assert_eq!(
            health.circuit(now),
            CircuitState::HalfOpen,
            "a probe that ended unjudged frees the slot"
        );
        let probe = health.begin(now);
        health.record(now, Outcome::Success, Duration::ZERO, None);
        drop(probe);
        assert_eq!(health.circuit(now), CircuitState::Closed);
    }

    #[test]
    fn neutral_outcomes_leave_health_alone_and_in_flight_is_counted() {
        let health = TargetHealth::default();
        let now = Instant::now();
        health.record(now, Outcome::Neutral, Duration::ZERO, None);
        let guard = health.begin(now);
        let view = health.view(now);
        assert_eq!((view.error_rate, view.in_flight), (0.0, 1));
        drop(guard);
        assert_eq!(health.view(now).in_flight, 0);
    }
}
