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
        let (users, rooms, marks) = (&self.users, &self.rooms, &mut self.read_marks);
        let audience = &self.config.audience;
        let filtering = audience.filter.is_some();
        // Whether the reader may receive `m`'s presence (the restricting mode's filter).
        let allowed = |m: UserIdx| !filtering || audience.allows(users.id(m), users.id(u));
        let push = |marks: &mut Stamps, m: UserIdx, pass: u32, out: &mut Vec<UserIdx>| {
            if allowed(m) {
                push(marks, m, pass, out);
            }
        };
        let pass = marks.next();
        let mut out = Vec::new();
        let reader_rooms = users.rooms(u);
        if since.is_none() || snapshot {
            // Full part: current presence of everyone visible, offline left out unless the
            // server is configured to include it on initial syncs.
            let keep_offline = since.is_none() && self.config.include_offline_users_on_sync;
            let keep = |m: UserIdx| keep_offline || users.record(m).state != PresenceState::Offline;
            if keep(u) {
                push(marks, u, pass, &mut out);
            }
            for &(r, _) in reader_rooms {
                let room = rooms.room(r);
                if room.excluded {
                    continue;
                }
                for &m in &room.members {
                    if keep(m) {
                        push(marks, m, pass, &mut out);
                    }
                }
            }
            if let Routed::Users(routed_users) = routed {
                for &v in routed_users {
                    if keep(v) {
                        push(marks, v, pass, &mut out);
                    }
                }
            }
        }
        if let Some(t) = since {
            // Incremental part: every change after `t`, offline included.
            if users.pos(u) > t {
                push(marks, u, pass, &mut out);
            }
            // The reader's own join is not news to itself.
            marks.mark(u.0, pass);
            for &(r, joined_at) in reader_rooms {
                let newly_joined = joined_at > t && joined_at <= upto;
                if !newly_joined && rooms.last(r) <= t {
                    // Nothing in this room since the token (excluded rooms never log).
                    continue;
                }
                let room = rooms.room(r);
                if room.excluded {
                    continue;
                }
                if newly_joined {
                    // Newly joined: every member is news, offline or not.
                    for &m in &room.members {
                        push(marks, m, pass, &mut out);
                    }
                } else {
                    for m in room.changes(t, upto) {
                        push(marks, m, pass, &mut out);
                    }
                }
            }
            if let Routed::Users(routed_users) = routed {
                for &v in routed_users {
                    if users.pos(v) > t {
                        push(marks, v, pass, &mut out);
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
                    push(marks, v, pass, &mut out);
                }
            }
        }
        SyncRead {
            users: out,
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
            for &(r, _) in self.users.rooms(t) {
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

/// Adds `m` to `out` unless it is already there in this pass.
#[inline]
fn push(marks: &mut Stamps, m: UserIdx, pass: u32, out: &mut Vec<UserIdx>) {
    if marks.mark(m.0, pass) {
        out.push(m);
    }
}
