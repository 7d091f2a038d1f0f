//! The in-process counter store: GCRA limits, sliding-window counts,
//! distinct sketches, decayed sums and bans in sharded maps, under one
//! memory budget (`[store] max_memory_mb`).
//!
//! Memory stays bounded however many clients, addresses or usernames an
//! attacker brings:
//! - reads never create keys (a count read with `add: 0` of a key nobody
//!   counted is 0 without storing anything);
//! - entries that can no longer change an answer (their windows passed, a
//!   limit fully replenished, a ban over) are dropped, one shard every few
//!   thousand operations and every shard on a timer ([`LocalStore::maintain`]);
//! - a shard over its share of the budget evicts its least useful entries
//!   at once: bans in force last, then by how often an entry was used
//!   (aged at every eviction, so yesterday's hot scope does not stay
//!   forever) and how recently. A flood of one-off keys (random usernames,
//!   rotating addresses) therefore pushes out other one-off keys, not the
//!   bans and busy scopes that stop it.
//!
//! The budget counts the store's own allocations: keys, sketches and the
//! hash tables as allocated (a table that would have to double past the
//! budget evicts instead). The process's RSS adds the rest of palisade and
//! the allocator's slack.

use std::hash::BuildHasher;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use governor::Quota;

use super::window::{Decayed, OneDistinct, Rhythm, SlidingCount, WindowedDistinct};
use super::{CounterOp, CounterPlan, CounterReadings, GcraReading, Key, Reading};
use crate::clock::{Nanos, SharedClock};
use crate::config::RateLimitConfig;
use crate::metrics::LocalStoreGauges;

/// The counter maps: hashbrown's default hasher (foldhash) is several
/// times cheaper than SipHash on short keys, and keys here are chosen by
/// palisade (hashed identities), not by clients.
type SlotMap = hashbrown::HashMap<Box<str>, Entry>;

const PRUNE_EVERY_OPS: u64 = 4096;
/// The shard hasher's seed (any constant will do; see `LocalStore::hasher`).
const SHARD_SEED: u64 = 0x7061_6c69_7361_6465;
/// Not a power of two on purpose: every shard's table doubles at about
/// the same total key count, and with 24 shards that point (24 × 57,344
/// keys) lies past a million keys rather than just under it (16 × 57,344).
const SHARDS: usize = 24;

/// The default budget, when `[store] max_memory_mb` is not set: about a
/// million keys, and with the rest of palisade well under 256 MB of RSS.
pub const DEFAULT_MAX_MEMORY_MB: u64 = 160;

/// An eviction brings a shard down to this fraction of its budget, so the
/// next one is thousands of inserts away rather than at the next insert.
const EVICT_TO_NUM: usize = 7;
const EVICT_TO_DEN: usize = 8;

#[derive(Debug, Clone)]
enum Slot {
    /// A GCRA limit's theoretical arrival time, as governor keeps it.
    Gcra(Nanos),
    Count(SlidingCount, Duration),
    /// A distinct count of one item, inline: most distinct keys of a flood
    /// never see a second.
    DistinctOne(OneDistinct, Duration),
    /// Boxed: sketches are the largest state, and most keys are counts.
    Distinct(Box<(WindowedDistinct, Duration)>),
    Decay(Decayed, Duration),
    /// Boxed: larger than the other slots, and one per client at most.
    Rhythm(Box<(Rhythm, Duration)>),
    /// Banned until this time, for this reason (a detection id).
    Ban(Nanos, Key),
}

impl Slot {
    fn is_expired(&self, now: Nanos) -> bool {
        match self {
            Slot::Gcra(tat) => *tat <= now,
            Slot::Count(count, window) => count.is_expired(now, *window),
            Slot::DistinctOne(one, window) => one.is_expired(now, *window),
            Slot::Distinct(distinct) => distinct.0.is_expired(now, distinct.1),
            Slot::Decay(decayed, half_life) => decayed.is_expired(now, *half_life),
            Slot::Rhythm(rhythm) => rhythm.0.is_expired(now, rhythm.1),
            Slot::Ban(until, _) => *until <= now,
        }
    }

    /// Bytes this slot holds outside its map bucket.
    fn heap_bytes(&self) -> usize {
        match self {
            Slot::Distinct(distinct) => {
                allocation(std::mem::size_of::<(WindowedDistinct, Duration)>()) + distinct.0.heap_bytes()
            }
            Slot::Rhythm(_) => allocation(std::mem::size_of::<(Rhythm, Duration)>()),
            _ => 0,
        }
    }
}

/// A slot and what eviction weighs it by.
#[derive(Debug, Clone)]
struct Entry {
    slot: Slot,
    /// Uses since it was created, halved at every eviction in its shard.
    hits: u32,
    /// When it was last used, in seconds of the store's clock.
    touched: u32,
}

impl Entry {
    fn new(slot: Slot, now: Nanos) -> Self {
        Entry { slot, hits: 0, touched: seconds(now) }
    }

    fn touch(&mut self, now: Nanos) {
        self.hits = self.hits.saturating_add(1);
        self.touched = seconds(now);
    }

    /// Higher is more worth keeping: a ban in force above everything,
    /// then uses, then recency.
    fn keep_score(&self, now: Nanos) -> u64 {
        match self.slot {
            Slot::Ban(until, _) if until > now => u64::MAX,
            _ => (u64::from(self.hits.min(u32::MAX - 1)) << 32) | u64::from(self.touched),
        }
    }
}

fn seconds(now: Nanos) -> u32 {
    (now / 1_000_000_000) as u32
}

/// Bytes an allocation of `size` takes from the allocator (glibc-like:
/// 8 bytes of header, 16-byte granules, 32 at least).
fn allocation(size: usize) -> usize {
    if size == 0 { 0 } else { (size + 8).next_multiple_of(16).max(32) }
}

/// Bytes one entry costs outside its map's table: its key's text and its
/// slot's heap.
fn entry_bytes(key: &str, entry: &Entry) -> usize {
    allocation(key.len()) + entry.slot.heap_bytes()
}

/// Bytes of one bucket of a shard's table: the key's pointer, the entry
/// and hashbrown's control byte.
const BUCKET_BYTES: usize = std::mem::size_of::<(Box<str>, Entry)>() + 1;

/// The buckets of a table whose [`capacity`](hashbrown::HashMap::capacity)
/// (entries plus room left before it grows) is `capacity`: hashbrown keeps
/// 8 buckets for 7 entries, a power of two. Removed entries can take room
/// until the table is rebuilt, so the capacity seen can be lower than the
/// table's; rounding up to the power of two finds the table all the same.
fn buckets(capacity: usize) -> usize {
    if capacity == 0 { 0 } else { (capacity.saturating_mul(8) / 7).max(capacity + 1).next_power_of_two() }
}

#[derive(Debug, Default)]
struct Shard {
    map: SlotMap,
    /// What [`entry_bytes`] adds up to over the map.
    bytes: usize,
}

impl Shard {
    fn buckets(&self) -> usize {
        buckets(self.map.capacity())
    }

    /// Everything the shard holds: entries and its table as allocated
    /// (a table grows by doubling, so it can be twice what it holds).
    fn size(&self) -> usize {
        self.bytes + self.buckets() * BUCKET_BYTES
    }

    /// What the shard will hold once one more entry of `bytes` is in:
    /// when the table has no room left, hashbrown doubles it.
    fn size_with(&self, bytes: usize) -> usize {
        let buckets = if self.map.len() >= self.map.capacity() { (self.buckets() * 2).max(4) } else { self.buckets() };
        self.bytes + bytes + buckets * BUCKET_BYTES
    }

    /// A fresh table of the same size: removed entries leave markers that
    /// take room until the table is rebuilt, and hashbrown would double a
    /// table full of them rather than reuse it.
    fn rebuild(&mut self) {
        let buckets = self.buckets();
        let capacity = if buckets < 8 { buckets.saturating_sub(1) } else { buckets / 8 * 7 };
        if self.map.capacity() >= capacity {
            return;
        }
        let mut fresh = SlotMap::with_capacity_and_hasher(capacity, self.map.hasher().clone());
        fresh.extend(self.map.drain());
        self.map = fresh;
    }

    /// Drop the entries that no longer change an answer; how many.
    fn prune(&mut self, now: Nanos) -> usize {
        let before = self.map.len();
        let mut freed = 0;
        self.map.retain(|key, entry| {
            let expired = entry.slot.is_expired(now);
            if expired {
                freed += entry_bytes(key, entry);
            }
            !expired
        });
        self.bytes = self.bytes.saturating_sub(freed);
        before - self.map.len()
    }

    /// Make room for one more entry of `bytes` within `budget`: expired
    /// entries first, then the least worth keeping — down to 7/8 of the
    /// budget, and, when the table is full and doubling it would not fit,
    /// by an eighth of the entries, so that the table need not grow. How
    /// many entries went (expired, evicted).
    fn make_room(&mut self, now: Nanos, budget: usize, bytes: usize) -> (usize, usize) {
        let pruned = self.prune(now);
        if self.size_with(bytes) > budget {
            self.rebuild();
        }
        if self.size_with(bytes) <= budget || self.map.is_empty() {
            return (pruned, 0);
        }
        let len = self.map.len();
        let table = self.buckets() * BUCKET_BYTES;
        let target = (budget / EVICT_TO_DEN * EVICT_TO_NUM).saturating_sub(table);
        // Entries are of similar size: drop the share of them that the
        // excess is of their bytes.
        let mut drop = match self.bytes.checked_sub(target) {
            Some(excess) if excess > 0 => excess.saturating_mul(len) / self.bytes.max(1) + 1,
            _ => 0,
        };
        if len >= self.map.capacity() {
            drop = drop.max(len / EVICT_TO_DEN + 1);
        }
        let drop = drop.clamp(1, len);
        let mut scores: Vec<u64> = self.map.values().map(|entry| entry.keep_score(now)).collect();
        let (_, threshold, _) = scores.select_nth_unstable(drop - 1);
        let threshold = *threshold;
        // Entries scored below the threshold all go; of those scored at
        // it, only as many as still needed.
        let below = scores.iter().filter(|score| **score < threshold).count();
        let mut at_threshold = drop - below;
        let mut freed = 0;
        let mut evicted = 0;
        self.map.retain(|key, entry| {
            let score = entry.keep_score(now);
            let evict = score < threshold || (score == threshold && at_threshold > 0);
            if evict {
                if score == threshold {
                    at_threshold -= 1;
                }
                freed += entry_bytes(key, entry);
                evicted += 1;
                return false;
            }
            // Aging: uses long past weigh less than those to come.
            entry.hits /= 2;
            true
        });
        self.bytes = self.bytes.saturating_sub(freed);
        self.rebuild();
        (pruned, evicted)
    }
}

#[derive(Debug)]
pub struct LocalStore {
    clock: SharedClock,
    shards: [Mutex<Shard>; SHARDS],
    /// Picks a key's shard. Seeded the same in every process: which shard
    /// holds a key decides when an expired entry is pruned (one shard every
    /// [`PRUNE_EVERY_OPS`] operations), and a pruned decayed sum reads 0
    /// where the kept one reads its last 1e-8; replaying a capture twice must
    /// give the same readings to the last bit.
    hasher: foldhash::fast::FixedState,
    ops: AtomicU64,
    /// The budget of one shard, in bytes.
    shard_budget: usize,
    /// Keys held, bytes held and evictions, for the metrics.
    gauges: Arc<LocalStoreGauges>,
    /// The next shard [`LocalStore::maintain`] prunes.
    next_maintained: AtomicUsize,
}

impl LocalStore {
    /// A store with the default budget ([`DEFAULT_MAX_MEMORY_MB`]).
    pub fn new(clock: SharedClock) -> Self {
        LocalStore::with_budget(clock, DEFAULT_MAX_MEMORY_MB * 1024 * 1024)
    }

    /// A store that holds about `max_bytes` of counters at most.
    pub fn with_budget(clock: SharedClock, max_bytes: u64) -> Self {
        let max_bytes = usize::try_from(max_bytes).unwrap_or(usize::MAX);
        let gauges = Arc::new(LocalStoreGauges::default());
        gauges.budget_bytes.store(max_bytes as u64, Ordering::Relaxed);
        LocalStore {
            clock,
            shards: Default::default(),
            hasher: foldhash::fast::FixedState::with_seed(SHARD_SEED),
            ops: AtomicU64::new(0),
            shard_budget: (max_bytes / SHARDS).max(4096),
            gauges,
            next_maintained: AtomicUsize::new(0),
        }
    }

    /// The numbers `/metrics` shows for this store.
    pub fn gauges(&self) -> Arc<LocalStoreGauges> {
        self.gauges.clone()
    }

    pub fn execute(&self, plan: &CounterPlan, now: Nanos, readings: &mut CounterReadings) {
        self.run(plan, now, |op, reading| readings.push(op.key().clone(), reading));
    }

    /// Execute `plan` and move its keys into the readings (see
    /// [`CounterReadings::take_keys`]); the plan is left empty.
    pub fn execute_taking(&self, plan: &mut CounterPlan, now: Nanos, readings: &mut CounterReadings) {
        self.run(plan, now, |_, reading| readings.push_value(reading));
        readings.take_keys(plan);
    }

    /// Execute a plan that only writes (after a decision, after an
    /// outcome): nobody reads its readings, so none are kept.
    pub fn apply(&self, plan: &CounterPlan, now: Nanos) {
        self.run(plan, now, |_, _| {});
    }

    fn run(&self, plan: &CounterPlan, now: Nanos, mut read: impl FnMut(&CounterOp, Reading)) {
        // One shared increment per plan, not per operation: the counter is
        // touched by every worker.
        let first = self.ops.fetch_add(plan.ops().len() as u64, Ordering::Relaxed);
        for (op, ops) in plan.ops().iter().zip(first..) {
            if ops % PRUNE_EVERY_OPS == PRUNE_EVERY_OPS - 1 {
                self.prune(now, (ops / PRUNE_EVERY_OPS) as usize % SHARDS);
            }
            read(op, self.update(op, now));
        }
    }

    fn shard_of(&self, key: &str) -> &Mutex<Shard> {
        &self.shards[self.hasher.hash_one(key) as usize % SHARDS]
    }

    fn update(&self, op: &CounterOp, now: Nanos) -> Reading {
        let mut shard = self.shard_of(op.key()).lock().expect("store shard poisoned");
        let shard = &mut *shard;
        match op {
            CounterOp::Gcra { key, limit } => {
                // The clock, not `now`: what governor did, so limits answer
                // as they always have.
                let at = self.clock.now();
                let (interval, tolerance) = gcra_params(limit);
                let tat = match shard.map.get(&**key) {
                    Some(Entry { slot: Slot::Gcra(tat), .. }) => *tat,
                    _ => at,
                };
                let earliest = tat.saturating_sub(tolerance);
                if at < earliest {
                    if let Some(entry) = shard.map.get_mut(&**key) {
                        entry.touch(now);
                    }
                    let wait = Duration::from_nanos(earliest - at);
                    return Reading::Gcra(GcraReading::Limited { retry_after: wait.max(Duration::from_millis(1)) });
                }
                let next = tat.max(at) + interval;
                self.upsert(shard, key, now, || (Slot::Gcra(next), ()), |slot| *slot = Slot::Gcra(next));
                Reading::Gcra(GcraReading::Allowed)
            }
            CounterOp::Count { key, window, add } => {
                if *add == 0 {
                    return match shard.map.get_mut(&**key) {
                        Some(entry) => {
                            entry.touch(now);
                            match &entry.slot {
                                Slot::Count(count, _) => Reading::Number(count.estimate(now, *window)),
                                _ => Reading::Number(0.0),
                            }
                        }
                        None => Reading::Number(0.0),
                    };
                }
                let fresh = || {
                    let mut count = SlidingCount::default();
                    count.add(now, *window, *add);
                    let reading = count.estimate(now, *window);
                    (Slot::Count(count, *window), reading)
                };
                Reading::Number(self.upsert(shard, key, now, fresh, |slot| match slot {
                    Slot::Count(count, _) => {
                        count.add(now, *window, *add);
                        count.estimate(now, *window)
                    }
                    _ => 0.0,
                }))
            }
            CounterOp::Distinct { key, window, item } => self.distinct(shard, key, *window, *item, true, now),
            CounterOp::DistinctIfHeld { key, window, item } => {
                self.distinct(shard, key, *window, Some(*item), false, now)
            }
            CounterOp::Decay { key, half_life, add } => {
                if *add == 0.0 {
                    return match shard.map.get_mut(&**key) {
                        Some(entry) => {
                            entry.touch(now);
                            match &entry.slot {
                                Slot::Decay(decayed, _) => Reading::Number(decayed.read(now, *half_life)),
                                _ => Reading::Number(0.0),
                            }
                        }
                        None => Reading::Number(0.0),
                    };
                }
                let fresh = || {
                    let mut fresh_value = Decayed::default();
                    let reading = fresh_value.add(now, *half_life, *add);
                    (Slot::Decay(fresh_value, *half_life), reading)
                };
                Reading::Number(self.upsert(shard, key, now, fresh, |slot| match slot {
                    Slot::Decay(decayed, _) => decayed.add(now, *half_life, *add),
                    _ => 0.0,
                }))
            }
            CounterOp::Rhythm { key, window } => {
                let fresh = || {
                    let mut rhythm = Rhythm::default();
                    rhythm.arrive(now, *window);
                    let reading = rhythm.read();
                    (Slot::Rhythm(Box::new((rhythm, *window))), reading)
                };
                Reading::Number(self.upsert(shard, key, now, fresh, |slot| match slot {
                    Slot::Rhythm(rhythm) => {
                        rhythm.0.arrive(now, *window);
                        rhythm.0.read()
                    }
                    _ => f64::NAN,
                }))
            }
            CounterOp::BanCheck { key } => match shard.map.get_mut(&**key) {
                Some(entry) => match entry.slot {
                    Slot::Ban(until, _) if until > now => {
                        entry.touch(now);
                        Reading::Ban(Some(Duration::from_nanos(until - now)))
                    }
                    _ => Reading::Ban(None),
                },
                None => Reading::Ban(None),
            },
            CounterOp::Ban { key, ttl, reason } => {
                let until = now + ttl.as_nanos() as u64;
                let extend = |slot: &mut Slot| match slot {
                    Slot::Ban(current, _) if *current >= until => {}
                    other => *other = Slot::Ban(until, reason.clone()),
                };
                self.upsert(shard, key, now, || (Slot::Ban(until, reason.clone()), ()), extend);
                Reading::Done
            }
        }
    }

    /// Add `item` (if any) to the sketch under `key` and read its count.
    /// With `create` false a missing key is not created: the reading is
    /// what it would be (the item alone), and the item is counted only
    /// once a later write adds it for real.
    fn distinct(
        &self,
        shard: &mut Shard,
        key: &Key,
        window: Duration,
        item: Option<u64>,
        create: bool,
        now: Nanos,
    ) -> Reading {
        if let Some(entry) = shard.map.get_mut(&**key) {
            entry.touch(now);
            if let Slot::DistinctOne(one, _) = &mut entry.slot {
                let full = match item {
                    Some(item) => one.add(now, window, item),
                    None => None,
                };
                let Some(mut full) = full else { return Reading::Number(one.count(now, window) as f64) };
                let count = full.count(now, window);
                entry.slot = Slot::Distinct(Box::new((full, window)));
                shard.bytes += entry.slot.heap_bytes();
                return Reading::Number(count as f64);
            }
            let Slot::Distinct(distinct) = &mut entry.slot else { return Reading::Number(0.0) };
            let before = distinct.0.heap_bytes();
            if let Some(item) = item {
                distinct.0.add(now, window, item);
            }
            let count = distinct.0.count(now, window);
            let after = distinct.0.heap_bytes();
            shard.bytes = (shard.bytes + after).saturating_sub(before);
            return Reading::Number(count as f64);
        }
        let Some(item) = item else { return Reading::Number(0.0) };
        if !create {
            return Reading::Number(1.0);
        }
        let one = OneDistinct::new(now, window, item);
        self.insert(shard, key, Entry::new(Slot::DistinctOne(one, window), now), now);
        Reading::Number(one.count(now, window) as f64)
    }

    /// Change the slot under `key` with `change`, or create it with
    /// `fresh`; what `change` or `fresh` read. One lookup when the key is
    /// held (every operation of a request pays for its lookups).
    fn upsert<R>(
        &self,
        shard: &mut Shard,
        key: &Key,
        now: Nanos,
        fresh: impl FnOnce() -> (Slot, R),
        change: impl FnOnce(&mut Slot) -> R,
    ) -> R {
        if let Some(entry) = shard.map.get_mut(&**key) {
            entry.touch(now);
            return change(&mut entry.slot);
        }
        let (slot, reading) = fresh();
        self.insert(shard, key, Entry::new(slot, now), now);
        reading
    }

    /// A new entry, making room first when the shard is over budget.
    fn insert(&self, shard: &mut Shard, key: &str, entry: Entry, now: Nanos) {
        let bytes = entry_bytes(key, &entry);
        if shard.size_with(bytes) > self.shard_budget {
            let before = shard.map.len();
            let (_, evicted) = shard.make_room(now, self.shard_budget, bytes);
            self.gauges.evicted.fetch_add(evicted as u64, Ordering::Relaxed);
            self.gauges.keys.fetch_sub((before - shard.map.len()) as u64, Ordering::Relaxed);
        }
        shard.bytes += bytes;
        shard.map.insert(Box::from(key), entry);
        self.gauges.keys.fetch_add(1, Ordering::Relaxed);
    }

    fn prune(&self, now: Nanos, shard: usize) {
        let mut map = self.shards[shard].lock().expect("store shard poisoned");
        let pruned = map.prune(now);
        // A flood that has passed leaves a large, empty table behind.
        if map.map.capacity() > 64 && map.map.len() < map.map.capacity() / 4 {
            map.map.shrink_to_fit();
        }
        drop(map);
        self.gauges.keys.fetch_sub(pruned as u64, Ordering::Relaxed);
    }

    /// Drop what has expired in every shard, one shard locked at a time,
    /// and refresh the gauges: run on a timer, so that keys of clients who
    /// went quiet do not wait for other traffic to be pruned.
    pub fn maintain(&self, now: Nanos) {
        for _ in 0..SHARDS {
            let shard = self.next_maintained.fetch_add(1, Ordering::Relaxed) % SHARDS;
            self.prune(now, shard);
        }
        let (mut keys, mut bytes) = (0, 0);
        for shard in &self.shards {
            if let Ok(shard) = shard.lock() {
                keys += shard.map.len();
                bytes += shard.size();
            }
        }
        self.gauges.keys.store(keys as u64, Ordering::Relaxed);
        self.gauges.bytes.store(bytes as u64, Ordering::Relaxed);
    }

    /// Every ban in force at `now`: its key, time left and reason.
    pub fn bans(&self, now: Nanos) -> Vec<super::BanEntry> {
        let mut bans = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock().expect("store shard poisoned");
            for (key, entry) in shard.map.iter() {
                if let Slot::Ban(until, reason) = &entry.slot
                    && *until > now
                {
                    bans.push(super::BanEntry {
                        key: key.to_string(),
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
            let shard = self.shard_of(key).lock().expect("store shard poisoned");
            matches!(shard.map.get(key), Some(Entry { slot: Slot::Ban(until, _), .. }) if *until > now)
        };
        let scope = match key.rsplit_once(':') {
            Some((group, _)) if !group.is_empty() => format!("{group}:"),
            _ => key.to_string(),
        };
        let mut removed = 0;
        for shard in &self.shards {
            let mut shard = shard.lock().expect("store shard poisoned");
            let mut freed = 0;
            shard.map.retain(|held, entry| {
                // Rate limits are not counters of the scope.
                let keep = matches!(entry.slot, Slot::Gcra(_)) || (&**held != key && !held.starts_with(&scope));
                if !keep {
                    freed += entry_bytes(held, entry);
                    removed += 1;
                }
                keep
            });
            shard.bytes = shard.bytes.saturating_sub(freed);
        }
        self.gauges.keys.fetch_sub(removed, Ordering::Relaxed);
        in_force
    }

    /// The `limit` largest sliding-window counts at `now` among keys that
    /// end with `suffix` (e.g. `:f`, failures): what the dashboard shows
    /// as under attack. Reads the maps; no request pays for it.
    pub fn top_counts(&self, suffix: &str, now: Nanos, limit: usize) -> Vec<(String, f64)> {
        let mut top: Vec<(String, f64)> = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock().expect("store shard poisoned");
            for (key, entry) in shard.map.iter() {
                if let Slot::Count(count, window) = &entry.slot
                    && key.ends_with(suffix)
                {
                    let value = count.estimate(now, *window);
                    if value > 0.0 {
                        top.push((key.to_string(), value));
                    }
                }
            }
        }
        top.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top.truncate(limit);
        top
    }

    /// Every counter key held (rate-limit state is not listed).
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock().expect("store shard poisoned");
            keys.extend(
                shard.map.iter().filter(|(_, e)| !matches!(e.slot, Slot::Gcra(_))).map(|(key, _)| key.to_string()),
            );
        }
        keys.sort();
        keys
    }

    /// How many entries the store holds, rate-limit state included.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map(|s| s.map.len()).unwrap_or(0)).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A GCRA limit as governor runs it: the emission interval and the burst
/// tolerance, in nanoseconds.
fn gcra_params(limit: &RateLimitConfig) -> (u64, u64) {
    let requests = u128::from(limit.requests.max(1));
    let interval = (Duration::from_secs(limit.period_secs.max(1)).as_nanos() / requests).max(1) as u64;
    let burst = u64::from(limit.burst.unwrap_or(limit.requests).max(1));
    (interval, interval.saturating_mul(burst - 1))
}

/// `requests` per `period_secs`, bursting to `burst` (default `requests`).
pub fn quota(limit: &RateLimitConfig) -> Quota {
    let (interval, _) = gcra_params(limit);
    let burst = NonZeroU32::new(limit.burst.unwrap_or(limit.requests).max(1)).expect("burst is at least 1");
    Quota::with_period(Duration::from_nanos(interval)).expect("period is non-zero").allow_burst(burst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    /// Stores fed the same operations read the same numbers to the last
    /// bit, pruning included: which shard holds a key (and so whether an
    /// expired decayed sum is dropped before it is added to again) must not
    /// depend on a per-store random seed.
    #[test]
    fn stores_fed_the_same_operations_read_the_same_to_the_last_bit() {
        let half_life = Duration::from_secs(1);
        let keys: Vec<Key> = (0..4 * SHARDS).map(|i| Key::from(format!("decayed:{i}"))).collect();
        let mut adds = CounterPlan::default();
        for key in &keys {
            adds.push(CounterOp::Decay { key: key.clone(), half_life, add: 1.0 });
        }
        // Reads that create nothing, up to the operation before which the
        // first shard is pruned.
        let mut filler = CounterPlan::default();
        for _ in 0..PRUNE_EVERY_OPS as usize - 1 - keys.len() {
            filler.push(CounterOp::Count { key: Key::from("nobody"), window: half_life, add: 0 });
        }
        let start = 1_000_000_000_000;
        // Twenty half-lives later every sum is below the pruning line, but
        // not zero.
        let later = start + 20 * 1_000_000_000;
        let run = || {
            let store = LocalStore::new(Arc::new(ManualClock::new(start)));
            store.execute(&adds, start, &mut CounterReadings::default());
            store.execute(&filler, later, &mut CounterReadings::default());
            let mut readings = CounterReadings::default();
            store.execute(&adds, later, &mut readings);
            keys.iter().map(|key| readings.number(key).to_bits()).collect::<Vec<_>>()
        };
        let first = run();
        assert!(first.iter().any(|&bits| f64::from_bits(bits) == 1.0), "some sum was pruned: {first:?}");
        assert!(first.iter().any(|&bits| f64::from_bits(bits) > 1.0), "some sum was kept: {first:?}");
        for _ in 0..16 {
            assert_eq!(run(), first);
        }
    }

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
    fn gcra_answers_as_governor_does() {
        use crate::clock::Clock as _;
        use governor::{RateLimiter, clock::Clock as _};
        let clock = Arc::new(ManualClock::new(5_000_000_000_000));
        let governor_clock = crate::clock::GovernorClock(clock.clone());
        let limit = RateLimitConfig { requests: 3, period_secs: 7, burst: Some(2) };
        let governed = RateLimiter::direct_with_clock(quota(&limit), governor_clock.clone());
        let store = LocalStore::new(clock.clone());
        let mut plan = CounterPlan::default();
        plan.gcra(Key::from("k"), limit);
        for step in 0..200u64 {
            clock.advance(Duration::from_millis(137 * (step % 7) + 11));
            let expected = match governed.check() {
                Ok(()) => GcraReading::Allowed,
                Err(not_until) => GcraReading::Limited {
                    retry_after: not_until.wait_time_from(governor_clock.now()).max(Duration::from_millis(1)),
                },
            };
            let mut readings = CounterReadings::default();
            store.execute(&plan, clock.now(), &mut readings);
            assert_eq!(readings.gcra("k"), Some(expected), "step {step}");
        }
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

    #[test]
    fn reads_create_nothing() {
        let store = LocalStore::new(Arc::new(ManualClock::new(0)));
        let minute = Duration::from_secs(60);
        let mut plan = CounterPlan::default();
        plan.push(CounterOp::Count { key: Key::from("c"), window: minute, add: 0 });
        plan.push(CounterOp::Distinct { key: Key::from("d"), window: minute, item: None });
        plan.push(CounterOp::DistinctIfHeld { key: Key::from("h"), window: minute, item: 9 });
        plan.push(CounterOp::Decay { key: Key::from("y"), half_life: minute, add: 0.0 });
        plan.push(CounterOp::BanCheck { key: Key::from("b") });
        let mut readings = CounterReadings::default();
        store.execute(&plan, 1_000_000_000_000, &mut readings);
        assert_eq!(readings.number("h"), 1.0, "the item itself, as if it had been added");
        assert!(store.is_empty(), "{:?}", store.keys());
        assert_eq!(store.gauges().keys.load(Ordering::Relaxed), 0);
        // Once held, the same operation adds to it.
        let mut create = CounterPlan::default();
        create.push(CounterOp::Distinct { key: Key::from("h"), window: minute, item: Some(1) });
        store.execute(&create, 1_000_000_000_000, &mut CounterReadings::default());
        let mut again = CounterReadings::default();
        store.execute(&plan, 1_000_000_000_000, &mut again);
        assert_eq!(again.number("h"), 2.0);
        assert_eq!(store.keys(), ["h"]);
    }

    #[test]
    fn a_flood_of_new_keys_stays_in_budget_and_keeps_bans_and_busy_keys() {
        let clock = Arc::new(ManualClock::new(0));
        let budget = 2 * 1024 * 1024;
        let store = LocalStore::with_budget(clock, budget);
        let minute = Duration::from_secs(60);
        let mut now = 1_000_000_000_000;
        let mut keep = CounterPlan::default();
        keep.push(CounterOp::Ban {
            key: Key::from("ban:flooder"),
            ttl: Duration::from_secs(3600),
            reason: Key::from("t"),
        });
        store.execute(&keep, now, &mut CounterReadings::default());
        let mut busy = CounterPlan::default();
        busy.push(CounterOp::Count { key: Key::from("scope:busy:f"), window: Duration::from_secs(600), add: 1 });
        for round in 0..200_000u64 {
            now += 100_000;
            let mut plan = CounterPlan::default();
            plan.push(CounterOp::Count { key: Key::from(format!("user:{round:x}:f")), window: minute, add: 1 });
            plan.push(CounterOp::Distinct {
                key: Key::from(format!("user:{round:x}:addrs")),
                window: minute,
                item: Some(round),
            });
            store.execute(&plan, now, &mut CounterReadings::default());
            if round % 50 == 0 {
                store.execute(&busy, now, &mut CounterReadings::default());
            }
        }
        let accounted: usize = store.shards.iter().map(|s| s.lock().unwrap().size()).sum();
        assert!(accounted as u64 <= budget, "{accounted} bytes held over a budget of {budget}");
        let gauges = store.gauges();
        assert!(gauges.evicted.load(Ordering::Relaxed) > 100_000, "{gauges:?}");
        assert_eq!(gauges.keys.load(Ordering::Relaxed), store.len() as u64);
        let mut check = CounterPlan::default();
        check.push(CounterOp::BanCheck { key: Key::from("ban:flooder") });
        check.push(CounterOp::Count { key: Key::from("scope:busy:f"), window: Duration::from_secs(600), add: 0 });
        let mut readings = CounterReadings::default();
        store.execute(&check, now, &mut readings);
        assert!(readings.ban("ban:flooder").is_some(), "the ban was evicted");
        assert!(readings.number("scope:busy:f") > 3000.0, "the busy scope was evicted");
    }

    #[test]
    fn the_timer_prunes_without_traffic() {
        let clock = Arc::new(ManualClock::new(0));
        let store = LocalStore::new(clock);
        let now = 1_000_000_000_000;
        for i in 0..100 {
            let mut plan = CounterPlan::default();
            plan.push(CounterOp::Count { key: Key::from(format!("k{i}")), window: Duration::from_secs(10), add: 1 });
            store.execute(&plan, now, &mut CounterReadings::default());
        }
        assert_eq!(store.gauges().keys.load(Ordering::Relaxed), 100);
        store.maintain(now + 30_000_000_000);
        assert!(store.is_empty());
        assert_eq!(store.gauges().keys.load(Ordering::Relaxed), 0);
    }
}
