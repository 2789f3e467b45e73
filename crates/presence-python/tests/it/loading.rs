//! Loading modules: both registration forms, the pairing rule, configuration errors with
//! their key paths, import errors, and the Python environment.

use std::{fs, time::Duration};

use presence_python::{PythonError, PythonHost};
use presence_router::{InterestedUsers, PresenceRouter};
use serde_json::{Value, json};

use crate::support::{api, batch, logged, options, positions, shared_host, start, uid};

fn modules_error(module: &str, config: Value) -> String {
    shared_host()
        .load_module("modules[2]", module, &config, &api())
        .unwrap_err()
        .to_string()
}

#[test]
fn registering_one_callback_without_the_other_stops_startup() {
    let err = modules_error("misbehaving.RegistersOne", Value::Null);
    assert!(err.starts_with("modules[2]: cannot construct 'misbehaving.RegistersOne': RuntimeError: PresenceRouter modules must register neither or both"), "{err}");
    let err = shared_host()
        .load_legacy(
            "presence.presence_router",
            "misbehaving.OnlyUsersForStates",
            &Value::Null,
            &api(),
        )
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("presence.presence_router: "), "{err}");
    assert!(err.contains("neither or both"), "{err}");
}

#[test]
fn a_module_that_is_not_a_router_loads_without_one() {
    let loaded = shared_host()
        .load_module("modules[0]", "misbehaving.NotARouter", &Value::Null, &api())
        .unwrap();
    assert!(loaded.is_none());
}

#[tokio::test]
async fn a_module_registering_two_routers_merges_them() {
    let router = shared_host()
        .load_module(
            "modules[0]",
            "misbehaving.RegistersTwice",
            &json!({}),
            &api(),
        )
        .unwrap()
        .unwrap();
    let answer = router
        .get_users_for_states(&batch(&["@p:test", "@q:test"]))
        .await
        .unwrap();
    assert_eq!(
        positions(&answer),
        [
            ("@a:test".to_owned(), vec![0, 1]),
            ("@b:test".to_owned(), vec![0])
        ]
        .into()
    );
    assert_eq!(
        router.get_interested_users(&uid("@p:test")).await.unwrap(),
        InterestedUsers::Users([uid("@x:test"), uid("@y:test")].into())
    );
}

#[test]
fn config_errors_name_the_key_path() {
    let err = modules_error("misbehaving.BadConfig", json!({"users": ["@a:test", "b"]}));
    assert_eq!(err, "modules[2].config.users[1]: 'b' is not a user ID");
    let err = modules_error("misbehaving.ParseFails", json!({}));
    assert_eq!(
        err,
        "modules[2].config: failed to parse config for module 'misbehaving.ParseFails': \
         ValueError: always_send_to_users must be a list"
    );
}

#[tokio::test]
async fn import_errors_point_at_the_module_key() {
    let err = modules_error("no_such_package.Router", Value::Null);
    assert!(
        err.starts_with(
            "modules[2].module: cannot import Python module 'no_such_package': ModuleNotFoundError"
        ),
        "{err}"
    );
    // The log has the underlying traceback.
    assert!(
        logged(&[
            "Loading a Python module failed",
            "No module named 'no_such_package'"
        ])
        .await
    );
    let err = modules_error("misbehaving.Missing", Value::Null);
    assert_eq!(
        err,
        "modules[2].module: Python module 'misbehaving' has no attribute 'Missing'"
    );
    let err = modules_error("plainname", Value::Null);
    assert!(err.contains("is not a dotted Python path"), "{err}");
}

#[test]
fn modules_reaching_into_the_homeserver_are_refused_clearly() {
    let err = modules_error("misbehaving.UsesInternals", Value::Null);
    assert!(err.starts_with("modules[2]: cannot construct"), "{err}");
    assert!(err.contains("ModuleApi._hs is not available"), "{err}");
}

#[tokio::test]
async fn without_parse_config_the_raw_block_is_the_config() {
    for (config, expected) in [
        (Value::Null, vec![]),
        (json!({"users": ["@u:test"]}), vec![uid("@u:test")]),
    ] {
        let router = shared_host()
            .load_module("modules[0]", "misbehaving.NoParseConfig", &config, &api())
            .unwrap();
        // NoParseConfig has methods but registers nothing in the `modules:` form.
        assert!(router.is_none());
        let router = shared_host()
            .load_legacy(
                "presence.presence_router",
                "misbehaving.NoParseConfig",
                &config,
                &api(),
            )
            .unwrap()
            .unwrap();
        assert_eq!(
            router.get_interested_users(&uid("@a:test")).await.unwrap(),
            InterestedUsers::Users(expected.into_iter().collect())
        );
    }
}

/// `major.minor` of the embedded interpreter.
fn python_minor(host: &PythonHost) -> String {
    let version = host
        .python_version()
        .split_whitespace()
        .next()
        .unwrap_or("");
    version.split('.').take(2).collect::<Vec<_>>().join(".")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_are_found_in_a_virtualenv() {
    let dir = std::env::temp_dir().join(format!("presence-python-venv-{}", std::process::id()));
    let site = dir
        .join("lib")
        .join(format!("python{}", python_minor(shared_host())))
        .join("site-packages");
    fs::create_dir_all(&site).unwrap();
    fs::write(
        site.join("venv_only_router.py"),
        "class Router:\n    def __init__(self, config, module_api):\n        pass\n\n    \
         async def get_users_for_states(self, states):\n        return {}\n\n    \
         async def get_interested_users(self, user_id):\n        return {'@venv:test'}\n",
    )
    .unwrap();
    let mut opts = options();
    opts.venv = Some(dir.clone());
    let host = start(opts);
    let router = host
        .load_legacy(
            "presence.presence_router",
            "venv_only_router.Router",
            &Value::Null,
            &api(),
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        router.get_interested_users(&uid("@a:test")).await.unwrap(),
        InterestedUsers::Users([uid("@venv:test")].into())
    );
    host.shutdown(Duration::from_secs(5));
    let _ = fs::remove_dir_all(&dir);

    let mut opts = options();
    opts.venv = Some(std::env::temp_dir().join("presence-python-no-such-venv"));
    match PythonHost::start(opts) {
        Err(PythonError::Venv { reason, .. }) => {
            assert!(reason.contains("site-packages"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}
