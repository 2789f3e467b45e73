//! A process killed with SIGKILL loses no acknowledged write.
//!
//! The parent test re-runs this test binary as a child that writes presence rows from
//! several tasks and prints the stream id of each write once it is acknowledged. The parent
//! kills the child mid-stream, reopens the database, and checks that every id the child
//! printed is stored. It does this twice, so the second child also starts from a database
//! recovered after a kill.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use presence_router::PresenceState;
use presence_store::{PresenceStore, SqliteConfig, SqliteStore, conformance::presence};

/// Set in the child's environment: the database it writes to.
const CHILD_DB_ENV: &str = "PRESENCE_STORE_CRASH_CHILD_DB";
const ACK: &str = "ACK ";
/// Acknowledgements the parent waits for before it kills the child: enough for the WAL to
/// have been checkpointed into the main file at least once (every 1000 pages by default).
const ACKS_BEFORE_KILL: usize = 5_000;

fn user_for(id: u64) -> String {
    format!("@crash{id}:example.org")
}

/// The child's body; does nothing unless started by [`acknowledged_writes_survive_sigkill`].
#[test]
#[ignore = "child process of acknowledged_writes_survive_sigkill, which runs it"]
fn crash_child_writer() {
    let Some(path) = std::env::var_os(CHILD_DB_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store = SqliteStore::open(SqliteConfig::new(path)).await.unwrap();
        let next = Arc::new(AtomicU64::new(
            store.max_presence_stream_id().await.unwrap() + 1,
        ));
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut writers = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (store, next) = (store.clone(), Arc::clone(&next));
            writers.spawn(async move {
                // Bounded so a child whose parent died stops by itself.
                while Instant::now() < deadline {
                    let id = next.fetch_add(1, Ordering::Relaxed);
                    let state = presence(&user_for(id), PresenceState::Online, id);
                    store.persist_presence(vec![(id, state)]).await.unwrap();
                    println!("{ACK}{id}");
                }
            });
        }
        while writers.join_next().await.is_some() {}
    });
}

/// Runs one child until it has acknowledged enough writes, kills it, and returns every id it
/// acknowledged.
fn run_and_kill_child(db: &Path) -> Vec<u64> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "crash::crash_child_writer",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB_ENV, db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acked = Vec::new();
    let mut lines = BufReader::new(stdout).lines();
    let mut killed = false;
    // Reading on after the kill collects the acknowledgements still in the pipe.
    for line in lines.by_ref() {
        let line = line.unwrap();
        // The test harness prints its own text on the first line, before the first ack.
        if let Some(pos) = line.find(ACK) {
            acked.push(line[pos + ACK.len()..].trim().parse::<u64>().unwrap());
        }
        if !killed && acked.len() >= ACKS_BEFORE_KILL {
            // `kill` is SIGKILL on Unix: no destructor, no flush, no close.
            child.kill().unwrap();
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    assert!(
        killed,
        "child exited on its own ({status}) after {} acks",
        acked.len()
    );
    assert!(!status.success());
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let mut all_acked = Vec::new();
    for round in 0..2 {
        let db_for_child = db.clone();
        let acked = tokio::task::spawn_blocking(move || run_and_kill_child(&db_for_child))
            .await
            .unwrap();
        assert!(
            acked.len() >= ACKS_BEFORE_KILL,
            "round {round}: {}",
            acked.len()
        );
        all_acked.extend(acked);

        let store = SqliteStore::open(SqliteConfig::new(&db)).await.unwrap();
        let stored: std::collections::HashMap<u64, String> = store
            .load_presence()
            .await
            .unwrap()
            .into_iter()
            .map(|(id, s)| (id, s.user_id.as_str().to_owned()))
            .collect();
        let missing: Vec<_> = all_acked
            .iter()
            .filter(|id| stored.get(id) != Some(&user_for(**id)))
            .collect();
        assert!(
            missing.is_empty(),
            "round {round}: {} of {} acknowledged writes lost, e.g. {:?}",
            missing.len(),
            all_acked.len(),
            &missing[..missing.len().min(10)]
        );
        store.close().await.unwrap();
    }
}
