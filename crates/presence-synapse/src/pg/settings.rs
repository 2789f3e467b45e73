//! [`PgSettings`]: the connection settings of Synapse's `database` section.
//!
//! Synapse hands `database.args` to psycopg2 as libpq keywords (`synapse/storage/engines/
//! postgres.py`); Presenced reads the same mapping so an operator's `homeserver.yaml` works
//! unchanged. `cp_min`/`cp_max` are Twisted's connection-pool bounds (defaults 3 and 5).

use std::{path::PathBuf, str::FromStr, time::Duration};

use serde_json::{Map, Value};

use crate::Error;

/// Where the PostgreSQL server is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PgHost {
    /// A host name or IP address, over TCP.
    Tcp(String),
    /// The directory holding the server's Unix socket (libpq: a `host` starting with `/`).
    Socket(PathBuf),
}

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS only if the server insists.
    Allow,
    /// TLS if the server offers it (libpq's default).
    #[default]
    Prefer,
    /// TLS, no certificate check.
    Require,
    /// TLS, certificate checked against a CA.
    VerifyCa,
    /// TLS, certificate and host name checked.
    VerifyFull,
}

impl SslMode {
    /// Parses libpq's spelling.
    pub fn from_libpq(s: &str) -> Option<Self> {
        Some(match s {
            "disable" => Self::Disable,
            "allow" => Self::Allow,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }

    /// Whether the mode forbids falling back to a clear-text connection.
    pub fn requires_tls(self) -> bool {
        matches!(self, Self::Require | Self::VerifyCa | Self::VerifyFull)
    }
}

/// Connection settings for Synapse's PostgreSQL database.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PgSettings {
    /// The role to connect as (`user`).
    pub user: String,
    /// Its password, if password authentication is used.
    pub password: Option<String>,
    /// The database (`dbname`, or psycopg2's older alias `database`).
    pub dbname: String,
    /// The server (`host`); libpq's Debian default is the socket directory
    /// `/var/run/postgresql`.
    pub host: PgHost,
    /// The port (`port`, default 5432); also names the socket file in a socket directory.
    pub port: u16,
    /// `cp_min`: kept for reporting; the pool opens connections on demand.
    pub cp_min: usize,
    /// `cp_max`: the pool's maximum size.
    pub cp_max: usize,
    /// `sslmode`: `require`, `verify-ca` and `verify-full` connect with TLS (libpq's
    /// meanings); `disable`, `allow` and `prefer` in clear text.
    pub ssl_mode: SslMode,
    /// `sslrootcert`: the CA certificates (PEM) the server's certificate is checked against.
    pub ssl_root_cert: Option<PathBuf>,
    /// `application_name`, shown in `pg_stat_activity`.
    pub application_name: Option<String>,
    /// `connect_timeout`, in seconds.
    pub connect_timeout: Option<Duration>,
    /// Keys of `database.args` that Presenced does not use, for a startup report.
    pub ignored_keys: Vec<String>,
}

const ARGS: &str = "database.args";
/// Twisted adbapi's `ConnectionPool` defaults, which Synapse inherits.
const DEFAULT_CP_MIN: usize = 3;
const DEFAULT_CP_MAX: usize = 5;
const DEFAULT_PORT: u16 = 5432;
const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";

impl PgSettings {
    /// Settings for `user`@`host`:`port`/`dbname`, no password, default pool bounds.
    pub fn new(user: &str, dbname: &str, host: PgHost, port: u16) -> Self {
        Self {
            user: user.to_owned(),
            password: None,
            dbname: dbname.to_owned(),
            host,
            port,
            cp_min: DEFAULT_CP_MIN,
            cp_max: DEFAULT_CP_MAX,
            ssl_mode: SslMode::default(),
            ssl_root_cert: None,
            application_name: None,
            connect_timeout: None,
            ignored_keys: Vec::new(),
        }
    }

    /// Reads Synapse's `database.args` mapping (as parsed from YAML into JSON values).
    /// Errors name the offending key, e.g. `database.args.port`.
    pub fn from_args(args: &Value) -> Result<Self, Error> {
        let map = args
            .as_object()
            .ok_or_else(|| config(ARGS, "must be a mapping"))?;
        let user = string(map, "user")?.ok_or_else(|| {
            config(
                &key("user"),
                "is required (Presenced does not guess libpq's default role)",
            )
        })?;
        let dbname = match (string(map, "dbname")?, string(map, "database")?) {
            (Some(a), Some(b)) if a != b => {
                return Err(config(&key("dbname"), "conflicts with `database`"));
            }
            (Some(a), _) | (None, Some(a)) => a,
            (None, None) => {
                return Err(config(&key("dbname"), "is required (or `database`)"));
            }
        };
        let host = match string(map, "host")? {
            Some(h) if h.is_empty() => return Err(config(&key("host"), "is empty")),
            Some(h) if h.starts_with('/') => PgHost::Socket(PathBuf::from(h)),
            Some(h) => PgHost::Tcp(h),
            None => PgHost::Socket(PathBuf::from(DEFAULT_SOCKET_DIR)),
        };
        let port = match integer(map, "port")? {
            None => DEFAULT_PORT,
            Some(p) => u16::try_from(p)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| config(&key("port"), "must be between 1 and 65535"))?,
        };
        let cp_min = pool_bound(map, "cp_min", DEFAULT_CP_MIN)?;
        let cp_max = pool_bound(map, "cp_max", DEFAULT_CP_MAX)?;
        if cp_max == 0 {
            return Err(config(&key("cp_max"), "must be at least 1"));
        }
        if cp_min > cp_max {
            return Err(config(&key("cp_min"), "must not exceed `cp_max`"));
        }
        let ssl_mode = match string(map, "sslmode")? {
            None => SslMode::default(),
            Some(m) => SslMode::from_libpq(&m).ok_or_else(|| {
                config(
                    &key("sslmode"),
                    "must be one of disable, allow, prefer, require, verify-ca, verify-full",
                )
            })?,
        };
        let connect_timeout = integer(map, "connect_timeout")?
            .map(|s| {
                u64::try_from(s)
                    .map(Duration::from_secs)
                    .map_err(|_| config(&key("connect_timeout"), "must not be negative"))
            })
            .transpose()?;
        // Client certificates are not read: refuse rather than fail authentication later.
        for unsupported in ["sslcert", "sslkey"] {
            if map.get(unsupported).is_some_and(|v| !v.is_null()) {
                return Err(Error::Unsupported {
                    key: key(unsupported),
                    reason: "client certificates for PostgreSQL are not supported; use \
                             password or trust authentication"
                        .to_owned(),
                });
            }
        }
        let ssl_root_cert = string(map, "sslrootcert")?.map(PathBuf::from);
        const USED: &[&str] = &[
            "user",
            "password",
            "dbname",
            "database",
            "host",
            "port",
            "cp_min",
            "cp_max",
            "sslmode",
            "sslrootcert",
            "application_name",
            "connect_timeout",
        ];
        let mut ignored_keys: Vec<String> = map
            .keys()
            .filter(|k| !USED.contains(&k.as_str()))
            .cloned()
            .collect();
        ignored_keys.sort();
        Ok(Self {
            user,
            password: string(map, "password")?,
            dbname,
            host,
            port,
            cp_min,
            cp_max,
            ssl_mode,
            ssl_root_cert,
            application_name: string(map, "application_name")?,
            connect_timeout,
            ignored_keys,
        })
    }

    /// Reads a libpq conninfo string (`host=/run/pg port=5432 user=synapse dbname=synapse`)
    /// or a `postgresql://` URL; the pool bounds are the defaults.
    pub fn from_conninfo(conninfo: &str) -> Result<Self, Error> {
        let cfg = tokio_postgres::Config::from_str(conninfo)
            .map_err(|e| config("conninfo", &e.to_string()))?;
        let host = match cfg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => PgHost::Tcp(h.clone()),
            Some(tokio_postgres::config::Host::Unix(p)) => PgHost::Socket(p.clone()),
            None => PgHost::Socket(PathBuf::from(DEFAULT_SOCKET_DIR)),
        };
        let user = cfg
            .get_user()
            .ok_or_else(|| config("conninfo", "names no user"))?;
        let mut s = Self::new(
            user,
            cfg.get_dbname().unwrap_or(user),
            host,
            cfg.get_ports().first().copied().unwrap_or(DEFAULT_PORT),
        );
        s.password = cfg
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        s.ssl_mode = match cfg.get_ssl_mode() {
            tokio_postgres::config::SslMode::Disable => SslMode::Disable,
            tokio_postgres::config::SslMode::Require => SslMode::Require,
            _ => SslMode::Prefer,
        };
        s.connect_timeout = cfg.get_connect_timeout().copied();
        Ok(s)
    }

    /// The `sslmode` that applies: a Unix socket is never encrypted (libpq ignores `sslmode`
    /// there too).
    pub fn tls_mode(&self) -> SslMode {
        match self.host {
            PgHost::Socket(_) => SslMode::Disable,
            PgHost::Tcp(_) => self.ssl_mode,
        }
    }

    /// The tokio-postgres configuration; TLS itself is the connector's (see `crate::tls`).
    pub(crate) fn to_pg_config(&self) -> tokio_postgres::Config {
        let mut cfg = tokio_postgres::Config::new();
        cfg.user(&self.user).dbname(&self.dbname).port(self.port);
        match &self.host {
            PgHost::Tcp(h) => cfg.host(h),
            PgHost::Socket(p) => cfg.host_path(p),
        };
        if let Some(p) = &self.password {
            cfg.password(p);
        }
        if let Some(name) = &self.application_name {
            cfg.application_name(name);
        }
        if let Some(t) = self.connect_timeout {
            cfg.connect_timeout(t);
        }
        cfg.ssl_mode(if self.tls_mode().requires_tls() {
            tokio_postgres::config::SslMode::Require
        } else {
            tokio_postgres::config::SslMode::Disable
        });
        cfg
    }
}

fn key(name: &str) -> String {
    format!("{ARGS}.{name}")
}

fn config(key: &str, reason: &str) -> Error {
    Error::Config {
        key: key.to_owned(),
        reason: reason.to_owned(),
    }
}

/// A string value; YAML numbers are accepted too (`password: 1234` is a number in YAML).
fn string(map: &Map<String, Value>, name: &str) -> Result<Option<String>, Error> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(config(&key(name), "must be a string")),
    }
}

/// An integer value; numeric strings are accepted, as libpq takes every keyword as text.
fn integer(map: &Map<String, Value>, name: &str) -> Result<Option<i64>, Error> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| config(&key(name), "must be an integer")),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| config(&key(name), "must be an integer")),
        Some(_) => Err(config(&key(name), "must be an integer")),
    }
}

fn pool_bound(map: &Map<String, Value>, name: &str, default: usize) -> Result<usize, Error> {
    match integer(map, name)? {
        None => Ok(default),
        Some(n) => usize::try_from(n).map_err(|_| config(&key(name), "must not be negative")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_the_reference_homeserver_yaml() {
        let s = PgSettings::from_args(&json!({
            "user": "synapse", "dbname": "synapse", "host": "/tmp/pgsock", "port": 55432,
            "cp_min": 1, "cp_max": 3, "keepalives_idle": 10
        }))
        .unwrap();
        assert_eq!(s.user, "synapse");
        assert_eq!(s.dbname, "synapse");
        assert_eq!(s.host, PgHost::Socket(PathBuf::from("/tmp/pgsock")));
        assert_eq!((s.port, s.cp_min, s.cp_max), (55432, 1, 3));
        assert_eq!(s.ssl_mode, SslMode::Prefer);
        assert_eq!(s.ignored_keys, ["keepalives_idle"]);
    }

    #[test]
    fn tcp_host_aliases_and_defaults() {
        let s = PgSettings::from_args(&json!({
            "user": "u", "database": "d", "host": "db.internal", "password": 1234,
            "port": "6432", "sslmode": "disable"
        }))
        .unwrap();
        assert_eq!(s.host, PgHost::Tcp("db.internal".to_owned()));
        assert_eq!(s.dbname, "d");
        assert_eq!(s.password.as_deref(), Some("1234"));
        assert_eq!((s.port, s.cp_min, s.cp_max), (6432, 3, 5));
        assert_eq!(s.ssl_mode, SslMode::Disable);
        let d = PgSettings::from_args(&json!({"user": "u", "dbname": "d"})).unwrap();
        assert_eq!(d.host, PgHost::Socket(PathBuf::from("/var/run/postgresql")));
        assert_eq!(d.port, 5432);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (json!([]), "database.args"),
            (json!({"dbname": "d"}), "database.args.user"),
            (json!({"user": "u"}), "database.args.dbname"),
            (
                json!({"user": "u", "dbname": "a", "database": "b"}),
                "database.args.dbname",
            ),
            (
                json!({"user": "u", "dbname": "d", "port": 70000}),
                "database.args.port",
            ),
            (
                json!({"user": "u", "dbname": "d", "port": "x"}),
                "database.args.port",
            ),
            (
                json!({"user": "u", "dbname": "d", "cp_min": 9, "cp_max": 2}),
                "database.args.cp_min",
            ),
            (
                json!({"user": "u", "dbname": "d", "cp_max": 0}),
                "database.args.cp_max",
            ),
            (
                json!({"user": "u", "dbname": "d", "sslmode": "maybe"}),
                "database.args.sslmode",
            ),
            (json!({"user": ["u"], "dbname": "d"}), "database.args.user"),
            (
                json!({"user": "u", "dbname": "d", "host": ""}),
                "database.args.host",
            ),
        ];
        for (args, want) in cases {
            match PgSettings::from_args(&args) {
                Err(Error::Config { key, .. }) => assert_eq!(key, want, "{args}"),
                other => panic!("{args}: {other:?}"),
            }
        }
    }

    #[test]
    fn conninfo_and_urls() {
        let s = PgSettings::from_conninfo("host=/tmp/x port=5433 user=postgres dbname=t").unwrap();
        assert_eq!(s.host, PgHost::Socket(PathBuf::from("/tmp/x")));
        assert_eq!(
            (s.port, s.user.as_str(), s.dbname.as_str()),
            (5433, "postgres", "t")
        );
        let u = PgSettings::from_conninfo("postgresql://syn:pw@127.0.0.1:5432/synapse").unwrap();
        assert_eq!(u.host, PgHost::Tcp("127.0.0.1".to_owned()));
        assert_eq!(u.password.as_deref(), Some("pw"));
    }
}
