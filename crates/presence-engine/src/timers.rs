//! One live timer per user: a min-heap of deadlines with lazy invalidation.
//!
//! Each user has at most one valid heap entry (`queued[user]`). Moving a deadline later keeps
//! the earlier entry: when it fires, the engine re-checks the user and schedules the next real
//! deadline, so frequent updates cost no heap traffic. Moving a deadline earlier pushes a new
//! entry and the old one becomes stale (skipped when popped).

use std::{cmp::Reverse, collections::BinaryHeap};

use presence_router::Millis;

#[derive(Default)]
pub(crate) struct TimerQueue {
    heap: BinaryHeap<Reverse<(Millis, u32)>>,
    /// The deadline of each user's valid entry; 0 = none.
    queued: Vec<Millis>,
}

impl TimerQueue {
    /// Makes sure `user` is checked no later than `at`.
    pub(crate) fn schedule(&mut self, user: u32, at: Millis) {
        let at = at.max(1);
        let i = user as usize;
        if self.queued.len() <= i {
            // First timer of a new user: the column grows here, so it cannot lag the users.
            self.queued.resize(i + 1, 0);
        }
        let q = &mut self.queued[i];
        if *q != 0 && *q <= at {
            return;
        }
        *q = at;
        self.heap.push(Reverse((at, user)));
    }

    /// Pops every user due at `now`.
    pub(crate) fn pop_due(&mut self, now: Millis, out: &mut Vec<u32>) {
        while let Some(&Reverse((at, user))) = self.heap.peek() {
            if at > now {
                break;
            }
            self.heap.pop();
            let q = &mut self.queued[user as usize];
            if *q == at {
                *q = 0;
                out.push(user);
            }
        }
    }

    /// The earliest pending deadline (may be a stale entry, which is harmless: it only wakes
    /// the driver early).
    pub(crate) fn next_deadline(&self) -> Option<Millis> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_live_entry_per_user() {
        let mut t = TimerQueue::default();
        t.schedule(0, 100);
        t.schedule(0, 200); // later: kept at 100
        t.schedule(1, 300);
        t.schedule(1, 150); // earlier: 300 becomes stale
        let mut out = Vec::new();
        t.pop_due(99, &mut out);
        assert!(out.is_empty());
        t.pop_due(160, &mut out);
        assert_eq!(out, [0, 1]);
        out.clear();
        t.pop_due(1_000, &mut out);
        assert!(out.is_empty(), "stale entry must not fire: {out:?}");
        assert_eq!(t.next_deadline(), None);
    }
}
