//! Live health of every target (provider + model): latency and TTFT EWMAs,
//! recent error rate, in-flight count, circuit state and rate-limit cooldown.
//! Policies see it as candidate health; the attempt loop feeds it.

use crate::plugin::policy_wit::{CircuitState, Health};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Weight of the newest sample in the moving averages.
const EWMA_ALPHA: f64 = 0.2;

/// When a target's circuit opens and for how long.
#[derive(Clone, Copy, Debug)]
pub struct CircuitSettings {
    /// Consecutive failures that open the circuit.
    pub failures: u32,
    /// How long an open circuit stays open before one probe is let through.
    pub cool_down: Duration,
}

impl Default for CircuitSettings {
    fn default() -> Self {
        CircuitSettings {
            failures: 5,
            cool_down: Duration::from_secs(30),
        }
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
    error_ewma: f64,
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

#[derive(Default)]
pub struct TargetHealth {
    state: Mutex<State>,
    in_flight: AtomicU32,
    circuit: CircuitSettings,
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
            circuit,
            ..Default::default()
        }
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
        Health {
            latency_ewma_ms: s.latency_ewma_ms,
            ttft_ewma_ms: s.ttft_ewma_ms,
            error_rate: s.error_ewma,
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
                if let Some(ttft) = ttft {
                    s.ttft_ewma_ms = ewma(s.ttft_ewma_ms, ttft.as_secs_f64() * 1000.0);
                }
                s.error_ewma = ewma_rate(s.error_ewma, 0.0);
                s.consecutive_failures = 0;
                s.open_until = None;
                s.half_open = false;
            }
            Outcome::Failure => {
                s.probing = false;
                s.error_ewma = ewma_rate(s.error_ewma, 1.0);
                s.consecutive_failures += 1;
                let probing = s.half_open || s.open_until.is_some_and(|until| now >= until);
                if probing || s.consecutive_failures >= self.circuit.failures {
                    s.open_until = Some(now + self.circuit.cool_down);
                    s.half_open = true;
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

fn ewma_rate(previous: f64, sample: f64) -> f64 {
    previous + EWMA_ALPHA * (sample - previous)
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
        assert!(view.error_rate > 0.0 && view.error_rate < 1.0);
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
