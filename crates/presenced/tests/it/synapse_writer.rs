//! Presenced as the presence stream writer of a real Synapse deployment (main, one sync worker,
//! PostgreSQL, Redis) from `scripts/synapse-deployment.sh start <dir>`, named by
//! `PRESENCED_SYNAPSE_DEPLOYMENT`; `.ci/run` starts one. Without it every test here prints that it
//! is skipped and passes (and fails under CI, like the other tests that need outside programs).
//!
//! Black-box: each test starts the real binary as `presenced -c homeserver.yaml -c
//! presenced-writer.yaml`, then speaks only HTTP to Synapse (clients use the sync worker) and to
//! Presenced's own listeners, and reads PostgreSQL with `psql`. The deployment has one writer
//! slot, so the tests take turns ([`WRITER_SLOT`]) and each stops its Presenced before the next
//! starts. Presenced's output goes to `<dir>/logs/presenced-<test>.log`; failures quote its tail.

use std::{
    collections::HashMap,
    fmt::Write as _,
    fs::OpenOptions,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{Mutex, MutexGuard};

use crate::matrix::{q, registration_mac};

mod federation;
mod module_api;
mod services;

/// The variable naming the deployment directory.
const DEPLOYMENT_VAR: &str = "PRESENCED_SYNAPSE_DEPLOYMENT";
/// How long Presenced may take to answer `/health` on both listeners.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long Presenced may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a presence change may take to reach a room-mate's `/sync` on the sync worker.
const SEEN_WITHIN: Duration = Duration::from_secs(15);
/// How long a user who stopped syncing may stay online: Synapse's `sync_online_timeout` (30 s),
/// the sync worker's 10 s before `USER_SYNC end`, the writer's 5 s timeout loop, and slack.
const OFFLINE_WITHIN: Duration = Duration::from_secs(90);
/// The shortest time a user who stopped syncing must stay online (`sync_online_timeout` is 30 s,
/// counted from the last sync, which began a little before we saw its response).
const ONLINE_AT_LEAST: Duration = Duration::from_secs(25);
/// Each HTTP request's limit. Synapse retries a missing writer for about a minute, so a hung
/// request means Presenced is not answering the sync worker.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(45);
/// Lines of Presenced's log quoted in a failure.
const LOG_TAIL_LINES: usize = 60;

/// The password of the deployment's routed watcher (`SYNAPSE_ROUTED_WATCHER`), which outlives
/// test runs on a reused deployment; the nio script is given the same one.
const ROUTED_WATCHER_PASSWORD: &str = "pw-routed-watcher";

/// Held by the test whose Presenced is the deployment's writer: one writer at a time.
static WRITER_SLOT: Mutex<()> = Mutex::const_new(());

// ---- the deployment -------------------------------------------------------------------------

/// The variables of `<dir>/env`, written by `scripts/synapse-deployment.sh start`.
struct Deployment {
    env_file: PathBuf,
    vars: HashMap<String, String>,
}

/// The deployment, or `None` (after saying so) when `PRESENCED_SYNAPSE_DEPLOYMENT` is not set.
fn deployment(test: &str) -> Option<&'static Deployment> {
    static DEPLOYMENT: OnceLock<Option<Deployment>> = OnceLock::new();
    let found = DEPLOYMENT.get_or_init(|| match std::env::var_os(DEPLOYMENT_VAR) {
        Some(dir) if !dir.is_empty() => Some(Deployment::load(Path::new(&dir))),
        _ if std::env::var_os("CI").is_some() => panic!(
            "CI must set {DEPLOYMENT_VAR} to a running Synapse deployment \
             (scripts/synapse-deployment.sh start <dir>; see .ci/run)"
        ),
        _ => None,
    });
    if found.is_none() {
        eprintln!(
            "skipped synapse_writer::{test}: {DEPLOYMENT_VAR} not set (start a deployment with \
             `scripts/synapse-deployment.sh start <dir>` and set {DEPLOYMENT_VAR}=<dir>)"
        );
    }
    found.as_ref()
}

impl Deployment {
    /// Reads `<dir>/env`: lines `export NAME='value'` (no value holds a quote).
    fn load(dir: &Path) -> Self {
        let env_file = dir.join("env");
        let text = std::fs::read_to_string(&env_file).unwrap_or_else(|e| {
            panic!(
                "{DEPLOYMENT_VAR}={}: cannot read {} ({e}); is a deployment running there \
                 (scripts/synapse-deployment.sh start <dir>)?",
                dir.display(),
                env_file.display()
            )
        });
        let vars = text
            .lines()
            .filter_map(|line| line.trim().strip_prefix("export "))
            .filter_map(|assignment| assignment.split_once('='))
            .map(|(name, value)| (name.to_owned(), value.trim_matches('\'').to_owned()))
            .collect();
        let deployment = Self { env_file, vars };
        assert_eq!(
            deployment.var("SYNAPSE_STOCK_WRITER"),
            "0",
            "{} was started with --stock-writer: Synapse's own worker holds the `presenced` \
             name, so Presenced cannot be tested there; start one without it",
            dir.display()
        );
        deployment
    }

    fn var(&self, name: &str) -> &str {
        self.vars
            .get(name)
            .unwrap_or_else(|| panic!("{} has no {name}", self.env_file.display()))
    }

    fn dir(&self) -> &Path {
        Path::new(self.var("SYNAPSE_DEPLOYMENT_DIR"))
    }

    /// Presenced's command-line arguments for a third config file, `<dir>/<name>.yaml`, that
    /// replaces the shared file's `presence` section: the same example router, its watchers
    /// and `more_watchers`, and `federation_ping_interval` when given. Synapse's processes
    /// keep the shared file's.
    fn presence_section(
        &self,
        name: &str,
        more_watchers: &[&str],
        ping_interval: Option<&str>,
    ) -> Vec<String> {
        let mut watchers = vec![
            self.var("SYNAPSE_ROUTED_WATCHER"),
            self.var("SYNAPSE_REMOTE_ROUTED_WATCHER"),
        ];
        watchers.extend_from_slice(more_watchers);
        let mut presence = json!({
            "enabled": true,
            "presence_router": {
                "module": "example_router.ExamplePresenceRouter",
                "config": {"always_send_to_users": watchers, "blacklisted_users": []},
            },
        });
        if let Some(every) = ping_interval {
            presence["federation_ping_interval"] = json!(every);
        }
        let file = self.dir().join(format!("{name}.yaml"));
        // JSON is YAML.
        std::fs::write(&file, json!({"presence": presence}).to_string()).unwrap();
        vec!["-c".to_owned(), file.to_string_lossy().into_owned()]
    }

    fn main_url(&self) -> &str {
        self.var("SYNAPSE_MAIN_URL")
    }

    /// The sync worker: clients `/sync` and `PUT /presence` here.
    fn worker_url(&self) -> &str {
        self.var("SYNAPSE_WORKER_URL")
    }

    fn replication_url(&self) -> String {
        let port = self.var("PRESENCED_WRITER_REPLICATION_PORT");
        format!("http://127.0.0.1:{port}")
    }

    fn metrics_url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/metrics",
            self.var("PRESENCED_WRITER_METRICS_PORT")
        )
    }

    fn presenced_client_url(&self) -> String {
        format!(
            "http://127.0.0.1:{}",
            self.var("PRESENCED_WRITER_CLIENT_PORT")
        )
    }

    /// Runs one query with `psql` (unaligned, tuples only, `|` between columns); `None` when
    /// `psql` is not installed.
    fn psql(&self, sql: &str) -> Option<String> {
        let out = Command::new("psql")
            .args(["-X", "-q", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1"])
            .args(["-d", self.var("SYNAPSE_PG_DSN"), "-c", sql])
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(out) if out.status.success() => Some(String::from_utf8_lossy(&out.stdout).into()),
            Ok(out) => panic!(
                "psql {sql:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("cannot run psql: {e}"),
        }
    }
}

// ---- Presenced ------------------------------------------------------------------------------

/// The Presenced process serving the deployment's `presenced` writer slot.
struct Writer {
    deployment: &'static Deployment,
    child: Option<Child>,
    log: PathBuf,
    started: u32,
    /// More command-line arguments (e.g. a third `-c` file).
    extra: Vec<String>,
    // Last: released after `drop` has stopped the process.
    _slot: MutexGuard<'static, ()>,
}

impl Writer {
    /// Waits for the writer slot, then starts Presenced (with `extra` command-line arguments)
    /// and waits until it is healthy.
    async fn start_with(deployment: &'static Deployment, test: &str, extra: Vec<String>) -> Self {
        let slot = WRITER_SLOT.lock().await;
        let log =
            Path::new(deployment.var("SYNAPSE_LOG_DIR")).join(format!("presenced-{test}.log"));
        std::fs::write(&log, "").unwrap();
        let mut writer = Self {
            deployment,
            child: None,
            log,
            started: 0,
            extra,
            _slot: slot,
        };
        writer.spawn().await;
        writer
    }

    async fn spawn(&mut self) {
        let d = self.deployment;
        // A leftover Presenced (another test process) or a stock writer would answer our health
        // checks and take the RDATA: refuse to test against it.
        for url in [d.replication_url(), d.presenced_client_url()] {
            assert!(
                health(&url).await.is_err(),
                "something already answers {url}/health before this test started Presenced: \
                 a leftover Presenced, another test run against the same deployment, or a stock \
                 writer. Only one writer may run."
            );
        }
        self.started += 1;
        let mut log = OpenOptions::new().append(true).open(&self.log).unwrap();
        writeln!(
            log,
            "==== test: starting Presenced (start #{})",
            self.started
        )
        .unwrap();
        let t = Instant::now();
        let child = Command::new(env!("CARGO_BIN_EXE_presenced"))
            .args(["-c", d.var("SYNAPSE_HOMESERVER_YAML")])
            .args(["-c", d.var("PRESENCED_WRITER_YAML")])
            .args(&self.extra)
            .current_dir(d.dir())
            // Where the deployment's Python modules are (the example router, and a module
            // only Synapse can load), as for Synapse's processes.
            .env("PYTHONPATH", d.var("SYNAPSE_PYTHONPATH"))
            .env("RUST_LOG", "info")
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_healthy().await;
        eprintln!("Presenced healthy after {:.1}s", t.elapsed().as_secs_f64());
    }

    /// Until both the replication and the client listener answer `/health` with 200.
    async fn wait_healthy(&mut self) {
        let d = self.deployment;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let replication = health(&d.replication_url()).await;
            let client = health(&d.presenced_client_url()).await;
            if replication.is_ok() && client.is_ok() {
                return;
            }
            let child = self.child.as_mut().unwrap();
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                panic!(
                    "Presenced did not become healthy: it exited ({status}) before its listeners \
                     answered /health\n{}",
                    self.log_tail()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "Presenced did not become healthy within {}s: replication listener: {}; \
                     client listener: {}\n{}",
                    STARTUP_TIMEOUT.as_secs(),
                    replication.err().unwrap_or_else(|| "ok".to_owned()),
                    client.err().unwrap_or_else(|| "ok".to_owned()),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGTERM, then waits: Presenced must exit with status 0.
    async fn stop(&mut self) {
        let mut child = self.child.take().expect("Presenced is not running");
        signal(&child, "TERM");
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "Presenced did not exit within {}s of SIGTERM (killed)\n{}",
                    STOP_TIMEOUT.as_secs(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            status.success(),
            "Presenced exited with {status} after SIGTERM, not 0\n{}",
            self.log_tail()
        );
    }

    /// Stops Presenced cleanly and starts it again with the same configuration.
    async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }

    /// The end of Presenced's log, for failure messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
        format!(
            "---- Presenced log {} (last {LOG_TAIL_LINES} lines) ----\n{tail}\n---- (Synapse's \
             logs: {}) ----",
            self.log.display(),
            self.deployment.var("SYNAPSE_LOG_DIR")
        )
    }
}

impl Drop for Writer {
    /// A test that failed half-way: stop Presenced (SIGTERM, then SIGKILL after 10 s) so the
    /// next test finds the ports free.
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(&child, "TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        eprintln!("Presenced log: {}", self.log.display());
    }
}

fn signal(child: &Child, name: &str) {
    signal_pid(child.id(), name);
}

fn signal_pid(pid: u32, name: &str) {
    let ok = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .is_ok_and(|s: ExitStatus| s.success());
    assert!(ok, "kill -{name} {pid} failed");
}

/// `GET {base}/health`: Ok on 200, else what went wrong.
async fn health(base: &str) -> Result<(), String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    match http.get(format!("{base}/health")).send().await {
        Ok(r) if r.status() == StatusCode::OK => Ok(()),
        Ok(r) => Err(format!("{base}/health answered {}", r.status())),
        Err(e) => Err(format!("{base}/health: {}", error_chain(&e))),
    }
}

/// An error and its causes (reqwest's own message hides why a request failed).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

// ---- clients --------------------------------------------------------------------------------

/// A registered user and their access token.
#[derive(Clone, Debug)]
struct Account {
    user_id: String,
    token: String,
}

/// A user's `/sync` stream (on the sync worker, or the remote Synapse for its users), and
/// every presence event it has delivered.
struct Watch {
    /// Where the stream syncs.
    base: String,
    account: Account,
    since: String,
    seen: Vec<Value>,
}

impl Watch {
    /// The presence contents of `of` this stream has delivered, oldest first.
    fn seen_of(&self, of: &Account) -> Vec<&Value> {
        self.seen
            .iter()
            .filter(|e| e["sender"] == of.user_id.as_str())
            .map(|e| &e["content"])
            .collect()
    }
}

/// One test against the deployment: its Presenced, and HTTP helpers whose failures quote
/// Presenced's log.
struct Scenario {
    d: &'static Deployment,
    writer: Writer,
    http: reqwest::Client,
    tag: &'static str,
}

impl Scenario {
    /// `None` when skipped; else waits for the writer slot and starts Presenced. `tag`, a short
    /// name for the test, goes into its users' localparts.
    async fn start(test: &'static str, tag: &'static str) -> Option<Self> {
        Self::start_with(test, tag, |_| Vec::new()).await
    }

    /// [`Self::start`] with more command-line arguments for Presenced, made from the
    /// deployment.
    async fn start_with(
        test: &'static str,
        tag: &'static str,
        extra: impl FnOnce(&'static Deployment) -> Vec<String>,
    ) -> Option<Self> {
        let d = deployment(test)?;
        let writer = Writer::start_with(d, test, extra(d)).await;
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap();
        Some(Self {
            d,
            writer,
            http,
            tag,
        })
    }

    /// Fails the test, quoting Presenced's log.
    #[track_caller]
    fn fail(&self, what: &str) -> ! {
        panic!("{what}\n{}", self.writer.log_tail())
    }

    /// Asserts `cond`, quoting Presenced's log when it does not hold.
    #[track_caller]
    fn check(&self, cond: bool, what: impl FnOnce() -> String) {
        if !cond {
            self.fail(&what());
        }
    }

    /// One request: (status, JSON body or Null). `auth` is the whole Authorization header.
    async fn call(
        &self,
        method: Method,
        url: &str,
        auth: Option<&str>,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method.clone(), url);
        if let Some(auth) = auth {
            req = req.header("Authorization", auth);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(e) => self.fail(&format!("{method} {url}: {}", error_chain(&e))),
        };
        let status = resp.status();
        let bytes = resp.bytes().await.unwrap_or_default();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, body)
    }

    /// A client-server request with `who`'s token that must answer 200.
    async fn ok(&self, method: Method, url: &str, who: &Account, body: Option<&Value>) -> Value {
        let auth = format!("Bearer {}", who.token);
        let (status, data) = self.call(method.clone(), url, Some(&auth), body).await;
        self.check(status == StatusCode::OK, || {
            format!("{method} {url} as {} -> {status} {data}", who.user_id)
        });
        data
    }

    /// Registers `{role}-{tag}-{run}` on main with the shared-secret admin API.
    async fn register(&self, role: &str) -> Account {
        let localpart = format!("{role}-{}-{}", self.tag, run_id());
        match self.try_register(&localpart, "pw-presenced-test").await {
            Ok(account) => account,
            Err((status, data)) => self.fail(&format!("registering {localpart}: {status} {data}")),
        }
    }

    /// Registers `{role}-{tag}-{run}` on main as a server admin.
    async fn register_admin(&self, role: &str) -> Account {
        let localpart = format!("{role}-{}-{}", self.tag, run_id());
        match self
            .try_register_as(&localpart, "pw-presenced-test", true)
            .await
        {
            Ok(account) => account,
            Err((status, data)) => self.fail(&format!("registering {localpart}: {status} {data}")),
        }
    }

    /// Shared-secret registration of `localpart` on main: the account, or the refusal.
    async fn try_register(
        &self,
        localpart: &str,
        password: &str,
    ) -> Result<Account, (StatusCode, Value)> {
        self.try_register_as(localpart, password, false).await
    }

    /// [`Self::try_register`], as an admin or not.
    async fn try_register_as(
        &self,
        localpart: &str,
        password: &str,
        admin: bool,
    ) -> Result<Account, (StatusCode, Value)> {
        self.try_register_at(self.d.main_url(), localpart, password, admin)
            .await
    }

    /// Shared-secret registration on the server whose client listener is `base` (main, or
    /// the remote Synapse, which has the same secret).
    async fn try_register_at(
        &self,
        base: &str,
        localpart: &str,
        password: &str,
        admin: bool,
    ) -> Result<Account, (StatusCode, Value)> {
        let url = format!("{base}/_synapse/admin/v1/register");
        let (status, nonce) = self.call(Method::GET, &url, None, None).await;
        self.check(status == StatusCode::OK, || {
            format!("GET {url} -> {status} {nonce}")
        });
        let nonce = nonce["nonce"].as_str().unwrap();
        let secret = self.d.var("SYNAPSE_SHARED_SECRET");
        let mac = registration_mac(secret, nonce, localpart, password, admin);
        let body = json!({"nonce": nonce, "username": localpart, "password": password,
                          "admin": admin, "mac": mac});
        let (status, data) = self.call(Method::POST, &url, None, Some(&body)).await;
        if status != StatusCode::OK {
            return Err((status, data));
        }
        Ok(Account {
            user_id: data["user_id"].as_str().unwrap().to_owned(),
            token: data["access_token"].as_str().unwrap().to_owned(),
        })
    }

    /// The user the deployment's example router sends everyone's presence to: registered on
    /// first use, logged in on a deployment that already has it.
    async fn routed_watcher(&self) -> Account {
        let user_id = self.d.var("SYNAPSE_ROUTED_WATCHER");
        self.fixed_account(self.d.main_url(), user_id).await
    }

    /// `user_id` on the server whose client listener is `base`, an account whose name does
    /// not change between runs: registered on first use, else logged in.
    async fn fixed_account(&self, base: &str, user_id: &str) -> Account {
        let localpart = user_id
            .strip_prefix('@')
            .and_then(|rest| rest.split(':').next())
            .unwrap();
        match self
            .try_register_at(base, localpart, ROUTED_WATCHER_PASSWORD, false)
            .await
        {
            Ok(account) => return account,
            Err((_, data)) if data["errcode"] == "M_USER_IN_USE" => {}
            Err((status, data)) => self.fail(&format!("registering {localpart}: {status} {data}")),
        }
        let url = format!("{base}/_matrix/client/v3/login");
        let body = json!({"type": "m.login.password", "password": ROUTED_WATCHER_PASSWORD,
                          "identifier": {"type": "m.id.user", "user": localpart}});
        let (status, data) = self.call(Method::POST, &url, None, Some(&body)).await;
        self.check(status == StatusCode::OK, || {
            format!("logging in {user_id}: {status} {data}")
        });
        Account {
            user_id: user_id.to_owned(),
            token: data["access_token"].as_str().unwrap().to_owned(),
        }
    }

    /// The value of an unlabelled metric on Presenced's metrics listener.
    async fn metric(&self, name: &str) -> f64 {
        let url = self.d.metrics_url();
        let text = match self.http.get(&url).send().await {
            Ok(resp) => resp.text().await.unwrap_or_default(),
            Err(e) => self.fail(&format!("GET {url}: {}", error_chain(&e))),
        };
        let value = text
            .lines()
            .filter_map(|line| line.strip_prefix(name))
            .find_map(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok());
        match value {
            Some(v) => v,
            None => self.fail(&format!("{url} has no {name}:\n{text}")),
        }
    }

    /// Waits (10 s at most) until the metric `name` is `want`.
    async fn wait_metric(&self, name: &str, want: f64) {
        let t = Instant::now();
        loop {
            let got = self.metric(name).await;
            if got == want {
                return;
            }
            if t.elapsed() > Duration::from_secs(10) {
                self.fail(&format!("{name} stayed {got}, want {want}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A private room (on main) that `a` creates and `b` joins.
    async fn share_room(&self, a: &Account, b: &Account) -> String {
        let main = self.d.main_url();
        let body = json!({"preset": "private_chat", "invite": [b.user_id]});
        let url = format!("{main}/_matrix/client/v3/createRoom");
        let room = self.ok(Method::POST, &url, a, Some(&body)).await;
        let room = room["room_id"].as_str().unwrap().to_owned();
        let url = format!("{main}/_matrix/client/v3/join/{}", q(&room));
        self.ok(Method::POST, &url, b, Some(&json!({}))).await;
        room
    }

    /// `PUT /presence/{who}/status` on `base` (the sync worker or Presenced), which must answer 200.
    async fn put_presence(&self, base: &str, who: &Account, body: Value) {
        let url = format!(
            "{base}/_matrix/client/v3/presence/{}/status",
            q(&who.user_id)
        );
        self.ok(Method::PUT, &url, who, Some(&body)).await;
    }

    /// `GET {base}/_matrix/client/{prefix}/presence/{of}/status` as `who`: (status, body).
    async fn get_presence(
        &self,
        base: &str,
        prefix: &str,
        who: &Account,
        of: &Account,
    ) -> (StatusCode, Value) {
        let url = format!(
            "{base}/_matrix/client/{prefix}/presence/{}/status",
            q(&of.user_id)
        );
        let auth = format!("Bearer {}", who.token);
        self.call(Method::GET, &url, Some(&auth), None).await
    }

    /// `GET /sync?{params}` on the sync worker as `who`.
    async fn sync(&self, who: &Account, params: &str) -> Value {
        self.sync_at(self.d.worker_url(), who, params).await
    }

    /// `GET {base}/_matrix/client/v3/sync?{params}` as `who`.
    async fn sync_at(&self, base: &str, who: &Account, params: &str) -> Value {
        let url = format!("{base}/_matrix/client/v3/sync?{params}");
        self.ok(Method::GET, &url, who, None).await
    }

    /// An initial `/sync` (no `since`) computed now. Synapse keeps a completed `/sync` response
    /// for two minutes (`caches.sync_response_cache_duration`) and answers the same request
    /// (user, device, `since`, `timeout`, filter…) from it; an initial sync ignores `timeout`,
    /// so a fresh value per request makes it a new request.
    async fn initial_sync(&self, who: &Account, params: &str) -> Value {
        self.initial_sync_at(self.d.worker_url(), who, params).await
    }

    /// [`Self::initial_sync`] on the server whose client listener is `base`.
    async fn initial_sync_at(&self, base: &str, who: &Account, params: &str) -> Value {
        static FRESH: AtomicU64 = AtomicU64::new(0);
        let timeout = FRESH.fetch_add(1, Ordering::Relaxed);
        let sep = if params.is_empty() { "" } else { "&" };
        self.sync_at(base, who, &format!("timeout={timeout}{sep}{params}"))
            .await
    }

    /// Starts `who`'s `/sync` stream on the sync worker with an initial sync (which also
    /// brings `who` online).
    async fn watch(&self, who: &Account) -> Watch {
        self.watch_at(self.d.worker_url(), who).await
    }

    /// [`Self::watch`] on the server whose client listener is `base`.
    async fn watch_at(&self, base: &str, who: &Account) -> Watch {
        let body = self.initial_sync_at(base, who, "").await;
        Watch {
            base: base.to_owned(),
            account: who.clone(),
            since: body["next_batch"].as_str().unwrap().to_owned(),
            seen: presence_events(&body),
        }
    }

    /// One incremental `/sync` (long-polling up to a second); returns its presence events.
    async fn poll(&self, w: &mut Watch) -> Vec<Value> {
        let params = format!("timeout=1000&since={}", q(&w.since));
        let body = self.sync_at(&w.base, &w.account, &params).await;
        w.since = body["next_batch"].as_str().unwrap().to_owned();
        let events = presence_events(&body);
        w.seen.extend(events.iter().cloned());
        events
    }

    /// Polls `w` until it delivers presence of `of` with every field of `want`; returns that
    /// content and how long it took.
    async fn wait_for(
        &self,
        w: &mut Watch,
        of: &Account,
        want: &Value,
        within: Duration,
    ) -> (Value, Duration) {
        let t = Instant::now();
        loop {
            let events = self.poll(w).await;
            let found = events
                .iter()
                .filter(|e| e["sender"] == of.user_id.as_str())
                .find(|e| has_fields(&e["content"], want));
            if let Some(e) = found {
                return (e["content"].clone(), t.elapsed());
            }
            if t.elapsed() > within {
                self.fail(&format!(
                    "{}'s /sync on {} did not show {} with {want} within {}s; presence of {} \
                     it did show: {:?}",
                    w.account.user_id,
                    w.base,
                    of.user_id,
                    within.as_secs(),
                    of.user_id,
                    w.seen_of(of)
                ));
            }
        }
    }

    /// `of`'s `presence_stream` rows as `instance|state|status_msg`; `None` without `psql`.
    fn presence_rows(&self, of: &Account) -> Option<Vec<String>> {
        let sql = format!(
            "SELECT instance_name, state, coalesce(status_msg, '') FROM presence_stream \
             WHERE user_id = '{}' ORDER BY stream_id",
            of.user_id.replace('\'', "''")
        );
        let out = self.d.psql(&sql)?;
        Some(out.lines().map(str::to_owned).collect())
    }

    /// Waits (5 s at most: the write may trail the RDATA) until `of` has exactly one
    /// `presence_stream` row, `presenced|{state}|{status_msg}`. Says so when `psql` is missing.
    async fn check_row(&self, of: &Account, state: &str, status_msg: &str) {
        let want = vec![format!("presenced|{state}|{status_msg}")];
        let t = Instant::now();
        loop {
            let Some(rows) = self.presence_rows(of) else {
                eprintln!("psql not found: not checking presence_stream");
                return;
            };
            if rows == want {
                return;
            }
            if t.elapsed() > Duration::from_secs(5) {
                self.fail(&format!(
                    "presence_stream rows of {}: {rows:?}, want exactly {want:?} (one row per \
                     user, written by instance `presenced`)",
                    of.user_id
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `of`'s `presence_stream` ID (waiting 5 s at most for the row); `None` without `psql`.
    async fn stream_id_of(&self, of: &Account) -> Option<i64> {
        let sql = format!(
            "SELECT stream_id FROM presence_stream WHERE user_id = '{}'",
            of.user_id.replace('\'', "''")
        );
        let t = Instant::now();
        loop {
            let out = self.d.psql(&sql)?;
            if let Ok(id) = out.trim().parse() {
                return Some(id);
            }
            if t.elapsed() > Duration::from_secs(5) {
                self.fail(&format!(
                    "presence_stream has no single row for {} after its PUT: {out:?}",
                    of.user_id
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The replication listener's URL for `path`.
    fn replication(&self, path: &str) -> String {
        format!("{}/_synapse/replication/{path}", self.d.replication_url())
    }

    /// The right replication Authorization header.
    fn replication_auth(&self) -> String {
        format!("Bearer {}", self.d.var("SYNAPSE_REPLICATION_SECRET"))
    }

    /// Stops Presenced (SIGTERM; exit status 0) and frees the writer slot.
    async fn finish(mut self) {
        self.writer.stop().await;
    }
}

/// The `m.presence` events of a `/sync` response.
fn presence_events(sync: &Value) -> Vec<Value> {
    sync["presence"]["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|e| e["type"] == "m.presence")
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `content` has every field of `want` with the same value.
fn has_fields(content: &Value, want: &Value) -> bool {
    want.as_object()
        .unwrap()
        .iter()
        .all(|(k, v)| content.get(k) == Some(v))
}

/// Distinguishes this test run's users from earlier runs' on the same deployment.
fn run_id() -> &'static str {
    static RUN: OnceLock<String> = OnceLock::new();
    RUN.get_or_init(|| {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis();
        ms.to_string()
    })
}

/// A fresh replication transaction ID (the path segment of cached endpoints).
fn txn_id() -> String {
    let ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("t{:09x}", ns % (1 << 36))
}

// ---- scenarios ------------------------------------------------------------------------------

#[tokio::test]
async fn a_room_mate_sees_a_put_on_the_worker_in_sync() {
    let Some(s) = Scenario::start("a_room_mate_sees_a_put_on_the_worker_in_sync", "roommate").await
    else {
        return;
    };
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    s.share_room(&alice, &bob).await;
    let mut bob_sync = s.watch(&bob).await;

    s.put_presence(
        s.d.worker_url(),
        &alice,
        json!({"presence": "online", "status_msg": "hello from the worker"}),
    )
    .await;
    let want = json!({"presence": "online", "status_msg": "hello from the worker",
                      "currently_active": true});
    let (_, took) = s.wait_for(&mut bob_sync, &alice, &want, SEEN_WITHIN).await;
    eprintln!("bob saw alice's PUT after {:.1}s", took.as_secs_f64());

    // Synapse reads the row Presenced wrote: alice's own presence, served by the worker.
    let url = format!(
        "{}/_matrix/client/v3/presence/{}/status",
        s.d.worker_url(),
        q(&alice.user_id)
    );
    let own = s.ok(Method::GET, &url, &alice, None).await;
    s.check(
        own["presence"] == "online" && own["status_msg"] == "hello from the worker",
        || format!("alice's own presence on the sync worker: {own}"),
    );
    s.check_row(&alice, "online", "hello from the worker").await;
    s.finish().await;
}

#[tokio::test]
async fn an_outsider_does_not_see_presence() {
    let Some(s) = Scenario::start("an_outsider_does_not_see_presence", "outsider").await else {
        return;
    };
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    let carol = s.register("carol").await;
    s.share_room(&alice, &bob).await;
    // Carol shares a room with bob only: she does get presence, just not alice's.
    s.share_room(&bob, &carol).await;
    let mut carol_sync = s.watch(&carol).await;
    let mut bob_sync = s.watch(&bob).await;

    s.put_presence(
        s.d.worker_url(),
        &alice,
        json!({"presence": "online", "status_msg": "for room-mates only"}),
    )
    .await;
    let want = json!({"presence": "online", "status_msg": "for room-mates only"});
    s.wait_for(&mut bob_sync, &alice, &want, SEEN_WITHIN).await;
    // By now carol's stream has moved past alice's change; it must carry bob's presence (bob
    // synced, so he is online) and nothing of alice's.
    let online = json!({"presence": "online"});
    if !carol_sync
        .seen_of(&bob)
        .iter()
        .any(|c| has_fields(c, &online))
    {
        s.wait_for(&mut carol_sync, &bob, &online, SEEN_WITHIN)
            .await;
    }
    s.poll(&mut carol_sync).await;
    s.check(carol_sync.seen_of(&alice).is_empty(), || {
        format!(
            "carol shares no room with alice but her /sync showed alice's presence: {:?}",
            carol_sync.seen_of(&alice)
        )
    });
    let fresh = presence_events(&s.initial_sync(&carol, "").await);
    s.check(
        fresh.iter().all(|e| e["sender"] != alice.user_id.as_str()),
        || format!("carol's initial /sync showed alice's presence: {fresh:?}"),
    );
    s.finish().await;
}

/// Slow: about 45 s of waiting for Synapse's sync timeout.
#[tokio::test]
async fn syncing_brings_a_user_online_and_stopping_takes_them_offline() {
    let Some(s) = Scenario::start(
        "syncing_brings_a_user_online_and_stopping_takes_them_offline",
        "syncing",
    )
    .await
    else {
        return;
    };
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    s.share_room(&alice, &bob).await;
    let mut bob_sync = s.watch(&bob).await;
    s.check(
        bob_sync
            .seen_of(&alice)
            .iter()
            .all(|c| c["presence"] == "offline"),
        || {
            format!(
                "alice never synced nor set a presence, yet bob's initial /sync showed {:?}",
                bob_sync.seen_of(&alice)
            )
        },
    );

    // No PUT: alice's sync alone (through the worker's presence_set_state) brings her online.
    let body = s.initial_sync(&alice, "set_presence=online").await;
    let since = body["next_batch"].as_str().unwrap().to_owned();
    s.sync(
        &alice,
        &format!("timeout=0&set_presence=online&since={}", q(&since)),
    )
    .await;
    let last_sync = Instant::now();
    s.wait_for(
        &mut bob_sync,
        &alice,
        &json!({"presence": "online"}),
        SEEN_WITHIN,
    )
    .await;

    // Alice stops syncing: the worker sends USER_SYNC end after 10 s, and Presenced must take
    // her offline once her last sync is sync_online_timeout (30 s) old.
    s.wait_for(
        &mut bob_sync,
        &alice,
        &json!({"presence": "offline"}),
        OFFLINE_WITHIN,
    )
    .await;
    let online_for = last_sync.elapsed();
    eprintln!(
        "alice went offline {:.1}s after her last sync",
        online_for.as_secs_f64()
    );
    s.check(online_for >= ONLINE_AT_LEAST, || {
        format!(
            "alice went offline {:.1}s after her last sync: Synapse keeps a user who stopped \
             syncing online for sync_online_timeout (30 s)",
            online_for.as_secs_f64()
        )
    });
    s.check_row(&alice, "offline", "").await;
    s.finish().await;
}

#[tokio::test]
async fn presenced_client_listener_serves_presence_status_to_room_mates_only() {
    let Some(s) = Scenario::start(
        "presenced_client_listener_serves_presence_status_to_room_mates_only",
        "client",
    )
    .await
    else {
        return;
    };
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    let carol = s.register("carol").await;
    s.share_room(&alice, &bob).await;
    let mut bob_sync = s.watch(&bob).await;
    s.put_presence(
        s.d.worker_url(),
        &alice,
        json!({"presence": "online", "status_msg": "ask me"}),
    )
    .await;

    let base = s.d.presenced_client_url();
    for prefix in ["v3", "r0", "api/v1", "unstable"] {
        let (status, body) = s.get_presence(&base, prefix, &bob, &alice).await;
        s.check(
            status == StatusCode::OK
                && body["presence"] == "online"
                && body["status_msg"] == "ask me",
            || format!("bob GET {prefix}/presence/alice/status on Presenced -> {status} {body}"),
        );
    }
    let (status, body) = s.get_presence(&base, "v3", &alice, &alice).await;
    s.check(
        status == StatusCode::OK && body["presence"] == "online",
        || format!("alice GET her own presence on Presenced -> {status} {body}"),
    );
    let (status, body) = s.get_presence(&base, "v3", &carol, &alice).await;
    s.check(
        status == StatusCode::FORBIDDEN && body["errcode"] == "M_FORBIDDEN",
        || format!("carol (no shared room) GET alice's presence on Presenced -> {status} {body}, want 403 M_FORBIDDEN"),
    );
    let stranger = Account {
        user_id: carol.user_id.clone(),
        token: "not-a-synapse-token".to_owned(),
    };
    let (status, body) = s.get_presence(&base, "v3", &stranger, &alice).await;
    s.check(
        status == StatusCode::UNAUTHORIZED && body["errcode"] == "M_UNKNOWN_TOKEN",
        || format!("GET presence on Presenced with an unknown token -> {status} {body}, want 401 M_UNKNOWN_TOKEN"),
    );

    // A PUT on Presenced's own listener reaches the room-mate's /sync on the worker.
    s.put_presence(
        &base,
        &alice,
        json!({"presence": "unavailable", "status_msg": "set on presenced"}),
    )
    .await;
    let want = json!({"presence": "unavailable", "status_msg": "set on presenced"});
    s.wait_for(&mut bob_sync, &alice, &want, SEEN_WITHIN).await;
    s.finish().await;
}

#[tokio::test]
async fn a_restarted_writer_keeps_state_and_resumes_the_stream() {
    let Some(mut s) = Scenario::start(
        "a_restarted_writer_keeps_state_and_resumes_the_stream",
        "restart",
    )
    .await
    else {
        return;
    };
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    s.share_room(&alice, &bob).await;
    let mut bob_sync = s.watch(&bob).await;
    let before = json!({"presence": "online", "status_msg": "before the restart"});
    s.put_presence(s.d.worker_url(), &alice, before.clone())
        .await;
    s.wait_for(&mut bob_sync, &alice, &before, SEEN_WITHIN)
        .await;

    s.writer.restart().await;

    // A fresh /sync (no since) shows alice's state unchanged.
    let t = Instant::now();
    loop {
        let fresh = presence_events(&s.initial_sync(&bob, "").await);
        let of_alice: Vec<&Value> = fresh
            .iter()
            .filter(|e| e["sender"] == alice.user_id.as_str())
            .map(|e| &e["content"])
            .collect();
        if of_alice.iter().any(|c| has_fields(c, &before)) {
            break;
        }
        if t.elapsed() > SEEN_WITHIN {
            s.fail(&format!(
                "after the restart, bob's initial /sync shows alice as {of_alice:?}, want {before}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Presenced itself still knows it (the worker's caches cannot answer this one).
    let (status, body) = s
        .get_presence(&s.d.presenced_client_url(), "v3", &bob, &alice)
        .await;
    s.check(
        status == StatusCode::OK && has_fields(&body, &before),
        || format!("after the restart, GET alice's presence on Presenced -> {status} {body}, want {before}"),
    );

    // The stream goes on where it was: bob's pre-restart sync stream gets the next change.
    let after = json!({"presence": "online", "status_msg": "after the restart"});
    s.put_presence(s.d.worker_url(), &alice, after.clone())
        .await;
    s.wait_for(&mut bob_sync, &alice, &after, SEEN_WITHIN).await;
    s.check_row(&alice, "online", "after the restart").await;
    s.finish().await;
}

#[tokio::test]
async fn replication_endpoints_refuse_a_wrong_or_missing_secret() {
    let Some(s) = Scenario::start(
        "replication_endpoints_refuse_a_wrong_or_missing_secret",
        "replauth",
    )
    .await
    else {
        return;
    };
    let nobody = q(&format!("@nobody:{}", s.d.var("SYNAPSE_SERVER_NAME")));
    let from_to = "from_token=0&upto_token=0";
    let endpoints = [
        (
            Method::POST,
            format!("presence_set_state/{nobody}"),
            Some(json!({"device_id": null, "state": {"presence": "online"},
                        "force_notify": false, "is_sync": false})),
        ),
        (
            Method::POST,
            format!("bump_presence_active_time/{nobody}"),
            Some(json!({"device_id": null})),
        ),
        (
            Method::GET,
            format!("get_repl_stream_updates/presence/{}?{from_to}", txn_id()),
            None,
        ),
        (
            Method::GET,
            format!(
                "get_repl_stream_updates/presence_federation/{}?{from_to}",
                txn_id()
            ),
            None,
        ),
        (
            Method::POST,
            format!("fed_send_edu/m.presence/{}", txn_id()),
            Some(json!({"origin": "remote.example", "content": {"push": []}})),
        ),
    ];
    let wrong = format!("Bearer not-{}", s.d.var("SYNAPSE_REPLICATION_SECRET"));
    for (method, path, body) in &endpoints {
        for auth in [None, Some(wrong.as_str())] {
            let url = s.replication(path);
            let (status, data) = s.call(method.clone(), &url, auth, body.as_ref()).await;
            s.check(
                status == StatusCode::FORBIDDEN && data["errcode"] == "M_FORBIDDEN",
                || {
                    let how = auth.map_or("no Authorization", |_| "a wrong bearer");
                    format!("{method} {url} with {how} -> {status} {data}, want 403 M_FORBIDDEN")
                },
            );
        }
    }

    // With the secret the same requests work; alice's row comes back in the stock row format.
    let alice = s.register("alice").await;
    s.put_presence(
        s.d.worker_url(),
        &alice,
        json!({"presence": "online", "status_msg": "streamed"}),
    )
    .await;
    let auth = s.replication_auth();
    let id = s.stream_id_of(&alice).await.unwrap_or_else(|| {
        eprintln!("psql not found: checking only the shape of get_repl_stream_updates");
        0
    });
    for stream in ["presence", "presence_federation"] {
        let from = (id - 1).max(0);
        let path = format!("get_repl_stream_updates/{stream}/{}", txn_id());
        let url = s.replication(&format!("{path}?from_token={from}&upto_token={id}"));
        let (status, data) = s.call(Method::GET, &url, Some(&auth), None).await;
        s.check(
            status == StatusCode::OK
                && data["updates"].is_array()
                && data["upto_token"].is_i64()
                && data["limited"].is_boolean(),
            || format!("GET {url} with the secret -> {status} {data}, want {{updates, upto_token, limited}}"),
        );
        if stream == "presence" && id > 0 {
            let updates = data["updates"].as_array().unwrap();
            let row = &updates.first().unwrap_or(&Value::Null)[1];
            s.check(
                updates.len() == 1
                    && updates[0][0] == id
                    && row[0] == alice.user_id.as_str()
                    && row[1] == "online"
                    && row[2].is_i64()
                    && row[3].is_i64()
                    && row[4].is_i64()
                    && row[5] == "streamed"
                    && row[6].is_boolean(),
                || {
                    format!(
                        "GET {url} -> {data}, want exactly [[{id}, [\"{}\", \"online\", \
                     last_active_ts, last_federation_update_ts, last_user_sync_ts, \
                     \"streamed\", currently_active]]]",
                        alice.user_id
                    )
                },
            );
        }
    }
    let url = s.replication(&format!("bump_presence_active_time/{}", q(&alice.user_id)));
    let (status, data) = s
        .call(
            Method::POST,
            &url,
            Some(&auth),
            Some(&json!({"device_id": null})),
        )
        .await;
    s.check(status == StatusCode::OK && data.is_object(), || {
        format!("POST {url} with the secret -> {status} {data}")
    });
    s.finish().await;
}

#[tokio::test]
async fn inbound_federation_presence_is_accepted_through_fed_send_edu() {
    let Some(s) = Scenario::start(
        "inbound_federation_presence_is_accepted_through_fed_send_edu",
        "fededu",
    )
    .await
    else {
        return;
    };
    let auth = s.replication_auth();
    let bodies = [
        json!({"origin": "remote.example",
               "content": {"push": [{"user_id": "@carol:remote.example", "presence": "online"}]}}),
        // Entries for another server's users are dropped, not an error.
        json!({"origin": "remote.example", "content": {"push": [
            {"user_id": "@carol:remote.example", "presence": "unavailable",
             "status_msg": "remote", "last_active_ago": 5000, "currently_active": false},
            {"user_id": "@mallory:elsewhere.example", "presence": "online"}]}}),
    ];
    for body in &bodies {
        let url = s.replication(&format!("fed_send_edu/m.presence/{}", txn_id()));
        let (status, data) = s.call(Method::POST, &url, Some(&auth), Some(body)).await;
        s.check(status == StatusCode::OK && data.is_object(), || {
            format!("POST {url} {body} -> {status} {data}, want 200 with a JSON object")
        });
    }
    // As the stock writer does, the remote state is written to the presence stream, where
    // the workers read it; the entry of the server that did not send it is not.
    let carol = Account {
        user_id: "@carol:remote.example".to_owned(),
        token: String::new(),
    };
    s.check_row(&carol, "unavailable", "remote").await;
    let mallory = Account {
        user_id: "@mallory:elsewhere.example".to_owned(),
        token: String::new(),
    };
    if let Some(rows) = s.presence_rows(&mallory) {
        s.check(rows.is_empty(), || {
            format!("an entry for another server's user reached presence_stream: {rows:?}")
        });
    }
    s.finish().await;
}

#[tokio::test]
async fn the_example_router_routes_presence_to_a_user_who_shares_no_room() {
    let Some(s) = Scenario::start(
        "the_example_router_routes_presence_to_a_user_who_shares_no_room",
        "routed",
    )
    .await
    else {
        return;
    };
    let watcher = s.routed_watcher().await;
    let (alice, carol) = (s.register("alice").await, s.register("carol").await);
    let mut watcher_sync = s.watch(&watcher).await;
    let status_msg = format!("routed {}", run_id());
    let want = json!({"presence": "online", "status_msg": status_msg});
    s.put_presence(s.d.worker_url(), &alice, want.clone()).await;
    // The sync worker runs the same router itself for /sync.
    s.wait_for(&mut watcher_sync, &alice, &want, SEEN_WITHIN)
        .await;
    // Presenced loaded it too (the Python module), and answers GET by it.
    let base = s.d.presenced_client_url();
    let (status, body) = s.get_presence(&base, "v3", &watcher, &alice).await;
    s.check(status == StatusCode::OK && has_fields(&body, &want), || {
        format!("the routed watcher GET alice's presence on Presenced -> {status} {body}")
    });
    let (status, body) = s.get_presence(&base, "v3", &carol, &alice).await;
    s.check(status == StatusCode::FORBIDDEN, || {
        format!("carol (neither routed nor a room-mate) GET alice's presence -> {status} {body}")
    });
    // The deployment's other module (a spam checker importing Synapse's internals) is
    // Synapse's: Presenced skips it with one warning naming it.
    let log = std::fs::read_to_string(&s.writer.log).unwrap_or_default();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("deployment_modules.InternalsSpamChecker"))
        .collect();
    s.check(warnings.len() == 1 && warnings[0].contains("WARN"), || {
        format!("want one warning naming deployment_modules.InternalsSpamChecker, got {warnings:?}")
    });
    s.finish().await;
}

/// A remote user a router names shares no room with anyone, so Synapse's federation sender
/// cannot find its server from the `presence` rows: Presenced asks for the send on the
/// `presence_federation` stream, which `get_repl_stream_updates` serves back.
#[tokio::test]
async fn routed_remote_recipients_are_asked_for_on_the_presence_federation_stream() {
    let Some(s) = Scenario::start(
        "routed_remote_recipients_are_asked_for_on_the_presence_federation_stream",
        "fedstream",
    )
    .await
    else {
        return;
    };
    let alice = s.register("alice").await;
    let remote = s.d.var("SYNAPSE_REMOTE_ROUTED_WATCHER");
    let remote_server = remote.rsplit(':').next().unwrap().to_owned();
    let want = json!({"presence": "online", "status_msg": format!("far {}", run_id())});
    s.put_presence(s.d.worker_url(), &alice, want).await;

    let t = Instant::now();
    loop {
        let (top, found) = s.federation_rows(0, &remote_server, &alice).await;
        if found {
            s.check(top >= 1, || {
                format!("presence_federation tokens up to {top}")
            });
            break;
        }
        if t.elapsed() > SEEN_WITHIN {
            s.fail(&format!(
                "no presence_federation row [{remote_server}, {}] after the PUT",
                alice.user_id
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s.finish().await;
}

#[tokio::test]
async fn memberships_follow_the_events_stream() {
    let Some(s) = Scenario::start("memberships_follow_the_events_stream", "members").await else {
        return;
    };
    const MEMBERSHIPS: &str = "presenced_room_memberships";
    let before = s.metric(MEMBERSHIPS).await;
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    let room = s.share_room(&alice, &bob).await;
    s.wait_metric(MEMBERSHIPS, before + 2.0).await;
    let url = format!(
        "{}/_matrix/client/v3/rooms/{}/leave",
        s.d.main_url(),
        q(&room)
    );
    s.ok(Method::POST, &url, &bob, Some(&json!({}))).await;
    s.wait_metric(MEMBERSHIPS, before + 1.0).await;
    s.finish().await;
}

/// The Python with matrix-nio (`PRESENCED_TEST_PYTHON`), as for the standalone nio test.
fn nio_python() -> Option<PathBuf> {
    match std::env::var_os("PRESENCED_TEST_PYTHON") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ if std::env::var_os("CI").is_some() => {
            panic!("CI must set PRESENCED_TEST_PYTHON to a Python with matrix-nio (see .ci/run)")
        }
        _ => {
            eprintln!("skipped: set PRESENCED_TEST_PYTHON to a Python with matrix-nio installed");
            None
        }
    }
}

#[tokio::test]
async fn matrix_nio_on_the_worker_sees_presence_presenced_made() {
    let Some(s) = Scenario::start(
        "matrix_nio_on_the_worker_sees_presence_presenced_made",
        "nio",
    )
    .await
    else {
        return;
    };
    let Some(python) = nio_python() else {
        s.finish().await;
        return;
    };
    let watcher = s.d.var("SYNAPSE_ROUTED_WATCHER");
    let watcher_localpart = watcher
        .strip_prefix('@')
        .and_then(|rest| rest.split(':').next())
        .unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/nio_presence.py");
    let run = tokio::process::Command::new(python)
        .arg(script)
        .args(["--base-url", s.d.worker_url()])
        .args(["--register-url", s.d.main_url()])
        .args(["--presence-url", &s.d.presenced_client_url()])
        .args(["--shared-secret", s.d.var("SYNAPSE_SHARED_SECRET")])
        .args(["--server-name", s.d.var("SYNAPSE_SERVER_NAME")])
        .args(["--watcher", watcher_localpart])
        .args(["--watcher-password", ROUTED_WATCHER_PASSWORD])
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(Duration::from_secs(120), run).await {
        Ok(out) => out.unwrap(),
        Err(_) => s.fail("the matrix-nio script did not finish within 120 s"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    s.check(
        out.status.success() && stdout.contains("both saw alice online"),
        || {
            format!(
                "matrix-nio against the sync worker failed:\nstdout:\n{stdout}\nstderr:\n{stderr}"
            )
        },
    );
    s.finish().await;
}

/// Keep-alive: with `federation_ping_interval` set to two seconds, an unchanged online user's
/// presence is asked for again on the `presence_federation` stream for the remote user the
/// router sends it to, although nothing changed.
#[tokio::test]
async fn unchanged_presence_is_pinged_to_routed_remote_servers() {
    const TEST: &str = "unchanged_presence_is_pinged_to_routed_remote_servers";
    let run = run_id();
    let Some(s) = Scenario::start_with(TEST, "keepalive", |d| {
        d.presence_section(&format!("keepalive-{run}"), &[], Some("2s"))
    })
    .await
    else {
        return;
    };
    let alice = s.register("alice").await;
    let remote = s.d.var("SYNAPSE_REMOTE_ROUTED_WATCHER");
    let remote_server = remote.rsplit(':').next().unwrap().to_owned();
    s.put_presence(s.d.worker_url(), &alice, json!({"presence": "online"}))
        .await;
    // The change itself, then at least one ping after it.
    let mut after = 0;
    for what in ["the change", "a keep-alive ping"] {
        let t = Instant::now();
        loop {
            let (top, found) = s.federation_rows(after, &remote_server, &alice).await;
            if found {
                after = top;
                break;
            }
            if t.elapsed() > SEEN_WITHIN {
                s.fail(&format!(
                    "no presence_federation row [{remote_server}, {}] for {what} after token \
                     {after}",
                    alice.user_id
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    s.finish().await;
}
