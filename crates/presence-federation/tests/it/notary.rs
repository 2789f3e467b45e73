//! Keys relayed by a notary (`trusted_key_servers`): the notary's signature is checked with
//! locally configured keys, the server's own self-signature still has to hold.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use axum::{Json, Router, routing::post};
use presence_federation::{
    ClientConfig, Dns, FederationClient, HttpKeySource, IpRangeFilter, KeySource, SrvTarget,
    TrustedKeyServer,
    remote_keys::{verify_notary_signature, verify_server_keys},
    tls::server_tls_config_from,
};
use ruma::CanonicalJsonObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::support::{NOW, key, key_document, server, test_pki};

/// `doc` with the notary's signature added, as a notary relays it.
fn notarised(doc: &[u8], notary: &str, seed: u8) -> Vec<u8> {
    let mut object: CanonicalJsonObject = serde_json::from_slice(doc).unwrap();
    ruma::signatures::sign_json(notary, key("n", seed).key_pair(), &mut object).unwrap();
    serde_json::to_vec(&object).unwrap()
}

fn notary_keys(seed: u8) -> BTreeMap<String, String> {
    BTreeMap::from([("ed25519:n".to_owned(), key("n", seed).public_key_base64())])
}

#[test]
fn notary_signature_is_checked_with_configured_keys() {
    let doc = notarised(
        &key_document("far.test", key("kf", 4), NOW),
        "notary.test",
        5,
    );
    verify_notary_signature(&doc, &server("notary.test"), &notary_keys(5)).unwrap();
    // Another key configured for the notary: refused.
    assert!(verify_notary_signature(&doc, &server("notary.test"), &notary_keys(6)).is_err());
    // Not signed by that notary at all: refused.
    assert!(verify_notary_signature(&doc, &server("other.test"), &notary_keys(5)).is_err());
    // The server's own signature still verifies next to the notary's.
    verify_server_keys(&doc, &server("far.test"), NOW, 0).unwrap();
}

/// A DNS that knows no name: only IP literals resolve.
struct NoDns;

#[async_trait]
impl Dns for NoDns {
    async fn srv(&self, _: &str) -> Vec<SrvTarget> {
        Vec::new()
    }
    async fn lookup(&self, host: &str, _: u16) -> Result<Vec<SocketAddr>, String> {
        Err(format!("{host} does not resolve"))
    }
}

#[tokio::test]
async fn unreachable_servers_keys_come_through_the_notary() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let notary = server(&format!(
        "127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    ));
    let relayed = notarised(
        &key_document("far.test", key("kf", 4), NOW),
        notary.as_str(),
        5,
    );
    let relayed: Value = serde_json::from_slice(&relayed).unwrap();
    let queries: Arc<Mutex<Vec<Value>>> = Arc::default();
    let q = queries.clone();
    let app = Router::new().route(
        "/_matrix/key/v2/query",
        post(move |Json(body): Json<Value>| {
            let relayed = relayed.clone();
            let q = q.clone();
            async move {
                q.lock().unwrap().push(body);
                Json(json!({ "server_keys": [relayed] }))
            }
        }),
    );
    let pki = test_pki();
    let certs = CertificateDer::pem_slice_iter(pki.leaf_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key_der = PrivateKeyDer::from_pem_slice(pki.leaf_key_pem.as_bytes()).unwrap();
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    tokio::spawn(crate::support::serve_tls(
        listener,
        Arc::new(server_tls_config_from(certs, key_der).unwrap()),
        app,
        shutdown,
    ));

    let mut config = ClientConfig::default();
    config.verify_certificates = false;
    config.ip_filter = IpRangeFilter::default().allowing(&["127.0.0.0/8"]).unwrap();
    let client = Arc::new(
        FederationClient::new(
            server("me.test"),
            Arc::new(key("k", 1)),
            config,
            Arc::new(NoDns),
        )
        .unwrap(),
    );

    // far.test itself does not resolve; the notary relays its keys.
    let source = HttpKeySource::new(
        client.clone(),
        vec![TrustedKeyServer::new(notary.clone(), notary_keys(5))],
    );
    let doc = source.fetch_server_keys(&server("far.test")).await.unwrap();
    let verified = verify_server_keys(&doc, &server("far.test"), NOW, 0).unwrap();
    assert_eq!(
        verified.verify_keys["ed25519:kf"].encode(),
        key("kf", 4).public_key_base64()
    );
    assert_eq!(
        queries.lock().unwrap().as_slice(),
        [json!({"server_keys": {"far.test": {}}})]
    );

    // With other keys configured for the notary, its answer is not trusted.
    let distrustful =
        HttpKeySource::new(client, vec![TrustedKeyServer::new(notary, notary_keys(6))]);
    let err = distrustful
        .fetch_server_keys(&server("far.test"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("bad notary signature"), "{err}");
}
