//! Per-call overhead of a Python presence router against the built-in Rust router, on the
//! same workload: the seed's example router (`tests/python/example_router.py`, legacy form)
//! and `presence_routers::ExamplePresenceRouter`, with the same configuration.
//!
//! ```text
//! cargo run --release -p presence-python --example python_bench [-- --seconds 2]
//! ```
//!
//! Measured, each for about `--seconds` (default 1) of wall time on a 2-worker Tokio runtime:
//! - `get_interested_users`, one call at a time, and 16 calls in flight (Python only);
//! - `get_users_for_states` on batches of 1, 100 and 1000 states, one call at a time: time
//!   per call and per state.

use std::{
    error::Error,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use presence_python::{PythonHost, PythonOptions, TwistedMode};
use presence_router::{
    ModuleApi, PresenceRouter, PresenceState, RouterModule, ServerName, StateBatch, UserId,
    UserPresenceState,
};
use presence_routers::ExamplePresenceRouter;
use serde_json::json;

const IN_FLIGHT: usize = 16;

fn batch(size: usize) -> Result<StateBatch, Box<dyn Error>> {
    let mut states = Vec::with_capacity(size);
    for i in 0..size {
        // One in ten is blacklisted, so the router filters.
        let user = if i % 10 == 9 {
            "@blocked:test".to_owned()
        } else {
            format!("@user{i}:test")
        };
        states.push(UserPresenceState {
            state: PresenceState::ALL[i % 4],
            last_active_ts: 1_700_000_000_000 + i as u64,
            status_msg: (i % 3 == 0).then(|| Arc::from("busy with things")),
            currently_active: i % 2 == 0,
            ..UserPresenceState::offline(UserId::parse(&user)?)
        });
    }
    Ok(StateBatch::new(states))
}

/// Runs `call` repeatedly for about `budget`; returns (calls, elapsed).
async fn repeat<F, Fut>(budget: Duration, mut call: F) -> (u64, Duration)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    // Warm up.
    for _ in 0..100 {
        call().await;
    }
    let started = Instant::now();
    let mut calls = 0u64;
    while started.elapsed() < budget {
        for _ in 0..50 {
            call().await;
        }
        calls += 50;
    }
    (calls, started.elapsed())
}

fn report(name: &str, router: &str, calls: u64, elapsed: Duration, states: usize) {
    let per_call = elapsed.as_secs_f64() * 1e6 / calls as f64;
    let rate = calls as f64 / elapsed.as_secs_f64();
    let per_state = if states > 0 {
        format!("{:>9.3}", per_call / states as f64)
    } else {
        format!("{:>9}", "-")
    };
    println!("| {name:<34} | {router:<6} | {rate:>12.0} | {per_call:>10.2} | {per_state} |");
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut seconds = 1.0f64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--seconds" {
            seconds = args.next().ok_or("--seconds needs a value")?.parse()?;
        }
    }
    let budget = Duration::from_secs_f64(seconds);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut options = PythonOptions::default();
    options
        .paths
        .push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python"));
    options.twisted = TwistedMode::Off;
    let host = PythonHost::start(options)?;
    let config = json!({
        "always_send_to_users": ["@gobbler:test", "@gobbler:elsewhere.org"],
        "blacklisted_users": ["@blocked:test"],
    });
    let api = ModuleApi::detached(ServerName::parse("test")?);
    let python: Arc<dyn PresenceRouter> = Arc::new(
        host.load_legacy(
            "presence.presence_router",
            "example_router.ExamplePresenceRouter",
            &config,
            &api,
        )?
        .ok_or("the example router registers no router")?,
    );
    let rust: Arc<dyn PresenceRouter> = Arc::new(ExamplePresenceRouter::new(
        ExamplePresenceRouter::parse_config(&config)?,
        api,
    ));
    println!(
        "Python {}",
        host.python_version().lines().next().unwrap_or("")
    );
    println!(
        "| {:<34} | {:<6} | {:>12} | {:>10} | {:>9} |",
        "call", "router", "calls/s", "µs/call", "µs/state"
    );
    println!(
        "|{:-<36}|{:-<8}|{:-<14}|{:-<12}|{:-<11}|",
        "", "", "", "", ""
    );

    runtime.block_on(async {
        let gobbler = UserId::parse("@gobbler:test")?;
        let nobody = UserId::parse("@nobody:test")?;
        for (name, router) in [("rust", &rust), ("python", &python)] {
            let mut flip = false;
            let (calls, elapsed) = repeat(budget, || {
                flip = !flip;
                let user = if flip { &gobbler } else { &nobody };
                let router = router.clone();
                async move {
                    if let Err(e) = router.get_interested_users(user).await {
                        panic!("get_interested_users failed: {e}");
                    }
                }
            })
            .await;
            report("get_interested_users, 1 in flight", name, calls, elapsed, 0);
        }
        {
            let (calls, elapsed) = repeat(budget, || {
                let router = python.clone();
                let user = nobody.clone();
                async move {
                    let calls = (0..IN_FLIGHT).map(|_| {
                        let router = router.clone();
                        let user = user.clone();
                        tokio::spawn(async move { router.get_interested_users(&user).await })
                    });
                    for call in calls.collect::<Vec<_>>() {
                        if !matches!(call.await, Ok(Ok(_))) {
                            panic!("get_interested_users failed");
                        }
                    }
                }
            })
            .await;
            report(
                "get_interested_users, 16 in flight",
                "python",
                calls * IN_FLIGHT as u64,
                elapsed,
                0,
            );
        }
        for size in [1usize, 100, 1000] {
            let states = batch(size)?;
            for (name, router) in [("rust", &rust), ("python", &python)] {
                let (calls, elapsed) = repeat(budget, || {
                    let router = router.clone();
                    let states = states.clone();
                    async move {
                        if let Err(e) = router.get_users_for_states(&states).await {
                            panic!("get_users_for_states failed: {e}");
                        }
                    }
                })
                .await;
                report(
                    &format!("get_users_for_states, {size} states"),
                    name,
                    calls,
                    elapsed,
                    size,
                );
            }
        }
        Ok::<(), Box<dyn Error>>(())
    })?;
    host.shutdown(Duration::from_secs(5));
    Ok(())
}
