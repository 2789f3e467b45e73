//! Batching of local presence changes: concurrent changes are applied, routed and persisted
//! together, one batch at a time, so a burst of updates costs one router call (one Python
//! call for a Python router) and one store commit instead of one per update.
//!
//! The first change to arrive while no batch is running starts a task that takes everything
//! queued, processes it, answers each caller, and repeats until the queue is empty. It is a
//! spawned task, not the caller's future, so a client that disconnects cannot strand the
//! changes queued behind its own.

use std::{
    mem,
    sync::{Arc, Mutex},
};

use super::PresencePersistence;
use presence_engine::Input;
use tokio::sync::oneshot;

use super::{PresenceError, PresenceService};
use crate::lock;

type Reply = oneshot::Sender<Result<(), PresenceError>>;

/// How many times a batch waits for more changes before it is processed.
const MAX_YIELDS: usize = 4;

/// Changes waiting for the next batch.
#[derive(Default)]
pub(super) struct Queue {
    inputs: Vec<Input>,
    replies: Vec<Reply>,
    /// Whether a task is processing batches (it takes these next).
    running: bool,
}

impl<S: PresencePersistence> PresenceService<S> {
    /// Queues `inputs` for the next batch and waits until that batch is persisted.
    pub(super) async fn submit(&self, inputs: Vec<Input>) -> Result<(), PresenceError> {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut queue = lock(&self.inner.queue);
            queue.inputs.extend(inputs);
            queue.replies.push(reply);
            !mem::replace(&mut queue.running, true)
        };
        if start {
            tokio::spawn(self.clone().run_batches());
        }
        answer.await.unwrap_or(Err(PresenceError::Interrupted))
    }

    async fn run_batches(self) {
        // Clears `running` however the loop ends (a panic included), so the next change
        // starts a new task instead of waiting forever.
        let _running = Running(&self.inner.queue);
        loop {
            // Let the other ready tasks run first: requests already read from their sockets
            // queue their changes and join this batch instead of each making its own. Again
            // while that brings more (a few times at most, so a steady stream cannot hold
            // the batch back).
            let mut queued = lock(&self.inner.queue).replies.len();
            for _ in 0..MAX_YIELDS {
                tokio::task::yield_now().await;
                let now = lock(&self.inner.queue).replies.len();
                if now == queued {
                    break;
                }
                queued = now;
            }
            let (inputs, replies) = {
                let mut queue = lock(&self.inner.queue);
                if queue.replies.is_empty() {
                    queue.running = false;
                    return;
                }
                (mem::take(&mut queue.inputs), mem::take(&mut queue.replies))
            };
            crate::metrics::presence_batch(replies.len());
            match self.process_then_roll_back(inputs).await {
                Ok(_) => {
                    for reply in replies {
                        let _ = reply.send(Ok(()));
                    }
                }
                Err(super::FailedChange { error, roll_back }) => {
                    let shared = Arc::new(error);
                    for reply in replies {
                        let _ = reply.send(Err(PresenceError::Batch(shared.clone())));
                    }
                    // Answered first; the next batch still waits for the put-back, so
                    // commits stay in order.
                    roll_back.run().await;
                }
            }
        }
    }
}

struct Running<'a>(&'a Mutex<Queue>);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        lock(self.0).running = false;
    }
}
