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
    /// A register of the dense sketch rose to `rank`.
    Register { index: usize, rank: u8 },
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
                if set_register(registers, hash) { Added::Register { index, rank } } else { Added::Nothing }
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
            estimate(&merged)
        } else {
            sparse.sort_unstable();
            sparse.dedup();
            sparse.len() as u64
        }
    }
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
    let m = REGISTERS as f64;
    let alpha = 0.7213 / (1.0 + 1.079 / m);
    // 2^-r straight from the exponent bits: r is at most 55 here.
    let sum: f64 = registers.iter().map(|&r| f64::from_bits((1023 - u64::from(r)) << 52)).sum();
    let raw = alpha * m * m / sum;
    let zeros = registers.iter().filter(|&&r| r == 0).count();
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
