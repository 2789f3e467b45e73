//! Server discovery with a fake DNS and a real HTTPS `.well-known` server on 127.0.0.1:
//! literals and explicit ports, delegation (with and without port), SRV order, the 8448
//! fallback, redirects, caching and the IP blacklist.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use axum::{
    Router,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use presence_federation::{
    ClientConfig, Dns, Endpoint, FederationClient, IpRangeFilter, SrvTarget,
    tls::server_tls_config_from,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::support::{key, server, test_pki};

#[derive(Default)]
struct FakeDns {
    addrs: Mutex<HashMap<(String, u16), Vec<SocketAddr>>>,
    srv: Mutex<HashMap<String, Vec<SrvTarget>>>,
    lookups: Mutex<Vec<(String, u16)>>,
}

impl FakeDns {
    fn addr(&self, host: &str, port: u16, to: SocketAddr) {
        self.addrs
            .lock()
            .unwrap()
            .entry((host.to_owned(), port))
            .or_default()
            .push(to);
    }

    fn srv(&self, name: &str, targets: Vec<SrvTarget>) {
        self.srv.lock().unwrap().insert(name.to_owned(), targets);
    }

    fn lookups(&self) -> Vec<(String, u16)> {
        self.lookups.lock().unwrap().clone()
    }
}

#[async_trait]
impl Dns for FakeDns {
    async fn srv(&self, name: &str) -> Vec<SrvTarget> {
        self.srv
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    async fn lookup(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        self.lookups.lock().unwrap().push((host.to_owned(), port));
        self.addrs
            .lock()
            .unwrap()
            .get(&(host.to_owned(), port))
            .cloned()
            .ok_or_else(|| format!("{host} does not exist"))
    }
}

/// `Host` headers seen by the `.well-known` server.
type Seen = Arc<Mutex<Vec<String>>>;

/// Answers `.well-known/matrix/server` depending on the `Host` it is asked for.
async fn well_known(headers: HeaderMap, seen: Seen, moved: bool) -> Response {
    let host = headers[header::HOST].to_str().unwrap().to_owned();
    seen.lock().unwrap().push(host.clone());
    let json = |body: &str, cache: &'static str| {
        (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, cache),
            ],
            body.to_owned(),
        )
            .into_response()
    };
    match (host.as_str(), moved) {
        ("deleg.test", false) => json(r#"{"m.server": "target.test:1234"}"#, "max-age=3600"),
        ("noport.test", false) => json(r#"{"m.server": "target.test"}"#, "max-age=3600"),
        ("short.test", false) => json(r#"{"m.server": "target.test:1"}"#, "max-age=0"),
        ("garbage.test", false) => json(r#"{"m.server": 42}"#, "max-age=3600"),
        ("redirect.test", false) => (
            StatusCode::FOUND,
            [(header::LOCATION, "/.well-known/matrix/server-moved")],
        )
            .into_response(),
        ("redirect.test", true) => json(r#"{"m.server": "moved.test:2"}"#, "max-age=3600"),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

struct Fixture {
    dns: Arc<FakeDns>,
    client: FederationClient,
    seen: Seen,
    _shutdown: tokio_util::sync::DropGuard,
}

async fn fixture() -> Fixture {
    let pki = test_pki();
    let certs = CertificateDer::pem_slice_iter(pki.leaf_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key_der = PrivateKeyDer::from_pem_slice(pki.leaf_key_pem.as_bytes()).unwrap();
    let seen: Seen = Arc::default();
    let (s1, s2) = (seen.clone(), seen.clone());
    let app = Router::new()
        .route(
            "/.well-known/matrix/server",
            get(move |h: HeaderMap| well_known(h, s1.clone(), false)),
        )
        .route(
            "/.well-known/matrix/server-moved",
            get(move |h: HeaderMap| well_known(h, s2.clone(), true)),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let tls = Arc::new(server_tls_config_from(certs, key_der).unwrap());
    tokio::spawn(crate::support::serve_tls(
        listener,
        tls,
        app,
        shutdown.clone(),
    ));

    let dns = Arc::new(FakeDns::default());
    for host in [
        "deleg.test",
        "noport.test",
        "short.test",
        "garbage.test",
        "redirect.test",
        "plain.test",
        "legacy.test",
    ] {
        dns.addr(host, 443, addr);
    }
    let mut config = ClientConfig::default();
    config.verify_certificates = false;
    config.ip_filter = IpRangeFilter::default().allowing(&["127.0.0.0/8"]).unwrap();
    let client = FederationClient::new(
        server("me.test"),
        Arc::new(key("k", 1)),
        config,
        dns.clone(),
    )
    .unwrap();
    Fixture {
        dns,
        client,
        seen,
        _shutdown: shutdown.drop_guard(),
    }
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn endpoint(tls: &str, host: &str, addrs: &[&str]) -> Endpoint {
    Endpoint::new(
        tls.to_owned(),
        host.to_owned(),
        addrs.iter().map(|a| sa(a)).collect(),
    )
}

async fn resolve(f: &Fixture, name: &str) -> Result<Endpoint, presence_federation::Error> {
    f.client.resolver().resolve(&server(name)).await
}

#[tokio::test]
async fn literals_and_explicit_ports_skip_discovery() {
    let f = fixture().await;
    assert_eq!(
        resolve(&f, "127.0.0.1:8000").await.unwrap(),
        endpoint("127.0.0.1", "127.0.0.1:8000", &["127.0.0.1:8000"])
    );
    // An IPv6 literal without a port: 8448, and ::1 is blocked (only 127/8 is allowed here).
    let err = resolve(&f, "[::1]").await.unwrap_err().to_string();
    assert!(
        err.contains("[::1]:8448") && err.contains("blacklist"),
        "{err}"
    );
    f.dns.addr("name.test", 9000, sa("127.0.0.2:9000"));
    assert_eq!(
        resolve(&f, "name.test:9000").await.unwrap(),
        endpoint("name.test", "name.test:9000", &["127.0.0.2:9000"])
    );
    assert_eq!(f.dns.lookups(), [("name.test".to_owned(), 9000)]);
    assert!(f.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn well_known_delegation_with_a_port_is_used_and_cached() {
    let f = fixture().await;
    f.dns.addr("target.test", 1234, sa("127.0.0.3:1234"));
    let want = endpoint("target.test", "target.test:1234", &["127.0.0.3:1234"]);
    assert_eq!(resolve(&f, "deleg.test").await.unwrap(), want);
    assert_eq!(resolve(&f, "deleg.test").await.unwrap(), want);
    assert_eq!(*f.seen.lock().unwrap(), ["deleg.test"]);
}

#[tokio::test]
async fn a_zero_lifetime_answer_is_asked_again() {
    let f = fixture().await;
    f.dns.addr("target.test", 1, sa("127.0.0.3:1"));
    resolve(&f, "short.test").await.unwrap();
    resolve(&f, "short.test").await.unwrap();
    assert_eq!(*f.seen.lock().unwrap(), ["short.test", "short.test"]);
}

#[tokio::test]
async fn delegation_without_a_port_goes_through_srv_in_priority_order() {
    let f = fixture().await;
    f.dns.srv(
        "_matrix-fed._tcp.target.test",
        vec![
            SrvTarget::new("low.test", 7000, 10, 0),
            SrvTarget::new("high.test", 7001, 5, 0),
        ],
    );
    f.dns.addr("low.test", 7000, sa("127.0.0.4:7000"));
    f.dns.addr("high.test", 7001, sa("127.0.0.5:7001"));
    assert_eq!(
        resolve(&f, "noport.test").await.unwrap(),
        endpoint(
            "target.test",
            "target.test",
            &["127.0.0.5:7001", "127.0.0.4:7000"]
        )
    );
}

#[tokio::test]
async fn without_well_known_srv_then_the_deprecated_srv_then_8448() {
    let f = fixture().await;
    f.dns.srv(
        "_matrix._tcp.legacy.test",
        vec![SrvTarget::new("old.test", 8500, 0, 0)],
    );
    f.dns.addr("old.test", 8500, sa("127.0.0.6:8500"));
    assert_eq!(
        resolve(&f, "legacy.test").await.unwrap(),
        endpoint("legacy.test", "legacy.test", &["127.0.0.6:8500"])
    );

    f.dns.addr("plain.test", 8448, sa("127.0.0.7:8448"));
    let want = endpoint("plain.test", "plain.test", &["127.0.0.7:8448"]);
    assert_eq!(resolve(&f, "plain.test").await.unwrap(), want);
    // The missing .well-known is cached too.
    assert_eq!(resolve(&f, "plain.test").await.unwrap(), want);
    let asked = f
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|h| *h == "plain.test")
        .count();
    assert_eq!(asked, 1);

    // A .well-known that is not usable counts as none.
    f.dns.addr("garbage.test", 8448, sa("127.0.0.8:8448"));
    assert_eq!(
        resolve(&f, "garbage.test").await.unwrap(),
        endpoint("garbage.test", "garbage.test", &["127.0.0.8:8448"])
    );
}

#[tokio::test]
async fn well_known_redirects_are_followed() {
    let f = fixture().await;
    f.dns.addr("moved.test", 2, sa("127.0.0.9:2"));
    assert_eq!(
        resolve(&f, "redirect.test").await.unwrap(),
        endpoint("moved.test", "moved.test:2", &["127.0.0.9:2"])
    );
    assert_eq!(*f.seen.lock().unwrap(), ["redirect.test", "redirect.test"]);
}

#[tokio::test]
async fn blacklisted_addresses_are_never_used() {
    let f = fixture().await;
    f.dns.addr("private.test", 8448, sa("10.1.2.3:8448"));
    f.dns.addr("private.test", 8448, sa("203.0.113.7:8448"));
    let err = resolve(&f, "private.test:8448").await.unwrap_err();
    assert!(
        err.to_string().contains("federation_ip_range_blacklist"),
        "{err}"
    );
    // Mixed answers keep only the allowed addresses.
    f.dns.addr("mixed.test", 8448, sa("10.0.0.1:8448"));
    f.dns.addr("mixed.test", 8448, sa("93.184.216.34:8448"));
    assert_eq!(
        resolve(&f, "mixed.test:8448").await.unwrap().addrs,
        [sa("93.184.216.34:8448")]
    );
    let err = resolve(&f, "10.9.9.9").await.unwrap_err();
    assert!(
        err.to_string().contains("federation_ip_range_blacklist"),
        "{err}"
    );
}
