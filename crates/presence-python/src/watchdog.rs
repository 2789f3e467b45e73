//! The watchdog: notices module code that keeps the Python event loop from running.
//!
//! Every few milliseconds the watchdog wakes the loop, and the loop records a heartbeat each
//! time it runs the bridge (and after each router call it starts). When no heartbeat came
//! for longer than `stuck_after` (a busy loop, a blocking call, a coroutine that never
//! yields), the host counts as stuck: calls fail at once instead of queueing behind the
//! blocked code, and, if enabled, an `InterpreterStuck` exception is raised in the Python
//! thread (again every `stuck_after` while it stays stuck). The exception arrives at the
//! next Python bytecode the thread runs: it ends a pure-Python busy loop, but not a blocking
//! call into C (`time.sleep`, a socket read without timeout), which keeps the loop stuck until
//! it returns. The next heartbeat ends the stall. When the loop thread runs no module code
//! but another Python thread (one a module started) holds the GIL, the log names that thread
//! and its module and nothing is raised: the stall ends when that thread yields.
//!
//! The watchdog thread takes the GIL only to raise that exception; it is never a Tokio thread.

use std::{
    io,
    sync::{Arc, atomic::Ordering},
    thread,
    time::{Duration, Instant},
};

use pyo3::prelude::*;

use crate::host::{Signals, Waker};

/// How to find what blocks the Python thread's loop, and raise an exception in it.
pub(crate) struct Interrupt {
    /// `synapse._presenced.interrupt(thread_id)`.
    function: Py<PyAny>,
    /// `synapse._presenced.blocker(thread_id)`.
    blocker: Py<PyAny>,
    thread_id: u64,
}

/// What keeps the loop from running.
struct Blocker {
    /// Module code on the loop thread itself (else another Python thread holds the GIL).
    in_loop: bool,
    description: String,
}

impl Interrupt {
    pub(crate) fn new(function: Py<PyAny>, blocker: Py<PyAny>, thread_id: u64) -> Self {
        Self {
            function,
            blocker,
            thread_id,
        }
    }

    fn raise(&self) -> PyResult<i64> {
        Python::attach(|py| {
            self.function
                .call1(py, (self.thread_id,))
                .and_then(|n| n.extract(py))
        })
    }

    /// Waits for the GIL (the code holding it lets go at its next bytecode, or when its C
    /// call returns), then looks at what every Python thread runs.
    fn blocker(&self) -> Option<Blocker> {
        Python::attach(|py| {
            let (in_loop, description) = self
                .blocker
                .call1(py, (self.thread_id,))
                .and_then(|b| b.extract::<(bool, String)>(py))
                .ok()?;
            Some(Blocker {
                in_loop,
                description,
            })
        })
    }
}

/// Starts the watchdog; it ends when the host stops.
pub(crate) fn spawn(
    signals: Arc<Signals>,
    waker: Arc<Waker>,
    interrupt: Option<Interrupt>,
    raise_stuck: bool,
    interval: Duration,
    stuck_after: Duration,
) -> io::Result<()> {
    thread::Builder::new()
        .name("presence-python-watchdog".to_owned())
        .spawn(move || {
            let mut next_interrupt = Instant::now();
            let mut in_loop = true;
            loop {
                thread::sleep(interval);
                if signals.stopped.load(Ordering::Acquire) {
                    break;
                }
                let blocked = signals.since_beat();
                if blocked >= stuck_after && !signals.loading.load(Ordering::Acquire) {
                    let now = Instant::now();
                    if !signals.stuck.swap(true, Ordering::AcqRel) {
                        signals.stats.stalls.fetch_add(1, Ordering::Relaxed);
                        // After `stuck` is set, so calls already fail at once meanwhile.
                        let blocker = interrupt.as_ref().and_then(Interrupt::blocker);
                        in_loop = blocker.as_ref().is_none_or(|b| b.in_loop);
                        let by = blocker.map(|b| b.description).unwrap_or_default();
                        let activity = signals.activity();
                        let router = activity.as_ref().map(|a| &*a.router).unwrap_or("-");
                        let method = activity.as_ref().map(|a| a.method).unwrap_or("-");
                        if in_loop {
                            tracing::error!(
                                blocked_ms = blocked.as_millis() as u64,
                                router,
                                method,
                                by = %by,
                                "Module code blocks the Python event loop; Python router calls \
                                 fail until it returns."
                            );
                        } else {
                            // Interrupting the loop thread would hit innocent code; the
                            // stall ends when that thread lets go of the GIL.
                            tracing::error!(
                                blocked_ms = blocked.as_millis() as u64,
                                by = %by,
                                "A Python thread started by a module holds the GIL and keeps \
                                 the Python event loop from running; Python router calls fail \
                                 until it yields."
                            );
                        }
                        // Not before the next tick: finding the blocker may have waited for
                        // the GIL until the stall was over, and then the loop gets one tick
                        // to beat (clearing `blocked`) before innocent code is interrupted.
                        next_interrupt = Instant::now() + interval;
                    }
                    if let Some(interrupt) = &interrupt
                        && raise_stuck
                        && in_loop
                        && now >= next_interrupt
                    {
                        next_interrupt = now + stuck_after;
                        signals.stats.interrupts.fetch_add(1, Ordering::Relaxed);
                        match interrupt.raise() {
                            Ok(1) => tracing::warn!(
                                "Raised InterpreterStuck in the module code that blocks the Python event loop."
                            ),
                            Ok(n) => tracing::warn!(
                                result = n,
                                "Could not raise InterpreterStuck in the Python thread."
                            ),
                            Err(e) => tracing::warn!(
                                error = %e,
                                "Could not raise InterpreterStuck in the Python thread."
                            ),
                        }
                    }
                }
                // The loop beats when it handles this wake-up.
                waker.wake();
            }
            // Release the Python function with the GIL held.
            if let Some(interrupt) = interrupt {
                Python::attach(|_| drop(interrupt));
            }
        })?;
    Ok(())
}
