//! Integration tests of the SQLite store through its public API: the shared conformance
//! suite, persistence across reopen, and survival of a killed process.

// Test helpers outside `#[test]` functions: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod crash;
mod reopen;

use presence_store::{SqliteConfig, SqliteStore};
use tempfile::TempDir;

/// A fresh store in its own temporary directory (kept alive by the returned guard).
pub(crate) async fn sqlite_store() -> (SqliteStore, TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open(SqliteConfig::new(dir.path().join("presence.db")))
        .await
        .expect("store opens");
    (store, dir)
}

presence_store::store_conformance!(sqlite_store);
