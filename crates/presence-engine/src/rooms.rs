//! The membership index: which users are joined to which rooms, each room's remote servers,
//! and each room's change log.
//!
//! A room's log holds `(stream position, member)` for presence changes of its members and for
//! joins. Reading "what changed in my rooms since token t" is a binary search plus a scan of
//! each room's tail, so a sync costs what it returns, not the size of the server. Logs are
//! compacted to the last entry per member, which keeps the answer exact for every token: a
//! member changed after `t` iff its last entry is after `t`.
//!
//! [`Rooms`] owns every per-room column (IDs, rooms, last positions, marks) and is the only
//! place that adds a room, so the columns cannot get out of step.

use presence_router::RoomId;

use crate::{UserIdx, intern::Interner, stamp::Stamps};

/// A stream position.
pub type StreamPos = u64;

/// The shortest log length that triggers a compaction.
const MIN_COMPACT_AT: u32 = 8;

pub(crate) struct Room {
    pub(crate) excluded: bool,
    /// Joined members, sorted.
    pub(crate) members: Vec<UserIdx>,
    /// Remote servers with joined members here, with their member counts.
    pub(crate) servers: Vec<(u32, u32)>,
    /// `(pos, member)`, ascending by pos.
    pub(crate) log: Vec<(StreamPos, UserIdx)>,
    /// Compact the log when it reaches this length (twice its length after the last
    /// compaction, so compaction stays amortised O(1) per append).
    compact_at: u32,
}

impl Room {
    pub(crate) fn new(excluded: bool) -> Self {
        Self {
            excluded,
            members: Vec::new(),
            servers: Vec::new(),
            log: Vec::new(),
            compact_at: MIN_COMPACT_AT,
        }
    }

    /// Adds a member; false if already joined.
    pub(crate) fn add_member(&mut self, user: UserIdx, remote_server: Option<u32>) -> bool {
        match self.members.binary_search(&user) {
            Ok(_) => false,
            Err(at) => {
                self.members.insert(at, user);
                if let Some(s) = remote_server {
                    match self.servers.iter_mut().find(|(id, _)| *id == s) {
                        Some((_, n)) => *n += 1,
                        None => self.servers.push((s, 1)),
                    }
                }
                true
            }
        }
    }

    /// Removes a member and its log entries; false if it was not joined.
    pub(crate) fn remove_member(&mut self, user: UserIdx, remote_server: Option<u32>) -> bool {
        let Ok(at) = self.members.binary_search(&user) else {
            return false;
        };
        self.members.remove(at);
        if let Some(s) = remote_server
            && let Some(i) = self.servers.iter().position(|(id, _)| *id == s)
        {
            self.servers[i].1 -= 1;
            if self.servers[i].1 == 0 {
                self.servers.swap_remove(i);
            }
        }
        self.log.retain(|&(_, m)| m != user);
        true
    }

    pub(crate) fn has_server(&self, server: u32) -> bool {
        self.servers.iter().any(|(s, _)| *s == server)
    }

    /// Appends a change, compacting when the log has grown well past one entry per member.
    fn log_change(&mut self, pos: StreamPos, user: UserIdx, stamps: &mut Stamps) {
        self.log.push((pos, user));
        if self.log.len() >= self.compact_at as usize {
            compact_log(&mut self.log, stamps);
            let len = self.log.len();
            self.compact_at =
                u32::try_from((2 * len).max(MIN_COMPACT_AT as usize)).unwrap_or(u32::MAX);
            // Give back what the next cycle will not need.
            if self.log.capacity() > self.compact_at as usize * 2 {
                self.log.shrink_to(self.compact_at as usize);
            }
        }
    }

    /// Entries after `after`, up to and including `upto`.
    pub(crate) fn changes(
        &self,
        after: StreamPos,
        upto: StreamPos,
    ) -> impl Iterator<Item = UserIdx> + '_ {
        // Readers are mostly caught up, so what they want is at the tail: walk back from the
        // end (cost proportional to the answer) instead of a binary search over the log.
        let mut start = self.log.len();
        while start > 0 && self.log[start - 1].0 > after {
            start -= 1;
        }
        self.log[start..]
            .iter()
            .take_while(move |&&(p, _)| p <= upto)
            .map(|&(_, m)| m)
    }
}

/// Keeps only the last entry of each member, in order.
pub(crate) fn compact_log(log: &mut Vec<(StreamPos, UserIdx)>, stamps: &mut Stamps) {
    let pass = stamps.next();
    let mut keep = vec![false; log.len()];
    for (i, &(_, m)) in log.iter().enumerate().rev() {
        if stamps.mark(m.0, pass) {
            keep[i] = true;
        }
    }
    let mut i = 0;
    log.retain(|_| {
        let k = keep[i];
        i += 1;
        k
    });
}

/// Every room, by dense index.
pub(crate) struct Rooms {
    ids: Interner<RoomId>,
    rooms: Vec<Room>,
    /// Per room: the position of its latest log entry (0 for none, and always for excluded
    /// rooms), so a sync skips unchanged rooms without touching them.
    last: Vec<StreamPos>,
    /// Per room: "touched in this pass" marks for the wake-up fan-out.
    touched: Stamps,
    /// Per user: the marks log compaction uses.
    compact_marks: Stamps,
}

impl Rooms {
    pub(crate) fn new() -> Self {
        Self {
            ids: Interner::new(),
            rooms: Vec::new(),
            last: Vec::new(),
            touched: Stamps::new(),
            compact_marks: Stamps::new(),
        }
    }

    /// The index of a known room.
    pub(crate) fn get(&self, id: &RoomId) -> Option<u32> {
        self.ids.get(id.as_str())
    }

    /// Every room with its ID, in index order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&RoomId, &Room)> {
        self.rooms
            .iter()
            .enumerate()
            .map(|(i, room)| (self.ids.resolve_index(i), room))
    }

    /// The index of `id`, adding the room (with no members) if new.
    pub(crate) fn intern(&mut self, id: &RoomId, excluded: impl FnOnce() -> bool) -> u32 {
        let (idx, new) = self.ids.intern(id);
        if new {
            self.rooms.push(Room::new(excluded()));
            self.last.push(0);
        }
        idx
    }

    #[inline]
    pub(crate) fn room(&self, r: u32) -> &Room {
        &self.rooms[r as usize]
    }

    #[inline]
    pub(crate) fn room_mut(&mut self, r: u32) -> &mut Room {
        &mut self.rooms[r as usize]
    }

    /// The position of the room's latest log entry.
    #[inline]
    pub(crate) fn last(&self, r: u32) -> StreamPos {
        self.last[r as usize]
    }

    /// Records a change in a room's log. Excluded rooms keep no log: nobody reads it.
    #[inline]
    pub(crate) fn log_change(&mut self, r: u32, pos: StreamPos, user: UserIdx) {
        let room = &mut self.rooms[r as usize];
        if room.excluded {
            return;
        }
        room.log_change(pos, user, &mut self.compact_marks);
        self.last[r as usize] = pos;
    }

    /// Starts a pass of [`Self::touch`].
    pub(crate) fn next_pass(&mut self) -> u32 {
        self.touched.next()
    }

    /// True the first time in `pass` that a non-excluded room is touched.
    #[inline]
    pub(crate) fn touch(&mut self, r: u32, pass: u32) -> bool {
        !self.rooms[r as usize].excluded && self.touched.mark(r, pass)
    }
}
