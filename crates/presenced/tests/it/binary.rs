//! The real `presenced` binary: startup, HTTP, configuration errors, check-config, signals.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{RunningBinary, Workspace, config_yaml};

#[tokio::test]
async fn serves_versions_and_stops_cleanly_on_sigterm() {
    let ws = Workspace::new();
    let config = ws.write(
        "presenced.yaml",
        &config_yaml("experimental_features: {msc3026_enabled: true}\n"),
    );
    let server = RunningBinary::start(&ws, &config).await;
    assert!(
        server.addrs[0].starts_with("127.0.0.1:"),
        "{:?}",
        server.addrs
    );

    let client = reqwest::Client::new();
    let response = client
        .get(format!("{}/_matrix/client/versions", server.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    let body: Value = response.json().await.unwrap();
    assert!(
        body["versions"]
            .as_array()
            .unwrap()
            .contains(&json!("v1.15"))
    );
    assert_eq!(
        body["unstable_features"]["org.matrix.msc3026.busy_presence"],
        true
    );

    let response = client
        .get(format!("{}/_matrix/client/v3/unknown", server.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"})
    );

    server.signal("TERM");
    let (code, stderr) = server.wait().await;
    assert_eq!(code, Some(0), "stderr:\n{stderr}");
    assert!(stderr.contains("Listening on 127.0.0.1:"), "{stderr}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
}

#[tokio::test]
async fn sigint_also_stops_cleanly() {
    let ws = Workspace::new();
    let config = ws.write("presenced.yaml", &config_yaml(""));
    let server = RunningBinary::start(&ws, &config).await;
    server.signal("INT");
    let (code, stderr) = server.wait().await;
    assert_eq!(code, Some(0), "stderr:\n{stderr}");
}

#[tokio::test]
async fn unknown_keys_are_reported_once_at_startup() {
    let ws = Workspace::new();
    let config = ws.write(
        "presenced.yaml",
        &config_yaml("report_stats: true\nmedia_store_path: /media\n"),
    );
    let server = RunningBinary::start(&ws, &config).await;
    server.signal("TERM");
    let (code, stderr) = server.wait().await;
    assert_eq!(code, Some(0));
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("does not use"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].contains("media_store_path, report_stats"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_bad_config_exits_1_naming_the_key() {
    let ws = Workspace::new();
    let config = ws.write(
        "presenced.yaml",
        &config_yaml(
            "presence:\n  idle_timeout: 30s\nrc_presence: {per_user: {per_second: fast}}\n",
        ),
    );
    let (code, stdout, stderr) = ws.run(&["-c", config.to_str().unwrap()]).await;
    assert_eq!(code, 1, "stderr:\n{stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.contains(
            "presence.idle_timeout: must be greater than presence.last_active_granularity (1m)"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("rc_presence.per_user.per_second:"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn missing_or_unparsable_files_exit_1() {
    let ws = Workspace::new();
    let (code, _, stderr) = ws.run(&["-c", "does-not-exist.yaml"]).await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains("does-not-exist.yaml: cannot read the file"),
        "{stderr}"
    );

    let broken = ws.write("broken.yaml", "server_name: [\n");
    let (code, _, stderr) = ws.run(&["-c", broken.to_str().unwrap()]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("broken.yaml: invalid YAML"), "{stderr}");

    let (code, _, stderr) = ws.run(&[]).await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains("no configuration file was given"),
        "{stderr}"
    );
}

#[tokio::test]
async fn check_config_exit_codes() {
    let ws = Workspace::new();
    let good = ws.write("good.yaml", &config_yaml("pid_file: /run/synapse.pid\n"));
    let (code, stdout, stderr) = ws
        .run(&["check-config", "-c", good.to_str().unwrap()])
        .await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "The configuration is valid.\n");
    assert!(
        stderr.contains("warning: keys Presenced does not use (ignored): pid_file"),
        "{stderr}"
    );

    let bad = ws.write(
        "bad.yaml",
        "database: {name: psycopg2, args: {user: synapse}}\n",
    );
    let (code, stdout, stderr) = ws
        .run(&[
            "check-config",
            "-c",
            good.to_str().unwrap(),
            "-c",
            bad.to_str().unwrap(),
        ])
        .await;
    assert_eq!(code, 1);
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("database.name: PostgreSQL (psycopg2) is used only as the presence writer"),
        "{stderr}"
    );

    // An overlay can also fix what the first file got wrong.
    let fix = ws.write(
        "fix.yaml",
        "database: {name: sqlite3, args: {database: x.db}}\n",
    );
    let (code, _, stderr) = ws
        .run(&[
            "check-config",
            "-c",
            good.to_str().unwrap(),
            "-c",
            bad.to_str().unwrap(),
            "-c",
            fix.to_str().unwrap(),
        ])
        .await;
    assert_eq!(code, 0, "{stderr}");
}

#[tokio::test]
async fn the_example_config_and_a_reference_homeserver_yaml_pass_check_config() {
    let ws = Workspace::new();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../presenced.example.yaml");
    let (code, _, stderr) = ws.run(&["check-config", "-c", root]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");

    let synapse = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/synapse-homeserver.yaml"
    );
    let (code, _, stderr) = ws.run(&["check-config", "-c", synapse]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("macaroon_secret_key"), "{stderr}");
}

#[tokio::test]
async fn a_port_in_use_exits_1() {
    let ws = Workspace::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = ws.write(
        "presenced.yaml",
        &format!(
            "server_name: test\nlisteners: [{{port: {port}, type: http, bind_addresses: ['127.0.0.1'], resources: [{{names: [client]}}]}}]\n"
        ),
    );
    let (code, _, stderr) = ws.run(&["-c", config.to_str().unwrap()]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn server_options_with_check_config_are_a_usage_error() {
    let ws = Workspace::new();
    let good = ws.write("good.yaml", &config_yaml(""));
    let (code, _, stderr) = ws
        .run(&[
            "--print-listen-addrs",
            "check-config",
            "-c",
            good.to_str().unwrap(),
        ])
        .await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--print-listen-addrs"), "{stderr}");
}

/// The `presenced: ...` line a failed command printed.
fn failure_line(stderr: &str) -> Option<&str> {
    stderr.lines().find(|l| l.starts_with("presenced: "))
}

/// Runs `check-config` and the server on the same configuration: both must fail, with the
/// same message, containing `expected`.
pub(crate) async fn check_config_and_startup_fail_alike(
    ws: &Workspace,
    config: &str,
    expected: &str,
) -> String {
    let path = ws.write("presenced.yaml", config);
    let path = path.to_str().unwrap();
    let (code, stdout, check) = ws.run(&["check-config", "-c", path]).await;
    assert_eq!(code, 1, "check-config passed:\n{config}\n{stdout}{check}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(check.contains(expected), "{expected:?} not in:\n{check}");
    let (code, _, start) = ws.run(&["-c", path]).await;
    assert_eq!(code, 1, "{start}");
    assert!(
        failure_line(&start).is_some_and(|l| l.contains(expected)),
        "{expected:?} not in:\n{start}"
    );
    assert_eq!(failure_line(&check), failure_line(&start));
    check
}

/// check-config builds the routers as startup does, so a router the server refuses fails
/// check-config too, with the same message. A mistyped built-in name lists the built-ins by
/// full name and alias (and, with the `python` feature, is not tried as a Python module).
#[tokio::test]
async fn check_config_fails_on_the_router_configs_startup_refuses() {
    let ws = Workspace::new();
    let example = |config: &str| {
        config_yaml(&format!(
            "modules:\n  - {{module: presenced.routers.ExamplePresenceRouter, config: {config}}}\n"
        ))
    };
    let cases = [
        (
            example("{always_send_to_users: '@a:test'}"),
            "modules[0].config.always_send_to_users: ",
        ),
        (
            example("{blacklisted_users: ['@ok:test', 'not-a-user']}"),
            "modules[0].config.blacklisted_users[1]: ",
        ),
        (
            example("{always_send_to: []}"),
            "modules[0].config.always_send_to: unknown field `always_send_to`",
        ),
        (
            config_yaml("presence: {presence_router: {module: exmaple}}\n"),
            "presence.presence_router.module: unknown presence router module \"exmaple\"; \
             known modules: presenced.routers.ExamplePresenceRouter (alias: example), \
             presenced.routers.SharedRooms (alias: shared_rooms), presenced.routers.LocalOnly \
             (alias: local_only), \
             presenced.routers.Organisation (alias: organisation), \
             presenced.routers.DirectRooms (alias: direct_rooms), presenced.routers.UserLists \
             (alias: user_lists), or a \
             Python class path",
        ),
        (
            config_yaml("modules: [{module: presenced.routers.NoSuchRouter}]\n"),
            "modules[0].module: unknown presence router module \
             \"presenced.routers.NoSuchRouter\"; known modules: \
             presenced.routers.ExamplePresenceRouter (alias: example), \
             presenced.routers.SharedRooms (alias: shared_rooms), presenced.routers.LocalOnly \
             (alias: local_only), \
             presenced.routers.Organisation (alias: organisation), \
             presenced.routers.DirectRooms (alias: direct_rooms), presenced.routers.UserLists \
             (alias: user_lists), or a Python class path",
        ),
    ];
    for (config, expected) in cases {
        let stderr = check_config_and_startup_fail_alike(&ws, &config, expected).await;
        // Neither name is ever imported as a Python module.
        assert!(!stderr.contains("No module named"), "{stderr}");
        assert!(!stderr.contains("dotted"), "{stderr}");
    }

    // The same router with a good config passes, saying nothing but that.
    let good = ws.write(
        "good.yaml",
        &example("{always_send_to_users: ['@a:test'], blacklisted_users: []}"),
    );
    let (code, stdout, stderr) = ws
        .run(&["check-config", "-c", good.to_str().unwrap()])
        .await;
    assert_eq!(
        (code, stdout.as_str()),
        (0, "The configuration is valid.\n"),
        "{stderr}"
    );
    assert!(stderr.is_empty(), "{stderr}");
}

/// A stock homeserver.yaml points `database` at Synapse's own SQLite file: Presenced says so
/// and exits 1 before writing anything (no migration, no WAL switch, the file unchanged).
#[tokio::test]
async fn a_synapse_sqlite_database_is_refused_and_left_unchanged() {
    let ws = Workspace::new();
    let db = ws.path().join("homeserver.db");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        // As Synapse's `synapse/storage/schema/common/schema_version.sql` creates it.
        conn.execute_batch(
            "CREATE TABLE schema_version(Lock CHAR(1) NOT NULL DEFAULT 'X' UNIQUE, \
                 version INTEGER NOT NULL, upgraded BOOL NOT NULL);
             INSERT INTO schema_version VALUES ('X', 92, 1);
             CREATE TABLE events(stream_ordering INTEGER PRIMARY KEY, event_id TEXT);",
        )
        .unwrap();
    }
    let before = std::fs::read(&db).unwrap();
    let config = ws.write(
        "homeserver.yaml",
        "server_name: test
listeners: [{port: 0, type: http, bind_addresses: ['127.0.0.1'], resources: [{names: [client]}]}]
database: {name: sqlite3, args: {database: homeserver.db}}
",
    );
    let (code, _, stderr) = ws.run(&["-c", config.to_str().unwrap()]).await;
    assert_eq!(code, 1, "{stderr}");
    let line = failure_line(&stderr).unwrap_or_default();
    assert!(
        line.contains("homeserver.db: the file is a Synapse database, not a Presenced one; it was left unchanged."),
        "{stderr}"
    );
    assert!(line.contains("database.args.database"), "{stderr}");
    assert!(line.contains("writer mode"), "{stderr}");
    assert!(!stderr.contains("migration"), "{stderr}");
    assert_eq!(std::fs::read(&db).unwrap(), before, "the file changed");
    let mut files: Vec<String> = std::fs::read_dir(ws.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(files, ["homeserver.db", "homeserver.yaml"]);
}

/// Each router call is logged at debug (router, states in, recipients out, time), here as
/// JSON lines (`--log-format json`).
#[tokio::test]
async fn router_calls_are_logged_at_debug() {
    let ws = Workspace::new();
    let config = ws.write("presenced.yaml", &crate::matrix::test_config(""));
    let server = RunningBinary::start_with(
        &ws,
        &config,
        &[
            "--log-level",
            "info,presence_router=debug",
            "--log-format",
            "json",
        ],
    )
    .await;
    let c = crate::matrix::Client::new(&server.base_url());
    let alice = c.register("alice", "password", false).await.unwrap();
    let (status, errcode) = c
        .put_presence(&alice, &alice.user_id, json!({"presence": "online"}))
        .await;
    assert_eq!((status, errcode), (StatusCode::OK, None));
    c.sync(&alice, "timeout=0&set_presence=offline").await;
    server.signal("TERM");
    let (code, stderr) = server.wait().await;
    assert_eq!(code, Some(0), "{stderr}");
    let calls: Vec<Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["fields"]["message"] == "Presence router call.")
        .collect();
    let routed = calls
        .iter()
        .find(|l| l["fields"]["method"] == "get_users_for_states")
        .unwrap_or_else(|| panic!("no get_users_for_states call logged:\n{stderr}"));
    assert_eq!(routed["level"], "DEBUG");
    let fields = &routed["fields"];
    assert_eq!(fields["router"], "presenced.routers.ExamplePresenceRouter");
    assert_eq!(fields["states"], 1, "{routed}");
    // The example router sends everyone's presence to its two `always_send_to_users`.
    assert_eq!(fields["recipients"], 2, "{routed}");
    assert!(fields["elapsed_us"].is_u64(), "{routed}");
    let interested = calls
        .iter()
        .find(|l| l["fields"]["method"] == "get_interested_users")
        .unwrap_or_else(|| panic!("no get_interested_users call logged:\n{stderr}"));
    assert_eq!(interested["fields"]["user"], alice.user_id.as_str());
    assert_eq!(interested["fields"]["interested"], "0", "{interested}");
}

/// The example configuration's shared secret is public: the server says so at startup (and
/// not for a secret of the operator's own).
#[tokio::test]
async fn the_public_example_secret_is_warned_about_at_startup() {
    let ws = Workspace::new();
    for (secret, warned) in [
        ("CHANGE-ME-example-only-not-a-secret", true),
        ("a-secret-of-my-own", false),
    ] {
        let config = ws.write(
            "presenced.yaml",
            &config_yaml(&format!("registration_shared_secret: {secret}\n")),
        );
        let server = RunningBinary::start(&ws, &config).await;
        server.signal("TERM");
        let (code, stderr) = server.wait().await;
        assert_eq!(code, Some(0), "{stderr}");
        let warning = stderr.lines().find(|l| {
            l.contains("The shared secret is the example configuration's, which is public")
        });
        assert_eq!(warning.is_some(), warned, "{secret}:\n{stderr}");
        if let Some(line) = warning {
            assert!(line.contains("WARN"), "{line}");
            assert!(line.contains("registration_shared_secret"), "{line}");
        }
    }
}

#[tokio::test]
async fn a_bad_database_exits_1_with_sqlite_reason_and_the_path() {
    // Not a database at all, and a directory where the file should be.
    // SQLite words the directory case by how it first touched the path (opening it, or
    // reading it once the read-only probe for foreign databases has opened it).
    for (setup, reasons) in [
        ("text", &["file is not a database"][..]),
        (
            "directory",
            &["unable to open database file", "disk I/O error"][..],
        ),
    ] {
        let ws = Workspace::new();
        let db = ws.path().join("presenced.db");
        match setup {
            "text" => std::fs::write(&db, "not sqlite\n".repeat(1000)).unwrap(),
            _ => std::fs::create_dir(&db).unwrap(),
        }
        let config = ws.write("presenced.yaml", &config_yaml(""));
        let (code, _, stderr) = ws.run(&["-c", config.to_str().unwrap()]).await;
        assert_eq!(code, 1, "{stderr}");
        assert!(
            reasons.iter().any(|r| stderr.contains(r)),
            "{setup}: {stderr}"
        );
        assert!(stderr.contains("presenced.db"), "{setup}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
