//! The records the store keeps: what goes in and what comes back out.
//!
//! These are plain data types shared by every backend. IDs are the validated types of
//! `presence_router`; event bodies stay opaque JSON text, because the store never looks
//! inside them.

use std::fmt;

use presence_router::{DeviceId, Millis, RoomId, UserId};

/// A position in the presence stream. Ids start at 1; `0` means "nothing yet".
pub type StreamId = u64;

/// A position in the room event stream (one sequence shared by all rooms, assigned by the
/// store when an event is appended). Positions start at 1.
pub type StreamOrdering = u64;

/// A user account to create.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NewUser {
    /// The new user's ID.
    pub user_id: UserId,
    /// The password hash (already hashed by the caller), or `None` for accounts that cannot
    /// log in with a password.
    pub password_hash: Option<String>,
    /// Whether the user is a server admin.
    pub admin: bool,
    /// When the account was created.
    pub creation_ts: Millis,
}

impl NewUser {
    /// A non-admin account without a password.
    pub fn new(user_id: UserId, creation_ts: Millis) -> Self {
        Self {
            user_id,
            password_hash: None,
            admin: false,
            creation_ts,
        }
    }

    /// Sets the password hash.
    pub fn with_password_hash(mut self, hash: impl Into<String>) -> Self {
        self.password_hash = Some(hash.into());
        self
    }

    /// Sets the admin flag.
    pub fn with_admin(mut self, admin: bool) -> Self {
        self.admin = admin;
        self
    }
}

// The password hash never goes into logs.
impl fmt::Debug for NewUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewUser")
            .field("user_id", &self.user_id)
            .field("has_password", &self.password_hash.is_some())
            .field("admin", &self.admin)
            .field("creation_ts", &self.creation_ts)
            .finish()
    }
}

/// A stored user account.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UserRecord {
    /// The user's ID.
    pub user_id: UserId,
    /// The password hash, if the account has a password.
    pub password_hash: Option<String>,
    /// Whether the user is a server admin.
    pub admin: bool,
    /// When the account was created.
    pub creation_ts: Millis,
}

impl fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserRecord")
            .field("user_id", &self.user_id)
            .field("has_password", &self.password_hash.is_some())
            .field("admin", &self.admin)
            .field("creation_ts", &self.creation_ts)
            .finish()
    }
}

/// A device to create (or whose access token to replace) at login.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NewDevice {
    /// The owner; the account must exist.
    pub user_id: UserId,
    /// The device's ID.
    pub device_id: DeviceId,
    /// A human-readable name; `None` keeps the name an existing device already has.
    pub display_name: Option<String>,
    /// When the login happened.
    pub ts: Millis,
}

impl NewDevice {
    /// A device without a display name.
    pub fn new(user_id: UserId, device_id: DeviceId, ts: Millis) -> Self {
        Self {
            user_id,
            device_id,
            display_name: None,
            ts,
        }
    }

    /// Sets the display name.
    pub fn with_display_name(mut self, name: impl Into<String>) -> Self {
        self.display_name = Some(name.into());
        self
    }
}

/// A stored device.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeviceRecord {
    /// The owner.
    pub user_id: UserId,
    /// The device's ID.
    pub device_id: DeviceId,
    /// Its display name, if any.
    pub display_name: Option<String>,
    /// When the device was first created.
    pub created_ts: Millis,
    /// When its current access token was issued.
    pub token_ts: Millis,
}

/// A room on this server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoomRecord {
    /// The room's ID.
    pub room_id: RoomId,
    /// Who created it (or the operator account for rooms managed through the admin API).
    pub creator: UserId,
    /// Whether the room is listed publicly.
    pub is_public: bool,
    /// When it was created.
    pub creation_ts: Millis,
}

impl RoomRecord {
    /// Builds a room record.
    pub fn new(room_id: RoomId, creator: UserId, is_public: bool, creation_ts: Millis) -> Self {
        Self {
            room_id,
            creator,
            is_public,
            creation_ts,
        }
    }
}

/// A room event as stored: the fields the server indexes, plus the content as JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredEvent {
    /// The globally unique event ID.
    pub event_id: String,
    /// The event type, e.g. `m.room.member`.
    pub event_type: String,
    /// Present for state events; the latest event per `(type, state_key)` is the room's
    /// current state.
    pub state_key: Option<String>,
    /// Who sent it.
    pub sender: UserId,
    /// The sender's timestamp.
    pub origin_server_ts: Millis,
    /// The event's `content`, serialized JSON.
    pub content_json: String,
}

impl StoredEvent {
    /// A message-like (non-state) event.
    pub fn new(
        event_id: impl Into<String>,
        event_type: impl Into<String>,
        sender: UserId,
        origin_server_ts: Millis,
        content_json: impl Into<String>,
    ) -> Self {
        Self {
            event_id: event_id.into(),
            event_type: event_type.into(),
            state_key: None,
            sender,
            origin_server_ts,
            content_json: content_json.into(),
        }
    }

    /// Makes this a state event with the given state key.
    pub fn with_state_key(mut self, state_key: impl Into<String>) -> Self {
        self.state_key = Some(state_key.into());
        self
    }
}

/// A stored event together with its position in the event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OrderedEvent {
    /// Where the event sits in the stream.
    pub stream_ordering: StreamOrdering,
    /// The event.
    pub event: StoredEvent,
}

/// A user's membership of a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Membership {
    /// Invited but not joined.
    Invite,
    /// In the room: shares presence with the other joined members.
    Join,
    /// Left (or was kicked); the row is kept as history.
    Leave,
}

impl Membership {
    /// The Matrix name of the membership (`join`, `invite`, `leave`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invite => "invite",
            Self::Join => "join",
            Self::Leave => "leave",
        }
    }

    /// Parses a Matrix membership name; unknown names give `None`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "invite" => Self::Invite,
            "join" => Self::Join,
            "leave" => Self::Leave,
            _ => return None,
        })
    }
}

impl fmt::Display for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One of a user's rooms with the stream positions a `/sync` needs to decide what is new.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UserRoom {
    /// The room.
    pub room_id: RoomId,
    /// The user's membership of it.
    pub membership: Membership,
    /// Where the `m.room.member` event that made this membership sits in the event stream;
    /// `None` when the change was recorded without a stored event.
    pub membership_ordering: Option<StreamOrdering>,
    /// The room's latest event, `0` if it has none.
    pub latest_ordering: StreamOrdering,
}

/// A change of one user's membership of a room.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MembershipChange {
    /// Whose membership changes (local or remote).
    pub user_id: UserId,
    /// The new membership.
    pub membership: Membership,
    /// The `m.room.member` event that made the change, if there is one (memberships managed
    /// through the admin API have none).
    pub event_id: Option<String>,
    /// When the change happened.
    pub ts: Millis,
}

impl MembershipChange {
    /// A change without an event.
    pub fn new(user_id: UserId, membership: Membership, ts: Millis) -> Self {
        Self {
            user_id,
            membership,
            event_id: None,
            ts,
        }
    }

    /// Records the event that made the change.
    pub fn with_event_id(mut self, event_id: impl Into<String>) -> Self {
        self.event_id = Some(event_id.into());
        self
    }
}

/// Events and membership changes of one room, stored together in one atomic write: either
/// all of it is applied or none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoomUpdate {
    /// Events to append, in order.
    pub events: Vec<StoredEvent>,
    /// Membership changes to apply after the events.
    pub memberships: Vec<MembershipChange>,
}

impl RoomUpdate {
    /// An update with these events and membership changes.
    pub fn new(events: Vec<StoredEvent>, memberships: Vec<MembershipChange>) -> Self {
        Self {
            events,
            memberships,
        }
    }
}

/// One client account-data entry (`PUT /user/{userId}/account_data/{type}`, or the per-room
/// form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountDataEntry {
    /// Whose.
    pub user_id: UserId,
    /// The room, for per-room account data; `None` for global.
    pub room_id: Option<RoomId>,
    /// The event type.
    pub data_type: String,
    /// The content, a JSON object as text.
    pub content: String,
    /// The stream position of its latest write.
    pub stream_id: StreamId,
}
