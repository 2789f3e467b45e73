//! The read side of `/sync` (the reference's `PresenceEventSource.get_new_events` in
//! `synapse/handlers/presence.py` and `_generate_sync_entry_for_presence` in
//! `synapse/handlers/sync.py`), with Presenced's rules:
//! routed presence is *in addition* to shared-room presence (in the restricting mode, shared
//! rooms count only with the `shared_rooms` router and the routers' filter removes readers
//! from every part), users who newly share a room
//! are included, a full snapshot owed by `send_local_online_presence_to` does not hide users
//! who went offline since the reader's token, and no user appears twice.

use std::{collections::BTreeSet, sync::Arc};

use presence_router::{PresenceState, StateBatch, StateSet, UserId, UserPresenceState, UserStates};

use crate::{Engine, UserIdx, rooms::StreamPos, stamp::Stamps};

/// How a syncing user's routed presence is given to [`Engine::sync`].
#[derive(Debug, Clone, Copy)]
pub enum Routed<'a> {
    /// The users the routers named (`InterestedUsers::Users`, resolved with
    /// [`Engine::resolve_users`]); empty without routers.
    Users(&'a [UserIdx]),
    /// `InterestedUsers::All`: the reader's entry of the routers' answer for `candidates`.
    All {
        /// From [`Engine::all_candidates`] for the same reader and token.
        candidates: &'a Candidates,
        /// `routes.get(reader)`; `None` if the routers hold everything back.
        states: Option<&'a StateSet>,
    },
}

/// The presence part of a sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRead {
    /// Users whose current presence goes into the response, each once.
    pub users: Vec<UserIdx>,
    /// The presence part of the next sync token.
    pub next_token: StreamPos,
}

/// The states an `All` reader's routers must see: every update the server knows of since the
/// reader's token (or all non-offline states for an initial sync or a snapshot).
#[derive(Debug, Clone)]
pub struct Candidates {
    key: (u8, StreamPos, StreamPos),
    batch: StateBatch,
    users: Arc<[UserIdx]>,
    upto: StreamPos,
    routes: Option<Arc<UserStates>>,
}

impl Candidates {
    /// The states to pass through the routers' `get_users_for_states`.
    pub fn batch(&self) -> &StateBatch {
        &self.batch
    }

    /// The routers' answer, if another reader at the same position already asked.
    pub fn routes(&self) -> Option<&Arc<UserStates>> {
        self.routes.as_ref()
    }
}

/// Recently built candidate batches and their routes: readers woken by the same change share
/// one router call.
#[derive(Default)]
pub(crate) struct CandidateCache {
    entries: Vec<Candidates>,
}

const CACHE_ENTRIES: usize = 8;

/// Rooms whose latest positions a sync loads together (see [`Engine::sync`]).
const ROOM_CHUNK: usize = 16;

impl Engine {
    /// Resolves router-named users to indices; users the server has never seen have no
    /// presence to deliver and are skipped.
    pub fn resolve_users(&self, users: &BTreeSet<UserId>) -> Vec<UserIdx> {
        users.iter().filter_map(|u| self.users.get(u)).collect()
    }

    /// The candidates for an `All` reader; cached per (kind, token, position).
    pub fn all_candidates(&mut self, reader: UserIdx, since: Option<StreamPos>) -> Candidates {
        let upto = self.stream.current();
        let since = since.map(|t| t.min(upto));
        let snapshot = self.snapshot_owed(reader, since);
        let kind = match (since, snapshot) {
            (None, _) => 0,
            (Some(_), true) => 1,
            (Some(_), false) => 2,
        };
        let key = (kind, since.unwrap_or(0), upto);
        if let Some(c) = self.candidates.entries.iter().find(|c| c.key == key) {
            return c.clone();
        }
        let pass = self.read_marks.next();
        let mut users = Vec::new();
        let include_offline = since.is_none() && self.config.include_offline_users_on_sync;
        if kind != 2 {
            for &(_, u) in self.stream.log() {
                let online = self.users.record(u).state != PresenceState::Offline;
                if (online || include_offline) && self.read_marks.mark(u.0, pass) {
                    users.push(u);
                }
            }
        }
        if let Some(t) = since {
            for &(_, u) in self.stream.since(t) {
                if self.read_marks.mark(u.0, pass) {
                    users.push(u);
                }
            }
        }
        let batch = StateBatch::new(users.iter().map(|&u| self.users.state(u)).collect());
        let c = Candidates {
            key,
            batch,
            users: users.into(),
            upto,
            routes: None,
        };
        if self.candidates.entries.len() >= CACHE_ENTRIES {
            self.candidates.entries.remove(0);
        }
        self.candidates.entries.push(c.clone());
        c
    }

    /// Remembers the routers' answer for `candidates`, for other readers at the same position.
    pub fn cache_routes(&mut self, candidates: &Candidates, routes: UserStates) -> Arc<UserStates> {
        let routes = Arc::new(routes);
        if let Some(c) = self
            .candidates
            .entries
            .iter_mut()
            .find(|c| c.batch.same_batch(&candidates.batch))
        {
            c.routes = Some(routes.clone());
        }
        routes
    }

    fn snapshot_owed(&self, u: UserIdx, since: Option<StreamPos>) -> bool {
        since.is_some_and(|t| self.snapshot_at.get(&u).is_some_and(|&at| t <= at))
    }

    /// The presence a user's sync returns: everything visible to `reader` that changed after
    /// `since` (all current non-offline presence visible to it when `since` is `None`).
    pub fn sync(
        &mut self,
        reader: UserIdx,
        since: Option<StreamPos>,
        routed: Routed<'_>,
    ) -> SyncRead {
        let u = reader;
        let current = self.stream.current();
        let upto = match routed {
            Routed::All { candidates, .. } => candidates.upto.min(current),
            Routed::Users(_) => current,
        };
        let since = since.map(|t| t.min(current));
        let snapshot = self.snapshot_owed(u, since);
        if let Some(t) = since
            && t >= upto
            && !snapshot
        {
            return SyncRead {
                users: Vec::new(),
                next_token: t.max(upto),
            };
        }
        // Split borrows: the marks are written while users and rooms are read.
        let (users, rooms) = (&self.users, &self.rooms);
        let audience = &self.config.audience;
        let filtering = audience.filter.is_some();
        // Whether the reader may receive `m`'s presence (the restricting mode's filter).
        let allowed = |m: UserIdx| !filtering || audience.allows(users.id(m), users.id(u));
        let push = |out: &mut Answer<'_>, m: UserIdx| {
            if allowed(m) {
                out.push(m);
            }
        };
        let mut out = Answer::new(&mut self.read_marks);
        let reader_rooms = users.rooms(u);
        if since.is_none() || snapshot {
            // Full part: current presence of everyone visible, offline left out unless the
            // server is configured to include it on initial syncs.
            let keep_offline = since.is_none() && self.config.include_offline_users_on_sync;
            let keep = |m: UserIdx| keep_offline || users.record(m).state != PresenceState::Offline;
            if keep(u) {
                push(&mut out, u);
            }
            for r in reader_rooms.iter() {
                let room = rooms.room(r);
                if room.excluded {
                    continue;
                }
                for &m in &room.members {
                    if keep(m) {
                        push(&mut out, m);
                    }
                }
            }
            if let Routed::Users(routed_users) = routed {
                for &v in routed_users {
                    if keep(v) {
                        push(&mut out, v);
                    }
                }
            }
        }
        if let Some(t) = since {
            // Incremental part: every change after `t`, offline included.
            if users.pos(u) > t {
                push(&mut out, u);
            }
            // The reader's own join is not news to itself.
            out.hide(u);
            // Join positions are looked at only if the reader joined a room after `t`.
            let joined_since = users.last_join(u) > t;
            // The rooms' latest positions are loaded a chunk at a time before any is tested,
            // so that their cache misses overlap instead of each waiting for the previous
            // room's branch.
            let mut pending = reader_rooms.iter();
            loop {
                let mut chunk = [(0u32, false); ROOM_CHUNK];
                let mut n = 0;
                for r in pending.by_ref().take(ROOM_CHUNK) {
                    chunk[n] = (r, rooms.maybe_changed(r, t));
                    n += 1;
                }
                if n == 0 {
                    break;
                }
                for &(r, changed) in &chunk[..n] {
                    let newly_joined = joined_since && {
                        let joined_at = users.joined_at(u, r);
                        joined_at > t && joined_at <= upto
                    };
                    if newly_joined {
                        // Newly joined: every member is news, offline or not.
                        let room = rooms.room(r);
                        if !room.excluded {
                            for &m in &room.members {
                                push(&mut out, m);
                            }
                        }
                    } else if changed {
                        // Changed since the token (excluded rooms never log, so never here).
                        for m in rooms.changes(r, t, upto) {
                            push(&mut out, m);
                        }
                    }
                }
            }
            if let Routed::Users(routed_users) = routed {
                for &v in routed_users {
                    if users.pos(v) > t {
                        push(&mut out, v);
                    }
                }
            }
        }
        if let Routed::All {
            candidates,
            states: Some(set),
        } = routed
            && set.batch().same_batch(&candidates.batch)
        {
            let keep_offline = since.is_some() || self.config.include_offline_users_on_sync;
            for i in set.indices() {
                let v = candidates.users[i];
                if keep_offline || users.record(v).state != PresenceState::Offline {
                    push(&mut out, v);
                }
            }
        }
        SyncRead {
            users: out.users,
            next_token: upto.max(since.unwrap_or(0)),
        }
    }

    /// Whether `reader` may read `target`'s presence: exactly when it would receive the
    /// target's updates through a shared room or as a routed user. `routed_to_reader` is the
    /// routers' verdict (the reader's interest set contains the target, or for an `All`
    /// reader, the target's state passed through `get_users_for_states` reaches the reader).
    /// In the restricting mode the routers' filter has the last word.
    pub fn can_see(&self, reader: UserIdx, target: UserIdx, routed_to_reader: bool) -> bool {
        reader == target
            || ((routed_to_reader || self.shares_room(reader, target))
                && self.allows(target, reader))
    }
}

/// Every local user's non-offline state, to route to remote targets of
/// `send_local_online_presence_to`.
#[derive(Debug, Clone)]
pub struct LocalOnline {
    batch: StateBatch,
    users: Arc<[UserIdx]>,
}

impl LocalOnline {
    /// The states to pass once through the routers' `get_users_for_states`.
    pub fn batch(&self) -> &StateBatch {
        &self.batch
    }
}

impl Engine {
    /// Every local user's current non-offline state.
    pub fn local_online(&self) -> LocalOnline {
        let mut users: Vec<UserIdx> = self
            .stream
            .log()
            .iter()
            .map(|&(_, u)| u)
            .filter(|&u| {
                self.users.is_local(u) && self.users.record(u).state != PresenceState::Offline
            })
            .collect();
        users.sort_unstable();
        users.dedup();
        let batch = StateBatch::new(users.iter().map(|&u| self.users.state(u)).collect());
        LocalOnline {
            batch,
            users: users.into(),
        }
    }

    /// What a remote user is sent by `send_local_online_presence_to`: the non-offline states
    /// of local users who share a room with it, plus those the routers direct to it
    /// (`routed` is its entry of the routers' answer for [`LocalOnline::batch`]). The routers'
    /// `get_interested_users` is documented as called for local users only, so remote targets
    /// are resolved through `get_users_for_states`.
    pub fn snapshot_for_remote(
        &mut self,
        target: &UserId,
        online: &LocalOnline,
        routed: Option<&StateSet>,
    ) -> Vec<UserPresenceState> {
        let pass = self.read_marks.next();
        let mut out = Vec::new();
        let audience = &self.config.audience;
        let users = &self.users;
        let allowed = |m: UserIdx| audience.allows(users.id(m), target);
        if let Some(t) = self.users.get(target) {
            for r in self.users.rooms(t).iter() {
                let room = self.rooms.room(r);
                if room.excluded {
                    continue;
                }
                for &m in &room.members {
                    if self.users.is_local(m)
                        && self.users.record(m).state != PresenceState::Offline
                        && allowed(m)
                        && self.read_marks.mark(m.0, pass)
                    {
                        out.push(m);
                    }
                }
            }
        }
        if let Some(set) = routed.filter(|s| s.batch().same_batch(&online.batch)) {
            for i in set.indices() {
                let m = online.users[i];
                if allowed(m) && self.read_marks.mark(m.0, pass) {
                    out.push(m);
                }
            }
        }
        out.into_iter().map(|m| self.users.state(m)).collect()
    }
}

/// Answers up to this long are kept free of repeats by scanning them; longer ones by marks.
const SCAN_UP_TO: usize = 16;

/// The users a sync read returns, each once, in the order first added. A short answer (the
/// usual case: a reader woken by a few changes) is checked for repeats by scanning it, which
/// stays in the L1 cache; past [`SCAN_UP_TO`] entries it switches to the per-user marks,
/// whose entries for most users are cold cache lines.
struct Answer<'a> {
    marks: &'a mut Stamps,
    /// The marks' pass once switched; 0 while scanning (passes start at 1).
    pass: u32,
    /// A user counted as returned without being in `users` (the reader, for its own join).
    hidden: Option<UserIdx>,
    users: Vec<UserIdx>,
}

impl<'a> Answer<'a> {
    fn new(marks: &'a mut Stamps) -> Self {
        Self {
            marks,
            pass: 0,
            hidden: None,
            users: Vec::new(),
        }
    }

    /// Adds `m` unless it is already there (or hidden).
    #[inline]
    fn push(&mut self, m: UserIdx) {
        if self.pass == 0 {
            if self.hidden == Some(m) || self.users.contains(&m) {
                return;
            }
            if self.users.len() < SCAN_UP_TO {
                if self.users.capacity() == 0 {
                    self.users.reserve(SCAN_UP_TO / 2);
                }
                self.users.push(m);
                return;
            }
            self.switch_to_marks();
        }
        if self.marks.mark(m.0, self.pass) {
            self.users.push(m);
        }
    }

    /// Counts `m` as returned without adding it.
    fn hide(&mut self, m: UserIdx) {
        if self.pass == 0 {
            if self.hidden.is_none_or(|h| h == m) {
                self.hidden = Some(m);
                return;
            }
            self.switch_to_marks();
        }
        self.marks.mark(m.0, self.pass);
    }

    #[cold]
    fn switch_to_marks(&mut self) {
        let pass = self.marks.next();
        for &x in self.users.iter().chain(self.hidden.iter()) {
            self.marks.mark(x.0, pass);
        }
        self.pass = pass;
    }
}
