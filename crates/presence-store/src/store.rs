//! The [`PresenceStore`] trait: everything Presenced persists, behind one async interface.
//!
//! The server is generic over this trait so that a second backend (PostgreSQL) can be added
//! without touching it; [`crate::store_conformance!`] checks that a backend keeps the
//! contract written here.
//!
//! Contract shared by all methods:
//! - A write that returned `Ok` is durable (it survives a process crash) and visible to every
//!   read issued afterwards.
//! - A write that returned an error was not applied, and did not affect any other write.
//! - `Err(StoreError::Overloaded)` means the write was refused without being queued.
//! - A write that was accepted is applied even if the caller stops waiting for its answer.

use std::future::Future;

use presence_router::{DeviceId, Millis, RoomId, UserId, UserPresenceState};

use crate::{
    AccountDataEntry, DeviceRecord, Membership, MembershipChange, NewDevice, NewUser, OrderedEvent,
    RoomRecord, RoomUpdate, StoreError, StoredEvent, StreamId, StreamOrdering, UserRecord,
    UserRoom,
};

/// Counters describing the write path, for metrics. A snapshot; every counter only grows
/// except `queued`, which is the queue length at the time of the snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Transactions committed (or attempted) by the writer: one per group of writes.
    pub batches: u64,
    /// Write requests processed, successful or not.
    pub writes: u64,
    /// Write requests that failed (their own error, or a failed batch).
    pub failed_writes: u64,
    /// Write requests refused with [`StoreError::Overloaded`].
    pub rejected_writes: u64,
    /// The largest batch so far.
    pub max_batch: u64,
    /// Time spent in write transactions, from BEGIN to the end of COMMIT, summed.
    pub commit_nanos: u64,
    /// The longest single write transaction.
    pub max_commit_nanos: u64,
    /// Writes waiting in the queue.
    pub queued: u64,
}

impl StoreStats {
    /// Average writes per transaction (`0.0` before the first batch).
    pub fn mean_batch(&self) -> f64 {
        if self.batches == 0 {
            0.0
        } else {
            self.writes as f64 / self.batches as f64
        }
    }
}

/// Durable storage for Presenced.
///
/// Implementations are cheap-to-clone handles onto shared state. All methods may be called
/// concurrently from many tasks.
///
/// The returned futures borrow neither the store nor the arguments (`use<Self>`): they are
/// `'static`, so the server can spawn them or keep them in a collection. An implementation
/// copies what it needs (a handle clone, owned IDs) before returning the future.
pub trait PresenceStore: Clone + Send + Sync + 'static {
    // --- users ---

    /// Creates a user account. [`StoreError::UserExists`] if the ID is taken.
    fn create_user(
        &self,
        user: NewUser,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + use<Self>;

    /// Looks a user up.
    fn get_user(
        &self,
        user_id: &UserId,
    ) -> impl Future<Output = Result<Option<UserRecord>, StoreError>> + Send + use<Self>;

    /// Whether a user account exists.
    fn user_exists(
        &self,
        user_id: &UserId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + use<Self>;

    /// How many user accounts exist.
    fn count_users(&self) -> impl Future<Output = Result<u64, StoreError>> + Send + use<Self>;

    // --- devices and access tokens ---

    /// Creates a device for an existing user (else [`StoreError::NotFound`]) and makes
    /// `access_token` its only token. Logging in again with an existing device ID keeps the
    /// device and replaces its token. Only a hash of the token is stored.
    fn create_device(
        &self,
        device: NewDevice,
        access_token: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + use<Self>;

    /// Finds the user and device an access token belongs to.
    fn resolve_token(
        &self,
        access_token: &str,
    ) -> impl Future<Output = Result<Option<(UserId, DeviceId)>, StoreError>> + Send + use<Self>;

    /// Deletes a device and its access tokens (logout). Returns whether the device existed.
    fn delete_device(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + use<Self>;

    /// A user's devices, ordered by device ID.
    fn list_devices(
        &self,
        user_id: &UserId,
    ) -> impl Future<Output = Result<Vec<DeviceRecord>, StoreError>> + Send + use<Self>;

    // --- rooms, events, memberships ---

    /// Creates a room. [`StoreError::RoomExists`] if the ID is taken.
    fn create_room(
        &self,
        room: RoomRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + use<Self>;

    /// Looks a room up.
    fn get_room(
        &self,
        room_id: &RoomId,
    ) -> impl Future<Output = Result<Option<RoomRecord>, StoreError>> + Send + use<Self>;

    /// Appends events and applies membership changes to an existing room (else
    /// [`StoreError::NotFound`]), all in one atomic write. Returns the stream orderings given
    /// to the events, in order. A duplicate event ID fails the whole update with
    /// [`StoreError::EventExists`].
    fn apply_room_update(
        &self,
        room_id: &RoomId,
        update: RoomUpdate,
    ) -> impl Future<Output = Result<Vec<StreamOrdering>, StoreError>> + Send + use<Self>;

    /// Appends events to a room; see [`Self::apply_room_update`].
    fn append_events(
        &self,
        room_id: &RoomId,
        events: Vec<StoredEvent>,
    ) -> impl Future<Output = Result<Vec<StreamOrdering>, StoreError>> + Send + use<Self> {
        self.apply_room_update(room_id, RoomUpdate::new(events, Vec::new()))
    }

    /// Sets one user's membership of a room; see [`Self::apply_room_update`].
    fn set_membership(
        &self,
        room_id: &RoomId,
        change: MembershipChange,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + use<Self> {
        let update = self.apply_room_update(room_id, RoomUpdate::new(Vec::new(), vec![change]));
        async move { update.await.map(drop) }
    }

    /// The room's current state: for each `(type, state_key)` the latest state event,
    /// ordered by stream ordering.
    fn room_state(
        &self,
        room_id: &RoomId,
    ) -> impl Future<Output = Result<Vec<OrderedEvent>, StoreError>> + Send + use<Self>;

    /// Up to `limit` events of a room after `after` (exclusive), oldest first.
    fn events_since(
        &self,
        room_id: &RoomId,
        after: StreamOrdering,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<OrderedEvent>, StoreError>> + Send + use<Self>;

    /// A user's membership of a room, if one was ever recorded.
    fn membership(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> impl Future<Output = Result<Option<Membership>, StoreError>> + Send + use<Self>;

    /// Every recorded membership of a room (leaves included), ordered by user ID.
    fn room_members(
        &self,
        room_id: &RoomId,
    ) -> impl Future<Output = Result<Vec<(UserId, Membership)>, StoreError>> + Send + use<Self>;

    /// Every recorded membership of a user (leaves included), ordered by room ID.
    fn rooms_of(
        &self,
        user_id: &UserId,
    ) -> impl Future<Output = Result<Vec<(RoomId, Membership)>, StoreError>> + Send + use<Self>;

    /// The highest stream ordering of any stored event, `0` if there is none. Every event
    /// at or below it is visible to reads issued afterwards.
    fn max_stream_ordering(
        &self,
    ) -> impl Future<Output = Result<StreamOrdering, StoreError>> + Send + use<Self>;

    /// The latest `limit` events of a room at or before `up_to`, oldest first.
    fn recent_events(
        &self,
        room_id: &RoomId,
        up_to: StreamOrdering,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<OrderedEvent>, StoreError>> + Send + use<Self>;

    /// Every recorded membership of a user (leaves included), ordered by room ID, with the
    /// position of the event that made it and the room's latest position.
    fn user_rooms(
        &self,
        user_id: &UserId,
    ) -> impl Future<Output = Result<Vec<UserRoom>, StoreError>> + Send + use<Self>;

    /// Points the alias (`#name:server`, stored as given) at an existing room (else
    /// [`StoreError::NotFound`]). Returns `false`, changing nothing, if the alias is taken.
    fn create_room_alias(
        &self,
        alias: &str,
        room_id: &RoomId,
        creator: &UserId,
        ts: Millis,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + use<Self>;

    /// The room an alias points at.
    fn resolve_room_alias(
        &self,
        alias: &str,
    ) -> impl Future<Output = Result<Option<RoomId>, StoreError>> + Send + use<Self>;

    /// Every joined `(room, user)` pair, grouped by room; read once at startup to rebuild the
    /// engine's membership index.
    fn all_joined_memberships(
        &self,
    ) -> impl Future<Output = Result<Vec<(RoomId, UserId)>, StoreError>> + Send + use<Self>;

    // --- presence ---

    /// Stores the latest presence of each user. One row is kept per user; a row is replaced
    /// only by a state with an equal or higher stream id, so a late, older write never
    /// overwrites a newer one. Within one call, later entries win over earlier ones with the
    /// same stream id.
    fn persist_presence(
        &self,
        states: Vec<(StreamId, UserPresenceState)>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + use<Self>;

    /// Every stored presence row (offline ones included), for startup.
    fn load_presence(
        &self,
    ) -> impl Future<Output = Result<Vec<(StreamId, UserPresenceState)>, StoreError>> + Send + use<Self>;

    /// The highest stored presence stream id, `0` if none.
    fn max_presence_stream_id(
        &self,
    ) -> impl Future<Output = Result<StreamId, StoreError>> + Send + use<Self>;

    // --- "send full presence" snapshot targets ---

    /// Marks local users as owed a full presence snapshot as of `stream_id` (the
    /// `send_local_online_presence_to` module call). Replaces an older mark.
    fn set_full_presence_targets(
        &self,
        users: Vec<UserId>,
        stream_id: StreamId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + use<Self>;

    /// Every pending snapshot target with the stream id it was marked at.
    fn load_full_presence_targets(
        &self,
    ) -> impl Future<Output = Result<Vec<(UserId, StreamId)>, StoreError>> + Send + use<Self>;

    /// Clears a user's snapshot mark once the snapshot was delivered as of `up_to`. A mark set
    /// at a later stream id (a new request that raced the delivery) is kept. Returns whether
    /// a mark was removed.
    fn delete_full_presence_target(
        &self,
        user_id: &UserId,
        up_to: StreamId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + use<Self>;

    // --- client filters ---

    /// Stores a filter for an existing user (else [`StoreError::NotFound`]) and returns its
    /// ID, unique per user.
    fn create_filter(
        &self,
        user_id: &UserId,
        filter_json: String,
    ) -> impl Future<Output = Result<String, StoreError>> + Send + use<Self>;

    /// A user's filter by ID.
    fn get_filter(
        &self,
        user_id: &UserId,
        filter_id: &str,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send + use<Self>;

    // --- client account data ---

    /// Replaces an account-data entry of an existing user (else [`StoreError::NotFound`]):
    /// global with `room_id` `None`, else for that room. `content` is a JSON object as text.
    /// Returns the entry's new stream position, above every entry's before it.
    fn put_account_data(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        data_type: &str,
        content: String,
    ) -> impl Future<Output = Result<StreamId, StoreError>> + Send + use<Self>;

    /// One account-data entry's content.
    fn get_account_data(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        data_type: &str,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send + use<Self>;

    /// A user's entries written after `since` (every entry for `None`), oldest first.
    fn account_data_since(
        &self,
        user_id: &UserId,
        since: Option<StreamId>,
    ) -> impl Future<Output = Result<Vec<AccountDataEntry>, StoreError>> + Send + use<Self>;

    /// Every user's entries of one type, oldest first.
    fn account_data_of_type(
        &self,
        data_type: &str,
    ) -> impl Future<Output = Result<Vec<AccountDataEntry>, StoreError>> + Send + use<Self>;

    /// The latest account-data stream position (0 when there is none).
    fn max_account_data_stream_id(
        &self,
    ) -> impl Future<Output = Result<StreamId, StoreError>> + Send + use<Self>;

    // --- server metadata ---

    /// Reads a metadata value (e.g. a stream position).
    fn get_meta(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send + use<Self>;

    /// Sets a metadata value.
    fn set_meta(
        &self,
        key: &str,
        value: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + use<Self>;

    // --- lifecycle ---

    /// A snapshot of the write-path counters.
    fn stats(&self) -> StoreStats;

    /// Applies every write already accepted, then stops. Later calls fail with
    /// [`StoreError::Closed`]; closing twice is fine.
    fn close(&self) -> impl Future<Output = Result<(), StoreError>> + Send + use<Self>;
}
