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
//! it returns. The next heartbeat ends the stall.
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

/// How to raise an exception in the Python thread.
pub(crate) struct Interrupt {
    /// `synapse._presenced.interrupt(thread_id)`.
    function: Py<PyAny>,
    thread_id: u64,
}

impl Interrupt {
    pub(crate) fn new(function: Py<PyAny>, thread_id: u64) -> Self {
        Self {
            function,
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
}

/// Starts the watchdog; it ends when the host stops.
pub(crate) fn spawn(
    signals: Arc<Signals>,
    waker: Arc<Waker>,
    interrupt: Option<Interrupt>,
    interval: Duration,
    stuck_after: Duration,
) -> io::Result<()> {
    thread::Builder::new()
        .name("presence-python-watchdog".to_owned())
        .spawn(move || {
            let mut next_interrupt = Instant::now();
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
                        let activity = signals.activity();
                        tracing::error!(
                            blocked_ms = blocked.as_millis() as u64,
                            router = activity.as_ref().map(|a| &*a.router).unwrap_or("-"),
                            method = activity.as_ref().map(|a| a.method).unwrap_or("-"),
                            "Module code blocks the Python event loop; Python router calls fail \
                             until it returns."
                        );
                        next_interrupt = now;
                    }
                    if let Some(interrupt) = &interrupt
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
