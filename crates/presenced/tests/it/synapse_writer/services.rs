//! The writer in production: its services restart under it, PostgreSQL goes away and comes
//! back, every listener answers `/health`, and startup refuses deployments it must not serve
//! (an untested schema, Synapse's own writer still running under the same name).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{
    Deployment, SEEN_WITHIN, Scenario, WRITER_SLOT, deployment, has_fields, presence_events,
};
use crate::matrix::q;

/// How fast a call must fail while PostgreSQL is down. Presenced's own bound is one second
/// (its connection timeout; a refused connection fails at once): the slack is for a busy
/// machine, and it is still far from the minute a hang would take.
const FAIL_FAST_WITHIN: Duration = Duration::from_secs(2);
/// How long calls may keep failing once PostgreSQL is back.
const RECOVER_WITHIN: Duration = Duration::from_secs(30);

impl Deployment {
    /// Runs `scripts/synapse-deployment.sh <command> <dir>` (restarting a service, starting
    /// Synapse's own writer...), which must succeed.
    fn harness(&self, command: &str) {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scripts/synapse-deployment.sh"
        );
        let out = std::process::Command::new("bash")
            .args([script, command])
            .arg(self.dir())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "synapse-deployment.sh {command} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `harness(command)` off the async threads: the script takes seconds.
async fn harness(d: &'static Deployment, command: &'static str) {
    tokio::task::spawn_blocking(move || d.harness(command))
        .await
        .unwrap();
}

/// The status message of the `i`th update of the restart test.
fn nth(i: u32) -> String {
    format!("update {i:04}")
}

fn parse_nth(status_msg: &str) -> Option<u32> {
    status_msg.strip_prefix("update ")?.parse().ok()
}

#[tokio::test]
async fn redis_and_postgres_restarts_lose_no_acknowledged_update() {
    let Some(s) = Scenario::start(
        "redis_and_postgres_restarts_lose_no_acknowledged_update",
        "svcrestart",
    )
    .await
    else {
        return;
    };
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    s.share_room(&alice, &bob).await;
    let mut bob_sync = s.watch(&bob).await;

    // Alice's client PUTs a numbered status on the sync worker every 150 ms while Redis and
    // then PostgreSQL restart. A PUT that fails (PostgreSQL is down, so the worker cannot
    // check her token) was not acknowledged and may be lost; every other must arrive.
    let stop = Arc::new(AtomicBool::new(false));
    let putter = {
        let stop = stop.clone();
        let url = format!(
            "{}/_matrix/client/v3/presence/{}/status",
            s.d.worker_url(),
            q(&alice.user_id)
        );
        let auth = format!("Bearer {}", alice.token);
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let (mut acked, mut failed) = (Vec::new(), 0u32);
            let mut i = 0;
            while !stop.load(Ordering::Acquire) {
                i += 1;
                let body = json!({"presence": "online", "status_msg": nth(i)});
                let sent = http
                    .put(&url)
                    .header("Authorization", &auth)
                    .json(&body)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == StatusCode::OK => acked.push(i),
                    _ => failed += 1,
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            (acked, failed)
        })
    };
    let restarts = {
        let (d, stop) = (s.d, stop.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            harness(d, "restart-redis").await;
            tokio::time::sleep(Duration::from_secs(4)).await;
            harness(d, "restart-postgres").await;
            tokio::time::sleep(Duration::from_secs(4)).await;
            stop.store(true, Ordering::Release);
        })
    };

    // Bob keeps syncing through it all; failed syncs (PostgreSQL down) are retried.
    let mut putter = Some(putter);
    let mut result: Option<((Vec<u32>, u32), Instant)> = None;
    let mut seen: Vec<u32> = Vec::new();
    loop {
        let url = format!(
            "{}/_matrix/client/v3/sync?timeout=1000&since={}",
            s.d.worker_url(),
            q(&bob_sync.since)
        );
        let auth = format!("Bearer {}", bob.token);
        let (status, body) = s.call(Method::GET, &url, Some(&auth), None).await;
        if status == StatusCode::OK {
            bob_sync.since = body["next_batch"].as_str().unwrap().to_owned();
            seen.extend(
                presence_events(&body)
                    .iter()
                    .filter(|e| e["sender"] == alice.user_id.as_str())
                    .filter_map(|e| e["content"]["status_msg"].as_str().and_then(parse_nth)),
            );
        } else {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if result.is_none()
            && stop.load(Ordering::Acquire)
            && let Some(putter) = putter.take()
        {
            result = Some((putter.await.unwrap(), Instant::now()));
        }
        if let Some(((acked, _), at)) = &result {
            let Some(&last) = acked.last() else {
                s.fail("no PUT was acknowledged during the restarts");
            };
            // A later PUT whose answer was lost may have landed too: it supersedes.
            if seen.last().is_some_and(|&l| l >= last) {
                break;
            }
            if at.elapsed() > SEEN_WITHIN * 4 {
                s.fail(&format!(
                    "bob never saw alice's last acknowledged update ({}): saw {seen:?}",
                    nth(last)
                ));
            }
        }
    }
    restarts.await.unwrap();
    let ((acked, failed), _) = result.unwrap();
    eprintln!(
        "{} PUTs acknowledged, {failed} refused during the restarts; bob saw {} states",
        acked.len(),
        seen.len()
    );
    s.check(acked.len() >= 20, || {
        format!(
            "only {} PUTs were acknowledged in ~10 s of restarts",
            acked.len()
        )
    });
    s.check(seen.windows(2).all(|w| w[0] <= w[1]), || {
        format!("bob saw alice's updates out of order: {seen:?}")
    });
    let Some(&last_seen) = seen.last() else {
        s.fail("bob saw none of alice's updates");
    };
    s.check_row(&alice, "online", &nth(last_seen)).await;
    // Both reconnections were noticed (the subscriber's; the publisher's if it had to publish
    // while Redis was down).
    let reconnects = s
        .metric("presenced_replication_reconnects_total{connection=\"subscribe\"}")
        .await;
    s.check(reconnects >= 1.0, || {
        format!(
            "presenced_replication_reconnects_total{{connection=\"subscribe\"}} is {reconnects}"
        )
    });
    s.finish().await;
}

/// Starts PostgreSQL again however the test ends.
/// Brings PostgreSQL back (the harness command given) when dropped, also when the test fails.
struct PostgresBack(&'static Deployment, &'static str);

impl Drop for PostgresBack {
    fn drop(&mut self) {
        self.0.harness(self.1);
    }
}

/// One call that must fail fast while PostgreSQL is down: a 5xx with a Matrix error body.
async fn fails_fast(
    s: &Scenario,
    what: &str,
    method: Method,
    url: &str,
    auth: &str,
    body: Option<&Value>,
) {
    let t = Instant::now();
    let (status, data) = s.call(method, url, Some(auth), body).await;
    let took = t.elapsed();
    eprintln!(
        "{what} with PostgreSQL down: {status} in {} ms",
        took.as_millis()
    );
    s.check(took < FAIL_FAST_WITHIN, || {
        format!("{what} took {took:?} with PostgreSQL down (want under {FAIL_FAST_WITHIN:?})")
    });
    s.check(
        status.is_server_error() && data["errcode"].is_string(),
        || format!("{what} with PostgreSQL down -> {status} {data}, want a 5xx Matrix error"),
    );
}

#[tokio::test]
async fn a_stopped_postgres_fails_calls_fast_and_they_recover() {
    postgres_outage(
        "a_stopped_postgres_fails_calls_fast_and_they_recover",
        "pgdown",
        ("stop-postgres", "start-postgres"),
    )
    .await;
}

/// PostgreSQL stops answering with its connections open (every process SIGSTOPped): calls
/// still fail within about a second (the writer's per-call limit), instead of hanging the
/// workers.
#[tokio::test]
async fn a_hung_postgres_fails_calls_within_a_second_and_they_recover() {
    postgres_outage(
        "a_hung_postgres_fails_calls_within_a_second_and_they_recover",
        "pghung",
        ("pause-postgres", "resume-postgres"),
    )
    .await;
}

/// While PostgreSQL is away (`down`, then `up` again), replication calls and client routes
/// fail fast with a Matrix error, `/health` still answers, and everything works again once
/// it is back.
async fn postgres_outage(
    test: &'static str,
    tag: &'static str,
    (down, up): (&'static str, &'static str),
) {
    let Some(s) = Scenario::start(test, tag).await else {
        return;
    };
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    s.share_room(&alice, &bob).await;
    let presenced = s.d.presenced_client_url();
    let before = json!({"presence": "online", "status_msg": "before the outage"});
    s.put_presence(&presenced, &alice, before.clone()).await;

    harness(s.d, down).await;
    let restart = PostgresBack(s.d, up);
    {
        let set_state = s.replication(&format!("presence_set_state/{}", q(&alice.user_id)));
        let body = json!({"device_id": null, "is_sync": false, "force_notify": false,
                          "state": {"presence": "unavailable", "status_msg": "during"}});
        fails_fast(
            &s,
            "presence_set_state",
            Method::POST,
            &set_state,
            &s.replication_auth(),
            Some(&body),
        )
        .await;
        let status_url = format!(
            "{presenced}/_matrix/client/v3/presence/{}/status",
            q(&alice.user_id)
        );
        let bob_auth = format!("Bearer {}", bob.token);
        fails_fast(
            &s,
            "GET /presence on Presenced",
            Method::GET,
            &status_url,
            &bob_auth,
            None,
        )
        .await;
        let alice_auth = format!("Bearer {}", alice.token);
        let put = json!({"presence": "unavailable", "status_msg": "during"});
        fails_fast(
            &s,
            "PUT /presence on Presenced",
            Method::PUT,
            &status_url,
            &alice_auth,
            Some(&put),
        )
        .await;
        // Still serving what does not need the database.
        let (status, _) = s
            .call(Method::GET, &format!("{presenced}/health"), None, None)
            .await;
        s.check(status == StatusCode::OK, || {
            format!("/health with PostgreSQL down -> {status}")
        });
    }
    tokio::task::spawn_blocking(move || drop(restart))
        .await
        .unwrap();

    // Back by itself: the first calls after the restart may still fail, then all succeed.
    let after = json!({"presence": "online", "status_msg": "after the outage"});
    let status_url = format!(
        "{presenced}/_matrix/client/v3/presence/{}/status",
        q(&alice.user_id)
    );
    let alice_auth = format!("Bearer {}", alice.token);
    let t = Instant::now();
    loop {
        let (status, data) = s
            .call(Method::PUT, &status_url, Some(&alice_auth), Some(&after))
            .await;
        if status == StatusCode::OK {
            eprintln!(
                "PUT succeeded {} ms after PostgreSQL came back",
                t.elapsed().as_millis()
            );
            break;
        }
        if t.elapsed() > RECOVER_WITHIN {
            s.fail(&format!(
                "PUT /presence still fails {RECOVER_WITHIN:?} after PostgreSQL came back: {status} {data}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (status, body) = s.get_presence(&presenced, "v3", &bob, &alice).await;
    s.check(
        status == StatusCode::OK && has_fields(&body, &after),
        || format!("after the outage, GET alice's presence -> {status} {body}, want {after}"),
    );
    s.check_row(&alice, "online", "after the outage").await;
    // Synapse's processes answer 500 for a while after their database came back: wait until
    // the sync worker serves again, so that the next test finds the deployment as it was.
    let sync_url = format!("{}/_matrix/client/v3/sync?timeout=0", s.d.worker_url());
    let bob_auth = format!("Bearer {}", bob.token);
    let t = Instant::now();
    while s
        .call(Method::GET, &sync_url, Some(&bob_auth), None)
        .await
        .0
        != StatusCode::OK
    {
        if t.elapsed() > RECOVER_WITHIN {
            s.fail("the sync worker did not recover from the PostgreSQL outage");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    s.finish().await;
}

#[tokio::test]
async fn every_listener_answers_health_and_the_client_listener_cors() {
    let Some(s) = Scenario::start(
        "every_listener_answers_health_and_the_client_listener_cors",
        "health",
    )
    .await
    else {
        return;
    };
    let metrics_base = s.d.metrics_url().trim_end_matches("/metrics").to_owned();
    for base in [
        s.d.replication_url(),
        s.d.presenced_client_url(),
        metrics_base,
    ] {
        let resp = reqwest::get(format!("{base}/health")).await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        s.check(status == StatusCode::OK && text == "OK", || {
            format!("GET {base}/health -> {status} {text:?}, want 200 OK")
        });
    }
    // A browser's preflight for a PUT of presence, as Synapse's listeners answer it.
    let url = format!(
        "{}/_matrix/client/v3/presence/{}/status",
        s.d.presenced_client_url(),
        q("@someone:test.local")
    );
    let resp = reqwest::Client::new()
        .request(Method::OPTIONS, &url)
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "PUT")
        .header(
            "Access-Control-Request-Headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase()
    };
    s.check(resp.status().is_success(), || {
        format!("preflight OPTIONS {url} -> {}", resp.status())
    });
    s.check(header("access-control-allow-origin") == "*", || {
        format!(
            "preflight: access-control-allow-origin {:?}",
            header("access-control-allow-origin")
        )
    });
    let methods = header("access-control-allow-methods");
    s.check(methods.contains("put") && methods.contains("get"), || {
        format!("preflight: access-control-allow-methods {methods:?}")
    });
    let headers = header("access-control-allow-headers");
    s.check(
        headers.contains("authorization") && headers.contains("content-type"),
        || format!("preflight: access-control-allow-headers {headers:?}"),
    );
    // The production series are there, each with its help text (the other processes'
    // answers to Presenced's REPLICATE may take a moment to be counted).
    let wanted = [
        "# HELP presenced_replication_commands_sent_total ",
        "# HELP presenced_replication_commands_received_total ",
        "# HELP presenced_http_request_duration_seconds ",
        "presenced_replication_commands_sent_total{command=\"POSITION\"}",
        "presenced_replication_commands_received_total{command=\"POSITION\"}",
    ];
    let t = Instant::now();
    loop {
        let text = reqwest::get(s.d.metrics_url())
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let missing: Vec<&str> = wanted
            .iter()
            .copied()
            .filter(|w| !text.contains(w))
            .collect();
        if missing.is_empty() {
            break;
        }
        if t.elapsed() > Duration::from_secs(10) {
            s.fail(&format!("/metrics lacks {missing:?}:\n{text}"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    s.finish().await;
}

/// Presenced on the deployment's files with `extra` arguments. The caller holds the writer
/// slot.
fn presenced(d: &'static Deployment, extra: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_presenced"));
    cmd.args(["-c", d.var("SYNAPSE_HOMESERVER_YAML")])
        .args(["-c", d.var("PRESENCED_WRITER_YAML")])
        .args(extra)
        .current_dir(d.dir())
        .env("PYTHONPATH", d.var("SYNAPSE_PYTHONPATH"))
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Runs Presenced until it exits (at most 60 s): its status and output.
async fn run_to_exit(d: &'static Deployment, extra: &[&str]) -> (std::process::ExitStatus, String) {
    let out = tokio::time::timeout(Duration::from_secs(60), presenced(d, extra).output())
        .await
        .expect("Presenced neither started nor exited within 60 s")
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

/// Puts `schema_version` back however the test ends.
struct SchemaBack(&'static Deployment, String);

impl Drop for SchemaBack {
    fn drop(&mut self) {
        let _ = self
            .0
            .psql(&format!("UPDATE schema_version SET version = {}", self.1));
    }
}

#[tokio::test]
async fn a_schema_outside_the_tested_range_is_refused_unless_allowed() {
    let Some(d) = deployment("a_schema_outside_the_tested_range_is_refused_unless_allowed") else {
        return;
    };
    // Held until the schema is back (locals drop in reverse order): no other test may start
    // Presenced meanwhile.
    let _slot = WRITER_SLOT.lock().await;
    let Some(version) = d.psql("SELECT version FROM schema_version") else {
        eprintln!("psql not found: cannot change schema_version; not checking");
        return;
    };
    let version = version.trim().to_owned();
    let newer: u32 = version.parse::<u32>().unwrap() + 1;
    let _back = SchemaBack(d, version.clone());
    d.psql(&format!("UPDATE schema_version SET version = {newer}"));

    let (status, output) = run_to_exit(d, &[]).await;
    assert!(
        !status.success(),
        "Presenced started on schema version {newer}:\n{output}"
    );
    assert!(
        output.contains(&format!("schema version {newer}"))
            && output.contains(&format!("{version}..={version}"))
            && output.contains("--allow-untested-synapse"),
        "the refusal names neither the version, the tested range nor the override:\n{output}"
    );

    // With the override it starts, says so, and stops as usual.
    let log = d.dir().join("logs/presenced-untested-schema.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut child = presenced(d, &["--allow-untested-synapse"])
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let t = Instant::now();
    while super::health(&d.replication_url()).await.is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "with --allow-untested-synapse Presenced exited ({status}):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no /health within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    super::signal_pid(child.id().unwrap(), "TERM");
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("no exit within 20 s of SIGTERM")
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "exit {status} after SIGTERM:\n{text}");
    assert!(
        text.contains("outside the tested range"),
        "started with --allow-untested-synapse without a warning:\n{text}"
    );
}

/// Synapse's own writer in the slot, stopped however the test ends.
struct StockWriter(&'static Deployment);

impl Drop for StockWriter {
    fn drop(&mut self) {
        self.0.harness("stop-stock-writer");
    }
}

#[tokio::test]
async fn a_running_stock_writer_is_refused() {
    let Some(d) = deployment("a_running_stock_writer_is_refused") else {
        return;
    };
    let _slot = WRITER_SLOT.lock().await;
    harness(d, "start-stock-writer").await;
    let stock = StockWriter(d);
    let (status, output) = run_to_exit(d, &[]).await;
    drop(stock);
    assert!(
        !status.success(),
        "Presenced started beside Synapse's own writer:\n{output}"
    );
    assert!(
        output.contains("another process already writes presence as \"presenced\""),
        "the refusal does not say a writer of that name is running:\n{output}"
    );
}

#[tokio::test]
async fn postgres_and_redis_over_tls_when_the_shared_file_asks() {
    // A third file replaces `database` and `redis` with TLS connections: PostgreSQL over
    // loopback TCP with `sslmode: verify-full`, Redis on its TLS port, both checked against
    // the deployment's test CA. Synapse's own processes stay on clear text.
    let Some(s) = Scenario::start_with(
        "postgres_and_redis_over_tls_when_the_shared_file_asks",
        "tls",
        |d| {
            let ca = d.var("SYNAPSE_TLS_CA");
            let file = d.dir().join("presenced-tls.yaml");
            let yaml = format!(
                "database:\n  name: psycopg2\n  args: {{user: synapse, dbname: synapse, \
                 host: localhost, port: {pg}, sslmode: verify-full, sslrootcert: '{ca}', \
                 application_name: presenced-tls-test}}\n\
                 redis: {{enabled: true, host: localhost, port: {redis}, use_tls: true, \
                 ca_file: '{ca}'}}\n",
                pg = d.var("SYNAPSE_PG_PORT"),
                redis = d.var("SYNAPSE_REDIS_TLS_PORT"),
            );
            std::fs::write(&file, yaml).unwrap();
            vec!["-c".to_owned(), file.display().to_string()]
        },
    )
    .await
    else {
        return;
    };
    // Every connection Presenced holds to PostgreSQL is encrypted.
    if let Some(out) = s.d.psql(
        "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = 'presenced-tls-test'",
    ) {
        let rows: Vec<&str> = out.lines().collect();
        s.check(!rows.is_empty() && rows.iter().all(|r| *r == "t"), || {
            format!("Presenced's PostgreSQL connections, ssl per connection: {rows:?}")
        });
    }
    // Writes reach PostgreSQL and RDATA reaches the sync worker through Redis's TLS port.
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    s.share_room(&alice, &bob).await;
    let mut bob_sync = s.watch(&bob).await;
    let content = json!({"presence": "online", "status_msg": "over TLS"});
    s.put_presence(&s.d.presenced_client_url(), &alice, content.clone())
        .await;
    s.wait_for(&mut bob_sync, &alice, &content, SEEN_WITHIN)
        .await;
    s.check_row(&alice, "online", "over TLS").await;
    s.finish().await;
}
