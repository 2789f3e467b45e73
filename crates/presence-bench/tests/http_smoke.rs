//! Runs `presence-bench http` at a tiny size against a Presenced started in-process, and checks
//! the summary line: the contract bench/compare.sh relies on.

use std::process::Command;

use presenced::{Config, Server};

/// Parses `http server=.. users=.. updates_per_sec=.. deliveries_per_sec=.. p50_ms=..
/// p99_ms=.. rss_mb=..` exactly: (label, users, updates/s, deliveries/s, p50, p99, rss).
fn parse_line(line: &str) -> Option<(String, u64, u64, u64, f64, f64, f64)> {
    let rest = line.strip_prefix("http ")?;
    let keys = [
        "server",
        "users",
        "updates_per_sec",
        "deliveries_per_sec",
        "p50_ms",
        "p99_ms",
        "rss_mb",
    ];
    let fields: Vec<&str> = rest.split(' ').collect();
    if fields.len() != keys.len() {
        return None;
    }
    let mut values = Vec::new();
    for (field, key) in fields.iter().zip(keys) {
        let value = field.strip_prefix(key)?.strip_prefix('=')?;
        if value.is_empty() {
            return None;
        }
        values.push(value);
    }
    let int = |s: &str| -> Option<u64> {
        s.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let decimal = |s: &str, places: usize| -> Option<f64> {
        let (whole, frac) = s.split_once('.')?;
        (int(whole).is_some() && frac.len() == places && int(frac).is_some())
            .then(|| s.parse().ok())?
    };
    Some((
        values[0].to_owned(),
        int(values[1])?,
        int(values[2])?,
        int(values[3])?,
        decimal(values[4], 2)?,
        decimal(values[5], 2)?,
        decimal(values[6], 1)?,
    ))
}

#[test]
fn line_parser_is_strict() {
    let good = "http server=presenced users=20 updates_per_sec=10 deliveries_per_sec=30 p50_ms=1.25 p99_ms=3.50 rss_mb=12.0";
    assert_eq!(
        parse_line(good),
        Some(("presenced".to_owned(), 20, 10, 30, 1.25, 3.5, 12.0))
    );
    for bad in [
        "http server=presenced users=20 updates_per_sec=10.5 deliveries_per_sec=30 p50_ms=1.25 p99_ms=3.50 rss_mb=12.0",
        "http server=presenced users=20 updates_per_sec=10 deliveries_per_sec=30 p50_ms=1.2 p99_ms=3.50 rss_mb=12.0",
        "http server=presenced users=20 updates_per_sec=10 deliveries_per_sec=30 p50_ms=1.25 p99_ms=3.50",
        "http server=presenced users=20 deliveries_per_sec=30 updates_per_sec=10 p50_ms=1.25 p99_ms=3.50 rss_mb=12.0",
        "http server= users=20 updates_per_sec=10 deliveries_per_sec=30 p50_ms=1.25 p99_ms=3.50 rss_mb=12.0",
        "engine server=presenced users=20 updates_per_sec=10 deliveries_per_sec=30 p50_ms=1.25 p99_ms=3.50 rss_mb=12.0",
    ] {
        assert_eq!(parse_line(bad), None, "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_smoke_against_presenced_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("presenced.db");
    let yaml = format!(
        "server_name: bench.test
listeners:
  - port: 0
    type: http
    bind_addresses: ['127.0.0.1']
    resources: [{{names: [client]}}]
database: {{name: sqlite3, args: {{database: '{}'}}}}
registration_shared_secret: smoke-secret
password_hash_cost: {{memory_kib: 8, iterations: 1, parallelism: 1}}
rc_presence: {{per_user: {{per_second: 100000, burst_count: 100000}}}}
rc_message: {{per_second: 100000, burst_count: 100000}}
rc_login:
  address: {{per_second: 100000, burst_count: 100000}}
  account: {{per_second: 100000, burst_count: 100000}}
rc_joins: {{local: {{per_second: 100000, burst_count: 100000}}}}
rc_joins_per_room: {{per_second: 100000, burst_count: 100000}}
rc_room_creation: {{per_second: 100000, burst_count: 100000}}
presence:
  presence_router:
    module: presenced.routers.ExamplePresenceRouter
    config: {{always_send_to_users: ['@benchall0:bench.test']}}
",
        db.display()
    );
    let config = Config::from_yaml(&yaml).unwrap().config;
    let server = Server::start(config).await.unwrap();
    let base = format!("http://{}", server.local_addrs()[0]);
    let pid = std::process::id().to_string();

    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_presence-bench"))
            .args([
                "http",
                "--base-url",
                &base,
                "--shared-secret",
                "smoke-secret",
                "--users",
                "20",
                "--watchers",
                "3",
                "--router-watchers",
                "1",
                "--concurrency",
                "4",
                "--duration",
                "2",
                "--warmup",
                "0.5",
                "--drain",
                "5",
                "--sync-timeout-ms",
                "2000",
                "--server-pid",
                &pid,
                "--label",
                "presenced",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    server.shutdown();

    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line expected:\n{stdout}");
    let (label, users, updates, deliveries, p50, p99, rss) = parse_line(lines[0])
        .unwrap_or_else(|| panic!("bad summary line {:?}\nstderr:\n{stderr}", lines[0]));
    assert_eq!(label, "presenced");
    assert_eq!(users, 20);
    assert!(updates > 0 && deliveries > 0, "{}", lines[0]);
    assert!(p50 <= p99, "{}", lines[0]);
    // The server runs in this process, whose resident memory is certainly above 1 MiB.
    assert!(rss > 1.0, "{}", lines[0]);
    // Every accepted update was seen by its watchers (the router watcher sees them all).
    assert!(
        stderr.contains("(100.000%)"),
        "not every expected delivery was seen:\n{stderr}"
    );
}
