//! [`PythonOptions`]: how the Python module host is set up.

use std::{path::PathBuf, time::Duration};

use presence_router::DEFAULT_CALL_TIMEOUT;

/// Whether modules run on Twisted's asyncio reactor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TwistedMode {
    /// Use Twisted if it can be imported: its asyncio reactor is installed on the host's
    /// event loop, so modules can await Deferreds and use Twisted APIs, as under the
    /// reference homeserver. Without Twisted, modules run on plain asyncio.
    #[default]
    Auto,
    /// Never import Twisted.
    Off,
    /// Fail to start if Twisted cannot be imported or its reactor cannot be installed.
    Required,
}

impl TwistedMode {
    /// The value the Python side understands.
    pub(crate) fn code(self) -> u8 {
        match self {
            Self::Off => 0,
            Self::Auto => 1,
            Self::Required => 2,
        }
    }
}

/// Settings of a [`PythonHost`](crate::PythonHost). Start from `PythonOptions::default()`
/// and set the fields you need.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PythonOptions {
    /// Directories put first on `sys.path`, in order (after them come `PYTHONPATH`, which the
    /// interpreter reads itself, and the interpreter's own paths).
    pub paths: Vec<PathBuf>,
    /// A virtualenv whose `lib/pythonX.Y/site-packages` is put on `sys.path` (after `paths`,
    /// before the interpreter's own site-packages), `.pth` files included. It must have been
    /// made for the Python version Presenced is built against.
    pub venv: Option<PathBuf>,
    /// Time budget of one router call. Past it the call fails with
    /// [`RouterError::TimedOut`](presence_router::RouterError::TimedOut) and, if it is a
    /// coroutine, it is cancelled.
    pub call_timeout: Duration,
    /// How long module code may keep the event loop busy (a busy loop, a blocking call)
    /// before the interpreter counts as stuck: calls then fail at once instead of queueing,
    /// until the loop runs again. `None`: the same as `call_timeout`.
    pub stuck_after: Option<Duration>,
    /// Whether to raise an exception inside module code that keeps the loop stuck (it is
    /// delivered at the next Python bytecode, so it cannot end a blocking call into C).
    pub interrupt_stuck: bool,
    /// How many calls may wait for the Python thread; more fail at once.
    pub queue_capacity: usize,
    /// Time budget of importing, configuring and constructing one module.
    pub load_timeout: Duration,
    /// Whether to run modules on Twisted.
    pub twisted: TwistedMode,
}

impl Default for PythonOptions {
    fn default() -> Self {
        Self {
            paths: Vec::new(),
            venv: None,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            stuck_after: None,
            interrupt_stuck: true,
            queue_capacity: 1024,
            load_timeout: Duration::from_secs(60),
            twisted: TwistedMode::Auto,
        }
    }
}

impl PythonOptions {
    /// How long the loop may be busy before it counts as stuck.
    pub(crate) fn stuck_after(&self) -> Duration {
        self.stuck_after.unwrap_or(self.call_timeout)
    }

    /// How often the watchdog checks the loop: often enough to notice a stall well within
    /// `stuck_after`, rarely enough to cost nothing when idle.
    pub(crate) fn watchdog_interval(&self) -> Duration {
        (self.stuck_after() / 4).clamp(Duration::from_millis(10), Duration::from_millis(250))
    }
}
