//! The [`Bridge`]: the Rust object living on the Python thread, between the channels and the
//! Python host glue (`synapse._presenced.Host`).
//!
//! The event loop calls [`Bridge::drain`] when the wake-up socket is readable: it takes the
//! control messages and the queued calls, builds the Python arguments, starts the module's
//! callback through `Host.start`, and converts and sends the answer as soon as it is known
//! (at once for a callback that does not wait for anything, from [`Bridge::finish`] for one
//! that does). All conversions happen here, on the thread that holds the GIL, so the answer a
//! caller receives is plain Rust data.
//!
//! Module code can call back into the bridge (`send_local_online_presence_to`, a failing
//! background task) while the bridge is calling it, so no `RefCell` borrow is ever held
//! across a call into Python.

use std::{
    cell::RefCell,
    io::Read,
    os::{fd::AsRawFd, unix::net::UnixStream},
    sync::{Arc, atomic::Ordering, mpsc::Receiver},
    time::Duration,
};

use presence_router::{
    ForcedPresence, InterestedUsers, ModuleApi, PresenceState, RouterError, UserId, UserStates,
};
use pyo3::{intern, prelude::*};
use rustc_hash::FxHashMap;
use tokio::sync::oneshot;

use crate::{
    PythonError, PythonRouterStats,
    convert::{self, PreparedBatch, StateObjects},
    host::{
        Activity, Call, CallKind, Control, FailureSite, LoadFailure, LoadRequest, Setup, Signals,
        Waker,
    },
    outbound::{self, Job, Request},
    shim, watchdog,
};

/// Outcomes of `Host.start`, as the Python side numbers them.
const DONE: u8 = 0;
const RAISED: u8 = 1;
const PENDING: u8 = 2;

/// Calls handled per wake-up before the loop gets a turn for its other work.
const CALLS_PER_WAKE: usize = 64;

const USERS_FOR_STATES: &str = "get_users_for_states";
const INTERESTED_USERS: &str = "get_interested_users";

/// A loaded router's callbacks.
struct RouterEntry {
    name: Arc<str>,
    users_for_states: Py<PyAny>,
    interested_users: Py<PyAny>,
    /// The module object, kept alive as long as the router is loaded.
    _module: Py<PyAny>,
}

/// A call whose callback is still running on the loop.
struct Pending {
    router: Arc<str>,
    stats: Arc<PythonRouterStats>,
    kind: PendingKind,
}

enum PendingKind {
    UsersForStates {
        batch: PreparedBatch,
        reply: oneshot::Sender<Result<UserStates, RouterError>>,
    },
    InterestedUsers {
        reply: oneshot::Sender<Result<InterestedUsers, RouterError>>,
    },
}

#[derive(Default)]
struct Tables {
    routers: FxHashMap<u64, RouterEntry>,
    pending: FxHashMap<u64, Pending>,
    /// The server-side API of each loaded module, by module id.
    apis: FxHashMap<u64, ModuleApi>,
}

/// What starting a callback gave.
enum Outcome<'py> {
    Done(Bound<'py, PyAny>),
    Raised(Bound<'py, PyAny>),
    Pending,
}

/// The Rust side of the Python thread. See the module documentation.
#[pyclass(unsendable)]
pub(crate) struct Bridge {
    wake_rx: UnixStream,
    waker: Arc<Waker>,
    calls: Receiver<Call>,
    control: Receiver<Control>,
    signals: Arc<Signals>,
    outbound: outbound::Sender,
    states: StateObjects,
    /// `synapse._presenced`, for `describe` and the exception classes.
    glue: Py<PyModule>,
    stuck_after: Duration,
    host: RefCell<Option<Py<PyAny>>>,
    tables: RefCell<Tables>,
    /// When the interpreter's allocated blocks were last read (`Signals` milliseconds).
    blocks_read_at: std::cell::Cell<Option<u64>>,
}

/// The started host, before its loop runs.
pub(crate) struct Running {
    host: Py<PyAny>,
    bridge: Py<Bridge>,
    glue: Py<PyModule>,
    wake_fd: i32,
    thread_id: u64,
    pub(crate) python_version: String,
    pub(crate) twisted: bool,
    pub(crate) twisted_note: Option<String>,
}

impl Running {
    /// How the watchdog finds what blocks this thread's loop and raises an exception in it.
    pub(crate) fn interrupt(&self, py: Python<'_>) -> Option<watchdog::Interrupt> {
        let glue = self.glue.bind(py);
        let function = glue.getattr("interrupt").ok()?;
        let blocker = glue.getattr("blocker").ok()?;
        Some(watchdog::Interrupt::new(
            function.unbind(),
            blocker.unbind(),
            self.thread_id,
        ))
    }

    /// Runs the event loop until shutdown.
    pub(crate) fn run(self, py: Python<'_>) {
        if let Err(e) = self.host.call_method1(py, "run", (self.wake_fd,)) {
            tracing::error!(error = %e, "The Python event loop ended on an error.");
        }
        // The host and the bridge refer to each other; break the cycle.
        if let Ok(bridge) = self.bridge.try_borrow(py) {
            let host = bridge.host.borrow_mut().take();
            drop(host);
            let tables = std::mem::take(&mut *bridge.tables.borrow_mut());
            drop(tables);
        }
    }
}

/// Sets up the interpreter on the current thread (which becomes the Python thread).
pub(crate) fn start(py: Python<'_>, setup: Setup) -> Result<Running, PythonError> {
    let start_error = |e: PyErr| PythonError::Start(e.to_string());
    let glue = shim::install(py).map_err(start_error)?;

    let paths: Vec<String> = setup
        .options
        .paths
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let venv = setup
        .options
        .venv
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned());
    let venv_error: Option<String> = glue
        .call_method1("add_paths", (paths, venv.clone()))
        .and_then(|r| r.extract())
        .map_err(start_error)?;
    if let Some(reason) = venv_error {
        return Err(PythonError::Venv {
            path: venv.unwrap_or_default(),
            reason,
        });
    }

    let sink = wrap_pyfunction!(forward_log, py).map_err(start_error)?;
    glue.call_method1("install_logging", (sink, python_log_level()))
        .map_err(start_error)?;

    let state_class = py
        .import("synapse.api.presence")
        .and_then(|m| m.getattr("UserPresenceState"))
        .map_err(start_error)?;
    let states = StateObjects::new(py, &state_class).map_err(start_error)?;

    let wake_fd = setup.wake_rx.as_raw_fd();
    let stuck_after = setup.options.stuck_after();
    let timeout = setup.options.call_timeout.as_secs_f64();
    let twisted_mode = setup.options.twisted;
    let bridge = Py::new(
        py,
        Bridge {
            wake_rx: setup.wake_rx,
            waker: setup.waker,
            calls: setup.calls,
            control: setup.control,
            signals: setup.signals,
            outbound: setup.outbound,
            states,
            glue: glue.clone().unbind(),
            stuck_after,
            host: RefCell::new(None),
            tables: RefCell::new(Tables::default()),
            blocks_read_at: std::cell::Cell::new(None),
        },
    )
    .map_err(start_error)?;

    let host = glue
        .getattr("Host")
        .and_then(|cls| cls.call1((bridge.clone_ref(py), timeout, twisted_mode.code())))
        .map_err(|e| {
            if twisted_mode == crate::TwistedMode::Required {
                PythonError::Twisted(e.value(py).to_string())
            } else {
                start_error(e)
            }
        })?;
    *bridge.borrow(py).host.borrow_mut() = Some(host.clone().unbind());

    let read = || -> PyResult<(u64, bool, Option<String>, String)> {
        Ok((
            host.getattr("thread_id")?.extract()?,
            !host.getattr("reactor")?.is_none(),
            host.getattr("twisted_note")?.extract()?,
            py.import("sys")?.getattr("version")?.extract()?,
        ))
    };
    let (thread_id, twisted, twisted_note, python_version) = read().map_err(start_error)?;
    Ok(Running {
        host: host.unbind(),
        bridge,
        glue: glue.unbind(),
        wake_fd,
        thread_id,
        python_version,
        twisted,
        twisted_note,
    })
}

#[pymethods]
impl Bridge {
    /// Called by the loop when the wake-up socket is readable.
    fn drain(&self, py: Python<'_>) {
        self.drain_queues(py);
        self.read_allocated_blocks(py);
    }

    /// Called by the host when a pending call's task is done.
    fn finish(&self, py: Python<'_>, call_id: u64, status: u8, value: Bound<'_, PyAny>) {
        let pending = self.tables.borrow_mut().pending.remove(&call_id);
        let Some(Pending {
            router,
            stats,
            kind,
        }) = pending
        else {
            return;
        };
        match kind {
            PendingKind::UsersForStates { batch, reply } => {
                let answer = match status {
                    DONE => {
                        convert::users_from_py(py, &value, &batch, &self.states, &router, &stats)
                    }
                    RAISED => Err(self.failure(py, &value, &router, USERS_FOR_STATES, &stats)),
                    _ => Err(RouterError::TimedOut),
                };
                let _ = reply.send(answer);
            }
            PendingKind::InterestedUsers { reply } => {
                let answer = match status {
                    DONE => convert::interested_from_py(&value, &router, &stats),
                    RAISED => Err(self.failure(py, &value, &router, INTERESTED_USERS, &stats)),
                    _ => Err(RouterError::TimedOut),
                };
                let _ = reply.send(answer);
            }
        }
    }

    /// `ModuleApi.send_local_online_presence_to`: hands the request to the server. Returns an
    /// error message, or `None` once the request is on its way (the server's answer comes
    /// back as a `Control::Resolve`).
    fn send_presence(&self, api_id: u64, users: Vec<String>, waiter: u64) -> Option<String> {
        let api = self.tables.borrow().apis.get(&api_id).cloned();
        let Some(api) = api else {
            return Some("this module is not connected to the server".to_owned());
        };
        let mut targets = Vec::with_capacity(users.len());
        for user in &users {
            match UserId::parse(user) {
                Ok(id) => targets.push(id),
                Err(e) => return Some(format!("invalid user ID {user:?}: {e}")),
            }
        }
        outbound::send(
            &self.outbound,
            Job {
                api,
                request: Request::SendPresenceTo(targets),
                waiter,
            },
        )
        .err()
    }

    /// `ModuleApi.set_presence_for_users`: `(user_id, presence, status_msg)` entries, checked
    /// here and handed to the server as [`Self::send_presence`] does.
    fn set_presence(
        &self,
        api_id: u64,
        states: Vec<(String, String, Option<String>)>,
        waiter: u64,
    ) -> Option<String> {
        let api = self.tables.borrow().apis.get(&api_id).cloned();
        let Some(api) = api else {
            return Some("this module is not connected to the server".to_owned());
        };
        let mut forced = Vec::with_capacity(states.len());
        for (user, state, status_msg) in states {
            let user = match UserId::parse(&user) {
                Ok(id) => id,
                Err(e) => return Some(format!("invalid user ID {user:?}: {e}")),
            };
            let Some(state) = PresenceState::from_wire(&state) else {
                return Some(format!("invalid presence {state:?} for {user}"));
            };
            forced.push(ForcedPresence {
                user,
                state,
                status_msg: status_msg.map(Into::into),
            });
        }
        outbound::send(
            &self.outbound,
            Job {
                api,
                request: Request::SetPresence(forced),
                waiter,
            },
        )
        .err()
    }

    /// Counts a failed background process (the host has logged it).
    fn background_failed(&self) {
        self.signals
            .stats
            .background_failures
            .fetch_add(1, Ordering::Relaxed);
    }
}

impl Bridge {
    /// Handles what is queued: control messages, then up to [`CALLS_PER_WAKE`] calls.
    fn drain_queues(&self, py: Python<'_>) {
        self.signals.beat();
        let mut buf = [0u8; 64];
        while matches!((&self.wake_rx).read(&mut buf), Ok(n) if n > 0) {}
        // Cleared before the queues are read: anything queued from now on wakes us again.
        self.waker.notified.store(false, Ordering::Release);

        while let Ok(message) = self.control.try_recv() {
            match message {
                Control::Shutdown => {
                    self.call_host(py, "stop", ());
                    return;
                }
                Control::Load(request) => self.load(py, request),
                Control::Cancel(id) => self.call_host(py, "cancel", (id,)),
                Control::Unload(id) => {
                    let entry = self.tables.borrow_mut().routers.remove(&id);
                    drop(entry);
                    self.tables.borrow_mut().apis.remove(&id);
                    self.call_host(py, "unload", (id,));
                }
                Control::Resolve { waiter, error } => {
                    self.call_host(py, "resolve", (waiter, error));
                }
            }
        }
        for _ in 0..CALLS_PER_WAKE {
            let Ok(call) = self.calls.try_recv() else {
                return;
            };
            self.dispatch(py, call);
            self.signals.beat();
        }
        // More calls wait: let the loop run its timers and tasks first, then come back.
        self.waker.wake();
    }

    /// Records the interpreter's allocated memory blocks (`sys.getallocatedblocks()`), at
    /// most once a second: in CPython 3.12 and later the count walks every memory pool.
    fn read_allocated_blocks(&self, py: Python<'_>) {
        let now = self.signals.now_ms();
        if self
            .blocks_read_at
            .get()
            .is_some_and(|at| now.saturating_sub(at) < 1000)
        {
            return;
        }
        self.blocks_read_at.set(Some(now));
        let blocks = py
            .import(intern!(py, "sys"))
            .and_then(|sys| sys.call_method0(intern!(py, "getallocatedblocks")))
            .and_then(|n| n.extract::<u64>());
        match blocks {
            Ok(n) => self
                .signals
                .stats
                .allocated_blocks
                .store(n, Ordering::Relaxed),
            Err(e) => tracing::debug!(error = %e, "Could not read the Python heap size."),
        }
    }

    fn host(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.host.borrow().as_ref().map(|h| h.clone_ref(py))
    }

    fn call_host<'py, A>(&self, py: Python<'py>, method: &str, args: A)
    where
        A: pyo3::call::PyCallArgs<'py>,
    {
        let Some(host) = self.host(py) else { return };
        if let Err(e) = host.bind(py).call_method1(method, args) {
            tracing::error!(method, error = %e, "The Python module host failed.");
        }
    }

    fn dispatch(&self, py: Python<'_>, call: Call) {
        let Call {
            id,
            router,
            kind,
            stats,
        } = call;
        let closed = match &kind {
            CallKind::UsersForStates { reply, .. } => reply.is_closed(),
            CallKind::InterestedUsers { reply, .. } => reply.is_closed(),
        };
        // The caller gave up while the call queued (typically while the loop was stuck).
        if closed {
            return;
        }
        let entry = self.tables.borrow().routers.get(&router).map(|e| {
            (
                e.name.clone(),
                e.users_for_states.clone_ref(py),
                e.interested_users.clone_ref(py),
            )
        });
        let Some((name, users_for_states, interested_users)) = entry else {
            let gone = RouterError::Failed("the Python router was unloaded".to_owned());
            match kind {
                CallKind::UsersForStates { reply, .. } => drop(reply.send(Err(gone))),
                CallKind::InterestedUsers { reply, .. } => drop(reply.send(Err(gone))),
            }
            return;
        };
        match kind {
            CallKind::UsersForStates { batch, reply } => {
                let prepared = match self.states.prepare(py, &batch) {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = reply.send(Err(RouterError::Failed(format!(
                            "cannot build the Python states: {e}"
                        ))));
                        return;
                    }
                };
                let argument = match prepared.as_list(py) {
                    Ok(list) => list.into_any(),
                    Err(e) => {
                        let _ = reply.send(Err(RouterError::Failed(format!(
                            "cannot build the Python states: {e}"
                        ))));
                        return;
                    }
                };
                match self.start(py, id, &users_for_states, argument, &name, USERS_FOR_STATES) {
                    Outcome::Done(answer) => {
                        let answer = convert::users_from_py(
                            py,
                            &answer,
                            &prepared,
                            &self.states,
                            &name,
                            &stats,
                        );
                        let _ = reply.send(answer);
                    }
                    Outcome::Raised(exc) => {
                        let error = self.failure(py, &exc, &name, USERS_FOR_STATES, &stats);
                        let _ = reply.send(Err(error));
                    }
                    Outcome::Pending => {
                        self.tables.borrow_mut().pending.insert(
                            id,
                            Pending {
                                router: name,
                                stats,
                                kind: PendingKind::UsersForStates {
                                    batch: prepared,
                                    reply,
                                },
                            },
                        );
                    }
                }
            }
            CallKind::InterestedUsers { user, reply } => {
                let argument = pyo3::types::PyString::new(py, user.as_str()).into_any();
                match self.start(py, id, &interested_users, argument, &name, INTERESTED_USERS) {
                    Outcome::Done(answer) => {
                        let _ = reply.send(convert::interested_from_py(&answer, &name, &stats));
                    }
                    Outcome::Raised(exc) => {
                        let error = self.failure(py, &exc, &name, INTERESTED_USERS, &stats);
                        let _ = reply.send(Err(error));
                    }
                    Outcome::Pending => {
                        self.tables.borrow_mut().pending.insert(
                            id,
                            Pending {
                                router: name,
                                stats,
                                kind: PendingKind::InterestedUsers { reply },
                            },
                        );
                    }
                }
            }
        }
    }

    /// Runs `Host.start(id, callback, argument)`.
    fn start<'py>(
        &self,
        py: Python<'py>,
        id: u64,
        callback: &Py<PyAny>,
        argument: Bound<'py, PyAny>,
        router: &Arc<str>,
        method: &'static str,
    ) -> Outcome<'py> {
        let Some(host) = self.host(py) else {
            let error = pyo3::exceptions::PyRuntimeError::new_err("the module host has stopped");
            return Outcome::Raised(error.into_value(py).into_bound(py).into_any());
        };
        self.signals.set_activity(Some(Activity {
            router: router.clone(),
            method,
        }));
        let started = host
            .bind(py)
            .call_method1(intern!(py, "start"), (id, callback.bind(py), argument))
            .and_then(|r| r.extract::<(u8, Bound<'py, PyAny>)>());
        self.signals.set_activity(None);
        match started {
            Ok((DONE, answer)) => Outcome::Done(answer),
            Ok((PENDING, _)) => Outcome::Pending,
            Ok((_, exc)) => Outcome::Raised(exc),
            // Only an exception raised into the host's own code lands here (an interrupt
            // delivered just as the callback returned).
            Err(e) => Outcome::Raised(e.into_value(py).into_bound(py).into_any()),
        }
    }

    /// Logs and counts an exception raised by a router callback.
    fn failure(
        &self,
        py: Python<'_>,
        exc: &Bound<'_, PyAny>,
        router: &str,
        method: &str,
        stats: &PythonRouterStats,
    ) -> RouterError {
        stats.exceptions.fetch_add(1, Ordering::Relaxed);
        let glue = self.glue.bind(py);
        let interrupted = glue
            .getattr("InterpreterStuck")
            .and_then(|cls| exc.is_instance(&cls))
            .unwrap_or(false);
        let (short, traceback) = glue
            .call_method1("describe", (exc,))
            .and_then(|d| d.extract::<(String, String)>())
            .unwrap_or_else(|_| {
                let text = exc.str().map(|s| s.to_string()).unwrap_or_default();
                (text.clone(), text)
            });
        if interrupted {
            tracing::warn!(
                router,
                method,
                "Python presence router blocked the event loop and was interrupted.\n{traceback}"
            );
            RouterError::Failed(format!(
                "interrupted after blocking the Python event loop for more than {} ms",
                self.stuck_after.as_millis()
            ))
        } else {
            tracing::warn!(
                router,
                method,
                "Python presence router raised an exception.\n{traceback}"
            );
            RouterError::Failed(short)
        }
    }

    fn load(&self, py: Python<'_>, request: LoadRequest) {
        self.signals.loading.store(true, Ordering::Release);
        let result = self.load_module(py, &request);
        self.signals.loading.store(false, Ordering::Release);
        self.signals.beat();
        let _ = request.reply.send(result);
    }

    fn load_module(&self, py: Python<'_>, request: &LoadRequest) -> Result<bool, LoadFailure> {
        let construct = |message: String| LoadFailure {
            site: FailureSite::Construct,
            message,
        };
        let host = self
            .host(py)
            .ok_or_else(|| construct("the Python module host has stopped".to_owned()))?;
        // Registered first: the constructor may already start background work that uses it.
        self.tables
            .borrow_mut()
            .apis
            .insert(request.id, request.api.clone());
        let config = convert::json_to_py(py, &request.config)
            .map_err(|e| construct(format!("cannot pass the configuration to Python: {e}")))?;
        let loaded = host.bind(py).call_method1(
            "load",
            (
                request.form,
                request.module.as_str(),
                config,
                request.id,
                request.api.server_name().as_str(),
            ),
        );
        let loaded = match loaded {
            Ok(v) => v,
            Err(e) => return Err(self.load_failure(py, &e, request)),
        };
        if loaded.is_none() {
            return Ok(false);
        }
        let (users_for_states, interested_users, module) = loaded
            .extract::<(Py<PyAny>, Py<PyAny>, Py<PyAny>)>()
            .map_err(|e| construct(format!("unexpected result from the module loader: {e}")))?;
        self.tables.borrow_mut().routers.insert(
            request.id,
            RouterEntry {
                name: Arc::from(request.module.as_str()),
                users_for_states,
                interested_users,
                _module: module,
            },
        );
        Ok(true)
    }

    fn load_failure(&self, py: Python<'_>, error: &PyErr, request: &LoadRequest) -> LoadFailure {
        let module = request.module.as_str();
        let glue = self.glue.bind(py);
        let exc = error.value(py);
        // The underlying exception's traceback helps more than the message alone.
        let cause = exc.getattr("__cause__").ok().filter(|c| !c.is_none());
        let shown = cause.as_ref().unwrap_or(exc.as_any());
        if let Ok((_, traceback)) = glue
            .call_method1("describe", (shown,))
            .and_then(|d| d.extract::<(String, String)>())
        {
            if request.quiet {
                tracing::debug!(module, "Loading a Python module failed.\n{traceback}");
            } else {
                tracing::error!(module, "Loading a Python module failed.\n{traceback}");
            }
        }
        let is_load_failure = glue
            .getattr("LoadFailure")
            .and_then(|cls| exc.is_instance(&cls))
            .unwrap_or(false);
        if !is_load_failure {
            return LoadFailure {
                site: FailureSite::Construct,
                message: format!("cannot load {module}: {error}"),
            };
        }
        let read = || -> PyResult<LoadFailure> {
            let site: String = exc.getattr("where")?.extract()?;
            let message: String = exc.getattr("message")?.extract()?;
            let site = match site.as_str() {
                "module" => FailureSite::Module,
                "config" => FailureSite::Config(exc.getattr("path")?.extract()?),
                _ => FailureSite::Construct,
            };
            Ok(LoadFailure { site, message })
        };
        read().unwrap_or_else(|e| LoadFailure {
            site: FailureSite::Construct,
            message: format!("cannot load {module}: {e}"),
        })
    }
}

/// The Python logging level matching the most verbose level Rust logs are kept at.
fn python_log_level() -> u32 {
    use tracing::level_filters::LevelFilter;
    match LevelFilter::current() {
        LevelFilter::TRACE => 1,
        LevelFilter::DEBUG => 10,
        LevelFilter::INFO => 20,
        LevelFilter::WARN => 30,
        LevelFilter::ERROR => 40,
        _ => 100,
    }
}

/// Receives the records of Python's `logging`.
#[pyfunction]
fn forward_log(level: u32, logger: &str, message: &str) {
    const TARGET: &str = "presence_python::module";
    match level {
        40.. => tracing::error!(target: TARGET, logger, "{message}"),
        30..=39 => tracing::warn!(target: TARGET, logger, "{message}"),
        20..=29 => tracing::info!(target: TARGET, logger, "{message}"),
        10..=19 => tracing::debug!(target: TARGET, logger, "{message}"),
        _ => tracing::trace!(target: TARGET, logger, "{message}"),
    }
}
