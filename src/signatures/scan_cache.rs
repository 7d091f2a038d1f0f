//! Remembered scans of field values that many clients send alike.
//!
//! Most of the rule set looks at the user agent, and a site sees a few
//! thousand distinct user agents among millions of requests: scanning the
//! same string with the same automata again and again is most of what the
//! signature stage costs. This cache, one per thread (it lives in the
//! signature stage's per-thread scratch, borrowed once per request),
//! keeps the atoms a value matched, keyed by the compiled set, the field and the value itself
//! (compared in full, so a hash collision only costs a scan).
//!
//! The cache is a [`SetAssociative`] one: a value may sit in any of
//! [`WAYS`](crate::thread_cache::WAYS) slots of its set, and a miss replaces the least recently used
//! one. It was direct-mapped, and with the hash seeded at random per
//! process, two hot values sometimes shared a slot and evicted each other
//! on every request: in one of four measured replays of the same 30,000
//! requests, 8,224 rescans cost 1,500 instructions per request more than
//! in the others.
//!
//! Only fields whose values repeat across clients are cached (see
//! [`Field::repeats_across_clients`]); paths, bodies and cookies are
//! scanned every time, and encoded queries go to a cache of their own
//! (see `compile`'s `Scratch::queries`), so that a stream of distinct
//! queries cannot push the user agents out. The cache holds values and atom numbers, never
//! request text that could reach a log. Memory is bounded: [`SLOTS`] slots
//! per thread, values of at most [`MAX_VALUE`] bytes.

use std::hash::BuildHasher;

use super::field::Field;
use crate::thread_cache::SetAssociative;

/// Slots per thread.
const SLOTS: usize = 1024;
/// Longer values are scanned every time (user agents are ~100–200 bytes).
pub const MAX_VALUE: usize = 512;

/// One remembered scan: the compiled set, the field and the value it was
/// made for, and the atoms the value matched.
struct Slot {
    set: u64,
    field: usize,
    value: Box<[u8]>,
    atoms: Box<[usize]>,
}

/// The cache; [`Cache::default`] is the one a thread keeps.
pub struct Cache<S = hashbrown::DefaultHashBuilder> {
    slots: SetAssociative<Slot, S>,
}

impl Default for Cache {
    fn default() -> Self {
        Cache::new(hashbrown::DefaultHashBuilder::default())
    }
}

impl Cache {
    /// A cache of `slots` slots (rounded up to a power of two).
    pub fn with_slots(slots: usize) -> Self {
        Cache { slots: SetAssociative::with_hasher(slots, hashbrown::DefaultHashBuilder::default()) }
    }
}

impl<S: BuildHasher> Cache<S> {
    fn new(hasher: S) -> Self {
        Cache { slots: SetAssociative::with_hasher(SLOTS, hasher) }
    }

    /// The atoms `value` of `field` (the set's field index) matched in set
    /// `set`, appended to `hits`: from the cache, or from `scan` (which
    /// appends them itself), whose result is then remembered.
    pub fn scan_with(
        &mut self,
        set: u64,
        field: usize,
        value: &[u8],
        hits: &mut Vec<usize>,
        scan: impl FnOnce(&mut Vec<usize>),
    ) {
        if value.len() > MAX_VALUE {
            scan(hits);
            return;
        }
        let found = self.slots.find((set, field, value), |held| {
            (held.set == set && held.field == field && *held.value == *value)
                .then(|| hits.extend_from_slice(&held.atoms))
        });
        if let Err(miss) = found {
            let start = hits.len();
            scan(hits);
            self.slots.insert(miss, Slot { set, field, value: Box::from(value), atoms: Box::from(&hits[start..]) });
        }
    }
}

impl Field {
    /// Whether this field's values come from a small vocabulary many
    /// clients share (user agents, client hints, header-name lists), so
    /// remembering their scans pays; per-request values (paths, queries,
    /// bodies, cookies, referers) would only churn the cache.
    pub fn repeats_across_clients(&self) -> bool {
        match self {
            Field::UserAgent
            | Field::Method
            | Field::Version
            | Field::HeaderNames
            | Field::Fingerprint
            | Field::Ja4
            | Field::Profile
            | Field::Route
            | Field::Asn
            | Field::AsnOrg => true,
            Field::Path | Field::Query | Field::Body => false,
            Field::Header(name) => {
                let name = name.as_str();
                name.starts_with("accept")
                    || name.starts_with("sec-")
                    || matches!(
                        name,
                        "user-agent"
                            | "x-requested-with"
                            | "connection"
                            | "upgrade-insecure-requests"
                            | "te"
                            | "dnt"
                            | "priority"
                    )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::thread_cache::WAYS;

    fn scan_counting(calls: &mut usize, result: &[usize]) -> impl FnOnce(&mut Vec<usize>) {
        *calls += 1;
        let result = result.to_vec();
        move |hits: &mut Vec<usize>| hits.extend(result)
    }

    #[test]
    fn a_value_seen_again_is_answered_from_the_cache_and_other_sets_fields_and_values_are_not() {
        let mut cache = Cache::default();
        let mut calls = 0;
        let mut hits = vec![99];
        cache.scan_with(1, 0, b"curl/8.5.0", &mut hits, scan_counting(&mut calls, &[3, 7]));
        assert_eq!(hits, [99, 3, 7]);
        let mut again = Vec::new();
        cache.scan_with(1, 0, b"curl/8.5.0", &mut again, |_| panic!("scanned twice"));
        assert_eq!(again, [3, 7]);
        // Another compiled set (a reload), field or value is scanned afresh.
        for (set, field, value) in [(2, 0, &b"curl/8.5.0"[..]), (1, 1, b"curl/8.5.0"), (1, 0, b"curl/8.6.0")] {
            let mut fresh = Vec::new();
            let mut scanned = false;
            cache.scan_with(set, field, value, &mut fresh, |hits| {
                scanned = true;
                hits.push(1);
            });
            assert!(scanned, "{set} {field} {value:?}");
            assert_eq!(fresh, [1]);
        }
        assert_eq!(calls, 1);
    }

    /// Puts every value in the same set.
    struct OneSet;

    impl BuildHasher for OneSet {
        type Hasher = Zero;
        fn build_hasher(&self) -> Zero {
            Zero
        }
    }

    struct Zero;

    impl std::hash::Hasher for Zero {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, _: &[u8]) {}
    }

    #[test]
    fn values_sharing_a_set_stay_until_the_least_recently_used_is_replaced() {
        let mut cache = Cache::new(OneSet);
        let values: Vec<Vec<u8>> = (0..=WAYS).map(|i| format!("agent-{i}").into_bytes()).collect();
        let mut scanned = Vec::new();
        let look = |cache: &mut Cache<OneSet>, i: usize, scanned: &mut Vec<usize>| {
            let mut hits = Vec::new();
            cache.scan_with(9, 0, &values[i], &mut hits, |hits| {
                scanned.push(i);
                hits.push(i);
            });
            assert_eq!(hits, [i]);
        };
        // The set fills without an eviction, and hits keep their values.
        for i in 0..WAYS {
            look(&mut cache, i, &mut scanned);
        }
        for i in (0..WAYS).rev() {
            look(&mut cache, i, &mut scanned);
        }
        assert_eq!(scanned, (0..WAYS).collect::<Vec<_>>());
        // A new value replaces the least recently used: the last way.
        look(&mut cache, WAYS, &mut scanned);
        look(&mut cache, 0, &mut scanned);
        look(&mut cache, WAYS - 1, &mut scanned);
        assert_eq!(scanned[WAYS..], [WAYS, WAYS - 1]);
    }

    #[test]
    fn long_values_are_always_scanned() {
        let mut cache = Cache::default();
        let long = vec![b'a'; MAX_VALUE + 1];
        for _ in 0..2 {
            let mut scanned = false;
            cache.scan_with(5, 0, &long, &mut Vec::new(), |_| scanned = true);
            assert!(scanned);
        }
    }

    #[test]
    fn per_request_fields_are_not_cached() {
        assert!(Field::UserAgent.repeats_across_clients());
        assert!(Field::parse("header:sec-ch-ua").unwrap().repeats_across_clients());
        for name in ["path", "query", "body", "header:cookie", "header:referer", "header:authorization"] {
            assert!(!Field::parse(name).unwrap().repeats_across_clients(), "{name}");
        }
    }
}
