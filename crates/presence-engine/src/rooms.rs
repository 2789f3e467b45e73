//! The membership index: which users are joined to which rooms, each room's remote servers,
//! and each room's change log.
//!
//! A room's log holds `(stream position, member)` for presence changes of its members and for
//! joins. Reading "what changed in my rooms since token t" is a binary search plus a scan of
//! each room's tail, so a sync costs what it returns, not the size of the server. Logs are
//! compacted to the last entry per member, which keeps the answer exact for every token: a
//! member changed after `t` iff its last entry is after `t`.
//!
//! [`Rooms`] owns every per-room column (IDs, rooms, logs, marks) and is the only
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
    /// Compact the log when it reaches this length (twice its length after the last
    /// compaction, so compaction stays amortised O(1) per append).
    compact_at: u32,
}

/// A room's change log.
type Log = Vec<(StreamPos, UserIdx)>;

impl Room {
    pub(crate) fn new(excluded: bool) -> Self {
        Self {
            excluded,
            members: Vec::new(),
            servers: Vec::new(),
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

    /// Removes a member (not its log entries); false if it was not joined.
    fn remove_member(&mut self, user: UserIdx, remote_server: Option<u32>) -> bool {
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
        true
    }

    pub(crate) fn has_server(&self, server: u32) -> bool {
        self.servers.iter().any(|(s, _)| *s == server)
    }
}

/// Appends a change to a room's log, compacting when the log has grown well past one entry
/// per member.
fn append(log: &mut Log, pos: StreamPos, user: UserIdx, compact_at: &mut u32, stamps: &mut Stamps) {
    log.push((pos, user));
    if log.len() >= *compact_at as usize {
        compact_log(log, stamps);
        let len = log.len();
        *compact_at = u32::try_from((2 * len).max(MIN_COMPACT_AT as usize)).unwrap_or(u32::MAX);
        // Give back what the next cycle will not need.
        if log.capacity() > *compact_at as usize * 2 {
            log.shrink_to(*compact_at as usize);
        }
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
    /// Per room: the position of its latest log entry, saturated at `u32::MAX` (0 for none,
    /// and always for excluded rooms), so a sync skips unchanged rooms without touching them.
    /// Four bytes a room keep the column small enough to stay mostly in cache; positions
    /// past `u32::MAX` only make the test inconclusive (see [`Rooms::maybe_changed`]).
    last: Vec<u32>,
    /// Per room: its change log.
    logs: Vec<Log>,
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
            logs: Vec::new(),
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
            self.logs.push(Log::new());
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

    /// False only if room `r`'s log has nothing after `after`: the latest position, as
    /// stored, is not after it (exact below `u32::MAX`; from there on, true).
    #[inline]
    pub(crate) fn maybe_changed(&self, r: u32, after: StreamPos) -> bool {
        let last = self.last[r as usize];
        u64::from(last) > after || last == u32::MAX
    }

    /// The members of room `r` with log entries after `after`, up to and including `upto`
    /// (a member may come more than once).
    #[inline]
    pub(crate) fn changes(
        &self,
        r: u32,
        after: StreamPos,
        upto: StreamPos,
    ) -> impl Iterator<Item = UserIdx> + '_ {
        // Readers are mostly caught up, so what they want is at the tail: walk back from the
        // end (cost proportional to the answer) instead of a binary search over the log.
        let log = &self.logs[r as usize];
        let mut start = log.len();
        while start > 0 && log[start - 1].0 > after {
            start -= 1;
        }
        log[start..]
            .iter()
            .take_while(move |&&(p, _)| p <= upto)
            .map(|&(_, m)| m)
    }

    /// Records a change in a room's log. Excluded rooms keep no log: nobody reads it.
    #[inline]
    pub(crate) fn log_change(&mut self, r: u32, pos: StreamPos, user: UserIdx) {
        let room = &mut self.rooms[r as usize];
        if room.excluded {
            return;
        }
        append(
            &mut self.logs[r as usize],
            pos,
            user,
            &mut room.compact_at,
            &mut self.compact_marks,
        );
        self.last[r as usize] = u32::try_from(pos).unwrap_or(u32::MAX);
    }

    /// Removes a member of room `r` and its log entries; false if it was not joined.
    pub(crate) fn remove_member(
        &mut self,
        r: u32,
        user: UserIdx,
        remote_server: Option<u32>,
    ) -> bool {
        if !self.rooms[r as usize].remove_member(user, remote_server) {
            return false;
        }
        self.logs[r as usize].retain(|&(_, m)| m != user);
        true
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

#[cfg(test)]
mod tests {
    use super::*;

    fn room(rooms: &mut Rooms, name: &str) -> u32 {
        rooms.intern(&RoomId::parse(name).unwrap(), || false)
    }

    /// The four-byte latest positions are exact below `u32::MAX` and only inconclusive past
    /// it: the log itself still answers exactly.
    #[test]
    fn latest_positions_past_u32_stay_exact_through_the_log() {
        let mut rooms = Rooms::new();
        let (a, b) = (room(&mut rooms, "!a:x"), room(&mut rooms, "!b:x"));
        let big = u64::from(u32::MAX);
        rooms.log_change(a, 7, UserIdx(1));
        assert!(rooms.maybe_changed(a, 6));
        assert!(!rooms.maybe_changed(a, 7));
        assert!(!rooms.maybe_changed(b, 0), "no log, no change");
        rooms.log_change(b, big + 5, UserIdx(2));
        assert!(rooms.maybe_changed(b, 7));
        assert!(
            rooms.maybe_changed(b, big + 9),
            "inconclusive past u32::MAX"
        );
        assert_eq!(rooms.changes(b, big + 9, big + 20).count(), 0);
        assert_eq!(
            rooms.changes(b, big + 4, big + 20).collect::<Vec<_>>(),
            vec![UserIdx(2)]
        );
        assert!(
            !rooms.maybe_changed(a, big + 9),
            "below u32::MAX it stays exact"
        );
    }
}
