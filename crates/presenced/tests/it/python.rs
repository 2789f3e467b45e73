//! Presence routers written in Python for the reference homeserver, loaded by the real server
//! from its configuration and exercised over HTTP: the seed's example router in both
//! configuration forms against the recorded conformance scenarios, routers in the style of the
//! reference's own tests (Synapse's `tests/events/test_presence_router.py`), and routers that
//! break the contract.

use std::{path::PathBuf, time::Duration};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    conformance::replay_all,
    matrix::{Client, TestServer, User, q, test_config},
    support::Workspace,
};

/// The Python routers shared with the presence-python crate's tests, and this crate's own.
fn python_paths() -> String {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    format!(
        "python: {{paths: ['{}', '{}']}}\n",
        manifest.join("../presence-python/tests/python").display(),
        manifest.join("tests/python").display()
    )
}

/// The routing the reference's scenarios were recorded with, as a router `config:` block.
const ORACLE_ROUTING: &str = "{always_send_to_users: ['@oracle_gobbler:test', \
     '@oracle_gobbler2:test'], blacklisted_users: ['@oracle_blocked:test']}";

/// A per-router series of `/metrics`.
async fn metric(s: &TestServer, name: &str, router: &str) -> f64 {
    s.client()
        .metric(&format!("{name}{{router=\"{router}\"}}"))
        .await
}

async fn register(c: &Client, names: &[&str]) -> Vec<User> {
    let mut out = Vec::new();
    for name in names {
        out.push(c.register(name, "password", false).await.unwrap());
    }
    out
}

/// The presence events of a sync, as (sender, content).
fn events(sync: &Value) -> Vec<(String, Value)> {
    sync["presence"]["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|e| {
                    (
                        e["sender"].as_str().unwrap().to_owned(),
                        e["content"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn senders(sync: &Value) -> Vec<String> {
    let mut out: Vec<String> = events(sync).into_iter().map(|(s, _)| s).collect();
    out.sort();
    out
}

async fn put(c: &Client, user: &User, presence: &str, status_msg: &str) {
    let (status, errcode) = c
        .put_presence(
            user,
            &user.user_id,
            json!({"presence": presence, "status_msg": status_msg}),
        )
        .await;
    assert_eq!((status, errcode), (StatusCode::OK, None));
}

const QUIET: &str = "timeout=0&set_presence=offline";

// ---------------------------------------------------------------------------------------
// the seed's example router

async fn example_router_conformance(config: &str, router: &str) {
    let server = replay_all(&test_config(config)).await;
    assert!(
        server.log_text().contains("Python presence router loaded."),
        "{}",
        server.log_text()
    );
    // The scenarios' routing came from the Python router, not from a built-in one.
    let calls = metric(&server, "presenced_router_calls_total", router).await;
    assert!(calls > 0.0, "no calls recorded for {router}");
    assert_eq!(
        metric(&server, "presenced_router_failures_total", router).await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_router_legacy_form_matches_the_reference() {
    example_router_conformance(
        &format!(
            "{}presence:\n  enabled: true\n  presence_router: {{module: \
             example_router.ExamplePresenceRouter, config: {ORACLE_ROUTING}}}\n",
            python_paths()
        ),
        "example_router.ExamplePresenceRouter",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_router_modules_form_matches_the_reference() {
    example_router_conformance(
        &format!(
            "{}presence: {{enabled: true}}\nmodules:\n  - {{module: \
             example_router_modules.ExamplePresenceRouterModule, config: {ORACLE_ROUTING}}}\n",
            python_paths()
        ),
        "example_router_modules.ExamplePresenceRouterModule",
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// Synapse's `tests/events/test_presence_router.py`

/// A configuration loading `class` with `config` (a YAML flow mapping) in the legacy
/// `presence.presence_router` form or as a `modules:` entry.
fn router_config(legacy: bool, class: &str, config: &str) -> String {
    let entry = format!("{{module: {class}, config: {config}}}");
    let routers = if legacy {
        format!("presence:\n  enabled: true\n  presence_router: {entry}\n")
    } else {
        format!("presence: {{enabled: true}}\nmodules:\n  - {entry}\n")
    };
    test_config(&format!("{}{routers}", python_paths()))
}

/// Synapse's `test_receiving_all_presence[_legacy]` (`tests/events/test_presence_router.py`): a user the router names receives
/// everyone's presence without sharing a room; nobody else gains anything.
async fn receiving_all_presence(legacy: bool, class: &str) {
    let s = TestServer::start(
        Workspace::new(),
        &router_config(
            legacy,
            class,
            "{users_who_should_receive_all_presence: ['@presence_gobbler:test']}",
        ),
    )
    .await;
    let c = s.client();
    let [gobbler, one, two] = <[User; 3]>::try_from(
        register(
            &c,
            &["presence_gobbler", "other_user_one", "other_user_two"],
        )
        .await,
    )
    .unwrap();
    let room = c.create_room(&one, false).await;
    c.join(&two, &room).await;

    put(&c, &one, "online", "boop").await;
    let first = c.sync(&gobbler, QUIET).await;
    let got = events(&first);
    assert_eq!(got.len(), 1, "{first}");
    assert_eq!(got[0].0, one.user_id);
    assert_eq!(got[0].1["presence"], "online");
    assert_eq!(got[0].1["status_msg"], "boop");
    let tok = first["next_batch"].as_str().unwrap().to_owned();

    put(&c, &one, "online", "user_one").await;
    put(&c, &two, "online", "user_two").await;
    put(&c, &gobbler, "online", "presence_gobbler").await;
    let next = c
        .sync(&gobbler, &format!("{QUIET}&since={}", q(&tok)))
        .await;
    let mut want = vec![
        gobbler.user_id.clone(),
        one.user_id.clone(),
        two.user_id.clone(),
    ];
    want.sort();
    assert_eq!(senders(&next), want, "{next}");

    let of_one = c.sync(&one, QUIET).await;
    let mut want = vec![one.user_id.clone(), two.user_id.clone()];
    want.sort();
    assert_eq!(
        senders(&of_one),
        want,
        "the gobbler must not show up: {of_one}"
    );
    let (_, two_content) = events(&of_one)
        .into_iter()
        .find(|(sender, _)| *sender == two.user_id)
        .unwrap();
    assert_eq!(two_content["presence"], "online");
    assert_eq!(two_content["status_msg"], "user_two");
}

/// Synapse: `tests/events/test_presence_router.py::test_receiving_all_presence_legacy`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiving_all_presence_legacy() {
    receiving_all_presence(true, "gobbler_router.GobblerRouterLegacy").await;
}

/// Synapse: `tests/events/test_presence_router.py::test_receiving_all_presence`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiving_all_presence_modules() {
    receiving_all_presence(false, "gobbler_router.GobblerRouterModule").await;
}

/// Synapse's `test_send_local_online_presence_to_with_module[_legacy]`
/// (`tests/events/test_presence_router.py`), local part: the
/// module calls `send_local_online_presence_to([g1, g2])` from a looping background call;
/// their next incremental syncs carry everyone's current presence again although nothing
/// changed, while a user not named gets nothing new.
async fn send_local_online_presence_to_from_a_module(legacy: bool, class: &str) {
    let s = TestServer::start(
        Workspace::new(),
        &router_config(
            legacy,
            class,
            "{users_who_should_receive_all_presence: ['@presence_gobbler1:test', \
             '@presence_gobbler2:test', '@far_away_person:island'], \
             announce: [['@presence_gobbler1:test', '@presence_gobbler2:test']], repeat: true}",
        ),
    )
    .await;
    let c = s.client();
    let [other, g1, g2] = <[User; 3]>::try_from(
        register(
            &c,
            &["other_user", "presence_gobbler1", "presence_gobbler2"],
        )
        .await,
    )
    .unwrap();
    put(&c, &other, "online", "I'm online!").await;
    put(&c, &g1, "online", "I'm also online!").await;
    put(&c, &g2, "unavailable", "I'm in a meeting!").await;

    let of_other = c.sync(&other, QUIET).await;
    let got = events(&of_other);
    assert_eq!(got.len(), 1, "{of_other}");
    assert_eq!(got[0].0, other.user_id);
    assert_eq!(got[0].1["presence"], "online");
    assert_eq!(got[0].1["status_msg"], "I'm online!");
    let mut everyone = vec![
        other.user_id.clone(),
        g1.user_id.clone(),
        g2.user_id.clone(),
    ];
    everyone.sort();
    let mut tokens = Vec::new();
    for g in [&g1, &g2] {
        let initial = c.sync(g, QUIET).await;
        assert_eq!(senders(&initial), everyone, "{initial}");
        tokens.push(initial["next_batch"].as_str().unwrap().to_owned());
    }
    let other_tok = of_other["next_batch"].as_str().unwrap().to_owned();

    // Nothing changes from here on: only the module's announcements can fill these syncs.
    for (g, tok) in [&g1, &g2].into_iter().zip(&tokens) {
        let mut again = Value::Null;
        for _ in 0..100 {
            again = c.sync(g, &format!("{QUIET}&since={}", q(tok))).await;
            if !events(&again).is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(senders(&again), everyone, "{again}");
    }
    let quiet = c
        .sync(&other, &format!("{QUIET}&since={}", q(&other_tok)))
        .await;
    assert!(events(&quiet).is_empty(), "{quiet}");
}

/// Synapse:
/// `tests/events/test_presence_router.py::test_send_local_online_presence_to_with_module_legacy`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_local_online_presence_to_with_module_legacy() {
    send_local_online_presence_to_from_a_module(true, "announcer.Announcer").await;
}

/// Synapse: `tests/events/test_presence_router.py::test_send_local_online_presence_to_with_module`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_local_online_presence_to_with_module_modules() {
    send_local_online_presence_to_from_a_module(false, "announcer.AnnouncerModule").await;
}

// ---------------------------------------------------------------------------------------
// misbehaving modules

/// Routers that raise, answer with the wrong types, never answer, and spin, next to healthy
/// ones: every request succeeds in bounded time, the built-in router's answers count even
/// while Python is stuck, the healthy Python router answers again once the loop runs, and
/// each failure is in the log and the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_python_routers_never_fail_a_request() {
    let mut config = format!(
        "{}presence:\n  enabled: true\n  router_call_timeout: 300ms\n  presence_router: \
         {{module: presenced.routers.ExamplePresenceRouter, config: \
         {{always_send_to_users: ['@gobbler:test']}}}}\nmodules:\n  - {{module: \
         gobbler_router.GobblerRouterModule, config: \
         {{users_who_should_receive_all_presence: ['@pygobbler:test']}}}}\n",
        python_paths()
    );
    for (class, router_config) in [
        ("Raises", "{}"),
        ("WrongTypes", "{mode: list}"),
        ("Hangs", "{}"),
        ("Spins", "{}"),
    ] {
        config.push_str(&format!(
            "  - {{module: misbehaving_modules.{class}, config: {router_config}}}\n"
        ));
    }
    let s = TestServer::start(Workspace::new(), &test_config(&config)).await;
    let c = s.client();
    let [alice, gobbler, pygobbler, hang, spin] = <[User; 5]>::try_from(
        register(&c, &["alice", "gobbler", "pygobbler", "hang", "spin"]).await,
    )
    .unwrap();
    // A bound on every request, so a stall shows as a failure instead of a stuck test.
    let bounded = Duration::from_secs(10);

    put(&c, &alice, "online", "hello").await;
    let of_gobbler = c.sync(&gobbler, QUIET).await;
    assert_eq!(
        senders(&of_gobbler),
        vec![alice.user_id.clone()],
        "{of_gobbler}"
    );
    let tok = of_gobbler["next_batch"].as_str().unwrap().to_owned();

    // A batch holding @hang:test makes `Hangs` wait forever: the PUT still succeeds.
    tokio::time::timeout(bounded, put(&c, &hang, "online", "waiting"))
        .await
        .expect("PUT stalled behind a hanging router");
    // `Spins` busy-loops on the event loop for @spin:test's interest; another user's sync
    // runs meanwhile.
    let spinning = {
        let c = c.clone();
        let spin = spin.clone();
        tokio::spawn(async move { c.sync(&spin, QUIET).await })
    };
    let during = tokio::time::timeout(
        bounded,
        c.sync(&gobbler, &format!("{QUIET}&since={}", q(&tok))),
    )
    .await
    .expect("a sync stalled behind a spinning router");
    assert!(
        senders(&during).contains(&hang.user_id),
        "the built-in router's answer was lost: {during}"
    );
    tokio::time::timeout(bounded, spinning)
        .await
        .expect("the spinning router's own sync never finished")
        .unwrap();

    // Once the loop runs again the Python routers recover: later calls are answered.
    let mut recovered = false;
    for _ in 0..50 {
        let of_pygobbler = c.sync(&pygobbler, QUIET).await;
        if senders(&of_pygobbler).contains(&alice.user_id) {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the healthy Python router never answered again");
    // The interpreter's heap, for spotting a leaking module.
    assert!(s.client().metric("presenced_python_allocated_blocks").await > 0.0);

    let router = |class: &str| format!("misbehaving_modules.{class}");
    assert!(metric(&s, "presenced_python_exceptions_total", &router("Raises")).await >= 1.0);
    assert!(
        metric(
            &s,
            "presenced_python_invalid_answers_total",
            &router("WrongTypes")
        )
        .await
            >= 1.0
    );
    assert!(metric(&s, "presenced_router_timeouts_total", &router("Hangs")).await >= 1.0);
    assert!(metric(&s, "presenced_router_timeouts_total", &router("Spins")).await >= 1.0);
    for class in ["Raises", "WrongTypes", "Hangs", "Spins"] {
        assert!(
            metric(&s, "presenced_router_failures_total", &router(class)).await >= 1.0,
            "{class}"
        );
    }
    let log = s.log_text();
    for needle in ["boom in get_users_for_states", "misbehaving_modules.Spins"] {
        assert!(
            log.contains(needle),
            "{needle} missing from the log:\n{log}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// loading errors

/// A module that cannot be imported, or whose `parse_config` rejects its block, stops the
/// server at startup with exit code 1 and the key path of the entry.
#[tokio::test]
async fn modules_that_fail_to_load_stop_startup_naming_the_entry() {
    for (config, key, text) in [
        (
            router_config(true, "no_such_module.Router", "{}"),
            "presence.presence_router.module",
            "no_such_module",
        ),
        (
            router_config(
                false,
                "example_router_modules.ExamplePresenceRouterModule",
                "{always_send_to_users: '@not:a-list'}",
            ),
            "modules[0]",
            "always_send_to_users must be a list of user ID strings",
        ),
    ] {
        let ws = Workspace::new();
        let path = ws.write("presenced.yaml", &config);
        let (code, stdout, stderr) = ws.run(&["-c", path.to_str().unwrap()]).await;
        assert_eq!(code, 1, "stderr:\n{stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        assert!(stderr.contains(key), "{key} missing:\n{stderr}");
        assert!(stderr.contains(text), "{text} missing:\n{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

// ---------------------------------------------------------------------------------------
// batching

/// A burst of concurrent updates reaches the Python router in a few batched calls, not one
/// call per update, and every update is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_updates_costs_few_python_calls() {
    const USERS: usize = 64;
    let s = TestServer::start(
        Workspace::new(),
        &router_config(
            true,
            "gobbler_router.GobblerRouterLegacy",
            "{users_who_should_receive_all_presence: ['@watcher:test']}",
        ),
    )
    .await;
    let c = s.client();
    let names: Vec<String> = (0..USERS).map(|i| format!("burst{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let users = register(&c, &names).await;
    let watcher = c.register("watcher", "password", false).await.unwrap();
    let router = "gobbler_router.GobblerRouterLegacy";
    let calls_before = metric(&s, "presenced_router_calls_total", router).await;

    let puts: Vec<_> = users
        .iter()
        .map(|user| {
            let c = c.clone();
            let user = user.clone();
            tokio::spawn(async move { put(&c, &user, "online", "burst").await })
        })
        .collect();
    for put in puts {
        put.await.unwrap();
    }
    let calls = metric(&s, "presenced_router_calls_total", router).await - calls_before;
    let changes = s.client().metric("presenced_presence_batch_size_sum").await;
    let batches = s
        .client()
        .metric("presenced_presence_batch_size_count")
        .await;
    eprintln!("{USERS} updates: {batches} batches, {calls} router calls");
    assert_eq!(changes, USERS as f64);
    assert!(calls >= 1.0 && calls < USERS as f64, "{calls} calls");
    assert!(batches < USERS as f64, "{batches} batches");

    let of_watcher = c.sync(&watcher, QUIET).await;
    assert_eq!(events(&of_watcher).len(), USERS, "{of_watcher}");
}

// ---------------------------------------------------------------------------------------
// Twisted, from a configured virtualenv

/// A router that awaits Twisted Deferreds, with Twisted imported from the virtualenv named in
/// the `python:` section (`.ci/run` makes one and sets `PRESENCE_PYTHON_TEST_VENV`; without
/// it the test is skipped locally and fails under CI).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twisted_router_runs_from_the_configured_venv() {
    let venv = match std::env::var("PRESENCE_PYTHON_TEST_VENV") {
        Ok(venv) => venv,
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("CI must set PRESENCE_PYTHON_TEST_VENV to a virtualenv with Twisted")
        }
        Err(_) => {
            eprintln!("skipped: set PRESENCE_PYTHON_TEST_VENV to a virtualenv with Twisted");
            return;
        }
    };
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config = test_config(&format!(
        "python: {{paths: ['{}'], venv: '{venv}', twisted: required}}\npresence:\n  \
         enabled: true\n  presence_router: {{module: twisted_router.TwistedRouter, config: \
         {{everyone: ['@all:test']}}}}\n",
        manifest.join("../presence-python/tests/python").display()
    ));
    let s = TestServer::start(Workspace::new(), &config).await;
    assert!(s.log_text().contains("twisted=true"), "{}", s.log_text());
    let c = s.client();
    let [all, alice] = <[User; 2]>::try_from(register(&c, &["all", "alice"]).await).unwrap();
    put(&c, &alice, "online", "on twisted").await;
    // `@all:test`'s interest comes from a `deferLater` on the reactor.
    let of_all = c.sync(&all, QUIET).await;
    assert_eq!(senders(&of_all), vec![alice.user_id.clone()], "{of_all}");
    assert_eq!(
        metric(
            &s,
            "presenced_router_failures_total",
            "twisted_router.TwistedRouter"
        )
        .await,
        0.0
    );
}

// ---------------------------------------------------------------------------------------
// check-config

/// check-config imports and constructs Python routers as startup does: a class that cannot
/// be imported, or whose `parse_config` refuses its config, fails both the same way; a good
/// one passes.
#[tokio::test]
async fn check_config_imports_python_routers_as_startup_does() {
    let ws = Workspace::new();
    let config = |module: &str, config: &str| {
        crate::support::config_yaml(&format!(
            "{}modules:\n  - {{module: {module}, config: {config}}}\n",
            python_paths()
        ))
    };
    crate::binary::check_config_and_startup_fail_alike(
        &ws,
        &config("no_such_module.Router", "{}"),
        "cannot import Python module 'no_such_module'",
    )
    .await;
    crate::binary::check_config_and_startup_fail_alike(
        &ws,
        &config(
            "example_router_modules.ExamplePresenceRouterModule",
            "{always_send_to_users: '@a:test'}",
        ),
        "always_send_to_users must be a list of user ID strings",
    )
    .await;

    let good = ws.write(
        "good.yaml",
        &config(
            "example_router_modules.ExamplePresenceRouterModule",
            ORACLE_ROUTING,
        ),
    );
    let (code, stdout, stderr) = ws
        .run(&["check-config", "-c", good.to_str().unwrap()])
        .await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "The configuration is valid.\n");
    assert!(stderr.is_empty(), "{stderr}");
}
