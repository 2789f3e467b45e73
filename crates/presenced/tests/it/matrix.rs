//! A small Matrix client for black-box tests, and a server started with its logs in a file
//! (so a long test never blocks on a full stderr pipe).

use std::{path::PathBuf, process::Stdio, time::Duration};

use hmac::{Hmac, KeyInit, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

use crate::support::{RAISED_LIMITS, Workspace};

/// The shared secret the test servers use.
pub(crate) const SHARED_SECRET: &str = "test-shared-secret";

/// A running server whose stderr goes to `presenced.log` in its workspace.
pub(crate) struct TestServer {
    pub(crate) child: Child,
    pub(crate) base: String,
    pub(crate) workspace: Workspace,
    pub(crate) log: PathBuf,
}

impl TestServer {
    /// Starts the real binary with `config_yaml` (its `database` should be a relative path).
    pub(crate) async fn start(workspace: Workspace, config_yaml: &str) -> Self {
        let config = workspace.write("presenced.yaml", config_yaml);
        let log = workspace.path().join("presenced.log");
        Self::start_in(workspace, &config, log).await
    }

    async fn start_in(workspace: Workspace, config: &std::path::Path, log: PathBuf) -> Self {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_presenced"))
            .args(["-c", config.to_str().unwrap(), "--print-listen-addrs"])
            .current_dir(workspace.path())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("no address printed in time")
            .unwrap();
        let Some(line) = line else {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("the server exited before listening; log:\n{text}");
        };
        let addr = line
            .strip_prefix("listening on ")
            .expect("unexpected stdout line")
            .to_owned();
        // Keep draining stdout so the server never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            child,
            base: format!("http://{addr}"),
            workspace,
            log,
        }
    }

    /// Restarts the same server (same config and database) after it exited or was killed.
    pub(crate) async fn restart(self) -> Self {
        let Self {
            mut child,
            workspace,
            log,
            ..
        } = self;
        let _ = child.wait().await;
        let config = workspace.path().join("presenced.yaml");
        Self::start_in(workspace, &config, log).await
    }

    /// The server's log so far.
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A client for this server.
    pub(crate) fn client(&self) -> Client {
        Client::new(&self.base)
    }

    /// Sends a signal (`TERM`, `KILL`) to the server.
    pub(crate) fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("already exited").to_string();
        let ok = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

/// A configuration for conformance-style tests: the example router with the oracle's fixed
/// users and rate limits raised. `extra` is YAML whose top-level keys replace the base's
/// (as a later `-c` file would); the result is written as JSON, which is YAML too.
pub(crate) fn test_config(extra: &str) -> String {
    let base = format!(
        "server_name: test
listeners:
  - port: 0
    type: http
    bind_addresses: ['127.0.0.1']
    resources: [{{names: [client, metrics]}}]
database: {{name: sqlite3, args: {{database: data/presenced.db}}}}
registration_shared_secret: {SHARED_SECRET}
password_hash_cost: {{memory_kib: 64, iterations: 1, parallelism: 1}}
presence:
  enabled: true
  presence_router:
    module: presenced.routers.ExamplePresenceRouter
    config:
      always_send_to_users: ['@oracle_gobbler:test', '@oracle_gobbler2:test']
      blacklisted_users: ['@oracle_blocked:test']
rc_presence: {{per_user: {{per_second: 10000, burst_count: 100000}}}}
{RAISED_LIMITS}"
    );
    let mut doc: Value = serde_saphyr::from_str(&base).unwrap();
    if !extra.trim().is_empty() {
        let overlay: Value = serde_saphyr::from_str(extra).unwrap();
        for (k, v) in overlay.as_object().unwrap() {
            doc[k] = v.clone();
        }
    }
    serde_json::to_string_pretty(&doc).unwrap()
}

/// A logged-in user.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) user_id: String,
    pub(crate) token: String,
}

/// An HTTP client speaking the client-server API.
#[derive(Clone)]
pub(crate) struct Client {
    base: String,
    http: reqwest::Client,
}

/// Percent-encodes a path segment.
pub(crate) fn q(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    pub(crate) fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// The server's `/metrics` text.
    pub(crate) async fn metrics_text(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of one series of `/metrics` (`name` or `name{labels}`); 0 if it is absent.
    pub(crate) async fn metric(&self, series: &str) -> f64 {
        let prefix = format!("{series} ");
        self.metrics_text()
            .await
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }

    /// One request: (status, JSON body or Null).
    pub(crate) async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<RequestBody>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req = match body {
            Some(RequestBody::Json(v)) => req.json(&v),
            Some(RequestBody::Raw(s)) => req.header("Content-Type", "application/json").body(s),
            None => req,
        };
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let bytes = resp.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// A request that must succeed.
    pub(crate) async fn ok(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> Value {
        let body = if method == Method::GET {
            None
        } else {
            Some(RequestBody::Json(body))
        };
        let (status, data) = self.request(method.clone(), path, token, body).await;
        assert_eq!(status, StatusCode::OK, "{method} {path} -> {status} {data}");
        data
    }

    /// Registers through the shared-secret admin API (as the reference's
    /// `register_new_matrix_user` does) and returns the logged-in user.
    pub(crate) async fn register(
        &self,
        localpart: &str,
        password: &str,
        admin: bool,
    ) -> Result<User, (StatusCode, Value)> {
        let nonce = self
            .ok(
                Method::GET,
                "/_synapse/admin/v1/register",
                None,
                Value::Null,
            )
            .await;
        let nonce = nonce["nonce"].as_str().unwrap().to_owned();
        let mac = registration_mac(SHARED_SECRET, &nonce, localpart, password, admin);
        let body = json!({"nonce": nonce, "username": localpart, "password": password, "admin": admin, "mac": mac});
        let (status, data) = self
            .request(
                Method::POST,
                "/_synapse/admin/v1/register",
                None,
                Some(RequestBody::Json(body)),
            )
            .await;
        if status != StatusCode::OK {
            return Err((status, data));
        }
        Ok(User {
            user_id: data["user_id"].as_str().unwrap().to_owned(),
            token: data["access_token"].as_str().unwrap().to_owned(),
        })
    }

    /// Logs in with a password and an optional device ID.
    pub(crate) async fn login(
        &self,
        localpart: &str,
        password: &str,
        device_id: Option<&str>,
    ) -> User {
        let mut body = json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": localpart},
            "password": password,
        });
        if let Some(d) = device_id {
            body["device_id"] = json!(d);
        }
        let data = self
            .ok(Method::POST, "/_matrix/client/v3/login", None, body)
            .await;
        User {
            user_id: data["user_id"].as_str().unwrap().to_owned(),
            token: data["access_token"].as_str().unwrap().to_owned(),
        }
    }

    /// `PUT /presence/{user}/status`: (status, errcode).
    pub(crate) async fn put_presence(
        &self,
        actor: &User,
        target: &str,
        body: Value,
    ) -> (StatusCode, Option<String>) {
        let path = format!("/_matrix/client/v3/presence/{}/status", q(target));
        let (status, data) = self
            .request(
                Method::PUT,
                &path,
                Some(&actor.token),
                Some(RequestBody::Json(body)),
            )
            .await;
        (status, data["errcode"].as_str().map(str::to_owned))
    }

    /// `GET /sync` with `params` (a query string without the leading `?`).
    pub(crate) async fn sync(&self, user: &User, params: &str) -> Value {
        self.ok(
            Method::GET,
            &format!("/_matrix/client/v3/sync?{params}"),
            Some(&user.token),
            Value::Null,
        )
        .await
    }

    /// Creates a room: public, or private (invite only).
    pub(crate) async fn create_room(&self, creator: &User, private: bool) -> String {
        let preset = if private {
            "private_chat"
        } else {
            "public_chat"
        };
        let data = self
            .ok(
                Method::POST,
                "/_matrix/client/v3/createRoom",
                Some(&creator.token),
                json!({"preset": preset}),
            )
            .await;
        data["room_id"].as_str().unwrap().to_owned()
    }

    /// Joins a room: (status, errcode).
    pub(crate) async fn join(&self, user: &User, room: &str) -> (StatusCode, Option<String>) {
        let path = format!("/_matrix/client/v3/join/{}", q(room));
        let (s, d) = self
            .request(
                Method::POST,
                &path,
                Some(&user.token),
                Some(RequestBody::Json(json!({}))),
            )
            .await;
        (s, d["errcode"].as_str().map(str::to_owned))
    }
}

/// The `mac` of a shared-secret registration (`/_synapse/admin/v1/register`): hex HMAC-SHA1,
/// keyed by the secret, of nonce, localpart, password and `admin`/`notadmin`, NUL-separated.
pub(crate) fn registration_mac(
    secret: &str,
    nonce: &str,
    localpart: &str,
    password: &str,
    admin: bool,
) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    let role: &[u8] = if admin { b"admin" } else { b"notadmin" };
    mac.update(
        &[
            nonce.as_bytes(),
            localpart.as_bytes(),
            password.as_bytes(),
            role,
        ]
        .join(&0u8),
    );
    hex::encode(mac.finalize().into_bytes())
}

/// A request body: JSON, or raw text sent as JSON.
pub(crate) enum RequestBody {
    Json(Value),
    Raw(String),
}
