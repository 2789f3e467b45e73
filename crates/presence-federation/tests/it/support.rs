//! Shared fixtures: IDs, states, fake key sources, a recording presence sink, certificates.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use presence_engine::RemotePresence;
use presence_federation::{Error, InboundPresence, KeySource, ManualClock, ServerKeys, SigningKey};
use presence_router::{PresenceState, ServerName, UserId, UserPresenceState};
use tokio::sync::Notify;

/// RFC 8032 test vector 1: seed and public key, unpadded base64.
pub(crate) const RFC8032_SEED_B64: &str = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
pub(crate) const RFC8032_PUBLIC_B64: &str = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo";

/// A fixed wall-clock time for deterministic documents: 2026-01-01T00:00:00Z.
pub(crate) const NOW: u64 = 1_767_225_600_000;

pub(crate) fn server(name: &str) -> ServerName {
    ServerName::parse(name).unwrap()
}

pub(crate) fn user(id: &str) -> UserId {
    UserId::parse(id).unwrap()
}

pub(crate) fn state(id: &str, presence: PresenceState) -> UserPresenceState {
    UserPresenceState {
        state: presence,
        ..UserPresenceState::offline(user(id))
    }
}

/// A key for `version` derived from a seed byte, so tests are deterministic.
pub(crate) fn key(version: &str, seed_byte: u8) -> SigningKey {
    SigningKey::from_seed(version, &[seed_byte; 32]).unwrap()
}

pub(crate) fn clock(now: u64) -> Arc<ManualClock> {
    Arc::new(ManualClock::new(now))
}

/// The published key document of `name`, signed with `key`, valid for a day from `now`.
pub(crate) fn key_document(name: &str, key: SigningKey, now: u64) -> Vec<u8> {
    let keys = ServerKeys::new(
        &server(name),
        vec![Arc::new(key)],
        &[],
        Duration::from_secs(24 * 3600),
        clock(now),
    )
    .unwrap();
    keys.sign_document(now).unwrap().get().as_bytes().to_vec()
}

/// Serves fixed key documents and counts fetches.
#[derive(Default)]
pub(crate) struct FakeKeySource {
    pub(crate) documents: Mutex<BTreeMap<ServerName, Vec<u8>>>,
    pub(crate) fetches: Mutex<Vec<ServerName>>,
}

impl FakeKeySource {
    pub(crate) fn with(documents: impl IntoIterator<Item = (ServerName, Vec<u8>)>) -> Arc<Self> {
        Arc::new(Self {
            documents: Mutex::new(documents.into_iter().collect()),
            fetches: Mutex::default(),
        })
    }

    pub(crate) fn fetch_count(&self) -> usize {
        self.fetches.lock().unwrap().len()
    }
}

#[async_trait]
impl KeySource for FakeKeySource {
    async fn fetch_server_keys(&self, server: &ServerName) -> Result<Vec<u8>, Error> {
        self.fetches.lock().unwrap().push(server.clone());
        self.documents
            .lock()
            .unwrap()
            .get(server)
            .cloned()
            .ok_or_else(|| Error::Request {
                server: server.to_string(),
                reason: "unknown in this test".to_owned(),
            })
    }
}

/// Records what the federation layer hands to the server.
#[derive(Default)]
pub(crate) struct RecordingSink {
    pub(crate) applied: Mutex<Vec<(ServerName, Vec<RemotePresence>)>>,
    pub(crate) changed: Notify,
}

impl RecordingSink {
    pub(crate) fn all(&self) -> Vec<(ServerName, Vec<RemotePresence>)> {
        self.applied.lock().unwrap().clone()
    }

    /// Waits (real time) until `n` batches arrived.
    pub(crate) async fn wait_for_batches(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if self.applied.lock().unwrap().len() >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.applied.lock().unwrap().len() >= n;
            }
        }
    }
}

#[async_trait]
impl InboundPresence for RecordingSink {
    async fn apply(&self, origin: ServerName, entries: Vec<RemotePresence>) {
        self.applied.lock().unwrap().push((origin, entries));
        self.changed.notify_waiters();
    }
}

/// A test CA and a certificate it issued for `localhost` and `127.0.0.1`.
pub(crate) struct TestPki {
    pub(crate) ca_pem: String,
    pub(crate) leaf_pem: String,
    pub(crate) leaf_key_pem: String,
}

pub(crate) fn test_pki() -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    TestPki {
        ca_pem: ca.pem(),
        leaf_pem: leaf.pem(),
        leaf_key_pem: leaf_key.serialize_pem(),
    }
}

/// Serves `app` over TLS as Presenced's listeners do, with their default limits.
pub(crate) async fn serve_tls(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: axum::Router,
    shutdown: tokio_util::sync::CancellationToken,
) {
    presence_listen::serve(
        listener,
        Some(tls),
        app,
        presence_listen::Limits::default(),
        presence_listen::ConnectionCap::new(1024),
        shutdown,
    )
    .await;
}
