//! Modules written against Twisted run on its asyncio reactor. Skipped, with a message, when
//! Twisted cannot be imported: install it in the interpreter's environment, or point
//! `PRESENCE_PYTHON_TEST_VENV` at a virtualenv that has it.

use std::time::Duration;

use presence_python::{PythonError, PythonHost, TwistedMode};
use presence_router::{InterestedUsers, PresenceRouter};
use serde_json::json;

use crate::support::{api, batch, options, positions, uid};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_awaiting_deferreds_work_on_twisteds_reactor() {
    let mut opts = options();
    opts.twisted = TwistedMode::Required;
    opts.venv = std::env::var_os("PRESENCE_PYTHON_TEST_VENV").map(Into::into);
    crate::support::capture_logs();
    let host = match PythonHost::start(opts) {
        Ok(host) => host,
        Err(PythonError::Twisted(reason)) => {
            eprintln!(
                "SKIPPED modules_awaiting_deferreds_work_on_twisteds_reactor: Twisted is not \
                 available ({reason}); `pip install twisted`, or set PRESENCE_PYTHON_TEST_VENV \
                 to a virtualenv that has it"
            );
            return;
        }
        Err(e) => panic!("{e}"),
    };
    assert!(host.twisted());

    let router = host
        .load_legacy(
            "presence.presence_router",
            "twisted_router.TwistedRouter",
            &json!({"everyone": ["@all:test"]}),
            &api(),
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        router
            .get_interested_users(&uid("@all:test"))
            .await
            .unwrap(),
        InterestedUsers::All
    );
    assert_eq!(
        router.get_interested_users(&uid("@x:test")).await.unwrap(),
        InterestedUsers::Users([uid("@seen3:test")].into())
    );
    let answer = router
        .get_users_for_states(&batch(&["@p:test", "@q:test"]))
        .await
        .unwrap();
    assert_eq!(
        positions(&answer),
        [("@all:test".to_owned(), vec![0, 1])].into()
    );

    // The module API's own awaitables are Deferreds here; the checks await them.
    let checks = host
        .load_legacy(
            "presence.presence_router",
            "shim_checks.ShimChecks",
            &json!({}),
            &api(),
        )
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        checks.get_interested_users(&uid("@async:test")).await,
        Ok(InterestedUsers::Users([uid("@passed:test")].into()))
    );

    // The example router runs unchanged too.
    let example = host
        .load_legacy(
            "presence.presence_router",
            "example_router.ExamplePresenceRouter",
            &json!({"always_send_to_users": ["@g:test"]}),
            &api(),
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        example.get_interested_users(&uid("@g:test")).await.unwrap(),
        InterestedUsers::All
    );
    assert!(host.shutdown(Duration::from_secs(5)));
}
