//! The SQLite backend: [`SqliteStore`].
//!
//! One file, WAL mode, one writer thread with group commit (see `writer`), and a small pool
//! of read connections (see `readers`). Nothing here blocks an async task: writes wait on a
//! oneshot reply, reads run on tokio's blocking pool.
//!
//! Durability: a write is acknowledged only after its transaction committed. With
//! [`Synchronous::Normal`] (the default) a committed write survives a crash of the process;
//! with [`Synchronous::Full`] it also survives power loss, at the cost of an fsync per
//! batch.

mod account_data;
mod accounts;
mod convert;
mod meta;
mod presence;
mod readers;
mod rooms;
mod schema;
#[cfg(test)]
mod tests;
mod writer;

use std::{
    future::Future,
    path::{Path, PathBuf},
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use presence_router::{DeviceId, Millis, RoomId, UserId, UserPresenceState};
use rusqlite::Connection;

use self::{
    readers::ReadPool,
    writer::{Job, StatsCounters, WriteJob},
};
use crate::{
    AccountDataEntry, DeviceRecord, Membership, NewDevice, NewUser, OrderedEvent, PresenceStore,
    RoomRecord, RoomUpdate, StoreError, StoreStats, StreamId, StreamOrdering, UserRecord, UserRoom,
};

/// How hard SQLite works to make a commit durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Synchronous {
    /// `synchronous = NORMAL`: a committed write survives a crash of the process (the WAL is
    /// synced at checkpoints only). The default.
    #[default]
    Normal,
    /// `synchronous = FULL`: a committed write also survives power loss or an OS crash (the
    /// WAL is synced at every commit).
    Full,
}

impl Synchronous {
    fn pragma_value(self) -> &'static str {
        match self {
            Self::Normal => "NORMAL",
            Self::Full => "FULL",
        }
    }
}

/// Settings of a [`SqliteStore`]. Build with [`SqliteConfig::new`], then change fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqliteConfig {
    /// The database file; created if missing (its directory must exist).
    pub path: PathBuf,
    /// Durability of commits.
    pub synchronous: Synchronous,
    /// How many writes may wait for the writer before new ones are refused with
    /// [`StoreError::Overloaded`].
    pub write_queue_capacity: usize,
    /// The most writes committed in one transaction; bounds a batch's latency.
    pub max_batch: usize,
    /// How many reads may run at once (one connection each).
    pub read_connections: usize,
    /// How long a connection waits for a lock held by another process before failing.
    pub busy_timeout: Duration,
}

impl SqliteConfig {
    /// Defaults for a database at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            synchronous: Synchronous::default(),
            write_queue_capacity: 8192,
            max_batch: 2048,
            read_connections: 4,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// The SQLite implementation of [`PresenceStore`]. Cheap to clone; all clones share one
/// database, writer thread and read pool.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// `None` once closed. Dropping the sender is what tells the writer to finish.
    queue: RwLock<Option<tokio::sync::mpsc::Sender<Box<dyn Job>>>>,
    /// An async lock so that a second `close` waits for the first one's flush.
    writer: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    readers: Arc<ReadPool>,
    stats: Arc<StatsCounters>,
    /// The highest committed room event ordering, kept here so that every `/sync` does not
    /// ask SQLite for it. Raised by the writer thread after each commit that adds events.
    max_ordering: Arc<AtomicU64>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (or creates) the database, applies pending migrations and starts the writer
    /// thread. Fails with [`StoreError::SchemaTooNew`] on a database from a newer build.
    pub async fn open(config: SqliteConfig) -> Result<Self, StoreError> {
        match tokio::task::spawn_blocking(move || Self::open_blocking(config)).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => Err(StoreError::Panicked),
            Err(_) => Err(StoreError::Closed),
        }
    }

    fn open_blocking(config: SqliteConfig) -> Result<Self, StoreError> {
        let conn = schema::open_writer(&config.path, config.synchronous, config.busy_timeout)?;
        let max_ordering = Arc::new(AtomicU64::new(rooms::max_stream_ordering(&conn)?));
        let readers = Arc::new(ReadPool::new(
            config.path.clone(),
            config.busy_timeout,
            config.read_connections,
        ));
        readers.warm_up()?;
        let (sender, queue) = tokio::sync::mpsc::channel(config.write_queue_capacity.max(1));
        let stats = Arc::new(StatsCounters::default());
        let writer_stats = Arc::clone(&stats);
        let max_batch = config.max_batch;
        let handle = std::thread::Builder::new()
            .name("presence-store-writer".to_owned())
            .spawn(move || writer::run(conn, queue, writer_stats, max_batch))?;
        tracing::info!(path = %config.path.display(), synchronous = ?config.synchronous, "Opened SQLite store.");
        Ok(Self {
            inner: Arc::new(Inner {
                path: config.path,
                queue: RwLock::new(Some(sender)),
                writer: tokio::sync::Mutex::new(Some(handle)),
                readers,
                stats,
                max_ordering,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The schema version this build writes (the database's `user_version` after opening).
    pub fn schema_version() -> u32 {
        schema::latest_version()
    }

    /// Queues a write; the returned future resolves once it is committed (or failed).
    ///
    /// The write is queued when this is called, not when the future is first polled, so the
    /// order of calls is the order of application.
    fn write<T, F>(&self, work: F) -> impl Future<Output = Result<T, StoreError>> + Send + use<T, F>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_then(work, None)
    }

    /// [`Self::write`], with `on_commit` run on the writer thread with the result once it is
    /// committed (whether or not the caller still waits).
    fn write_then<T, F>(
        &self,
        work: F,
        on_commit: Option<writer::OnCommit<T>>,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + use<T, F>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (job, reply) = WriteJob::boxed(work, on_commit);
        let queued = self.enqueue(job);
        async move {
            queued?;
            // The writer drops a job's reply only if its thread died, which is a bug.
            reply.await.map_err(|_| StoreError::Panicked)?
        }
    }

    fn enqueue(&self, job: Box<dyn Job>) -> Result<(), StoreError> {
        // The read lock is held only for a non-blocking `try_send`.
        let queue = self
            .inner
            .queue
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        match queue.as_ref() {
            Some(sender) => writer::enqueue(sender, &self.inner.stats, job),
            None => Err(StoreError::Closed),
        }
    }

    /// Runs a read on the pool.
    fn read<T, F>(&self, read: F) -> impl Future<Output = Result<T, StoreError>> + Send + use<T, F>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = Arc::clone(&self.inner.readers);
        async move { pool.run(read).await }
    }
}

impl PresenceStore for SqliteStore {
    fn create_user(
        &self,
        user: NewUser,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + use<> {
        self.write(move |conn| accounts::insert_user(conn, &user))
    }

    fn get_user(
        &self,
        user_id: &UserId,
    ) -> impl Future<Output = Result<Option<UserRecord>, StoreError>> + Send + use<> {
        let user_id = user_id.clone();
        self.read(move |conn| accounts::get_user(conn, &user_id))
    }

    fn user_exists(
        &self,
        user_id: &UserId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + use<> {
        let user_id = user_id.clone();
        self.read(move |conn| accounts::user_exists(conn, &user_id))
    }

    fn count_users(&self) -> impl Future<Output = Result<u64, StoreError>> + Send + use<> {
        self.read(accounts::count_users)
    }

    fn create_device(
        &self,
        device: NewDevice,
        access_token: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + use<> {
        // Hashed here so the plaintext token never enters the queue.
        let token_hash = accounts::hash_token(access_token);
        self.write(move |conn| accounts::upsert_device(conn, &device, &token_hash))
    }

    fn resolve_token(
        &self,
        access_token: &str,
    ) -> impl Future<Output = Result<Option<(UserId, DeviceId)>, StoreError>> + Send + use<> {
        let token_hash = accounts::hash_token(access_token);
        self.read(move |conn| accounts::resolve_token(conn, &token_hash))
    }

    fn delete_device(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + use<> {
        let (user_id, device_id) = (user_id.clone(), device_id.clone());
        self.write(move |conn| accounts::delete_device(conn, &user_id, &device_id))
    }

    fn list_devices(
        &self,
        user_id: &UserId,
    ) -> impl Future<Output = Result<Vec<DeviceRecord>, StoreError>> + Send + use<> {
        let user_id = user_id.clone();
        self.read(move |conn| accounts::list_devices(conn, &user_id))
    }

    fn create_room(
        &self,
        room: RoomRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + use<> {
        self.write(move |conn| rooms::insert_room(conn, &room))
    }

    fn get_room(
        &self,
        room_id: &RoomId,
    ) -> impl Future<Output = Result<Option<RoomRecord>, StoreError>> + Send + use<> {
        let room_id = room_id.clone();
        self.read(move |conn| rooms::get_room(conn, &room_id))
    }

    fn apply_room_update(
        &self,
        room_id: &RoomId,
        update: RoomUpdate,
    ) -> impl Future<Output = Result<Vec<StreamOrdering>, StoreError>> + Send + use<> {
        let room_id = room_id.clone();
        let max_ordering = Arc::clone(&self.inner.max_ordering);
        self.write_then(
            move |conn| rooms::apply_room_update(conn, &room_id, &update),
            Some(Box::new(move |orderings: &Vec<StreamOrdering>| {
                if let Some(&top) = orderings.iter().max() {
                    max_ordering.fetch_max(top, Ordering::Release);
                }
            })),
        )
    }

    fn room_state(
        &self,
        room_id: &RoomId,
    ) -> impl Future<Output = Result<Vec<OrderedEvent>, StoreError>> + Send + use<> {
        let room_id = room_id.clone();
        self.read(move |conn| rooms::room_state(conn, &room_id))
    }

    fn events_since(
        &self,
        room_id: &RoomId,
        after: StreamOrdering,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<OrderedEvent>, StoreError>> + Send + use<> {
        let room_id = room_id.clone();
        self.read(move |conn| rooms::events_since(conn, &room_id, after, limit))
    }

    fn membership(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> impl Future<Output = Result<Option<Membership>, StoreError>> + Send + use<> {
        let (room_id, user_id) = (room_id.clone(), user_id.clone());
        self.read(move |conn| rooms::membership(conn, &room_id, &user_id))
    }

    fn room_members(
        &self,
        room_id: &RoomId,
    ) -> impl Future<Output = Result<Vec<(UserId, Membership)>, StoreError>> + Send + use<> {
        let room_id = room_id.clone();
        self.read(move |conn| rooms::room_members(conn, &room_id))
    }

    fn rooms_of(
        &self,
        user_id: &UserId,
    ) -> impl Future<Output = Result<Vec<(RoomId, Membership)>, StoreError>> + Send + use<> {
        let user_id = user_id.clone();
        self.read(move |conn| rooms::rooms_of(conn, &user_id))
    }

    fn max_stream_ordering(
        &self,
    ) -> impl Future<Output = Result<StreamOrdering, StoreError>> + Send + use<> {
        // Only orderings whose events are committed are published, so a reader that reads
        // up to this position sees every event below it.
        std::future::ready(Ok(self.inner.max_ordering.load(Ordering::Acquire)))
    }

    fn recent_events(
        &self,
        room_id: &RoomId,
        up_to: StreamOrdering,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<OrderedEvent>, StoreError>> + Send + use<> {
        let room_id = room_id.clone();
        self.read(move |conn| rooms::recent_events(conn, &room_id, up_to, limit))
    }

    fn user_rooms(
        &self,
        user_id: &UserId,
    ) -> impl Future<Output = Result<Vec<UserRoom>, StoreError>> + Send + use<> {
        let user_id = user_id.clone();
        self.read(move |conn| rooms::user_rooms(conn, &user_id))
    }

    fn create_room_alias(
        &self,
        alias: &str,
        room_id: &RoomId,
        creator: &UserId,
        ts: Millis,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + use<> {
        let (alias, room_id, creator) = (alias.to_owned(), room_id.clone(), creator.clone());
        self.write(move |conn| rooms::insert_alias(conn, &alias, &room_id, &creator, ts))
    }

    fn resolve_room_alias(
        &self,
        alias: &str,
    ) -> impl Future<Output = Result<Option<RoomId>, StoreError>> + Send + use<> {
        let alias = alias.to_owned();
        self.read(move |conn| rooms::resolve_alias(conn, &alias))
    }

    fn all_joined_memberships(
        &self,
    ) -> impl Future<Output = Result<Vec<(RoomId, UserId)>, StoreError>> + Send + use<> {
        self.read(rooms::all_joined)
    }

    fn persist_presence(
        &self,
        states: Vec<(StreamId, UserPresenceState)>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + use<> {
        self.write(move |conn| presence::persist(conn, &states))
    }

    fn load_presence(
        &self,
    ) -> impl Future<Output = Result<Vec<(StreamId, UserPresenceState)>, StoreError>> + Send + use<>
    {
        self.read(presence::load)
    }

    fn max_presence_stream_id(
        &self,
    ) -> impl Future<Output = Result<StreamId, StoreError>> + Send + use<> {
        self.read(presence::max_stream_id)
    }

    fn set_full_presence_targets(
        &self,
        users: Vec<UserId>,
        stream_id: StreamId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + use<> {
        self.write(move |conn| presence::set_targets(conn, &users, stream_id))
    }

    fn load_full_presence_targets(
        &self,
    ) -> impl Future<Output = Result<Vec<(UserId, StreamId)>, StoreError>> + Send + use<> {
        self.read(presence::load_targets)
    }

    fn delete_full_presence_target(
        &self,
        user_id: &UserId,
        up_to: StreamId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + use<> {
        let user_id = user_id.clone();
        self.write(move |conn| presence::delete_target(conn, &user_id, up_to))
    }

    fn create_filter(
        &self,
        user_id: &UserId,
        filter_json: String,
    ) -> impl Future<Output = Result<String, StoreError>> + Send + use<> {
        let user_id = user_id.clone();
        self.write(move |conn| accounts::insert_filter(conn, &user_id, &filter_json))
    }

    fn get_filter(
        &self,
        user_id: &UserId,
        filter_id: &str,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send + use<> {
        let (user_id, filter_id) = (user_id.clone(), filter_id.to_owned());
        self.read(move |conn| accounts::get_filter(conn, &user_id, &filter_id))
    }

    fn put_account_data(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        data_type: &str,
        content: String,
    ) -> impl Future<Output = Result<StreamId, StoreError>> + Send + use<> {
        let (user_id, room_id, data_type) =
            (user_id.clone(), room_id.cloned(), data_type.to_owned());
        self.write(move |conn| {
            account_data::put(conn, &user_id, room_id.as_ref(), &data_type, &content)
        })
    }

    fn get_account_data(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        data_type: &str,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send + use<> {
        let (user_id, room_id, data_type) =
            (user_id.clone(), room_id.cloned(), data_type.to_owned());
        self.read(move |conn| account_data::get(conn, &user_id, room_id.as_ref(), &data_type))
    }

    fn account_data_since(
        &self,
        user_id: &UserId,
        since: Option<StreamId>,
    ) -> impl Future<Output = Result<Vec<AccountDataEntry>, StoreError>> + Send + use<> {
        let user_id = user_id.clone();
        self.read(move |conn| account_data::since(conn, &user_id, since))
    }

    fn account_data_of_type(
        &self,
        data_type: &str,
    ) -> impl Future<Output = Result<Vec<AccountDataEntry>, StoreError>> + Send + use<> {
        let data_type = data_type.to_owned();
        self.read(move |conn| account_data::of_type(conn, &data_type))
    }

    fn max_account_data_stream_id(
        &self,
    ) -> impl Future<Output = Result<StreamId, StoreError>> + Send + use<> {
        self.read(account_data::max_stream_id)
    }

    fn get_meta(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send + use<> {
        let key = key.to_owned();
        self.read(move |conn| meta::get(conn, &key))
    }

    fn set_meta(
        &self,
        key: &str,
        value: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + use<> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.write(move |conn| meta::set(conn, &key, &value))
    }

    fn stats(&self) -> StoreStats {
        self.inner.stats.snapshot()
    }

    fn close(&self) -> impl Future<Output = Result<(), StoreError>> + Send + use<> {
        let inner = Arc::clone(&self.inner);
        async move {
            // Refuse new writes; the writer finishes the queue, then sees the channel closed.
            let sender = inner
                .queue
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            drop(sender);
            let mut writer = inner.writer.lock().await;
            let mut result = Ok(());
            if let Some(handle) = writer.take() {
                let joined = tokio::task::spawn_blocking(move || handle.join()).await;
                if matches!(joined, Ok(Ok(()))) {
                    tracing::info!(path = %inner.path.display(), "Closed SQLite store.");
                } else {
                    result = Err(StoreError::Panicked);
                }
            }
            drop(writer);
            inner.readers.close();
            result
        }
    }
}
