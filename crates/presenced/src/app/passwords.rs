//! Password hashing with bounded cost: every Argon2id hash or check goes through one gate.
//!
//! - **Bounded memory and CPU.** Each hash holds `password_hash_cost.memory` (19 MiB by
//!   default) on the blocking pool. At most [`Passwords::permits`] run at once (twice the
//!   available cores); further requests wait their turn, and beyond [`MAX_WAITING`] waiting
//!   ones a request is answered 429 `M_LIMIT_EXCEEDED` at once. Without the gate, 200
//!   concurrent bad logins ran 200 hashes side by side (1.96 GB resident).
//! - **No user enumeration by timing.** A login for a user who does not exist, or has no
//!   password, is checked against a dummy hash made once (lazily) with the configured
//!   parameters, so it costs what a real check costs and fails the same way.

use std::sync::{
    Arc,
    atomic::{AtomicU64, AtomicUsize, Ordering},
};

use tokio::sync::{OnceCell, Semaphore};

use super::accounts::{hash_password, verify_password};
use crate::{
    config::PasswordHashCost,
    error::{ApiError, Limiter},
};

/// Requests that may wait for a hashing slot; more are refused (each waiting request holds
/// only its body, but an unbounded queue would let a flood grow latency without end).
pub const MAX_WAITING: usize = 256;
/// How long a client refused for a full queue is asked to wait.
const BUSY_RETRY_MS: u64 = 1000;
/// The password the dummy hash is made of (never a real password: nothing can log in with
/// it, as it is only checked for users without a stored hash).
const DUMMY_PASSWORD: &str = "presenced dummy password";

/// The password hashing gate (one per server).
pub struct Passwords {
    cost: PasswordHashCost,
    slots: Arc<Semaphore>,
    permits: usize,
    waiting: AtomicUsize,
    dummy: OnceCell<String>,
    /// Hashes computed and checks made, dummy ones included.
    performed: AtomicU64,
}

/// Decrements the waiting count when a waiting request leaves the queue (also when it is
/// cancelled: the client went away).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Passwords {
    /// A gate for hashes of `cost`, `permits` of them at once (at least one).
    pub fn new(cost: PasswordHashCost, permits: usize) -> Self {
        let permits = permits.max(1);
        Self {
            cost,
            slots: Arc::new(Semaphore::new(permits)),
            permits,
            waiting: AtomicUsize::new(0),
            dummy: OnceCell::new(),
            performed: AtomicU64::new(0),
        }
    }

    /// Twice the available parallelism: hashing is CPU-bound, so more at once only adds
    /// memory, while a little over one per core keeps the cores busy between hashes.
    pub fn default_permits() -> usize {
        std::thread::available_parallelism().map_or(2, |n| n.get().saturating_mul(2))
    }

    /// How many hashes may run at once.
    pub fn permits(&self) -> usize {
        self.permits
    }

    /// Hashes and checks performed so far (dummy checks included).
    pub fn performed(&self) -> u64 {
        self.performed.load(Ordering::Relaxed)
    }

    /// Waits for a hashing slot, or refuses when too many requests already wait.
    async fn slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::Relaxed) >= MAX_WAITING {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(ApiError::limit_exceeded(
                BUSY_RETRY_MS,
                Limiter::Other("password_hash"),
            ));
        }
        let _waiting = Waiting(&self.waiting);
        self.slots
            .clone()
            .acquire_owned()
            .await
            .map_err(ApiError::internal)
    }

    /// Hashes a new password (Argon2id, random salt) into a PHC string.
    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        let _slot = self.slot().await?;
        self.performed.fetch_add(1, Ordering::Relaxed);
        hash_password(self.cost, password).await
    }

    /// Whether `password` matches `stored`; with no stored hash (no such user, or no
    /// password) the password is checked against the dummy hash and the answer is false,
    /// after the same work.
    pub async fn verify(&self, stored: Option<String>, password: String) -> Result<bool, ApiError> {
        let (hash, real) = match stored {
            Some(hash) => (hash, true),
            None => (self.dummy().await?, false),
        };
        let _slot = self.slot().await?;
        self.performed.fetch_add(1, Ordering::Relaxed);
        let matches = verify_password(hash, password).await?;
        Ok(real && matches)
    }

    /// The dummy hash, made on first use (through the gate like any other hash).
    async fn dummy(&self) -> Result<String, ApiError> {
        self.dummy
            .get_or_try_init(|| async {
                let _slot = self.slot().await?;
                hash_password(self.cost, DUMMY_PASSWORD.to_owned()).await
            })
            .await
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const CHEAP: PasswordHashCost = PasswordHashCost {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    #[tokio::test]
    async fn an_unknown_user_is_checked_like_a_known_one() {
        let p = Passwords::new(CHEAP, 2);
        let hash = p.hash("right".into()).await.unwrap();
        assert_eq!(p.performed(), 1);
        assert!(p.verify(Some(hash.clone()), "right".into()).await.unwrap());
        assert!(!p.verify(Some(hash), "wrong".into()).await.unwrap());
        assert_eq!(p.performed(), 3);
        assert!(!p.verify(None, "anything".into()).await.unwrap());
        assert_eq!(
            p.performed(),
            4,
            "the unknown user's check was a real check"
        );
        assert!(
            !p.verify(None, DUMMY_PASSWORD.into()).await.unwrap(),
            "the dummy password logs nobody in"
        );
        let dummy = p.dummy().await.unwrap();
        assert!(
            dummy.starts_with("$argon2id$v=19$m=64,t=1,p=1$"),
            "same parameters as real hashes: {dummy}"
        );
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_and_waiting_requests_are_served() {
        let p = Arc::new(Passwords::new(CHEAP, 1));
        let held = p.slots.clone().try_acquire_owned().unwrap();
        let mut waiters = Vec::new();
        for _ in 0..MAX_WAITING {
            let p = p.clone();
            waiters.push(tokio::spawn(async move { p.hash("pw".into()).await }));
        }
        while p.waiting.load(Ordering::Relaxed) < MAX_WAITING {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let refused = p.hash("pw".into()).await.unwrap_err();
        assert_eq!(refused.kind(), crate::error::ErrorKind::LimitExceeded);
        drop(held);
        for w in waiters {
            assert!(w.await.unwrap().is_ok());
        }
        assert_eq!(p.waiting.load(Ordering::Relaxed), 0);
        assert_eq!(p.performed(), MAX_WAITING as u64);
    }
}
