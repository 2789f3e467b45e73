//! The presence stream: the current stream position (the presence part of a sync token) and
//! the global change log that serves readers whose routers answer `All`.
//!
//! The log holds `(position, user)` for every notified change, compacted to the last entry
//! per user like the room logs (see [`crate::rooms`]), so "who changed after token t" stays
//! exact for every token while the log stays proportional to the number of users.

use crate::{
    UserIdx,
    rooms::{StreamPos, compact_log},
    stamp::Stamps,
};

/// Entries allowed beyond two per user before the global log is compacted.
const COMPACT_SLACK: usize = 1024;

/// Stream position and global change log.
pub(crate) struct Stream {
    pos: StreamPos,
    /// `(pos, user)`, ascending by pos.
    log: Vec<(StreamPos, UserIdx)>,
    compact_marks: Stamps,
}

impl Stream {
    pub(crate) fn new() -> Self {
        Self {
            pos: 0,
            log: Vec::new(),
            compact_marks: Stamps::new(),
        }
    }

    /// The current position.
    #[inline]
    pub(crate) fn current(&self) -> StreamPos {
        self.pos
    }

    /// Takes the next position.
    #[inline]
    pub(crate) fn advance(&mut self) -> StreamPos {
        self.pos += 1;
        self.pos
    }

    /// Moves the position to at least `pos` (restoring, or committing a peeked position).
    pub(crate) fn advance_to(&mut self, pos: StreamPos) {
        self.pos = self.pos.max(pos);
    }

    /// Logs a change; entries must come in position order.
    #[inline]
    pub(crate) fn log_change(&mut self, pos: StreamPos, user: UserIdx) {
        self.log.push((pos, user));
    }

    /// Compacts the log once it holds well over one entry per user (amortised O(1) per
    /// change).
    pub(crate) fn maybe_compact(&mut self, users: usize) {
        if self.log.len() > 2 * users + COMPACT_SLACK {
            compact_log(&mut self.log, &mut self.compact_marks);
        }
    }

    /// The whole log: every user with a notified change, at its latest position.
    pub(crate) fn log(&self) -> &[(StreamPos, UserIdx)] {
        &self.log
    }

    /// The entries after `after`.
    pub(crate) fn since(&self, after: StreamPos) -> &[(StreamPos, UserIdx)] {
        let start = self.log.partition_point(|&(p, _)| p <= after);
        &self.log[start..]
    }
}
