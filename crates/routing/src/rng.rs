//! A cheap, lock-free random number source for load balancing and weighted choices.

use std::sync::atomic::{AtomicU64, Ordering};

/// SplitMix64 over an atomic counter: every call advances a Weyl sequence by one step and
/// mixes the result, so concurrent callers never block each other and a seeded router gives
/// the same sequence of choices on one thread (what the distribution tests rely on).
#[derive(Debug)]
pub(crate) struct Rng {
    state: AtomicU64,
}

const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng {
            state: AtomicU64::new(seed),
        }
    }

    pub(crate) fn next_u64(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(GAMMA, Ordering::Relaxed)
            .wrapping_add(GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n > 0`), by multiply-shift (no division, bias below 2^-32 for the
    /// sizes we use).
    pub(crate) fn below(&self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// A seed for routers built without one: different per process and per router.
pub(crate) fn default_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let rng = Rng::new(7);
        let mut seen = [0u32; 5];
        for _ in 0..5_000 {
            let v = rng.below(5) as usize;
            seen[v] += 1;
        }
        // Each bucket expects 1,000; 3 sigma is about 85.
        for count in seen {
            assert!((915..=1085).contains(&count), "{seen:?}");
        }
    }

    #[test]
    fn seeded_sequences_repeat() {
        let a = Rng::new(42);
        let b = Rng::new(42);
        for _ in 0..10 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }
}
