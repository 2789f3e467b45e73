//! A small deterministic random number generator (SplitMix64), so that a benchmark run is
//! reproducible from its `--seed` on any machine and the crate needs no RNG dependency.
//!
//! Algorithm: Steele, Lea and Flood, "Fast splittable pseudorandom number generators"
//! (OOPSLA 2014). Not for anything but workload generation.

/// A seeded SplitMix64 generator.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator whose whole sequence is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`). Multiply-shift: the bias is below `n / 2^64`, far under
    /// anything a benchmark could notice.
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// A number in `[0, 1)`.
    #[inline]
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Moves `k` distinct elements chosen uniformly at random to the front of `items` (a
    /// partial Fisher–Yates shuffle) and returns them.
    pub fn choose_front<'a, T>(&mut self, items: &'a mut [T], k: usize) -> &'a [T] {
        let k = k.min(items.len());
        for i in 0..k {
            let j = i + self.below(items.len() - i);
            items.swap(i, j);
        }
        &items[..k]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_values_in_range() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let xs: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(Rng::new(8).next_u64(), xs[0]);
        let mut r = Rng::new(1);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            let x = r.below(10);
            seen[x] = true;
            let u = r.unit();
            assert!((0.0..1.0).contains(&u));
        }
        assert!(
            seen.iter().all(|&s| s),
            "every value of 0..10 drawn: {seen:?}"
        );
    }

    #[test]
    fn choose_front_picks_distinct_elements() {
        let mut r = Rng::new(3);
        let mut items: Vec<u32> = (0..50).collect();
        let mut front = r.choose_front(&mut items, 20).to_vec();
        front.sort_unstable();
        front.dedup();
        assert_eq!(front.len(), 20);
        let mut all = items.clone();
        all.sort_unstable();
        assert_eq!(
            all,
            (0..50).collect::<Vec<_>>(),
            "a permutation of the input"
        );
        assert_eq!(r.choose_front(&mut items, 80).len(), 50);
    }
}
