//! Generation stamps: O(1) "seen in this pass" marks over all users (or rooms) without
//! clearing.
//!
//! The marks grow on first use of an index, so they never need to be kept in step with the
//! tables they shadow.

use crate::UserIdx;

#[derive(Default)]
pub(crate) struct Stamps {
    marks: Vec<u32>,
    pass: u32,
}

impl Stamps {
    pub(crate) fn new() -> Self {
        Self::default()
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
        // The same single length check indexing would do; growing is the cold branch.
        let m = match self.marks.get_mut(i as usize) {
            Some(m) => m,
            None => self.grow_to(i),
        };
        if *m == pass {
            false
        } else {
            *m = pass;
            true
        }
    }

    #[cold]
    fn grow_to(&mut self, i: u32) -> &mut u32 {
        let i = i as usize;
        // `resize` grows the capacity geometrically, so first uses stay amortised O(1).
        self.marks.resize(i + 1, 0);
        &mut self.marks[i]
    }
}

/// Users marked since the last [`MarkList::take`], each listed once, in marking order.
pub(crate) struct MarkList {
    list: Vec<UserIdx>,
    stamps: Stamps,
    pass: u32,
}

impl MarkList {
    pub(crate) fn new() -> Self {
        let mut stamps = Stamps::new();
        let pass = stamps.next();
        Self {
            list: Vec::new(),
            stamps,
            pass,
        }
    }

    pub(crate) fn mark(&mut self, u: UserIdx) {
        if self.stamps.mark(u.0, self.pass) {
            self.list.push(u);
        }
    }

    /// The marked users; the list starts empty again.
    pub(crate) fn take(&mut self) -> Vec<UserIdx> {
        self.pass = self.stamps.next();
        std::mem::take(&mut self.list)
    }
}
