//! Room events: building the events this server stores, and showing stored events to
//! clients (the client format, and the stripped state an invitee sees).
//! Spec: <https://spec.matrix.org/v1.15/client-server-api/#room-event-format> and
//! <https://spec.matrix.org/v1.15/client-server-api/#stripped-state>.

use presence_router::{Millis, UserId};
use presence_store::{OrderedEvent, StoredEvent};
use serde_json::{Map, Value, json};

use crate::{app::accounts::new_event_id, error::ApiError};

/// `m.room.create`.
pub const CREATE: &str = "m.room.create";
/// `m.room.member`.
pub const MEMBER: &str = "m.room.member";
/// `m.room.power_levels`.
pub const POWER_LEVELS: &str = "m.room.power_levels";
/// `m.room.join_rules`.
pub const JOIN_RULES: &str = "m.room.join_rules";
/// `m.room.history_visibility`.
pub const HISTORY_VISIBILITY: &str = "m.room.history_visibility";
/// `m.room.guest_access`.
pub const GUEST_ACCESS: &str = "m.room.guest_access";
/// `m.room.name`.
pub const NAME: &str = "m.room.name";
/// `m.room.topic`.
pub const TOPIC: &str = "m.room.topic";
/// `m.room.canonical_alias`.
pub const CANONICAL_ALIAS: &str = "m.room.canonical_alias";

/// The state an invitee is shown before joining (the specification's recommended set).
const STRIPPED_TYPES: [&str; 7] = [
    CREATE,
    JOIN_RULES,
    NAME,
    TOPIC,
    CANONICAL_ALIAS,
    "m.room.avatar",
    "m.room.encryption",
];

/// A new state event with a random event ID.
pub fn state_event(
    event_type: &str,
    state_key: &str,
    sender: &UserId,
    ts: Millis,
    content: Value,
) -> Result<StoredEvent, ApiError> {
    Ok(StoredEvent::new(
        new_event_id()?,
        event_type,
        sender.clone(),
        ts,
        content.to_string(),
    )
    .with_state_key(state_key))
}

/// A new `m.room.member` event of `user` (sent by `sender`).
pub fn member_event(
    user: &UserId,
    sender: &UserId,
    ts: Millis,
    content: Value,
) -> Result<StoredEvent, ApiError> {
    state_event(MEMBER, user.as_str(), sender, ts, content)
}

/// The content of a stored event as JSON (an empty object if it cannot be read back, which
/// only a damaged database would cause).
pub fn content(event: &StoredEvent) -> Value {
    serde_json::from_str(&event.content_json).unwrap_or_else(|_| Value::Object(Map::new()))
}

/// The event in the client format (without `room_id`, as `/sync` nests it under the room).
pub fn client_event(event: &OrderedEvent, now: Millis) -> Value {
    let e = &event.event;
    let mut out = json!({
        "event_id": e.event_id,
        "type": e.event_type,
        "sender": e.sender.as_str(),
        "origin_server_ts": e.origin_server_ts,
        "content": content(e),
        "unsigned": {"age": now.saturating_sub(e.origin_server_ts)},
    });
    if let (Some(key), Some(obj)) = (&e.state_key, out.as_object_mut()) {
        obj.insert("state_key".into(), json!(key));
    }
    out
}

/// The event in the client format with its `room_id` (for endpoints outside `/sync`).
pub fn client_event_in_room(event: &OrderedEvent, room_id: &str, now: Millis) -> Value {
    let mut out = client_event(event, now);
    if let Some(obj) = out.as_object_mut() {
        obj.insert("room_id".into(), json!(room_id));
    }
    out
}

/// The stripped form of a state event: type, state key, sender and content only.
pub fn stripped(event: &StoredEvent) -> Value {
    json!({
        "type": event.event_type,
        "state_key": event.state_key.as_deref().unwrap_or(""),
        "sender": event.sender.as_str(),
        "content": content(event),
    })
}

/// The stripped state shown with an invite: the room's descriptive state, and the
/// invitee's own membership event.
pub fn invite_state(state: &[OrderedEvent], invitee: &UserId) -> Vec<Value> {
    state
        .iter()
        .filter(|e| {
            let ev = &e.event;
            STRIPPED_TYPES.contains(&ev.event_type.as_str())
                || (ev.event_type == MEMBER && ev.state_key.as_deref() == Some(invitee.as_str()))
        })
        .map(|e| stripped(&e.event))
        .collect()
}

/// The current state event of `(event_type, state_key)`, if any.
pub fn find_state<'a>(
    state: &'a [OrderedEvent],
    event_type: &str,
    state_key: &str,
) -> Option<&'a OrderedEvent> {
    state.iter().find(|e| {
        e.event.event_type == event_type && e.event.state_key.as_deref() == Some(state_key)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    #[test]
    fn stripped_events_keep_four_fields() {
        let alice = user("@alice:example.org");
        let ev = state_event(NAME, "", &alice, 5, json!({"name": "Lobby"})).unwrap();
        assert_eq!(
            stripped(&ev),
            json!({"type": NAME, "state_key": "", "sender": "@alice:example.org", "content": {"name": "Lobby"}})
        );
        assert!(ev.event_id.starts_with('$'));
    }
}
