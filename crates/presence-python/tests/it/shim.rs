//! The `synapse` compatibility package: the checks in `tests/python/shim_checks.py` run inside
//! the embedded interpreter (record semantics, constants, the `ModuleApi` members).

use std::sync::atomic::Ordering;

use presence_router::{InterestedUsers, PresenceRouter};
use serde_json::json;

use crate::support::{api, logged, shared_host, uid};

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
