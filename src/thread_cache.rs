//! A bounded, direct-mapped cache for one thread: for values that cost
//! something to build and are asked for again and again with the same
//! inputs (a client's counter keys, a scan of a common user agent).
//!
//! Each input hashes to one slot; a slot holds at most one entry, which
//! the caller compares in full before using it (a hash collision only
//! costs a rebuild) and replaces on a miss. Nothing is ever evicted but by
//! replacement, so memory is the slot count times the entry size, whatever
//! the traffic. Caches live in `thread_local!`s: no lock, and each proxy
//! worker warms its own.

use std::cell::RefCell;
use std::hash::{BuildHasher, Hash};
use std::thread::LocalKey;

pub struct DirectMapped<E> {
    hasher: hashbrown::DefaultHashBuilder,
    slots: Box<[Option<E>]>,
}

impl<E> DirectMapped<E> {
    /// A cache of `slots` slots (rounded up to a power of two).
    pub fn new(slots: usize) -> Self {
        let slots = slots.max(1).next_power_of_two();
        DirectMapped { hasher: hashbrown::DefaultHashBuilder::default(), slots: (0..slots).map(|_| None).collect() }
    }

    /// The slot `input` maps to: the entry there may be another input's.
    pub fn slot(&mut self, input: impl Hash) -> &mut Option<E> {
        let index = self.hasher.hash_one(input) as usize & (self.slots.len() - 1);
        &mut self.slots[index]
    }
}

/// What `cache` holds for `input`, when `hit` accepts the entry in its
/// slot; else what `miss` builds, whose entry (if it gives one) then takes
/// the slot. When the cache cannot be had (re-entered on this thread, or
/// the thread is ending), `miss` builds and nothing is kept.
pub fn remember<E: 'static, R>(
    cache: &'static LocalKey<RefCell<DirectMapped<E>>>,
    input: impl Hash,
    hit: impl FnOnce(&E) -> Option<R>,
    miss: impl FnOnce() -> (R, Option<E>),
) -> R {
    let mut miss = Some(miss);
    let cached = cache.try_with(|cache| {
        let mut cache = cache.try_borrow_mut().ok()?;
        let slot = cache.slot(input);
        if let Some(found) = slot.as_ref().and_then(hit) {
            return Some(found);
        }
        let (built, entry) = miss.take()?();
        if entry.is_some() {
            *slot = entry;
        }
        Some(built)
    });
    match (cached, miss) {
        (Ok(Some(found)), _) => found,
        (_, Some(miss)) => miss().0,
        // `miss` ran, so the closure returned what it built.
        (_, None) => unreachable!("a built value is always returned"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_input_finds_its_slot_again_and_slots_are_bounded() {
        let mut cache: DirectMapped<(u32, u32)> = DirectMapped::new(6);
        assert_eq!(cache.slots.len(), 8);
        *cache.slot(7u32) = Some((7, 49));
        assert_eq!(*cache.slot(7u32), Some((7, 49)));
        for i in 0..1000u32 {
            let slot = cache.slot(i);
            if !matches!(slot, Some((held, _)) if *held == i) {
                *slot = Some((i, i * i));
            }
        }
        assert_eq!(cache.slots.iter().filter(|slot| slot.is_some()).count(), 8);
    }
}
