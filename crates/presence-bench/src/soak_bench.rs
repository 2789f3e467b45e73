//! `presence-bench soak`: the real `presenced` binary under a mixed load for a long time,
//! restarted every so often (SIGTERM and SIGKILL in turn), with its memory reported as it
//! goes and, at the end, a check that no acknowledged presence update was lost.
//!
//! The load: every user `PUT`s its presence in a loop with a status message naming the
//! update (`soak3#41`); watchers long-poll `/sync`; a churn task registers, logs in and joins
//! rooms. Each user's updates are sequential, so the last acknowledged one is known; one
//! that failed (the server went away mid-request) may or may not have been applied. After
//! the last restart every user's `GET` must show the last acknowledged update or one of the
//! failed ones sent after it. The state itself may have decayed since (online to
//! unavailable to offline: the server's timeouts), the status message may not.
//!
//! Output, one line each: `soak t_s=... rss_mb=...` every `--report-every`, `soak restart
//! ...` at each restart, and a final `soak result=ok|lost ...`; lost updates fail the run.

use std::{
    fmt::Write as _,
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    BenchError,
    http_bench::{
        client::{Matrix, Session, sync_path, sync_prefix},
        rss_mb,
    },
};

/// Arguments of `presence-bench soak`.
#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// The `presenced` binary to run.
    #[arg(long)]
    pub server_bin: PathBuf,
    /// How long the load runs (`90s`, `20m`, `1h`; plain numbers are seconds).
    #[arg(long, default_value = "20m", value_parser = parse_duration)]
    pub duration: Duration,
    /// Time between restarts (they alternate: SIGTERM, then SIGKILL).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub restart_every: Duration,
    /// Time between memory lines.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub report_every: Duration,
    /// Users that set their presence.
    #[arg(long, default_value_t = 50)]
    pub users: usize,
    /// Users long-polling `/sync`.
    #[arg(long, default_value_t = 20)]
    pub watchers: usize,
    /// Pause between one user's presence updates, in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub put_interval_ms: u64,
    /// Working directory (configuration, database, server log); a new one under the system
    /// temporary directory by default.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Parses `90s`, `20m`, `1h`, `500ms` or a number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, ""), |i| s.split_at(i));
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (90s, 20m, 1h)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?}")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

const SECRET: &str = "soak-shared-secret";
const ROOMS: usize = 5;
/// What a user's updates alternate between. Not `offline`: a user set offline is left alone
/// by every timeout, so it would make the check weaker, not stronger.
const STATES: [&str; 2] = ["online", "unavailable"];

/// The server process being soaked.
struct Server {
    bin: PathBuf,
    config: PathBuf,
    log: PathBuf,
    base: String,
    child: Option<Child>,
}

impl Server {
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    async fn start(&mut self, matrix: &Matrix) -> Result<(), BenchError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                return Err(BenchError::Http(format!(
                    "presenced exited at startup ({status}); see {}",
                    self.log.display()
                )));
            }
            if matrix
                .get(None, "/_matrix/client/versions", Duration::from_secs(2))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(BenchError::Http(format!(
                    "presenced did not answer within 60 s ({})",
                    self.base
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the server, gracefully (SIGTERM, waiting for it to exit) or not (SIGKILL).
    async fn stop(&mut self, graceful: bool) -> Result<(), BenchError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if graceful {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()?;
            if !status.success() {
                return Err(BenchError::Http("kill -TERM failed".to_owned()));
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(BenchError::Http(
                        "presenced did not exit within 60 s of SIGTERM".to_owned(),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        } else {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One user's updates: the last acknowledged and the failed ones sent after it.
#[derive(Debug, Default)]
struct Track {
    acked: Option<(u64, &'static str)>,
    unsure: Vec<(u64, &'static str)>,
}

#[derive(Debug, Default)]
struct Counts {
    puts_ok: AtomicU64,
    puts_failed: AtomicU64,
    syncs: AtomicU64,
    sync_errors: AtomicU64,
    registrations: AtomicU64,
    logins: AtomicU64,
    joins: AtomicU64,
    churn_errors: AtomicU64,
}

impl Counts {
    fn line(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "puts_ok={} puts_failed={} syncs={} sync_errors={} registrations={} logins={} \
             joins={} churn_errors={}",
            g(&self.puts_ok),
            g(&self.puts_failed),
            g(&self.syncs),
            g(&self.sync_errors),
            g(&self.registrations),
            g(&self.logins),
            g(&self.joins),
            g(&self.churn_errors),
        )
    }
}

/// Runs the soak and writes its lines to `out`.
pub fn main(args: &SoakArgs, out: &mut dyn Write) -> Result<(), BenchError> {
    if args.users == 0 || args.restart_every.is_zero() || args.report_every.is_zero() {
        return Err(BenchError::InvalidArgs(
            "--users, --restart-every and --report-every must be positive".to_owned(),
        ));
    }
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("presence-soak-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = dir.join("presenced.yaml");
    std::fs::write(&config, config_text(port, &dir))?;
    let base = format!("http://127.0.0.1:{port}");
    let mut server = Server {
        bin: args.server_bin.clone(),
        config,
        log: dir.join("presenced.log"),
        base: base.clone(),
        child: None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(run(args, &mut server, &base, out));
    runtime.block_on(server.stop(true))?;
    if result.is_ok() && args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn run(
    args: &SoakArgs,
    server: &mut Server,
    base: &str,
    out: &mut dyn Write,
) -> Result<(), BenchError> {
    let matrix = Matrix::new(base)?;
    server.start(&matrix).await?;
    let started = Instant::now();
    let first_rss = server.pid().map_or(0.0, rss_mb);
    let mut max_rss = first_rss;

    // Accounts and rooms.
    let mut users = Vec::with_capacity(args.users);
    for i in 0..args.users {
        users.push(matrix.register(SECRET, &format!("soak{i}")).await?);
    }
    let mut watchers = Vec::with_capacity(args.watchers);
    for i in 0..args.watchers {
        watchers.push(matrix.register(SECRET, &format!("soakw{i}")).await?);
    }
    let mut rooms = Vec::with_capacity(ROOMS);
    for _ in 0..ROOMS {
        rooms.push(matrix.create_room(&users[0].access_token).await?);
    }
    for (i, s) in users.iter().chain(&watchers).enumerate() {
        matrix.join(&s.access_token, &rooms[i % ROOMS]).await?;
    }
    let rooms = Arc::new(rooms);

    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());
    let tracks: Arc<Vec<Mutex<Track>>> =
        Arc::new((0..users.len()).map(|_| Mutex::default()).collect());
    let mut tasks = Vec::new();
    for (i, session) in users.iter().cloned().enumerate() {
        tasks.push(tokio::spawn(put_loop(
            matrix.clone(),
            session,
            i,
            Duration::from_millis(args.put_interval_ms),
            tracks.clone(),
            counts.clone(),
            stop.clone(),
        )));
    }
    for session in watchers.iter().cloned() {
        tasks.push(tokio::spawn(sync_loop(
            matrix.clone(),
            session,
            counts.clone(),
            stop.clone(),
        )));
    }
    tasks.push(tokio::spawn(churn_loop(
        matrix.clone(),
        rooms.clone(),
        counts.clone(),
        stop.clone(),
    )));

    let end = started + args.duration;
    let mut next_report = Instant::now() + args.report_every;
    let mut next_restart = Instant::now() + args.restart_every;
    let mut restarts = 0u64;
    let mut graceful = true;
    while Instant::now() < end {
        let now = Instant::now();
        if now >= next_report {
            let rss = server.pid().map_or(0.0, rss_mb);
            max_rss = max_rss.max(rss);
            writeln!(
                out,
                "soak t_s={:.0} rss_mb={rss:.1} restarts={restarts} {}",
                started.elapsed().as_secs_f64(),
                counts.line()
            )?;
            out.flush()?;
            next_report += args.report_every;
        }
        if now >= next_restart {
            restart(server, &matrix, graceful, out).await?;
            restarts += 1;
            graceful = !graceful;
            next_restart = Instant::now() + args.restart_every;
        }
        let wake = next_report.min(next_restart).min(end);
        tokio::time::sleep(wake.saturating_duration_since(Instant::now())).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    let end_rss = server.pid().map_or(0.0, rss_mb);
    max_rss = max_rss.max(end_rss);
    // The check is made on what the store kept: one more restart first.
    restart(server, &matrix, graceful, out).await?;
    restarts += 1;

    let (mut checked, mut lost, mut acked) = (0u64, 0u64, 0u64);
    for (i, session) in users.iter().enumerate() {
        let got = matrix.get_presence(session, &session.user_id).await?;
        let (expected, unsure) = {
            let t = lock(&tracks[i]);
            (t.acked, t.unsure.clone())
        };
        checked += 1;
        acked += u64::from(expected.is_some());
        if !matches(&got, i, expected, &unsure) {
            lost += 1;
            writeln!(
                out,
                "soak lost user={} got={got} acked={expected:?} unsure={unsure:?}",
                session.user_id
            )?;
        }
    }
    let result = if lost == 0 { "ok" } else { "lost" };
    writeln!(
        out,
        "soak result={result} duration_s={:.0} restarts={restarts} users={checked} \
         users_with_acked_update={acked} lost={lost} rss_start_mb={first_rss:.1} \
         rss_max_mb={max_rss:.1} rss_end_mb={end_rss:.1} {}",
        started.elapsed().as_secs_f64(),
        counts.line()
    )?;
    if lost > 0 {
        return Err(BenchError::Http(format!(
            "{lost} users lost an acknowledged update"
        )));
    }
    Ok(())
}

async fn restart(
    server: &mut Server,
    matrix: &Matrix,
    graceful: bool,
    out: &mut dyn Write,
) -> Result<(), BenchError> {
    let began = Instant::now();
    server.stop(graceful).await?;
    let stopped = began.elapsed();
    server.start(matrix).await?;
    writeln!(
        out,
        "soak restart signal={} stop_ms={} down_ms={}",
        if graceful { "TERM" } else { "KILL" },
        stopped.as_millis(),
        began.elapsed().as_millis()
    )?;
    Ok(())
}

/// Whether `got` (a presence `GET` answer) shows the last acknowledged update or one of the
/// unsure ones, its state possibly decayed by a timeout.
fn matches(
    got: &Value,
    user: usize,
    acked: Option<(u64, &'static str)>,
    unsure: &[(u64, &'static str)],
) -> bool {
    let status = got["status_msg"].as_str();
    let state = got["presence"].as_str().unwrap_or("");
    let decayed = |sent: &str| match sent {
        "online" => matches!(state, "online" | "unavailable" | "offline"),
        "unavailable" => matches!(state, "unavailable" | "offline"),
        _ => state == sent,
    };
    let Some(status) = status else {
        // Nothing applied yet: right only if nothing was acknowledged.
        return acked.is_none();
    };
    let Some(seq) = status
        .strip_prefix(&format!("soak{user}#"))
        .and_then(|s| s.parse::<u64>().ok())
    else {
        return false;
    };
    acked
        .into_iter()
        .chain(unsure.iter().copied())
        .any(|(s, sent)| s == seq && decayed(sent))
}

async fn put_loop(
    matrix: Matrix,
    session: Session,
    user: usize,
    interval: Duration,
    tracks: Arc<Vec<Mutex<Track>>>,
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
) {
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let state = STATES[(seq as usize + user) % STATES.len()];
        let status = format!("soak{user}#{seq}");
        let ok = matrix.put_presence(&session, state, &status).await.is_ok();
        {
            let mut t = lock(&tracks[user]);
            if ok {
                t.acked = Some((seq, state));
                t.unsure.clear();
            } else {
                t.unsure.push((seq, state));
            }
        }
        let counter = if ok {
            &counts.puts_ok
        } else {
            &counts.puts_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(if ok {
            interval
        } else {
            interval.max(Duration::from_millis(100))
        })
        .await;
    }
}

async fn sync_loop(matrix: Matrix, session: Session, counts: Arc<Counts>, stop: Arc<AtomicBool>) {
    let prefix = sync_prefix(5_000);
    let mut since: Option<String> = None;
    while !stop.load(Ordering::Relaxed) {
        let path = sync_path(&prefix, since.as_deref());
        match matrix
            .get(Some(&session.access_token), &path, Duration::from_secs(30))
            .await
        {
            Ok(v) => {
                counts.syncs.fetch_add(1, Ordering::Relaxed);
                since = v["next_batch"].as_str().map(str::to_owned);
            }
            Err(_) => {
                counts.sync_errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Registers a new user, logs it in again and joins a room, about once a second.
async fn churn_loop(
    matrix: Matrix,
    rooms: Arc<Vec<String>>,
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
) {
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let localpart = format!("soakc{n}");
        let step = async {
            let session = matrix.register(SECRET, &localpart).await?;
            counts.registrations.fetch_add(1, Ordering::Relaxed);
            let session = matrix.login(&localpart).await.unwrap_or(session);
            counts.logins.fetch_add(1, Ordering::Relaxed);
            if let Some(room) = rooms.get(n % rooms.len().max(1)) {
                matrix.join(&session.access_token, room).await?;
                counts.joins.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, BenchError>(())
        };
        if step.await.is_err() {
            counts.churn_errors.fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Locks `m`, ignoring poisoning (a panicking load task leaves its track consistent).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn config_text(port: u16, dir: &Path) -> String {
    let mut c = String::new();
    let _ = write!(
        c,
        r#"server_name: "localhost"
listeners:
  - port: {port}
    type: http
    bind_addresses: ['127.0.0.1']
    resources:
      - names: [client]
database:
  name: sqlite3
  args:
    database: "{db}"
registration_shared_secret: "{SECRET}"
password_hash_cost: {{memory_kib: 8, iterations: 1, parallelism: 1}}
presence:
  enabled: true
rc_presence:
  per_user: {{per_second: 1000000, burst_count: 1000000}}
rc_registration: {{per_second: 1000000, burst_count: 1000000}}
rc_login:
  address: {{per_second: 1000000, burst_count: 1000000}}
  account: {{per_second: 1000000, burst_count: 1000000}}
  failed_attempts: {{per_second: 1000000, burst_count: 1000000}}
rc_joins:
  local: {{per_second: 1000000, burst_count: 1000000}}
  remote: {{per_second: 1000000, burst_count: 1000000}}
rc_joins_per_room: {{per_second: 1000000, burst_count: 1000000}}
rc_room_creation: {{per_second: 1000000, burst_count: 1000000}}
"#,
        db = dir.join("presenced.db").display()
    );
    c
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("20m"), Ok(Duration::from_secs(1200)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn the_check_accepts_decay_and_unsure_updates_only() {
        let got = |p: &str, s: &str| json!({"presence": p, "status_msg": s});
        let acked = Some((4, "online"));
        assert!(matches(&got("online", "soak1#4"), 1, acked, &[]));
        assert!(matches(&got("offline", "soak1#4"), 1, acked, &[]));
        assert!(!matches(&got("online", "soak1#3"), 1, acked, &[]));
        assert!(!matches(&got("online", "soak2#4"), 1, acked, &[]));
        assert!(matches(
            &got("unavailable", "soak1#5"),
            1,
            acked,
            &[(5, "unavailable")]
        ));
        assert!(!matches(
            &got("online", "soak1#5"),
            1,
            acked,
            &[(5, "unavailable")]
        ));
        assert!(!matches(&json!({"presence": "offline"}), 1, acked, &[]));
        assert!(matches(&json!({"presence": "offline"}), 1, None, &[]));
    }
}
