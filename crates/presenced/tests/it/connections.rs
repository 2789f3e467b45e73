//! Connection limits over raw sockets: header-read and idle timeouts, the connection cap, and
//! a server at its open-file limit.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    process::Command,
};

use crate::{
    matrix::{Client, TestServer, test_config},
    support::Workspace,
};

const VERSIONS: &[u8] = b"GET /_matrix/client/versions HTTP/1.1\r\nHost: test\r\n\r\n";

fn addr_of(server: &TestServer) -> String {
    server.base.trim_start_matches("http://").to_owned()
}

/// Reads until the peer closes; returns how long after `started` that was (`None`: still
/// open `limit` after it).
async fn closed_within(
    socket: &mut TcpStream,
    started: Instant,
    limit: Duration,
) -> Option<Duration> {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + limit).into(), socket.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// Sends one request and reads its complete response (the tests' responses carry a
/// Content-Length); returns the status line.
async fn round_trip(socket: &mut TcpStream, request: &[u8]) -> String {
    socket.write_all(request).await.unwrap();
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), socket.read(&mut buf))
            .await
            .expect("no response in time")
            .unwrap();
        assert!(
            n > 0,
            "the connection closed before the response was complete"
        );
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length: usize = text[..head_end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().unwrap())
                })
                .expect("a Content-Length");
            if data.len() >= head_end + 4 + length {
                return text.lines().next().unwrap().to_owned();
            }
        }
    }
}

#[tokio::test]
async fn a_connection_that_never_completes_its_request_head_is_closed() {
    let server = TestServer::start(
        Workspace::new(),
        &test_config("connections: {header_read_timeout: 1s, idle_timeout: 30s}"),
    )
    .await;
    let addr = addr_of(&server);

    // Half a request head, then nothing (slowloris).
    let connected = Instant::now();
    let mut half = TcpStream::connect(&addr).await.unwrap();
    half.write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: te")
        .await
        .unwrap();
    // Connected, never a byte.
    let mut silent = TcpStream::connect(&addr).await.unwrap();

    for (what, socket) in [("half a head", &mut half), ("nothing", &mut silent)] {
        let closed = closed_within(socket, connected, Duration::from_secs(10)).await;
        let closed = closed.unwrap_or_else(|| panic!("a connection that sent {what} stayed open"));
        assert!(
            closed >= Duration::from_millis(700),
            "closed too early ({closed:?}) for a 1 s header timeout"
        );
    }

    // A head that starts later on a kept-alive connection gets its own full second.
    let mut kept = TcpStream::connect(&addr).await.unwrap();
    assert!(round_trip(&mut kept, VERSIONS).await.contains(" 200 "));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        round_trip(&mut kept, VERSIONS).await.contains(" 200 "),
        "a connection idle past the header timeout (but not the idle timeout) was closed"
    );
}

#[tokio::test]
async fn an_idle_connection_is_closed_but_a_long_poll_is_not_idle() {
    let server = TestServer::start(
        Workspace::new(),
        &test_config("connections: {header_read_timeout: 1s, idle_timeout: 2s}"),
    )
    .await;
    let addr = addr_of(&server);
    let client = Client::new(&server.base);
    let alice = client.register("alice", "pw-alice", false).await.unwrap();
    let first = client.sync(&alice, "timeout=0").await;
    let since = first["next_batch"].as_str().unwrap().to_owned();

    // A long-poll that outlasts both timeouts, answered on the same connection.
    let mut socket = TcpStream::connect(&addr).await.unwrap();
    let long_poll = format!(
        "GET /_matrix/client/v3/sync?timeout=3500&since={since} HTTP/1.1\r\nHost: test\r\n\
         Authorization: Bearer {}\r\n\r\n",
        alice.token
    );
    let started = Instant::now();
    let status = round_trip(&mut socket, long_poll.as_bytes()).await;
    assert!(status.contains(" 200 "), "{status}");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "the long-poll returned early ({:?})",
        started.elapsed()
    );

    // Then nothing: closed after about the idle timeout.
    let closed = closed_within(&mut socket, Instant::now(), Duration::from_secs(10))
        .await
        .expect("an idle connection stayed open");
    assert!(
        closed >= Duration::from_millis(1700),
        "closed after {closed:?}, before the 2 s idle timeout"
    );
}

#[tokio::test]
async fn at_the_connection_cap_new_connections_wait_until_one_closes() {
    let server = TestServer::start(
        Workspace::new(),
        &test_config("connections: {max_connections: 3}"),
    )
    .await;
    let addr = addr_of(&server);
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut socket = TcpStream::connect(&addr).await.unwrap();
        assert!(round_trip(&mut socket, VERSIONS).await.contains(" 200 "));
        open.push(socket);
    }

    // A fourth connection is not served while three are open...
    let client = reqwest::Client::new();
    let url = format!("{}/_matrix/client/versions", server.base);
    let waiting = tokio::spawn({
        let (client, url) = (client.clone(), url.clone());
        async move {
            let started = Instant::now();
            let response = client.get(url).send().await.unwrap();
            (response.status(), started.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        !waiting.is_finished(),
        "a connection over the cap was served"
    );
    // ...while the open ones still are.
    assert!(round_trip(&mut open[1], VERSIONS).await.contains(" 200 "));

    // Closing one lets the waiting connection in.
    drop(open.remove(0));
    let (status, waited) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiting connection was not served after one closed")
        .unwrap();
    assert_eq!(status, reqwest::StatusCode::OK);
    assert!(waited >= Duration::from_millis(800));
}

#[tokio::test]
async fn at_its_open_file_limit_the_server_keeps_serving_and_recovers() {
    let workspace = Workspace::new();
    let config = workspace.write("presenced.yaml", &test_config(""));
    // 256 descriptors, soft and hard: the default cap leaves room for everything else.
    let script = format!(
        "ulimit -n 256 && exec '{}' -c '{}' --print-listen-addrs",
        env!("CARGO_BIN_EXE_presenced"),
        config.display()
    );
    let log_path = workspace.path().join("presenced.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .current_dir(workspace.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\n") {
        let n = tokio::time::timeout(Duration::from_secs(30), stdout.read(&mut byte))
            .await
            .expect("no address in time")
            .unwrap();
        assert!(
            n > 0,
            "exited: {}",
            std::fs::read_to_string(&log_path).unwrap()
        );
        line.push(byte[0]);
    }
    let addr = String::from_utf8(line)
        .unwrap()
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();

    // More connections than descriptors: the excess waits in the kernel's backlog.
    let mut first = TcpStream::connect(&addr).await.unwrap();
    assert!(round_trip(&mut first, VERSIONS).await.contains(" 200 "));
    let mut flood = Vec::new();
    for _ in 0..400 {
        flood.push(TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        round_trip(&mut first, VERSIONS).await.contains(" 200 "),
        "an open connection stopped being served at the limit"
    );

    // Once the flood goes away, new connections are served at once.
    drop(flood);
    let started = Instant::now();
    let status = reqwest::Client::new()
        .get(format!("http://{addr}/_matrix/client/versions"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("no recovery after the flood closed")
        .status();
    assert_eq!(status, reqwest::StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(5));

    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        text.contains("At the connection limit"),
        "the cap was never reached: {text}"
    );
    assert!(
        !text.contains("Too many open files"),
        "the server ran out of descriptors instead of waiting: {text}"
    );
}
