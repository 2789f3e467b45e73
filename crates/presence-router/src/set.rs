//! [`RouterSet`]: the configured routers, called together and merged.
//!
//! Merge rules (the reference's, minus its partial merges):
//! - `get_users_for_states`: the union, per recipient, of every router's answer.
//! - `get_interested_users`: the union of the sets; the first [`InterestedUsers::All`] wins
//!   and later routers are not asked.
//! - A router that errors, panics, overruns its time budget or answers with states from
//!   another batch is logged and counted, and its whole answer is dropped for that call.

use std::{
    panic::AssertUnwindSafe,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::FutureExt;

use crate::{
    InterestedUsers, PresenceRouter, RecipientFilter, RoomId, RouterError, StateBatch, StateSet,
    UserId, UserStates,
};

/// The default time budget of one router call.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(1);

/// Counters for one router, shared with the metrics exporter.
#[derive(Debug, Default)]
pub struct RouterStats {
    /// Successful or failed calls made.
    pub calls: AtomicU64,
    /// Calls whose answer was dropped (error, invalid answer, panic or timeout).
    pub failures: AtomicU64,
    /// Of those, calls that overran the time budget.
    pub timeouts: AtomicU64,
    /// Of those, calls that panicked.
    pub panics: AtomicU64,
    /// Total wall time spent in calls, in nanoseconds.
    pub nanos: AtomicU64,
}

struct Member {
    name: String,
    router: Arc<dyn PresenceRouter>,
    stats: Arc<RouterStats>,
}

/// The configured routers, in order: `modules:` entries first, then the legacy
/// `presence.presence_router`.
pub struct RouterSet {
    members: Vec<Member>,
    timeout: Duration,
}

impl RouterSet {
    /// An empty set whose calls each get `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self {
            members: Vec::new(),
            timeout,
        }
    }

    /// Appends a router; `name` is used in logs and metrics.
    pub fn push(&mut self, name: impl Into<String>, router: Arc<dyn PresenceRouter>) {
        self.members.push(Member {
            name: name.into(),
            router,
            stats: Arc::default(),
        });
    }

    /// Whether no router is configured.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Each router's name and the router, in calling order (for tools that call them one by
    /// one, such as `presenced routers check`).
    pub fn routers(&self) -> impl Iterator<Item = (&str, &Arc<dyn PresenceRouter>)> {
        self.members.iter().map(|m| (m.name.as_str(), &m.router))
    }

    /// The routers' removals for the restricting mode, combined: a pair is allowed only if
    /// every router's filter allows it. `None` when no router has a filter.
    pub fn recipient_filter(&self) -> Option<Arc<FilterSet>> {
        let filters: Vec<(String, Arc<dyn RecipientFilter>)> = self
            .members
            .iter()
            .filter_map(|m| m.router.recipient_filter().map(|f| (m.name.clone(), f)))
            .collect();
        (!filters.is_empty()).then(|| Arc::new(FilterSet::new(filters)))
    }

    /// Every account-data type some router follows, without duplicates.
    pub fn followed_account_data(&self) -> Vec<String> {
        let mut types: Vec<String> = self
            .members
            .iter()
            .flat_map(|m| m.router.followed_account_data())
            .collect();
        types.sort_unstable();
        types.dedup();
        types
    }

    /// Tells the routers that follow `event_type` of a write. A router that panics is
    /// logged; the others are still told.
    pub fn account_data_changed(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        event_type: &str,
        content: &serde_json::Value,
    ) {
        for m in &self.members {
            if !m
                .router
                .followed_account_data()
                .iter()
                .any(|t| t == event_type)
            {
                continue;
            }
            let told = std::panic::catch_unwind(AssertUnwindSafe(|| {
                m.router
                    .account_data_changed(user, room, event_type, content);
            }));
            if told.is_err() {
                m.stats.panics.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(router = %m.name, event_type, "Presence router panicked on an account-data change.");
            }
        }
    }

    /// Whether some router follows memberships.
    pub fn follows_memberships(&self) -> bool {
        self.members.iter().any(|m| m.router.follows_memberships())
    }

    /// Tells the routers that follow memberships of a join (`joined`) or a leave.
    pub fn membership_changed(&self, room: &RoomId, user: &UserId, joined: bool) {
        for m in self
            .members
            .iter()
            .filter(|m| m.router.follows_memberships())
        {
            let told = std::panic::catch_unwind(AssertUnwindSafe(|| {
                m.router.membership_changed(room, user, joined);
            }));
            if told.is_err() {
                m.stats.panics.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(router = %m.name, "Presence router panicked on a membership change.");
            }
        }
    }

    /// Each router's name and counters.
    pub fn stats(&self) -> impl Iterator<Item = (&str, &Arc<RouterStats>)> {
        self.members.iter().map(|m| (m.name.as_str(), &m.stats))
    }

    /// The merged `get_users_for_states` of every router. Never fails.
    pub async fn get_users_for_states(&self, batch: &StateBatch) -> UserStates {
        let mut merged = UserStates::new();
        if batch.is_empty() {
            return merged;
        }
        for m in &self.members {
            let (answer, elapsed) = self
                .call(
                    m,
                    "get_users_for_states",
                    m.router.get_users_for_states(batch),
                )
                .await;
            let answer = answer.and_then(|answer| check_batch(m, answer, batch));
            let Some(answer) = answer else { continue };
            // Every routing decision, for an operator asking "why did (not) X see Y".
            tracing::debug!(
                router = %m.name,
                method = "get_users_for_states",
                states = batch.len(),
                recipients = answer.len(),
                routed = answer.values().map(StateSet::len).sum::<usize>(),
                elapsed_us = micros(elapsed),
                "Presence router call."
            );
            if merged.is_empty() {
                merged = answer;
                continue;
            }
            for (user, set) in answer {
                match merged.entry(user) {
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(set);
                    }
                    std::collections::hash_map::Entry::Occupied(mut o) => {
                        // Both sets were checked against `batch`, so the union exists.
                        if let Some(u) = o.get().union(&set) {
                            o.insert(u);
                        }
                    }
                }
            }
        }
        merged.retain(|_, set| !set.is_empty());
        merged
    }

    /// The merged `get_interested_users` of every router. Never fails.
    pub async fn get_interested_users(&self, user: &UserId) -> InterestedUsers {
        let mut merged = std::collections::BTreeSet::new();
        for m in &self.members {
            let (answer, elapsed) = self
                .call(
                    m,
                    "get_interested_users",
                    m.router.get_interested_users(user),
                )
                .await;
            if let Some(answer) = &answer {
                let interested = match answer {
                    InterestedUsers::All => "all".to_owned(),
                    InterestedUsers::Users(users) => users.len().to_string(),
                };
                tracing::debug!(
                    router = %m.name,
                    method = "get_interested_users",
                    user = %user,
                    interested,
                    elapsed_us = micros(elapsed),
                    "Presence router call."
                );
            }
            match answer {
                Some(InterestedUsers::All) => return InterestedUsers::All,
                Some(InterestedUsers::Users(users)) => {
                    if merged.is_empty() {
                        merged = users;
                    } else {
                        merged.extend(users);
                    }
                }
                None => {}
            }
        }
        InterestedUsers::Users(merged)
    }

    /// Runs one call with the time budget, catching panics; `None` if the answer is dropped.
    /// Also returns how long the call took.
    async fn call<T>(
        &self,
        m: &Member,
        method: &'static str,
        fut: impl Future<Output = Result<T, RouterError>> + Send,
    ) -> (Option<T>, Duration) {
        let start = Instant::now();
        m.stats.calls.fetch_add(1, Ordering::Relaxed);
        let mut fut = Box::pin(AssertUnwindSafe(fut).catch_unwind());
        // Most routers answer without awaiting anything: skip the timer for those.
        let outcome = match (&mut fut).now_or_never() {
            Some(done) => Some(done),
            None => tokio::time::timeout(self.timeout, fut).await.ok(),
        };
        let elapsed = start.elapsed();
        m.stats.nanos.fetch_add(
            elapsed.as_nanos().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
        let err = match outcome {
            Some(Ok(Ok(v))) => return (Some(v), elapsed),
            Some(Ok(Err(e))) => {
                // A router that keeps its own budget (a Python router) reports the overrun.
                if matches!(e, RouterError::TimedOut) {
                    m.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                }
                e
            }
            Some(Err(_panic)) => {
                m.stats.panics.fetch_add(1, Ordering::Relaxed);
                RouterError::Panicked
            }
            None => {
                m.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                RouterError::TimedOut
            }
        };
        m.stats.failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            router = %m.name,
            method,
            error = %err,
            elapsed_ms = elapsed.as_millis() as u64,
            "Presence router call failed; its answer is ignored for this call."
        );
        (None, elapsed)
    }
}

/// Several routers' [`RecipientFilter`]s as one: a pair is allowed when every filter allows
/// it. A filter that panics refuses the pair (and is logged once).
pub struct FilterSet {
    filters: Vec<(
        String,
        Arc<dyn RecipientFilter>,
        std::sync::atomic::AtomicBool,
    )>,
}

impl FilterSet {
    /// Combines `filters`, each named for the log.
    pub fn new(filters: Vec<(String, Arc<dyn RecipientFilter>)>) -> Self {
        Self {
            filters: filters
                .into_iter()
                .map(|(name, f)| (name, f, std::sync::atomic::AtomicBool::new(false)))
                .collect(),
        }
    }

    /// The routers whose filters are combined, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.filters.iter().map(|(name, _, _)| name.as_str())
    }
}

impl RecipientFilter for FilterSet {
    fn allows(&self, sender: &UserId, recipient: &UserId) -> bool {
        self.filters.iter().all(|(name, filter, warned)| {
            let answer = std::panic::catch_unwind(AssertUnwindSafe(|| {
                filter.allows(sender, recipient)
            }));
            answer.unwrap_or_else(|_| {
                if !warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        router = %name,
                        "Presence router's recipient filter panicked; the pairs it panics on are refused (logged once)."
                    );
                }
                false
            })
        })
    }
}

impl std::fmt::Debug for FilterSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterSet")
            .field("routers", &self.names().collect::<Vec<_>>())
            .finish()
    }
}

/// A filter that removes nothing: the restricting mode's machinery with no removal, which
/// must deliver exactly what the additive mode does.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl RecipientFilter for AllowAll {
    fn allows(&self, _sender: &UserId, _recipient: &UserId) -> bool {
        true
    }
}

/// `d` in whole microseconds, saturating.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Drops an answer holding a set from another batch, counting it as a failed call: a router
/// that invents states is as broken as one that errors.
fn check_batch(m: &Member, answer: UserStates, batch: &StateBatch) -> Option<UserStates> {
    if answer.values().all(|set| set.batch().same_batch(batch)) {
        Some(answer)
    } else {
        m.stats.failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            router = %m.name,
            method = "get_users_for_states",
            "Presence router returned states that were not in the batch it was given; its answer is ignored for this call."
        );
        None
    }
}

impl std::fmt::Debug for RouterSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterSet")
            .field(
                "routers",
                &self.members.iter().map(|m| &m.name).collect::<Vec<_>>(),
            )
            .field("timeout", &self.timeout)
            .finish()
    }
}
