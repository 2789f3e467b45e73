//! Two in-process servers talking real HTTPS on 127.0.0.1: discovery by explicit port,
//! rustls on both sides (self-made CA), X-Matrix signing and verification with keys fetched
//! over the network, and the outbox delivering presence end to end.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use http::Method;
use presence_federation::{
    Federation, FederationConfig, IpRangeFilter, SigningKey, tls::server_tls_config,
};
use presence_router::{PresenceState, ServerName, UserPresenceState};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::support::{RecordingSink, TestPki, server, state, test_pki};

const WAIT: Duration = Duration::from_secs(20);

struct Files {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

fn write_pki(pki: &TestPki) -> Files {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&cert, &pki.leaf_pem).unwrap();
    std::fs::write(&key, &pki.leaf_key_pem).unwrap();
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    Files {
        _dir: dir,
        cert,
        key,
        ca,
    }
}

/// How a node checks the certificates of the servers it calls.
#[derive(Clone, Copy)]
enum Trust {
    /// `federation_verify_certificates: false`.
    Nothing,
    /// Verification on, with the test CA in `federation_custom_ca_list`.
    TestCa,
    /// Verification on, public roots only (the test CA is unknown).
    PublicRootsOnly,
}

struct Node {
    name: ServerName,
    federation: Federation,
    sink: Arc<RecordingSink>,
    shutdown: CancellationToken,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn node_config(
    name: &ServerName,
    files: &Files,
    trust: Trust,
    allow_loopback: bool,
) -> FederationConfig {
    let mut cfg = FederationConfig::new(name.clone());
    cfg.client.verify_certificates = !matches!(trust, Trust::Nothing);
    if matches!(trust, Trust::TestCa) {
        cfg.client.custom_ca_list = vec![files.ca.clone()];
    }
    if allow_loopback {
        cfg.client.ip_filter = IpRangeFilter::default()
            .allowing(&["127.0.0.0/8", "::1"])
            .unwrap();
    }
    cfg.client.use_srv = false;
    cfg.client.request_timeout = Duration::from_secs(5);
    cfg.outbox.backoff_base = Duration::from_millis(100);
    cfg.outbox.backoff_max = Duration::from_millis(400);
    cfg
}

/// Builds a node named `<host>:<port of listener>` and serves it over TLS.
fn start(
    listener: TcpListener,
    host: &str,
    files: &Files,
    trust: Trust,
    allow_loopback: bool,
) -> Node {
    let port = listener.local_addr().unwrap().port();
    let name = server(&format!("{host}:{port}"));
    let cfg = node_config(&name, files, trust, allow_loopback);
    let sink = Arc::new(RecordingSink::default());
    let shutdown = CancellationToken::new();
    let federation = Federation::builder(cfg, vec![SigningKey::generate().unwrap()], sink.clone())
        .build(shutdown.clone())
        .unwrap();
    let tls = Arc::new(server_tls_config(&files.cert, &files.key).unwrap());
    tokio::spawn(crate::support::serve_tls(
        listener,
        tls,
        federation.router(),
        shutdown.clone(),
    ));
    Node {
        name,
        federation,
        sink,
        shutdown,
    }
}

/// Polls `cond` (real time) until it holds; fails the test after [`WAIT`].
async fn eventually(cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition never held"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

fn alice(node: &Node) -> UserPresenceState {
    UserPresenceState {
        last_active_ts: 1,
        status_msg: Some(Arc::from("around")),
        currently_active: true,
        ..state(&format!("@alice:{}", node.name), PresenceState::Online)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_flows_both_ways_over_https() {
    let files = write_pki(&test_pki());
    // A calls B with certificate checks off; B calls A checking against the test CA.
    let a = start(listener().await, "127.0.0.1", &files, Trust::Nothing, true);
    let b = start(listener().await, "localhost", &files, Trust::TestCa, true);

    a.federation
        .outbox()
        .enqueue(vec![(b.name.clone(), vec![alice(&a)])]);
    assert!(b.sink.wait_for_batches(1, WAIT).await, "B received nothing");
    let got = b.sink.all();
    assert_eq!(got[0].0, a.name);
    let entry = &got[0].1[0];
    assert_eq!(entry.user_id, format!("@alice:{}", a.name));
    assert_eq!(entry.presence, "online");
    assert_eq!(entry.status_msg.as_deref(), Some("around"));
    assert_eq!(entry.currently_active, Some(true));
    assert!(entry.last_active_ago.is_some_and(|ago| ago > 0));

    let bob = state(&format!("@bob:{}", b.name), PresenceState::Unavailable);
    b.federation
        .outbox()
        .enqueue(vec![(a.name.clone(), vec![bob])]);
    assert!(a.sink.wait_for_batches(1, WAIT).await, "A received nothing");
    let got = a.sink.all();
    assert_eq!(got[0].0, b.name);
    assert_eq!(got[0].1[0].presence, "unavailable");
    assert_eq!(got[0].1[0].currently_active, None);
    // The sink runs before the sender sees the answer: wait for the counters.
    eventually(|| a.federation.outbox().stats().transactions_sent == 1).await;
    eventually(|| b.federation.outbox().stats().transactions_sent == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_or_misaddressed_requests_are_refused_over_https() {
    let files = write_pki(&test_pki());
    let a = start(listener().await, "127.0.0.1", &files, Trust::Nothing, true);
    let b = start(listener().await, "127.0.0.1", &files, Trust::Nothing, true);
    let body = br#"{"origin":"x","origin_server_ts":1,"pdus":[],"edus":[]}"#.to_vec();
    let client = a.federation.client();

    let r = client
        .request(
            &b.name,
            Method::PUT,
            "/_matrix/federation/v1/send/u1",
            Some(body.clone()),
            false,
        )
        .await
        .unwrap();
    assert_eq!(r.status, http::StatusCode::UNAUTHORIZED);
    let err: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(err["errcode"], "M_UNAUTHORIZED");

    let r = client
        .request(
            &b.name,
            Method::PUT,
            "/_matrix/federation/v1/send/s1",
            Some(body),
            true,
        )
        .await
        .unwrap();
    assert_eq!(r.status, http::StatusCode::OK, "{:?}", r.body);

    // The version endpoint is public.
    let r = client
        .request(
            &b.name,
            Method::GET,
            "/_matrix/federation/v1/version",
            None,
            false,
        )
        .await
        .unwrap();
    assert_eq!(r.status, http::StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_checks_and_the_ip_blacklist_hold_by_default() {
    let files = write_pki(&test_pki());
    let b = start(listener().await, "127.0.0.1", &files, Trust::Nothing, true);
    // Checks on, test CA unknown: the TLS handshake fails.
    let strict = start(
        listener().await,
        "127.0.0.1",
        &files,
        Trust::PublicRootsOnly,
        true,
    );
    let err = strict
        .federation
        .client()
        .request(
            &b.name,
            Method::GET,
            "/_matrix/federation/v1/version",
            None,
            false,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("TLS"), "{err}");
    // Loopback not whitelisted: refused before connecting.
    let fenced = start(listener().await, "127.0.0.1", &files, Trust::Nothing, false);
    let err = fenced
        .federation
        .client()
        .request(
            &b.name,
            Method::GET,
            "/_matrix/federation/v1/version",
            None,
            false,
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("federation_ip_range_blacklist"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_was_down_receives_everything_once_back() {
    let files = write_pki(&test_pki());
    let a = start(listener().await, "127.0.0.1", &files, Trust::Nothing, true);
    // Reserve B's port, then close it: B is down.
    let reserved = listener().await;
    let addr: SocketAddr = reserved.local_addr().unwrap();
    drop(reserved);
    let b_name = server(&format!("127.0.0.1:{}", addr.port()));

    let states: Vec<UserPresenceState> = (0..120)
        .map(|i| state(&format!("@u{i}:{}", a.name), PresenceState::Online))
        .collect();
    a.federation
        .outbox()
        .enqueue(vec![(b_name.clone(), states)]);
    let deadline = tokio::time::Instant::now() + WAIT;
    while a.federation.outbox().failures(&b_name) < 3 {
        assert!(tokio::time::Instant::now() < deadline, "no retries seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(a.federation.outbox().pending(&b_name), 120);

    let b = start(
        TcpListener::bind(addr).await.unwrap(),
        "127.0.0.1",
        &files,
        Trust::Nothing,
        true,
    );
    assert_eq!(b.name, b_name);
    assert!(
        b.sink.wait_for_batches(1, WAIT).await,
        "B received nothing after coming back"
    );
    // One transaction: three EDUs of 50, 50 and 20 entries, applied as one batch.
    let got = b.sink.all();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.len(), 120);
    eventually(|| a.federation.outbox().failures(&b_name) == 0).await;
    assert_eq!(a.federation.outbox().pending(&b_name), 0);
    assert_eq!(a.federation.outbox().stats().states_sent, 120);
}
