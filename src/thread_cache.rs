//! A bounded, set-associative cache for one thread: for values that cost
//! something to build and are asked for again and again with the same
//! inputs (a client's counter keys, a scan of a common user agent).
//!
//! Each input hashes to one set of [`WAYS`] slots, kept most recently used
//! first; a lookup compares the input's hash with each slot's before the
//! caller compares the entry in full (a hash collision only costs a
//! rebuild), and a miss replaces the set's least recently used entry. It
//! began direct-mapped (one slot per input): with a few hundred inputs in
//! a thousand slots, two inputs share a slot often enough that, in the
//! model bench, 7 % of requests rebuilt a value they had built a round
//! before (keyed hashes and counter keys: the slowest requests); eight
//! ways make that rare at the same memory. Nothing is ever evicted but by
//! replacement, so memory is the slot count times the entry size, whatever
//! the traffic. Caches live in `thread_local!`s: no lock, and each proxy
//! worker warms its own.

use std::cell::RefCell;
use std::hash::{BuildHasher, Hash};
use std::thread::LocalKey;

/// Slots per set (fewer when the cache has fewer slots). Their hashes
/// fill one cache line.
pub const WAYS: usize = 8;

pub struct SetAssociative<E, S = hashbrown::DefaultHashBuilder> {
    /// Picks an input's set (and the hash its slots are checked by); a
    /// test can pass one that puts every input in the same set.
    hasher: S,
    /// Per slot, the hash of the input its entry was built for (compared
    /// before the entry; an empty slot's is never looked at).
    hashes: Box<[u64]>,
    slots: Box<[Option<E>]>,
    ways: usize,
}

/// Where a missed input's entry goes: its set and its hash.
#[derive(Debug, Clone, Copy)]
pub struct Miss {
    set: usize,
    hash: u64,
}

impl<E> SetAssociative<E> {
    /// A cache of `slots` slots (rounded up to a power of two).
    pub fn new(slots: usize) -> Self {
        SetAssociative::with_hasher(slots, hashbrown::DefaultHashBuilder::default())
    }
}

impl<E, S: BuildHasher> SetAssociative<E, S> {
    /// A cache of `slots` slots (rounded up to a power of two) whose sets
    /// are picked by `hasher`.
    pub fn with_hasher(slots: usize, hasher: S) -> Self {
        let slots = slots.max(1).next_power_of_two();
        SetAssociative {
            hasher,
            hashes: vec![0; slots].into_boxed_slice(),
            slots: (0..slots).map(|_| None).collect(),
            ways: WAYS.min(slots),
        }
    }

    /// What `hit` accepts among the entries of `input`'s set (tried most
    /// recently used first, and only where the input's hash matches), that
    /// entry becoming the most recently used; else where `input`'s entry
    /// goes ([`SetAssociative::insert`]). Inlined: with the input's hash
    /// computed where its type is known, a lookup of the signature scan
    /// cache costs ~80 instructions less.
    #[inline]
    pub fn find<R>(&mut self, input: impl Hash, mut hit: impl FnMut(&E) -> Option<R>) -> Result<R, Miss> {
        let hash = self.hasher.hash_one(input);
        let sets = self.slots.len() / self.ways;
        let first = (hash as usize & (sets - 1)) * self.ways;
        let range = first..first + self.ways;
        let (hashes, slots) = (&mut self.hashes[range.clone()], &mut self.slots[range]);
        for way in 0..hashes.len() {
            if hashes[way] != hash {
                continue;
            }
            if let Some(found) = slots[way].as_ref().and_then(&mut hit) {
                // Moved to the front a slot at a time: most hits are on
                // the first ways, where a general rotation costs more.
                for at in (1..=way).rev() {
                    hashes.swap(at, at - 1);
                    slots.swap(at, at - 1);
                }
                return Ok(found);
            }
        }
        Err(Miss { set: first, hash })
    }

    /// Put `entry` first in the set `miss` names, dropping the set's
    /// least recently used entry.
    pub fn insert(&mut self, miss: Miss, entry: E) {
        let range = miss.set..miss.set + self.ways;
        let (hashes, slots) = (&mut self.hashes[range.clone()], &mut self.slots[range]);
        for at in (1..hashes.len()).rev() {
            hashes.swap(at, at - 1);
            slots.swap(at, at - 1);
        }
        hashes[0] = miss.hash;
        slots[0] = Some(entry);
    }
}

/// What `cache` holds for `input`, when `hit` accepts an entry of its set;
/// else what `miss` builds, whose entry (if it gives one) then joins the
/// set. `miss` runs with the cache released. When the cache cannot be had
/// (re-entered on this thread, or the thread is ending), `miss` builds and
/// nothing is kept.
pub fn remember<E: 'static, R>(
    cache: &'static LocalKey<RefCell<SetAssociative<E>>>,
    input: impl Hash,
    hit: impl FnMut(&E) -> Option<R>,
    miss: impl FnOnce() -> (R, Option<E>),
) -> R {
    let looked = cache.try_with(|cache| cache.try_borrow_mut().ok().map(|mut cache| cache.find(input, hit)));
    match looked {
        Ok(Some(Ok(found))) => found,
        Ok(Some(Err(at))) => {
            let (built, entry) = miss();
            if let Some(entry) = entry {
                // During thread teardown the cache may be gone: nothing is kept.
                let _ = cache.try_with(|cache| {
                    if let Ok(mut cache) = cache.try_borrow_mut() {
                        cache.insert(at, entry);
                    }
                });
            }
            built
        }
        _ => miss().0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the cache gives for `i`, building `(i, i * i)` on a miss.
    fn square(cache: &mut SetAssociative<(u32, u32)>, i: u32) -> (u32, bool) {
        match cache.find(i, |held| (held.0 == i).then_some(held.1)) {
            Ok(found) => (found, true),
            Err(miss) => {
                cache.insert(miss, (i, i * i));
                (i * i, false)
            }
        }
    }

    #[test]
    fn an_input_finds_its_entry_again_and_slots_are_bounded() {
        let mut cache: SetAssociative<(u32, u32)> = SetAssociative::new(6);
        assert_eq!(cache.slots.len(), 8);
        assert_eq!(square(&mut cache, 7), (49, false));
        assert_eq!(square(&mut cache, 7), (49, true));
        for i in 0..1000u32 {
            assert_eq!(square(&mut cache, i).0, i * i);
        }
        assert_eq!(cache.slots.iter().filter(|slot| slot.is_some()).count(), 8);
    }

    /// Up to `WAYS` inputs of one set are all kept; one more drops the
    /// least recently used, and a hit makes an entry the most recent.
    #[test]
    fn a_set_keeps_its_most_recently_used_entries() {
        let mut cache: SetAssociative<(u32, u32)> = SetAssociative::new(64);
        let set_of = |cache: &mut SetAssociative<(u32, u32)>, i: u32| match cache.find(i, |_| None::<()>) {
            Err(miss) => miss.set,
            Ok(()) => unreachable!(),
        };
        let set = set_of(&mut cache, 0);
        let same: Vec<u32> = (1..10_000).filter(|&i| set_of(&mut cache, i) == set).take(WAYS).collect();
        let mut inputs = vec![0];
        inputs.extend(&same[..WAYS - 1]);
        for &i in &inputs {
            assert_eq!(square(&mut cache, i), (i * i, false));
        }
        for &i in &inputs {
            assert_eq!(square(&mut cache, i), (i * i, true), "{i}");
        }
        // 0 was used least recently of all; touch it, then one more input
        // of the set drops the next oldest, inputs[1].
        assert!(square(&mut cache, 0).1);
        assert!(!square(&mut cache, same[WAYS - 1]).1);
        assert!(square(&mut cache, 0).1);
        assert!(!square(&mut cache, inputs[1]).1);
    }

    thread_local! {
        static TEST: RefCell<SetAssociative<(u32, u32)>> = RefCell::new(SetAssociative::new(16));
    }

    #[test]
    fn remember_builds_once_and_a_nested_miss_is_served() {
        let get = |i: u32| {
            remember(&TEST, i, |held: &(u32, u32)| (held.0 == i).then_some(held.1), || (i + 1, Some((i, i + 1))))
        };
        assert_eq!(get(3), 4);
        assert_eq!(
            remember(&TEST, 3u32, |held: &(u32, u32)| (held.0 == 3).then_some(held.1), || panic!("built twice")),
            4
        );
        // A miss builds with the cache released: building may use it.
        let outer =
            remember(&TEST, 9u32, |held: &(u32, u32)| (held.0 == 9).then_some(held.1), || (get(5) * 2, Some((9, 12))));
        assert_eq!(outer, 12);
        assert_eq!(get(5), 6);
        assert_eq!(
            remember(&TEST, 9u32, |held: &(u32, u32)| (held.0 == 9).then_some(held.1), || panic!("built twice")),
            12
        );
    }
}
