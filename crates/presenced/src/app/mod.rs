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

pub mod accounts;
pub mod auth;
pub mod rooms;
pub mod sync;

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use presence_engine::{Engine, EngineConfig, Timers};
use presence_router::{ModuleApi, ModuleCommand};
use presence_store::{SqliteConfig as StoreConfig, SqliteStore, Synchronous};
use tokio::sync::mpsc;

use self::auth::{AccessTokens, StoreTokens, TokenCache};
use crate::{
    config::{Config, DatabaseConfig, PresenceMode, SqliteSynchronous},
    error::StartError,
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
    store: Store,
    presence: PresenceService<Store>,
    metrics: PrometheusHandle,
    presence_put_limit: RateLimiter,
    presence_sync_limit: RateLimiter,
    tokens: TokenCache,
    access_tokens: Arc<dyn AccessTokens>,
    sync_filters: sync::SyncFilters,
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
}

/// Capacity of the module command channel: modules wait when the server is this far behind.
const MODULE_COMMAND_QUEUE: usize = 64;

impl App {
    /// Opens the store, builds the routers and the engine, and restores persisted presence.
    /// If any step fails, what was already opened (the store's writer, the Python
    /// interpreter) is closed before the error is returned.
    pub async fn build(config: Config) -> Result<(Self, Background), StartError> {
        let store = open_store(&config).await?;
        let (tx, rx) = mpsc::channel(MODULE_COMMAND_QUEUE);
        let api = ModuleApi::new(config.server_name.clone(), tx);
        let routers = match crate::routers::build(&config, &api).await {
            Ok(routers) => routers,
            Err(e) => {
                close_store(&store).await;
                return Err(e);
            }
        };
        let python = routers.python.clone();
        let federation_shutdown = tokio_util::sync::CancellationToken::new();
        match Self::assemble(config, store.clone(), routers, federation_shutdown.clone()).await {
            Ok(app) => Ok((
                app,
                Background {
                    module_commands: rx,
                    federation_shutdown,
                },
            )),
            Err(e) => {
                federation_shutdown.cancel();
                python.shutdown().await;
                close_store(&store).await;
                Err(e)
            }
        }
    }

    async fn assemble(
        config: Config,
        store: Store,
        routers: crate::routers::Routers,
        federation_shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<Self, StartError> {
        let engine = Engine::new(engine_config(&config));
        let presence =
            PresenceService::new(engine, routers.set, store.clone(), Notifier::default());
        // Connected before the restore, so restored changes reach remote servers too.
        let federation = crate::federation::start(&config, &presence, federation_shutdown).await?;
        presence.restore().await.map_err(StartError::Restore)?;
        let rc = config.rc_presence.per_user;
        Ok(Self {
            inner: Arc::new(Inner {
                presence_put_limit: RateLimiter::new(rc.per_second, rc.burst_count),
                presence_sync_limit: RateLimiter::new(rc.per_second, rc.burst_count),
                metrics: crate::metrics::install(),
                tokens: TokenCache::default(),
                access_tokens: Arc::new(StoreTokens(store.clone())),
                sync_filters: Default::default(),
                pending_auth: Default::default(),
                room_locks: Default::default(),
                python: routers.python,
                federation,
                config,
                store,
                presence,
            }),
        })
    }

    /// The configuration the server was started with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The presence service.
    pub fn presence(&self) -> &PresenceService<Store> {
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
        crate::metrics::router_stats(self.presence().routers().stats());
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
}

async fn open_store(config: &Config) -> Result<Store, StartError> {
    let DatabaseConfig::Sqlite(sqlite) = &config.database;
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
        .map_err(|source| StartError::StoreOpen {
            path: sqlite.path.clone(),
            source,
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
    e.max_status_msg_len = config.max_status_msg_length;
    e.exclude_rooms_from_presence = config
        .exclude_rooms_from_presence
        .iter()
        .map(|r| Arc::from(r.as_str()))
        .collect();
    e
}
