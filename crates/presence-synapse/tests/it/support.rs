//! Test services: PostgreSQL 15 and Redis, either external (env vars) or started here.
//!
//! - `PRESENCE_SYNAPSE_TEST_PG`: a libpq conninfo or URL of a server where the role may
//!   `CREATE DATABASE`; each test gets its own database, dropped when the test passes.
//! - `PRESENCE_SYNAPSE_TEST_REDIS`: `host:port`; each test uses its own channel.
//! - Otherwise one private PostgreSQL (`initdb` + `postgres`, as the `postgres` user when
//!   running as root, trust auth, Unix socket only) and one private `redis-server` are
//!   started per test binary, in a temporary directory, on free ports. They are stopped,
//!   and the directory removed, when the test process exits: each runs under a small shell
//!   that waits for its stdin (a pipe from this process) to close.

use std::{
    io::Write,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use presence_synapse::{PgSettings, RedisSettings, SynapseDb};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The fixture schema. TEST FIXTURE ONLY: it stands in for Synapse's migrations, which in a
/// real deployment create these tables (Presenced never does). Minimal DDL written from the
/// column lists of Synapse 1.163.2 (schema version 94: `full_schemas/72` plus deltas).
const FIXTURE_DDL: &str = "
CREATE TABLE schema_version (
    lock CHAR(1) NOT NULL DEFAULT 'X' UNIQUE,
    version INTEGER NOT NULL,
    upgraded BOOL NOT NULL,
    CHECK (lock = 'X')
);
INSERT INTO schema_version (version, upgraded) VALUES (94, false);
CREATE TABLE presence_stream (
    stream_id bigint, user_id text, state text, last_active_ts bigint,
    last_federation_update_ts bigint, last_user_sync_ts bigint, status_msg text,
    currently_active boolean, instance_name text
);
CREATE INDEX presence_stream_id ON presence_stream (stream_id, user_id);
CREATE INDEX presence_stream_user_id ON presence_stream (user_id);
CREATE SEQUENCE presence_stream_sequence START WITH 1 INCREMENT BY 1 NO MINVALUE NO MAXVALUE CACHE 1;
CREATE TABLE stream_positions (
    stream_name text NOT NULL, instance_name text NOT NULL, stream_id bigint NOT NULL
);
CREATE UNIQUE INDEX stream_positions_idx ON stream_positions (stream_name, instance_name);
CREATE TABLE users (
    name text UNIQUE, password_hash text, creation_ts bigint,
    admin smallint DEFAULT 0 NOT NULL, is_guest smallint DEFAULT 0 NOT NULL,
    deactivated smallint DEFAULT 0 NOT NULL, shadow_banned boolean,
    locked boolean DEFAULT false NOT NULL
);
CREATE TABLE access_tokens (
    id bigint PRIMARY KEY, user_id text NOT NULL, device_id text, token text NOT NULL UNIQUE,
    valid_until_ms bigint, puppets_user_id text, last_validated bigint,
    refresh_token_id bigint, used boolean
);
CREATE TABLE current_state_events (
    event_id text NOT NULL UNIQUE, room_id text NOT NULL, type text NOT NULL,
    state_key text NOT NULL, membership text, event_stream_ordering bigint,
    UNIQUE (room_id, type, state_key)
);
";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free local port")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn unique_dir(kind: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "presence-synapse-{kind}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    dir
}

/// A command run as the `postgres` user when we are root (initdb refuses root).
fn pg_command(program: &str, root: bool) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", program]);
        c
    } else {
        Command::new(program)
    }
}

/// Runs `program args` under `sh` in the background until this process exits (stdin EOF),
/// then stops it with `signal` and removes `cleanup_dir`. Its output goes to
/// `cleanup_dir/server.log` (see [`server_log`]).
fn spawn_watched(mut sh: Command, script_args: &[&str], signal: &str, cleanup_dir: &Path) -> Child {
    let dir = cleanup_dir.display();
    let script = format!(
        "\"$@\" </dev/null >>'{dir}/server.log' 2>&1 & p=$!; cat >/dev/null; kill -{signal} $p; wait $p; rm -rf '{dir}'"
    );
    sh.args(["-c", &script, "sh"]).args(script_args);
    sh.stdin(Stdio::piped()).stdout(Stdio::null());
    sh.spawn()
        .unwrap_or_else(|e| panic!("cannot start {script_args:?}: {e}"))
}

struct Service {
    conninfo: String,
    _watchdog: Mutex<Child>,
}

fn local_pg() -> &'static Service {
    static PG: OnceLock<Service> = OnceLock::new();
    PG.get_or_init(|| {
        let root = is_root();
        let dir = unique_dir("pg");
        let data = dir.join("data");
        if root {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "cannot chown {} to postgres", dir.display());
        }
        let out = pg_command(&format!("{PG_BIN}/initdb"), root)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "-N",
                "-D",
            ])
            .arg(&data)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run {PG_BIN}/initdb (is PostgreSQL 15 installed?): {e}")
            });
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port().to_string();
        let sock = dir.display().to_string();
        let data_s = data.display().to_string();
        let postgres = format!("{PG_BIN}/postgres");
        let sh = if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "sh"]);
            c
        } else {
            Command::new("sh")
        };
        let mut child = spawn_watched(
            sh,
            &[
                &postgres,
                "-D",
                &data_s,
                "-p",
                &port,
                "-k",
                &sock,
                "-c",
                "listen_addresses=",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
            ],
            "INT",
            &dir,
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = Command::new(format!("{PG_BIN}/pg_isready"))
                .args(["-q", "-h", &sock, "-p", &port])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "PostgreSQL exited during startup: {status}\n{}",
                    server_log(&dir)
                );
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not become ready in 60 s\n{}",
                server_log(&dir)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Service {
            conninfo: format!("host={sock} port={port} user=postgres dbname=postgres"),
            _watchdog: Mutex::new(child),
        }
    })
}

fn server_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
}

fn local_redis() -> &'static Service {
    static REDIS: OnceLock<Service> = OnceLock::new();
    REDIS.get_or_init(|| {
        let dir = unique_dir("redis");
        let port = free_port();
        let child = spawn_watched(
            Command::new("sh"),
            &redis_args(port, &dir)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            "TERM",
            &dir,
        );
        wait_for_tcp(port);
        Service {
            conninfo: format!("127.0.0.1:{port}"),
            _watchdog: Mutex::new(child),
        }
    })
}

fn redis_args(port: u16, dir: &Path) -> Vec<String> {
    [
        "redis-server",
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &dir.display().to_string(),
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

pub fn wait_for_tcp(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on 127.0.0.1:{port} after 20 s (is redis-server installed?)"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The PostgreSQL conninfo to use: the env var's, or the private server's.
pub fn pg_conninfo() -> String {
    match std::env::var("PRESENCE_SYNAPSE_TEST_PG") {
        Ok(c) if !c.is_empty() => c,
        _ => local_pg().conninfo.clone(),
    }
}

/// Redis settings: the env var's `host:port`, or the private server's.
pub fn redis_settings() -> RedisSettings {
    let addr = match std::env::var("PRESENCE_SYNAPSE_TEST_REDIS") {
        Ok(a) if !a.is_empty() => a,
        _ => local_redis().conninfo.clone(),
    };
    let (host, port) = addr
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("PRESENCE_SYNAPSE_TEST_REDIS must be host:port, not {addr:?}"));
    RedisSettings::tcp(host, port.parse().expect("bad Redis port"))
}

/// A private `redis-server` this test may kill and restart on the same port.
pub struct OwnRedis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl OwnRedis {
    pub fn start() -> Self {
        let mut r = Self {
            port: free_port(),
            dir: unique_dir("own-redis"),
            child: None,
        };
        r.restart();
        r
    }

    pub fn restart(&mut self) {
        let args = redis_args(self.port, &self.dir);
        let child = Command::new(&args[0])
            .args(&args[1..])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server (apt-get install redis-server): {e}")
            });
        self.child = Some(child);
        wait_for_tcp(self.port);
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn settings(&self) -> RedisSettings {
        RedisSettings::tcp("127.0.0.1", self.port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh database holding the fixture schema.
pub struct TestDb {
    pub db: SynapseDb,
    pub settings: PgSettings,
    /// A direct client on the test database, for setting up and inspecting rows.
    pub sql: tokio_postgres::Client,
    name: String,
    admin: tokio_postgres::Client,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

async fn client(conninfo: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to PostgreSQL at {conninfo:?}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

impl TestDb {
    pub async fn new() -> Self {
        let base = pg_conninfo();
        let admin = client(&base).await;
        let name = format!(
            "presence_synapse_t{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        admin
            .batch_execute(&format!(
                "CREATE DATABASE {name} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
            ))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let mut settings = PgSettings::from_conninfo(&base).unwrap();
        settings.dbname = name.clone();
        settings.cp_max = 4;
        let mut cfg: tokio_postgres::Config = base.parse().unwrap();
        cfg.dbname(&name);
        let (sql, conn) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        sql.batch_execute(FIXTURE_DDL).await.unwrap();
        let db = SynapseDb::connect(&settings).await.unwrap();
        Self {
            db,
            settings,
            sql,
            name,
            admin,
        }
    }

    /// Drops the database (call at the end of a passing test).
    pub async fn finish(self) {
        let Self {
            db,
            sql,
            name,
            admin,
            ..
        } = self;
        drop(db);
        drop(sql);
        // Pooled connections close asynchronously; FORCE ends any still open.
        let _ = admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
    }
}

/// Writes a line to stderr immediately (test output capture hides println on success).
#[allow(dead_code)]
pub fn note(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}
