//! Presence values: [`PresenceState`] and the per-user record [`UserPresenceState`].
//!
//! Spec: <https://spec.matrix.org/v1.15/client-server-api/#presence>; busy is MSC3026.

use std::{fmt, sync::Arc};

use crate::UserId;

/// Milliseconds since the Unix epoch. `0` means "never".
pub type Millis = u64;

/// The wire name of the busy state (MSC3026).
pub const BUSY_WIRE_NAME: &str = "org.matrix.msc3026.busy";

/// A user's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[non_exhaustive]
pub enum PresenceState {
    /// Not connected.
    #[default]
    Offline,
    /// Connected but idle, or explicitly "away".
    Unavailable,
    /// Connected and active.
    Online,
    /// Connected and busy (MSC3026); only accepted from clients when the extension is on.
    Busy,
}

impl PresenceState {
    /// All states, in ascending aggregation priority.
    pub const ALL: [Self; 4] = [Self::Offline, Self::Unavailable, Self::Online, Self::Busy];

    /// The state's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Offline => "offline",
            Self::Unavailable => "unavailable",
            Self::Online => "online",
            Self::Busy => BUSY_WIRE_NAME,
        }
    }

    /// Parses a wire name. Unknown names give `None`.
    pub fn from_wire(s: &str) -> Option<Self> {
        Some(match s {
            "offline" => Self::Offline,
            "unavailable" => Self::Unavailable,
            "online" => Self::Online,
            BUSY_WIRE_NAME => Self::Busy,
            _ => return None,
        })
    }

    /// Priority when combining a user's devices: busy > online > unavailable > offline.
    pub fn priority(self) -> u8 {
        match self {
            Self::Offline => 1,
            Self::Unavailable => 2,
            Self::Online => 3,
            Self::Busy => 4,
        }
    }
}

impl fmt::Display for PresenceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The presence record of one user, local or remote, compared and hashed by value over all
/// seven fields (as the reference's `UserPresenceState`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserPresenceState {
    /// Whose presence this is.
    pub user_id: UserId,
    /// The presence state.
    pub state: PresenceState,
    /// When the user last did something; `0` for never.
    pub last_active_ts: Millis,
    /// Local user: when this state was last announced over federation. Remote user: when we
    /// last heard about them.
    pub last_federation_update_ts: Millis,
    /// When a sync of this user last finished.
    pub last_user_sync_ts: Millis,
    /// Free-text status, if any (never the empty string).
    pub status_msg: Option<Arc<str>>,
    /// Whether the user is active right now (only meaningful, and only sent, when online).
    pub currently_active: bool,
}

impl UserPresenceState {
    /// The default record: offline, never active, no status.
    pub fn offline(user_id: UserId) -> Self {
        Self {
            user_id,
            state: PresenceState::Offline,
            last_active_ts: 0,
            last_federation_update_ts: 0,
            last_user_sync_ts: 0,
            status_msg: None,
            currently_active: false,
        }
    }

    /// Another name for [`Self::user_id`], the name the seed's example code uses.
    pub fn state_key(&self) -> &UserId {
        &self.user_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip() {
        for s in PresenceState::ALL {
            assert_eq!(PresenceState::from_wire(s.as_str()), Some(s));
        }
        assert_eq!(PresenceState::from_wire("busy"), None);
        assert_eq!(PresenceState::from_wire("here"), None);
    }

    #[test]
    fn priority_orders_states() {
        let mut v = PresenceState::ALL.to_vec();
        v.sort_by_key(|s| std::cmp::Reverse(s.priority()));
        assert_eq!(
            v,
            [
                PresenceState::Busy,
                PresenceState::Online,
                PresenceState::Unavailable,
                PresenceState::Offline
            ]
        );
    }
}
