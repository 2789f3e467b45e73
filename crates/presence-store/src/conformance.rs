//! The conformance suite every [`PresenceStore`] backend must pass.
//!
//! Each check takes a fresh, empty store and panics (fails the test) when the backend breaks
//! the contract written on the trait. Backends run the whole suite through
//! [`crate::store_conformance!`], so a new check here reaches every backend at once.

// This module is test code shipped in the library so other backend crates can run it: a
// failed expectation is exactly a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeSet;

use presence_router::{DeviceId, PresenceState, RoomId, UserId, UserPresenceState};
use tokio::task::JoinSet;

use crate::{
    Membership, MembershipChange, NewDevice, NewUser, PresenceStore, RoomRecord, RoomUpdate,
    StoreError, StoredEvent, StreamId,
};

/// A user ID from a literal.
pub fn user(s: &str) -> UserId {
    UserId::parse(s).expect("valid user ID literal")
}

/// A room ID from a literal.
pub fn room(s: &str) -> RoomId {
    RoomId::parse(s).expect("valid room ID literal")
}

/// A device ID from a literal.
pub fn device(s: &str) -> DeviceId {
    DeviceId::parse(s).expect("valid device ID literal")
}

/// A presence record with every field set to something other than its default.
pub fn presence(user_id: &str, state: PresenceState, ts: u64) -> UserPresenceState {
    UserPresenceState {
        user_id: user(user_id),
        state,
        last_active_ts: ts,
        last_federation_update_ts: ts + 1,
        last_user_sync_ts: ts + 2,
        status_msg: Some(format!("status at {ts}").into()),
        currently_active: state == PresenceState::Online,
    }
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// Users: create, read back, count, duplicates refused.
pub async fn users_round_trip<S: PresenceStore>(store: &S) {
    let alice = user("@alice:example.org");
    let bob = user("@bob:example.org");
    assert_eq!(store.count_users().await.unwrap(), 0);
    assert!(!store.user_exists(&alice).await.unwrap());
    assert!(store.get_user(&alice).await.unwrap().is_none());

    store
        .create_user(
            NewUser::new(alice.clone(), 1_000)
                .with_password_hash("$argon2id$hash")
                .with_admin(true),
        )
        .await
        .unwrap();
    store
        .create_user(NewUser::new(bob.clone(), 2_000))
        .await
        .unwrap();

    let a = store.get_user(&alice).await.unwrap().expect("alice stored");
    assert_eq!(a.user_id, alice);
    assert_eq!(a.password_hash.as_deref(), Some("$argon2id$hash"));
    assert!(a.admin);
    assert_eq!(a.creation_ts, 1_000);
    let b = store.get_user(&bob).await.unwrap().expect("bob stored");
    assert_eq!(b.password_hash, None);
    assert!(!b.admin);
    assert!(store.user_exists(&bob).await.unwrap());
    assert_eq!(store.count_users().await.unwrap(), 2);

    let dup = store.create_user(NewUser::new(alice.clone(), 3_000)).await;
    assert!(matches!(dup, Err(StoreError::UserExists)), "{dup:?}");
    // The refused duplicate changed nothing.
    let a_again = store.get_user(&alice).await.unwrap().expect("alice stored");
    assert_eq!(a_again, a);
    assert_eq!(store.count_users().await.unwrap(), 2);
}

/// Devices and access tokens: login, token lookup, re-login, logout.
pub async fn devices_and_tokens<S: PresenceStore>(store: &S) {
    let alice = user("@alice:example.org");
    let phone = device("PHONE");
    let laptop = device("LAPTOP");

    let orphan = store
        .create_device(
            NewDevice::new(alice.clone(), phone.clone(), 10),
            "tok-orphan",
        )
        .await;
    assert!(matches!(orphan, Err(StoreError::NotFound)), "{orphan:?}");
    assert_eq!(store.resolve_token("tok-orphan").await.unwrap(), None);

    store
        .create_user(NewUser::new(alice.clone(), 1))
        .await
        .unwrap();
    store
        .create_device(
            NewDevice::new(alice.clone(), phone.clone(), 10).with_display_name("Phone"),
            "tok-phone-1",
        )
        .await
        .unwrap();
    store
        .create_device(
            NewDevice::new(alice.clone(), laptop.clone(), 20),
            "tok-laptop",
        )
        .await
        .unwrap();
    assert_eq!(
        store.resolve_token("tok-phone-1").await.unwrap(),
        Some((alice.clone(), phone.clone()))
    );
    assert_eq!(
        store.resolve_token("tok-laptop").await.unwrap(),
        Some((alice.clone(), laptop.clone()))
    );
    assert_eq!(store.resolve_token("tok-unknown").await.unwrap(), None);

    // Logging in again on the same device replaces its token and keeps its name.
    store
        .create_device(
            NewDevice::new(alice.clone(), phone.clone(), 30),
            "tok-phone-2",
        )
        .await
        .unwrap();
    assert_eq!(store.resolve_token("tok-phone-1").await.unwrap(), None);
    assert_eq!(
        store.resolve_token("tok-phone-2").await.unwrap(),
        Some((alice.clone(), phone.clone()))
    );
    let devices = store.list_devices(&alice).await.unwrap();
    let ids: Vec<_> = devices.iter().map(|d| d.device_id.clone()).collect();
    assert_eq!(ids, [laptop.clone(), phone.clone()]);
    let p = &devices[1];
    assert_eq!(p.display_name.as_deref(), Some("Phone"));
    assert_eq!((p.created_ts, p.token_ts), (10, 30));

    // Logout removes the device and its token, and only those.
    assert!(store.delete_device(&alice, &phone).await.unwrap());
    assert!(!store.delete_device(&alice, &phone).await.unwrap());
    assert_eq!(store.resolve_token("tok-phone-2").await.unwrap(), None);
    assert_eq!(
        store.resolve_token("tok-laptop").await.unwrap(),
        Some((alice.clone(), laptop.clone()))
    );
    let ids: Vec<_> = store
        .list_devices(&alice)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.device_id)
        .collect();
    assert_eq!(ids, [laptop]);
}

/// Rooms: create, read back, duplicates refused.
pub async fn rooms_round_trip<S: PresenceStore>(store: &S) {
    let r = room("!r1:example.org");
    assert_eq!(store.get_room(&r).await.unwrap(), None);
    let record = RoomRecord::new(r.clone(), user("@alice:example.org"), true, 5);
    store.create_room(record.clone()).await.unwrap();
    assert_eq!(store.get_room(&r).await.unwrap(), Some(record));
    let dup = store
        .create_room(RoomRecord::new(
            r.clone(),
            user("@bob:example.org"),
            false,
            6,
        ))
        .await;
    assert!(matches!(dup, Err(StoreError::RoomExists)), "{dup:?}");
    assert_eq!(
        store.get_room(&r).await.unwrap().map(|r| r.creator),
        Some(user("@alice:example.org"))
    );
}

fn state_event(id: &str, ty: &str, key: &str, sender: &UserId, content: &str) -> StoredEvent {
    StoredEvent::new(id, ty, sender.clone(), 100, content).with_state_key(key)
}

/// Events: orderings, current state, pagination, atomicity of an update.
pub async fn events_and_state<S: PresenceStore>(store: &S) {
    let alice = user("@alice:example.org");
    let r = room("!r1:example.org");
    let other = room("!r2:example.org");

    let missing = store
        .append_events(
            &r,
            vec![StoredEvent::new(
                "$x",
                "m.room.message",
                alice.clone(),
                1,
                "{}",
            )],
        )
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");

    store
        .create_room(RoomRecord::new(r.clone(), alice.clone(), false, 1))
        .await
        .unwrap();
    store
        .create_room(RoomRecord::new(other.clone(), alice.clone(), false, 1))
        .await
        .unwrap();

    let first = store
        .append_events(
            &r,
            vec![
                state_event("$create", "m.room.create", "", &alice, r#"{"creator":"a"}"#),
                state_event("$name1", "m.room.name", "", &alice, r#"{"name":"one"}"#),
                StoredEvent::new(
                    "$msg1",
                    "m.room.message",
                    alice.clone(),
                    7,
                    r#"{"body":"hi"}"#,
                ),
            ],
        )
        .await
        .unwrap();
    assert_eq!(first.len(), 3);
    assert!(first.windows(2).all(|w| w[0] < w[1]), "{first:?}");
    assert!(first[0] > 0);

    let in_other = store
        .append_events(
            &other,
            vec![state_event(
                "$o1",
                "m.room.name",
                "",
                &alice,
                r#"{"name":"other"}"#,
            )],
        )
        .await
        .unwrap();
    let second = store
        .append_events(
            &r,
            vec![state_event(
                "$name2",
                "m.room.name",
                "",
                &alice,
                r#"{"name":"two"}"#,
            )],
        )
        .await
        .unwrap();
    assert!(in_other[0] > first[2] && second[0] > in_other[0]);

    // Current state: the latest event per (type, state_key), of this room only.
    let state = store.room_state(&r).await.unwrap();
    let ids: Vec<_> = state.iter().map(|e| e.event.event_id.as_str()).collect();
    assert_eq!(ids, ["$create", "$name2"]);
    assert_eq!(state[1].stream_ordering, second[0]);
    assert_eq!(state[1].event.content_json, r#"{"name":"two"}"#);
    assert_eq!(state[1].event.state_key.as_deref(), Some(""));

    // Pagination: strictly after the given ordering, oldest first, limited.
    let page = store.events_since(&r, 0, 2).await.unwrap();
    let ids: Vec<_> = page.iter().map(|e| e.event.event_id.as_str()).collect();
    assert_eq!(ids, ["$create", "$name1"]);
    let page = store
        .events_since(&r, page[1].stream_ordering, 10)
        .await
        .unwrap();
    let ids: Vec<_> = page.iter().map(|e| e.event.event_id.as_str()).collect();
    assert_eq!(ids, ["$msg1", "$name2"]);
    let msg = &page[0].event;
    assert_eq!(msg.state_key, None);
    assert_eq!(msg.origin_server_ts, 7);
    assert_eq!(msg.sender, alice);
    assert!(
        store
            .events_since(&r, second[0], 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .events_since(&r, u64::MAX, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // A duplicate event ID fails the whole update: nothing of it is stored.
    let dup = store
        .apply_room_update(
            &r,
            RoomUpdate::new(
                vec![
                    state_event("$name3", "m.room.name", "", &alice, r#"{"name":"three"}"#),
                    StoredEvent::new("$msg1", "m.room.message", alice.clone(), 8, "{}"),
                ],
                vec![MembershipChange::new(alice.clone(), Membership::Join, 9)],
            ),
        )
        .await;
    assert!(matches!(dup, Err(StoreError::EventExists)), "{dup:?}");
    let ids: Vec<_> = store
        .room_state(&r)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event.event_id)
        .collect();
    assert_eq!(ids, ["$create", "$name2"]);
    assert_eq!(store.events_since(&r, second[0], 10).await.unwrap(), []);
    assert_eq!(store.membership(&r, &alice).await.unwrap(), None);
}

/// Memberships: set, read per room and per user, the startup scan, atomic updates.
pub async fn memberships<S: PresenceStore>(store: &S) {
    let alice = user("@alice:example.org");
    let bob = user("@bob:example.org");
    let carol = user("@carol:remote.example");
    let r1 = room("!r1:example.org");
    let r2 = room("!r2:example.org");
    let missing = room("!nope:example.org");

    let none = store
        .set_membership(
            &missing,
            MembershipChange::new(alice.clone(), Membership::Join, 1),
        )
        .await;
    assert!(matches!(none, Err(StoreError::NotFound)), "{none:?}");

    for r in [&r1, &r2] {
        store
            .create_room(RoomRecord::new(r.clone(), alice.clone(), false, 1))
            .await
            .unwrap();
    }
    assert_eq!(store.all_joined_memberships().await.unwrap(), []);

    // Events and memberships in one update.
    let orderings = store
        .apply_room_update(
            &r1,
            RoomUpdate::new(
                vec![
                    state_event(
                        "$j1",
                        "m.room.member",
                        alice.as_str(),
                        &alice,
                        r#"{"membership":"join"}"#,
                    ),
                    state_event(
                        "$j2",
                        "m.room.member",
                        carol.as_str(),
                        &carol,
                        r#"{"membership":"join"}"#,
                    ),
                ],
                vec![
                    MembershipChange::new(alice.clone(), Membership::Join, 2).with_event_id("$j1"),
                    MembershipChange::new(carol.clone(), Membership::Join, 2).with_event_id("$j2"),
                ],
            ),
        )
        .await
        .unwrap();
    assert_eq!(orderings.len(), 2);
    store
        .set_membership(
            &r1,
            MembershipChange::new(bob.clone(), Membership::Invite, 3),
        )
        .await
        .unwrap();
    store
        .set_membership(&r2, MembershipChange::new(bob.clone(), Membership::Join, 4))
        .await
        .unwrap();
    store
        .set_membership(
            &r2,
            MembershipChange::new(alice.clone(), Membership::Join, 4),
        )
        .await
        .unwrap();

    assert_eq!(
        store.membership(&r1, &alice).await.unwrap(),
        Some(Membership::Join)
    );
    assert_eq!(
        store.membership(&r1, &bob).await.unwrap(),
        Some(Membership::Invite)
    );
    assert_eq!(store.membership(&missing, &bob).await.unwrap(), None);
    assert_eq!(
        store.room_members(&r1).await.unwrap(),
        [
            (alice.clone(), Membership::Join),
            (bob.clone(), Membership::Invite),
            (carol.clone(), Membership::Join),
        ]
    );
    assert_eq!(
        store.rooms_of(&bob).await.unwrap(),
        [
            (r1.clone(), Membership::Invite),
            (r2.clone(), Membership::Join)
        ]
    );

    // Leaving keeps the row but drops the pair from the joined scan.
    store
        .set_membership(
            &r2,
            MembershipChange::new(alice.clone(), Membership::Leave, 5),
        )
        .await
        .unwrap();
    assert_eq!(
        store.membership(&r2, &alice).await.unwrap(),
        Some(Membership::Leave)
    );
    assert_eq!(
        store.rooms_of(&alice).await.unwrap(),
        [
            (r1.clone(), Membership::Join),
            (r2.clone(), Membership::Leave)
        ]
    );

    let joined = store.all_joined_memberships().await.unwrap();
    assert_eq!(
        sorted(joined.clone()),
        [
            (r1.clone(), alice.clone()),
            (r1.clone(), carol.clone()),
            (r2.clone(), bob.clone()),
        ]
    );
    // Grouped by room: once a room's run ends it never comes back.
    let mut seen = BTreeSet::new();
    let mut last: Option<&RoomId> = None;
    for (r, _) in &joined {
        if last != Some(r) {
            assert!(
                seen.insert(r.clone()),
                "room {r} is not contiguous in {joined:?}"
            );
            last = Some(r);
        }
    }
}

/// Presence: every field round-trips, one row per user, no moving backwards.
pub async fn presence_round_trip<S: PresenceStore>(store: &S) {
    assert_eq!(store.max_presence_stream_id().await.unwrap(), 0);
    assert!(store.load_presence().await.unwrap().is_empty());

    let mut busy = presence("@b:example.org", PresenceState::Busy, 20);
    busy.status_msg = None;
    let written = vec![
        (1, presence("@a:example.org", PresenceState::Online, 10)),
        (2, busy),
        (
            3,
            presence("@c:remote.example", PresenceState::Unavailable, 30),
        ),
        (4, UserPresenceState::offline(user("@d:example.org"))),
    ];
    store.persist_presence(written.clone()).await.unwrap();
    assert_eq!(
        sorted_presence(store.load_presence().await.unwrap()),
        sorted_presence(written.clone())
    );
    assert_eq!(store.max_presence_stream_id().await.unwrap(), 4);

    // A newer state replaces the row; an older one arriving late does not.
    let newer = presence("@a:example.org", PresenceState::Unavailable, 50);
    store
        .persist_presence(vec![(7, newer.clone())])
        .await
        .unwrap();
    let stale = presence("@a:example.org", PresenceState::Offline, 60);
    store.persist_presence(vec![(5, stale)]).await.unwrap();
    let loaded = store.load_presence().await.unwrap();
    assert_eq!(loaded.len(), 4);
    assert!(loaded.contains(&(7, newer)), "{loaded:?}");
    assert_eq!(store.max_presence_stream_id().await.unwrap(), 7);

    // Within one call the later entry for a user wins.
    let first = presence("@e:example.org", PresenceState::Online, 70);
    let second = presence("@e:example.org", PresenceState::Unavailable, 71);
    store
        .persist_presence(vec![(8, first), (8, second.clone())])
        .await
        .unwrap();
    let loaded = store.load_presence().await.unwrap();
    assert!(loaded.contains(&(8, second)), "{loaded:?}");
}

fn sorted_presence(
    mut v: Vec<(StreamId, UserPresenceState)>,
) -> Vec<(StreamId, UserPresenceState)> {
    v.sort_by(|a, b| a.1.user_id.cmp(&b.1.user_id));
    v
}

/// Presence in bulk: large batches with repeated users keep exactly the latest per user.
pub async fn presence_bulk<S: PresenceStore>(store: &S) {
    const USERS: u64 = 150;
    let states = [
        PresenceState::Online,
        PresenceState::Unavailable,
        PresenceState::Offline,
    ];
    let mut expected = std::collections::BTreeMap::new();
    let mut stream_id = 0;
    for round in 0..3u64 {
        // Odd sizes, so backends that chunk writes see full chunks and a remainder.
        let mut batch = Vec::new();
        for u in 0..(USERS - round * 7) {
            stream_id += 1;
            let s = presence(
                &format!("@u{u}:example.org"),
                states[((u + round) % 3) as usize],
                1_000 * round + u,
            );
            expected.insert(s.user_id.clone(), (stream_id, s.clone()));
            batch.push((stream_id, s));
        }
        store.persist_presence(batch).await.unwrap();
    }
    let loaded = sorted_presence(store.load_presence().await.unwrap());
    let expected: Vec<_> = expected.into_values().collect();
    assert_eq!(loaded, sorted_presence(expected));
    assert_eq!(store.max_presence_stream_id().await.unwrap(), stream_id);
}

/// "Send full presence" targets: set, raise, clear only what was delivered.
pub async fn full_presence_targets<S: PresenceStore>(store: &S) {
    let a = user("@a:example.org");
    let b = user("@b:example.org");
    assert!(store.load_full_presence_targets().await.unwrap().is_empty());
    store
        .set_full_presence_targets(vec![a.clone(), b.clone()], 10)
        .await
        .unwrap();
    store
        .set_full_presence_targets(vec![a.clone()], 20)
        .await
        .unwrap();
    assert_eq!(
        store.load_full_presence_targets().await.unwrap(),
        [(a.clone(), 20), (b.clone(), 10)]
    );
    // A snapshot delivered as of 15 does not satisfy the request made at 20.
    assert!(!store.delete_full_presence_target(&a, 15).await.unwrap());
    assert!(store.delete_full_presence_target(&b, 15).await.unwrap());
    assert_eq!(
        store.load_full_presence_targets().await.unwrap(),
        [(a.clone(), 20)]
    );
    assert!(store.delete_full_presence_target(&a, 20).await.unwrap());
    assert!(store.load_full_presence_targets().await.unwrap().is_empty());
    assert!(!store.delete_full_presence_target(&a, 99).await.unwrap());
}

/// Stream positions for `/sync`: the global maximum, a room's latest events up to a
/// position, and a user's rooms with the positions of their membership events.
pub async fn event_positions<S: PresenceStore>(store: &S) {
    let alice = user("@alice:example.org");
    let bob = user("@bob:example.org");
    let r = room("!r1:example.org");
    let other = room("!r2:example.org");
    assert_eq!(store.max_stream_ordering().await.unwrap(), 0);
    assert!(store.user_rooms(&alice).await.unwrap().is_empty());
    for id in [&r, &other] {
        store
            .create_room(RoomRecord::new(id.clone(), alice.clone(), false, 1))
            .await
            .unwrap();
    }
    let join = store
        .apply_room_update(
            &r,
            RoomUpdate::new(
                vec![state_event(
                    "$join",
                    "m.room.member",
                    alice.as_str(),
                    &alice,
                    r#"{"membership":"join"}"#,
                )],
                vec![
                    MembershipChange::new(alice.clone(), Membership::Join, 2)
                        .with_event_id("$join"),
                ],
            ),
        )
        .await
        .unwrap();
    let mut messages = Vec::new();
    for i in 0..5 {
        let ev = StoredEvent::new(format!("$m{i}"), "m.room.message", alice.clone(), 3, "{}");
        messages.extend(store.append_events(&r, vec![ev]).await.unwrap());
    }
    let elsewhere = store
        .append_events(
            &other,
            vec![StoredEvent::new(
                "$o",
                "m.room.message",
                bob.clone(),
                3,
                "{}",
            )],
        )
        .await
        .unwrap();
    // Bob's membership of the other room has no event.
    store
        .set_membership(
            &other,
            MembershipChange::new(bob.clone(), Membership::Invite, 4),
        )
        .await
        .unwrap();
    assert_eq!(store.max_stream_ordering().await.unwrap(), elsewhere[0]);

    let ids = |events: Vec<crate::OrderedEvent>| -> Vec<String> {
        events.into_iter().map(|e| e.event.event_id).collect()
    };
    let latest = store.recent_events(&r, u64::MAX, 3).await.unwrap();
    assert_eq!(
        ids(latest),
        ["$m2", "$m3", "$m4"],
        "latest three, oldest first"
    );
    let bounded = store.recent_events(&r, messages[1], 2).await.unwrap();
    assert_eq!(ids(bounded), ["$m0", "$m1"], "nothing after the bound");
    let all = store.recent_events(&r, messages[4], 100).await.unwrap();
    assert_eq!(all.len(), 6);
    assert_eq!(all[0].stream_ordering, join[0]);
    assert!(store.recent_events(&r, 0, 10).await.unwrap().is_empty());

    let rooms = store.user_rooms(&alice).await.unwrap();
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0].room_id, r);
    assert_eq!(rooms[0].membership, Membership::Join);
    assert_eq!(rooms[0].membership_ordering, Some(join[0]));
    assert_eq!(rooms[0].latest_ordering, messages[4]);
    let rooms = store.user_rooms(&bob).await.unwrap();
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0].room_id, other);
    assert_eq!(rooms[0].membership, Membership::Invite);
    assert_eq!(rooms[0].membership_ordering, None);
    assert_eq!(rooms[0].latest_ordering, elsewhere[0]);
}

/// Room aliases: taken once, scoped to existing rooms.
pub async fn room_aliases<S: PresenceStore>(store: &S) {
    let alice = user("@alice:example.org");
    let r = room("!r1:example.org");
    let other = room("!r2:example.org");
    let missing = store
        .create_room_alias("#lobby:example.org", &r, &alice, 1)
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
    for id in [&r, &other] {
        store
            .create_room(RoomRecord::new(id.clone(), alice.clone(), true, 1))
            .await
            .unwrap();
    }
    assert_eq!(
        store
            .resolve_room_alias("#lobby:example.org")
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .create_room_alias("#lobby:example.org", &r, &alice, 2)
            .await
            .unwrap()
    );
    assert!(
        !store
            .create_room_alias("#lobby:example.org", &other, &alice, 3)
            .await
            .unwrap(),
        "an alias is taken once"
    );
    assert!(
        store
            .create_room_alias("#other:example.org", &other, &alice, 4)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .resolve_room_alias("#lobby:example.org")
            .await
            .unwrap(),
        Some(r)
    );
    assert_eq!(
        store
            .resolve_room_alias("#other:example.org")
            .await
            .unwrap(),
        Some(other)
    );
    assert_eq!(
        store
            .resolve_room_alias("#LOBBY:example.org")
            .await
            .unwrap(),
        None
    );
}

/// Account data: global and per-room entries are apart, a write replaces and moves the entry
/// to the end of the stream, `since` returns what changed after a position, and entries of
/// one type are listed across users.
pub async fn account_data<S: PresenceStore>(store: &S) {
    let alice = user("@alice:example.org");
    let bob = user("@bob:example.org");
    let room = RoomId::parse("!r:example.org").unwrap();
    let orphan = store
        .put_account_data(&alice, None, "m.direct", "{}".to_owned())
        .await;
    assert!(matches!(orphan, Err(StoreError::NotFound)), "{orphan:?}");
    assert_eq!(store.max_account_data_stream_id().await.unwrap(), 0);
    for u in [&alice, &bob] {
        store.create_user(NewUser::new(u.clone(), 1)).await.unwrap();
    }
    let p1 = store
        .put_account_data(
            &alice,
            None,
            "m.direct",
            r#"{"@bob:example.org":["!r:example.org"]}"#.to_owned(),
        )
        .await
        .unwrap();
    let p2 = store
        .put_account_data(&alice, Some(&room), "m.tag", r#"{"tags":{}}"#.to_owned())
        .await
        .unwrap();
    let p3 = store
        .put_account_data(&bob, None, "m.direct", "{}".to_owned())
        .await
        .unwrap();
    assert!(p1 < p2 && p2 < p3, "{p1} {p2} {p3}");
    assert_eq!(store.max_account_data_stream_id().await.unwrap(), p3);
    assert_eq!(
        store
            .get_account_data(&alice, None, "m.direct")
            .await
            .unwrap()
            .as_deref(),
        Some(r#"{"@bob:example.org":["!r:example.org"]}"#)
    );
    assert_eq!(
        store.get_account_data(&alice, None, "m.tag").await.unwrap(),
        None
    );
    assert_eq!(
        store
            .get_account_data(&alice, Some(&room), "m.tag")
            .await
            .unwrap()
            .as_deref(),
        Some(r#"{"tags":{}}"#)
    );
    let all = store.account_data_since(&alice, None).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!((all[0].room_id.as_ref(), all[0].stream_id), (None, p1));
    assert_eq!(
        (all[1].room_id.as_ref(), all[1].stream_id),
        (Some(&room), p2)
    );
    // A rewrite replaces the entry and moves it past everything else.
    let p4 = store
        .put_account_data(&alice, None, "m.direct", "{}".to_owned())
        .await
        .unwrap();
    assert!(p4 > p3);
    let since = store.account_data_since(&alice, Some(p2)).await.unwrap();
    assert_eq!(since.len(), 1);
    assert_eq!(
        (
            since[0].data_type.as_str(),
            since[0].content.as_str(),
            since[0].stream_id
        ),
        ("m.direct", "{}", p4)
    );
    assert!(
        store
            .account_data_since(&alice, Some(p4))
            .await
            .unwrap()
            .is_empty()
    );
    let direct = store.account_data_of_type("m.direct").await.unwrap();
    let owners: Vec<&str> = direct.iter().map(|e| e.user_id.as_str()).collect();
    assert_eq!(owners, ["@bob:example.org", "@alice:example.org"]);
}

/// Client filters: IDs unique per user, lookups scoped to the owner.
pub async fn filters<S: PresenceStore>(store: &S) {
    let alice = user("@alice:example.org");
    let bob = user("@bob:example.org");
    let orphan = store.create_filter(&alice, "{}".to_owned()).await;
    assert!(matches!(orphan, Err(StoreError::NotFound)), "{orphan:?}");
    for u in [&alice, &bob] {
        store.create_user(NewUser::new(u.clone(), 1)).await.unwrap();
    }
    let f1 = store
        .create_filter(&alice, r#"{"room":{"timeline":{"limit":5}}}"#.to_owned())
        .await
        .unwrap();
    let f2 = store
        .create_filter(&alice, r#"{"presence":{"not_types":["*"]}}"#.to_owned())
        .await
        .unwrap();
    assert_ne!(f1, f2);
    assert_eq!(
        store.get_filter(&alice, &f1).await.unwrap().as_deref(),
        Some(r#"{"room":{"timeline":{"limit":5}}}"#)
    );
    assert_eq!(
        store.get_filter(&alice, &f2).await.unwrap().as_deref(),
        Some(r#"{"presence":{"not_types":["*"]}}"#)
    );
    assert_eq!(store.get_filter(&bob, &f1).await.unwrap(), None);
    for junk in ["", "abc", "-1", "99999999999999999999999", " 0"] {
        assert_eq!(
            store.get_filter(&alice, junk).await.unwrap(),
            None,
            "{junk:?}"
        );
    }
}

/// The key/value table.
pub async fn meta<S: PresenceStore>(store: &S) {
    assert_eq!(store.get_meta("stream.presence").await.unwrap(), None);
    store.set_meta("stream.presence", "41").await.unwrap();
    store.set_meta("stream.presence", "42").await.unwrap();
    store.set_meta("server_name", "example.org").await.unwrap();
    assert_eq!(
        store.get_meta("stream.presence").await.unwrap().as_deref(),
        Some("42")
    );
    assert_eq!(
        store.get_meta("server_name").await.unwrap().as_deref(),
        Some("example.org")
    );
}

/// Many concurrent writers: every acknowledged write is visible afterwards.
pub async fn concurrent_writes<S: PresenceStore>(store: &S) {
    const WRITERS: u64 = 500;
    let mut tasks = JoinSet::new();
    for i in 1..=WRITERS {
        let store = store.clone();
        tasks.spawn(async move {
            let s = presence(&format!("@w{i}:example.org"), PresenceState::Online, i);
            store.persist_presence(vec![(i, s)]).await
        });
    }
    let mut acknowledged = 0;
    while let Some(result) = tasks.join_next().await {
        match result.expect("task ran") {
            Ok(()) => acknowledged += 1,
            // A backend may shed load; what it refused is simply not there.
            Err(StoreError::Overloaded) => {}
            Err(e) => panic!("write failed: {e:?}"),
        }
    }
    assert!(acknowledged > 0);
    assert_eq!(store.load_presence().await.unwrap().len(), acknowledged);
}

/// A write that fails does not affect the writes around it.
pub async fn failed_write_is_isolated<S: PresenceStore>(store: &S) {
    store
        .create_user(NewUser::new(user("@taken:example.org"), 1))
        .await
        .unwrap();
    let mut tasks = JoinSet::new();
    for i in 0..50u64 {
        let store = store.clone();
        tasks.spawn(async move {
            let name = if i % 10 == 0 {
                "@taken:example.org".to_owned()
            } else {
                format!("@n{i}:example.org")
            };
            (i, store.create_user(NewUser::new(user(&name), i)).await)
        });
    }
    while let Some(result) = tasks.join_next().await {
        let (i, outcome) = result.expect("task ran");
        if i % 10 == 0 {
            assert!(
                matches!(outcome, Err(StoreError::UserExists)),
                "{i}: {outcome:?}"
            );
        } else {
            assert!(outcome.is_ok(), "{i}: {outcome:?}");
        }
    }
    assert_eq!(store.count_users().await.unwrap(), 1 + 45);
}

/// After `close`, every call fails with [`StoreError::Closed`]; closing again is fine.
pub async fn closed_store_refuses<S: PresenceStore>(store: &S) {
    store.set_meta("k", "v").await.unwrap();
    store.close().await.unwrap();
    store.close().await.unwrap();
    let w = store.set_meta("k", "w").await;
    assert!(matches!(w, Err(StoreError::Closed)), "{w:?}");
    let r = store.get_meta("k").await;
    assert!(matches!(r, Err(StoreError::Closed)), "{r:?}");
}

/// Generates the conformance tests for a backend.
///
/// Takes the path of an async factory function returning `(store, guard)`: a fresh, empty
/// store, and a value kept alive until the test ends (a temporary directory, a database
/// handle). Each check becomes one `#[tokio::test]` in a module named `store_conformance`, so
/// the invoking crate needs `tokio` (features `macros`, `rt-multi-thread`) as a
/// dev-dependency. The store is closed after each check.
///
/// ```ignore
/// async fn sqlite_store() -> (SqliteStore, tempfile::TempDir) { ... }
/// presence_store::store_conformance!(sqlite_store);
/// ```
#[macro_export]
macro_rules! store_conformance {
    ($factory:path) => {
        $crate::store_conformance!(@tests $factory;
            users_round_trip,
            devices_and_tokens,
            rooms_round_trip,
            events_and_state,
            memberships,
            presence_round_trip,
            presence_bulk,
            full_presence_targets,
            event_positions,
            room_aliases,
            filters,
            account_data,
            meta,
            concurrent_writes,
            failed_write_is_isolated,
            closed_store_refuses,
        );
    };
    (@tests $factory:path; $($check:ident),* $(,)?) => {
        mod store_conformance {
            #[allow(unused_imports)]
            use super::*;

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let (store, _guard) = $factory().await;
                    $crate::conformance::$check(&store).await;
                    $crate::PresenceStore::close(&store)
                        .await
                        .expect("store closes cleanly");
                }
            )*
        }
    };
}
