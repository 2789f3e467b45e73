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

#[tokio::test]
async fn a_bad_database_exits_1_with_sqlite_reason_and_the_path() {
    // Not a database at all, and a directory where the file should be.
    for (setup, reason) in [
        ("text", "file is not a database"),
        ("directory", "unable to open database file"),
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
        assert!(stderr.contains(reason), "{setup}: {stderr}");
        assert!(stderr.contains("presenced.db"), "{setup}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
