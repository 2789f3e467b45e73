//! The application core: [`App`], a cheap `Clone` handle around the configuration, the
//! store, the presence service, accounts, rooms, `/sync` and the rate limiters, each behind its
//! own accessor so that callers ask for what they use.
//!
//! Nothing here knows about HTTP: the `http` module extracts a request, calls the core and
//! renders what it returns; tests and other front ends can build the core alone. The seams
//! where the two deployment modes differ are traits chosen once at startup (today's
//! implementations are the standalone mode's SQLite store): access tokens
//! ([`auth::AccessTokens`]), and the presence service's persistence and publication
//! ([`crate::presence::PresencePersistence`], [`crate::presence::FederationSender`]).

pub mod account_data;
pub mod accounts;
pub mod auth;
pub mod limits;
pub mod passwords;
pub mod profile;
pub mod push_rules;
pub mod rooms;
pub mod synapse;
pub mod sync;

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use presence_engine::{Engine, EngineConfig, Timers};
use presence_router::{ModuleApi, ModuleCommand};
use presence_store::{SqliteConfig as StoreConfig, SqliteStore, Synchronous};
use tokio::sync::mpsc;

use self::{
    auth::{AccessTokens, StoreTokens, TokenCache},
    synapse::{Persistence, SynapseTokens, SynapseWriter},
};
use crate::{
    config::{Config, DatabaseConfig, PresenceMode, SqliteSynchronous},
    error::{ApiError, StartError},
    notify::Notifier,
    presence::PresenceService,
    ratelimit::RateLimiter,
};

/// The store backend the server runs on.
pub type Store = SqliteStore;

/// The application core (a handle: cloning it is cheap).
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    /// The standalone mode's store; `None` beside Synapse, where accounts and rooms are
    /// Synapse's.
    store: Option<Store>,
    presence: PresenceService<Persistence>,
    writer: Option<Arc<SynapseWriter>>,
    metrics: PrometheusHandle,
    presence_put_limit: RateLimiter,
    presence_sync_limit: RateLimiter,
    limits: limits::Limits,
    passwords: passwords::Passwords,
    tokens: TokenCache,
    access_tokens: Arc<dyn AccessTokens>,
    sync_filters: sync::SyncFilters,
    /// The latest account-data stream position.
    account_data_pos: std::sync::atomic::AtomicU64,
    pending_auth: accounts::PendingAuth,
    room_locks: rooms::RoomLocks,
    python: crate::routers::PythonModules,
    federation: Option<presence_federation::Federation>,
}

/// What [`App::build`] leaves for the server to run.
pub struct Background {
    /// Commands from router modules (`ModuleApi`), for the presence service's loop.
    pub module_commands: mpsc::Receiver<ModuleCommand>,
    /// Stops the federation outbox's tasks.
    pub federation_shutdown: tokio_util::sync::CancellationToken,
    /// The Synapse writer mode's Redis connections, to run beside the listeners.
    pub replication: Option<Replication>,
}

/// The writer mode's Redis side: the subscriber and its events, the publisher's task.
pub struct Replication {
    /// The subscribing connection.
    pub subscriber: presence_synapse::replication::Subscriber,
    /// What it receives.
    pub events: mpsc::Receiver<presence_synapse::replication::Event>,
    /// The publishing connection's task.
    pub publisher: presence_synapse::replication::PublisherTask,
    /// The writer they serve.
    pub writer: Arc<SynapseWriter>,
}

/// Where presence lives, opened at startup.
enum Backend {
    Standalone(Store),
    Synapse(Box<Replication>),
}

impl Backend {
    async fn open(config: &Config) -> Result<Self, StartError> {
        match (&config.database, &config.writer) {
            (DatabaseConfig::Postgres(pg), Some(writer)) => open_synapse(config, pg, writer)
                .await
                .map(|r| Self::Synapse(Box::new(r))),
            _ => open_store(config).await.map(Self::Standalone),
        }
    }

    async fn close(&self) {
        if let Self::Standalone(store) = self {
            close_store(store).await;
        }
    }
}

/// How long startup waits for another writer to answer `REPLICATE` (Synapse's processes
/// answer within milliseconds).
const WRITER_PROBE_WAIT: std::time::Duration = std::time::Duration::from_millis(1500);

/// Capacity of the replication event channel and of the publisher's queue.
const REPLICATION_QUEUE: usize = 4096;

async fn open_synapse(
    config: &Config,
    pg: &presence_synapse::pg::PgSettings,
    writer: &crate::config::SynapseWriterConfig,
) -> Result<Replication, StartError> {
    use presence_synapse::{
        SynapseDb,
        replication::{Publisher, Subscriber},
    };
    let synapse = |what: &str, source: presence_synapse::Error| StartError::Synapse {
        what: what.to_owned(),
        source,
    };
    let db = SynapseDb::connect(pg)
        .await
        .map_err(|e| synapse("database (PostgreSQL)", e))?;
    let schema = db
        .schema_version()
        .await
        .map_err(|e| synapse("database: reading Synapse's schema_version", e))?;
    let tested = presence_synapse::pg::TESTED_SCHEMA_VERSIONS;
    if !tested.contains(&schema) {
        if !writer.allow_untested_synapse {
            return Err(StartError::UntestedSynapse {
                found: schema,
                tested,
                tested_synapse: presence_synapse::pg::TESTED_SYNAPSE,
            });
        }
        tracing::warn!(
            schema,
            tested = %format!("{}..={}", tested.start(), tested.end()),
            "Synapse's database schema is outside the tested range; starting anyway (--allow-untested-synapse)."
        );
    }
    // Two writers under one name would interleave stream IDs and announce each other's
    // positions: refuse while Synapse's own writer still runs.
    tracing::info!(instance = %writer.worker_name, "Checking that no other process writes presence under this name.");
    match presence_synapse::replication::writer_already_running(
        &writer.redis,
        &config.server_name,
        &writer.worker_name,
        presence_synapse::PRESENCE_STREAM,
        WRITER_PROBE_WAIT,
    )
    .await
    {
        Ok(false) => {}
        Ok(true) => {
            return Err(StartError::WriterRunning {
                instance: writer.worker_name.clone(),
            });
        }
        // Redis may come later (the subscriber retries); the check is then skipped.
        Err(e) => {
            tracing::warn!(error = %e, "Could not check for another presence writer on Redis; starting anyway.")
        }
    }
    let position = db
        .current_presence_position()
        .await
        .map_err(|e| synapse("database: reading presence_stream_sequence", e))?;
    let caches = db
        .caches_position()
        .await
        .map_err(|e| synapse("database: reading cache_invalidation_stream_seq", e))?;
    let (subscriber, events) =
        Subscriber::new(&writer.redis, &config.server_name, REPLICATION_QUEUE)
            .map_err(|e| synapse("redis", e))?;
    let (publisher, task) = Publisher::new(&writer.redis, &config.server_name, REPLICATION_QUEUE)
        .map_err(|e| synapse("redis", e))?;
    if writer.replication_secret.is_none() {
        tracing::warn!(
            "worker_replication_secret is not set: anyone who can reach the replication listener can set presence."
        );
    }
    tracing::info!(
        instance = %writer.worker_name,
        position,
        schema,
        "Connected to the Synapse deployment's database as its presence writer."
    );
    Ok(Replication {
        subscriber,
        events,
        publisher: task,
        writer: Arc::new(SynapseWriter::new(
            writer.worker_name.clone(),
            db,
            publisher,
            position,
            caches,
        )),
    })
}

/// Capacity of the module command channel: modules wait when the server is this far behind.
const MODULE_COMMAND_QUEUE: usize = 64;

impl App {
    /// Opens the store (or connects to the Synapse deployment), builds the routers and the
    /// engine, and restores persisted presence. If any step fails, what was already opened
    /// (the store's writer, the Python interpreter) is closed before the error is returned.
    pub async fn build(config: Config) -> Result<(Self, Background), StartError> {
        let backend = Backend::open(&config).await?;
        let (tx, rx) = mpsc::channel(MODULE_COMMAND_QUEUE);
        let api = ModuleApi::new(config.server_name.clone(), tx);
        let routers = match crate::routers::build(&config, &api).await {
            Ok(routers) => routers,
            Err(e) => {
                backend.close().await;
                return Err(e);
            }
        };
        let python = routers.python.clone();
        let federation_shutdown = tokio_util::sync::CancellationToken::new();
        let (persistence, store, replication) = match backend {
            Backend::Standalone(store) => {
                (Persistence::Standalone(store.clone()), Some(store), None)
            }
            Backend::Synapse(replication) => (
                Persistence::Synapse(replication.writer.clone()),
                None,
                Some(*replication),
            ),
        };
        let writer = replication.as_ref().map(|r| r.writer.clone());
        match Self::assemble(
            config,
            persistence,
            store.clone(),
            writer,
            routers,
            federation_shutdown.clone(),
        )
        .await
        {
            Ok(app) => Ok((
                app,
                Background {
                    module_commands: rx,
                    federation_shutdown,
                    replication,
                },
            )),
            Err(e) => {
                federation_shutdown.cancel();
                python.shutdown().await;
                if let Some(store) = &store {
                    close_store(store).await;
                }
                Err(e)
            }
        }
    }

    async fn assemble(
        config: Config,
        persistence: Persistence,
        store: Option<Store>,
        writer: Option<Arc<SynapseWriter>>,
        routers: crate::routers::Routers,
        federation_shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<Self, StartError> {
        let mut engine_config = engine_config(&config);
        if routers.restricting {
            engine_config.audience = presence_engine::Audience {
                shared_rooms: routers.shared_rooms,
                filter: routers
                    .set
                    .recipient_filter()
                    .map(|f| f as Arc<dyn presence_router::RecipientFilter>),
            };
            if config.writer.is_some() {
                tracing::warn!(
                    "presence.routing is restricting, but beside Synapse its own processes \
                     compute /sync, GET presence and shared-room federation with the additive \
                     rule: the restriction applies only to what Presenced sends itself \
                     (routed federation and send_local_online_presence_to). See \
                     docs/module-authors.md."
                );
            }
        }
        let engine = Engine::new(engine_config);
        let presence = PresenceService::new(engine, routers.set, persistence, Notifier::default());
        // Connected before the restore, so restored changes reach remote servers too.
        let federation = crate::federation::start(&config, &presence, federation_shutdown).await?;
        if let Some(writer) = &writer {
            presence.set_federation(Arc::new(crate::app::synapse::WriterFederation(
                writer.clone(),
            )));
        }
        presence.restore().await.map_err(StartError::Restore)?;
        let account_data_pos = match &store {
            Some(store) => account_data::restore(store, presence.routers())
                .await
                .map_err(|e| StartError::Restore(e.into()))?,
            None => 0,
        };
        let rc = config.rc_presence.per_user;
        let access_tokens: Arc<dyn AccessTokens> = match (&store, &writer) {
            (_, Some(writer)) => Arc::new(SynapseTokens(writer.clone())),
            (Some(store), None) => Arc::new(StoreTokens(store.clone())),
            (None, None) => {
                return Err(StartError::Config(crate::config::ConfigError::new(vec![
                    crate::config::ConfigProblem::new(
                        "database",
                        "no presence store is configured",
                    ),
                ])));
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                presence_put_limit: RateLimiter::new(rc.per_second, rc.burst_count),
                presence_sync_limit: RateLimiter::new(rc.per_second, rc.burst_count),
                limits: limits::Limits::new(&config.rc),
                passwords: passwords::Passwords::new(
                    config.password_hash_cost,
                    passwords::Passwords::default_permits(),
                ),
                metrics: crate::metrics::install(),
                tokens: TokenCache::default(),
                access_tokens,
                sync_filters: Default::default(),
                account_data_pos: account_data_pos.into(),
                pending_auth: Default::default(),
                room_locks: Default::default(),
                python: routers.python,
                federation,
                config,
                store,
                presence,
                writer,
            }),
        })
    }

    /// The configuration the server was started with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The standalone mode's store (404 `M_UNRECOGNIZED` beside Synapse, where the
    /// endpoints that need it are not served).
    pub fn store(&self) -> Result<&Store, ApiError> {
        self.inner.store.as_ref().ok_or_else(ApiError::unrecognized)
    }

    /// The Synapse writer, in that mode.
    pub fn writer(&self) -> Option<&Arc<SynapseWriter>> {
        self.inner.writer.as_ref()
    }

    /// Closes what the core opened: the standalone store (committing what is queued), or
    /// the writer's publisher once what it queued has gone out (briefly).
    pub async fn close(&self) {
        if let Some(store) = &self.inner.store {
            close_store(store).await;
        }
        if let Some(writer) = self.writer() {
            writer.drain(std::time::Duration::from_secs(2)).await;
        }
    }

    /// The presence service.
    pub fn presence(&self) -> &PresenceService<Persistence> {
        &self.inner.presence
    }

    /// Federation, when a listener serves `federation` or `keys`.
    pub fn federation(&self) -> Option<&presence_federation::Federation> {
        self.inner.federation.as_ref()
    }

    /// The Prometheus metrics handle.
    pub fn metrics(&self) -> &PrometheusHandle {
        &self.inner.metrics
    }

    /// Resolved access tokens.
    pub fn tokens(&self) -> &TokenCache {
        &self.inner.tokens
    }

    /// Where access tokens are resolved.
    fn access_tokens(&self) -> &dyn AccessTokens {
        &*self.inner.access_tokens
    }

    /// Parsed `/sync` filters.
    pub(crate) fn sync_filters(&self) -> &sync::SyncFilters {
        &self.inner.sync_filters
    }

    /// Registration nonces and user-interactive auth sessions waiting to be used.
    pub fn pending_auth(&self) -> &accounts::PendingAuth {
        &self.inner.pending_auth
    }

    /// Serializes membership changes per room.
    pub fn room_locks(&self) -> &rooms::RoomLocks {
        &self.inner.room_locks
    }

    /// The Python module host, if any router is written in Python.
    pub fn python(&self) -> &crate::routers::PythonModules {
        &self.inner.python
    }

    /// Reads the counters components keep themselves (routers, Python, federation) into the
    /// metrics, just before they are rendered: the one place component stats are collected.
    pub fn collect_metrics(&self) {
        let (users, memberships) = self.presence().size();
        crate::metrics::engine_size(users, memberships);
        crate::metrics::sync_filter_cache(self.sync_filters().bytes());
        if let Some(writer) = self.writer() {
            writer.record_metrics();
        }
        crate::metrics::router_stats(self.presence().routers().stats());
        crate::metrics::password_hashes(self.passwords().performed());
        self.python().record_metrics();
        if let Some(federation) = self.federation() {
            crate::metrics::federation_stats(
                &federation.outbox().stats(),
                &federation.inbound().stats(),
            );
        }
    }

    /// `rc_presence` for `PUT /presence`.
    pub fn presence_put_limit(&self) -> &RateLimiter {
        &self.inner.presence_put_limit
    }

    /// `rc_presence` for syncs that set presence (a separate bucket, as the reference has).
    pub fn presence_sync_limit(&self) -> &RateLimiter {
        &self.inner.presence_sync_limit
    }

    /// The other `rc_*` limits (logins, registration, rooms, messages).
    pub fn limits(&self) -> &limits::Limits {
        &self.inner.limits
    }

    /// The password hashing gate.
    pub fn passwords(&self) -> &passwords::Passwords {
        &self.inner.passwords
    }
}

async fn open_store(config: &Config) -> Result<Store, StartError> {
    let DatabaseConfig::Sqlite(sqlite) = &config.database else {
        // Config validation pairs PostgreSQL with the writer mode only.
        return Err(StartError::Config(crate::config::ConfigError::new(vec![
            crate::config::ConfigProblem::new("database.name", "sqlite3 is required here"),
        ])));
    };
    if let Some(dir) = sqlite.path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StartError::StoreDirectory {
            path: dir.to_owned(),
            source,
        })?;
    }
    let mut store_config = StoreConfig::new(&sqlite.path);
    store_config.synchronous = match sqlite.synchronous {
        SqliteSynchronous::Full => Synchronous::Full,
        _ => Synchronous::Normal,
    };
    let store = SqliteStore::open(store_config)
        .await
        .map_err(|source| match source {
            presence_store::StoreError::ForeignDatabase { synapse, .. } => {
                StartError::ForeignDatabase {
                    path: sqlite.path.clone(),
                    synapse,
                    source,
                }
            }
            source => StartError::StoreOpen {
                path: sqlite.path.clone(),
                source,
            },
        })?;
    tracing::info!(path = %sqlite.path.display(), "Opened the SQLite database.");
    Ok(store)
}

/// Closes the store on a failed start (its writer thread commits what is queued and stops).
async fn close_store(store: &Store) {
    use presence_store::PresenceStore as _;
    if let Err(e) = store.close().await {
        tracing::warn!(error = %e, "Closing the database failed.");
    }
}

fn engine_config(config: &Config) -> EngineConfig {
    let p = &config.presence;
    let ms = |d: std::time::Duration| d.as_millis().min(u128::from(u64::MAX)) as u64;
    let mut e = EngineConfig::new(config.server_name.clone());
    e.mode = match p.enabled {
        PresenceMode::Enabled => presence_engine::PresenceMode::Enabled,
        PresenceMode::Disabled => presence_engine::PresenceMode::Disabled,
        _ => presence_engine::PresenceMode::Untracked,
    };
    e.timers = Timers {
        last_active_granularity: ms(p.last_active_granularity),
        sync_online_timeout: ms(p.sync_online_timeout),
        idle_timeout: ms(p.idle_timeout),
        busy_timeout: ms(p.busy_timeout),
        federation_timeout: ms(p.federation_timeout),
        federation_ping_interval: ms(p.federation_ping_interval),
    };
    e.include_offline_users_on_sync = p.include_offline_users_on_sync;
    // Beside Synapse, its federation sender sends changes to the rooms' servers itself.
    e.federate_room_changes = config.writer.is_none();
    e.max_status_msg_len = config.max_status_msg_length;
    e.exclude_rooms_from_presence = config
        .exclude_rooms_from_presence
        .iter()
        .map(|r| Arc::from(r.as_str()))
        .collect();
    e
}
