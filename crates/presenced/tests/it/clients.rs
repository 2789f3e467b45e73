//! Real Matrix clients against the real server. The Python interpreter with matrix-nio comes
//! from `PRESENCED_TEST_PYTHON` (`.ci/run` creates that virtualenv); without it the test is
//! skipped locally and fails under CI. matrix-js-sdk comes from `PRESENCED_TEST_JS_SDK` (a
//! directory where `tests/js-sdk/package.json` was installed with `npm ci`; by default
//! `~/.cache/presenced-js-sdk`, where `.ci/run` installs it) and runs on `node` (or
//! `PRESENCED_TEST_NODE`); without either that test is skipped with a message.

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

/// Node and the directory holding `node_modules/matrix-js-sdk`, or why the test is skipped.
fn node_and_js_sdk() -> Result<(PathBuf, PathBuf), String> {
    let sdk = match std::env::var_os("PRESENCED_TEST_JS_SDK") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::var_os("HOME")
            .map(|home| PathBuf::from(home).join(".cache/presenced-js-sdk"))
            .ok_or("set PRESENCED_TEST_JS_SDK")?,
    };
    if !sdk
        .join("node_modules/matrix-js-sdk/package.json")
        .is_file()
    {
        return Err(format!(
            "no matrix-js-sdk in {} (run npm ci there with tests/js-sdk/package*.json, or set \
             PRESENCED_TEST_JS_SDK)",
            sdk.display()
        ));
    }
    let node = std::env::var_os("PRESENCED_TEST_NODE").map_or_else(|| "node".into(), PathBuf::from);
    match std::process::Command::new(&node).arg("--version").output() {
        Ok(out) if out.status.success() => Ok((node, sdk)),
        _ => Err(format!(
            "{} does not run (set PRESENCED_TEST_NODE)",
            node.display()
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_js_sdk_starts_and_sees_room_mate_presence() {
    let (node, sdk) = match node_and_js_sdk() {
        Ok(found) => found,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let server = TestServer::start(Workspace::new(), &test_config("")).await;
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/js_sdk_presence.mjs");
    let run = tokio::process::Command::new(node)
        .arg(script)
        .arg("--sdk")
        .arg(sdk)
        .args(["--base-url", &server.base, "--shared-secret", SHARED_SECRET])
        .args(["--server-name", "test"])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("matrix-js-sdk timed out")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success()
            && stdout.contains("first sync done")
            && stdout.contains("bob saw alice online"),
        "matrix-js-sdk failed:\nstdout:\n{stdout}\nstderr:\n{stderr}\nserver log:\n{}",
        server.log_text()
    );
}
