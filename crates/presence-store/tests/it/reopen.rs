//! Everything written before `close` is there after reopening the same file.

use presence_router::PresenceState;
use presence_store::{
    Membership, MembershipChange, NewDevice, NewUser, PresenceStore, RoomRecord, RoomUpdate,
    SqliteConfig, SqliteStore, StoredEvent,
    conformance::{device, presence, room, user},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_after_close_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("presence.db");
    let alice = user("@alice:example.org");
    let r = room("!room:example.org");
    let states = vec![
        (
            3,
            presence("@alice:example.org", PresenceState::Online, 100),
        ),
        (4, presence("@bob:remote.example", PresenceState::Busy, 200)),
    ];

    let store = SqliteStore::open(SqliteConfig::new(&path)).await.unwrap();
    store
        .create_user(NewUser::new(alice.clone(), 1).with_password_hash("h"))
        .await
        .unwrap();
    store
        .create_device(NewDevice::new(alice.clone(), device("DEV"), 2), "tok")
        .await
        .unwrap();
    store
        .create_room(RoomRecord::new(r.clone(), alice.clone(), true, 3))
        .await
        .unwrap();
    let orderings = store
        .apply_room_update(
            &r,
            RoomUpdate::new(
                vec![
                    StoredEvent::new(
                        "$m",
                        "m.room.member",
                        alice.clone(),
                        4,
                        r#"{"membership":"join"}"#,
                    )
                    .with_state_key(alice.as_str()),
                ],
                vec![MembershipChange::new(alice.clone(), Membership::Join, 4).with_event_id("$m")],
            ),
        )
        .await
        .unwrap();
    store.persist_presence(states.clone()).await.unwrap();
    store
        .set_full_presence_targets(vec![alice.clone()], 4)
        .await
        .unwrap();
    let filter_id = store.create_filter(&alice, "{}".to_owned()).await.unwrap();
    store.set_meta("stream", "4").await.unwrap();
    store.close().await.unwrap();

    let store = SqliteStore::open(SqliteConfig::new(&path)).await.unwrap();
    let user_record = store.get_user(&alice).await.unwrap().unwrap();
    assert_eq!(user_record.password_hash.as_deref(), Some("h"));
    assert_eq!(
        store.resolve_token("tok").await.unwrap(),
        Some((alice.clone(), device("DEV")))
    );
    assert!(store.get_room(&r).await.unwrap().unwrap().is_public);
    let state = store.room_state(&r).await.unwrap();
    assert_eq!(state.len(), 1);
    assert_eq!(state[0].stream_ordering, orderings[0]);
    assert_eq!(
        store.all_joined_memberships().await.unwrap(),
        [(r.clone(), alice.clone())]
    );
    let mut loaded = store.load_presence().await.unwrap();
    loaded.sort_by_key(|(id, _)| *id);
    assert_eq!(loaded, states);
    assert_eq!(store.max_presence_stream_id().await.unwrap(), 4);
    assert_eq!(
        store.load_full_presence_targets().await.unwrap(),
        [(alice.clone(), 4)]
    );
    assert_eq!(
        store
            .get_filter(&alice, &filter_id)
            .await
            .unwrap()
            .as_deref(),
        Some("{}")
    );
    assert_eq!(
        store.get_meta("stream").await.unwrap().as_deref(),
        Some("4")
    );

    // New events continue the stream instead of reusing positions.
    let next = store
        .append_events(
            &r,
            vec![StoredEvent::new(
                "$n",
                "m.room.message",
                alice.clone(),
                5,
                "{}",
            )],
        )
        .await
        .unwrap();
    assert!(next[0] > orderings[0]);
    store.close().await.unwrap();
}
