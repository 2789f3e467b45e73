//! X-Matrix: outbound signing verified by inbound verification, and every rejection path,
//! both on the verifier and through the axum endpoints.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use axum::body::Body;
use presence_federation::{
    Error, FederationApi, Inbound, InboundConfig, KeyCache, KeyCacheConfig, RequestVerifier,
    ServerKeys, sign_request,
};
use presence_router::ServerName;
use tower::ServiceExt as _;

use crate::support::{FakeKeySource, NOW, RecordingSink, clock, key, key_document, server};

const PATH: &str = "/_matrix/federation/v1/send/t1?x=1";
const BODY: &str = r#"{"origin":"a.example","origin_server_ts":1,"pdus":[],"edus":[]}"#;

struct Fixture {
    verifier: RequestVerifier,
    source: Arc<FakeKeySource>,
}

/// B's verifier, knowing A's and C's published keys through a fake key source.
fn fixture(whitelist: Option<&[&str]>) -> Fixture {
    let source = FakeKeySource::with([
        (
            server("a.example"),
            key_document("a.example", key("ka", 1), NOW),
        ),
        (
            server("c.example"),
            key_document("c.example", key("kc", 3), NOW),
        ),
    ]);
    let cache = Arc::new(KeyCache::new(
        source.clone(),
        clock(NOW),
        KeyCacheConfig::default(),
    ));
    let whitelist = whitelist.map(|w| w.iter().map(|s| server(s)).collect::<BTreeSet<_>>());
    let verifier = RequestVerifier::new(server("b.example"), whitelist, cache).unwrap();
    Fixture { verifier, source }
}

fn signed(
    origin: &str,
    destination: &str,
    key_seed: u8,
    key_version: &str,
) -> http::Request<Vec<u8>> {
    let mut request = http::Request::put(PATH)
        .body(BODY.as_bytes().to_vec())
        .unwrap();
    sign_request(
        &key(key_version, key_seed),
        &server(origin),
        &server(destination),
        &mut request,
    )
    .unwrap();
    request
}

fn authorization(r: &http::Request<Vec<u8>>) -> String {
    r.headers()[http::header::AUTHORIZATION]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn signed_request_verifies_and_names_its_origin() {
    let f = fixture(None);
    let request = signed("a.example", "b.example", 1, "ka");
    let header = authorization(&request);
    assert!(header.starts_with("X-Matrix "), "{header}");
    assert!(header.contains("origin=a.example"), "{header}");
    assert!(header.contains("destination=b.example"), "{header}");
    assert!(header.contains("key=\"ed25519:ka\""), "{header}");
    assert_eq!(
        f.verifier.verify(&request).await.unwrap(),
        server("a.example")
    );
    // A second request uses the cached key.
    f.verifier.verify(&request).await.unwrap();
    assert_eq!(f.source.fetch_count(), 1);
}

fn assert_unauthorized(result: Result<ServerName, Error>, what: &str) {
    let err = result.expect_err(what);
    assert_eq!(
        err.status_and_errcode(),
        (http::StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED"),
        "{what}: {err}"
    );
}

#[tokio::test]
async fn tampering_and_misaddressing_are_unauthorized() {
    let f = fixture(None);

    // Missing header.
    let mut r = signed("a.example", "b.example", 1, "ka");
    r.headers_mut().remove(http::header::AUTHORIZATION);
    assert_unauthorized(f.verifier.verify(&r).await, "missing header");

    // Malformed header.
    let mut r = signed("a.example", "b.example", 1, "ka");
    r.headers_mut().insert(
        http::header::AUTHORIZATION,
        "X-Matrix nonsense".parse().unwrap(),
    );
    assert_unauthorized(f.verifier.verify(&r).await, "malformed header");

    // Tampered signature: another valid-looking signature.
    let mut r = signed("a.example", "b.example", 1, "ka");
    let forged = signed("a.example", "b.example", 2, "ka");
    let sig = authorization(&forged);
    r.headers_mut()
        .insert(http::header::AUTHORIZATION, sig.parse().unwrap());
    assert_unauthorized(f.verifier.verify(&r).await, "tampered signature");

    // Tampered body.
    let mut r = signed("a.example", "b.example", 1, "ka");
    *r.body_mut() = BODY.replace(":1,", ":2,").into_bytes();
    assert_unauthorized(f.verifier.verify(&r).await, "tampered body");

    // Tampered URI.
    let r = signed("a.example", "b.example", 1, "ka");
    let (mut parts, body) = r.into_parts();
    parts.uri = "/_matrix/federation/v1/send/t2?x=1".parse().unwrap();
    let r = http::Request::from_parts(parts, body);
    assert_unauthorized(f.verifier.verify(&r).await, "tampered uri");

    // Wrong origin: signed with A's key but claiming to be C.
    let r = signed("c.example", "b.example", 1, "kc");
    assert_unauthorized(f.verifier.verify(&r).await, "wrong origin");

    // Wrong destination.
    let r = signed("a.example", "d.example", 1, "ka");
    let err = f.verifier.verify(&r).await.unwrap_err();
    assert!(err.to_string().contains("another server"), "{err}");
    assert_unauthorized(Err(err), "wrong destination");

    // A key the origin does not publish.
    let r = signed("a.example", "b.example", 1, "other");
    assert_unauthorized(f.verifier.verify(&r).await, "unknown key id");

    // An origin whose keys cannot be fetched.
    let r = signed("z.example", "b.example", 1, "ka");
    assert_unauthorized(f.verifier.verify(&r).await, "unknown origin");
}

#[tokio::test]
async fn origin_outside_the_whitelist_is_forbidden_before_any_key_fetch() {
    let f = fixture(Some(&["c.example"]));
    let r = signed("a.example", "b.example", 1, "ka");
    let err = f.verifier.verify(&r).await.unwrap_err();
    assert_eq!(
        err.status_and_errcode(),
        (http::StatusCode::FORBIDDEN, "M_FORBIDDEN")
    );
    assert_eq!(f.source.fetch_count(), 0);
    let r = signed("c.example", "b.example", 3, "kc");
    assert_eq!(f.verifier.verify(&r).await.unwrap(), server("c.example"));
}

#[tokio::test]
async fn failed_key_fetches_are_not_repeated_at_once() {
    let f = fixture(None);
    for _ in 0..5 {
        let r = signed("z.example", "b.example", 1, "kz");
        assert!(f.verifier.verify(&r).await.is_err());
    }
    assert_eq!(f.source.fetch_count(), 1);
}

#[tokio::test]
async fn keys_are_refetched_once_expired() {
    let source = FakeKeySource::with([(
        server("a.example"),
        key_document("a.example", key("ka", 1), NOW),
    )]);
    let clock = clock(NOW);
    let mut config = KeyCacheConfig::default();
    config.clock_skew = Duration::from_secs(60);
    let cache = Arc::new(KeyCache::new(source.clone(), clock.clone(), config));
    let verifier = RequestVerifier::new(server("b.example"), None, cache).unwrap();
    let r = signed("a.example", "b.example", 1, "ka");
    verifier.verify(&r).await.unwrap();
    // Past valid_until_ts but within the skew: still cached.
    clock.advance(24 * 3600 * 1000 + 30_000);
    verifier.verify(&r).await.unwrap();
    assert_eq!(source.fetch_count(), 1);
    // Past the skew: refetched; the fake still serves the old (now expired) document.
    clock.advance(60_000);
    assert!(verifier.verify(&r).await.is_err());
    assert_eq!(source.fetch_count(), 2);
    // A fresh document is picked up (after the refetch interval).
    source.documents.lock().unwrap().insert(
        server("a.example"),
        key_document("a.example", key("ka", 1), NOW + 24 * 3600 * 1000),
    );
    clock.advance(61_000);
    verifier.verify(&r).await.unwrap();
    assert_eq!(source.fetch_count(), 3);
}

fn api(whitelist: Option<&[&str]>, sink: Arc<RecordingSink>) -> axum::Router {
    let f = fixture(whitelist);
    let keys = ServerKeys::new(
        &server("b.example"),
        vec![Arc::new(key("kb", 2))],
        &[],
        Duration::from_secs(3600),
        clock(NOW),
    )
    .unwrap();
    FederationApi::new(
        Arc::new(keys),
        f.verifier,
        Arc::new(Inbound::new(InboundConfig::default())),
        sink,
        None,
    )
    .router()
}

async fn call(
    app: &axum::Router,
    r: http::Request<Vec<u8>>,
) -> (http::StatusCode, serde_json::Value) {
    let response = app.clone().oneshot(r.map(Body::from)).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn endpoints_answer_matrix_errors() {
    let sink = Arc::new(RecordingSink::default());
    let app = api(Some(&["a.example"]), sink.clone());

    let (status, body) = call(&app, signed("a.example", "b.example", 1, "ka")).await;
    assert_eq!(status, http::StatusCode::OK, "{body}");
    assert_eq!(body, serde_json::json!({"pdus": {}}));

    let mut r = signed("a.example", "b.example", 1, "ka");
    r.headers_mut().remove(http::header::AUTHORIZATION);
    let (status, body) = call(&app, r).await;
    assert_eq!(status, http::StatusCode::UNAUTHORIZED);
    assert_eq!(body["errcode"], "M_UNAUTHORIZED");
    assert!(
        body["error"].as_str().unwrap().contains("Authorization"),
        "{body}"
    );

    let (status, body) = call(&app, signed("a.example", "b.example", 2, "ka")).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (http::StatusCode::UNAUTHORIZED, Some("M_UNAUTHORIZED"))
    );

    let (status, body) = call(&app, signed("a.example", "x.example", 1, "ka")).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (http::StatusCode::UNAUTHORIZED, Some("M_UNAUTHORIZED"))
    );

    let (status, body) = call(&app, signed("c.example", "b.example", 3, "kc")).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (http::StatusCode::FORBIDDEN, Some("M_FORBIDDEN"))
    );

    let mut r = http::Request::put(PATH).body(b"not json".to_vec()).unwrap();
    sign_request(
        &key("ka", 1),
        &server("a.example"),
        &server("b.example"),
        &mut r,
    )
    .unwrap_err();
    let mut r = http::Request::put("/_matrix/federation/v1/send/t2")
        .body(b"[1]".to_vec())
        .unwrap();
    sign_request(
        &key("ka", 1),
        &server("a.example"),
        &server("b.example"),
        &mut r,
    )
    .unwrap();
    let (status, body) = call(&app, r).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (http::StatusCode::BAD_REQUEST, Some("M_BAD_JSON"))
    );
    assert!(sink.all().is_empty());
}

#[tokio::test]
async fn key_and_version_endpoints_need_no_signature() {
    let app = api(None, Arc::new(RecordingSink::default()));
    let (status, body) = call(
        &app,
        http::Request::get("/_matrix/key/v2/server")
            .body(Vec::new())
            .unwrap(),
    )
    .await;
    assert_eq!(status, http::StatusCode::OK);
    assert_eq!(body["server_name"], "b.example");
    let doc = serde_json::to_vec(&body).unwrap();
    presence_federation::remote_keys::verify_server_keys(&doc, &server("b.example"), NOW, 0)
        .unwrap();
    let (status, body) = call(
        &app,
        http::Request::get("/_matrix/federation/v1/version")
            .body(Vec::new())
            .unwrap(),
    )
    .await;
    assert_eq!(status, http::StatusCode::OK);
    assert_eq!(body["server"]["name"], "Presenced");
}

/// The transaction endpoint of B with `config`, and its inbound handler (for its stats).
fn api_with(config: InboundConfig) -> (axum::Router, Arc<Inbound>) {
    let f = fixture(None);
    let keys = ServerKeys::new(
        &server("b.example"),
        vec![Arc::new(key("kb", 2))],
        &[],
        Duration::from_secs(3600),
        clock(NOW),
    )
    .unwrap();
    let inbound = Arc::new(Inbound::new(config));
    let app = FederationApi::new(
        Arc::new(keys),
        f.verifier,
        inbound.clone(),
        Arc::new(RecordingSink::default()),
        None,
    )
    .router();
    (app, inbound)
}

/// `request`'s head with a body that arrives only when `release` fires (never, if it is
/// dropped), declaring `length` bytes.
fn held_body(
    request: http::Request<Vec<u8>>,
    length: usize,
    release: tokio::sync::oneshot::Receiver<()>,
) -> http::Request<Body> {
    let (mut parts, body) = request.into_parts();
    parts.headers.insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from(length),
    );
    let chunk = futures::stream::once(async move {
        match release.await {
            Ok(()) => Ok::<_, std::io::Error>(bytes::Bytes::from(body)),
            Err(_) => std::future::pending().await,
        }
    });
    http::Request::from_parts(parts, Body::from_stream(chunk))
}

async fn answer(
    app: &axum::Router,
    r: http::Request<Body>,
) -> (http::StatusCode, serde_json::Value) {
    let response = tokio::time::timeout(Duration::from_secs(5), app.clone().oneshot(r))
        .await
        .expect("answered without the body")
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}

/// Forged requests used to have their bodies (up to 8 MiB each) read before anything was
/// checked: the header, its origin and the origin's key now come first.
#[tokio::test]
async fn a_bad_authorization_is_refused_before_the_body_is_read() {
    let (app, inbound) = api_with(InboundConfig::default());
    let eight_mib = 8 * 1024 * 1024;
    let cases = [
        ("X-Matrix nonsense", "malformed header"),
        (
            r#"X-Matrix origin="b.example",destination="b.example",key="ed25519:kb",sig="AAAA""#,
            "claims to come from us",
        ),
        (
            r#"X-Matrix origin="a.example",destination="x.example",key="ed25519:ka",sig="AAAA""#,
            "addressed to another server",
        ),
        (
            r#"X-Matrix origin="nokeys.example",destination="b.example",key="ed25519:k",sig="AAAA""#,
            "origin without keys",
        ),
    ];
    for (authorization, what) in cases {
        let mut r = http::Request::put(PATH).body(Vec::new()).unwrap();
        r.headers_mut().insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_str(authorization).unwrap(),
        );
        // No body ever comes: only an answer that does not wait for it passes.
        let (_never, release) = tokio::sync::oneshot::channel();
        let (status, body) = answer(&app, held_body(r, eight_mib, release)).await;
        assert_eq!(
            (status, body["errcode"].as_str()),
            (http::StatusCode::UNAUTHORIZED, Some("M_UNAUTHORIZED")),
            "{what}: {body}"
        );
    }
    // A declared length over the limit is refused at once as well.
    let r = signed("a.example", "b.example", 1, "ka");
    let (_never, release) = tokio::sync::oneshot::channel();
    let (status, body) = answer(&app, held_body(r, eight_mib + 1, release)).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (http::StatusCode::PAYLOAD_TOO_LARGE, Some("M_TOO_LARGE"))
    );
    assert_eq!(inbound.stats().buffered_body_bytes, 0);
}

/// Bodies being read share one budget: past it, a request waits briefly, then is told to
/// retry instead of being buffered.
#[tokio::test]
async fn concurrent_bodies_stay_within_the_buffer_budget() {
    let mut config = InboundConfig::default();
    config.max_buffered_body_bytes = 2 * 1024 * 1024;
    config.body_buffer_wait = Duration::from_millis(200);
    let (app, inbound) = api_with(config);
    // Just under 1 MiB each, so that two fill the budget.
    let large = |txn: u32| {
        let pad = "x".repeat(1024 * 1024 - 200);
        let body = serde_json::json!({"pdus": [], "edus": [], "pad": pad});
        let mut r = http::Request::put(format!("/_matrix/federation/v1/send/big{txn}"))
            .body(serde_json::to_vec(&body).unwrap())
            .unwrap();
        sign_request(
            &key("ka", 1),
            &server("a.example"),
            &server("b.example"),
            &mut r,
        )
        .unwrap();
        let length = r.body().len();
        let (release, held) = tokio::sync::oneshot::channel();
        (held_body(r, length, held), release)
    };
    let mut releases = Vec::new();
    let mut pending = Vec::new();
    for txn in 0..2 {
        let (r, release) = large(txn);
        releases.push(release);
        let app = app.clone();
        pending.push(tokio::spawn(async move { app.oneshot(r).await.unwrap() }));
    }
    let started = std::time::Instant::now();
    while inbound.stats().buffered_body_bytes < 2 * 1024 * 1024 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            inbound.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(inbound.stats().buffered_body_bytes, 2 * 1024 * 1024);
    // The third does not fit: 429 with a retry delay, its body never read.
    let (third, _kept) = large(2);
    let response = tokio::time::timeout(Duration::from_secs(5), app.clone().oneshot(third))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key(http::header::RETRY_AFTER));
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
    assert!(body["retry_after_ms"].as_u64().is_some(), "{body}");
    assert_eq!(inbound.stats().refused_busy, 1);
    assert!(inbound.stats().buffered_body_bytes <= 2 * 1024 * 1024);
    // Once their bodies arrive the first two are handled and give their share back.
    for release in releases {
        release.send(()).unwrap();
    }
    for p in pending {
        assert_eq!(p.await.unwrap().status(), http::StatusCode::OK);
    }
    assert_eq!(inbound.stats().buffered_body_bytes, 0);
}
