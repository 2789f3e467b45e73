//! Requests from modules to the server (`send_local_online_presence_to`,
//! `set_presence_for_users`), carried out off the Python thread.
//!
//! [`ModuleApi`]'s methods are async and the Python thread runs no Tokio runtime, so requests
//! go to a small thread with its own single-threaded runtime. The outcome goes back to the
//! Python thread as a [`Control::Resolve`], which completes what the module awaits.

use std::{io, sync::Arc, thread};

use presence_router::{ForcedPresence, ModuleApi, UserId};
use tokio::sync::mpsc::{self, error::TrySendError};

use crate::host::{Control, Waker};

/// How many module requests may wait for the server at once.
const CAPACITY: usize = 1024;

/// What a module asks for.
pub(crate) enum Request {
    SendPresenceTo(Vec<UserId>),
    SetPresence(Vec<ForcedPresence>),
}

/// One module request.
pub(crate) struct Job {
    pub(crate) api: ModuleApi,
    pub(crate) request: Request,
    /// The Python side's id of what the module awaits.
    pub(crate) waiter: u64,
}

pub(crate) type Sender = mpsc::Sender<Job>;

/// Queues a job without blocking; the error is for the module.
pub(crate) fn send(sender: &Sender, job: Job) -> Result<(), String> {
    sender.try_send(job).map_err(|e| match e {
        TrySendError::Full(_) => {
            format!("too many presence requests are waiting for the server ({CAPACITY})")
        }
        TrySendError::Closed(_) => "the server is shutting down".to_owned(),
    })
}

/// Starts the thread; it ends when the returned sender and its clones are dropped.
pub(crate) fn start(
    control: std::sync::mpsc::Sender<Control>,
    waker: Arc<Waker>,
) -> io::Result<Sender> {
    let (tx, mut rx) = mpsc::channel::<Job>(CAPACITY);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    thread::Builder::new()
        .name("presence-python-out".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                while let Some(job) = rx.recv().await {
                    let control = control.clone();
                    let waker = waker.clone();
                    tokio::spawn(async move {
                        let outcome = match job.request {
                            Request::SendPresenceTo(users) => {
                                job.api.send_local_online_presence_to(users).await
                            }
                            Request::SetPresence(states) => {
                                job.api.set_presence_for_users(states).await
                            }
                        };
                        let error = outcome.err().map(|e| e.to_string());
                        if control
                            .send(Control::Resolve {
                                waiter: job.waiter,
                                error,
                            })
                            .is_ok()
                        {
                            waker.wake();
                        }
                    });
                }
            });
        })?;
    Ok(tx)
}
