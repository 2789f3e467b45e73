//! The `rc_*` limits over HTTP against the real binary, each with the reference's defaults
//! (the other limits raised, so only the one under test can answer 429): logins by account,
//! by failed attempt and by address, registrations by address (shared-secret registration
//! exempt), joins by user and by room, room creation; and the password check an unknown
//! user costs.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    matrix::{Client, RequestBody, TestServer, User, q, test_config},
    support::Workspace,
};

const LOGIN: &str = "/_matrix/client/v3/login";
const BIG: &str = "{per_second: 10000, burst_count: 100000}";

async fn server(extra: &str) -> TestServer {
    TestServer::start(Workspace::new(), &test_config(extra)).await
}

/// `POST /login` with a password: (status, `Retry-After` header, body).
async fn login(base: &str, user: &str, password: &str) -> (StatusCode, Option<String>, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}{LOGIN}"))
        .json(&json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user},
            "password": password,
        }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry_after, response.json().await.unwrap())
}

/// Asserts a 429 `M_LIMIT_EXCEEDED` with a positive `retry_after_ms` and its header.
fn assert_limited(status: StatusCode, retry_after: Option<&str>, body: &Value) {
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED", "{body}");
    assert!(body["retry_after_ms"].as_u64().unwrap() > 0, "{body}");
    let header: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!(header >= 1, "{header}");
}

async fn request(
    c: &Client,
    method: Method,
    path: &str,
    user: &User,
    body: Value,
) -> (StatusCode, Value) {
    c.request(
        method,
        path,
        Some(&user.token),
        Some(RequestBody::Json(body)),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fourth_quick_bad_login_for_an_account_is_limited() {
    // rc_login.failed_attempts at its default (0.17/s, burst 3).
    let s = server(&format!("rc_login: {{address: {BIG}, account: {BIG}}}")).await;
    let c = s.client();
    c.register("ann", "right", false).await.unwrap();
    for _ in 0..3 {
        let (status, _, body) = login(&s.base, "ann", "wrong").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["errcode"], "M_FORBIDDEN");
    }
    let (status, retry_after, body) = login(&s.base, "ann", "wrong").await;
    assert_limited(status, retry_after.as_deref(), &body);
    // Even the right password waits: the account is what is limited.
    let (status, retry_after, body) = login(&s.base, "ann", "right").await;
    assert_limited(status, retry_after.as_deref(), &body);
    // Another account is not affected, and neither is an unknown one's first try.
    c.register("bob", "right", false).await.unwrap();
    let (status, _, body) = login(&s.base, "bob", "right").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = login(&s.base, "nobody", "x").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_limited_by_client_address_and_by_account() {
    // rc_login.address at its default (0.003/s, burst 5): whoever is named.
    let s = server(&format!(
        "rc_login: {{account: {BIG}, failed_attempts: {BIG}}}"
    ))
    .await;
    let c = s.client();
    c.register("ann", "right", false).await.unwrap();
    for name in ["ann", "u1", "u2", "u3", "u4"] {
        let (status, _, body) = login(&s.base, name, "wrong").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{name}: {body}");
    }
    let (status, retry_after, body) = login(&s.base, "ann", "right").await;
    assert_limited(status, retry_after.as_deref(), &body);

    // rc_login.account at its default (0.003/s, burst 5): successful logins of one account.
    let s = server(&format!(
        "rc_login: {{address: {BIG}, failed_attempts: {BIG}}}"
    ))
    .await;
    let c = s.client();
    c.register("ann", "right", false).await.unwrap();
    for _ in 0..5 {
        let (status, _, body) = login(&s.base, "ann", "right").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, retry_after, body) = login(&s.base, "ann", "right").await;
    assert_limited(status, retry_after.as_deref(), &body);
    let (status, _, body) = login(&s.base, "ann", "wrong").await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a failed login is not a login of the account: {body}"
    );
}

/// `presenced_password_hashes_total` from the server's metrics.
async fn password_hashes(c: &Client) -> u64 {
    let text = c.metrics_text().await;
    text.lines()
        .find_map(|l| l.strip_prefix("presenced_password_hashes_total "))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_user_costs_a_password_check_like_a_known_one() {
    let s = server("").await;
    let c = s.client();
    c.register("ann", "right", false).await.unwrap();
    let before = password_hashes(&c).await;
    let (status, _, known) = login(&s.base, "ann", "wrong").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let after_known = password_hashes(&c).await;
    assert_eq!(after_known, before + 1, "a wrong password is one check");
    let (status, _, unknown) = login(&s.base, "nobody", "wrong").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        password_hashes(&c).await,
        after_known + 1,
        "an unknown user is checked against a hash too"
    );
    assert_eq!(known, unknown, "the same answer for both");
    assert_eq!(unknown["errcode"], "M_FORBIDDEN");
    let (status, _, remote) = login(&s.base, "@ann:elsewhere", "wrong").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(remote, known);
    assert_eq!(password_hashes(&c).await, after_known + 2);
}

const OPEN_REGISTRATION: &str =
    "enable_registration: true\nenable_registration_without_verification: true\n";

async fn register_open(base: &str, name: &str) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}/_matrix/client/v3/register"))
        .json(&json!({
            "username": name,
            "password": "pw",
            "auth": {"type": "m.login.dummy"},
        }))
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_is_limited_by_address_but_not_with_the_shared_secret() {
    // rc_registration at its default (0.17/s, burst 3).
    let s = server(&format!("{OPEN_REGISTRATION}rc_registration: {{}}\n")).await;
    let c = s.client();
    for name in ["r1", "r2", "r3"] {
        let (status, body) = register_open(&s.base, name).await;
        assert_eq!(status, StatusCode::OK, "{name}: {body}");
    }
    let (status, body) = register_open(&s.base, "r4").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
    // The first step of the flow is limited too (checked, not counted).
    let (status, body) = c
        .request(
            Method::POST,
            "/_matrix/client/v3/register",
            None,
            Some(RequestBody::Json(
                json!({"username": "r5", "password": "pw"}),
            )),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    // The operator's shared-secret registrations are never limited.
    for i in 0..6 {
        c.register(&format!("admin{i}"), "pw", false).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_flood_is_limited_per_user_and_per_room() {
    // rc_joins.local at its default (0.1/s, burst 10).
    let s = server("rc_joins: {}\n").await;
    let c = s.client();
    let owner = c.register("owner", "pw", false).await.unwrap();
    let joiner = c.register("joiner", "pw", false).await.unwrap();
    let mut rooms = Vec::new();
    for _ in 0..11 {
        rooms.push(c.create_room(&owner, false).await);
    }
    for room in &rooms[..10] {
        assert_eq!(c.join(&joiner, room).await.0, StatusCode::OK);
    }
    let (status, errcode) = c.join(&joiner, &rooms[10]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(errcode.as_deref(), Some("M_LIMIT_EXCEEDED"));
    // Joining a room one is already in is not a join.
    assert_eq!(c.join(&joiner, &rooms[0]).await.0, StatusCode::OK);

    // rc_joins_per_room: every join counts, the creator's included.
    let s = server("rc_joins_per_room: {per_second: 0.01, burst_count: 3}\n").await;
    let c = s.client();
    let owner = c.register("owner", "pw", false).await.unwrap();
    let room = c.create_room(&owner, false).await;
    for i in 0..2 {
        let u = c.register(&format!("u{i}"), "pw", false).await.unwrap();
        assert_eq!(c.join(&u, &room).await.0, StatusCode::OK);
    }
    let late = c.register("late", "pw", false).await.unwrap();
    let (status, errcode) = c.join(&late, &room).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(errcode.as_deref(), Some("M_LIMIT_EXCEEDED"));
    let other = c.create_room(&owner, false).await;
    assert_eq!(
        c.join(&late, &other).await.0,
        StatusCode::OK,
        "another room"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_creation_and_messages_are_limited_per_user() {
    // rc_room_creation at its default (0.016/s, burst 10).
    let s = server("rc_room_creation: {}\n").await;
    let c = s.client();
    let ann = c.register("ann", "pw", false).await.unwrap();
    for _ in 0..10 {
        c.create_room(&ann, false).await;
    }
    let (status, body) = request(
        &c,
        Method::POST,
        "/_matrix/client/v3/createRoom",
        &ann,
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let bob = c.register("bob", "pw", false).await.unwrap();
    c.create_room(&bob, false).await;

    // rc_message at its default (0.2/s, burst 10): a room creation and each event count.
    let s = server("rc_message: {}\n").await;
    let c = s.client();
    let ann = c.register("ann", "pw", false).await.unwrap();
    let room = c.create_room(&ann, false).await;
    let send = |i: usize| {
        format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/t{i}",
            q(&room)
        )
    };
    for i in 0..9 {
        let (status, body) = request(&c, Method::PUT, &send(i), &ann, json!({"body": "hi"})).await;
        assert_eq!(status, StatusCode::OK, "{i}: {body}");
    }
    let (status, body) = request(&c, Method::PUT, &send(9), &ann, json!({"body": "hi"})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
}
