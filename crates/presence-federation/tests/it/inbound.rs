//! Inbound transactions: type checks per entry, limits, idempotence, PDU acknowledgements,
//! and the endpoint handing presence to the server exactly once.

use std::{sync::Arc, time::Duration};

use axum::body::Body;
use presence_engine::RemotePresence;
use presence_federation::{
    Error, FederationApi, Inbound, InboundConfig, KeyCache, KeyCacheConfig, Received,
    RequestVerifier, ServerKeys, inbound::parse_transaction, sign_request,
};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::support::{FakeKeySource, NOW, RecordingSink, clock, key, key_document, server};

fn body(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

fn remote(user: &str, presence: &str) -> RemotePresence {
    RemotePresence {
        user_id: user.to_owned(),
        presence: presence.to_owned(),
        last_active_ago: None,
        status_msg: None,
        currently_active: None,
    }
}

#[test]
fn entries_with_wrong_types_are_dropped_and_the_rest_kept() {
    let txn = json!({
        "origin": "a.example",
        "origin_server_ts": 1,
        "pdus": [],
        "edus": [
            {"edu_type": "m.typing", "content": {"room_id": "!r:a.example"}},
            {"edu_type": "m.presence", "content": {"push": [
                {"user_id": "@ok:a.example", "presence": "online", "last_active_ago": 5,
                 "status_msg": "hi", "currently_active": true},
                {"user_id": "@nulls:a.example", "presence": "unavailable", "last_active_ago": null,
                 "status_msg": null, "currently_active": null},
                {"user_id": "@bad1:a.example", "presence": "online", "last_active_ago": "5"},
                {"user_id": "@bad2:a.example", "presence": "online", "last_active_ago": -1},
                {"user_id": "@bad3:a.example", "presence": "online", "last_active_ago": 1.5},
                {"user_id": "@bad4:a.example", "presence": "online", "status_msg": 7},
                {"user_id": "@bad5:a.example", "presence": "online", "currently_active": "yes"},
                {"user_id": "@bad6:a.example", "presence": 1},
                {"user_id": 42, "presence": "online"},
                {"presence": "online"},
                "not an object",
                {"user_id": "@weird:a.example", "presence": "anything goes here"}
            ]}},
            {"edu_type": "m.presence", "content": {"push": "not a list"}},
            {"edu_type": "m.presence", "content": {"push": [
                {"user_id": "@second:a.example", "presence": "offline"}
            ]}},
            "not an object either"
        ]
    });
    let parsed = parse_transaction(&body(&txn), &InboundConfig::default()).unwrap();
    let mut ok = remote("@ok:a.example", "online");
    ok.last_active_ago = Some(5);
    ok.status_msg = Some("hi".to_owned());
    ok.currently_active = Some(true);
    assert_eq!(
        parsed.presence,
        [
            ok,
            remote("@nulls:a.example", "unavailable"),
            // Semantics (unknown state) are the engine's to judge, not this layer's.
            remote("@weird:a.example", "anything goes here"),
            remote("@second:a.example", "offline"),
        ]
    );
    // 9 bad entries plus 1 malformed presence EDU.
    assert_eq!(parsed.dropped_entries, 10);
    assert_eq!(parsed.ignored_edus, 2);
    assert_eq!(
        serde_json::to_value(&parsed.response).unwrap(),
        json!({"pdus": {}})
    );
}

#[test]
fn limits_and_malformed_bodies_are_bad_requests() {
    let cfg = InboundConfig::default();
    let pdus: Vec<Value> = (0..51)
        .map(|i| json!({"event_id": format!("$e{i}")}))
        .collect();
    let err = parse_transaction(&body(&json!({"pdus": pdus, "edus": []})), &cfg).unwrap_err();
    assert_eq!(
        err.status_and_errcode(),
        (http::StatusCode::BAD_REQUEST, "M_BAD_JSON")
    );
    let edus: Vec<Value> = (0..101)
        .map(|_| json!({"edu_type": "m.typing", "content": {}}))
        .collect();
    let err = parse_transaction(&body(&json!({"pdus": [], "edus": edus})), &cfg).unwrap_err();
    assert_eq!(
        err.status_and_errcode(),
        (http::StatusCode::BAD_REQUEST, "M_BAD_JSON")
    );
    // Exactly at the limits is fine.
    let pdus: Vec<Value> = (0..50)
        .map(|i| json!({"event_id": format!("$e{i}")}))
        .collect();
    let edus: Vec<Value> = (0..100)
        .map(|_| json!({"edu_type": "m.typing", "content": {}}))
        .collect();
    assert!(parse_transaction(&body(&json!({"pdus": pdus, "edus": edus})), &cfg).is_ok());

    assert!(matches!(
        parse_transaction(b"{nope", &cfg),
        Err(Error::NotJson)
    ));
    for bad in [json!([]), json!({"pdus": {}}), json!({"edus": "x"})] {
        let err = parse_transaction(&body(&bad), &cfg).unwrap_err();
        assert!(matches!(err, Error::BadJson(_)), "{bad}: {err:?}");
    }
    // Missing lists count as empty.
    assert!(parse_transaction(b"{}", &cfg).unwrap().presence.is_empty());
}

#[test]
fn pdus_are_acknowledged_by_event_id() {
    let txn = json!({
        "pdus": [
            {"event_id": "$v1event:a.example", "type": "m.room.message"},
            {"type": "m.room.message", "room_id": "!r:a.example", "sender": "@u:a.example",
             "origin_server_ts": 1, "content": {"body": "hi"}, "depth": 1,
             "prev_events": [], "auth_events": [], "hashes": {"sha256": "x"}, "signatures": {}},
            "not an object"
        ],
        "edus": []
    });
    let parsed = parse_transaction(&body(&txn), &InboundConfig::default()).unwrap();
    let ids: Vec<&String> = parsed.response.pdus.keys().collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&&"$v1event:a.example".to_owned()));
    let hashed = ids.iter().find(|id| !id.contains(':')).unwrap();
    // `$` + 43 characters of unpadded URL-safe base64 (a SHA-256).
    assert_eq!(hashed.len(), 44, "{hashed}");
    assert!(
        hashed[1..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    let value = serde_json::to_value(&parsed.response).unwrap();
    assert_eq!(value["pdus"]["$v1event:a.example"], json!({}));
}

#[test]
fn repeated_transaction_ids_answer_again_without_reapplying() {
    let inbound = Inbound::new(InboundConfig::default());
    let a = server("a.example");
    let txn = json!({"pdus": [{"event_id": "$e"}], "edus": [
        {"edu_type": "m.presence", "content": {"push": [{"user_id": "@u:a.example", "presence": "online"}]}}
    ]});
    let first = inbound.receive(&a, "t1", &body(&txn)).unwrap();
    let Received::New(parsed) = &first else {
        panic!("first delivery must be new")
    };
    assert_eq!(parsed.presence.len(), 1);
    let again = inbound.receive(&a, "t1", &body(&txn)).unwrap();
    assert_eq!(again, Received::Repeat(parsed.response.clone()));
    assert_eq!(again.response(), first.response());
    // Another origin may use the same ID; a new ID from the same origin is new.
    assert!(matches!(
        inbound
            .receive(&server("c.example"), "t1", &body(&txn))
            .unwrap(),
        Received::New(_)
    ));
    assert!(matches!(
        inbound.receive(&a, "t2", &body(&txn)).unwrap(),
        Received::New(_)
    ));
    let stats = inbound.stats();
    assert_eq!(
        (stats.transactions, stats.repeats, stats.presence_entries),
        (3, 1, 3)
    );
    // A rejected body is not remembered: a corrected retry is processed.
    assert!(inbound.receive(&a, "t3", b"[").is_err());
    assert!(matches!(
        inbound.receive(&a, "t3", &body(&txn)).unwrap(),
        Received::New(_)
    ));
}

#[tokio::test(start_paused = true)]
async fn transaction_memory_is_bounded_in_size_and_time() {
    let mut cfg = InboundConfig::default();
    cfg.remembered_transactions = 2;
    cfg.remember_for = Duration::from_secs(60);
    let inbound = Inbound::new(cfg);
    let a = server("a.example");
    for id in ["t1", "t2", "t3"] {
        assert!(matches!(
            inbound.receive(&a, id, b"{}").unwrap(),
            Received::New(_)
        ));
    }
    // t1 was pushed out by t3.
    assert!(matches!(
        inbound.receive(&a, "t1", b"{}").unwrap(),
        Received::New(_)
    ));
    assert!(matches!(
        inbound.receive(&a, "t3", b"{}").unwrap(),
        Received::Repeat(_)
    ));
    tokio::time::advance(Duration::from_secs(61)).await;
    assert!(matches!(
        inbound.receive(&a, "t3", b"{}").unwrap(),
        Received::New(_)
    ));
}

/// The federation endpoints of `b.example`, which knows `a.example`'s key, with `config`.
fn endpoint(config: InboundConfig) -> (axum::Router, Arc<RecordingSink>) {
    let source = FakeKeySource::with([(
        server("a.example"),
        key_document("a.example", key("ka", 1), NOW),
    )]);
    let cache = Arc::new(KeyCache::new(source, clock(NOW), KeyCacheConfig::default()));
    let verifier = RequestVerifier::new(server("b.example"), None, cache).unwrap();
    let keys = ServerKeys::new(
        &server("b.example"),
        vec![Arc::new(key("kb", 2))],
        &[],
        Duration::from_secs(60),
        clock(NOW),
    )
    .unwrap();
    let sink = Arc::new(RecordingSink::default());
    let app = FederationApi::new(
        Arc::new(keys),
        verifier,
        Arc::new(Inbound::new(config)),
        sink.clone(),
        None,
    )
    .router();
    (app, sink)
}

/// A transaction `txn_id` from `a.example`, signed.
fn signed_transaction(txn_id: &str, txn: &Value) -> http::Request<Body> {
    let mut r = http::Request::put(format!("/_matrix/federation/v1/send/{txn_id}"))
        .body(body(txn))
        .unwrap();
    sign_request(
        &key("ka", 1),
        &server("a.example"),
        &server("b.example"),
        &mut r,
    )
    .unwrap();
    r.map(Body::from)
}

/// `rc_federation`: with every request delayed (`sleep_limit: 0`) and none allowed to wait
/// beside it (`reject_limit: 0`), of two concurrent transactions from one server one is
/// answered after the delay and the other refused with 429 and a retry hint.
#[tokio::test]
async fn rc_federation_delays_and_refuses_a_busy_origin() {
    let mut config = InboundConfig::default();
    config.rate_limit.sleep_limit = 0;
    config.rate_limit.reject_limit = 0;
    config.rate_limit.sleep_delay = Duration::from_millis(300);
    let (app, _sink) = endpoint(config);
    let txn = json!({"origin": "a.example", "origin_server_ts": 1, "pdus": [], "edus": []});
    let started = std::time::Instant::now();
    let (first, second) = tokio::join!(
        app.clone().oneshot(signed_transaction("t1", &txn)),
        app.clone().oneshot(signed_transaction("t2", &txn)),
    );
    let mut statuses = Vec::new();
    for response in [first.unwrap(), second.unwrap()] {
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let data: Value = serde_json::from_slice(&bytes).unwrap();
        if status == http::StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(data["errcode"], "M_LIMIT_EXCEEDED", "{data}");
            assert_eq!(data["retry_after_ms"], 1000, "{data}");
        }
        statuses.push(status.as_u16());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 429]);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "the accepted one was delayed: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn endpoint_applies_presence_once_per_transaction() {
    let (app, sink) = endpoint(InboundConfig::default());

    let txn = json!({"origin": "a.example", "origin_server_ts": 1, "pdus": [], "edus": [
        {"edu_type": "m.presence", "content": {"push": [
            {"user_id": "@u:a.example", "presence": "online", "currently_active": true},
            {"user_id": "@v:a.example", "presence": "online", "last_active_ago": "bad"}
        ]}}
    ]});
    for _ in 0..2 {
        let response = app
            .clone()
            .oneshot(signed_transaction("1700000000000_1", &txn))
            .await
            .unwrap();
        assert_eq!(response.status(), http::StatusCode::OK);
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&bytes).unwrap(),
            json!({"pdus": {}})
        );
    }
    let applied = sink.all();
    assert_eq!(applied.len(), 1);
    let mut want = remote("@u:a.example", "online");
    want.currently_active = Some(true);
    assert_eq!(applied[0], (server("a.example"), vec![want]));
}
