//! `rc_federation`: the reference's per-origin limit on authenticated federation requests
//! (`synapse/util/ratelimitutils.py`, `FederationRateLimiter`).
//!
//! Per origin server: past `sleep_limit` requests within `window_size`, each new one is
//! delayed by `sleep_delay`; at most `concurrent` are handled at once (the others queue); a
//! request arriving while more than `reject_limit` are delayed or queued is refused with 429
//! `M_LIMIT_EXCEEDED`. Only servers whose signature verified get an entry, so the map is
//! bounded by the servers that really federate with us; idle entries are dropped.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use presence_router::ServerName;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};

use crate::Error;

/// `rc_federation`, with the reference's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FederationRateLimit {
    /// The window the requests are counted in (`window_size`, 1 s).
    pub window: Duration,
    /// Requests within the window past which each new one is delayed (`sleep_limit`, 10).
    pub sleep_limit: usize,
    /// How long such a request is delayed (`sleep_delay`, 500 ms).
    pub sleep_delay: Duration,
    /// Delayed or queued requests past which a new one is refused (`reject_limit`, 50).
    pub reject_limit: usize,
    /// Requests handled at once (`concurrent`, 3).
    pub concurrent: usize,
}

impl Default for FederationRateLimit {
    fn default() -> Self {
        Self {
            window: Duration::from_millis(1000),
            sleep_limit: 10,
            sleep_delay: Duration::from_millis(500),
            reject_limit: 50,
            concurrent: 3,
        }
    }
}

/// The map stays usable if a holder panicked: every update to it is a whole step.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Entries kept before idle ones are dropped.
const PRUNE_ABOVE: usize = 4096;

/// The per-origin limiter. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct FederationRateLimiter {
    config: FederationRateLimit,
    hosts: Mutex<HashMap<ServerName, Host>>,
}

#[derive(Debug)]
struct Host {
    /// When the requests of the current window arrived.
    arrivals: VecDeque<Instant>,
    /// Requests delayed or waiting for a turn.
    waiting: usize,
    turns: Arc<Semaphore>,
}

/// A request's turn: held while it is handled.
#[derive(Debug)]
pub struct Turn {
    _permit: OwnedSemaphorePermit,
}

/// Counts a request as waiting until it gets its turn (or is dropped on the way).
struct Waiting<'a> {
    limiter: &'a FederationRateLimiter,
    origin: &'a ServerName,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut hosts = lock(&self.limiter.hosts);
        if let Some(h) = hosts.get_mut(self.origin) {
            h.waiting = h.waiting.saturating_sub(1);
        }
    }
}

impl FederationRateLimiter {
    /// A limiter with `config`.
    pub fn new(config: FederationRateLimit) -> Self {
        Self {
            config,
            hosts: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for `origin`'s request to be allowed its turn, or refuses it (429).
    pub async fn enter(&self, origin: &ServerName) -> Result<Turn, Error> {
        let now = Instant::now();
        let (delay, turns) = {
            let mut hosts = lock(&self.hosts);
            if hosts.len() > PRUNE_ABOVE {
                let window = self.config.window;
                hosts.retain(|_, h| {
                    h.waiting > 0
                        || h.arrivals
                            .back()
                            .is_some_and(|t| now.duration_since(*t) < window)
                        || Arc::strong_count(&h.turns) > 1
                });
            }
            let concurrent = self.config.concurrent.max(1);
            let host = hosts.entry(origin.clone()).or_insert_with(|| Host {
                arrivals: VecDeque::new(),
                waiting: 0,
                turns: Arc::new(Semaphore::new(concurrent)),
            });
            while host
                .arrivals
                .front()
                .is_some_and(|t| now.duration_since(*t) >= self.config.window)
            {
                host.arrivals.pop_front();
            }
            if host.waiting > self.config.reject_limit {
                let per_request =
                    self.config.window.as_millis() / self.config.sleep_limit.max(1) as u128;
                return Err(Error::Busy {
                    retry_after_ms: u64::try_from(per_request).unwrap_or(u64::MAX),
                });
            }
            host.arrivals.push_back(now);
            let delay = host.arrivals.len() > self.config.sleep_limit;
            if !delay && let Ok(permit) = host.turns.clone().try_acquire_owned() {
                return Ok(Turn { _permit: permit });
            }
            host.waiting += 1;
            (delay, host.turns.clone())
        };
        let _waiting = Waiting {
            limiter: self,
            origin,
        };
        if delay {
            tokio::time::sleep(self.config.sleep_delay).await;
        }
        let permit = turns
            .acquire_owned()
            .await
            .map_err(|_| Error::Busy { retry_after_ms: 0 })?;
        Ok(Turn { _permit: permit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> ServerName {
        ServerName::parse("remote.example").unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_sleep_limit_requests_are_delayed() {
        let limiter = FederationRateLimiter::new(FederationRateLimit::default());
        let o = origin();
        let started = tokio::time::Instant::now();
        for _ in 0..10 {
            drop(limiter.enter(&o).await.unwrap());
        }
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "the first ten are not delayed"
        );
        drop(limiter.enter(&o).await.unwrap());
        assert_eq!(started.elapsed(), Duration::from_millis(500));
        // A new window: no delay again.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let t = tokio::time::Instant::now();
        drop(limiter.enter(&o).await.unwrap());
        assert_eq!(t.elapsed(), Duration::ZERO);
        // Another origin is counted on its own.
        let other = ServerName::parse("other.example").unwrap();
        drop(limiter.enter(&other).await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_concurrent_requests_are_handled_at_once() {
        let limiter = Arc::new(FederationRateLimiter::new(FederationRateLimit::default()));
        let o = origin();
        let held: Vec<Turn> = vec![
            limiter.enter(&o).await.unwrap(),
            limiter.enter(&o).await.unwrap(),
            limiter.enter(&o).await.unwrap(),
        ];
        let fourth = tokio::spawn({
            let (limiter, o) = (limiter.clone(), o.clone());
            async move { limiter.enter(&o).await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!fourth.is_finished(), "a fourth request waits for a turn");
        drop(held);
        fourth.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn too_many_waiting_requests_are_refused_with_a_retry_hint() {
        let config = FederationRateLimit {
            reject_limit: 2,
            concurrent: 1,
            ..FederationRateLimit::default()
        };
        let limiter = Arc::new(FederationRateLimiter::new(config));
        let o = origin();
        let _held = limiter.enter(&o).await.unwrap();
        let mut waiting = Vec::new();
        for _ in 0..3 {
            let (limiter, o) = (limiter.clone(), o.clone());
            waiting.push(tokio::spawn(
                async move { limiter.enter(&o).await.map(|_| ()) },
            ));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        match limiter.enter(&o).await {
            Err(Error::Busy { retry_after_ms }) => assert_eq!(retry_after_ms, 100),
            other => panic!("want 429, got {other:?}"),
        }
        // Those that gave up no longer count.
        for w in waiting {
            w.abort();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        let next = tokio::spawn({
            let (limiter, o) = (limiter.clone(), o.clone());
            async move { limiter.enter(&o).await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(
            !next.is_finished(),
            "queued behind the held turn, not refused"
        );
        drop(_held);
        next.await.unwrap().unwrap();
    }
}
