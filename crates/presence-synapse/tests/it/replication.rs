//! The Redis transport against a real `redis-server`.

use std::time::Duration;

use presence_router::ServerName;
use presence_synapse::{Command, Error, Event, Publisher, RedisSettings, Subscriber};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::support::{OwnRedis, redis_settings};

const WAIT: Duration = Duration::from_secs(15);

fn unique_server_name(tag: &str) -> ServerName {
    ServerName::parse(&format!("{tag}-{}.test.local", std::process::id())).unwrap()
}

async fn next(rx: &mut mpsc::Receiver<Event>) -> Event {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("no replication event within 15 s")
        .expect("subscriber stopped")
}

/// Skips `Disconnected` events (there may be several while the server is down).
async fn next_significant(rx: &mut mpsc::Receiver<Event>) -> Event {
    loop {
        match next(rx).await {
            Event::Disconnected { .. } => continue,
            e => return e,
        }
    }
}

fn start(
    settings: &RedisSettings,
    server_name: &ServerName,
    shutdown: &CancellationToken,
) -> (Publisher, mpsc::Receiver<Event>) {
    let (sub, rx) = Subscriber::new(settings, server_name, 64).unwrap();
    let (publisher, task) = Publisher::new(settings, server_name, 64).unwrap();
    tokio::spawn(sub.run(shutdown.child_token()));
    tokio::spawn(task.run(shutdown.child_token()));
    (publisher, rx)
}

#[tokio::test]
async fn publish_then_subscribe_round_trip() {
    let settings = redis_settings();
    let server_name = unique_server_name("roundtrip");
    let shutdown = CancellationToken::new();
    let (publisher, mut rx) = start(&settings, &server_name, &shutdown);
    assert_eq!(next(&mut rx).await, Event::Connected);

    let lines = [
        r#"RDATA presence presenced 2 ["@bob:test.local","online",1796302663779,1796302663781,1796302663779,null,true]"#,
        "POSITION presence presenced 1 2",
        "POSITION presence_federation presenced 0 0",
        "REPLICATE ",
        "USER_SYNC UNVgb @bob:test.local DEV_bob start 1796302663800",
        "USER_SYNC UNVgb @bob:test.local None end 1796302665926",
        "CLEAR_USER_SYNC UNVgb",
        "FEDERATION_ACK federation_sender1 12",
    ];
    for line in lines {
        publisher
            .publish(&Command::parse(line).unwrap())
            .await
            .unwrap();
    }
    // Garbage published by someone else is dropped; what follows still arrives.
    let client = redis::Client::open(format!(
        "redis://{}",
        std::env::var("PRESENCE_SYNAPSE_TEST_REDIS")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| match &settings.addr {
                presence_synapse::RedisAddr::Tcp { host, port } => format!("{host}:{port}"),
                other => panic!("unexpected address {other:?}"),
            })
    ))
    .unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for junk in ["", "POSITION presence x", "USER_SYNC a b c d e"] {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(server_name.as_str())
            .arg(junk)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let _: i64 = redis::cmd("PUBLISH")
        .arg(server_name.as_str())
        .arg(&b"\xff\xfe not utf-8"[..])
        .query_async(&mut conn)
        .await
        .unwrap();
    // A different channel (another homeserver) is not seen.
    let _: i64 = redis::cmd("PUBLISH")
        .arg("someone-else.example")
        .arg("REPLICATE ")
        .query_async(&mut conn)
        .await
        .unwrap();
    publisher.publish(&Command::Replicate).await.unwrap();

    for line in lines.iter().chain(&["REPLICATE "]) {
        match next(&mut rx).await {
            Event::Command(cmd) => assert_eq!(cmd.to_line(), *line),
            other => panic!("expected {line}, got {other:?}"),
        }
    }
    // Own echoes are recognisable.
    let echo = Command::parse(lines[1]).unwrap();
    assert!(echo.is_echo_of("presenced"));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err()
    );

    shutdown.cancel();
    // After shutdown the subscriber's channel closes and publishing fails.
    assert!(
        tokio::time::timeout(WAIT, async { while rx.recv().await.is_some() {} })
            .await
            .is_ok()
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(matches!(
        publisher.publish(&Command::Replicate).await,
        Err(Error::Closed)
    ));
}

#[tokio::test]
async fn reconnects_after_redis_restarts() {
    let mut redis = OwnRedis::start();
    let settings = redis.settings();
    let server_name = unique_server_name("reconnect");
    let shutdown = CancellationToken::new();
    let (publisher, mut rx) = start(&settings, &server_name, &shutdown);
    assert_eq!(next(&mut rx).await, Event::Connected);
    publisher
        .publish(&Command::position("presence", "presenced", 1, 1))
        .await
        .unwrap();
    assert_eq!(
        next(&mut rx).await,
        Event::Command(Command::position("presence", "presenced", 1, 1))
    );

    redis.kill();
    match next(&mut rx).await {
        Event::Disconnected { reason } => assert!(!reason.is_empty()),
        other => panic!("expected Disconnected, got {other:?}"),
    }
    // Down for a while: several failed attempts, backing off.
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.restart();
    assert_eq!(next_significant(&mut rx).await, Event::Connected);

    // Both connections work again: the publisher reconnects on its next PUBLISH.
    for i in 2..5 {
        publisher
            .publish(&Command::position("presence", "presenced", i - 1, i))
            .await
            .unwrap();
    }
    for i in 2..5 {
        assert_eq!(
            next_significant(&mut rx).await,
            Event::Command(Command::position("presence", "presenced", i - 1, i))
        );
    }

    // A second outage is survived as well.
    redis.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart();
    assert_eq!(next_significant(&mut rx).await, Event::Connected);
    publisher.publish(&Command::Replicate).await.unwrap();
    assert_eq!(
        next_significant(&mut rx).await,
        Event::Command(Command::Replicate)
    );
    shutdown.cancel();
}

#[tokio::test]
async fn an_unreadable_tls_ca_file_is_named() {
    let settings = RedisSettings::from_config(
        &serde_json::json!({"use_tls": true, "ca_file": "/nonexistent/ca.pem"}),
    )
    .unwrap();
    let server_name = ServerName::parse("test.local").unwrap();
    assert!(matches!(
        Subscriber::new(&settings, &server_name, 4),
        Err(Error::Config { ref key, .. }) if key == "redis.ca_file"
    ));
}
