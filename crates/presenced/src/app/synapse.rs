//! The Synapse writer mode in the core: Presenced as the presence stream writer of a
//! Synapse deployment.
//!
//! - Persistence ([`SynapseWriter`] behind [`Persistence::Synapse`]): presence is committed to
//!   Synapse's `presence_stream` (stream IDs from its sequence, one row per user, the
//!   writer's `stream_positions` row raised), and only then published as `RDATA presence`
//!   rows over Redis, in stream-ID order. A row that is not committed is never announced, and
//!   the announced position never passes what is committed: the same rule as the standalone
//!   mode's "visible only once committed".
//! - Replication over Redis ([`run_replication`]): `POSITION` for `presence`,
//!   `presence_federation` and the writer's part of `caches` on every (re)connection and
//!   every `REPLICATE`; `USER_SYNC` and
//!   `CLEAR_USER_SYNC` drive the engine's per-device syncing state, and a process that has
//!   not been heard from for five minutes has its syncs ended (as the stock writer does).
//! - Full snapshots for local users (`send_local_online_presence_to`,
//!   [`SynapseWriter::send_full_presence`]): the `users_to_send_full_presence_to` mark, the
//!   `caches` invalidation that makes the workers read it again, then the presence stream
//!   moved on, so each device gets the snapshot once.
//! - Access tokens ([`SynapseTokens`]): Synapse's `access_tokens` and `users` tables.
//!
//! Reference: `synapse/handlers/presence.py`, `synapse/replication/tcp/` (see
//! docs/synapse-writer.md for the protocol as Presenced speaks it).

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use presence_engine::StreamPos;
use presence_router::{DeviceId, RoomId, ServerName, UserId, UserPresenceState};
use presence_store::StoreError;
use presence_synapse::{
    CACHES_STREAM, CacheUpdates, EVENTS_STREAM, FederationQueue, FederationUpdates,
    PRESENCE_FEDERATION_STREAM, PRESENCE_STREAM, PresenceFederationRow, SynapseDb,
    command::{Command, SyncState},
    pg::TokenLookup,
    replication::{Event, Publisher},
    rows::{EventsRow, PresenceRow},
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{App, auth::AccessTokens};
use crate::{error::ApiError, lock, presence::PresencePersistence};

/// How long a process's syncing devices count without any `USER_SYNC` from it (the stock
/// writer's `EXTERNAL_PROCESS_EXPIRY`).
const PROCESS_EXPIRY: Duration = Duration::from_secs(5 * 60);
/// How often silent processes are looked for.
const EXPIRY_CHECK: Duration = Duration::from_secs(30);

fn backend(e: presence_synapse::Error) -> StoreError {
    StoreError::Backend {
        backend: "synapse",
        reason: crate::error::chain(&e),
    }
}

/// The presence writer's side of the deployment: its PostgreSQL, its Redis publisher and
/// what it has announced.
pub struct SynapseWriter {
    instance: String,
    db: SynapseDb,
    publisher: Publisher,
    /// The highest presence stream ID committed and published (what POSITION announces).
    position: AtomicU64,
    /// Serializes commit + publish, so rows go out in stream-ID order.
    persist: tokio::sync::Mutex<()>,
    /// Devices each Synapse process says are syncing, by the process's instance ID.
    syncs: Mutex<HashMap<String, ProcessSyncs>>,
    /// The engine's memberships may have missed changes (a lost connection, a failed read):
    /// they are compared with `current_state_events` at the next check.
    membership_stale: AtomicBool,
    /// The `presence_federation` stream (ad-hoc sends for Synapse's federation sender).
    federation: Mutex<FederationQueue>,
    /// Entries added to `federation`, to be published in order by the replication loop.
    federation_out: mpsc::UnboundedSender<FederationEntry>,
    federation_rx: Mutex<Option<mpsc::UnboundedReceiver<FederationEntry>>>,
    /// The last `presence_federation` token published (what POSITION announces: a receiver
    /// told of a token before its rows would drop them).
    federation_published: AtomicU64,
    /// The writer's position in the `caches` stream: the sequence's value at startup, then
    /// the last invalidation it published.
    caches_published: AtomicU64,
}

/// One `presence_federation` entry: its token and rows.
type FederationEntry = (u64, Vec<PresenceFederationRow>);

#[derive(Default)]
struct ProcessSyncs {
    last_seen: Option<Instant>,
    devices: HashSet<(UserId, Option<DeviceId>)>,
}

impl SynapseWriter {
    /// Connects the writer: `position` is where the presence stream stands and `caches`
    /// where the `caches` stream does (both from their sequences).
    pub fn new(
        instance: String,
        db: SynapseDb,
        publisher: Publisher,
        position: u64,
        caches: u64,
    ) -> Self {
        let (federation_out, federation_rx) = mpsc::unbounded_channel();
        Self {
            federation: Mutex::new(FederationQueue::new()),
            federation_out,
            federation_rx: Mutex::new(Some(federation_rx)),
            federation_published: AtomicU64::new(0),
            caches_published: AtomicU64::new(caches),
            instance,
            db,
            publisher,
            position: AtomicU64::new(position),
            persist: tokio::sync::Mutex::new(()),
            syncs: Mutex::default(),
            membership_stale: AtomicBool::new(false),
        }
    }

    /// The instance name the writer writes and announces under.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The deployment's database.
    pub fn db(&self) -> &SynapseDb {
        &self.db
    }

    /// Waits until the publisher has handed every queued line to Redis, at most `limit`.
    pub async fn drain(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.publisher.queued() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The highest committed and published presence stream ID.
    pub fn position(&self) -> u64 {
        self.position.load(Ordering::Acquire)
    }

    /// Records the devices each Synapse process reports as syncing.
    pub fn record_metrics(&self) {
        let syncs = lock(&self.syncs);
        crate::metrics::replication_syncing_devices(
            syncs.iter().map(|(id, p)| (id.as_str(), p.devices.len())),
        );
        crate::metrics::replication_publisher_reconnects(self.publisher.reconnects());
    }

    /// Queues `command` on the publishing connection, counting it.
    async fn publish(&self, command: &Command) -> Result<(), presence_synapse::Error> {
        self.publisher.publish(command).await?;
        crate::metrics::replication_command_out(match command {
            Command::Rdata { .. } => "RDATA",
            Command::Position { .. } => "POSITION",
            Command::Replicate => "REPLICATE",
            _ => "other",
        });
        Ok(())
    }

    /// Queues an ad-hoc send: each of `users`' presence to each of `destinations`, as one
    /// `presence_federation` entry. Never blocks; the replication loop publishes it.
    pub fn send_presence_to(&self, destinations: Vec<ServerName>, users: Vec<UserId>) {
        let now = crate::presence::now_ms();
        let entry = lock(&self.federation).push(now, destinations, users);
        if let Some(entry) = entry {
            // The receiver lives as long as the replication loop; after it, nothing is sent.
            let _ = self.federation_out.send(entry);
        }
    }

    /// `presence_federation` rows with `from < token <= upto`, for `get_repl_stream_updates`.
    pub fn federation_updates(&self, from: u64, upto: u64, limit: usize) -> FederationUpdates {
        let upto = upto.min(self.federation_published.load(Ordering::Acquire));
        lock(&self.federation).updates(from, upto, limit)
    }

    /// Publishes one `presence_federation` entry: all rows but the last as `batch`, the last
    /// with the token.
    async fn publish_federation(&self, (id, rows): FederationEntry) {
        let last = rows.len().saturating_sub(1);
        for (i, row) in rows.iter().enumerate() {
            let token = (i == last).then_some(id);
            let body = [row.destination.as_str(), row.user_id.as_str()];
            let published =
                match Command::rdata(PRESENCE_FEDERATION_STREAM, &self.instance, token, &body) {
                    Ok(command) => self.publish(&command).await,
                    Err(e) => {
                        tracing::warn!(error = %e, "Could not encode a presence_federation row.");
                        continue;
                    }
                };
            if let Err(e) = published {
                tracing::warn!(error = %e, "Could not queue a presence_federation row.");
            }
        }
        crate::metrics::replication_rdata_out(rows.len() as u64);
        self.federation_published.fetch_max(id, Ordering::AcqRel);
    }

    /// The writer's `caches` rows with `from < token <= upto`, for `get_repl_stream_updates`.
    pub async fn cache_updates(
        &self,
        from: u64,
        upto: u64,
        limit: usize,
    ) -> Result<CacheUpdates, presence_synapse::Error> {
        let upto = upto.min(self.caches_published.load(Ordering::Acquire));
        self.db
            .cache_updates(&self.instance, from, upto, limit)
            .await
    }

    /// Publishes the positions of the streams the writer is a source of (on connection and
    /// on `REPLICATE`).
    async fn announce_positions(&self) {
        let _serial = self.persist.lock().await;
        let at = self.position();
        let federation = self.federation_published.load(Ordering::Acquire);
        let caches = self.caches_published.load(Ordering::Acquire);
        for command in [
            Command::position(PRESENCE_STREAM, &self.instance, at, at),
            Command::position(
                PRESENCE_FEDERATION_STREAM,
                &self.instance,
                federation,
                federation,
            ),
            Command::position(CACHES_STREAM, &self.instance, caches, caches),
        ] {
            if let Err(e) = self.publish(&command).await {
                tracing::warn!(error = %e, "Could not queue a POSITION.");
            }
        }
    }

    /// Local users' part of `send_local_online_presence_to`: each of `users` gets a full
    /// snapshot of the presence it is interested in on its next sync through Synapse's
    /// workers.
    ///
    /// As Synapse's writer does (`send_full_presence_to_users`): mark the users at the
    /// current presence position, publish the cache invalidations (the workers cache "no
    /// snapshot owed"), then put one user's current state at the tip of the presence stream,
    /// so that a device's next sync token passes the mark and the snapshot comes once. The
    /// state goes to the tip unchanged: Synapse's writer wipes its status message and
    /// refreshes its activity there (docs/differences.md).
    pub async fn send_full_presence(&self, users: Vec<UserId>) -> Result<(), StoreError> {
        let Some(first) = users.first().cloned() else {
            return Ok(());
        };
        let serial = self.persist.lock().await;
        let marks = self
            .db
            .mark_full_presence(
                &self.instance,
                &users,
                self.position(),
                crate::presence::now_ms(),
            )
            .await
            .map_err(backend)?;
        for (id, row) in &marks {
            let command = Command::rdata(CACHES_STREAM, &self.instance, Some(*id), row)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if let Err(e) = self.publish(&command).await {
                tracing::warn!(error = %e, "Could not queue a caches row.");
            }
            self.caches_published.fetch_max(*id, Ordering::AcqRel);
            crate::metrics::replication_rdata_out(1);
        }
        // Any of the users' states moves the stream; a user without one is offline.
        let mut tip = None;
        for user in &users {
            if let Some(state) = self.db.presence_of(user).await.map_err(backend)? {
                tip = Some(state);
                break;
            }
        }
        let tip = tip.unwrap_or_else(|| UserPresenceState::offline(first));
        self.commit_locked(&serial, vec![tip]).await
    }

    async fn commit(&self, states: Vec<UserPresenceState>) -> Result<(), StoreError> {
        if states.is_empty() {
            return Ok(());
        }
        let serial = self.persist.lock().await;
        self.commit_locked(&serial, states).await
    }

    /// [`Self::commit`] with the serializing lock held by the caller.
    async fn commit_locked(
        &self,
        _serial: &tokio::sync::MutexGuard<'_, ()>,
        states: Vec<UserPresenceState>,
    ) -> Result<(), StoreError> {
        let started = Instant::now();
        let rows = self
            .db
            .persist_presence(&self.instance, &states)
            .await
            .map_err(backend)?;
        crate::metrics::synapse_commit(started.elapsed());
        // Committed: now, and only now, the other processes may hear of it.
        for (id, state) in &rows {
            let row = PresenceRow::from(state);
            let command = Command::rdata(PRESENCE_STREAM, &self.instance, Some(*id), &row)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if let Err(e) = self.publish(&command).await {
                tracing::warn!(error = %e, "Could not queue an RDATA row.");
            }
            self.position.fetch_max(*id, Ordering::AcqRel);
            crate::metrics::replication_rdata_out(1);
        }
        Ok(())
    }
}

/// The presence service's federation output beside Synapse: Synapse's federation sender sends
/// ordinary changes to the rooms' servers itself, so what reaches here (keep-alive pings,
/// presence for newly joined servers and users, routed remote recipients, module calls) goes
/// to it as `presence_federation` entries.
pub struct WriterFederation(pub Arc<SynapseWriter>);

impl crate::presence::FederationSender for WriterFederation {
    fn enqueue(&self, destination: ServerName, states: Vec<UserPresenceState>) {
        let users = states.into_iter().map(|s| s.user_id).collect();
        self.0.send_presence_to(vec![destination], users);
    }
}

/// Where the presence service persists: the standalone store or the deployment's
/// PostgreSQL. Chosen once at startup.
#[derive(Clone)]
pub enum Persistence {
    /// The standalone mode's SQLite store.
    Standalone(super::Store),
    /// A Synapse deployment's PostgreSQL and Redis.
    Synapse(Arc<SynapseWriter>),
}

impl PresencePersistence for Persistence {
    async fn all_joined_memberships(&self) -> Result<Vec<(RoomId, UserId)>, StoreError> {
        match self {
            Self::Standalone(s) => s.all_joined_memberships().await,
            Self::Synapse(w) => {
                let rows = w.db.joined_members_of_all_rooms().await.map_err(backend)?;
                let mut skipped = 0usize;
                let out = rows
                    .into_iter()
                    .filter_map(|(room, user)| match RoomId::parse(&room) {
                        Ok(room) => Some((room, user)),
                        Err(_) => {
                            skipped += 1;
                            None
                        }
                    })
                    .collect();
                if skipped > 0 {
                    tracing::warn!(skipped, "Skipped memberships of rooms with unusual IDs.");
                }
                Ok(out)
            }
        }
    }

    async fn load_presence(&self) -> Result<Vec<(StreamPos, UserPresenceState)>, StoreError> {
        match self {
            Self::Standalone(s) => PresencePersistence::load_presence(s).await,
            Self::Synapse(w) => w.db.load_presence().await.map_err(backend),
        }
    }

    async fn persist_presence(
        &self,
        states: Vec<(StreamPos, UserPresenceState)>,
    ) -> Result<(), StoreError> {
        match self {
            Self::Standalone(s) => PresencePersistence::persist_presence(s, states).await,
            // The deployment numbers rows itself (its sequence): the engine's positions stay
            // internal to this process.
            Self::Synapse(w) => w.commit(states.into_iter().map(|(_, s)| s).collect()).await,
        }
    }

    async fn set_full_presence_targets(
        &self,
        users: Vec<UserId>,
        pos: StreamPos,
    ) -> Result<(), StoreError> {
        match self {
            Self::Standalone(s) => {
                PresencePersistence::set_full_presence_targets(s, users, pos).await
            }
            // The deployment's own presence position marks the users, not the engine's.
            Self::Synapse(w) => w.send_full_presence(users).await,
        }
    }

    async fn load_full_presence_targets(&self) -> Result<Vec<(UserId, StreamPos)>, StoreError> {
        match self {
            Self::Standalone(s) => PresencePersistence::load_full_presence_targets(s).await,
            // Synapse's workers read `users_to_send_full_presence_to` themselves.
            Self::Synapse(_) => Ok(Vec::new()),
        }
    }

    async fn user_exists(&self, user: &UserId) -> Result<bool, StoreError> {
        match self {
            Self::Standalone(s) => PresencePersistence::user_exists(s, user).await,
            Self::Synapse(w) => w.db.user_exists(user).await.map_err(backend),
        }
    }

    async fn reserve_positions(&self, upto: StreamPos) -> Result<(), StoreError> {
        match self {
            Self::Standalone(s) => PresencePersistence::reserve_positions(s, upto).await,
            // The engine's positions never leave this process here: the deployment's clients
            // hold positions of Synapse's own sequence, which never goes back.
            Self::Synapse(_) => Ok(()),
        }
    }

    async fn load_reserved_position(&self) -> Result<StreamPos, StoreError> {
        match self {
            Self::Standalone(s) => PresencePersistence::load_reserved_position(s).await,
            Self::Synapse(_) => Ok(0),
        }
    }
}

/// Synapse's access tokens: expired and unknown tokens are `M_UNKNOWN_TOKEN`, a deactivated
/// account `M_USER_DEACTIVATED`, as Synapse answers.
pub struct SynapseTokens(pub Arc<SynapseWriter>);

#[async_trait]
impl AccessTokens for SynapseTokens {
    async fn resolve(&self, token: &str) -> Result<Option<(UserId, DeviceId, bool)>, ApiError> {
        let now = crate::presence::now_ms();
        let lookup = self
            .0
            .db
            .user_for_access_token(token, now)
            .await
            .map_err(ApiError::internal)?;
        match lookup {
            TokenLookup::Valid(info) => {
                if info.locked {
                    return Err(ApiError::new(
                        crate::error::ErrorKind::UserLocked,
                        "This account has been locked",
                    ));
                }
                // Tokens without a device (some admin tokens) count as one device.
                let device = info
                    .device_id
                    .clone()
                    .or_else(|| DeviceId::parse("NO_DEVICE").ok());
                Ok(device.map(|device| (info.user_id.clone(), device, info.admin)))
            }
            TokenLookup::Deactivated(_) => Err(ApiError::new(
                crate::error::ErrorKind::UserDeactivated,
                "This account has been deactivated",
            )),
            _ => Ok(None),
        }
    }
}

impl App {
    /// `target`'s presence if `reader` may see it (itself, a shared room, or routed). Beside
    /// Synapse, rooms are read from the deployment's `current_state_events` at the time of
    /// the request, so memberships made after startup count at once.
    pub async fn visible_presence(
        &self,
        reader: &UserId,
        target: &UserId,
    ) -> Result<Option<UserPresenceState>, ApiError> {
        // Synapse's rooms count only where shared rooms share presence (the restricting mode
        // may turn them off), and never against the routers' filter.
        if let Some(writer) = self.writer()
            && reader != target
            && self.presence().shares_through_rooms()
            && self.presence().audience_allows(target, reader)
        {
            let db = writer.db();
            let (mine, theirs) = (
                db.rooms_for_user(reader)
                    .await
                    .map_err(ApiError::internal)?,
                db.rooms_for_user(target)
                    .await
                    .map_err(ApiError::internal)?,
            );
            if mine.iter().any(|r| theirs.binary_search(r).is_ok()) {
                return Ok(Some(self.presence().state_of(target)));
            }
        }
        Ok(self.presence().presence_for(reader, target).await)
    }
}

/// Consumes the replication channel until `shutdown`: announces positions, feeds the
/// engine from `USER_SYNC` / `CLEAR_USER_SYNC`, and ends the syncs of silent processes.
pub async fn run_replication(
    app: App,
    writer: Arc<SynapseWriter>,
    mut events: mpsc::Receiver<Event>,
    shutdown: CancellationToken,
) {
    let mut expiry = tokio::time::interval(EXPIRY_CHECK);
    let Some(mut federation) = lock(&writer.federation_rx).take() else {
        tracing::error!("The replication loop was started twice.");
        return;
    };
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => return,
            Some(entry) = federation.recv() => {
                writer.publish_federation(entry).await;
                continue;
            }
            _ = expiry.tick() => {
                expire_processes(&app, &writer).await;
                if writer.membership_stale.swap(false, Ordering::AcqRel) {
                    reconcile_memberships(&app, &writer).await;
                }
                continue;
            }
            event = events.recv() => match event {
                Some(event) => event,
                None => return,
            },
        };
        match event {
            Event::Connected => {
                tracing::info!("Subscribed to the deployment's replication channel.");
                // Ask the other writers for their positions, then give ours.
                if let Err(e) = writer.publish(&Command::Replicate).await {
                    tracing::warn!(error = %e, "Could not queue REPLICATE.");
                }
                writer.announce_positions().await;
                // Membership changes made while unsubscribed (or before the first
                // subscription, while memberships were being loaded) reached nobody.
                reconcile_memberships(&app, &writer).await;
            }
            Event::Disconnected { reason } => {
                crate::metrics::replication_reconnect("subscribe");
                tracing::warn!(%reason, "Lost the replication channel; reconnecting.");
            }
            Event::Command(command) => handle_command(&app, &writer, command).await,
            _ => {}
        }
    }
}

async fn handle_command(app: &App, writer: &SynapseWriter, command: Command) {
    if command.is_echo_of(&writer.instance) {
        return;
    }
    crate::metrics::replication_command_in(match &command {
        Command::Rdata { .. } => "RDATA",
        Command::Position { .. } => "POSITION",
        Command::Replicate => "REPLICATE",
        Command::UserSync { .. } => "USER_SYNC",
        Command::ClearUserSync { .. } => "CLEAR_USER_SYNC",
        // Unknown names stay out of the labels: they are not bounded.
        _ => "other",
    });
    match command {
        Command::Replicate => writer.announce_positions().await,
        Command::UserSync {
            instance_id,
            user_id,
            device_id,
            state,
            ..
        } => {
            let key = (user_id.clone(), device_id.clone());
            let changed = {
                let mut syncs = lock(&writer.syncs);
                let process = syncs.entry(instance_id).or_default();
                process.last_seen = Some(Instant::now());
                match state {
                    SyncState::Start => process.devices.insert(key),
                    SyncState::End => process.devices.remove(&key),
                }
            };
            if !changed {
                return;
            }
            let presence = app.presence();
            match state {
                SyncState::Start => {
                    if let Err(e) = presence
                        .sync_started(&user_id, device_id, presence_router::PresenceState::Online)
                        .await
                    {
                        tracing::warn!(error = %e, user = %user_id, "Could not record a syncing device.");
                    }
                }
                SyncState::End => presence.sync_ended(&user_id, device_id).await,
            }
        }
        Command::ClearUserSync { instance_id } => {
            let gone = lock(&writer.syncs).remove(&instance_id);
            if let Some(process) = gone {
                end_syncs(app, process.devices).await;
            }
        }
        Command::Rdata { stream, row, .. } if stream == EVENTS_STREAM => {
            match EventsRow::from_json(row.get()) {
                Ok(row) => follow_membership(app, writer, &row).await,
                Err(e) => {
                    tracing::debug!(error = %e, "Ignoring an events row Presenced cannot read.")
                }
            }
        }
        _ => {}
    }
}

/// Keeps the engine's memberships in step with the deployment's current state. An `events`
/// `state` row for `m.room.member` says that a membership changed, not to what, so the
/// membership is read back from `current_state_events` (the event persister writes it before
/// it announces the row).
async fn follow_membership(app: &App, writer: &SynapseWriter, row: &EventsRow) {
    let result = match row {
        EventsRow::StateAll { room_id } => reconcile_room(app, writer, room_id).await,
        _ => match row.member_state_change() {
            Some((room, user)) => {
                let (Ok(room), Ok(user)) = (RoomId::parse(room), UserId::parse(user)) else {
                    return;
                };
                match writer.db.is_joined(room.as_str(), &user).await {
                    Ok(true) => {
                        apply_join(app, &room, &user).await;
                        Ok(())
                    }
                    Ok(false) => {
                        app.presence().leave(&room, &user);
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            None => Ok(()),
        },
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "Could not read a membership change; memberships will be re-read.");
        writer.membership_stale.store(true, Ordering::Release);
    }
}

async fn apply_join(app: &App, room: &RoomId, user: &UserId) {
    if let Err(e) = app.presence().join(room, user).await {
        tracing::warn!(error = %e, %room, %user, "Could not record a join.");
    }
}

/// Re-reads one room's members (after a `state-all` row: its whole state may have changed).
async fn reconcile_room(
    app: &App,
    writer: &SynapseWriter,
    room: &str,
) -> Result<(), presence_synapse::Error> {
    let Ok(room_id) = RoomId::parse(room) else {
        return Ok(());
    };
    let now: HashSet<UserId> = writer.db.users_in_room(room).await?.into_iter().collect();
    let held: HashSet<UserId> = app.presence().members(&room_id).into_iter().collect();
    for user in held.difference(&now) {
        app.presence().leave(&room_id, user);
    }
    for user in now.difference(&held) {
        apply_join(app, &room_id, user).await;
    }
    Ok(())
}

/// Compares every membership the engine holds with `current_state_events` and applies the
/// difference.
async fn reconcile_memberships(app: &App, writer: &SynapseWriter) {
    let rows = match writer.db.joined_members_of_all_rooms().await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "Could not read the deployment's memberships; will retry.");
            writer.membership_stale.store(true, Ordering::Release);
            return;
        }
    };
    let now: HashSet<(RoomId, UserId)> = rows
        .into_iter()
        .filter_map(|(room, user)| RoomId::parse(&room).ok().map(|room| (room, user)))
        .collect();
    let held: HashSet<(RoomId, UserId)> = app.presence().memberships().into_iter().collect();
    let (mut joined, mut left) = (0usize, 0usize);
    for (room, user) in held.difference(&now) {
        app.presence().leave(room, user);
        left += 1;
    }
    for (room, user) in now.difference(&held) {
        apply_join(app, room, user).await;
        joined += 1;
    }
    if joined + left > 0 {
        tracing::info!(
            joined,
            left,
            "Brought memberships up to date with the deployment."
        );
    }
}

async fn end_syncs(app: &App, devices: HashSet<(UserId, Option<DeviceId>)>) {
    for (user, device) in devices {
        app.presence().sync_ended(&user, device).await;
    }
}

async fn expire_processes(app: &App, writer: &SynapseWriter) {
    let expired: Vec<(String, ProcessSyncs)> = {
        let mut syncs = lock(&writer.syncs);
        let silent: Vec<String> = syncs
            .iter()
            .filter(|(_, p)| p.last_seen.is_some_and(|t| t.elapsed() > PROCESS_EXPIRY))
            .map(|(id, _)| id.clone())
            .collect();
        silent
            .into_iter()
            .filter_map(|id| syncs.remove(&id).map(|p| (id, p)))
            .collect()
    };
    for (instance_id, process) in expired {
        tracing::info!(
            instance_id,
            devices = process.devices.len(),
            "A Synapse process went silent; ending its syncs."
        );
        end_syncs(app, process.devices).await;
    }
}
