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
