//! Remembered scans of field values that many clients send alike.
//!
//! Most of the rule set looks at the user agent, and a site sees a few
//! thousand distinct user agents among millions of requests: scanning the
//! same string with the same automata again and again is most of what the
//! signature stage costs. This per-thread, direct-mapped cache keeps the
//! atoms a value matched, keyed by the compiled set, the field and the
//! value itself (compared in full, so a hash collision only costs a scan).
//!
//! Only fields whose values repeat across clients are cached (see
//! [`Field::repeats_across_clients`]); paths, queries, bodies and cookies
//! are scanned every time. The cache holds values and atom numbers, never
//! request text that could reach a log. Memory is bounded: [`SLOTS`] slots
//! per thread, values of at most [`MAX_VALUE`] bytes.

use std::cell::RefCell;

use super::field::Field;
use crate::thread_cache::DirectMapped;

/// Slots per thread (a power of two).
const SLOTS: usize = 1024;
/// Longer values are scanned every time (user agents are ~100–200 bytes).
pub const MAX_VALUE: usize = 512;

struct Slot {
    set: u64,
    field: usize,
    value: Box<[u8]>,
    atoms: Box<[usize]>,
}

thread_local! {
    static CACHE: RefCell<DirectMapped<Slot>> = RefCell::new(DirectMapped::new(SLOTS));
}

/// The atoms `value` of `field` (the set's field index) matched in set
/// `set`, appended to `hits`: from the cache, or from `scan` (which
/// appends them itself), whose result is then remembered.
pub fn scan_with(set: u64, field: usize, value: &[u8], hits: &mut Vec<usize>, scan: impl FnOnce(&mut Vec<usize>)) {
    if value.len() > MAX_VALUE {
        scan(hits);
        return;
    }
    CACHE.with(|cache| {
        let Ok(mut cache) = cache.try_borrow_mut() else {
            // Re-entered on this thread (it cannot be today): just scan.
            scan(hits);
            return;
        };
        let slot = cache.slot((set, field, value));
        if let Some(held) = slot
            && held.set == set
            && held.field == field
            && *held.value == *value
        {
            hits.extend_from_slice(&held.atoms);
            return;
        }
        let start = hits.len();
        scan(hits);
        *slot = Some(Slot { set, field, value: Box::from(value), atoms: Box::from(&hits[start..]) });
    });
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

    fn scan_counting(calls: &mut usize, result: &[usize]) -> impl FnOnce(&mut Vec<usize>) {
        *calls += 1;
        let result = result.to_vec();
        move |hits: &mut Vec<usize>| hits.extend(result)
    }

    #[test]
    fn a_value_seen_again_is_answered_from_the_cache_and_other_sets_fields_and_values_are_not() {
        let mut calls = 0;
        let mut hits = vec![99];
        scan_with(1, 0, b"curl/8.5.0", &mut hits, scan_counting(&mut calls, &[3, 7]));
        assert_eq!(hits, [99, 3, 7]);
        let mut again = Vec::new();
        scan_with(1, 0, b"curl/8.5.0", &mut again, |_| panic!("scanned twice"));
        assert_eq!(again, [3, 7]);
        // Another compiled set (a reload), field or value is scanned afresh.
        for (set, field, value) in [(2, 0, &b"curl/8.5.0"[..]), (1, 1, b"curl/8.5.0"), (1, 0, b"curl/8.6.0")] {
            let mut fresh = Vec::new();
            let mut scanned = false;
            scan_with(set, field, value, &mut fresh, |hits| {
                scanned = true;
                hits.push(1);
            });
            assert!(scanned, "{set} {field} {value:?}");
            assert_eq!(fresh, [1]);
        }
        assert_eq!(calls, 1);
    }

    #[test]
    fn long_values_are_always_scanned() {
        let long = vec![b'a'; MAX_VALUE + 1];
        for _ in 0..2 {
            let mut scanned = false;
            scan_with(5, 0, &long, &mut Vec::new(), |_| scanned = true);
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
