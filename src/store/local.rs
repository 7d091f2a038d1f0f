//! The in-process counter store: GCRA limits on governor's keyed limiters,
//! driven by the injected clock.
//!
//! Memory stays bounded: every few thousand operations a limiter forgets
//! keys whose state has fully replenished (governor's `retain_recent`),
//! which is the same answer the limiter would give for a new key.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::middleware::NoOpMiddleware;
use governor::{Quota, RateLimiter, clock::Clock as _, state::keyed::DashMapStateStore};

use super::{CounterOp, CounterPlan, CounterReadings, GcraReading};
use crate::clock::{GovernorClock, Nanos, SharedClock};
use crate::config::RateLimitConfig;

type KeyedLimiter =
    RateLimiter<String, DashMapStateStore<String>, GovernorClock, NoOpMiddleware<governor::nanos::Nanos>>;

const PRUNE_EVERY_OPS: u64 = 4096;

#[derive(Debug)]
pub struct LocalStore {
    clock: GovernorClock,
    limiters: RwLock<HashMap<RateLimitConfig, Arc<KeyedLimiter>>>,
    ops: AtomicU64,
}

impl LocalStore {
    pub fn new(clock: SharedClock) -> Self {
        LocalStore { clock: GovernorClock(clock), limiters: RwLock::default(), ops: AtomicU64::new(0) }
    }

    pub fn execute(&self, plan: &CounterPlan, _now: Nanos, readings: &mut CounterReadings) {
        for op in plan.ops() {
            match op {
                CounterOp::Gcra { key, limit } => {
                    let reading = self.gcra(key, limit);
                    readings.push_gcra(key.clone(), reading);
                }
            }
        }
    }

    fn gcra(&self, key: &str, limit: &RateLimitConfig) -> GcraReading {
        let limiter = self.limiter(limit);
        if self.ops.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY_OPS == PRUNE_EVERY_OPS - 1 {
            self.prune();
        }
        match limiter.check_key(&key.to_string()) {
            Ok(()) => GcraReading::Allowed,
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                GcraReading::Limited { retry_after: wait.max(Duration::from_millis(1)) }
            }
        }
    }

    fn limiter(&self, limit: &RateLimitConfig) -> Arc<KeyedLimiter> {
        if let Some(limiter) = self.limiters.read().expect("limiter map poisoned").get(limit) {
            return limiter.clone();
        }
        let mut limiters = self.limiters.write().expect("limiter map poisoned");
        limiters
            .entry(*limit)
            .or_insert_with(|| Arc::new(RateLimiter::dashmap_with_clock(quota(limit), self.clock.clone())))
            .clone()
    }

    fn prune(&self) {
        for limiter in self.limiters.read().expect("limiter map poisoned").values() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Number of keys held, for metrics and memory tests.
    pub fn key_count(&self) -> usize {
        self.limiters.read().expect("limiter map poisoned").values().map(|l| l.len()).sum()
    }
}

/// `requests` per `period_secs`, bursting to `burst` (default `requests`).
pub fn quota(limit: &RateLimitConfig) -> Quota {
    let requests = limit.requests.max(1);
    let per_request = Duration::from_nanos(
        (Duration::from_secs(limit.period_secs.max(1)).as_nanos() / u128::from(requests)).max(1) as u64,
    );
    let burst = NonZeroU32::new(limit.burst.unwrap_or(requests).max(1)).expect("burst is at least 1");
    Quota::with_period(per_request).expect("period is non-zero").allow_burst(burst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn limits_per_key_and_replenishes_with_the_clock() {
        let clock = Arc::new(ManualClock::new(1_000_000_000_000));
        let store = LocalStore::new(clock.clone());
        let limit = RateLimitConfig { requests: 2, period_secs: 10, burst: None };
        let mut plan = CounterPlan::default();
        plan.gcra("a".into(), limit);
        let run = |store: &LocalStore| {
            let mut readings = CounterReadings::default();
            store.execute(&plan, 0, &mut readings);
            readings.gcra("a").unwrap()
        };
        assert_eq!(run(&store), GcraReading::Allowed);
        assert_eq!(run(&store), GcraReading::Allowed);
        match run(&store) {
            GcraReading::Limited { retry_after } => assert!(retry_after <= Duration::from_secs(5)),
            other => panic!("expected a limit, got {other:?}"),
        }
        clock.advance(Duration::from_secs(5));
        assert_eq!(run(&store), GcraReading::Allowed);
    }
}
