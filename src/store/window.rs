//! Counter arithmetic shared by every store backend, so the in-process and
//! Redis stores give the same numbers: sliding-window counts, distinct
//! counts over the same windows, and exponentially decayed values.
//!
//! Requests read the clock before they run their plans, so with several
//! workers a counter can be reached late: by a request that read the clock
//! before another one moved the counter into a new window. A late read
//! reads what is held and a late add joins the window it belongs to,
//! rather than reading nothing or starting the counter afresh. The Redis
//! script is not changed: a late add there still starts its counter
//! afresh, and only its sliding counts (read with [`sliding_estimate`])
//! read late as here.

use std::time::Duration;

use super::sketch::{Added, DistinctSketch, RegisterSum, Union};
use crate::clock::Nanos;

fn window_index(now: Nanos, window: Duration) -> u64 {
    now / (window.as_nanos() as u64).max(1)
}

/// The window `now` is in ([`window_index`]) and how far into it, from
/// 0.0 to 1.0: both from one width.
fn window_position(now: Nanos, window: Duration) -> (u64, f64) {
    let width = (window.as_nanos() as u64).max(1);
    (now / width, (now % width) as f64 / width as f64)
}

/// Events in the last `window`, estimated from the current and previous
/// fixed windows (the previous one weighted by how much of it still
/// overlaps the sliding window).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SlidingCount {
    index: u64,
    current: u64,
    previous: u64,
}

impl SlidingCount {
    pub fn add(&mut self, now: Nanos, window: Duration, n: u64) {
        self.add_at(window_index(now, window), n);
    }

    /// [`SlidingCount::add`] (unless `n` is 0, which adds nothing and
    /// moves no window) and then [`SlidingCount::estimate`], with the
    /// window worked out once.
    pub fn add_and_estimate(&mut self, now: Nanos, window: Duration, n: u64) -> f64 {
        let (index, fraction) = window_position(now, window);
        if n > 0 {
            self.add_at(index, n);
        }
        sliding_estimate(index, fraction, self.index, self.current, self.previous)
    }

    /// Add `n` events to the window numbered `index`.
    fn add_at(&mut self, index: u64, n: u64) {
        if index < self.index {
            // Late: a request that read the clock before another one rolled
            // the window. Its events belong to the previous window (an
            // older one no longer counts).
            if index + 1 == self.index {
                self.previous += n;
            }
            return;
        }
        if index != self.index {
            self.previous = if index == self.index + 1 { self.current } else { 0 };
            self.current = 0;
            self.index = index;
        }
        self.current += n;
    }

    pub fn estimate(&self, now: Nanos, window: Duration) -> f64 {
        let (index, fraction) = window_position(now, window);
        sliding_estimate(index, fraction, self.index, self.current, self.previous)
    }

    pub fn is_expired(&self, now: Nanos, window: Duration) -> bool {
        window_index(now, window) > self.index + 1
    }
}

/// The sliding estimate from raw window counts (the Redis backend reads
/// the two windows' counts and calls this too).
pub fn sliding_estimate(now_index: u64, fraction: f64, index: u64, current: u64, previous: u64) -> f64 {
    if now_index == index {
        previous as f64 * (1.0 - fraction) + current as f64
    } else if now_index == index + 1 {
        current as f64 * (1.0 - fraction)
    } else if now_index < index {
        // Read late, by a request that read the clock before another one
        // rolled the window: everything held (a count read never comes
        // out lower for being read a moment late).
        (previous + current) as f64
    } else {
        0.0
    }
}

/// Distinct items seen in the current and previous fixed windows.
#[derive(Debug, Clone, Default)]
pub struct WindowedDistinct {
    index: u64,
    current: DistinctSketch,
    previous: DistinctSketch,
    /// The last count, until an item changes the sketches or the window
    /// rolls: most adds of a busy key change nothing.
    cached: Cached,
}

/// What a [`WindowedDistinct`] knows of its count without counting again.
/// As large as an `Option<u64>`, which it replaced: the store's memory
/// accounting weighs a sketch by its size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Cached {
    /// Nothing: the next read counts the union.
    #[default]
    Stale,
    Count(u64),
    /// The union's merged registers' sum, which a register rising in the
    /// current sketch updates.
    Registers(RegisterSum),
}

impl Cached {
    fn count(self) -> Option<u64> {
        match self {
            Cached::Stale => None,
            Cached::Count(count) => Some(count),
            Cached::Registers(sum) => Some(sum.count()),
        }
    }
}

impl From<Union> for Cached {
    fn from(union: Union) -> Self {
        match union {
            Union::Counted(count) => Cached::Count(count),
            Union::Registers(sum) => Cached::Registers(sum),
        }
    }
}

impl WindowedDistinct {
    pub fn add(&mut self, now: Nanos, window: Duration, item: u64) {
        self.roll(now, window);
        self.add_rolled(item);
    }

    /// [`WindowedDistinct::add`] (when there is an item) and then
    /// [`WindowedDistinct::count`], with the windows rolled once.
    pub fn add_and_count(&mut self, now: Nanos, window: Duration, item: Option<u64>) -> u64 {
        self.roll(now, window);
        if let Some(item) = item {
            self.add_rolled(item);
        }
        self.counted()
    }

    /// The count of the windows as rolled: cached, or counted and cached.
    fn counted(&mut self) -> u64 {
        if let Some(count) = self.cached.count() {
            return count;
        }
        let union = DistinctSketch::union([&self.current, &self.previous]);
        self.cached = Cached::from(union);
        union.count()
    }

    /// Add `item` to windows already rolled to the time of the add.
    fn add_rolled(&mut self, item: u64) {
        // Keep the cached count when what changed tells what the count
        // becomes (counting a union of dense sketches reads 2 × 1,024
        // registers; of lists, sorts them): a new item of two exact lists
        // adds one unless the previous list has it; a register that rose no
        // higher than the previous sketch's leaves the union as it was, and
        // one that rose higher changes two terms of a sum of registers
        // kept. Anything else counts again when next read.
        self.cached = match (self.current.add_telling(item), self.cached) {
            (Added::Nothing, cached) => cached,
            (Added::Item, Cached::Count(count)) => match self.previous.holds(item) {
                Some(held) => Cached::Count(count + u64::from(!held)),
                None => Cached::Stale,
            },
            // A new item of the current list beside the previous window's
            // registers (a busy key just after its window rolled): the
            // union's register at the item's index goes from the higher of
            // the previous sketch's and the list's other items' to the
            // item's rank. Counting the union again merged and summed 1,024
            // registers (~11k instructions) on each of the list's first 128
            // items.
            (Added::Item, Cached::Registers(sum)) => {
                let (index, rank) = DistinctSketch::register_of(item);
                let from = self.previous.register(index).max(self.current.register_without(index, item));
                sum.raise(from, rank).map_or(Cached::Stale, Cached::Registers)
            }
            (Added::Register { index, from, rank }, cached @ (Cached::Count(_) | Cached::Registers(_))) => {
                let floor = self.previous.register(index);
                match cached {
                    _ if rank <= floor => cached,
                    // The merged register goes from the higher of the two
                    // sketches' to the new rank.
                    Cached::Registers(sum) => sum.raise(from.max(floor), rank).map_or(Cached::Stale, Cached::Registers),
                    _ => Cached::Stale,
                }
            }
            _ => Cached::Stale,
        };
    }

    pub fn count(&mut self, now: Nanos, window: Duration) -> u64 {
        self.roll(now, window);
        self.counted()
    }

    fn roll(&mut self, now: Nanos, window: Duration) {
        let index = window_index(now, window);
        // A late request (it read the clock before another one rolled the
        // window) reads and adds to the windows as they are.
        if index > self.index {
            let current = std::mem::take(&mut self.current);
            self.previous = if index == self.index + 1 { current } else { DistinctSketch::default() };
            self.index = index;
            self.cached = Cached::Stale;
        }
    }

    pub fn is_expired(&self, now: Nanos, window: Duration) -> bool {
        window_index(now, window) > self.index + 1
    }

    /// Bytes the two sketches hold outside this struct.
    pub fn heap_bytes(&self) -> usize {
        self.current.heap_bytes() + self.previous.heap_bytes()
    }
}

/// A distinct count that has seen one item only: what most keys of a
/// flood hold (one username per new address), kept inline at a fraction
/// of a [`WindowedDistinct`]'s memory and counting exactly as one would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OneDistinct {
    index: u64,
    item: u64,
}

impl OneDistinct {
    pub fn new(now: Nanos, window: Duration, item: u64) -> Self {
        OneDistinct { index: window_index(now, window), item }
    }

    /// Add an item; `Some` with the full sketch to hold from now on when
    /// this one cannot hold it (a second item while the first still
    /// counts).
    pub fn add(&mut self, now: Nanos, window: Duration, item: u64) -> Option<WindowedDistinct> {
        let index = window_index(now, window);
        if index < self.index && (item == self.item || index + 1 < self.index) {
            // Late (a request that read the clock before another one moved
            // the item on): the same item, or one too old to count.
            return None;
        }
        if index >= self.index && (item == self.item || index > self.index + 1) {
            // The same item seen again, or the held one has left the
            // windows: still one item, in this window.
            *self = OneDistinct { index, item };
            return None;
        }
        let mut full = WindowedDistinct::default();
        let width = (window.as_nanos() as u64).max(1);
        full.add(self.index.saturating_mul(width), window, self.item);
        full.add(now, window, item);
        Some(full)
    }

    pub fn count(&self, now: Nanos, window: Duration) -> u64 {
        // Read late, the item is held all the same.
        u64::from(window_index(now, window) <= self.index + 1)
    }

    pub fn is_expired(&self, now: Nanos, window: Duration) -> bool {
        window_index(now, window) > self.index + 1
    }
}

/// An exponentially decayed sum: each event's weight halves every
/// `half_life`. Used for baselines ("the usual login failure ratio").
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Decayed {
    value: f64,
    at: Nanos,
}

impl Decayed {
    pub fn add(&mut self, now: Nanos, half_life: Duration, amount: f64) -> f64 {
        self.value = self.read(now, half_life) + amount;
        self.at = self.at.max(now);
        self.value
    }

    pub fn read(&self, now: Nanos, half_life: Duration) -> f64 {
        decay(self.value, now.saturating_sub(self.at), half_life)
    }

    pub fn is_expired(&self, now: Nanos, half_life: Duration) -> bool {
        self.read(now, half_life) < 1e-3
    }
}

/// Gaps a rhythm averages over: recent enough to follow a client that
/// changes pace, long enough that one odd gap does not decide.
pub const RHYTHM_SPAN: u32 = 16;
/// Gaps needed before a rhythm is read.
pub const RHYTHM_MIN_GAPS: u32 = 3;

/// The rhythm of a client's arrivals: running means of the gaps between
/// them and of their squares (weights 1/n up to [`RHYTHM_SPAN`], then
/// exponential). A script sleeping a fixed time, or sending as fast as
/// answers come, has nearly equal gaps; a person's are bursts (a page
/// and its sub-resources) and pauses (reading, typing).
///
/// The Redis script keeps the same four numbers and the same update, and
/// [`Rhythm::variation`] turns either into the reading.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rhythm {
    /// Last arrival, microseconds.
    pub last_us: u64,
    /// Gaps counted (capped at the span).
    pub gaps: u32,
    /// Mean gap and mean squared gap, microseconds.
    pub mean: f64,
    pub square: f64,
}

impl Rhythm {
    /// Note an arrival at `now`; a gap longer than `window` starts afresh.
    pub fn arrive(&mut self, now: Nanos, window: Duration) {
        let now_us = now / 1_000;
        if now_us < self.last_us {
            // Late: a request that read the clock before the last arrival
            // was noted. Not a gap, and no reason to start afresh.
            return;
        }
        let gap = now_us - self.last_us;
        if self.last_us == 0 || gap > window.as_micros() as u64 {
            *self = Rhythm { last_us: now_us, ..Rhythm::default() };
            return;
        }
        self.gaps = (self.gaps + 1).min(RHYTHM_SPAN);
        let weight = 1.0 / f64::from(self.gaps);
        let gap = gap as f64;
        self.mean += weight * (gap - self.mean);
        self.square += weight * (gap * gap - self.square);
        self.last_us = now_us;
    }

    /// Coefficient of variation of the gaps; NaN before
    /// [`RHYTHM_MIN_GAPS`] gaps or when they average zero.
    pub fn variation(gaps: u32, mean: f64, square: f64) -> f64 {
        if gaps < RHYTHM_MIN_GAPS || mean <= 0.0 {
            return f64::NAN;
        }
        (square - mean * mean).max(0.0).sqrt() / mean
    }

    pub fn read(&self) -> f64 {
        Rhythm::variation(self.gaps, self.mean, self.square)
    }

    pub fn is_expired(&self, now: Nanos, window: Duration) -> bool {
        (now / 1_000).saturating_sub(self.last_us) > window.as_micros() as u64
    }
}

pub fn decay(value: f64, elapsed_nanos: u64, half_life: Duration) -> f64 {
    let nanos = half_life.as_nanos().max(1);
    // Through `u64` when it fits: the same rounding of the same integer,
    // without the software conversion a `u128` takes.
    let half_life = match u64::try_from(nanos) {
        Ok(nanos) => nanos as f64,
        Err(_) => nanos as f64,
    };
    value * (-(elapsed_nanos as f64) / half_life * std::f64::consts::LN_2).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);
    const S: u64 = 1_000_000_000;

    #[test]
    fn sliding_counts_fade_out_of_the_window() {
        let mut count = SlidingCount::default();
        let start = 1_000 * 60 * S;
        for _ in 0..10 {
            count.add(start, MIN, 1);
        }
        assert_eq!(count.estimate(start, MIN), 10.0);
        assert_eq!(count.estimate(start + 90 * S, MIN), 5.0, "half of the previous window overlaps");
        assert_eq!(count.estimate(start + 200 * S, MIN), 0.0);
        assert!(count.is_expired(start + 200 * S, MIN));
    }

    proptest::proptest! {
        /// A count kept up to date as items arrive is the count of the two
        /// sketches made afresh, through lists, registers and rolls (few
        /// item values so that repeats happen; many so that lists densify).
        #[test]
        fn a_kept_count_is_the_count_made_afresh(
            steps in proptest::collection::vec((0u64..3_000, 0u64..300, proptest::bool::ANY), 1..800)
        ) {
            let mut distinct = WindowedDistinct::default();
            let mut now = 1_000 * 60 * S;
            for (item, seconds, read) in steps {
                // Mostly within a window (a few hundred items: lists become
                // registers), now and then into the next one.
                now += if seconds == 299 { 61 * S } else { seconds * S / 3_000 };
                distinct.add(now, MIN, super::super::sketch::item_hash(&item.to_le_bytes()));
                if read {
                    let kept = distinct.count(now, MIN);
                    let afresh = DistinctSketch::union_count([&distinct.current, &distinct.previous]);
                    proptest::prop_assert_eq!(kept, afresh);
                }
            }
        }
    }

    proptest::proptest! {
        /// Adding and counting at once counts, and leaves, what an add (none
        /// without an item) and a count one after the other do: late adds
        /// and rolls included.
        #[test]
        fn adding_and_counting_at_once_is_adding_then_counting(
            steps in proptest::collection::vec(
                (0u64..400, 0u64..300, proptest::bool::ANY, proptest::option::of(0u64..500)),
                1..600
            )
        ) {
            let (mut fused, mut apart) = (WindowedDistinct::default(), WindowedDistinct::default());
            let mut now = 1_000 * 60 * S;
            for (step, seconds, back, item) in steps {
                let step = if seconds == 299 { 61 * S } else { step * S / 40 };
                now = if back { now - step / 4 } else { now + step };
                let item = item.map(|item| super::super::sketch::item_hash(&item.to_le_bytes()));
                let counted = fused.add_and_count(now, MIN, item);
                if let Some(item) = item {
                    apart.add(now, MIN, item);
                }
                proptest::prop_assert_eq!(counted, apart.count(now, MIN));
                proptest::prop_assert_eq!((fused.index, fused.cached), (apart.index, apart.cached));
                proptest::prop_assert_eq!(
                    DistinctSketch::union_count([&fused.current, &fused.previous]),
                    DistinctSketch::union_count([&apart.current, &apart.previous])
                );
            }
        }
    }

    /// A kept count is no larger than the `Option<u64>` it replaced: the
    /// store weighs a sketch by its size.
    #[test]
    fn a_cached_count_is_as_large_as_an_optional_count() {
        assert_eq!(std::mem::size_of::<Cached>(), std::mem::size_of::<Option<u64>>());
    }

    /// Two dense windows (thousands of items each), a read after every
    /// add: the count kept through raised registers is the count made
    /// afresh, and most adds did not count afresh.
    #[test]
    fn dense_windows_keep_their_count_through_raised_registers() {
        let mut distinct = WindowedDistinct::default();
        let start = 1_000 * 60 * S;
        let mut kept_registers = 0;
        for i in 0..6_000u64 {
            let now = start + i * S / 50;
            let item = super::super::sketch::item_hash(&i.to_le_bytes());
            let counted = distinct.add_and_count(now, MIN, Some(item));
            assert_eq!(counted, DistinctSketch::union_count([&distinct.current, &distinct.previous]), "item {i}");
            kept_registers += usize::from(matches!(distinct.cached, Cached::Registers(_)));
        }
        assert!(kept_registers > 5_000, "{kept_registers}");
    }

    /// A busy key's window rolls: the new window's list beside the
    /// previous window's registers keeps its count through each new item
    /// (repeats and items of one register among them), with no count
    /// made afresh until the list becomes registers.
    #[test]
    fn a_new_list_beside_old_registers_keeps_its_count() {
        let mut distinct = WindowedDistinct::default();
        let start = 1_000 * 60 * S;
        let hash = |i: u64| super::super::sketch::item_hash(&i.to_le_bytes());
        for i in 0..3_000u64 {
            distinct.add(start, MIN, hash(i));
        }
        let next = start + 61 * S;
        let mut kept = 0;
        for i in 0..400u64 {
            // Old items, new ones, and repeats of both.
            let item = hash(if i % 3 == 0 { i % 50 } else { 10_000 + i % 60 });
            let was = distinct.cached;
            let counted = distinct.add_and_count(next, MIN, Some(item));
            assert_eq!(counted, DistinctSketch::union_count([&distinct.current, &distinct.previous]), "item {i}");
            kept += usize::from(matches!(was, Cached::Registers(_)) && matches!(distinct.cached, Cached::Registers(_)));
        }
        assert!(matches!(distinct.current, DistinctSketch::Sparse(_)), "still a list");
        assert!(kept > 390, "{kept}");
    }

    #[test]
    fn distinct_counts_cover_two_windows() {
        let mut distinct = WindowedDistinct::default();
        let start = 1_000 * 60 * S;
        for i in 0..5u64 {
            distinct.add(start, MIN, super::super::sketch::item_hash(&i.to_le_bytes()));
        }
        assert_eq!(distinct.count(start + 61 * S, MIN), 5);
        assert_eq!(distinct.count(start + 130 * S, MIN), 0);
    }

    #[test]
    fn one_item_counts_as_the_full_sketch_does() {
        let items = [7u64, 7, 9, 7, 11, 11, 9, 7];
        for steps in [[0u64, 10, 20, 70, 130, 135, 200, 330], [0, 0, 0, 0, 0, 61, 62, 63]] {
            let mut full = WindowedDistinct::default();
            let start = 1_000 * 60 * S;
            full.add(start, MIN, items[0]);
            let mut one = OneDistinct::new(start, MIN, items[0]);
            let mut upgraded: Option<WindowedDistinct> = None;
            for (step, item) in steps.iter().zip(items).skip(1) {
                let now = start + step * S;
                full.add(now, MIN, item);
                match &mut upgraded {
                    Some(sketch) => sketch.add(now, MIN, item),
                    None => upgraded = one.add(now, MIN, item),
                }
                let counted = match &mut upgraded {
                    Some(sketch) => sketch.count(now, MIN),
                    None => one.count(now, MIN),
                };
                assert_eq!(counted, full.count(now, MIN), "at {step} s after adding {item}");
            }
        }
    }

    #[test]
    fn a_fixed_pace_has_no_variation_and_bursts_have_much() {
        let window = Duration::from_secs(60);
        let mut fixed = Rhythm::default();
        for i in 1..=20u64 {
            fixed.arrive(i * 2 * S, window);
        }
        assert!(fixed.read().abs() < 1e-9, "{}", fixed.read());
        let mut person = Rhythm::default();
        let mut at = S;
        for i in 0..20u64 {
            // A page and three sub-resources within 50 ms, then a pause.
            at += if i % 4 == 0 { 8 * S } else { 15_000_000 };
            person.arrive(at, window);
        }
        assert!(person.read() > 1.0, "{}", person.read());
        let mut fresh = Rhythm::default();
        fresh.arrive(S, window);
        fresh.arrive(2 * S, window);
        assert!(fresh.read().is_nan(), "one gap says nothing yet");
        fixed.arrive(200 * S, window);
        assert_eq!(fixed.gaps, 0, "a gap over the window starts afresh");
    }

    /// Requests read the clock before they run their plans, so two of them
    /// can reach a counter out of order: one that read the clock before a
    /// window boundary after one that read it after. The late one neither
    /// reads nothing nor wipes what the window held.
    #[test]
    fn a_late_request_across_a_window_boundary_neither_reads_nothing_nor_wipes_the_count() {
        let boundary = 1_000 * 60 * S;
        let (early, late) = (boundary - 1_000, boundary + 1_000);
        let mut count = SlidingCount::default();
        count.add(early - 30 * S, MIN, 4);
        count.add(late, MIN, 1);
        assert_eq!(count.estimate(early, MIN), 5.0, "read late: everything held");
        count.add(early, MIN, 1);
        assert!(count.estimate(late, MIN) >= 5.0, "added late: {count:?}");
        assert_eq!(count.estimate(boundary + 60 * S, MIN), 1.0, "the late add left with its window");

        let items = [1u64, 2, 3].map(|i| super::super::sketch::item_hash(&i.to_le_bytes()));
        let mut distinct = WindowedDistinct::default();
        distinct.add(early - 30 * S, MIN, items[0]);
        distinct.add(late, MIN, items[1]);
        distinct.add(early, MIN, items[2]);
        assert_eq!(distinct.count(early, MIN), 3);
        assert_eq!(distinct.count(late, MIN), 3);

        let mut one = OneDistinct::new(late, MIN, items[0]);
        assert_eq!(one.count(early, MIN), 1, "read late");
        assert!(one.add(early, MIN, items[0]).is_none());
        assert_eq!(one.count(late, MIN), 1, "the same item, late, kept its window");
        let mut full = one.add(early, MIN, items[1]).expect("a second item, late");
        assert_eq!(full.count(late, MIN), 2);

        let mut rhythm = Rhythm::default();
        for i in 1..=5 {
            rhythm.arrive(i * S, MIN);
        }
        rhythm.arrive(5 * S - 1_000, MIN);
        assert_eq!((rhythm.gaps, rhythm.last_us), (4, 5_000_000), "a late arrival starts nothing afresh");
    }

    #[test]
    fn decay_halves_per_half_life() {
        let mut decayed = Decayed::default();
        decayed.add(0, MIN, 8.0);
        assert!((decayed.read(60 * S, MIN) - 4.0).abs() < 1e-9);
        assert!((decayed.add(120 * S, MIN, 1.0) - 3.0).abs() < 1e-9);
    }

    proptest::proptest! {
        /// Adding and reading at once answers, and leaves, what an add
        /// (none for 0) and a read one after the other do: late adds,
        /// rolls, gaps and windows of a nanosecond included.
        #[test]
        fn adding_and_estimating_at_once_is_adding_then_estimating(
            window in 1u64..100_000_000_000,
            steps in proptest::collection::vec((0u64..200_000_000_000, proptest::bool::ANY, 0u64..4), 1..200)
        ) {
            let window = Duration::from_nanos(window);
            let (mut fused, mut apart) = (SlidingCount::default(), SlidingCount::default());
            let mut now = 1_000 * 60 * S;
            for (step, back, n) in steps {
                now = if back { now.saturating_sub(step / 8) } else { now + step };
                let read = fused.add_and_estimate(now, window, n);
                if n > 0 {
                    apart.add(now, window, n);
                }
                proptest::prop_assert_eq!(read.to_bits(), apart.estimate(now, window).to_bits());
                proptest::prop_assert_eq!(fused, apart);
            }
        }

        /// A decayed value is the one computed through a `u128`
        /// conversion, to the last bit.
        #[test]
        fn decay_converts_the_half_life_exactly(
            value in -1e12f64..1e12,
            elapsed in proptest::num::u64::ANY,
            secs in proptest::num::u64::ANY,
            nanos in 0u32..1_000_000_000
        ) {
            let half_life = Duration::new(secs, nanos);
            let wide = half_life.as_nanos().max(1) as f64;
            let expected = value * (-(elapsed as f64) / wide * std::f64::consts::LN_2).exp();
            proptest::prop_assert_eq!(decay(value, elapsed, half_life).to_bits(), expected.to_bits());
        }
    }
}
