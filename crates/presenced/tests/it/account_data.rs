//! Client account data over HTTP against the real binary: the spec's endpoints, global and
//! per room, stored across restarts and delivered in `/sync` as clients expect.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::matrix::{Client, RequestBody, TestServer, User, q, test_config};
use crate::support::Workspace;

fn global_path(user: &str, ty: &str) -> String {
    format!("/_matrix/client/v3/user/{}/account_data/{}", q(user), q(ty))
}

fn room_path(user: &str, room: &str, ty: &str) -> String {
    format!(
        "/_matrix/client/v3/user/{}/rooms/{}/account_data/{}",
        q(user),
        q(room),
        q(ty)
    )
}

async fn put(c: &Client, user: &User, path: &str, body: Value) -> (StatusCode, Value) {
    c.request(
        Method::PUT,
        path,
        Some(&user.token),
        Some(RequestBody::Json(body)),
    )
    .await
}

async fn get(c: &Client, user: &User, path: &str) -> (StatusCode, Value) {
    c.request(Method::GET, path, Some(&user.token), None).await
}

/// The global account-data events of a sync, by type.
fn global(sync: &Value) -> Vec<(String, Value)> {
    sync["account_data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["type"].as_str().unwrap().to_owned(), e["content"].clone()))
        .collect()
}

#[tokio::test]
async fn endpoints_store_and_check_account_data() {
    let s = TestServer::start(Workspace::new(), &test_config("")).await;
    let c = s.client();
    let alice = c.register("alice", "pw", false).await.unwrap();
    let bob = c.register("bob", "pw", false).await.unwrap();
    let room = c.create_room(&alice, false).await;

    let direct = json!({"@bob:test": [room]});
    let (st, body) = put(
        &c,
        &alice,
        &global_path(&alice.user_id, "m.direct"),
        direct.clone(),
    )
    .await;
    assert_eq!((st, body), (StatusCode::OK, json!({})));
    let (st, body) = get(&c, &alice, &global_path(&alice.user_id, "m.direct")).await;
    assert_eq!((st, body), (StatusCode::OK, direct));
    // Global and per-room entries of one type are apart.
    let (st, body) = get(&c, &alice, &room_path(&alice.user_id, &room, "m.direct")).await;
    assert_eq!(
        (st, body["errcode"].as_str()),
        (StatusCode::NOT_FOUND, Some("M_NOT_FOUND"))
    );
    let tag = json!({"tags": {"u.work": {"order": 0.5}}});
    let (st, _) = put(
        &c,
        &alice,
        &room_path(&alice.user_id, &room, "m.tag"),
        tag.clone(),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, body) = get(&c, &alice, &room_path(&alice.user_id, &room, "m.tag")).await;
    assert_eq!((st, body), (StatusCode::OK, tag.clone()));
    // A write replaces.
    let (st, _) = put(
        &c,
        &alice,
        &global_path(&alice.user_id, "m.direct"),
        json!({}),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        get(&c, &alice, &global_path(&alice.user_id, "m.direct"))
            .await
            .1,
        json!({})
    );

    // Only one's own; server-managed types refused; the body must be an object.
    let (st, body) = get(&c, &bob, &global_path(&alice.user_id, "m.direct")).await;
    assert_eq!(
        (st, body["errcode"].as_str()),
        (StatusCode::FORBIDDEN, Some("M_FORBIDDEN"))
    );
    let (st, body) = put(&c, &bob, &global_path(&alice.user_id, "x.y"), json!({})).await;
    assert_eq!(
        (st, body["errcode"].as_str()),
        (StatusCode::FORBIDDEN, Some("M_FORBIDDEN"))
    );
    for ty in ["m.push_rules", "m.fully_read"] {
        let (st, body) = put(&c, &alice, &global_path(&alice.user_id, ty), json!({})).await;
        assert_eq!(
            (st, body["errcode"].as_str()),
            (StatusCode::METHOD_NOT_ALLOWED, Some("M_BAD_JSON")),
            "{ty}"
        );
    }
    let (st, body) = put(&c, &alice, &global_path(&alice.user_id, "x.y"), json!([1])).await;
    assert_eq!(
        (st, body["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_BAD_JSON"))
    );
    let (st, body) = get(
        &c,
        &alice,
        &room_path(&alice.user_id, "not-a-room", "m.tag"),
    )
    .await;
    assert_eq!(
        (st, body["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_INVALID_PARAM"))
    );

    // Kept across a restart.
    s.signal("TERM");
    let s = s.restart().await;
    let c = s.client();
    assert_eq!(
        get(&c, &alice, &room_path(&alice.user_id, &room, "m.tag"))
            .await
            .1,
        tag
    );
}

#[tokio::test]
async fn sync_delivers_account_data_once_per_change_and_wakes() {
    let s = TestServer::start(Workspace::new(), &test_config("")).await;
    let c = s.client();
    let alice = c.register("alice", "pw", false).await.unwrap();
    let room = c.create_room(&alice, false).await;
    put(
        &c,
        &alice,
        &global_path(&alice.user_id, "m.direct"),
        json!({"@bob:test": [room]}),
    )
    .await;
    put(
        &c,
        &alice,
        &room_path(&alice.user_id, &room, "m.tag"),
        json!({"tags": {}}),
    )
    .await;
    put(
        &c,
        &alice,
        &room_path(&alice.user_id, "!elsewhere:test", "m.tag"),
        json!({"tags": {}}),
    )
    .await;

    // An initial sync has everything: global at the top, per room under the joined room.
    let body = c.sync(&alice, "timeout=0&set_presence=offline").await;
    assert_eq!(
        global(&body),
        [("m.direct".to_owned(), json!({"@bob:test": [room]}))]
    );
    let room_events = &body["rooms"]["join"][room.as_str()]["account_data"]["events"];
    assert_eq!(
        room_events,
        &json!([{"type": "m.tag", "content": {"tags": {}}}]),
        "{body}"
    );
    // A room the user is not in is not shown.
    assert!(
        body["rooms"]["join"].get("!elsewhere:test").is_none(),
        "{body}"
    );
    let token = body["next_batch"].as_str().unwrap().to_owned();
    assert_eq!(token.matches('_').count(), 2, "{token}");

    // Nothing new: an incremental sync has no account data.
    let body = c
        .sync(
            &alice,
            &format!("timeout=0&set_presence=offline&since={}", q(&token)),
        )
        .await;
    assert!(global(&body).is_empty(), "{body}");
    let token = body["next_batch"].as_str().unwrap().to_owned();

    // A write wakes a waiting sync, which brings only that entry.
    let wait = async {
        let started = Instant::now();
        let body = c
            .sync(
                &alice,
                &format!("timeout=10000&set_presence=offline&since={}", q(&token)),
            )
            .await;
        (body, started.elapsed())
    };
    let write = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        put(
            &c,
            &alice,
            &global_path(&alice.user_id, "org.example.setting"),
            json!({"on": true}),
        )
        .await
    };
    let ((body, waited), (st, _)) = tokio::join!(wait, write);
    assert_eq!(st, StatusCode::OK);
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    assert_eq!(
        global(&body),
        [("org.example.setting".to_owned(), json!({"on": true}))]
    );
    assert!(body["rooms"]["join"].get(room.as_str()).is_none(), "{body}");

    // A token of an earlier release (two parts) gets everything once.
    let old = token.rsplit_once('_').unwrap().0.to_owned();
    let body = c
        .sync(
            &alice,
            &format!("timeout=0&set_presence=offline&since={}", q(&old)),
        )
        .await;
    assert_eq!(global(&body).len(), 2, "{body}");
}
