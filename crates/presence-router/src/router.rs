//! The [`PresenceRouter`] trait: what a router module implements.
//!
//! Contract (the seed's, restated):
//! - `get_users_for_states` MUST return, for each recipient (local or remote user), the states
//!   of the batch that recipient should receive. It is called once per batch of updates, local
//!   and remote states mixed, to wake local syncs and to pick federation destinations.
//! - `get_interested_users` MUST return the users whose presence `user_id` should receive, or
//!   [`InterestedUsers::All`]. It is called when a local user syncs.
//! - The two SHOULD agree: a user who is interested in X SHOULD be a recipient of X's states.
//! - By default (the additive mode) routed presence is always *in addition* to shared-room
//!   presence; a router cannot hide room-mates from each other.
//! - In the restricting mode (`presence.routing: restricting`), shared-room delivery is a router
//!   of its own (`shared_rooms`) and a router may also *remove* recipients, through the
//!   [`RecipientFilter`] it returns from [`PresenceRouter::recipient_filter`]: whatever any
//!   router adds, a pair that any router's filter refuses is never delivered, on any path.
//! - Calls SHOULD be fast and MUST NOT block the thread; an error, a panic or a call that
//!   overruns its time budget is logged and that router's answer is ignored for that call.

use std::{collections::BTreeSet, sync::Arc};

use async_trait::async_trait;

use crate::{RoomId, StateBatch, UserId, UserStates};

/// The users whose presence a syncing user receives through a router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterestedUsers {
    /// Every update the server knows of, passed through `get_users_for_states` (the
    /// reference's `PresenceRouter.ALL_USERS`).
    All,
    /// These users (local or remote), in addition to room-mates.
    Users(BTreeSet<UserId>),
}

impl InterestedUsers {
    /// No extra users.
    pub fn none() -> Self {
        Self::Users(BTreeSet::new())
    }
}

impl Default for InterestedUsers {
    fn default() -> Self {
        Self::none()
    }
}

/// Why one router call failed. The failure is confined to that router and that call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouterError {
    /// The router reported an error.
    #[error("router failed: {0}")]
    Failed(String),
    /// The router returned something that breaks the contract.
    #[error("router returned an invalid result: {0}")]
    Invalid(String),
    /// The call overran its time budget.
    #[error("router call timed out")]
    TimedOut,
    /// The router panicked.
    #[error("router panicked")]
    Panicked,
}

/// A presence router module. See the module docs for the contract.
#[async_trait]
pub trait PresenceRouter: Send + Sync + 'static {
    /// For a batch of presence updates, which users (local or remote) should receive which of
    /// them, in addition to the users who share a room with each updated user.
    async fn get_users_for_states(&self, states: &StateBatch) -> Result<UserStates, RouterError>;

    /// The users whose presence `user_id` should receive in addition to its room-mates.
    async fn get_interested_users(&self, user_id: &UserId) -> Result<InterestedUsers, RouterError>;

    /// The restricting mode's removals: a filter every delivery is checked against, or `None`
    /// (the default) for a router that only adds recipients. Asked once, when the server
    /// starts. A server in the additive mode refuses to start with a router that has one,
    /// since it could not honour it.
    fn recipient_filter(&self) -> Option<Arc<dyn RecipientFilter>> {
        None
    }

    /// Account-data event types this router follows (default: none). The server passes it
    /// every stored entry of these types when it starts, then every write, through
    /// [`account_data_changed`](Self::account_data_changed).
    fn followed_account_data(&self) -> Vec<String> {
        Vec::new()
    }

    /// An entry of a followed account-data type was written (or is replayed at startup):
    /// `room` is `None` for global account data. Called on the writing request's path:
    /// update in-memory tables and return.
    fn account_data_changed(
        &self,
        _user: &UserId,
        _room: Option<&RoomId>,
        _event_type: &str,
        _content: &serde_json::Value,
    ) {
    }

    /// Whether this router follows room memberships (default: no). If it does, the server
    /// passes it every joined membership when it starts, then every join and leave, through
    /// [`membership_changed`](Self::membership_changed).
    fn follows_memberships(&self) -> bool {
        false
    }

    /// `user` joined (`joined`) or left `room`. Called with no lock held, on the path of
    /// the change: update in-memory tables and return.
    fn membership_changed(&self, _room: &RoomId, _user: &UserId, _joined: bool) {}
}

/// Which deliveries a router removes in the restricting mode.
///
/// The server asks [`allows`](Self::allows) for every (sender, recipient) pair it is about to
/// deliver, whoever added the recipient (room-mates through `shared_rooms`, routed users,
/// `All` users): for `/sync` reads and the users it wakes, `GET /presence/{userId}/status`
/// (a reader sees a user's presence only if it would receive it), federation destinations (a
/// remote server is sent a local user's presence only if at least one of its users that
/// would receive it is allowed) and `send_local_online_presence_to`. A user always receives
/// its own presence, so it is never asked about `sender == recipient`.
///
/// It is called with the presence engine locked, many times per change: answer from memory,
/// without blocking, and consistently (the same pair gets the same answer until the router's
/// data changes). A filter that panics refuses the pair: removals protect privacy, so a
/// broken one fails closed.
pub trait RecipientFilter: Send + Sync + 'static {
    /// Whether `recipient` (local or remote) may receive the presence of `sender` (local or
    /// remote).
    fn allows(&self, sender: &UserId, recipient: &UserId) -> bool;
}

/// A shared router is a router: this lets `Arc<dyn PresenceRouter>` (what the registry builds)
/// be passed wherever a `PresenceRouter` is expected, such as conformance suites and wrappers.
#[async_trait]
impl<R: PresenceRouter + ?Sized> PresenceRouter for std::sync::Arc<R> {
    async fn get_users_for_states(&self, states: &StateBatch) -> Result<UserStates, RouterError> {
        (**self).get_users_for_states(states).await
    }

    async fn get_interested_users(&self, user_id: &UserId) -> Result<InterestedUsers, RouterError> {
        (**self).get_interested_users(user_id).await
    }

    fn recipient_filter(&self) -> Option<Arc<dyn RecipientFilter>> {
        (**self).recipient_filter()
    }

    fn followed_account_data(&self) -> Vec<String> {
        (**self).followed_account_data()
    }

    fn account_data_changed(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        event_type: &str,
        content: &serde_json::Value,
    ) {
        (**self).account_data_changed(user, room, event_type, content);
    }

    fn follows_memberships(&self) -> bool {
        (**self).follows_memberships()
    }

    fn membership_changed(&self, room: &RoomId, user: &UserId, joined: bool) {
        (**self).membership_changed(room, user, joined);
    }
}
