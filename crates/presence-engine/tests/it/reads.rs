//! The read side: who sees whom in `/sync` (Synapse's `test_excluded_rooms_not_routed` and
//! `test_incremental_interest[_excluded_room]` in `tests/handlers/test_presence.py`, and the
//! conformance rules), routed presence in addition to rooms, snapshots (`tests/module_api/
//! test_api.py::test_send_local_online_presence_to`), and no duplicates.

use presence_engine::Input;
use presence_router::PresenceState::*;

use crate::harness::*;

#[test]
fn room_mates_see_each_other_and_strangers_do_not() {
    let mut h = H::new();
    h.join("r", "alice");
    h.join("r", "bob");
    let (_, t_bob) = h.names("bob", None);
    let (_, t_carol) = h.names("carol", None);
    h.put("alice", Online, Some("hi"));
    let (seen, t_bob2) = h.names("bob", Some(t_bob));
    assert_eq!(seen, names(&["alice"]));
    assert!(t_bob2 > t_bob);
    assert_eq!(h.names("carol", Some(t_carol)).0, Vec::<String>::new());
    assert_eq!(
        h.names("alice", None).0,
        names(&["alice"]),
        "own state on initial sync"
    );
    // Nothing new: empty, and the token does not move.
    assert_eq!(h.names("bob", Some(t_bob2)), (vec![], t_bob2));
}

#[test]
fn initial_sync_leaves_out_offline_unless_configured() {
    let mut h = H::new();
    h.join("r", "alice");
    h.join("r", "bob");
    h.put("bob", Online, None);
    h.put("bob", Offline, None);
    assert_eq!(h.names("alice", None).0, Vec::<String>::new());
    let mut h = H::with(|c| c.include_offline_users_on_sync = true);
    h.join("r", "alice");
    h.join("r", "bob");
    h.put("bob", Offline, Some("gone"));
    assert_eq!(h.names("alice", None).0, names(&["alice", "bob"]));
}

#[test]
fn only_latest_state_per_user_per_sync() {
    let mut h = H::new();
    h.join("r", "alice");
    h.join("r", "bob");
    let (_, t) = h.names("bob", None);
    h.put("alice", Online, Some("1"));
    h.put("alice", Unavailable, Some("2"));
    h.put("alice", Online, Some("3"));
    let (states, _) = h.read("bob", Some(t));
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].status_msg.as_deref(), Some("3"));
}

/// Synapse: `tests/handlers/test_presence.py::test_incremental_interest`.
#[test]
fn incremental_interest() {
    let mut h = H::new();
    h.join("r1", "u1");
    h.join("r1", "u2");
    h.join("r2", "u3");
    let (_, t) = h.names("u2", None);
    for u in ["u1", "u2", "u3"] {
        h.put(u, Online, None);
    }
    assert_eq!(h.names("u2", Some(t)).0, names(&["u1", "u2"]));
}

/// Synapse: `tests/handlers/test_presence.py::test_excluded_rooms_not_routed` and
/// `tests/handlers/test_presence.py::test_incremental_interest_excluded_room`.
#[test]
fn excluded_rooms() {
    let mut h = H::with(|c| c.exclude_rooms_from_presence = vec!["!ex:test".into()]);
    h.join("ex", "u1");
    h.join("ex", "u2");
    let u2 = h.u("u2");
    h.e.set_listening(u2, true);
    let u1 = h.u("u1");
    h.e.set_listening(u1, true);
    let (_, t) = h.names("u2", None);
    let fx = h.put("u1", Online, None);
    assert_eq!(
        fx.wake,
        vec![u1],
        "test_excluded_rooms_not_routed: only the user itself is woken"
    );
    assert_eq!(h.names("u2", Some(t)).0, Vec::<String>::new());
    assert!(!h.e.shares_room(u1, u2));
    h.join("normal", "u1");
    h.join("normal", "u2");
    let (_, t) = h.names("u2", None);
    h.put("u1", Unavailable, None);
    assert_eq!(h.names("u2", Some(t)).0, names(&["u1"]));
    assert!(h.e.shares_room(u1, u2));
}

#[test]
fn newly_sharing_a_room_brings_current_state_both_ways() {
    let mut h = H::new();
    h.join("r", "alice");
    h.put("alice", Online, Some("here"));
    h.put("bob", Unavailable, None);
    let (_, ta) = h.names("alice", None);
    let (_, tb) = h.names("bob", None);
    h.put("bob", Offline, None);
    let (_, tb) = h.names("bob", Some(tb));
    h.join("r", "bob");
    // Bob joined: he gets alice even though she did not change (but not himself: his own
    // join is not news to him); alice gets bob (offline).
    assert_eq!(h.names("bob", Some(tb)).0, names(&["alice"]));
    assert_eq!(h.names("alice", Some(ta)).0, names(&["bob"]));
}

#[test]
fn leaving_stops_updates() {
    let mut h = H::new();
    h.join("r", "alice");
    h.join("r", "bob");
    let (_, t) = h.names("bob", None);
    h.e.leave(&room("r"), &uid("alice"));
    h.put("alice", Online, None);
    assert_eq!(h.names("bob", Some(t)).0, Vec::<String>::new());
    let (a, b) = (h.u("alice"), h.u("bob"));
    assert!(!h.e.shares_room(a, b));
}

#[test]
fn all_user_gets_everything_but_blacklisted_and_own_updates() {
    let mut h = H::new();
    h.example_router(&["gobbler"], &["blocked"]);
    h.join("ra", "alice");
    h.join("rb", "bob");
    h.join("rc", "blocked");
    let (_, t) = h.names("gobbler", None);
    h.put("alice", Online, Some("from alice"));
    h.put("blocked", Online, None);
    let (seen, t) = h.names("gobbler", Some(t));
    assert_eq!(seen, names(&["alice"]));
    h.put("bob", Unavailable, None);
    h.put("alice", Offline, None);
    let (seen, t) = h.names("gobbler", Some(t));
    assert_eq!(seen, names(&["alice", "bob"]), "offline updates included");
    h.put("gobbler", Online, None);
    assert_eq!(h.names("gobbler", Some(t)).0, names(&["gobbler"]));
    // Normal users see nothing of non-room-mates, nor the gobbler.
    assert_eq!(h.names("alice", None).0, Vec::<String>::new());
}

#[test]
fn routed_presence_is_additive_to_rooms() {
    // Deliberate difference 1: the reference drops a blacklisted room-mate for an All user.
    let mut h = H::new();
    h.example_router(&["gobbler"], &["blocked"]);
    h.join("r", "gobbler");
    h.join("r", "blocked");
    let (_, t) = h.names("gobbler", None);
    h.put("blocked", Online, None);
    assert_eq!(h.names("gobbler", Some(t)).0, names(&["blocked"]));
    assert_eq!(h.names("gobbler", None).0, names(&["blocked"]));
}

#[test]
fn roommate_and_router_user_gets_one_entry() {
    let mut h = H::new();
    h.example_router(&["gobbler"], &[]);
    h.join("r", "gobbler");
    h.join("r", "alice");
    let (_, t) = h.names("gobbler", None);
    h.put("alice", Online, None);
    let (states, _) = h.read("gobbler", Some(t));
    assert_eq!(states.len(), 1);
}

#[test]
fn all_readers_at_the_same_position_share_one_router_call() {
    let mut h = H::new();
    h.example_router(&["g1", "g2", "g3"], &[]);
    let toks: Vec<_> = ["g1", "g2", "g3"]
        .iter()
        .map(|g| h.names(g, None).1)
        .collect();
    h.put("alice", Online, None);
    let calls_before: u64 = h
        .routers
        .stats()
        .map(|(_, s)| s.calls.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    for (g, t) in ["g1", "g2", "g3"].iter().zip(toks) {
        assert_eq!(h.names(g, Some(t)).0, names(&["alice"]));
    }
    let calls_after: u64 = h
        .routers
        .stats()
        .map(|(_, s)| s.calls.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    // Three get_interested_users calls and one get_users_for_states call.
    assert_eq!(calls_after - calls_before, 4);
}

/// Synapse's `tests/module_api/test_api.py::test_send_local_online_presence_to`, with the
/// reference's bugs fixed.
#[test]
fn full_snapshot_once_per_token() {
    let mut h = H::new();
    h.join("r", "receiver");
    h.join("r", "sender");
    h.put("sender", Online, Some("I'm online!"));
    let (seen, t1) = h.names("receiver", None);
    assert_eq!(seen, names(&["sender"]));
    let (seen, t1b) = h.names("receiver", Some(t1));
    assert!(seen.is_empty());
    let (_, t2) = h.names("receiver", None);
    let r = h.u("receiver");
    let fx = h.e.send_full_presence_to(&[r]);
    assert_eq!(fx.snapshot_targets.len(), 1);
    assert_eq!(
        h.get("sender").status_msg.as_deref(),
        Some("I'm online!"),
        "no status wiped"
    );
    let (seen, t3) = h.names("receiver", Some(t1b));
    assert_eq!(seen, names(&["sender"]));
    let (seen, _) = h.names("receiver", Some(t2));
    assert_eq!(
        seen,
        names(&["sender"]),
        "each token gets the snapshot once"
    );
    assert!(
        h.names("receiver", Some(t3)).0.is_empty(),
        "no second burst"
    );
    h.put("sender", Offline, Some("I slink back into the darkness."));
    let (seen, t4) = h.names("receiver", Some(t3));
    assert_eq!(seen, names(&["sender"]));
    h.e.send_full_presence_to(&[r]);
    assert!(
        h.names("receiver", Some(t4)).0.is_empty(),
        "offline users are never in a snapshot"
    );
}

#[test]
fn snapshot_does_not_hide_users_who_went_offline() {
    // The reference's `PresenceEventSource.get_new_events` replaces the incremental sync by a
    // snapshot without offline users, so offline changes were lost.
    let mut h = H::new();
    h.join("r", "receiver");
    h.join("r", "a");
    h.join("r", "b");
    h.put("a", Online, None);
    h.put("b", Online, None);
    let (_, t) = h.names("receiver", None);
    h.put("b", Offline, None);
    let r = h.u("receiver");
    h.e.send_full_presence_to(&[r]);
    let (states, _) = h.read("receiver", Some(t));
    let b = states
        .iter()
        .find(|s| s.user_id == uid("b"))
        .expect("b reported");
    assert_eq!(b.state, Offline);
    assert!(states.iter().any(|s| s.user_id == uid("a")));
}

#[test]
fn interested_users_set_adds_routed_users() {
    struct Pairs;
    #[presence_router::async_trait]
    impl presence_router::PresenceRouter for Pairs {
        async fn get_users_for_states(
            &self,
            states: &presence_router::StateBatch,
        ) -> Result<presence_router::UserStates, presence_router::RouterError> {
            let set = states.select(|s| s.user_id == uid("alice"));
            Ok([(uid("bob"), set)].into_iter().collect())
        }
        async fn get_interested_users(
            &self,
            user_id: &presence_router::UserId,
        ) -> Result<presence_router::InterestedUsers, presence_router::RouterError> {
            Ok(if *user_id == uid("bob") {
                presence_router::InterestedUsers::Users([uid("alice")].into_iter().collect())
            } else {
                presence_router::InterestedUsers::none()
            })
        }
    }
    let mut h = H::new();
    h.routers.push("pairs", std::sync::Arc::new(Pairs));
    let bob = h.u("bob");
    h.e.set_listening(bob, true);
    let (_, t) = h.names("bob", None);
    let fx = h.put("alice", Online, None);
    assert!(fx.wake.contains(&bob), "routed recipients are woken");
    assert_eq!(h.names("bob", Some(t)).0, names(&["alice"]));
    assert_eq!(h.names("bob", None).0, names(&["alice"]));
    let (a, b) = (h.u("alice"), h.u("bob"));
    assert!(h.e.can_see(b, a, true));
    assert!(!h.e.can_see(a, b, false));
}

#[test]
fn remote_members_share_rooms() {
    let mut h = H::new();
    h.join("r", "alice");
    h.join("r", "far:remote");
    let (_, t) = h.names("alice", None);
    h.run(vec![Input::Remote {
        origin: presence_router::ServerName::parse("remote").unwrap(),
        entries: vec![presence_engine::RemotePresence {
            user_id: "@far:remote".into(),
            presence: "online".into(),
            last_active_ago: None,
            status_msg: None,
            currently_active: None,
        }],
    }]);
    assert_eq!(h.names("alice", Some(t)).0, names(&["far:remote"]));
}
