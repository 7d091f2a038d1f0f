//! The in-process counter store: GCRA limits, sliding-window counts,
//! distinct sketches, decayed sums and bans in sharded tables, under one
//! memory budget (`[store] max_memory_mb`).
//!
//! Counters are kept by group, as the Redis layout keeps them: a key's
//! group is its text up to its last `:` (one client address, one account,
//! one fingerprint, in one route), and its name there is the rest (`f`,
//! `users`, `ban`, …); a rate limit's key is a group of its own. A plan's
//! consecutive operations on one group (a login reads eight counters of
//! each scope, the classifier five of an address) take one lock and one
//! table lookup, and the group's counters lie side by side in memory: a
//! client seen rarely costs one cold table entry per scope, not one per
//! counter.
//!
//! Memory stays bounded however many clients, addresses or usernames an
//! attacker brings:
//! - reads never create counters (a count read with `add: 0` of a key
//!   nobody counted is 0 without storing anything);
//! - counters that can no longer change an answer (their windows passed, a
//!   limit fully replenished, a ban over) are dropped, one shard every few
//!   thousand operations and every shard on a timer ([`LocalStore::maintain`]),
//!   and a group with none left goes with them;
//! - a shard over its share of the budget evicts its least useful groups
//!   at once: groups holding a ban in force last, then by how often a group
//!   was used (aged at every eviction, so yesterday's hot scope does not
//!   stay forever) and how recently. A flood of one-off keys (random
//!   usernames, rotating addresses) therefore pushes out other one-off
//!   groups, not the bans and busy scopes that stop it.
//!
//! The budget counts the store's own allocations: group keys, counter
//! arrays, sketches and the hash tables as allocated (a table that would
//! have to double past the budget evicts instead). The process's RSS adds
//! the rest of palisade and the allocator's slack.

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

/// A shard's groups, found by their key's hash: hashbrown's table, with
/// the hash computed once per run of operations on one group (foldhash,
/// several times cheaper than SipHash on short keys; keys here are chosen
/// by palisade, hashed identities, not by clients).
type Groups = hashbrown::HashTable<Group>;

const PRUNE_EVERY_OPS: u64 = 4096;
/// The shard hasher's seed (any constant will do; see `LocalStore::hasher`).
const SHARD_SEED: u64 = 0x7061_6c69_7361_6465;
/// Not a power of two on purpose: every shard's table doubles at about
/// the same total group count, and with 24 shards that point lies past
/// the groups of a million keys rather than just under it.
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

    /// Bytes this slot holds outside its group's counter array.
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

// === impl Name ===

/// Bytes of a counter's name kept inline (all of palisade's own names,
/// `f` to `declines_1m`, fit).
const NAME_INLINE: usize = 15;

/// A counter's name within its group: inline up to [`NAME_INLINE`] bytes,
/// longer ones on the heap.
#[derive(Debug, Clone)]
enum Name {
    /// The name as [`pack`] lays it out: two names are equal exactly when
    /// these two words are, so a lookup compares two integers per counter.
    Inline([u64; 2]),
    Heap(Box<str>),
}

/// A name of up to [`NAME_INLINE`] bytes as two words: its bytes, zeros
/// after them, and its length in the last byte; `None` for a longer one.
fn pack(name: &str) -> Option<[u64; 2]> {
    if name.len() > NAME_INLINE {
        return None;
    }
    let mut bytes = [0u8; NAME_INLINE + 1];
    bytes[..name.len()].copy_from_slice(name.as_bytes());
    bytes[NAME_INLINE] = name.len() as u8;
    let packed = u128::from_le_bytes(bytes);
    Some([packed as u64, (packed >> 64) as u64])
}

impl Name {
    fn new(name: &str) -> Self {
        match pack(name) {
            Some(packed) => Name::Inline(packed),
            None => Name::Heap(Box::from(name)),
        }
    }

    fn is(&self, name: &str) -> bool {
        match self {
            Name::Inline(packed) => pack(name) == Some(*packed),
            Name::Heap(held) => **held == *name,
        }
    }

    fn text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Name::Inline([low, high]) => {
                let bytes = (u128::from(*low) | u128::from(*high) << 64).to_le_bytes();
                let len = usize::from(bytes[NAME_INLINE]).min(NAME_INLINE);
                // Inline bytes were copied whole from a `&str`.
                std::borrow::Cow::Owned(String::from_utf8_lossy(&bytes[..len]).into_owned())
            }
            Name::Heap(text) => std::borrow::Cow::Borrowed(text),
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Name::Inline(..) => 0,
            Name::Heap(text) => allocation(text.len()),
        }
    }
}

// === impl Group ===

/// One counter of a group.
#[derive(Debug, Clone)]
struct Field {
    name: Name,
    slot: Slot,
}

impl Field {
    fn heap_bytes(&self) -> usize {
        self.name.heap_bytes() + self.slot.heap_bytes()
    }
}

/// Bytes of one counter in its group's array.
const FIELD_BYTES: usize = std::mem::size_of::<Field>();

/// The counters of one group and what eviction weighs the group by.
#[derive(Debug)]
struct Group {
    /// The key text up to its last `:` (the whole key for a rate limit).
    key: Box<str>,
    fields: Vec<Field>,
    /// Uses since it was created, halved at every eviction in its shard.
    hits: u32,
    /// When it was last used, in seconds of the store's clock.
    touched: u32,
}

impl Group {
    /// `uses` operations on the group at `now`.
    fn touch(&mut self, now: Nanos, uses: usize) {
        self.hits = self.hits.saturating_add(uses as u32);
        self.touched = seconds(now);
    }

    fn field(&mut self, name: &str) -> Option<&mut Slot> {
        // The name packed once as the held names are: each held one is
        // then compared as two words, not byte by byte.
        let Some(probe) = pack(name) else {
            return self.fields.iter_mut().find(|field| field.name.is(name)).map(|field| &mut field.slot);
        };
        self.fields
            .iter_mut()
            .find(|field| matches!(&field.name, Name::Inline(held) if *held == probe))
            .map(|field| &mut field.slot)
    }

    /// Add a counter; the bytes the group grew by. The array starts with
    /// room for one and doubles up to four at a time: most groups of a
    /// flood hold one or two counters, a client's scope eight or so.
    fn add(&mut self, name: &str, slot: Slot) -> usize {
        let before = allocation(self.fields.capacity() * FIELD_BYTES);
        if self.fields.len() == self.fields.capacity() {
            self.fields.reserve_exact(self.fields.len().clamp(1, 4));
        }
        let field = Field { name: Name::new(name), slot };
        let grown = allocation(self.fields.capacity() * FIELD_BYTES) - before + field.heap_bytes();
        self.fields.push(field);
        grown
    }

    /// Bytes the group holds outside its table bucket.
    fn bytes(&self) -> usize {
        allocation(self.key.len())
            + allocation(self.fields.capacity() * FIELD_BYTES)
            + self.fields.iter().map(Field::heap_bytes).sum::<usize>()
    }

    /// Higher is more worth keeping: a ban in force above everything,
    /// then uses, then recency.
    fn keep_score(&self, now: Nanos) -> u64 {
        if self.fields.iter().any(|field| matches!(field.slot, Slot::Ban(until, _) if until > now)) {
            return u64::MAX;
        }
        (u64::from(self.hits.min(u32::MAX - 1)) << 32) | u64::from(self.touched)
    }

    /// The full key of a counter of this group.
    fn key_of(&self, field: &Field) -> String {
        match &*field.name.text() {
            "" => self.key.to_string(),
            name => format!("{}:{name}", self.key),
        }
    }
}

/// A key's group and its name there: the text up to its last `:` and the
/// rest; a key with no `:` inside it (none, or only first or last) is a
/// group of its own, with an empty name. `group:name` gives the key back,
/// so that keys can be listed.
fn split(key: &str) -> (&str, &str) {
    match last_colon(key.as_bytes()) {
        Some(at) if at > 0 && at + 1 < key.len() => (&key[..at], &key[at + 1..]),
        _ => (key, ""),
    }
}

/// Where the last `:` of `bytes` is. Names are a few bytes long, so the
/// last eight bytes are looked at first, as one word (every operation of
/// a plan is split; byte by byte from the end was a tenth of a login's
/// counter operations).
fn last_colon(bytes: &[u8]) -> Option<usize> {
    const LOW: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let Some(tail) = bytes.len().checked_sub(8) else {
        return bytes.iter().rposition(|&byte| byte == b':');
    };
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[tail..]);
    // Each byte of `x` is 0 where the byte is `:`; the high bit of each
    // byte of `found` is set exactly where `x`'s byte is 0 (no carries
    // cross bytes: each byte's low seven bits plus 0x7f stay below 0x100).
    let x = u64::from_le_bytes(word) ^ 0x3a3a_3a3a_3a3a_3a3a;
    let found = !(((x & LOW) + LOW) | x) & !LOW;
    match found {
        0 => bytes[..tail].iter().rposition(|&byte| byte == b':'),
        // The highest set bit is the last `:` (little-endian: later bytes
        // are higher).
        _ => Some(tail + (63 - found.leading_zeros() as usize) / 8),
    }
}

/// An operation's group and name: a rate limit is a group of its own (one
/// per client, never read with others).
fn group_of(op: &CounterOp) -> (&str, &str) {
    match op {
        CounterOp::Gcra { key, .. } => (key, ""),
        other => split(other.key()),
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

/// Bytes of one bucket of a shard's table: the group and hashbrown's
/// control byte.
const BUCKET_BYTES: usize = std::mem::size_of::<Group>() + 1;

// === impl Shard ===

#[derive(Debug, Default)]
struct Shard {
    groups: Groups,
    /// What [`Group::bytes`] adds up to over the table.
    bytes: usize,
    /// Counters held in all groups.
    counters: usize,
}

impl Shard {
    /// Everything the shard holds: groups and its table as allocated (a
    /// table grows by doubling, so it can be twice what it holds).
    fn size(&self) -> usize {
        self.bytes + self.groups.num_buckets() * BUCKET_BYTES
    }

    /// What the shard will hold once `bytes` more are in, in a new group:
    /// when the table has no room left, hashbrown doubles it.
    fn size_with(&self, bytes: usize) -> usize {
        let buckets = self.groups.num_buckets();
        let buckets = if self.groups.len() >= self.groups.capacity() { (buckets * 2).max(4) } else { buckets };
        self.bytes + bytes + buckets * BUCKET_BYTES
    }

    /// A fresh table of the same size: removed groups leave markers that
    /// take room until the table is rebuilt, and hashbrown would double a
    /// table full of them rather than reuse it.
    fn rebuild(&mut self, hasher: &foldhash::fast::FixedState) {
        let buckets = self.groups.num_buckets();
        let capacity = if buckets < 8 { buckets.saturating_sub(1) } else { buckets / 8 * 7 };
        if self.groups.capacity() >= capacity {
            return;
        }
        let mut fresh = Groups::with_capacity(capacity);
        for group in self.groups.drain() {
            let hash = hasher.hash_one(&*group.key);
            fresh.insert_unique(hash, group, |group| hasher.hash_one(&*group.key));
        }
        self.groups = fresh;
    }

    /// Drop the counters that no longer change an answer, and groups left
    /// with none; how many counters.
    fn prune(&mut self, now: Nanos) -> usize {
        let mut freed = 0;
        let mut pruned = 0;
        self.groups.retain(|group| {
            group.fields.retain(|field| {
                let expired = field.slot.is_expired(now);
                if expired {
                    freed += field.heap_bytes();
                    pruned += 1;
                }
                !expired
            });
            if group.fields.is_empty() {
                freed += group.bytes();
                return false;
            }
            true
        });
        self.bytes = self.bytes.saturating_sub(freed);
        self.counters -= pruned;
        pruned
    }

    /// Make room for `bytes` more within `budget`: expired counters first,
    /// then the groups least worth keeping — down to 7/8 of the budget,
    /// and, when the table is full and doubling it would not fit, by an
    /// eighth of the groups, so that the table need not grow. How many
    /// counters went (expired, evicted).
    fn make_room(
        &mut self,
        now: Nanos,
        budget: usize,
        bytes: usize,
        hasher: &foldhash::fast::FixedState,
    ) -> (usize, usize) {
        let pruned = self.prune(now);
        if self.size_with(bytes) > budget {
            self.rebuild(hasher);
        }
        if self.size_with(bytes) <= budget || self.groups.is_empty() {
            return (pruned, 0);
        }
        let len = self.groups.len();
        let table = self.groups.num_buckets() * BUCKET_BYTES;
        let target = (budget / EVICT_TO_DEN * EVICT_TO_NUM).saturating_sub(table);
        // Groups are of similar size: drop the share of them that the
        // excess is of their bytes.
        let mut drop = match self.bytes.checked_sub(target) {
            Some(excess) if excess > 0 => excess.saturating_mul(len) / self.bytes.max(1) + 1,
            _ => 0,
        };
        if len >= self.groups.capacity() {
            drop = drop.max(len / EVICT_TO_DEN + 1);
        }
        let drop = drop.clamp(1, len);
        let mut scores: Vec<u64> = self.groups.iter().map(|group| group.keep_score(now)).collect();
        let (_, threshold, _) = scores.select_nth_unstable(drop - 1);
        let threshold = *threshold;
        // Groups scored below the threshold all go; of those scored at
        // it, only as many as still needed.
        let below = scores.iter().filter(|score| **score < threshold).count();
        let mut at_threshold = drop - below;
        let mut freed = 0;
        let mut evicted = 0;
        self.groups.retain(|group| {
            let score = group.keep_score(now);
            let evict = score < threshold || (score == threshold && at_threshold > 0);
            if evict {
                if score == threshold {
                    at_threshold -= 1;
                }
                freed += group.bytes();
                evicted += group.fields.len();
                return false;
            }
            // Aging: uses long past weigh less than those to come.
            group.hits /= 2;
            true
        });
        self.bytes = self.bytes.saturating_sub(freed);
        self.counters -= evicted;
        self.rebuild(hasher);
        (pruned, evicted)
    }
}

// === impl LocalStore ===

#[derive(Debug)]
pub struct LocalStore {
    clock: SharedClock,
    shards: [Mutex<Shard>; SHARDS],
    /// Hashes a group's key, for its shard and its table. Seeded the same
    /// in every process: which shard holds a group decides when an expired
    /// counter is pruned (one shard every [`PRUNE_EVERY_OPS`] operations),
    /// and a pruned decayed sum reads 0 where the kept one reads its last
    /// 1e-8; replaying a capture twice must give the same readings to the
    /// last bit.
    hasher: foldhash::fast::FixedState,
    ops: AtomicU64,
    /// The budget of one shard, in bytes.
    shard_budget: usize,
    /// Keys held, bytes held and evictions, for the metrics.
    gauges: Arc<LocalStoreGauges>,
    /// The next shard [`LocalStore::maintain`] prunes.
    next_maintained: AtomicUsize,
}

/// What a counter not held yet answers, and the counter to create for it
/// (none for reads, which never create).
struct Fresh {
    reading: Reading,
    slot: Option<Slot>,
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
        let ops = plan.ops();
        // One shared increment per plan, not per operation: the counter is
        // touched by every worker.
        let first = self.ops.fetch_add(ops.len() as u64, Ordering::Relaxed);
        // A shard is pruned before every operation whose count leaves
        // `PRUNE_EVERY_OPS - 1` over: the plan's index of the next one.
        let mut prune_at = (PRUNE_EVERY_OPS - 1 - first % PRUNE_EVERY_OPS) as usize;
        let mut start = 0;
        // Each operation's group and name, split once: the operation that
        // ends a run is the first of the next.
        let mut next = ops.first().map(group_of);
        while let Some(split) = next {
            if start == prune_at {
                let count = first + start as u64;
                self.prune(now, (count / PRUNE_EVERY_OPS) as usize % SHARDS);
                prune_at += PRUNE_EVERY_OPS as usize;
            }
            // A run of operations on one group stops short of a pruning:
            // the group's shard is locked while it runs.
            let (ran, after) = self.run_group(&ops[start..prune_at.min(ops.len())], split, now, &mut read);
            start += ran;
            next = after.or_else(|| ops.get(start).map(group_of));
        }
    }

    /// A group's shard, by bits of its hash that its table does not use
    /// for bucket positions (the low ones) or tags (the top seven).
    fn shard_index(hash: u64) -> usize {
        ((hash >> 24) as u32 as usize) % SHARDS
    }

    /// Run the first of `ops` (whose group and name are `first`) and the
    /// operations after it on the same group: one lock, one lookup. How
    /// many ran, and the group and name of the operation that ended the
    /// run (`None` at the end of `ops`).
    fn run_group<'o>(
        &self,
        ops: &'o [CounterOp],
        first: (&'o str, &'o str),
        now: Nanos,
        read: &mut impl FnMut(&CounterOp, Reading),
    ) -> (usize, Option<(&'o str, &'o str)>) {
        let (key, _) = first;
        let hash = self.hasher.hash_one(key);
        let mut shard = self.shards[Self::shard_index(hash)].lock().expect("store shard poisoned");
        let shard = &mut *shard;
        // Room for a new group of a few counters, made before any of the
        // group is in hand.
        let estimate = allocation(key.len()) + allocation(ops.len().min(8) * FIELD_BYTES);
        if shard.size_with(estimate) > self.shard_budget {
            self.make_room(shard, now, estimate);
        }
        let rehash = |group: &Group| self.hasher.hash_one(&*group.key);
        let mut held = shard.groups.find_mut(hash, |group| &*group.key == key);
        let mut ran = 0;
        let mut added = 0;
        let mut grown: isize = 0;
        let mut after = None;
        for op in ops {
            let (group, name) = if ran == 0 { first } else { group_of(op) };
            if ran > 0 && group != key {
                after = Some((group, name));
                break;
            }
            ran += 1;
            let reading = match held.as_deref_mut() {
                Some(group) => match group.field(name) {
                    Some(slot) => match (op, slot) {
                        // The commonest operation, without `update`'s call.
                        (CounterOp::Count { window, add, .. }, Slot::Count(count, _)) => {
                            Reading::Number(count.add_and_estimate(now, *window, *add))
                        }
                        (op, slot) => self.update(slot, op, now, &mut grown),
                    },
                    // Most counters a login reads were never written
                    // (no ban, no refused attempt): a read answers at once.
                    None => match Self::absent(op) {
                        Some(reading) => reading,
                        None => {
                            let Fresh { reading, slot } = self.fresh(op, now);
                            if let Some(slot) = slot {
                                grown += group.add(name, slot) as isize;
                                added += 1;
                            }
                            reading
                        }
                    },
                },
                // A group not held: its reads answer at once too (a new
                // client's address and account).
                None => match Self::absent(op) {
                    Some(reading) => reading,
                    None => {
                        let Fresh { reading, slot } = self.fresh(op, now);
                        if let Some(slot) = slot {
                            let mut group =
                                Group { key: Box::from(key), fields: Vec::new(), hits: 0, touched: seconds(now) };
                            grown += (allocation(key.len()) + group.add(name, slot)) as isize;
                            added += 1;
                            held = Some(shard.groups.insert_unique(hash, group, rehash).into_mut());
                        }
                        reading
                    }
                },
            };
            read(op, reading);
        }
        if let Some(group) = held {
            group.touch(now, ran);
        }
        shard.bytes = shard.bytes.saturating_add_signed(grown);
        shard.counters += added;
        if added > 0 {
            self.gauges.keys.fetch_add(added as u64, Ordering::Relaxed);
        }
        // A run that grew past the estimate (a sketch filling up) leaves
        // the shard within its budget all the same.
        if shard.size() > self.shard_budget {
            self.make_room(shard, now, 0);
        }
        (ran, after)
    }

    fn make_room(&self, shard: &mut Shard, now: Nanos, bytes: usize) {
        let (pruned, evicted) = shard.make_room(now, self.shard_budget, bytes, &self.hasher);
        self.gauges.evicted.fetch_add(evicted as u64, Ordering::Relaxed);
        self.gauges.keys.fetch_sub((pruned + evicted) as u64, Ordering::Relaxed);
    }

    /// An operation on a counter held; `grown` takes the bytes its slot
    /// grew by (a sketch filling up).
    fn update(&self, slot: &mut Slot, op: &CounterOp, now: Nanos, grown: &mut isize) -> Reading {
        match op {
            CounterOp::Gcra { limit, .. } => {
                // The clock, not `now`: what governor did, so limits answer
                // as they always have.
                let at = self.clock.now();
                let (interval, tolerance) = gcra_params(limit);
                let tat = match slot {
                    Slot::Gcra(tat) => *tat,
                    _ => at,
                };
                if at < tat.saturating_sub(tolerance) {
                    let wait = Duration::from_nanos(tat.saturating_sub(tolerance) - at);
                    return Reading::Gcra(GcraReading::Limited { retry_after: wait.max(Duration::from_millis(1)) });
                }
                *slot = Slot::Gcra(tat.max(at) + interval);
                Reading::Gcra(GcraReading::Allowed)
            }
            CounterOp::Count { window, add, .. } => match slot {
                Slot::Count(count, _) => Reading::Number(count.add_and_estimate(now, *window, *add)),
                _ => Reading::Number(0.0),
            },
            CounterOp::Distinct { window, item, .. } => Self::distinct(slot, *window, *item, now, grown),
            CounterOp::DistinctIfHeld { window, item, .. } => Self::distinct(slot, *window, Some(*item), now, grown),
            CounterOp::Decay { half_life, add, .. } => match slot {
                Slot::Decay(decayed, _) if *add == 0.0 => Reading::Number(decayed.read(now, *half_life)),
                Slot::Decay(decayed, _) => Reading::Number(decayed.add(now, *half_life, *add)),
                _ => Reading::Number(0.0),
            },
            CounterOp::Rhythm { window, .. } => match slot {
                Slot::Rhythm(rhythm) => {
                    rhythm.0.arrive(now, *window);
                    Reading::Number(rhythm.0.read())
                }
                _ => Reading::Number(f64::NAN),
            },
            CounterOp::BanCheck { .. } => match slot {
                Slot::Ban(until, _) if *until > now => Reading::Ban(Some(Duration::from_nanos(*until - now))),
                _ => Reading::Ban(None),
            },
            CounterOp::Ban { ttl, reason, .. } => {
                let until = now + ttl.as_nanos() as u64;
                match slot {
                    Slot::Ban(current, _) if *current >= until => {}
                    other => {
                        let freed = other.heap_bytes();
                        *other = Slot::Ban(until, reason.clone());
                        *grown -= freed as isize;
                    }
                }
                Reading::Done
            }
        }
    }

    /// Add `item` (if any) to a distinct count held and read it.
    fn distinct(slot: &mut Slot, window: Duration, item: Option<u64>, now: Nanos, grown: &mut isize) -> Reading {
        match slot {
            Slot::DistinctOne(one, _) => {
                let full = match item {
                    Some(item) => one.add(now, window, item),
                    None => None,
                };
                let Some(mut full) = full else { return Reading::Number(one.count(now, window) as f64) };
                let count = full.count(now, window);
                *slot = Slot::Distinct(Box::new((full, window)));
                *grown += slot.heap_bytes() as isize;
                Reading::Number(count as f64)
            }
            Slot::Distinct(distinct) => {
                let before = distinct.0.heap_bytes();
                let count = distinct.0.add_and_count(now, window, item);
                *grown += distinct.0.heap_bytes() as isize - before as isize;
                Reading::Number(count as f64)
            }
            _ => Reading::Number(0.0),
        }
    }

    /// What an operation that creates nothing (a read, a
    /// `DistinctIfHeld`) reads of a counter not held; `None` for the
    /// operations that create their counter.
    #[inline]
    fn absent(op: &CounterOp) -> Option<Reading> {
        match op {
            CounterOp::Count { add: 0, .. } | CounterOp::Distinct { item: None, .. } => Some(Reading::Number(0.0)),
            CounterOp::DistinctIfHeld { .. } => Some(Reading::Number(1.0)),
            CounterOp::Decay { add, .. } if *add == 0.0 => Some(Reading::Number(0.0)),
            CounterOp::BanCheck { .. } => Some(Reading::Ban(None)),
            _ => None,
        }
    }

    /// An operation on a counter not held: what it reads, and the counter
    /// it creates, if any (reads and `DistinctIfHeld` create none, and
    /// read as [`LocalStore::absent`] says).
    fn fresh(&self, op: &CounterOp, now: Nanos) -> Fresh {
        let (reading, slot) = match op {
            CounterOp::Gcra { limit, .. } => {
                let (interval, _) = gcra_params(limit);
                (Reading::Gcra(GcraReading::Allowed), Some(Slot::Gcra(self.clock.now() + interval)))
            }
            CounterOp::Count { add: 0, .. } => (Reading::Number(0.0), None),
            CounterOp::Count { window, add, .. } => {
                let mut count = SlidingCount::default();
                let reading = count.add_and_estimate(now, *window, *add);
                (Reading::Number(reading), Some(Slot::Count(count, *window)))
            }
            CounterOp::Distinct { item: None, .. } => (Reading::Number(0.0), None),
            CounterOp::Distinct { window, item: Some(item), .. } => {
                let one = OneDistinct::new(now, *window, *item);
                (Reading::Number(one.count(now, *window) as f64), Some(Slot::DistinctOne(one, *window)))
            }
            CounterOp::DistinctIfHeld { .. } => (Reading::Number(1.0), None),
            CounterOp::Decay { add, .. } if *add == 0.0 => (Reading::Number(0.0), None),
            CounterOp::Decay { half_life, add, .. } => {
                let mut decayed = Decayed::default();
                let reading = decayed.add(now, *half_life, *add);
                (Reading::Number(reading), Some(Slot::Decay(decayed, *half_life)))
            }
            CounterOp::Rhythm { window, .. } => {
                let mut rhythm = Rhythm::default();
                rhythm.arrive(now, *window);
                (Reading::Number(rhythm.read()), Some(Slot::Rhythm(Box::new((rhythm, *window)))))
            }
            CounterOp::BanCheck { .. } => (Reading::Ban(None), None),
            CounterOp::Ban { ttl, reason, .. } => {
                (Reading::Done, Some(Slot::Ban(now + ttl.as_nanos() as u64, reason.clone())))
            }
        };
        Fresh { reading, slot }
    }

    fn prune(&self, now: Nanos, shard: usize) {
        let mut shard = self.shards[shard].lock().expect("store shard poisoned");
        let pruned = shard.prune(now);
        // A flood that has passed leaves a large, empty table behind.
        if shard.groups.capacity() > 64 && shard.groups.len() < shard.groups.capacity() / 4 {
            shard.groups.shrink_to_fit(|group| self.hasher.hash_one(&*group.key));
        }
        drop(shard);
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
                keys += shard.counters;
                bytes += shard.size();
            }
        }
        self.gauges.keys.store(keys as u64, Ordering::Relaxed);
        self.gauges.bytes.store(bytes as u64, Ordering::Relaxed);
    }

    /// Every counter held, with its full key (read under each shard's lock
    /// in turn; no request pays for it).
    fn each_counter(&self, mut each: impl FnMut(&Group, &Field)) {
        for shard in &self.shards {
            let shard = shard.lock().expect("store shard poisoned");
            for group in shard.groups.iter() {
                for field in &group.fields {
                    each(group, field);
                }
            }
        }
    }

    /// Every ban in force at `now`: its key, time left and reason.
    pub fn bans(&self, now: Nanos) -> Vec<super::BanEntry> {
        let mut bans = Vec::new();
        self.each_counter(|group, field| {
            if let Slot::Ban(until, reason) = &field.slot
                && *until > now
            {
                bans.push(super::BanEntry {
                    key: group.key_of(field),
                    left: Duration::from_nanos(until - now),
                    reason: reason.to_string(),
                });
            }
        });
        bans.sort_by(|a, b| a.key.cmp(&b.key));
        bans
    }

    /// Lift the ban under `key` and clear the other counters of its scope
    /// (the keys beside it, `…:f`, `…:x`, …): the client starts afresh
    /// instead of being banned again by its old failures. Whether a ban
    /// was in force.
    pub fn lift(&self, key: &str, now: Nanos) -> bool {
        let (group_key, name) = split(key);
        let in_force = {
            let hash = self.hasher.hash_one(group_key);
            let mut shard = self.shards[Self::shard_index(hash)].lock().expect("store shard poisoned");
            let held = shard.groups.find_mut(hash, |group| &*group.key == group_key);
            matches!(held.and_then(|group| group.field(name)), Some(Slot::Ban(until, _)) if *until > now)
        };
        let scope = match key.rsplit_once(':') {
            Some((group, _)) if !group.is_empty() => format!("{group}:"),
            _ => key.to_string(),
        };
        let mut removed = 0;
        for shard in &self.shards {
            let mut shard = shard.lock().expect("store shard poisoned");
            let (mut freed, mut gone) = (0, 0);
            shard.groups.retain(|group| {
                let before = group.bytes();
                let count = group.fields.len();
                let fields = std::mem::take(&mut group.fields);
                group.fields = fields
                    .into_iter()
                    .filter(|field| {
                        // Rate limits are not counters of the scope.
                        if matches!(field.slot, Slot::Gcra(_)) {
                            return true;
                        }
                        let held = group.key_of(field);
                        held != key && !held.starts_with(&scope)
                    })
                    .collect();
                gone += count - group.fields.len();
                if group.fields.is_empty() {
                    freed += before;
                    return false;
                }
                freed += before.saturating_sub(group.bytes());
                true
            });
            shard.bytes = shard.bytes.saturating_sub(freed);
            shard.counters -= gone;
            removed += gone;
        }
        self.gauges.keys.fetch_sub(removed as u64, Ordering::Relaxed);
        in_force
    }

    /// The `limit` largest sliding-window counts at `now` among keys that
    /// end with `suffix` (e.g. `:f`, failures): what the dashboard shows
    /// as under attack. Reads the tables; no request pays for it.
    pub fn top_counts(&self, suffix: &str, now: Nanos, limit: usize) -> Vec<(String, f64)> {
        let mut top: Vec<(String, f64)> = Vec::new();
        self.each_counter(|group, field| {
            if let Slot::Count(count, window) = &field.slot {
                let key = group.key_of(field);
                let value = count.estimate(now, *window);
                if key.ends_with(suffix) && value > 0.0 {
                    top.push((key, value));
                }
            }
        });
        top.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top.truncate(limit);
        top
    }

    /// Every counter key held (rate-limit state is not listed).
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        self.each_counter(|group, field| {
            if !matches!(field.slot, Slot::Gcra(_)) {
                keys.push(group.key_of(field));
            }
        });
        keys.sort();
        keys
    }

    /// How many counters the store holds, rate-limit state included.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map(|s| s.counters).unwrap_or(0)).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

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

    proptest::proptest! {
        /// The last `:` found a word at a time is the one found byte by
        /// byte, for keys of any length and any bytes (`:` and its
        /// neighbours in value often).
        #[test]
        fn the_last_colon_is_found_as_byte_by_byte(
            bytes in proptest::collection::vec(proptest::prop_oneof![
                proptest::strategy::Just(b':'),
                proptest::strategy::Just(b';'),
                proptest::strategy::Just(b'9'),
                proptest::strategy::Just(0xbau8),
                proptest::num::u8::ANY,
            ], 0..40)
        ) {
            proptest::prop_assert_eq!(last_colon(&bytes), bytes.iter().rposition(|&byte| byte == b':'));
        }
    }

    /// Packed names are equal exactly when the names are, and give their
    /// text back; a name is as large as before (the store's memory
    /// accounting weighs a counter by its size).
    #[test]
    fn packed_names_compare_and_read_as_their_text() {
        let names = ["", "f", "fa", "af", "users", "a\u{0}", "a", "declines_1m", "fifteen_bytes_1"];
        for a in names {
            let packed = Name::new(a);
            assert!(matches!(packed, Name::Inline(_)), "{a:?}");
            assert_eq!(packed.text(), a);
            for b in names {
                assert_eq!(packed.is(b), a == b, "{a:?} {b:?}");
            }
        }
        assert!(matches!(Name::new("sixteen_bytes_12"), Name::Heap(_)));
        assert_eq!(Name::new("sixteen_bytes_12").text(), "sixteen_bytes_12");
        assert_eq!(std::mem::size_of::<Name>(), 24);
    }

    /// A group finds each of its counters by name, whatever its length
    /// (inline or on the heap), and no name that is a prefix or an
    /// extension of a held one.
    #[test]
    fn a_group_finds_counters_by_their_whole_name() {
        let names =
            ["", "f", "fa", "users", "declines_1m", "fifteen_bytes_1", "sixteen_bytes_12", "a_name_of_twenty_b"];
        let mut group = Group { key: Box::from("g"), fields: Vec::new(), hits: 0, touched: 0 };
        for (at, name) in names.iter().enumerate() {
            group.add(name, Slot::Gcra(at as Nanos));
        }
        for (at, name) in names.iter().enumerate() {
            assert!(matches!(group.field(name), Some(Slot::Gcra(held)) if *held == at as Nanos), "{name:?}");
        }
        for absent in
            ["u", "user", "usersx", "fifteen_bytes_", "fifteen_bytes_12", "sixteen_bytes_1", "a_name_of_twenty_"]
        {
            assert!(group.field(absent).is_none(), "{absent:?}");
        }
    }

    /// Stores fed the same operations read the same numbers to the last
    /// bit, pruning included: which shard holds a key (and so whether an
    /// expired decayed sum is dropped before it is added to again) must not
    /// depend on a per-store random seed.
    #[test]
    fn stores_fed_the_same_operations_read_the_same_to_the_last_bit() {
        let half_life = Duration::from_secs(1);
        // One group per sum (`decayed{i}:sum`), so that the sums fall in
        // different shards.
        let keys: Vec<Key> = (0..4 * SHARDS).map(|i| Key::from(format!("decayed{i}:sum"))).collect();
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

    /// The shortcut for reads of counters not held answers as `fresh`
    /// does, for exactly the operations that create nothing.
    #[test]
    fn absent_counters_read_as_fresh_ones() {
        let store = LocalStore::new(Arc::new(ManualClock::new(1_000_000_000_000)));
        let (key, window) = (Key::from("g:n"), Duration::from_secs(60));
        let limit = RateLimitConfig { requests: 2, period_secs: 10, burst: None };
        let ops = [
            CounterOp::Gcra { key: key.clone(), limit },
            CounterOp::Count { key: key.clone(), window, add: 0 },
            CounterOp::Count { key: key.clone(), window, add: 2 },
            CounterOp::Distinct { key: key.clone(), window, item: None },
            CounterOp::Distinct { key: key.clone(), window, item: Some(3) },
            CounterOp::DistinctIfHeld { key: key.clone(), window, item: 3 },
            CounterOp::Decay { key: key.clone(), half_life: window, add: 0.0 },
            CounterOp::Decay { key: key.clone(), half_life: window, add: -0.0 },
            CounterOp::Decay { key: key.clone(), half_life: window, add: 1.5 },
            CounterOp::Rhythm { key: key.clone(), window },
            CounterOp::BanCheck { key: key.clone() },
            CounterOp::Ban { key: key.clone(), ttl: window, reason: Key::from("t") },
        ];
        for op in &ops {
            let Fresh { reading, slot } = store.fresh(op, 1_000_000_000_000);
            match LocalStore::absent(op) {
                Some(absent) => {
                    assert!(slot.is_none(), "{op:?} creates nothing");
                    assert_eq!(format!("{absent:?}"), format!("{reading:?}"), "{op:?}");
                }
                None => assert!(slot.is_some(), "{op:?} creates its counter"),
            }
        }
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

    /// A banned scope's ban reads as in force on every thread while other
    /// threads flood the store with new groups (eviction at every few
    /// inserts), the timer prunes, and plans run on clocks a little apart:
    /// the credential stage's reads (ban first, then the scope's counters
    /// in one group) and its writes (refused counts).
    #[test]
    fn a_ban_holds_under_concurrent_floods_pruning_and_eviction() {
        let clock = Arc::new(ManualClock::new(0));
        let store = Arc::new(LocalStore::with_budget(clock, 64 * 1024));
        let start: Nanos = 1_800_000_000_000_000_000;
        let window = Duration::from_secs(600);
        let scope = "login:login:ip:banned";
        let mut ban = CounterPlan::default();
        ban.push(CounterOp::Count { key: Key::from(format!("{scope}:f")), window, add: 4 });
        ban.push(CounterOp::Ban {
            key: Key::from(format!("{scope}:ban")),
            ttl: Duration::from_secs(900),
            reason: Key::from("t"),
        });
        store.execute(&ban, start, &mut CounterReadings::default());
        let threads: Vec<_> = (0..4u64)
            .map(|thread| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let mut check = CounterPlan::default();
                    check.push(CounterOp::BanCheck { key: Key::from(format!("{scope}:ban")) });
                    for counter in ["f", "s", "x"] {
                        check.push(CounterOp::Count { key: Key::from(format!("{scope}:{counter}")), window, add: 0 });
                    }
                    let mut refused = CounterPlan::default();
                    refused.push(CounterOp::Count { key: Key::from(format!("{scope}:x")), window, add: 1 });
                    for round in 0..3_000u64 {
                        // Up to a second apart, and up to 300 s on.
                        let now = start + round * 100_000_000 + thread * 250_000_000;
                        let mut readings = CounterReadings::default();
                        store.execute(&check, now, &mut readings);
                        assert!(readings.ban(&format!("{scope}:ban")).is_some(), "thread {thread}, round {round}");
                        store.apply(&refused, now);
                        let mut flood = CounterPlan::default();
                        for user in 0..4 {
                            let id = (thread << 40) | (round << 8) | user;
                            flood.push(CounterOp::Distinct {
                                key: Key::from(format!("login:login:user:{id:x}:addrs")),
                                window,
                                item: Some(id),
                            });
                            flood.push(CounterOp::Count {
                                key: Key::from(format!("login:login:user:{id:x}:f")),
                                window,
                                add: 1,
                            });
                        }
                        store.apply(&flood, now);
                        if round % 500 == 0 {
                            store.maintain(now);
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("a flooding thread");
        }
        assert!(store.gauges().evicted.load(Ordering::Relaxed) > 10_000, "the flood evicted");
        let mut readings = CounterReadings::default();
        let mut check = CounterPlan::default();
        check.push(CounterOp::BanCheck { key: Key::from(format!("{scope}:ban")) });
        store.execute(&check, start + 300_000_000_000, &mut readings);
        assert!(readings.ban(&format!("{scope}:ban")).is_some());
    }
}
