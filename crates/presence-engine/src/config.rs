//! Engine configuration: modes and timers (the reference's `presence` section, read in
//! `synapse/config/server.py`, and the constants of `synapse/handlers/presence.py`).

use std::sync::Arc;

use presence_router::{Millis, RecipientFilter, ServerName, UserId};

/// `presence.enabled`: `true`, `false` or `"untracked"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PresenceMode {
    /// Presence is tracked: requests, syncs and timers change it.
    #[default]
    Enabled,
    /// Presence is off: nothing changes it; stale states are flushed to offline at startup.
    Disabled,
    /// Stored presence is served but nothing tracks it: no timers, requests are accepted and
    /// ignored; only forced updates (`set_presence_for_users`) change it.
    Untracked,
}

impl PresenceMode {
    /// Whether requests, syncs and timers change presence.
    pub fn tracks(self) -> bool {
        self == Self::Enabled
    }
}

/// The timers of the state machine, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// How long an activity keeps a user `currently_active` (reference default 60 s).
    pub last_active_granularity: Millis,
    /// How long after its last sync a device stops counting as online (30 s).
    pub sync_online_timeout: Millis,
    /// How long without activity before an online device becomes unavailable (5 min).
    pub idle_timeout: Millis,
    /// How long a busy device lasts without syncing (1 h).
    pub busy_timeout: Millis,
    /// How long a remote user's state lasts without an update from its server (30 min).
    pub federation_timeout: Millis,
    /// How often a local user's unchanged state is announced again over federation (25 min).
    pub federation_ping_interval: Millis,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            last_active_granularity: 60_000,
            sync_online_timeout: 30_000,
            idle_timeout: 300_000,
            busy_timeout: 3_600_000,
            federation_timeout: 1_800_000,
            federation_ping_interval: 1_500_000,
        }
    }
}

/// Who receives a user's presence besides the recipients the routers add.
///
/// The default is the additive mode: room-mates receive each other's presence and nothing is
/// removed. The restricting mode turns shared-room delivery into a choice (the `shared_rooms`
/// router) and may remove recipients with a filter; every path (wake-ups, `/sync` reads,
/// `can_see`, federation destinations, snapshots for remote users) applies both.
#[derive(Clone)]
pub struct Audience {
    /// Whether users who share a room receive each other's presence.
    pub shared_rooms: bool,
    /// Deliveries the routers remove; `None` removes nothing.
    pub filter: Option<Arc<dyn RecipientFilter>>,
}

impl Audience {
    /// The additive mode: shared rooms, nothing removed.
    pub fn additive() -> Self {
        Self {
            shared_rooms: true,
            filter: None,
        }
    }

    /// Whether `recipient` may receive `sender`'s presence (always, for oneself).
    pub fn allows(&self, sender: &UserId, recipient: &UserId) -> bool {
        sender == recipient
            || self
                .filter
                .as_ref()
                .is_none_or(|f| f.allows(sender, recipient))
    }
}

impl Default for Audience {
    fn default() -> Self {
        Self::additive()
    }
}

impl std::fmt::Debug for Audience {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audience")
            .field("shared_rooms", &self.shared_rooms)
            .field("filter", &self.filter.is_some())
            .finish()
    }
}

/// Everything the engine needs to know about the server.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This server's name: users on it are local.
    pub server_name: ServerName,
    /// Tracking mode.
    pub mode: PresenceMode,
    /// Timers.
    pub timers: Timers,
    /// Whether initial syncs include offline users too (`include_offline_users_on_sync`).
    pub include_offline_users_on_sync: bool,
    /// Longest `status_msg` accepted from a remote server, in bytes.
    pub max_status_msg_len: usize,
    /// Most entries read from one inbound `m.presence` EDU; the rest are dropped.
    pub max_remote_entries_per_edu: usize,
    /// Rooms whose members do not share presence through them.
    pub exclude_rooms_from_presence: Vec<Arc<str>>,
    /// Whether local users' changes go to the servers sharing a room with them. Off where
    /// another process sends those (beside Synapse, its federation sender); pings, joins and
    /// routed recipients still produce federation effects.
    pub federate_room_changes: bool,
    /// Shared-room delivery and the routers' removals (the additive mode by default).
    pub audience: Audience,
}

impl EngineConfig {
    /// Defaults for a server called `server_name`.
    pub fn new(server_name: ServerName) -> Self {
        Self {
            server_name,
            mode: PresenceMode::Enabled,
            timers: Timers::default(),
            include_offline_users_on_sync: false,
            max_status_msg_len: 4096,
            max_remote_entries_per_edu: 1000,
            exclude_rooms_from_presence: Vec::new(),
            federate_room_changes: true,
            audience: Audience::additive(),
        }
    }
}
