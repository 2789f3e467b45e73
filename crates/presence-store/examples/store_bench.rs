//! Measures presence writes per second through the SQLite store's group-commit path, with
//! 1, 8 and 64 concurrent writers, each writing one user's presence per call (the shape of
//! the server's hot path). Not run in CI; build it in release for meaningful numbers:
//!
//! ```text
//! cargo run --release -p presence-store --example store_bench -- [--full] [--seconds N] [--memberships N]
//! ```
//!
//! `--full` uses `synchronous = FULL` (an fsync per commit); `--memberships N` also times the
//! startup load of N joined memberships.

use std::{
    error::Error,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use presence_router::{PresenceState, UserPresenceState};
use presence_store::{
    Membership, MembershipChange, PresenceStore, RoomRecord, RoomUpdate, SqliteConfig, SqliteStore,
    StoreError, Synchronous,
    conformance::{room, user},
};

struct Args {
    synchronous: Synchronous,
    seconds: u64,
    memberships: u64,
}

fn parse_args() -> Result<Args, Box<dyn Error>> {
    let mut args = Args {
        synchronous: Synchronous::Normal,
        seconds: 3,
        memberships: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--full" => args.synchronous = Synchronous::Full,
            "--seconds" => args.seconds = it.next().ok_or("--seconds needs a value")?.parse()?,
            "--memberships" => {
                args.memberships = it.next().ok_or("--memberships needs a value")?.parse()?;
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    Ok(args)
}

async fn bench_presence(
    store: &SqliteStore,
    writers: u64,
    duration: Duration,
) -> Result<(), Box<dyn Error>> {
    let before = store.stats();
    let next = Arc::new(AtomicU64::new(store.max_presence_stream_id().await? + 1));
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let (store, next) = (store.clone(), Arc::clone(&next));
        tasks.spawn(async move {
            let mut done = 0u64;
            let mut refused = 0u64;
            let mut state = UserPresenceState::offline(user(&format!("@bench{w}:example.org")));
            state.state = PresenceState::Online;
            while Instant::now() < deadline {
                let id = next.fetch_add(1, Ordering::Relaxed);
                state.last_active_ts = id;
                match store.persist_presence(vec![(id, state.clone())]).await {
                    Ok(()) => done += 1,
                    Err(StoreError::Overloaded) => {
                        refused += 1;
                        tokio::task::yield_now().await;
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok((done, refused))
        });
    }
    let (mut done, mut refused) = (0u64, 0u64);
    while let Some(result) = tasks.join_next().await {
        let (d, r) = result??;
        done += d;
        refused += r;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = store.stats();
    let batches = after.batches - before.batches;
    let commit_ms = (after.commit_nanos - before.commit_nanos) as f64 / 1e6;
    println!(
        "{writers:>3} writers: {:>9.0} writes/s  ({done} writes, {refused} refused, {batches} commits, \
         {:.1} writes/commit, {:.3} ms/commit)",
        done as f64 / elapsed,
        done as f64 / batches.max(1) as f64,
        commit_ms / batches.max(1) as f64,
    );
    Ok(())
}

async fn bench_membership_load(store: &SqliteStore, pairs: u64) -> Result<(), Box<dyn Error>> {
    const PER_ROOM: u64 = 100;
    let rooms = pairs.div_ceil(PER_ROOM);
    let creator = user("@bench:example.org");
    let started = Instant::now();
    let mut pending = Vec::new();
    for r in 0..rooms {
        let room_id = room(&format!("!bench{r}:example.org"));
        store
            .create_room(RoomRecord::new(room_id.clone(), creator.clone(), false, 0))
            .await?;
        let changes = (0..PER_ROOM)
            .map(|u| {
                let member = user(&format!(
                    "@m{}:example.org",
                    (r * 7 + u) % (pairs / 10).max(1)
                ));
                MembershipChange::new(member, Membership::Join, 0)
            })
            .collect();
        pending.push(store.apply_room_update(&room_id, RoomUpdate::new(Vec::new(), changes)));
        if pending.len() >= 64 {
            for f in pending.drain(..) {
                f.await?;
            }
        }
    }
    for f in pending {
        f.await?;
    }
    println!("wrote {} rooms in {:.1?}", rooms, started.elapsed());
    let started = Instant::now();
    let joined = store.all_joined_memberships().await?;
    println!(
        "loaded {} joined memberships in {:.1?}",
        joined.len(),
        started.elapsed()
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let dir = tempfile::tempdir()?;
    let mut config = SqliteConfig::new(dir.path().join("bench.db"));
    config.synchronous = args.synchronous;
    let store = SqliteStore::open(config).await?;
    println!(
        "synchronous = {:?}, {} s per run",
        args.synchronous, args.seconds
    );
    for writers in [1, 8, 64] {
        bench_presence(&store, writers, Duration::from_secs(args.seconds)).await?;
    }
    if args.memberships > 0 {
        bench_membership_load(&store, args.memberships).await?;
    }
    store.close().await?;
    Ok(())
}
