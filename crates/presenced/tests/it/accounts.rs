//! Accounts over HTTP against the real binary: shared-secret registration as the reference's
//! `register_new_matrix_user` does it, open registration with the dummy auth stage, login,
//! logout, whoami, token errors, and stored filters.

use hmac::{Hmac, KeyInit, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    matrix::{Client, RequestBody, SHARED_SECRET, TestServer, User, q, test_config},
    support::{Workspace, config_yaml},
};

const ADMIN_REGISTER: &str = "/_synapse/admin/v1/register";

/// The reference tool's MAC: hex HMAC-SHA1 over `nonce\0user\0password\0admin|notadmin`.
fn mac(secret: &str, nonce: &str, user: &str, password: &str, admin: bool) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    let role: &[u8] = if admin { b"admin" } else { b"notadmin" };
    mac.update(&[nonce.as_bytes(), user.as_bytes(), password.as_bytes(), role].join(&0u8));
    hex::encode(mac.finalize().into_bytes())
}

async fn nonce(client: &Client) -> String {
    let data = client
        .ok(Method::GET, ADMIN_REGISTER, None, Value::Null)
        .await;
    data["nonce"].as_str().unwrap().to_owned()
}

async fn post(
    client: &Client,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> (StatusCode, Value) {
    client
        .request(Method::POST, path, token, Some(RequestBody::Json(body)))
        .await
}

async fn get(client: &Client, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    client.request(Method::GET, path, token, None).await
}

fn errcode(body: &Value) -> &str {
    body["errcode"].as_str().unwrap_or("")
}

async fn whoami(client: &Client, token: &str) -> (StatusCode, Value) {
    get(client, "/_matrix/client/v3/account/whoami", Some(token)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_secret_registration_creates_a_logged_in_user() {
    let server = TestServer::start(Workspace::new(), &test_config("")).await;
    let c = server.client();
    let n = nonce(&c).await;
    assert_eq!(n.len(), 128, "{n}");
    assert!(n.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(n, nonce(&c).await, "every nonce is new");

    let body = json!({
        "nonce": n, "username": "alice", "password": "pw-alice", "admin": false,
        "displayname": "Alice A.", "mac": mac(SHARED_SECRET, &n, "alice", "pw-alice", false),
    });
    let (status, data) = post(&c, ADMIN_REGISTER, None, body).await;
    assert_eq!(status, StatusCode::OK, "{data}");
    assert_eq!(data["user_id"], "@alice:test");
    assert_eq!(data["home_server"], "test");
    let token = data["access_token"].as_str().unwrap();
    let device = data["device_id"].as_str().unwrap();
    assert_eq!(token.len(), 43, "256 random bits, URL-safe base64");
    assert_eq!(device.len(), 10);
    assert!(device.bytes().all(|b| b.is_ascii_uppercase()));

    let (status, me) = whoami(&c, token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        me,
        json!({"user_id": "@alice:test", "device_id": device, "is_guest": false})
    );

    // Admins may use the admin API; others may not.
    let admin = c.register("root", "pw-root", true).await.unwrap();
    let (status, _) = get(&c, "/_presenced/admin/v1/presence", Some(&admin.token)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, data) = get(&c, "/_presenced/admin/v1/presence", Some(token)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(errcode(&data), "M_FORBIDDEN");

    // The username is lowercased; the MAC covers it as sent.
    let n = nonce(&c).await;
    let body = json!({
        "nonce": n, "username": "Carol", "password": "pw", "admin": false,
        "mac": mac(SHARED_SECRET, &n, "Carol", "pw", false),
    });
    let (status, data) = post(&c, ADMIN_REGISTER, None, body).await;
    assert_eq!(status, StatusCode::OK, "{data}");
    assert_eq!(data["user_id"], "@carol:test");
    // And the new user can log in with the password.
    let carol = c.login("carol", "pw", None).await;
    assert_eq!(carol.user_id, "@carol:test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_secret_registration_rejects_bad_requests() {
    let server = TestServer::start(Workspace::new(), &test_config("")).await;
    let c = server.client();
    let register = |n: &str, user: &str, mac_hex: String| json!({"nonce": n, "username": user, "password": "pw", "admin": false, "mac": mac_hex});

    // A wrong MAC: 403, and the nonce is used up.
    let n = nonce(&c).await;
    let (status, data) = post(
        &c,
        ADMIN_REGISTER,
        None,
        register(&n, "dave", mac("wrong", &n, "dave", "pw", false)),
    )
    .await;
    assert_eq!(
        (status, errcode(&data)),
        (StatusCode::FORBIDDEN, "M_FORBIDDEN"),
        "{data}"
    );
    assert_eq!(data["error"], "HMAC incorrect");
    let good = mac(SHARED_SECRET, &n, "dave", "pw", false);
    let (status, data) = post(&c, ADMIN_REGISTER, None, register(&n, "dave", good)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{data}");
    assert_eq!(data["error"], "unrecognised nonce");

    // The MAC covers the admin flag: a user signed as "notadmin" cannot claim admin.
    let n = nonce(&c).await;
    let mut body = register(&n, "erin", mac(SHARED_SECRET, &n, "erin", "pw", false));
    body["admin"] = json!(true);
    let (status, _) = post(&c, ADMIN_REGISTER, None, body).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A replayed nonce after a success.
    let n = nonce(&c).await;
    let body = register(&n, "frank", mac(SHARED_SECRET, &n, "frank", "pw", false));
    let (status, _) = post(&c, ADMIN_REGISTER, None, body.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, data) = post(&c, ADMIN_REGISTER, None, body).await;
    assert_eq!(
        (status, errcode(&data)),
        (StatusCode::BAD_REQUEST, "M_UNKNOWN")
    );

    // A nonce never issued.
    let (status, _) = post(
        &c,
        ADMIN_REGISTER,
        None,
        register(
            "00ff",
            "gina",
            mac(SHARED_SECRET, "00ff", "gina", "pw", false),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A taken name.
    let n = nonce(&c).await;
    let (status, data) = post(
        &c,
        ADMIN_REGISTER,
        None,
        register(&n, "frank", mac(SHARED_SECRET, &n, "frank", "pw", false)),
    )
    .await;
    assert_eq!(
        (status, errcode(&data)),
        (StatusCode::BAD_REQUEST, "M_USER_IN_USE"),
        "{data}"
    );

    // Invalid names.
    for bad in ["has space", "_hidden", "12345", "a:b", "presenced"] {
        let n = nonce(&c).await;
        let (status, data) = post(
            &c,
            ADMIN_REGISTER,
            None,
            register(&n, bad, mac(SHARED_SECRET, &n, bad, "pw", false)),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {data}");
        let expected = if bad == "presenced" {
            "M_USER_IN_USE"
        } else {
            "M_INVALID_USERNAME"
        };
        assert_eq!(errcode(&data), expected, "{bad}: {data}");
    }

    // Missing fields are M_BAD_JSON, as the reference words them.
    let n = nonce(&c).await;
    let (status, data) = post(
        &c,
        ADMIN_REGISTER,
        None,
        json!({"nonce": n, "password": "pw", "mac": "00"}),
    )
    .await;
    assert_eq!(
        (status, errcode(&data)),
        (StatusCode::BAD_REQUEST, "M_BAD_JSON")
    );
    assert_eq!(data["error"], "username must be specified");
    let (status, data) = post(&c, ADMIN_REGISTER, None, json!({"username": "x"})).await;
    assert_eq!(
        (status, errcode(&data)),
        (StatusCode::BAD_REQUEST, "M_BAD_JSON")
    );
    let (status, data) = c
        .request(
            Method::POST,
            ADMIN_REGISTER,
            None,
            Some(RequestBody::Raw("{not json".into())),
        )
        .await;
    assert_eq!(
        (status, errcode(&data)),
        (StatusCode::BAD_REQUEST, "M_NOT_JSON")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_secret_registration_needs_a_secret() {
    let server = TestServer::start(Workspace::new(), &config_yaml("")).await;
    let c = server.client();
    let n = nonce(&c).await;
    let body = json!({"nonce": n, "username": "a", "password": "pw", "mac": mac("", &n, "a", "pw", false)});
    let (status, data) = post(&c, ADMIN_REGISTER, None, body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(data["error"], "Shared secret registration is not enabled");
}

/// `presenced register` against a running server, as an operator creates a first user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_register_command_creates_users_that_can_log_in() {
    let server = TestServer::start(Workspace::new(), &test_config("")).await;
    let (ws, base) = (&server.workspace, server.base.as_str());
    let c = server.client();

    // The secret on the command line; the username is lowercased by the server.
    let register = [
        "register",
        "-u",
        "Alice",
        "-p",
        "pw-alice",
        "-k",
        SHARED_SECRET,
        base,
    ];
    let (code, stdout, stderr) = ws.run(&register).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "Registered @alice:test.\n");
    let alice = c.login("alice", "pw-alice", None).await;
    let (status, _) = get(&c, "/_presenced/admin/v1/presence", Some(&alice.token)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "not an admin by default");

    // The secret from the configuration, the password from a file, an admin.
    ws.write("pw.txt", "pw-root\n");
    let args = [
        "-c",
        "presenced.yaml",
        "register",
        "-u",
        "root",
        "--password-file",
        "pw.txt",
        "-a",
        base,
    ];
    let (code, stdout, stderr) = ws.run(&args).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "Registered @root:test.\n");
    let root = c.login("root", "pw-root", None).await;
    let (status, _) = get(&c, "/_presenced/admin/v1/presence", Some(&root.token)).await;
    assert_eq!(status, StatusCode::OK, "an admin");

    // A taken name fails with the server's words, unless --exists-ok.
    let (code, _, stderr) = ws.run(&register).await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains("M_USER_IN_USE") && stderr.contains("User ID already taken."),
        "{stderr}"
    );
    let (code, stdout, stderr) = ws.run(&[&register[..], &["--exists-ok"]].concat()).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "The user Alice already exists.\n");

    // A wrong secret.
    let (code, _, stderr) = ws
        .run(&["register", "-u", "bob", "-p", "pw", "-k", "wrong", base])
        .await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains("M_FORBIDDEN") && stderr.contains("HMAC incorrect"),
        "{stderr}"
    );

    // No server listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (code, _, stderr) = ws
        .run(&["register", "-u", "bob", "-p", "pw", "-k", "s", &url])
        .await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!("cannot reach the server at {url}")),
        "{stderr}"
    );

    // Neither a secret nor a configuration to read one from.
    let (code, _, stderr) = ws.run(&["register", "-u", "bob", "-p", "pw", base]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("no shared secret"), "{stderr}");
}

const OPEN_REGISTRATION: &str =
    "enable_registration: true\nenable_registration_without_verification: true\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_registration_uses_the_dummy_stage() {
    let server = TestServer::start(Workspace::new(), &test_config(OPEN_REGISTRATION)).await;
    let c = server.client();
    let path = "/_matrix/client/v3/register";

    let (status, flows) = post(
        &c,
        path,
        None,
        json!({"username": "ann", "password": "pw-ann"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(flows["flows"], json!([{"stages": ["m.login.dummy"]}]));
    assert_eq!(flows["params"], json!({}));
    let session = flows["session"].as_str().unwrap();

    let body = json!({
        "username": "ann", "password": "pw-ann", "device_id": "ANNPHONE",
        "initial_device_display_name": "Ann's phone",
        "auth": {"type": "m.login.dummy", "session": session},
    });
    let (status, data) = post(&c, path, None, body).await;
    assert_eq!(status, StatusCode::OK, "{data}");
    assert_eq!(data["user_id"], "@ann:test");
    assert_eq!(data["device_id"], "ANNPHONE");
    let (status, me) = whoami(&c, data["access_token"].as_str().unwrap()).await;
    assert_eq!(
        (status, me["device_id"].as_str()),
        (StatusCode::OK, Some("ANNPHONE"))
    );

    // The name is now taken, before and after the auth stage.
    let (status, data) = get(
        &c,
        "/_matrix/client/v3/register/available?username=ann",
        None,
    )
    .await;
    assert_eq!(
        (status, errcode(&data)),
        (StatusCode::BAD_REQUEST, "M_USER_IN_USE")
    );
    let (status, data) = post(&c, path, None, json!({"username": "ann", "password": "x"})).await;
    assert_eq!(
        (status, errcode(&data)),
        (StatusCode::BAD_REQUEST, "M_USER_IN_USE")
    );
    let (status, data) = get(
        &c,
        "/_matrix/client/r0/register/available?username=bea",
        None,
    )
    .await;
    assert_eq!((status, data), (StatusCode::OK, json!({"available": true})));
    let (status, data) = get(
        &c,
        "/_matrix/client/v3/register/available?username=Bad%20Name",
        None,
    )
    .await;
    assert_eq!(
        (status, errcode(&data)),
        (StatusCode::BAD_REQUEST, "M_INVALID_USERNAME")
    );

    // The dummy stage without a session (as matrix-nio sends it), and inhibit_login.
    let body = json!({"username": "bea", "password": "pw", "inhibit_login": true, "auth": {"type": "m.login.dummy"}});
    let (status, data) = post(&c, "/_matrix/client/r0/register", None, body).await;
    assert_eq!(status, StatusCode::OK, "{data}");
    assert_eq!(data, json!({"user_id": "@bea:test", "home_server": "test"}));
    assert_eq!(c.login("bea", "pw", None).await.user_id, "@bea:test");

    // A session the server never opened, another auth type, guests.
    let body = json!({"username": "cid", "password": "pw", "auth": {"type": "m.login.dummy", "session": "forged"}});
    let (status, _) = post(&c, path, None, body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let body = json!({"username": "cid", "password": "pw", "auth": {"type": "m.login.password"}});
    let (status, _) = post(&c, path, None, body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, data) = post(&c, &format!("{path}?kind=guest"), None, json!({})).await;
    assert_eq!(
        (status, errcode(&data)),
        (StatusCode::FORBIDDEN, "M_FORBIDDEN")
    );

    // Without a username the server picks one.
    let body = json!({"password": "pw", "auth": {"type": "m.login.dummy"}});
    let (status, data) = post(&c, path, None, body).await;
    assert_eq!(status, StatusCode::OK, "{data}");
    assert!(data["user_id"].as_str().unwrap().ends_with(":test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_is_off_by_default() {
    let server = TestServer::start(Workspace::new(), &test_config("")).await;
    let c = server.client();
    let body = json!({"username": "ann", "password": "pw", "auth": {"type": "m.login.dummy"}});
    let (status, data) = post(&c, "/_matrix/client/v3/register", None, body).await;
    assert_eq!(
        (status, errcode(&data)),
        (StatusCode::FORBIDDEN, "M_FORBIDDEN")
    );
    assert_eq!(data["error"], "Registration has been disabled");
    let (status, _) = get(
        &c,
        "/_matrix/client/v3/register/available?username=ann",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_logout_and_tokens() {
    let server = TestServer::start(Workspace::new(), &test_config("")).await;
    let c = server.client();
    let first = c.register("lena", "pw-lena", false).await.unwrap();

    let (status, flows) = get(&c, "/_matrix/client/v3/login", None).await;
    assert_eq!(
        (status, flows),
        (
            StatusCode::OK,
            json!({"flows": [{"type": "m.login.password"}]})
        )
    );

    // Localpart, full ID, the legacy `user` field, the r0 path.
    let by_local = c.login("lena", "pw-lena", None).await;
    let by_id = c.login("@lena:test", "pw-lena", None).await;
    assert_eq!(by_local.user_id, "@lena:test");
    assert_eq!(by_id.user_id, "@lena:test");
    let legacy = json!({"type": "m.login.password", "user": "LENA", "password": "pw-lena"});
    let (status, data) = post(&c, "/_matrix/client/r0/login", None, legacy).await;
    assert_eq!(status, StatusCode::OK, "{data}");
    assert_eq!(data["home_server"], "test");
    assert_ne!(data["device_id"], json!(null));

    // Wrong password, unknown user, another server's user: all the same 403.
    for (user, pw) in [
        ("lena", "nope"),
        ("nobody", "pw"),
        ("@lena:elsewhere", "pw-lena"),
    ] {
        let body = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": pw});
        let (status, data) = post(&c, "/_matrix/client/v3/login", None, body).await;
        assert_eq!(
            (status, errcode(&data)),
            (StatusCode::FORBIDDEN, "M_FORBIDDEN"),
            "{user}"
        );
        assert_eq!(data["error"], "Invalid username or password");
    }
    let (status, _) = post(
        &c,
        "/_matrix/client/v3/login",
        None,
        json!({"type": "m.login.token", "token": "x"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Logging in again with a device ID replaces that device's token.
    let d1 = c.login("lena", "pw-lena", Some("LAPTOP")).await;
    let d2 = c.login("lena", "pw-lena", Some("LAPTOP")).await;
    let (status, data) = whoami(&c, &d1.token).await;
    assert_eq!(
        (status, errcode(&data)),
        (StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN")
    );
    assert_eq!(data["soft_logout"], false);
    let (status, me) = whoami(&c, &d2.token).await;
    assert_eq!(
        (status, me["device_id"].as_str()),
        (StatusCode::OK, Some("LAPTOP"))
    );

    // Logout ends one session.
    let (status, data) = post(&c, "/_matrix/client/v3/logout", Some(&d2.token), json!({})).await;
    assert_eq!((status, data), (StatusCode::OK, json!({})));
    let (status, _) = whoami(&c, &d2.token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = whoami(&c, &by_local.token).await;
    assert_eq!(status, StatusCode::OK, "other sessions live on");

    // An empty body is fine for logout; logout/all ends every session.
    let (status, _) = c
        .request(
            Method::POST,
            "/_matrix/client/r0/logout/all",
            Some(&by_id.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for user in [&first, &by_local, &by_id] {
        let (status, data) = whoami(&c, &user.token).await;
        assert_eq!(
            (status, errcode(&data)),
            (StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN")
        );
    }
    // The password still works.
    c.login("lena", "pw-lena", None).await;

    // Token errors.
    let (status, data) = get(&c, "/_matrix/client/v3/account/whoami", None).await;
    assert_eq!(
        (status, errcode(&data)),
        (StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN")
    );
    let (status, data) = whoami(&c, "not-a-token").await;
    assert_eq!(
        (status, errcode(&data)),
        (StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_round_trip() {
    let server = TestServer::start(Workspace::new(), &test_config("")).await;
    let c = server.client();
    let mia: User = c.register("mia", "pw", false).await.unwrap();
    let noa: User = c.register("noa", "pw", false).await.unwrap();
    let path = |u: &User| format!("/_matrix/client/v3/user/{}/filter", q(&u.user_id));
    let filter = json!({"presence": {"types": ["m.presence"], "limit": 5}, "room": {"timeline": {"limit": 10}}});

    let (status, data) = post(&c, &path(&mia), Some(&mia.token), filter.clone()).await;
    assert_eq!(status, StatusCode::OK, "{data}");
    let id = data["filter_id"].as_str().unwrap().to_owned();
    let (status, data) = get(&c, &format!("{}/{id}", path(&mia)), Some(&mia.token)).await;
    assert_eq!((status, data), (StatusCode::OK, filter.clone()));
    let r0 = format!("/_matrix/client/r0/user/{}/filter/{id}", q(&mia.user_id));
    assert_eq!(get(&c, &r0, Some(&mia.token)).await.0, StatusCode::OK);

    // Only your own filters; unknown IDs are 404; bad shapes are 400.
    let (status, data) = post(&c, &path(&mia), Some(&noa.token), filter.clone()).await;
    assert_eq!(
        (status, errcode(&data)),
        (StatusCode::FORBIDDEN, "M_FORBIDDEN")
    );
    let (status, _) = get(&c, &format!("{}/{id}", path(&mia)), Some(&noa.token)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, data) = get(&c, &format!("{}/{id}", path(&noa)), Some(&noa.token)).await;
    assert_eq!(
        (status, errcode(&data)),
        (StatusCode::NOT_FOUND, "M_NOT_FOUND")
    );
    for bad in [
        json!({"room": []}),
        json!({"presence": {"senders": 3}}),
        json!({"event_format": "x"}),
    ] {
        let (status, data) = post(&c, &path(&mia), Some(&mia.token), bad.clone()).await;
        assert_eq!(
            (status, errcode(&data)),
            (StatusCode::BAD_REQUEST, "M_BAD_JSON"),
            "{bad}"
        );
    }
    let (status, data) = post(
        &c,
        "/_matrix/client/v3/user/not-an-id/filter",
        Some(&mia.token),
        json!({}),
    )
    .await;
    assert_eq!(
        (status, errcode(&data)),
        (StatusCode::BAD_REQUEST, "M_INVALID_PARAM")
    );

    // /sync takes the stored filter by ID, again and again (the parsed filter is cached)...
    for _ in 0..2 {
        let (status, _) = get(
            &c,
            &format!("/_matrix/client/v3/sync?filter={id}"),
            Some(&mia.token),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    // ...but only its owner: the cache is per user, like the filters. Another user's (or an
    // unknown) filter ID is 400 M_INVALID_PARAM "No such filter", as the reference answers.
    let (status, data) = get(
        &c,
        &format!("/_matrix/client/v3/sync?filter={id}"),
        Some(&noa.token),
    )
    .await;
    assert_eq!(
        (status, errcode(&data), data["error"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
            Some("No such filter")
        )
    );
}

/// An admin demoted in the database is refused on the admin API at once: the admin check does
/// not trust the token cache's copy of the flag. (Beside Synapse, demotion is Synapse's admin
/// API writing `users.admin`; the standalone mode has no API for it, so the test writes the
/// column as an operator would.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demoted_admin_is_refused_at_once() {
    let server = TestServer::start(Workspace::new(), &test_config("")).await;
    let c = server.client();
    let root = c.register("root", "pw-root", true).await.unwrap();
    const ADMIN_API: &str = "/_presenced/admin/v1/presence";
    // Served (and cached) while an admin; /whoami caches the token too.
    let (status, _) = get(&c, ADMIN_API, Some(&root.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(whoami(&c, &root.token).await.0, StatusCode::OK);

    let conn =
        rusqlite::Connection::open(server.workspace.path().join("data/presenced.db")).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    let changed = conn
        .execute(
            "UPDATE users SET admin = 0 WHERE user_id = '@root:test'",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);

    let (status, data) = get(&c, ADMIN_API, Some(&root.token)).await;
    assert_eq!(
        (status, errcode(&data)),
        (StatusCode::FORBIDDEN, "M_FORBIDDEN")
    );
    // Still a valid user everywhere else.
    assert_eq!(whoami(&c, &root.token).await.0, StatusCode::OK);

    // Promotion counts at once too.
    conn.execute(
        "UPDATE users SET admin = 1 WHERE user_id = '@root:test'",
        [],
    )
    .unwrap();
    assert_eq!(
        get(&c, ADMIN_API, Some(&root.token)).await.0,
        StatusCode::OK
    );
}

/// A flood of unauthenticated nonce requests from the operator's own address (loopback) does
/// not lock shared-secret registration out: more nonces than the old 10,000-entry pool held
/// are issued (and some spent on refused requests), and the operator's registration, with a
/// nonce from before the flood and with a fresh one, still succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nonce_flood_does_not_lock_out_the_operator() {
    let server = TestServer::start(Workspace::new(), &test_config("")).await;
    let c = server.client();
    let early = nonce(&c).await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move {
                for i in 0..1_400 {
                    let (status, data) = get(&c, ADMIN_REGISTER, None).await;
                    assert_eq!(status, StatusCode::OK, "{data}");
                    if i % 100 == 0 {
                        let n = data["nonce"].as_str().unwrap();
                        let body = json!({"nonce": n, "username": "x", "password": "pw", "admin": false, "mac": "00"});
                        let (status, _) = post(&c, ADMIN_REGISTER, None, body).await;
                        assert_eq!(status, StatusCode::FORBIDDEN);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let body = json!({
        "nonce": early, "username": "early", "password": "pw", "admin": false,
        "mac": mac(SHARED_SECRET, &early, "early", "pw", false),
    });
    let (status, data) = post(&c, ADMIN_REGISTER, None, body).await;
    assert_eq!(status, StatusCode::OK, "{data}");
    let root = c.register("root", "pw-root", true).await.unwrap();
    assert_eq!(whoami(&c, &root.token).await.0, StatusCode::OK);
}
