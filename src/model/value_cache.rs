//! Remembered work on header values that many clients send alike.
//!
//! A site sees a few thousand distinct user agents, header sets and HTTP
//! fingerprints among millions of requests, yet the feature stage
//! classified the user agent (an automaton pass and a dozen substring
//! searches), read the header names' traits (prefix and substring tests
//! per name) and computed the keyed hashes of the user agent and of the
//! fingerprint (a BLAKE3 each) on every request. This per-thread,
//! set-associative cache keeps what that work gave (and the keyed hashes of
//! client addresses and paths, which repeat across a client's requests
//! and across clients), keyed by the hashing
//! secret's tag (0 for work without a secret) and by the exact bytes the
//! work read (compared in full, so a collision of the slot hash only costs
//! the work again): an answer from the cache is the answer the work would
//! give.
//!
//! Memory is bounded: [`SLOTS`] slots per cache and thread, values of at
//! most [`MAX_VALUE`] bytes (longer ones are worked out every time). The
//! cache holds user agents, header names, fingerprints, client addresses
//! and paths, which the decision log writes anyway, and items of keyed
//! hashes, never a hashing secret.

use std::cell::RefCell;
use std::hash::{Hash, Hasher};
use std::thread::LocalKey;

use crate::thread_cache::{self, SetAssociative};

/// Slots per cache and thread (a power of two).
const SLOTS: usize = 1024;
/// Longer values are worked out every time (user agents are ~100–200
/// bytes, fingerprints under 100).
pub const MAX_VALUE: usize = 512;

pub struct Slot<V> {
    tag: u64,
    /// The value's parts laid end to end.
    value: Box<[u8]>,
    remembered: V,
}

/// One cache: a thread's slots for one kind of value.
pub type Cache<V> = SetAssociative<Slot<V>>;

/// A cache's slots for this thread.
pub fn cache<V>() -> Cache<V> {
    SetAssociative::new(SLOTS)
}

/// What a value is remembered by: the secret's tag and the value's parts.
struct Parts<'p> {
    tag: u64,
    parts: &'p [&'p [u8]],
}

impl Hash for Parts<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.tag);
        for part in self.parts {
            state.write(part);
        }
    }
}

/// What `work` gives for the value `parts` (laid end to end) under the
/// secret named `tag`: from `cache`, or from `work`, whose answer is then
/// remembered. Equal bytes under equal tags must give equal answers. (The
/// slot is chosen by the parts as given: a caller splits a value the same
/// way every time, or only misses more.)
pub fn remember<V: Clone + 'static>(
    cache: &'static LocalKey<RefCell<Cache<V>>>,
    tag: u64,
    parts: &[&[u8]],
    work: impl FnOnce() -> V,
) -> V {
    let len: usize = parts.iter().map(|part| part.len()).sum();
    if len > MAX_VALUE {
        return work();
    }
    thread_cache::remember(
        cache,
        Parts { tag, parts },
        |held: &Slot<V>| (held.tag == tag && same_bytes(&held.value, parts)).then(|| held.remembered.clone()),
        || {
            let remembered = work();
            (remembered.clone(), Some(Slot { tag, value: parts.concat().into_boxed_slice(), remembered }))
        },
    )
}

/// Whether `value` is `parts` laid end to end.
fn same_bytes(value: &[u8], parts: &[&[u8]]) -> bool {
    let mut rest = value;
    for part in parts {
        let Some((head, tail)) = rest.split_at_checked(part.len()) else { return false };
        if head != *part {
            return false;
        }
        rest = tail;
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static TEST: RefCell<Cache<u32>> = RefCell::new(cache());
    }

    #[test]
    fn a_value_seen_again_is_answered_from_the_cache_and_other_tags_and_values_are_not() {
        assert_eq!(remember(&TEST, 1, &[b"curl/", b"8.5.0"], || 7), 7);
        assert_eq!(remember(&TEST, 1, &[b"curl/", b"8.5.0"], || panic!("worked twice")), 7);
        // Another secret, or other bytes (longer, shorter, different), work afresh.
        for (tag, value) in [(2, &b"curl/8.5.0"[..]), (1, b"curl/8.5.0 "), (1, b"curl/8.5."), (1, b"curl/8.6.0")] {
            let mut worked = false;
            let answer = remember(&TEST, tag, &[value], || {
                worked = true;
                9
            });
            assert!(worked, "{tag} {value:?}");
            assert_eq!(answer, 9);
        }
    }

    #[test]
    fn long_values_are_always_worked_out() {
        let long = vec![b'a'; MAX_VALUE + 1];
        for _ in 0..2 {
            let mut worked = false;
            remember(&TEST, 1, &[&long], || {
                worked = true;
                1
            });
            assert!(worked);
        }
    }
}
