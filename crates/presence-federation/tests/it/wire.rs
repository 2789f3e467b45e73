//! Wire shapes of what we send, against the reference's (`synapse/federation/sender/
//! per_destination_queue.py`, checked by its `tests/federation/test_federation_sender.py`).

use std::sync::Arc;

use presence_federation::{PresencePush, Transaction, wire::presence_edus};
use presence_router::{PresenceState, UserPresenceState};

use crate::support::{NOW, state, user};

#[test]
fn default_offline_entry_is_exactly_the_references() {
    let entry = PresencePush::from_state(&UserPresenceState::offline(user("@user:test")), NOW);
    assert_eq!(
        serde_json::to_value(&entry).unwrap(),
        serde_json::json!({"presence": "offline", "user_id": "@user:test"})
    );
}

fn full(presence: PresenceState) -> UserPresenceState {
    UserPresenceState {
        last_active_ts: NOW - 5,
        status_msg: Some(Arc::from("x")),
        currently_active: true,
        ..state("@a:hs", presence)
    }
}

#[test]
fn optional_fields_follow_the_reference_rules() {
    let online =
        serde_json::to_value(PresencePush::from_state(&full(PresenceState::Online), NOW)).unwrap();
    assert_eq!(
        online,
        serde_json::json!({"user_id": "@a:hs", "presence": "online", "last_active_ago": 5,
                           "status_msg": "x", "currently_active": true})
    );
    // currently_active only for online users, even when the record says true.
    for p in [
        PresenceState::Unavailable,
        PresenceState::Busy,
        PresenceState::Offline,
    ] {
        let v = serde_json::to_value(PresencePush::from_state(&full(p), NOW)).unwrap();
        assert!(v.get("currently_active").is_none(), "{v}");
        assert_eq!(v["presence"], p.as_str());
    }
    // An online user who is not active right now still says so.
    let mut idle = full(PresenceState::Online);
    idle.currently_active = false;
    let v = serde_json::to_value(PresencePush::from_state(&idle, NOW)).unwrap();
    assert_eq!(v["currently_active"], false);
    // An empty status is left out.
    let mut empty = full(PresenceState::Unavailable);
    empty.status_msg = Some(Arc::from(""));
    let v = serde_json::to_value(PresencePush::from_state(&empty, NOW)).unwrap();
    assert!(v.get("status_msg").is_none(), "{v}");
}

#[test]
fn transaction_wire_shape() {
    let states = vec![
        full(PresenceState::Online),
        UserPresenceState::offline(user("@b:hs")),
        full(PresenceState::Busy),
    ];
    let txn = Transaction::new("hs", NOW, presence_edus(&states, NOW, 2));
    insta::assert_json_snapshot!("transaction", txn);
}
