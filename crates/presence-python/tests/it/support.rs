//! Shared fixtures: hosts, module APIs, batches.

use std::{
    collections::BTreeMap,
    io::Write,
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use presence_python::{PythonHost, PythonOptions, PythonRouter, TwistedMode};
use presence_router::{
    ModuleApi, ModuleCommand, PresenceState, ServerName, StateBatch, UserId, UserPresenceState,
    UserStates,
};
use serde_json::Value;
use tokio::sync::mpsc;

/// The server name every module API in these tests has.
pub(crate) const SERVER: &str = "test";

pub(crate) fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python")
}

/// Options with the fixtures on `sys.path` and Twisted off (only the Twisted test, which has
/// its own host, turns it on: there is one reactor per process).
pub(crate) fn options() -> PythonOptions {
    let mut options = PythonOptions::default();
    options.paths.push(fixtures());
    options.twisted = TwistedMode::Off;
    options
}

/// A host shared by the tests whose modules behave.
pub(crate) fn shared_host() -> &'static PythonHost {
    static HOST: OnceLock<PythonHost> = OnceLock::new();
    HOST.get_or_init(|| start(options()))
}

/// A host of its own, for tests whose modules block or hang.
pub(crate) fn own_host(configure: impl FnOnce(&mut PythonOptions)) -> PythonHost {
    let mut options = options();
    configure(&mut options);
    start(options)
}

/// Starts a host once the log capture is in place (the host reads the log level at start).
pub(crate) fn start(options: PythonOptions) -> PythonHost {
    capture_logs();
    PythonHost::start(options).expect("the Python host starts")
}

/// One entry per log event (the formatter writes each event in one piece).
static LOGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock()
            .unwrap()
            .push(String::from_utf8_lossy(buf).into_owned());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends every log line of the process (INFO and above) to a buffer tests can search: the
/// Python thread logs, so a thread-local subscriber would not see it.
pub(crate) fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(|| Capture)
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

/// Waits up to a second for a log event holding every one of `parts`.
pub(crate) async fn logged(parts: &[&str]) -> bool {
    eventually(Duration::from_secs(1), || logged_now(parts)).await
}

/// Whether a log event holding every one of `parts` was logged so far.
pub(crate) fn logged_now(parts: &[&str]) -> bool {
    LOGS.lock()
        .unwrap()
        .iter()
        .any(|event| parts.iter().all(|p| event.contains(p)))
}

/// Everything logged so far, for failure messages.
pub(crate) fn all_logs() -> String {
    LOGS.lock().unwrap().concat()
}

pub(crate) fn uid(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

pub(crate) fn server() -> ServerName {
    ServerName::parse(SERVER).unwrap()
}

/// A module API whose commands are not handled.
pub(crate) fn api() -> ModuleApi {
    ModuleApi::detached(server())
}

/// A module API whose commands the test reads.
pub(crate) fn api_with_commands() -> (ModuleApi, mpsc::Receiver<ModuleCommand>) {
    let (tx, rx) = mpsc::channel(16);
    (ModuleApi::new(server(), tx), rx)
}

pub(crate) fn load_legacy(module: &str, config: Value) -> PythonRouter {
    shared_host()
        .load_legacy("presence.presence_router", module, &config, &api())
        .unwrap_or_else(|e| panic!("{module} does not load: {e}"))
        .unwrap_or_else(|| panic!("{module} registers no router"))
}

pub(crate) fn load_module(module: &str, config: Value) -> PythonRouter {
    shared_host()
        .load_module("modules[0]", module, &config, &api())
        .unwrap_or_else(|e| panic!("{module} does not load: {e}"))
        .unwrap_or_else(|| panic!("{module} registers no router"))
}

/// A state of `user`, with every field set so that conversions are exercised.
pub(crate) fn state(user: &str, n: u64) -> UserPresenceState {
    UserPresenceState {
        state: PresenceState::ALL[(n % 4) as usize],
        last_active_ts: 1_700_000_000_000 + n,
        last_federation_update_ts: n,
        last_user_sync_ts: 2 * n,
        status_msg: n
            .is_multiple_of(2)
            .then(|| Arc::from(format!("status {n}"))),
        currently_active: n.is_multiple_of(3),
        ..UserPresenceState::offline(uid(user))
    }
}

pub(crate) fn batch(users: &[&str]) -> StateBatch {
    StateBatch::new(
        users
            .iter()
            .enumerate()
            .map(|(n, u)| state(u, n as u64))
            .collect(),
    )
}

/// An answer as recipient → positions in the batch, comparable across routers.
pub(crate) fn positions(answer: &UserStates) -> BTreeMap<String, Vec<usize>> {
    answer
        .iter()
        .map(|(user, set)| (user.to_string(), set.indices().collect()))
        .collect()
}

/// Polls `condition` every 10 ms for up to `limit`.
pub(crate) async fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition()
}
