//! Denials this replica knows to be in force — limits Redis reported as
//! exhausted, bans Redis reported or this replica set — so a request that
//! would only be refused again costs no Redis call.
//!
//! Only denials are remembered, never "allowed" or "not banned": a ban set
//! by another replica is read from Redis on the next request. Each entry is
//! re-checked in Redis at least every [`RECHECK`], so a ban lifted by hand
//! is honoured within that time. Memory is bounded per shard.

use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::Duration;

use crate::clock::Nanos;
use crate::store::{CounterOp, CounterPlan, CounterReadings, GcraReading, Key, Reading};

/// Longest time a denial is answered from memory before Redis is asked again.
const RECHECK: Duration = Duration::from_secs(60);
const SHARDS: usize = 16;
/// Entries per shard; a full shard first drops what has run out, then
/// everything (denials are re-learned from Redis on the next request).
const SHARD_CAPACITY: usize = 8_192;

#[derive(Debug, Clone, Copy)]
struct Denial {
    /// When the limit or ban runs out.
    until: Nanos,
    /// Until when it may be answered without asking Redis.
    recheck_at: Nanos,
}

#[derive(Debug, Default)]
pub struct Denials {
    shards: [Mutex<hashbrown::HashMap<Key, Denial>>; SHARDS],
    hasher: hashbrown::DefaultHashBuilder,
}

impl Denials {
    fn shard(&self, key: &str) -> &Mutex<hashbrown::HashMap<Key, Denial>> {
        &self.shards[self.hasher.hash_one(key) as usize % SHARDS]
    }

    fn get(&self, key: &str, now: Nanos) -> Option<Duration> {
        let shard = self.shard(key).lock().expect("denial cache poisoned");
        shard.get(key).filter(|d| d.recheck_at > now && d.until > now).map(|d| Duration::from_nanos(d.until - now))
    }

    /// Remember that `key` is denied for `left` from `now`.
    pub fn remember(&self, key: &Key, now: Nanos, left: Duration) {
        let until = now.saturating_add(left.as_nanos() as u64);
        let recheck_at = now.saturating_add(left.min(RECHECK).as_nanos() as u64);
        let mut shard = self.shard(key).lock().expect("denial cache poisoned");
        if shard.len() >= SHARD_CAPACITY && !shard.contains_key(&**key) {
            shard.retain(|_, denial| denial.recheck_at > now);
            if shard.len() >= SHARD_CAPACITY / 2 {
                shard.clear();
            }
        }
        let denial = shard.entry(key.clone()).or_insert(Denial { until, recheck_at });
        denial.until = denial.until.max(until);
        denial.recheck_at = denial.recheck_at.max(recheck_at);
    }

    /// Forget what is remembered under `key` (a lifted ban).
    pub fn forget(&self, key: &str) {
        self.shard(key).lock().expect("denial cache poisoned").remove(key);
    }

    /// Remember the denials among `readings` of `plan`.
    pub fn remember_readings(&self, plan: &CounterPlan, readings: &[Reading], now: Nanos) {
        for (op, reading) in plan.ops().iter().zip(readings) {
            match reading {
                Reading::Gcra(GcraReading::Limited { retry_after }) => self.remember(op.key(), now, *retry_after),
                Reading::Ban(Some(left)) => self.remember(op.key(), now, *left),
                _ => {}
            }
        }
    }

    /// Answer `plan` from memory when that cannot hide anything Redis
    /// knows: a remembered ban (final whatever else the plan reads), or a
    /// remembered limit in a plan that checks no ban (a ban another replica
    /// set must be read from Redis). The readings from `base` on are the
    /// plan's local ones; the remembered denials replace theirs.
    pub fn answer(&self, plan: &CounterPlan, now: Nanos, base: usize, readings: &mut CounterReadings) -> bool {
        let mut banned = false;
        let mut limited = false;
        let mut checks_bans = false;
        let mut denied = Vec::new();
        for (index, op) in plan.ops().iter().enumerate() {
            let is_ban = matches!(op, CounterOp::BanCheck { .. });
            checks_bans |= is_ban;
            if !is_ban && !matches!(op, CounterOp::Gcra { .. }) {
                continue;
            }
            if let Some(left) = self.get(op.key(), now) {
                banned |= is_ban;
                limited |= !is_ban;
                denied.push((index, is_ban, left));
            }
        }
        if !(banned || (limited && !checks_bans)) {
            return false;
        }
        for (index, is_ban, left) in denied {
            let reading = if is_ban {
                Reading::Ban(Some(left))
            } else {
                Reading::Gcra(GcraReading::Limited { retry_after: left })
            };
            readings.replace(base + index, reading);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RateLimitConfig;

    const S: u64 = 1_000_000_000;

    fn plan(with_ban_check: bool) -> CounterPlan {
        let mut plan = CounterPlan::new(Key::from("login"));
        plan.gcra(Key::from("rate"), RateLimitConfig { requests: 1, period_secs: 60, burst: None });
        if with_ban_check {
            plan.push(CounterOp::BanCheck { key: Key::from("ban") });
        }
        plan
    }

    fn local_readings(plan: &CounterPlan) -> CounterReadings {
        let mut readings = CounterReadings::default();
        for op in plan.ops() {
            let reading = match op {
                CounterOp::BanCheck { .. } => Reading::Ban(None),
                _ => Reading::Gcra(GcraReading::Allowed),
            };
            readings.push(op.key().clone(), reading);
        }
        readings
    }

    #[test]
    fn a_remembered_limit_never_hides_a_ban_check() {
        let denials = Denials::default();
        denials.remember(&Key::from("rate"), 0, Duration::from_secs(90));
        let only_limit = plan(false);
        let mut readings = local_readings(&only_limit);
        assert!(denials.answer(&only_limit, S, 0, &mut readings));
        // The true time left, beyond the recheck interval.
        assert_eq!(readings.gcra("rate"), Some(GcraReading::Limited { retry_after: Duration::from_secs(89) }));
        let with_ban = plan(true);
        let mut readings = local_readings(&with_ban);
        assert!(!denials.answer(&with_ban, S, 0, &mut readings), "another replica may have banned the client");
        denials.remember(&Key::from("ban"), S, Duration::from_secs(900));
        assert!(denials.answer(&with_ban, 2 * S, 0, &mut readings));
        assert_eq!(readings.ban("ban"), Some(Duration::from_secs(899)));
        assert!(!denials.answer(&with_ban, 62 * S, 0, &mut local_readings(&with_ban)), "rechecked after a minute");
    }

    #[test]
    fn memory_stays_bounded() {
        let denials = Denials::default();
        for i in 0..(SHARDS * SHARD_CAPACITY * 3) as u64 {
            denials.remember(&Key::from(format!("k{i}")), 0, Duration::from_secs(60));
        }
        let held: usize = denials.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(held <= SHARDS * SHARD_CAPACITY, "{held}");
    }
}
