//! Account secrets and one-time values: password hashing (Argon2id), access tokens and
//! device IDs, the shared-secret registration MAC, and the registration nonces and
//! user-interactive auth sessions a client holds between two requests.
//!
//! Everything secret is compared in constant time, and the CPU-heavy password hash runs on
//! tokio's blocking pool so it never stalls the request threads.
//! Shared-secret registration: <https://element-hq.github.io/synapse/latest/admin_api/register_api.html>.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use argon2::{
    Algorithm, Argon2, Params, Version,
    password_hash::{PasswordHasher, PasswordVerifier},
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use presence_router::{DeviceId, ServerName, UserId};

use crate::{
    config::PasswordHashCost,
    error::{ApiError, Limiter},
};

/// Bytes of randomness in an access token (256 bits).
const TOKEN_BYTES: usize = 32;
/// Bytes of randomness in a registration nonce (the reference sends 64, hex encoded).
const NONCE_BYTES: usize = 64;
/// Bytes of randomness in a user-interactive auth session ID.
const SESSION_BYTES: usize = 18;
/// Length of a generated device ID (uppercase letters, as the reference makes them).
const DEVICE_ID_LEN: usize = 10;
/// Length of a generated localpart when `/register` is called without a username.
const GENERATED_LOCALPART_LEN: usize = 12;
/// How long a registration nonce is accepted (the reference's `NONCE_TIMEOUT`).
pub const NONCE_TTL: Duration = Duration::from_secs(60);
/// How long a user-interactive auth session stays open.
pub const UIA_SESSION_TTL: Duration = Duration::from_secs(30 * 60);
/// How many unused one-time values of one kind are kept at most: a client asking for more
/// is told to slow down instead of growing memory without bound.
const MAX_PENDING: usize = 10_000;
/// Longest password or username the shared-secret API accepts (the reference's limit).
pub const MAX_SECRET_INPUT_LEN: usize = 512;
/// The localpart of the server's own user, which owns rooms created through the admin API.
/// Nobody can register it.
pub const SERVER_USER_LOCALPART: &str = "presenced";

/// `n` bytes from the operating system's random source.
fn random_bytes<const N: usize>() -> Result<[u8; N], ApiError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(RandomError(e)))?;
    Ok(bytes)
}

/// The OS random source failed (nothing can be issued safely without it).
#[derive(Debug, thiserror::Error)]
#[error("the system random source failed: {0}")]
struct RandomError(getrandom::Error);

/// A new access token: 256 random bits, URL-safe base64 without padding.
pub fn new_access_token() -> Result<String, ApiError> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes::<TOKEN_BYTES>()?))
}

/// A new, unguessable ID for an event: `$` and 256 random bits, the shape of the event IDs of
/// room versions 4 and later.
pub fn new_event_id() -> Result<String, ApiError> {
    Ok(format!(
        "${}",
        URL_SAFE_NO_PAD.encode(random_bytes::<32>()?)
    ))
}

/// The opaque part of a new room ID (`!<this>:server`): 18 random lowercase letters and
/// digits, starting with a letter.
pub fn new_room_id_localpart() -> Result<String, ApiError> {
    random_letters::<18>(b'a', true)
}

/// A new device ID: ten random uppercase letters.
pub fn new_device_id() -> Result<DeviceId, ApiError> {
    let id = random_letters::<DEVICE_ID_LEN>(b'A', false)?;
    DeviceId::parse(&id).map_err(ApiError::internal)
}

/// A new localpart for a registration that did not ask for one.
pub fn new_localpart() -> Result<String, ApiError> {
    random_letters::<GENERATED_LOCALPART_LEN>(b'a', false)
}

/// `N` letters from `base` (`a` or `A`), unbiased; the first is always a letter, the rest
/// may also be digits when `digits` is set.
fn random_letters<const N: usize>(base: u8, digits: bool) -> Result<String, ApiError> {
    let mut alphabet: Vec<u8> = (0..26u8).map(|i| base + i).collect();
    if digits {
        alphabet.extend(b'0'..=b'9');
    }
    // Rejection sampling: bytes at or above the largest multiple of the alphabet size would
    // favour the first letters.
    let limit = 256 - 256 % alphabet.len();
    let mut out = String::with_capacity(N);
    while out.len() < N {
        for b in random_bytes::<32>()? {
            let b = usize::from(b);
            if b >= limit || out.len() == N {
                continue;
            }
            let c = alphabet[b % alphabet.len()];
            if out.is_empty() && c.is_ascii_digit() {
                continue;
            }
            out.push(char::from(c));
        }
    }
    Ok(out)
}

/// The Argon2id context for `cost`.
fn argon2(cost: PasswordHashCost) -> Result<Argon2<'static>, ApiError> {
    let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
        .map_err(|e| ApiError::internal(HashError(e.to_string())))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashing or checking a password failed inside the hash function.
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
struct HashError(String);

/// Hashes a password (Argon2id with a random salt) into a PHC string, off the async threads.
pub async fn hash_password(cost: PasswordHashCost, password: String) -> Result<String, ApiError> {
    let salt = random_bytes::<16>()?;
    tokio::task::spawn_blocking(move || -> Result<String, ApiError> {
        let hash = argon2(cost)?
            .hash_password_with_salt(password.as_bytes(), &salt)
            .map_err(|e| ApiError::internal(HashError(e.to_string())))?;
        Ok(hash.to_string())
    })
    .await
    .map_err(ApiError::internal)?
}

/// Whether `password` matches a stored PHC hash, checked off the async threads. The hash's
/// own parameters are used, so a change of `password_hash_cost` keeps old passwords valid.
pub async fn verify_password(hash: String, password: String) -> Result<bool, ApiError> {
    tokio::task::spawn_blocking(move || {
        match Argon2::default().verify_password(password.as_bytes(), hash.as_str()) {
            Ok(()) => true,
            Err(argon2::password_hash::Error::PasswordInvalid) => false,
            Err(e) => {
                // A hash this build cannot read: the login fails, the operator learns why.
                tracing::warn!(error = %e, "A stored password hash could not be checked.");
                false
            }
        }
    })
    .await
    .map_err(ApiError::internal)
}

/// The inputs of a shared-secret registration MAC, as the reference's
/// `register_new_matrix_user` computes it.
#[derive(Debug, Clone, Copy)]
pub struct RegistrationMac<'a> {
    /// The nonce from `GET /_synapse/admin/v1/register`.
    pub nonce: &'a str,
    /// The username exactly as sent (before lowercasing).
    pub username: &'a str,
    /// The password.
    pub password: &'a str,
    /// Whether the new user is an admin.
    pub admin: bool,
    /// The optional user type (covered by the MAC when present).
    pub user_type: Option<&'a str>,
}

impl RegistrationMac<'_> {
    fn mac(&self, secret: &str) -> Hmac<sha1::Sha1> {
        // HMAC accepts keys of any length, so this cannot fail; an empty MAC state would
        // only make every comparison fail.
        let mut mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(secret.as_bytes())
            .unwrap_or_else(|_| <Hmac<sha1::Sha1> as KeyInit>::new(&Default::default()));
        mac.update(self.nonce.as_bytes());
        mac.update(b"\x00");
        mac.update(self.username.as_bytes());
        mac.update(b"\x00");
        mac.update(self.password.as_bytes());
        mac.update(b"\x00");
        mac.update(if self.admin { b"admin" } else { b"notadmin" });
        if let Some(user_type) = self.user_type.filter(|t| !t.is_empty()) {
            mac.update(b"\x00");
            mac.update(user_type.as_bytes());
        }
        mac
    }

    /// The hex MAC under `secret` (what a client sends).
    pub fn hex(&self, secret: &str) -> String {
        hex::encode(self.mac(secret).finalize().into_bytes())
    }

    /// Whether `given` (hex) is the right MAC under `secret`, compared in constant time.
    pub fn verify(&self, secret: &str, given: &str) -> bool {
        match hex::decode(given) {
            Ok(bytes) => self.mac(secret).verify_slice(&bytes).is_ok(),
            Err(_) => false,
        }
    }
}

/// Checks a localpart a client asks to register, with the reference's rules and texts, and
/// returns the user ID. The caller lowercases first where the reference does.
pub fn validate_new_localpart(localpart: &str, server: &ServerName) -> Result<UserId, ApiError> {
    let invalid = |text: &'static str| ApiError::invalid_username(text);
    if localpart.is_empty() {
        return Err(invalid("User ID cannot be empty"));
    }
    if !localpart
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"=_-./+".contains(&b))
    {
        return Err(invalid(
            "User ID can only contain characters a-z, 0-9, or '=_-./+'",
        ));
    }
    if localpart.starts_with('_') {
        return Err(invalid("User ID may not begin with _"));
    }
    if localpart.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("Numeric user IDs are reserved for guest users."));
    }
    let user = UserId::from_parts(localpart, server)
        .map_err(|_| invalid("User ID may not be longer than 255 characters"))?;
    if localpart == SERVER_USER_LOCALPART {
        return Err(ApiError::user_in_use("User ID already taken."));
    }
    Ok(user)
}

/// The user a login names: a full user ID on this server or a localpart. Logins are
/// case-insensitive as registration lowercases.
pub fn login_user(identifier: &str, server: &ServerName) -> Option<UserId> {
    let id = if identifier.starts_with('@') {
        UserId::parse(&identifier.to_lowercase()).ok()?
    } else {
        UserId::from_parts(&identifier.to_lowercase(), server).ok()?
    };
    id.is_on(server).then_some(id)
}

/// Values handed to a client that must come back soon and only once.
struct OneTimeValues {
    issued: Mutex<HashMap<String, Instant>>,
    ttl: Duration,
}

impl OneTimeValues {
    fn new(ttl: Duration) -> Self {
        Self {
            issued: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    fn issued(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        crate::lock(&self.issued)
    }

    /// Remembers `value` until it expires; refuses when too many are pending.
    fn insert(&self, value: String, now: Instant) -> Result<String, ApiError> {
        let mut issued = self.issued();
        if issued.len() >= MAX_PENDING {
            let ttl = self.ttl;
            issued.retain(|_, at| now.saturating_duration_since(*at) <= ttl);
        }
        if issued.len() >= MAX_PENDING {
            return Err(ApiError::limit_exceeded(1000, Limiter::PendingAuth));
        }
        issued.insert(value.clone(), now);
        Ok(value)
    }

    /// Removes `value`; whether it was issued and has not expired.
    fn take(&self, value: &str, now: Instant) -> bool {
        self.issued()
            .remove(value)
            .is_some_and(|at| now.saturating_duration_since(at) <= self.ttl)
    }

    /// Whether `value` was issued and has not expired (it stays usable).
    fn is_live(&self, value: &str, now: Instant) -> bool {
        self.issued()
            .get(value)
            .is_some_and(|at| now.saturating_duration_since(*at) <= self.ttl)
    }
}

/// Bytes of a nonce's issue time (milliseconds since [`Nonces::epoch`], big-endian).
const NONCE_TIME_BYTES: usize = 8;
/// Bytes of a nonce's tag (HMAC-SHA1 of time and randomness under the process's key).
const NONCE_TAG_BYTES: usize = 20;

/// Shared-secret registration nonces, built so that no flood of unauthenticated requests
/// can lock the operator out, even one from the operator's own (loopback) address:
///
/// - Issuing keeps no state. A nonce is its issue time, random bytes and a tag (HMAC under
///   a per-process random key), so the server recognises its own unexpired nonces without a
///   pool that could fill (the old 10,000-entry pool filled in 5 s). A per-address limit was
///   not enough: a flood from loopback would spend the operator's own budget.
/// - Single use is kept by remembering spent nonces, in two sets. A nonce spent by a
///   correctly signed request is kept until it expires; only holders of the secret add
///   those. A nonce spent by any other request (wrong MAC, bad fields) goes into a bounded
///   first-in-first-out set, so a flood of bad requests only evicts old entries, which at
///   worst lets a nonce whose request was already refused be tried once more — no gain
///   without the secret. A correctly signed request always finds a fresh nonce usable.
struct Nonces {
    key: OnceLock<[u8; 32]>,
    /// The origin of the issue times (nonces do not survive a restart: the key is new).
    epoch: Instant,
    spent: Mutex<SpentNonces>,
}

#[derive(Default)]
struct SpentNonces {
    /// Spent by requests that were refused or not yet verified, oldest first.
    tried: HashSet<String>,
    tried_order: VecDeque<String>,
    /// Spent by correctly signed requests, with their issue time.
    signed: HashMap<String, Instant>,
}

impl Nonces {
    fn new() -> Self {
        Self {
            key: OnceLock::new(),
            epoch: Instant::now(),
            spent: Mutex::new(SpentNonces::default()),
        }
    }

    fn key(&self) -> Result<&[u8; 32], ApiError> {
        if let Some(key) = self.key.get() {
            return Ok(key);
        }
        let fresh = random_bytes::<32>()?;
        Ok(self.key.get_or_init(|| fresh))
    }

    fn tag(key: &[u8; 32], body: &[u8]) -> Hmac<sha1::Sha1> {
        // Cannot fail (any key length); see `RegistrationMac::mac`.
        let mut mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(key)
            .unwrap_or_else(|_| <Hmac<sha1::Sha1> as KeyInit>::new(&Default::default()));
        mac.update(body);
        mac
    }

    fn issue(&self, now: Instant) -> Result<String, ApiError> {
        let key = self.key()?;
        let millis = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        let mut nonce = [0u8; NONCE_BYTES];
        let (body, tag) = nonce.split_at_mut(NONCE_BYTES - NONCE_TAG_BYTES);
        body[..NONCE_TIME_BYTES].copy_from_slice(&millis.to_be_bytes());
        body[NONCE_TIME_BYTES..].copy_from_slice(&random_bytes::<
            { NONCE_BYTES - NONCE_TAG_BYTES - NONCE_TIME_BYTES },
        >()?);
        tag.copy_from_slice(&Self::tag(key, body).finalize().into_bytes());
        Ok(hex::encode(nonce))
    }

    /// When `nonce` was issued, if this process issued it less than [`NONCE_TTL`] ago.
    fn issued_at(&self, nonce: &str, now: Instant) -> Option<Instant> {
        let key = self.key.get()?;
        let mut bytes = [0u8; NONCE_BYTES];
        hex::decode_to_slice(nonce, &mut bytes).ok()?;
        let (body, tag) = bytes.split_at(NONCE_BYTES - NONCE_TAG_BYTES);
        Self::tag(key, body).verify_slice(tag).ok()?;
        let millis = u64::from_be_bytes(body[..NONCE_TIME_BYTES].try_into().ok()?);
        let at = self.epoch.checked_add(Duration::from_millis(millis))?;
        (now.saturating_duration_since(at) <= NONCE_TTL).then_some(at)
    }

    fn take(&self, nonce: &str, now: Instant) -> bool {
        if self.issued_at(nonce, now).is_none() {
            return false;
        }
        let mut spent = crate::lock(&self.spent);
        if spent.tried.contains(nonce) || spent.signed.contains_key(nonce) {
            return false;
        }
        while spent.tried_order.len() >= MAX_PENDING {
            if let Some(old) = spent.tried_order.pop_front() {
                spent.tried.remove(&old);
            }
        }
        spent.tried.insert(nonce.to_owned());
        spent.tried_order.push_back(nonce.to_owned());
        true
    }

    fn confirm(&self, nonce: &str, now: Instant) -> bool {
        let Some(at) = self.issued_at(nonce, now) else {
            return false;
        };
        let mut spent = crate::lock(&self.spent);
        if spent.signed.len() >= MAX_PENDING {
            spent
                .signed
                .retain(|_, at| now.saturating_duration_since(*at) <= NONCE_TTL);
        }
        spent.signed.insert(nonce.to_owned(), at).is_none()
    }
}

/// Registration nonces and user-interactive auth sessions, held in memory: both are
/// short-lived, and a restart only makes a client start over.
pub struct PendingAuth {
    nonces: Nonces,
    sessions: OneTimeValues,
}

impl Default for PendingAuth {
    fn default() -> Self {
        Self {
            nonces: Nonces::new(),
            sessions: OneTimeValues::new(UIA_SESSION_TTL),
        }
    }
}

impl PendingAuth {
    /// A new registration nonce (128 hex digits, as the reference issues). Never refused:
    /// issuing keeps no state (see [`Nonces`]).
    pub fn issue_nonce(&self, now: Instant) -> Result<String, ApiError> {
        self.nonces.issue(now)
    }

    /// Uses up a nonce: true if it was issued less than [`NONCE_TTL`] ago and not used yet.
    /// A nonce is gone after this call whatever the outcome, so it cannot be retried.
    pub fn take_nonce(&self, nonce: &str, now: Instant) -> bool {
        self.nonces.take(nonce, now)
    }

    /// Records that a taken nonce signed a correct request: false if another correctly
    /// signed request already used it (a replay racing the first use).
    pub fn confirm_nonce(&self, nonce: &str, now: Instant) -> bool {
        self.nonces.confirm(nonce, now)
    }

    /// A new user-interactive auth session ID.
    pub fn open_session(&self, now: Instant) -> Result<String, ApiError> {
        let session = URL_SAFE_NO_PAD.encode(random_bytes::<SESSION_BYTES>()?);
        self.sessions.insert(session, now)
    }

    /// Whether a session is open.
    pub fn session_is_open(&self, session: &str, now: Instant) -> bool {
        self.sessions.is_live(session, now)
    }

    /// Closes a session once its flow completed.
    pub fn close_session(&self, session: &str, now: Instant) {
        self.sessions.take(session, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> ServerName {
        ServerName::parse("example.org").unwrap()
    }

    #[test]
    fn the_mac_matches_the_reference_tool() {
        // Python: hmac.new(b"secret", b"abc\x00alice\x00pw\x00admin", hashlib.sha1).hexdigest()
        let mac = RegistrationMac {
            nonce: "abc",
            username: "alice",
            password: "pw",
            admin: true,
            user_type: None,
        };
        let computed = mac.hex("secret");
        assert_eq!(computed, "dc5ed98b283077684552e3f72d67f26b3366bf58");
        assert!(mac.verify("secret", &computed));
        assert!(!mac.verify("other secret", &computed));
        assert!(!mac.verify("secret", "zz"), "not hex");
        assert!(!mac.verify("secret", &computed[..38]), "truncated");
        let not_admin = RegistrationMac {
            admin: false,
            ..mac
        };
        assert!(
            !not_admin.verify("secret", &computed),
            "the role is covered"
        );
        let typed = RegistrationMac {
            user_type: Some("bot"),
            ..mac
        };
        assert!(
            !typed.verify("secret", &computed),
            "the user type is covered"
        );
        assert!(
            mac.verify("secret", &computed.to_uppercase()),
            "hex case does not matter"
        );
    }

    #[test]
    fn generated_values_have_their_shapes() {
        let token = new_access_token().unwrap();
        assert_eq!(token.len(), 43);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(token, new_access_token().unwrap());
        let device = new_device_id().unwrap();
        assert_eq!(device.as_str().len(), 10);
        assert!(device.as_str().bytes().all(|b| b.is_ascii_uppercase()));
        let event = new_event_id().unwrap();
        assert!(event.starts_with('$') && event.len() == 44);
        let local = new_localpart().unwrap();
        assert!(validate_new_localpart(&local, &server()).is_ok(), "{local}");
        let room = new_room_id_localpart().unwrap();
        assert_eq!(room.len(), 18);
        assert!(room.as_bytes()[0].is_ascii_lowercase());
    }

    #[test]
    fn localparts_follow_the_reference_rules() {
        let s = server();
        assert_eq!(
            validate_new_localpart("alice.b-c_d=e/f+g", &s)
                .unwrap()
                .as_str(),
            "@alice.b-c_d=e/f+g:example.org"
        );
        for bad in ["", "Alice", "a b", "a:b", "_hidden", "12345", "é"] {
            let err = validate_new_localpart(bad, &s).unwrap_err();
            assert_eq!(err.kind().errcode(), "M_INVALID_USERNAME", "{bad:?}");
        }
        let long = "a".repeat(300);
        assert_eq!(
            validate_new_localpart(&long, &s)
                .unwrap_err()
                .kind()
                .errcode(),
            "M_INVALID_USERNAME"
        );
        assert_eq!(
            validate_new_localpart(SERVER_USER_LOCALPART, &s)
                .unwrap_err()
                .kind()
                .errcode(),
            "M_USER_IN_USE"
        );
    }

    #[test]
    fn logins_name_local_users() {
        let s = server();
        assert_eq!(
            login_user("Alice", &s).unwrap().as_str(),
            "@alice:example.org"
        );
        assert_eq!(
            login_user("@ALICE:example.org", &s).unwrap().as_str(),
            "@alice:example.org"
        );
        assert_eq!(login_user("@alice:elsewhere.org", &s), None);
        assert_eq!(login_user("a:b", &s), None);
    }

    #[test]
    fn nonces_are_single_use_and_expire() {
        let pending = PendingAuth::default();
        let t0 = Instant::now();
        let nonce = pending.issue_nonce(t0).unwrap();
        assert_eq!(nonce.len(), 128);
        assert!(pending.take_nonce(&nonce, t0 + Duration::from_secs(1)));
        assert!(
            !pending.take_nonce(&nonce, t0 + Duration::from_secs(1)),
            "replay"
        );
        let late = pending.issue_nonce(t0).unwrap();
        assert!(!pending.take_nonce(&late, t0 + NONCE_TTL + Duration::from_secs(1)));
        assert!(!pending.take_nonce("never issued", t0));
        let forged = format!("{}0", &nonce[..127]);
        assert!(!pending.take_nonce(&forged, t0), "the tag is checked");
    }

    #[test]
    fn a_nonce_flood_does_not_lock_out_registration() {
        let pending = PendingAuth::default();
        let t0 = Instant::now();
        let operators = pending.issue_nonce(t0).unwrap();
        // Far more than the old pool held, issued and spent on refused requests.
        for _ in 0..3 * MAX_PENDING {
            let n = pending.issue_nonce(t0).unwrap();
            assert!(pending.take_nonce(&n, t0));
        }
        // The operator's nonce from before the flood still works, and so does a fresh one.
        assert!(pending.take_nonce(&operators, t0));
        assert!(pending.confirm_nonce(&operators, t0));
        let fresh = pending.issue_nonce(t0).unwrap();
        assert!(pending.take_nonce(&fresh, t0));
        assert!(pending.confirm_nonce(&fresh, t0));
        // A correctly signed nonce is never usable again, however many others pass.
        for _ in 0..2 * MAX_PENDING {
            let n = pending.issue_nonce(t0).unwrap();
            assert!(pending.take_nonce(&n, t0));
        }
        assert!(
            !pending.take_nonce(&operators, t0),
            "replay after the flood"
        );
        assert!(!pending.confirm_nonce(&operators, t0));
    }

    #[test]
    fn sessions_stay_open_until_closed() {
        let pending = PendingAuth::default();
        let t0 = Instant::now();
        let s = pending.open_session(t0).unwrap();
        assert!(pending.session_is_open(&s, t0));
        assert!(pending.session_is_open(&s, t0 + Duration::from_secs(5)));
        pending.close_session(&s, t0);
        assert!(!pending.session_is_open(&s, t0));
        let s = pending.open_session(t0).unwrap();
        assert!(!pending.session_is_open(&s, t0 + UIA_SESSION_TTL + Duration::from_secs(1)));
    }

    #[test]
    fn pending_values_are_bounded() {
        let values = OneTimeValues::new(Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..MAX_PENDING {
            values.insert(i.to_string(), t0).unwrap();
        }
        assert_eq!(
            values.insert("one more".into(), t0).map_err(|e| e.kind()),
            Err(crate::error::ErrorKind::LimitExceeded)
        );
        // Once the old ones expired there is room again.
        values
            .insert("later".into(), t0 + Duration::from_secs(61))
            .unwrap();
    }

    #[tokio::test]
    async fn passwords_hash_and_verify() {
        let cost = PasswordHashCost {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        let hash = hash_password(cost, "correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");
        assert!(
            verify_password(hash.clone(), "correct horse".into())
                .await
                .unwrap()
        );
        assert!(!verify_password(hash.clone(), "wrong".into()).await.unwrap());
        assert!(
            !verify_password("not a hash".into(), "x".into())
                .await
                .unwrap()
        );
        let again = hash_password(cost, "correct horse".into()).await.unwrap();
        assert_ne!(hash, again, "salted");
    }
}
