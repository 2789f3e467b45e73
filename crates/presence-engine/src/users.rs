//! Every interned user and its per-user columns: home server, presence record, stream
//! position, joined rooms, and the listening / woken bits of the wake-up fan-out.
//!
//! The columns are flat arrays indexed by [`UserIdx`] (fan-out touches millions of entries,
//! so no maps and no per-user boxes). [`Users::intern`] is the only place a user is added and
//! it grows every column at once, so an index valid for one column is valid for all.

use presence_router::{UserId, UserPresenceState};

use crate::{UserIdx, bitset::BitSet, intern::Interner, machine::Record, rooms::StreamPos};

/// `home` of a local user.
const LOCAL: u32 = u32::MAX;

/// The users and their per-user state.
pub(crate) struct Users {
    ids: Interner<UserId>,
    /// The home server's index if remote, [`LOCAL`] if local.
    home: Vec<u32>,
    records: Vec<Record>,
    /// The stream position of the latest notified change (0 = none).
    pos: Vec<StreamPos>,
    /// Joined rooms with the position of the join, sorted by room.
    rooms: Vec<Vec<(u32, StreamPos)>>,
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
            pos: Vec::new(),
            rooms: Vec::new(),
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
            self.pos.push(0);
            self.rooms.push(Vec::new());
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
        self.pos[u.index()]
    }

    #[inline]
    pub(crate) fn set_pos(&mut self, u: UserIdx, pos: StreamPos) {
        self.pos[u.index()] = pos;
    }

    /// Joined rooms with the position of the join, sorted by room.
    #[inline]
    pub(crate) fn rooms(&self, u: UserIdx) -> &[(u32, StreamPos)] {
        &self.rooms[u.index()]
    }

    /// Records a join of room `r` at `pos` (the caller checked it is new).
    pub(crate) fn add_room(&mut self, u: UserIdx, r: u32, pos: StreamPos) {
        let rooms = &mut self.rooms[u.index()];
        let at = rooms.partition_point(|&(x, _)| x < r);
        rooms.insert(at, (r, pos));
    }

    pub(crate) fn remove_room(&mut self, u: UserIdx, r: u32) {
        self.rooms[u.index()].retain(|&(x, _)| x != r);
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
