//! The restricting mode (`presence.routing: restricting`) over HTTP against the real binary:
//! every path (`/sync` reads, wake-ups, `GET` presence, `send_local_online_presence_to`,
//! federation destinations between Presenced processes) follows the routers' decision, and
//! configurations the additive mode cannot honour are refused as `check-config` refuses them.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    federation::{FedServer, free_port, has, register, wait_for_presence},
    matrix::{Client, TestServer, User, q, test_config},
    support::{Workspace, config_yaml},
};

/// The example router routing everything to `@gobbler:test`, in the restricting mode, with
/// `modules` as given.
fn restricting(modules: &str) -> String {
    test_config(&format!(
        "presence:
  enabled: true
  routing: restricting
  presence_router:
    module: example
    config: {{always_send_to_users: ['@gobbler:test']}}
modules: {modules}
"
    ))
}

async fn get_status(c: &Client, asker: &User, target: &str) -> (StatusCode, Value) {
    let path = format!("/_matrix/client/v3/presence/{}/status", q(target));
    c.request(Method::GET, &path, Some(&asker.token), None)
        .await
}

fn senders(sync: &Value) -> Vec<String> {
    sync["presence"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["sender"].as_str().map(str::to_owned))
        .collect()
}

fn token(sync: &Value) -> String {
    sync["next_batch"].as_str().unwrap().to_owned()
}

/// alice and bob share a room; gobbler is routed everything; root is an admin.
async fn cast(c: &Client) -> (User, User, User, User) {
    let alice = c.register("alice", "pw", false).await.unwrap();
    let bob = c.register("bob", "pw", false).await.unwrap();
    let gobbler = c.register("gobbler", "pw", false).await.unwrap();
    let root = c.register("root", "pw", true).await.unwrap();
    let room = c.create_room(&alice, false).await;
    c.join(&bob, &room).await;
    (alice, bob, gobbler, root)
}

/// A long-polling sync of `user` from `since`: (presence senders, how long it waited).
async fn long_poll(
    c: &Client,
    user: &User,
    since: &str,
    timeout_ms: u64,
) -> (Vec<String>, Duration) {
    let started = Instant::now();
    let body = c
        .sync(
            user,
            &format!(
                "timeout={timeout_ms}&set_presence=offline&since={}",
                q(since)
            ),
        )
        .await;
    (senders(&body), started.elapsed())
}

/// Alice changes her presence while bob and gobbler wait in `/sync`: (what bob's and
/// gobbler's syncs brought, and how long each waited).
async fn change_while_waiting(
    c: &Client,
    alice: &User,
    bob: &User,
    gobbler: &User,
) -> ((Vec<String>, Duration), (Vec<String>, Duration)) {
    let bob_since = token(&c.sync(bob, "timeout=0&set_presence=offline").await);
    let gobbler_since = token(&c.sync(gobbler, "timeout=0&set_presence=offline").await);
    let bob_wait = long_poll(c, bob, &bob_since, 2000);
    let gobbler_wait = long_poll(c, gobbler, &gobbler_since, 10_000);
    let put = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.put_presence(
            alice,
            &alice.user_id,
            json!({"presence": "online", "status_msg": "hi"}),
        )
        .await
    };
    let (b, g, (st, _)) = tokio::join!(bob_wait, gobbler_wait, put);
    assert_eq!(st, StatusCode::OK);
    (b, g)
}

/// Without the `shared_rooms` router, room-mates receive nothing of each other on any path,
/// while the router's own recipient receives everything.
#[tokio::test]
async fn without_shared_rooms_room_mates_get_nothing_on_any_path() {
    let s = TestServer::start(Workspace::new(), &restricting("[]")).await;
    let c = s.client();
    let (alice, bob, gobbler, root) = cast(&c).await;

    // Wake-ups: alice's change wakes gobbler at once, and not bob.
    let ((bob_saw, bob_waited), (gobbler_saw, gobbler_waited)) =
        change_while_waiting(&c, &alice, &bob, &gobbler).await;
    assert!(gobbler_saw.contains(&alice.user_id), "{gobbler_saw:?}");
    assert!(
        gobbler_waited < Duration::from_millis(1900),
        "{gobbler_waited:?}"
    );
    assert!(!bob_saw.contains(&alice.user_id), "{bob_saw:?}");
    assert!(
        bob_waited >= Duration::from_millis(1900),
        "bob was woken: {bob_waited:?}"
    );

    // Reads: initial syncs and GET presence follow the same rule.
    let body = c.sync(&bob, "timeout=0&set_presence=offline").await;
    assert!(!senders(&body).contains(&alice.user_id), "{body}");
    let bob_since = token(&body);
    let body = c.sync(&gobbler, "timeout=0&set_presence=offline").await;
    assert!(senders(&body).contains(&alice.user_id), "{body}");
    let gobbler_since = token(&body);
    let (st, _) = get_status(&c, &bob, &alice.user_id).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, body) = get_status(&c, &gobbler, &alice.user_id).await;
    assert_eq!(
        (st, body["presence"].as_str()),
        (StatusCode::OK, Some("online"))
    );
    // One's own presence is always there.
    let (st, _) = get_status(&c, &alice, &alice.user_id).await;
    assert_eq!(st, StatusCode::OK);

    // send_local_online_presence_to: the snapshot holds only what each target receives.
    c.ok(
        Method::POST,
        "/_presenced/admin/v1/send_local_online_presence_to",
        Some(&root.token),
        json!({"users": [bob.user_id, gobbler.user_id]}),
    )
    .await;
    let body = c
        .sync(
            &bob,
            &format!("timeout=0&set_presence=offline&since={}", q(&bob_since)),
        )
        .await;
    assert!(!senders(&body).contains(&alice.user_id), "{body}");
    let body = c
        .sync(
            &gobbler,
            &format!("timeout=0&set_presence=offline&since={}", q(&gobbler_since)),
        )
        .await;
    assert!(senders(&body).contains(&alice.user_id), "{body}");
}

/// With `shared_rooms` among the routers, room-mates see each other again on every path, and
/// the other router still adds its recipient: the routers compose.
#[tokio::test]
async fn shared_rooms_composes_with_the_other_routers() {
    let s = TestServer::start(Workspace::new(), &restricting("[{module: shared_rooms}]")).await;
    let c = s.client();
    let (alice, bob, gobbler, _root) = cast(&c).await;
    let ((bob_saw, bob_waited), (gobbler_saw, _)) =
        change_while_waiting(&c, &alice, &bob, &gobbler).await;
    assert!(bob_saw.contains(&alice.user_id), "{bob_saw:?}");
    assert!(bob_waited < Duration::from_millis(1900), "{bob_waited:?}");
    assert!(gobbler_saw.contains(&alice.user_id), "{gobbler_saw:?}");
    let (st, body) = get_status(&c, &bob, &alice.user_id).await;
    assert_eq!(
        (st, body["status_msg"].as_str()),
        (StatusCode::OK, Some("hi"))
    );
    let body = c.sync(&bob, "timeout=0&set_presence=offline").await;
    assert!(senders(&body).contains(&alice.user_id), "{body}");
}

/// What the additive mode cannot honour is refused, by check-config as by startup, naming
/// the key; a bad `routing` value too.
#[tokio::test]
async fn the_additive_mode_refuses_restricting_routers() {
    let ws = Workspace::new();
    let cases = [
        (
            config_yaml("modules: [{module: shared_rooms}]\n"),
            "modules[0].module: shared_rooms is a router of the restricting mode",
        ),
        (
            config_yaml("modules: [{module: example}, {module: local_only}]\n"),
            "modules[1].module: local_only removes recipients, which only the restricting \
             mode can honour: set presence.routing: restricting",
        ),
        (
            config_yaml(
                "presence: {routing: restricting}\nmodules: [{module: shared_rooms, config: \
                 {rooms: []}}, {module: local_only, config: {servers: ['not a server']}}]\n",
            ),
            "modules[0].config.rooms: unknown field `rooms`",
        ),
        (
            config_yaml(
                "presence: {routing: restricting}\nmodules: [{module: local_only, config: \
                 {servers: ['ok.example', 'not a server']}}]\n",
            ),
            "modules[0].config.servers[1]: ",
        ),
    ];
    for (config, expected) in cases {
        crate::binary::check_config_and_startup_fail_alike(&ws, &config, expected).await;
    }
    // A configuration problem is listed below the failure line, by both alike.
    let bad = ws.write("bad.yaml", &config_yaml("presence: {routing: sideways}\n"));
    let expected = "  - presence.routing: expected \"additive\" or \"restricting\", found the string \"sideways\"";
    for args in [&["check-config", "-c"][..], &["-c"]] {
        let mut args = args.to_vec();
        args.push(bad.to_str().unwrap());
        let (code, _, stderr) = ws.run(&args).await;
        assert_eq!(code, 1, "{stderr}");
        assert!(stderr.lines().any(|l| l == expected), "{stderr}");
    }
    let good = ws.write(
        "good.yaml",
        &config_yaml(
            "presence: {routing: restricting}\nmodules: [{module: shared_rooms}, \
             {module: local_only, config: {servers: [partner.example]}}]\n",
        ),
    );
    let (code, stdout, stderr) = ws
        .run(&["check-config", "-c", good.to_str().unwrap()])
        .await;
    assert_eq!(
        (code, stdout.as_str()),
        (0, "The configuration is valid.\n"),
        "{stderr}"
    );
}

/// Mirrors a room holding `members` on every server (the admin membership API), as the
/// servers' own room machinery would.
async fn mirror_room(room: &str, servers: &[(&Client, &User)], members: &[&User]) {
    for (c, admin) in servers {
        for user in members {
            let path = format!(
                "/_presenced/admin/v1/rooms/{}/members/{}",
                q(room),
                q(&user.user_id)
            );
            c.ok(
                Method::PUT,
                &path,
                Some(&admin.token),
                json!({"membership": "join"}),
            )
            .await;
        }
    }
}

/// Federation between three Presenced processes: A runs `shared_rooms` with `local_only`
/// allowing B only. A room holds a user of each server. A's user's presence reaches B and
/// never C (neither through the room nor through `send_local_online_presence_to`), while
/// presence still flows into A from both and between B and C.
#[tokio::test]
async fn local_only_keeps_presence_from_servers_not_listed() {
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let b_name = format!("127.0.0.1:{pb}");
    let a = FedServer::start(
        pa,
        &format!(
            "presence: {{routing: restricting}}\nmodules: [{{module: shared_rooms}}, \
             {{module: local_only, config: {{servers: ['{b_name}']}}}}]\n"
        ),
    )
    .await;
    let b = FedServer::start(pb, "").await;
    let c = FedServer::start(pc, "").await;
    let (ca, cb, cc) = (a.client(), b.client(), c.client());
    let (root_a, root_b, root_c) = (
        ca.register("root", "pw-root", true).await.unwrap(),
        cb.register("root", "pw-root", true).await.unwrap(),
        cc.register("root", "pw-root", true).await.unwrap(),
    );
    let alice = register(&ca, "alice").await;
    let bob = register(&cb, "bob").await;
    let carol = register(&cc, "carol").await;
    let room = format!("!shared:{}", a.name);
    mirror_room(
        &room,
        &[(&ca, &root_a), (&cb, &root_b), (&cc, &root_c)],
        &[&alice, &bob, &carol],
    )
    .await;

    ca.put_presence(&alice, &alice.user_id, json!({"presence": "online"}))
        .await;
    // B is listed: bob sees alice.
    wait_for_presence(&cb, &bob, |s| has(s, &alice.user_id, "online")).await;
    // Presence into A still arrives, from B and from C, and flows between B and C.
    cb.put_presence(&bob, &bob.user_id, json!({"presence": "unavailable"}))
        .await;
    cc.put_presence(&carol, &carol.user_id, json!({"presence": "online"}))
        .await;
    wait_for_presence(&ca, &alice, |s| {
        has(s, &bob.user_id, "unavailable") && has(s, &carol.user_id, "online")
    })
    .await;
    let seen = wait_for_presence(&cc, &carol, |s| has(s, &bob.user_id, "unavailable")).await;
    assert!(
        !seen.contains_key(&alice.user_id),
        "C was sent alice: {seen:?}"
    );

    // Asking A to send alice's presence to carol sends nothing to C either.
    ca.ok(
        Method::POST,
        "/_presenced/admin/v1/send_local_online_presence_to",
        Some(&root_a.token),
        json!({"users": [carol.user_id]}),
    )
    .await;
    // A change of alice after that goes to B and still not to C.
    ca.put_presence(
        &alice,
        &alice.user_id,
        json!({"presence": "unavailable", "status_msg": "2"}),
    )
    .await;
    wait_for_presence(&cb, &bob, |s| has(s, &alice.user_id, "unavailable")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let body = cc.sync(&carol, "timeout=0&set_presence=offline").await;
    assert!(!senders(&body).contains(&alice.user_id), "{body}");
    let (st, body) = get_status(&cc, &carol, &alice.user_id).await;
    assert!(
        st != StatusCode::OK || body["presence"] == "offline",
        "C knows alice's presence: {st} {body}"
    );
}
