//! Rooms over HTTP: presets, joins, invites, leaves, members, state, messages, the admin
//! membership API (real binary); and the `/sync` rooms section, read in-process from the
//! server's state after changes made over HTTP.

use std::time::{Duration, Instant};

use presence_router::UserId;
use presenced::{
    Config, Server,
    app::rooms::sync::{TIMELINE_LIMIT, has_news, rooms_section, rooms_stream_position},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    matrix::{Client, RequestBody, SHARED_SECRET, TestServer, User, q, test_config},
    support::Workspace,
};

const V3: &str = "/_matrix/client/v3";

async fn post(c: &Client, path: &str, user: &User, body: Value) -> (StatusCode, Value) {
    c.request(
        Method::POST,
        path,
        Some(&user.token),
        Some(RequestBody::Json(body)),
    )
    .await
}

async fn get(c: &Client, path: &str, user: &User) -> (StatusCode, Value) {
    c.request(Method::GET, path, Some(&user.token), None).await
}

fn errcode(body: &Value) -> &str {
    body["errcode"].as_str().unwrap_or("")
}

async fn create(c: &Client, user: &User, body: Value) -> String {
    let (status, data) = post(c, &format!("{V3}/createRoom"), user, body).await;
    assert_eq!(status, StatusCode::OK, "{data}");
    data["room_id"].as_str().unwrap().to_owned()
}

async fn members(c: &Client, user: &User, room: &str) -> (StatusCode, Value) {
    get(c, &format!("{V3}/rooms/{}/joined_members", q(room)), user).await
}

fn member_ids(data: &Value) -> Vec<String> {
    let mut ids: Vec<String> = data["joined"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    ids.sort();
    ids
}

async fn users(c: &Client, names: &[&str]) -> Vec<User> {
    let mut out = Vec::new();
    for n in names {
        out.push(c.register(n, &format!("pw-{n}"), false).await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_room_anyone_may_join() {
    let server = TestServer::start(Workspace::new(), &test_config("")).await;
    let c = server.client();
    let [alice, bob, carol] =
        <[User; 3]>::try_from(users(&c, &["alice", "bob", "carol"]).await).unwrap();
    let room = create(
        &c,
        &alice,
        json!({"preset": "public_chat", "name": "Lobby", "topic": "Hello", "room_alias_name": "lobby"}),
    )
    .await;
    assert!(room.starts_with('!') && room.ends_with(":test"), "{room}");

    // The state the preset produces.
    let (status, state) = get(&c, &format!("{V3}/rooms/{}/state", q(&room)), &alice).await;
    assert_eq!(status, StatusCode::OK);
    let find = |ty: &str| {
        state
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == ty)
            .unwrap_or_else(|| panic!("no {ty} in {state}"))
            .clone()
    };
    assert_eq!(find("m.room.create")["content"]["creator"], "@alice:test");
    assert_eq!(find("m.room.create")["room_id"], room.as_str());
    assert_eq!(find("m.room.join_rules")["content"]["join_rule"], "public");
    assert_eq!(
        find("m.room.power_levels")["content"]["users"]["@alice:test"],
        100
    );
    assert_eq!(find("m.room.name")["content"]["name"], "Lobby");
    assert_eq!(find("m.room.topic")["content"]["topic"], "Hello");
    assert_eq!(
        find("m.room.canonical_alias")["content"]["alias"],
        "#lobby:test"
    );
    let member = find("m.room.member");
    assert_eq!(member["state_key"], "@alice:test");
    assert_eq!(member["content"]["membership"], "join");
    assert!(member["event_id"].as_str().unwrap().starts_with('$'));
    let (status, name) = get(
        &c,
        &format!("{V3}/rooms/{}/state/m.room.name", q(&room)),
        &alice,
    )
    .await;
    assert_eq!((status, name), (StatusCode::OK, json!({"name": "Lobby"})));
    let (status, _) = get(
        &c,
        &format!("{V3}/rooms/{}/state/m.room.avatar/", q(&room)),
        &alice,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Bob joins by alias (empty body), then by ID again: one membership.
    let (status, data) = c
        .request(
            Method::POST,
            &format!("{V3}/join/{}", q("#lobby:test")),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(
        (status, data["room_id"].as_str()),
        (StatusCode::OK, Some(room.as_str()))
    );
    let (status, _) = post(
        &c,
        &format!("/_matrix/client/r0/rooms/{}/join", q(&room)),
        &bob,
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let (status, data) = members(&c, &bob, &room).await;
    assert_eq!(status, StatusCode::OK, "{data}");
    assert_eq!(member_ids(&data), ["@alice:test", "@bob:test"]);
    assert_eq!(data["joined"]["@bob:test"]["display_name"], "bob");
    let (_, data) = get(&c, &format!("{V3}/joined_rooms"), &bob).await;
    assert_eq!(data, json!({"joined_rooms": [room]}));
    let (_, data) = get(
        &c,
        &format!("{V3}/directory/room/{}", q("#lobby:test")),
        &carol,
    )
    .await;
    assert_eq!(data, json!({"room_id": room, "servers": ["test"]}));

    // Carol is not in the room.
    let (status, data) = members(&c, &carol, &room).await;
    assert_eq!(
        (status, errcode(&data)),
        (StatusCode::FORBIDDEN, "M_FORBIDDEN")
    );

    // Bob leaves; leaving twice is refused.
    let leave = format!("{V3}/rooms/{}/leave", q(&room));
    let (status, data) = c
        .request(Method::POST, &leave, Some(&bob.token), None)
        .await;
    assert_eq!((status, data), (StatusCode::OK, json!({})));
    let (_, data) = members(&c, &alice, &room).await;
    assert_eq!(member_ids(&data), ["@alice:test"]);
    let (status, _) = post(&c, &leave, &bob, json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, data) = get(&c, &format!("{V3}/joined_rooms"), &bob).await;
    assert_eq!(data, json!({"joined_rooms": []}));

    // Bad IDs and unknown rooms.
    for (path, code, errc) in [
        (
            format!("{V3}/join/{}", q("not-a-room")),
            400,
            "M_INVALID_PARAM",
        ),
        (format!("{V3}/join/{}", q("!nope:test")), 404, "M_NOT_FOUND"),
        (format!("{V3}/join/{}", q("#nope:test")), 404, "M_NOT_FOUND"),
        (
            format!("{V3}/rooms/{}/leave", q("!nope:test")),
            404,
            "M_NOT_FOUND",
        ),
        (
            format!("{V3}/rooms/{}/join", q("#lobby:test")),
            400,
            "M_INVALID_PARAM",
        ),
    ] {
        let (status, data) = post(&c, &path, &carol, json!({})).await;
        assert_eq!(
            (status.as_u16(), errcode(&data)),
            (code, errc),
            "{path}: {data}"
        );
    }
    let (status, data) = members(&c, &carol, "!nope:test").await;
    assert_eq!(
        (status, errcode(&data)),
        (StatusCode::NOT_FOUND, "M_NOT_FOUND")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_rooms_need_an_invite() {
    let server = TestServer::start(Workspace::new(), &test_config("")).await;
    let c = server.client();
    let [alice, bob, carol] =
        <[User; 3]>::try_from(users(&c, &["alice", "bob", "carol"]).await).unwrap();
    let room = create(&c, &alice, json!({"preset": "private_chat"})).await;
    let join = format!("{V3}/join/{}", q(&room));
    let invite = format!("{V3}/rooms/{}/invite", q(&room));

    let (status, data) = post(&c, &join, &bob, json!({})).await;
    assert_eq!(
        (status, errcode(&data)),
        (StatusCode::FORBIDDEN, "M_FORBIDDEN"),
        "{data}"
    );

    // Only a member may invite; only local, existing users can be invited.
    let (status, _) = post(&c, &invite, &carol, json!({"user_id": "@bob:test"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = post(
        &c,
        &invite,
        &alice,
        json!({"user_id": "@bob:elsewhere.org"}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, data) = post(&c, &invite, &alice, json!({"user_id": "@ghost:test"})).await;
    assert_eq!(
        (status, errcode(&data)),
        (StatusCode::NOT_FOUND, "M_NOT_FOUND")
    );
    let (status, data) = post(&c, &invite, &alice, json!({"user_id": "bob"})).await;
    assert_eq!(
        (status, errcode(&data)),
        (StatusCode::BAD_REQUEST, "M_BAD_JSON")
    );

    let (status, data) = post(&c, &invite, &alice, json!({"user_id": "@bob:test"})).await;
    assert_eq!((status, data), (StatusCode::OK, json!({})));
    // An invite is not a membership.
    let (_, data) = members(&c, &alice, &room).await;
    assert_eq!(member_ids(&data), ["@alice:test"]);
    let (status, _) = post(&c, &join, &bob, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, data) = members(&c, &alice, &room).await;
    assert_eq!(member_ids(&data), ["@alice:test", "@bob:test"]);
    let (status, _) = post(&c, &invite, &alice, json!({"user_id": "@bob:test"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "already joined");

    // An invite can be turned down.
    let (status, _) = post(&c, &invite, &bob, json!({"user_id": "@carol:test"})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = post(
        &c,
        &format!("{V3}/rooms/{}/leave", q(&room)),
        &carol,
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = post(&c, &join, &carol, json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the invite is gone");

    // createRoom's own invites, trusted preset: invitees get power 100.
    let room2 = create(
        &c,
        &alice,
        json!({"preset": "trusted_private_chat", "invite": ["@carol:test"], "is_direct": true}),
    )
    .await;
    let (status, _) = post(&c, &format!("{V3}/join/{}", q(&room2)), &carol, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, pl) = get(
        &c,
        &format!("{V3}/rooms/{}/state/m.room.power_levels/", q(&room2)),
        &carol,
    )
    .await;
    assert_eq!(pl["users"]["@carol:test"], 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_room_validates_its_input() {
    let server = TestServer::start(Workspace::new(), &test_config("")).await;
    let c = server.client();
    let [alice] = <[User; 1]>::try_from(users(&c, &["alice"]).await).unwrap();
    create(
        &c,
        &alice,
        json!({"room_alias_name": "taken", "visibility": "public"}),
    )
    .await;
    let path = format!("{V3}/createRoom");
    for (body, code, errc) in [
        (json!({"room_alias_name": "taken"}), 400, "M_ROOM_IN_USE"),
        (
            json!({"room_alias_name": "has space"}),
            400,
            "M_INVALID_PARAM",
        ),
        (
            json!({"room_version": "999"}),
            400,
            "M_UNSUPPORTED_ROOM_VERSION",
        ),
        (json!({"preset": "secret"}), 400, "M_INVALID_PARAM"),
        (json!({"visibility": "hidden"}), 400, "M_INVALID_PARAM"),
        (json!({"invite": ["not-a-user"]}), 400, "M_BAD_JSON"),
        (json!({"invite": ["@ghost:test"]}), 404, "M_NOT_FOUND"),
        (json!({"name": 5}), 400, "M_BAD_JSON"),
        (
            json!({"initial_state": [{"type": "m.room.member", "state_key": "@x:test", "content": {}}]}),
            400,
            "M_INVALID_PARAM",
        ),
    ] {
        let (status, data) = post(&c, &path, &alice, body.clone()).await;
        assert_eq!(
            (status.as_u16(), errcode(&data)),
            (code, errc),
            "{body}: {data}"
        );
    }
    // Accepted extras: a room version, initial state, power level overrides, creation content.
    let room = create(
        &c,
        &alice,
        json!({
            "room_version": "11",
            "creation_content": {"m.federate": false},
            "initial_state": [{"type": "m.room.guest_access", "content": {"guest_access": "forbidden"}}],
            "power_level_content_override": {"events_default": 50},
        }),
    )
    .await;
    let (_, create_ev) = get(
        &c,
        &format!("{V3}/rooms/{}/state/m.room.create", q(&room)),
        &alice,
    )
    .await;
    assert_eq!(create_ev["room_version"], "11");
    assert_eq!(create_ev["m.federate"], false);
    let (_, guest) = get(
        &c,
        &format!("{V3}/rooms/{}/state/m.room.guest_access/", q(&room)),
        &alice,
    )
    .await;
    assert_eq!(
        guest["guest_access"], "forbidden",
        "initial_state comes after the preset"
    );
    let (_, pl) = get(
        &c,
        &format!("{V3}/rooms/{}/state/m.room.power_levels", q(&room)),
        &alice,
    )
    .await;
    assert_eq!(pl["events_default"], 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_send_messages_once_per_transaction() {
    let server = TestServer::start(Workspace::new(), &test_config("")).await;
    let c = server.client();
    let [alice, bob] = <[User; 2]>::try_from(users(&c, &["alice", "bob"]).await).unwrap();
    let room = create(&c, &alice, json!({"preset": "public_chat"})).await;
    let send = |txn: &str| format!("{V3}/rooms/{}/send/m.room.message/{txn}", q(&room));
    let msg = json!({"msgtype": "m.text", "body": "hi"});
    let put = |user: &User, path: String| {
        let (c, token, msg) = (c.clone(), user.token.clone(), msg.clone());
        async move {
            c.request(
                Method::PUT,
                &path,
                Some(&token),
                Some(RequestBody::Json(msg)),
            )
            .await
        }
    };
    let (status, first) = put(&alice, send("t1")).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let id = first["event_id"].as_str().unwrap();
    assert!(id.starts_with('$'));
    let (_, again) = put(&alice, send("t1")).await;
    assert_eq!(
        again["event_id"], id,
        "a retried transaction is the same event"
    );
    let (_, other) = put(&alice, send("t2")).await;
    assert_ne!(other["event_id"], id);
    let (status, data) = put(&bob, send("t1")).await;
    assert_eq!(
        (status, errcode(&data)),
        (StatusCode::FORBIDDEN, "M_FORBIDDEN"),
        "not joined"
    );
    let (status, data) = c
        .request(
            Method::PUT,
            &send("t3"),
            Some(&alice.token),
            Some(RequestBody::Raw("[1]".into())),
        )
        .await;
    assert_eq!(
        (status, errcode(&data)),
        (StatusCode::BAD_REQUEST, "M_BAD_JSON")
    );
}

/// `PUT /_presenced/admin/v1/rooms/{room}/members/{user}` with `who`'s token (none: no
/// token).
async fn set_membership(
    c: &Client,
    who: Option<&User>,
    room: &str,
    user: &str,
    body: Value,
) -> (StatusCode, Value) {
    let path = format!("/_presenced/admin/v1/rooms/{}/members/{}", q(room), q(user));
    c.request(
        Method::PUT,
        &path,
        who.map(|w| w.token.as_str()),
        Some(RequestBody::Json(body)),
    )
    .await
}

/// A server with an admin, Alice and Bob.
async fn admin_server() -> (TestServer, Client, User, User, User) {
    let server = TestServer::start(Workspace::new(), &test_config("")).await;
    let c = server.client();
    let admin = c.register("root", "pw-root", true).await.unwrap();
    let [alice, bob] = <[User; 2]>::try_from(users(&c, &["alice", "bob"]).await).unwrap();
    (server, c, admin, alice, bob)
}

/// Only an admin may set memberships, and bad rooms, users and bodies are Matrix errors.
#[tokio::test]
async fn admin_memberships_are_for_admins_and_check_their_input() {
    let (_server, c, admin, alice, _bob) = admin_server().await;
    let join = json!({"membership": "join"});
    let (status, data) =
        set_membership(&c, Some(&alice), "!e:test", "@alice:test", join.clone()).await;
    assert_eq!(
        (status, errcode(&data)),
        (StatusCode::FORBIDDEN, "M_FORBIDDEN"),
        "not an admin"
    );
    let (status, data) = set_membership(&c, None, "!e:test", "@alice:test", join).await;
    assert_eq!(
        (status, errcode(&data)),
        (StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN")
    );
    for (room, user, body, code, errc) in [
        (
            "!x:test",
            "@a:test",
            json!({"membership": "ban"}),
            400,
            "M_INVALID_PARAM",
        ),
        (
            "!x:test",
            "@a:test",
            json!({"membership": "join", "extra": 1}),
            400,
            "M_BAD_JSON",
        ),
        ("!x:test", "@a:test", json!({}), 400, "M_BAD_JSON"),
        (
            "x",
            "@a:test",
            json!({"membership": "join"}),
            400,
            "M_INVALID_PARAM",
        ),
        (
            "!x:test",
            "a",
            json!({"membership": "join"}),
            400,
            "M_INVALID_PARAM",
        ),
    ] {
        let (status, data) = set_membership(&c, Some(&admin), room, user, body.clone()).await;
        assert_eq!(
            (status.as_u16(), errcode(&data)),
            (code, errc),
            "{room} {user} {body}"
        );
    }
}

/// An admin's joins create the server-owned, invite-only room and put local and remote users
/// in it (again: a no-op); its members then share presence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_join_users_to_rooms_directly() {
    let (_server, c, admin, alice, bob) = admin_server().await;
    let room = "!engineering:test";
    for user in ["@alice:test", "@bob:test", "@remote:elsewhere.org"] {
        let (status, data) =
            set_membership(&c, Some(&admin), room, user, json!({"membership": "join"})).await;
        assert_eq!((status, data), (StatusCode::OK, json!({})), "{user}");
    }
    let (status, _) = set_membership(
        &c,
        Some(&admin),
        room,
        "@bob:test",
        json!({"membership": "join"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, data) = members(&c, &alice, room).await;
    assert_eq!(status, StatusCode::OK, "{data}");
    assert_eq!(
        member_ids(&data),
        ["@alice:test", "@bob:test", "@remote:elsewhere.org"]
    );
    let (_, create_ev) = get(
        &c,
        &format!("{V3}/rooms/{}/state/m.room.create", q(room)),
        &alice,
    )
    .await;
    assert_eq!(
        create_ev["creator"], "@presenced:test",
        "owned by the server"
    );
    // Admin rooms are invite only: nobody walks in.
    let [carol] = <[User; 1]>::try_from(users(&c, &["carol"]).await).unwrap();
    let (status, _) = post(&c, &format!("{V3}/join/{}", q(room)), &carol, json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Room-mates share presence: Bob's sync shows Alice's.
    let (status, _) = c
        .put_presence(
            &alice,
            "@alice:test",
            json!({"presence": "online", "status_msg": "here"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let sync = c.sync(&bob, "timeout=0").await;
    let seen = sync["presence"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| e["sender"] == "@alice:test" && e["content"]["presence"] == "online");
    assert!(seen, "{sync}");
}

/// An admin's leave takes a member out; leaving a room one is not in, or one that does not
/// exist, changes nothing and creates no room.
#[tokio::test]
async fn admins_take_users_out_of_rooms_directly() {
    let (_server, c, admin, alice, _bob) = admin_server().await;
    let room = "!engineering:test";
    for user in ["@alice:test", "@bob:test", "@remote:elsewhere.org"] {
        let (status, _) =
            set_membership(&c, Some(&admin), room, user, json!({"membership": "join"})).await;
        assert_eq!(status, StatusCode::OK, "{user}");
    }
    let leave = json!({"membership": "leave"});
    let (status, _) = set_membership(&c, Some(&admin), room, "@bob:test", leave.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let (_, data) = members(&c, &alice, room).await;
    assert_eq!(member_ids(&data), ["@alice:test", "@remote:elsewhere.org"]);
    let (status, _) = set_membership(&c, Some(&admin), room, "@nobody:test", leave.clone()).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "leaving a room one is not in changes nothing"
    );
    let (status, _) = set_membership(&c, Some(&admin), "!ghost:test", "@alice:test", leave).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = members(&c, &alice, "!ghost:test").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a leave creates no room");
}

/// The server started in-process, so tests can read its state directly.
struct InProcess {
    server: presenced::RunningServer,
    client: Client,
    _dir: tempfile::TempDir,
}

impl InProcess {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "server_name: test
listeners: [{{port: 0, type: http, bind_addresses: ['127.0.0.1'], resources: [{{names: [client]}}]}}]
database: {{name: sqlite3, args: {{database: {}}}}}
registration_shared_secret: {SHARED_SECRET}
password_hash_cost: {{memory_kib: 64, iterations: 1, parallelism: 1}}
rc_presence: {{per_user: {{per_second: 10000, burst_count: 100000}}}}
{}",
            dir.path().join("presenced.db").display(),
            crate::support::RAISED_LIMITS,
        );
        let config: Config = Config::from_yaml(&yaml).unwrap().config;
        let server = Server::start(config).await.unwrap();
        let client = Client::new(&format!("http://{}", server.local_addrs()[0]));
        Self {
            server,
            client,
            _dir: dir,
        }
    }

    async fn rooms(&self, user: &User, since: Option<u64>, full_state: bool) -> (Value, u64) {
        let id = UserId::parse(&user.user_id).unwrap();
        rooms_section(self.server.state(), &id, since, full_state)
            .await
            .unwrap()
    }

    async fn stop(self) {
        self.server.shutdown();
        self.server.wait().await.unwrap();
    }
}

fn types(events: &Value) -> Vec<String> {
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

/// A client that gives up on a long-polling `/sync` leaves no trace: its user is no longer
/// counted as listening (woken on every change of its rooms) once the request is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_long_poll_stops_listening() {
    let s = InProcess::start().await;
    let c = s.client.clone();
    let [alice] = <[User; 1]>::try_from(users(&c, &["alice"]).await).unwrap();
    let first = c.sync(&alice, "timeout=0&set_presence=offline").await;
    let since = first["next_batch"].as_str().unwrap().to_owned();
    let id = UserId::parse(&alice.user_id).unwrap();
    let listening = || s.server.state().presence().is_listening(&id);

    let poll = tokio::spawn({
        let (c, alice) = (c.clone(), alice.clone());
        async move {
            c.sync(
                &alice,
                &format!("timeout=30000&set_presence=offline&since={since}"),
            )
            .await
        }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while !listening() {
        assert!(Instant::now() < deadline, "the long-poll never registered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The client goes away mid-wait: its connection closes.
    poll.abort();
    let deadline = Instant::now() + Duration::from_secs(5);
    while listening() {
        assert!(
            Instant::now() < deadline,
            "still listening after the request was abandoned"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s.stop().await;
}

/// Alice, Bob, and the private room "Team" Alice created with Bob invited.
async fn team(s: &InProcess) -> (User, User, String) {
    let c = &s.client;
    let [alice, bob] = <[User; 2]>::try_from(users(c, &["alice", "bob"]).await).unwrap();
    let room = create(
        c,
        &alice,
        json!({"preset": "private_chat", "name": "Team", "invite": ["@bob:test"]}),
    )
    .await;
    (alice, bob, room)
}

/// `who` sends the text `body` to `room` (transaction `txn`).
async fn say(c: &Client, who: &User, room: &str, txn: &str, body: &str) {
    let path = format!("{V3}/rooms/{}/send/m.room.message/{txn}", q(room));
    let (status, _) = c
        .request(
            Method::PUT,
            &path,
            Some(&who.token),
            Some(RequestBody::Json(
                json!({"msgtype": "m.text", "body": body}),
            )),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

async fn join(c: &Client, who: &User, room: &str) {
    let (status, _) = post(c, &format!("{V3}/join/{}", q(room)), who, json!({})).await;
    assert_eq!(status, StatusCode::OK);
}

async fn leave(c: &Client, who: &User, room: &str) {
    let (status, _) = post(c, &format!("{V3}/rooms/{}/leave", q(room)), who, json!({})).await;
    assert_eq!(status, StatusCode::OK);
}

/// Before any room the section is empty at the store's position; then the creator's initial
/// sync has the room with its events in the timeline, the invitee's the invite with stripped
/// state; nothing new leaves the position alone, and a token from the future counts as now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_syncs_show_the_joined_room_and_the_invite() {
    let s = InProcess::start().await;
    let c = s.client.clone();
    let [early] = <[User; 1]>::try_from(users(&c, &["early"]).await).unwrap();
    let (rooms, start) = s.rooms(&early, None, false).await;
    assert_eq!(rooms, json!({"join": {}, "invite": {}, "leave": {}}));
    assert!(!has_news(&rooms));
    assert_eq!(
        start,
        rooms_stream_position(s.server.state()).await.unwrap()
    );

    let (alice, bob, room) = team(&s).await;
    let (rooms, pos) = s.rooms(&alice, None, false).await;
    assert!(pos > start);
    let joined = &rooms["join"][&room];
    let timeline = types(&joined["timeline"]["events"]);
    assert_eq!(timeline.first().map(String::as_str), Some("m.room.create"));
    assert!(timeline.contains(&"m.room.name".to_owned()));
    assert_eq!(joined["timeline"]["limited"], false);
    assert!(joined["timeline"]["prev_batch"].is_string());
    assert_eq!(
        joined["state"]["events"],
        json!([]),
        "all of the state is in the timeline"
    );
    assert_eq!(joined["summary"]["m.joined_member_count"], 1);
    assert_eq!(joined["summary"]["m.invited_member_count"], 1);
    assert_eq!(joined["summary"]["m.heroes"], json!(["@bob:test"]));
    assert_eq!(joined["unread_notifications"]["notification_count"], 0);
    let create_ev = &joined["timeline"]["events"][0];
    for key in [
        "event_id",
        "sender",
        "origin_server_ts",
        "content",
        "state_key",
        "unsigned",
    ] {
        assert!(create_ev.get(key).is_some(), "{key} missing in {create_ev}");
    }
    assert!(create_ev.get("room_id").is_none());

    let (rooms, _) = s.rooms(&bob, None, false).await;
    assert!(rooms["join"].as_object().unwrap().is_empty());
    let invite = &rooms["invite"][&room]["invite_state"]["events"];
    let stripped = types(invite);
    for ty in [
        "m.room.create",
        "m.room.join_rules",
        "m.room.name",
        "m.room.member",
    ] {
        assert!(
            stripped.contains(&ty.to_owned()),
            "{ty} missing in {invite}"
        );
    }
    let own = invite
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.room.member")
        .unwrap();
    assert_eq!(own["state_key"], "@bob:test");
    assert_eq!(own["content"]["membership"], "invite");
    assert!(
        own.get("event_id").is_none(),
        "stripped state has four fields"
    );

    let (rooms, same) = s.rooms(&alice, Some(pos), false).await;
    assert!(!has_news(&rooms));
    assert_eq!(same, pos);

    let (_, capped) = s.rooms(&alice, Some(u64::MAX / 2), false).await;
    assert_eq!(
        capped,
        rooms_stream_position(s.server.state()).await.unwrap()
    );
    s.stop().await;
}

/// The joiner's incremental sync has the room with its whole state; the member's, the join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_brings_the_room_with_its_whole_state() {
    let s = InProcess::start().await;
    let c = s.client.clone();
    let (alice, bob, room) = team(&s).await;
    let (_, pos) = s.rooms(&alice, None, false).await;
    let (_, bob_pos) = s.rooms(&bob, None, false).await;
    join(&c, &bob, &room).await;

    let (rooms, _) = s.rooms(&bob, Some(bob_pos), false).await;
    let joined = &rooms["join"][&room];
    assert_eq!(types(&joined["timeline"]["events"]), ["m.room.member"]);
    let state_types = types(&joined["state"]["events"]);
    assert!(
        state_types.contains(&"m.room.create".to_owned())
            && state_types.contains(&"m.room.power_levels".to_owned()),
        "{state_types:?}"
    );
    let (rooms, _) = s.rooms(&alice, Some(pos), false).await;
    let joined = &rooms["join"][&room];
    assert_eq!(types(&joined["timeline"]["events"]), ["m.room.member"]);
    assert_eq!(joined["timeline"]["events"][0]["state_key"], "@bob:test");
    assert_eq!(joined["state"]["events"], json!([]));
    assert_eq!(joined["summary"]["m.joined_member_count"], 2);
    s.stop().await;
}

/// More messages than the timeline holds: the latest `TIMELINE_LIMIT`, `limited`, with the
/// state; one message is not limited; `full_state` gives the room with its state even
/// without news.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_gap_is_a_limited_timeline_with_the_state() {
    let s = InProcess::start().await;
    let c = s.client.clone();
    let (alice, bob, room) = team(&s).await;
    join(&c, &bob, &room).await;
    let (_, bob_pos) = s.rooms(&bob, None, false).await;
    let (_, alice_pos) = s.rooms(&alice, None, false).await;
    for i in 0..TIMELINE_LIMIT + 5 {
        say(&c, &alice, &room, &format!("m{i}"), &format!("message {i}")).await;
    }
    let (rooms, bob_pos) = s.rooms(&bob, Some(bob_pos), false).await;
    let joined = &rooms["join"][&room];
    let events = joined["timeline"]["events"].as_array().unwrap();
    assert_eq!(events.len(), TIMELINE_LIMIT);
    assert_eq!(joined["timeline"]["limited"], true);
    assert_eq!(
        events.last().unwrap()["content"]["body"],
        format!("message {}", TIMELINE_LIMIT + 4)
    );
    assert!(
        !joined["state"]["events"].as_array().unwrap().is_empty(),
        "a gap brings the state"
    );
    let (rooms, _) = s.rooms(&alice, Some(alice_pos), false).await;
    assert_eq!(rooms["join"][&room]["timeline"]["limited"], true);

    say(&c, &alice, &room, "last", "last").await;
    let (rooms, bob_pos) = s.rooms(&bob, Some(bob_pos), false).await;
    let joined = &rooms["join"][&room];
    assert_eq!(joined["timeline"]["limited"], false);
    assert_eq!(joined["timeline"]["events"].as_array().unwrap().len(), 1);
    assert_eq!(joined["timeline"]["events"][0]["sender"], "@alice:test");

    let (rooms, _) = s.rooms(&bob, Some(bob_pos), true).await;
    assert!(
        !rooms["join"][&room]["state"]["events"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    s.stop().await;
}

/// After a leave the next sync has the room under `leave`, ending with the leave; once, and
/// later messages do not reach the one who left, nor does an initial sync show the room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leave_shows_once_and_later_messages_stay_out() {
    let s = InProcess::start().await;
    let c = s.client.clone();
    let (alice, bob, room) = team(&s).await;
    join(&c, &bob, &room).await;
    let (_, bob_pos) = s.rooms(&bob, None, false).await;
    leave(&c, &bob, &room).await;
    let (rooms, bob_pos) = s.rooms(&bob, Some(bob_pos), false).await;
    assert!(rooms["join"].as_object().unwrap().is_empty());
    let left = &rooms["leave"][&room]["timeline"]["events"];
    let last = left.as_array().unwrap().last().unwrap();
    assert_eq!(
        (
            last["type"].as_str(),
            last["content"]["membership"].as_str()
        ),
        (Some("m.room.member"), Some("leave"))
    );
    say(&c, &alice, &room, "after", "after").await;
    let (rooms, _) = s.rooms(&bob, Some(bob_pos), false).await;
    assert!(!has_news(&rooms), "{rooms}");
    let (rooms, _) = s.rooms(&bob, None, false).await;
    assert!(
        !has_news(&rooms),
        "an initial sync leaves left rooms out: {rooms}"
    );
    s.stop().await;
}

/// An invite turned down: the leave shows the invitee's own membership only, not the
/// messages of a room it never joined; a member sees the message and the leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_invite_shows_only_the_own_membership() {
    let s = InProcess::start().await;
    let c = s.client.clone();
    let (alice, _bob, room) = team(&s).await;
    let (_, alice_pos) = s.rooms(&alice, None, false).await;
    let carol = c.register("carol", "pw-carol", false).await.unwrap();
    let (status, _) = post(
        &c,
        &format!("{V3}/rooms/{}/invite", q(&room)),
        &alice,
        json!({"user_id": "@carol:test"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (rooms, carol_pos) = s.rooms(&carol, None, false).await;
    assert!(rooms["invite"].get(&room).is_some(), "{rooms}");
    say(&c, &alice, &room, "secret", "secret").await;
    leave(&c, &carol, &room).await;
    let (rooms, _) = s.rooms(&carol, Some(carol_pos), false).await;
    let left = rooms["leave"][&room]["timeline"]["events"]
        .as_array()
        .unwrap()
        .clone();
    assert!(!left.is_empty(), "{rooms}");
    assert!(
        left.iter()
            .all(|e| e["type"] == "m.room.member" && e["state_key"] == "@carol:test"),
        "{rooms}"
    );
    let (rooms, _) = s.rooms(&alice, Some(alice_pos), false).await;
    let events = rooms["join"][&room]["timeline"]["events"]
        .as_array()
        .unwrap();
    assert!(
        events.iter().any(|e| e["content"]["body"] == "secret"),
        "{rooms}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["state_key"] == "@carol:test" && e["content"]["membership"] == "leave"),
        "{rooms}"
    );
    s.stop().await;
}

/// A filter's `room.rooms` and `room.not_rooms` select the rooms of the rooms section (spec
/// "Filtering": `not_rooms` wins; an empty `rooms` list shows none), inline or stored, in
/// initial and incremental syncs; presence is not affected.
#[tokio::test]
async fn the_room_filter_selects_the_rooms_section() {
    let server = TestServer::start(Workspace::new(), &test_config("")).await;
    let c = server.client();
    let [alice] = <[User; 1]>::try_from(users(&c, &["alice"]).await).unwrap();
    let a = create(&c, &alice, json!({"preset": "private_chat"})).await;
    let b = create(&c, &alice, json!({"preset": "private_chat"})).await;
    let joined = |sync: &Value| {
        let mut rooms: Vec<String> = sync["rooms"]["join"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        rooms.sort();
        rooms
    };
    let with = |filter: Value| format!("timeout=0&filter={}", q(&filter.to_string()));
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    assert_eq!(joined(&c.sync(&alice, "timeout=0").await), both);
    let cases = [
        (json!({"room": {"rooms": []}}), vec![]),
        (json!({"room": {"rooms": [a]}}), vec![a.clone()]),
        (json!({"room": {"not_rooms": [a]}}), vec![b.clone()]),
        (
            json!({"room": {"rooms": [a, b], "not_rooms": [b]}}),
            vec![a.clone()],
        ),
        (json!({"room": {"timeline": {"limit": 5}}}), both.clone()),
    ];
    for (filter, expected) in &cases {
        let sync = c.sync(&alice, &with(filter.clone())).await;
        assert_eq!(&joined(&sync), expected, "{filter}");
    }

    // Stored, then incremental: news in a filtered-out room shows nothing.
    let (status, data) = post(
        &c,
        &format!("{V3}/user/{}/filter", q(&alice.user_id)),
        &alice,
        json!({"room": {"rooms": [a]}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{data}");
    let id = data["filter_id"].as_str().unwrap().to_owned();
    let first = c.sync(&alice, &format!("timeout=0&filter={id}")).await;
    assert_eq!(joined(&first), vec![a.clone()]);
    let since = first["next_batch"].as_str().unwrap().to_owned();
    for (room, txn) in [(&b, "in-b"), (&a, "in-a")] {
        let (status, _) = c
            .request(
                Method::PUT,
                &format!("{V3}/rooms/{}/send/m.room.message/{txn}", q(room)),
                Some(&alice.token),
                Some(RequestBody::Json(json!({"msgtype": "m.text", "body": txn}))),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let sync = c
            .sync(
                &alice,
                &format!("timeout=0&filter={id}&since={}", q(&since)),
            )
            .await;
        let expected: Vec<String> = if room == &a { vec![a.clone()] } else { vec![] };
        assert_eq!(joined(&sync), expected, "after a message in {room}");
    }
}
