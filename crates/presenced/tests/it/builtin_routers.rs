//! The built-in routers over HTTP against the real binary (`local_only` is in
//! `restricting.rs`, with the restricting mode it needs).

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::{
    federation::{FedServer, free_port, has, register, wait_for_presence},
    matrix::{TestServer, q, test_config},
    support::Workspace,
};

/// `organisation` on one server: users who share no room see each other, with wake-ups,
/// `/sync` and `GET` presence.
#[tokio::test]
async fn organisation_members_see_each_other_without_a_room() {
    let s = TestServer::start(
        Workspace::new(),
        &test_config("modules: [{module: organisation}]\n"),
    )
    .await;
    let c = s.client();
    let alice = c.register("alice", "pw", false).await.unwrap();
    let bob = c.register("bob", "pw", false).await.unwrap();
    // bob's first sync makes him known to the router; then he waits.
    let body = c.sync(&bob, "timeout=0&set_presence=offline").await;
    let since = body["next_batch"].as_str().unwrap().to_owned();
    let wait = async {
        let started = Instant::now();
        let body = c
            .sync(
                &bob,
                &format!("timeout=10000&set_presence=offline&since={}", q(&since)),
            )
            .await;
        (body, started.elapsed())
    };
    let put = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.put_presence(
            &alice,
            &alice.user_id,
            json!({"presence": "online", "status_msg": "in"}),
        )
        .await
    };
    let ((body, waited), _) = tokio::join!(wait, put);
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    let events = body["presence"]["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["sender"] == alice.user_id.as_str() && e["content"]["status_msg"] == "in"),
        "{body}"
    );
    let path = format!("/_matrix/client/v3/presence/{}/status", q(&alice.user_id));
    let (st, body) = c.request(Method::GET, &path, Some(&bob.token), None).await;
    assert_eq!(
        (st, body["presence"].as_str()),
        (StatusCode::OK, Some("online"))
    );
}

/// `organisation` across two Presenced processes that list each other (and one member of
/// the other): their users see each other's presence both ways, without a shared room.
#[tokio::test]
async fn organisation_spans_listed_servers() {
    let (pa, pb) = (free_port(), free_port());
    let (a_name, b_name) = (format!("127.0.0.1:{pa}"), format!("127.0.0.1:{pb}"));
    let config = |other: &str, member: &str| {
        format!(
            "modules: [{{module: organisation, config: {{servers: ['{other}'], \
             members: ['@{member}:{other}']}}}}]\n"
        )
    };
    let a = FedServer::start(pa, &config(&b_name, "bob")).await;
    let b = FedServer::start(pb, &config(&a_name, "alice")).await;
    let (ca, cb) = (a.client(), b.client());
    let alice = register(&ca, "alice").await;
    let bob = register(&cb, "bob").await;
    ca.put_presence(&alice, &alice.user_id, json!({"presence": "online"}))
        .await;
    wait_for_presence(&cb, &bob, |s| has(s, &alice.user_id, "online")).await;
    cb.put_presence(&bob, &bob.user_id, json!({"presence": "unavailable"}))
        .await;
    wait_for_presence(&ca, &alice, |s| has(s, &bob.user_id, "unavailable")).await;
}

async fn status_of(
    c: &crate::matrix::Client,
    asker: &crate::matrix::User,
    target: &str,
) -> StatusCode {
    let path = format!("/_matrix/client/v3/presence/{}/status", q(target));
    c.request(Method::GET, &path, Some(&asker.token), None)
        .await
        .0
}

async fn put_account_data(
    c: &crate::matrix::Client,
    user: &crate::matrix::User,
    ty: &str,
    content: serde_json::Value,
) {
    let path = format!(
        "/_matrix/client/v3/user/{}/account_data/{ty}",
        q(&user.user_id)
    );
    let (st, body) = c
        .request(
            Method::PUT,
            &path,
            Some(&user.token),
            Some(crate::matrix::RequestBody::Json(content)),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
}

fn sync_senders(body: &serde_json::Value) -> Vec<String> {
    body["presence"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["sender"].as_str().map(str::to_owned))
        .collect()
}

/// `direct_rooms` in the restricting mode without `shared_rooms`: presence is shared in a
/// room only once a member marks it direct in `m.direct`, both ways, and that survives a
/// restart (the router is given the stored account data and memberships again).
#[tokio::test]
async fn direct_rooms_share_presence_only_in_rooms_marked_direct() {
    let s = TestServer::start(
        Workspace::new(),
        &test_config(
            "presence: {enabled: true, routing: restricting}\nmodules: [{module: direct_rooms}]\n",
        ),
    )
    .await;
    let c = s.client();
    let alice = c.register("alice", "pw", false).await.unwrap();
    let bob = c.register("bob", "pw", false).await.unwrap();
    let carol = c.register("carol", "pw", false).await.unwrap();
    let group = c.create_room(&alice, false).await;
    c.join(&bob, &group).await;
    let dm = c.create_room(&alice, false).await;
    c.join(&carol, &dm).await;
    for u in [&alice, &carol] {
        c.put_presence(u, &u.user_id, json!({"presence": "online"}))
            .await;
    }
    assert_eq!(
        status_of(&c, &carol, &alice.user_id).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status_of(&c, &bob, &alice.user_id).await,
        StatusCode::FORBIDDEN
    );

    put_account_data(&c, &carol, "m.direct", json!({"@alice:test": [dm]})).await;
    assert_eq!(status_of(&c, &carol, &alice.user_id).await, StatusCode::OK);
    assert_eq!(status_of(&c, &alice, &carol.user_id).await, StatusCode::OK);
    assert_eq!(
        status_of(&c, &bob, &alice.user_id).await,
        StatusCode::FORBIDDEN
    );
    let body = c.sync(&carol, "timeout=0&set_presence=offline").await;
    assert!(sync_senders(&body).contains(&alice.user_id), "{body}");
    let body = c.sync(&bob, "timeout=0&set_presence=offline").await;
    assert!(!sync_senders(&body).contains(&alice.user_id), "{body}");

    s.signal("TERM");
    let s = s.restart().await;
    let c = s.client();
    assert_eq!(status_of(&c, &carol, &alice.user_id).await, StatusCode::OK);
    assert_eq!(
        status_of(&c, &bob, &alice.user_id).await,
        StatusCode::FORBIDDEN
    );
}

/// `user_lists` with `shared_rooms`: a user's deny list removes room-mates, an allow list
/// restricts to its entries and adds its exact user IDs (without a shared room), and the
/// lists survive a restart.
#[tokio::test]
async fn user_lists_remove_and_add_recipients() {
    let s = TestServer::start(
        Workspace::new(),
        &test_config(
            "presence: {enabled: true, routing: restricting}\n\
             modules: [{module: shared_rooms}, {module: user_lists}]\n",
        ),
    )
    .await;
    let c = s.client();
    let alice = c.register("alice", "pw", false).await.unwrap();
    let bob = c.register("bob", "pw", false).await.unwrap();
    let carol = c.register("carol", "pw", false).await.unwrap();
    let dave = c.register("dave", "pw", false).await.unwrap();
    let room = c.create_room(&alice, false).await;
    c.join(&bob, &room).await;
    c.join(&carol, &room).await;
    c.put_presence(&alice, &alice.user_id, json!({"presence": "online"}))
        .await;
    assert_eq!(status_of(&c, &bob, &alice.user_id).await, StatusCode::OK);
    assert_eq!(
        status_of(&c, &dave, &alice.user_id).await,
        StatusCode::FORBIDDEN
    );

    let lists = "io.presenced.presence_lists";
    put_account_data(&c, &alice, lists, json!({"deny": ["@bob:test"]})).await;
    assert_eq!(
        status_of(&c, &bob, &alice.user_id).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(status_of(&c, &carol, &alice.user_id).await, StatusCode::OK);
    let body = c.sync(&bob, "timeout=0&set_presence=offline").await;
    assert!(!sync_senders(&body).contains(&alice.user_id), "{body}");

    put_account_data(&c, &alice, lists, json!({"allow": ["@dave:test"]})).await;
    assert_eq!(status_of(&c, &dave, &alice.user_id).await, StatusCode::OK);
    assert_eq!(
        status_of(&c, &carol, &alice.user_id).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status_of(&c, &bob, &alice.user_id).await,
        StatusCode::FORBIDDEN
    );
    let body = c.sync(&dave, "timeout=0&set_presence=offline").await;
    assert!(sync_senders(&body).contains(&alice.user_id), "{body}");

    s.signal("TERM");
    let s = s.restart().await;
    let c = s.client();
    assert_eq!(status_of(&c, &dave, &alice.user_id).await, StatusCode::OK);
    assert_eq!(
        status_of(&c, &carol, &alice.user_id).await,
        StatusCode::FORBIDDEN
    );
}
