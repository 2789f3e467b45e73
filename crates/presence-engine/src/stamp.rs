//! Generation stamps: O(1) "seen in this pass" marks over all users without clearing.

pub(crate) struct Stamps {
    marks: Vec<u32>,
    pass: u32,
}

impl Stamps {
    pub(crate) fn new() -> Self {
        Self {
            marks: Vec::new(),
            pass: 0,
        }
    }

    pub(crate) fn ensure_len(&mut self, n: usize) {
        if self.marks.len() < n {
            self.marks.resize(n, 0);
        }
    }

    /// Starts a new pass.
    pub(crate) fn next(&mut self) -> u32 {
        self.pass = self.pass.wrapping_add(1);
        if self.pass == 0 {
            // Wrapped: old marks could collide, so clear them once every 4 billion passes.
            self.marks.fill(0);
            self.pass = 1;
        }
        self.pass
    }

    /// Marks `i` in pass `pass`; true if it was not marked yet.
    #[inline]
    pub(crate) fn mark(&mut self, i: u32, pass: u32) -> bool {
        let m = &mut self.marks[i as usize];
        if *m == pass {
            false
        } else {
            *m = pass;
            true
        }
    }
}
