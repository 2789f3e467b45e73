//! Other servers' signing keys: fetching, verifying and caching them.
//!
//! A key document is trusted only after its self-signature verifies: every key in its
//! `verify_keys` must have signed it (ruma's `verify_json` does the cryptography). Documents
//! relayed by a notary (`trusted_key_servers`) must also carry the notary's valid signature,
//! made with a key configured locally. Verified keys are cached until their
//! `valid_until_ts`, accepted up to a small clock skew past it. Failed fetches are remembered
//! for a while so that a flood of requests naming an unreachable origin (or random key IDs)
//! does not turn into a flood of outbound fetches.
//!
//! Spec: <https://spec.matrix.org/v1.15/server-server-api/#retrieving-server-keys>.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use presence_router::{Millis, ServerName};
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue,
    api::federation::discovery::ServerSigningKeys,
    serde::Base64,
    signatures::{PublicKeyMap, PublicKeySet},
};

use crate::{Clock, Error};

/// Keys beyond this many cached servers trigger a sweep of expired and failed entries.
const CACHE_SWEEP_THRESHOLD: usize = 10_000;

/// A server's current verify keys, after their self-signature was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifiedKeys {
    /// Whose keys these are.
    pub server: ServerName,
    /// Key ID (`ed25519:abc`) to public key.
    pub verify_keys: BTreeMap<String, Base64>,
    /// Until when the keys may be used (milliseconds since the epoch).
    pub valid_until_ts: Millis,
}

/// Verifies a `GET /_matrix/key/v2/server` document for `expected`: the server name matches,
/// every verify key signed it, and it has not expired (allowing `skew_ms`).
///
/// Signatures from other servers (notaries) are ignored here; see [`verify_notary_signature`].
pub fn verify_server_keys(
    json: &[u8],
    expected: &ServerName,
    now_ms: Millis,
    skew_ms: Millis,
) -> Result<VerifiedKeys, Error> {
    let fail = |reason: String| Error::RemoteKeys {
        server: expected.clone(),
        reason,
    };
    let typed: ServerSigningKeys =
        serde_json::from_slice(json).map_err(|e| fail(format!("malformed key document: {e}")))?;
    if typed.server_name.as_str() != expected.as_str() {
        return Err(fail(format!(
            "the document is for {}, not {expected}",
            typed.server_name
        )));
    }
    let valid_until_ts: Millis = typed.valid_until_ts.0.into();
    if valid_until_ts.saturating_add(skew_ms) < now_ms {
        return Err(fail(format!("the keys expired at {valid_until_ts}")));
    }
    if typed.verify_keys.is_empty() {
        return Err(fail("the document has no verify keys".to_owned()));
    }
    let mut object: CanonicalJsonObject =
        serde_json::from_slice(json).map_err(|e| fail(format!("not canonical JSON: {e}")))?;
    keep_signatures_of(&mut object, expected.as_str());

    let own_signatures = match object.get("signatures") {
        Some(CanonicalJsonValue::Object(s)) => match s.get(expected.as_str()) {
            Some(CanonicalJsonValue::Object(own)) => own.clone(),
            _ => return Err(fail("the document is not self-signed".to_owned())),
        },
        _ => return Err(fail("the document has no signatures".to_owned())),
    };
    let mut set = PublicKeySet::new();
    for (key_id, key) in &typed.verify_keys {
        if !own_signatures.contains_key(key_id.as_str()) {
            return Err(fail(format!(
                "verify key {key_id} did not sign the document"
            )));
        }
        set.insert(key_id.to_string(), key.key.clone());
    }
    let map = PublicKeyMap::from([(expected.as_str().to_owned(), set.clone())]);
    ruma::signatures::verify_json(&map, &object)
        .map_err(|e| fail(format!("bad self-signature: {e}")))?;
    Ok(VerifiedKeys {
        server: expected.clone(),
        verify_keys: set,
        valid_until_ts,
    })
}

/// Checks that `notary` signed a key document it relayed, with one of `notary_keys`
/// (key ID to unpadded base64 public key, from local configuration).
pub fn verify_notary_signature(
    json: &[u8],
    notary: &ServerName,
    notary_keys: &BTreeMap<String, String>,
) -> Result<(), Error> {
    let fail = |reason: String| Error::RemoteKeys {
        server: notary.clone(),
        reason,
    };
    let mut object: CanonicalJsonObject =
        serde_json::from_slice(json).map_err(|e| fail(format!("not canonical JSON: {e}")))?;
    keep_signatures_of(&mut object, notary.as_str());
    // `verify_json` checks the signers present; an absent notary signature must fail here.
    let signed_by_notary = matches!(
        object.get("signatures"),
        Some(CanonicalJsonValue::Object(s)) if s.contains_key(notary.as_str())
    );
    if !signed_by_notary {
        return Err(fail("the document is not signed by the notary".to_owned()));
    }
    let mut set = PublicKeySet::new();
    for (id, key) in notary_keys {
        let key = Base64::parse(key).map_err(|e| fail(format!("configured key {id}: {e}")))?;
        set.insert(id.clone(), key);
    }
    let map = PublicKeyMap::from([(notary.as_str().to_owned(), set)]);
    ruma::signatures::verify_json(&map, &object)
        .map_err(|e| fail(format!("bad notary signature: {e}")))
}

/// Drops every signature but `entity`'s: ruma's `verify_json` wants keys for every signer,
/// and we only check one signer at a time.
fn keep_signatures_of(object: &mut CanonicalJsonObject, entity: &str) {
    if let Some(CanonicalJsonValue::Object(signatures)) = object.get_mut("signatures") {
        signatures.retain(|name, _| name == entity);
    }
}

/// Where remote key documents come from (the network, or a fake in tests).
#[async_trait]
pub trait KeySource: Send + Sync + 'static {
    /// Returns the raw JSON key document of `server`. A source relaying through a notary must
    /// have checked the notary's signature; the self-signature is checked by the caller.
    async fn fetch_server_keys(&self, server: &ServerName) -> Result<Vec<u8>, Error>;
}

/// How the key cache behaves.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct KeyCacheConfig {
    /// How far past `valid_until_ts` keys are still accepted (clock skew between servers).
    pub clock_skew: Duration,
    /// After a failed or useless fetch, how long before the same server is asked again.
    pub refetch_interval: Duration,
}

impl Default for KeyCacheConfig {
    fn default() -> Self {
        Self {
            clock_skew: Duration::from_secs(5 * 60),
            refetch_interval: Duration::from_secs(60),
        }
    }
}

#[derive(Default)]
struct Entry {
    keys: Option<VerifiedKeys>,
    /// When we last went to the network for this server.
    last_fetch: Option<Millis>,
    last_error: Option<String>,
}

/// A cache of verified remote keys in front of a [`KeySource`].
pub struct KeyCache {
    source: Arc<dyn KeySource>,
    clock: Arc<dyn Clock>,
    config: KeyCacheConfig,
    entries: Mutex<HashMap<ServerName, Entry>>,
    /// One async lock per server being fetched, so concurrent requests share one fetch.
    fetching: Mutex<HashMap<ServerName, Arc<tokio::sync::Mutex<()>>>>,
}

impl fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyCache")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn millis(d: Duration) -> Millis {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl KeyCache {
    /// A cache fetching from `source`.
    pub fn new(source: Arc<dyn KeySource>, clock: Arc<dyn Clock>, config: KeyCacheConfig) -> Self {
        Self {
            source,
            clock,
            config,
            entries: Mutex::new(HashMap::new()),
            fetching: Mutex::new(HashMap::new()),
        }
    }

    /// Adds keys verified elsewhere (our own keys, configured keys, tests).
    pub fn insert(&self, keys: VerifiedKeys) {
        if let Ok(mut entries) = self.entries.lock() {
            let entry = entries.entry(keys.server.clone()).or_default();
            entry.keys = Some(keys);
            entry.last_error = None;
        }
    }

    /// The public key `key_id` of `server`, from the cache or fetched and verified.
    pub async fn public_key(&self, server: &ServerName, key_id: &str) -> Result<Base64, Error> {
        if let Some(key) = self.cached(server, key_id) {
            return Ok(key);
        }
        let lock = self.fetch_lock(server);
        let result = {
            let _guard = lock.lock().await;
            // Someone may have fetched while we waited.
            match self.cached(server, key_id) {
                Some(key) => Ok(key),
                None => self.fetch(server, key_id).await,
            }
        };
        if let Ok(mut fetching) = self.fetching.lock() {
            // The map and `lock` hold the only references: nobody else is waiting.
            if Arc::strong_count(&lock) <= 2 {
                fetching.remove(server);
            }
        }
        result
    }

    fn fetch_lock(&self, server: &ServerName) -> Arc<tokio::sync::Mutex<()>> {
        match self.fetching.lock() {
            Ok(mut map) => map.entry(server.clone()).or_default().clone(),
            // A poisoned map only loses the coalescing, not correctness.
            Err(_) => Arc::default(),
        }
    }

    fn cached(&self, server: &ServerName, key_id: &str) -> Option<Base64> {
        let now = self.clock.now_ms();
        let entries = self.entries.lock().ok()?;
        let keys = entries.get(server)?.keys.as_ref()?;
        if keys
            .valid_until_ts
            .saturating_add(millis(self.config.clock_skew))
            < now
        {
            return None;
        }
        keys.verify_keys.get(key_id).cloned()
    }

    async fn fetch(&self, server: &ServerName, key_id: &str) -> Result<Base64, Error> {
        let now = self.clock.now_ms();
        let recent = self.entries.lock().ok().and_then(|e| {
            let entry = e.get(server)?;
            let at = entry.last_fetch?;
            (now.saturating_sub(at) < millis(self.config.refetch_interval))
                .then(|| entry.last_error.clone())
        });
        if let Some(last_error) = recent {
            return Err(Error::RemoteKeys {
                server: server.clone(),
                reason: last_error.map_or_else(
                    || format!("no key {key_id} (asked recently)"),
                    |e| format!("{e} (asked recently)"),
                ),
            });
        }
        let fetched = self
            .source
            .fetch_server_keys(server)
            .await
            .map_err(|e| match e {
                // Whatever went wrong on the way, for the caller it is "no usable key".
                e @ Error::RemoteKeys { .. } => e,
                other => Error::RemoteKeys {
                    server: server.clone(),
                    reason: other.to_string(),
                },
            })
            .and_then(|json| {
                verify_server_keys(
                    &json,
                    server,
                    self.clock.now_ms(),
                    millis(self.config.clock_skew),
                )
            });
        let mut entries = self
            .entries
            .lock()
            .map_err(|_| Error::Internal("key cache lock poisoned"))?;
        if entries.len() > CACHE_SWEEP_THRESHOLD {
            let skew = millis(self.config.clock_skew);
            entries.retain(|_, e| {
                e.keys
                    .as_ref()
                    .is_some_and(|k| k.valid_until_ts.saturating_add(skew) >= now)
            });
        }
        let entry = entries.entry(server.clone()).or_default();
        entry.last_fetch = Some(now);
        match fetched {
            Ok(keys) => {
                entry.last_error = None;
                let key = keys.verify_keys.get(key_id).cloned();
                entry.keys = Some(keys);
                key.ok_or_else(|| Error::RemoteKeys {
                    server: server.clone(),
                    reason: format!("the server does not publish key {key_id}"),
                })
            }
            Err(e) => {
                tracing::info!(%server, error = %e, "Fetching a server's signing keys failed.");
                entry.last_error = Some(e.to_string());
                Err(e)
            }
        }
    }
}
