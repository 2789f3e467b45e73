//! The [`Transport`] boundary between the outbox and the network, and a scriptable
//! [`MockTransport`] for tests (this crate's and the server's).
//!
//! The outbox only knows "send this transaction to that server, tell me if it worked"; the
//! real implementation is [`crate::FederationClient`] (discovery, TLS, `X-Matrix` signing).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use presence_router::ServerName;
use tokio::sync::Notify;

use crate::{SendError, Transaction};

/// Sends transactions to remote servers.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Delivers `body` as transaction `txn_id` to `destination`; `Ok` means a 200 answer.
    async fn send_transaction(
        &self,
        destination: &ServerName,
        txn_id: &str,
        body: &Transaction,
    ) -> Result<(), SendError>;
}

#[async_trait]
impl<T: Transport + ?Sized> Transport for Arc<T> {
    async fn send_transaction(
        &self,
        destination: &ServerName,
        txn_id: &str,
        body: &Transaction,
    ) -> Result<(), SendError> {
        (**self).send_transaction(destination, txn_id, body).await
    }
}

/// One attempt seen by [`MockTransport`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Attempt {
    /// The destination.
    pub destination: ServerName,
    /// The transaction ID.
    pub txn_id: String,
    /// The body.
    pub body: Transaction,
    /// Whether the mock reported success.
    pub delivered: bool,
    /// When it happened (tokio's clock, so paused time shows here).
    pub at: tokio::time::Instant,
}

#[derive(Default)]
struct MockState {
    attempts: Vec<Attempt>,
    down: BTreeSet<ServerName>,
    hanging: BTreeSet<ServerName>,
}

/// A transport that records every attempt; destinations can be made to fail or to hang.
#[derive(Default, Clone)]
pub struct MockTransport {
    state: Arc<Mutex<MockState>>,
    changed: Arc<Notify>,
}

impl std::fmt::Debug for MockTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockTransport").finish_non_exhaustive()
    }
}

impl MockTransport {
    /// A transport where every destination is up.
    pub fn new() -> Self {
        Self::default()
    }

    fn with_state<R>(&self, f: impl FnOnce(&mut MockState) -> R) -> R {
        // A test helper: a poisoned lock means a test already panicked.
        let mut guard = match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// Makes `destination` fail (`true`) or succeed (`false`) from now on.
    pub fn set_down(&self, destination: &ServerName, down: bool) {
        self.with_state(|s| {
            if down {
                s.down.insert(destination.clone());
            } else {
                s.down.remove(destination);
            }
        });
    }

    /// Makes requests to `destination` never answer (`true`), like a black-holed server.
    pub fn set_hanging(&self, destination: &ServerName, hanging: bool) {
        self.with_state(|s| {
            if hanging {
                s.hanging.insert(destination.clone());
            } else {
                s.hanging.remove(destination);
            }
        });
    }

    /// Every attempt so far.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.with_state(|s| s.attempts.clone())
    }

    /// Delivered transactions per destination.
    pub fn delivered(&self) -> BTreeMap<ServerName, Vec<Transaction>> {
        self.with_state(|s| {
            let mut out: BTreeMap<ServerName, Vec<Transaction>> = BTreeMap::new();
            for a in s.attempts.iter().filter(|a| a.delivered) {
                out.entry(a.destination.clone())
                    .or_default()
                    .push(a.body.clone());
            }
            out
        })
    }

    /// Waits until `pred` holds for the attempts, or `timeout` (tokio time) passes.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&[Attempt]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if self.with_state(|s| pred(&s.attempts)) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.with_state(|s| pred(&s.attempts));
            }
        }
    }
}

#[async_trait]
impl Transport for MockTransport {
    async fn send_transaction(
        &self,
        destination: &ServerName,
        txn_id: &str,
        body: &Transaction,
    ) -> Result<(), SendError> {
        if self.with_state(|s| s.hanging.contains(destination)) {
            std::future::pending::<()>().await;
        }
        let delivered = self.with_state(|s| {
            let delivered = !s.down.contains(destination);
            s.attempts.push(Attempt {
                destination: destination.clone(),
                txn_id: txn_id.to_owned(),
                body: body.clone(),
                delivered,
                at: tokio::time::Instant::now(),
            });
            delivered
        });
        self.changed.notify_waiters();
        if delivered {
            Ok(())
        } else {
            Err(SendError::Unreachable(
                "mock destination is down".to_owned(),
            ))
        }
    }
}
