//! Presence on the wire: the `m.presence` event content shared by `/sync`, `GET /status`
//! and federation (as the reference's `format_user_presence_state` in
//! `synapse/handlers/presence.py` builds it). Spec:
//! <https://spec.matrix.org/v1.15/client-server-api/#mpresence>.
//!
//! [`Content`] and [`SyncEvent`] serialize straight from the state: a `/sync` that returns
//! many events builds no intermediate JSON tree.

use presence_router::{Millis, PresenceState, UserPresenceState};
use serde::{Serialize, Serializer, ser::SerializeMap};
use serde_json::{Map, Value};

/// The event content of `state` as seen at `now`: `presence` always; `last_active_ago` when
/// the user was ever active; `status_msg` when non-empty; `currently_active` only for
/// `online`.
#[derive(Debug, Clone, Copy)]
pub struct Content<'a> {
    /// The state shown.
    pub state: &'a UserPresenceState,
    /// The time `last_active_ago` counts to.
    pub now: Millis,
}

impl Serialize for Content<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let st = self.state;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("presence", st.state.as_str())?;
        if st.last_active_ts > 0 {
            m.serialize_entry(
                "last_active_ago",
                &self.now.saturating_sub(st.last_active_ts),
            )?;
        }
        if let Some(msg) = st.status_msg.as_deref().filter(|m| !m.is_empty()) {
            m.serialize_entry("status_msg", msg)?;
        }
        if st.state == PresenceState::Online {
            m.serialize_entry("currently_active", &st.currently_active)?;
        }
        m.end()
    }
}

/// The `m.presence` event of `/sync`: `type`, `sender` and the [`Content`].
#[derive(Debug, Clone, Copy)]
pub struct SyncEvent<'a>(pub Content<'a>);

impl Serialize for SyncEvent<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("type", "m.presence")?;
        m.serialize_entry("sender", self.0.state.user_id.as_str())?;
        m.serialize_entry("content", &self.0)?;
        m.end()
    }
}

/// [`Content`] as a JSON object, for responses that add keys to it.
pub fn content(state: &UserPresenceState, now: Millis) -> Map<String, Value> {
    match serde_json::to_value(Content { state, now }) {
        Ok(Value::Object(m)) => m,
        // A map of strings and numbers always converts; an empty object is the safe answer.
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn content_follows_the_reference_rules() {
        let mut s = UserPresenceState::offline(presence_router::UserId::parse("@a:hs").unwrap());
        assert_eq!(
            Value::Object(content(&s, 10)),
            json!({"presence": "offline"})
        );
        s.state = PresenceState::Online;
        s.last_active_ts = 4;
        s.currently_active = true;
        s.status_msg = Some("".into());
        assert_eq!(
            Value::Object(content(&s, 10)),
            json!({"presence": "online", "last_active_ago": 6, "currently_active": true})
        );
        s.state = PresenceState::Busy;
        s.status_msg = Some("deep work".into());
        assert_eq!(
            Value::Object(content(&s, 10)),
            json!({"presence": "org.matrix.msc3026.busy", "last_active_ago": 6, "status_msg": "deep work"})
        );
        assert_eq!(
            serde_json::to_value(SyncEvent(Content { state: &s, now: 10 })).unwrap(),
            json!({"type": "m.presence", "sender": "@a:hs", "content": {
                "presence": "org.matrix.msc3026.busy", "last_active_ago": 6, "status_msg": "deep work"}})
        );
    }
}
