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
//! nothing else running; the Redis backend ([`RedisStore`]) shares the
//! counters between replicas.

mod local;
pub mod redis;
pub mod sketch;
pub mod window;

use std::time::Duration;

pub use local::{DEFAULT_MAX_MEMORY_MB, LocalStore, quota};
pub use redis::{RedisSettings, RedisStore, RedisTarget, TimeSource};

use crate::clock::{Nanos, SharedClock};
use crate::config::{Config, Invalid, RateLimitConfig};
use crate::metrics::LocalStoreGauges;

/// The largest `[store] max_memory_mb` accepted (1 TiB): a larger one is
/// a typo, and its bytes would not fit the accounting.
const MAX_MEMORY_MB_LIMIT: u64 = 1 << 20;

/// The in-process store's budget in bytes, from `[store] max_memory_mb`.
pub fn local_budget(config: &Config) -> Result<u64, Invalid> {
    let mb = config.store.max_memory_mb;
    if mb == 0 || mb > MAX_MEMORY_MB_LIMIT {
        return Err(Invalid::new(
            0..0,
            "store.max_memory_mb",
            format!("must be between 1 and {MAX_MEMORY_MB_LIMIT} (MiB); the default is {DEFAULT_MAX_MEMORY_MB}"),
        ));
    }
    Ok(mb * 1024 * 1024)
}

/// The in-process store `config` asks for.
pub fn local_store(config: &Config, clock: SharedClock) -> LocalStore {
    let budget = local_budget(config).unwrap_or(DEFAULT_MAX_MEMORY_MB * 1024 * 1024);
    LocalStore::with_budget(clock, budget)
}

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
    /// The same with an item, but only for a key already held: a key not
    /// held reads 1 (the item alone, as if it had been added) and is not
    /// created. For per-account state at request time, which a refused
    /// attempt must not create; the attempt adds it with a `Distinct`
    /// once it is let through.
    DistinctIfHeld { key: Key, window: Duration, item: u64 },
    /// Add `add` to an exponentially decayed sum and read it.
    Decay { key: Key, half_life: Duration, add: f64 },
    /// Note an arrival under `key` and read the regularity of the gaps
    /// between arrivals: their coefficient of variation (standard
    /// deviation over mean) over about the last [`window::RHYTHM_SPAN`]
    /// gaps; NaN until three gaps are known. A gap longer than `window`
    /// starts the rhythm afresh.
    Rhythm { key: Key, window: Duration },
    /// Is a ban in force under `key`? Reads the time left.
    BanCheck { key: Key },
    /// Ban `key` for `ttl` (extending, never shortening, a ban in force);
    /// `reason` is the detection id (or `admin`) that asked for it, kept
    /// with the ban so that it can be listed.
    Ban { key: Key, ttl: Duration, reason: Key },
}

impl CounterOp {
    pub fn key(&self) -> &Key {
        match self {
            CounterOp::Gcra { key, .. }
            | CounterOp::Count { key, .. }
            | CounterOp::Distinct { key, .. }
            | CounterOp::DistinctIfHeld { key, .. }
            | CounterOp::Decay { key, .. }
            | CounterOp::Rhythm { key, .. }
            | CounterOp::BanCheck { key }
            | CounterOp::Ban { key, .. } => key,
        }
    }

    /// The operation's key, moved out (no reference count touched).
    fn into_key(self) -> Key {
        match self {
            CounterOp::Gcra { key, .. }
            | CounterOp::Count { key, .. }
            | CounterOp::Distinct { key, .. }
            | CounterOp::DistinctIfHeld { key, .. }
            | CounterOp::Decay { key, .. }
            | CounterOp::Rhythm { key, .. }
            | CounterOp::BanCheck { key }
            | CounterOp::Ban { key, .. } => key,
        }
    }
}

/// The operations one request needs, executed together.
///
/// A plan's operation buffer comes from, and goes back to, a small
/// per-thread stock ([`spare_ops`]): a login plans about fifty operations,
/// and growing a fresh vector to that size on every request cost five
/// reallocations.
#[derive(Debug, Default)]
pub struct CounterPlan {
    /// What the plan's keys belong to (a route, a partner): a shared store
    /// keeps all of them in one place (one Redis Cluster hash tag) so that
    /// one call can run the whole plan.
    shard: Key,
    ops: Vec<CounterOp>,
}

/// Buffers kept per thread for plans to come: a request holds a few plans
/// at once (its own, its stages' own shards, its writes).
const SPARE_OPS: usize = 8;
/// A buffer larger than this (a merged write batch) is not kept.
const SPARE_OPS_CAPACITY: usize = 256;

thread_local! {
    static SPARE: std::cell::RefCell<Vec<Vec<CounterOp>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An empty operation buffer: a spare one from this thread when there is one.
fn spare_ops() -> Vec<CounterOp> {
    SPARE.try_with(|spare| spare.borrow_mut().pop()).ok().flatten().unwrap_or_default()
}

impl Drop for CounterPlan {
    fn drop(&mut self) {
        let mut ops = std::mem::take(&mut self.ops);
        if ops.capacity() == 0 || ops.capacity() > SPARE_OPS_CAPACITY {
            return;
        }
        ops.clear();
        // During thread teardown the stock may be gone: the buffer is freed.
        let _ = SPARE.try_with(|spare| {
            if let Ok(mut spare) = spare.try_borrow_mut()
                && spare.len() < SPARE_OPS
            {
                spare.push(ops);
            }
        });
    }
}

impl CounterPlan {
    pub fn new(shard: Key) -> Self {
        CounterPlan { shard, ops: spare_ops() }
    }

    pub fn shard(&self) -> &str {
        if self.shard.is_empty() { "_" } else { &self.shard }
    }

    pub fn shard_key(&self) -> &Key {
        &self.shard
    }

    /// Add another plan's operations (for merging writes of one shard).
    pub fn extend(&mut self, mut other: CounterPlan) {
        self.ops.append(&mut other.ops);
    }

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

    /// The items of the plan's distinct-count adds, in order (for tests
    /// that check what a stage counts).
    #[cfg(test)]
    pub fn distinct_items(&self) -> Vec<Option<u64>> {
        self.ops()
            .iter()
            .filter_map(|op| match op {
                CounterOp::Distinct { item, .. } => Some(*item),
                _ => None,
            })
            .collect()
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
///
/// Stages find their readings by the very key they planned, so readings
/// are indexed by the key's address as they arrive: a login reads some
/// fifty of them, and finding each by scanning the list was a tenth of
/// its decision. A key that is not the planned one (equal text, another
/// allocation) is still found, by comparing text.
#[derive(Debug, Default)]
pub struct CounterReadings {
    /// The planned keys, in plan order: cloned from the plan, or moved out
    /// of it when the plan is not needed afterwards ([`CounterStore::execute_taking`]).
    keys: Vec<Key>,
    /// `keys`' readings, position for position.
    values: Vec<Reading>,
    /// `keys` positions + 1 (0: free), open addressing by key address,
    /// for the first [`INDEXED`] keys.
    index: AddressIndex,
    degraded: bool,
}

/// Slots of the address index (a power of two).
const INDEX_SLOTS: usize = 128;
/// Entries indexed at most: the index stays at most three-quarters full.
const INDEXED: usize = INDEX_SLOTS * 3 / 4;

#[derive(Debug)]
struct AddressIndex([u8; INDEX_SLOTS]);

impl Default for AddressIndex {
    fn default() -> Self {
        AddressIndex([0; INDEX_SLOTS])
    }
}

impl AddressIndex {
    fn start(key: &str) -> usize {
        // Fibonacci hashing of the address: allocations are 16-byte
        // aligned, so the low bits alone would crowd a few slots.
        ((key.as_ptr() as usize as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 57) as usize
    }

    fn same(entry: &str, key: &str) -> bool {
        std::ptr::eq(entry.as_ptr(), key.as_ptr()) && entry.len() == key.len()
    }

    /// Index `entries[position]`, unless an earlier entry has the same key
    /// (the first one answers, as a scan would find it).
    fn insert(&mut self, keys: &[Key], position: usize) {
        let key = &keys[position];
        let mut slot = Self::start(key);
        loop {
            match self.0[slot] {
                0 => {
                    self.0[slot] = (position + 1) as u8;
                    return;
                }
                held if Self::same(&keys[usize::from(held) - 1], key) => return,
                _ => slot = (slot + 1) % INDEX_SLOTS,
            }
        }
    }

    fn find(&self, keys: &[Key], key: &str) -> Option<usize> {
        let mut slot = Self::start(key);
        loop {
            match self.0[slot] {
                0 => return None,
                held if Self::same(&keys[usize::from(held) - 1], key) => return Some(usize::from(held) - 1),
                _ => slot = (slot + 1) % INDEX_SLOTS,
            }
        }
    }
}

impl CounterReadings {
    /// Room for `ops` readings: a plan's readings are known in number.
    pub fn with_capacity(ops: usize) -> Self {
        CounterReadings {
            keys: Vec::with_capacity(ops),
            values: Vec::with_capacity(ops),
            index: AddressIndex::default(),
            degraded: false,
        }
    }

    pub fn clear(&mut self) {
        self.keys.clear();
        self.values.clear();
        self.index = AddressIndex::default();
        self.degraded = false;
    }

    pub fn push(&mut self, key: Key, reading: Reading) {
        self.keys.push(key);
        self.values.push(reading);
        self.index_last();
    }

    /// Index the last key pushed.
    fn index_last(&mut self) {
        let position = self.keys.len() - 1;
        if position < INDEXED {
            self.index.insert(&self.keys, position);
        }
    }

    /// Take the keys of `plan`'s operations, whose readings were pushed
    /// with [`CounterReadings::push_value`]: moved, not cloned (a login
    /// reads some fifty keys, and each clone and drop of a shared key is
    /// an atomic operation). The plan is left empty.
    fn take_keys(&mut self, plan: &mut CounterPlan) {
        for op in plan.ops.drain(..) {
            self.keys.push(op.into_key());
            self.index_last();
        }
        debug_assert_eq!(self.keys.len(), self.values.len());
    }

    /// A reading whose key [`CounterReadings::take_keys`] brings after.
    fn push_value(&mut self, reading: Reading) {
        self.values.push(reading);
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The planned keys, in plan order.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// The readings, in plan order.
    pub fn values(&self) -> &[Reading] {
        &self.values
    }

    fn replace(&mut self, index: usize, reading: Reading) {
        if let Some(value) = self.values.get_mut(index) {
            *value = reading;
        }
    }

    /// Whether the shared store was unavailable and these readings come
    /// from this replica's own counters.
    pub fn degraded(&self) -> bool {
        self.degraded
    }

    fn set_degraded(&mut self, degraded: bool) {
        self.degraded = degraded;
    }

    #[inline]
    fn get(&self, key: &str) -> Option<Reading> {
        // Planned keys are usually the very `Arc` looked up again: its
        // address finds them without comparing text. The rest is kept out
        // of line, so that this part stays small enough to inline into
        // the detectors (a login looks up some forty readings).
        let indexed = if self.keys.len() <= INDEXED { self.index.find(&self.keys, key) } else { None };
        let position = match indexed {
            Some(position) => position,
            None => self.position_unindexed(key)?,
        };
        self.values.get(position).copied()
    }

    /// Where `key` is when the address index does not say: past the
    /// indexed entries by address, else by text (equal text, another
    /// allocation; the first such key answers).
    #[cold]
    #[inline(never)]
    fn position_unindexed(&self, key: &str) -> Option<usize> {
        let by_address =
            if self.keys.len() <= INDEXED { None } else { self.keys.iter().position(|k| AddressIndex::same(k, key)) };
        by_address.or_else(|| self.keys.iter().position(|k| &**k == key))
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

/// A ban in force, as the admin API lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct BanEntry {
    /// The ban's counter key (`login:{route}:{scope}:{hashed id}:ban`).
    pub key: String,
    pub left: Duration,
    /// The detection id (or `admin`) that set it.
    pub reason: String,
}

/// The counter store backends.
// Built once per process and shared behind an `Arc`: the variants' sizes
// never matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum CounterStore {
    Local(LocalStore),
    Redis(RedisStore),
}

impl CounterStore {
    /// Execute every operation of `plan` at time `now`, without waiting:
    /// the in-process store, or a Redis store's in-process counters (for
    /// replay, explain and benches, which never touch the network).
    pub fn execute(&self, plan: &CounterPlan, now: Nanos, readings: &mut CounterReadings) {
        match self {
            CounterStore::Local(local) => local.execute(plan, now, readings),
            CounterStore::Redis(redis) => redis.local().execute(plan, now, readings),
        }
    }

    /// [`CounterStore::execute`], for a plan not needed afterwards: its
    /// keys move into the readings (see [`CounterReadings::take_keys`]).
    pub fn execute_taking(&self, plan: &mut CounterPlan, now: Nanos, readings: &mut CounterReadings) {
        let local = match self {
            CounterStore::Local(local) => local,
            CounterStore::Redis(redis) => redis.local(),
        };
        local.execute_taking(plan, now, readings);
    }

    /// [`CounterStore::execute_shared`], for a plan not needed afterwards.
    pub async fn execute_shared_taking(&self, plan: &mut CounterPlan, now: Nanos, readings: &mut CounterReadings) {
        match self {
            CounterStore::Local(local) => local.execute_taking(plan, now, readings),
            CounterStore::Redis(redis) => redis.execute(plan, now, readings).await,
        }
    }

    /// Execute `plan` where the counters are shared: one Redis round trip
    /// (or the local fallback), at once for the in-process store.
    pub async fn execute_shared(&self, plan: &CounterPlan, now: Nanos, readings: &mut CounterReadings) {
        match self {
            CounterStore::Local(local) => local.execute(plan, now, readings),
            CounterStore::Redis(redis) => redis.execute(plan, now, readings).await,
        }
    }

    /// Apply a plan that only writes; a shared store sends it in the
    /// background, so no request waits for it.
    pub fn write(&self, plan: CounterPlan, now: Nanos) {
        match self {
            CounterStore::Local(local) => local.apply(&plan, now),
            CounterStore::Redis(redis) => redis.write(plan, now),
        }
    }

    /// Wait for background writes to reach the shared store.
    pub async fn flush(&self) {
        if let CounterStore::Redis(redis) = self {
            redis.flush().await;
        }
    }

    /// Every ban in force under the given shards (the login routes'
    /// names): from Redis when it is up, else this replica's own.
    pub async fn bans(&self, shards: &[Key], now: Nanos) -> Vec<BanEntry> {
        match self {
            CounterStore::Local(local) => local.bans(now),
            CounterStore::Redis(redis) => redis.bans(shards, now).await,
        }
    }

    /// Lift the ban under `key` (in `shard`) everywhere: in this process
    /// and, with Redis, in Redis and (within a second) on every replica.
    /// Whether a ban was in force.
    pub async fn lift_ban(&self, shard: &Key, key: &str, now: Nanos) -> Result<bool, crate::error::Error> {
        match self {
            CounterStore::Local(local) => Ok(local.lift(key, now)),
            CounterStore::Redis(redis) => redis.lift(shard, key, now).await,
        }
    }

    /// Ban `key` (in `shard`) for `ttl`, and wait until a shared store has it.
    pub async fn add_ban(&self, shard: &Key, key: &str, ttl: Duration, reason: &str, now: Nanos) {
        let mut plan = CounterPlan::new(shard.clone());
        plan.push(CounterOp::Ban { key: Key::from(key), ttl, reason: Key::from(reason) });
        self.write(plan, now);
        self.flush().await;
    }

    /// The `limit` largest failure counts this process holds (see
    /// [`LocalStore::top_counts`]); with Redis, this replica's own view.
    pub fn top_counts(&self, suffix: &str, now: Nanos, limit: usize) -> Vec<(String, f64)> {
        match self {
            CounterStore::Local(local) => local.top_counts(suffix, now, limit),
            CounterStore::Redis(redis) => redis.local().top_counts(suffix, now, limit),
        }
    }

    /// Prune what has expired (run on a timer while serving).
    pub fn maintain(&self, now: Nanos) {
        match self {
            CounterStore::Local(local) => local.maintain(now),
            CounterStore::Redis(redis) => redis.local().maintain(now),
        }
    }

    /// The in-process counters' size, for the metrics.
    pub fn local_gauges(&self) -> std::sync::Arc<LocalStoreGauges> {
        match self {
            CounterStore::Local(local) => local.gauges(),
            CounterStore::Redis(redis) => redis.local().gauges(),
        }
    }

    /// Every key the store holds in process, for audits and tests (no values).
    pub fn keys(&self) -> Vec<String> {
        match self {
            CounterStore::Local(local) => local.keys(),
            CounterStore::Redis(redis) => redis.local().keys(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> Key {
        Key::from(text)
    }

    #[test]
    fn readings_are_found_by_the_planned_key_and_by_equal_text() {
        let mut readings = CounterReadings::default();
        let keys: Vec<Key> = (0..200).map(|i| key(&format!("k:{i}"))).collect();
        for (i, k) in keys.iter().enumerate() {
            readings.push(k.clone(), Reading::Number(i as f64));
        }
        // Indexed, beyond the index, and looked up with another allocation.
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(readings.number(k), i as f64, "planned key {k}");
            assert_eq!(readings.number(&format!("k:{i}")), i as f64, "equal text {k}");
        }
        assert_eq!(readings.number("k:missing"), 0.0);
    }

    #[test]
    fn a_key_read_twice_answers_with_its_first_reading() {
        let shared = key("dup");
        let mut readings = CounterReadings::default();
        readings.push(key("other"), Reading::Number(9.0));
        readings.push(shared.clone(), Reading::Number(1.0));
        readings.push(shared.clone(), Reading::Number(2.0));
        assert_eq!(readings.number(&shared), 1.0);
        // A different allocation with the same text: the first equal text,
        // as a scan finds it.
        let earlier = key("same");
        let later = key("same");
        readings.push(earlier.clone(), Reading::Number(3.0));
        readings.push(later.clone(), Reading::Number(4.0));
        assert_eq!(readings.number(&later), 4.0);
        assert_eq!(readings.number("same"), 3.0);
    }

    #[test]
    fn plans_reuse_their_buffers_and_start_empty() {
        let mut plan = CounterPlan::new(key("route"));
        for i in 0..40 {
            plan.push(CounterOp::BanCheck { key: key(&format!("b:{i}")) });
        }
        drop(plan);
        let plan = CounterPlan::new(key("route"));
        assert!(plan.is_empty());
        assert!(plan.ops.capacity() >= 40, "a spare buffer from this thread");
        let mut into = CounterPlan::new(key("route"));
        let mut other = CounterPlan::new(key("route"));
        other.push(CounterOp::BanCheck { key: key("x") });
        into.extend(other);
        assert_eq!(into.ops().len(), 1);
    }
}
