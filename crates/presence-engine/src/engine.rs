//! The [`Engine`]: presence state, membership and the presence stream of one server, driven
//! by inputs and `now`, with no I/O.
//!
//! Data flow: the server feeds [`Input`]s (or a timer tick) to [`Engine::apply`], which updates
//! the state machine and the stream and returns an [`Applied`] holding the batch of notified
//! states. The server passes that batch once through the routers and hands their answer to
//! [`Engine::finish`], which returns the [`Effects`]: rows to persist, local users to wake,
//! and states to send to each remote server. Syncs read through [`Engine::sync`].

use std::{collections::HashMap, sync::Arc};

use presence_router::{
    DeviceId, Millis, PresenceState, RoomId, ServerName, StateBatch, UserId, UserPresenceState,
    UserStates,
};
use rustc_hash::FxHashMap;

use crate::{
    EngineConfig, PresenceMode, RoomIdx, UserIdx,
    intern::Interner,
    machine::{self, Devices, Record},
    rooms::{Room, StreamPos, compact_log},
    stamp::Stamps,
    timers::TimerQueue,
};

/// Something that happens to presence.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Input {
    /// `PUT /presence/{user}/status` from a device (reference `set_state`, not a sync).
    SetPresence {
        /// The local user.
        user: UserIdx,
        /// The requesting device, if known.
        device: Option<DeviceId>,
        /// The requested state.
        state: PresenceState,
        /// The new status message; `None` clears it.
        status_msg: Option<Arc<str>>,
    },
    /// A `/sync` that affects presence started on a device.
    SyncStarted {
        /// The local user.
        user: UserIdx,
        /// The syncing device.
        device: Option<DeviceId>,
        /// The `set_presence` of the sync (online or unavailable).
        state: PresenceState,
    },
    /// A `/sync` that affected presence ended.
    SyncEnded {
        /// The local user.
        user: UserIdx,
        /// The device.
        device: Option<DeviceId>,
    },
    /// The user did something (sent a message, typed, read): bumps `last_active_ts`.
    Activity {
        /// The local user.
        user: UserIdx,
        /// The device.
        device: Option<DeviceId>,
    },
    /// A device was removed (logout): it no longer counts towards the user's presence.
    DeviceRemoved {
        /// The local user.
        user: UserIdx,
        /// The removed device.
        device: DeviceId,
    },
    /// A state set by the server itself, bypassing devices and tracking mode (the reference's
    /// `set_presence_for_users`); always notified.
    Force {
        /// Local or remote user.
        user: UserIdx,
        /// The state.
        state: PresenceState,
        /// The status message.
        status_msg: Option<Arc<str>>,
    },
    /// An `m.presence` EDU from a remote server.
    Remote {
        /// The authenticated origin server.
        origin: ServerName,
        /// The EDU's `push` entries, type-checked by the federation layer.
        entries: Vec<RemotePresence>,
    },
}

/// One `push` entry of an inbound `m.presence` EDU, before validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemotePresence {
    /// `user_id`.
    pub user_id: String,
    /// `presence`.
    pub presence: String,
    /// `last_active_ago`, if present.
    pub last_active_ago: Option<u64>,
    /// `status_msg`, if present.
    pub status_msg: Option<String>,
    /// `currently_active`, if present.
    pub currently_active: Option<bool>,
}

/// The outcome of [`Engine::apply`] or [`Engine::tick`], waiting for the routers' answer.
#[derive(Debug, Default)]
pub struct Applied {
    batch: Option<StateBatch>,
    notified: Vec<(StreamPos, u32)>,
    wake: Vec<UserIdx>,
    federation: Vec<(u32, Vec<u32>)>,
    /// Inbound remote entries dropped by validation.
    pub dropped_remote_entries: usize,
}

impl Applied {
    /// The notified states, to be passed once through the routers' `get_users_for_states`.
    /// `None` when nothing was notified.
    pub fn batch(&self) -> Option<&StateBatch> {
        self.batch.as_ref()
    }

    /// Whether nothing was notified or pinged.
    pub fn is_empty(&self) -> bool {
        self.batch.is_none() && self.federation.is_empty()
    }
}

/// What the server must do after a change.
#[derive(Debug, Default, Clone)]
pub struct Effects {
    /// Rows to persist before acknowledging: `(stream position, state)`.
    pub persist: Vec<(StreamPos, UserPresenceState)>,
    /// Local users whose waiting syncs should wake.
    pub wake: Vec<UserIdx>,
    /// States to send to each remote server (local users' states only, one per user).
    pub federation: Vec<(ServerName, Vec<UserPresenceState>)>,
    /// Full-snapshot targets to persist: `(user, stream position)`.
    pub snapshot_targets: Vec<(UserId, StreamPos)>,
}

/// Engine counters, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EngineStats {
    /// Notified presence changes.
    pub updates: u64,
    /// Inbound remote entries dropped by validation.
    pub dropped_remote_entries: u64,
    /// Timer checks run.
    pub timer_checks: u64,
}

/// The presence engine. See the module docs.
pub struct Engine {
    pub(crate) config: EngineConfig,
    pub(crate) users: Interner<UserId>,
    pub(crate) servers: Interner<ServerName>,
    pub(crate) rooms_by_id: Interner<RoomId>,
    /// Per user: the home server index if remote, `u32::MAX` if local.
    pub(crate) remote_server: Vec<u32>,
    pub(crate) records: Vec<Record>,
    /// Per user: the stream position of its latest notified change (0 = none).
    pub(crate) pos: Vec<StreamPos>,
    /// Per user: joined rooms with the position of the join, sorted by room.
    pub(crate) user_rooms: Vec<Vec<(u32, StreamPos)>>,
    pub(crate) rooms: Vec<Room>,
    /// Per room: the position of its latest log entry (0 for none, and always for excluded
    /// rooms), so a sync skips unchanged rooms without touching them.
    pub(crate) room_last: Vec<StreamPos>,
    pub(crate) devices: FxHashMap<u32, Devices>,
    /// Per user: the position up to which a full snapshot is owed (send_local_online_presence_to).
    pub(crate) snapshot_at: FxHashMap<u32, StreamPos>,
    /// `(pos, user)` of every notified change, compacted to the last entry per user.
    pub(crate) global_log: Vec<(StreamPos, u32)>,
    pub(crate) stream_pos: StreamPos,
    pub(crate) listening: Vec<u64>,
    pub(crate) wake_bits: Vec<u64>,
    pub(crate) room_marks: Stamps,
    pub(crate) read_stamps: Stamps,
    pub(crate) batch_stamps: Stamps,
    pub(crate) compact_stamps: Stamps,
    pub(crate) timers: TimerQueue,
    /// Users whose state changed without a new stream position, to persist lazily.
    pub(crate) dirty: Vec<u32>,
    pub(crate) dirty_stamps: Stamps,
    pub(crate) dirty_gen: u32,
    pub(crate) stats: EngineStats,
    pub(crate) candidates: crate::read::CandidateCache,
}

pub(crate) const LOCAL: u32 = u32::MAX;

impl Engine {
    /// An empty engine.
    pub fn new(config: EngineConfig) -> Self {
        let mut dirty_stamps = Stamps::new();
        let dirty_gen = dirty_stamps.next();
        Self {
            config,
            users: Interner::new(),
            servers: Interner::new(),
            rooms_by_id: Interner::new(),
            remote_server: Vec::new(),
            records: Vec::new(),
            pos: Vec::new(),
            user_rooms: Vec::new(),
            rooms: Vec::new(),
            room_last: Vec::new(),
            devices: FxHashMap::default(),
            snapshot_at: FxHashMap::default(),
            global_log: Vec::new(),
            stream_pos: 0,
            listening: Vec::new(),
            wake_bits: Vec::new(),
            room_marks: Stamps::new(),
            read_stamps: Stamps::new(),
            batch_stamps: Stamps::new(),
            compact_stamps: Stamps::new(),
            timers: TimerQueue::default(),
            dirty: Vec::new(),
            dirty_stamps,
            dirty_gen,
            stats: EngineStats::default(),
            candidates: crate::read::CandidateCache::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// The current stream position: the presence part of a sync token.
    pub fn current_token(&self) -> StreamPos {
        self.stream_pos
    }

    // ---- users -------------------------------------------------------------------------

    /// The index of a known user.
    pub fn user_idx(&self, user: &UserId) -> Option<UserIdx> {
        self.users.get(user.as_str()).map(UserIdx)
    }

    /// The index of `user`, registering it (offline, no rooms) if new.
    pub fn intern_user(&mut self, user: &UserId) -> UserIdx {
        let (idx, new) = self.users.intern(user);
        if new {
            let remote = if user.is_on(&self.config.server_name) {
                LOCAL
            } else {
                self.servers.intern(user.server_name()).0
            };
            self.remote_server.push(remote);
            self.records.push(Record::default());
            self.pos.push(0);
            self.user_rooms.push(Vec::new());
            let n = self.users.len();
            self.read_stamps.ensure_len(n);
            self.batch_stamps.ensure_len(n);
            self.compact_stamps.ensure_len(n);
            self.dirty_stamps.ensure_len(n);
            self.timers.ensure_len(n);
            let words = n.div_ceil(64);
            self.listening.resize(words, 0);
            self.wake_bits.resize(words, 0);
        }
        UserIdx(idx)
    }

    /// The ID of an interned user.
    pub fn user_id(&self, user: UserIdx) -> &UserId {
        self.users.resolve(user.0)
    }

    /// The user interned at position `i` (users are numbered from 0 in interning order).
    pub fn user_at(&self, i: usize) -> Option<UserIdx> {
        (i < self.users.len()).then_some(UserIdx(i as u32))
    }

    /// How many users are interned.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// Whether the user lives on this server.
    pub fn is_local(&self, user: UserIdx) -> bool {
        self.remote_server[user.index()] == LOCAL
    }

    /// The user's current presence record.
    pub fn record(&self, user: UserIdx) -> &Record {
        &self.records[user.index()]
    }

    /// The user's current presence.
    pub fn presence(&self, user: UserIdx) -> UserPresenceState {
        self.state_of(user.0)
    }

    /// The presence of any user: unknown users are offline.
    pub fn presence_of(&self, user: &UserId) -> UserPresenceState {
        match self.user_idx(user) {
            Some(i) => self.presence(i),
            None => UserPresenceState::offline(user.clone()),
        }
    }

    /// The stream position of the user's latest change.
    pub fn position(&self, user: UserIdx) -> StreamPos {
        self.pos[user.index()]
    }

    pub(crate) fn state_of(&self, u: u32) -> UserPresenceState {
        let r = &self.records[u as usize];
        UserPresenceState {
            user_id: self.users.resolve(u).clone(),
            state: r.state,
            last_active_ts: r.last_active_ts,
            last_federation_update_ts: r.last_federation_update_ts,
            last_user_sync_ts: r.last_user_sync_ts,
            status_msg: r.status_msg.clone(),
            currently_active: r.currently_active,
        }
    }

    /// Marks a local user as having (or no longer having) a sync waiting for changes; only
    /// such users are returned in [`Effects::wake`].
    pub fn set_listening(&mut self, user: UserIdx, listening: bool) {
        let (w, b) = (user.index() / 64, user.index() % 64);
        if listening {
            self.listening[w] |= 1 << b;
        } else {
            self.listening[w] &= !(1 << b);
        }
    }

    fn is_listening(&self, u: u32) -> bool {
        self.listening[u as usize / 64] & (1 << (u % 64)) != 0
    }

    /// Whether `user` is marked by [`Self::set_listening`] as having a waiting sync.
    pub fn listening(&self, user: UserIdx) -> bool {
        self.is_listening(user.0)
    }

    // ---- rooms -------------------------------------------------------------------------

    /// Records a change in a room's log. Excluded rooms keep no log: nobody reads it.
    fn log_room_change(&mut self, r: u32, pos: StreamPos, u: u32) {
        let room = &mut self.rooms[r as usize];
        if room.excluded {
            return;
        }
        room.log_change(pos, u, &mut self.compact_stamps);
        self.room_last[r as usize] = pos;
    }

    fn intern_room(&mut self, room: &RoomId) -> u32 {
        let (idx, new) = self.rooms_by_id.intern(room);
        if new {
            let excluded = self
                .config
                .exclude_rooms_from_presence
                .iter()
                .any(|r| &**r == room.as_str());
            self.rooms.push(Room::new(excluded));
            self.room_last.push(0);
            self.room_marks.ensure_len(self.rooms.len());
        }
        idx
    }

    /// The index of a known room.
    pub fn room_idx(&self, room: &RoomId) -> Option<RoomIdx> {
        self.rooms_by_id.get(room.as_str()).map(RoomIdx)
    }

    /// The joined members of a room.
    pub fn room_members(&self, room: &RoomId) -> Vec<UserId> {
        self.room_idx(room).map_or_else(Vec::new, |r| {
            self.rooms[r.0 as usize]
                .members
                .iter()
                .map(|&m| self.users.resolve(m).clone())
                .collect()
        })
    }

    /// Whether the two users are both joined to a room that is not excluded from presence.
    pub fn shares_room(&self, a: UserIdx, b: UserIdx) -> bool {
        if a == b {
            return true;
        }
        let (ra, rb) = (&self.user_rooms[a.index()], &self.user_rooms[b.index()]);
        let (mut i, mut j) = (0, 0);
        while i < ra.len() && j < rb.len() {
            match ra[i].0.cmp(&rb[j].0) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    if !self.rooms[ra[i].0 as usize].excluded {
                        return true;
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        false
    }

    /// Records a membership loaded from storage at startup: no stream position, no effects.
    pub fn restore_membership(&mut self, room: &RoomId, user: &UserId) {
        let r = self.intern_room(room);
        let u = self.intern_user(user).0;
        self.add_membership(r, u, 0);
    }

    fn add_membership(&mut self, r: u32, u: u32, pos: StreamPos) -> bool {
        let remote = self.remote_server[u as usize];
        let remote = (remote != LOCAL).then_some(remote);
        if !self.rooms[r as usize].add_member(u, remote) {
            return false;
        }
        let rooms = &mut self.user_rooms[u as usize];
        let at = rooms.partition_point(|&(x, _)| x < r);
        rooms.insert(at, (r, pos));
        true
    }

    /// `user` joins `room`. Room-mates and the joiner see each other on their next sync, and
    /// remote servers learn the presence they now need (reference §2.9, room joins).
    pub fn join(&mut self, now: Millis, room: &RoomId, user: &UserId) -> Effects {
        let r = self.intern_room(room);
        let u = self.intern_user(user).0;
        let remote = self.remote_server[u as usize];
        let server_was_in_room = remote != LOCAL && self.rooms[r as usize].has_server(remote);
        self.stream_pos += 1;
        let pos = self.stream_pos;
        if !self.add_membership(r, u, pos) {
            self.stream_pos -= 1;
            return Effects::default();
        }
        let room_ref = &mut self.rooms[r as usize];
        let excluded = room_ref.excluded;
        self.log_room_change(r, pos, u);
        let mut effects = Effects::default();
        if excluded || !self.config.mode.tracks() {
            return effects;
        }
        // Wake the joiner and the listening local members.
        for &m in &self.rooms[r as usize].members {
            if self.is_listening(m) {
                effects.wake.push(UserIdx(m));
            }
        }
        if remote != LOCAL {
            if !server_was_in_room {
                // A new server: send it the local members' states worth knowing.
                let week = 7 * 24 * 3_600_000;
                let states: Vec<_> = self.rooms[r as usize]
                    .members
                    .iter()
                    .filter(|&&m| self.remote_server[m as usize] == LOCAL)
                    .filter(|&&m| {
                        let rec = &self.records[m as usize];
                        rec.state != PresenceState::Offline
                            || rec.status_msg.is_some()
                            || rec.last_active_ts.saturating_add(week) > now
                    })
                    .map(|&m| self.state_of(m))
                    .collect();
                if !states.is_empty() {
                    effects
                        .federation
                        .push((self.servers.resolve(remote).clone(), states));
                }
            }
        } else {
            let state = self.state_of(u);
            for &(s, _) in &self.rooms[r as usize].servers {
                effects
                    .federation
                    .push((self.servers.resolve(s).clone(), vec![state.clone()]));
            }
        }
        effects
    }

    /// `user` leaves `room`: they stop sharing presence through it.
    pub fn leave(&mut self, room: &RoomId, user: &UserId) {
        let (Some(r), Some(u)) = (self.room_idx(room), self.user_idx(user)) else {
            return;
        };
        let remote = self.remote_server[u.index()];
        let remote = (remote != LOCAL).then_some(remote);
        if self.rooms[r.0 as usize].remove_member(u.0, remote) {
            self.user_rooms[u.index()].retain(|&(x, _)| x != r.0);
        }
    }

    // ---- write side --------------------------------------------------------------------

    /// Applies inputs at `now`. Call [`Engine::finish`] with the routers' answer for
    /// [`Applied::batch`] to get the effects.
    pub fn apply(&mut self, now: Millis, inputs: impl IntoIterator<Item = Input>) -> Applied {
        let mut batch = BatchBuilder::new();
        let mut applied = Applied::default();
        for input in inputs {
            self.apply_one(now, input, &mut batch, &mut applied);
        }
        self.close_batch(now, batch, applied)
    }

    /// Runs every timer due at `now` (idle, sync, busy and remote timeouts, the
    /// `currently_active` expiry and the federation re-announce).
    pub fn tick(&mut self, now: Millis) -> Applied {
        let mut due = Vec::new();
        self.timers.pop_due(now, &mut due);
        let mut batch = BatchBuilder::new();
        if !self.config.mode.tracks() {
            return Applied::default();
        }
        for u in due {
            self.stats.timer_checks += 1;
            let is_local = self.remote_server[u as usize] == LOCAL;
            let timed_out = machine::handle_timeout(
                &self.records[u as usize],
                self.devices.get_mut(&u),
                is_local,
                now,
                &self.config.timers,
            );
            if self.devices.get(&u).is_some_and(Vec::is_empty) {
                self.devices.remove(&u);
            }
            match timed_out {
                Some(new) => self.update(now, u, new, false, &mut batch),
                None => self.reschedule(u, now),
            }
        }
        self.close_batch(now, batch, Applied::default())
    }

    /// The next time [`Engine::tick`] has work, if any.
    pub fn next_deadline(&self) -> Option<Millis> {
        if !self.config.mode.tracks() {
            return None;
        }
        self.timers.next_deadline()
    }

    fn apply_one(
        &mut self,
        now: Millis,
        input: Input,
        batch: &mut BatchBuilder,
        applied: &mut Applied,
    ) {
        let tracks = self.config.mode.tracks();
        match input {
            Input::SetPresence {
                user,
                device,
                state,
                status_msg,
            } if tracks => self.set_state(
                now,
                user.0,
                device.as_ref(),
                state,
                Some(status_msg),
                false,
                batch,
            ),
            // A sync with `set_presence=offline` does not affect presence at all.
            Input::SyncStarted {
                user,
                device,
                state,
            } if tracks && state != PresenceState::Offline => {
                self.devices_mut(user.0, device.as_ref()).syncing += 1;
                self.set_state(now, user.0, device.as_ref(), state, None, false, batch);
            }
            Input::SyncEnded { user, device } if tracks => {
                let u = user.0;
                if let Some(d) = self
                    .devices
                    .get_mut(&u)
                    .and_then(|ds| ds.iter_mut().find(|d| d.id.as_ref() == device.as_ref()))
                {
                    d.syncing = d.syncing.saturating_sub(1);
                    // The reference refreshes only the user's field here (its §8.7); the
                    // device's too, so a long sync is not followed by an instant timeout.
                    d.last_sync_ts = now;
                }
                let mut new = self.records[u as usize].clone();
                new.last_user_sync_ts = now;
                self.update(now, u, new, false, batch);
            }
            Input::Activity { user, device } if tracks => {
                let u = user.0;
                let d = self.devices_mut(u, device.as_ref());
                d.last_active_ts = now;
                if d.state == PresenceState::Unavailable {
                    d.state = PresenceState::Online;
                }
                let combined = machine::combine(&self.devices[&u]);
                let mut new = self.records[u as usize].clone();
                new.last_active_ts = now;
                new.state = combined;
                self.update(now, u, new, false, batch);
            }
            Input::DeviceRemoved { user, device } if tracks => {
                let u = user.0;
                if let Some(ds) = self.devices.get_mut(&u) {
                    ds.retain(|d| d.id.as_ref() != Some(&device));
                    let combined = machine::combine(ds);
                    if ds.is_empty() {
                        self.devices.remove(&u);
                    }
                    let mut new = self.records[u as usize].clone();
                    new.state = combined;
                    self.update(now, u, new, false, batch);
                }
            }
            Input::Force {
                user,
                state,
                status_msg,
            } => {
                if self.config.mode == PresenceMode::Disabled {
                    return;
                }
                let u = user.0;
                if tracks && self.remote_server[u as usize] == LOCAL {
                    // A server-side device, so the state times out like any other (the
                    // reference's forced states never time out, its §8.8).
                    let d = self.devices_mut(u, None);
                    d.state = state;
                    d.last_active_ts = now;
                    d.last_sync_ts = now;
                }
                let mut new = self.records[u as usize].clone();
                new.state = state;
                new.status_msg = status_msg.filter(|s| !s.is_empty());
                if matches!(state, PresenceState::Online | PresenceState::Busy) {
                    new.last_active_ts = now;
                }
                self.update(now, u, new, true, batch);
            }
            Input::Remote { origin, entries } if tracks => {
                self.apply_remote(now, &origin, entries, batch, applied)
            }
            _ => {}
        }
    }

    fn devices_mut(&mut self, u: u32, device: Option<&DeviceId>) -> &mut machine::Device {
        machine::device_mut(self.devices.entry(u).or_default(), device)
    }

    /// The reference's `set_state`; `status_msg` is `None` for syncs (status left alone).
    #[allow(clippy::too_many_arguments)]
    fn set_state(
        &mut self,
        now: Millis,
        u: u32,
        device: Option<&DeviceId>,
        mut state: PresenceState,
        status_msg: Option<Option<Arc<str>>>,
        force: bool,
        batch: &mut BatchBuilder,
    ) {
        let is_sync = status_msg.is_none();
        let prev_state = self.records[u as usize].state;
        // Busy survives syncs (reference tests 49-51): a syncing device cannot clear it.
        if prev_state == PresenceState::Busy && is_sync {
            state = PresenceState::Busy;
        }
        let d = self.devices_mut(u, device);
        d.state = state;
        d.last_active_ts = now;
        if is_sync {
            d.last_sync_ts = now;
        }
        let combined = machine::combine(&self.devices[&u]);
        let mut new = self.records[u as usize].clone();
        new.state = combined;
        if matches!(combined, PresenceState::Online | PresenceState::Busy) {
            new.last_active_ts = now;
        }
        match status_msg {
            None => new.last_user_sync_ts = now,
            Some(msg) => new.status_msg = msg.filter(|s| !s.is_empty()),
        }
        self.update(now, u, new, force, batch);
    }

    fn apply_remote(
        &mut self,
        now: Millis,
        origin: &ServerName,
        entries: Vec<RemotePresence>,
        batch: &mut BatchBuilder,
        applied: &mut Applied,
    ) {
        let max = self.config.max_remote_entries_per_edu;
        let total = entries.len();
        for e in entries.into_iter().take(max) {
            match self.validate_remote(origin, &e) {
                Some((user, state)) => {
                    let u = self.intern_user(&user).0;
                    let mut new = self.records[u as usize].clone();
                    new.state = state;
                    new.last_federation_update_ts = now;
                    if let Some(ago) = e.last_active_ago {
                        new.last_active_ts = now.saturating_sub(ago);
                    }
                    new.status_msg = e.status_msg.filter(|s| !s.is_empty()).map(Arc::from);
                    new.currently_active = e.currently_active.unwrap_or(false);
                    self.update(now, u, new, false, batch);
                }
                None => applied.dropped_remote_entries += 1,
            }
        }
        applied.dropped_remote_entries += total.saturating_sub(max);
        self.stats.dropped_remote_entries += applied.dropped_remote_entries as u64;
    }

    fn validate_remote(
        &self,
        origin: &ServerName,
        e: &RemotePresence,
    ) -> Option<(UserId, PresenceState)> {
        let user = UserId::parse(&e.user_id).ok()?;
        if !user.is_on(origin) || user.is_on(&self.config.server_name) {
            return None;
        }
        let state = PresenceState::from_wire(&e.presence)?;
        if e.status_msg
            .as_ref()
            .is_some_and(|s| s.len() > self.config.max_status_msg_len)
        {
            return None;
        }
        // Activity in the future or before the epoch is nonsense.
        if e.last_active_ago.is_some_and(|ago| ago > i64::MAX as u64) {
            return None;
        }
        Some((user, state))
    }

    /// Runs the update rules for one user and records the outcome in the batch.
    fn update(&mut self, now: Millis, u: u32, new: Record, force: bool, batch: &mut BatchBuilder) {
        let is_local = self.remote_server[u as usize] == LOCAL;
        let prev = &self.records[u as usize];
        let mut outcome = machine::handle_update(prev, new, is_local, now, &self.config.timers);
        if force && !outcome.notify {
            outcome.notify = true;
            outcome.record.last_federation_update_ts = now;
        }
        let changed = *prev != outcome.record;
        self.records[u as usize] = outcome.record;
        if outcome.notify {
            self.stream_pos += 1;
            let pos = self.stream_pos;
            self.pos[u as usize] = pos;
            batch.notify(u, pos);
        } else if outcome.federation_ping {
            batch.ping(u);
        }
        if changed && !outcome.notify {
            self.mark_dirty(u);
        }
        self.reschedule(u, now);
    }

    fn reschedule(&mut self, u: u32, now: Millis) {
        if !self.config.mode.tracks() {
            return;
        }
        let is_local = self.remote_server[u as usize] == LOCAL;
        if let Some(at) = machine::next_check(
            &self.records[u as usize],
            self.devices.get(&u),
            is_local,
            now,
            &self.config.timers,
        ) {
            self.timers.schedule(u, at);
        }
    }

    fn mark_dirty(&mut self, u: u32) {
        if self.dirty_stamps.mark(u, self.dirty_gen) {
            self.dirty.push(u);
        }
    }

    /// States that changed without being notified (sync bookkeeping, pings), to persist
    /// lazily with their current stream positions.
    pub fn take_dirty(&mut self) -> Vec<(StreamPos, UserPresenceState)> {
        self.dirty_gen = self.dirty_stamps.next();
        std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|u| (self.pos[u as usize], self.state_of(u)))
            .collect()
    }

    fn close_batch(&mut self, _now: Millis, batch: BatchBuilder, mut applied: Applied) -> Applied {
        let (notified, pinged) = batch.finish();
        self.stats.updates += notified.len() as u64;
        // Stream logs, in position order.
        for &(pos, u) in &notified {
            self.global_log.push((pos, u));
            for i in 0..self.user_rooms[u as usize].len() {
                let r = self.user_rooms[u as usize][i].0;
                self.log_room_change(r, pos, u);
            }
        }
        if self.global_log.len() > 2 * self.users.len() + 1024 {
            compact_log(&mut self.global_log, &mut self.compact_stamps);
        }
        applied.wake = self.wake_for(&notified);
        applied.federation = self.room_destinations(&notified, &pinged);
        if !notified.is_empty() {
            let states = notified.iter().map(|&(_, u)| self.state_of(u)).collect();
            applied.batch = Some(StateBatch::new(states));
        }
        applied.notified = notified;
        applied
    }

    /// Listening local users who share a room with, or are, a notified user.
    fn wake_for(&mut self, notified: &[(StreamPos, u32)]) -> Vec<UserIdx> {
        let mut wake = Vec::new();
        let pass = self.room_marks.next();
        let mut touched = Vec::new();
        for &(_, u) in notified {
            self.wake_bit(u, &mut wake);
            for &(r, _) in &self.user_rooms[u as usize] {
                if !self.rooms[r as usize].excluded && self.room_marks.mark(r, pass) {
                    touched.push(r);
                }
            }
        }
        for r in touched {
            for i in 0..self.rooms[r as usize].members.len() {
                let m = self.rooms[r as usize].members[i];
                self.wake_bit(m, &mut wake);
            }
        }
        for w in &wake {
            self.wake_bits[w.index() / 64] &= !(1 << (w.index() % 64));
        }
        wake
    }

    #[inline]
    fn wake_bit(&mut self, u: u32, wake: &mut Vec<UserIdx>) {
        let (w, b) = (u as usize / 64, u % 64);
        let bit = 1u64 << b;
        if self.listening[w] & bit != 0 && self.wake_bits[w] & bit == 0 {
            self.wake_bits[w] |= bit;
            wake.push(UserIdx(u));
        }
    }

    /// Remote servers sharing a room with each notified or pinged local user.
    fn room_destinations(
        &mut self,
        notified: &[(StreamPos, u32)],
        pinged: &[u32],
    ) -> Vec<(u32, Vec<u32>)> {
        let mut by_server: FxHashMap<u32, Vec<u32>> = FxHashMap::default();
        let mut servers = Vec::new();
        for u in notified
            .iter()
            .map(|&(_, u)| u)
            .chain(pinged.iter().copied())
        {
            if self.remote_server[u as usize] != LOCAL {
                continue;
            }
            servers.clear();
            for &(r, _) in &self.user_rooms[u as usize] {
                let room = &self.rooms[r as usize];
                if !room.excluded {
                    servers.extend(room.servers.iter().map(|&(s, _)| s));
                }
            }
            servers.sort_unstable();
            servers.dedup();
            for &s in &servers {
                by_server.entry(s).or_default().push(u);
            }
        }
        let mut out: Vec<_> = by_server.into_iter().collect();
        out.sort_unstable_by_key(|(s, _)| *s);
        out
    }

    /// Completes a change with the routers' answer for [`Applied::batch`].
    pub fn finish(&mut self, applied: Applied, routes: &UserStates) -> Effects {
        let mut effects = Effects {
            wake: applied.wake,
            ..Effects::default()
        };
        // Local recipients of routed states wake; remote recipients' servers get the states
        // of local users.
        let mut by_server: HashMap<u32, Vec<u32>> = HashMap::new();
        for (u, set) in applied.federation {
            by_server.entry(u).or_default().extend(set);
        }
        if let Some(batch) = &applied.batch {
            for w in &effects.wake {
                self.wake_bits[w.index() / 64] |= 1 << (w.index() % 64);
            }
            for (recipient, set) in routes {
                if !set.batch().same_batch(batch) || set.is_empty() {
                    continue;
                }
                if recipient.is_on(&self.config.server_name) {
                    if let Some(r) = self.user_idx(recipient) {
                        self.wake_bit(r.0, &mut effects.wake);
                    }
                } else {
                    let s = self.servers.intern(recipient.server_name()).0;
                    let entry = by_server.entry(s).or_default();
                    for i in set.indices() {
                        let u = applied.notified[i].1;
                        if self.remote_server[u as usize] == LOCAL {
                            entry.push(u);
                        }
                    }
                }
            }
            for w in &effects.wake {
                self.wake_bits[w.index() / 64] &= !(1 << (w.index() % 64));
            }
            effects.persist = applied
                .notified
                .iter()
                .zip(batch.states())
                .map(|(&(pos, _), s)| (pos, s.clone()))
                .collect();
        }
        let mut servers: Vec<_> = by_server.into_iter().collect();
        servers.sort_unstable_by_key(|(s, _)| *s);
        for (s, mut users) in servers {
            users.sort_unstable();
            users.dedup();
            if users.is_empty() {
                continue;
            }
            let states = users.into_iter().map(|u| self.state_of(u)).collect();
            effects
                .federation
                .push((self.servers.resolve(s).clone(), states));
        }
        effects
    }

    // ---- startup -----------------------------------------------------------------------

    /// Loads persisted presence at startup (after memberships). Local users who were not
    /// offline get one pseudo-device mirroring the stored state, so they time out as usual if
    /// they do not come back. `snapshot_targets` are owed full snapshots. With presence
    /// disabled, stale non-offline states are flushed to offline (returned for persisting).
    pub fn restore(
        &mut self,
        now: Millis,
        rows: Vec<(StreamPos, UserPresenceState)>,
        snapshot_targets: Vec<(UserId, StreamPos)>,
    ) -> Applied {
        let mut order = Vec::with_capacity(rows.len());
        for (pos, s) in rows {
            let u = self.intern_user(&s.user_id).0;
            self.records[u as usize] = Record {
                state: s.state,
                currently_active: s.currently_active,
                last_active_ts: s.last_active_ts,
                last_federation_update_ts: s.last_federation_update_ts,
                last_user_sync_ts: s.last_user_sync_ts,
                status_msg: s.status_msg.filter(|m| !m.is_empty()),
            };
            self.pos[u as usize] = pos;
            self.stream_pos = self.stream_pos.max(pos);
            order.push((pos, u));
        }
        for (user, pos) in snapshot_targets {
            let u = self.intern_user(&user).0;
            self.snapshot_at.insert(u, pos);
            self.stream_pos = self.stream_pos.max(pos + 1);
        }
        order.sort_unstable();
        for &(pos, u) in &order {
            self.global_log.push((pos, u));
            for i in 0..self.user_rooms[u as usize].len() {
                let r = self.user_rooms[u as usize][i].0;
                self.log_room_change(r, pos, u);
            }
        }
        let mut batch = BatchBuilder::new();
        match self.config.mode {
            PresenceMode::Enabled => {
                for &(_, u) in &order {
                    let rec = &self.records[u as usize];
                    if rec.state == PresenceState::Offline {
                        continue;
                    }
                    if self.remote_server[u as usize] == LOCAL {
                        let dev = machine::Device {
                            id: None,
                            state: rec.state,
                            last_active_ts: rec.last_active_ts,
                            last_sync_ts: rec.last_user_sync_ts,
                            syncing: 0,
                        };
                        self.devices.insert(u, vec![dev]);
                    }
                    self.reschedule(u, now);
                }
            }
            PresenceMode::Disabled => {
                for &(_, u) in &order {
                    if self.records[u as usize].state != PresenceState::Offline {
                        let new = Record {
                            last_active_ts: self.records[u as usize].last_active_ts,
                            ..Record::default()
                        };
                        self.update(now, u, new, true, &mut batch);
                    }
                }
            }
            PresenceMode::Untracked => {}
        }
        let mut applied = self.close_batch(now, batch, Applied::default());
        // The flush is not sent over federation (the reference's sender is off too).
        applied.federation.clear();
        applied
    }

    /// Marks local users as owed a full snapshot of the non-offline presence they are
    /// interested in on their next sync (`send_local_online_presence_to`, local part).
    pub fn send_full_presence_to(&mut self, users: &[UserIdx]) -> Effects {
        let mut effects = Effects::default();
        if users.is_empty() {
            return effects;
        }
        // A position of its own, so that caught-up devices see the stream move.
        self.stream_pos += 1;
        let at = self.stream_pos - 1;
        for &u in users {
            if self.remote_server[u.index()] != LOCAL {
                continue;
            }
            self.snapshot_at.insert(u.0, at);
            effects.snapshot_targets.push((self.user_id(u).clone(), at));
            if self.is_listening(u.0) {
                effects.wake.push(u);
            }
        }
        effects
    }
}

/// Collects one batch: each user at most once, at its latest position.
struct BatchBuilder {
    notified: Vec<(StreamPos, u32)>,
    pinged: Vec<u32>,
    slot: FxHashMap<u32, usize>,
}

impl BatchBuilder {
    fn new() -> Self {
        Self {
            notified: Vec::new(),
            pinged: Vec::new(),
            slot: FxHashMap::default(),
        }
    }

    fn notify(&mut self, u: u32, pos: StreamPos) {
        match self.slot.get(&u) {
            Some(&i) => self.notified[i].0 = pos,
            None => {
                self.slot.insert(u, self.notified.len());
                self.notified.push((pos, u));
            }
        }
    }

    fn ping(&mut self, u: u32) {
        self.pinged.push(u);
    }

    /// Notified users in stream order, and pinged users that were not notified.
    fn finish(mut self) -> (Vec<(StreamPos, u32)>, Vec<u32>) {
        self.notified.sort_unstable();
        self.pinged.sort_unstable();
        self.pinged.dedup();
        self.pinged.retain(|u| !self.slot.contains_key(u));
        (self.notified, self.pinged)
    }
}
