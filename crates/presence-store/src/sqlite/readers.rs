//! The pool of read connections.
//!
//! In WAL mode readers never wait for the writer, so reads run on their own connections, in
//! parallel with the writer and each other. Each read runs on tokio's blocking pool so it
//! never stalls an async worker; a semaphore bounds how many run at once (one per
//! connection), and waiting for a connection is asynchronous.

use std::{
    panic::{self, AssertUnwindSafe},
    path::PathBuf,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use rusqlite::Connection;
use tokio::sync::Semaphore;

use super::schema;
use crate::StoreError;

/// Read connections, opened lazily and reused.
pub(super) struct ReadPool {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
    closed: AtomicBool,
}

impl ReadPool {
    pub(super) fn new(path: PathBuf, busy_timeout: Duration, size: usize) -> Self {
        let size = size.max(1);
        Self {
            path,
            busy_timeout,
            idle: Mutex::new(Vec::with_capacity(size)),
            permits: Arc::new(Semaphore::new(size)),
            closed: AtomicBool::new(false),
        }
    }

    /// Opens one connection now, so that a bad path fails at startup rather than on the
    /// first read.
    pub(super) fn warm_up(&self) -> Result<(), StoreError> {
        let conn = schema::open_reader(&self.path, self.busy_timeout)?;
        self.give_back(conn);
        Ok(())
    }

    /// Runs `read` on a pooled connection on the blocking pool.
    pub(super) async fn run<T, F>(self: &Arc<Self>, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        let pool = Arc::clone(self);
        // The connection goes back to the pool inside the blocking task, so a caller that
        // stops waiting does not lose it.
        let task = tokio::task::spawn_blocking(move || {
            let conn = match pool.take() {
                Some(conn) => conn,
                None => schema::open_reader(&pool.path, pool.busy_timeout)?,
            };
            // A panicking read is a bug; it fails that read only. The connection is dropped
            // rather than reused, in case the panic left a statement half-stepped.
            let out = panic::catch_unwind(AssertUnwindSafe(|| read(&conn)));
            drop(permit);
            match out {
                Ok(out) => {
                    pool.give_back(conn);
                    out
                }
                Err(_) => {
                    tracing::error!("A store read panicked.");
                    Err(StoreError::Panicked)
                }
            }
        });
        // The blocking task itself cannot panic any more; a join error means the runtime is
        // shutting down.
        task.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Stops new reads and drops the idle connections.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.permits.close();
        self.lock_idle().clear();
    }

    fn take(&self) -> Option<Connection> {
        self.lock_idle().pop()
    }

    fn give_back(&self, conn: Connection) {
        // Checked under the lock, so a connection returned while `close` runs is dropped.
        let mut idle = self.lock_idle();
        if !self.closed.load(Ordering::Acquire) {
            idle.push(conn);
        }
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // A panic while holding this lock cannot leave the Vec half-updated.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
