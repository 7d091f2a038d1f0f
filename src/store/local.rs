//! The in-process counter store: GCRA limits on governor's keyed limiters
//! (driven by the injected clock), and sliding-window counts, distinct
//! sketches, decayed sums and bans in sharded maps.
//!
//! Memory stays bounded: every few thousand operations the limiters forget
//! keys whose state has fully replenished (governor's `retain_recent`) and
//! one shard of the maps drops entries whose windows have passed, so a key
//! lives about as long as it can still change an answer.

use std::collections::HashMap;

/// The counter maps: hashbrown's default hasher (foldhash) is several
/// times cheaper than SipHash on short keys, and keys here are chosen by
/// palisade (hashed identities), not by clients.
type SlotMap = hashbrown::HashMap<String, Slot>;
use std::hash::BuildHasher;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use governor::middleware::NoOpMiddleware;
use governor::{Quota, RateLimiter, clock::Clock as _, state::keyed::DashMapStateStore};

use super::window::{Decayed, Rhythm, SlidingCount, WindowedDistinct};
use super::{CounterOp, CounterPlan, CounterReadings, GcraReading, Key, Reading};
use crate::clock::{GovernorClock, Nanos, SharedClock};
use crate::config::RateLimitConfig;

type KeyedLimiter = RateLimiter<Key, DashMapStateStore<Key>, GovernorClock, NoOpMiddleware<governor::nanos::Nanos>>;

const PRUNE_EVERY_OPS: u64 = 4096;
const SHARDS: usize = 16;

#[derive(Debug, Clone)]
enum Slot {
    Count(SlidingCount, Duration),
    Distinct(WindowedDistinct, Duration),
    Decay(Decayed, Duration),
    Rhythm(Rhythm, Duration),
    /// Banned until this time, for this reason (a detection id).
    Ban(Nanos, Key),
}

impl Slot {
    fn is_expired(&self, now: Nanos) -> bool {
        match self {
            Slot::Count(count, window) => count.is_expired(now, *window),
            Slot::Distinct(distinct, window) => distinct.is_expired(now, *window),
            Slot::Decay(decayed, half_life) => decayed.is_expired(now, *half_life),
            Slot::Rhythm(rhythm, window) => rhythm.is_expired(now, *window),
            Slot::Ban(until, _) => *until <= now,
        }
    }
}

#[derive(Debug)]
pub struct LocalStore {
    clock: GovernorClock,
    limiters: RwLock<HashMap<RateLimitConfig, Arc<KeyedLimiter>>>,
    shards: [Mutex<SlotMap>; SHARDS],
    hasher: hashbrown::DefaultHashBuilder,
    ops: AtomicU64,
}

impl LocalStore {
    pub fn new(clock: SharedClock) -> Self {
        LocalStore {
            clock: GovernorClock(clock),
            limiters: RwLock::default(),
            shards: Default::default(),
            hasher: Default::default(),
            ops: AtomicU64::new(0),
        }
    }

    pub fn execute(&self, plan: &CounterPlan, now: Nanos, readings: &mut CounterReadings) {
        for op in plan.ops() {
            let ops = self.ops.fetch_add(1, Ordering::Relaxed);
            if ops % PRUNE_EVERY_OPS == PRUNE_EVERY_OPS - 1 {
                self.prune(now, (ops / PRUNE_EVERY_OPS) as usize % SHARDS);
            }
            let reading = match op {
                CounterOp::Gcra { key, limit } => Reading::Gcra(self.gcra(key, limit)),
                other => self.update(other, now),
            };
            readings.push(op.key().clone(), reading);
        }
    }

    fn shard(&self, key: &str) -> &Mutex<SlotMap> {
        &self.shards[self.hasher.hash_one(key) as usize % SHARDS]
    }

    fn update(&self, op: &CounterOp, now: Nanos) -> Reading {
        let mut shard = self.shard(op.key()).lock().expect("store shard poisoned");
        match op {
            CounterOp::Count { key, window, add } => {
                let slot = entry(&mut shard, key, || Slot::Count(SlidingCount::default(), *window));
                match slot {
                    Slot::Count(count, _) => {
                        if *add > 0 {
                            count.add(now, *window, *add);
                        }
                        Reading::Number(count.estimate(now, *window))
                    }
                    _ => Reading::Number(0.0),
                }
            }
            CounterOp::Distinct { key, window, item } => {
                let slot = entry(&mut shard, key, || Slot::Distinct(WindowedDistinct::default(), *window));
                match slot {
                    Slot::Distinct(distinct, _) => {
                        if let Some(item) = item {
                            distinct.add(now, *window, *item);
                        }
                        Reading::Number(distinct.count(now, *window) as f64)
                    }
                    _ => Reading::Number(0.0),
                }
            }
            CounterOp::Decay { key, half_life, add } => {
                let slot = entry(&mut shard, key, || Slot::Decay(Decayed::default(), *half_life));
                match slot {
                    Slot::Decay(decayed, _) => Reading::Number(decayed.add(now, *half_life, *add)),
                    _ => Reading::Number(0.0),
                }
            }
            CounterOp::Rhythm { key, window } => {
                let slot = entry(&mut shard, key, || Slot::Rhythm(Rhythm::default(), *window));
                match slot {
                    Slot::Rhythm(rhythm, _) => {
                        rhythm.arrive(now, *window);
                        Reading::Number(rhythm.read())
                    }
                    _ => Reading::Number(f64::NAN),
                }
            }
            CounterOp::BanCheck { key } => match shard.get(&**key) {
                Some(Slot::Ban(until, _)) if *until > now => Reading::Ban(Some(Duration::from_nanos(until - now))),
                _ => Reading::Ban(None),
            },
            CounterOp::Ban { key, ttl, reason } => {
                let until = now + ttl.as_nanos() as u64;
                match shard.get_mut(&**key) {
                    Some(Slot::Ban(current, _)) if *current >= until => {}
                    _ => {
                        shard.insert(key.to_string(), Slot::Ban(until, reason.clone()));
                    }
                }
                Reading::Done
            }
            CounterOp::Gcra { .. } => Reading::Done,
        }
    }

    fn gcra(&self, key: &Key, limit: &RateLimitConfig) -> GcraReading {
        let limiter = self.limiter(limit);
        match limiter.check_key(key) {
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

    fn prune(&self, now: Nanos, shard: usize) {
        if shard == 0 {
            for limiter in self.limiters.read().expect("limiter map poisoned").values() {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        }
        let mut map = self.shards[shard].lock().expect("store shard poisoned");
        map.retain(|_, slot| !slot.is_expired(now));
    }

    /// Every ban in force at `now`: its key, time left and reason.
    pub fn bans(&self, now: Nanos) -> Vec<super::BanEntry> {
        let mut bans = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock().expect("store shard poisoned");
            for (key, slot) in shard.iter() {
                if let Slot::Ban(until, reason) = slot
                    && *until > now
                {
                    bans.push(super::BanEntry {
                        key: key.clone(),
                        left: Duration::from_nanos(until - now),
                        reason: reason.to_string(),
                    });
                }
            }
        }
        bans.sort_by(|a, b| a.key.cmp(&b.key));
        bans
    }

    /// Lift the ban under `key` and clear the other counters of its scope
    /// (the keys beside it, `…:f`, `…:x`, …): the client starts afresh
    /// instead of being banned again by its old failures. Whether a ban
    /// was in force.
    pub fn lift(&self, key: &str, now: Nanos) -> bool {
        let in_force = {
            let shard = self.shard(key).lock().expect("store shard poisoned");
            matches!(shard.get(key), Some(Slot::Ban(until, _)) if *until > now)
        };
        let scope = match key.rsplit_once(':') {
            Some((group, _)) if !group.is_empty() => format!("{group}:"),
            _ => key.to_string(),
        };
        for shard in &self.shards {
            shard.lock().expect("store shard poisoned").retain(|held, _| held != key && !held.starts_with(&scope));
        }
        in_force
    }

    /// The `limit` largest sliding-window counts at `now` among keys that
    /// end with `suffix` (e.g. `:f`, failures): what the dashboard shows
    /// as under attack. Reads the maps; no request pays for it.
    pub fn top_counts(&self, suffix: &str, now: Nanos, limit: usize) -> Vec<(String, f64)> {
        let mut top: Vec<(String, f64)> = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock().expect("store shard poisoned");
            for (key, slot) in shard.iter() {
                if let Slot::Count(count, window) = slot
                    && key.ends_with(suffix)
                {
                    let value = count.estimate(now, *window);
                    if value > 0.0 {
                        top.push((key.clone(), value));
                    }
                }
            }
        }
        top.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top.truncate(limit);
        top
    }

    /// Every key held (GCRA keys are governor's and not listed one by one).
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .shards
            .iter()
            .flat_map(|s| s.lock().expect("store shard poisoned").keys().cloned().collect::<Vec<_>>())
            .collect();
        keys.sort();
        keys
    }
}

/// The slot under `key`, created by `new` when missing (one hash lookup;
/// the key is copied only when it is new).
fn entry<'m>(map: &'m mut SlotMap, key: &str, new: impl FnOnce() -> Slot) -> &'m mut Slot {
    map.entry_ref(key).or_insert_with(new)
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
        plan.gcra(Key::from("a"), limit);
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

    #[test]
    fn counts_distincts_and_bans() {
        let clock = Arc::new(ManualClock::new(0));
        let store = LocalStore::new(clock);
        let now = 3_600_000_000_000;
        let minute = Duration::from_secs(60);
        let mut plan = CounterPlan::default();
        plan.push(CounterOp::Count { key: Key::from("c"), window: minute, add: 2 });
        plan.push(CounterOp::Distinct { key: Key::from("d"), window: minute, item: Some(7) });
        plan.push(CounterOp::Ban { key: Key::from("b"), ttl: minute, reason: Key::from("cred.ip_failures") });
        let mut readings = CounterReadings::default();
        store.execute(&plan, now, &mut readings);
        store.execute(&plan, now, &mut readings);
        let mut check = CounterPlan::default();
        check.push(CounterOp::Count { key: Key::from("c"), window: minute, add: 0 });
        check.push(CounterOp::Distinct { key: Key::from("d"), window: minute, item: None });
        check.push(CounterOp::BanCheck { key: Key::from("b") });
        let mut read = CounterReadings::default();
        store.execute(&check, now + 1_000_000_000, &mut read);
        assert_eq!(read.number("c"), 4.0);
        assert_eq!(read.number("d"), 1.0);
        assert_eq!(read.ban("b"), Some(Duration::from_secs(59)));
        let mut later = CounterReadings::default();
        store.execute(&check, now + 61_000_000_000, &mut later);
        assert_eq!(later.ban("b"), None);
        assert_eq!(store.keys(), ["b", "c", "d"]);
        let listed = store.bans(now + 1_000_000_000);
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].key.as_str(), listed[0].reason.as_str()), ("b", "cred.ip_failures"));
        assert_eq!(listed[0].left, Duration::from_secs(59));
        assert_eq!(store.top_counts(":nothing", now, 5), []);
        assert!(store.lift("b", now + 1_000_000_000), "the ban was in force");
        let mut lifted = CounterReadings::default();
        store.execute(&check, now + 2_000_000_000, &mut lifted);
        assert_eq!(lifted.ban("b"), None);
        assert!(store.bans(now).is_empty());
    }
}
