//! How many bytes of inbound request bodies are buffered at once.
//!
//! A signature covers the whole body, so a body is read into memory before it can be
//! verified: without a bound, a few dozen forged requests with large bodies hold hundreds of
//! megabytes. Each request reserves its declared length (or the largest accepted body, when
//! it declares none) from one byte-weighted semaphore before its body is read, and gives it
//! back when the request is done. A request that cannot get its share within a short wait is
//! refused with 429 `M_LIMIT_EXCEEDED` (the sender retries, as it does for any failure).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::Error;

/// Reservations are counted in KiB so that the semaphore's `u32` permits cover any budget.
const UNIT: usize = 1024;

/// The shared budget of inbound body bytes.
#[derive(Debug)]
pub struct BodyBudget {
    permits: Arc<Semaphore>,
    total_units: u32,
    wait: Duration,
    refused: AtomicU64,
}

/// A reservation; the bytes go back to the budget when it is dropped.
#[derive(Debug)]
pub struct BodyPermit {
    _permit: OwnedSemaphorePermit,
}

impl BodyBudget {
    /// A budget of `total_bytes` (at least 1 KiB); a reservation waits at most `wait`.
    pub fn new(total_bytes: usize, wait: Duration) -> Self {
        let units = (total_bytes / UNIT).clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        let total_units = u32::try_from(units).unwrap_or(u32::MAX);
        Self {
            permits: Arc::new(Semaphore::new(total_units as usize)),
            total_units,
            wait,
            refused: AtomicU64::new(0),
        }
    }

    /// Reserves `bytes` (rounded up to whole KiB; a body larger than the whole budget
    /// reserves all of it and so runs alone), waiting up to the configured time.
    pub async fn reserve(&self, bytes: usize) -> Result<BodyPermit, Error> {
        let units = u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, self.total_units);
        let acquire = self.permits.clone().acquire_many_owned(units);
        match tokio::time::timeout(self.wait, acquire).await {
            Ok(Ok(permit)) => Ok(BodyPermit { _permit: permit }),
            // The semaphore is never closed.
            Ok(Err(_)) => Err(Error::Internal("the body budget was closed")),
            Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(Error::Busy {
                    retry_after_ms: u64::try_from(self.wait.as_millis())
                        .unwrap_or(u64::MAX)
                        .max(1000),
                })
            }
        }
    }

    /// Bytes reserved right now.
    pub fn reserved_bytes(&self) -> u64 {
        let free = self.permits.available_permits() as u64;
        (u64::from(self.total_units).saturating_sub(free)) * UNIT as u64
    }

    /// The whole budget, in bytes.
    pub fn total_bytes(&self) -> u64 {
        u64::from(self.total_units) * UNIT as u64
    }

    /// Requests refused because the budget stayed full.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn reservations_stay_within_the_budget() {
        let budget = BodyBudget::new(4 * 1024 * 1024, Duration::from_secs(1));
        let a = budget.reserve(3 * 1024 * 1024).await.unwrap();
        assert_eq!(budget.reserved_bytes(), 3 * 1024 * 1024);
        // 1 MiB is left: a 2 MiB body waits, then is refused.
        let err = budget.reserve(2 * 1024 * 1024).await.unwrap_err();
        assert!(matches!(err, Error::Busy { .. }), "{err:?}");
        assert_eq!(budget.refused(), 1);
        let b = budget.reserve(1024 * 1024).await.unwrap();
        assert_eq!(budget.reserved_bytes(), budget.total_bytes());
        drop(a);
        // Bigger than the whole budget: it takes all of it.
        let c = budget.reserve(100 * 1024 * 1024).await;
        assert!(c.is_err(), "b still holds 1 MiB");
        drop(b);
        let c = budget.reserve(100 * 1024 * 1024).await.unwrap();
        assert_eq!(budget.reserved_bytes(), budget.total_bytes());
        drop(c);
        assert_eq!(budget.reserved_bytes(), 0);
        // Empty bodies still count one unit, so every request is bounded.
        let _d = budget.reserve(0).await.unwrap();
        assert_eq!(budget.reserved_bytes(), 1024);
    }
}
