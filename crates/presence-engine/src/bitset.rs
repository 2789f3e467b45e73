//! A flat bit per user: the "listening" and "already woken" marks the wake-up fan-out tests
//! for every member of every touched room, so they are one `u64` load and mask each.

/// A growable set of small integers, one bit each.
#[derive(Debug, Default, Clone)]
pub(crate) struct BitSet {
    words: Vec<u64>,
}

impl BitSet {
    /// Makes room for indices `0..n` (new ones are clear); never shrinks.
    pub(crate) fn grow(&mut self, n: usize) {
        let words = n.div_ceil(64);
        if self.words.len() < words {
            self.words.resize(words, 0);
        }
    }

    #[inline]
    fn split(i: u32) -> (usize, u64) {
        (i as usize / 64, 1 << (i % 64))
    }

    /// Sets bit `i`, which must be below the grown size.
    #[inline]
    pub(crate) fn set(&mut self, i: u32) {
        let (w, bit) = Self::split(i);
        self.words[w] |= bit;
    }

    /// Clears bit `i`, which must be below the grown size.
    #[inline]
    pub(crate) fn clear(&mut self, i: u32) {
        let (w, bit) = Self::split(i);
        self.words[w] &= !bit;
    }

    /// Whether bit `i` is set, which must be below the grown size.
    #[inline]
    pub(crate) fn test(&self, i: u32) -> bool {
        let (w, bit) = Self::split(i);
        self.words[w] & bit != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_clear_test_grow() {
        let mut s = BitSet::default();
        s.grow(130);
        for i in [0, 63, 64, 129] {
            assert!(!s.test(i));
            s.set(i);
            assert!(s.test(i));
        }
        s.clear(64);
        assert!(!s.test(64) && s.test(63));
        s.grow(10); // never shrinks
        assert!(s.test(129));
    }
}
