//! Federation settings, grouped by the component that uses them.
//!
//! The server's YAML loader maps the reference homeserver's keys onto these structs
//! (`federation_domain_whitelist`, `federation_verify_certificates`,
//! `federation_custom_ca_list`, `federation_ip_range_blacklist` / `_whitelist`,
//! `trusted_key_servers`, `old_signing_keys`, `key_refresh_interval`). Every timer is here so
//! tests can run in seconds; the defaults are the production values.

use std::{collections::BTreeMap, collections::BTreeSet, path::PathBuf, time::Duration};

use presence_router::ServerName;

use crate::{IpRangeFilter, KeyCacheConfig, OldVerifyKey};

/// A notary server trusted to relay other servers' keys (`trusted_key_servers`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrustedKeyServer {
    /// The notary's server name.
    pub server_name: ServerName,
    /// The notary's own keys: key ID (`ed25519:abc`) to unpadded base64 public key. Its
    /// signature on relayed documents is checked with these.
    pub verify_keys: BTreeMap<String, String>,
}

impl TrustedKeyServer {
    /// A notary with its keys.
    pub fn new(server_name: ServerName, verify_keys: BTreeMap<String, String>) -> Self {
        Self {
            server_name,
            verify_keys,
        }
    }
}

/// Outbound HTTPS: certificate checks, address filtering, discovery caching and timeouts.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Check remote certificates (`federation_verify_certificates`). Turn off only in tests.
    pub verify_certificates: bool,
    /// Extra PEM files of trusted CA certificates (`federation_custom_ca_list`), added to the
    /// built-in Mozilla roots.
    pub custom_ca_list: Vec<PathBuf>,
    /// Which resolved addresses may be contacted.
    pub ip_filter: IpRangeFilter,
    /// Time allowed to open a TCP connection and finish the TLS handshake.
    pub connect_timeout: Duration,
    /// Time allowed for a whole request, connection included.
    pub request_timeout: Duration,
    /// Largest response body accepted, in bytes.
    pub max_response_bytes: usize,
    /// How long a `.well-known/matrix/server` answer is cached when it sets no lifetime.
    pub well_known_cache: Duration,
    /// Longest a `.well-known` answer is cached, whatever it says.
    pub well_known_max_cache: Duration,
    /// How long a missing or invalid `.well-known` answer is cached.
    pub well_known_failure_cache: Duration,
    /// Time allowed for a `.well-known` lookup.
    pub well_known_timeout: Duration,
    /// Look up `_matrix-fed._tcp` SRV records (needs a usable system DNS configuration).
    pub use_srv: bool,
    /// Idle connections kept per remote address for reuse.
    pub max_idle_connections: usize,
    /// How long an idle connection is kept.
    pub idle_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            verify_certificates: true,
            custom_ca_list: Vec::new(),
            ip_filter: IpRangeFilter::default(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            max_response_bytes: 2 * 1024 * 1024,
            well_known_cache: Duration::from_secs(24 * 3600),
            well_known_max_cache: Duration::from_secs(48 * 3600),
            well_known_failure_cache: Duration::from_secs(3600),
            well_known_timeout: Duration::from_secs(10),
            use_srv: true,
            max_idle_connections: 4,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// The per-destination presence queues.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OutboxConfig {
    /// First retry delay after a failed transaction; multiplied by `backoff_multiplier` on
    /// each further failure.
    pub backoff_base: Duration,
    /// Growth of the retry delay per failure (the reference's
    /// `destination_retry_multiplier`; at least 1).
    pub backoff_multiplier: u32,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// How long a queued state waits for an unreachable destination before it is dropped
    /// (the reference drops pending presence after an hour of backoff).
    pub pending_ttl: Duration,
    /// States per `m.presence` EDU (the reference's `MAX_PRESENCE_STATES_PER_EDU`).
    pub max_states_per_edu: usize,
    /// EDUs per transaction (the specification's limit is 100).
    pub max_edus_per_transaction: usize,
    /// Longest wait for one transaction's answer before it counts as failed (on top of the
    /// transport's own timeouts, so a hung destination cannot stall its queue forever).
    pub send_timeout: Duration,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            backoff_base: Duration::from_secs(5),
            backoff_multiplier: 2,
            backoff_max: Duration::from_secs(10 * 60),
            pending_ttl: Duration::from_secs(3600),
            max_states_per_edu: 50,
            max_edus_per_transaction: 100,
            send_timeout: Duration::from_secs(120),
        }
    }
}

/// The inbound transaction endpoint.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct InboundConfig {
    /// Most PDUs a transaction may hold (specification: 50).
    pub max_pdus: usize,
    /// Most EDUs a transaction may hold (specification: 100).
    pub max_edus: usize,
    /// How many recent `(origin, txnId)` answers are remembered for idempotence.
    pub remembered_transactions: usize,
    /// How long an answer is remembered.
    pub remember_for: Duration,
    /// Bytes of request bodies read into memory at once, over all requests (a body must be
    /// read whole before its signature can be checked).
    pub max_buffered_body_bytes: usize,
    /// How long a request waits for its share of that budget before it is answered 429.
    pub body_buffer_wait: Duration,
    /// The per-origin limit on authenticated requests (`rc_federation`).
    pub rate_limit: crate::FederationRateLimit,
}

impl Default for InboundConfig {
    fn default() -> Self {
        Self {
            max_pdus: 50,
            max_edus: 100,
            remembered_transactions: 10_000,
            remember_for: Duration::from_secs(3600),
            // Eight of the largest accepted bodies, or hundreds of ordinary transactions.
            max_buffered_body_bytes: 64 * 1024 * 1024,
            body_buffer_wait: Duration::from_secs(1),
            rate_limit: crate::FederationRateLimit::default(),
        }
    }
}

/// Everything [`crate::Federation`] needs, in one place.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FederationConfig {
    /// This server's name.
    pub server_name: ServerName,
    /// How long a published key document is valid (`valid_until_ts = now + this`; the
    /// reference's `key_refresh_interval`, one day by default).
    pub key_validity: Duration,
    /// Keys this server used to sign with (`old_signing_keys`).
    pub old_verify_keys: Vec<OldVerifyKey>,
    /// Notaries asked for keys when a server cannot be reached directly.
    pub trusted_key_servers: Vec<TrustedKeyServer>,
    /// Remote key caching.
    pub key_cache: KeyCacheConfig,
    /// Only these servers may federate with us, when set (`federation_domain_whitelist`).
    /// Outbound presence to other servers is dropped too.
    pub domain_whitelist: Option<BTreeSet<ServerName>>,
    /// Outbound HTTPS.
    pub client: ClientConfig,
    /// Outbound presence queues.
    pub outbox: OutboxConfig,
    /// Inbound transactions.
    pub inbound: InboundConfig,
}

impl FederationConfig {
    /// The defaults for `server_name`.
    pub fn new(server_name: ServerName) -> Self {
        Self {
            server_name,
            key_validity: Duration::from_secs(24 * 3600),
            old_verify_keys: Vec::new(),
            trusted_key_servers: Vec::new(),
            key_cache: KeyCacheConfig::default(),
            domain_whitelist: None,
            client: ClientConfig::default(),
            outbox: OutboxConfig::default(),
            inbound: InboundConfig::default(),
        }
    }
}
