//! The write side: what to persist, whom to wake, which servers get what (reference 57, 58,
//! 62 and the inbound EDU rules).

use std::sync::Arc;

use presence_engine::{Input, RemotePresence};
use presence_router::{PresenceState::*, ServerName};

use crate::harness::*;

fn remote(user: &str, presence: &str) -> RemotePresence {
    RemotePresence {
        user_id: user.into(),
        presence: presence.into(),
        last_active_ago: Some(5),
        status_msg: None,
        currently_active: Some(true),
    }
}

fn servers(fx: &presence_engine::Effects) -> Vec<(String, Vec<String>)> {
    fx.federation
        .iter()
        .map(|(s, states)| {
            let mut users: Vec<String> = states.iter().map(|st| short(&st.user_id)).collect();
            users.sort();
            (s.to_string(), users)
        })
        .collect()
}

#[test]
fn persist_and_wake_room_mates_and_self() {
    let mut h = H::new();
    h.join("r", "alice");
    h.join("r", "bob");
    h.join("r2", "carol");
    let (a, b, c) = (h.u("alice"), h.u("bob"), h.u("carol"));
    for u in [a, b, c] {
        h.e.set_listening(u, true);
    }
    let fx = h.put("alice", Online, Some("x"));
    assert_eq!(fx.persist.len(), 1);
    assert_eq!(fx.persist[0].1.status_msg.as_deref(), Some("x"));
    let mut wake = fx.wake.clone();
    wake.sort();
    assert_eq!(wake, vec![a, b]);
    // A repeat changes nothing: nothing to persist, nobody to wake.
    let fx = h.put("alice", Online, Some("x"));
    assert!(fx.persist.is_empty() && fx.wake.is_empty());
}

#[test]
fn routed_recipients_get_woken_and_remote_ones_get_federation() {
    let mut h = H::new();
    h.example_router(&["gobbler", "watcher:island"], &["blocked"]);
    let g = h.u("gobbler");
    h.e.set_listening(g, true);
    let fx = h.put("alice", Online, None);
    assert!(fx.wake.contains(&g));
    assert_eq!(
        servers(&fx),
        vec![("island".to_owned(), vec!["alice".to_owned()])]
    );
    let fx = h.put("blocked", Online, None);
    assert!(!fx.wake.contains(&g));
    assert!(fx.federation.is_empty());
}

/// Synapse: `tests/handlers/test_presence.py::PresenceJoinTestCase::test_remote_joins`.
#[test]
fn remote_joins_get_existing_members_states() {
    let mut h = H::new();
    h.join("r", "test");
    h.join("r", "test2");
    h.put("test2", Online, None);
    let fx = h.join("r", "alice:server2");
    assert_eq!(
        servers(&fx),
        vec![("server2".to_owned(), vec!["test2".to_owned()])]
    );
    let fx = h.join("r", "bob:server3");
    assert_eq!(
        servers(&fx),
        vec![("server3".to_owned(), vec!["test2".to_owned()])]
    );
    // A second member from a server already in the room brings nothing new.
    let fx = h.join("r", "carol:server3");
    assert!(fx.federation.is_empty());
}

/// Synapse:
/// `tests/handlers/test_presence.py::PresenceJoinTestCase::test_remote_gets_presence_when_local_user_joins`.
#[test]
fn local_join_is_sent_to_every_remote_server() {
    let mut h = H::new();
    h.join("r", "test");
    h.put("test", Online, None);
    h.put("test2", Online, None);
    h.join("r", "alice:server2");
    h.join("r", "bob:server3");
    let fx = h.join("r", "test2");
    let mut got = servers(&fx);
    got.sort();
    assert_eq!(
        got,
        vec![
            ("server2".to_owned(), vec!["test2".to_owned()]),
            ("server3".to_owned(), vec!["test2".to_owned()])
        ]
    );
}

/// Synapse: `tests/handlers/test_presence.py::test_get_interested_remotes_respects_excluded_rooms`.
#[test]
fn updates_go_to_servers_sharing_non_excluded_rooms() {
    let mut h = H::with(|c| c.exclude_rooms_from_presence = vec!["!ex:test".into()]);
    h.join("ex", "alice");
    h.join("ex", "x:excluded-only");
    h.join("r", "alice");
    h.join("r", "y:shared");
    h.join("r", "z:shared");
    let fx = h.put("alice", Online, None);
    assert_eq!(
        servers(&fx),
        vec![("shared".to_owned(), vec!["alice".to_owned()])]
    );
}

#[test]
fn remote_users_states_are_never_sent_out() {
    let mut h = H::new();
    h.example_router(&["watcher:island"], &[]);
    h.join("r", "far:remote");
    h.join("r", "other:island");
    let fx = h.run(vec![Input::Remote {
        origin: ServerName::parse("remote").unwrap(),
        entries: vec![remote("@far:remote", "online")],
    }]);
    assert!(fx.federation.is_empty(), "{:?}", fx.federation);
    assert_eq!(fx.persist.len(), 1);
}

#[test]
fn inbound_edu_validation_drops_bad_entries_keeps_good_ones() {
    let mut h = H::with(|c| {
        c.max_status_msg_len = 10;
        c.max_remote_entries_per_edu = 5;
    });
    let mut long = remote("@long:remote", "online");
    long.status_msg = Some("x".repeat(11));
    let entries = vec![
        remote("@good:remote", "unavailable"),
        remote("@spoof:elsewhere", "online"),
        remote("@local:test", "online"),
        remote("not-a-user", "online"),
        remote("@weird:remote", "dancing"),
        long,
        remote("@over:remote", "online"),
    ];
    let applied = h.e.apply(
        h.now,
        vec![Input::Remote {
            origin: ServerName::parse("remote").unwrap(),
            entries,
        }],
    );
    assert_eq!(applied.dropped_remote_entries, 6);
    assert_eq!(applied.batch().unwrap().len(), 1);
    assert_eq!(h.state("good:remote"), Unavailable);
    assert_eq!(h.state("local"), Offline);
    assert_eq!(
        h.state("over:remote"),
        Offline,
        "entries past the cap are dropped"
    );
}

#[test]
fn remote_last_active_ago_and_status() {
    let mut h = H::new();
    let mut e = remote("@r:remote", "online");
    e.last_active_ago = Some(1000);
    e.status_msg = Some("hello".into());
    h.run(vec![Input::Remote {
        origin: ServerName::parse("remote").unwrap(),
        entries: vec![e],
    }]);
    let s = h.get("r:remote");
    assert_eq!(s.last_active_ts, h.now - 1000);
    assert_eq!(s.status_msg.as_deref(), Some("hello"));
    assert!(s.currently_active);
}

#[test]
fn federation_ping_after_interval() {
    let mut h = H::new();
    h.join("r", "alice");
    h.join("r", "far:remote");
    h.sync_start("alice", "d", Online);
    h.log.clear();
    h.advance(1_500_000 + 2_000);
    let pinged = h.log.iter().any(|fx| {
        fx.federation
            .iter()
            .any(|(s, st)| s.as_str() == "remote" && st.iter().any(|x| x.user_id == uid("alice")))
    });
    assert!(
        pinged,
        "the unchanged state is re-announced after 25 minutes"
    );
}

/// Keep-alive pings go where routers send the user's presence too: a remote watcher named by
/// a router (sharing no room) is not left to time the user out after 30 minutes.
#[test]
fn federation_pings_reach_routed_remote_recipients_and_wake_nobody() {
    let mut h = H::new();
    h.example_router(&["watcher:far", "local_watcher"], &[]);
    h.sync_start("alice", "d", Online);
    let watcher = h.u("local_watcher");
    h.e.set_listening(watcher, true);
    h.log.clear();
    h.advance(1_500_000 + 2_000);
    let pinged = h.log.iter().any(|fx| {
        fx.federation
            .iter()
            .any(|(s, st)| s.as_str() == "far" && st.iter().any(|x| x.user_id == uid("alice")))
    });
    assert!(pinged, "the routed remote server got no keep-alive");
    let ping_woke = h
        .log
        .iter()
        .filter(|fx| fx.persist.is_empty())
        .any(|fx| fx.wake.contains(&watcher));
    assert!(!ping_woke, "a ping woke a local recipient");
}

#[test]
fn sync_bookkeeping_is_persisted_lazily_without_new_positions() {
    let mut h = H::new();
    h.sync_start("alice", "d", Online);
    let a = h.u("alice");
    let pos = h.e.position(a);
    h.advance(5_000);
    h.sync_end("alice", "d");
    assert_eq!(h.e.position(a), pos, "a sync end is not news");
    let dirty = h.e.take_dirty();
    assert_eq!(dirty.len(), 1);
    assert_eq!(dirty[0].0, pos);
    assert_eq!(dirty[0].1.last_user_sync_ts, h.now);
    assert!(h.e.take_dirty().is_empty());
}

#[test]
fn restart_restores_positions_and_reads_continue() {
    let mut h = H::new();
    h.join("r", "alice");
    h.join("r", "bob");
    let (_, t) = h.names("bob", None);
    let fx = h.put("alice", Online, Some("hi"));
    let rows = fx.persist.clone();
    // A new engine from what was persisted.
    let mut h2 = H::new();
    h2.e.restore_membership(&room("r"), &uid("alice"));
    h2.e.restore_membership(&room("r"), &uid("bob"));
    h2.e.restore(h2.now, rows, vec![]);
    assert_eq!(h2.e.current_token(), h.e.current_token());
    assert_eq!(h2.names("bob", Some(t)).0, names(&["alice"]));
    assert_eq!(h2.get("alice").status_msg.as_deref(), Some("hi"));
}

/// Found by the soak benchmark: after a restart, the device standing in for the user's
/// devices from before it kept its restored `online` and outranked the user's own
/// `PUT unavailable`, which was acknowledged and then not shown.
#[test]
fn put_after_restart_is_not_outranked_by_the_restored_device() {
    let mut h = H::new();
    let rows = h.put("alice", Online, Some("before")).persist.clone();
    let mut h2 = H::new();
    h2.e.restore(h2.now, rows, vec![]);
    h2.put("alice", Unavailable, Some("after"));
    let alice = h2.get("alice");
    assert_eq!(alice.state, Unavailable);
    assert_eq!(alice.status_msg.as_deref(), Some("after"));
}

#[test]
fn disabled_mode_flushes_stale_states_at_startup() {
    let mut h = H::mode(presence_engine::PresenceMode::Disabled);
    let row = presence_router::UserPresenceState {
        state: Online,
        status_msg: Some("stale".into()),
        ..presence_router::UserPresenceState::offline(uid("alice"))
    };
    let applied = h.e.restore(h.now, vec![(7, row)], vec![]);
    let batch = applied.batch().unwrap();
    assert_eq!(batch[0].state, Offline);
    assert_eq!(batch[0].status_msg, None);
    assert!(h.e.current_token() > 7);
    // Requests are ignored while disabled.
    h.put("alice", Online, None);
    assert_eq!(h.state("alice"), Offline);
}

/// Remote targets of `send_local_online_presence_to` get the non-offline local states they are
/// interested in, and never remote users' states. Synapse:
/// `test_send_local_online_presence_to_with_module[_legacy]` in
/// `tests/events/test_presence_router.py` and
/// `tests/module_api/test_api.py::test_send_local_online_presence_to_federation`.
#[test]
fn snapshot_for_remote_targets() {
    let mut h = H::new();
    h.example_router(&["g1", "g2", "far_away_person:island"], &[]);
    h.put("other_user", Online, Some("I'm online!"));
    h.put("g1", Online, Some("I'm also online!"));
    h.put("g2", Unavailable, Some("I'm in a meeting!"));
    h.put("sleeper", Online, None);
    h.put("sleeper", Offline, None);
    h.join("r", "roomie");
    h.join("r", "friend:elsewhere");
    h.put("roomie", Online, None);
    h.run(vec![Input::Remote {
        origin: ServerName::parse("elsewhere").unwrap(),
        entries: vec![remote("@friend:elsewhere", "online")],
    }]);
    let online = h.e.local_online();
    let routes = futures::executor::block_on(h.routers.get_users_for_states(online.batch()));
    let far = uid("far_away_person:island");
    let mut got: Vec<String> =
        h.e.snapshot_for_remote(&far, &online, routes.get(&far))
            .iter()
            .map(|s| short(&s.user_id))
            .collect();
    got.sort();
    assert_eq!(got, ["g1", "g2", "other_user", "roomie"]);
    // test_send_local_online_presence_to_federation: a remote member of a shared room gets the local room-mates' states only.
    let friend = uid("friend:elsewhere");
    let got: Vec<String> =
        h.e.snapshot_for_remote(&friend, &online, routes.get(&friend))
            .iter()
            .map(|s| short(&s.user_id))
            .collect();
    assert_eq!(got, ["roomie"]);
}

/// A change whose commit failed is put back exactly: the previous record and devices return,
/// at a new (later) position, so readers that saw the failed state see the previous one again.
#[test]
fn a_reverted_change_restores_the_previous_state_at_a_later_position() {
    let mut h = H::new();
    h.join("r", "alice");
    h.join("r", "bob");
    h.put("alice", Online, Some("committed"));
    let committed = h.get("alice");
    let (_, token) = h.read("bob", None);

    let alice = h.u("alice");
    let mut applied = h.e.apply(
        h.now,
        vec![Input::SetPresence {
            user: alice,
            device: dev("dev-2"),
            state: Unavailable,
            status_msg: Some(Arc::from("never committed")),
        }],
    );
    let undo = applied.take_undo();
    let failed_at = h.e.current_token();
    let _ = h.e.finish(applied, &Default::default());
    assert_eq!(
        h.get("alice").status_msg.as_deref(),
        Some("never committed")
    );

    let reverted = h.e.revert(h.now, undo);
    let _ = h.e.finish(reverted, &Default::default());
    assert_eq!(
        h.get("alice"),
        committed,
        "the previous state is back exactly"
    );
    assert!(
        h.e.current_token() > failed_at,
        "positions only move forward"
    );
    let (seen, _) = h.read("bob", Some(token));
    assert_eq!(
        seen,
        vec![committed.clone()],
        "a reader gets the previous state again"
    );
}

/// A later change to the same user, committed after the failed one, is not undone.
#[test]
fn a_revert_keeps_a_later_change_of_the_same_user() {
    let mut h = H::new();
    h.put("alice", Online, None);
    let alice = h.u("alice");
    let mut failed = h.e.apply(
        h.now,
        vec![Input::SetPresence {
            user: alice,
            device: dev("dev-1"),
            state: Unavailable,
            status_msg: Some(Arc::from("failed")),
        }],
    );
    let undo = failed.take_undo();
    let _ = h.e.finish(failed, &Default::default());
    h.put("alice", Online, Some("later, committed"));
    let later = h.get("alice");

    let reverted = h.e.revert(h.now, undo);
    assert!(reverted.batch().is_none(), "nothing to put back");
    let _ = h.e.finish(reverted, &Default::default());
    assert_eq!(h.get("alice"), later);
}

/// A join sends presence only where it is news: a server that already shares another room
/// with the user (or with a member) gets nothing more (the reference sends to every server of
/// the room again, `_handle_state_delta`).
#[test]
fn joins_skip_servers_that_already_share_a_room_with_the_user() {
    let mut h = H::new();
    h.put("test", Online, None);
    h.put("carol", Online, None);
    h.join("first", "test");
    h.join("first", "alice:server2");
    h.join("second", "carol");
    h.join("second", "bob:server3");
    h.join("second", "alice:server2");

    // test joins "second": server2 already sees test through "first", server3 does not.
    let fx = h.join("second", "test");
    assert_eq!(
        servers(&fx),
        vec![("server3".to_owned(), vec!["test".to_owned()])]
    );

    // server3 joins "first": test is already shared with it through "second".
    let fx = h.join("first", "dave:server3");
    assert_eq!(servers(&fx), Vec::<(String, Vec<String>)>::new());
}
