//! A distinct-count sketch: HyperLogLog with a sparse start.
//!
//! Redis has the same structure natively (PFADD/PFCOUNT), so the shared
//! backend maps onto it one to one. Here, a sketch starts as a short sorted
//! list of item hashes (exact, small) and becomes 2^10 one-byte registers
//! (about 3% standard error, 1 KiB) once it holds more than 128 items, so
//! memory stays bounded however many distinct items arrive.

const PRECISION: u32 = 10;
const REGISTERS: usize = 1 << PRECISION;
const SPARSE_LIMIT: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DistinctSketch {
    Sparse(Vec<u64>),
    Dense(Box<[u8; REGISTERS]>),
}

impl Default for DistinctSketch {
    fn default() -> Self {
        DistinctSketch::Sparse(Vec::new())
    }
}

/// What adding an item changed in a sketch: what a count of a union with
/// this sketch needs to know to stay right without counting again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// The item was there already (or its register was high enough).
    Nothing,
    /// A new item in the exact list.
    Item,
    /// A register of the dense sketch rose from `from` to `rank`.
    Register { index: usize, from: u8, rank: u8 },
    /// The list grew too long and became registers.
    Densified,
}

impl DistinctSketch {
    /// Add an item, given as a well-mixed 64-bit hash; whether the
    /// sketch changed (so a cached count is stale).
    pub fn add(&mut self, hash: u64) -> bool {
        self.add_telling(hash) != Added::Nothing
    }

    /// Add an item, and say what changed.
    pub fn add_telling(&mut self, hash: u64) -> Added {
        match self {
            DistinctSketch::Sparse(items) => match items.binary_search(&hash) {
                Ok(_) => Added::Nothing,
                Err(at) => {
                    items.insert(at, hash);
                    if items.len() > SPARSE_LIMIT {
                        let mut dense = Box::new([0u8; REGISTERS]);
                        for item in items.iter() {
                            set_register(&mut dense, *item);
                        }
                        *self = DistinctSketch::Dense(dense);
                        Added::Densified
                    } else {
                        Added::Item
                    }
                }
            },
            DistinctSketch::Dense(registers) => {
                let (index, rank) = register_of(hash);
                let from = registers[index];
                if set_register(registers, hash) { Added::Register { index, from, rank } } else { Added::Nothing }
            }
        }
    }

    /// Whether the exact list holds `hash` (`None` for registers).
    pub fn holds(&self, hash: u64) -> Option<bool> {
        match self {
            DistinctSketch::Sparse(items) => Some(items.binary_search(&hash).is_ok()),
            DistinctSketch::Dense(_) => None,
        }
    }

    /// The value register `index` has in this sketch, or would have were
    /// the list made registers.
    pub fn register(&self, index: usize) -> u8 {
        match self {
            DistinctSketch::Sparse(items) => items
                .iter()
                .map(|&item| register_of(item))
                .filter(|&(at, _)| at == index)
                .map(|(_, rank)| rank)
                .max()
                .unwrap_or(0),
            DistinctSketch::Dense(registers) => registers.get(index).copied().unwrap_or(0),
        }
    }

    /// [`DistinctSketch::register`] as it was before `hash` was added to
    /// the exact list (what the list's other items give register `index`).
    pub fn register_without(&self, index: usize, hash: u64) -> u8 {
        match self {
            DistinctSketch::Sparse(items) => items
                .iter()
                .filter(|&&item| item != hash)
                .map(|&item| register_of(item))
                .filter(|&(at, _)| at == index)
                .map(|(_, rank)| rank)
                .max()
                .unwrap_or(0),
            DistinctSketch::Dense(_) => self.register(index),
        }
    }

    /// The register an item goes to and the rank it offers there.
    pub fn register_of(hash: u64) -> (usize, u8) {
        register_of(hash)
    }

    /// Bytes held outside the sketch itself (for the store's budget).
    pub fn heap_bytes(&self) -> usize {
        match self {
            DistinctSketch::Sparse(items) if items.capacity() == 0 => 0,
            DistinctSketch::Sparse(items) => items.capacity() * 8 + 16,
            DistinctSketch::Dense(_) => REGISTERS + 16,
        }
    }

    /// Estimated number of distinct items in the union of `sketches`.
    pub fn union_count<'a>(sketches: impl IntoIterator<Item = &'a DistinctSketch>) -> u64 {
        Self::union(sketches).count()
    }

    /// The union of `sketches`, counted: exactly while every sketch is a
    /// list, else from the merged registers (with their sum kept, when it
    /// is exact, so that a register rising later need not merge again).
    pub fn union<'a>(sketches: impl IntoIterator<Item = &'a DistinctSketch>) -> Union {
        let mut sparse: Vec<u64> = Vec::new();
        let mut merged = [0u8; REGISTERS];
        let mut any_dense = false;
        for sketch in sketches {
            match sketch {
                DistinctSketch::Sparse(items) => sparse.extend_from_slice(items),
                DistinctSketch::Dense(registers) => {
                    any_dense = true;
                    for (m, r) in merged.iter_mut().zip(registers.iter()) {
                        *m = (*m).max(*r);
                    }
                }
            }
        }
        if any_dense {
            for item in sparse {
                set_register(&mut merged, item);
            }
            match RegisterSum::of(&merged) {
                Some(sum) => Union::Registers(sum),
                None => Union::Counted(estimate(&merged)),
            }
        } else {
            sparse.sort_unstable();
            sparse.dedup();
            Union::Counted(sparse.len() as u64)
        }
    }
}

/// A union of sketches, counted (see [`DistinctSketch::union`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Union {
    /// The count, with nothing kept to update it by.
    Counted(u64),
    /// The merged registers' exact sum: the count follows from it.
    Registers(RegisterSum),
}

impl Union {
    pub fn count(self) -> u64 {
        match self {
            Union::Counted(count) => count,
            Union::Registers(sum) => sum.count(),
        }
    }
}

/// The highest register value [`RegisterSum`] holds: 2^-41 is then the
/// smallest term, and every partial sum of 1,024 terms is a whole number
/// of 2^-41 below 2^11, which an `f64` holds exactly (52 bits).
const EXACT_RANK: u8 = 41;
/// Bits of [`RegisterSum`]'s packed word that hold the nonzero registers'
/// sum: at most 1,024 × 2^40 units of 2^-41, which is 2^50.
const SUM_BITS: u32 = 51;

/// The sum of 2^-register over a set of registers none above
/// [`EXACT_RANK`], in whole units of 2^-41, and how many registers are 0:
/// what [`estimate`] reads from them. Kept for a union, so that a register
/// rising in one of its sketches updates the count with two terms instead
/// of merging and summing 1,024 registers again (a login to a busy
/// fingerprint's or subnet's sketches did that twice, ~11k instructions
/// each). Exact, so the count is to the last bit the one `estimate` gives:
/// `estimate` adds the same terms in order, and no partial sum of them
/// rounds.
///
/// Packed in one word (the zeros above [`SUM_BITS`]) so that a windowed
/// count caching it is no larger than one caching the count alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterSum(u64);

impl RegisterSum {
    /// The registers' sum, when none is above [`EXACT_RANK`].
    fn of(registers: &[u8; REGISTERS]) -> Option<RegisterSum> {
        if registers.iter().any(|&r| r > EXACT_RANK) {
            return None;
        }
        let zeros = registers.iter().filter(|&&r| r == 0).count() as u64;
        // Integer addition: any order gives the same sum.
        let nonzero: u64 = registers.iter().map(|&r| term(r)).sum::<u64>() - zeros * term(0);
        Some(RegisterSum::pack(nonzero, zeros))
    }

    fn pack(nonzero: u64, zeros: u64) -> RegisterSum {
        RegisterSum(zeros << SUM_BITS | nonzero)
    }

    fn nonzero(self) -> u64 {
        self.0 & ((1 << SUM_BITS) - 1)
    }

    fn zeros(self) -> u64 {
        self.0 >> SUM_BITS
    }

    /// The sum once one register went from `from` to `to` (unchanged
    /// unless `to` is higher); `None` when `to` is past what is held
    /// exactly.
    pub fn raise(self, from: u8, to: u8) -> Option<RegisterSum> {
        if to <= from {
            return Some(self);
        }
        if to > EXACT_RANK {
            return None;
        }
        let (nonzero, zeros) = match from {
            0 => (self.nonzero(), self.zeros() - 1),
            _ => (self.nonzero() - term(from), self.zeros()),
        };
        Some(RegisterSum::pack(nonzero + term(to), zeros))
    }

    /// The count [`estimate`] gives for these registers.
    pub fn count(self) -> u64 {
        let units = self.nonzero() + self.zeros() * term(0);
        // Below 2^53: converted exactly, and scaled by a power of two.
        let sum = units as f64 / (1u64 << EXACT_RANK) as f64;
        estimate_from(sum, self.zeros() as usize)
    }
}

/// 2^-r in units of 2^-41.
fn term(r: u8) -> u64 {
    1 << (EXACT_RANK - r)
}

/// The register an item goes to and the rank it offers there.
fn register_of(hash: u64) -> (usize, u8) {
    let index = (hash >> (64 - PRECISION)) as usize;
    let rest = hash << PRECISION | (1 << (PRECISION - 1));
    (index, rest.leading_zeros() as u8 + 1)
}

/// Whether the register grew.
fn set_register(registers: &mut [u8; REGISTERS], hash: u64) -> bool {
    let (index, rank) = register_of(hash);
    let grew = rank > registers[index];
    registers[index] = registers[index].max(rank);
    grew
}

fn estimate(registers: &[u8; REGISTERS]) -> u64 {
    // 2^-r straight from the exponent bits: r is at most 55 here.
    let sum: f64 = registers.iter().map(|&r| f64::from_bits((1023 - u64::from(r)) << 52)).sum();
    let zeros = registers.iter().filter(|&&r| r == 0).count();
    estimate_from(sum, zeros)
}

/// The estimate from the registers' sum of 2^-register and their zeros.
fn estimate_from(sum: f64, zeros: usize) -> u64 {
    let m = REGISTERS as f64;
    let alpha = 0.7213 / (1.0 + 1.079 / m);
    let raw = alpha * m * m / sum;
    let value = if raw <= 2.5 * m && zeros > 0 { m * (m / zeros as f64).ln() } else { raw };
    value.round() as u64
}

/// A well-mixed 64-bit hash of bytes (for sketch items; not a secret).
pub fn item_hash(bytes: &[u8]) -> u64 {
    let digest = blake3::hash(bytes);
    u64::from_le_bytes(digest.as_bytes()[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_while_small_close_when_large() {
        let mut sketch = DistinctSketch::default();
        for i in 0..100u64 {
            sketch.add(item_hash(&i.to_le_bytes()));
            sketch.add(item_hash(&i.to_le_bytes()));
        }
        assert_eq!(DistinctSketch::union_count([&sketch]), 100);
        for i in 100..10_000u64 {
            sketch.add(item_hash(&i.to_le_bytes()));
        }
        let estimate = DistinctSketch::union_count([&sketch]) as f64;
        assert!((estimate - 10_000.0).abs() / 10_000.0 < 0.1, "{estimate}");
    }

    proptest::proptest! {
        /// A register sum counts as `estimate` does to the last bit, made
        /// at once or kept up to date one raised register at a time; a
        /// register past the exact range is left to `estimate`.
        #[test]
        fn a_register_sum_counts_as_the_registers_do(
            seed in proptest::collection::vec(0u8..=EXACT_RANK, REGISTERS),
            raises in proptest::collection::vec((0usize..REGISTERS, 1u8..=56), 0..3000),
        ) {
            let mut registers: [u8; REGISTERS] = seed.try_into().expect("1,024 registers");
            let mut kept = RegisterSum::of(&registers);
            proptest::prop_assert!(kept.is_some());
            for (index, rank) in raises {
                let from = registers[index];
                registers[index] = from.max(rank);
                kept = kept.and_then(|sum| sum.raise(from, rank));
                let afresh = RegisterSum::of(&registers);
                proptest::prop_assert_eq!(kept, afresh);
                match afresh {
                    Some(sum) => proptest::prop_assert_eq!(sum.count(), estimate(&registers)),
                    None => proptest::prop_assert!(registers.iter().any(|&r| r > EXACT_RANK)),
                }
            }
        }
    }

    /// Registers as items give them (ranks mostly 1 to 10), from empty to
    /// full: the sum counts as `estimate` does at every size, through the
    /// small-range correction and past it.
    #[test]
    fn register_sums_of_real_items_count_as_estimate_does() {
        let mut registers = [0u8; REGISTERS];
        for i in 0..60_000u64 {
            set_register(&mut registers, item_hash(&i.to_le_bytes()));
            if i % 97 == 0 {
                let sum = RegisterSum::of(&registers).expect("ranks this low");
                assert_eq!(sum.count(), estimate(&registers), "after {i} items");
            }
        }
    }

    #[test]
    fn unions_count_shared_items_once() {
        let (mut a, mut b) = (DistinctSketch::default(), DistinctSketch::default());
        for i in 0..300u64 {
            a.add(item_hash(&i.to_le_bytes()));
        }
        for i in 200..400u64 {
            b.add(item_hash(&i.to_le_bytes()));
        }
        let union = DistinctSketch::union_count([&a, &b]) as f64;
        assert!((union - 400.0).abs() / 400.0 < 0.1, "{union}");
    }
}
