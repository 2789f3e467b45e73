//! Fuzz entry points (feature `fuzzing`): what another server sends before and after it is
//! authenticated, the `X-Matrix` header with the request it signs, and the `/send/{txnId}`
//! transaction body. The `fuzz/` workspace calls these; the unit test below replays the
//! committed corpus so CI runs them on stable.

use std::sync::{Arc, LazyLock};

use presence_router::ServerName;
use ruma::serde::Base64;

use crate::{
    Error, Inbound, InboundConfig, KeyCache, KeyCacheConfig, KeySource, ManualClock,
    RequestVerifier, inbound::parse_transaction,
};

/// Our name in the fuzzed requests.
const US: &str = "fuzz.example";

/// A key source that knows no server (the header checks never reach it).
struct NoKeys;

#[async_trait::async_trait]
impl KeySource for NoKeys {
    async fn fetch_server_keys(&self, _server: &ServerName) -> Result<Vec<u8>, Error> {
        Err(Error::unauthorized("no keys while fuzzing"))
    }
}

static VERIFIER: LazyLock<Option<RequestVerifier>> = LazyLock::new(|| {
    let us = ServerName::parse(US).ok()?;
    let keys = KeyCache::new(
        Arc::new(NoKeys),
        Arc::new(ManualClock::new(0)),
        KeyCacheConfig::default(),
    );
    RequestVerifier::new(us, None, Arc::new(keys)).ok()
});

/// `fuzz/fuzz_targets/x_matrix.rs`: the input's first line is an `Authorization` header
/// value, its second a request target, the rest the body. Runs the checks made before the
/// body is read, then the JSON check and signature verification with a key that is not the
/// signer's, as an inbound request meets them.
pub fn x_matrix(data: &[u8]) {
    let Some(verifier) = VERIFIER.as_ref() else {
        return;
    };
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let header = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or(b"/_matrix/federation/v1/send/1");
    let body = parts.next().unwrap_or_default();
    let Ok(value) = http::HeaderValue::from_bytes(header) else {
        return;
    };
    let Ok(uri) = http::Uri::try_from(target) else {
        return;
    };
    let mut request = http::Request::new(body);
    *request.method_mut() = http::Method::PUT;
    *request.uri_mut() = uri;
    request
        .headers_mut()
        .insert(http::header::AUTHORIZATION, value);
    let Ok(checked) = verifier.check_header(request.headers(), request.uri()) else {
        return;
    };
    assert_ne!(checked.origin().as_str(), US);
    if crate::auth::check_json(body).is_err() {
        return;
    }
    let key = Base64::new(vec![0; 32]);
    let _ = verifier.check_signature(&checked, key, &request);
}

/// `fuzz/fuzz_targets/transaction.rs`: the input as a `/send/{txnId}` body, parsed and then
/// received twice (the second time must be recognised as a repeat).
pub fn transaction(data: &[u8]) {
    let config = InboundConfig::default();
    let parsed = parse_transaction(data, &config);
    let Ok(origin) = ServerName::parse("origin.example") else {
        return;
    };
    let inbound = Inbound::new(config);
    let first = inbound.receive(&origin, "txn", data);
    assert_eq!(first.is_ok(), parsed.is_ok());
    if first.is_ok() {
        let _ = inbound.receive(&origin, "txn", data);
        assert_eq!(inbound.stats().repeats, 1);
    }
}

#[cfg(test)]
mod tests {
    /// Runs `target` on every file of `fuzz/corpus/<name>/`.
    fn replay(name: &str, target: fn(&[u8])) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/corpus")
            .join(name);
        let mut files = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            target(&std::fs::read(entry.unwrap().path()).unwrap());
            files += 1;
        }
        assert!(files > 0, "{} is empty", dir.display());
    }

    #[test]
    fn x_matrix_corpus_replays() {
        replay("x_matrix", super::x_matrix);
    }

    #[test]
    fn transaction_corpus_replays() {
        replay("transaction", super::transaction);
    }
}
