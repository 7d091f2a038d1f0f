//! Request ids: short, unique per process, and reproducible in replay
//! (same seed, same sequence).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(pub u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

#[derive(Debug)]
pub struct RequestIds {
    seed: u64,
    next: AtomicU64,
}

impl RequestIds {
    pub fn new(seed: u64) -> Self {
        RequestIds { seed, next: AtomicU64::new(0) }
    }

    /// A seed that differs between processes and starts.
    pub fn random_seed() -> u64 {
        let nanos = crate::clock::Clock::now(&crate::clock::SystemClock);
        splitmix64(nanos ^ (u64::from(std::process::id()) << 32))
    }

    pub fn next_id(&self) -> RequestId {
        RequestId(splitmix64(self.seed.wrapping_add(self.next.fetch_add(1, Ordering::Relaxed))))
    }
}

/// A bijective mixer: distinct inputs give distinct ids.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}
