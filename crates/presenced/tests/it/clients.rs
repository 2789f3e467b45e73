//! Real Matrix clients against the real server. The Python interpreter with matrix-nio comes
//! from `PRESENCED_TEST_PYTHON` (`.ci/run` creates that virtualenv); without it the test is
//! skipped locally and fails under CI.

use std::{path::PathBuf, time::Duration};

use crate::{
    matrix::{SHARED_SECRET, TestServer, test_config},
    support::Workspace,
};

fn python() -> Option<PathBuf> {
    match std::env::var_os("PRESENCED_TEST_PYTHON") {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var_os("CI").is_some() => {
            panic!("CI must set PRESENCED_TEST_PYTHON to a Python with matrix-nio (see .ci/run)")
        }
        None => {
            eprintln!("skipped: set PRESENCED_TEST_PYTHON to a Python with matrix-nio installed");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_nio_sees_room_mate_and_routed_presence() {
    let Some(python) = python() else { return };
    let server = TestServer::start(Workspace::new(), &test_config("")).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/nio_presence.py");
    let run = tokio::process::Command::new(python)
        .arg(script)
        .args(["--base-url", &server.base, "--shared-secret", SHARED_SECRET])
        .args(["--server-name", "test", "--watcher", "oracle_gobbler"])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("nio timed out")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("both saw alice online"),
        "nio failed:\nstdout:\n{stdout}\nstderr:\n{stderr}\nserver log:\n{}",
        server.log_text()
    );
}
