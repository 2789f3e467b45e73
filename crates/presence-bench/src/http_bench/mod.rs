//! `presence-bench http`: an end-to-end load generator that speaks only the Matrix
//! client-server API, so that it drives Presenced and the reference homeserver alike.
//!
//! Setup, with bounded concurrency and progress on stderr: register the users through
//! shared-secret registration, lay them out in rooms ([`layout`]), and open the watchers'
//! long-polling `/sync` requests (`set_presence=offline`, rooms filtered out). Room watchers
//! are users who share rooms with updaters; router watchers (`benchall<k>`) are in no room and
//! see every update through the example router's `always_send_to_users`, which the server
//! must be configured with.
//!
//! Load: `--concurrency` workers send `PUT /presence/{userId}/status` for the users in turn,
//! alternating `online` and `unavailable` so that every update is a change, with the update's
//! number in the status message; paced at `--rate` updates per second or as fast as the
//! server answers. Several comma-separated rates run as consecutive steps over the same setup
//! (a rate sweep). How updates are credited to watchers is described in [`tracker`].
//!
//! Latency is measured from sending the PUT to the `/sync` response that shows the update,
//! not from the pacing schedule: when the server falls behind, the shortfall shows in the
//! achieved rate rather than in the percentiles.
//!
//! stdout gets one line per step (exactly one line for a single rate):
//!
//! ```text
//! http server=<label> users=<N> updates_per_sec=<X> deliveries_per_sec=<Y> p50_ms=<a> p99_ms=<b> rss_mb=<m>
//! ```

pub mod client;
pub mod conn;
pub mod layout;
pub mod tracker;

use std::{
    io::Write,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{StreamExt, TryStreamExt, stream};
use rustc_hash::FxHashMap;

use crate::{BenchError, rng::Rng};
use client::{Matrix, Session, SyncBody};
use conn::{Conn, Target};
use hyper::{Method, header::HeaderValue};
use layout::{Layout, LayoutConfig, RoomsMode};
use tracker::{StepStats, Tracker};

/// `presence-bench http` options.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct HttpArgs {
    /// The server's client API over plain HTTP, e.g. `http://127.0.0.1:8008`.
    #[arg(long)]
    pub base_url: String,
    /// The server's `registration_shared_secret`.
    #[arg(long)]
    pub shared_secret: String,
    /// Users who update their presence.
    #[arg(long)]
    pub users: usize,
    /// How many of the users also keep a `/sync` open (room watchers).
    #[arg(long, default_value_t = 1)]
    pub watchers: usize,
    /// Extra users in no room who keep a `/sync` open and must be listed in the server's
    /// `always_send_to_users` as `@benchall<k>:<server>`, k = 0..K.
    #[arg(long, default_value_t = 0)]
    pub router_watchers: usize,
    /// Room layout.
    #[arg(long, value_enum, default_value_t = RoomsMode::Zipf)]
    pub rooms: RoomsMode,
    /// Mean rooms per user (`--rooms zipf`).
    #[arg(long, default_value_t = 2.0)]
    pub rooms_per_user: f64,
    /// Members of the largest room (`--rooms zipf`; capped at a tenth of the users).
    #[arg(long, default_value_t = 1_000)]
    pub max_room: usize,
    /// PUTs in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Target updates per second; several comma-separated values run as consecutive steps;
    /// 0 means as fast as the server answers.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub rate: Vec<f64>,
    /// Seconds each step lasts.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before the first step, not counted.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Longest wait after the last step for the watchers to see what was sent, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
    /// Requests in flight at once during setup.
    #[arg(long, default_value_t = 16)]
    pub setup_concurrency: usize,
    /// The server's process ID, for its resident memory.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The server's name in the summary line.
    #[arg(long, default_value = "server")]
    pub label: String,
    /// Prefix of the generated localparts (default: derived from the clock, so that runs
    /// against the same server do not collide).
    #[arg(long)]
    pub user_prefix: Option<String>,
    /// Long-poll timeout of the watchers' `/sync`, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub sync_timeout_ms: u64,
    /// Seconds between progress lines on stderr.
    #[arg(long, default_value_t = 2.0)]
    pub progress: f64,
    /// Seed of the room layout.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// One summary line.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpReport {
    /// The server's label.
    pub label: String,
    /// Users who updated.
    pub users: usize,
    /// Accepted updates per second.
    pub updates_per_sec: f64,
    /// (watcher, update) pairs seen per second.
    pub deliveries_per_sec: f64,
    /// Median update-to-visible latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// The server's resident memory at the end of the step, MiB.
    pub rss_mb: f64,
}

impl std::fmt::Display for HttpReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "http server={} users={} updates_per_sec={:.0} deliveries_per_sec={:.0} p50_ms={:.2} p99_ms={:.2} rss_mb={:.1}",
            self.label,
            self.users,
            self.updates_per_sec,
            self.deliveries_per_sec,
            self.p50_ms,
            self.p99_ms,
            self.rss_mb
        )
    }
}

/// Runs the benchmark and writes one summary line per step to `out`.
pub fn main(args: &HttpArgs, out: &mut dyn Write) -> Result<(), BenchError> {
    validate(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let reports = runtime.block_on(run(args))?;
    for report in reports {
        writeln!(out, "{report}")?;
    }
    Ok(())
}

fn validate(args: &HttpArgs) -> Result<(), BenchError> {
    let bad = |what: &str| Err(BenchError::InvalidArgs(what.to_owned()));
    if args.label.is_empty() || args.label.contains(char::is_whitespace) {
        return bad("--label must be one word");
    }
    if args.concurrency == 0 || args.setup_concurrency == 0 {
        return bad("--concurrency and --setup-concurrency must be at least 1");
    }
    if args.rate.is_empty() || args.rate.iter().any(|r| !(r.is_finite() && *r >= 0.0)) {
        return bad("--rate must be non-negative numbers");
    }
    for (name, v) in [
        ("--duration", args.duration),
        ("--warmup", args.warmup),
        ("--drain", args.drain),
        ("--progress", args.progress),
    ] {
        if !(0.0..1e6).contains(&v) {
            return Err(BenchError::InvalidArgs(format!("{name} out of range")));
        }
    }
    if args.duration <= 0.0 {
        return bad("--duration must be positive");
    }
    if args.watchers + args.router_watchers == 0 {
        return bad("at least one watcher is needed (--watchers or --router-watchers)");
    }
    Target::new(&args.base_url)?;
    Ok(())
}

/// Everything the tasks share.
struct Ctx {
    target: Target,
    tracker: Tracker,
    /// Per user (updaters, then router watchers): the `Authorization` header.
    auth: Vec<HeaderValue>,
    /// Per updater: its `PUT /presence/{userId}/status` path.
    put_paths: Vec<String>,
    /// The watchers' `/sync` path before `since`.
    sync_prefix: String,
    /// How long a watcher's `/sync` may take: the long-poll timeout and a minute.
    sync_deadline: Duration,
    /// Full user ID → user index, for the watchers.
    index: FxHashMap<String, u32>,
    /// The tag in front of each update's number in its status message.
    tag: String,
    next_user: AtomicUsize,
    in_flight: AtomicU64,
    stop: AtomicBool,
}

async fn run(args: &HttpArgs) -> Result<Vec<HttpReport>, BenchError> {
    let started = Instant::now();
    let layout = Layout::build(&LayoutConfig {
        users: args.users,
        room_watchers: args.watchers,
        router_watchers: args.router_watchers,
        mode: args.rooms,
        rooms_per_user: args.rooms_per_user,
        max_room: args.max_room,
        seed: args.seed,
    })?;
    let mean_visible =
        layout.visible.iter().map(|&v| f64::from(v)).sum::<f64>() / args.users as f64;
    eprintln!(
        "layout: {} users, {} rooms ({} memberships, largest {}), {} room watchers, {} router watchers; each update should reach {:.1} watchers on average",
        args.users,
        layout.rooms.len(),
        layout.memberships(),
        layout.rooms.first().map_or(0, Vec::len),
        layout.room_watchers.len(),
        layout.router_watchers,
        mean_visible
    );

    let matrix = Matrix::new(&args.base_url)?;
    let target = Target::new(&args.base_url)?;
    let prefix = args.user_prefix.clone().unwrap_or_else(default_prefix);

    // Registration.
    let localparts: Vec<String> = (0..args.users)
        .map(|i| format!("{prefix}u{i}"))
        .chain((0..args.router_watchers).map(|k| format!("benchall{k}")))
        .collect();
    let sessions: Vec<Session> = setup_step(
        "registered",
        localparts.len(),
        args.setup_concurrency,
        args.progress,
        |i| matrix.register(&args.shared_secret, &localparts[i]),
    )
    .await?;
    eprintln!(
        "registered {} users in {:.1} s",
        sessions.len(),
        started.elapsed().as_secs_f64()
    );

    // Rooms: create them all, then the joins in a shuffled order so that concurrent joins
    // rarely queue on the same room.
    let t = Instant::now();
    let room_ids: Vec<String> = setup_step(
        "rooms created",
        layout.rooms.len(),
        args.setup_concurrency,
        args.progress,
        |r| matrix.create_room(&sessions[layout.rooms[r][0] as usize].access_token),
    )
    .await?;
    let mut joins: Vec<(u32, u32)> = layout
        .rooms
        .iter()
        .enumerate()
        .flat_map(|(r, members)| members[1..].iter().map(move |&m| (m, r as u32)))
        .collect();
    let mut rng = Rng::new(args.seed ^ 0x6a6f_696e);
    for i in (1..joins.len()).rev() {
        joins.swap(i, rng.below(i + 1));
    }
    setup_step(
        "joins",
        joins.len(),
        args.setup_concurrency,
        args.progress,
        |j| {
            let (m, r) = joins[j];
            matrix.join(&sessions[m as usize].access_token, &room_ids[r as usize])
        },
    )
    .await?;
    eprintln!(
        "{} rooms, {} joins in {:.1} s",
        room_ids.len(),
        joins.len(),
        t.elapsed().as_secs_f64()
    );

    let index = sessions
        .iter()
        .take(args.users)
        .enumerate()
        .map(|(i, s)| (s.user_id.clone(), i as u32))
        .collect();
    let auth = sessions
        .iter()
        .map(|s| conn::bearer(&s.access_token))
        .collect::<Result<_, _>>()?;
    let put_paths = sessions
        .iter()
        .take(args.users)
        .map(|s| client::presence_path(&s.user_id))
        .collect();
    let ctx = Arc::new(Ctx {
        target,
        tracker: Tracker::new(layout.visible.clone()),
        auth,
        put_paths,
        sync_prefix: client::sync_prefix(args.sync_timeout_ms),
        sync_deadline: Duration::from_millis(args.sync_timeout_ms) + Duration::from_secs(60),
        index,
        tag: format!("{prefix}:"),
        next_user: AtomicUsize::new(0),
        in_flight: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });

    // Watchers: an initial sync each, then their long-poll loops.
    let t = Instant::now();
    let watcher_ids: Vec<usize> = layout
        .room_watchers
        .iter()
        .map(|&w| w as usize)
        .chain(args.users..args.users + args.router_watchers)
        .collect();
    let firsts: Vec<Watcher> = setup_step(
        "initial syncs",
        watcher_ids.len(),
        args.setup_concurrency,
        args.progress,
        |i| {
            let ctx = &ctx;
            let session = watcher_ids[i];
            async move {
                let mut watcher = Watcher {
                    session,
                    conn: Conn::new(ctx.target.clone()),
                    since: None,
                    last: FxHashMap::default(),
                    scratch: Vec::new(),
                };
                // Without `since`, the first sync answers at once.
                watcher.poll(ctx).await?;
                Ok(watcher)
            }
        },
    )
    .await?;
    let watcher_tasks: Vec<_> = firsts
        .into_iter()
        .map(|w| tokio::spawn(w.run(ctx.clone())))
        .collect();
    eprintln!(
        "{} watchers syncing after {:.1} s; setup took {:.1} s",
        watcher_tasks.len(),
        t.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );

    let progress = tokio::spawn(report_progress(ctx.clone(), args.progress, args.server_pid));

    // Warm-up, then the steps.
    if args.warmup > 0.0 {
        let rate = args.rate[0];
        eprintln!("warm-up: {} s at {}", args.warmup, rate_name(rate));
        let now = ctx.tracker.now_ns();
        load(&ctx, args, rate, now, now + secs_ns(args.warmup)).await;
    }
    let mut rss = Vec::new();
    for &rate in &args.rate {
        let start = ctx.tracker.now_ns();
        let end = start + secs_ns(args.duration);
        ctx.tracker.add_step(start, end);
        eprintln!("step: {} s at {}", args.duration, rate_name(rate));
        let cpu_before = (args.server_pid.map(cpu_seconds), cpu_seconds_self());
        let wall = Instant::now();
        load(&ctx, args, rate, start, end).await;
        let wall = wall.elapsed().as_secs_f64().max(1e-9);
        let share = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => format!("{:.0}%", (b - a) * 100.0 / wall),
            _ => "?".to_owned(),
        };
        eprintln!(
            "step done: server CPU {}, generator CPU {} (of one core)",
            share(
                cpu_before.0.flatten(),
                args.server_pid.and_then(cpu_seconds)
            ),
            share(cpu_before.1, cpu_seconds_self())
        );
        rss.push(args.server_pid.map_or(0.0, rss_mb));
    }

    // Drain: wait for the watchers to see what was sent.
    let drain_until = Instant::now() + Duration::from_secs_f64(args.drain);
    loop {
        let (delivered, expected) = ctx.tracker.progress();
        if delivered >= expected || Instant::now() >= drain_until {
            eprintln!(
                "delivered {delivered} of {expected} expected (watcher, update) pairs ({:.3}%)",
                if expected == 0 {
                    100.0
                } else {
                    delivered as f64 * 100.0 / expected as f64
                }
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ctx.stop.store(true, Ordering::Relaxed);
    progress.abort();
    for task in watcher_tasks {
        task.abort();
    }
    let c = &ctx.tracker.counters;
    eprintln!(
        "totals: {} PUTs accepted, {} failed; {} syncs, {} failed",
        c.accepted.load(Ordering::Relaxed),
        c.failed.load(Ordering::Relaxed),
        c.syncs.load(Ordering::Relaxed),
        c.sync_errors.load(Ordering::Relaxed)
    );

    Ok(ctx
        .tracker
        .steps()
        .iter()
        .zip(rss)
        .zip(&args.rate)
        .map(|((step, rss_mb), &rate)| {
            let report = summarize(&args.label, args.users, step, rss_mb);
            eprintln!(
                "{}: {} accepted, {} failed, {} of {} expected deliveries",
                rate_name(rate),
                step.accepted,
                step.failed,
                step.delivered,
                step.expected
            );
            report
        })
        .collect())
}

fn summarize(label: &str, users: usize, step: &StepStats, rss_mb: f64) -> HttpReport {
    let secs = step.seconds().max(1e-9);
    let ms = |q: f64| step.latency_us.value_at_quantile(q) as f64 / 1_000.0;
    HttpReport {
        label: label.to_owned(),
        users,
        updates_per_sec: step.accepted as f64 / secs,
        deliveries_per_sec: step.delivered as f64 / secs,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        rss_mb,
    }
}

fn rate_name(rate: f64) -> String {
    if rate > 0.0 {
        format!("{rate} updates/s")
    } else {
        "full speed".to_owned()
    }
}

fn secs_ns(secs: f64) -> u64 {
    (secs * 1e9) as u64
}

fn default_prefix() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    // Base 36, lowercase: a valid localpart fragment.
    let mut n = ms;
    let mut digits = Vec::new();
    while n > 0 {
        digits.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize]);
        n /= 36;
    }
    digits.reverse();
    format!("b{}", String::from_utf8_lossy(&digits))
}

/// How long a PUT may take before it counts as failed.
const PUT_TIMEOUT: Duration = Duration::from_secs(60);

/// Sends updates from `concurrency` workers between `start_ns` and `end_ns`.
async fn load(ctx: &Arc<Ctx>, args: &HttpArgs, rate: f64, start_ns: u64, end_ns: u64) {
    let ticket = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (ctx, ticket) = (ctx.clone(), ticket.clone());
            let users = args.users;
            tokio::spawn(async move {
                let mut conn = Conn::new(ctx.target.clone());
                loop {
                    if rate > 0.0 {
                        let k = ticket.fetch_add(1, Ordering::Relaxed);
                        let due = start_ns + (k as f64 * 1e9 / rate) as u64;
                        if due >= end_ns {
                            break;
                        }
                        tokio::time::sleep_until(ctx.tracker.instant(due).into()).await;
                    } else if ctx.tracker.now_ns() >= end_ns {
                        break;
                    }
                    let u = ctx.next_user.fetch_add(1, Ordering::Relaxed) % users;
                    let (seq, t) = ctx.tracker.sending(u);
                    let presence = if seq % 2 == 1 {
                        "online"
                    } else {
                        "unavailable"
                    };
                    let body = serde_json::to_vec(&serde_json::json!({
                        "presence": presence,
                        "status_msg": format!("{}{seq}", ctx.tag),
                    }))
                    .unwrap_or_default();
                    ctx.in_flight.fetch_add(1, Ordering::Relaxed);
                    let ok = conn
                        .send(
                            Method::PUT,
                            &ctx.put_paths[u],
                            &ctx.auth[u],
                            Some(body.into()),
                            PUT_TIMEOUT,
                        )
                        .await;
                    ctx.in_flight.fetch_sub(1, Ordering::Relaxed);
                    if let Err(e) = &ok
                        && ctx.tracker.counters.failed.load(Ordering::Relaxed) < 5
                    {
                        eprintln!("PUT presence failed: {e}");
                    }
                    ctx.tracker.sent(u, seq, t, ok.is_ok());
                }
            })
        })
        .collect();
    for w in workers {
        // A worker only ends by leaving its loop; a panic would be a bug worth seeing.
        if let Err(e) = w.await {
            eprintln!("update worker failed: {e}");
        }
    }
}

/// One watcher's `/sync` loop state.
struct Watcher {
    session: usize,
    conn: Conn,
    since: Option<String>,
    /// Per user index: the newest update number seen.
    last: FxHashMap<u32, u32>,
    scratch: Vec<u64>,
}

impl Watcher {
    /// One `/sync`; credits what it shows.
    async fn poll(&mut self, ctx: &Ctx) -> Result<(), BenchError> {
        let path = client::sync_path(&ctx.sync_prefix, self.since.as_deref());
        let body = self
            .conn
            .send(
                Method::GET,
                &path,
                &ctx.auth[self.session],
                None,
                ctx.sync_deadline,
            )
            .await?;
        let now = ctx.tracker.now_ns();
        let parsed: SyncBody<'_> = serde_json::from_slice(&body)
            .map_err(|e| BenchError::Http(format!("/sync: bad JSON: {e}")))?;
        ctx.tracker.counters.syncs.fetch_add(1, Ordering::Relaxed);
        for event in parsed.presence.iter().flat_map(|p| &p.events) {
            let Some(&u) = ctx.index.get(event.sender.as_ref()) else {
                continue;
            };
            let Some(seq) = event
                .content
                .as_ref()
                .and_then(|c| c.status_msg.as_deref())
                .and_then(|m| m.strip_prefix(ctx.tag.as_str()))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let last = self.last.entry(u).or_insert(0);
            if seq > *last {
                ctx.tracker.seen(u as usize, *last, seq, &mut self.scratch);
                *last = seq;
            }
        }
        ctx.tracker.credit(now, &mut self.scratch);
        self.since = Some(parsed.next_batch);
        Ok(())
    }

    async fn run(mut self, ctx: Arc<Ctx>) {
        while !ctx.stop.load(Ordering::Relaxed) {
            if let Err(e) = self.poll(&ctx).await {
                let n = ctx
                    .tracker
                    .counters
                    .sync_errors
                    .fetch_add(1, Ordering::Relaxed);
                if n < 5 {
                    eprintln!("/sync failed: {e}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Prints `what: done/total` every `every` seconds until aborted.
/// Runs `step(0..total)` with `concurrency` calls in flight, in any order, printing progress
/// every `every` seconds (never if 0); returns the results in index order, or the first error.
async fn setup_step<T, Fut>(
    what: &'static str,
    total: usize,
    concurrency: usize,
    every: f64,
    step: impl Fn(usize) -> Fut,
) -> Result<Vec<T>, BenchError>
where
    Fut: Future<Output = Result<T, BenchError>>,
{
    let done = Arc::new(AtomicUsize::new(0));
    let ticker = spawn_ticker(what, done.clone(), total, every);
    let mut results: Vec<Option<T>> = (0..total).map(|_| None).collect();
    let outcome = stream::iter(0..total)
        .map(|i| {
            let (step, done) = (&step, &done);
            async move {
                let result = step(i).await;
                done.fetch_add(1, Ordering::Relaxed);
                result.map(|value| (i, value))
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_for_each(|(i, value)| {
            results[i] = Some(value);
            futures::future::ready(Ok(()))
        })
        .await;
    ticker.abort();
    outcome?;
    Ok(results.into_iter().flatten().collect())
}

fn spawn_ticker(
    what: &'static str,
    done: Arc<AtomicUsize>,
    total: usize,
    every: f64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if every <= 0.0 {
            return;
        }
        let started = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs_f64(every)).await;
            let n = done.load(Ordering::Relaxed);
            eprintln!(
                "  {what}: {n}/{total} ({:.0}/s)",
                n as f64 / started.elapsed().as_secs_f64()
            );
        }
    })
}

async fn report_progress(ctx: Arc<Ctx>, every: f64, pid: Option<u32>) {
    if every <= 0.0 {
        return;
    }
    let c = &ctx.tracker.counters;
    let read = || {
        (
            c.accepted.load(Ordering::Relaxed),
            c.delivered.load(Ordering::Relaxed),
            c.syncs.load(Ordering::Relaxed),
        )
    };
    let mut prev = (read(), Instant::now());
    loop {
        tokio::time::sleep(Duration::from_secs_f64(every)).await;
        let now = (read(), Instant::now());
        let secs = (now.1 - prev.1).as_secs_f64().max(1e-9);
        let per_s = |a: u64, b: u64| (a - b) as f64 / secs;
        eprintln!(
            "  {:.0} updates/s, {:.0} deliveries/s, {:.0} syncs/s, {} PUTs in flight, {} failed PUTs, {} failed syncs, server rss {:.0} MiB",
            per_s(now.0.0, prev.0.0),
            per_s(now.0.1, prev.0.1),
            per_s(now.0.2, prev.0.2),
            ctx.in_flight.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
            c.sync_errors.load(Ordering::Relaxed),
            pid.map_or(0.0, rss_mb)
        );
        prev = now;
    }
}

/// User and system CPU time of process `pid` so far, in seconds (`/proc/<pid>/stat`).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    proc_cpu_seconds(&format!("/proc/{pid}/stat"))
}

fn cpu_seconds_self() -> Option<f64> {
    proc_cpu_seconds("/proc/self/stat")
}

fn proc_cpu_seconds(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised command name, which may itself contain spaces:
    // state is field 3, utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // Linux reports these in USER_HZ, which is 100 on every architecture it supports.
    Some(ticks / 100.0)
}

/// Resident memory of process `pid` in MiB (`VmRSS` in `/proc/<pid>/status`); 0 if unreadable.
pub fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_line_format() {
        let r = HttpReport {
            label: "presenced".to_owned(),
            users: 200,
            updates_per_sec: 1234.4,
            deliveries_per_sec: 2468.6,
            p50_ms: 1.234,
            p99_ms: 10.0,
            rss_mb: 42.25,
        };
        assert_eq!(
            r.to_string(),
            "http server=presenced users=200 updates_per_sec=1234 deliveries_per_sec=2469 p50_ms=1.23 p99_ms=10.00 rss_mb=42.2"
        );
    }

    #[test]
    fn own_cpu_time_is_readable() {
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {
            std::hint::black_box(0u64);
        }
        assert!(cpu_seconds_self().is_some_and(|s| s >= 0.0));
        assert!(cpu_seconds(std::process::id()).is_some());
    }

    #[test]
    fn percent_encoding_keeps_only_unreserved() {
        assert_eq!(client::pct("@a:b.c"), "%40a%3Ab.c");
        assert_eq!(client::pct("{\"x\":[]}"), "%7B%22x%22%3A%5B%5D%7D");
    }
}
