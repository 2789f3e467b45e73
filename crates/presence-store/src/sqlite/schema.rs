//! Opening connections and migrating the schema.
//!
//! The schema is a list of SQL scripts applied in order. The number of scripts applied is
//! recorded in SQLite's `PRAGMA user_version`, so opening an up-to-date database runs
//! nothing, and a database written by a newer build is refused rather than misread.
//! Each script runs in its own transaction together with the version bump, so a failure
//! leaves the database at the previous version.

use std::{path::Path, time::Duration};

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::Synchronous;
use crate::StoreError;

/// The schema scripts; script `i` (0-based) produces version `i + 1`. Append only: a
/// released script is never edited.
pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_room_aliases.sql"),
    include_str!("migrations/0003_account_data.sql"),
];

/// The schema version this build writes.
pub(crate) fn latest_version() -> u32 {
    version_of(MIGRATIONS.len())
}

fn version_of(count: usize) -> u32 {
    u32::try_from(count).unwrap_or(u32::MAX)
}

/// Opens the connection the writer thread owns, migrates the schema and switches the
/// database to WAL.
pub(super) fn open_writer(
    path: &Path,
    synchronous: Synchronous,
    busy_timeout: Duration,
) -> Result<Connection, StoreError> {
    refuse_foreign(path)?;
    let mut conn = Connection::open_with_flags(path, base_flags() | OpenFlags::SQLITE_OPEN_CREATE)?;
    conn.busy_timeout(busy_timeout)?;
    // WAL lets readers run while the writer commits, and makes a commit one sequential append.
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Corrupt(format!(
            "could not switch the database to WAL (journal_mode is {mode})"
        )));
    }
    conn.pragma_update(None, "synchronous", synchronous.pragma_value())?;
    conn.pragma_update(None, "foreign_keys", true)?;
    // Temporary B-trees (sorts) stay in memory.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Room for every statement the writer prepares, so none is ever re-parsed.
    conn.set_prepared_statement_cache_capacity(64);
    migrate(&mut conn, MIGRATIONS)?;
    Ok(conn)
}

/// Tables only Synapse's schema has (`synapse/storage/schema/common/schema_version.sql`
/// and `main/full_schemas/*/full.sql.sqlite`): any of them marks a Synapse database.
const SYNAPSE_TABLES: &[&str] = &[
    "schema_version",
    "schema_compat_version",
    "applied_schema_deltas",
    "applied_module_schemas",
    "event_json",
    "state_groups_state",
];

/// Refuses a file that already holds another program's database, before anything touches
/// it (switching to WAL alone rewrites the header): an operator reusing a homeserver.yaml
/// points `database` at Synapse's own file. Such a file has tables but no schema version of
/// ours. It is read through a read-only connection, so it stays byte-for-byte as it was.
fn refuse_foreign(path: &Path) -> Result<(), StoreError> {
    // Missing or empty: a new database.
    if std::fs::metadata(path).map_or(true, |m| m.len() == 0) {
        return Ok(());
    }
    // `immutable`: no locks and no `-shm`/`-wal` files, which even a read-only connection to
    // a WAL database would create. What is probed (the schema version and the table names)
    // is in the main file; a Presenced database's `user_version` is there as soon as its
    // first migration committed.
    let conn = Connection::open_with_flags(
        immutable_uri(path),
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )?;
    if current_version(&conn)? != 0 {
        return Ok(());
    }
    let mut tables = conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
    )?;
    let tables = tables
        .query_map([], |row| row.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    if tables.is_empty() {
        return Ok(());
    }
    Err(StoreError::ForeignDatabase {
        synapse: tables.iter().any(|t| SYNAPSE_TABLES.contains(&t.as_str())),
        tables: tables.len(),
    })
}

/// `file:PATH?immutable=1`, with the bytes a URI path cannot hold (and every non-ASCII byte)
/// percent-encoded.
fn immutable_uri(path: &Path) -> String {
    let mut uri = String::from("file:");
    for byte in path.as_os_str().as_encoded_bytes() {
        match byte {
            b'?' | b'#' | b'%' | 0..=0x20 | 0x7f.. => uri.push_str(&format!("%{byte:02X}")),
            _ => uri.push(char::from(*byte)),
        }
    }
    uri.push_str("?immutable=1");
    uri
}

/// Opens a read-only-in-practice connection for the read pool.
pub(super) fn open_reader(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, base_flags())?;
    conn.busy_timeout(busy_timeout)?;
    // Reads never write: a bug that tries fails loudly instead of bypassing the writer.
    conn.pragma_update(None, "query_only", true)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn base_flags() -> OpenFlags {
    // NO_MUTEX: each connection is used by one thread at a time, so SQLite's own locking
    // per call is wasted work.
    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
}

/// The schema version recorded in the database.
pub(super) fn current_version(conn: &Connection) -> Result<u32, StoreError> {
    let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative schema version {v}")))
}

/// Applies the scripts the database has not seen yet.
pub(super) fn migrate(conn: &mut Connection, migrations: &[&str]) -> Result<(), StoreError> {
    let supported = version_of(migrations.len());
    let found = current_version(conn)?;
    if found > supported {
        return Err(StoreError::SchemaTooNew { found, supported });
    }
    for (index, script) in migrations.iter().enumerate().skip(found as usize) {
        let version = version_of(index + 1);
        let failed = |source| StoreError::Migration { version, source };
        // IMMEDIATE: take the write lock up front, so a second process opening the same file
        // waits instead of migrating concurrently.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(failed)?;
        // Another process may have migrated while this one waited for the lock.
        if current_version(&tx)? >= version {
            continue;
        }
        tx.execute_batch(script).map_err(failed)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(failed)?;
        tx.commit().map_err(failed)?;
        tracing::info!(version, "Applied store schema migration.");
    }
    Ok(())
}
