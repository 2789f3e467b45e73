//! Tests of the SQLite backend's machinery: group commit, per-request savepoints, the bounded
//! queue, pragmas and migrations. They use the writer directly, which only this module can.

use std::{sync::mpsc, time::Duration};

use presence_router::PresenceState;
use rusqlite::Connection;
use tempfile::TempDir;

use super::{SqliteConfig, SqliteStore, Synchronous, schema};
use crate::{
    NewDevice, NewUser, PresenceStore, StoreError,
    conformance::{device, presence, user},
};

async fn open_with(configure: impl FnOnce(&mut SqliteConfig)) -> (SqliteStore, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = SqliteConfig::new(dir.path().join("store.db"));
    configure(&mut config);
    let store = SqliteStore::open(config).await.unwrap();
    (store, dir)
}

/// Holds the writer thread inside a job until released, so that the test controls exactly
/// which writes end up queued together.
struct WriterPause {
    release: mpsc::Sender<()>,
}

impl WriterPause {
    async fn hold(store: &SqliteStore) -> Self {
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (release, wait) = mpsc::channel::<()>();
        // The job's own reply is not needed: it is acknowledged with the batch after release.
        drop(store.write(move |_| {
            started_tx.send(()).unwrap();
            // Returns when the sender is dropped.
            let _ = wait.recv();
            Ok(())
        }));
        started_rx
            .await
            .expect("the writer picked up the pause job");
        Self { release }
    }

    fn resume(self) {
        drop(self.release);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_commits() {
    // FULL makes each commit an fsync, as on a server that asks for power-loss safety; the
    // writes arriving meanwhile must join the next commit instead of waiting for their own.
    let (store, _dir) = open_with(|c| c.synchronous = Synchronous::Full).await;
    let futures: Vec<_> = (1..=500u64)
        .map(|i| {
            let s = presence(&format!("@u{i}:example.org"), PresenceState::Online, i);
            store.persist_presence(vec![(i, s)])
        })
        .collect();
    for f in futures {
        f.await.unwrap();
    }
    let stats = store.stats();
    assert_eq!(stats.writes, 500);
    assert_eq!(stats.failed_writes, 0);
    assert!(
        stats.batches < 100,
        "500 writes took {} commits",
        stats.batches
    );
    assert!(stats.max_batch > 5, "{stats:?}");
    assert!(stats.commit_nanos > 0 && stats.max_commit_nanos <= stats.commit_nanos);
    assert_eq!(store.load_presence().await.unwrap().len(), 500);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_writes_are_committed_as_one_batch() {
    let (store, _dir) = open_with(|_| {}).await;
    let pause = WriterPause::hold(&store).await;
    let keys: Vec<_> = (1..=300u64)
        .map(|i| (format!("k{i}"), i.to_string()))
        .collect();
    let futures: Vec<_> = keys.iter().map(|(k, v)| store.set_meta(k, v)).collect();
    assert_eq!(store.stats().queued, 300);
    pause.resume();
    for f in futures {
        f.await.unwrap();
    }
    let stats = store.stats();
    // The pause job's batch, then everything that was queued behind it.
    assert_eq!(stats.batches, 2, "{stats:?}");
    assert_eq!(stats.max_batch, 300);
    assert_eq!(stats.queued, 0);
    assert_eq!(
        store.get_meta("k300").await.unwrap().as_deref(),
        Some("300")
    );
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_write_fails_alone_within_its_batch() {
    let (store, _dir) = open_with(|_| {}).await;
    store
        .create_user(NewUser::new(user("@taken:example.org"), 1))
        .await
        .unwrap();
    let batches_before = store.stats().batches;

    let pause = WriterPause::hold(&store).await;
    let first = store.create_user(NewUser::new(user("@a:example.org"), 2));
    let duplicate = store.create_user(NewUser::new(user("@taken:example.org"), 3));
    // A device for a user who does not exist: fails after nothing else ran in its savepoint.
    let orphan = store.create_device(
        NewDevice::new(user("@ghost:example.org"), device("D"), 4),
        "token",
    );
    // A write that does part of its work, then fails: its first half must be undone too.
    let half = store.write(|conn| {
        conn.execute("INSERT INTO meta (key, value) VALUES ('half', 'done')", [])?;
        Err::<(), _>(StoreError::NotFound)
    });
    let last = store.create_user(NewUser::new(user("@b:example.org"), 5));
    pause.resume();

    first.await.unwrap();
    assert!(matches!(duplicate.await, Err(StoreError::UserExists)));
    assert!(matches!(orphan.await, Err(StoreError::NotFound)));
    assert!(matches!(half.await, Err(StoreError::NotFound)));
    last.await.unwrap();

    let stats = store.stats();
    assert_eq!(
        stats.batches - batches_before,
        2,
        "one batch for the pause, one for the rest"
    );
    assert_eq!(stats.failed_writes, 3);
    assert_eq!(store.count_users().await.unwrap(), 3);
    assert_eq!(store.get_meta("half").await.unwrap(), None);
    assert_eq!(store.resolve_token("token").await.unwrap(), None);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_transaction_fails_its_batch_and_the_writer_recovers() {
    let (store, _dir) = open_with(|_| {}).await;
    let pause = WriterPause::hold(&store).await;
    let before = store.set_meta("before", "1");
    // Ends the batch's transaction from inside a request: nothing of the batch may be
    // acknowledged, since nothing of it will be committed as one unit.
    let breaker = store.write(|conn| {
        conn.execute_batch("ROLLBACK")?;
        Ok(())
    });
    let after = store.set_meta("after", "1");
    pause.resume();
    assert!(matches!(before.await, Err(StoreError::BatchFailed(_))));
    assert!(matches!(breaker.await, Err(StoreError::BatchFailed(_))));
    assert!(matches!(after.await, Err(StoreError::BatchFailed(_))));
    assert_eq!(store.get_meta("before").await.unwrap(), None);

    store.set_meta("later", "1").await.unwrap();
    assert_eq!(store.get_meta("later").await.unwrap().as_deref(), Some("1"));
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_at_once_and_loses_nothing_accepted() {
    let (store, _dir) = open_with(|c| c.write_queue_capacity = 1).await;
    let pause = WriterPause::hold(&store).await;
    let accepted = store.set_meta("accepted", "yes");
    let refused = tokio::time::timeout(Duration::from_secs(5), store.set_meta("refused", "no"))
        .await
        .expect("an overloaded store answers at once");
    assert!(
        matches!(refused, Err(StoreError::Overloaded)),
        "{refused:?}"
    );
    assert_eq!(store.stats().rejected_writes, 1);
    pause.resume();
    accepted.await.unwrap();
    assert_eq!(
        store.get_meta("accepted").await.unwrap().as_deref(),
        Some("yes")
    );
    assert_eq!(store.get_meta("refused").await.unwrap(), None);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_capacity_keeps_every_accepted_write() {
    let (store, _dir) = open_with(|c| c.write_queue_capacity = 8).await;
    let pause = WriterPause::hold(&store).await;
    let mut accepted = Vec::new();
    let mut refused = 0;
    // Issued while the writer is held, so all but the first 8 must be refused.
    let keys: Vec<_> = (0..100u64).map(|i| format!("burst{i}")).collect();
    let pending: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (i as u64, store.set_meta(k, "x")))
        .collect();
    pause.resume();
    for (i, f) in pending {
        match f.await {
            Ok(()) => accepted.push(i),
            Err(StoreError::Overloaded) => refused += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(accepted, (0..8).collect::<Vec<_>>());
    assert_eq!(refused, 92);
    for i in 0..100u64 {
        let stored = store.get_meta(&format!("burst{i}")).await.unwrap();
        assert_eq!(stored.is_some(), i < 8, "burst{i}");
    }
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_flushes_queued_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = SqliteStore::open(SqliteConfig::new(&path)).await.unwrap();
    let pause = WriterPause::hold(&store).await;
    // Nobody waits for these replies: the writes must still land.
    for i in 0..50u64 {
        drop(store.set_meta(&format!("q{i}"), "v"));
    }
    let closing = tokio::spawn({
        let store = store.clone();
        async move { store.close().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(matches!(
        store.set_meta("late", "v").await,
        Err(StoreError::Closed)
    ));
    pause.resume();
    closing.await.unwrap().unwrap();

    let store = SqliteStore::open(SqliteConfig::new(&path)).await.unwrap();
    for i in 0..50u64 {
        assert!(
            store.get_meta(&format!("q{i}")).await.unwrap().is_some(),
            "q{i}"
        );
    }
    assert_eq!(store.get_meta("late").await.unwrap(), None);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_use_wal_foreign_keys_and_the_configured_sync_level() {
    for (level, expected) in [(Synchronous::Normal, 1), (Synchronous::Full, 2)] {
        let (store, dir) = open_with(|c| c.synchronous = level).await;
        let pragmas = store
            .write(|conn| {
                let get = |name| conn.pragma_query_value(None, name, |r| r.get::<_, i64>(0));
                Ok((
                    get("synchronous")?,
                    get("foreign_keys")?,
                    get("busy_timeout")?,
                ))
            })
            .await
            .unwrap();
        assert_eq!(pragmas, (expected, 1, 5_000));
        let mode: String = store
            .read(|conn| Ok(conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        // The read pool never writes.
        let write_on_reader = store
            .read(|conn| Ok(conn.execute("INSERT INTO meta VALUES ('x', 'y')", [])?))
            .await;
        assert!(write_on_reader.is_err());
        store.close().await.unwrap();
        drop(dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tokens_are_stored_hashed() {
    let (store, dir) = open_with(|_| {}).await;
    let alice = user("@alice:example.org");
    store
        .create_user(NewUser::new(alice.clone(), 1))
        .await
        .unwrap();
    store
        .create_device(NewDevice::new(alice, device("D"), 1), "syt_secret_token")
        .await
        .unwrap();
    store.close().await.unwrap();

    let conn = Connection::open(dir.path().join("store.db")).unwrap();
    let stored: Vec<u8> = conn
        .query_row("SELECT token_hash FROM access_tokens", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, super::accounts::hash_token("syt_secret_token"));
    assert_eq!(stored.len(), 32);
    assert!(!stored.windows(6).any(|w| w == b"secret"));
}

#[test]
fn migrations_run_once_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let mut conn = Connection::open(&path).unwrap();
    let v1 = "CREATE TABLE t (a INTEGER);";
    let v2 = "INSERT INTO t (a) VALUES (1);";
    schema::migrate(&mut conn, &[v1]).unwrap();
    assert_eq!(schema::current_version(&conn).unwrap(), 1);
    // Re-running with one more script applies only the new one; again, nothing.
    schema::migrate(&mut conn, &[v1, v2]).unwrap();
    schema::migrate(&mut conn, &[v1, v2]).unwrap();
    assert_eq!(schema::current_version(&conn).unwrap(), 2);
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1);
}

#[test]
fn a_failed_migration_leaves_the_previous_version() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = Connection::open(dir.path().join("m.db")).unwrap();
    let v1 = "CREATE TABLE t (a INTEGER);";
    let broken = "CREATE TABLE u (b INTEGER); THIS IS NOT SQL;";
    let err = schema::migrate(&mut conn, &[v1, broken]).unwrap_err();
    assert!(
        matches!(err, StoreError::Migration { version: 2, .. }),
        "{err:?}"
    );
    assert_eq!(schema::current_version(&conn).unwrap(), 1);
    // The half-run script was rolled back with its version bump.
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'u'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_a_newer_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = SqliteStore::open(SqliteConfig::new(&path)).await.unwrap();
    store.close().await.unwrap();
    let newer = SqliteStore::schema_version() + 1;
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", newer)
        .unwrap();
    let err = SqliteStore::open(SqliteConfig::new(&path))
        .await
        .unwrap_err();
    match err {
        StoreError::SchemaTooNew { found, supported } => {
            assert_eq!((found, supported), (newer, SqliteStore::schema_version()));
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

/// The directory's files and their bytes, so a test can say that nothing was written.
fn snapshot(dir: &std::path::Path) -> Vec<(std::ffi::OsString, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name(), std::fs::read(e.path()).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// An existing Synapse SQLite database (`homeserver.db`) is recognised before anything is
/// written: no migration, no WAL switch, every file left byte-for-byte as it was. Synapse's
/// own `synapse/storage/schema/common/schema_version.sql` creates `schema_version`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synapse_database_is_refused_and_left_untouched() {
    for (journal, name) in [("DELETE", "homeserver.db"), ("WAL", "home server ü?#%.db")] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        {
            let conn = Connection::open(&path).unwrap();
            let _: String = conn
                .pragma_update_and_check(None, "journal_mode", journal, |r| r.get(0))
                .unwrap();
            conn.execute_batch(
                "CREATE TABLE schema_version(Lock CHAR(1) NOT NULL DEFAULT 'X' UNIQUE, \
                     version INTEGER NOT NULL, upgraded BOOL NOT NULL);
                 INSERT INTO schema_version VALUES ('X', 92, 1);
                 CREATE TABLE users(name TEXT, password_hash TEXT, creation_ts BIGINT);
                 INSERT INTO users VALUES ('@alice:example.org', 'x', 1);",
            )
            .unwrap();
        }
        let before = snapshot(dir.path());
        let err = SqliteStore::open(SqliteConfig::new(&path))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::ForeignDatabase {
                    synapse: true,
                    tables: 2
                }
            ),
            "{journal}: {err:?}"
        );
        assert_eq!(
            err.to_string(),
            "the file is a Synapse database, not a Presenced one"
        );
        assert!(
            snapshot(dir.path()) == before,
            "{journal}: the files changed"
        );
    }
}

/// Another program's database is refused the same way; an empty file is a new database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_database_is_refused_and_an_empty_file_is_new() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE notes(body TEXT);")
        .unwrap();
    let before = snapshot(dir.path());
    let err = SqliteStore::open(SqliteConfig::new(&path))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::ForeignDatabase {
                synapse: false,
                tables: 1
            }
        ),
        "{err:?}"
    );
    assert!(snapshot(dir.path()) == before, "the files changed");

    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let store = SqliteStore::open(SqliteConfig::new(&empty)).await.unwrap();
    assert_eq!(
        store.read(schema::current_version).await.unwrap(),
        SqliteStore::schema_version()
    );
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_runs_no_migration_and_keeps_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    for round in 0..3 {
        let store = SqliteStore::open(SqliteConfig::new(&path)).await.unwrap();
        let version = store.read(schema::current_version).await.unwrap();
        assert_eq!(version, SqliteStore::schema_version());
        assert_eq!(version as usize, schema::MIGRATIONS.len());
        if round == 0 {
            store.set_meta("created", "once").await.unwrap();
        }
        assert_eq!(
            store.get_meta("created").await.unwrap().as_deref(),
            Some("once")
        );
        store.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_request_fails_alone() {
    let (store, _dir) = open_with(|_| {}).await;
    let pause = WriterPause::hold(&store).await;
    let before = store.set_meta("before", "1");
    let boom = store.write::<(), _>(|conn| {
        conn.execute("INSERT INTO meta (key, value) VALUES ('boom', '1')", [])?;
        panic!("injected panic in a store write")
    });
    let after = store.set_meta("after", "1");
    pause.resume();
    assert!(matches!(boom.await, Err(StoreError::Panicked)));
    before.await.unwrap();
    after.await.unwrap();
    assert_eq!(store.get_meta("boom").await.unwrap(), None);

    let read = store
        .read::<(), _>(|_| panic!("injected panic in a store read"))
        .await;
    assert!(matches!(read, Err(StoreError::Panicked)));
    assert_eq!(store.get_meta("after").await.unwrap().as_deref(), Some("1"));
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_presence_rows_are_skipped() {
    let (store, dir) = open_with(|_| {}).await;
    store
        .persist_presence(vec![
            (1, presence("@good:hs", PresenceState::Online, 10)),
            (2, presence("@also:hs", PresenceState::Unavailable, 20)),
        ])
        .await
        .unwrap();
    store.close().await.unwrap();
    {
        let conn = Connection::open(dir.path().join("store.db")).unwrap();
        // A bad user ID, an unknown state, text where an integer belongs, a negative stream id.
        conn.execute_batch(
            "INSERT INTO presence VALUES ('nocolon', 3, 'online', 1, 1, 1, NULL, 0);
             INSERT INTO presence VALUES ('@state:hs', 4, 'dancing', 1, 1, 1, NULL, 0);
             INSERT INTO presence VALUES ('@text:hs', 'five', 'online', 1, 1, 1, NULL, 0);
             INSERT INTO presence VALUES ('@neg:hs', -6, 'online', 1, 1, 1, NULL, 0);",
        )
        .unwrap();
    }
    let store = SqliteStore::open(SqliteConfig::new(dir.path().join("store.db")))
        .await
        .unwrap();
    let mut loaded: Vec<_> = store
        .load_presence()
        .await
        .expect("bad rows do not fail the load")
        .into_iter()
        .map(|(id, s)| (id, s.user_id.as_str().to_owned()))
        .collect();
    loaded.sort();
    assert_eq!(
        loaded,
        [(1, "@good:hs".to_owned()), (2, "@also:hs".to_owned())]
    );
    store.close().await.unwrap();
}

#[tokio::test]
async fn sqlite_errors_carry_sqlite_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    std::fs::write(
        &path,
        b"this is not a database, not even close; it is text ...".repeat(200),
    )
    .unwrap();
    let Err(e) = SqliteStore::open(SqliteConfig::new(&path)).await else {
        panic!("a text file is not a database");
    };
    assert!(
        e.to_string().contains("file is not a database"),
        "the message says what SQLite said: {e}"
    );
}
