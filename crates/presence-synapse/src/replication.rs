//! The Redis transport of Synapse's replication: a [`Subscriber`] connection
//! (`SUBSCRIBE <server_name>`) that delivers parsed [`Command`]s on a bounded channel, and a
//! [`Publisher`] connection (`PUBLISH <server_name> <line>`), as each Synapse process keeps
//! two connections (`RH:394-406`).
//!
//! Both reconnect on any error with exponential back-off capped at [`MAX_BACKOFF`]. Each
//! successful (re)subscription is reported as [`Event::Connected`]: RDATA published while
//! the connection was down is lost for everyone who was not listening, so the caller must
//! then re-announce its POSITIONs (and may publish `REPLICATE `), exactly as after startup.
//! Own-echo filtering is the caller's job ([`Command::is_echo_of`]).

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use presence_router::ServerName;
use redis::{
    AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo,
    aio::MultiplexedConnection,
};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{Command, Error};

/// The longest wait between reconnection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Synapse pings Redis every 30 s (`redis.py:321-329`); a ping that takes longer than
/// [`PING_TIMEOUT`] means a dead connection that TCP has not noticed.
const PING_INTERVAL: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where Redis listens.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisAddr {
    /// TCP `host:port`.
    Tcp {
        /// Host name or IP.
        host: String,
        /// Port.
        port: u16,
    },
    /// A Unix socket (`path`).
    Unix(PathBuf),
}

/// Synapse's `redis` section (`synapse/config/redis.py`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisSettings {
    /// `host`/`port` (defaults `localhost`, 6379), or `path` when set (it wins, as in Synapse).
    pub addr: RedisAddr,
    /// `dbid` (default 0).
    pub dbid: i64,
    /// `username` (Redis 6 ACLs; new in Synapse 1.163).
    pub username: Option<String>,
    /// `password` (or the file named by `password_path`, read by the caller).
    pub password: Option<String>,
    /// `use_tls`: refused by [`Subscriber::new`]/[`Publisher::new`] for now.
    pub use_tls: bool,
    /// Keys of the section that Presenced does not use, for a startup report.
    pub ignored_keys: Vec<String>,
}

impl RedisSettings {
    /// Settings for `host:port`, no auth, database 0.
    pub fn tcp(host: &str, port: u16) -> Self {
        Self {
            addr: RedisAddr::Tcp {
                host: host.to_owned(),
                port,
            },
            dbid: 0,
            username: None,
            password: None,
            use_tls: false,
            ignored_keys: Vec::new(),
        }
    }

    /// Reads Synapse's `redis` mapping (as parsed from YAML into JSON values). Errors name
    /// the key, e.g. `redis.port`. `enabled` is the caller's concern and is not checked.
    pub fn from_config(section: &Value) -> Result<Self, Error> {
        let map = section
            .as_object()
            .ok_or_else(|| config("redis", "must be a mapping"))?;
        let host = string(map, "host")?.unwrap_or_else(|| "localhost".to_owned());
        let port = match map.get("port") {
            None | Some(Value::Null) => 6379,
            Some(v) => v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0)
                .ok_or_else(|| config("redis.port", "must be between 1 and 65535"))?,
        };
        let addr = match string(map, "path")? {
            Some(p) => RedisAddr::Unix(PathBuf::from(p)),
            None => RedisAddr::Tcp { host, port },
        };
        let dbid = match map.get("dbid") {
            None | Some(Value::Null) => 0,
            Some(v) => v
                .as_i64()
                .filter(|d| *d >= 0)
                .ok_or_else(|| config("redis.dbid", "must be a non-negative integer"))?,
        };
        let use_tls = match map.get("use_tls") {
            None | Some(Value::Null) => false,
            Some(v) => v
                .as_bool()
                .ok_or_else(|| config("redis.use_tls", "must be true or false"))?,
        };
        let username = string(map, "username")?;
        let password = string(map, "password")?;
        if username.is_some() && password.is_none() {
            return Err(config("redis.username", "requires `password` (as Synapse)"));
        }
        const USED: &[&str] = &[
            "enabled", "host", "port", "path", "dbid", "use_tls", "username", "password",
        ];
        let mut ignored_keys: Vec<String> = map
            .keys()
            .filter(|k| !USED.contains(&k.as_str()))
            .cloned()
            .collect();
        ignored_keys.sort();
        Ok(Self {
            addr,
            dbid,
            username,
            password,
            use_tls,
            ignored_keys,
        })
    }

    fn client(&self) -> Result<redis::Client, Error> {
        if self.use_tls {
            return Err(Error::Unsupported {
                key: "redis.use_tls".to_owned(),
                reason: "TLS to Redis is not implemented yet".to_owned(),
            });
        }
        let addr = match &self.addr {
            RedisAddr::Tcp { host, port } => ConnectionAddr::Tcp(host.clone(), *port),
            RedisAddr::Unix(p) => ConnectionAddr::Unix(p.clone()),
        };
        let mut redis = RedisConnectionInfo::default().set_db(self.dbid);
        if let Some(u) = &self.username {
            redis = redis.set_username(u);
        }
        if let Some(p) = &self.password {
            redis = redis.set_password(p);
        }
        let info = addr.into_connection_info()?.set_redis_settings(redis);
        Ok(redis::Client::open(info)?)
    }
}

/// What the subscriber delivers.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// SUBSCRIBE succeeded (first time, or again after a connection loss): announce
    /// positions now.
    Connected,
    /// The subscription was lost; reconnection is under way. Commands published meanwhile
    /// are not seen.
    Disconnected {
        /// What went wrong, for the log.
        reason: String,
    },
    /// A command received on the channel (own publishes included).
    Command(Command),
}

/// The subscribing connection. Run it with [`Subscriber::run`].
#[derive(Debug)]
pub struct Subscriber {
    client: redis::Client,
    channel: String,
    events: mpsc::Sender<Event>,
}

impl Subscriber {
    /// A subscriber to `server_name`'s channel, and the receiving end of its events
    /// (`capacity` bounds the channel; a slow consumer slows the subscriber down).
    pub fn new(
        settings: &RedisSettings,
        server_name: &ServerName,
        capacity: usize,
    ) -> Result<(Self, mpsc::Receiver<Event>), Error> {
        let (events, rx) = mpsc::channel(capacity.max(1));
        Ok((
            Self {
                client: settings.client()?,
                channel: server_name.as_str().to_owned(),
                events,
            },
            rx,
        ))
    }

    /// Subscribes, delivers, and reconnects until `shutdown` is cancelled or the receiver is
    /// dropped.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let reason = tokio::select! {
                () = shutdown.cancelled() => return,
                r = self.session(&mut backoff) => match r {
                    SessionEnd::ReceiverGone => return,
                    SessionEnd::Lost(reason) => reason,
                },
            };
            warn!(channel = %self.channel, %reason, backoff_ms = backoff.as_millis() as u64, "Redis subscription lost; reconnecting.");
            if self
                .events
                .send(Event::Disconnected { reason })
                .await
                .is_err()
            {
                return;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One connection's life: connect, subscribe, report, deliver until it breaks.
    async fn session(&self, backoff: &mut Duration) -> SessionEnd {
        let pubsub =
            match tokio::time::timeout(CONNECT_TIMEOUT, self.client.get_async_pubsub()).await {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => return SessionEnd::Lost(format!("connect: {e}")),
                Err(_) => return SessionEnd::Lost("connect: timed out".to_owned()),
            };
        let (mut sink, mut stream) = pubsub.split();
        if let Err(e) = sink.subscribe(&self.channel).await {
            return SessionEnd::Lost(format!("SUBSCRIBE: {e}"));
        }
        *backoff = MIN_BACKOFF;
        info!(channel = %self.channel, "Subscribed to Synapse's replication channel.");
        if self.events.send(Event::Connected).await.is_err() {
            return SessionEnd::ReceiverGone;
        }
        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.tick().await;
        loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else {
                        return SessionEnd::Lost("connection closed".to_owned());
                    };
                    let Ok(line) = std::str::from_utf8(msg.get_payload_bytes()) else {
                        warn!(channel = %self.channel, "Dropping a replication message that is not UTF-8.");
                        continue;
                    };
                    match Command::parse(line) {
                        Ok(cmd) => {
                            if self.events.send(Event::Command(cmd)).await.is_err() {
                                return SessionEnd::ReceiverGone;
                            }
                        }
                        // As Synapse (`redis.py:185-192`): log and drop.
                        Err(e) => warn!(error = %e, line = %truncate(line), "Dropping an unparsable replication command."),
                    }
                }
                _ = ping.tick() => {
                    match tokio::time::timeout(PING_TIMEOUT, sink.ping::<()>()).await {
                        Ok(Ok(())) => debug!("Redis ping answered."),
                        Ok(Err(e)) => return SessionEnd::Lost(format!("PING: {e}")),
                        Err(_) => return SessionEnd::Lost("PING timed out".to_owned()),
                    }
                }
            }
        }
    }
}

enum SessionEnd {
    ReceiverGone,
    Lost(String),
}

/// The publishing connection: a cheap, cloneable handle on a task that publishes lines in
/// the order they were queued, reconnecting (and retrying the line at the head) on errors.
#[derive(Debug, Clone)]
pub struct Publisher {
    lines: mpsc::Sender<String>,
    reconnects: Arc<AtomicU64>,
}

impl Publisher {
    /// A publisher to `server_name`'s channel with room for `capacity` queued commands; run
    /// the returned task with [`PublisherTask::run`].
    pub fn new(
        settings: &RedisSettings,
        server_name: &ServerName,
        capacity: usize,
    ) -> Result<(Self, PublisherTask), Error> {
        let (lines, rx) = mpsc::channel(capacity.max(1));
        let reconnects = Arc::new(AtomicU64::new(0));
        Ok((
            Self {
                lines,
                reconnects: reconnects.clone(),
            },
            PublisherTask {
                client: settings.client()?,
                channel: server_name.as_str().to_owned(),
                lines: rx,
                reconnects,
            },
        ))
    }

    /// How many lines are queued and not yet handed to Redis (the one being published
    /// included only until it is taken from the queue).
    pub fn queued(&self) -> usize {
        self.lines.max_capacity() - self.lines.capacity()
    }

    /// How many times the publishing connection was lost and has been re-established (or
    /// is being).
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// Queues `command` for publishing (waits while the queue is full). Commands go out in
    /// the order queued. Fails only once the task has stopped.
    pub async fn publish(&self, command: &Command) -> Result<(), Error> {
        self.lines
            .send(command.to_line())
            .await
            .map_err(|_| Error::Closed)
    }
}

/// The task behind a [`Publisher`].
#[derive(Debug)]
pub struct PublisherTask {
    client: redis::Client,
    channel: String,
    lines: mpsc::Receiver<String>,
    reconnects: Arc<AtomicU64>,
}

impl PublisherTask {
    /// Publishes queued lines until `shutdown` is cancelled or every [`Publisher`] is
    /// dropped. A line whose PUBLISH fails is retried after reconnecting, so order holds;
    /// receivers discard stale RDATA themselves.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut conn: Option<MultiplexedConnection> = None;
        let mut backoff = MIN_BACKOFF;
        loop {
            let line = tokio::select! {
                () = shutdown.cancelled() => return,
                l = self.lines.recv() => match l { Some(l) => l, None => return },
            };
            loop {
                let result = match &mut conn {
                    Some(c) => redis::cmd("PUBLISH")
                        .arg(&self.channel)
                        .arg(&line)
                        .query_async::<i64>(c)
                        .await
                        .map(|_| ())
                        .map_err(|e| format!("PUBLISH: {e}")),
                    None => {
                        let config = AsyncConnectionConfig::new()
                            .set_connection_timeout(Some(CONNECT_TIMEOUT))
                            .set_response_timeout(Some(PING_TIMEOUT));
                        match self
                            .client
                            .get_multiplexed_async_connection_with_config(&config)
                            .await
                        {
                            Ok(c) => {
                                info!(channel = %self.channel, "Connected to Redis for publishing.");
                                conn = Some(c);
                                continue;
                            }
                            Err(e) => Err(format!("connect: {e}")),
                        }
                    }
                };
                match result {
                    Ok(()) => {
                        backoff = MIN_BACKOFF;
                        break;
                    }
                    Err(reason) => {
                        warn!(channel = %self.channel, %reason, backoff_ms = backoff.as_millis() as u64, "Redis publish failed; reconnecting.");
                        if conn.take().is_some() {
                            self.reconnects.fetch_add(1, Ordering::Relaxed);
                        }
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        }
    }
}

/// Whether another process already writes `stream` as `instance`: subscribes, publishes
/// `REPLICATE`, and waits up to `wait` for a `POSITION` of that stream under that name (every
/// Synapse process answers `REPLICATE` with the positions of the streams it writes). Run it
/// before announcing anything under `instance`, so that no answer can be an own echo.
pub async fn writer_already_running(
    settings: &RedisSettings,
    server_name: &ServerName,
    instance: &str,
    stream: &str,
    wait: Duration,
) -> Result<bool, Error> {
    let client = settings.client()?;
    let channel = server_name.as_str();
    let pubsub = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| Error::Timeout {
            operation: "connecting to Redis",
            after: CONNECT_TIMEOUT,
        })??;
    let (mut sink, mut messages) = pubsub.split();
    sink.subscribe(channel).await?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(PING_TIMEOUT));
    let mut publisher = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    redis::cmd("PUBLISH")
        .arg(channel)
        .arg(Command::Replicate.to_line())
        .query_async::<i64>(&mut publisher)
        .await?;
    let answered = async {
        while let Some(msg) = messages.next().await {
            let Ok(line) = std::str::from_utf8(msg.get_payload_bytes()) else {
                continue;
            };
            if let Ok(Command::Position {
                stream: s,
                instance_name,
                ..
            }) = Command::parse(line)
                && s == stream
                && instance_name == instance
            {
                return true;
            }
        }
        false
    };
    Ok(tokio::time::timeout(wait, answered).await.unwrap_or(false))
}

fn truncate(line: &str) -> &str {
    let mut end = line.len().min(200);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    &line[..end]
}

fn config(key: &str, reason: &str) -> Error {
    Error::Config {
        key: key.to_owned(),
        reason: reason.to_owned(),
    }
}

fn string(map: &Map<String, Value>, name: &str) -> Result<Option<String>, Error> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(config(&format!("redis.{name}"), "must be a string")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_synapse_redis_section() {
        let s = RedisSettings::from_config(
            &json!({"enabled": true, "host": "127.0.0.1", "port": 56379}),
        )
        .unwrap();
        assert_eq!(s, RedisSettings::tcp("127.0.0.1", 56379));
        let d = RedisSettings::from_config(&json!({"enabled": true})).unwrap();
        assert_eq!(
            d.addr,
            RedisAddr::Tcp {
                host: "localhost".to_owned(),
                port: 6379
            }
        );
        let u = RedisSettings::from_config(
            &json!({"path": "/run/redis.sock", "dbid": 2, "password": "pw", "ca_file": "x"}),
        )
        .unwrap();
        assert_eq!(u.addr, RedisAddr::Unix(PathBuf::from("/run/redis.sock")));
        assert_eq!((u.dbid, u.password.as_deref()), (2, Some("pw")));
        assert_eq!(u.ignored_keys, ["ca_file"]);
        let tls = RedisSettings::from_config(&json!({"use_tls": true})).unwrap();
        assert!(matches!(tls.client(), Err(Error::Unsupported { .. })));
    }

    #[test]
    fn redis_errors_name_the_key() {
        for (v, want) in [
            (json!({"port": 0}), "redis.port"),
            (json!({"port": "x"}), "redis.port"),
            (json!({"dbid": -1}), "redis.dbid"),
            (json!({"use_tls": "yes"}), "redis.use_tls"),
            (json!({"username": "u"}), "redis.username"),
            (json!({"host": []}), "redis.host"),
            (json!("localhost"), "redis"),
        ] {
            match RedisSettings::from_config(&v) {
                Err(Error::Config { key, .. }) => assert_eq!(key, want, "{v}"),
                other => panic!("{v}: {other:?}"),
            }
        }
    }
}
