//! Wire shapes of what we send: `m.presence` push entries, EDUs and transactions.
//!
//! ruma's `PresenceUpdate` always writes `last_active_ago` and `currently_active`; the
//! reference homeserver (and `docs/` in this project) omit them when they carry nothing, so
//! the entries are built here to match the reference byte for byte:
//! `user_id`, `presence`, `last_active_ago` only when the user was ever active,
//! `status_msg` only when non-empty, `currently_active` only when online.
//!
//! Spec: <https://spec.matrix.org/v1.15/server-server-api/#presence> and
//! <https://spec.matrix.org/v1.15/server-server-api/#transactions>.

use presence_router::{Millis, PresenceState, UserPresenceState};
use serde::{Deserialize, Serialize};

/// The EDU type of presence updates.
pub const PRESENCE_EDU_TYPE: &str = "m.presence";

/// One entry of an `m.presence` EDU's `push` list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PresencePush {
    /// Whose presence.
    pub user_id: String,
    /// The state's wire name.
    pub presence: String,
    /// Milliseconds since the user was last active; absent if never.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_active_ago: Option<u64>,
    /// The status message; absent if none or empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_msg: Option<String>,
    /// Present only for online users.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currently_active: Option<bool>,
}

impl PresencePush {
    /// The entry for `state` as of `now_ms`.
    pub fn from_state(state: &UserPresenceState, now_ms: Millis) -> Self {
        Self {
            user_id: state.user_id.as_str().to_owned(),
            presence: state.state.as_str().to_owned(),
            last_active_ago: (state.last_active_ts > 0)
                .then(|| now_ms.saturating_sub(state.last_active_ts)),
            status_msg: state
                .status_msg
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            currently_active: (state.state == PresenceState::Online)
                .then_some(state.currently_active),
        }
    }
}

/// The content of an `m.presence` EDU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PresenceContent {
    /// The updates.
    pub push: Vec<PresencePush>,
}

/// An EDU we send. Only presence for now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "edu_type", content = "content")]
#[non_exhaustive]
pub enum Edu {
    /// `m.presence`.
    #[serde(rename = "m.presence")]
    Presence(PresenceContent),
}

impl Edu {
    /// The presence entries of this EDU, if it is a presence EDU.
    pub fn presence(&self) -> Option<&[PresencePush]> {
        match self {
            Self::Presence(c) => Some(&c.push),
        }
    }
}

/// Splits states into `m.presence` EDUs of at most `per_edu` entries each.
pub fn presence_edus(states: &[UserPresenceState], now_ms: Millis, per_edu: usize) -> Vec<Edu> {
    states
        .chunks(per_edu.max(1))
        .map(|chunk| {
            Edu::Presence(PresenceContent {
                push: chunk
                    .iter()
                    .map(|s| PresencePush::from_state(s, now_ms))
                    .collect(),
            })
        })
        .collect()
}

/// The body of `PUT /_matrix/federation/v1/send/{txnId}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Transaction {
    /// The sending server.
    pub origin: String,
    /// When the transaction was built, on the sender's clock.
    pub origin_server_ts: Millis,
    /// Always empty: presence travels in EDUs (the field is required by the specification).
    pub pdus: Vec<serde_json::Value>,
    /// The EDUs.
    pub edus: Vec<Edu>,
}

impl Transaction {
    /// A transaction of EDUs.
    pub fn new(origin: impl Into<String>, origin_server_ts: Millis, edus: Vec<Edu>) -> Self {
        Self {
            origin: origin.into(),
            origin_server_ts,
            pdus: Vec::new(),
            edus,
        }
    }

    /// Every presence entry in the transaction, in order.
    pub fn presence(&self) -> impl Iterator<Item = &PresencePush> {
        self.edus.iter().filter_map(Edu::presence).flatten()
    }
}
