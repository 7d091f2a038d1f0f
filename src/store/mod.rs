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
pub mod sketch;
pub mod window;

use std::time::Duration;

pub use local::LocalStore;

use crate::clock::Nanos;
use crate::config::RateLimitConfig;

/// A counter key. Shared (`Arc`), because the same key goes into a plan,
/// its readings and the store, and is looked up again by detectors.
pub type Key = std::sync::Arc<str>;

/// One counter operation a request needs. Every operation names its key;
/// its reading is found again by that key.
#[derive(Debug, Clone, PartialEq)]
pub enum CounterOp {
    /// Take one token from a GCRA limit.
    Gcra { key: Key, limit: RateLimitConfig },
    /// Add `add` (possibly 0, to only read) to a sliding-window count and
    /// read the count over the last `window`.
    Count { key: Key, window: Duration, add: u64 },
    /// Add an item (a 64-bit hash; `None` to only read) to a distinct-count
    /// sketch and read the number of distinct items over the window.
    Distinct { key: Key, window: Duration, item: Option<u64> },
    /// Add `add` to an exponentially decayed sum and read it.
    Decay { key: Key, half_life: Duration, add: f64 },
    /// Is a ban in force under `key`? Reads the time left.
    BanCheck { key: Key },
    /// Ban `key` for `ttl` (extending, never shortening, a ban in force).
    Ban { key: Key, ttl: Duration },
}

impl CounterOp {
    pub fn key(&self) -> &Key {
        match self {
            CounterOp::Gcra { key, .. }
            | CounterOp::Count { key, .. }
            | CounterOp::Distinct { key, .. }
            | CounterOp::Decay { key, .. }
            | CounterOp::BanCheck { key }
            | CounterOp::Ban { key, .. } => key,
        }
    }
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

    pub fn push(&mut self, op: CounterOp) {
        self.ops.push(op);
    }

    /// Ask for one GCRA token.
    pub fn gcra(&mut self, key: Key, limit: RateLimitConfig) {
        self.ops.push(CounterOp::Gcra { key, limit });
    }

    pub fn ops(&self) -> &[CounterOp] {
        &self.ops
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
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

/// What one operation read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reading {
    Gcra(GcraReading),
    /// A count, distinct count or decayed sum.
    Number(f64),
    /// Time left on a ban, `None` when there is none.
    Ban(Option<Duration>),
    /// Operations that only write.
    Done,
}

/// Results of a plan, in plan order.
#[derive(Debug, Default)]
pub struct CounterReadings {
    entries: Vec<(Key, Reading)>,
}

impl CounterReadings {
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn push(&mut self, key: Key, reading: Reading) {
        self.entries.push((key, reading));
    }

    fn get(&self, key: &str) -> Option<Reading> {
        // Planned keys are usually the very `Arc` looked up again: a
        // pointer comparison finds them without comparing text.
        let by_pointer =
            self.entries.iter().find(|(k, _)| std::ptr::eq(k.as_ptr(), key.as_ptr()) && k.len() == key.len());
        by_pointer.or_else(|| self.entries.iter().find(|(k, _)| &**k == key)).map(|(_, r)| *r)
    }

    /// The reading of the GCRA operation planned under `key`.
    pub fn gcra(&self, key: &str) -> Option<GcraReading> {
        match self.get(key)? {
            Reading::Gcra(reading) => Some(reading),
            _ => None,
        }
    }

    /// The number read under `key` (0 when the operation was not planned).
    pub fn number(&self, key: &str) -> f64 {
        match self.get(key) {
            Some(Reading::Number(value)) => value,
            _ => 0.0,
        }
    }

    /// Time left on the ban checked under `key`.
    pub fn ban(&self, key: &str) -> Option<Duration> {
        match self.get(key)? {
            Reading::Ban(left) => left,
            _ => None,
        }
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

    /// Every key the store holds, for audits and tests (no values).
    pub fn keys(&self) -> Vec<String> {
        match self {
            CounterStore::Local(local) => local.keys(),
        }
    }
}
