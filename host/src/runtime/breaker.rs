//! A per-plugin circuit breaker: `failsafe`'s state machine with a
//! consecutive-failures policy, plus what the admin API needs on top of it
//! (the current state, and a reset).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use failsafe::StateMachine;
use failsafe::backoff::Constant;
use failsafe::failure_policy::ConsecutiveFailures;

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls are refused.
    Open,
    /// One trial call is let through.
    HalfOpen,
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// Mirrors the state machine's transitions into an atomic we can read.
#[derive(Clone)]
struct Observer(Arc<AtomicU8>);

impl failsafe::Instrument for Observer {
    fn on_call_rejected(&self) {}
    fn on_open(&self) {
        self.0.store(OPEN, Ordering::Relaxed);
    }
    fn on_half_open(&self) {
        self.0.store(HALF_OPEN, Ordering::Relaxed);
    }
    fn on_closed(&self) {
        self.0.store(CLOSED, Ordering::Relaxed);
    }
}

type Machine = StateMachine<ConsecutiveFailures<std::iter::Repeat<Duration>>, Observer>;

/// Opens after `threshold` consecutive failures, refuses calls for
/// `open_for`, then lets a trial call through.
pub struct Breaker {
    machine: RwLock<Machine>,
    state: Arc<AtomicU8>,
    threshold: u32,
    open_for: Duration,
}

fn machine(threshold: u32, open_for: Duration, state: &Arc<AtomicU8>) -> Machine {
    let backoff: Constant = failsafe::backoff::constant(open_for);
    let policy = failsafe::failure_policy::consecutive_failures(threshold, backoff);
    failsafe::Config::new()
        .failure_policy(policy)
        .instrument(Observer(state.clone()))
        .build()
}

impl Breaker {
    /// A closed breaker.
    pub fn new(threshold: u32, open_for: Duration) -> Breaker {
        let state = Arc::new(AtomicU8::new(CLOSED));
        Breaker {
            machine: RwLock::new(machine(threshold.max(1), open_for, &state)),
            state,
            threshold: threshold.max(1),
            open_for,
        }
    }

    fn current(&self) -> Machine {
        self.machine.read().expect("breaker lock").clone()
    }

    /// Whether a call may go ahead now (may move open → half-open).
    pub fn permits(&self) -> bool {
        self.current().is_call_permitted()
    }

    /// Record the outcome of a permitted call.
    pub fn record(&self, failed: bool) {
        let m = self.current();
        if failed { m.on_error() } else { m.on_success() }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        match self.state.load(Ordering::Relaxed) {
            OPEN => BreakerState::Open,
            HALF_OPEN => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }

    /// Close the breaker and forget the failures (admin reset).
    pub fn reset(&self) {
        let mut m = self.machine.write().expect("breaker lock");
        *m = machine(self.threshold, self.open_for, &self.state);
        self.state.store(CLOSED, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_half_opens_and_resets() {
        let b = Breaker::new(3, Duration::from_millis(50));
        for _ in 0..2 {
            assert!(b.permits());
            b.record(true);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.record(true);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.permits());
        std::thread::sleep(Duration::from_millis(80));
        assert!(b.permits(), "half-open lets a trial call through");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.record(true);
        assert_eq!(b.state(), BreakerState::Open);
        b.reset();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.permits());
    }
}
