//! [`Error`], the one error type of this crate.
//!
//! Parsing errors have their own small detail types ([`CommandError`], [`RowError`]) because
//! callers log and drop a bad line or row rather than fail; they are wrapped here when they
//! travel further.

use crate::{CommandError, RowError};

/// Why an operation of the Synapse adapter failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A replication command line could not be parsed.
    #[error("bad replication command: {0}")]
    Command(#[from] CommandError),
    /// A stream row could not be decoded.
    #[error("bad stream row: {0}")]
    Row(#[from] RowError),
    /// A configuration value is missing or invalid; `key` names it (e.g. `database.args.port`).
    #[error("invalid configuration `{key}`: {reason}")]
    Config {
        /// The key path of the offending setting.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The configuration asks for something this build does not do yet (TLS to PostgreSQL or
    /// Redis). Refused at startup instead of silently connecting in clear text.
    #[error("unsupported configuration `{key}`: {reason}")]
    Unsupported {
        /// The key path of the setting.
        key: String,
        /// Why it is not supported.
        reason: String,
    },
    /// A PostgreSQL or Redis operation did not finish in time (the server is hung or
    /// unreachable).
    #[error("`{operation}` did not finish within {after:?}: is the server hung or unreachable?")]
    Timeout {
        /// The operation, e.g. `persist_presence`.
        operation: &'static str,
        /// The limit it ran into.
        after: std::time::Duration,
    },
    /// A PostgreSQL query failed.
    #[error("PostgreSQL error")]
    Postgres(#[from] tokio_postgres::Error),
    /// No PostgreSQL connection could be taken from the pool.
    #[error("PostgreSQL pool error")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// The PostgreSQL pool could not be built.
    #[error("PostgreSQL pool could not be created")]
    PoolBuild(#[from] deadpool_postgres::BuildError),
    /// Writing presence failed. Stream IDs `allocated` (inclusive range) were taken from the
    /// sequence before the failure and are never reused. If the failure was at COMMIT the
    /// rows may or may not be in the table: the caller must re-read before announcing them.
    #[error("persisting presence failed")]
    PersistPresence {
        /// The stream IDs taken from `presence_stream_sequence`, if any were.
        allocated: Option<(crate::StreamId, crate::StreamId)>,
        /// The database error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A value read from Synapse's database does not fit what Synapse itself writes.
    #[error("unexpected data in Synapse's database: {0}")]
    Corrupt(String),
    /// A number does not fit the database's signed 64-bit columns.
    #[error("value out of range: {0}")]
    OutOfRange(&'static str),
    /// A Redis operation failed.
    #[error("Redis error")]
    Redis(#[from] redis::RedisError),
    /// The replication task has stopped (shutdown, or the receiver went away).
    #[error("the replication connection is closed")]
    Closed,
}
