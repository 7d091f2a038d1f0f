//! The counter store: all state palisade keeps between requests.
//!
//! A request's stages never touch state directly. The pipeline first
//! collects every counter operation the request needs into a
//! [`CounterPlan`], the store executes the plan in one go (for a shared
//! backend that is one round trip), and the detectors then read the
//! [`CounterReadings`]. That keeps detectors pure functions of the request
//! view and the readings, testable without a store at all.
//!
//! The in-process backend ([`LocalStore`]) is the default and needs
//! nothing else running.

mod local;

use std::time::Duration;

pub use local::LocalStore;

use crate::clock::Nanos;
use crate::config::RateLimitConfig;

/// One counter operation a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CounterOp {
    /// Take one token from a GCRA limit under `key`.
    Gcra { key: String, limit: RateLimitConfig },
}

/// The operations one request needs, executed together.
#[derive(Debug, Default)]
pub struct CounterPlan {
    ops: Vec<CounterOp>,
}

impl CounterPlan {
    pub fn clear(&mut self) {
        self.ops.clear();
    }

    /// Ask for one GCRA token; the reading is found again by `key`.
    pub fn gcra(&mut self, key: String, limit: RateLimitConfig) {
        self.ops.push(CounterOp::Gcra { key, limit });
    }

    pub fn ops(&self) -> &[CounterOp] {
        &self.ops
    }
}

/// The outcome of one GCRA operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcraReading {
    Allowed,
    /// Over the limit; the client may retry after this long.
    Limited {
        retry_after: Duration,
    },
}

/// Results of a plan, in plan order.
#[derive(Debug, Default)]
pub struct CounterReadings {
    entries: Vec<(String, GcraReading)>,
}

impl CounterReadings {
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn push_gcra(&mut self, key: String, reading: GcraReading) {
        self.entries.push((key, reading));
    }

    /// The reading of the GCRA operation planned under `key`.
    pub fn gcra(&self, key: &str) -> Option<GcraReading> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, r)| *r)
    }
}

/// The counter store backends.
#[derive(Debug)]
pub enum CounterStore {
    Local(LocalStore),
}

impl CounterStore {
    /// Execute every operation of `plan` at time `now`.
    pub fn execute(&self, plan: &CounterPlan, now: Nanos, readings: &mut CounterReadings) {
        match self {
            CounterStore::Local(local) => local.execute(plan, now, readings),
        }
    }
}
