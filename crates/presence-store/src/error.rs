//! [`StoreError`], the one error type of this crate.
//!
//! Callers branch on the domain variants (`Overloaded`, `UserExists`, `NotFound`, ...) and
//! map them to Matrix errors; every other variant is an internal failure that the HTTP layer
//! logs and reports as a generic server error. Each message includes its cause's, so a
//! startup failure printed on one line says what SQLite said.

use std::sync::Arc;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The write queue is full; the write was not accepted. Retry later (the server answers
    /// `429 M_LIMIT_EXCEEDED`).
    #[error("the store's write queue is full")]
    Overloaded,
    /// The store has been closed (or its writer stopped); nothing more can be done with it.
    #[error("the store is closed")]
    Closed,
    /// A user with this ID already exists.
    #[error("user already exists")]
    UserExists,
    /// A room with this ID already exists.
    #[error("room already exists")]
    RoomExists,
    /// An event with this event ID is already stored.
    #[error("event already exists")]
    EventExists,
    /// The user, room or device a write refers to does not exist.
    #[error("not found")]
    NotFound,
    /// A number does not fit the storage format (timestamps and stream ids are stored as
    /// signed 64-bit integers).
    #[error("value out of range: {0}")]
    OutOfRange(&'static str),
    /// The database holds data this code cannot read back (a bad ID, an unknown presence
    /// state, a negative stream id...).
    #[error("corrupt data in store: {0}")]
    Corrupt(String),
    /// The database was written by a newer version of Presenced.
    #[error("database schema version {found} is newer than this build supports ({supported})")]
    SchemaTooNew {
        /// The version recorded in the database.
        found: u32,
        /// The newest version this build knows.
        supported: u32,
    },
    /// The file holds another program's database (no Presenced schema version, but tables),
    /// a Synapse database above all. Refused before anything is written to it: the file is
    /// left exactly as it was.
    #[error("{}", if *synapse {
        "the file is a Synapse database, not a Presenced one".to_owned()
    } else {
        format!("the file holds another program's database ({tables} tables), not a Presenced one")
    })]
    ForeignDatabase {
        /// Whether it has Synapse's tables (`schema_version`, `applied_schema_deltas`, ...).
        synapse: bool,
        /// How many tables it has.
        tables: usize,
    },
    /// A schema migration failed; the database is left at `version - 1`.
    #[error("schema migration to version {version} failed: {source}")]
    Migration {
        /// The version the failing migration would have produced.
        version: u32,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The group-commit transaction this write was part of could not be committed, so the
    /// write was not applied (nor was any other write of that batch).
    #[error("the write batch could not be committed: {0}")]
    BatchFailed(#[source] Arc<rusqlite::Error>),
    /// The operation hit a bug in the store (a panic) and was not applied.
    #[error("the store operation panicked")]
    Panicked,
    /// Another SQLite failure (internal), with SQLite's own reason.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Another backend behind the same interface failed (a Synapse deployment's
    /// PostgreSQL or Redis, in the writer mode).
    #[error("{backend}: {reason}")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// What failed.
        reason: String,
    },
    /// The backend does not offer this operation (yet).
    #[error("not supported by this backend: {0}")]
    Unsupported(&'static str),
    /// The store could not start its threads or open its files.
    #[error("store I/O error: {0}")]
    Io(#[from] std::io::Error),
}
