//! Presence on the wire: the `m.presence` event content shared by `/sync`, `GET /status`
//! and federation (reference §1.5). Spec:
//! <https://spec.matrix.org/v1.15/client-server-api/#mpresence>.

use presence_router::{Millis, PresenceState, UserPresenceState};
use serde_json::{Map, Value, json};

/// The event content: `presence` always; `last_active_ago` when the user was ever active;
/// `status_msg` when non-empty; `currently_active` only for `online`.
pub fn content(state: &UserPresenceState, now: Millis) -> Map<String, Value> {
    let mut c = Map::new();
    c.insert("presence".into(), json!(state.state.as_str()));
    if state.last_active_ts > 0 {
        c.insert(
            "last_active_ago".into(),
            json!(now.saturating_sub(state.last_active_ts)),
        );
    }
    if let Some(msg) = state.status_msg.as_deref().filter(|m| !m.is_empty()) {
        c.insert("status_msg".into(), json!(msg));
    }
    if state.state == PresenceState::Online {
        c.insert("currently_active".into(), json!(state.currently_active));
    }
    c
}

/// The `m.presence` event of `/sync`.
pub fn sync_event(state: &UserPresenceState, now: Millis) -> Value {
    json!({
        "type": "m.presence",
        "sender": state.user_id.as_str(),
        "content": content(state, now),
    })
}

#[cfg(test)]
mod tests {
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
    }
}
