//! Every interned user and its per-user columns: home server, presence record, stream
//! position, joined rooms, and the listening / woken bits of the wake-up fan-out.
//!
//! The columns are flat arrays indexed by [`UserIdx`] (fan-out touches millions of entries,
//! so no maps and no per-user boxes). [`Users::intern`] is the only place a user is added and
//! it grows every column at once, so an index valid for one column is valid for all.
//!
//! What a sync read of a user needs first (its stream position, its rooms, whether it joined
//! any of them lately) sits in one cache-line-sized [`Hot`] record per user, with the first
//! [`INLINE`] rooms inline: a read starts with one cache miss instead of a chain of them.
//! Rooms past those are in a side list; join positions (0 for memberships restored at
//! startup) are kept apart, since a read only looks at them after a recent join.

use presence_router::{UserId, UserPresenceState};
use rustc_hash::FxHashMap;

use crate::{UserIdx, bitset::BitSet, intern::Interner, machine::Record, rooms::StreamPos};

/// `home` of a local user.
const LOCAL: u32 = u32::MAX;

/// Rooms held in a user's [`Hot`] record; the rest go to [`Users::more`].
const INLINE: usize = 10;

/// The per-user fields of a sync read's first step, in one cache line.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Hot {
    /// The stream position of the latest notified change (0 = none).
    pos: StreamPos,
    /// The highest join position of the user's rooms (0 = none after startup); a read from a
    /// token at or after it has no newly joined room.
    last_join: StreamPos,
    /// Joined rooms.
    len: u32,
    /// 1 + the index in [`Users::more`] of the rooms past the inline ones (0 = none).
    more: u32,
    /// The first joined rooms, sorted.
    inline: [u32; INLINE],
}

/// A user's joined rooms, sorted by room: the inline ones, then the rest.
#[derive(Clone, Copy)]
pub(crate) struct RoomList<'a> {
    inline: &'a [u32],
    more: &'a [u32],
}

impl<'a> RoomList<'a> {
    /// The rooms in order.
    #[inline]
    pub(crate) fn iter(self) -> impl Iterator<Item = u32> + Clone + 'a {
        self.inline.iter().chain(self.more).copied()
    }

    fn to_vec(self) -> Vec<u32> {
        self.iter().collect()
    }
}

/// The users and their per-user state.
pub(crate) struct Users {
    ids: Interner<UserId>,
    /// The home server's index if remote, [`LOCAL`] if local.
    home: Vec<u32>,
    records: Vec<Record>,
    /// Stream position, inline rooms and join summary.
    hot: Vec<Hot>,
    /// Rooms past the inline ones, for users in more than [`INLINE`] rooms.
    more: Vec<Vec<u32>>,
    /// Free slots of `more`.
    free_more: Vec<u32>,
    /// Joins at a stream position (not restored at startup) still held: `(room, position)`,
    /// sorted by room.
    joins: FxHashMap<UserIdx, Vec<(u32, StreamPos)>>,
    /// Local users with a waiting sync.
    listening: BitSet,
    /// Users already in the wake list being built (see [`Users::wake`]).
    woken: BitSet,
}

impl Users {
    pub(crate) fn new() -> Self {
        Self {
            ids: Interner::new(),
            home: Vec::new(),
            records: Vec::new(),
            hot: Vec::new(),
            more: Vec::new(),
            free_more: Vec::new(),
            joins: FxHashMap::default(),
            listening: BitSet::default(),
            woken: BitSet::default(),
        }
    }

    /// How many users are interned.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// The index of a known user.
    pub(crate) fn get(&self, id: &UserId) -> Option<UserIdx> {
        self.ids.get(id.as_str()).map(UserIdx)
    }

    /// The index of `id`, adding it (offline, no rooms) if new; `home` names its server
    /// (`None` for local users) and is only called for a new user.
    pub(crate) fn intern(&mut self, id: &UserId, home: impl FnOnce() -> Option<u32>) -> UserIdx {
        let (idx, new) = self.ids.intern(id);
        if new {
            self.home.push(home().unwrap_or(LOCAL));
            self.records.push(Record::default());
            self.hot.push(Hot::default());
            let n = self.ids.len();
            self.listening.grow(n);
            self.woken.grow(n);
        }
        UserIdx(idx)
    }

    /// The user's ID.
    #[inline]
    pub(crate) fn id(&self, u: UserIdx) -> &UserId {
        self.ids.resolve(u.0)
    }

    /// The home server's index of a remote user; `None` for a local one.
    #[inline]
    pub(crate) fn home(&self, u: UserIdx) -> Option<u32> {
        let h = self.home[u.index()];
        (h != LOCAL).then_some(h)
    }

    /// Whether the user lives on this server.
    #[inline]
    pub(crate) fn is_local(&self, u: UserIdx) -> bool {
        self.home[u.index()] == LOCAL
    }

    #[inline]
    pub(crate) fn record(&self, u: UserIdx) -> &Record {
        &self.records[u.index()]
    }

    #[inline]
    pub(crate) fn set_record(&mut self, u: UserIdx, record: Record) {
        self.records[u.index()] = record;
    }

    /// The stream position of the user's latest notified change (0 = none).
    #[inline]
    pub(crate) fn pos(&self, u: UserIdx) -> StreamPos {
        self.hot[u.index()].pos
    }

    #[inline]
    pub(crate) fn set_pos(&mut self, u: UserIdx, pos: StreamPos) {
        self.hot[u.index()].pos = pos;
    }

    /// Joined rooms, sorted.
    #[inline]
    pub(crate) fn rooms(&self, u: UserIdx) -> RoomList<'_> {
        let hot = &self.hot[u.index()];
        let len = hot.len as usize;
        let more = match hot.more {
            0 => &[][..],
            m => &self.more[m as usize - 1][..],
        };
        RoomList {
            inline: &hot.inline[..len.min(INLINE)],
            more,
        }
    }

    /// The highest position of a join still held (0 = none since startup): rooms joined after
    /// a token exist only if this is after it.
    #[inline]
    pub(crate) fn last_join(&self, u: UserIdx) -> StreamPos {
        self.hot[u.index()].last_join
    }

    /// The position at which `u` joined room `r` (0 = restored at startup, or not joined).
    pub(crate) fn joined_at(&self, u: UserIdx, r: u32) -> StreamPos {
        self.joins.get(&u).map_or(0, |joins| {
            joins
                .binary_search_by_key(&r, |&(x, _)| x)
                .map_or(0, |i| joins[i].1)
        })
    }

    /// Records a join of room `r` at `pos` (the caller checked it is new; 0 = restored at
    /// startup).
    pub(crate) fn add_room(&mut self, u: UserIdx, r: u32, pos: StreamPos) {
        let len = self.hot[u.index()].len as usize;
        // Memberships are restored in room order: appending is the common case.
        let appends = len == 0 || self.rooms(u).iter().last().is_some_and(|x| x < r);
        let hot = &mut self.hot[u.index()];
        if appends && len < INLINE {
            hot.inline[len] = r;
            hot.len += 1;
        } else if appends && hot.more != 0 {
            self.more[hot.more as usize - 1].push(r);
            hot.len += 1;
        } else {
            let mut rooms = self.rooms(u).to_vec();
            let at = rooms.partition_point(|&x| x < r);
            rooms.insert(at, r);
            self.set_rooms(u, &rooms);
        }
        if pos > 0 {
            let joins = self.joins.entry(u).or_default();
            let at = joins.partition_point(|&(x, _)| x < r);
            joins.insert(at, (r, pos));
            let hot = &mut self.hot[u.index()];
            hot.last_join = hot.last_join.max(pos);
        }
    }

    pub(crate) fn remove_room(&mut self, u: UserIdx, r: u32) {
        let mut rooms = self.rooms(u).to_vec();
        rooms.retain(|&x| x != r);
        self.set_rooms(u, &rooms);
        if let Some(joins) = self.joins.get_mut(&u) {
            joins.retain(|&(x, _)| x != r);
            let last = joins.iter().map(|&(_, p)| p).max().unwrap_or(0);
            if joins.is_empty() {
                self.joins.remove(&u);
            }
            self.hot[u.index()].last_join = last;
        }
    }

    /// Replaces `u`'s room list with `rooms` (sorted).
    fn set_rooms(&mut self, u: UserIdx, rooms: &[u32]) {
        let hot = &mut self.hot[u.index()];
        let n = rooms.len().min(INLINE);
        hot.inline[..n].copy_from_slice(&rooms[..n]);
        hot.len = u32::try_from(rooms.len()).unwrap_or(u32::MAX);
        let rest = &rooms[n..];
        match (hot.more, rest.is_empty()) {
            (0, true) => {}
            (m, true) => {
                hot.more = 0;
                let slot = m as usize - 1;
                self.more[slot] = Vec::new();
                self.free_more.push(m - 1);
            }
            (0, false) => {
                let slot = match self.free_more.pop() {
                    Some(s) => s as usize,
                    None => {
                        self.more.push(Vec::new());
                        self.more.len() - 1
                    }
                };
                self.more[slot] = rest.to_vec();
                hot.more = u32::try_from(slot + 1).unwrap_or(u32::MAX);
            }
            (m, false) => {
                let list = &mut self.more[m as usize - 1];
                list.clear();
                list.extend_from_slice(rest);
            }
        }
    }

    /// The user's current presence.
    pub(crate) fn state(&self, u: UserIdx) -> UserPresenceState {
        let r = self.record(u);
        UserPresenceState {
            user_id: self.id(u).clone(),
            state: r.state,
            last_active_ts: r.last_active_ts,
            last_federation_update_ts: r.last_federation_update_ts,
            last_user_sync_ts: r.last_user_sync_ts,
            status_msg: r.status_msg.clone(),
            currently_active: r.currently_active,
        }
    }

    #[inline]
    pub(crate) fn listening(&self, u: UserIdx) -> bool {
        self.listening.test(u.0)
    }

    pub(crate) fn set_listening(&mut self, u: UserIdx, listening: bool) {
        if listening {
            self.listening.set(u.0);
        } else {
            self.listening.clear(u.0);
        }
    }

    /// Adds a listening `u` to `wake` unless already there. Between [`Self::mark_woken`] and
    /// [`Self::unmark_woken`] of the same list, so each user is listed once without a search.
    #[inline]
    pub(crate) fn wake(&mut self, u: UserIdx, wake: &mut Vec<UserIdx>) {
        if self.listening.test(u.0) && !self.woken.test(u.0) {
            self.woken.set(u.0);
            wake.push(u);
        }
    }

    /// Marks a list being extended by [`Self::wake`] (its users are not added again).
    pub(crate) fn mark_woken(&mut self, wake: &[UserIdx]) {
        for w in wake {
            self.woken.set(w.0);
        }
    }

    /// Ends a wake list: clears the marks [`Self::wake`] and [`Self::mark_woken`] set.
    pub(crate) fn unmark_woken(&mut self, wake: &[UserIdx]) {
        for w in wake {
            self.woken.clear(w.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, btree_map::Entry};

    use super::*;

    /// Room lists past the inline part, joins in any order, leaves and rejoins, checked
    /// against a map after every step.
    #[test]
    fn room_lists_and_join_positions_match_a_map() {
        let mut users = Users::new();
        let ids: Vec<UserIdx> = (0..3)
            .map(|i| users.intern(&UserId::parse(&format!("@u{i}:x")).unwrap(), || None))
            .collect();
        let mut model: Vec<BTreeMap<u32, StreamPos>> = vec![BTreeMap::new(); ids.len()];
        // A fixed pseudo-random walk: joins (restored or at a position) and leaves.
        let mut x: u64 = 12345;
        for step in 1..=2_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let k = (x >> 33) as usize % ids.len();
            let (u, m) = (ids[k], &mut model[k]);
            let r = (x >> 40) as u32 % 40;
            match m.entry(r) {
                Entry::Occupied(joined) => {
                    if (x >> 20).is_multiple_of(3) {
                        users.remove_room(u, r);
                        joined.remove();
                    }
                }
                Entry::Vacant(slot) => {
                    let pos = if (x >> 24).is_multiple_of(2) { 0 } else { step };
                    users.add_room(u, r, pos);
                    slot.insert(pos);
                }
            }
            for (k, &u) in ids.iter().enumerate() {
                let want: Vec<u32> = model[k].keys().copied().collect();
                assert_eq!(
                    users.rooms(u).iter().collect::<Vec<_>>(),
                    want,
                    "step {step}"
                );
                for (&r, &pos) in &model[k] {
                    assert_eq!(users.joined_at(u, r), pos, "step {step} room {r}");
                }
                let last = model[k].values().copied().max().unwrap_or(0);
                assert_eq!(users.last_join(u), last, "step {step}");
            }
        }
        assert!(
            model.iter().any(|m| m.len() > INLINE),
            "the walk overflows the inline rooms"
        );
    }
}
