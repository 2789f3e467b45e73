//! The presence service: the engine, the routers, the store and the notifier wired together.
//!
//! Every change takes the same path: `Engine::apply` under the engine lock, the routers'
//! `get_users_for_states` with no lock held, `Engine::finish` under the lock, then the rows are
//! persisted (group commit) before the caller is answered, waiting syncs are woken and remote
//! servers are sent what they need. The engine lock is a `std::sync::Mutex` held only for
//! in-memory work, never across an `.await`. Local changes reach that path in batches
//! (`batch`): one engine step, one router call and one commit for everything that arrived
//! while the previous batch was being processed.

mod background;
mod batch;
pub mod format;
mod persistence;

use std::{
    sync::{
        Arc, Mutex, MutexGuard, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use presence_engine::{
    Applied, Effects, Engine, Input, RemotePresence, Routed, StreamPos, UserIdx,
};
use presence_router::{
    DeviceId, ForcedPresence, InterestedUsers, Millis, ModuleApiError, PresenceState, RoomId,
    RouterSet, ServerName, UserId, UserPresenceState,
};
use presence_store::StoreError;

use crate::notify::{Notifier, Subscription};

pub use background::spawn_background;
pub use persistence::PresencePersistence;

/// Where outbound presence goes (the federation outbox).
pub trait FederationSender: Send + Sync + 'static {
    /// Queues `states` (local users' presence) for `destination`; must not block.
    fn enqueue(&self, destination: ServerName, states: Vec<UserPresenceState>);
}

/// Why a presence change was not acknowledged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PresenceError {
    /// The store refused or failed the write.
    #[error("presence store: {0}")]
    Store(#[from] StoreError),
    /// The batch this change was part of failed (the same error for every change in it).
    #[error("{0}")]
    Batch(Arc<PresenceError>),
    /// The batch task stopped before answering (a bug, logged where it happened).
    #[error("the presence batch was interrupted")]
    Interrupted,
}

impl PresenceError {
    /// The store error behind this one, if any.
    pub fn store_error(&self) -> Option<&StoreError> {
        match self {
            Self::Store(e) => Some(e),
            Self::Batch(e) => e.store_error(),
            Self::Interrupted => None,
        }
    }
}

/// How announcing a change failed: before its rows were committed (it must be put back) or
/// after (it stands).
enum Failed {
    BeforeCommit(PresenceError),
    AfterCommit(PresenceError),
}

impl Failed {
    fn into_inner(self) -> PresenceError {
        match self {
            Self::BeforeCommit(e) | Self::AfterCommit(e) => e,
        }
    }
}

/// The presence part of a sync.
#[derive(Debug, Clone, Default)]
pub struct PresenceRead {
    /// Current presence of each user to report, each once.
    pub states: Vec<UserPresenceState>,
    /// The presence part of the next token.
    pub next_token: StreamPos,
}

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}

struct Inner<S> {
    engine: Mutex<Engine>,
    routers: RouterSet,
    store: S,
    notifier: Notifier,
    federation: OnceLock<Arc<dyn FederationSender>>,
    flush_interval: Duration,
    queue: Mutex<batch::Queue>,
    /// Stream positions up to this one are reserved in storage (see `reserve_positions`).
    reserved: AtomicU64,
    /// One reservation at a time, so that the stored value only grows. An async mutex: it is
    /// held across the store write and nothing else.
    reserving: tokio::sync::Mutex<()>,
}

/// How many stream positions are reserved in storage at a time. Changes stop (and are
/// refused, before anything becomes visible) when fewer than half of them are left and no
/// more can be reserved, so up to half a block is there for the changes already under way and
/// for putting back those whose commit fails. After a restart the stream resumes above the
/// reservation: positions jump by at most this much per restart.
const RESERVE_BLOCK: StreamPos = 1_000_000;

/// The presence service. Cheap to clone.
pub struct PresenceService<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for PresenceService<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<S: PresencePersistence> PresenceService<S> {
    /// Wires the service; call [`Self::restore`] before serving.
    pub fn new(engine: Engine, routers: RouterSet, store: S, notifier: Notifier) -> Self {
        Self {
            inner: Arc::new(Inner {
                engine: Mutex::new(engine),
                routers,
                store,
                notifier,
                federation: OnceLock::new(),
                flush_interval: Duration::from_secs(10),
                queue: Mutex::default(),
                reserved: AtomicU64::new(0),
                reserving: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Connects the federation outbox (once).
    pub fn set_federation(&self, sender: Arc<dyn FederationSender>) {
        let _ = self.inner.federation.set(sender);
    }

    /// The routers.
    pub fn routers(&self) -> &RouterSet {
        &self.inner.routers
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// The notifier shared with the rest of `/sync`.
    pub fn notifier(&self) -> &Notifier {
        &self.inner.notifier
    }

    fn engine(&self) -> MutexGuard<'_, Engine> {
        crate::lock(&self.inner.engine)
    }

    /// A page of every user's presence, in interning order, and the number of users.
    pub fn page(&self, from: usize, limit: usize) -> (Vec<UserPresenceState>, usize) {
        let e = self.engine();
        let total = e.user_count();
        let states = (from..total.min(from.saturating_add(limit)))
            .filter_map(|i| e.user_at(i))
            .map(|u| e.presence(u))
            .collect();
        (states, total)
    }

    /// Whether `user` has a waiting `/sync` (one the engine wakes on changes in its rooms).
    pub fn is_listening(&self, user: &UserId) -> bool {
        let mut e = self.engine();
        let idx = e.intern_user(user);
        e.listening(idx)
    }

    /// Loads memberships, presence and owed snapshots from the store into the engine.
    pub async fn restore(&self) -> Result<(), PresenceError> {
        let started = std::time::Instant::now();
        let memberships = self.inner.store.all_joined_memberships().await?;
        let presence = self.inner.store.load_presence().await?;
        let snapshots = self.inner.store.load_full_presence_targets().await?;
        let floor = self.inner.store.load_reserved_position().await?;
        let (n_members, n_presence) = (memberships.len(), presence.len());
        if self.inner.routers.follows_memberships() {
            for (room, user) in &memberships {
                self.inner.routers.membership_changed(room, user, true);
            }
        }
        let applied = {
            let mut e = self.engine();
            for (room, user) in &memberships {
                e.restore_membership(room, user);
            }
            // Above every position handed out before the restart, committed or not.
            e.advance_stream_to(floor);
            e.restore(now_ms(), presence, snapshots)
        };
        self.inner.reserved.store(floor, Ordering::Relaxed);
        self.reserve_positions().await?;
        self.complete(applied).await?;
        tracing::info!(
            memberships = n_members,
            presence_rows = n_presence,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Restored presence state from the store."
        );
        Ok(())
    }

    /// Applies inputs and completes the change (routers, persist, wake, federation).
    pub async fn process(&self, inputs: Vec<Input>) -> Result<Effects, PresenceError> {
        match self.process_then_roll_back(inputs).await {
            Ok(effects) => Ok(effects),
            Err(FailedChange { error, roll_back }) => {
                roll_back.run().await;
                Err(error)
            }
        }
    }

    /// [`Self::process`], but a change whose commit failed is handed back to be put back
    /// ([`FailedChange::roll_back`]) once the caller has answered its requests: they need not
    /// wait for that second commit too (with a database that hangs, another time limit).
    pub(crate) async fn process_then_roll_back(
        &self,
        inputs: Vec<Input>,
    ) -> Result<Effects, FailedChange<S>> {
        let failed = |error, undo| FailedChange {
            error,
            roll_back: RollBack {
                svc: self.clone(),
                undo,
            },
        };
        if let Err(error) = self.reserve_positions().await {
            return Err(failed(error, None));
        }
        let mut applied = self.engine().apply(now_ms(), inputs);
        let undo = applied.take_undo();
        match self.route_and_announce(applied).await {
            Ok(effects) => Ok(effects),
            Err(Failed::BeforeCommit(error)) => Err(failed(error, Some(undo))),
            Err(Failed::AfterCommit(error)) => Err(failed(error, None)),
        }
    }

    /// Makes sure at least half a block of stream positions is reserved in storage before a
    /// change takes any: otherwise the change is refused before anything becomes visible.
    async fn reserve_positions(&self) -> Result<(), PresenceError> {
        let enough = |head: StreamPos, reserved: StreamPos| head + RESERVE_BLOCK / 2 <= reserved;
        if enough(
            self.engine().current_token(),
            self.inner.reserved.load(Ordering::Relaxed),
        ) {
            return Ok(());
        }
        let _one_at_a_time = self.inner.reserving.lock().await;
        let head = self.engine().current_token();
        if enough(head, self.inner.reserved.load(Ordering::Relaxed)) {
            return Ok(());
        }
        let upto = head + RESERVE_BLOCK;
        self.inner.store.reserve_positions(upto).await?;
        self.inner.reserved.fetch_max(upto, Ordering::Relaxed);
        Ok(())
    }

    /// Routes, persists and announces an applied change. If it cannot be committed, the
    /// engine puts back what it replaced (and that is announced instead), so nobody goes on
    /// seeing a change that was refused.
    pub(crate) async fn complete(&self, mut applied: Applied) -> Result<Effects, PresenceError> {
        let undo = applied.take_undo();
        match self.route_and_announce(applied).await {
            Ok(effects) => Ok(effects),
            Err(Failed::BeforeCommit(e)) => {
                self.roll_back(undo).await;
                Err(e)
            }
            Err(Failed::AfterCommit(e)) => Err(e),
        }
    }

    /// Puts back a change whose commit failed and announces that (the previous states at new
    /// positions). Its own commit may fail too (the store still holds the previous states, so
    /// nothing is lost); it is then only logged.
    async fn roll_back(&self, undo: presence_engine::Undo) {
        if undo.is_empty() {
            return;
        }
        let applied = self.engine().revert(now_ms(), undo);
        crate::metrics::presence_rollback();
        if let Err(e) = self.route_and_announce(applied).await {
            let e = e.into_inner();
            tracing::warn!(error = %e, "Could not store the presence put back after a failed commit; the store still holds it.");
        }
    }

    async fn route_and_announce(&self, applied: Applied) -> Result<Effects, Failed> {
        if applied.is_empty() {
            let effects = self.engine().finish(applied, &Default::default());
            return Ok(effects);
        }
        let routes = match applied.batch() {
            Some(batch) => self.inner.routers.get_users_for_states(batch).await,
            None => Default::default(),
        };
        let (effects, wake) = {
            let mut e = self.engine();
            let fx = e.finish(applied, &routes);
            let wake: Vec<UserId> = fx.wake.iter().map(|&u| e.user_id(u).clone()).collect();
            (fx, wake)
        };
        self.announce(&effects, &wake).await?;
        Ok(effects)
    }

    async fn announce(&self, effects: &Effects, wake: &[UserId]) -> Result<(), Failed> {
        if !effects.persist.is_empty() {
            let started = std::time::Instant::now();
            self.inner
                .store
                .persist_presence(effects.persist.clone())
                .await
                .map_err(|e| Failed::BeforeCommit(e.into()))?;
            crate::metrics::store_write(started.elapsed());
            crate::metrics::presence_updates(effects.persist.len());
        }
        if !effects.snapshot_targets.is_empty() {
            let mut by_pos: std::collections::BTreeMap<StreamPos, Vec<UserId>> = Default::default();
            for (u, pos) in &effects.snapshot_targets {
                by_pos.entry(*pos).or_default().push(u.clone());
            }
            for (pos, users) in by_pos {
                self.inner
                    .store
                    .set_full_presence_targets(users, pos)
                    .await
                    .map_err(|e| Failed::AfterCommit(e.into()))?;
            }
        }
        self.inner.notifier.wake(wake);
        if let Some(fed) = self.inner.federation.get() {
            for (dest, states) in &effects.federation {
                fed.enqueue(dest.clone(), states.clone());
            }
        }
        Ok(())
    }

    /// Interns a user.
    pub fn user(&self, user: &UserId) -> UserIdx {
        self.engine().intern_user(user)
    }

    /// `PUT /presence/{userId}/status`.
    pub async fn set_presence(
        &self,
        user: &UserId,
        device: Option<DeviceId>,
        state: PresenceState,
        status_msg: Option<Arc<str>>,
    ) -> Result<(), PresenceError> {
        let user = self.user(user);
        self.submit(vec![Input::SetPresence {
            user,
            device,
            state,
            status_msg,
        }])
        .await
    }

    /// A sync that affects presence starts (the caller has checked `set_presence` and the
    /// rate limit).
    pub async fn sync_started(
        &self,
        user: &UserId,
        device: Option<DeviceId>,
        state: PresenceState,
    ) -> Result<(), PresenceError> {
        let user = self.user(user);
        self.submit(vec![Input::SyncStarted {
            user,
            device,
            state,
        }])
        .await
    }

    /// A sync happened and is over (a Synapse worker's `set_state(is_sync=True)` relay): the
    /// device counts as online for `sync_online_timeout` from now, as after any sync.
    pub async fn synced(
        &self,
        user: &UserId,
        device: Option<DeviceId>,
        state: PresenceState,
    ) -> Result<(), PresenceError> {
        let user = self.user(user);
        self.submit(vec![
            Input::SyncStarted {
                user,
                device: device.clone(),
                state,
            },
            Input::SyncEnded { user, device },
        ])
        .await
    }

    /// The sync started by [`Self::sync_started`] ended.
    pub async fn sync_ended(&self, user: &UserId, device: Option<DeviceId>) {
        let user = self.user(user);
        if let Err(e) = self.submit(vec![Input::SyncEnded { user, device }]).await {
            tracing::warn!(error = %e, "Could not record the end of a sync.");
        }
    }

    /// The user did something (message, typing, receipt).
    pub async fn activity(&self, user: &UserId, device: Option<DeviceId>) {
        let user = self.user(user);
        if let Err(e) = self.submit(vec![Input::Activity { user, device }]).await {
            tracing::warn!(error = %e, "Could not record activity.");
        }
    }

    /// A device logged out.
    pub async fn device_removed(&self, user: &UserId, device: DeviceId) {
        let user = self.user(user);
        if let Err(e) = self
            .submit(vec![Input::DeviceRemoved { user, device }])
            .await
        {
            tracing::warn!(error = %e, "Could not remove a device from presence.");
        }
    }

    /// An inbound `m.presence` EDU; returns how many entries were dropped by validation.
    pub async fn remote_presence(
        &self,
        origin: ServerName,
        entries: Vec<RemotePresence>,
    ) -> Result<usize, PresenceError> {
        self.reserve_positions().await?;
        let applied = self
            .engine()
            .apply(now_ms(), vec![Input::Remote { origin, entries }]);
        let dropped = applied.dropped_remote_entries;
        self.complete(applied).await?;
        Ok(dropped)
    }

    /// A membership change: wakes the members and tells remote servers what they need.
    pub async fn join(&self, room: &RoomId, user: &UserId) -> Result<(), PresenceError> {
        self.reserve_positions().await?;
        self.inner.routers.membership_changed(room, user, true);
        let (effects, wake) = {
            let mut e = self.engine();
            let fx = e.join(now_ms(), room, user);
            let wake: Vec<UserId> = fx.wake.iter().map(|&u| e.user_id(u).clone()).collect();
            (fx, wake)
        };
        self.announce(&effects, &wake)
            .await
            .map_err(Failed::into_inner)
    }

    /// The users the engine holds as joined to `room`.
    pub fn members(&self, room: &RoomId) -> Vec<UserId> {
        self.engine().members(room)
    }

    /// How many users and memberships the engine holds.
    pub fn size(&self) -> (usize, usize) {
        let e = self.engine();
        (e.user_count(), e.membership_count())
    }

    /// Every membership the engine holds.
    pub fn memberships(&self) -> Vec<(RoomId, UserId)> {
        self.engine().memberships()
    }

    /// `user` left `room`.
    pub fn leave(&self, room: &RoomId, user: &UserId) {
        self.engine().leave(room, user);
        self.inner.routers.membership_changed(room, user, false);
    }

    /// Registers a waiting sync for `user` (call before reading, so nothing is missed).
    pub fn subscribe(&self, user: &UserId) -> Subscription {
        let mut e = self.engine();
        let idx = e.intern_user(user);
        let (sub, first) = self.inner.notifier.subscribe(user);
        if first {
            e.set_listening(idx, true);
        }
        sub
    }

    /// Ends a waiting sync's registration.
    pub fn unsubscribe(&self, user: &UserId, sub: Subscription) {
        let mut e = self.engine();
        if sub.finish() {
            let idx = e.intern_user(user);
            e.set_listening(idx, false);
        }
    }

    /// The presence a sync of `user` returns now (no waiting).
    pub async fn read(&self, user: &UserId, since: Option<StreamPos>) -> PresenceRead {
        let interest = self.inner.routers.get_interested_users(user).await;
        match interest {
            InterestedUsers::Users(users) => {
                let mut e = self.engine();
                let idx = e.intern_user(user);
                let routed = e.resolve_users(&users);
                let read = e.sync(idx, since, Routed::Users(&routed));
                collect(&e, read)
            }
            InterestedUsers::All => {
                let candidates = {
                    let mut e = self.engine();
                    let idx = e.intern_user(user);
                    e.all_candidates(idx, since)
                };
                let routes = match candidates.routes() {
                    Some(r) => r.clone(),
                    None => {
                        let routes = self
                            .inner
                            .routers
                            .get_users_for_states(candidates.batch())
                            .await;
                        self.engine().cache_routes(&candidates, routes)
                    }
                };
                let mut e = self.engine();
                let idx = e.intern_user(user);
                let set = routes.get(user);
                let read = e.sync(
                    idx,
                    since,
                    Routed::All {
                        candidates: &candidates,
                        states: set,
                    },
                );
                collect(&e, read)
            }
        }
    }

    /// The current presence stream position.
    pub fn current_token(&self) -> StreamPos {
        self.engine().current_token()
    }

    /// Whether users who share a room receive each other's presence (always in the additive
    /// mode; in the restricting mode, only with the `shared_rooms` router).
    pub fn shares_through_rooms(&self) -> bool {
        self.engine().config().audience.shared_rooms
    }

    /// Whether the routers' filter (restricting mode) lets `recipient` receive `sender`'s
    /// presence; always true in the additive mode.
    pub fn audience_allows(&self, sender: &UserId, recipient: &UserId) -> bool {
        self.engine().config().audience.allows(sender, recipient)
    }

    /// `target`'s current presence, whoever asks.
    pub fn state_of(&self, target: &UserId) -> UserPresenceState {
        let mut e = self.engine();
        let t = e.intern_user(target);
        e.presence(t)
    }

    /// `target`'s presence if `reader` may see it: exactly when `reader` would receive its
    /// updates (itself, a shared room, or routed).
    pub async fn presence_for(
        &self,
        reader: &UserId,
        target: &UserId,
    ) -> Option<UserPresenceState> {
        let (shares, state) = {
            let mut e = self.engine();
            let (r, t) = (e.intern_user(reader), e.intern_user(target));
            (e.can_see(r, t, false), e.presence(t))
        };
        if shares {
            return Some(state);
        }
        let routed = match self.inner.routers.get_interested_users(reader).await {
            InterestedUsers::Users(users) => users.contains(target),
            InterestedUsers::All => {
                let batch = presence_router::StateBatch::new(vec![state.clone()]);
                let routes = self.inner.routers.get_users_for_states(&batch).await;
                routes.get(reader).is_some_and(|set| !set.is_empty())
            }
        };
        // In the restricting mode the routers' filter has the last word.
        let visible = routed && {
            let mut e = self.engine();
            let (r, t) = (e.intern_user(reader), e.intern_user(target));
            e.can_see(r, t, true)
        };
        visible.then_some(state)
    }

    /// `ModuleApi.send_local_online_presence_to`: local targets get a full snapshot on their
    /// next sync; remote targets are sent theirs over federation at once.
    pub async fn send_local_online_presence_to(
        &self,
        users: Vec<UserId>,
    ) -> Result<(), ModuleApiError> {
        let server = self.engine().config().server_name.clone();
        let (local, remote): (Vec<UserId>, Vec<UserId>) =
            users.into_iter().partition(|u| u.is_on(&server));
        for u in &local {
            match self.inner.store.user_exists(u).await {
                Ok(true) => {}
                Ok(false) => {
                    return Err(ModuleApiError::Rejected(format!("unknown local user {u}")));
                }
                Err(e) => return Err(ModuleApiError::Rejected(format!("store: {e}"))),
            }
        }
        if !local.is_empty() {
            self.reserve_positions()
                .await
                .map_err(|e| ModuleApiError::Rejected(e.to_string()))?;
            let (effects, wake) = {
                let mut e = self.engine();
                let idx: Vec<UserIdx> = local.iter().map(|u| e.intern_user(u)).collect();
                let fx = e.send_full_presence_to(&idx);
                let wake: Vec<UserId> = fx.wake.iter().map(|&u| e.user_id(u).clone()).collect();
                (fx, wake)
            };
            self.announce(&effects, &wake)
                .await
                .map_err(|e| ModuleApiError::Rejected(e.into_inner().to_string()))?;
        }
        if !remote.is_empty() {
            let online = self.engine().local_online();
            let routes = self
                .inner
                .routers
                .get_users_for_states(online.batch())
                .await;
            let mut sends = Vec::new();
            {
                let mut e = self.engine();
                for target in &remote {
                    let states = e.snapshot_for_remote(target, &online, routes.get(target));
                    if !states.is_empty() {
                        sends.push((target.server_name(), states));
                    }
                }
            }
            if let Some(fed) = self.inner.federation.get() {
                for (dest, states) in sends {
                    fed.enqueue(dest, states);
                }
            }
        }
        Ok(())
    }

    /// `ModuleApi.set_presence_for_users`: each user's state and status message replaced as
    /// the server itself sets them (no device, always announced), local or remote users.
    /// Unknown local users are refused before anything changes.
    pub async fn set_presence_for_users(
        &self,
        states: Vec<ForcedPresence>,
    ) -> Result<(), ModuleApiError> {
        let server = self.engine().config().server_name.clone();
        for s in states.iter().filter(|s| s.user.is_on(&server)) {
            match self.inner.store.user_exists(&s.user).await {
                Ok(true) => {}
                Ok(false) => {
                    return Err(ModuleApiError::Rejected(format!(
                        "unknown local user {}",
                        s.user
                    )));
                }
                Err(e) => return Err(ModuleApiError::Rejected(format!("store: {e}"))),
            }
        }
        if states.is_empty() {
            return Ok(());
        }
        let inputs = {
            let mut e = self.engine();
            states
                .into_iter()
                .map(|s| Input::Force {
                    user: e.intern_user(&s.user),
                    state: s.state,
                    status_msg: s.status_msg,
                })
                .collect()
        };
        self.submit(inputs)
            .await
            .map_err(|e| ModuleApiError::Rejected(e.to_string()))
    }

    /// Persists states that changed without news (sync bookkeeping).
    pub async fn flush_dirty(&self) -> Result<(), PresenceError> {
        let dirty = self.engine().take_dirty();
        if !dirty.is_empty() {
            self.inner.store.persist_presence(dirty).await?;
        }
        Ok(())
    }

    /// Runs due timers.
    pub(crate) async fn tick(&self) -> Result<(), PresenceError> {
        self.reserve_positions().await?;
        let applied = self.engine().tick(now_ms());
        if !applied.is_empty() {
            self.complete(applied).await?;
        }
        Ok(())
    }

    pub(crate) fn next_deadline(&self) -> Option<Millis> {
        self.engine().next_deadline()
    }
}

/// A change that could not be completed, and what puts it back.
pub(crate) struct FailedChange<S: PresencePersistence> {
    /// Why it failed.
    pub(crate) error: PresenceError,
    /// To run once the change's requests are answered.
    pub(crate) roll_back: RollBack<S>,
}

/// Puts a change back if it failed before its commit (nothing to do otherwise).
pub(crate) struct RollBack<S: PresencePersistence> {
    svc: PresenceService<S>,
    undo: Option<presence_engine::Undo>,
}

impl<S: PresencePersistence> RollBack<S> {
    pub(crate) async fn run(self) {
        if let Some(undo) = self.undo {
            self.svc.roll_back(undo).await;
        }
    }
}

fn collect(e: &Engine, read: presence_engine::SyncRead) -> PresenceRead {
    crate::metrics::deliveries(read.users.len());
    PresenceRead {
        states: read.users.iter().map(|&u| e.presence(u)).collect(),
        next_token: read.next_token,
    }
}
