//! The `synapse` compatibility package: the checks in `tests/python/shim_checks.py` run inside
//! the embedded interpreter (record semantics, constants, the `ModuleApi` members).

use std::sync::atomic::Ordering;

use presence_python::{PythonHost, PythonRouter};
use presence_router::{InterestedUsers, PresenceRouter};
use serde_json::json;

use crate::support::{api, load_legacy, logged, shared_host, uid};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compatibility_package_behaves_like_the_reference() {
    let host = shared_host();
    let failures_before = host.stats().background_failures.load(Ordering::Relaxed);
    // Loading runs the checks that need no event loop; a failed check fails the load.
    let router = host
        .load_legacy(
            "presence.presence_router",
            "shim_checks.ShimChecks",
            &json!({}),
            &api(),
        )
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap();
    // Give the looping and delayed calls time to run before the asynchronous checks.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(
        router.get_interested_users(&uid("@async:test")).await,
        Ok(InterestedUsers::Users([uid("@passed:test")].into()))
    );
    assert!(host.stats().background_failures.load(Ordering::Relaxed) > failures_before);
    assert!(
        logged(&[
            "Background process 'failing' threw an exception",
            "background failure"
        ])
        .await
    );
}

#[test]
fn the_host_reports_its_interpreter() {
    let host = shared_host();
    assert!(
        host.python_version().starts_with("3."),
        "{}",
        host.python_version()
    );
    assert!(!host.twisted());
}

/// A leaking module shows on the interpreter's allocated-block count, which operators see
/// on `/metrics` (`presenced_python_allocated_blocks`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaking_router_shows_in_the_allocated_block_count() {
    let host = shared_host();
    let router = load_legacy("leaky_router.LeakyRouter", json!({}));
    let before = blocks_reaching(host, &router, 1).await;
    router
        .get_interested_users(&uid("@leak:test"))
        .await
        .unwrap();
    blocks_reaching(host, &router, before + 150_000).await;
}

/// The allocated-block count once a reading reaches `min`. The count is read at most once a
/// second, when the loop has served calls, so this keeps calling for a few seconds.
async fn blocks_reaching(host: &PythonHost, router: &PythonRouter, min: u64) -> u64 {
    let blocks = || host.stats().allocated_blocks.load(Ordering::Relaxed);
    for _ in 0..5 {
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        router
            .get_interested_users(&uid("@quiet:test"))
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        if blocks() >= min {
            return blocks();
        }
    }
    panic!("the count stayed at {}, below {min}", blocks());
}
