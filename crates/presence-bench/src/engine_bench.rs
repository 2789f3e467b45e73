//! The engine benchmark: a synthetic server driven through [`Engine`] on one thread, exactly
//! as the server drives it.
//!
//! Each batch: `B` distinct random online users set their presence (alternating state and
//! status message, so that every update is notified); the batch is applied, passed once
//! through the routers, and finished; then every user the engine wakes does a sync read from
//! its last token. A **delivery** is one (recipient, user state) entry a sync read returns.
//! Memory is the engine's live heap (memberships included) counted by [`crate::heap`], from
//! just before the engine is created to the end of the timed run.
//!
//! Setup (interning, memberships, bringing users online, one initial sync each) is timed
//! separately and not part of the rates. The last line printed is the machine-readable
//! summary [`EngineReport`].

use std::{
    fmt,
    io::Write,
    ops::AddAssign,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use futures::executor::block_on;
use presence_engine::{Effects, Engine, EngineConfig, Input, Routed, StreamPos, SyncRead, UserIdx};
use presence_router::{
    DEFAULT_CALL_TIMEOUT, DeviceId, InterestedUsers, Millis, PresenceState, RoomId, RouterSet,
    ServerName, UserId,
};
use presence_routers::{ExamplePresenceRouter, ExampleRouterConfig};

use crate::{
    BenchError, baseline, heap,
    rng::Rng,
    world::{World, WorldConfig},
};

/// The synthetic server's name.
pub const SERVER: &str = "bench";

/// Default mean rooms per user.
pub const DEFAULT_ROOMS_PER_USER: f64 = 5.0;
/// Default size of the largest room.
pub const DEFAULT_MAX_ROOM: usize = 20_000;
/// Default share of users online and syncing.
pub const DEFAULT_ONLINE_FRACTION: f64 = 0.1;
/// Default share of users the router answers `All` for.
pub const DEFAULT_ALL_FRACTION: f64 = 0.001;
/// Default updates per batch.
pub const DEFAULT_BATCH: usize = 1000;

/// The simulated clock's start, and how far it moves per batch. No timer is run, so the clock
/// only stamps states.
const START: Millis = 1_700_000_000_000;
const MS_PER_BATCH: Millis = 10;
/// Inputs per `apply` while bringing users online.
const SETUP_CHUNK: usize = 10_000;
/// Mixed into the seed for the update picks, so they are independent of the world's draws.
const PICK_STREAM: u64 = 0x05ee_d0fb_a7c4;

/// `presence-bench engine` options.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct EngineArgs {
    /// Users on the synthetic server.
    #[arg(long)]
    pub users: usize,
    /// Mean number of rooms per user.
    #[arg(long, default_value_t = DEFAULT_ROOMS_PER_USER)]
    pub rooms_per_user: f64,
    /// Members of the largest room (capped at a tenth of the users).
    #[arg(long, default_value_t = DEFAULT_MAX_ROOM)]
    pub max_room: usize,
    /// Share of users online and syncing.
    #[arg(long, default_value_t = DEFAULT_ONLINE_FRACTION)]
    pub online_fraction: f64,
    /// Share of users for whom the example router answers `All` (online and syncing).
    #[arg(long, default_value_t = DEFAULT_ALL_FRACTION)]
    pub all_fraction: f64,
    /// Updates per batch.
    #[arg(long, default_value_t = DEFAULT_BATCH)]
    pub batch: usize,
    /// Length of the timed run, in seconds (ignored with `--batches`).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Run exactly this many timed batches instead of `--duration` seconds.
    #[arg(long)]
    pub batches: Option<u64>,
    /// Untimed batches before the timed run.
    #[arg(long, default_value_t = 3)]
    pub warmup: u64,
    /// Seed of the generator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the rates and the engine's heap every this many seconds of the timed run
    /// (0: only at the end), to watch the stream logs reach their steady size.
    #[arg(long, default_value_t = 0.0)]
    pub progress: f64,
    /// Also run the bare fan-out loops over the same rooms and picks, for comparison.
    #[arg(long)]
    pub baseline: bool,
}

impl EngineArgs {
    /// The defaults for `users` users (the same as the command line's).
    pub fn new(users: usize) -> Self {
        Self {
            users,
            rooms_per_user: DEFAULT_ROOMS_PER_USER,
            max_room: DEFAULT_MAX_ROOM,
            online_fraction: DEFAULT_ONLINE_FRACTION,
            all_fraction: DEFAULT_ALL_FRACTION,
            batch: DEFAULT_BATCH,
            duration: 10.0,
            batches: None,
            warmup: 3,
            seed: 1,
            progress: 0.0,
            baseline: false,
        }
    }

    /// The world these options describe.
    pub fn world_config(&self) -> WorldConfig {
        WorldConfig {
            users: self.users,
            rooms_per_user: self.rooms_per_user,
            max_room: self.max_room,
            online_fraction: self.online_fraction,
            all_fraction: self.all_fraction,
            seed: self.seed,
        }
    }
}

/// The summary line: `engine users=N updates_per_sec=X deliveries_per_sec=Y syncs_per_sec=Z
/// bytes_per_user=B`, all integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineReport {
    /// Users on the server.
    pub users: usize,
    /// Updates applied per second of the timed run.
    pub updates_per_sec: u64,
    /// Deliveries (recipient, state) returned by sync reads per second.
    pub deliveries_per_sec: u64,
    /// Sync reads per second.
    pub syncs_per_sec: u64,
    /// The engine's live heap per user at the end of the run (0 if not counted).
    pub bytes_per_user: u64,
}

impl fmt::Display for EngineReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "engine users={} updates_per_sec={} deliveries_per_sec={} syncs_per_sec={} bytes_per_user={}",
            self.users,
            self.updates_per_sec,
            self.deliveries_per_sec,
            self.syncs_per_sec,
            self.bytes_per_user
        )
    }
}

/// Counts of one or more batches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Updates applied.
    pub updates: u64,
    /// Users woken (the length of [`Effects::wake`]).
    pub woken: u64,
    /// Sync reads done.
    pub syncs: u64,
    /// Entries those reads returned.
    pub deliveries: u64,
    /// Of the reads, those of users the router answers `All` for.
    pub all_syncs: u64,
    /// Of the deliveries, those to `All` users.
    pub all_deliveries: u64,
    /// Time in apply, routing and finish.
    pub write_nanos: u64,
    /// Time in the sync reads (routers included).
    pub read_nanos: u64,
    /// Of that, time in the reads of `All` users.
    pub all_read_nanos: u64,
}

impl AddAssign for BatchStats {
    fn add_assign(&mut self, o: Self) {
        self.updates += o.updates;
        self.woken += o.woken;
        self.syncs += o.syncs;
        self.deliveries += o.deliveries;
        self.all_syncs += o.all_syncs;
        self.all_deliveries += o.all_deliveries;
        self.write_nanos += o.write_nanos;
        self.read_nanos += o.read_nanos;
        self.all_read_nanos += o.all_read_nanos;
    }
}

/// The generated user `i`.
pub fn user_id(i: u32) -> Result<UserId, BenchError> {
    Ok(UserId::parse(&format!("@u{i}:{SERVER}"))?)
}

/// The random stream the update picks are drawn from, shared with [`baseline`] so both see
/// the same updates.
pub(crate) fn pick_rng(seed: u64) -> Rng {
    Rng::new(seed ^ PICK_STREAM)
}

/// A synthetic server loaded into an engine, with the example router and each online user's
/// sync token.
pub struct Bench {
    engine: Engine,
    routers: RouterSet,
    /// Engine index of each generated user.
    users: Vec<UserIdx>,
    /// The device each online user syncs and sets its presence from, by generated user.
    devices: Vec<Option<DeviceId>>,
    /// Each online user's presence token, by engine index.
    tokens: Vec<StreamPos>,
    /// Bit per engine index: the router answers `All` for this user.
    all_bits: Vec<u64>,
    /// Online generated users; the front is reshuffled by every batch's picks.
    online: Vec<u32>,
    inputs: Vec<Input>,
    /// Status messages for the two alternating states.
    status: [Arc<str>; 2],
    rng: Rng,
    now: Millis,
    /// Live heap just before the engine was created.
    heap_base: usize,
    setup_heap: Option<usize>,
    /// The engine's heap after each setup stage (a fixed array: the bench's own bookkeeping
    /// must not allocate inside the measured window).
    stages: [(&'static str, usize); 4],
    setup_time: Duration,
}

impl Bench {
    /// Loads `world` into a new engine: users, memberships, online users (one syncing device
    /// each, listening), and one initial sync per online user. `max_batch` is the largest batch
    /// [`Bench::step`] will be asked for, so the bench's own buffers are allocated before the
    /// engine's heap is measured.
    pub fn build(world: &World, max_batch: usize, seed: u64) -> Result<Self, BenchError> {
        let started = Instant::now();
        let n = world.users();
        let server = ServerName::parse(SERVER)?;
        // The router's copies of the `All` users' IDs are separate allocations made before
        // the measurement starts: they belong to the router, not the engine.
        let all_ids = world.online()[..world.all_users()]
            .iter()
            .map(|&u| user_id(u))
            .collect::<Result<Vec<_>, _>>()?;
        let mut routers = RouterSet::new(DEFAULT_CALL_TIMEOUT);
        routers.push(
            "example",
            Arc::new(ExamplePresenceRouter::with_config(
                ExampleRouterConfig::new(all_ids, []),
            )),
        );
        let mut bench = Self {
            engine: Engine::new(EngineConfig::new(server)),
            routers,
            users: Vec::with_capacity(n),
            devices: vec![None; n],
            tokens: vec![0; n],
            all_bits: vec![0; n.div_ceil(64)],
            online: world.online().to_vec(),
            inputs: Vec::with_capacity(max_batch.max(SETUP_CHUNK)),
            status: [Arc::from("at the desk"), Arc::from("away for a bit")],
            rng: pick_rng(seed),
            now: START,
            heap_base: 0,
            setup_heap: None,
            stages: [("", 0); 4],
            setup_time: Duration::ZERO,
        };
        // An empty engine holds no heap of its own (its server name was allocated above), so
        // everything from here on that outlives the build is the engine's.
        bench.heap_base = heap::live_bytes();

        for i in 0..n as u32 {
            let ix = bench.engine.intern_user(&user_id(i)?);
            bench.users.push(ix);
        }
        bench.stage(0, "users");
        for &u in &world.online()[..world.all_users()] {
            let i = bench.users[u as usize].index();
            bench.all_bits[i / 64] |= 1 << (i % 64);
        }
        for r in 0..world.room_count() {
            let room = RoomId::parse(&format!("!r{r}:{SERVER}"))?;
            for &m in world.room(r) {
                let id = bench.engine.user_id(bench.users[m as usize]).clone();
                bench.engine.restore_membership(&room, &id);
            }
        }
        bench.stage(1, "memberships");
        for chunk in world.online().chunks(SETUP_CHUNK) {
            for &u in chunk {
                let device = DeviceId::parse(&format!("DEV{u}"))?;
                bench.devices[u as usize] = Some(device.clone());
                bench.inputs.push(Input::SyncStarted {
                    user: bench.users[u as usize],
                    device: Some(device),
                    state: PresenceState::Online,
                });
            }
            bench.write_inputs();
        }
        for &u in world.online() {
            bench.engine.set_listening(bench.users[u as usize], true);
        }
        bench.stage(2, "online users");
        for &u in world.online() {
            let ix = bench.users[u as usize];
            let (read, _) = bench.read(ix, None);
            bench.tokens[ix.index()] = read.next_token;
        }
        bench.stage(3, "initial syncs");
        bench.setup_heap = bench.engine_heap();
        bench.setup_time = started.elapsed();
        Ok(bench)
    }

    fn stage(&mut self, i: usize, name: &'static str) {
        self.stages[i] = (name, self.engine_heap().unwrap_or(0));
    }

    /// The engine's heap after each setup stage, cumulative (zeros without the counting
    /// allocator).
    pub fn setup_stages(&self) -> &[(&'static str, usize)] {
        &self.stages
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The engine index of generated user `u`.
    pub fn user(&self, u: u32) -> UserIdx {
        self.users[u as usize]
    }

    /// The presence token `user` last synced to.
    pub fn token(&self, user: UserIdx) -> StreamPos {
        self.tokens[user.index()]
    }

    /// How long [`Bench::build`] took.
    pub fn setup_time(&self) -> Duration {
        self.setup_time
    }

    /// The engine's live heap right after [`Bench::build`], if the counting allocator is
    /// installed.
    pub fn setup_heap(&self) -> Option<usize> {
        self.setup_heap
    }

    /// The engine's live heap now, if the counting allocator is installed. Exact only when
    /// the caller holds no engine output (effects, reads) of its own.
    pub fn engine_heap(&self) -> Option<usize> {
        heap::is_counting().then(|| heap::live_bytes().saturating_sub(self.heap_base))
    }

    /// Wall time spent inside router calls so far, in nanoseconds.
    pub fn router_nanos(&self) -> u64 {
        self.routers
            .stats()
            .map(|(_, s)| s.nanos.load(Ordering::Relaxed))
            .sum()
    }

    /// One update batch, applied, routed and finished: `size` distinct random online users
    /// flip between online and unavailable, each with a new status message.
    pub fn write(&mut self, size: usize) -> Effects {
        let picks = self.rng.choose_front(&mut self.online, size);
        for &u in picks {
            let user = self.users[u as usize];
            let online = self.engine.record(user).state == PresenceState::Online;
            let (state, msg) = if online {
                (PresenceState::Unavailable, &self.status[1])
            } else {
                (PresenceState::Online, &self.status[0])
            };
            self.inputs.push(Input::SetPresence {
                user,
                device: self.devices[u as usize].clone(),
                state,
                status_msg: Some(msg.clone()),
            });
        }
        self.write_inputs()
    }

    /// Applies the queued inputs, routes the batch and finishes it, as the server does.
    fn write_inputs(&mut self) -> Effects {
        self.now += MS_PER_BATCH;
        let applied = self.engine.apply(self.now, self.inputs.drain(..));
        let routes = match applied.batch() {
            Some(batch) => block_on(self.routers.get_users_for_states(batch)),
            None => Default::default(),
        };
        self.engine.finish(applied, &routes)
    }

    /// A sync read of `reader` from `since`, as the server does it (routers first); the bool
    /// says whether the routers answered `All`.
    pub fn read(&mut self, reader: UserIdx, since: Option<StreamPos>) -> (SyncRead, bool) {
        // A server has the reader's ID from the request; here it comes from the engine, on a
        // cold cache line. Cloning it outside the router call keeps that miss out of the
        // routers' measured time.
        let id = self.engine.user_id(reader).clone();
        let interest = block_on(self.routers.get_interested_users(&id));
        match interest {
            InterestedUsers::Users(users) => {
                let users = self.engine.resolve_users(&users);
                (
                    self.engine.sync(reader, since, Routed::Users(&users)),
                    false,
                )
            }
            InterestedUsers::All => {
                let candidates = self.engine.all_candidates(reader, since);
                let routes = match candidates.routes() {
                    Some(routes) => routes.clone(),
                    None => {
                        let routes =
                            block_on(self.routers.get_users_for_states(candidates.batch()));
                        self.engine.cache_routes(&candidates, routes)
                    }
                };
                let routed = Routed::All {
                    candidates: &candidates,
                    states: routes.get(&id),
                };
                (self.engine.sync(reader, since, routed), true)
            }
        }
    }

    /// One full cycle: a batch of `size` updates, then a sync read from its last token for
    /// every woken user, whose token moves on.
    pub fn step(&mut self, size: usize) -> BatchStats {
        let t0 = Instant::now();
        let effects = self.write(size);
        let t1 = Instant::now();
        let mut stats = BatchStats {
            updates: size.min(self.online.len()) as u64,
            woken: effects.wake.len() as u64,
            ..BatchStats::default()
        };
        drop(effects.persist);
        // Room readers first, then `All` readers, so each kind can be timed as a whole.
        for all_pass in [false, true] {
            let t = Instant::now();
            for &w in &effects.wake {
                let i = w.index();
                if (self.all_bits[i / 64] & (1 << (i % 64)) != 0) != all_pass {
                    continue;
                }
                let (read, all) = self.read(w, Some(self.tokens[i]));
                let n = read.users.len() as u64;
                stats.syncs += 1;
                stats.deliveries += n;
                if all {
                    stats.all_syncs += 1;
                    stats.all_deliveries += n;
                }
                self.tokens[i] = read.next_token;
            }
            if all_pass {
                stats.all_read_nanos = nanos(t.elapsed());
            }
        }
        let t2 = Instant::now();
        stats.write_nanos = nanos(t1 - t0);
        stats.read_nanos = nanos(t2 - t1);
        stats
    }
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

fn per_sec(count: u64, secs: f64) -> u64 {
    if secs > 0.0 {
        (count as f64 / secs).round() as u64
    } else {
        0
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Runs `presence-bench engine`: diagnostics go to `diag`, and the summary lines to `out`,
/// the [`EngineReport`] line last.
pub fn main(
    args: &EngineArgs,
    out: &mut dyn Write,
    diag: &mut dyn Write,
) -> Result<(), BenchError> {
    if args.batch == 0 {
        return Err(BenchError::InvalidArgs(
            "--batch must be at least 1".to_owned(),
        ));
    }
    if !(args.duration > 0.0 && args.duration.is_finite()) {
        return Err(BenchError::InvalidArgs(
            "--duration must be positive".to_owned(),
        ));
    }
    let t = Instant::now();
    let world = World::generate(&args.world_config())?;
    writeln!(
        diag,
        "world: users={} rooms={} memberships={} largest_room={} zipf_s={:.3} online={} all_users={} ({:.2}s)",
        world.users(),
        world.room_count(),
        world.memberships(),
        world.room(0).len(),
        world.exponent(),
        world.online().len(),
        world.all_users(),
        t.elapsed().as_secs_f64()
    )?;

    let mut bench = Bench::build(&world, args.batch, args.seed)?;
    let n = world.users() as f64;
    writeln!(
        diag,
        "setup: {:.2}s, engine heap after setup {} bytes/user",
        bench.setup_time().as_secs_f64(),
        bench
            .setup_heap()
            .map_or_else(|| "unknown".to_owned(), |b| format!("{:.0}", b as f64 / n))
    )?;

    if bench.setup_heap().is_some() {
        let mut line = String::from("setup heap by stage (bytes/user, cumulative):");
        for (name, bytes) in bench.setup_stages() {
            line.push_str(&format!(" {name} {:.0};", *bytes as f64 / n));
        }
        writeln!(diag, "{}", line.trim_end_matches(';'))?;
    }
    for _ in 0..args.warmup {
        bench.step(args.batch);
    }
    let router_before = bench.router_nanos();
    let mut totals = BatchStats::default();
    let mut batches = 0u64;
    let limit = Duration::from_secs_f64(args.duration);
    let started = Instant::now();
    let mut last_report = (Duration::ZERO, BatchStats::default());
    loop {
        let now = started.elapsed();
        if args.progress > 0.0 && (now - last_report.0).as_secs_f64() >= args.progress {
            let secs = (now - last_report.0).as_secs_f64();
            writeln!(
                diag,
                "  t={:.0}s updates={} deliveries_per_sec={} heap={} bytes/user",
                now.as_secs_f64(),
                totals.updates,
                per_sec(totals.deliveries - last_report.1.deliveries, secs),
                bench
                    .engine_heap()
                    .map_or_else(|| "unknown".to_owned(), |b| format!("{:.0}", b as f64 / n)),
            )?;
            last_report = (now, totals);
        }
        let done = match args.batches {
            Some(b) => batches >= b,
            None => batches > 0 && now >= limit,
        };
        if done {
            break;
        }
        totals += bench.step(args.batch);
        batches += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    let router_secs = (bench.router_nanos() - router_before) as f64 / 1e9;
    let heap = bench.engine_heap();

    let report = EngineReport {
        users: world.users(),
        updates_per_sec: per_sec(totals.updates, secs),
        deliveries_per_sec: per_sec(totals.deliveries, secs),
        syncs_per_sec: per_sec(totals.syncs, secs),
        bytes_per_user: heap.map_or(0, |b| (b as f64 / n).round() as u64),
    };
    let b = batches.max(1) as f64;
    let room_syncs = totals.syncs - totals.all_syncs;
    let room_deliveries = totals.deliveries - totals.all_deliveries;
    writeln!(
        diag,
        "run: batches={batches} of {} updates in {secs:.2}s; write {:.1}% read {:.1}% router {:.1}% of the time",
        args.batch,
        100.0 * totals.write_nanos as f64 / 1e9 / secs,
        100.0 * totals.read_nanos as f64 / 1e9 / secs,
        100.0 * router_secs / secs,
    )?;
    writeln!(
        diag,
        "per batch: woken={:.0} syncs={:.0} deliveries={:.0} (room readers {:.0} in {:.0} syncs, all readers {:.0} in {:.0} syncs)",
        totals.woken as f64 / b,
        totals.syncs as f64 / b,
        totals.deliveries as f64 / b,
        room_deliveries as f64 / b,
        room_syncs as f64 / b,
        totals.all_deliveries as f64 / b,
        totals.all_syncs as f64 / b,
    )?;
    let room_read_nanos = totals.read_nanos - totals.all_read_nanos;
    writeln!(
        diag,
        "mean sync size: {:.2} overall, {:.2} room readers, {:.1} all readers; {:.1} ns per delivery overall",
        ratio(totals.deliveries, totals.syncs),
        ratio(room_deliveries, room_syncs),
        ratio(totals.all_deliveries, totals.all_syncs),
        secs * 1e9 / totals.deliveries.max(1) as f64,
    )?;
    // With `--all-fraction 0` there are no `All` readers: their pass is only a loop over the
    // wake list, and per-read figures would divide by zero.
    let all_readers = if totals.all_syncs == 0 {
        "no all readers".to_owned()
    } else {
        format!(
            "all readers {:.0} ns/read {:.1} ns/delivery ({:.1}%)",
            totals.all_read_nanos as f64 / totals.all_syncs as f64,
            totals.all_read_nanos as f64 / totals.all_deliveries.max(1) as f64,
            100.0 * totals.all_read_nanos as f64 / 1e9 / secs,
        )
    };
    writeln!(
        diag,
        "sync reads: room readers {:.0} ns/read {:.1} ns/delivery ({:.1}% of the time); {all_readers}",
        room_read_nanos as f64 / room_syncs.max(1) as f64,
        room_read_nanos as f64 / room_deliveries.max(1) as f64,
        100.0 * room_read_nanos as f64 / 1e9 / secs,
    )?;
    match heap {
        Some(h) => writeln!(
            diag,
            "engine heap after the run: {} bytes ({:.0} bytes/user)",
            h,
            h as f64 / n
        )?,
        None => writeln!(diag, "engine heap: not counted (no counting allocator)")?,
    }
    drop(bench);

    if args.baseline {
        let base = baseline::run(&world, args.batch, args.warmup, batches, args.seed);
        writeln!(
            diag,
            "baseline: {:.0} pairs ({:.0} to room members) and {:.0} marks per batch; engine delivers {:.0} ({:.0} to room readers)",
            base.pairs as f64 / b,
            base.room_pairs as f64 / b,
            base.marks as f64 / b,
            totals.deliveries as f64 / b,
            room_deliveries as f64 / b,
        )?;
        writeln!(
            diag,
            "baseline: fan-out loop {:.1}x the engine's deliveries/s, bitmap marks {:.1}x",
            ratio(base.pairs_per_sec(), report.deliveries_per_sec),
            ratio(base.marks_per_sec(), report.deliveries_per_sec),
        )?;
        // Room readers alone: the engine's write side (which is mostly their fan-out) plus
        // their reads, against the baseline's room part.
        let engine_room_ns =
            (totals.write_nanos + room_read_nanos) as f64 / room_deliveries.max(1) as f64;
        let base_room_ns = base.room_secs * 1e9 / base.room_pairs.max(1) as f64;
        writeln!(
            diag,
            "baseline: room fan-out {base_room_ns:.1} ns/pair; engine {engine_room_ns:.1} ns per room delivery (write side + room reads), {:.1}x",
            engine_room_ns / base_room_ns.max(f64::MIN_POSITIVE),
        )?;
        if totals.all_syncs > 0 {
            let base_all_ns = (base.pair_secs - base.room_secs) * 1e9
                / (base.pairs - base.room_pairs).max(1) as f64;
            writeln!(
                diag,
                "baseline: all users' part {base_all_ns:.1} ns/pair (with the drain); engine all readers {:.1} ns per delivery",
                totals.all_read_nanos as f64 / totals.all_deliveries.max(1) as f64,
            )?;
        }
        writeln!(out, "{base}")?;
    }
    writeln!(out, "{report}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// One batch on a small server, checked against a brute-force count over the world:
    /// every online user sharing a room with an updater (or updating itself) is woken and
    /// reads exactly those updaters; `All` users read every updater.
    #[test]
    fn a_step_wakes_and_delivers_exactly_the_room_mates_and_all_users() {
        let world = World::generate(&WorldConfig::new(3_000)).unwrap();
        let mut bench = Bench::build(&world, 40, 5).unwrap();
        let stats = bench.step(40);
        let updaters: BTreeSet<u32> = bench.online[..40].iter().copied().collect();
        assert_eq!(updaters.len(), 40);

        let (offsets, rooms) = world.user_rooms();
        let rooms_of = |u: u32| -> BTreeSet<u32> {
            rooms[offsets[u as usize]..offsets[u as usize + 1]]
                .iter()
                .copied()
                .collect()
        };
        let all: BTreeSet<u32> = world.online()[..world.all_users()]
            .iter()
            .copied()
            .collect();
        let (mut woken, mut deliveries, mut all_deliveries) = (0u64, 0u64, 0u64);
        for &w in world.online() {
            let mine = rooms_of(w);
            let seen = if all.contains(&w) {
                updaters.len() as u64
            } else {
                updaters
                    .iter()
                    .filter(|&&u| u == w || !rooms_of(u).is_disjoint(&mine))
                    .count() as u64
            };
            if seen > 0 {
                woken += 1;
                deliveries += seen;
                if all.contains(&w) {
                    all_deliveries += seen;
                }
            }
        }
        assert!(deliveries > 40, "the fixture has fan-out: {deliveries}");
        assert_eq!(stats.updates, 40);
        assert_eq!(stats.woken, woken);
        assert_eq!(stats.syncs, woken);
        assert_eq!(stats.deliveries, deliveries);
        assert_eq!(stats.all_syncs, world.all_users() as u64);
        assert_eq!(stats.all_deliveries, all_deliveries);

        // Tokens moved on: reading again from them finds nothing new.
        let reader = bench.user(*updaters.first().unwrap());
        let (again, _) = bench.read(reader, Some(bench.token(reader)));
        assert!(again.users.is_empty(), "{again:?}");
    }

    #[test]
    fn summary_line_has_the_documented_shape() {
        let r = EngineReport {
            users: 10,
            updates_per_sec: 1,
            deliveries_per_sec: 2,
            syncs_per_sec: 3,
            bytes_per_user: 4,
        };
        assert_eq!(
            r.to_string(),
            "engine users=10 updates_per_sec=1 deliveries_per_sec=2 syncs_per_sec=3 bytes_per_user=4"
        );
    }
}
