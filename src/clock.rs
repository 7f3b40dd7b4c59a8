//! The time every rule that depends on time asks for: token expiry and
//! cut-offs, lockout windows, link expiry, the refresh grace and idle
//! windows, portal session timeouts, the outbox's due times and audit
//! record times.
//!
//! Production uses [`SystemClock`]. Tests hand the app a [`TestClock`] and
//! move it forward instead of sleeping through a TTL. Latencies and
//! metrics keep measuring with `Instant`: they are about real elapsed
//! time, not about what a rule decides.

use std::sync::Mutex;

use chrono::{DateTime, Utc};

/// Where "now" comes from. Shared as `Arc<dyn Clock>`.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The system clock shifted by an offset that tests set. It keeps running
/// with real time, so everything that relies on time passing between two
/// requests (ordering by creation time, "newest first") behaves as with
/// the system clock; only the jumps are the test's.
#[derive(Debug, Default)]
pub struct TestClock {
    offset: Mutex<chrono::Duration>,
}

impl TestClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        let by = chrono::Duration::from_std(by).expect("a test advances by a sane duration");
        *self.lock() += by;
    }

    /// Makes `now()` return `at` at this instant (it runs on from there).
    pub fn set(&self, at: DateTime<Utc>) {
        *self.lock() = at - Utc::now();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, chrono::Duration> {
        // A test that panicked while holding the lock left a valid offset.
        self.offset.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + *self.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_clock_moves_when_told_and_keeps_running() {
        let clock = TestClock::new();
        let before = clock.now();
        clock.advance(std::time::Duration::from_secs(3600));
        let after = clock.now();
        assert!(after - before >= chrono::Duration::seconds(3600));
        assert!(after - before < chrono::Duration::seconds(3660));

        let at = DateTime::from_timestamp(2_000_000_000, 0).unwrap();
        clock.set(at);
        let now = clock.now();
        assert!(now >= at && now - at < chrono::Duration::seconds(60));
    }
}
