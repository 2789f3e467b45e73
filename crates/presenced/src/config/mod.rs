//! The server configuration: typed, validated, and shaped like the reference homeserver's
//! `homeserver.yaml`, so an operator's existing file starts Presenced.
//!
//! Loading goes in two steps. `source` reads each YAML file into a generic tree and
//! overlays them (later files replace earlier **top-level** keys). `parse` then walks the
//! merged tree section by section, building the typed [`Config`] and collecting *every*
//! problem with its key path instead of stopping at the first. Keys Presenced does not use
//! are gathered (sorted) so the server can report them once at startup; sections Presenced
//! owns (`presence`, the `rc_*` sections it reads, `password_hash_cost`) reject unknown keys instead,
//! because there a stray key is almost certainly a typo. Router `config:` blocks are kept as
//! opaque JSON values: each router validates its own with `parse_config` when it is built.
//!
//! Reference: <https://element-hq.github.io/synapse/latest/usage/configuration/config_documentation.html>.

mod error;
mod parse;
mod section;
mod source;
mod synapse;
mod units;

#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, fmt, net::IpAddr, path::PathBuf, time::Duration};

use presence_router::{RoomId, ServerName};
use serde_json::Value;

pub use self::{
    error::{ConfigError, ConfigProblem},
    units::{parse_duration, parse_size},
};

/// Default `presence.last_active_granularity`: activity within this window keeps a user
/// "currently active".
pub const DEFAULT_LAST_ACTIVE_GRANULARITY: Duration = Duration::from_secs(60);
/// Default `presence.sync_online_timeout`: a device that stopped syncing this long ago no
/// longer counts as online.
pub const DEFAULT_SYNC_ONLINE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `presence.idle_timeout`: an online user without activity this long becomes
/// unavailable.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Default `presence.busy_timeout`: how long a busy device lasts without syncing.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// Default `presence.federation_timeout`: a remote user's state expires after this long
/// without news from its server.
pub const DEFAULT_FEDERATION_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Default `presence.sync_gather`: a few milliseconds, against a long-poll round trip of a
/// millisecond or less on a busy server.
pub const DEFAULT_SYNC_GATHER: Duration = Duration::from_millis(5);
/// The longest `presence.sync_gather` accepted: it adds to every answer's latency under load.
pub const MAX_SYNC_GATHER: Duration = Duration::from_millis(100);
/// Default `presence.federation_ping_interval`: unchanged local states are re-announced to
/// remote servers this often (shorter than their federation timeout).
pub const DEFAULT_FEDERATION_PING_INTERVAL: Duration = Duration::from_secs(25 * 60);
/// Default `max_status_msg_length`, in bytes.
pub const DEFAULT_MAX_STATUS_MSG_LENGTH: usize = 4096;
/// Default `max_request_body_size`, in bytes (1 MiB).
pub const DEFAULT_MAX_REQUEST_BODY_SIZE: usize = 1 << 20;
/// Default `trusted_key_servers` entry, as in the reference homeserver.
pub const DEFAULT_TRUSTED_KEY_SERVER: &str = "matrix.org";
/// Default SQLite database file when the `database` section is absent.
pub const DEFAULT_SQLITE_PATH: &str = "presenced.db";

/// The validated server configuration.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// `server_name`: the domain in this server's user IDs.
    pub server_name: ServerName,
    /// `listeners`: the HTTP sockets to serve (at least one).
    pub listeners: Vec<ListenerConfig>,
    /// `database`.
    pub database: DatabaseConfig,
    /// `registration_shared_secret`, `enable_registration` and related keys.
    pub registration: RegistrationConfig,
    /// `password_config` (the parts Presenced uses).
    pub password_config: PasswordConfig,
    /// `password_hash_cost`: Presenced's own Argon2id cost parameters.
    pub password_hash_cost: PasswordHashCost,
    /// `presence`.
    pub presence: PresenceConfig,
    /// `modules`: modules to load, in order (presence routers among them).
    pub modules: Vec<ModuleConfig>,
    /// `python`: where Python router modules are imported from (Presenced's own section).
    pub python: PythonConfig,
    /// `rc_presence`: rate limit on presence updates.
    pub rc_presence: RcPresenceConfig,
    /// The other `rc_*` sections that apply to endpoints Presenced serves (`rc_login`,
    /// `rc_registration`, `rc_joins`, `rc_joins_per_room`, `rc_room_creation`,
    /// `rc_message`, `rc_invites`).
    pub rc: RcLimits,
    /// `exclude_rooms_from_presence`: rooms whose members do not share presence through
    /// them.
    pub exclude_rooms_from_presence: Vec<RoomId>,
    /// `experimental_features` (the parts Presenced uses).
    pub experimental_features: ExperimentalFeatures,
    /// `max_status_msg_length`: longest accepted `status_msg`, in bytes.
    pub max_status_msg_length: usize,
    /// `max_request_body_size`: largest accepted request body, in bytes.
    pub max_request_body_size: usize,
    /// `connections`: limits on the connections of every listener (Presenced's own section).
    pub connections: ConnectionsConfig,
    /// Federation keys (`signing_key_path`, `trusted_key_servers`, ...).
    pub federation: FederationConfig,
    /// Set when Presenced is the presence stream writer of a Synapse deployment
    /// (`worker_name` named in `stream_writers.presence`); `None` in the standalone mode.
    pub writer: Option<SynapseWriterConfig>,
}

/// `connections`: how many connections the listeners hold at once and how long a connection
/// may stall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionsConfig {
    /// `max_connections`: open connections across all listeners; `None` (the default) takes
    /// the open-file limit less a reserve for the database, outbound federation and Python.
    pub max_connections: Option<usize>,
    /// `header_read_timeout`: how long a connection may take to send a complete request head.
    pub header_read_timeout: Duration,
    /// `idle_timeout`: how long a connection may sit with no request in flight.
    pub idle_timeout: Duration,
    /// `replication_idle_timeout`: the idle timeout of listeners serving `replication`,
    /// longer than the 2 minutes Synapse keeps a pooled replication connection, so Presenced
    /// never closes one under a request Synapse is sending.
    pub replication_idle_timeout: Duration,
}

/// Default `connections.header_read_timeout`.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `connections.idle_timeout`.
pub const DEFAULT_CONNECTION_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `connections.replication_idle_timeout`.
pub const DEFAULT_REPLICATION_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// How long Synapse's replication HTTP client keeps an idle pooled connection
/// (`ReplicationClient`: `cachedConnectionTimeout = 2 * 60`).
pub const SYNAPSE_REPLICATION_POOL_TIMEOUT: Duration = Duration::from_secs(2 * 60);

impl Default for ConnectionsConfig {
    fn default() -> Self {
        Self {
            max_connections: None,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_CONNECTION_IDLE_TIMEOUT,
            replication_idle_timeout: DEFAULT_REPLICATION_IDLE_TIMEOUT,
        }
    }
}

/// The Synapse writer mode: who Presenced is in the deployment and how it reaches the
/// deployment's Redis. (Its PostgreSQL is `database`.)
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SynapseWriterConfig {
    /// `worker_name`: the instance name Presenced writes and announces under.
    pub worker_name: String,
    /// `worker_replication_secret`: the bearer other processes send to the replication
    /// endpoints; `None` leaves them open (warned about at startup).
    pub replication_secret: Option<Secret>,
    /// `redis`.
    pub redis: presence_synapse::replication::RedisSettings,
    /// Start even when Synapse's schema is outside the tested range (`--allow-untested-synapse`
    /// on the command line; not a configuration key).
    pub allow_untested_synapse: bool,
}

/// A loaded configuration with what the operator should be told about it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LoadedConfig {
    /// The validated configuration.
    pub config: Config,
    /// Keys Presenced does not use, as sorted key paths (`report_stats`,
    /// `listeners[0].x_forwarded`, ...).
    pub unknown_keys: Vec<String>,
    /// Settings that were accepted but are ignored or unusual (e.g. a listener type
    /// Presenced does not serve).
    pub warnings: Vec<ConfigProblem>,
}

impl LoadedConfig {
    /// Logs the unknown keys (once, in one line) and each warning.
    pub fn log_warnings(&self) {
        if !self.unknown_keys.is_empty() {
            tracing::warn!(
                keys = %self.unknown_keys.join(", "),
                "Ignoring configuration keys that Presenced does not use."
            );
        }
        for warning in &self.warnings {
            tracing::warn!(key = %warning.path, "Configuration: {}.", warning.message);
        }
        if self.config.uses_public_example_secret() {
            tracing::warn!(
                key = "registration_shared_secret",
                "The shared secret is the example configuration's, which is public: anyone who \
                 can reach the client API can register users, admins included. Set a secret of \
                 your own (e.g. `openssl rand -hex 32`)."
            );
        }
    }
}

/// The `registration_shared_secret` of the shipped example configuration
/// (`presenced.example.yaml`): published, so a server using it is open to anyone.
pub const PUBLIC_EXAMPLE_SECRET: &str = "CHANGE-ME-example-only-not-a-secret";

impl Config {
    /// Whether the shared secret is the example configuration's public one.
    pub fn uses_public_example_secret(&self) -> bool {
        self.registration
            .registration_shared_secret
            .as_ref()
            .is_some_and(|s| s.expose() == PUBLIC_EXAMPLE_SECRET)
    }

    /// Reads, overlays and validates the given files (directories stand for the `.yaml`
    /// files inside them). Later files replace earlier files' top-level keys.
    pub fn load(paths: &[PathBuf]) -> Result<LoadedConfig, ConfigError> {
        let merged = source::read_files(paths)?;
        parse::build(merged)
    }

    /// Validates a configuration given as one YAML document.
    pub fn from_yaml(text: &str) -> Result<LoadedConfig, ConfigError> {
        let map = source::parse_yaml("(configuration)", text)
            .map_err(|problem| ConfigError::new(vec![problem]))?;
        parse::build(map)
    }

    /// The configured presence routers' candidates, in the order the reference homeserver
    /// builds them: every `modules` entry first, then the legacy `presence.presence_router`.
    /// Each comes with its key path (`modules[0]`, `presence.presence_router`) for error
    /// messages.
    pub fn module_entries(&self) -> Vec<(String, &ModuleConfig)> {
        let mut entries: Vec<(String, &ModuleConfig)> = self
            .modules
            .iter()
            .enumerate()
            .map(|(i, m)| (format!("modules[{i}]"), m))
            .collect();
        if let Some(router) = &self.presence.presence_router {
            entries.push(("presence.presence_router".to_owned(), router));
        }
        entries
    }
}

/// One `listeners` entry of type `http` (or `metrics`, served as an HTTP listener with the
/// metrics resource).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenerConfig {
    /// `port` (0 picks a free port).
    pub port: u16,
    /// `bind_addresses` (plus the legacy `bind_address`); default `::` and `0.0.0.0`.
    pub bind_addresses: Vec<IpAddr>,
    /// `tls`: serve HTTPS with `tls_certificate_path` / `tls_private_key_path`.
    pub tls: bool,
    /// `x_forwarded`: a reverse proxy sits in front of this listener. Presenced reads it
    /// only to accept a federation listener without `tls` (the proxy terminates TLS).
    pub x_forwarded: bool,
    /// `resources`: what this listener serves.
    pub resources: Vec<ListenerResources>,
}

impl ListenerConfig {
    /// Whether any resource group of this listener includes `name`.
    pub fn serves(&self, name: ResourceName) -> bool {
        self.resources.iter().any(|r| r.names.contains(&name))
    }
}

/// One `resources` entry of a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenerResources {
    /// `names`: the resources Presenced serves (others are warned about and dropped).
    pub names: Vec<ResourceName>,
    /// `compress`: whether responses may be compressed.
    pub compress: bool,
}

/// A resource a listener can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ResourceName {
    /// The client-server API (`/_matrix/client`).
    Client,
    /// The server-server API (`/_matrix/federation`), and the server keys too, as the
    /// reference serves them on this resource.
    Federation,
    /// Server keys (`/_matrix/key`).
    Keys,
    /// Prometheus metrics.
    Metrics,
    /// Synapse's HTTP replication endpoints (`/_synapse/replication`), served in the writer
    /// mode.
    Replication,
    /// The health check (served on every listener anyway).
    Health,
}

impl ResourceName {
    /// Every resource Presenced serves.
    pub const ALL: [ResourceName; 6] = [
        Self::Client,
        Self::Federation,
        Self::Keys,
        Self::Metrics,
        Self::Health,
        Self::Replication,
    ];

    /// The name used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Federation => "federation",
            Self::Keys => "keys",
            Self::Metrics => "metrics",
            Self::Replication => "replication",
            Self::Health => "health",
        }
    }

    /// Parses a configuration name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl fmt::Display for ResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `database`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DatabaseConfig {
    /// `name: sqlite3`.
    Sqlite(SqliteConfig),
    /// `name: psycopg2`: a Synapse deployment's PostgreSQL (the writer mode only).
    Postgres(presence_synapse::pg::PgSettings),
}

/// `database.args` for SQLite.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqliteConfig {
    /// `args.database`: the database file.
    pub path: PathBuf,
    /// `args.synchronous`: how hard SQLite syncs to disk.
    pub synchronous: SqliteSynchronous,
}

impl SqliteConfig {
    /// A SQLite configuration with the default durability (`full`).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            synchronous: SqliteSynchronous::Normal,
        }
    }
}

/// SQLite's `synchronous` pragma, as far as Presenced offers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum SqliteSynchronous {
    /// The default: a committed write survives a crash of the process; a power loss may
    /// lose the last commits.
    #[default]
    Normal,
    /// Every commit reaches the disk before it is acknowledged (survives power loss).
    Full,
}

/// Registration keys.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RegistrationConfig {
    /// `registration_shared_secret` (or the contents of `registration_shared_secret_path`):
    /// lets an administrator register users through the admin API.
    pub registration_shared_secret: Option<Secret>,
    /// `enable_registration`: open self-registration (default false).
    pub enable_registration: bool,
    /// `enable_registration_without_verification`: the operator's confirmation that open
    /// registration without email or captcha checks is intended.
    pub enable_registration_without_verification: bool,
}

/// `password_config`: the parts Presenced uses.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PasswordConfig {
    /// `enabled`: whether password login is allowed (default true).
    pub enabled: bool,
}

impl Default for PasswordConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// `password_hash_cost`: Argon2id cost parameters for stored passwords. The defaults are the
/// OWASP minimum recommendation (19 MiB, 2 passes, 1 lane).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PasswordHashCost {
    /// `memory_kib`: memory per hash, in KiB.
    pub memory_kib: u32,
    /// `iterations`: passes over the memory.
    pub iterations: u32,
    /// `parallelism`: lanes.
    pub parallelism: u32,
}

impl Default for PasswordHashCost {
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// `presence`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PresenceConfig {
    /// `enabled` (falling back to the top-level `use_presence`).
    pub enabled: PresenceMode,
    /// `include_offline_users_on_sync`.
    pub include_offline_users_on_sync: bool,
    /// `last_active_granularity`.
    pub last_active_granularity: Duration,
    /// `sync_online_timeout`.
    pub sync_online_timeout: Duration,
    /// `idle_timeout` (greater than `last_active_granularity`).
    pub idle_timeout: Duration,
    /// `busy_timeout`: Presenced's own; how long a busy device lasts without syncing.
    pub busy_timeout: Duration,
    /// `federation_timeout`: Presenced's own; when remote states expire.
    pub federation_timeout: Duration,
    /// `federation_ping_interval`: Presenced's own; how often local states are re-announced.
    pub federation_ping_interval: Duration,
    /// `router_call_timeout`: Presenced's own; the longest a router call may take.
    pub router_call_timeout: Duration,
    /// `sync_gather`: Presenced's own; while changes keep arriving, how long a woken `/sync`
    /// waits for more before it answers (zero: never). An idle server answers at once.
    pub sync_gather: Duration,
    /// `presence_router`: the legacy way to configure one router.
    pub presence_router: Option<ModuleConfig>,
    /// `routing`: Presenced's own; whether routers add to shared-room delivery (the
    /// default) or decide the whole audience.
    pub routing: RoutingMode,
}

/// `presence.routing`: how the routers' answers combine with shared rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RoutingMode {
    /// `additive` (the default, the reference's contract): routers add recipients on top of
    /// room-mates, and cannot remove any.
    #[default]
    Additive,
    /// `restricting`: the routers decide the whole audience; shared-room delivery is the
    /// `shared_rooms` router, and a router's recipient filter removes recipients on every
    /// path.
    Restricting,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            enabled: PresenceMode::Enabled,
            include_offline_users_on_sync: false,
            last_active_granularity: DEFAULT_LAST_ACTIVE_GRANULARITY,
            sync_online_timeout: DEFAULT_SYNC_ONLINE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            federation_timeout: DEFAULT_FEDERATION_TIMEOUT,
            federation_ping_interval: DEFAULT_FEDERATION_PING_INTERVAL,
            router_call_timeout: presence_router::DEFAULT_CALL_TIMEOUT,
            sync_gather: DEFAULT_SYNC_GATHER,
            presence_router: None,
            routing: RoutingMode::Additive,
        }
    }
}

/// `presence.enabled`: `true`, `false` or `"untracked"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PresenceMode {
    /// Presence is tracked and served.
    #[default]
    Enabled,
    /// Presence is off.
    Disabled,
    /// Stored presence is served but requests, syncs and timers do not change it.
    Untracked,
}

impl PresenceMode {
    /// Whether presence is served at all (`enabled` is truthy).
    pub fn is_enabled(self) -> bool {
        self != Self::Disabled
    }

    /// Whether requests, syncs and timers change presence.
    pub fn tracks(self) -> bool {
        self == Self::Enabled
    }
}

/// A `modules` entry or the legacy `presence.presence_router`: a module name and its opaque
/// configuration, validated later by the module itself.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ModuleConfig {
    /// `module`: the registered name (or import path) of the module.
    pub module: String,
    /// `config`: the module's settings; an absent or null block becomes `{}`.
    pub config: Value,
}

/// `python`: how router modules written in Python are loaded. Used only by builds with the
/// `python` feature; other builds refuse a module name that is not a built-in router.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PythonConfig {
    /// `paths`: directories put first on `sys.path`, in order (then `PYTHONPATH`).
    pub paths: Vec<PathBuf>,
    /// `venv`: a virtualenv whose site-packages modules may import from.
    pub venv: Option<PathBuf>,
    /// `twisted`: whether modules run on Twisted's asyncio reactor.
    pub twisted: TwistedSetting,
    /// `load_timeout`: the time budget of importing and constructing one module.
    pub load_timeout: Duration,
}

impl Default for PythonConfig {
    fn default() -> Self {
        Self {
            paths: Vec::new(),
            venv: None,
            twisted: TwistedSetting::Auto,
            load_timeout: Duration::from_secs(60),
        }
    }
}

/// `python.twisted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum TwistedSetting {
    /// `auto`: use Twisted when it can be imported.
    #[default]
    Auto,
    /// `off`: never import Twisted.
    Off,
    /// `required`: refuse to start without Twisted.
    Required,
}

impl ModuleConfig {
    /// A module entry.
    pub fn new(module: impl Into<String>, config: Value) -> Self {
        Self {
            module: module.into(),
            config,
        }
    }
}

/// `rc_presence`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub struct RcPresenceConfig {
    /// `per_user`: the bucket for each user's presence updates.
    pub per_user: RateLimit,
}

/// A token bucket: `per_second` refill rate and `burst_count` capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RateLimit {
    /// `per_second` (default 0.1: one update per ten seconds).
    pub per_second: f64,
    /// `burst_count` (default 1).
    pub burst_count: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_second: 0.1,
            burst_count: 1,
        }
    }
}

impl RateLimit {
    /// A bucket of `burst_count` refilling at `per_second`.
    pub const fn new(per_second: f64, burst_count: u32) -> Self {
        Self {
            per_second,
            burst_count,
        }
    }
}

/// The `rc_*` sections besides `rc_presence`, with the reference homeserver's defaults
/// (`synapse/config/ratelimiting.py`).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RcLimits {
    /// `rc_login`.
    pub login: RcLoginConfig,
    /// `rc_registration`: registrations per client address (default 0.17/s, burst 3).
    pub registration: RateLimit,
    /// `rc_joins`.
    pub joins: RcJoinsConfig,
    /// `rc_joins_per_room`: joins to one room, by anyone (default 1/s, burst 10).
    pub joins_per_room: RateLimit,
    /// `rc_room_creation`: rooms each user creates (default 0.016/s, burst 10).
    pub room_creation: RateLimit,
    /// `rc_message` (or the older `rc_messages_per_second` / `rc_message_burst_count`):
    /// events each user sends, memberships and room creations included (default 0.2/s,
    /// burst 10).
    pub message: RateLimit,
    /// `rc_invites`.
    pub invites: RcInvitesConfig,
}

impl Default for RcLimits {
    fn default() -> Self {
        Self {
            login: RcLoginConfig {
                address: RateLimit::new(0.003, 5),
                account: RateLimit::new(0.003, 5),
                failed_attempts: RateLimit::new(0.17, 3),
            },
            registration: RateLimit::new(0.17, 3),
            joins: RcJoinsConfig {
                local: RateLimit::new(0.1, 10),
                remote: RateLimit::new(0.01, 10),
            },
            joins_per_room: RateLimit::new(1.0, 10),
            room_creation: RateLimit::new(0.016, 10),
            message: RateLimit::new(0.2, 10),
            invites: RcInvitesConfig {
                per_room: RateLimit::new(0.3, 10),
                per_user: RateLimit::new(0.003, 5),
                per_issuer: RateLimit::new(0.3, 10),
            },
        }
    }
}

/// `rc_login`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RcLoginConfig {
    /// `address`: login requests per client address (default 0.003/s, burst 5).
    pub address: RateLimit,
    /// `account`: successful logins per account (default 0.003/s, burst 5).
    pub account: RateLimit,
    /// `failed_attempts`: failed logins per account (default 0.17/s, burst 3).
    pub failed_attempts: RateLimit,
}

/// `rc_joins`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RcJoinsConfig {
    /// `local`: joins per user to rooms on this server (default 0.1/s, burst 10).
    pub local: RateLimit,
    /// `remote`: joins through other servers (default 0.01/s, burst 10). Accepted but
    /// unused: Presenced does not join rooms on other servers.
    pub remote: RateLimit,
}

/// `rc_invites`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RcInvitesConfig {
    /// `per_room`: invites into one room (default 0.3/s, burst 10).
    pub per_room: RateLimit,
    /// `per_user`: invites one user receives (default 0.003/s, burst 5).
    pub per_user: RateLimit,
    /// `per_issuer`: invites one user sends (default 0.3/s, burst 10).
    pub per_issuer: RateLimit,
}

/// `experimental_features`: the parts Presenced uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ExperimentalFeatures {
    /// `msc3026_enabled`: the `busy` presence state (MSC3026).
    pub msc3026_enabled: bool,
}

/// Federation keys. Federation runs when a listener serves `federation` or `keys`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FederationConfig {
    /// `signing_key_path`: this server's signing key file (generated if missing; required
    /// when a listener serves federation or keys).
    pub signing_key_path: Option<PathBuf>,
    /// `key_refresh_interval`: how long our published key document is valid.
    pub key_refresh_interval: Duration,
    /// `federation_domain_whitelist`: if set, only these servers are federated with.
    pub federation_domain_whitelist: Option<Vec<ServerName>>,
    /// `federation_verify_certificates` (default true).
    pub federation_verify_certificates: bool,
    /// `federation_custom_ca_list`: extra trusted CA certificates (PEM files).
    pub federation_custom_ca_list: Vec<PathBuf>,
    /// `federation_ip_range_blacklist` (or `ip_range_blacklist`): addresses federation must
    /// not connect to; `None` is the reference's default list (private and loopback ranges).
    pub ip_range_blacklist: Option<Vec<String>>,
    /// `ip_range_whitelist`: exceptions to the blacklist.
    pub ip_range_whitelist: Vec<String>,
    /// `trusted_key_servers` (default: `matrix.org`).
    pub trusted_key_servers: Vec<TrustedKeyServer>,
    /// `tls_certificate_path`: the certificate chain (PEM) of `tls: true` listeners.
    pub tls_certificate_path: Option<PathBuf>,
    /// `tls_private_key_path`: its private key (PEM).
    pub tls_private_key_path: Option<PathBuf>,
    /// The `federation` section: timeouts, retry timers and the inbound body budget.
    pub timers: FederationTimers,
    /// `rc_federation` (or the older `federation_rc_*` keys): the per-origin limit on
    /// inbound federation requests.
    pub rc_federation: presence_federation::FederationRateLimit,
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            signing_key_path: None,
            key_refresh_interval: Duration::from_secs(24 * 3600),
            federation_domain_whitelist: None,
            federation_verify_certificates: true,
            federation_custom_ca_list: Vec::new(),
            ip_range_blacklist: None,
            ip_range_whitelist: Vec::new(),
            // A valid literal, so this is never empty; no panic path either way.
            trusted_key_servers: ServerName::parse(DEFAULT_TRUSTED_KEY_SERVER)
                .into_iter()
                .map(TrustedKeyServer::new)
                .collect(),
            tls_certificate_path: None,
            tls_private_key_path: None,
            timers: FederationTimers::default(),
            rc_federation: presence_federation::FederationRateLimit::default(),
        }
    }
}

/// The `federation` section: the reference's retry keys plus Presenced's own timers and inbound
/// body budget, all configurable so that tests run in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FederationTimers {
    /// `client_timeout`: the longest one outbound request may take.
    pub client_timeout: Duration,
    /// `connect_timeout` (Presenced's own): TCP connection plus TLS handshake.
    pub connect_timeout: Duration,
    /// `destination_min_retry_interval`: first delay after a failed transaction.
    pub destination_min_retry_interval: Duration,
    /// `destination_retry_multiplier`: each further failure multiplies the delay by this.
    pub destination_retry_multiplier: u32,
    /// `destination_max_retry_interval`: longest delay between attempts.
    pub destination_max_retry_interval: Duration,
    /// `transaction_timeout` (Presenced's own): longest wait for one transaction's answer.
    pub transaction_timeout: Duration,
    /// `pending_presence_ttl` (Presenced's own): presence waiting longer than this for an
    /// unreachable server is dropped.
    pub pending_presence_ttl: Duration,
    /// `key_refetch_interval` (Presenced's own): after a failed key fetch, how long before
    /// the same server is asked again.
    pub key_refetch_interval: Duration,
    /// `inbound_body_buffer` (Presenced's own): bytes of inbound request bodies read into
    /// memory at once, over all requests; past it a request is answered 429.
    pub inbound_body_buffer: usize,
}

impl Default for FederationTimers {
    fn default() -> Self {
        Self {
            client_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            destination_min_retry_interval: Duration::from_secs(5),
            destination_retry_multiplier: 2,
            destination_max_retry_interval: Duration::from_secs(10 * 60),
            transaction_timeout: Duration::from_secs(120),
            pending_presence_ttl: Duration::from_secs(3600),
            key_refetch_interval: Duration::from_secs(60),
            inbound_body_buffer: 64 * 1024 * 1024,
        }
    }
}

impl Config {
    /// Whether this server federates: some listener serves `federation` or `keys`.
    /// Whether Presenced is a Synapse deployment's presence writer.
    pub fn is_writer(&self) -> bool {
        self.writer.is_some()
    }

    /// Whether any listener serves federation (or keys).
    pub fn federates(&self) -> bool {
        self.listeners
            .iter()
            .any(|l| l.serves(ResourceName::Federation) || l.serves(ResourceName::Keys))
    }
}

/// A `trusted_key_servers` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrustedKeyServer {
    /// `server_name`.
    pub server_name: ServerName,
    /// `verify_keys`: key ID → base64 public key, to check the notary's own signatures.
    pub verify_keys: BTreeMap<String, String>,
    /// `accept_keys_insecurely`: trust this server's answers without `verify_keys`.
    pub accept_keys_insecurely: bool,
}

impl TrustedKeyServer {
    /// An entry with no pinned keys.
    pub fn new(server_name: ServerName) -> Self {
        Self {
            server_name,
            verify_keys: BTreeMap::new(),
            accept_keys_insecurely: false,
        }
    }
}

/// A secret from the configuration: never printed by `Debug`, so logging a config is safe.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}
