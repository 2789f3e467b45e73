//! The read side of `/sync` (the reference's `PresenceEventSource.get_new_events` in
//! `synapse/handlers/presence.py` and `_generate_sync_entry_for_presence` in
//! `synapse/handlers/sync.py`), with Presenced's rules:
//! routed presence is *in addition* to shared-room presence, users who newly share a room
//! are included, a full snapshot owed by `send_local_online_presence_to` does not hide users
//! who went offline since the reader's token, and no user appears twice.

use std::{collections::BTreeSet, sync::Arc};

use presence_router::{PresenceState, StateBatch, StateSet, UserId, UserPresenceState, UserStates};

use crate::{Engine, UserIdx, rooms::StreamPos};

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
    users: Arc<[u32]>,
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
        users.iter().filter_map(|u| self.user_idx(u)).collect()
    }

    /// The candidates for an `All` reader; cached per (kind, token, position).
    pub fn all_candidates(&mut self, reader: UserIdx, since: Option<StreamPos>) -> Candidates {
        let upto = self.stream_pos;
        let since = since.map(|t| t.min(upto));
        let snapshot = self.snapshot_owed(reader.0, since);
        let kind = match (since, snapshot) {
            (None, _) => 0,
            (Some(_), true) => 1,
            (Some(_), false) => 2,
        };
        let key = (kind, since.unwrap_or(0), upto);
        if let Some(c) = self.candidates.entries.iter().find(|c| c.key == key) {
            return c.clone();
        }
        let pass = self.read_stamps.next();
        let mut users = Vec::new();
        let include_offline = since.is_none() && self.config.include_offline_users_on_sync;
        if kind != 2 {
            for &(_, u) in &self.global_log {
                let online = self.records[u as usize].state != PresenceState::Offline;
                if (online || include_offline) && self.read_stamps.mark(u, pass) {
                    users.push(u);
                }
            }
        }
        if let Some(t) = since {
            let start = self.global_log.partition_point(|&(p, _)| p <= t);
            for &(_, u) in &self.global_log[start..] {
                if self.read_stamps.mark(u, pass) {
                    users.push(u);
                }
            }
        }
        let batch = StateBatch::new(users.iter().map(|&u| self.state_of(u)).collect());
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

    fn snapshot_owed(&self, u: u32, since: Option<StreamPos>) -> bool {
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
        let u = reader.0;
        let upto = match routed {
            Routed::All { candidates, .. } => candidates.upto.min(self.stream_pos),
            Routed::Users(_) => self.stream_pos,
        };
        let since = since.map(|t| t.min(self.stream_pos));
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
        let pass = self.read_stamps.next();
        let mut out = Vec::new();
        let rooms = std::mem::take(&mut self.user_rooms[u as usize]);
        if since.is_none() || snapshot {
            // Full part: current presence of everyone visible, offline left out unless the
            // server is configured to include it on initial syncs.
            let keep_offline = since.is_none() && self.config.include_offline_users_on_sync;
            let keep = |e: &Engine, m: u32| {
                keep_offline || e.records[m as usize].state != PresenceState::Offline
            };
            if keep(self, u) {
                self.push(u, pass, &mut out);
            }
            for &(r, _) in &rooms {
                let room = &self.rooms[r as usize];
                if room.excluded {
                    continue;
                }
                for &m in &room.members {
                    if keep(self, m) && self.read_stamps.mark(m, pass) {
                        out.push(UserIdx(m));
                    }
                }
            }
            if let Routed::Users(users) = routed {
                for v in users {
                    if keep(self, v.0) {
                        self.push(v.0, pass, &mut out);
                    }
                }
            }
        }
        if let Some(t) = since {
            // Incremental part: every change after `t`, offline included.
            if self.pos[u as usize] > t {
                self.push(u, pass, &mut out);
            }
            // The reader's own join is not news to itself.
            self.read_stamps.mark(u, pass);
            for &(r, joined_at) in &rooms {
                let newly_joined = joined_at > t && joined_at <= upto;
                if !newly_joined && self.room_last[r as usize] <= t {
                    // Nothing in this room since the token (excluded rooms never log).
                    continue;
                }
                let room = &self.rooms[r as usize];
                if room.excluded {
                    continue;
                }
                if newly_joined {
                    // Newly joined: every member is news, offline or not.
                    for &m in &room.members {
                        if self.read_stamps.mark(m, pass) {
                            out.push(UserIdx(m));
                        }
                    }
                } else {
                    for m in room.changes(t, upto) {
                        if self.read_stamps.mark(m, pass) {
                            out.push(UserIdx(m));
                        }
                    }
                }
            }
            if let Routed::Users(users) = routed {
                for v in users {
                    if self.pos[v.index()] > t {
                        self.push(v.0, pass, &mut out);
                    }
                }
            }
        }
        self.user_rooms[u as usize] = rooms;
        if let Routed::All {
            candidates,
            states: Some(set),
        } = routed
            && set.batch().same_batch(&candidates.batch)
        {
            let keep_offline = since.is_some() || self.config.include_offline_users_on_sync;
            for i in set.indices() {
                let v = candidates.users[i];
                if keep_offline || self.records[v as usize].state != PresenceState::Offline {
                    self.push(v, pass, &mut out);
                }
            }
        }
        SyncRead {
            users: out,
            next_token: upto.max(since.unwrap_or(0)),
        }
    }

    #[inline]
    fn push(&mut self, m: u32, pass: u32, out: &mut Vec<UserIdx>) {
        if self.read_stamps.mark(m, pass) {
            out.push(UserIdx(m));
        }
    }

    /// Whether `reader` may read `target`'s presence: exactly when it would receive the
    /// target's updates through a shared room or as a routed user. `routed_to_reader` is the
    /// routers' verdict (the reader's interest set contains the target, or for an `All`
    /// reader, the target's state passed through `get_users_for_states` reaches the reader).
    pub fn can_see(&self, reader: UserIdx, target: UserIdx, routed_to_reader: bool) -> bool {
        reader == target || routed_to_reader || self.shares_room(reader, target)
    }
}

/// Every local user's non-offline state, to route to remote targets of
/// `send_local_online_presence_to`.
#[derive(Debug, Clone)]
pub struct LocalOnline {
    batch: StateBatch,
    users: Arc<[u32]>,
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
        let mut users: Vec<u32> = self
            .global_log
            .iter()
            .map(|&(_, u)| u)
            .filter(|&u| {
                self.remote_server[u as usize] == crate::engine::LOCAL
                    && self.records[u as usize].state != PresenceState::Offline
            })
            .collect();
        users.sort_unstable();
        users.dedup();
        let batch = StateBatch::new(users.iter().map(|&u| self.state_of(u)).collect());
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
        let pass = self.read_stamps.next();
        let mut out = Vec::new();
        if let Some(t) = self.user_idx(target) {
            for &(r, _) in &self.user_rooms[t.index()] {
                let room = &self.rooms[r as usize];
                if room.excluded {
                    continue;
                }
                for &m in &room.members {
                    if self.remote_server[m as usize] == crate::engine::LOCAL
                        && self.records[m as usize].state != PresenceState::Offline
                        && self.read_stamps.mark(m, pass)
                    {
                        out.push(m);
                    }
                }
            }
        }
        if let Some(set) = routed.filter(|s| s.batch().same_batch(&online.batch)) {
            for i in set.indices() {
                let m = online.users[i];
                if self.read_stamps.mark(m, pass) {
                    out.push(m);
                }
            }
        }
        out.into_iter().map(|m| self.state_of(m)).collect()
    }
}
