//! The rows that `RDATA` carries for the streams a presence writer produces or follows.
//!
//! - `presence` (`PresenceStream.PresenceStreamRow`, `streams/_base.py`): a 7-field array.
//! - `presence_federation`: `[destination, user_id]`.
//! - `events` (`streams/events.py`): `[type_id, data]`, of which membership tracking needs
//!   `ev`, `state` and `state-all`; other type IDs are kept as [`EventsRow::Other`].
//!
//! Decoding is lenient about extra trailing fields (a later Synapse may append some) and
//! strict about the types of the fields it reads. Room IDs stay strings: room version 12
//! room IDs (`!<hash>`, no server name) are valid in Synapse 1.163 but not in
//! [`presence_router::RoomId`]'s grammar.

use std::sync::Arc;

use presence_router::{IdError, Millis, PresenceState, ServerName, UserId, UserPresenceState};
use serde::{Serialize, Serializer, ser::SerializeSeq};
use serde_json::Value;

use crate::json::to_python_json;

/// Why a row could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RowError {
    /// The row is not valid JSON.
    #[error("row is not JSON: {0}")]
    Json(String),
    /// The row is not an array of at least `expected` fields.
    #[error("{row}: expected an array of {expected} fields")]
    Shape {
        /// Which row type.
        row: &'static str,
        /// How many fields it needs.
        expected: usize,
    },
    /// A field has the wrong JSON type or an invalid value.
    #[error("{row}: field `{field}` is invalid")]
    Field {
        /// Which row type.
        row: &'static str,
        /// The field.
        field: &'static str,
    },
    /// An ID field does not parse.
    #[error("{row}: field `{field}`: {source}")]
    Id {
        /// Which row type.
        row: &'static str,
        /// The field.
        field: &'static str,
        /// Why.
        source: IdError,
    },
}

/// A `presence` stream row: the state of one user as written to `presence_stream`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PresenceRow {
    /// Whose presence.
    pub user_id: UserId,
    /// The state.
    pub state: PresenceState,
    /// Last activity, ms since the epoch.
    pub last_active_ts: Millis,
    /// Last federation announcement (local) or receipt (remote).
    pub last_federation_update_ts: Millis,
    /// Last finished sync.
    pub last_user_sync_ts: Millis,
    /// The status message, `null` on the wire when absent.
    pub status_msg: Option<String>,
    /// Whether the user is currently active.
    pub currently_active: bool,
}

const PRESENCE_ROW: &str = "presence row";

impl PresenceRow {
    /// Decodes a row from its JSON text (the `row` of an `RDATA presence` command).
    pub fn from_json(json: &str) -> Result<Self, RowError> {
        Self::from_value(&parse_json(json)?)
    }

    /// Decodes a row from a JSON value.
    pub fn from_value(value: &Value) -> Result<Self, RowError> {
        let f = fields(value, PRESENCE_ROW, 7)?;
        let state = f[1]
            .as_str()
            .and_then(PresenceState::from_wire)
            .ok_or(RowError::Field {
                row: PRESENCE_ROW,
                field: "state",
            })?;
        Ok(Self {
            user_id: user_id(&f[0], PRESENCE_ROW, "user_id")?,
            state,
            last_active_ts: millis(&f[2], "last_active_ts")?,
            last_federation_update_ts: millis(&f[3], "last_federation_update_ts")?,
            last_user_sync_ts: millis(&f[4], "last_user_sync_ts")?,
            status_msg: opt_string(&f[5], PRESENCE_ROW, "status_msg")?,
            currently_active: boolean(&f[6], PRESENCE_ROW, "currently_active")?,
        })
    }

    /// The row's JSON text, encoded as Synapse encodes it.
    pub fn to_json(&self) -> String {
        // Only strings, integers, booleans and null: serialization cannot fail.
        to_python_json(self).unwrap_or_default()
    }
}

impl Serialize for PresenceRow {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(7))?;
        seq.serialize_element(self.user_id.as_str())?;
        seq.serialize_element(self.state.as_str())?;
        seq.serialize_element(&self.last_active_ts)?;
        seq.serialize_element(&self.last_federation_update_ts)?;
        seq.serialize_element(&self.last_user_sync_ts)?;
        seq.serialize_element(&self.status_msg)?;
        seq.serialize_element(&self.currently_active)?;
        seq.end()
    }
}

impl From<&UserPresenceState> for PresenceRow {
    fn from(s: &UserPresenceState) -> Self {
        Self {
            user_id: s.user_id.clone(),
            state: s.state,
            last_active_ts: s.last_active_ts,
            last_federation_update_ts: s.last_federation_update_ts,
            last_user_sync_ts: s.last_user_sync_ts,
            status_msg: s.status_msg.as_deref().map(str::to_owned),
            currently_active: s.currently_active,
        }
    }
}

impl From<UserPresenceState> for PresenceRow {
    fn from(s: UserPresenceState) -> Self {
        Self::from(&s)
    }
}

impl From<PresenceRow> for UserPresenceState {
    /// An empty status message becomes `None`: `UserPresenceState` never holds `""`.
    fn from(r: PresenceRow) -> Self {
        Self {
            user_id: r.user_id,
            state: r.state,
            last_active_ts: r.last_active_ts,
            last_federation_update_ts: r.last_federation_update_ts,
            last_user_sync_ts: r.last_user_sync_ts,
            status_msg: r.status_msg.filter(|m| !m.is_empty()).map(Arc::from),
            currently_active: r.currently_active,
        }
    }
}

/// A `presence_federation` stream row: send `user_id`'s presence to `destination`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PresenceFederationRow {
    /// The remote server.
    pub destination: ServerName,
    /// The local user whose presence to send.
    pub user_id: UserId,
}

/// A `caches` stream row (`CachesStream.CachesStreamRow`): `[cache_func, keys,
/// invalidation_ts]`, telling every process to drop `keys` from its cache of `cache_func`
/// (`keys` null: the whole cache).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CachesRow {
    /// The cached function's name, e.g. `_get_full_presence_stream_token_for_user`.
    pub cache_func: String,
    /// The key to invalidate (`None`: all of them).
    pub keys: Option<Vec<String>>,
    /// When the invalidation was made, in ms.
    pub invalidation_ts: Millis,
}

const CACHES_ROW: &str = "caches row";

impl CachesRow {
    /// Decodes a row from a JSON value.
    pub fn from_value(value: &Value) -> Result<Self, RowError> {
        let f = fields(value, CACHES_ROW, 3)?;
        let field = |field| RowError::Field {
            row: CACHES_ROW,
            field,
        };
        let cache_func = f[0].as_str().ok_or(field("cache_func"))?.to_owned();
        let keys = match &f[1] {
            Value::Null => None,
            Value::Array(keys) => Some(
                keys.iter()
                    .map(|k| k.as_str().map(str::to_owned).ok_or(field("keys")))
                    .collect::<Result<_, _>>()?,
            ),
            _ => return Err(field("keys")),
        };
        let invalidation_ts = f[2].as_u64().ok_or(field("invalidation_ts"))?;
        Ok(Self {
            cache_func,
            keys,
            invalidation_ts,
        })
    }
}

impl Serialize for CachesRow {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(3))?;
        seq.serialize_element(&self.cache_func)?;
        seq.serialize_element(&self.keys)?;
        seq.serialize_element(&self.invalidation_ts)?;
        seq.end()
    }
}

const FEDERATION_ROW: &str = "presence_federation row";

impl PresenceFederationRow {
    /// A row for `user_id` to `destination`.
    pub fn new(destination: ServerName, user_id: UserId) -> Self {
        Self {
            destination,
            user_id,
        }
    }

    /// Decodes a row from its JSON text.
    pub fn from_json(json: &str) -> Result<Self, RowError> {
        Self::from_value(&parse_json(json)?)
    }

    /// Decodes a row from a JSON value.
    pub fn from_value(value: &Value) -> Result<Self, RowError> {
        let f = fields(value, FEDERATION_ROW, 2)?;
        let destination = f[0].as_str().ok_or(RowError::Field {
            row: FEDERATION_ROW,
            field: "destination",
        })?;
        Ok(Self {
            destination: ServerName::parse(destination).map_err(|source| RowError::Id {
                row: FEDERATION_ROW,
                field: "destination",
                source,
            })?,
            user_id: user_id(&f[1], FEDERATION_ROW, "user_id")?,
        })
    }

    /// The row's JSON text, encoded as Synapse encodes it.
    pub fn to_json(&self) -> String {
        to_python_json(&[self.destination.as_str(), self.user_id.as_str()]).unwrap_or_default()
    }
}

/// An `ev` row of the `events` stream: an event was persisted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamEventRow {
    /// The event ID.
    pub event_id: String,
    /// The room (a string: see the module docs about room version 12).
    pub room_id: String,
    /// The event type, e.g. `m.room.member`.
    pub event_type: String,
    /// The state key, for state events.
    pub state_key: Option<String>,
    /// The redacted event, for redactions.
    pub redacts: Option<String>,
    /// The related event, for relations.
    pub relates_to: Option<String>,
    /// The membership, for `m.room.member` events.
    pub membership: Option<String>,
    /// Whether the event was rejected.
    pub rejected: bool,
    /// Whether the event is an outlier (not in the room's timeline or current state).
    pub outlier: bool,
}

/// A `state` row of the `events` stream: one entry of a room's current state changed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamStateRow {
    /// The room.
    pub room_id: String,
    /// The state event type.
    pub event_type: String,
    /// The state key (for `m.room.member`, the user ID).
    pub state_key: String,
    /// The new current state event; `None` when the entry was removed.
    pub event_id: Option<String>,
}

/// A row of the `events` stream.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EventsRow {
    /// `["ev", [...]]`.
    Event(StreamEventRow),
    /// `["state", [...]]`.
    State(StreamStateRow),
    /// `["state-all", [room_id]]`: the room's whole current state may have changed.
    StateAll {
        /// The room.
        room_id: String,
    },
    /// Any other type ID (`ex-outlier`, `un-partial-stated-room`, ...), kept as received.
    Other {
        /// The type ID.
        type_id: String,
        /// The row data.
        data: Value,
    },
}

const EV_ROW: &str = "events ev row";
const STATE_ROW: &str = "events state row";
const STATE_ALL_ROW: &str = "events state-all row";
const EVENTS_ROW: &str = "events row";

impl EventsRow {
    /// Decodes a row from its JSON text.
    pub fn from_json(json: &str) -> Result<Self, RowError> {
        Self::from_value(&parse_json(json)?)
    }

    /// Decodes a row from a JSON value.
    pub fn from_value(value: &Value) -> Result<Self, RowError> {
        let outer = fields(value, EVENTS_ROW, 2)?;
        let type_id = outer[0].as_str().ok_or(RowError::Field {
            row: EVENTS_ROW,
            field: "type",
        })?;
        let data = &outer[1];
        Ok(match type_id {
            "ev" => {
                let f = fields(data, EV_ROW, 9)?;
                Self::Event(StreamEventRow {
                    event_id: string(&f[0], EV_ROW, "event_id")?,
                    room_id: string(&f[1], EV_ROW, "room_id")?,
                    event_type: string(&f[2], EV_ROW, "type")?,
                    state_key: opt_string(&f[3], EV_ROW, "state_key")?,
                    redacts: opt_string(&f[4], EV_ROW, "redacts")?,
                    relates_to: opt_string(&f[5], EV_ROW, "relates_to")?,
                    membership: opt_string(&f[6], EV_ROW, "membership")?,
                    rejected: boolean(&f[7], EV_ROW, "rejected")?,
                    outlier: boolean(&f[8], EV_ROW, "outlier")?,
                })
            }
            "state" => {
                let f = fields(data, STATE_ROW, 4)?;
                Self::State(StreamStateRow {
                    room_id: string(&f[0], STATE_ROW, "room_id")?,
                    event_type: string(&f[1], STATE_ROW, "type")?,
                    state_key: string(&f[2], STATE_ROW, "state_key")?,
                    event_id: opt_string(&f[3], STATE_ROW, "event_id")?,
                })
            }
            "state-all" => {
                let f = fields(data, STATE_ALL_ROW, 1)?;
                Self::StateAll {
                    room_id: string(&f[0], STATE_ALL_ROW, "room_id")?,
                }
            }
            other => Self::Other {
                type_id: other.to_owned(),
                data: data.clone(),
            },
        })
    }

    /// For a current-state change of `m.room.member`: the room and the user whose membership
    /// must be re-read (the row does not say the new membership; the `ev` row or the database
    /// does).
    pub fn member_state_change(&self) -> Option<(&str, &str)> {
        match self {
            Self::State(s) if s.event_type == "m.room.member" => Some((&s.room_id, &s.state_key)),
            _ => None,
        }
    }
}

fn parse_json(json: &str) -> Result<Value, RowError> {
    serde_json::from_str(json).map_err(|e| RowError::Json(e.to_string()))
}

fn fields<'a>(v: &'a Value, row: &'static str, expected: usize) -> Result<&'a [Value], RowError> {
    match v.as_array() {
        Some(a) if a.len() >= expected => Ok(a.as_slice()),
        _ => Err(RowError::Shape { row, expected }),
    }
}

fn string(v: &Value, row: &'static str, field: &'static str) -> Result<String, RowError> {
    v.as_str()
        .map(str::to_owned)
        .ok_or(RowError::Field { row, field })
}

fn opt_string(
    v: &Value,
    row: &'static str,
    field: &'static str,
) -> Result<Option<String>, RowError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err(RowError::Field { row, field }),
    }
}

fn boolean(v: &Value, row: &'static str, field: &'static str) -> Result<bool, RowError> {
    v.as_bool().ok_or(RowError::Field { row, field })
}

fn millis(v: &Value, field: &'static str) -> Result<Millis, RowError> {
    v.as_u64().ok_or(RowError::Field {
        row: PRESENCE_ROW,
        field,
    })
}

fn user_id(v: &Value, row: &'static str, field: &'static str) -> Result<UserId, RowError> {
    let s = v.as_str().ok_or(RowError::Field { row, field })?;
    UserId::parse(s).map_err(|source| RowError::Id { row, field, source })
}

#[cfg(test)]
mod tests;
