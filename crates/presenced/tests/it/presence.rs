//! Presence over HTTP against the real binary: the reference's server-level tests (8–12, 20,
//! 22–23, 35), timeouts on time, restarts, crashes, and the bad-input table.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    matrix::{Client, RequestBody, TestServer, User, q, test_config},
    support::Workspace,
};

async fn server(extra: &str) -> TestServer {
    TestServer::start(Workspace::new(), &test_config(extra)).await
}

async fn users(c: &Client, names: &[&str]) -> Vec<User> {
    let mut out = Vec::new();
    for n in names {
        out.push(c.register(n, "password", false).await.unwrap());
    }
    out
}

/// Two users sharing a public room.
async fn pair(c: &Client) -> (User, User) {
    let v = users(c, &["alice", "bob"]).await;
    let room = c.create_room(&v[0], false).await;
    c.join(&v[1], &room).await;
    (v[0].clone(), v[1].clone())
}

async fn get_status(c: &Client, asker: &User, target: &str) -> (StatusCode, Value) {
    let path = format!("/_matrix/client/v3/presence/{}/status", q(target));
    c.request(Method::GET, &path, Some(&asker.token), None)
        .await
}

fn presence_of(sync: &Value, user: &str) -> Option<Value> {
    sync["presence"]["events"]
        .as_array()?
        .iter()
        .find(|e| e["sender"] == user)
        .map(|e| e["content"].clone())
}

/// Synapse: `tests/rest/client/test_presence.py::test_put_presence`.
#[tokio::test]
async fn put_presence_then_get() {
    let s = server("").await;
    let c = s.client();
    let (alice, bob) = pair(&c).await;
    let (st, _) = c
        .put_presence(
            &alice,
            &alice.user_id,
            json!({"presence": "online", "status_msg": "beep boop"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, body) = get_status(&c, &bob, &alice.user_id).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["presence"], "online");
    assert_eq!(body["status_msg"], "beep boop");
    assert_eq!(body["currently_active"], true);
    assert!(body["last_active_ago"].as_u64().unwrap() < 10_000);
}

/// Synapse: `tests/rest/client/test_presence.py::test_put_presence_disabled`.
#[tokio::test]
async fn put_presence_disabled() {
    let s = server("use_presence: false\npresence: {enabled: false}").await;
    let c = s.client();
    let (alice, bob) = pair(&c).await;
    let (st, _) = c
        .put_presence(&alice, &alice.user_id, json!({"presence": "here"}))
        .await;
    assert_eq!(st, StatusCode::OK, "any value is accepted and ignored");
    let (st, body) = get_status(&c, &bob, &alice.user_id).await;
    assert_eq!((st, body), (StatusCode::OK, json!({"presence": "offline"})));
}

/// Synapse: `tests/rest/client/test_presence.py::test_put_presence_untracked`.
#[tokio::test]
async fn put_presence_untracked() {
    let s = server("presence: {enabled: untracked}").await;
    let c = s.client();
    let (alice, bob) = pair(&c).await;
    let (st, _) = c
        .put_presence(&alice, &alice.user_id, json!({"presence": "online"}))
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, body) = get_status(&c, &bob, &alice.user_id).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        body["presence"], "offline",
        "untracked: the request changed nothing"
    );
}

/// Synapse: `tests/rest/client/test_presence.py::test_put_presence_over_ratelimit` and
/// `tests/rest/client/test_presence.py::test_put_presence_within_ratelimit`.
#[tokio::test]
async fn put_rate_limit() {
    let s = server("rc_presence: {per_user: {per_second: 1, burst_count: 1}}").await;
    let c = s.client();
    let (alice, bob) = pair(&c).await;
    let (st, _) = c
        .put_presence(
            &alice,
            &alice.user_id,
            json!({"presence": "online", "status_msg": "one"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let path = format!("/_matrix/client/v3/presence/{}/status", q(&alice.user_id));
    let (st, body) = c
        .request(
            Method::PUT,
            &path,
            Some(&alice.token),
            Some(RequestBody::Json(json!({"presence": "unavailable"}))),
        )
        .await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
    assert!(body["retry_after_ms"].as_u64().unwrap() > 0);
    let (_, body) = get_status(&c, &bob, &alice.user_id).await;
    assert_eq!(body["presence"], "online", "only the first took effect");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (st, _) = c
        .put_presence(&alice, &alice.user_id, json!({"presence": "unavailable"}))
        .await;
    assert_eq!(st, StatusCode::OK, "within the limit again");
    let (_, body) = get_status(&c, &bob, &alice.user_id).await;
    assert_eq!(body["presence"], "unavailable");
}

/// Synapse:
/// `tests/handlers/test_presence.py::PresenceUpdateTestCase::test_over_ratelimit_offline_to_online_to_unavailable` and
/// `tests/handlers/test_presence.py::PresenceUpdateTestCase::test_within_ratelimit_offline_to_online_to_unavailable`.
#[tokio::test]
async fn sync_rate_limit_does_not_affect_presence() {
    let s = server("rc_presence: {per_user: {per_second: 1, burst_count: 1}}").await;
    let c = s.client();
    let (alice, bob) = pair(&c).await;
    c.sync(&alice, "timeout=0&set_presence=online").await;
    c.sync(&alice, "timeout=0&set_presence=unavailable").await;
    let (_, body) = get_status(&c, &bob, &alice.user_id).await;
    assert_eq!(
        body["presence"], "online",
        "the second sync was rate limited, not refused"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.sync(&alice, "timeout=0&set_presence=unavailable").await;
    let (_, body) = get_status(&c, &bob, &alice.user_id).await;
    assert_eq!(body["presence"], "unavailable");
}

#[tokio::test]
async fn sync_long_poll_answers_as_soon_as_presence_changes() {
    let s = server("").await;
    let c = s.client();
    let (alice, bob) = pair(&c).await;
    let first = c.sync(&bob, "timeout=0&set_presence=offline").await;
    let since = first["next_batch"].as_str().unwrap().to_owned();
    let waiter = {
        let c = c.clone();
        let bob = bob.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let body = c
                .sync(
                    &bob,
                    &format!("timeout=20000&set_presence=offline&since={}", q(&since)),
                )
                .await;
            (started.elapsed(), body)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.put_presence(
        &alice,
        &alice.user_id,
        json!({"presence": "online", "status_msg": "wake"}),
    )
    .await;
    let (elapsed, body) = waiter.await.unwrap();
    assert!(
        elapsed < Duration::from_secs(5),
        "the long-poll waited {elapsed:?}"
    );
    assert_eq!(
        presence_of(&body, &alice.user_id).unwrap()["status_msg"],
        "wake"
    );
}

#[tokio::test]
async fn sync_long_poll_times_out_with_nothing() {
    let s = server("").await;
    let c = s.client();
    let (_alice, bob) = pair(&c).await;
    let first = c.sync(&bob, "timeout=0&set_presence=offline").await;
    let since = first["next_batch"].as_str().unwrap();
    let started = Instant::now();
    let body = c
        .sync(
            &bob,
            &format!("timeout=700&set_presence=offline&since={}", q(since)),
        )
        .await;
    assert!(started.elapsed() >= Duration::from_millis(650));
    assert!(
        body.get("presence").is_none(),
        "no presence key when there is nothing: {body}"
    );
}

#[tokio::test]
async fn user_who_stops_syncing_goes_offline_on_time() {
    let s = server("presence: {sync_online_timeout: 2s}").await;
    let c = s.client();
    let (alice, bob) = pair(&c).await;
    c.sync(&alice, "timeout=0&set_presence=online").await;
    let (_, body) = get_status(&c, &bob, &alice.user_id).await;
    assert_eq!(body["presence"], "online");
    let stopped = Instant::now();
    loop {
        let (_, body) = get_status(&c, &bob, &alice.user_id).await;
        if body["presence"] == "offline" {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(6),
            "still {body} after {:?}",
            stopped.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = stopped.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "offline too early: {took:?}"
    );
}

/// Synapse:
/// `tests/handlers/test_presence.py::PresenceUpdateTestCase::test_persisting_presence_updates`.
#[tokio::test]
async fn restart_restores_presence_and_stream_positions() {
    let s = server("").await;
    let c = s.client();
    let (alice, bob) = pair(&c).await;
    let first = c.sync(&bob, "timeout=0&set_presence=offline").await;
    let since = first["next_batch"].as_str().unwrap().to_owned();
    for (i, state) in ["online", "unavailable", "online", "unavailable", "online"]
        .iter()
        .enumerate()
    {
        c.put_presence(
            &alice,
            &alice.user_id,
            json!({"presence": state, "status_msg": format!("#{i}")}),
        )
        .await;
    }
    s.signal("TERM");
    let s = s.restart().await;
    let c = s.client();
    let body = c
        .sync(
            &bob,
            &format!("timeout=0&set_presence=offline&since={}", q(&since)),
        )
        .await;
    let alice_state =
        presence_of(&body, &alice.user_id).expect("alice's change survives a restart");
    assert_eq!(alice_state["status_msg"], "#4");
    let next = body["next_batch"].as_str().unwrap().to_owned();
    let again = c
        .sync(
            &bob,
            &format!("timeout=0&set_presence=offline&since={}", q(&next)),
        )
        .await;
    assert!(
        again.get("presence").is_none(),
        "positions continue after a restart: {again}"
    );
    c.put_presence(
        &alice,
        &alice.user_id,
        json!({"presence": "unavailable", "status_msg": "after"}),
    )
    .await;
    let after = c
        .sync(
            &bob,
            &format!("timeout=0&set_presence=offline&since={}", q(&next)),
        )
        .await;
    assert_eq!(
        presence_of(&after, &alice.user_id).unwrap()["status_msg"],
        "after"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_write() {
    let s = server("").await;
    let c = s.client();
    let writers = users(&c, &["w0", "w1", "w2", "w3", "w4", "w5", "w6", "w7"]).await;
    let acked = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::<
        String,
        u64,
    >::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in writers.clone() {
        let (c, acked, stop) = (c.clone(), acked.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let path = format!("/_matrix/client/v3/presence/{}/status", q(&w.user_id));
                let body = json!({"presence": "online", "status_msg": format!("{n}")});
                let req = c.request(
                    Method::PUT,
                    &path,
                    Some(&w.token),
                    Some(RequestBody::Json(body)),
                );
                match tokio::time::timeout(Duration::from_secs(5), req).await {
                    Ok((StatusCode::OK, _)) => {
                        acked.lock().unwrap().insert(w.user_id.clone(), n);
                    }
                    _ => break,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.signal("KILL");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.values().sum::<u64>() > 50,
        "too few writes to mean anything: {acked:?}"
    );
    let s = s.restart().await;
    let c = s.client();
    let admin = c.register("admin", "password", true).await.unwrap();
    for w in &writers {
        let Some(&n) = acked.get(&w.user_id) else {
            continue;
        };
        let body = c
            .ok(
                Method::GET,
                "/_presenced/admin/v1/presence?limit=1000",
                Some(&admin.token),
                Value::Null,
            )
            .await;
        let row = body["presence"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["user_id"] == w.user_id.as_str())
            .cloned();
        let got: u64 = row
            .and_then(|r| r["status_msg"].as_str().map(str::to_owned))
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        assert!(
            got >= n,
            "{}: acknowledged #{n} but #{got} survived",
            w.user_id
        );
    }
}

#[tokio::test]
async fn bad_inputs_get_clear_matrix_errors() {
    let s = server("").await;
    let c = s.client();
    let (alice, _bob) = pair(&c).await;
    let root = c.register("root", "password", true).await.unwrap();
    let me = q(&alice.user_id);
    let put = |path: String, body: &str| (Method::PUT, path, body.to_owned());
    type Case<'a> = ((Method, String, String), Option<&'a str>, u16, &'a str);
    let mut cases: Vec<Case<'_>> = vec![
        (
            put(
                format!("/_matrix/client/v3/presence/{me}/status"),
                "{not json",
            ),
            Some(&alice.token),
            400,
            "M_NOT_JSON",
        ),
        (
            put(format!("/_matrix/client/v3/presence/{me}/status"), "[1]"),
            Some(&alice.token),
            400,
            "M_BAD_JSON",
        ),
        (
            put(
                format!("/_matrix/client/v3/presence/{me}/status"),
                r#"{"presence": 5}"#,
            ),
            Some(&alice.token),
            400,
            "M_UNKNOWN",
        ),
        (
            put(
                format!("/_matrix/client/v3/presence/{me}/status"),
                r#"{"presence": "online", "x": 1}"#,
            ),
            Some(&alice.token),
            400,
            "M_UNKNOWN",
        ),
        (
            put(
                format!("/_matrix/client/v3/presence/{me}/status"),
                r#"{"presence": "online", "status_msg": null}"#,
            ),
            Some(&alice.token),
            400,
            "M_UNKNOWN",
        ),
        (
            put(
                format!("/_matrix/client/v3/presence/{me}/status"),
                &format!(
                    r#"{{"presence": "online", "status_msg": "{}"}}"#,
                    "x".repeat(5000)
                ),
            ),
            Some(&alice.token),
            400,
            "M_INVALID_PARAM",
        ),
        (
            put(
                format!("/_matrix/client/v3/presence/{me}/status"),
                &format!(
                    r#"{{"presence": "online", "status_msg": "{}"}}"#,
                    "x".repeat(2_000_000)
                ),
            ),
            Some(&alice.token),
            413,
            "M_TOO_LARGE",
        ),
        (
            put(
                format!("/_matrix/client/v3/presence/{me}/status"),
                r#"{"presence": "org.matrix.msc3026.busy"}"#,
            ),
            Some(&alice.token),
            400,
            "M_UNKNOWN",
        ),
        (
            put(
                format!("/_matrix/client/v3/presence/{me}/status"),
                r#"{"presence": "online"}"#,
            ),
            Some("not-a-token"),
            401,
            "M_UNKNOWN_TOKEN",
        ),
        (
            put(
                format!("/_matrix/client/v3/presence/{me}/status"),
                r#"{"presence": "online"}"#,
            ),
            None,
            401,
            "M_MISSING_TOKEN",
        ),
        (
            put(
                "/_matrix/client/v3/presence/%40nocolon/status".to_owned(),
                r#"{"presence": "online"}"#,
            ),
            Some(&alice.token),
            400,
            "M_INVALID_PARAM",
        ),
        (
            put(
                "/_matrix/client/v3/presence/%40%3Atest/status".to_owned(),
                r#"{"presence": "online"}"#,
            ),
            Some(&alice.token),
            400,
            "M_INVALID_PARAM",
        ),
        (
            put(
                "/_matrix/client/v3/presence/%40al%20ice%3Atest/status".to_owned(),
                r#"{"presence": "online"}"#,
            ),
            Some(&alice.token),
            400,
            "M_INVALID_PARAM",
        ),
        (
            (
                Method::GET,
                "/_matrix/client/v3/presence/nope/status".to_owned(),
                String::new(),
            ),
            Some(&alice.token),
            400,
            "M_INVALID_PARAM",
        ),
        (
            (
                Method::GET,
                "/_matrix/client/v3/sync?set_presence=busy".to_owned(),
                String::new(),
            ),
            Some(&alice.token),
            400,
            "M_INVALID_PARAM",
        ),
        (
            (
                Method::GET,
                "/_matrix/client/v3/sync?since=garbage".to_owned(),
                String::new(),
            ),
            Some(&alice.token),
            400,
            "M_INVALID_PARAM",
        ),
        (
            (
                Method::GET,
                "/_matrix/client/v3/sync?timeout=soon".to_owned(),
                String::new(),
            ),
            Some(&alice.token),
            400,
            "M_INVALID_PARAM",
        ),
        (
            (
                Method::GET,
                "/_matrix/client/v3/sync?filter=%7Bbad".to_owned(),
                String::new(),
            ),
            Some(&alice.token),
            400,
            "M_NOT_JSON",
        ),
        (
            (
                Method::GET,
                "/_matrix/client/v3/sync?filter=%7B%22room%22%3A%5B%5D%7D".to_owned(),
                String::new(),
            ),
            Some(&alice.token),
            400,
            "M_BAD_JSON",
        ),
        (
            (
                Method::GET,
                "/_matrix/client/v3/sync?filter=12345".to_owned(),
                String::new(),
            ),
            Some(&alice.token),
            400,
            "M_INVALID_PARAM",
        ),
        (
            (
                Method::POST,
                "/_presenced/admin/v1/send_local_online_presence_to".to_owned(),
                r#"{"users": []}"#.to_owned(),
            ),
            Some(&alice.token),
            403,
            "M_FORBIDDEN",
        ),
    ];
    // Query parameters of the admin listing that are not non-negative integers.
    for query in [
        "from=x",
        "from=-1",
        "from=1.5",
        "limit=abc",
        "limit=-5",
        "from=99999999999999999999999",
    ] {
        cases.push((
            (
                Method::GET,
                format!("/_presenced/admin/v1/presence?{query}"),
                String::new(),
            ),
            Some(&root.token),
            400,
            "M_INVALID_PARAM",
        ));
    }
    // Path parameters that do not percent-decode to UTF-8.
    for (method, path) in [
        (Method::GET, "/_matrix/client/v3/presence/%ff/status"),
        (Method::PUT, "/_matrix/client/v3/presence/%c3%28/status"),
        (Method::GET, "/_matrix/client/v3/user/%ff/filter/1"),
        (Method::GET, "/_matrix/client/v3/rooms/%ff/state"),
        (
            Method::PUT,
            "/_presenced/admin/v1/rooms/%ff/members/%40a%3Atest",
        ),
    ] {
        cases.push((
            (
                method,
                path.to_owned(),
                r#"{"presence": "online"}"#.to_owned(),
            ),
            Some(&root.token),
            400,
            "M_INVALID_PARAM",
        ));
    }
    for ((method, path, body), token, status, errcode) in cases {
        let body = (!body.is_empty()).then_some(RequestBody::Raw(body));
        let (st, data) = c.request(method.clone(), &path, token, body).await;
        assert_eq!(
            (st.as_u16(), data["errcode"].as_str()),
            (status, Some(errcode)),
            "{method} {} -> {data}",
            &path[..path.len().min(80)]
        );
        assert!(
            data["error"].is_string(),
            "every error has a message: {data}"
        );
    }
    // The server is still healthy afterwards.
    let (st, _) = c
        .put_presence(&alice, &alice.user_id, json!({"presence": "online"}))
        .await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn admin_send_local_online_presence_to_gives_a_snapshot() {
    let s = server("").await;
    let c = s.client();
    let admin = c.register("admin", "password", true).await.unwrap();
    let (alice, bob) = pair(&c).await;
    c.put_presence(
        &alice,
        &alice.user_id,
        json!({"presence": "online", "status_msg": "hello"}),
    )
    .await;
    let first = c.sync(&bob, "timeout=0&set_presence=offline").await;
    let next = first["next_batch"].as_str().unwrap().to_owned();
    let empty = c
        .sync(
            &bob,
            &format!("timeout=0&set_presence=offline&since={}", q(&next)),
        )
        .await;
    assert!(empty.get("presence").is_none());
    c.ok(
        Method::POST,
        "/_presenced/admin/v1/send_local_online_presence_to",
        Some(&admin.token),
        json!({"users": [bob.user_id]}),
    )
    .await;
    let snap = c
        .sync(
            &bob,
            &format!("timeout=0&set_presence=offline&since={}", q(&next)),
        )
        .await;
    assert_eq!(
        presence_of(&snap, &alice.user_id).unwrap()["status_msg"],
        "hello",
        "status kept"
    );
    let (st, body) = c
        .request(
            Method::POST,
            "/_presenced/admin/v1/send_local_online_presence_to",
            Some(&admin.token),
            Some(RequestBody::Json(json!({"users": ["@ghost:test"]}))),
        )
        .await;
    assert_eq!(
        (st, body["errcode"].as_str()),
        (StatusCode::NOT_FOUND, Some("M_NOT_FOUND"))
    );
}

/// The value of the counter `name` on the server's metrics (0 when not yet exported).
async fn counter(c: &Client, name: &str) -> f64 {
    let text = c.metrics_text().await;
    text.lines()
        .filter_map(|l| l.strip_prefix(name))
        .find_map(|rest| rest.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Changes as fast as one client can make them, with a watcher long-polling: `n` PUTs by
/// `alice`, and the number of `/sync` answers `bob` needed to see the last one.
async fn watch_a_burst(c: &Client, alice: &User, bob: &User, n: usize) -> usize {
    let first = c.sync(bob, "timeout=0&set_presence=offline").await;
    let mut since = first["next_batch"].as_str().unwrap().to_owned();
    let last = format!("burst {}", n - 1);
    let poller = {
        let (c, bob, last) = (c.clone(), bob.clone(), last.clone());
        tokio::spawn(async move {
            let mut answers = 0;
            loop {
                let body = c
                    .sync(
                        &bob,
                        &format!("timeout=5000&set_presence=offline&since={}", q(&since)),
                    )
                    .await;
                answers += 1;
                since = body["next_batch"].as_str().unwrap().to_owned();
                if !sender_with_status(&body, &last).is_empty() {
                    return answers;
                }
            }
        })
    };
    for i in 0..n {
        let state = if i % 2 == 0 { "online" } else { "unavailable" };
        c.put_presence(
            alice,
            &alice.user_id,
            json!({"presence": state, "status_msg": format!("burst {i}")}),
        )
        .await;
    }
    tokio::time::timeout(Duration::from_secs(20), poller)
        .await
        .expect("the watcher never saw the last change")
        .unwrap()
}

/// The sender of the presence event whose status is `status` ("" if none).
fn sender_with_status(sync: &Value, status: &str) -> String {
    sync["presence"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["content"]["status_msg"] == status)
        .and_then(|e| e["sender"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// `presence.sync_gather`: while changes keep arriving, a woken `/sync` waits a few
/// milliseconds for more, so a burst reaches a watcher in fewer answers; one change on an
/// idle server is answered at once; `sync_gather: 0` never waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_woken_sync_gathers_while_changes_keep_arriving() {
    const GATHERED: &str = "presenced_sync_gathered_total";
    let s = server("").await;
    let c = s.client();
    let (alice, bob) = pair(&c).await;
    let answers = watch_a_burst(&c, &alice, &bob, 60).await;
    let gathered = counter(&c, GATHERED).await;
    assert!(gathered >= 1.0, "no answer gathered during the burst");
    assert!(answers < 60, "{answers} answers for 60 changes");

    // Idle: one change after a quiet second, answered without gathering, at once.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let first = c.sync(&bob, "timeout=0&set_presence=offline").await;
    let since = first["next_batch"].as_str().unwrap().to_owned();
    let poll = {
        let (c, bob) = (c.clone(), bob.clone());
        tokio::spawn(async move {
            let body = c
                .sync(
                    &bob,
                    &format!("timeout=5000&set_presence=offline&since={}", q(&since)),
                )
                .await;
            (body, std::time::Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = std::time::Instant::now();
    c.put_presence(
        &alice,
        &alice.user_id,
        json!({"presence": "online", "status_msg": "alone"}),
    )
    .await;
    let (body, answered) = poll.await.unwrap();
    assert!(presence_of(&body, &alice.user_id).is_some(), "{body}");
    assert!(
        answered.duration_since(sent) < Duration::from_millis(500),
        "an idle server's answer took {:?}",
        answered.duration_since(sent)
    );
    assert_eq!(
        counter(&c, GATHERED).await,
        gathered,
        "the idle change was gathered"
    );

    let s = server("presence: {enabled: true, sync_gather: 0s}").await;
    let c = s.client();
    let (alice, bob) = pair(&c).await;
    watch_a_burst(&c, &alice, &bob, 30).await;
    assert_eq!(counter(&c, GATHERED).await, 0.0, "sync_gather: 0 gathered");
}

/// `set_presence_for_users` on the admin API: a local and a remote user's states replaced
/// (no device; the local one's room-mate sees it), while an unknown local user, an unknown
/// presence or a non-admin changes nothing.
#[tokio::test]
async fn admin_set_presence_for_users_forces_states() {
    let s = server("").await;
    let c = s.client();
    let admin = c.register("admin", "password", true).await.unwrap();
    let (alice, bob) = pair(&c).await;
    const PATH: &str = "/_presenced/admin/v1/set_presence_for_users";
    for (who, body, status, errcode) in [
        (
            &alice,
            json!({"users": {alice.user_id.as_str(): {"presence": "online"}}}),
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
        ),
        (
            &admin,
            json!({"users": {alice.user_id.as_str(): {"presence": "away"}}}),
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        ),
        (
            &admin,
            json!({"users": {alice.user_id.as_str(): {"presence": "online"},
                             "@ghost:test": {"presence": "online"}}}),
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        ),
        (
            &admin,
            json!({"users": {}}),
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        ),
    ] {
        let (st, data) = c
            .request(
                Method::POST,
                PATH,
                Some(&who.token),
                Some(RequestBody::Json(body.clone())),
            )
            .await;
        assert_eq!(
            (st, data["errcode"].as_str()),
            (status, Some(errcode)),
            "{body}"
        );
    }
    let (_, untouched) = get_status(&c, &bob, &alice.user_id).await;
    assert_eq!(untouched["presence"], "offline", "{untouched}");

    c.ok(
        Method::POST,
        PATH,
        Some(&admin.token),
        json!({"users": {
            alice.user_id.as_str(): {"presence": "unavailable", "status_msg": "forced"},
            "@far:remote.example": {"presence": "online"},
        }}),
    )
    .await;
    let (_, seen) = get_status(&c, &bob, &alice.user_id).await;
    assert_eq!(seen["presence"], "unavailable", "{seen}");
    assert_eq!(seen["status_msg"], "forced", "{seen}");
    let listing = c
        .ok(
            Method::GET,
            "/_presenced/admin/v1/presence?limit=1000",
            Some(&admin.token),
            json!(null),
        )
        .await;
    let far = listing["presence"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["user_id"] == "@far:remote.example")
        .cloned();
    assert_eq!(
        far.map(|p| p["presence"].clone()),
        Some(json!("online")),
        "{listing}"
    );
}

/// One user sending many distinct large inline filters once grew the server by gigabytes:
/// the filter cache counted entries, not bytes.
#[tokio::test]
async fn inline_filters_of_one_user_stay_within_the_cache_budget() {
    // The cache's defaults: 256 KiB per user, entries over 32 KiB not kept.
    const PER_USER: f64 = 256.0 * 1024.0;
    let s = server("").await;
    let c = s.client();
    let alice = users(&c, &["alice"]).await.remove(0);
    let filter = |tag: &str, senders: usize| {
        let senders: Vec<String> = (0..senders).map(|i| format!("@{tag}x{i:04}:t")).collect();
        q(&json!({"presence": {"not_senders": senders}}).to_string())
    };
    // About 8 KB each (kept), 40 of them: five times the user's budget.
    for i in 0..40 {
        let params = format!("timeout=0&filter={}", filter(&format!("f{i}"), 300));
        c.sync(&alice, &params).await;
    }
    let held = c.metric("presenced_sync_filter_cache_bytes").await;
    assert!(held > 0.0 && held <= PER_USER, "{held}");
    // A filter over the entry limit still applies; it is parsed again each time.
    let big = filter("big", 2_000);
    assert!(big.len() > 40_000);
    for _ in 0..3 {
        c.sync(&alice, &format!("timeout=0&filter={big}")).await;
    }
    assert!(c.metric("presenced_sync_filter_cache_bytes").await <= PER_USER);
}

#[tokio::test]
async fn metrics_are_exported() {
    let s = server("").await;
    let c = s.client();
    let (alice, _bob) = pair(&c).await;
    c.put_presence(&alice, &alice.user_id, json!({"presence": "online"}))
        .await;
    c.sync(&alice, "timeout=0&set_presence=offline").await;
    let text = s.client().metrics_text().await;
    for name in [
        "presenced_presence_updates_total",
        "presenced_presence_deliveries_total",
        "presenced_sync_duration_seconds",
        "presenced_store_write_duration_seconds",
        "presenced_router_calls_total",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no HELP line:\n{text}"
        );
    }
    // Prometheus naming: `_total` only on counters.
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut parts = line.split_whitespace().skip(2);
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        assert_eq!(
            name.ends_with("_total"),
            kind == "counter",
            "metric {name} of type {kind}"
        );
    }
}

/// Synapse:
/// `tests/handlers/test_presence.py::PresenceDisabledSyncTestCase::test_stale_presence_flushed_offline_and_sent_on_sync`.
#[tokio::test]
async fn stale_presence_flushed_offline_when_presence_disabled() {
    let s = server("").await;
    let c = s.client();
    let (alice, bob) = pair(&c).await;
    c.put_presence(
        &alice,
        &alice.user_id,
        json!({"presence": "online", "status_msg": "stale"}),
    )
    .await;
    let first = c.sync(&bob, "timeout=0&set_presence=offline").await;
    let since = first["next_batch"].as_str().unwrap().to_owned();
    s.signal("TERM");
    // Same database, presence now disabled.
    s.workspace.write(
        "presenced.yaml",
        &test_config("use_presence: false\npresence: {enabled: false}"),
    );
    let s = s.restart().await;
    assert!(
        s.log_text().contains("Restored presence state"),
        "{}",
        s.log_text()
    );
    let c = s.client();
    let body = c
        .sync(
            &bob,
            &format!("timeout=0&set_presence=offline&since={}", q(&since)),
        )
        .await;
    let alice_state =
        presence_of(&body, &alice.user_id).expect("the flush reaches syncing clients");
    assert_eq!(
        alice_state,
        json!({"presence": "offline", "last_active_ago": alice_state["last_active_ago"]})
    );
    assert!(
        alice_state.get("status_msg").is_none(),
        "the status is cleared"
    );
    let next = body["next_batch"].as_str().unwrap();
    let again = c
        .sync(
            &bob,
            &format!("timeout=0&set_presence=offline&since={}", q(next)),
        )
        .await;
    assert!(
        again.get("presence").is_none(),
        "then nothing more: {again}"
    );
}

/// A change whose commit fails is answered with an error and is never shown afterwards: the
/// previous state stays what `GET` and room-mates' syncs return, and after a restart the
/// stream resumes above every token handed out, so a client holding one misses nothing.
#[tokio::test]
async fn a_change_that_cannot_be_committed_is_put_back_and_tokens_never_go_back() {
    let s = server("").await;
    let c = s.client();
    let (alice, bob) = pair(&c).await;
    let committed = json!({"presence": "online", "status_msg": "committed"});
    let (st, _) = c.put_presence(&alice, &alice.user_id, committed).await;
    assert_eq!(st, StatusCode::OK);
    let first = c.sync(&bob, "timeout=0").await;
    let token = first["next_batch"].as_str().unwrap().to_owned();

    // Another connection holds SQLite's write lock: the server's commit times out.
    let db = s.workspace.path().join("data/presenced.db");
    let locker = rusqlite::Connection::open(&db).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let failed = json!({"presence": "unavailable", "status_msg": "never committed"});
    let (st, _) = c.put_presence(&alice, &alice.user_id, failed).await;
    assert_eq!(st, StatusCode::INTERNAL_SERVER_ERROR);
    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);

    let (st, got) = get_status(&c, &bob, &alice.user_id).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        (got["presence"].as_str(), got["status_msg"].as_str()),
        (Some("online"), Some("committed")),
        "GET shows the change that failed: {got}"
    );
    let after = c.sync(&bob, &format!("timeout=0&since={token}")).await;
    if let Some(p) = presence_of(&after, &alice.user_id) {
        assert_eq!(
            (p["presence"].as_str(), p["status_msg"].as_str()),
            (Some("online"), Some("committed")),
            "a room-mate's sync shows the change that failed: {p}"
        );
    }
    let held = after["next_batch"].as_str().unwrap().to_owned();

    // Killed and restarted: bob's token stays valid and the next real change reaches him.
    s.signal("KILL");
    let s = s.restart().await;
    let c = s.client();
    let (st, got) = get_status(&c, &bob, &alice.user_id).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(got["status_msg"], "committed", "{got}");
    let next = json!({"presence": "online", "status_msg": "after the restart"});
    let (st, _) = c.put_presence(&alice, &alice.user_id, next).await;
    assert_eq!(st, StatusCode::OK);
    let resumed = c.sync(&bob, &format!("timeout=0&since={held}")).await;
    assert_eq!(
        presence_of(&resumed, &alice.user_id).map(|p| p["status_msg"].clone()),
        Some(json!("after the restart")),
        "a client holding a token from before the restart missed the next change: {resumed}"
    );
}
