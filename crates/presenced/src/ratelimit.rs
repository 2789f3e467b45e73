//! Token buckets keyed by user, address or room (the `rc_*` limits), kept in memory.
//!
//! A bucket holds `burst_count` tokens and refills at `per_second`; this is the reference's
//! "leaky bucket as a meter" seen from the other side, so the same settings allow the same
//! requests. [`RateLimiter::check`] takes a token; [`RateLimiter::peek`] only asks whether
//! one is there (the reference's `update=False`), for limits that are counted later or only
//! on failure.
//!
//! The buckets are split into shards, each behind its own mutex, so concurrent checks of
//! different users rarely wait for each other. Full buckets carry no information and are
//! forgotten by a sweep of one shard at a time, at most once per refill period of that shard
//! and only once it holds many buckets: a check never scans the whole map.

use std::{
    collections::HashMap,
    hash::{BuildHasher, Hash, RandomState},
    sync::Mutex,
    time::{Duration, Instant},
};

use presence_router::UserId;

/// Shards of the bucket map.
const SHARDS: usize = 64;

/// A shard is swept only once it holds more buckets than this (100,000 over all shards).
const SWEEP_ABOVE: usize = 100_000 / SHARDS;

/// A token-bucket limiter keyed by `K` (a user by default): `per_second` tokens refill
/// continuously, up to `burst` tokens.
pub struct RateLimiter<K = UserId> {
    per_second: f64,
    burst: f64,
    /// How long an empty bucket takes to fill: a bucket untouched this long is full.
    refill: Duration,
    /// SipHash with a random key: user IDs are chosen by clients.
    hasher: RandomState,
    shards: Box<[Mutex<Shard<K>>]>,
}

struct Shard<K> {
    buckets: HashMap<K, (f64, Instant)>,
    /// No sweep before this time (the refill period after the last sweep).
    next_sweep: Option<Instant>,
}

impl<K> Default for Shard<K> {
    fn default() -> Self {
        Self {
            buckets: HashMap::new(),
            next_sweep: None,
        }
    }
}

/// How long to wait before the next request would be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// A limiter for `settings`.
    pub fn from_config(settings: crate::config::RateLimit) -> Self {
        Self::new(settings.per_second, settings.burst_count)
    }

    /// A limiter; `per_second <= 0` disables limiting.
    pub fn new(per_second: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        let refill = if per_second > 0.0 && per_second.is_finite() {
            Duration::try_from_secs_f64(burst / per_second).unwrap_or(Duration::MAX)
        } else {
            Duration::ZERO
        };
        Self {
            per_second,
            burst,
            refill,
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    /// Takes one token for `key` at `now`, or says how long until one is available.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), RetryAfter> {
        self.bucket(key, now, true)
    }

    /// Whether `key` has a token at `now`, without taking it.
    pub fn peek(&self, key: &K, now: Instant) -> Result<(), RetryAfter> {
        self.bucket(key, now, false)
    }

    fn bucket(&self, key: &K, now: Instant, take: bool) -> Result<(), RetryAfter> {
        if self.per_second <= 0.0 || !self.per_second.is_finite() {
            return Ok(());
        }
        let index = (self.hasher.hash_one(key) % SHARDS as u64) as usize;
        let mut shard = crate::lock(&self.shards[index]);
        if shard.buckets.len() > SWEEP_ABOVE && shard.next_sweep.is_none_or(|t| now >= t) {
            let (burst, rate) = (self.burst, self.per_second);
            shard.buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < burst
            });
            shard.next_sweep = now.checked_add(self.refill);
        }
        let tokens = match shard.buckets.get_mut(key) {
            Some((tokens, at)) => {
                let refill = now.saturating_duration_since(*at).as_secs_f64() * self.per_second;
                *tokens = (*tokens + refill).min(self.burst);
                *at = now;
                tokens
            }
            // A peek at an unknown key needs no bucket: a full one has a token.
            None if !take => return Ok(()),
            None => {
                &mut shard
                    .buckets
                    .entry(key.clone())
                    .or_insert((self.burst, now))
                    .0
            }
        };
        if *tokens >= 1.0 {
            if take {
                *tokens -= 1.0;
            }
            Ok(())
        } else {
            let wait = (1.0 - *tokens) / self.per_second;
            Err(RetryAfter(Duration::from_secs_f64(wait.max(0.001))))
        }
    }

    /// Buckets held (full ones not swept yet included).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| crate::lock(s).buckets.len())
            .sum()
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

    fn users(n: usize) -> Vec<UserId> {
        (0..n)
            .map(|i| UserId::parse(&format!("@u{i}:hs")).unwrap())
            .collect()
    }

    #[test]
    fn a_peek_takes_no_token() {
        let rl: RateLimiter<String> = RateLimiter::new(0.1, 2);
        let key = "@a:hs".to_owned();
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(rl.peek(&key, t0).is_ok());
        }
        assert_eq!(rl.len(), 0, "peeking creates no bucket");
        assert!(rl.check(&key, t0).is_ok());
        assert!(rl.check(&key, t0).is_ok());
        assert!(rl.peek(&key, t0).is_err());
        assert!(rl.check(&key, t0).is_err());
        assert!(rl.peek(&key, t0 + Duration::from_secs(11)).is_ok());
    }

    #[test]
    fn checks_past_the_sweep_threshold_do_not_scan_every_bucket() {
        // 150,000 buckets that are not full (so a sweep keeps them all): before sharding,
        // each check past 100,000 buckets scanned the whole map under one mutex.
        let rl = RateLimiter::new(0.001, 1);
        let t0 = Instant::now();
        let many = users(150_000);
        for u in &many {
            assert!(rl.check(u, t0).is_ok());
        }
        let started = Instant::now();
        for u in many.iter().take(2_000) {
            assert!(rl.check(u, t0).is_err());
        }
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_secs(1),
            "2,000 checks took {elapsed:?}"
        );
        assert_eq!(rl.len(), 150_000);
    }

    #[test]
    fn full_buckets_are_forgotten() {
        let rl = RateLimiter::new(1.0, 1);
        let t0 = Instant::now();
        for u in users(110_000) {
            assert!(rl.check(&u, t0).is_ok());
        }
        // Ten seconds later every bucket is full again; checks sweep the shards they touch.
        let later = t0 + Duration::from_secs(10);
        let fresh = users(120_000);
        for u in &fresh[110_000..] {
            assert!(rl.check(u, later).is_ok());
        }
        assert!(rl.len() < 30_000, "{} buckets left", rl.len());
    }
}
