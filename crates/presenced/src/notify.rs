//! Wakes waiting `/sync` requests when something they would return has happened.
//!
//! A request subscribes *before* it releases the lock under which it found nothing new, so a
//! change made right after cannot be missed (a tokio `Notified` receives every
//! `notify_waiters` issued after its creation, polled or not).

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use presence_router::UserId;
use tokio::sync::{Notify, futures::OwnedNotified};

use crate::lock;

#[derive(Default)]
struct Entry {
    notify: Arc<Notify>,
    waiters: usize,
}

/// Per-user wake-ups for long-polling syncs. Cheap to clone.
#[derive(Clone, Default)]
pub struct Notifier {
    users: Arc<Mutex<HashMap<UserId, Entry>>>,
    activity: Arc<Activity>,
}

/// When the last two wake-ups happened (nanoseconds since `base`), to tell a server where
/// changes keep arriving from an idle one.
struct Activity {
    base: Instant,
    last: AtomicU64,
    before_last: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            base: Instant::now(),
            last: AtomicU64::new(0),
            before_last: AtomicU64::new(0),
        }
    }
}

impl Activity {
    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A registered waiter; dropping it unregisters.
pub struct Subscription {
    notifier: Notifier,
    user: UserId,
    done: bool,
    notify: Arc<Notify>,
    /// Resolves when the user is woken.
    pub notified: Pin<Box<OwnedNotified>>,
}

impl Notifier {
    /// Registers a waiter for `user`. Returns the subscription and whether it is the user's
    /// first waiter (the caller then marks the user as listening in the engine).
    pub fn subscribe(&self, user: &UserId) -> (Subscription, bool) {
        let mut users = lock(&self.users);
        let entry = users.entry(user.clone()).or_default();
        entry.waiters += 1;
        let first = entry.waiters == 1;
        let notify = entry.notify.clone();
        let sub = Subscription {
            notifier: self.clone(),
            user: user.clone(),
            done: false,
            notified: Box::pin(notify.clone().notified_owned()),
            notify,
        };
        (sub, first)
    }

    /// Wakes every waiter of each user.
    pub fn wake<'a>(&self, users: impl IntoIterator<Item = &'a UserId>) {
        let now = self.activity.now();
        let previous = self.activity.last.swap(now, Ordering::Relaxed);
        self.activity.before_last.store(previous, Ordering::Relaxed);
        let map = lock(&self.users);
        for u in users {
            if let Some(e) = map.get(u) {
                e.notify.notify_waiters();
            }
        }
    }

    /// Whether changes keep arriving: the last two wake-ups came within `window` of each
    /// other, the latest within `window` of now. A woken sync then waits a little for more
    /// (one fuller answer instead of several); on an idle server it answers at once.
    pub fn busy(&self, window: Duration) -> bool {
        let window = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        let last = self.activity.last.load(Ordering::Relaxed);
        let before = self.activity.before_last.load(Ordering::Relaxed);
        before != 0
            && last.saturating_sub(before) < window
            && self.activity.now().saturating_sub(last) < window
    }

    /// How many users have a waiting request.
    pub fn waiting_users(&self) -> usize {
        lock(&self.users).len()
    }

    /// Unregisters one waiter; true if it was the user's last.
    fn unsubscribe(&self, user: &UserId) -> bool {
        let mut users = lock(&self.users);
        let Some(e) = users.get_mut(user) else {
            return false;
        };
        e.waiters = e.waiters.saturating_sub(1);
        if e.waiters == 0 {
            users.remove(user);
            true
        } else {
            false
        }
    }
}

impl Subscription {
    /// Waits for the next wake-up: wake-ups from now on resolve [`Self::notified`] again.
    /// Call it before reading, as with [`Notifier::subscribe`].
    pub fn rearm(&mut self) {
        let next = self.notify.clone().notified_owned();
        self.notified.as_mut().set(next);
    }

    /// Unregisters; true if this was the user's last waiter.
    pub fn finish(mut self) -> bool {
        self.done = true;
        self.notifier.unsubscribe(&self.user)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if !self.done {
            self.notifier.unsubscribe(&self.user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_means_two_recent_wake_ups_close_together() {
        let n = Notifier::default();
        let window = Duration::from_millis(50);
        let nobody: [&UserId; 0] = [];
        assert!(!n.busy(window), "never woken");
        n.wake(nobody);
        assert!(!n.busy(window), "one wake-up is not a stream of changes");
        n.wake(nobody);
        assert!(n.busy(window));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!n.busy(window), "quiet since");
        n.wake(nobody);
        assert!(!n.busy(window), "the one before was long ago");
        assert!(!n.busy(Duration::ZERO));
    }
}
