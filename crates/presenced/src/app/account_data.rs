//! Client account data (`GET`/`PUT /user/{userId}/account_data/{type}` and the per-room
//! form), stored in the standalone store and delivered in `/sync`: global entries under
//! `account_data`, per-room ones under `rooms.join.{roomId}.account_data`, each entry
//! once per change since the client's token.
//! Spec: <https://spec.matrix.org/v1.15/client-server-api/#client-config>.
//!
//! Routers that follow an account-data type (`direct_rooms` follows `m.direct`,
//! `user_lists` its presence lists) are told of every write, and of every stored entry at
//! startup.

use std::sync::atomic::Ordering;

use presence_router::{RoomId, UserId};
use presence_store::{AccountDataEntry, PresenceStore};
use serde_json::{Map, Value};

use super::App;
use crate::error::ApiError;

/// Types the server manages itself, which clients cannot set (spec: 405 `M_BAD_JSON`).
const SERVER_MANAGED: [&str; 2] = ["m.fully_read", "m.push_rules"];

/// The largest content accepted, in bytes of JSON (the request body limit applies too).
const MAX_CONTENT_BYTES: usize = 64 * 1024;

impl App {
    /// Replaces `user`'s entry of `data_type` (for `room`, or global), wakes the user's
    /// waiting syncs and tells the routers that follow the type.
    pub async fn put_account_data(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        data_type: &str,
        content: Map<String, Value>,
    ) -> Result<(), ApiError> {
        if SERVER_MANAGED.contains(&data_type) {
            return Err(ApiError::server_managed(format!(
                "Cannot set {data_type} through the account-data API"
            )));
        }
        if data_type.is_empty() || data_type.len() > 255 {
            return Err(ApiError::invalid_param("Invalid account-data type"));
        }
        let content = Value::Object(content);
        let text = content.to_string();
        if text.len() > MAX_CONTENT_BYTES {
            return Err(ApiError::too_large("Account data is too large"));
        }
        let pos = self
            .store()?
            .put_account_data(user, room, data_type, text)
            .await?;
        self.inner.account_data_pos.fetch_max(pos, Ordering::SeqCst);
        self.presence()
            .routers()
            .account_data_changed(user, room, data_type, &content);
        self.presence().notifier().wake([user]);
        Ok(())
    }

    /// `user`'s entry of `data_type` (for `room`, or global).
    pub async fn get_account_data(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        data_type: &str,
    ) -> Result<Option<Value>, ApiError> {
        let Some(text) = self
            .store()?
            .get_account_data(user, room, data_type)
            .await?
        else {
            return Ok(None);
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(ApiError::internal)
    }

    /// The latest account-data position (the third part of a sync token).
    pub fn account_data_position(&self) -> u64 {
        self.inner.account_data_pos.load(Ordering::SeqCst)
    }

    /// What changed in `user`'s account data after `since` (all of it for `None`), and the
    /// position to give as the next token's part.
    pub(crate) async fn account_data_since(
        &self,
        user: &UserId,
        since: Option<u64>,
    ) -> Result<(Vec<AccountDataEntry>, u64), ApiError> {
        // Read first: an entry written meanwhile is either returned or above the position.
        let pos = self.account_data_position();
        let Some(store) = self.inner.store.as_ref() else {
            return Ok((Vec::new(), pos));
        };
        if since.is_some_and(|s| s >= pos) {
            return Ok((Vec::new(), since.unwrap_or(pos)));
        }
        let entries = store.account_data_since(user, since).await?;
        let next = entries
            .iter()
            .map(|e| e.stream_id)
            .max()
            .unwrap_or(0)
            .max(pos);
        Ok((entries, next))
    }
}

/// At startup: the latest account-data position, and every stored entry of the types the
/// routers follow passed to them.
pub(super) async fn restore(
    store: &super::Store,
    routers: &presence_router::RouterSet,
) -> Result<u64, presence_store::StoreError> {
    for data_type in routers.followed_account_data() {
        for entry in store.account_data_of_type(&data_type).await? {
            match serde_json::from_str::<Value>(&entry.content) {
                Ok(content) => routers.account_data_changed(
                    &entry.user_id,
                    entry.room_id.as_ref(),
                    &entry.data_type,
                    &content,
                ),
                Err(e) => tracing::warn!(
                    user = %entry.user_id,
                    data_type = %entry.data_type,
                    error = %e,
                    "Stored account data is not JSON; routers are not told of it."
                ),
            }
        }
    }
    store.max_account_data_stream_id().await
}
