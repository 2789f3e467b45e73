//! Per-user token buckets (`rc_presence.per_user`), kept in memory.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use presence_router::UserId;

/// A token-bucket limiter keyed by user: `per_second` tokens refill continuously, up to
/// `burst` tokens.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<UserId, (f64, Instant)>>,
}

/// How long to wait before the next request would be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RateLimiter {
    /// A limiter; `per_second <= 0` disables limiting.
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self {
            per_second,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::default(),
        }
    }

    /// Takes one token for `user` at `now`, or says how long until one is available.
    pub fn check(&self, user: &UserId, now: Instant) -> Result<(), RetryAfter> {
        if self.per_second <= 0.0 || !self.per_second.is_finite() {
            return Ok(());
        }
        let mut buckets = crate::lock(&self.buckets);
        if buckets.len() > 100_000 {
            // Full buckets carry no information: forget them so memory stays bounded.
            let burst = self.burst;
            let rate = self.per_second;
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = buckets.entry(user.clone()).or_insert((self.burst, now));
        let refill = now.saturating_duration_since(*at).as_secs_f64() * self.per_second;
        *tokens = (*tokens + refill).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - *tokens) / self.per_second;
            Err(RetryAfter(Duration::from_secs_f64(wait.max(0.001))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_the_configured_rate() {
        let rl = RateLimiter::new(0.1, 1);
        let u = UserId::parse("@a:hs").unwrap();
        let t0 = Instant::now();
        assert!(rl.check(&u, t0).is_ok());
        let wait = rl.check(&u, t0).unwrap_err();
        assert!(
            wait.0 > Duration::from_secs(9) && wait.0 <= Duration::from_secs(10),
            "{wait:?}"
        );
        assert!(rl.check(&u, t0 + Duration::from_secs(5)).is_err());
        assert!(rl.check(&u, t0 + Duration::from_secs(11)).is_ok());
        let other = UserId::parse("@b:hs").unwrap();
        assert!(rl.check(&other, t0).is_ok(), "buckets are per user");
        assert!(RateLimiter::new(0.0, 1).check(&u, t0).is_ok());
    }
}
