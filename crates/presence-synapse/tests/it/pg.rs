//! `SynapseDb` against a real PostgreSQL holding the fixture schema.

use std::sync::Arc;

use presence_router::{PresenceState, UserId, UserPresenceState};
use presence_synapse::{Error, PgSettings, SslMode, SynapseDb, TESTED_SCHEMA_VERSION, TokenLookup};

use crate::support::TestDb;

const INSTANCE: &str = "presenced";

fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

fn state(u: &str, st: PresenceState, t: u64, msg: Option<&str>) -> UserPresenceState {
    UserPresenceState {
        user_id: user(u),
        state: st,
        last_active_ts: t,
        last_federation_update_ts: t + 1,
        last_user_sync_ts: t + 2,
        status_msg: msg.map(Arc::from),
        currently_active: st == PresenceState::Online,
    }
}

async fn stream_position(t: &TestDb, instance: &str) -> Option<i64> {
    t.sql
        .query_opt(
            "SELECT stream_id FROM stream_positions WHERE stream_name = 'presence_stream' AND instance_name = $1",
            &[&instance],
        )
        .await
        .unwrap()
        .map(|r| r.get(0))
}

#[tokio::test]
async fn schema_version_is_read() {
    let t = TestDb::new().await;
    assert_eq!(t.db.schema_version().await.unwrap(), TESTED_SCHEMA_VERSION);
    t.finish().await;
}

#[tokio::test]
async fn position_comes_from_the_sequence() {
    let t = TestDb::new().await;
    // A sequence nothing was drawn from: last_value 1 but is_called false.
    assert_eq!(t.db.current_presence_position().await.unwrap(), 0);
    // Synapse's full schema ends with setval('presence_stream_sequence', 1, true).
    t.sql
        .batch_execute("SELECT setval('presence_stream_sequence', 1, true)")
        .await
        .unwrap();
    assert_eq!(t.db.current_presence_position().await.unwrap(), 1);
    let written =
        t.db.persist_presence(
            INSTANCE,
            &[
                state("@a:test.local", PresenceState::Online, 10, None),
                state("@b:test.local", PresenceState::Online, 10, None),
            ],
        )
        .await
        .unwrap();
    assert_eq!(written.iter().map(|w| w.0).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(t.db.current_presence_position().await.unwrap(), 3);
    // An ID allocated and never used (a failed write) still counts: the position is what
    // was allocated, as Synapse's writer takes it.
    t.sql
        .batch_execute("SELECT nextval('presence_stream_sequence')")
        .await
        .unwrap();
    assert_eq!(t.db.current_presence_position().await.unwrap(), 4);
    t.finish().await;
}

#[tokio::test]
async fn persist_then_reload_round_trips() {
    let t = TestDb::new().await;
    let states = vec![
        state(
            "@alice:test.local",
            PresenceState::Online,
            1_796_302_663_882,
            Some("hello there"),
        ),
        state(
            "@bob:test.local",
            PresenceState::Offline,
            1_796_302_663_779,
            None,
        ),
        state(
            "@carol:test.local",
            PresenceState::Busy,
            5,
            Some("caf\u{e9} \u{1F600}"),
        ),
        state("@dave:remote.example", PresenceState::Unavailable, 7, None),
    ];
    let written = t.db.persist_presence(INSTANCE, &states).await.unwrap();
    assert_eq!(written.len(), 4);
    assert_eq!(
        written.iter().map(|w| w.1.clone()).collect::<Vec<_>>(),
        states
    );
    let ids: Vec<u64> = written.iter().map(|w| w.0).collect();
    assert_eq!(ids, [1, 2, 3, 4], "IDs are contiguous and in batch order");

    let loaded = t.db.load_presence().await.unwrap();
    assert_eq!(loaded, written);
    let non_offline = t.db.load_non_offline_presence().await.unwrap();
    assert_eq!(
        non_offline
            .iter()
            .map(|(_, s)| s.user_id.as_str())
            .collect::<Vec<_>>(),
        [
            "@alice:test.local",
            "@carol:test.local",
            "@dave:remote.example"
        ]
    );
    let instances: Vec<String> = t
        .sql
        .query("SELECT DISTINCT instance_name FROM presence_stream", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(instances, [INSTANCE]);
    let busy: String = t
        .sql
        .query_one(
            "SELECT state FROM presence_stream WHERE user_id = '@carol:test.local'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(busy, "org.matrix.msc3026.busy");
    assert!(
        t.db.persist_presence(INSTANCE, &[])
            .await
            .unwrap()
            .is_empty()
    );
    t.finish().await;
}

#[tokio::test]
async fn one_row_per_user_after_repeated_writes() {
    let t = TestDb::new().await;
    for i in 0..3 {
        t.db.persist_presence(
            INSTANCE,
            &[
                state("@alice:test.local", PresenceState::Online, 100 + i, None),
                state("@bob:test.local", PresenceState::Online, 100 + i, None),
            ],
        )
        .await
        .unwrap();
    }
    // Several states for one user in one batch: the last is kept.
    let written =
        t.db.persist_presence(
            INSTANCE,
            &[
                state(
                    "@alice:test.local",
                    PresenceState::Online,
                    200,
                    Some("first"),
                ),
                state("@bob:test.local", PresenceState::Unavailable, 200, None),
                state(
                    "@alice:test.local",
                    PresenceState::Offline,
                    201,
                    Some("last"),
                ),
            ],
        )
        .await
        .unwrap();
    assert_eq!(written.len(), 2);
    assert_eq!(written[0].1.user_id.as_str(), "@bob:test.local");
    assert_eq!(written[1].1.status_msg.as_deref(), Some("last"));
    let counts: Vec<(String, i64)> = t
        .sql
        .query(
            "SELECT user_id, count(*) FROM presence_stream GROUP BY user_id ORDER BY user_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        counts,
        [
            ("@alice:test.local".to_owned(), 1),
            ("@bob:test.local".to_owned(), 1)
        ]
    );
    let loaded = t.db.load_presence().await.unwrap();
    assert_eq!(loaded, written);

    // Concurrent writers for the same users still leave one row each, and every ID is new.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let db = t.db.clone();
        tasks.push(tokio::spawn(async move {
            db.persist_presence(
                INSTANCE,
                &[
                    state("@alice:test.local", PresenceState::Online, 300 + i, None),
                    state("@bob:test.local", PresenceState::Online, 300 + i, None),
                ],
            )
            .await
            .unwrap()
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.extend(task.await.unwrap().into_iter().map(|w| w.0));
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 16);
    let rows: i64 = t
        .sql
        .query_one("SELECT count(*) FROM presence_stream", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 2);
    let max = *ids.last().unwrap();
    assert_eq!(stream_position(&t, INSTANCE).await, Some(max as i64));
    let loaded_max =
        t.db.load_presence()
            .await
            .unwrap()
            .iter()
            .map(|w| w.0)
            .max();
    assert_eq!(loaded_max, Some(max));
    t.finish().await;
}

#[tokio::test]
async fn stream_positions_only_increase() {
    let t = TestDb::new().await;
    assert_eq!(stream_position(&t, INSTANCE).await, None);
    t.db.persist_presence(
        INSTANCE,
        &[state("@a:test.local", PresenceState::Online, 1, None)],
    )
    .await
    .unwrap();
    assert_eq!(stream_position(&t, INSTANCE).await, Some(1));
    t.db.persist_presence(
        INSTANCE,
        &[
            state("@a:test.local", PresenceState::Online, 2, None),
            state("@b:test.local", PresenceState::Online, 2, None),
        ],
    )
    .await
    .unwrap();
    assert_eq!(stream_position(&t, INSTANCE).await, Some(3));
    // A position above ours (say, restored from elsewhere) is never lowered.
    t.sql
        .batch_execute(
            "UPDATE stream_positions SET stream_id = 1000 WHERE instance_name = 'presenced'",
        )
        .await
        .unwrap();
    t.db.persist_presence(
        INSTANCE,
        &[state("@a:test.local", PresenceState::Offline, 3, None)],
    )
    .await
    .unwrap();
    assert_eq!(stream_position(&t, INSTANCE).await, Some(1000));
    // Another instance name gets its own row.
    t.db.persist_presence(
        "other",
        &[state("@c:test.local", PresenceState::Online, 4, None)],
    )
    .await
    .unwrap();
    assert_eq!(stream_position(&t, "other").await, Some(5));
    assert_eq!(stream_position(&t, INSTANCE).await, Some(1000));
    t.finish().await;
}

#[tokio::test]
async fn updates_are_paged_like_synapse() {
    let t = TestDb::new().await;
    for i in 1..=5u64 {
        t.db.persist_presence(
            INSTANCE,
            &[state(
                &format!("@u{i}:test.local"),
                PresenceState::Online,
                i,
                None,
            )],
        )
        .await
        .unwrap();
    }
    let page = t.db.presence_updates(0, 5, 2).await.unwrap();
    assert_eq!(page.updates.iter().map(|u| u.0).collect::<Vec<_>>(), [1, 2]);
    assert!(page.limited);
    assert_eq!(page.upto_token, 2);
    assert_eq!(page.updates[0].1.user_id.as_str(), "@u1:test.local");
    let page = t.db.presence_updates(2, 5, 2).await.unwrap();
    assert_eq!(page.updates.iter().map(|u| u.0).collect::<Vec<_>>(), [3, 4]);
    assert!(page.limited);
    assert_eq!(page.upto_token, 4);
    let page = t.db.presence_updates(4, 5, 2).await.unwrap();
    assert_eq!(page.updates.iter().map(|u| u.0).collect::<Vec<_>>(), [5]);
    assert!(!page.limited);
    assert_eq!(page.upto_token, 5);
    // The range excludes `from` and includes `upto`; past the end, `upto` is echoed.
    let page = t.db.presence_updates(1, 3, 100).await.unwrap();
    assert_eq!(page.updates.iter().map(|u| u.0).collect::<Vec<_>>(), [2, 3]);
    let page = t.db.presence_updates(5, 10, 100).await.unwrap();
    assert!(page.updates.is_empty() && !page.limited);
    assert_eq!(page.upto_token, 10);
    let page = t.db.presence_updates(3, 3, 100).await.unwrap();
    assert!(page.updates.is_empty());
    assert_eq!(page.upto_token, 3);
    // Rewriting a user removes its old row from the stream's history.
    t.db.persist_presence(
        INSTANCE,
        &[state("@u1:test.local", PresenceState::Offline, 9, None)],
    )
    .await
    .unwrap();
    let page = t.db.presence_updates(0, 6, 100).await.unwrap();
    assert_eq!(
        page.updates.iter().map(|u| u.0).collect::<Vec<_>>(),
        [2, 3, 4, 5, 6]
    );
    t.finish().await;
}

#[tokio::test]
async fn access_tokens_are_classified() {
    let t = TestDb::new().await;
    t.sql
        .batch_execute(
            "INSERT INTO users (name, admin, is_guest, deactivated) VALUES
                ('@alice:test.local', 0, 0, 0),
                ('@root:test.local', 1, 0, 0),
                ('@gone:test.local', 0, 0, 1),
                ('@guest:test.local', 0, 1, 0);
             INSERT INTO access_tokens (id, user_id, device_id, token, valid_until_ms, puppets_user_id) VALUES
                (1, '@alice:test.local', 'DEV_alice', 'tok_alice', NULL, NULL),
                (2, '@alice:test.local', 'DEV2', 'tok_alice_expiring', 2000, NULL),
                (3, '@gone:test.local', 'DEVG', 'tok_gone', NULL, NULL),
                (4, '@root:test.local', NULL, 'tok_puppet', NULL, '@alice:test.local'),
                (5, '@guest:test.local', 'G', 'tok_guest', NULL, NULL),
                (6, '@nobody:test.local', 'N', 'tok_orphan', NULL, NULL);",
        )
        .await
        .unwrap();
    let now = 1_000;
    let TokenLookup::Valid(info) = t.db.user_for_access_token("tok_alice", now).await.unwrap()
    else {
        panic!("tok_alice should be valid");
    };
    assert_eq!(info.user_id.as_str(), "@alice:test.local");
    assert_eq!(info.device_id.unwrap().as_str(), "DEV_alice");
    assert!(!info.admin && !info.is_guest && !info.locked);
    assert_eq!(info.token_id, 1);

    assert_eq!(
        t.db.user_for_access_token("nope", now).await.unwrap(),
        TokenLookup::Unknown
    );
    assert_eq!(
        t.db.user_for_access_token("tok_orphan", now).await.unwrap(),
        TokenLookup::Unknown
    );
    assert!(matches!(
        t.db.user_for_access_token("tok_alice_expiring", now)
            .await
            .unwrap(),
        TokenLookup::Valid(_)
    ));
    let TokenLookup::Expired(info) =
        t.db.user_for_access_token("tok_alice_expiring", 2001)
            .await
            .unwrap()
    else {
        panic!("expired");
    };
    assert_eq!(info.valid_until_ms, Some(2000));
    assert!(matches!(
        t.db.user_for_access_token("tok_gone", now).await.unwrap(),
        TokenLookup::Deactivated(i) if i.user_id.as_str() == "@gone:test.local"
    ));
    let TokenLookup::Valid(puppet) = t.db.user_for_access_token("tok_puppet", now).await.unwrap()
    else {
        panic!("puppet");
    };
    assert_eq!(puppet.user_id.as_str(), "@alice:test.local");
    assert_eq!(puppet.token_owner.as_str(), "@root:test.local");
    assert_eq!(puppet.device_id, None);
    let TokenLookup::Valid(guest) = t.db.user_for_access_token("tok_guest", now).await.unwrap()
    else {
        panic!("guest");
    };
    assert!(guest.is_guest);
    t.finish().await;
}

#[tokio::test]
async fn membership_from_current_state() {
    let t = TestDb::new().await;
    t.sql
        .batch_execute(
            "INSERT INTO current_state_events (event_id, room_id, type, state_key, membership) VALUES
                ('$1', '!r1:test.local', 'm.room.member', '@alice:test.local', 'join'),
                ('$2', '!r1:test.local', 'm.room.member', '@bob:test.local', 'join'),
                ('$3', '!r1:test.local', 'm.room.member', '@carol:test.local', 'leave'),
                ('$4', '!r2:test.local', 'm.room.member', '@alice:test.local', 'join'),
                ('$5', '!r2:test.local', 'm.room.member', '@dave:remote.example', 'join'),
                ('$6', '!r2:test.local', 'm.room.member', '@erin:test.local', 'invite'),
                ('$7', '!r2:test.local', 'm.room.create', '', NULL),
                ('$8', '!v12hashonly', 'm.room.member', '@bob:test.local', 'join'),
                ('$9', '!r3:test.local', 'm.room.member', '@carol:test.local', 'ban');",
        )
        .await
        .unwrap();
    let all = t.db.joined_members_of_all_rooms().await.unwrap();
    let all: Vec<(&str, &str)> = all.iter().map(|(r, u)| (r.as_str(), u.as_str())).collect();
    assert_eq!(
        all,
        [
            ("!r1:test.local", "@alice:test.local"),
            ("!r1:test.local", "@bob:test.local"),
            ("!r2:test.local", "@alice:test.local"),
            ("!r2:test.local", "@dave:remote.example"),
            ("!v12hashonly", "@bob:test.local"),
        ]
    );
    assert_eq!(
        t.db.rooms_for_user(&user("@alice:test.local"))
            .await
            .unwrap(),
        ["!r1:test.local", "!r2:test.local"]
    );
    assert_eq!(
        t.db.rooms_for_user(&user("@bob:test.local")).await.unwrap(),
        ["!r1:test.local", "!v12hashonly"]
    );
    assert!(
        t.db.rooms_for_user(&user("@carol:test.local"))
            .await
            .unwrap()
            .is_empty()
    );
    let members = t.db.users_in_room("!r2:test.local").await.unwrap();
    assert_eq!(
        members.iter().map(UserId::as_str).collect::<Vec<_>>(),
        ["@alice:test.local", "@dave:remote.example"]
    );
    assert!(
        t.db.users_in_room("!none:test.local")
            .await
            .unwrap()
            .is_empty()
    );
    t.finish().await;
}

#[tokio::test]
async fn settings_refuse_missing_ca_and_bad_servers() {
    let t = TestDb::new().await;
    let mut s = t.settings.clone();
    // verify-full over TCP needs a CA to check against: named at connect, not at a query.
    s.host = presence_synapse::PgHost::Tcp("127.0.0.1".to_owned());
    s.ssl_mode = SslMode::VerifyFull;
    s.ssl_root_cert = Some("/nonexistent/root.crt".into());
    assert!(matches!(
        SynapseDb::connect(&s).await,
        Err(Error::Config { ref key, .. }) if key == "database.args.sslrootcert"
    ));
    let mut s: PgSettings = t.settings.clone();
    s.dbname = "presence_synapse_no_such_db".to_owned();
    assert!(SynapseDb::connect(&s).await.is_err());
    t.finish().await;
}
