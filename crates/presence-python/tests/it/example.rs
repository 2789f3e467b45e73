//! The seed's example router as a Python module, in both configuration forms: it passes the
//! router conformance suite and answers exactly like the built-in Rust example router.

use presence_python::PythonRouter;
use presence_router::{
    ModuleApi, PresenceRouter, RouterModule, RouterRegistry, RouterSet, UserId, UserPresenceState,
};
use presence_routers::{ExamplePresenceRouter, conformance, register_builtin, router_conformance};
use serde_json::{Value, json};

use crate::support::{api, load_legacy, load_module, positions, shared_host, uid};

const GOBBLER: &str = "@gobbler:test";
const REMOTE_GOBBLER: &str = "@gobbler:elsewhere.org";
const BLOCKED: &str = "@blocked:test";

const LEGACY: &str = "example_router.ExamplePresenceRouter";
const MODULES: &str = "example_router_modules.ExamplePresenceRouterModule";

fn config() -> Value {
    json!({
        "always_send_to_users": [GOBBLER, REMOTE_GOBBLER],
        // A recipient may be blacklisted too: it still receives everybody else.
        "blacklisted_users": [BLOCKED, REMOTE_GOBBLER],
    })
}

fn legacy() -> PythonRouter {
    load_legacy(LEGACY, config())
}

fn modules() -> PythonRouter {
    load_module(MODULES, config())
}

/// The example router's documented hold-back.
fn blacklisted(_recipient: &UserId, state: &UserPresenceState) -> bool {
    [BLOCKED, REMOTE_GOBBLER].contains(&state.user_id.as_str())
}

router_conformance! {
    mod legacy_form;
    router: legacy(),
    probe_users: [GOBBLER, REMOTE_GOBBLER, BLOCKED],
    hold_back: blacklisted,
}

router_conformance! {
    mod modules_form;
    router: modules(),
    probe_users: [GOBBLER, REMOTE_GOBBLER, BLOCKED],
    hold_back: blacklisted,
}

router_conformance! {
    mod unconfigured;
    router: load_legacy(LEGACY, Value::Null),
}

fn rust_router(config: &Value) -> ExamplePresenceRouter {
    let parsed = ExamplePresenceRouter::parse_config(config).unwrap();
    ExamplePresenceRouter::new(parsed, api())
}

async fn assert_same_answers(python: &dyn PresenceRouter, config: &Value) {
    let rust = rust_router(config);
    let probes = conformance::probe_users(&[GOBBLER, REMOTE_GOBBLER, BLOCKED]);
    for batch in conformance::probe_batches(&probes) {
        let py = python.get_users_for_states(&batch).await.unwrap();
        let rs = rust.get_users_for_states(&batch).await.unwrap();
        assert_eq!(positions(&py), positions(&rs), "batch of {}", batch.len());
        for set in py.values() {
            assert!(set.batch().same_batch(&batch));
        }
    }
    for user in &probes {
        assert_eq!(
            python.get_interested_users(user).await,
            rust.get_interested_users(user).await,
            "{user}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_forms_answer_like_the_built_in_example_router() {
    assert_same_answers(&legacy(), &config()).await;
    assert_same_answers(&modules(), &config()).await;
    let only_blacklist = json!({"blacklisted_users": [BLOCKED]});
    assert_same_answers(
        &load_legacy(LEGACY, only_blacklist.clone()),
        &only_blacklist,
    )
    .await;
}

#[tokio::test]
async fn an_all_blacklisted_batch_routes_nothing() {
    // The Python example answers an empty set per recipient; that is "nothing" too.
    let batch = crate::support::batch(&[BLOCKED, REMOTE_GOBBLER]);
    let answer = legacy().get_users_for_states(&batch).await.unwrap();
    assert!(answer.is_empty(), "{answer:?}");
}

#[test]
fn bad_config_stops_loading_with_the_modules_message() {
    let err = shared_host()
        .load_legacy(
            "presence.presence_router",
            LEGACY,
            &json!({"always_send_to_users": "@a:test"}),
            &api(),
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("presence.presence_router.config: failed to parse config for module"),
        "{err}"
    );
    assert!(err.contains("ValueError: always_send_to_users must be a list of user ID strings"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_falls_back_to_python_and_merges_with_rust_routers() {
    let host = shared_host();
    let mut registry = RouterRegistry::new();
    register_builtin(&mut registry);
    host.install(&mut registry, presence_python::ModuleForm::Legacy);
    let api = api();

    // A built-in name stays the Rust router; a dotted path that is not registered is Python.
    let python = registry
        .build("presence.presence_router", LEGACY, &config(), &api)
        .unwrap();
    let rust = registry
        .build(
            "modules[0]",
            "example",
            &json!({"always_send_to_users": ["@other:test"]}),
            &api,
        )
        .unwrap();
    let mut set = RouterSet::new(presence_router::DEFAULT_CALL_TIMEOUT);
    set.push("example", rust);
    set.push(LEGACY, python);
    let batch = crate::support::batch(&["@a:test", BLOCKED]);
    let merged = set.get_users_for_states(&batch).await;
    assert_eq!(
        merged[&uid("@other:test")].indices().collect::<Vec<_>>(),
        [0, 1]
    );
    assert_eq!(merged[&uid(GOBBLER)].indices().collect::<Vec<_>>(), [0]);
    assert_eq!(
        set.get_interested_users(&uid(GOBBLER)).await,
        presence_router::InterestedUsers::All
    );
    for (_, stats) in set.stats() {
        assert_eq!(stats.failures.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    // A name that is neither: the error lists the built-ins and the Python fallback.
    let err = registry
        .build("modules[1]", "exmaple", &Value::Null, &api)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("unknown presence router module \"exmaple\""),
        "{err}"
    );
    assert!(err.contains("a Python class path"), "{err}");

    // A Python path that cannot be imported is a configuration error.
    let err = registry
        .build("modules[1]", "no_such_module.Router", &Value::Null, &api)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("cannot import Python module 'no_such_module'"),
        "{err}"
    );
}

#[tokio::test]
async fn a_modules_entry_without_a_router_routes_nothing_through_the_registry() {
    let mut registry = RouterRegistry::new();
    shared_host().install(&mut registry, presence_python::ModuleForm::Modules);
    let api: ModuleApi = api();
    let router = registry
        .build("modules[0]", "misbehaving.NotARouter", &Value::Null, &api)
        .unwrap();
    let batch = crate::support::batch(&["@a:test"]);
    assert!(
        router
            .get_users_for_states(&batch)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        router.get_interested_users(&uid("@a:test")).await.unwrap(),
        presence_router::InterestedUsers::none()
    );
}
