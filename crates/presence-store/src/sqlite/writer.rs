//! The single writer thread and its group commit.
//!
//! SQLite allows one writer at a time, and the cost of a write is dominated by the commit
//! (the WAL append and, with `synchronous = FULL`, an fsync). So every write goes to one
//! thread that owns the only write connection. The thread takes everything queued, applies
//! it in one transaction with a SAVEPOINT around each request (a request that fails is rolled
//! back alone), commits once, and only then answers each request: an acknowledged write is a
//! committed write. The queue is bounded; when it is full the caller is told so at once
//! ([`StoreError::Overloaded`]) instead of memory growing without limit.

use std::{
    panic::{self, AssertUnwindSafe},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use rusqlite::Connection;
use tokio::sync::{
    mpsc::{Receiver, Sender, error::TrySendError},
    oneshot,
};

use crate::{StoreError, StoreStats};

/// One queued write request, type-erased so that requests with different result types share
/// the queue.
pub(super) trait Job: Send {
    /// Runs the request's SQL inside its savepoint. Returns whether it succeeded (the outcome
    /// itself is kept until the batch is committed).
    fn run(&mut self, conn: &Connection) -> bool;

    /// Answers the caller once the batch has ended; `batch` is the batch's outcome.
    fn finish(self: Box<Self>, batch: &Result<(), Arc<rusqlite::Error>>);
}

/// Runs on the writer thread with a write's result once it is committed, before the caller
/// hears of it.
pub(super) type OnCommit<T> = Box<dyn FnOnce(&T) + Send>;

/// A queued write: the work to do and where to send its result.
pub(super) struct WriteJob<T, F> {
    work: Option<F>,
    outcome: Option<Result<T, StoreError>>,
    on_commit: Option<OnCommit<T>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> WriteJob<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    pub(super) fn boxed(
        work: F,
        on_commit: Option<OnCommit<T>>,
    ) -> (Box<dyn Job>, oneshot::Receiver<Result<T, StoreError>>) {
        let (reply, rx) = oneshot::channel();
        let job = Self {
            work: Some(work),
            outcome: None,
            on_commit,
            reply,
        };
        (Box::new(job), rx)
    }
}

impl<T, F> Job for WriteJob<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        // A panic fails this request only; the savepoint undoes whatever it had done.
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| work(conn))).unwrap_or_else(|_| {
            tracing::error!("A store write panicked; it was rolled back.");
            Err(StoreError::Panicked)
        });
        let ok = outcome.is_ok();
        self.outcome = Some(outcome);
        ok
    }

    fn finish(self: Box<Self>, batch: &Result<(), Arc<rusqlite::Error>>) {
        let result = match (self.outcome, batch) {
            // The request's own failure is the more precise answer.
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (Some(Ok(_)) | None, Err(e)) => Err(StoreError::BatchFailed(Arc::clone(e))),
            (None, Ok(())) => Err(StoreError::Closed),
        };
        // Even if the caller has stopped waiting, the write is committed: publish it.
        if let (Ok(value), Some(on_commit)) = (&result, self.on_commit) {
            on_commit(value);
        }
        // The caller may have stopped waiting; the write is applied all the same.
        let _ = self.reply.send(result);
    }
}

/// Write-path counters, updated by the writer thread and read by [`super::SqliteStore::stats`].
#[derive(Debug, Default)]
pub(super) struct StatsCounters {
    batches: AtomicU64,
    writes: AtomicU64,
    failed_writes: AtomicU64,
    rejected_writes: AtomicU64,
    max_batch: AtomicU64,
    commit_nanos: AtomicU64,
    max_commit_nanos: AtomicU64,
    queued: AtomicU64,
}

impl StatsCounters {
    pub(super) fn snapshot(&self) -> StoreStats {
        StoreStats {
            batches: self.batches.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            failed_writes: self.failed_writes.load(Ordering::Relaxed),
            rejected_writes: self.rejected_writes.load(Ordering::Relaxed),
            max_batch: self.max_batch.load(Ordering::Relaxed),
            commit_nanos: self.commit_nanos.load(Ordering::Relaxed),
            max_commit_nanos: self.max_commit_nanos.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
        }
    }

    fn record_batch(&self, size: u64, failed: u64, nanos: u64) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.writes.fetch_add(size, Ordering::Relaxed);
        self.failed_writes.fetch_add(failed, Ordering::Relaxed);
        self.max_batch.fetch_max(size, Ordering::Relaxed);
        self.commit_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.max_commit_nanos.fetch_max(nanos, Ordering::Relaxed);
    }
}

/// Puts a job on the queue without waiting.
pub(super) fn enqueue(
    sender: &Sender<Box<dyn Job>>,
    stats: &StatsCounters,
    job: Box<dyn Job>,
) -> Result<(), StoreError> {
    // Counted before sending so the writer's decrement can never run first and wrap.
    stats.queued.fetch_add(1, Ordering::Relaxed);
    match sender.try_send(job) {
        Ok(()) => Ok(()),
        Err(e) => {
            stats.queued.fetch_sub(1, Ordering::Relaxed);
            match e {
                TrySendError::Full(_) => {
                    stats.rejected_writes.fetch_add(1, Ordering::Relaxed);
                    Err(StoreError::Overloaded)
                }
                TrySendError::Closed(_) => Err(StoreError::Closed),
            }
        }
    }
}

/// The writer thread's body: runs until every sender is gone and the queue is drained.
pub(super) fn run(
    conn: Connection,
    mut queue: Receiver<Box<dyn Job>>,
    stats: Arc<StatsCounters>,
    max_batch: usize,
) {
    let max_batch = max_batch.max(1);
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(max_batch.min(1024));
    // `blocking_recv` keeps returning queued jobs after the last sender is dropped, so closing
    // the store flushes everything that was accepted. (A tokio channel rather than std's: its
    // sender wakes this thread without holding a lock, which on a busy single core saves the
    // woken writer a lock hand-off back to the sender and two context switches.)
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        stats
            .queued
            .fetch_sub(batch.len() as u64, Ordering::Relaxed);
        apply_batch(&conn, &mut batch, &stats);
    }
    // Lets SQLite refresh its planner statistics; failure only costs query speed.
    if let Err(e) = conn.execute_batch("PRAGMA optimize") {
        tracing::debug!(error = %e, "PRAGMA optimize failed at store shutdown.");
    }
}

const BEGIN: &str = "BEGIN IMMEDIATE";
const COMMIT: &str = "COMMIT";
const ROLLBACK: &str = "ROLLBACK";
const SAVEPOINT: &str = "SAVEPOINT write_request";
const RELEASE: &str = "RELEASE write_request";
const ROLLBACK_TO: &str = "ROLLBACK TO write_request";

fn exec_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// Applies one batch in one transaction and answers every request in it.
fn apply_batch(conn: &Connection, batch: &mut Vec<Box<dyn Job>>, stats: &StatsCounters) {
    let started = Instant::now();
    let mut failed = 0u64;
    let outcome = run_transaction(conn, batch, &mut failed);
    let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let size = batch.len() as u64;
    let outcome = outcome.map_err(|e| {
        tracing::error!(error = %e, writes = size, "Store write batch failed; no write of it was applied.");
        failed = size;
        Arc::new(e)
    });
    stats.record_batch(size, failed, nanos);
    for job in batch.drain(..) {
        job.finish(&outcome);
    }
}

fn run_transaction(
    conn: &Connection,
    batch: &mut [Box<dyn Job>],
    failed: &mut u64,
) -> rusqlite::Result<()> {
    exec_cached(conn, BEGIN)?;
    let result = (|| {
        for job in batch.iter_mut() {
            exec_cached(conn, SAVEPOINT)?;
            if !job.run(conn) {
                *failed += 1;
                exec_cached(conn, ROLLBACK_TO)?;
            }
            exec_cached(conn, RELEASE)?;
        }
        exec_cached(conn, COMMIT)
    })();
    if result.is_err() && !conn.is_autocommit() {
        // Some errors (I/O, disk full) end the transaction by themselves; otherwise undo it
        // so the connection is clean for the next batch.
        if let Err(e) = exec_cached(conn, ROLLBACK) {
            tracing::error!(error = %e, "Store rollback failed.");
        }
    }
    result
}
