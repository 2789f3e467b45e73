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
use rustc_hash::{FxHashMap, FxHashSet};

use crate::{
    EngineConfig, PresenceMode, UserIdx,
    intern::Interner,
    machine::{self, Devices, Record},
    read::CandidateCache,
    rooms::{Rooms, StreamPos},
    stamp::{MarkList, Stamps},
    stream::Stream,
    timers::TimerQueue,
    users::Users,
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
    notified: Vec<(StreamPos, UserIdx)>,
    /// Pinged (unchanged, re-announced) users; their states follow the notified ones in
    /// `batch`, so routers name remote recipients for pings too.
    pinged: Vec<UserIdx>,
    wake: Vec<UserIdx>,
    /// Remote server index → local users whose states it gets.
    federation: Vec<(u32, Vec<UserIdx>)>,
    /// Inbound remote entries dropped by validation.
    pub dropped_remote_entries: usize,
    undo: Undo,
}

/// What a change replaced, to put it back exactly when its commit fails
/// ([`Engine::revert`]): each touched user's record, devices and stream position from before
/// the change, and the position the change gave it.
#[derive(Debug, Default)]
pub struct Undo {
    before: Vec<Before>,
}

#[derive(Debug)]
struct Before {
    user: UserIdx,
    record: Record,
    devices: Option<Devices>,
    pos: StreamPos,
    /// The position the change notified the user at (`None`: changed without notifying).
    changed_at: Option<StreamPos>,
}

impl Undo {
    /// Whether the change touched nobody.
    pub fn is_empty(&self) -> bool {
        self.before.is_empty()
    }
}

impl Applied {
    /// The notified states, then the pinged ones, to be passed once through the routers'
    /// `get_users_for_states`. `None` when nothing was notified or pinged.
    pub fn batch(&self) -> Option<&StateBatch> {
        self.batch.as_ref()
    }

    /// Whether nothing was notified or pinged.
    pub fn is_empty(&self) -> bool {
        self.batch.is_none() && self.federation.is_empty()
    }

    /// Takes what [`Engine::revert`] needs to undo this change if it cannot be committed.
    pub fn take_undo(&mut self) -> Undo {
        std::mem::take(&mut self.undo)
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

/// The presence engine. See the module docs.
pub struct Engine {
    pub(crate) config: EngineConfig,
    pub(crate) users: Users,
    pub(crate) servers: Interner<ServerName>,
    pub(crate) rooms: Rooms,
    /// The devices of local users with any (in memory only).
    pub(crate) devices: FxHashMap<UserIdx, Devices>,
    /// Per user: the position up to which a full snapshot is owed (send_local_online_presence_to).
    pub(crate) snapshot_at: FxHashMap<UserIdx, StreamPos>,
    pub(crate) stream: Stream,
    /// "Already returned" marks of the read side.
    pub(crate) read_marks: Stamps,
    pub(crate) timers: TimerQueue,
    /// Users whose state changed without a new stream position, to persist lazily.
    pub(crate) dirty: MarkList,
    pub(crate) candidates: CandidateCache,
}

impl Engine {
    /// An empty engine.
    pub fn new(config: EngineConfig) -> Self {
        Self {
            config,
            users: Users::new(),
            servers: Interner::new(),
            rooms: Rooms::new(),
            devices: FxHashMap::default(),
            snapshot_at: FxHashMap::default(),
            stream: Stream::new(),
            read_marks: Stamps::new(),
            timers: TimerQueue::default(),
            dirty: MarkList::new(),
            candidates: CandidateCache::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The current stream position: the presence part of a sync token.
    pub fn current_token(&self) -> StreamPos {
        self.stream.current()
    }

    // ---- users -------------------------------------------------------------------------

    /// The index of `user`, registering it (offline, no rooms) if new.
    pub fn intern_user(&mut self, user: &UserId) -> UserIdx {
        let (local, servers) = (&self.config.server_name, &mut self.servers);
        self.users.intern(user, || {
            (!user.is_on(local)).then(|| servers.intern(&user.server_name()).0)
        })
    }

    /// The ID of an interned user.
    pub fn user_id(&self, user: UserIdx) -> &UserId {
        self.users.id(user)
    }

    /// The user interned at position `i` (users are numbered from 0 in interning order).
    pub fn user_at(&self, i: usize) -> Option<UserIdx> {
        (i < self.users.len()).then_some(UserIdx(i as u32))
    }

    /// How many users are interned.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// The user's current presence record.
    pub fn record(&self, user: UserIdx) -> &Record {
        self.users.record(user)
    }

    /// The user's current presence.
    pub fn presence(&self, user: UserIdx) -> UserPresenceState {
        self.users.state(user)
    }

    /// The stream position of the user's latest change.
    pub fn position(&self, user: UserIdx) -> StreamPos {
        self.users.pos(user)
    }

    /// Marks a local user as having (or no longer having) a sync waiting for changes; only
    /// such users are returned in [`Effects::wake`].
    pub fn set_listening(&mut self, user: UserIdx, listening: bool) {
        self.users.set_listening(user, listening);
    }

    /// Whether `user` is marked by [`Self::set_listening`] as having a waiting sync.
    pub fn listening(&self, user: UserIdx) -> bool {
        self.users.listening(user)
    }

    // ---- rooms -------------------------------------------------------------------------

    fn intern_room(&mut self, room: &RoomId) -> u32 {
        let excluded = &self.config.exclude_rooms_from_presence;
        // Without the `shared_rooms` router (restricting mode), no room shares presence.
        let shared_rooms = self.config.audience.shared_rooms;
        self.rooms.intern(room, || {
            !shared_rooms || excluded.iter().any(|r| &**r == room.as_str())
        })
    }

    /// Whether the restricting mode's filter may remove deliveries (without one, every
    /// path takes its unfiltered shortcut).
    pub(crate) fn filtering(&self) -> bool {
        self.config.audience.filter.is_some()
    }

    /// Whether `recipient` may receive `sender`'s presence: always without a filter, and
    /// always for oneself.
    pub fn allows(&self, sender: UserIdx, recipient: UserIdx) -> bool {
        sender == recipient
            || !self.filtering()
            || self
                .config
                .audience
                .allows(self.users.id(sender), self.users.id(recipient))
    }

    /// Whether a member of room `r` on server `s` may receive `sender`'s presence.
    fn room_server_allowed(&self, r: u32, s: u32, sender: UserIdx) -> bool {
        !self.filtering()
            || self
                .rooms
                .room(r)
                .members
                .iter()
                .any(|&m| self.users.home(m) == Some(s) && self.allows(sender, m))
    }

    /// Whether the two users are both joined to a room that is not excluded from presence.
    pub fn shares_room(&self, a: UserIdx, b: UserIdx) -> bool {
        if a == b {
            return true;
        }
        let (mut ra, mut rb) = (self.users.rooms(a).iter(), self.users.rooms(b).iter());
        let (mut x, mut y) = (ra.next(), rb.next());
        while let (Some(i), Some(j)) = (x, y) {
            match i.cmp(&j) {
                std::cmp::Ordering::Less => x = ra.next(),
                std::cmp::Ordering::Greater => y = rb.next(),
                std::cmp::Ordering::Equal => {
                    if !self.rooms.room(i).excluded {
                        return true;
                    }
                    x = ra.next();
                    y = rb.next();
                }
            }
        }
        false
    }

    /// Whether server `s` is in a room of `u` other than `room` (one that shares presence),
    /// so it already receives `u`'s presence.
    fn shares_other_room(&self, u: UserIdx, s: u32, room: u32) -> bool {
        self.users.rooms(u).iter().any(|other| {
            let other_room = self.rooms.room(other);
            other != room && !other_room.excluded && other_room.has_server(s)
        })
    }

    /// Records a membership loaded from storage at startup: no stream position, no effects.
    pub fn restore_membership(&mut self, room: &RoomId, user: &UserId) {
        let r = self.intern_room(room);
        let u = self.intern_user(user);
        self.add_membership(r, u, 0);
    }

    fn add_membership(&mut self, r: u32, u: UserIdx, pos: StreamPos) -> bool {
        if !self.rooms.room_mut(r).add_member(u, self.users.home(u)) {
            return false;
        }
        self.users.add_room(u, r, pos);
        true
    }

    /// `user` joins `room`. Room-mates and the joiner see each other on their next sync, and
    /// remote servers learn the presence they now need (as the reference's `PresenceHandler._handle_state_delta` does for room joins).
    pub fn join(&mut self, now: Millis, room: &RoomId, user: &UserId) -> Effects {
        let r = self.intern_room(room);
        let u = self.intern_user(user);
        let remote = self.users.home(u);
        let server_was_in_room = remote.is_some_and(|s| self.rooms.room(r).has_server(s));
        // The join's position, taken only if the join is new.
        let pos = self.stream.current() + 1;
        if !self.add_membership(r, u, pos) {
            return Effects::default();
        }
        self.stream.advance_to(pos);
        let excluded = self.rooms.room(r).excluded;
        self.rooms.log_change(r, pos, u);
        let mut effects = Effects::default();
        if excluded || !self.config.mode.tracks() {
            return effects;
        }
        let members = &self.rooms.room(r).members;
        // Wake the joiner and the listening local members (those allowed to see each other).
        effects.wake.extend(members.iter().copied().filter(|&m| {
            self.users.listening(m) && (m == u || self.allows(u, m) || self.allows(m, u))
        }));
        match remote {
            Some(remote) if !server_was_in_room => {
                // A new server: send it the local members' states worth knowing.
                let week = 7 * 24 * 3_600_000;
                let states: Vec<_> = members
                    .iter()
                    .copied()
                    .filter(|&m| self.users.is_local(m))
                    // A member the server already sees through another room is no news.
                    .filter(|&m| !self.shares_other_room(m, remote, r))
                    .filter(|&m| self.allows(m, u))
                    .filter(|&m| {
                        let rec = self.users.record(m);
                        rec.state != PresenceState::Offline
                            || rec.status_msg.is_some()
                            || rec.last_active_ts.saturating_add(week) > now
                    })
                    .map(|m| self.users.state(m))
                    .collect();
                if !states.is_empty() {
                    effects
                        .federation
                        .push((self.servers.resolve(remote).clone(), states));
                }
            }
            Some(_) => {}
            None => {
                let state = self.users.state(u);
                for &(s, _) in &self.rooms.room(r).servers {
                    if self.shares_other_room(u, s, r) || !self.room_server_allowed(r, s, u) {
                        continue;
                    }
                    effects
                        .federation
                        .push((self.servers.resolve(s).clone(), vec![state.clone()]));
                }
            }
        }
        effects
    }

    /// The users joined to `room`, in no particular order (none for an unknown room).
    pub fn members(&self, room: &RoomId) -> Vec<UserId> {
        self.rooms.get(room).map_or_else(Vec::new, |r| {
            let members = &self.rooms.room(r).members;
            members.iter().map(|&u| self.users.id(u).clone()).collect()
        })
    }

    /// How many memberships the engine holds.
    pub fn membership_count(&self) -> usize {
        self.rooms.iter().map(|(_, room)| room.members.len()).sum()
    }

    /// Every `(room, member)` membership the engine holds, ordered by room index.
    pub fn memberships(&self) -> Vec<(RoomId, UserId)> {
        self.rooms
            .iter()
            .flat_map(|(id, room)| {
                room.members
                    .iter()
                    .map(move |&u| (id.clone(), self.users.id(u).clone()))
            })
            .collect()
    }

    /// `user` leaves `room`: they stop sharing presence through it.
    pub fn leave(&mut self, room: &RoomId, user: &UserId) {
        let (Some(r), Some(u)) = (self.rooms.get(room), self.users.get(user)) else {
            return;
        };
        if self.rooms.remove_member(r, u, self.users.home(u)) {
            self.users.remove_room(u, r);
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
        self.close_batch(batch, applied)
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
        for u in due.into_iter().map(UserIdx) {
            self.journal(u, &mut batch);
            let timed_out = machine::handle_timeout(
                self.users.record(u),
                self.devices.get_mut(&u),
                self.users.is_local(u),
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
        self.close_batch(batch, Applied::default())
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
        match &input {
            Input::SetPresence { user, .. }
            | Input::SyncStarted { user, .. }
            | Input::SyncEnded { user, .. }
            | Input::Activity { user, .. }
            | Input::DeviceRemoved { user, .. }
            | Input::Force { user, .. } => self.journal(*user, batch),
            // Remote entries are journaled one by one as they are validated.
            Input::Remote { .. } => {}
        }
        match input {
            Input::SetPresence {
                user,
                device,
                state,
                status_msg,
            } if tracks => {
                // An explicit change replaces the stand-in device restored at startup: left
                // there, its old state would outrank what the user now says (`online` over
                // a new `unavailable`). The reference keeps devices in memory only, so after
                // a restart it combines only what was set since. Syncs leave the stand-in
                // alone, as the reference's restored state is left alone by them.
                if let Some(devices) = self.devices.get_mut(&user) {
                    devices.retain(|d| !d.restored);
                }
                self.set_state(
                    now,
                    user,
                    device.as_ref(),
                    state,
                    Some(status_msg),
                    false,
                    batch,
                );
            }
            // A sync with `set_presence=offline` does not affect presence at all.
            Input::SyncStarted {
                user,
                device,
                state,
            } if tracks && state != PresenceState::Offline => {
                self.devices_mut(user, device.as_ref()).syncing += 1;
                self.set_state(now, user, device.as_ref(), state, None, false, batch);
            }
            Input::SyncEnded { user, device } if tracks => {
                if let Some(d) = self
                    .devices
                    .get_mut(&user)
                    .and_then(|ds| ds.iter_mut().find(|d| d.id.as_ref() == device.as_ref()))
                {
                    d.syncing = d.syncing.saturating_sub(1);
                    // The reference refreshes only the user's field here (in
                    // `PresenceHandler.user_syncing`); the device's too, so a long sync is
                    // not followed by an instant timeout.
                    d.last_sync_ts = now;
                }
                let mut new = self.users.record(user).clone();
                new.last_user_sync_ts = now;
                self.update(now, user, new, false, batch);
            }
            Input::Activity { user, device } if tracks => {
                let d = self.devices_mut(user, device.as_ref());
                d.last_active_ts = now;
                if d.state == PresenceState::Unavailable {
                    d.state = PresenceState::Online;
                }
                let combined = machine::combine(&self.devices[&user]);
                let mut new = self.users.record(user).clone();
                new.last_active_ts = now;
                new.state = combined;
                self.update(now, user, new, false, batch);
            }
            Input::DeviceRemoved { user, device } if tracks => {
                if let Some(ds) = self.devices.get_mut(&user) {
                    ds.retain(|d| d.id.as_ref() != Some(&device));
                    let combined = machine::combine(ds);
                    if ds.is_empty() {
                        self.devices.remove(&user);
                    }
                    let mut new = self.users.record(user).clone();
                    new.state = combined;
                    self.update(now, user, new, false, batch);
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
                if tracks && self.users.is_local(user) {
                    // A server-side device, so the state times out like any other (the
                    // reference's forced states never time out: `handle_timeout`, `ModuleApi.set_presence_for_users`).
                    let d = self.devices_mut(user, None);
                    d.state = state;
                    d.last_active_ts = now;
                    d.last_sync_ts = now;
                }
                let mut new = self.users.record(user).clone();
                new.state = state;
                new.status_msg = status_msg.filter(|s| !s.is_empty());
                if matches!(state, PresenceState::Online | PresenceState::Busy) {
                    new.last_active_ts = now;
                }
                self.update(now, user, new, true, batch);
            }
            Input::Remote { origin, entries } if tracks => {
                self.apply_remote(now, &origin, entries, batch, applied)
            }
            _ => {}
        }
    }

    /// Remembers `u` as it is before the batch first changes it.
    fn journal(&self, u: UserIdx, batch: &mut BatchBuilder) {
        if batch.journaled.insert(u) {
            batch.undo.push(Before {
                user: u,
                record: self.users.record(u).clone(),
                devices: self.devices.get(&u).cloned(),
                pos: self.users.pos(u),
                changed_at: None,
            });
        }
    }

    /// Puts back what a change replaced, after its commit failed: each user it touched gets
    /// its record and devices from before, notified at a new position when the record differs
    /// (readers that saw the failed state see the previous one again, and stream positions
    /// only move forward). A user changed again since, by a later change, keeps that change.
    /// Complete the result like any other change.
    pub fn revert(&mut self, now: Millis, undo: Undo) -> Applied {
        let mut batch = BatchBuilder::new();
        for before in undo.before {
            let u = before.user;
            let pos = self.users.pos(u);
            let untouched_since = match before.changed_at {
                Some(at) => pos == at,
                None => pos == before.pos,
            };
            if !untouched_since {
                continue;
            }
            match before.devices {
                Some(devices) => {
                    self.devices.insert(u, devices);
                }
                None => {
                    self.devices.remove(&u);
                }
            }
            if *self.users.record(u) != before.record {
                self.users.set_record(u, before.record);
                let pos = self.stream.advance();
                self.users.set_pos(u, pos);
                batch.notify(u, pos);
            }
            self.reschedule(u, now);
        }
        self.close_batch(batch, Applied::default())
    }

    /// Raises the stream position to at least `pos` (restored from storage at startup, so
    /// that positions handed out before a restart are never handed out again).
    pub fn advance_stream_to(&mut self, pos: StreamPos) {
        self.stream.advance_to(pos);
    }

    fn devices_mut(&mut self, u: UserIdx, device: Option<&DeviceId>) -> &mut machine::Device {
        machine::device_mut(self.devices.entry(u).or_default(), device)
    }

    /// The reference's `set_state`; `status_msg` is `None` for syncs (status left alone).
    #[allow(clippy::too_many_arguments)]
    fn set_state(
        &mut self,
        now: Millis,
        u: UserIdx,
        device: Option<&DeviceId>,
        mut state: PresenceState,
        status_msg: Option<Option<Arc<str>>>,
        force: bool,
        batch: &mut BatchBuilder,
    ) {
        let is_sync = status_msg.is_none();
        let prev_state = self.users.record(u).state;
        // Busy survives syncs (the reference's `test_set_presence_from_syncing_keeps_busy` and its multi-device neighbours): a syncing device cannot clear it.
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
        let mut new = self.users.record(u).clone();
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
                    let u = self.intern_user(&user);
                    self.journal(u, batch);
                    let mut new = self.users.record(u).clone();
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
    fn update(
        &mut self,
        now: Millis,
        u: UserIdx,
        new: Record,
        force: bool,
        batch: &mut BatchBuilder,
    ) {
        let prev = self.users.record(u);
        let mut outcome =
            machine::handle_update(prev, new, self.users.is_local(u), now, &self.config.timers);
        if force && !outcome.notify {
            outcome.notify = true;
            outcome.record.last_federation_update_ts = now;
        }
        let changed = *prev != outcome.record;
        self.users.set_record(u, outcome.record);
        if outcome.notify {
            let pos = self.stream.advance();
            self.users.set_pos(u, pos);
            batch.notify(u, pos);
        } else if outcome.federation_ping {
            batch.ping(u);
        }
        if changed && !outcome.notify {
            self.dirty.mark(u);
        }
        self.reschedule(u, now);
    }

    fn reschedule(&mut self, u: UserIdx, now: Millis) {
        if !self.config.mode.tracks() {
            return;
        }
        if let Some(at) = machine::next_check(
            self.users.record(u),
            self.devices.get(&u),
            self.users.is_local(u),
            now,
            &self.config.timers,
        ) {
            self.timers.schedule(u.0, at);
        }
    }

    /// States that changed without being notified (sync bookkeeping, pings), to persist
    /// lazily with their current stream positions.
    pub fn take_dirty(&mut self) -> Vec<(StreamPos, UserPresenceState)> {
        self.dirty
            .take()
            .into_iter()
            .map(|u| (self.users.pos(u), self.users.state(u)))
            .collect()
    }

    /// Logs a notified change in the global log and the logs of the user's rooms.
    fn log_change(&mut self, pos: StreamPos, u: UserIdx) {
        self.stream.log_change(pos, u);
        for r in self.users.rooms(u).iter() {
            self.rooms.log_change(r, pos, u);
        }
    }

    fn close_batch(&mut self, batch: BatchBuilder, mut applied: Applied) -> Applied {
        let (notified, pinged, undo) = batch.finish();
        applied.undo = Undo { before: undo };
        // Stream logs, in position order.
        for &(pos, u) in &notified {
            self.log_change(pos, u);
        }
        self.stream.maybe_compact(self.users.len());
        applied.wake = self.wake_for(&notified);
        let changed: &[(StreamPos, UserIdx)] = if self.config.federate_room_changes {
            &notified
        } else {
            &[]
        };
        applied.federation = self.room_destinations(changed, &pinged);
        if !notified.is_empty() || !pinged.is_empty() {
            let states = notified
                .iter()
                .map(|&(_, u)| u)
                .chain(pinged.iter().copied())
                .map(|u| self.users.state(u))
                .collect();
            applied.batch = Some(StateBatch::new(states));
        }
        applied.notified = notified;
        applied.pinged = pinged;
        applied
    }

    /// Listening local users who share a room with, or are, a notified user.
    fn wake_for(&mut self, notified: &[(StreamPos, UserIdx)]) -> Vec<UserIdx> {
        let mut wake = Vec::new();
        if self.filtering() {
            // Member by member: only those allowed to receive the notified user wake.
            let mut allowed = Vec::new();
            for &(_, u) in notified {
                self.users.wake(u, &mut wake);
                allowed.clear();
                for r in self.users.rooms(u).iter() {
                    let room = self.rooms.room(r);
                    if room.excluded {
                        continue;
                    }
                    allowed.extend(room.members.iter().copied().filter(|&m| self.allows(u, m)));
                }
                for &m in &allowed {
                    self.users.wake(m, &mut wake);
                }
            }
            self.users.unmark_woken(&wake);
            return wake;
        }
        let pass = self.rooms.next_pass();
        let mut touched = Vec::new();
        for &(_, u) in notified {
            self.users.wake(u, &mut wake);
            for r in self.users.rooms(u).iter() {
                if self.rooms.touch(r, pass) {
                    touched.push(r);
                }
            }
        }
        for r in touched {
            for &m in &self.rooms.room(r).members {
                self.users.wake(m, &mut wake);
            }
        }
        self.users.unmark_woken(&wake);
        wake
    }

    /// Remote servers sharing a room with each notified or pinged local user.
    fn room_destinations(
        &self,
        notified: &[(StreamPos, UserIdx)],
        pinged: &[UserIdx],
    ) -> Vec<(u32, Vec<UserIdx>)> {
        let mut by_server: FxHashMap<u32, Vec<UserIdx>> = FxHashMap::default();
        let mut servers = Vec::new();
        for u in notified
            .iter()
            .map(|&(_, u)| u)
            .chain(pinged.iter().copied())
        {
            if !self.users.is_local(u) {
                continue;
            }
            servers.clear();
            for r in self.users.rooms(u).iter() {
                let room = self.rooms.room(r);
                if room.excluded {
                    continue;
                }
                if self.filtering() {
                    // The servers of the members allowed to receive `u`.
                    servers.extend(
                        room.members
                            .iter()
                            .filter(|&&m| self.allows(u, m))
                            .filter_map(|&m| self.users.home(m)),
                    );
                } else {
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
        let mut by_server: HashMap<u32, Vec<UserIdx>> = HashMap::new();
        for (u, set) in applied.federation {
            by_server.entry(u).or_default().extend(set);
        }
        if let Some(batch) = &applied.batch {
            self.users.mark_woken(&effects.wake);
            for (recipient, set) in routes {
                if !set.batch().same_batch(batch) || set.is_empty() {
                    continue;
                }
                let changed = applied.notified.len();
                let audience = &self.config.audience;
                let allowed = |i: usize| {
                    batch
                        .states()
                        .get(i)
                        .is_some_and(|state| audience.allows(&state.user_id, recipient))
                };
                if recipient.is_on(&self.config.server_name) {
                    // A ping is news to nobody local: only changes wake.
                    if set.indices().any(|i| i < changed && allowed(i))
                        && let Some(r) = self.users.get(recipient)
                    {
                        self.users.wake(r, &mut effects.wake);
                    }
                } else {
                    let sent: Vec<usize> = set.indices().filter(|&i| allowed(i)).collect();
                    let s = self.servers.intern(&recipient.server_name()).0;
                    let entry = by_server.entry(s).or_default();
                    for i in sent {
                        let u = match applied.notified.get(i) {
                            Some(&(_, u)) => Some(u),
                            None => applied.pinged.get(i - changed).copied(),
                        };
                        if let Some(u) = u
                            && self.users.is_local(u)
                        {
                            entry.push(u);
                        }
                    }
                }
            }
            self.users.unmark_woken(&effects.wake);
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
            let states = users.into_iter().map(|u| self.users.state(u)).collect();
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
            let u = self.intern_user(&s.user_id);
            self.users.set_record(
                u,
                Record {
                    state: s.state,
                    currently_active: s.currently_active,
                    last_active_ts: s.last_active_ts,
                    last_federation_update_ts: s.last_federation_update_ts,
                    last_user_sync_ts: s.last_user_sync_ts,
                    status_msg: s.status_msg.filter(|m| !m.is_empty()),
                },
            );
            self.users.set_pos(u, pos);
            self.stream.advance_to(pos);
            order.push((pos, u));
        }
        for (user, pos) in snapshot_targets {
            let u = self.intern_user(&user);
            self.snapshot_at.insert(u, pos);
            self.stream.advance_to(pos + 1);
        }
        order.sort_unstable();
        for &(pos, u) in &order {
            self.log_change(pos, u);
        }
        let mut batch = BatchBuilder::new();
        match self.config.mode {
            PresenceMode::Enabled => {
                for &(_, u) in &order {
                    let rec = self.users.record(u);
                    if rec.state == PresenceState::Offline {
                        continue;
                    }
                    if self.users.is_local(u) {
                        let dev = machine::Device {
                            id: None,
                            state: rec.state,
                            last_active_ts: rec.last_active_ts,
                            last_sync_ts: rec.last_user_sync_ts,
                            syncing: 0,
                            restored: true,
                        };
                        self.devices.insert(u, vec![dev]);
                    }
                    self.reschedule(u, now);
                }
            }
            PresenceMode::Disabled => {
                for &(_, u) in &order {
                    let rec = self.users.record(u);
                    if rec.state != PresenceState::Offline {
                        let new = Record {
                            last_active_ts: rec.last_active_ts,
                            ..Record::default()
                        };
                        self.update(now, u, new, true, &mut batch);
                    }
                }
            }
            PresenceMode::Untracked => {}
        }
        let mut applied = self.close_batch(batch, Applied::default());
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
        let at = self.stream.advance() - 1;
        for &u in users {
            if !self.users.is_local(u) {
                continue;
            }
            self.snapshot_at.insert(u, at);
            effects
                .snapshot_targets
                .push((self.users.id(u).clone(), at));
            if self.users.listening(u) {
                effects.wake.push(u);
            }
        }
        effects
    }
}

/// Collects one batch: each user at most once, at its latest position.
struct BatchBuilder {
    notified: Vec<(StreamPos, UserIdx)>,
    pinged: Vec<UserIdx>,
    slot: FxHashMap<UserIdx, usize>,
    /// Users as they were before the batch changed them (see [`Undo`]).
    undo: Vec<Before>,
    journaled: FxHashSet<UserIdx>,
}

impl BatchBuilder {
    fn new() -> Self {
        Self {
            notified: Vec::new(),
            pinged: Vec::new(),
            slot: FxHashMap::default(),
            undo: Vec::new(),
            journaled: FxHashSet::default(),
        }
    }

    fn notify(&mut self, u: UserIdx, pos: StreamPos) {
        match self.slot.get(&u) {
            Some(&i) => self.notified[i].0 = pos,
            None => {
                self.slot.insert(u, self.notified.len());
                self.notified.push((pos, u));
            }
        }
    }

    fn ping(&mut self, u: UserIdx) {
        self.pinged.push(u);
    }

    /// Notified users in stream order, pinged users that were not notified, and the undo
    /// journal.
    fn finish(mut self) -> (Vec<(StreamPos, UserIdx)>, Vec<UserIdx>, Vec<Before>) {
        for before in &mut self.undo {
            before.changed_at = self.slot.get(&before.user).map(|&i| self.notified[i].0);
        }
        self.notified.sort_unstable();
        self.pinged.sort_unstable();
        self.pinged.dedup();
        self.pinged.retain(|u| !self.slot.contains_key(u));
        (self.notified, self.pinged, self.undo)
    }
}
