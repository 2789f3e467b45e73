//! [`PresencePersistence`]: what the presence service needs from storage, and nothing more.
//!
//! This is the seam between the two deployment modes. Standalone, the server's own store
//! implements it (every [`PresenceStore`] does, below). Beside Synapse, the deployment's
//! PostgreSQL does: Synapse's `presence_stream` rows, the memberships of
//! `current_state_events`, and publication of committed rows to the other processes, so that
//! nothing is announced before it is committed. The service never learns which one it has.

use std::future::Future;

use presence_engine::StreamPos;
use presence_router::{RoomId, UserId, UserPresenceState};
use presence_store::{PresenceStore, StoreError};

/// Where the presence service loads and persists presence. Chosen once at startup.
pub trait PresencePersistence: Clone + Send + Sync + 'static {
    /// Every joined `(room, user)` pair, read once at startup to rebuild the membership index.
    fn all_joined_memberships(
        &self,
    ) -> impl Future<Output = Result<Vec<(RoomId, UserId)>, StoreError>> + Send;

    /// Every stored presence row, for startup.
    fn load_presence(
        &self,
    ) -> impl Future<Output = Result<Vec<(StreamPos, UserPresenceState)>, StoreError>> + Send;

    /// Commits the latest presence of each user; returns only once it is durable (and, where
    /// other processes read it, published).
    fn persist_presence(
        &self,
        states: Vec<(StreamPos, UserPresenceState)>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Marks local users as owed a full snapshot as of `pos`.
    fn set_full_presence_targets(
        &self,
        users: Vec<UserId>,
        pos: StreamPos,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every pending snapshot target, for startup.
    fn load_full_presence_targets(
        &self,
    ) -> impl Future<Output = Result<Vec<(UserId, StreamPos)>, StoreError>> + Send;

    /// Whether `user` is an account of this deployment.
    fn user_exists(&self, user: &UserId) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records durably that stream positions up to `upto` may be handed out, so that after a
    /// restart the stream resumes above every position a client may hold, whatever commits
    /// failed before it (see [`Self::load_reserved_position`]).
    fn reserve_positions(
        &self,
        upto: StreamPos,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The position the stream resumes from at startup: at least every reservation and every
    /// stored row's position (unreadable rows included).
    fn load_reserved_position(&self) -> impl Future<Output = Result<StreamPos, StoreError>> + Send;
}

/// The `meta` key holding the highest reserved stream position.
const RESERVED_KEY: &str = "presence_stream_reserved";

impl<S: PresenceStore + Clone + Send + Sync + 'static> PresencePersistence for S {
    fn all_joined_memberships(
        &self,
    ) -> impl Future<Output = Result<Vec<(RoomId, UserId)>, StoreError>> + Send {
        PresenceStore::all_joined_memberships(self)
    }

    fn load_presence(
        &self,
    ) -> impl Future<Output = Result<Vec<(StreamPos, UserPresenceState)>, StoreError>> + Send {
        PresenceStore::load_presence(self)
    }

    fn persist_presence(
        &self,
        states: Vec<(StreamPos, UserPresenceState)>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        PresenceStore::persist_presence(self, states)
    }

    fn set_full_presence_targets(
        &self,
        users: Vec<UserId>,
        pos: StreamPos,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        PresenceStore::set_full_presence_targets(self, users, pos)
    }

    fn load_full_presence_targets(
        &self,
    ) -> impl Future<Output = Result<Vec<(UserId, StreamPos)>, StoreError>> + Send {
        PresenceStore::load_full_presence_targets(self)
    }

    fn user_exists(&self, user: &UserId) -> impl Future<Output = Result<bool, StoreError>> + Send {
        PresenceStore::user_exists(self, user)
    }

    async fn reserve_positions(&self, upto: StreamPos) -> Result<(), StoreError> {
        // Callers reserve one at a time and only upwards (see `PresenceService`).
        PresenceStore::set_meta(self, RESERVED_KEY, &upto.to_string()).await
    }

    async fn load_reserved_position(&self) -> Result<StreamPos, StoreError> {
        let reserved = match PresenceStore::get_meta(self, RESERVED_KEY).await? {
            // A value this server did not write is not trusted to be a floor.
            Some(v) => v.parse::<StreamPos>().unwrap_or_else(|_| {
                tracing::warn!(value = %v, "Ignoring an unreadable {RESERVED_KEY} value.");
                0
            }),
            None => 0,
        };
        let stored = PresenceStore::max_presence_stream_id(self).await?;
        Ok(reserved.max(stored))
    }
}
