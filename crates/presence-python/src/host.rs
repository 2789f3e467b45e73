//! [`PythonHost`]: the thread that owns the interpreter, and the channels to it.
//!
//! One OS thread, `presence-python`, holds the interpreter and runs an asyncio event loop
//! (Twisted's reactor on top of it when Twisted is used). Everything else talks to it through
//! Rust channels: a router call is a [`Call`] on a bounded queue, answered on a oneshot
//! channel; loading, cancelling and shutting down are [`Control`] messages. A byte on a
//! socket pair wakes the loop, which watches that socket like any other file descriptor.
//! Tokio worker threads therefore never take the GIL and never wait for Python: the worst a
//! module can do to them is make its own calls time out.
//!
//! A watchdog thread pings the loop and notices when module code keeps it from running
//! (see [`crate::watchdog`]).

use std::{
    io::Write,
    os::unix::net::UnixStream,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError},
    },
    thread,
    time::{Duration, Instant},
};

use presence_router::{
    ConfigError, FallbackFactory, InterestedUsers, ModuleApi, PresenceRouter, RouterError,
    RouterRegistry, StateBatch, UserId, UserStates,
};
use pyo3::prelude::*;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::{
    PythonError, PythonOptions, PythonRouter, PythonRouterStats, bridge, outbound,
    router::NoRoutes, watchdog,
};

/// How a module is registered in the configuration, which decides how it is constructed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModuleForm {
    /// The legacy `presence.presence_router` block: `Class(config=..., module_api=...)`, and
    /// the router methods are looked up on the instance.
    Legacy,
    /// A `modules:` entry: `Class(config, module_api)`, whose constructor calls
    /// `module_api.register_presence_router_callbacks(...)` (or registers no router).
    Modules,
}

impl ModuleForm {
    fn code(self) -> u8 {
        match self {
            Self::Legacy => 0,
            Self::Modules => 1,
        }
    }
}

/// Counters of the Python module host, for metrics.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct PythonHostStats {
    /// Times module code was found keeping the event loop from running past the limit.
    pub stalls: AtomicU64,
    /// Exceptions raised inside module code that kept the loop stuck.
    pub interrupts: AtomicU64,
    /// Background work of modules (`looping_background_call`, `delayed_background_call`,
    /// `run_as_background_process`) that raised.
    pub background_failures: AtomicU64,
    /// Memory blocks the interpreter has allocated (`sys.getallocatedblocks()`), read at
    /// most once a second while the loop serves calls; steady growth is a leaking module.
    pub allocated_blocks: AtomicU64,
}

/// What the module code on the loop is doing right now, for the stall report.
#[derive(Debug, Clone)]
pub(crate) struct Activity {
    pub(crate) router: Arc<str>,
    pub(crate) method: &'static str,
}

/// State shared by the Python thread, the watchdog and the callers.
#[derive(Debug)]
pub(crate) struct Signals {
    base: Instant,
    /// Milliseconds since `base` at which the loop last ran the bridge.
    last_beat: AtomicU64,
    pub(crate) stuck: AtomicBool,
    pub(crate) loading: AtomicBool,
    pub(crate) stopped: AtomicBool,
    activity: Mutex<Option<Activity>>,
    pub(crate) stats: PythonHostStats,
}

impl Signals {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            last_beat: AtomicU64::new(0),
            stuck: AtomicBool::new(false),
            loading: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            activity: Mutex::new(None),
            stats: PythonHostStats::default(),
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Records that the loop is running; ends a stall.
    pub(crate) fn beat(&self) {
        self.last_beat.store(self.now_ms(), Ordering::Release);
        if self.stuck.load(Ordering::Relaxed) && self.stuck.swap(false, Ordering::AcqRel) {
            tracing::info!(
                "The Python event loop runs again; Python router calls are accepted again."
            );
        }
    }

    /// How long ago the loop last ran the bridge.
    pub(crate) fn since_beat(&self) -> Duration {
        let last = self.last_beat.load(Ordering::Acquire);
        Duration::from_millis(self.now_ms().saturating_sub(last))
    }

    pub(crate) fn set_activity(&self, activity: Option<Activity>) {
        if let Ok(mut slot) = self.activity.lock() {
            *slot = activity;
        }
    }

    pub(crate) fn activity(&self) -> Option<Activity> {
        self.activity.lock().ok().and_then(|a| a.clone())
    }
}

/// Wakes the event loop by writing to its socket, at most once until the loop drains it.
#[derive(Debug)]
pub(crate) struct Waker {
    tx: UnixStream,
    pub(crate) notified: AtomicBool,
}

impl Waker {
    pub(crate) fn wake(&self) {
        if !self.notified.swap(true, Ordering::AcqRel) {
            // A full socket already holds a pending wake-up, and a closed one means the loop
            // is gone: neither needs handling.
            let _ = (&self.tx).write(&[1]);
        }
    }
}

/// A router call travelling to the Python thread.
pub(crate) struct Call {
    pub(crate) id: u64,
    pub(crate) router: u64,
    pub(crate) kind: CallKind,
    pub(crate) stats: Arc<PythonRouterStats>,
}

/// The two router methods, with where to answer.
pub(crate) enum CallKind {
    UsersForStates {
        batch: StateBatch,
        reply: oneshot::Sender<Result<UserStates, RouterError>>,
    },
    InterestedUsers {
        user: UserId,
        reply: oneshot::Sender<Result<InterestedUsers, RouterError>>,
    },
}

/// Everything else the Python thread is asked to do.
pub(crate) enum Control {
    Load(LoadRequest),
    Cancel(u64),
    Unload(u64),
    /// The server finished a module's `send_local_online_presence_to`.
    Resolve {
        waiter: u64,
        error: Option<String>,
    },
    Shutdown,
}

pub(crate) struct LoadRequest {
    pub(crate) id: u64,
    pub(crate) form: u8,
    pub(crate) module: String,
    pub(crate) config: Value,
    pub(crate) api: ModuleApi,
    /// The caller reports a failure itself: the traceback is logged at debug, not as an error.
    pub(crate) quiet: bool,
    pub(crate) reply: Sender<Result<bool, LoadFailure>>,
}

/// Why a module did not load, and where in its configuration entry the problem is.
#[derive(Debug, Clone)]
pub(crate) struct LoadFailure {
    pub(crate) site: FailureSite,
    pub(crate) message: String,
}

#[derive(Debug, Clone)]
pub(crate) enum FailureSite {
    /// The `module:` value: the path cannot be imported.
    Module,
    /// The `config:` block, at these keys.
    Config(Vec<String>),
    /// The constructor.
    Construct,
}

impl LoadFailure {
    /// The error at `path`, the location of the entry (`modules[0]`); with an empty `path`
    /// the key path is relative to the entry's `config:` block, as the registry expects.
    fn into_config_error(self, path: &str) -> ConfigError {
        let Self { site, message } = self;
        match (site, path.is_empty()) {
            (FailureSite::Module, true) => ConfigError::invalid("", format!("module: {message}")),
            (FailureSite::Module, false) => ConfigError::invalid(format!("{path}.module"), message),
            (FailureSite::Config(keys), relative) => {
                let keys = key_path(&keys);
                let full = match (relative, keys.is_empty()) {
                    (true, _) => keys,
                    (false, true) => format!("{path}.config"),
                    (false, false) if keys.starts_with('[') => format!("{path}.config{keys}"),
                    (false, false) => format!("{path}.config.{keys}"),
                };
                ConfigError::invalid(full, message)
            }
            (FailureSite::Construct, _) => ConfigError::invalid(path, message),
        }
    }
}

/// `["users", "2", "id"]` → `users[2].id`.
fn key_path(keys: &[String]) -> String {
    let mut out = String::new();
    for key in keys {
        if !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(key);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(key);
        }
    }
    out
}

/// The callers' side of the host; routers keep it alive.
pub(crate) struct HostShared {
    calls: SyncSender<Call>,
    control: Sender<Control>,
    waker: Arc<Waker>,
    pub(crate) signals: Arc<Signals>,
    next_id: AtomicU64,
    pub(crate) options: PythonOptions,
    python_version: String,
    twisted: bool,
    done: Mutex<Option<Receiver<()>>>,
}

impl HostShared {
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn control(&self, message: Control) {
        if self.control.send(message).is_ok() {
            self.waker.wake();
        }
    }

    /// Queues a call, or says at once why it cannot be made.
    pub(crate) fn submit(&self, call: Call) -> Result<(), RouterError> {
        if self.signals.stopped.load(Ordering::Acquire) {
            return Err(RouterError::Failed(STOPPED.to_owned()));
        }
        if self.signals.stuck.load(Ordering::Acquire) {
            let blocked = self.signals.since_beat();
            let by = self
                .signals
                .activity()
                .map(|a| format!(" by {}.{}", a.router, a.method))
                .unwrap_or_default();
            return Err(RouterError::Failed(format!(
                "the Python interpreter is stuck: its event loop has been blocked{by} for {} ms",
                blocked.as_millis()
            )));
        }
        match self.calls.try_send(call) {
            Ok(()) => {
                self.waker.wake();
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(RouterError::Failed(format!(
                "the Python call queue is full ({} calls wait)",
                self.options.queue_capacity
            ))),
            Err(TrySendError::Disconnected(_)) => Err(RouterError::Failed(STOPPED.to_owned())),
        }
    }
}

impl Drop for HostShared {
    fn drop(&mut self) {
        self.control(Control::Shutdown);
    }
}

const STOPPED: &str = "the Python module host has stopped";

/// The interpreter thread's stack. CPython sizes its recursion limit for a main thread with
/// the usual 8 MiB (`ulimit -s`); Rust's default of 2 MiB for other threads let recursion that
/// plain CPython survives overflow and abort the process. Twice 8 MiB leaves room for the
/// event loop's and the bridge's frames below the module's; pages are only used when touched.
const PYTHON_THREAD_STACK_BYTES: usize = 16 * 1024 * 1024;

/// The embedded Python interpreter running presence router modules. Cheap to clone; the
/// interpreter thread stops when the last clone and the last router it loaded are dropped,
/// or on [`shutdown`](Self::shutdown).
///
/// Start it once, at startup, outside async code (starting and loading block the calling
/// thread while Python imports). There is one interpreter per process: several hosts share
/// it (and its `sys.path`), each with its own thread and event loop, and only the first can
/// drive Twisted's reactor.
#[derive(Clone)]
pub struct PythonHost {
    shared: Arc<HostShared>,
}

impl std::fmt::Debug for PythonHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PythonHost")
            .field("python_version", &self.shared.python_version)
            .field("twisted", &self.shared.twisted)
            .finish_non_exhaustive()
    }
}

/// What the Python thread reports once it is ready.
struct Started {
    python_version: String,
    twisted: bool,
    twisted_note: Option<String>,
    interrupt: Option<watchdog::Interrupt>,
}

/// What the Python thread is given.
pub(crate) struct Setup {
    pub(crate) options: PythonOptions,
    pub(crate) wake_rx: UnixStream,
    pub(crate) waker: Arc<Waker>,
    pub(crate) calls: Receiver<Call>,
    pub(crate) control: Receiver<Control>,
    pub(crate) signals: Arc<Signals>,
    pub(crate) outbound: outbound::Sender,
}

impl PythonHost {
    /// Starts the interpreter thread: installs the `synapse` compatibility package, sets up
    /// `sys.path` and logging, creates the event loop and, per `options.twisted`, Twisted's
    /// reactor on it.
    pub fn start(options: PythonOptions) -> Result<Self, PythonError> {
        let (wake_rx, wake_tx) = UnixStream::pair()?;
        wake_rx.set_nonblocking(true)?;
        wake_tx.set_nonblocking(true)?;
        let waker = Arc::new(Waker {
            tx: wake_tx,
            notified: AtomicBool::new(false),
        });
        let signals = Arc::new(Signals::new());
        let (calls_tx, calls_rx) = mpsc::sync_channel(options.queue_capacity.max(1));
        let (control_tx, control_rx) = mpsc::channel();
        let outbound = outbound::start(control_tx.clone(), waker.clone())?;
        let (init_tx, init_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        let setup = Setup {
            options: options.clone(),
            wake_rx,
            waker: waker.clone(),
            calls: calls_rx,
            control: control_rx,
            signals: signals.clone(),
            outbound,
        };
        thread::Builder::new()
            .name("presence-python".to_owned())
            .stack_size(PYTHON_THREAD_STACK_BYTES)
            .spawn(move || python_thread(setup, init_tx, done_tx))?;
        let started = match init_rx.recv_timeout(options.load_timeout) {
            Ok(result) => result?,
            Err(RecvTimeoutError::Timeout) => {
                return Err(PythonError::Start(format!(
                    "the interpreter did not start within {} s",
                    options.load_timeout.as_secs()
                )));
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(PythonError::Start(
                    "the interpreter thread ended during startup".to_owned(),
                ));
            }
        };
        let interrupt = started.interrupt;
        // Startup time is not a stall.
        signals.beat();
        watchdog::spawn(
            signals.clone(),
            waker.clone(),
            interrupt,
            options.interrupt_stuck,
            options.watchdog_interval(),
            options.stuck_after(),
        )?;
        tracing::info!(
            python = %started.python_version,
            twisted = started.twisted,
            twisted_note = started.twisted_note.as_deref().unwrap_or(""),
            "Python module host started."
        );
        Ok(Self {
            shared: Arc::new(HostShared {
                calls: calls_tx,
                control: control_tx,
                waker,
                signals,
                next_id: AtomicU64::new(1),
                options,
                python_version: started.python_version,
                twisted: started.twisted,
                done: Mutex::new(Some(done_rx)),
            }),
        })
    }

    /// Imports `module` (a dotted path, `package.module.Class`), validates `config` with the
    /// class's `parse_config` if it has one, and constructs it in the given `form`, as the
    /// reference homeserver does. Returns the router, or `None` if the module registers none
    /// (a `modules:` entry that is not a presence router, or a legacy class with neither
    /// method).
    ///
    /// `path` locates the entry in the configuration file (`modules[0]`,
    /// `presence.presence_router`); errors name the failing key under it:
    /// `modules[0].module` for an import error, `modules[0].config.<key>` for a
    /// `ConfigError(path=[...])` from `parse_config`, `modules[0]` for a failing constructor
    /// (including registering one presence router callback without the other).
    ///
    /// Blocks until the module is loaded, for at most `options.load_timeout`.
    pub fn load(
        &self,
        form: ModuleForm,
        path: &str,
        module: &str,
        config: &Value,
        api: &ModuleApi,
    ) -> Result<Option<PythonRouter>, ConfigError> {
        self.load_with(form, path, module, config, api, false)
    }

    /// [`load`](Self::load) for a module whose failure the caller tolerates and reports
    /// itself (it skips the module): the Python traceback is logged at debug only.
    pub fn load_optional(
        &self,
        form: ModuleForm,
        path: &str,
        module: &str,
        config: &Value,
        api: &ModuleApi,
    ) -> Result<Option<PythonRouter>, ConfigError> {
        self.load_with(form, path, module, config, api, true)
    }

    fn load_with(
        &self,
        form: ModuleForm,
        path: &str,
        module: &str,
        config: &Value,
        api: &ModuleApi,
        quiet: bool,
    ) -> Result<Option<PythonRouter>, ConfigError> {
        let shared = &self.shared;
        let stopped = || {
            LoadFailure {
                site: FailureSite::Module,
                message: STOPPED.to_owned(),
            }
            .into_config_error(path)
        };
        if shared.signals.stopped.load(Ordering::Acquire) {
            return Err(stopped());
        }
        let id = shared.next_id();
        let (reply, answer) = mpsc::channel();
        shared.control(Control::Load(LoadRequest {
            id,
            form: form.code(),
            module: module.to_owned(),
            config: config.clone(),
            api: api.clone(),
            quiet,
            reply,
        }));
        match answer.recv_timeout(shared.options.load_timeout) {
            Ok(Ok(true)) => {
                tracing::info!(module, ?form, "Python presence router loaded.");
                Ok(Some(PythonRouter::new(id, module, shared.clone())))
            }
            Ok(Ok(false)) => {
                tracing::info!(
                    module,
                    ?form,
                    "Python module loaded; it registers no presence router."
                );
                Ok(None)
            }
            Ok(Err(failure)) => Err(failure.into_config_error(path)),
            Err(RecvTimeoutError::Timeout) => Err(LoadFailure {
                site: FailureSite::Construct,
                message: format!(
                    "loading Python module {module} took longer than {} s (its import or \
                     constructor blocks)",
                    shared.options.load_timeout.as_secs()
                ),
            }
            .into_config_error(path)),
            Err(RecvTimeoutError::Disconnected) => Err(stopped()),
        }
    }

    /// [`load`](Self::load) in the legacy `presence.presence_router` form.
    pub fn load_legacy(
        &self,
        path: &str,
        module: &str,
        config: &Value,
        api: &ModuleApi,
    ) -> Result<Option<PythonRouter>, ConfigError> {
        self.load(ModuleForm::Legacy, path, module, config, api)
    }

    /// [`load`](Self::load) in the `modules:` form.
    pub fn load_module(
        &self,
        path: &str,
        module: &str,
        config: &Value,
        api: &ModuleApi,
    ) -> Result<Option<PythonRouter>, ConfigError> {
        self.load(ModuleForm::Modules, path, module, config, api)
    }

    /// A registry fallback loading every unregistered module name that looks like a Python
    /// class path (`package.module.Class`) in `form`. A module that registers no presence
    /// router becomes a router that routes nothing. Key paths in errors are relative to the
    /// entry's `config:` block, which is how the registry reports fallback errors.
    pub fn fallback(&self, form: ModuleForm) -> FallbackFactory {
        let host = self.clone();
        Arc::new(move |name: &str, config: &Value, api: &ModuleApi| {
            if !is_python_class_path(name) {
                return None;
            }
            Some(
                host.load(form, "", name, config, api)
                    .map(|router| match router {
                        Some(router) => Arc::new(router) as Arc<dyn PresenceRouter>,
                        None => Arc::new(NoRoutes) as Arc<dyn PresenceRouter>,
                    }),
            )
        })
    }

    /// Sets [`fallback`](Self::fallback)`(form)` as `registry`'s fallback.
    pub fn install(&self, registry: &mut RouterRegistry, form: ModuleForm) {
        registry.set_fallback(
            "a Python class path such as my_module.MyRouter",
            self.fallback(form),
        );
    }

    /// The counters of the host.
    pub fn stats(&self) -> &PythonHostStats {
        &self.shared.signals.stats
    }

    /// `sys.version` of the embedded interpreter.
    pub fn python_version(&self) -> &str {
        &self.shared.python_version
    }

    /// Whether modules run on Twisted's reactor.
    pub fn twisted(&self) -> bool {
        self.shared.twisted
    }

    /// Whether module code currently keeps the event loop from running (calls fail at once).
    pub fn is_stuck(&self) -> bool {
        self.shared.signals.stuck.load(Ordering::Acquire)
    }

    /// Stops the event loop (background work of modules is cancelled) and waits up to
    /// `wait` for the thread to end, blocking the calling thread (call it from
    /// `spawn_blocking` in async code). Returns whether it ended. Routers loaded by this host
    /// fail from now on.
    pub fn shutdown(&self, wait: Duration) -> bool {
        self.shared.control(Control::Shutdown);
        let Ok(mut done) = self.shared.done.lock() else {
            return false;
        };
        match done.as_ref().map(|rx| rx.recv_timeout(wait)) {
            None => true,
            Some(Ok(())) | Some(Err(RecvTimeoutError::Disconnected)) => {
                *done = None;
                true
            }
            Some(Err(RecvTimeoutError::Timeout)) => false,
        }
    }
}

/// Whether `name` can be a Python class path: dotted identifiers, at least two.
pub fn is_python_class_path(name: &str) -> bool {
    let mut parts = 0;
    for part in name.split('.') {
        let mut chars = part.chars();
        let Some(first) = chars.next() else {
            return false;
        };
        if !(first.is_alphabetic() || first == '_')
            || !chars.all(|c| c.is_alphanumeric() || c == '_')
        {
            return false;
        }
        parts += 1;
    }
    parts >= 2
}

fn python_thread(setup: Setup, init: Sender<Result<Started, PythonError>>, done: Sender<()>) {
    let signals = setup.signals.clone();
    Python::attach(|py| match bridge::start(py, setup) {
        Err(e) => {
            let _ = init.send(Err(e));
        }
        Ok(running) => {
            let _ = init.send(Ok(Started {
                python_version: running.python_version.clone(),
                twisted: running.twisted,
                twisted_note: running.twisted_note.clone(),
                interrupt: running.interrupt(py),
            }));
            running.run(py);
        }
    });
    signals.stopped.store(true, Ordering::Release);
    tracing::info!("Python module host stopped.");
    let _ = done.send(());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths() {
        let k = |v: &[&str]| key_path(&v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        assert_eq!(k(&[]), "");
        assert_eq!(k(&["users", "2", "id"]), "users[2].id");
        assert_eq!(k(&["0"]), "[0]");
    }

    #[test]
    fn config_errors_are_placed_in_the_entry() {
        let at = |site: FailureSite, path: &str| {
            LoadFailure {
                site,
                message: "m".to_owned(),
            }
            .into_config_error(path)
            .to_string()
        };
        assert_eq!(
            at(FailureSite::Module, "modules[1]"),
            "modules[1].module: m"
        );
        assert_eq!(
            at(
                FailureSite::Config(vec!["a".into(), "3".into()]),
                "modules[1]"
            ),
            "modules[1].config.a[3]: m"
        );
        assert_eq!(
            at(FailureSite::Config(vec![]), "presence.presence_router"),
            "presence.presence_router.config: m"
        );
        assert_eq!(at(FailureSite::Construct, "modules[0]"), "modules[0]: m");
        // Relative to the config block, for the registry fallback.
        assert_eq!(at(FailureSite::Module, ""), ": module: m");
        assert_eq!(at(FailureSite::Config(vec!["x".into()]), ""), "x: m");
    }

    #[test]
    fn python_class_paths() {
        assert!(is_python_class_path("my_module.ExamplePresenceRouter"));
        assert!(is_python_class_path("a.b.C_1"));
        assert!(!is_python_class_path("example"));
        assert!(!is_python_class_path("a..b"));
        assert!(!is_python_class_path("a.1b"));
        assert!(!is_python_class_path("a.b-c"));
    }
}
