//! Send times of every update and what the watchers saw of them.
//!
//! Each user's updates are numbered from 1; the number travels in the status message. A
//! watcher that sees number `s` of a user it last saw at `l` is credited with every update
//! `l+1..=s` at once: an update superseded before a `/sync` returned still counts as seen,
//! with its own latency (from its PUT to that `/sync`).
//!
//! Rates and percentiles are kept per measurement step; an update belongs to the step in
//! whose window its PUT was sent (updates sent outside every window, during the warm-up, are
//! not counted).

use std::{
    sync::{
        Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;

/// Marks an update whose PUT failed: it is never expected to be seen.
const FAILED: u64 = u64::MAX;
/// Largest latency the histograms keep, in microseconds (ten minutes).
const MAX_LATENCY_US: u64 = 600_000_000;

/// Figures of one measurement step.
#[derive(Debug, Clone)]
pub struct StepStats {
    /// Window start, nanoseconds since the tracker's origin.
    pub start_ns: u64,
    /// Window end (exclusive).
    pub end_ns: u64,
    /// PUTs answered 200.
    pub accepted: u64,
    /// PUTs that failed.
    pub failed: u64,
    /// (watcher, update) pairs that should be seen: each accepted update times its watchers.
    pub expected: u64,
    /// (watcher, update) pairs seen.
    pub delivered: u64,
    /// Latency from PUT sent to the `/sync` that showed it, in microseconds.
    pub latency_us: Histogram<u64>,
}

impl StepStats {
    /// Window length in seconds.
    pub fn seconds(&self) -> f64 {
        Duration::from_nanos(self.end_ns.saturating_sub(self.start_ns)).as_secs_f64()
    }
}

/// Running totals for progress lines.
#[derive(Debug, Default)]
pub struct Counters {
    /// PUTs answered 200 (any time).
    pub accepted: AtomicU64,
    /// PUTs that failed (any time).
    pub failed: AtomicU64,
    /// (watcher, update) pairs seen (any time).
    pub delivered: AtomicU64,
    /// `/sync` responses received.
    pub syncs: AtomicU64,
    /// `/sync` requests that failed.
    pub sync_errors: AtomicU64,
}

/// Shared by the updaters and the watchers.
#[derive(Debug)]
pub struct Tracker {
    origin: Instant,
    /// Per user: the send time (ns since origin, never 0) of update `i + 1` at index `i`.
    sent: Vec<Mutex<Vec<u64>>>,
    /// How many watchers see each user's updates.
    visible: Vec<u32>,
    steps: Mutex<Vec<StepStats>>,
    /// Running totals.
    pub counters: Counters,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere does not make the figures unreadable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Tracker {
    /// A tracker for users whose updates reach `visible[u]` watchers each.
    pub fn new(visible: Vec<u32>) -> Self {
        Self {
            origin: Instant::now(),
            sent: visible.iter().map(|_| Mutex::new(Vec::new())).collect(),
            visible,
            steps: Mutex::new(Vec::new()),
            counters: Counters::default(),
        }
    }

    /// Nanoseconds since the origin, at least 1.
    pub fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64 + 1
    }

    /// The instant `ns` nanoseconds after the origin.
    pub fn instant(&self, ns: u64) -> Instant {
        self.origin + Duration::from_nanos(ns)
    }

    /// Opens a measurement window `[start_ns, end_ns)`.
    pub fn add_step(&self, start_ns: u64, end_ns: u64) {
        lock(&self.steps).push(StepStats {
            start_ns,
            end_ns,
            accepted: 0,
            failed: 0,
            expected: 0,
            delivered: 0,
            latency_us: histogram(),
        });
    }

    /// Records that user `u`'s next update is being sent now: its number and send time.
    pub fn sending(&self, u: usize) -> (u32, u64) {
        let mut log = lock(&self.sent[u]);
        let t = self.now_ns();
        log.push(t);
        (log.len() as u32, t)
    }

    /// Records the PUT's outcome.
    pub fn sent(&self, u: usize, seq: u32, t: u64, ok: bool) {
        if ok {
            self.counters.accepted.fetch_add(1, Ordering::Relaxed);
        } else {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
            if let Some(slot) = lock(&self.sent[u]).get_mut(seq as usize - 1) {
                *slot = FAILED;
            }
        }
        let mut steps = lock(&self.steps);
        if let Some(step) = step_of(&mut steps, t) {
            if ok {
                step.accepted += 1;
                step.expected += u64::from(self.visible[u]);
            } else {
                step.failed += 1;
            }
        }
    }

    /// A watcher's `/sync` showed update `seen` of user `u`, whose update `last` it had seen
    /// before: adds the send times of `last+1..=seen` (but failed ones) to `scratch`, for
    /// [`Tracker::credit`].
    pub fn seen(&self, u: usize, last: u32, seen: u32, scratch: &mut Vec<u64>) {
        let log = lock(&self.sent[u]);
        let hi = (seen as usize).min(log.len());
        let lo = (last as usize).min(hi);
        scratch.extend(log[lo..hi].iter().copied().filter(|&t| t != FAILED));
    }

    /// Adds the send times gathered in `scratch` (all seen at `now`) to their steps' figures
    /// and empties it.
    pub fn credit(&self, now: u64, scratch: &mut Vec<u64>) {
        if scratch.is_empty() {
            return;
        }
        self.counters
            .delivered
            .fetch_add(scratch.len() as u64, Ordering::Relaxed);
        let mut steps = lock(&self.steps);
        for &t in scratch.iter() {
            if let Some(step) = step_of(&mut steps, t) {
                step.delivered += 1;
                let us = (now.saturating_sub(t) / 1_000).clamp(1, MAX_LATENCY_US);
                step.latency_us.saturating_record(us);
            }
        }
        scratch.clear();
    }

    /// (delivered, expected) over all steps.
    pub fn progress(&self) -> (u64, u64) {
        let steps = lock(&self.steps);
        steps
            .iter()
            .fold((0, 0), |(d, e), s| (d + s.delivered, e + s.expected))
    }

    /// A copy of every step's figures.
    pub fn steps(&self) -> Vec<StepStats> {
        lock(&self.steps).clone()
    }
}

fn step_of(steps: &mut [StepStats], t: u64) -> Option<&mut StepStats> {
    steps
        .iter_mut()
        .rev()
        .find(|s| s.start_ns <= t && t < s.end_ns)
}

fn histogram() -> Histogram<u64> {
    // Three significant figures between 1 µs and ten minutes: constant bounds the
    // constructor always accepts.
    match Histogram::new_with_bounds(1, MAX_LATENCY_US, 3) {
        Ok(h) => h,
        Err(e) => unreachable!("constant histogram bounds refused: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superseded_updates_count_when_a_newer_one_is_seen() {
        let tracker = Tracker::new(vec![2, 1]);
        tracker.add_step(0, u64::MAX);
        let mut sends = Vec::new();
        for _ in 0..3 {
            let (seq, t) = tracker.sending(0);
            sends.push((seq, t));
        }
        assert_eq!(sends.iter().map(|s| s.0).collect::<Vec<_>>(), [1, 2, 3]);
        tracker.sent(0, 1, sends[0].1, true);
        tracker.sent(0, 2, sends[1].1, false);
        tracker.sent(0, 3, sends[2].1, true);
        let mut scratch = Vec::new();
        let now = tracker.now_ns();
        // The watcher saw nothing of user 0 before and now sees update 3: 1 and 3 count, the
        // failed 2 does not.
        tracker.seen(0, 0, 3, &mut scratch);
        tracker.credit(now, &mut scratch);
        let steps = tracker.steps();
        assert_eq!(steps[0].accepted, 2);
        assert_eq!(steps[0].failed, 1);
        assert_eq!(steps[0].expected, 4);
        assert_eq!(steps[0].delivered, 2);
        assert_eq!(steps[0].latency_us.len(), 2);
        // Seeing the same update again credits nothing.
        tracker.seen(0, 3, 3, &mut scratch);
        assert!(scratch.is_empty());
    }

    #[test]
    fn updates_outside_every_window_are_not_counted() {
        let tracker = Tracker::new(vec![1]);
        let (seq, t) = tracker.sending(0);
        tracker.add_step(t + 1, t + 1_000_000_000);
        tracker.sent(0, seq, t, true);
        let mut scratch = Vec::new();
        tracker.seen(0, 0, 1, &mut scratch);
        tracker.credit(t + 5, &mut scratch);
        let steps = tracker.steps();
        assert_eq!((steps[0].accepted, steps[0].delivered), (0, 0));
        assert_eq!(tracker.counters.delivered.load(Ordering::Relaxed), 1);
    }
}
