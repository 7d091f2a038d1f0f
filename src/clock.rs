//! Time as an injectable dependency.
//!
//! Everything that measures windows, limits or bans asks a [`Clock`]
//! instead of the operating system, so replaying a capture can run on the
//! capture's own timestamps: deterministic, and far faster than real time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch.
pub type Nanos = u64;

pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Nanos;
}

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Nanos {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
    }
}

/// A clock that only moves when told to (replay and tests).
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicU64,
}

impl ManualClock {
    pub fn new(start: Nanos) -> Self {
        ManualClock { now: AtomicU64::new(start) }
    }

    /// Move to `at`; time never goes backwards, as on a monotonic clock.
    pub fn set(&self, at: Nanos) {
        self.now.fetch_max(at, Ordering::Relaxed);
    }

    pub fn advance(&self, by: std::time::Duration) {
        self.now.fetch_add(by.as_nanos() as u64, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Nanos {
        self.now.load(Ordering::Relaxed)
    }
}

pub type SharedClock = Arc<dyn Clock>;

/// Adapts a [`Clock`] to governor's clock trait.
#[derive(Debug, Clone)]
pub struct GovernorClock(pub SharedClock);

impl governor::clock::Clock for GovernorClock {
    type Instant = governor::nanos::Nanos;

    fn now(&self) -> Self::Instant {
        governor::nanos::Nanos::new(self.0.now())
    }
}
