//! The server started in-process with `Server::start`, spoken to over real sockets.

use std::{net::SocketAddr, time::Duration};

use presenced::{Config, Server, StartError};
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::config_yaml;

fn config(extra: &str) -> Config {
    Config::from_yaml(&config_yaml(extra)).unwrap().config
}

#[tokio::test]
async fn start_serve_and_stop() {
    let server = Server::start(config("")).await.unwrap();
    let addrs = server.local_addrs().to_vec();
    assert_eq!(addrs.len(), 1);
    assert!(addrs[0].ip().is_loopback());
    assert_ne!(addrs[0].port(), 0, "port 0 became a real port");

    let client = reqwest::Client::new();
    let body: Value = client
        .get(format!("http://{}/_matrix/client/versions", addrs[0]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["unstable_features"]["org.matrix.msc3026.busy_presence"],
        false
    );

    // The client keeps its connection alive; shutdown must not wait for it.
    let started = std::time::Instant::now();
    server.stop(Duration::from_secs(10)).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "idle connections delayed shutdown"
    );

    let after = reqwest::Client::new()
        .get(format!("http://{}/health", addrs[0]))
        .send()
        .await;
    assert!(after.is_err(), "the listener is closed after shutdown");
}

#[tokio::test]
async fn every_listener_and_address_is_bound() {
    let yaml = "
server_name: test
listeners:
  - port: 0
    type: http
    bind_addresses: ['127.0.0.1']
    resources: [{names: [client]}]
  - port: 0
    type: metrics
    bind_addresses: ['127.0.0.1']
";
    let config = Config::from_yaml(yaml).unwrap().config;
    let server = Server::start(config).await.unwrap();
    let addrs: Vec<SocketAddr> = server.local_addrs().to_vec();
    assert_eq!(addrs.len(), 2);
    let client = reqwest::Client::new();
    let versions = |addr: SocketAddr| {
        client
            .get(format!("http://{addr}/_matrix/client/versions"))
            .send()
    };
    assert_eq!(versions(addrs[0]).await.unwrap().status(), StatusCode::OK);
    // The metrics listener does not serve the client API.
    assert_eq!(
        versions(addrs[1]).await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    server.stop(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn the_default_bind_addresses_work_with_an_ephemeral_port() {
    let yaml =
        "server_name: test\nlisteners: [{port: 0, type: http, resources: [{names: [client]}]}]\n";
    let server = Server::start(Config::from_yaml(yaml).unwrap().config)
        .await
        .unwrap();
    assert!(!server.local_addrs().is_empty());
    assert!(server.local_addrs().iter().all(|a| a.ip().is_unspecified()));
    server.stop(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn a_taken_port_fails_startup_with_the_address() {
    let first = Server::start(config("")).await.unwrap();
    let port = first.local_addrs()[0].port();
    let yaml = format!(
        "server_name: test\nlisteners: [{{port: {port}, type: http, bind_addresses: ['127.0.0.1'], resources: [{{names: [client]}}]}}]\n"
    );
    let err = Server::start(Config::from_yaml(&yaml).unwrap().config)
        .await
        .err()
        .unwrap();
    match err {
        StartError::Bind { addr, .. } => assert_eq!(addr.port(), port),
        other => panic!("unexpected error: {other}"),
    }
    first.stop(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn the_shutdown_token_stops_the_server() {
    let server = Server::start(config("")).await.unwrap();
    let token = server.shutdown_token();
    let waiting = tokio::spawn(server.wait());
    token.cancel();
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// Regression: `stop(grace)` used to wrap the whole teardown in the grace timeout, so a
/// request still open when the grace period ran out skipped the flushes and left the store
/// open. The grace period bounds the draining only; the cleanup after it always runs.
#[tokio::test]
async fn cleanup_runs_even_when_the_grace_period_runs_out() {
    use presence_store::PresenceStore as _;
    use tokio::io::AsyncWriteExt as _;

    let server = Server::start(config("")).await.unwrap();
    let addr = server.local_addrs()[0];
    // A request whose body never comes keeps its connection busy: draining cannot finish.
    let mut stuck = tokio::net::TcpStream::connect(addr).await.unwrap();
    stuck
        .write_all(
            b"POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\n\
              Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let app = server.state().clone();
    assert!(
        app.store()
            .unwrap()
            .user_exists(&presence_router::UserId::parse("@a:test").unwrap())
            .await
            .is_ok()
    );
    let started = std::time::Instant::now();
    server.stop(Duration::from_millis(300)).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "stop waited for the stuck request: {:?}",
        started.elapsed()
    );
    let after = app.store().unwrap().set_meta("after-stop", "x").await;
    assert!(
        matches!(after, Err(presence_store::StoreError::Closed)),
        "the store was closed after the grace period: {after:?}"
    );
    drop(stuck);
}
