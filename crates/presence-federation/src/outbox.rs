//! Outbound presence: one queue per destination server, drained by one task per destination
//! that has work.
//!
//! - The engine hands over "these states go to that server" ([`Outbox::enqueue`]); a queue
//!   keeps only the latest state per user, so its memory is bounded by the number of users
//!   and a burst of updates for one user costs one entry.
//! - A destination's task sends everything pending in one transaction (up to 100 EDUs of 50
//!   states each), then whatever arrived meanwhile, and exits when the queue is empty.
//! - A failed transaction puts its states back (unless a newer state for the same user came
//!   in) and the destination waits an exponentially growing delay. States that waited longer
//!   than `pending_ttl` are dropped and counted: presence is ephemeral, and an hour-old state
//!   is worse than none.
//! - Each destination has its own task, and [`Outbox::enqueue`] only takes a short lock, so a
//!   slow or dead server never delays the caller or any other server.
//!
//! The reference drops new presence for servers in backoff; queueing it instead means a
//! server that comes back receives what it missed (within `pending_ttl`).

use std::{
    collections::{BTreeSet, HashMap},
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use presence_router::{ServerName, UserId, UserPresenceState};
use tokio::{sync::Notify, time::Instant};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{Clock, OutboxConfig, Transaction, Transport, wire::presence_edus};

/// Counters of the outbox, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutboxStats {
    /// Transactions delivered.
    pub transactions_sent: u64,
    /// Presence states delivered.
    pub states_sent: u64,
    /// Transactions that failed (each is retried later).
    pub failed_attempts: u64,
    /// States dropped because their destination stayed unreachable for `pending_ttl`.
    pub dropped_expired: u64,
    /// States not queued because the destination is not allowed (`federation_domain_whitelist`).
    pub dropped_not_allowed: u64,
}

#[derive(Default)]
struct Counters {
    transactions_sent: AtomicU64,
    states_sent: AtomicU64,
    failed_attempts: AtomicU64,
    dropped_expired: AtomicU64,
    dropped_not_allowed: AtomicU64,
}

struct Pending {
    state: UserPresenceState,
    queued_at: Instant,
    /// Arrival order, so transactions list states in the order they came.
    seq: u64,
}

#[derive(Default)]
struct Queue {
    pending: HashMap<UserId, Pending>,
    /// Whether a task is draining this queue.
    running: bool,
    /// Consecutive failed transactions.
    failures: u32,
    retry_at: Option<Instant>,
    /// Cuts a backoff short (the destination was seen alive).
    wake: Arc<Notify>,
}

struct Inner {
    origin: ServerName,
    config: OutboxConfig,
    transport: Arc<dyn Transport>,
    clock: Arc<dyn Clock>,
    allowed: Option<Arc<BTreeSet<ServerName>>>,
    queues: Mutex<HashMap<ServerName, Queue>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    counters: Counters,
    seq: AtomicU64,
    txn_prefix: u64,
    txn_counter: AtomicU64,
}

/// The per-destination presence queues. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

impl fmt::Debug for Outbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox")
            .field("origin", &self.inner.origin)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Outbox {
    /// An outbox sending as `origin` through `transport`. With `allowed` set, presence for
    /// other destinations is dropped (`federation_domain_whitelist`). Tasks stop when
    /// `shutdown` is cancelled.
    pub fn new(
        origin: ServerName,
        config: OutboxConfig,
        transport: Arc<dyn Transport>,
        clock: Arc<dyn Clock>,
        allowed: Option<BTreeSet<ServerName>>,
        shutdown: CancellationToken,
    ) -> Self {
        // Transaction IDs: start time plus a counter, unique across restarts that are at
        // least a millisecond apart, which is what the receiver's dedup needs.
        let txn_prefix = clock.now_ms();
        Self {
            inner: Arc::new(Inner {
                origin,
                config,
                transport,
                clock,
                allowed: allowed.map(Arc::new),
                queues: Mutex::new(HashMap::new()),
                tasks: TaskTracker::new(),
                shutdown,
                counters: Counters::default(),
                seq: AtomicU64::new(0),
                txn_prefix,
                txn_counter: AtomicU64::new(0),
            }),
        }
    }

    /// Queues states for their destinations: the engine's `Effects::federation`. Never
    /// waits; must be called inside a tokio runtime (it may start a destination's task).
    /// States for our own server are ignored.
    pub fn enqueue(&self, work: Vec<(ServerName, Vec<UserPresenceState>)>) {
        let inner = &self.inner;
        if inner.shutdown.is_cancelled() {
            return;
        }
        let now = Instant::now();
        let mut to_start = Vec::new();
        {
            let Ok(mut queues) = inner.queues.lock() else {
                return;
            };
            for (destination, states) in work {
                if destination == inner.origin || states.is_empty() {
                    continue;
                }
                if inner
                    .allowed
                    .as_ref()
                    .is_some_and(|a| !a.contains(&destination))
                {
                    inner
                        .counters
                        .dropped_not_allowed
                        .fetch_add(states.len() as u64, Ordering::Relaxed);
                    continue;
                }
                let queue = queues.entry(destination.clone()).or_default();
                for state in states {
                    let seq = inner.seq.fetch_add(1, Ordering::Relaxed);
                    queue.pending.insert(
                        state.user_id.clone(),
                        Pending {
                            state,
                            queued_at: now,
                            seq,
                        },
                    );
                }
                if !queue.running {
                    queue.running = true;
                    to_start.push(destination);
                }
            }
        }
        for destination in to_start {
            let this = self.clone();
            inner
                .tasks
                .spawn(async move { this.drain(destination).await });
        }
    }

    /// Tells the outbox `destination` is alive (it just sent us a valid request): its
    /// backoff is reset and pending presence goes out now.
    pub fn mark_up(&self, destination: &ServerName) {
        if let Ok(mut queues) = self.inner.queues.lock()
            && let Some(queue) = queues.get_mut(destination)
            && queue.failures > 0
        {
            queue.failures = 0;
            queue.retry_at = None;
            queue.wake.notify_one();
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> OutboxStats {
        let c = &self.inner.counters;
        OutboxStats {
            transactions_sent: c.transactions_sent.load(Ordering::Relaxed),
            states_sent: c.states_sent.load(Ordering::Relaxed),
            failed_attempts: c.failed_attempts.load(Ordering::Relaxed),
            dropped_expired: c.dropped_expired.load(Ordering::Relaxed),
            dropped_not_allowed: c.dropped_not_allowed.load(Ordering::Relaxed),
        }
    }

    /// States waiting for `destination`.
    pub fn pending(&self, destination: &ServerName) -> usize {
        self.inner
            .queues
            .lock()
            .ok()
            .and_then(|q| q.get(destination).map(|q| q.pending.len()))
            .unwrap_or(0)
    }

    /// Consecutive failures of `destination` (0 when healthy).
    pub fn failures(&self, destination: &ServerName) -> u32 {
        self.inner
            .queues
            .lock()
            .ok()
            .and_then(|q| q.get(destination).map(|q| q.failures))
            .unwrap_or(0)
    }

    /// Waits up to `within` for every queue to be sent, so that a stopping server hands over
    /// what it still has. Destinations in backoff are not waited for (they are down).
    /// Returns whether everything was sent.
    pub async fn flush(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let busy = self.inner.queues.lock().is_ok_and(|queues| {
                queues
                    .values()
                    .any(|q| q.failures == 0 && (q.running || !q.pending.is_empty()))
            });
            if !busy {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops every destination task (pending presence is dropped) and waits for them.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    fn backoff(&self, failures: u32) -> Duration {
        let cfg = &self.inner.config;
        let factor = cfg
            .backoff_multiplier
            .max(1)
            .saturating_pow(failures.saturating_sub(1).min(31));
        cfg.backoff_base.saturating_mul(factor).min(cfg.backoff_max)
    }

    fn next_txn_id(&self) -> String {
        let n = self.inner.txn_counter.fetch_add(1, Ordering::Relaxed);
        format!("{}_{n}", self.inner.txn_prefix)
    }

    /// The task of one destination: send until the queue is empty.
    async fn drain(self, destination: ServerName) {
        let inner = &self.inner;
        loop {
            let (retry_at, wake) = {
                let Ok(queues) = inner.queues.lock() else {
                    return;
                };
                match queues.get(&destination) {
                    Some(q) => (q.retry_at, q.wake.clone()),
                    None => return,
                }
            };
            if let Some(at) = retry_at {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = wake.notified() => {}
                    () = inner.shutdown.cancelled() => return,
                }
            }
            let Some(batch) = self.take_batch(&destination) else {
                return;
            };
            let states: Vec<UserPresenceState> = batch.iter().map(|p| p.state.clone()).collect();
            let txn = Transaction::new(
                inner.origin.as_str(),
                inner.clock.now_ms(),
                presence_edus(
                    &states,
                    inner.clock.now_ms(),
                    inner.config.max_states_per_edu,
                ),
            );
            let txn_id = self.next_txn_id();
            let send = inner
                .transport
                .send_transaction(&destination, &txn_id, &txn);
            let result = tokio::select! {
                r = tokio::time::timeout(inner.config.send_timeout, send) => r,
                () = inner.shutdown.cancelled() => return,
            };
            match result {
                Ok(Ok(())) => {
                    inner
                        .counters
                        .transactions_sent
                        .fetch_add(1, Ordering::Relaxed);
                    inner
                        .counters
                        .states_sent
                        .fetch_add(states.len() as u64, Ordering::Relaxed);
                    if let Ok(mut queues) = inner.queues.lock()
                        && let Some(q) = queues.get_mut(&destination)
                    {
                        q.failures = 0;
                        q.retry_at = None;
                    }
                    tracing::debug!(%destination, %txn_id, states = states.len(), "Presence transaction delivered.");
                }
                failed => {
                    let reason = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "no answer in time".to_owned(),
                    };
                    self.requeue(&destination, batch);
                    let (failures, delay) = {
                        let Ok(mut queues) = inner.queues.lock() else {
                            return;
                        };
                        let Some(q) = queues.get_mut(&destination) else {
                            return;
                        };
                        q.failures = q.failures.saturating_add(1);
                        let delay = self.backoff(q.failures);
                        q.retry_at = Some(Instant::now() + delay);
                        (q.failures, delay)
                    };
                    inner
                        .counters
                        .failed_attempts
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%destination, %txn_id, %reason, failures, retry_in_ms = delay.as_millis() as u64, "Presence transaction failed; will retry.");
                }
            }
        }
    }

    /// Drops expired states, then removes and returns the next transaction's worth. `None`
    /// (and the task ends) when nothing is left.
    fn take_batch(&self, destination: &ServerName) -> Option<Vec<Pending>> {
        let inner = &self.inner;
        let mut queues = inner.queues.lock().ok()?;
        let queue = queues.get_mut(destination)?;
        let now = Instant::now();
        let ttl = inner.config.pending_ttl;
        let before = queue.pending.len();
        queue
            .pending
            .retain(|_, p| now.saturating_duration_since(p.queued_at) < ttl);
        let expired = before - queue.pending.len();
        if expired > 0 {
            inner
                .counters
                .dropped_expired
                .fetch_add(expired as u64, Ordering::Relaxed);
            tracing::info!(%destination, dropped = expired, "Dropped presence that waited too long for its destination.");
        }
        if queue.pending.is_empty() {
            queue.running = false;
            if queue.failures == 0 {
                // Nothing to remember about a healthy, idle destination.
                queues.remove(destination);
            }
            return None;
        }
        let limit =
            inner.config.max_states_per_edu.max(1) * inner.config.max_edus_per_transaction.max(1);
        let mut all: Vec<(UserId, u64)> = queue
            .pending
            .iter()
            .map(|(u, p)| (u.clone(), p.seq))
            .collect();
        all.sort_unstable_by_key(|(_, seq)| *seq);
        let batch = all
            .into_iter()
            .take(limit)
            .filter_map(|(u, _)| queue.pending.remove(&u))
            .collect();
        Some(batch)
    }

    /// Puts a failed batch back, except users that got a newer state meanwhile.
    fn requeue(&self, destination: &ServerName, batch: Vec<Pending>) {
        if let Ok(mut queues) = self.inner.queues.lock() {
            let queue = queues.entry(destination.clone()).or_default();
            for p in batch {
                queue.pending.entry(p.state.user_id.clone()).or_insert(p);
            }
        }
    }
}
