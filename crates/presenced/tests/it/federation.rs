//! Federation between real Presenced processes on loopback, each with its own server name
//! (`127.0.0.1:PORT`), signing key and self-signed certificate; and a recording federation
//! receiver in the test process for what goes over the wire.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, Request, State},
    http::StatusCode as AxumStatus,
    response::IntoResponse,
    routing::put,
};
use presence_engine::RemotePresence;
use presence_federation::{
    ClientConfig, Federation, FederationClient, FederationConfig, InboundPresence, IpRangeFilter,
    SigningKey, SystemDns, tls,
};
use presence_router::ServerName;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::{
    matrix::{Client, TestServer, User, q},
    support::Workspace,
};

/// A loopback port free right now (the server binds it a moment later).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A self-signed certificate for 127.0.0.1: (certificate PEM, key PEM).
fn self_signed() -> (String, String) {
    let c =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    (c.cert.pem(), c.signing_key.serialize_pem())
}

/// A Presenced with a plain client listener (first, so the harness finds it) and a TLS
/// listener on a fixed port, which is part of its server name, serving federation, keys and
/// the client API too.
pub(crate) struct FedServer {
    pub(crate) server: TestServer,
    pub(crate) name: String,
}

impl FedServer {
    pub(crate) async fn start(port: u16, extra: &str) -> Self {
        let ws = Workspace::new();
        let (cert, key) = self_signed();
        ws.write("tls.crt", &cert);
        ws.write("tls.key", &key);
        let name = format!("127.0.0.1:{port}");
        let config = format!(
            "server_name: '{name}'
listeners:
  - {{port: 0, type: http, bind_addresses: ['127.0.0.1'], resources: [{{names: [client, metrics]}}]}}
  - {{port: {port}, type: http, tls: true, bind_addresses: ['127.0.0.1'], resources: [{{names: [federation, keys, client]}}]}}
database: {{name: sqlite3, args: {{database: data/presenced.db}}}}
registration_shared_secret: {secret}
password_hash_cost: {{memory_kib: 64, iterations: 1, parallelism: 1}}
rc_presence: {{per_user: {{per_second: 10000, burst_count: 100000}}}}
{raised}signing_key_path: keys/signing.key
tls_certificate_path: tls.crt
tls_private_key_path: tls.key
federation_verify_certificates: false
ip_range_whitelist: ['127.0.0.1']
trusted_key_servers: []
federation:
  client_timeout: 3s
  connect_timeout: 1s
  destination_min_retry_interval: 200ms
  destination_max_retry_interval: 1s
  transaction_timeout: 5s
  key_refetch_interval: 100ms
{extra}",
            secret = crate::matrix::SHARED_SECRET,
            raised = crate::support::RAISED_LIMITS,
        );
        let server = TestServer::start(ws, &config).await;
        Self { server, name }
    }

    pub(crate) fn client(&self) -> Client {
        self.server.client()
    }
}

/// The example router's config block sending everyone's presence to `watchers`.
fn router_to(watchers: &[String]) -> String {
    format!(
        "presence:
  presence_router:
    module: presenced.routers.ExamplePresenceRouter
    config: {{always_send_to_users: {}}}",
        serde_json::to_string(watchers).unwrap()
    )
}

pub(crate) async fn register(c: &Client, name: &str) -> User {
    c.register(name, &format!("pw-{name}"), false)
        .await
        .unwrap()
}

/// Syncs as `user` (without changing its own presence) until `done` holds for the latest
/// presence seen per sender, or panics after a while with what was seen.
pub(crate) async fn wait_for_presence(
    c: &Client,
    user: &User,
    done: impl Fn(&BTreeMap<String, Value>) -> bool,
) -> BTreeMap<String, Value> {
    wait_for_presence_since(c, user, None, done).await
}

/// [`wait_for_presence`] from the sync token `since` (needed to see users go offline: an
/// initial sync leaves offline users out).
pub(crate) async fn wait_for_presence_since(
    c: &Client,
    user: &User,
    mut since: Option<String>,
    done: impl Fn(&BTreeMap<String, Value>) -> bool,
) -> BTreeMap<String, Value> {
    let started = Instant::now();
    let mut seen = BTreeMap::new();
    loop {
        let params = match &since {
            None => "timeout=0&set_presence=offline".to_owned(),
            Some(s) => format!("timeout=500&set_presence=offline&since={}", q(s)),
        };
        let body = c.sync(user, &params).await;
        for e in body["presence"]["events"].as_array().into_iter().flatten() {
            assert_eq!(e["type"], "m.presence");
            seen.insert(
                e["sender"].as_str().unwrap().to_owned(),
                e["content"].clone(),
            );
        }
        if done(&seen) {
            return seen;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{} never saw the expected presence; saw {seen:?}",
            user.user_id
        );
        since = Some(body["next_batch"].as_str().unwrap().to_owned());
    }
}

pub(crate) fn has(seen: &BTreeMap<String, Value>, user: &str, presence: &str) -> bool {
    seen.get(user).is_some_and(|c| c["presence"] == presence)
}

/// Waits until the counter `name` reaches `min`.
async fn wait_metric(c: &Client, name: &str, min: f64) {
    let started = Instant::now();
    loop {
        let value = c.metric(name).await;
        if value >= min {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{name} stayed at {value}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn routers_send_presence_both_ways_between_two_servers() {
    let (pa, pb) = (free_port(), free_port());
    let (a_name, b_name) = (format!("127.0.0.1:{pa}"), format!("127.0.0.1:{pb}"));
    let watchers = vec![format!("@watcher:{a_name}"), format!("@watcher:{b_name}")];
    let a = FedServer::start(pa, &router_to(&watchers)).await;
    let b = FedServer::start(pb, &router_to(&watchers)).await;
    let (ca, cb) = (a.client(), b.client());
    let alice = register(&ca, "alice").await;
    let wa = register(&ca, "watcher").await;
    let bob = register(&cb, "bob").await;
    let wb = register(&cb, "watcher").await;

    ca.put_presence(
        &alice,
        &alice.user_id,
        json!({"presence": "online", "status_msg": "from A"}),
    )
    .await;
    let seen = wait_for_presence(&cb, &wb, |s| has(s, &alice.user_id, "online")).await;
    let content = &seen[&alice.user_id];
    assert_eq!(content["status_msg"], "from A");
    assert_eq!(content["currently_active"], true);
    assert!(content["last_active_ago"].as_u64().unwrap() < 60_000);

    cb.put_presence(
        &bob,
        &bob.user_id,
        json!({"presence": "unavailable", "status_msg": "from B"}),
    )
    .await;
    let seen = wait_for_presence(&ca, &wa, |s| has(s, &bob.user_id, "unavailable")).await;
    assert_eq!(seen[&bob.user_id]["status_msg"], "from B");
    // The local watcher sees local users too, and B's watcher never gets its own users echoed
    // back from A.
    assert!(has(&seen, &alice.user_id, "online"));

    // Changes keep flowing: alice goes offline, B hears it.
    let before = cb.sync(&wb, "timeout=0&set_presence=offline").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    ca.put_presence(&alice, &alice.user_id, json!({"presence": "offline"}))
        .await;
    wait_for_presence_since(&cb, &wb, Some(before), |s| {
        has(s, &alice.user_id, "offline")
    })
    .await;

    // The sender counts a transaction when its answer arrives, which may be after the
    // receiver has already woken its syncs.
    wait_metric(&ca, "presenced_federation_transactions_sent_total", 2.0).await;
    wait_metric(&cb, "presenced_federation_transactions_received_total", 2.0).await;
    wait_metric(&cb, "presenced_federation_presence_received_total", 2.0).await;
}

#[tokio::test]
async fn members_of_a_shared_room_see_each_other_across_servers() {
    let (pa, pb) = (free_port(), free_port());
    let a = FedServer::start(pa, "").await;
    let b = FedServer::start(pb, "").await;
    let (ca, cb) = (a.client(), b.client());
    let admin_a = ca.register("root", "pw-root", true).await.unwrap();
    let admin_b = cb.register("root", "pw-root", true).await.unwrap();
    let alice = register(&ca, "alice").await;
    let carol = register(&cb, "carol").await;
    let outsider = register(&cb, "outsider").await;

    // Both servers mirror the same room with both members (the admin membership API).
    let room = format!("!shared:{}", a.name);
    for (c, admin) in [(&ca, &admin_a), (&cb, &admin_b)] {
        for user in [&alice.user_id, &carol.user_id] {
            let path = format!(
                "/_presenced/admin/v1/rooms/{}/members/{}",
                q(&room),
                q(user)
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

    ca.put_presence(&alice, &alice.user_id, json!({"presence": "online"}))
        .await;
    let seen = wait_for_presence(&cb, &carol, |s| has(s, &alice.user_id, "online")).await;
    assert_eq!(seen[&alice.user_id]["currently_active"], true);

    cb.put_presence(
        &carol,
        &carol.user_id,
        json!({"presence": "unavailable", "status_msg": "lunch"}),
    )
    .await;
    let seen = wait_for_presence(&ca, &alice, |s| has(s, &carol.user_id, "unavailable")).await;
    assert_eq!(seen[&carol.user_id]["status_msg"], "lunch");

    // Someone on B who shares no room with alice does not see her.
    let body = cb.sync(&outsider, "timeout=0&set_presence=offline").await;
    let senders: Vec<&str> = body["presence"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["sender"].as_str())
        .collect();
    assert!(!senders.contains(&alice.user_id.as_str()), "{senders:?}");
}

/// A federation client for the test itself: origin `origin`, signing with `key`.
fn client_as(origin: &str, key: SigningKey) -> FederationClient {
    let mut config = ClientConfig::default();
    config.verify_certificates = false;
    config.ip_filter = IpRangeFilter::default().allowing(&["127.0.0.1"]).unwrap();
    config.connect_timeout = Duration::from_secs(2);
    config.request_timeout = Duration::from_secs(5);
    FederationClient::new(
        ServerName::parse(origin).unwrap(),
        Arc::new(key),
        config,
        Arc::new(SystemDns::new(false)),
    )
    .unwrap()
}

fn transaction(origin: &str, user: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "origin": origin,
        "origin_server_ts": 1,
        "pdus": [],
        "edus": [{"edu_type": "m.presence", "content": {"push": [
            {"user_id": user, "presence": "online", "last_active_ago": 5, "currently_active": true}
        ]}}],
    }))
    .unwrap()
}

#[tokio::test]
async fn inbound_transactions_are_authenticated_checked_and_applied_once() {
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let (a_name, b_name, c_name) = (
        format!("127.0.0.1:{pa}"),
        format!("127.0.0.1:{pb}"),
        format!("127.0.0.1:{pc}"),
    );
    let a = FedServer::start(pa, "").await;
    let b = FedServer::start(
        pb,
        &format!(
            "federation_domain_whitelist: ['{a_name}', '{b_name}']\n{}",
            router_to(&[format!("@watcher:{b_name}")])
        ),
    )
    .await;
    let cb = b.client();
    let wb = register(&cb, "watcher").await;
    let b_server = ServerName::parse(&b_name).unwrap();
    let a_key_file = a.server.workspace.path().join("keys/signing.key");
    let (a_keys, _) = presence_federation::load_or_generate(&a_key_file).unwrap();
    let a_version = a_keys[0].version().to_owned();

    // A's key ID with another key: B fetches A's real key and the signature fails.
    let forged = client_as(
        &a_name,
        SigningKey::from_seed(&a_version, &[7; 32]).unwrap(),
    );
    let forged_user = format!("@forged:{a_name}");
    let r = forged
        .request(
            &b_server,
            Method::PUT,
            "/_matrix/federation/v1/send/forged1",
            Some(transaction(&a_name, &forged_user)),
            true,
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["errcode"], "M_UNAUTHORIZED");

    // Unsigned: 401 as well.
    let r = forged
        .request(
            &b_server,
            Method::PUT,
            "/_matrix/federation/v1/send/unsigned1",
            Some(transaction(&a_name, &forged_user)),
            false,
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // A server outside B's whitelist, however well it signs: 403.
    let outsider = client_as(&c_name, SigningKey::generate().unwrap());
    let r = outsider
        .request(
            &b_server,
            Method::PUT,
            "/_matrix/federation/v1/send/c1",
            Some(transaction(&c_name, &format!("@eve:{c_name}"))),
            true,
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["errcode"], "M_FORBIDDEN");

    // With A's real key the same transaction is accepted and its presence applied.
    let genuine = client_as(&a_name, a_keys.into_iter().next().unwrap());
    let real_user = format!("@real:{a_name}");
    let r = genuine
        .request(
            &b_server,
            Method::PUT,
            "/_matrix/federation/v1/send/real1",
            Some(transaction(&a_name, &real_user)),
            true,
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let seen = wait_for_presence(&cb, &wb, |s| has(s, &real_user, "online")).await;
    assert!(!seen.contains_key(&forged_user), "forged presence applied");
    assert!(!seen.keys().any(|u| u.ends_with(&c_name)));

    // The same transaction ID again is answered without being applied again.
    let mut repeat: Value = serde_json::from_slice(&transaction(&a_name, &real_user)).unwrap();
    repeat["edus"][0]["content"]["push"][0]["presence"] = json!("unavailable");
    let send = |txn: &'static str, body: Value| {
        let (genuine, b_server) = (&genuine, &b_server);
        async move {
            let path = format!("/_matrix/federation/v1/send/{txn}");
            let body = serde_json::to_vec(&body).unwrap();
            let r = genuine
                .request(b_server, Method::PUT, &path, Some(body), true)
                .await
                .unwrap();
            (r.status, serde_json::from_slice::<Value>(&r.body).unwrap())
        }
    };
    assert_eq!(send("real1", repeat).await.0, StatusCode::OK);

    // Other EDUs and PDUs are acknowledged and ignored; a bad entry (a user of another
    // server) is dropped while the good one of the same EDU applies.
    let mixed_user = format!("@mixed:{a_name}");
    let (status, body) = send(
        "mixed1",
        json!({
            "origin": a_name, "origin_server_ts": 1,
            "pdus": [],
            "edus": [
                {"edu_type": "m.typing", "content": {"room_id": "!r:x", "user_id": mixed_user, "typing": true}},
                {"edu_type": "m.presence", "content": {"push": [
                    {"user_id": format!("@evil:{c_name}"), "presence": "online"},
                    {"user_id": mixed_user, "presence": "unavailable", "status_msg": "mixed"}
                ]}}
            ],
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["pdus"], json!({}));
    let seen = wait_for_presence(&cb, &wb, |s| has(s, &mixed_user, "unavailable")).await;
    assert!(has(&seen, &real_user, "online"), "the repeat was applied");
    assert!(!seen.keys().any(|u| u.ends_with(&c_name)), "{seen:?}");

    // The TLS listener serves the client API as well.
    let r = genuine
        .request(
            &b_server,
            Method::GET,
            "/_matrix/client/versions",
            None,
            false,
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    let versions: Value = serde_json::from_slice(&r.body).unwrap();
    assert!(
        versions["versions"]
            .as_array()
            .is_some_and(|v| !v.is_empty())
    );

    // Over the specification's limit of 100 EDUs: 400.
    let edus: Vec<Value> = (0..101)
        .map(|_| json!({"edu_type": "m.typing", "content": {}}))
        .collect();
    let (status, body) = send(
        "big1",
        json!({"origin": a_name, "origin_server_ts": 1, "pdus": [], "edus": edus}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["errcode"], "M_BAD_JSON");
    drop(a);
}

/// One transaction as the fake receiver got it.
#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    accepted: bool,
    origin: String,
    body: Value,
}

#[derive(Clone)]
struct Receiver {
    federation: Federation,
    up: Arc<AtomicBool>,
    /// Milliseconds each answer is held back.
    delay_ms: Arc<AtomicU64>,
    log: Arc<Mutex<Vec<Received>>>,
}

struct Ignore;

#[async_trait::async_trait]
impl InboundPresence for Ignore {
    async fn apply(&self, _origin: ServerName, _entries: Vec<RemotePresence>) {}
}

/// `PUT /send/{txnId}`: checks the `X-Matrix` signature with the crate's verifier, records
/// the body, and answers 200, or 500 while "down".
async fn record(
    State(r): State<Receiver>,
    Path(_txn): Path<String>,
    request: Request,
) -> axum::response::Response {
    let (parts, body) = request.into_parts();
    let body: Bytes = axum::body::to_bytes(body, 1 << 24).await.unwrap();
    let request = axum::http::Request::from_parts(parts, body.clone());
    let origin = match r.federation.verifier().verify(&request).await {
        Ok(o) => o,
        Err(e) => return (AxumStatus::UNAUTHORIZED, e.to_string()).into_response(),
    };
    let accepted = r.up.load(Ordering::SeqCst);
    r.log.lock().unwrap().push(Received {
        at: Instant::now(),
        accepted,
        origin: origin.to_string(),
        body: serde_json::from_slice(&body).unwrap(),
    });
    let delay = r.delay_ms.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    if accepted {
        axum::Json(json!({"pdus": {}})).into_response()
    } else {
        (
            AxumStatus::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"errcode": "M_UNKNOWN", "error": "down"})),
        )
            .into_response()
    }
}

/// A federation receiver on `port`: publishes its key, verifies and records transactions.
async fn fake_receiver(port: u16, shutdown: CancellationToken) -> Receiver {
    let name = ServerName::parse(&format!("127.0.0.1:{port}")).unwrap();
    let mut config = FederationConfig::new(name);
    config.client.verify_certificates = false;
    config.client.ip_filter = IpRangeFilter::default().allowing(&["127.0.0.1"]).unwrap();
    let federation = Federation::builder(
        config,
        vec![SigningKey::generate().unwrap()],
        Arc::new(Ignore),
    )
    .build(shutdown.clone())
    .unwrap();
    let receiver = Receiver {
        federation: federation.clone(),
        up: Arc::new(AtomicBool::new(false)),
        delay_ms: Arc::default(),
        log: Arc::default(),
    };
    let app = federation.keys_router().merge(
        Router::new()
            .route("/_matrix/federation/v1/send/{txnId}", put(record))
            .with_state(receiver.clone()),
    );
    let (cert, key) = self_signed();
    let ws = Workspace::new();
    let tls = tls::server_tls_config(&ws.write("tls.crt", &cert), &ws.write("tls.key", &key));
    let tls = Arc::new(tls.unwrap());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(presence_listen::serve(
        listener,
        Some(tls),
        app,
        presence_listen::Limits::default(),
        presence_listen::ConnectionCap::new(1024),
        shutdown,
    ));
    receiver
}

#[tokio::test]
async fn a_down_destination_gets_everything_in_batches_of_fifty_when_back() {
    let (pa, pf) = (free_port(), free_port());
    let f_name = format!("127.0.0.1:{pf}");
    let shutdown = CancellationToken::new();
    let receiver = fake_receiver(pf, shutdown.clone()).await;
    let spy = format!("@spy:{f_name}");
    let a = FedServer::start(pa, &router_to(std::slice::from_ref(&spy))).await;
    let ca = a.client();
    let admin = ca.register("root", "pw-root", true).await.unwrap();

    // 60 users come online while the receiver is down.
    let mut users = Vec::new();
    for i in 0..60 {
        let u = register(&ca, &format!("user{i:02}")).await;
        ca.put_presence(&u, &u.user_id, json!({"presence": "online"}))
            .await;
        users.push(u);
    }
    // Let a few attempts fail so the backoff shows.
    let wait_failures = Instant::now();
    while receiver.log.lock().unwrap().len() < 3 {
        assert!(
            wait_failures.elapsed() < Duration::from_secs(10),
            "no retries"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    receiver.up.store(true, Ordering::SeqCst);

    let expected: Vec<String> = users.iter().map(|u| u.user_id.clone()).collect();
    let delivered = |log: &[Received]| -> BTreeMap<String, Value> {
        log.iter()
            .filter(|r| r.accepted)
            .flat_map(|r| r.body["edus"].as_array().unwrap().clone())
            .flat_map(|e| e["content"]["push"].as_array().unwrap().clone())
            .map(|p| (p["user_id"].as_str().unwrap().to_owned(), p))
            .collect()
    };
    let started = Instant::now();
    loop {
        let got = delivered(&receiver.log.lock().unwrap());
        if expected.iter().all(|u| got.contains_key(u)) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "only {} of 60 delivered",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let log = receiver.log.lock().unwrap().clone();
    // Backoff: failed attempts are spaced out, and the spacing grows.
    let failed: Vec<Instant> = log.iter().filter(|r| !r.accepted).map(|r| r.at).collect();
    assert!(failed.len() >= 3);
    let gaps: Vec<Duration> = failed.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_millis(150)),
        "{gaps:?}"
    );
    assert!(gaps.last().unwrap() > gaps.first().unwrap(), "{gaps:?}");
    check_wire_shapes(&log, &a.name, &f_name);
    wait_metric(&ca, "presenced_federation_send_failures_total", 3.0).await;
    assert!(
        a.server
            .log_text()
            .contains("Presence transaction failed; will retry.")
    );

    // send_local_online_presence_to a remote user: a snapshot of all 60 online users goes
    // out at once, 50 + 10.
    let before = receiver.log.lock().unwrap().len();
    ca.ok(
        Method::POST,
        "/_presenced/admin/v1/send_local_online_presence_to",
        Some(&admin.token),
        json!({"users": [spy]}),
    )
    .await;
    let started = Instant::now();
    let snapshot = loop {
        let log = receiver.log.lock().unwrap().clone();
        if let Some(r) = log[before..].iter().find(|r| r.accepted) {
            break r.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no snapshot sent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let sizes: Vec<usize> = snapshot.body["edus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["content"]["push"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [50, 10]);
    shutdown.cancel();
}

/// Every transaction is well-formed, signed by `origin`, and has at most 50 states per EDU.
fn check_wire_shapes(log: &[Received], origin: &str, destination: &str) {
    let mut saw_full_edu = false;
    for r in log {
        assert_eq!(r.origin, origin);
        let body = &r.body;
        assert_eq!(body["origin"], origin);
        assert!(body["origin_server_ts"].as_u64().unwrap() > 0);
        assert_eq!(body["pdus"], json!([]));
        let edus = body["edus"].as_array().unwrap();
        assert!(!edus.is_empty() && edus.len() <= 100);
        for edu in edus {
            assert_eq!(edu["edu_type"], "m.presence");
            let push = edu["content"]["push"].as_array().unwrap();
            assert!(!push.is_empty() && push.len() <= 50, "{}", push.len());
            saw_full_edu |= push.len() == 50;
            for p in push {
                let user = p["user_id"].as_str().unwrap();
                assert!(user.ends_with(&format!(":{origin}")), "{user}");
                assert_eq!(p["presence"], "online");
                assert_eq!(p["currently_active"], true);
                assert!(p["last_active_ago"].is_u64());
                let keys: Vec<&String> = p.as_object().unwrap().keys().collect();
                assert!(
                    keys.iter().all(|k| [
                        "user_id",
                        "presence",
                        "last_active_ago",
                        "currently_active",
                        "status_msg"
                    ]
                    .contains(&k.as_str())),
                    "{keys:?}"
                );
            }
        }
    }
    assert!(saw_full_edu, "no EDU carried 50 states to {destination}");
}

#[tokio::test]
async fn a_presenced_that_was_down_catches_up_when_it_restarts() {
    let (pa, pb) = (free_port(), free_port());
    let b_name = format!("127.0.0.1:{pb}");
    let watcher = format!("@watcher:{b_name}");
    let a = FedServer::start(pa, &router_to(std::slice::from_ref(&watcher))).await;
    let b = FedServer::start(pb, &router_to(std::slice::from_ref(&watcher))).await;
    let (ca, cb) = (a.client(), b.client());
    let alice = register(&ca, "alice").await;
    let wb = register(&cb, "watcher").await;
    ca.put_presence(&alice, &alice.user_id, json!({"presence": "online"}))
        .await;
    wait_for_presence(&cb, &wb, |s| has(s, &alice.user_id, "online")).await;

    // B goes away; alice changes twice; only the latest matters.
    b.server.signal("KILL");
    let FedServer { server, name } = b;
    ca.put_presence(
        &alice,
        &alice.user_id,
        json!({"presence": "unavailable", "status_msg": "first"}),
    )
    .await;
    ca.put_presence(
        &alice,
        &alice.user_id,
        json!({"presence": "unavailable", "status_msg": "while B was down"}),
    )
    .await;
    let started = Instant::now();
    while ca.metric("presenced_federation_send_failures_total").await < 2.0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no failed sends"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let b = FedServer {
        server: server.restart().await,
        name,
    };
    let cb = b.client();
    let seen = wait_for_presence(&cb, &wb, |s| {
        s.get(&alice.user_id)
            .is_some_and(|c| c["status_msg"] == "while B was down")
    })
    .await;
    assert_eq!(seen[&alice.user_id]["presence"], "unavailable");
}

/// A TLS listener without its files is a startup error naming the keys.
#[tokio::test]
async fn a_tls_listener_without_files_is_a_clear_startup_error() {
    let ws = Workspace::new();
    let config = ws.write(
        "presenced.yaml",
        "server_name: example.org
listeners:
  - {port: 0, type: http, tls: true, bind_addresses: ['127.0.0.1'], resources: [{names: [federation]}]}
database: {name: sqlite3, args: {database: presenced.db}}
",
    );
    let (code, _, stderr) = ws.run(&["-c", config.to_str().unwrap()]).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("tls_certificate_path"), "{stderr}");
    assert!(stderr.contains("tls_private_key_path"), "{stderr}");
    assert!(stderr.contains("signing_key_path"), "{stderr}");

    // Files named but missing: the error names the file.
    let config = ws.write(
        "presenced2.yaml",
        "server_name: example.org
listeners:
  - {port: 0, type: http, tls: true, bind_addresses: ['127.0.0.1'], resources: [{names: [federation]}]}
database: {name: sqlite3, args: {database: presenced.db}}
signing_key_path: signing.key
tls_certificate_path: missing.crt
tls_private_key_path: missing.key
",
    );
    let (code, _, stderr) = ws.run(&["-c", config.to_str().unwrap()]).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("missing.crt"), "{stderr}");
}

#[tokio::test]
async fn sigterm_hands_queued_presence_over_before_exiting() {
    let (pa, pf) = (free_port(), free_port());
    let shutdown = CancellationToken::new();
    let receiver = fake_receiver(pf, shutdown.clone()).await;
    receiver.up.store(true, Ordering::SeqCst);
    receiver.delay_ms.store(500, Ordering::SeqCst);
    let spy = format!("@spy:127.0.0.1:{pf}");
    let a = FedServer::start(pa, &router_to(std::slice::from_ref(&spy))).await;
    let ca = a.client();
    let first = register(&ca, "first").await;
    let second = register(&ca, "second").await;
    // `first` is in flight (the receiver is slow) while `second` waits in the queue. The
    // receiver has never seen A's key: A must keep serving it until the queue is handed over.
    ca.put_presence(&first, &first.user_id, json!({"presence": "online"}))
        .await;
    ca.put_presence(&second, &second.user_id, json!({"presence": "online"}))
        .await;
    a.server.signal("TERM");
    let FedServer { mut server, .. } = a;
    let status = tokio::time::timeout(Duration::from_secs(15), server.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{}", server.log_text());
    let users: Vec<String> = receiver
        .log
        .lock()
        .unwrap()
        .iter()
        .flat_map(|r| r.body["edus"].as_array().unwrap().clone())
        .flat_map(|e| e["content"]["push"].as_array().unwrap().clone())
        .map(|p| p["user_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(users.contains(&first.user_id), "{users:?}");
    assert!(users.contains(&second.user_id), "{users:?}");
    shutdown.cancel();
}

/// Synapse's `test_send_local_online_presence_to_with_module[_legacy]`
/// (`tests/events/test_presence_router.py`), federated part: a Python module (legacy and
/// `modules:` form) calls `send_local_online_presence_to` for a remote user from a looping call;
/// once nothing changes any more, what reaches that user's server is exactly the local users
/// who are not offline.
#[cfg(feature = "python")]
#[tokio::test]
async fn a_python_module_sends_local_online_presence_to_a_remote_user() {
    let routers = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../presence-python/tests/python");
    for (legacy, class) in [
        (true, "announcer.Announcer"),
        (false, "announcer.AnnouncerModule"),
    ] {
        let (pa, pf) = (free_port(), free_port());
        let shutdown = CancellationToken::new();
        let receiver = fake_receiver(pf, shutdown.clone()).await;
        receiver.up.store(true, Ordering::SeqCst);
        let far = format!("@far_away_person:127.0.0.1:{pf}");
        let local = |name: &str| format!("@{name}:127.0.0.1:{pa}");
        let router_config = format!(
            "{{users_who_should_receive_all_presence: ['{}', '{}', '{far}'], \
             announce: [['{far}']], repeat: true}}",
            local("presence_gobbler1"),
            local("presence_gobbler2"),
        );
        let entry = format!("{{module: {class}, config: {router_config}}}");
        let routers_yaml = if legacy {
            format!("presence: {{presence_router: {entry}}}")
        } else {
            format!("modules: [{entry}]")
        };
        let a = FedServer::start(
            pa,
            &format!(
                "python: {{paths: ['{}']}}\n{routers_yaml}\n",
                routers.display()
            ),
        )
        .await;
        let c = a.client();
        let other = register(&c, "other_user").await;
        let g1 = register(&c, "presence_gobbler1").await;
        let g2 = register(&c, "presence_gobbler2").await;
        let _offline = register(&c, "offline_user").await;
        for (user, presence, msg) in [
            (&other, "online", "I'm online!"),
            (&g1, "online", "I'm also online!"),
            (&g2, "unavailable", "I'm in a meeting!"),
        ] {
            c.put_presence(
                user,
                &user.user_id,
                json!({"presence": presence, "status_msg": msg}),
            )
            .await;
        }
        // Let the routed updates go out, then look only at what the announcements send.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = receiver.log.lock().unwrap().len();
        let started = Instant::now();
        let pushed: Vec<Value> = loop {
            let log = receiver.log.lock().unwrap().clone();
            let pushed: Vec<Value> = log[before..]
                .iter()
                .flat_map(|r| r.body["edus"].as_array().unwrap().clone())
                .filter(|e| e["edu_type"] == "m.presence")
                .flat_map(|e| e["content"]["push"].as_array().unwrap().clone())
                .collect();
            if log.len() >= before + 3 {
                break pushed;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{class}: no announcements"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let users: std::collections::BTreeSet<&str> = pushed
            .iter()
            .map(|p| p["user_id"].as_str().unwrap())
            .collect();
        let want: std::collections::BTreeSet<&str> = [&other, &g1, &g2]
            .iter()
            .map(|u| u.user_id.as_str())
            .collect();
        assert_eq!(users, want, "{class}");
        assert!(
            pushed.iter().all(|p| p["presence"] != "offline"),
            "{class}: {pushed:?}"
        );
        shutdown.cancel();
    }
}

/// A stock Synapse listener (`names: [client, federation]`, no `keys`) serves the key
/// document too, as the reference does: other servers must be able to verify our signatures.
/// A `keys`-only listener serves it without the federation endpoints.
#[tokio::test]
async fn the_federation_resource_serves_the_key_document() {
    let ws = Workspace::new();
    let config = "server_name: example.org
listeners:
  - {port: 0, type: http, x_forwarded: true, bind_addresses: ['127.0.0.1'], resources: [{names: [client, federation]}]}
database: {name: sqlite3, args: {database: presenced.db}}
signing_key_path: signing.key
";
    let server = TestServer::start(ws, config).await;
    let c = server.client();
    let (st, body) = c
        .request(Method::GET, "/_matrix/key/v2/server", None, None)
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["server_name"], "example.org");
    let keys = body["verify_keys"].as_object().unwrap();
    assert_eq!(keys.len(), 1, "{body}");
    assert!(keys.keys().all(|id| id.starts_with("ed25519:")), "{body}");
    assert!(body["signatures"]["example.org"].is_object(), "{body}");
    let (st, _) = c
        .request(Method::GET, "/_matrix/federation/v1/version", None, None)
        .await;
    assert_eq!(st, StatusCode::OK);

    let ws = Workspace::new();
    let config = "server_name: example.org
listeners:
  - {port: 0, type: http, x_forwarded: true, bind_addresses: ['127.0.0.1'], resources: [{names: [keys]}]}
database: {name: sqlite3, args: {database: presenced.db}}
signing_key_path: signing.key
";
    let server = TestServer::start(ws, config).await;
    let c = server.client();
    let (st, _) = c
        .request(Method::GET, "/_matrix/key/v2/server", None, None)
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = c
        .request(Method::GET, "/_matrix/federation/v1/version", None, None)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}
