//! PostgreSQL access to Synapse's own tables: `presence_stream` (read and written, as the
//! presence writer), `presence_stream_sequence`, `stream_positions`, `access_tokens`,
//! `users`, `current_state_events` and `schema_version`.
//!
//! These tables are Synapse's: this module never creates or alters them (migrations are
//! Synapse's job), and it writes them exactly as Synapse's writer does
//! (`storage/databases/main/presence.py` `update_presence`, `storage/util/id_generators.py`).
//! Column names were checked against Synapse 1.163.2's `full_schemas/72/full.sql.postgres`
//! plus its deltas up to schema version 94.

mod settings;

use std::{collections::HashMap, future::Future, sync::Arc, time::Duration};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use presence_router::{DeviceId, Millis, PresenceState, UserId, UserPresenceState};
use tokio_postgres::{NoTls, Row};
use tracing::warn;

pub use self::settings::{PgHost, PgSettings, SslMode};
use crate::{CachesRow, Error, PresenceRow, StreamId};

/// The `schema_version.version` of Synapse 1.163.2 (`SCHEMA_VERSION` in
/// `synapse/storage/schema/__init__.py`), the schema these queries were checked against.
pub const TESTED_SCHEMA_VERSION: u32 = 94;
/// The schema versions Presenced is tested with: a writer refuses others unless told.
pub const TESTED_SCHEMA_VERSIONS: std::ops::RangeInclusive<u32> =
    TESTED_SCHEMA_VERSION..=TESTED_SCHEMA_VERSION;
/// The Synapse release whose schema [`TESTED_SCHEMA_VERSIONS`] holds.
pub const TESTED_SYNAPSE: &str = "1.163.2";

/// How long one call (waiting for a pooled connection, then its query or presence commit)
/// may take before it fails. Callers are Synapse's workers, which block their own requests
/// on the writer: an error they can report within a second (this, plus the answer's way
/// back) beats a hang. A healthy commit takes milliseconds.
pub const QUERY_TIMEOUT: Duration = Duration::from_millis(900);
/// The same for the reads of whole tables at startup and on reconciliation, which grow
/// with the deployment.
pub const BULK_TIMEOUT: Duration = Duration::from_secs(120);
/// How long opening a connection may take when `database.args.connect_timeout` does not
/// say: an unreachable server fails calls within this, instead of after TCP's minutes.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a call waits for a free pooled connection (within [`QUERY_TIMEOUT`]).
const POOL_WAIT_TIMEOUT: Duration = Duration::from_millis(900);

/// The largest batch [`SynapseDb::persist_presence`] accepts in one call.
pub const MAX_PERSIST_BATCH: usize = 10_000;

/// The stream name under which the writer's position is kept in `stream_positions`.
const PRESENCE_STREAM_NAME: &str = "presence_stream";

const PRESENCE_COLUMNS: &str = "stream_id, user_id, state, last_active_ts, \
     last_federation_update_ts, last_user_sync_ts, status_msg, currently_active";

/// A handle on Synapse's database: a connection pool. Cheap to clone.
#[derive(Clone)]
pub struct SynapseDb {
    pool: Pool,
    /// Serialises presence writes, so that stream IDs are committed in the order they were
    /// allocated (receivers require RDATA in increasing order, and "everything below a
    /// token is committed") and two writes for one user cannot leave two rows.
    write_lock: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for SynapseDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SynapseDb")
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}

/// One page of `get_repl_stream_updates` for the `presence` stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PresenceUpdates {
    /// `(stream_id, row)` in increasing stream order.
    pub updates: Vec<(StreamId, PresenceRow)>,
    /// The position the page reaches: the requested `upto`, or the last row's ID when
    /// `limited`.
    pub upto_token: StreamId,
    /// Whether more rows may follow (the page was full).
    pub limited: bool,
}

/// A page of the writer's own `caches` stream rows, as `get_repl_stream_updates` serves them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheUpdates {
    /// `(stream_id, row)` in increasing stream order.
    pub updates: Vec<(StreamId, CachesRow)>,
    /// The position the page reaches (as [`PresenceUpdates::upto_token`]).
    pub upto_token: StreamId,
    /// Whether more rows may follow.
    pub limited: bool,
}

/// The cached function through which Synapse's processes read
/// `users_to_send_full_presence_to` (`PresenceStore._get_full_presence_stream_token_for_user`):
/// its entry for a user is dropped when the user is marked.
pub const FULL_PRESENCE_CACHE: &str = "_get_full_presence_stream_token_for_user";

/// What an access token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenInfo {
    /// The user the token acts as (`COALESCE(puppets_user_id, user_id)`, as Synapse).
    pub user_id: UserId,
    /// The token's owner: differs from `user_id` when an admin puppets a user.
    pub token_owner: UserId,
    /// The device the token was issued for, if any.
    pub device_id: Option<DeviceId>,
    /// `access_tokens.id`.
    pub token_id: i64,
    /// When the token expires (refresh-token sessions), ms since the epoch.
    pub valid_until_ms: Option<Millis>,
    /// `users.is_guest`.
    pub is_guest: bool,
    /// `users.admin`.
    pub admin: bool,
    /// `users.locked` (Synapse answers `M_USER_LOCKED`).
    pub locked: bool,
    /// `users.shadow_banned`.
    pub shadow_banned: bool,
}

/// The outcome of looking an access token up.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenLookup {
    /// No such token (or its user row is missing).
    Unknown,
    /// The token is valid.
    Valid(TokenInfo),
    /// The token's `valid_until_ms` is in the past (Synapse: `M_UNKNOWN_TOKEN` with
    /// `soft_logout: true`).
    Expired(TokenInfo),
    /// The user is deactivated.
    Deactivated(TokenInfo),
}

impl SynapseDb {
    /// Builds the pool and checks that one connection can be opened.
    pub async fn connect(settings: &PgSettings) -> Result<Self, Error> {
        let manager_config = || ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match crate::tls::postgres_connector(
            settings.tls_mode(),
            settings.ssl_root_cert.as_deref(),
        )? {
            Some(tls) => Manager::from_config(settings.to_pg_config(), tls, manager_config()),
            None => Manager::from_config(settings.to_pg_config(), NoTls, manager_config()),
        };
        let connect_timeout = settings.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        // The timeouts need the runtime named: deadpool measures them with its timer.
        let pool = Pool::builder(manager)
            .max_size(settings.cp_max)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(connect_timeout))
            .recycle_timeout(Some(connect_timeout))
            .wait_timeout(Some(POOL_WAIT_TIMEOUT))
            .build()?;
        let db = Self {
            pool,
            write_lock: Arc::new(tokio::sync::Mutex::new(())),
        };
        // Fail at startup, not at the first request.
        drop(db.pool.get().await?);
        Ok(db)
    }

    /// Runs `operation` with a time limit, so that a PostgreSQL that stopped answering fails
    /// the call instead of hanging it.
    async fn timed<T>(
        &self,
        operation: &'static str,
        limit: Duration,
        fut: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(limit, fut).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                operation,
                after: limit,
            }),
        }
    }

    /// `schema_version.version`: the schema Synapse last migrated the database to.
    pub async fn schema_version(&self) -> Result<u32, Error> {
        self.timed("schema_version", QUERY_TIMEOUT, async {
            let client = self.pool.get().await?;
            let row = client
                .query_one("SELECT version FROM schema_version", &[])
                .await?;
            let v: i32 = row.try_get(0)?;
            u32::try_from(v).map_err(|_| Error::Corrupt(format!("schema_version.version is {v}")))
        })
        .await
    }

    /// The writer's current position: the last ID allocated from
    /// `presence_stream_sequence`, as Synapse's writer takes it at startup.
    pub async fn current_presence_position(&self) -> Result<StreamId, Error> {
        self.sequence_position("current_presence_position", "presence_stream_sequence")
            .await
    }

    /// The last ID allocated from `sequence`, as Synapse's
    /// `PostgresSequenceGenerator.get_max_allocated` reads it: `last_value`, minus one while
    /// `is_called` is false (before the first `nextval`).
    async fn sequence_position(
        &self,
        operation: &'static str,
        sequence: &'static str,
    ) -> Result<StreamId, Error> {
        self.timed(operation, QUERY_TIMEOUT, async {
            let client = self.pool.get().await?;
            let row = client
                .query_one(
                    &format!("SELECT last_value, is_called FROM {sequence}"),
                    &[],
                )
                .await?;
            let last_value: i64 = row.try_get(0)?;
            let is_called: bool = row.try_get(1)?;
            let pos = if is_called {
                last_value
            } else {
                last_value - 1
            };
            u64::try_from(pos).map_err(|_| Error::Corrupt(format!("{sequence} is at {pos}")))
        })
        .await
    }

    /// Every row of `presence_stream`, one per user (the highest stream ID wins if the
    /// table holds more), in stream order. Rows Synapse could not have written (no user,
    /// unknown state) are logged and skipped.
    pub async fn load_presence(&self) -> Result<Vec<(StreamId, UserPresenceState)>, Error> {
        self.load(false).await
    }

    /// The non-offline rows of `presence_stream`, as the writer loads them at startup to
    /// re-arm its timers (`SP:455-484`).
    pub async fn load_non_offline_presence(
        &self,
    ) -> Result<Vec<(StreamId, UserPresenceState)>, Error> {
        self.load(true).await
    }

    async fn load(&self, non_offline: bool) -> Result<Vec<(StreamId, UserPresenceState)>, Error> {
        self.timed("load_presence", BULK_TIMEOUT, async {
            let client = self.pool.get().await?;
            let filter = if non_offline {
                "WHERE state != 'offline'"
            } else {
                ""
            };
            let rows = client
                .query(
                    &format!(
                        "SELECT {PRESENCE_COLUMNS} FROM presence_stream {filter} ORDER BY stream_id"
                    ),
                    &[],
                )
                .await?;
            let mut by_user: HashMap<UserId, usize> = HashMap::with_capacity(rows.len());
            let mut out: Vec<Option<(StreamId, UserPresenceState)>> = Vec::with_capacity(rows.len());
            for row in &rows {
                let (id, row) = match presence_from_row(row) {
                    Ok(v) => v,
                    Err(reason) => {
                        warn!(%reason, "Skipping a presence_stream row Synapse could not have written.");
                        continue;
                    }
                };
                let state = UserPresenceState::from(row);
                // Rows come in stream order, so a later row for the same user replaces.
                if let Some(old) = by_user.insert(state.user_id.clone(), out.len()) {
                    out[old] = None;
                }
                out.push(Some((id, state)));
            }
            Ok(out.into_iter().flatten().collect())
        })
        .await
    }

    /// Writes a batch of states (group commit) as Synapse's `update_presence` does, and
    /// returns each user's row with its new stream ID once the transaction has COMMITTED.
    ///
    /// IDs come from `nextval('presence_stream_sequence')`; then in one transaction the
    /// users' older rows are deleted, the new rows inserted with `instance_name`, and the
    /// writer's `stream_positions` row raised (never lowered). When the batch holds several
    /// states for one user only the last is written, so the table keeps one row per user.
    /// Calls are serialised internally.
    pub async fn persist_presence(
        &self,
        instance_name: &str,
        states: &[UserPresenceState],
    ) -> Result<Vec<(StreamId, UserPresenceState)>, Error> {
        self.timed("persist_presence", QUERY_TIMEOUT, async {
            let mut last_for_user: HashMap<&UserId, usize> = HashMap::with_capacity(states.len());
            for (i, s) in states.iter().enumerate() {
                last_for_user.insert(&s.user_id, i);
            }
            let batch: Vec<&UserPresenceState> = states
                .iter()
                .enumerate()
                .filter(|(i, s)| last_for_user.get(&s.user_id) == Some(i))
                .map(|(_, s)| s)
                .collect();
            if batch.is_empty() {
                return Ok(Vec::new());
            }
            if batch.len() > MAX_PERSIST_BATCH {
                return Err(Error::OutOfRange(
                    "presence batch larger than MAX_PERSIST_BATCH",
                ));
            }
            let mut user_ids = Vec::with_capacity(batch.len());
            let mut states_col = Vec::with_capacity(batch.len());
            let mut active = Vec::with_capacity(batch.len());
            let mut fed = Vec::with_capacity(batch.len());
            let mut sync = Vec::with_capacity(batch.len());
            let mut msgs = Vec::with_capacity(batch.len());
            let mut currently = Vec::with_capacity(batch.len());
            for s in &batch {
                user_ids.push(s.user_id.as_str());
                states_col.push(s.state.as_str());
                active.push(to_i64(s.last_active_ts, "last_active_ts")?);
                fed.push(to_i64(
                    s.last_federation_update_ts,
                    "last_federation_update_ts",
                )?);
                sync.push(to_i64(s.last_user_sync_ts, "last_user_sync_ts")?);
                msgs.push(s.status_msg.as_deref());
                currently.push(s.currently_active);
            }

            let _serialised = self.write_lock.lock().await;
            let mut client = self.pool.get().await?;
            let n = i32::try_from(batch.len()).map_err(|_| Error::OutOfRange("batch size"))?;
            let mut ids: Vec<i64> = client
                .query(
                    "SELECT nextval('presence_stream_sequence') FROM generate_series(1, $1::int)",
                    &[&n],
                )
                .await?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?;
            ids.sort_unstable();
            let (Some(&first), Some(&last)) = (ids.first(), ids.last()) else {
                return Err(Error::Corrupt("nextval returned no rows".to_owned()));
            };
            let allocated = Some((to_u64(first)?, to_u64(last)?));
            let result: Result<(), tokio_postgres::Error> = async {
                let tx = client.transaction().await?;
                tx.execute(
                    "DELETE FROM presence_stream WHERE stream_id < $1 AND user_id = ANY($2)",
                    &[&last, &user_ids],
                )
                .await?;
                tx.execute(
                    "INSERT INTO presence_stream (stream_id, user_id, state, last_active_ts, \
                     last_federation_update_ts, last_user_sync_ts, status_msg, currently_active, \
                     instance_name) \
                     SELECT u.*, $9::text FROM UNNEST($1::bigint[], $2::text[], $3::text[], \
                     $4::bigint[], $5::bigint[], $6::bigint[], $7::text[], $8::boolean[]) AS u",
                    &[
                        &ids,
                        &user_ids,
                        &states_col,
                        &active,
                        &fed,
                        &sync,
                        &msgs,
                        &currently,
                        &instance_name,
                    ],
                )
                .await?;
                tx.execute(
                    "INSERT INTO stream_positions (stream_name, instance_name, stream_id) \
                     VALUES ($1, $2, $3) \
                     ON CONFLICT (stream_name, instance_name) \
                     DO UPDATE SET stream_id = EXCLUDED.stream_id \
                     WHERE stream_positions.stream_id < EXCLUDED.stream_id",
                    &[&PRESENCE_STREAM_NAME, &instance_name, &last],
                )
                .await?;
                tx.commit().await
            }
            .await;
            result.map_err(|source| Error::PersistPresence { allocated, source })?;
            ids.iter()
                .zip(batch)
                .map(|(id, s)| Ok((to_u64(*id)?, s.clone())))
                .collect()
        })
        .await
    }

    /// The rows with `from < stream_id <= upto`, at most `limit` of them, for
    /// `get_repl_stream_updates` (`SP:189-244`).
    pub async fn presence_updates(
        &self,
        from: StreamId,
        upto: StreamId,
        limit: usize,
    ) -> Result<PresenceUpdates, Error> {
        self.timed("presence_updates", QUERY_TIMEOUT, async {
            if from >= upto || limit == 0 {
                return Ok(PresenceUpdates {
                    updates: Vec::new(),
                    upto_token: upto,
                    limited: false,
                });
            }
            let client = self.pool.get().await?;
            let rows = client
                .query(
                    &format!(
                        "SELECT {PRESENCE_COLUMNS} FROM presence_stream \
                         WHERE $1 < stream_id AND stream_id <= $2 ORDER BY stream_id ASC LIMIT $3"
                    ),
                    &[
                        &to_i64(from, "from_token")?,
                        &to_i64(upto, "upto_token")?,
                        &i64::try_from(limit).map_err(|_| Error::OutOfRange("limit"))?,
                    ],
                )
                .await?;
            let mut updates = Vec::with_capacity(rows.len());
            let mut last_id = None;
            for row in &rows {
                match presence_from_row(row) {
                    Ok((id, r)) => {
                        last_id = Some(id);
                        updates.push((id, r));
                    }
                    Err(reason) => {
                        warn!(%reason, "Skipping a presence_stream row Synapse could not have written.");
                        if let Ok(Some(id)) = row.try_get::<_, Option<i64>>(0) {
                            last_id = u64::try_from(id).ok().or(last_id);
                        }
                    }
                }
            }
            // As Synapse: a full page is "limited" and ends at its last row.
            let limited = rows.len() >= limit;
            let upto_token = match (limited, last_id) {
                (true, Some(id)) => id,
                _ => upto,
            };
            Ok(PresenceUpdates {
                updates,
                upto_token,
                limited,
            })
        })
        .await
    }

    /// The latest `presence_stream` row of `user`, if any.
    pub async fn presence_of(&self, user: &UserId) -> Result<Option<UserPresenceState>, Error> {
        self.timed("presence_of", QUERY_TIMEOUT, async {
            let client = self.pool.get().await?;
            let row = client
                .query_opt(
                    &format!(
                        "SELECT {PRESENCE_COLUMNS} FROM presence_stream WHERE user_id = $1 \
                         ORDER BY stream_id DESC LIMIT 1"
                    ),
                    &[&user.as_str()],
                )
                .await?;
            match row {
                None => Ok(None),
                Some(row) => presence_from_row(&row)
                    .map(|(_, r)| Some(UserPresenceState::from(r)))
                    .map_err(Error::Corrupt),
            }
        })
        .await
    }

    /// Where the `caches` stream stands: the last ID allocated from
    /// `cache_invalidation_stream_seq`, which every process of the deployment draws from.
    pub async fn caches_position(&self) -> Result<StreamId, Error> {
        self.sequence_position("caches_position", "cache_invalidation_stream_seq")
            .await
    }

    /// Marks `users` as owed a full presence snapshot on their next sync, as Synapse's
    /// `add_users_to_send_full_presence_to` does: in one transaction, each user's
    /// `users_to_send_full_presence_to` row is set to `presence_position` (the presence
    /// stream's current token: a sync token at or before it gets the snapshot) and one
    /// `caches` row per user invalidates [`FULL_PRESENCE_CACHE`] under `instance_name`.
    /// Returns those rows with their stream IDs, to be published once this has committed.
    pub async fn mark_full_presence(
        &self,
        instance_name: &str,
        users: &[UserId],
        presence_position: StreamId,
        now_ms: Millis,
    ) -> Result<Vec<(StreamId, CachesRow)>, Error> {
        self.timed("mark_full_presence", QUERY_TIMEOUT, async {
            if users.is_empty() {
                return Ok(Vec::new());
            }
            let names: Vec<&str> = users.iter().map(UserId::as_str).collect();
            let n = i32::try_from(names.len()).map_err(|_| Error::OutOfRange("user count"))?;
            let position = to_i64(presence_position, "presence position")?;
            let ts = to_i64(now_ms, "invalidation_ts")?;
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            tx.execute(
                "INSERT INTO users_to_send_full_presence_to (user_id, presence_stream_id) \
                 SELECT u, $2 FROM UNNEST($1::text[]) AS u \
                 ON CONFLICT (user_id) DO UPDATE SET presence_stream_id = EXCLUDED.presence_stream_id",
                &[&names, &position],
            )
            .await?;
            let mut ids: Vec<i64> = tx
                .query(
                    "SELECT nextval('cache_invalidation_stream_seq') FROM generate_series(1, $1::int)",
                    &[&n],
                )
                .await?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?;
            ids.sort_unstable();
            tx.execute(
                "INSERT INTO cache_invalidation_stream_by_instance \
                 (stream_id, instance_name, cache_func, keys, invalidation_ts) \
                 SELECT u.id, $3, $4, ARRAY[u.name], $5 \
                 FROM UNNEST($1::bigint[], $2::text[]) AS u(id, name)",
                &[&ids, &names, &instance_name, &FULL_PRESENCE_CACHE, &ts],
            )
            .await?;
            tx.commit().await?;
            ids.iter()
                .zip(users)
                .map(|(id, user)| {
                    Ok((
                        to_u64(*id)?,
                        CachesRow {
                            cache_func: FULL_PRESENCE_CACHE.to_owned(),
                            keys: Some(vec![user.as_str().to_owned()]),
                            invalidation_ts: now_ms,
                        },
                    ))
                })
                .collect()
        })
        .await
    }

    /// The `caches` rows `instance_name` wrote with `from < stream_id <= upto`, at most
    /// `limit`, for `get_repl_stream_updates/caches` (`get_all_updated_caches`).
    pub async fn cache_updates(
        &self,
        instance_name: &str,
        from: StreamId,
        upto: StreamId,
        limit: usize,
    ) -> Result<CacheUpdates, Error> {
        self.timed("cache_updates", QUERY_TIMEOUT, async {
            if from >= upto || limit == 0 {
                return Ok(CacheUpdates {
                    updates: Vec::new(),
                    upto_token: upto,
                    limited: false,
                });
            }
            let client = self.pool.get().await?;
            let rows = client
                .query(
                    "SELECT stream_id, cache_func, keys, invalidation_ts \
                     FROM cache_invalidation_stream_by_instance \
                     WHERE instance_name = $1 AND $2 < stream_id AND stream_id <= $3 \
                     ORDER BY stream_id ASC LIMIT $4",
                    &[
                        &instance_name,
                        &to_i64(from, "from_token")?,
                        &to_i64(upto, "upto_token")?,
                        &i64::try_from(limit).map_err(|_| Error::OutOfRange("limit"))?,
                    ],
                )
                .await?;
            let mut updates = Vec::with_capacity(rows.len());
            for row in &rows {
                let id = to_u64(row.try_get(0)?)?;
                let ts: Option<i64> = row.try_get(3)?;
                updates.push((
                    id,
                    CachesRow {
                        cache_func: row.try_get(1)?,
                        keys: row.try_get(2)?,
                        invalidation_ts: ts.map_or(0, |t| u64::try_from(t).unwrap_or(0)),
                    },
                ));
            }
            let limited = rows.len() >= limit;
            let upto_token = match (limited, updates.last()) {
                (true, Some((id, _))) => *id,
                _ => upto,
            };
            Ok(CacheUpdates {
                updates,
                upto_token,
                limited,
            })
        })
        .await
    }

    /// Looks an access token up as Synapse's `_query_for_auth` does, and classifies it at
    /// time `now_ms`. A deactivated user is reported as such before expiry is considered.
    pub async fn user_for_access_token(
        &self,
        token: &str,
        now_ms: Millis,
    ) -> Result<TokenLookup, Error> {
        self.timed("user_for_access_token", QUERY_TIMEOUT, async {
            let client = self.pool.get().await?;
            let row = client
                .query_opt(
                    "SELECT users.name, access_tokens.user_id, access_tokens.device_id, \
                     access_tokens.id, access_tokens.valid_until_ms, users.is_guest, users.admin, \
                     users.deactivated, users.locked, users.shadow_banned \
                     FROM users INNER JOIN access_tokens \
                     ON users.name = COALESCE(access_tokens.puppets_user_id, access_tokens.user_id) \
                     WHERE access_tokens.token = $1",
                    &[&token],
                )
                .await?;
            let Some(row) = row else {
                return Ok(TokenLookup::Unknown);
            };
            let parse_user = |s: Option<String>, what: &str| {
                let s = s.ok_or_else(|| Error::Corrupt(format!("{what} is NULL")))?;
                UserId::parse(&s).map_err(|e| Error::Corrupt(format!("{what} {s:?}: {e}")))
            };
            let valid_until_ms: Option<i64> = row.try_get(4)?;
            let device: Option<String> = row.try_get(2)?;
            let info = TokenInfo {
                user_id: parse_user(row.try_get(0)?, "users.name")?,
                token_owner: parse_user(Some(row.try_get(1)?), "access_tokens.user_id")?,
                device_id: device.as_deref().and_then(|d| DeviceId::parse(d).ok()),
                token_id: row.try_get(3)?,
                valid_until_ms: valid_until_ms.map(|v| u64::try_from(v).unwrap_or(0)),
                is_guest: row.try_get::<_, i16>(5)? != 0,
                admin: row.try_get::<_, i16>(6)? != 0,
                locked: row.try_get::<_, bool>(8)?,
                shadow_banned: row.try_get::<_, Option<bool>>(9)?.unwrap_or(false),
            };
            let deactivated = row.try_get::<_, i16>(7)? != 0;
            Ok(if deactivated {
                TokenLookup::Deactivated(info)
            } else if info.valid_until_ms.is_some_and(|v| v < now_ms) {
                TokenLookup::Expired(info)
            } else {
                TokenLookup::Valid(info)
            })
        })
        .await
    }

    /// Every `(room_id, user_id)` with a current `join` membership, ordered by room then
    /// user. Entries whose state key is not a valid user ID are logged and skipped.
    pub async fn joined_members_of_all_rooms(&self) -> Result<Vec<(String, UserId)>, Error> {
        self.timed("joined_members_of_all_rooms", BULK_TIMEOUT, async {
            let client = self.pool.get().await?;
            let rows = client
                .query(
                    "SELECT room_id, state_key FROM current_state_events \
                     WHERE type = 'm.room.member' AND membership = 'join' \
                     ORDER BY room_id, state_key",
                    &[],
                )
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                let room: String = row.try_get(0)?;
                if let Some(user) = member(row.try_get(1)?) {
                    out.push((room, user));
                }
            }
            Ok(out)
        })
        .await
    }

    /// Whether `user` has an account in the deployment (`users`), deactivated or not.
    pub async fn user_exists(&self, user: &UserId) -> Result<bool, Error> {
        self.timed("user_exists", QUERY_TIMEOUT, async {
            let client = self.pool.get().await?;
            let row = client
                .query_opt("SELECT 1 FROM users WHERE name = $1", &[&user.as_str()])
                .await?;
            Ok(row.is_some())
        })
        .await
    }

    /// The rooms `user` is currently joined to, sorted.
    pub async fn rooms_for_user(&self, user: &UserId) -> Result<Vec<String>, Error> {
        self.timed("rooms_for_user", QUERY_TIMEOUT, async {
            let client = self.pool.get().await?;
            let rows = client
                .query(
                    "SELECT room_id FROM current_state_events \
                     WHERE type = 'm.room.member' AND state_key = $1 AND membership = 'join' \
                     ORDER BY room_id",
                    &[&user.as_str()],
                )
                .await?;
            rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
        })
        .await
    }

    /// Whether `user` is currently joined to `room_id`.
    pub async fn is_joined(&self, room_id: &str, user: &UserId) -> Result<bool, Error> {
        self.timed("is_joined", QUERY_TIMEOUT, async {
            let client = self.pool.get().await?;
            let row = client
                .query_opt(
                    "SELECT 1 FROM current_state_events \
                     WHERE type = 'm.room.member' AND room_id = $1 AND state_key = $2 \
                     AND membership = 'join'",
                    &[&room_id, &user.as_str()],
                )
                .await?;
            Ok(row.is_some())
        })
        .await
    }

    /// The users currently joined to `room_id`, sorted.
    pub async fn users_in_room(&self, room_id: &str) -> Result<Vec<UserId>, Error> {
        self.timed("users_in_room", QUERY_TIMEOUT, async {
            let client = self.pool.get().await?;
            let rows = client
                .query(
                    "SELECT state_key FROM current_state_events \
                     WHERE type = 'm.room.member' AND room_id = $1 AND membership = 'join' \
                     ORDER BY state_key",
                    &[&room_id],
                )
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                if let Some(user) = member(row.try_get(0)?) {
                    out.push(user);
                }
            }
            Ok(out)
        })
        .await
    }
}

fn member(state_key: String) -> Option<UserId> {
    match UserId::parse(&state_key) {
        Ok(u) => Some(u),
        Err(e) => {
            warn!(%state_key, error = %e, "Skipping a membership whose state key is not a user ID.");
            None
        }
    }
}

/// Decodes one `presence_stream` row. Synapse's columns are all nullable; a NULL timestamp
/// reads as 0 ("never") and a NULL `currently_active` as false, as Synapse's own readers do.
fn presence_from_row(row: &Row) -> Result<(StreamId, PresenceRow), String> {
    let get_i64 = |i: usize| -> Result<Option<i64>, String> {
        row.try_get::<_, Option<i64>>(i).map_err(|e| e.to_string())
    };
    let id = get_i64(0)?.ok_or("stream_id is NULL")?;
    let id = u64::try_from(id).map_err(|_| format!("stream_id {id} is negative"))?;
    let user: Option<String> = row.try_get(1).map_err(|e| e.to_string())?;
    let user = user.ok_or("user_id is NULL")?;
    let user_id = UserId::parse(&user).map_err(|e| format!("user_id {user:?}: {e}"))?;
    let state: Option<String> = row.try_get(2).map_err(|e| e.to_string())?;
    let state = state
        .as_deref()
        .and_then(PresenceState::from_wire)
        .ok_or_else(|| format!("state {state:?} of {user}"))?;
    let ts = |i: usize| -> Result<Millis, String> {
        Ok(get_i64(i)?.map_or(0, |v| u64::try_from(v).unwrap_or(0)))
    };
    let status_msg: Option<String> = row.try_get(6).map_err(|e| e.to_string())?;
    let currently_active: Option<bool> = row.try_get(7).map_err(|e| e.to_string())?;
    Ok((
        id,
        PresenceRow {
            user_id,
            state,
            last_active_ts: ts(3)?,
            last_federation_update_ts: ts(4)?,
            last_user_sync_ts: ts(5)?,
            status_msg,
            currently_active: currently_active.unwrap_or(false),
        },
    ))
}

fn to_i64(v: u64, what: &'static str) -> Result<i64, Error> {
    i64::try_from(v).map_err(|_| Error::OutOfRange(what))
}

fn to_u64(v: i64) -> Result<u64, Error> {
    u64::try_from(v).map_err(|_| Error::Corrupt(format!("negative stream ID {v}")))
}
