//! [`PythonRouter`]: a Python presence router behind the [`PresenceRouter`] trait.
//!
//! A call is queued for the Python thread and awaited on a oneshot channel with the
//! router's own time budget, so the router protects itself even outside a
//! [`RouterSet`](presence_router::RouterSet). When the caller stops waiting (its budget
//! ran out, or its future was dropped), the Python side is told to cancel the call's
//! coroutine.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use presence_router::{
    InterestedUsers, PresenceRouter, RouterError, StateBatch, UserId, UserStates, async_trait,
};
use tokio::sync::oneshot;

use crate::host::{Call, CallKind, Control, HostShared};

/// Counters of one Python router, for metrics. The server's
/// [`RouterStats`](presence_router::RouterStats) count every failure; these say what
/// happened on the Python side.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct PythonRouterStats {
    /// Calls made.
    pub calls: AtomicU64,
    /// Calls whose callback raised an exception (including an interrupted busy loop).
    pub exceptions: AtomicU64,
    /// Answers of the wrong type (a list instead of a set, not a dict...), dropped whole.
    pub invalid_answers: AtomicU64,
    /// Calls that overran the time budget.
    pub timeouts: AtomicU64,
    /// Calls refused at once: the interpreter was stuck, its queue full, or it had stopped.
    pub rejected: AtomicU64,
    /// States in answers that were not in the batch given (invented or altered); dropped.
    pub foreign_states: AtomicU64,
    /// Strings in answers that are not user IDs; dropped.
    pub invalid_user_ids: AtomicU64,
}

/// A presence router implemented by a Python module. Cheap to clone. Built by
/// [`PythonHost::load`](crate::PythonHost::load). When the last clone is dropped, the
/// module's looping and delayed calls stop, and it can no longer reach the server.
#[derive(Clone)]
pub struct PythonRouter {
    inner: Arc<Handle>,
}

struct Handle {
    id: u64,
    name: Arc<str>,
    host: Arc<HostShared>,
    stats: Arc<PythonRouterStats>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.host.control(Control::Unload(self.id));
    }
}

impl std::fmt::Debug for PythonRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PythonRouter")
            .field("module", &self.inner.name)
            .finish_non_exhaustive()
    }
}

/// Tells the Python side to cancel a call unless it completed.
struct CancelOnDrop<'a> {
    host: &'a HostShared,
    id: u64,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.host.control(Control::Cancel(self.id));
        }
    }
}

impl PythonRouter {
    pub(crate) fn new(id: u64, name: &str, host: Arc<HostShared>) -> Self {
        Self {
            inner: Arc::new(Handle {
                id,
                name: Arc::from(name),
                host,
                stats: Arc::default(),
            }),
        }
    }

    /// The module's dotted path.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The router's counters.
    pub fn stats(&self) -> &Arc<PythonRouterStats> {
        &self.inner.stats
    }

    async fn call<T>(
        &self,
        method: &'static str,
        kind: impl FnOnce(oneshot::Sender<Result<T, RouterError>>) -> CallKind,
    ) -> Result<T, RouterError> {
        let inner = &*self.inner;
        let stats = &inner.stats;
        stats.calls.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        let id = inner.host.next_id();
        let call = Call {
            id,
            router: inner.id,
            kind: kind(reply),
            stats: stats.clone(),
        };
        if let Err(e) = inner.host.submit(call) {
            stats.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
        let mut guard = CancelOnDrop {
            host: &inner.host,
            id,
            armed: true,
        };
        let result = match tokio::time::timeout(inner.host.options.call_timeout, answer).await {
            Ok(Ok(result)) => {
                guard.armed = false;
                result
            }
            Ok(Err(_)) => {
                guard.armed = false;
                Err(RouterError::Failed(
                    "the Python module host stopped before answering".to_owned(),
                ))
            }
            Err(_) => Err(RouterError::TimedOut),
        };
        drop(guard);
        match &result {
            Err(RouterError::TimedOut) => {
                stats.timeouts.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(router = %inner.name, method, "Python presence router call timed out.");
            }
            Err(RouterError::Invalid(reason)) => {
                tracing::debug!(router = %inner.name, method, reason, "Python presence router answered invalidly.");
            }
            _ => {}
        }
        result
    }
}

#[async_trait]
impl PresenceRouter for PythonRouter {
    async fn get_users_for_states(&self, states: &StateBatch) -> Result<UserStates, RouterError> {
        // The contract never asks about an empty batch; answering it here spares a round trip.
        if states.is_empty() {
            return Ok(UserStates::new());
        }
        let batch = states.clone();
        self.call("get_users_for_states", |reply| CallKind::UsersForStates {
            batch,
            reply,
        })
        .await
    }

    async fn get_interested_users(&self, user_id: &UserId) -> Result<InterestedUsers, RouterError> {
        let user = user_id.clone();
        self.call("get_interested_users", |reply| CallKind::InterestedUsers {
            user,
            reply,
        })
        .await
    }
}

/// What a loaded module that registers no presence router is, when the registry needs a
/// router for it: it routes nothing.
pub(crate) struct NoRoutes;

#[async_trait]
impl PresenceRouter for NoRoutes {
    async fn get_users_for_states(&self, _states: &StateBatch) -> Result<UserStates, RouterError> {
        Ok(UserStates::new())
    }

    async fn get_interested_users(
        &self,
        _user_id: &UserId,
    ) -> Result<InterestedUsers, RouterError> {
        Ok(InterestedUsers::none())
    }
}
