//! Row decoding and encoding against the rows captured from stock Synapse 1.163.2.

use super::*;
use crate::Command;

const PRESENCE_ROWS: &[&str] = &[
    r#"["@bob:test.local","online",1796302663779,1796302663781,1796302663779,null,true]"#,
    r#"["@alice:test.local","online",1796302663882,1796302663883,0,"hello there",true]"#,
    r#"["@bob:test.local","offline",1796302663779,1796302699538,1796302665926,null,true]"#,
];

#[test]
fn presence_rows_round_trip() {
    for json in PRESENCE_ROWS {
        let row = PresenceRow::from_json(json).unwrap();
        assert_eq!(row.to_json(), *json);
        let state = UserPresenceState::from(row.clone());
        assert_eq!(PresenceRow::from(&state), row);
    }
    let alice = PresenceRow::from_json(PRESENCE_ROWS[1]).unwrap();
    assert_eq!(alice.user_id.as_str(), "@alice:test.local");
    assert_eq!(alice.state, PresenceState::Online);
    assert_eq!(alice.last_active_ts, 1_796_302_663_882);
    assert_eq!(alice.last_federation_update_ts, 1_796_302_663_883);
    assert_eq!(alice.last_user_sync_ts, 0);
    assert_eq!(alice.status_msg.as_deref(), Some("hello there"));
    assert!(alice.currently_active);
    // Stock behaviour: an offline row may keep currently_active = true.
    assert!(
        PresenceRow::from_json(PRESENCE_ROWS[2])
            .unwrap()
            .currently_active
    );
}

#[test]
fn presence_row_from_a_captured_rdata_line() {
    let line = format!("RDATA presence presence1 2 {}", PRESENCE_ROWS[0]);
    let Command::Rdata { row, .. } = Command::parse(&line).unwrap() else {
        panic!("not RDATA");
    };
    let row = PresenceRow::from_json(row.get()).unwrap();
    assert_eq!(row.state, PresenceState::Online);
    let rebuilt = Command::rdata("presence", "presence1", Some(2), &row).unwrap();
    assert_eq!(rebuilt.to_line(), line);
}

#[test]
fn busy_and_status_conversions() {
    let row =
        PresenceRow::from_json(r#"["@a:b.c","org.matrix.msc3026.busy",1,2,3,"",false]"#).unwrap();
    assert_eq!(row.state, PresenceState::Busy);
    // UserPresenceState never holds an empty status message.
    assert_eq!(UserPresenceState::from(row).status_msg, None);
}

#[test]
fn bad_presence_rows() {
    for json in [
        r#"["@a:b.c","online",1,2,3,null]"#,
        r#"{"user_id":"@a:b.c"}"#,
        r#"["@a:b.c","here",1,2,3,null,true]"#,
        r#"["@a:b.c","online",-1,2,3,null,true]"#,
        r#"["@a:b.c","online",1.5,2,3,null,true]"#,
        r#"["@a:b.c","online",1,2,3,7,true]"#,
        r#"["@a:b.c","online",1,2,3,null,"yes"]"#,
        r#"["a:b.c","online",1,2,3,null,true]"#,
        r#"["@a:b.c","online""#,
    ] {
        assert!(PresenceRow::from_json(json).is_err(), "{json}");
    }
    // A later Synapse appending a field is tolerated.
    assert!(PresenceRow::from_json(r#"["@a:b.c","online",1,2,3,null,true,"new"]"#).is_ok());
}

#[test]
fn federation_rows() {
    let row =
        PresenceFederationRow::from_json(r#"["remote.example:8448","@alice:test.local"]"#).unwrap();
    assert_eq!(row.destination.as_str(), "remote.example:8448");
    assert_eq!(row.user_id.as_str(), "@alice:test.local");
    assert_eq!(
        row.to_json(),
        r#"["remote.example:8448","@alice:test.local"]"#
    );
    assert!(PresenceFederationRow::from_json(r#"["bad host","@a:b.c"]"#).is_err());
    assert!(PresenceFederationRow::from_json(r#"["ok.example"]"#).is_err());
}

#[test]
fn captured_events_rows() {
    let ev = EventsRow::from_json(
        r#"["ev",["$x1:test.local","!room:test.local","m.room.member","@alice:test.local",null,null,"join",false,false]]"#,
    )
    .unwrap();
    let EventsRow::Event(ev) = ev else {
        panic!("not ev")
    };
    assert_eq!(ev.event_id, "$x1:test.local");
    assert_eq!(ev.room_id, "!room:test.local");
    assert_eq!(ev.event_type, "m.room.member");
    assert_eq!(ev.state_key.as_deref(), Some("@alice:test.local"));
    assert_eq!(ev.membership.as_deref(), Some("join"));
    assert!(!ev.rejected && !ev.outlier);

    let state = EventsRow::from_json(
        r#"["state",["!room:test.local","m.room.member","@alice:test.local","$x1:test.local"]]"#,
    )
    .unwrap();
    assert_eq!(
        state.member_state_change(),
        Some(("!room:test.local", "@alice:test.local"))
    );
    // Room version 12 room IDs carry no server name.
    let removed = EventsRow::from_json(r#"["state",["!AbCdEf","m.room.topic","",null]]"#).unwrap();
    let EventsRow::State(removed) = removed else {
        panic!("not state")
    };
    assert_eq!(removed.event_id, None);
    assert_eq!(removed.room_id, "!AbCdEf");

    assert_eq!(
        EventsRow::from_json(r#"["state-all",["!room:test.local"]]"#).unwrap(),
        EventsRow::StateAll {
            room_id: "!room:test.local".to_owned()
        }
    );
    let other = EventsRow::from_json(r#"["un-partial-stated-room",["!r:x"]]"#).unwrap();
    assert!(
        matches!(other, EventsRow::Other { ref type_id, .. } if type_id == "un-partial-stated-room")
    );
    for bad in [
        r#"["ev",["$x"]]"#,
        r#"["state",["!r:x","m.room.member",null,"$e"]]"#,
        r#"[1,[]]"#,
        r#"["ev"]"#,
        r#""ev""#,
    ] {
        assert!(EventsRow::from_json(bad).is_err(), "{bad}");
    }
}

#[test]
fn caches_rows_encode_as_synapse_writes_them() {
    // The shape of a captured `RDATA caches master 5 ["cs_cache_fake",["!room","@user"],ts]`.
    let captured = serde_json::json!([
        "cs_cache_fake",
        ["!room:test.local", "@bob:test.local"],
        1796302663779u64
    ]);
    let row = CachesRow::from_value(&captured).unwrap();
    assert_eq!(row.cache_func, "cs_cache_fake");
    assert_eq!(
        row.keys.as_deref(),
        Some(&["!room:test.local".to_owned(), "@bob:test.local".to_owned()][..])
    );
    assert_eq!(serde_json::to_value(&row).unwrap(), captured);
    // "Invalidate all" is a null key list.
    let all = CachesRow::from_value(&serde_json::json!(["f", null, 1])).unwrap();
    assert_eq!(all.keys, None);
    assert_eq!(serde_json::to_string(&all).unwrap(), r#"["f",null,1]"#);
    for bad in [
        serde_json::json!(["f", "not-a-list", 1]),
        serde_json::json!([1, null, 1]),
        serde_json::json!(["f", [1], 1]),
        serde_json::json!(["f", null, -1]),
        serde_json::json!(["f", null]),
    ] {
        assert!(CachesRow::from_value(&bad).is_err(), "{bad} was accepted");
    }
}
