//! `presence-bench writer`: the presence writer of a Synapse deployment under load, whichever
//! process holds the slot (Synapse's own worker or Presenced), measured from outside.
//!
//! 1. `presence_set_state` called directly on the writer's replication listener, as Synapse's
//!    workers call it, with `--in-flight` requests outstanding (one connection each) for
//!    `--seconds`: throughput and latency percentiles. Synapse's main process and the sync
//!    worker stay subscribed to Redis meanwhile, so every row is parsed by them, as in
//!    production.
//! 2. End to end: a `PUT /presence` on the sync worker until a room-mate's `/sync` on that
//!    worker shows it, `--e2e-samples` times.
//!
//! Each figure is one line on stdout, `writer label=... key=value ...`, with the CPU seconds
//! each `--pid name=PID` spent during the measurement.

use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use hyper::Method;
use serde_json::{Value, json};

use crate::{
    BenchError,
    http_bench::{
        client::{Matrix, pct},
        conn::{Conn, Target, bearer},
        cpu_seconds,
    },
};

/// Arguments of `presence-bench writer`.
#[derive(Debug, Clone, clap::Args)]
pub struct WriterArgs {
    /// A name for this run in the output (`stock`, `presenced`).
    #[arg(long)]
    pub label: String,
    /// The writer's replication listener, `http://host:port`.
    #[arg(long)]
    pub replication_url: String,
    /// `worker_replication_secret`, sent as the bearer.
    #[arg(long)]
    pub replication_secret: String,
    /// Synapse main (shared-secret registration, rooms).
    #[arg(long)]
    pub main_url: String,
    /// The sync worker (the end-to-end `PUT` and `/sync`).
    #[arg(long)]
    pub worker_url: String,
    /// `registration_shared_secret`.
    #[arg(long)]
    pub shared_secret: String,
    /// The deployment's `server_name`.
    #[arg(long)]
    pub server_name: String,
    /// Requests outstanding, one run each (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "8,64")]
    pub in_flight: Vec<usize>,
    /// Length of each throughput run.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Distinct users the updates are spread over.
    #[arg(long, default_value_t = 2000)]
    pub users: usize,
    /// End-to-end samples.
    #[arg(long, default_value_t = 20)]
    pub e2e_samples: usize,
    /// `name=PID` of a process whose CPU time to report (repeatable, comma-separated).
    #[arg(long = "pid", value_delimiter = ',')]
    pub pids: Vec<String>,
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the benchmark, printing one line per figure.
pub fn main(args: &WriterArgs, out: &mut dyn std::io::Write) -> Result<(), BenchError> {
    let pids = args
        .pids
        .iter()
        .map(|p| {
            let (name, pid) = p
                .split_once('=')
                .ok_or_else(|| BenchError::InvalidArgs(format!("--pid {p}: want name=PID")))?;
            let pid = pid
                .parse::<u32>()
                .map_err(|_| BenchError::InvalidArgs(format!("--pid {p}: not a PID")))?;
            Ok((name.to_owned(), pid))
        })
        .collect::<Result<Vec<_>, BenchError>>()?;
    if args.in_flight.contains(&0)
        || args.users == 0
        || args.seconds.is_nan()
        || args.seconds <= 0.0
    {
        return Err(BenchError::InvalidArgs(
            "--in-flight, --users and --seconds must be positive".to_owned(),
        ));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        for &n in &args.in_flight {
            let cpu_before = cpu(&pids);
            let run = set_state_run(args, n).await?;
            let cpu = cpu_delta(&pids, &cpu_before);
            writeln!(
                out,
                "writer label={} test=presence_set_state in_flight={n} requests={} errors={} \
                 seconds={:.2} rate_per_s={:.0} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}{cpu}",
                args.label,
                run.ok,
                run.errors,
                run.elapsed,
                run.ok as f64 / run.elapsed,
                ms(run.latency.value_at_quantile(0.5)),
                ms(run.latency.value_at_quantile(0.99)),
                ms(run.latency.max()),
            )?;
            if let Some(e) = run.first_error {
                writeln!(out, "writer label={} first_error={e:?}", args.label)?;
            }
        }
        let cpu_before = cpu(&pids);
        let e2e = end_to_end(args).await?;
        let cpu = cpu_delta(&pids, &cpu_before);
        writeln!(
            out,
            "writer label={} test=put_to_sync samples={} p50_ms={:.1} p99_ms={:.1} max_ms={:.1}{cpu}",
            args.label,
            e2e.len(),
            ms(e2e.value_at_quantile(0.5)),
            ms(e2e.value_at_quantile(0.99)),
            ms(e2e.max()),
        )?;
        Ok(())
    })
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn cpu(pids: &[(String, u32)]) -> Vec<Option<f64>> {
    pids.iter().map(|(_, pid)| cpu_seconds(*pid)).collect()
}

fn cpu_delta(pids: &[(String, u32)], before: &[Option<f64>]) -> String {
    pids.iter()
        .zip(before)
        .map(|((name, pid), b)| match (b, cpu_seconds(*pid)) {
            (Some(b), Some(a)) => format!(" cpu_s_{name}={:.2}", a - b),
            _ => format!(" cpu_s_{name}=?"),
        })
        .collect()
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 10 min, 3 significant digits: constant bounds the constructor accepts.
    match Histogram::new_with_bounds(1, 600_000_000, 3) {
        Ok(h) => h,
        Err(e) => unreachable!("constant histogram bounds refused: {e}"),
    }
}

struct Run {
    ok: u64,
    errors: u64,
    elapsed: f64,
    latency: Histogram<u64>,
    first_error: Option<String>,
}

async fn set_state_run(args: &WriterArgs, in_flight: usize) -> Result<Run, BenchError> {
    let target = Target::new(&args.replication_url)?;
    let auth = bearer(&args.replication_secret)?;
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..in_flight)
        .map(|task| {
            let (target, auth) = (target.clone(), auth.clone());
            let (users, server) = (args.users, args.server_name.clone());
            tokio::spawn(async move {
                let mut conn = Conn::new(target);
                let mut run = Run {
                    ok: 0,
                    errors: 0,
                    elapsed: 0.0,
                    latency: histogram(),
                    first_error: None,
                };
                let mut k = 0usize;
                while Instant::now() < deadline {
                    // Tasks walk disjoint users, so no two requests for one user overlap.
                    let user = format!("@wbench-{}:{server}", (task + k * in_flight) % users);
                    let state = if k.is_multiple_of(2) {
                        "online"
                    } else {
                        "unavailable"
                    };
                    let body = json!({"device_id": null, "is_sync": false, "force_notify": false,
                                      "state": {"presence": state, "status_msg": format!("b{k}")}});
                    let path = format!("/_synapse/replication/presence_set_state/{}", pct(&user));
                    let t = Instant::now();
                    let sent = conn
                        .send(
                            Method::POST,
                            &path,
                            &auth,
                            Some(Bytes::from(body.to_string())),
                            REQUEST_TIMEOUT,
                        )
                        .await;
                    match sent {
                        Ok(_) => {
                            run.ok += 1;
                            let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
                            let _ = run.latency.record(us.max(1));
                        }
                        Err(e) => {
                            run.errors += 1;
                            run.first_error.get_or_insert_with(|| e.to_string());
                        }
                    }
                    k += 1;
                }
                run
            })
        })
        .collect();
    let mut total = Run {
        ok: 0,
        errors: 0,
        elapsed: 0.0,
        latency: histogram(),
        first_error: None,
    };
    for task in tasks {
        let run = task
            .await
            .map_err(|e| BenchError::Http(format!("load task failed: {e}")))?;
        total.ok += run.ok;
        total.errors += run.errors;
        let _ = total.latency.add(&run.latency);
        total.first_error = total.first_error.or(run.first_error);
    }
    total.elapsed = started.elapsed().as_secs_f64();
    Ok(total)
}

/// `PUT` on the sync worker until a room-mate's `/sync` there shows it.
async fn end_to_end(args: &WriterArgs) -> Result<Histogram<u64>, BenchError> {
    let main = Matrix::new(&args.main_url)?;
    let tag = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let alice = main
        .register(&args.shared_secret, &format!("e2e-a-{}-{tag}", args.label))
        .await?;
    let bob = main
        .register(&args.shared_secret, &format!("e2e-b-{}-{tag}", args.label))
        .await?;
    let room = main.create_room(&alice.access_token).await?;
    main.join(&bob.access_token, &room).await?;
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| BenchError::Http(e.to_string()))?;
    let get = |url: String, token: String| {
        let http = http.clone();
        async move {
            let resp = http
                .get(&url)
                .bearer_auth(&token)
                .send()
                .await
                .map_err(|e| BenchError::Http(format!("{url}: {e}")))?;
            resp.json::<Value>()
                .await
                .map_err(|e| BenchError::Http(format!("{url}: {e}")))
        }
    };
    let worker = &args.worker_url;
    let first = get(
        format!("{worker}/_matrix/client/v3/sync?timeout=0"),
        bob.access_token.clone(),
    )
    .await?;
    let mut since = first["next_batch"].as_str().unwrap_or_default().to_owned();
    let mut latency = histogram();
    let put_url = format!(
        "{worker}/_matrix/client/v3/presence/{}/status",
        pct(&alice.user_id)
    );
    for i in 0..args.e2e_samples {
        let msg = format!("e2e {i}");
        let t = Instant::now();
        http.put(&put_url)
            .bearer_auth(&alice.access_token)
            .json(&json!({"presence": "online", "status_msg": msg}))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| BenchError::Http(format!("PUT presence: {e}")))?;
        loop {
            let body = get(
                format!(
                    "{worker}/_matrix/client/v3/sync?timeout=30000&since={}",
                    pct(&since)
                ),
                bob.access_token.clone(),
            )
            .await?;
            since = body["next_batch"].as_str().unwrap_or_default().to_owned();
            let seen = body["presence"]["events"].as_array().is_some_and(|events| {
                events.iter().any(|e| {
                    e["sender"] == alice.user_id.as_str()
                        && e["content"]["status_msg"] == msg.as_str()
                })
            });
            if seen {
                break;
            }
            if t.elapsed() > REQUEST_TIMEOUT {
                return Err(BenchError::Http(format!(
                    "{} never saw {msg:?} on the sync worker",
                    bob.user_id
                )));
            }
        }
        let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
        let _ = latency.record(us.max(1));
    }
    Ok(latency)
}
