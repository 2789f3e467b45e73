//! This server's ed25519 signing key and the `GET /_matrix/key/v2/server` document.
//!
//! The key file has the reference homeserver's format, so a key can move between the two:
//! one line per key, `ed25519 <version> <unpadded base64 of the 32-byte seed>`. The first
//! key signs; every key in the file is published. A missing file is generated on first start
//! (mode 0600); a present but unusable file is an error, never silently replaced, because a
//! new key makes remote servers distrust cached signatures.
//!
//! Signing and canonical JSON are ruma's (`ruma::signatures`); this module only assembles the
//! document. Spec: <https://spec.matrix.org/v1.15/server-server-api/#publishing-keys>.

use std::{
    collections::BTreeMap,
    fmt,
    io::Write as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use pkcs8::{ObjectIdentifier, PrivateKeyInfoRef, der::Decode as _};
use presence_router::{Millis, ServerName};
use ruma::{
    CanonicalJsonObject, MilliSecondsSinceUnixEpoch, OwnedServerName, OwnedServerSigningKeyId,
    UInt,
    api::federation::discovery::{OldVerifyKey as RumaOldVerifyKey, ServerSigningKeys, VerifyKey},
    serde::Base64,
    signatures::{Ed25519KeyPair, KeyPair as _},
};
use serde_json::value::RawValue;

use crate::{Clock, Error};

/// The ASN.1 object identifier of Ed25519 keys (RFC 8410).
const ED25519_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
/// The algorithm name used in key files and key IDs.
const ED25519: &str = "ed25519";
/// Length of an ed25519 seed (the private key) in bytes.
const SEED_LEN: usize = 32;

/// An ed25519 signing key with its key ID (`ed25519:<version>`).
pub struct SigningKey {
    pair: Ed25519KeyPair,
    seed: pkcs8::der::zeroize::Zeroizing<[u8; SEED_LEN]>,
    key_id: OwnedServerSigningKeyId,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the seed.
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id)
            .field("public_key", &self.public_key_base64())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Builds a key from its 32-byte seed and version (the part after `ed25519:`).
    pub fn from_seed(version: &str, seed: &[u8]) -> Result<Self, Error> {
        Self::build(version, seed).map_err(Error::Config)
    }

    /// [`Self::from_seed`] with the bare reason, so each caller can say where it came from.
    fn build(version: &str, seed: &[u8]) -> Result<Self, String> {
        let key_id = OwnedServerSigningKeyId::try_from(format!("{ED25519}:{version}"))
            .map_err(|e| format!("invalid key version {version:?}: {e}"))?;
        let seed: [u8; SEED_LEN] = seed
            .try_into()
            .map_err(|_| format!("an ed25519 seed has {SEED_LEN} bytes, not {}", seed.len()))?;
        let pair = Ed25519KeyPair::new(ED25519_OID, &seed, None, version.to_owned())
            .map_err(|e| format!("unusable ed25519 seed: {e}"))?;
        Ok(Self {
            pair,
            seed: pkcs8::der::zeroize::Zeroizing::new(seed),
            key_id,
        })
    }

    /// Generates a new random key. Its version is `a_` followed by four characters taken
    /// from the public key, the reference's naming style.
    pub fn generate() -> Result<Self, Error> {
        // ruma produces a PKCS#8 document; the seed is its private key octet string
        // (itself DER: 0x04 0x20 followed by the 32 bytes).
        let document = Ed25519KeyPair::generate();
        let info = PrivateKeyInfoRef::from_der(&document)
            .map_err(|e| Error::Signing(format!("generated key is not PKCS#8: {e}")))?;
        let raw = info.private_key.as_bytes();
        let seed = match raw {
            [0x04, 0x20, rest @ ..] if rest.len() == SEED_LEN => rest,
            _ if raw.len() == SEED_LEN => raw,
            _ => {
                return Err(Error::Signing(
                    "generated key has no 32-byte seed".to_owned(),
                ));
            }
        };
        let provisional = Self::from_seed("new", seed)?;
        let tag: String = provisional
            .public_key_base64()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(4)
            .collect();
        Self::from_seed(&format!("a_{tag}"), seed)
    }

    /// The key ID, e.g. `ed25519:a_AbCd`.
    pub fn key_id(&self) -> &OwnedServerSigningKeyId {
        &self.key_id
    }

    /// The version (the key ID without `ed25519:`).
    pub fn version(&self) -> &str {
        self.pair.version()
    }

    /// The 32-byte public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.pair.public_key()
    }

    /// The public key as unpadded base64, as published in `verify_keys`.
    pub fn public_key_base64(&self) -> String {
        Base64::<ruma::serde::base64::Standard, _>::new(self.public_key()).encode()
    }

    /// The key pair, for ruma's signing functions.
    pub fn key_pair(&self) -> &Ed25519KeyPair {
        &self.pair
    }

    /// Signs raw bytes (already canonical JSON); returns the raw signature.
    pub fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).into_parts().1
    }

    /// The key-file line for this key (no trailing newline).
    pub fn to_key_file_line(&self) -> String {
        let seed = Base64::<ruma::serde::base64::Standard, _>::new(*self.seed).encode();
        format!("{ED25519} {} {seed}", self.version())
    }
}

/// Parses a key file's text: every non-blank line is one key.
pub fn parse_key_file(path: &Path, text: &str) -> Result<Vec<SigningKey>, Error> {
    let bad = |line: usize, reason: String| Error::KeyFile {
        path: path.to_owned(),
        reason: format!("line {line}: {reason}"),
    };
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [algorithm, version, seed] = parts.as_slice() else {
            return Err(bad(
                n,
                "expected three fields: `ed25519 <version> <base64 seed>`".to_owned(),
            ));
        };
        if *algorithm != ED25519 {
            return Err(bad(
                n,
                format!("unsupported algorithm {algorithm:?} (only ed25519)"),
            ));
        }
        let seed = Base64::<ruma::serde::base64::Standard, Vec<u8>>::parse(seed)
            .map_err(|e| bad(n, format!("the seed is not base64: {e}")))?;
        let key = SigningKey::build(version, seed.as_bytes()).map_err(|e| bad(n, e))?;
        keys.push(key);
    }
    if keys.is_empty() {
        return Err(Error::KeyFile {
            path: path.to_owned(),
            reason: "the file holds no key".to_owned(),
        });
    }
    Ok(keys)
}

/// What [`load_or_generate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyFileOrigin {
    /// The file existed and was read.
    Loaded,
    /// The file did not exist; a new key was generated and written.
    Generated,
}

/// Reads the key file at `path`, or, if it does not exist, generates a key and writes it
/// there with mode 0600. Returns every key in the file (the first signs).
///
/// This does blocking file I/O: call it at startup, or through [`load_or_generate_async`].
pub fn load_or_generate(path: &Path) -> Result<(Vec<SigningKey>, KeyFileOrigin), Error> {
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => Ok((parse_key_file(path, &text)?, KeyFileOrigin::Loaded)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SigningKey::generate()?;
            write_new_key_file(path, &key).map_err(io)?;
            tracing::info!(path = %path.display(), key_id = %key.key_id(), "Generated a new signing key.");
            Ok((vec![key], KeyFileOrigin::Generated))
        }
        Err(e) => Err(io(e)),
    }
}

/// [`load_or_generate`] on the blocking thread pool.
pub async fn load_or_generate_async(
    path: PathBuf,
) -> Result<(Vec<SigningKey>, KeyFileOrigin), Error> {
    let shown = path.clone();
    tokio::task::spawn_blocking(move || load_or_generate(&path))
        .await
        .map_err(|e| Error::KeyFile {
            path: shown,
            reason: format!("loading task failed: {e}"),
        })?
}

fn write_new_key_file(path: &Path, key: &SigningKey) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    // create_new: never overwrite a key another process wrote in the meantime.
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    writeln!(file, "{}", key.to_key_file_line())?;
    file.sync_all()
}

/// A key this server used to sign with, published in `old_verify_keys` (the reference's
/// `old_signing_keys` setting).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OldVerifyKey {
    /// The key ID, `ed25519:<version>`.
    pub key_id: String,
    /// The unpadded base64 public key.
    pub key: String,
    /// When the key stopped being used.
    pub expired_ts: Millis,
}

impl OldVerifyKey {
    /// An old key.
    pub fn new(key_id: impl Into<String>, key: impl Into<String>, expired_ts: Millis) -> Self {
        Self {
            key_id: key_id.into(),
            key: key.into(),
            expired_ts,
        }
    }
}

/// This server's published keys: builds the signed `GET /_matrix/key/v2/server` document.
///
/// The signed document is cached and re-signed once half of its validity has passed, so the
/// endpoint costs nothing per request.
pub struct ServerKeys {
    server_name: OwnedServerName,
    keys: Vec<Arc<SigningKey>>,
    old: Vec<(OwnedServerSigningKeyId, RumaOldVerifyKey)>,
    validity: Duration,
    clock: Arc<dyn Clock>,
    cached: Mutex<Option<(Millis, Arc<RawValue>)>>,
}

impl fmt::Debug for ServerKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerKeys")
            .field("server_name", &self.server_name)
            .field("keys", &self.keys)
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}

impl ServerKeys {
    /// Publishes `keys` (the first one signs) for `server_name`, each document valid for
    /// `validity` from the time it is produced.
    pub fn new(
        server_name: &ServerName,
        keys: Vec<Arc<SigningKey>>,
        old: &[OldVerifyKey],
        validity: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, Error> {
        if keys.is_empty() {
            return Err(Error::Config("no signing key".to_owned()));
        }
        let server_name = to_ruma_server_name(server_name)?;
        let old = old
            .iter()
            .map(|k| {
                let id = OwnedServerSigningKeyId::try_from(k.key_id.as_str())
                    .map_err(|e| Error::Config(format!("old key ID {:?}: {e}", k.key_id)))?;
                let key = Base64::parse(&k.key)
                    .map_err(|e| Error::Config(format!("old key {:?}: {e}", k.key_id)))?;
                let ts = MilliSecondsSinceUnixEpoch(UInt::new_saturating(k.expired_ts));
                Ok((id, RumaOldVerifyKey::new(ts, key)))
            })
            .collect::<Result<_, Error>>()?;
        Ok(Self {
            server_name,
            keys,
            old,
            validity,
            clock,
            cached: Mutex::new(None),
        })
    }

    /// The key that signs requests and documents.
    pub fn signing_key(&self) -> &Arc<SigningKey> {
        // `new` refuses an empty list.
        &self.keys[0]
    }

    /// The signed key document, re-signed when half of its validity has passed.
    pub fn document(&self) -> Result<Arc<RawValue>, Error> {
        let now = self.clock.now_ms();
        let half = u64::try_from(self.validity.as_millis() / 2).unwrap_or(u64::MAX);
        if let Ok(cached) = self.cached.lock()
            && let Some((at, doc)) = cached.as_ref()
            && now >= *at
            && now - *at < half
        {
            return Ok(doc.clone());
        }
        let doc: Arc<RawValue> = Arc::from(self.sign_document(now)?);
        if let Ok(mut cached) = self.cached.lock() {
            *cached = Some((now, doc.clone()));
        }
        Ok(doc)
    }

    /// Builds and signs the document for time `now`.
    pub fn sign_document(&self, now: Millis) -> Result<Box<RawValue>, Error> {
        let valid_until = now.saturating_add(u64::try_from(self.validity.as_millis()).unwrap_or(0));
        let mut doc = ServerSigningKeys::new(
            self.server_name.clone(),
            MilliSecondsSinceUnixEpoch(UInt::new_saturating(valid_until)),
        );
        for key in &self.keys {
            doc.verify_keys.insert(
                key.key_id().clone(),
                VerifyKey::new(Base64::new(key.public_key().to_vec())),
            );
        }
        doc.old_verify_keys = self.old.iter().cloned().collect::<BTreeMap<_, _>>();
        let value = ruma::canonical_json::to_canonical_value(&doc)
            .map_err(|e| Error::Signing(format!("key document: {e}")))?;
        let ruma::CanonicalJsonValue::Object(mut object) = value else {
            return Err(Error::Signing("key document is not an object".to_owned()));
        };
        // ruma serialises an empty `signatures` map; sign_json fills it in.
        ruma::signatures::sign_json(
            self.server_name.as_str(),
            self.signing_key().key_pair(),
            &mut object,
        )
        .map_err(|e| Error::Signing(e.to_string()))?;
        to_raw(&object)
    }
}

pub(crate) fn to_raw(object: &CanonicalJsonObject) -> Result<Box<RawValue>, Error> {
    serde_json::value::to_raw_value(object).map_err(|e| Error::Signing(e.to_string()))
}

/// Converts our validated server name to ruma's (their grammars agree on valid names).
pub(crate) fn to_ruma_server_name(name: &ServerName) -> Result<OwnedServerName, Error> {
    OwnedServerName::try_from(name.as_str())
        .map_err(|e| Error::Config(format!("server name {name}: {e}")))
}
