//! The few client-server API calls the load generator makes, over one pooled HTTP client.

use std::{borrow::Cow, time::Duration};

use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::BenchError;

/// The password every generated user gets.
pub const PASSWORD: &str = "bench-password-not-secret";

/// Setup calls are retried this many times on transport errors, 429 and 5xx.
const SETUP_ATTEMPTS: u32 = 6;

/// An account the generator acts as.
#[derive(Debug, Clone)]
pub struct Session {
    /// The full user ID.
    pub user_id: String,
    /// Its access token.
    pub access_token: String,
}

/// A homeserver reached through the client-server API.
#[derive(Debug, Clone)]
pub struct Matrix {
    http: reqwest::Client,
    base: String,
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn transport(what: &str, e: reqwest::Error) -> BenchError {
    BenchError::Http(format!("{what}: {e}"))
}

impl Matrix {
    /// A client for the server at `base` (`http://host:port`), keeping idle connections for
    /// reuse.
    pub fn new(base: &str) -> Result<Self, BenchError> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(usize::MAX)
            .pool_idle_timeout(Duration::from_secs(300))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| transport("building the HTTP client", e))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    /// Sends a request and returns the body of a 2xx answer, or the Matrix error.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<bytes::Bytes, BenchError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(timeout);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| transport(path, e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| transport(path, e))?;
        if status.is_success() {
            return Ok(bytes);
        }
        Err(matrix_error(status.as_u16(), &bytes))
    }

    /// [`Matrix::call`] with retries on transport errors, 429 and 5xx, for setup.
    async fn call_retrying(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value, BenchError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self
                .call(method.clone(), path, token, body, Duration::from_secs(120))
                .await;
            let wait = match &result {
                Ok(bytes) => {
                    return serde_json::from_slice(bytes)
                        .map_err(|e| BenchError::Http(format!("{path}: bad JSON: {e}")));
                }
                Err(BenchError::Matrix {
                    status: 429,
                    retry_after_ms,
                    ..
                }) => Duration::from_millis(retry_after_ms.unwrap_or(500)),
                Err(BenchError::Matrix { status, .. }) if *status >= 500 => {
                    Duration::from_millis(200 << attempt)
                }
                Err(BenchError::Http(_)) => Duration::from_millis(200 << attempt),
                Err(_) => return result.map(|_| Value::Null),
            };
            if attempt >= SETUP_ATTEMPTS {
                return result.map(|_| Value::Null);
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Registers `localpart` through shared-secret registration
    /// (`/_synapse/admin/v1/register`: a nonce, then an HMAC-SHA1 over nonce, user, password
    /// and "notadmin"). If the name is taken, logs in with the same password instead.
    pub async fn register(&self, secret: &str, localpart: &str) -> Result<Session, BenchError> {
        const PATH: &str = "/_synapse/admin/v1/register";
        let nonce = self
            .call_retrying(reqwest::Method::GET, PATH, None, None)
            .await?;
        let nonce = nonce["nonce"]
            .as_str()
            .ok_or_else(|| BenchError::Http("registration nonce missing".to_owned()))?;
        let mut mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(secret.as_bytes())
            .map_err(|_| BenchError::InvalidArgs("unusable shared secret".to_owned()))?;
        for (i, part) in [nonce, localpart, PASSWORD, "notadmin"].iter().enumerate() {
            if i > 0 {
                mac.update(b"\0");
            }
            mac.update(part.as_bytes());
        }
        let body = json!({
            "nonce": nonce,
            "username": localpart,
            "password": PASSWORD,
            "admin": false,
            "mac": hex::encode(mac.finalize().into_bytes()),
        });
        match self
            .call_retrying(reqwest::Method::POST, PATH, None, Some(&body))
            .await
        {
            Ok(v) => session(&v),
            Err(BenchError::Matrix { errcode, .. }) if errcode == "M_USER_IN_USE" => {
                self.login(localpart).await
            }
            Err(e) => Err(e),
        }
    }

    /// Logs `localpart` in with the generated password.
    pub async fn login(&self, localpart: &str) -> Result<Session, BenchError> {
        let body = json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": localpart},
            "password": PASSWORD,
        });
        let v = self
            .call_retrying(
                reqwest::Method::POST,
                "/_matrix/client/v3/login",
                None,
                Some(&body),
            )
            .await?;
        session(&v)
    }

    /// Creates a public room and returns its ID.
    pub async fn create_room(&self, token: &str) -> Result<String, BenchError> {
        let body = json!({"preset": "public_chat"});
        let v = self
            .call_retrying(
                reqwest::Method::POST,
                "/_matrix/client/v3/createRoom",
                Some(token),
                Some(&body),
            )
            .await?;
        v["room_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| BenchError::Http("createRoom answered without room_id".to_owned()))
    }

    /// Joins a public room.
    pub async fn join(&self, token: &str, room_id: &str) -> Result<(), BenchError> {
        let path = format!("/_matrix/client/v3/rooms/{}/join", pct(room_id));
        self.call_retrying(reqwest::Method::POST, &path, Some(token), Some(&json!({})))
            .await
            .map(drop)
    }
}

impl Matrix {
    /// Sets `user_id`'s presence once (no retry: the caller must know whether this exact
    /// request was acknowledged).
    pub async fn put_presence(
        &self,
        session: &Session,
        presence: &str,
        status_msg: &str,
    ) -> Result<(), BenchError> {
        let body = json!({"presence": presence, "status_msg": status_msg});
        self.call(
            reqwest::Method::PUT,
            &presence_path(&session.user_id),
            Some(&session.access_token),
            Some(&body),
            Duration::from_secs(30),
        )
        .await
        .map(drop)
    }

    /// Reads `user_id`'s presence as `session` sees it.
    pub async fn get_presence(
        &self,
        session: &Session,
        user_id: &str,
    ) -> Result<Value, BenchError> {
        let bytes = self
            .call(
                reqwest::Method::GET,
                &presence_path(user_id),
                Some(&session.access_token),
                None,
                Duration::from_secs(30),
            )
            .await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| BenchError::Http(format!("presence: bad JSON: {e}")))
    }

    /// One `GET` of `path` (no retry), for `/sync` long polls; `wait` bounds the request.
    pub async fn get(
        &self,
        token: Option<&str>,
        path: &str,
        wait: Duration,
    ) -> Result<Value, BenchError> {
        let bytes = self
            .call(reqwest::Method::GET, path, token, None, wait)
            .await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| BenchError::Http(format!("{path}: bad JSON: {e}")))
    }
}

/// The error of a non-2xx answer: its Matrix `errcode` and `error` when the body has them.
pub fn matrix_error(status: u16, bytes: &[u8]) -> BenchError {
    let parsed: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    BenchError::Matrix {
        status,
        errcode: parsed["errcode"].as_str().unwrap_or("").to_owned(),
        error: parsed["error"].as_str().map_or_else(
            || String::from_utf8_lossy(bytes).into_owned(),
            str::to_owned,
        ),
        retry_after_ms: parsed["retry_after_ms"].as_u64(),
    }
}

/// `PUT /presence/{userId}/status`'s path.
pub fn presence_path(user_id: &str) -> String {
    format!("/_matrix/client/v3/presence/{}/status", pct(user_id))
}

/// The watchers' `/sync` path up to the `since` parameter: presence left alone, rooms and
/// account data filtered out.
pub fn sync_prefix(timeout_ms: u64) -> String {
    const FILTER: &str = r#"{"room":{"rooms":[]},"account_data":{"not_types":["*"]}}"#;
    format!(
        "/_matrix/client/v3/sync?set_presence=offline&timeout={timeout_ms}&filter={}",
        pct(FILTER)
    )
}

/// A `/sync` path: [`sync_prefix`] and the token, if any.
pub fn sync_path(prefix: &str, since: Option<&str>) -> String {
    match since {
        Some(since) => format!("{prefix}&since={}", pct(since)),
        None => prefix.to_owned(),
    }
}

fn session(v: &Value) -> Result<Session, BenchError> {
    match (v["user_id"].as_str(), v["access_token"].as_str()) {
        (Some(user_id), Some(access_token)) => Ok(Session {
            user_id: user_id.to_owned(),
            access_token: access_token.to_owned(),
        }),
        _ => Err(BenchError::Http(
            "registration or login answered without user_id/access_token".to_owned(),
        )),
    }
}

/// The parts of a `/sync` response the watchers read.
#[derive(Debug, Deserialize)]
pub struct SyncBody<'a> {
    /// The token for the next request.
    pub next_batch: String,
    /// Presence events.
    #[serde(default, borrow)]
    pub presence: Option<PresenceSection<'a>>,
}

/// `presence` of a `/sync` response.
#[derive(Debug, Deserialize)]
pub struct PresenceSection<'a> {
    /// The events.
    #[serde(default, borrow)]
    pub events: Vec<PresenceEvent<'a>>,
}

/// One `m.presence` event.
#[derive(Debug, Deserialize)]
pub struct PresenceEvent<'a> {
    /// Whose presence.
    #[serde(borrow)]
    pub sender: Cow<'a, str>,
    /// The state.
    #[serde(default, borrow)]
    pub content: Option<PresenceContent<'a>>,
}

/// The content of an `m.presence` event.
#[derive(Debug, Deserialize)]
pub struct PresenceContent<'a> {
    /// The status message, which carries the update's number.
    #[serde(default, borrow)]
    pub status_msg: Option<Cow<'a, str>>,
}
