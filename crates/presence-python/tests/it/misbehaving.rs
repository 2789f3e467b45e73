//! Modules that break the contract: every call fails cleanly and in time, the failure is
//! counted, other calls keep working, and nothing panics.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use presence_python::PythonRouter;
use presence_router::{InterestedUsers, PresenceRouter, RouterError, RouterSet};
use serde_json::json;

use crate::support::{
    all_logs, api, batch, eventually, load_legacy, logged, own_host, positions, uid,
};

const OK: &str = "@ok:test";

fn ok_users() -> InterestedUsers {
    InterestedUsers::Users([uid(OK)].into())
}

fn counter(
    router: &PythonRouter,
    pick: impl Fn(&presence_python::PythonRouterStats) -> &std::sync::atomic::AtomicU64,
) -> u64 {
    pick(router.stats()).load(Ordering::Relaxed)
}

#[tokio::test]
async fn exceptions_fail_the_call_with_their_message() {
    let router = load_legacy("misbehaving.Raises", json!({}));
    let started = Instant::now();
    match router.get_users_for_states(&batch(&["@a:test"])).await {
        Err(RouterError::Failed(m)) => assert_eq!(m, "ValueError: boom in get_users_for_states"),
        other => panic!("{other:?}"),
    }
    match router.get_interested_users(&uid("@a:test")).await {
        Err(RouterError::Failed(m)) => assert_eq!(m, "KeyError: '@a:test'"),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(counter(&router, |s| &s.exceptions), 2);
    assert_eq!(counter(&router, |s| &s.calls), 2);
    // The log names the module and carries the traceback.
    assert!(
        logged(&[
            "Python presence router raised an exception",
            "Traceback (most recent call last)",
            "ValueError: boom in get_users_for_states",
            "misbehaving.Raises",
        ])
        .await,
        "{}",
        all_logs()
    );
}

#[tokio::test]
async fn answers_of_the_wrong_type_are_invalid_whole() {
    let cases = [
        ("list", "values must be sets", "not a set of user IDs"),
        (
            "not_dict",
            "returned set, not a dict",
            "not a set of user IDs",
        ),
        ("item", "holding a str", "holding a int"),
        ("key", "a int key", "the only string allowed is \"ALL\""),
        ("none", "returned NoneType", "returned NoneType"),
    ];
    for (mode, states_error, users_error) in cases {
        let router = load_legacy("misbehaving.WrongTypes", json!({ "mode": mode }));
        match router.get_users_for_states(&batch(&["@a:test"])).await {
            Err(RouterError::Invalid(m)) => assert!(m.contains(states_error), "{mode}: {m}"),
            other => panic!("{mode}: {other:?}"),
        }
        match router.get_interested_users(&uid("@a:test")).await {
            Err(RouterError::Invalid(m)) => assert!(m.contains(users_error), "{mode}: {m}"),
            other => panic!("{mode}: {other:?}"),
        }
        assert_eq!(counter(&router, |s| &s.invalid_answers), 2, "{mode}");
    }
}

#[tokio::test]
async fn an_invalid_answer_is_not_merged_in_part() {
    // The reference would keep `@a:test` (read before the list value); Presenced drops the
    // whole answer and merges the other routers as usual.
    let mut set = RouterSet::new(Duration::from_secs(1));
    set.push(
        "wrong",
        Arc::new(load_legacy(
            "misbehaving.WrongTypes",
            json!({"mode": "list"}),
        )),
    );
    set.push(
        "plain",
        Arc::new(load_legacy("misbehaving.Plain", json!({}))),
    );
    let merged = set
        .get_users_for_states(&batch(&["@x:test", "@y:test"]))
        .await;
    assert_eq!(positions(&merged), [(OK.to_owned(), vec![0, 1])].into());
    let failures: Vec<u64> = set
        .stats()
        .map(|(_, s)| s.failures.load(Ordering::Relaxed))
        .collect();
    assert_eq!(failures, [1, 0]);
    assert_eq!(set.get_interested_users(&uid("@x:test")).await, ok_users());
}

#[tokio::test]
async fn invented_states_and_non_user_keys_are_dropped_and_counted() {
    let router = load_legacy("misbehaving.Invents", json!({}));
    let b = batch(&["@a:test", "@b:test", "@c:test"]);
    let answer = router.get_users_for_states(&b).await.unwrap();
    // A rebuilt record equal to one of the batch counts as that record; altered ones do not.
    assert_eq!(
        positions(&answer),
        [
            ("@all:test".to_owned(), vec![0, 1, 2]),
            ("@r:test".to_owned(), vec![0]),
        ]
        .into()
    );
    assert_eq!(counter(&router, |s| &s.foreign_states), 3);
    assert!(logged(&["not in the batch", "misbehaving.Invents", "states=3"]).await);
    assert_eq!(counter(&router, |s| &s.invalid_user_ids), 1);
    assert_eq!(
        router.get_interested_users(&uid("@q:test")).await.unwrap(),
        InterestedUsers::Users([uid("@a:test")].into())
    );
    assert_eq!(counter(&router, |s| &s.invalid_user_ids), 2);
}

#[tokio::test]
async fn plain_methods_and_frozensets_work() {
    let router = load_legacy("misbehaving.Plain", json!({}));
    let answer = router
        .get_users_for_states(&batch(&["@a:test"]))
        .await
        .unwrap();
    assert_eq!(positions(&answer), [(OK.to_owned(), vec![0])].into());
    assert_eq!(
        router.get_interested_users(&uid("@a:test")).await.unwrap(),
        ok_users()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coroutine_that_never_answers_times_out_and_is_cancelled() {
    let budget = Duration::from_millis(300);
    let host = own_host(|o| o.call_timeout = budget);
    let router = host
        .load_legacy(
            "presence.presence_router",
            "misbehaving.Hangs",
            &json!({}),
            &api(),
        )
        .unwrap()
        .unwrap();
    let hanging = {
        let router = router.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let result = router.get_interested_users(&uid("@hang:test")).await;
            (result, started.elapsed())
        })
    };
    // Other calls are answered while it hangs.
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(
            router.get_interested_users(&uid("@a:test")).await.unwrap(),
            ok_users()
        );
        assert!(started.elapsed() < budget);
    }
    let (result, elapsed) = hanging.await.unwrap();
    assert_eq!(result, Err(RouterError::TimedOut));
    assert!(elapsed >= budget && elapsed < budget * 2, "{elapsed:?}");

    let states = router
        .get_users_for_states(&batch(&["@x:test", "@hang:test"]))
        .await;
    assert_eq!(states.err(), Some(RouterError::TimedOut));
    assert_eq!(counter(&router, |s| &s.timeouts), 2);

    // Both coroutines were cancelled, and the router goes on answering.
    let cancelled = InterestedUsers::Users([uid("@cancelled2:test")].into());
    let mut last = None;
    for _ in 0..50 {
        last = Some(
            router
                .get_interested_users(&uid("@count:test"))
                .await
                .unwrap(),
        );
        if last.as_ref() == Some(&cancelled) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(last, Some(cancelled));
    assert!(!host.is_stuck());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_abandoned_by_the_router_set_is_cancelled() {
    let host = own_host(|o| o.call_timeout = Duration::from_secs(5));
    let router = host
        .load_legacy(
            "presence.presence_router",
            "misbehaving.Hangs",
            &json!({}),
            &api(),
        )
        .unwrap()
        .unwrap();
    let mut set = RouterSet::new(Duration::from_millis(100));
    set.push("hangs", Arc::new(router.clone()));
    let started = Instant::now();
    assert_eq!(
        set.get_interested_users(&uid("@hang:test")).await,
        InterestedUsers::none()
    );
    assert!(started.elapsed() < Duration::from_millis(1000));
    // The router's own budget (5 s) did not run out: the set dropped the call, which
    // cancelled the coroutine.
    let cancelled = InterestedUsers::Users([uid("@cancelled1:test")].into());
    let mut seen = false;
    for _ in 0..50 {
        if router
            .get_interested_users(&uid("@count:test"))
            .await
            .unwrap()
            == cancelled
        {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen, "the abandoned coroutine was cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_loop_is_interrupted_and_the_router_recovers() {
    let budget = Duration::from_millis(300);
    let host = own_host(|o| o.call_timeout = budget);
    let router = host
        .load_legacy(
            "presence.presence_router",
            "misbehaving.Spins",
            &json!({}),
            &api(),
        )
        .unwrap()
        .unwrap();

    // Tokio keeps running while Python spins: a ticker counts 10 ms ticks meanwhile.
    let ticks = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ticker = {
        let ticks = ticks.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                ticks.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let started = Instant::now();
    let result = router.get_interested_users(&uid("@spin:test")).await;
    let elapsed = started.elapsed();
    assert_eq!(result, Err(RouterError::TimedOut));
    assert!(elapsed < budget + Duration::from_millis(200), "{elapsed:?}");
    assert!(ticks.load(Ordering::Relaxed) >= 10, "tokio was blocked");
    ticker.abort();

    // The watchdog interrupts the loop (whose `except Exception` cannot catch it), and the
    // router answers again.
    let recovered = eventually(Duration::from_secs(3), || !host.is_stuck()).await;
    assert!(recovered);
    let mut answered = false;
    for _ in 0..100 {
        if router.get_interested_users(&uid("@a:test")).await == Ok(ok_users()) {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(answered, "the router answers after the interrupt");
    assert!(host.stats().stalls.load(Ordering::Relaxed) >= 1);
    assert!(host.stats().interrupts.load(Ordering::Relaxed) >= 1);
    assert_eq!(
        counter(&router, |s| &s.exceptions),
        1,
        "the interrupt surfaced in the call"
    );
    assert!(
        logged(&[
            "Module code blocks the Python event loop",
            "misbehaving.Spins"
        ])
        .await,
        "{}",
        all_logs()
    );
    assert!(
        logged(&[
            "blocked the event loop and was interrupted",
            "InterpreterStuck"
        ])
        .await
    );
    assert_eq!(counter(&router, |s| &s.timeouts), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_fail_at_once_while_the_loop_is_blocked() {
    // `time.sleep` blocks the Python thread in C: no exception can end it, so the host counts
    // as stuck until it returns, and calls are refused at once instead of queueing.
    let budget = Duration::from_millis(200);
    let host = own_host(|o| {
        o.call_timeout = budget;
        o.interrupt_stuck = false;
    });
    let router = host
        .load_legacy(
            "presence.presence_router",
            "misbehaving.Sleeps",
            &json!({"seconds": 1.5}),
            &api(),
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        router.get_interested_users(&uid("@sleep:test")).await,
        Err(RouterError::TimedOut)
    );
    assert!(eventually(Duration::from_secs(1), || host.is_stuck()).await);
    let started = Instant::now();
    match router.get_interested_users(&uid("@a:test")).await {
        Err(RouterError::Failed(m)) => {
            assert!(m.contains("the Python interpreter is stuck"), "{m}");
            assert!(m.contains("misbehaving.Sleeps.get_interested_users"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_millis(50));
    assert_eq!(counter(&router, |s| &s.rejected), 1);
    assert!(eventually(Duration::from_secs(3), || !host.is_stuck()).await);
    assert_eq!(
        router.get_interested_users(&uid("@a:test")).await,
        Ok(ok_users())
    );
    assert_eq!(host.stats().interrupts.load(Ordering::Relaxed), 0);
}

#[test]
fn a_stopped_host_refuses_calls() {
    let host = own_host(|_| {});
    let router = host
        .load_legacy(
            "presence.presence_router",
            "misbehaving.Plain",
            &json!({}),
            &api(),
        )
        .unwrap()
        .unwrap();
    assert!(host.shutdown(Duration::from_secs(5)));
    let result =
        presence_routers::conformance::block_on(router.get_interested_users(&uid("@a:test")));
    match result {
        Err(RouterError::Failed(m)) => assert!(m.contains("stopped"), "{m}"),
        other => panic!("{other:?}"),
    }
    let err = host
        .load_legacy(
            "presence.presence_router",
            "misbehaving.Plain",
            &json!({}),
            &api(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("stopped"), "{err}");
}

/// The largest recursion limit at which plain CPython (`python3` on its main thread) still
/// stops C-level recursion with a `RecursionError` instead of overflowing its stack.
fn largest_limit_plain_cpython_survives() -> u32 {
    let survives = |limit: u32| {
        let script = format!(
            "import sys\nsys.setrecursionlimit({limit})\n\
             def f(d): return max(map(f, [d + 1]))\n\
             try:\n    f(0)\nexcept RecursionError:\n    pass\n"
        );
        std::process::Command::new("python3")
            .args(["-c", &script])
            .output()
            .expect("python3 runs")
            .status
            .success()
    };
    let (mut lo, mut hi) = (1_000, 1_000_000);
    assert!(survives(lo), "plain CPython survives a small limit");
    if survives(hi) {
        return hi;
    }
    while hi - lo > 100 {
        let mid = lo + (hi - lo) / 2;
        if survives(mid) { lo = mid } else { hi = mid }
    }
    lo
}

#[tokio::test]
async fn recursion_plain_cpython_survives_does_not_overflow_the_interpreter_thread() {
    let limit = largest_limit_plain_cpython_survives();
    // With Rust's default 2 MiB thread stack, about 5,000 overflowed (and killed the process).
    assert!(limit > 10_000, "{limit}");
    let router = load_legacy("misbehaving.Recurses", json!({ "limit": limit }));
    assert_eq!(
        router.get_interested_users(&uid("@deep:test")).await,
        Ok(ok_users()),
        "recursion limit {limit}"
    );
}

/// Set when the test runs in a process of its own (see below).
const ALONE: &str = "PRESENCE_PYTHON_TEST_ALONE";

#[test]
fn a_thread_holding_the_gil_is_named_and_routing_recovers_when_it_yields() {
    // A thread holding the GIL stalls every interpreter user of the process, the other
    // tests' hosts included: run in a process of its own.
    if std::env::var_os(ALONE).is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "misbehaving::a_thread_holding_the_gil_is_named_and_routing_recovers_when_it_yields",
                "--nocapture",
            ])
            .env(ALONE, "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(gil_held_by_a_module_thread());
}

async fn gil_held_by_a_module_thread() {
    let host = own_host(|o| o.call_timeout = Duration::from_millis(300));
    let router = host
        .load_legacy(
            "presence.presence_router",
            "misbehaving.SpinsInAThread",
            &json!({"seconds": 2}),
            &api(),
        )
        .unwrap()
        .unwrap();
    let mut failed = 0;
    let mut answered_after = false;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        match router.get_interested_users(&uid("@done:test")).await {
            Ok(InterestedUsers::Users(u)) if u.contains(&uid("@done:test")) => {
                answered_after = true;
                break;
            }
            Ok(_) => {}
            Err(_) => failed += 1,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(failed > 0, "the loop was blocked");
    assert!(answered_after, "routing recovers once the thread yields");
    assert!(
        logged(&["holds the GIL", "thread 'spinner' of module misbehaving"]).await,
        "{}",
        all_logs()
    );
    // The loop thread ran no module code: nothing was raised in it.
    assert_eq!(host.stats().interrupts.load(Ordering::Relaxed), 0);
}
