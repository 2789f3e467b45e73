//! The outbox: batching, latest-state-wins, backoff, expiry, isolation between destinations,
//! transaction IDs. Time is tokio's paused clock.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use presence_federation::{MockTransport, Outbox, OutboxConfig, transport::Attempt};
use presence_router::{PresenceState, ServerName, UserPresenceState};
use tokio_util::sync::CancellationToken;

use crate::support::{NOW, clock, server, state};

fn config() -> OutboxConfig {
    let mut c = OutboxConfig::default();
    c.backoff_base = Duration::from_secs(2);
    c.backoff_max = Duration::from_secs(30);
    c.send_timeout = Duration::from_secs(10);
    c
}

fn outbox(config: OutboxConfig, transport: &MockTransport) -> Outbox {
    Outbox::new(
        server("local.example"),
        config,
        Arc::new(transport.clone()),
        clock(NOW),
        None,
        CancellationToken::new(),
    )
}

fn states(server_name: &str, n: usize) -> Vec<UserPresenceState> {
    (0..n)
        .map(|i| state(&format!("@u{i:03}:{server_name}"), PresenceState::Online))
        .collect()
}

fn delivered_users(transport: &MockTransport, dest: &ServerName) -> Vec<String> {
    transport
        .delivered()
        .get(dest)
        .map(|txns| {
            txns.iter()
                .flat_map(|t| t.presence().map(|p| p.user_id.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn at_secs(attempts: &[Attempt], start: tokio::time::Instant) -> Vec<u64> {
    attempts.iter().map(|a| (a.at - start).as_secs()).collect()
}

#[tokio::test(start_paused = true)]
async fn hundred_states_go_in_one_transaction_of_fifty_per_edu() {
    let transport = MockTransport::new();
    let outbox = outbox(config(), &transport);
    let remote = server("remote.example");
    outbox.enqueue(vec![(remote.clone(), states("local.example", 100))]);
    assert!(
        transport
            .wait_for(Duration::from_secs(1), |a| !a.is_empty())
            .await
    );
    tokio::time::sleep(Duration::from_millis(10)).await;

    let delivered = transport.delivered();
    let txns = &delivered[&remote];
    assert_eq!(txns.len(), 1);
    let sizes: Vec<usize> = txns[0]
        .edus
        .iter()
        .map(|e| e.presence().unwrap().len())
        .collect();
    assert_eq!(sizes, [50, 50]);
    let users: BTreeSet<String> = delivered_users(&transport, &remote).into_iter().collect();
    assert_eq!(users.len(), 100);
    assert_eq!(txns[0].origin, "local.example");
    assert_eq!(outbox.stats().states_sent, 100);
    assert_eq!(outbox.pending(&remote), 0);
}

#[tokio::test(start_paused = true)]
async fn more_than_a_transaction_of_states_is_split_across_transactions() {
    let transport = MockTransport::new();
    let mut c = config();
    c.max_edus_per_transaction = 2;
    c.max_states_per_edu = 3;
    let outbox = outbox(c, &transport);
    let remote = server("remote.example");
    outbox.enqueue(vec![(remote.clone(), states("local.example", 14))]);
    assert!(
        transport
            .wait_for(Duration::from_secs(1), |a| a.len() >= 3)
            .await
    );
    let txns = &transport.delivered()[&remote];
    let shape: Vec<Vec<usize>> = txns
        .iter()
        .map(|t| t.edus.iter().map(|e| e.presence().unwrap().len()).collect())
        .collect();
    assert_eq!(shape, [vec![3, 3], vec![3, 3], vec![2]]);
    // Arrival order is kept.
    let users = delivered_users(&transport, &remote);
    let want: Vec<String> = (0..14).map(|i| format!("@u{i:03}:local.example")).collect();
    assert_eq!(users, want);
}

#[tokio::test(start_paused = true)]
async fn latest_state_per_user_wins_before_sending() {
    let transport = MockTransport::new();
    let outbox = outbox(config(), &transport);
    let remote = server("remote.example");
    // Both enqueues happen before the destination task first runs.
    outbox.enqueue(vec![(
        remote.clone(),
        vec![state("@a:local.example", PresenceState::Online)],
    )]);
    outbox.enqueue(vec![(
        remote.clone(),
        vec![
            state("@a:local.example", PresenceState::Unavailable),
            state("@b:local.example", PresenceState::Online),
        ],
    )]);
    assert_eq!(outbox.pending(&remote), 2);
    assert!(
        transport
            .wait_for(Duration::from_secs(1), |a| !a.is_empty())
            .await
    );
    let delivered = transport.delivered();
    let entries: Vec<(String, String)> = delivered[&remote]
        .iter()
        .flat_map(|t| {
            t.presence()
                .map(|p| (p.user_id.clone(), p.presence.clone()))
        })
        .collect();
    assert_eq!(
        entries,
        [
            ("@a:local.example".to_owned(), "unavailable".to_owned()),
            ("@b:local.example".to_owned(), "online".to_owned())
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn own_server_and_empty_batches_are_ignored() {
    let transport = MockTransport::new();
    let outbox = outbox(config(), &transport);
    outbox.enqueue(vec![
        (server("local.example"), states("local.example", 3)),
        (server("remote.example"), Vec::new()),
    ]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(transport.attempts().is_empty());
}

#[tokio::test(start_paused = true)]
async fn failing_destination_backs_off_exponentially_then_recovers() {
    let transport = MockTransport::new();
    let outbox = outbox(config(), &transport);
    let remote = server("remote.example");
    transport.set_down(&remote, true);
    let start = tokio::time::Instant::now();
    outbox.enqueue(vec![(remote.clone(), states("local.example", 3))]);

    // Attempts at 0, then after 2, 4, 8, 16, 30 (capped), 30 seconds.
    assert!(
        transport
            .wait_for(Duration::from_secs(200), |a| a.len() >= 7)
            .await
    );
    assert_eq!(
        at_secs(&transport.attempts(), start),
        [0, 2, 6, 14, 30, 60, 90]
    );
    assert_eq!(outbox.failures(&remote), 7);
    assert_eq!(outbox.pending(&remote), 3);
    assert_eq!(outbox.stats().failed_attempts, 7);

    // A newer state arriving during backoff replaces the queued one and waits too.
    outbox.enqueue(vec![(
        remote.clone(),
        vec![state("@u000:local.example", PresenceState::Unavailable)],
    )]);
    transport.set_down(&remote, false);
    assert!(
        transport
            .wait_for(Duration::from_secs(60), |a| a.iter().any(|a| a.delivered))
            .await
    );
    let attempts = transport.attempts();
    assert_eq!(at_secs(&attempts, start).last(), Some(&120));
    let delivered: Vec<(String, String)> = attempts
        .last()
        .unwrap()
        .body
        .presence()
        .map(|p| (p.user_id.clone(), p.presence.clone()))
        .collect();
    assert_eq!(delivered.len(), 3);
    assert!(delivered.contains(&("@u000:local.example".to_owned(), "unavailable".to_owned())));
    assert_eq!(outbox.failures(&remote), 0);

    // Success reset the backoff: the next update goes out at once.
    let before = tokio::time::Instant::now();
    outbox.enqueue(vec![(remote.clone(), states("local.example", 1))]);
    assert!(
        transport
            .wait_for(Duration::from_secs(60), |a| a.len() >= 9)
            .await
    );
    assert_eq!(transport.attempts()[8].at, before);
}

#[tokio::test(start_paused = true)]
async fn a_request_from_the_destination_cuts_its_backoff_short() {
    let transport = MockTransport::new();
    let outbox = outbox(config(), &transport);
    let remote = server("remote.example");
    transport.set_down(&remote, true);
    let start = tokio::time::Instant::now();
    outbox.enqueue(vec![(remote.clone(), states("local.example", 1))]);
    assert!(
        transport
            .wait_for(Duration::from_secs(100), |a| a.len() >= 4)
            .await
    );
    // Now in a 16 s backoff; the server comes back and talks to us after 3 s.
    transport.set_down(&remote, false);
    tokio::time::sleep(Duration::from_secs(3)).await;
    outbox.mark_up(&remote);
    assert!(
        transport
            .wait_for(Duration::from_secs(1), |a| a.len() >= 5)
            .await
    );
    assert_eq!(at_secs(&transport.attempts(), start), [0, 2, 6, 14, 17]);
    assert!(transport.attempts()[4].delivered);
}

#[tokio::test(start_paused = true)]
async fn presence_waiting_longer_than_the_ttl_is_dropped_and_counted() {
    let transport = MockTransport::new();
    let mut c = config();
    c.pending_ttl = Duration::from_secs(120);
    let outbox = outbox(c, &transport);
    let remote = server("remote.example");
    transport.set_down(&remote, true);
    outbox.enqueue(vec![(remote.clone(), states("local.example", 5))]);
    // Attempts at 0, 2, 6, 14, 30, 60, 90; at 120 the states are 120 s old: dropped.
    tokio::time::sleep(Duration::from_secs(125)).await;
    assert_eq!(outbox.pending(&remote), 0);
    assert_eq!(outbox.stats().dropped_expired, 5);
    assert_eq!(transport.attempts().len(), 7);
    // The destination comes back: new presence flows, the dropped states never do.
    transport.set_down(&remote, false);
    outbox.enqueue(vec![(
        remote.clone(),
        vec![state("@new:local.example", PresenceState::Online)],
    )]);
    assert!(
        transport
            .wait_for(Duration::from_secs(60), |a| a.iter().any(|a| a.delivered))
            .await
    );
    assert_eq!(delivered_users(&transport, &remote), ["@new:local.example"]);
}

#[tokio::test(start_paused = true)]
async fn a_dead_destination_delays_neither_the_caller_nor_others() {
    let transport = MockTransport::new();
    let outbox = outbox(config(), &transport);
    let dead = server("dead.example");
    let slow = server("hung.example");
    let fine = server("fine.example");
    transport.set_down(&dead, true);
    transport.set_hanging(&slow, true);
    let start = tokio::time::Instant::now();
    for round in 0..3 {
        outbox.enqueue(vec![
            (dead.clone(), states("local.example", 10)),
            (slow.clone(), states("local.example", 10)),
            (
                fine.clone(),
                vec![state(
                    &format!("@r{round}:local.example"),
                    PresenceState::Online,
                )],
            ),
        ]);
        // The enqueue itself never waits.
        assert_eq!(
            tokio::time::Instant::now(),
            start + Duration::from_secs(round)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let fine_times: Vec<u64> = transport
        .attempts()
        .iter()
        .filter(|a| a.destination == fine)
        .map(|a| (a.at - start).as_secs())
        .collect();
    assert_eq!(fine_times, [0, 1, 2]);
    assert_eq!(
        delivered_users(&transport, &fine),
        [
            "@r0:local.example",
            "@r1:local.example",
            "@r2:local.example"
        ]
    );
    // The hung destination's transaction times out (at 10 s) and its states wait again.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(outbox.failures(&slow) >= 1);
    assert_eq!(outbox.pending(&slow), 10);
}

#[tokio::test(start_paused = true)]
async fn transaction_ids_are_unique() {
    let transport = MockTransport::new();
    let outbox = outbox(config(), &transport);
    let a = server("a.example");
    let b = server("b.example");
    for i in 0..5 {
        outbox.enqueue(vec![
            (
                a.clone(),
                vec![state(
                    &format!("@x{i}:local.example"),
                    PresenceState::Online,
                )],
            ),
            (
                b.clone(),
                vec![state(
                    &format!("@x{i}:local.example"),
                    PresenceState::Online,
                )],
            ),
        ]);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let attempts = transport.attempts();
    assert_eq!(attempts.len(), 10);
    let ids: BTreeSet<&str> = attempts.iter().map(|a| a.txn_id.as_str()).collect();
    assert_eq!(ids.len(), 10);
    assert!(
        attempts
            .iter()
            .all(|a| a.txn_id.starts_with(&format!("{NOW}_")))
    );
}

#[tokio::test(start_paused = true)]
async fn destinations_outside_the_whitelist_get_nothing() {
    let transport = MockTransport::new();
    let outbox = Outbox::new(
        server("local.example"),
        config(),
        Arc::new(transport.clone()),
        clock(NOW),
        Some([server("ok.example")].into_iter().collect()),
        CancellationToken::new(),
    );
    outbox.enqueue(vec![
        (server("ok.example"), states("local.example", 2)),
        (server("other.example"), states("local.example", 3)),
    ]);
    assert!(
        transport
            .wait_for(Duration::from_secs(1), |a| !a.is_empty())
            .await
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let attempts = transport.attempts();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].destination, server("ok.example"));
    assert_eq!(outbox.stats().dropped_not_allowed, 3);
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_destination_tasks() {
    let transport = MockTransport::new();
    let outbox = outbox(config(), &transport);
    let remote = server("remote.example");
    transport.set_down(&remote, true);
    outbox.enqueue(vec![(remote.clone(), states("local.example", 1))]);
    assert!(
        transport
            .wait_for(Duration::from_secs(1), |a| !a.is_empty())
            .await
    );
    tokio::time::timeout(Duration::from_secs(1), outbox.shutdown())
        .await
        .unwrap();
    outbox.enqueue(vec![(server("x.example"), states("local.example", 1))]);
    tokio::time::sleep(Duration::from_secs(100)).await;
    assert_eq!(transport.attempts().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_backoff_multiplier_is_configurable() {
    let transport = MockTransport::new();
    let mut c = config();
    c.backoff_multiplier = 3;
    c.backoff_max = Duration::from_secs(100);
    let outbox = outbox(c, &transport);
    let remote = server("remote.example");
    transport.set_down(&remote, true);
    let start = tokio::time::Instant::now();
    outbox.enqueue(vec![(remote.clone(), states("local.example", 1))]);
    // Delays 2, 6, 18, 54, then capped at 100.
    assert!(
        transport
            .wait_for(Duration::from_secs(400), |a| a.len() >= 6)
            .await
    );
    assert_eq!(
        at_secs(&transport.attempts(), start),
        [0, 2, 8, 26, 80, 180]
    );
}

#[tokio::test(start_paused = true)]
async fn flush_waits_for_healthy_destinations_only() {
    let transport = MockTransport::new();
    let outbox = outbox(config(), &transport);
    let (up, down, hung) = (
        server("up.example"),
        server("down.example"),
        server("hung.example"),
    );
    transport.set_down(&down, true);
    outbox.enqueue(vec![(down.clone(), states("local.example", 1))]);
    assert!(
        transport
            .wait_for(Duration::from_secs(1), |a| !a.is_empty())
            .await
    );
    // A destination in backoff is not waited for; a healthy one is sent to.
    outbox.enqueue(vec![(up.clone(), states("local.example", 2))]);
    assert!(outbox.flush(Duration::from_secs(1)).await);
    assert_eq!(delivered_users(&transport, &up).len(), 2);
    assert_eq!(outbox.pending(&down), 1);

    // A destination that never answers makes the flush give up at its deadline.
    transport.set_hanging(&hung, true);
    outbox.enqueue(vec![(hung.clone(), states("local.example", 1))]);
    let started = tokio::time::Instant::now();
    assert!(!outbox.flush(Duration::from_secs(3)).await);
    assert!(started.elapsed() >= Duration::from_secs(3));
    outbox.shutdown().await;
}
