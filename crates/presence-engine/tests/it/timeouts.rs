//! Timeouts, after the reference's `PresenceHandlerInitTestCase`,
//! `PresenceConfigurableTimersTestCase` and `PresenceHandlerTestCase` timeout cases
//! (`tests/handlers/test_presence.py`), plus on-time firing.

use presence_engine::{Input, PresenceMode, Timers};
use presence_router::{PresenceState::*, UserPresenceState};

use crate::harness::*;

fn restored_online(h: &mut H) {
    let u = uid("test");
    let row = UserPresenceState {
        state: Online,
        last_active_ts: h.now,
        last_federation_update_ts: h.now,
        last_user_sync_ts: h.now,
        currently_active: true,
        ..UserPresenceState::offline(u)
    };
    let applied = h.e.restore(h.now, vec![(1, row)], vec![]);
    assert!(applied.batch().is_none());
}

/// Synapse:
/// `tests/handlers/test_presence.py::PresenceHandlerInitTestCase::test_restored_presence_idles`.
#[test]
fn restored_presence_idles() {
    let mut h = H::new();
    restored_online(&mut h);
    assert_eq!(h.state("test"), Online);
    h.advance(29_000);
    assert_eq!(h.state("test"), Online);
    h.advance(2_000);
    assert_eq!(
        h.state("test"),
        Offline,
        "offline within a second of the 30 s timeout"
    );
}

/// Synapse:
/// `tests/handlers/test_presence.py::PresenceHandlerInitTestCase::test_restored_presence_online_after_sync`.
#[test]
fn restored_presence_online_after_sync() {
    for (x, immediately, later) in [
        (Busy, Busy, Busy),
        (Online, Online, Online),
        (Unavailable, Online, Unavailable),
        (Offline, Online, Offline),
    ] {
        let mut h = H::new();
        restored_online(&mut h);
        h.advance(15_000);
        h.sync_start("test", "dev-1", x);
        assert_eq!(h.state("test"), immediately, "{x} immediately");
        h.advance(16_000);
        assert_eq!(h.state("test"), later, "{x} after 15 s more");
    }
}

fn configured() -> H {
    H::timers(Timers {
        last_active_granularity: 120_000,
        sync_online_timeout: 180_000,
        idle_timeout: 1_200_000,
        ..Timers::default()
    })
}

/// Synapse:
/// `tests/handlers/test_presence.py::PresenceConfigurableTimersTestCase::test_sync_online_timeout`.
#[test]
fn sync_online_timeout() {
    let mut h = configured();
    h.sync_start("test", "dev-1", Online);
    h.sync_end("test", "dev-1");
    h.advance(60_000);
    assert_eq!(h.state("test"), Online);
    h.advance(121_000);
    assert_eq!(h.state("test"), Offline);
}

/// Synapse:
/// `tests/handlers/test_presence.py::PresenceConfigurableTimersTestCase::test_idle_timeout`.
#[test]
fn idle_timeout() {
    let mut h = configured();
    h.sync_start("test", "dev-1", Online);
    h.advance(600_000);
    assert_eq!(h.state("test"), Online);
    h.advance(601_000);
    assert_eq!(h.state("test"), Unavailable);
}

/// Synapse:
/// `tests/handlers/test_presence.py::PresenceConfigurableTimersTestCase::test_last_active_granularity`.
#[test]
fn last_active_granularity() {
    let mut h = configured();
    h.sync_start("test", "dev-1", Online);
    h.sync_end("test", "dev-1");
    h.advance(90_000);
    let s = h.get("test");
    assert_eq!((s.state, s.currently_active), (Online, true));
    h.advance(60_000);
    let s = h.get("test");
    assert_eq!((s.state, s.currently_active), (Online, false));
}

/// Synapse:
/// `tests/handlers/test_presence.py::PresenceHandlerTestCase::test_user_goes_offline_by_timeout_status_msg_remain`.
#[test]
fn offline_by_timeout_status_msg_remains() {
    let mut h = H::new();
    h.put("test", Online, Some("I'm here!"));
    h.advance(5_000);
    let s = h.get("test");
    assert_eq!(
        (s.state, s.status_msg.as_deref()),
        (Online, Some("I'm here!"))
    );
    h.advance(27_000);
    let s = h.get("test");
    assert_eq!(
        (s.state, s.status_msg.as_deref()),
        (Offline, Some("I'm here!"))
    );
}

/// Synapse:
/// `tests/handlers/test_presence.py::PresenceHandlerTestCase::test_untracked_does_not_idle`.
#[test]
fn untracked_does_not_idle() {
    let mut h = H::mode(PresenceMode::Untracked);
    let user = h.u("test");
    h.run(vec![Input::Force {
        user,
        state: Online,
        status_msg: None,
    }]);
    assert_eq!(h.state("test"), Online);
    assert_eq!(h.e.next_deadline(), None, "untracked mode keeps no timers");
    h.advance(3_600_000);
    assert_eq!(h.state("test"), Online);
    // Requests are accepted and ignored.
    h.put("test", Unavailable, None);
    assert_eq!(h.state("test"), Online);
}

/// Synapse: `tests/handlers/test_presence.py::PresenceUpdateTestCase::test_override`.
#[test]
fn untracked_never_schedules() {
    for from in [Online, Unavailable, Busy, Offline] {
        for to in [Online, Unavailable, Busy, Offline] {
            let mut h = H::mode(PresenceMode::Untracked);
            let user = h.u("test");
            h.run(vec![Input::Force {
                user,
                state: from,
                status_msg: None,
            }]);
            h.run(vec![Input::Force {
                user,
                state: to,
                status_msg: None,
            }]);
            assert_eq!(h.e.next_deadline(), None, "{from} -> {to}");
        }
    }
}

#[test]
fn timeouts_fire_on_time_not_on_a_cadence() {
    let mut h = H::new();
    h.put("a", Online, None);
    let deadline = h.e.next_deadline().unwrap();
    // A PUT without a sync: the first deadline is the sync timeout, to the millisecond.
    assert_eq!(deadline, h.now + 30_000 + 1);
    h.advance(30_000);
    assert_eq!(h.state("a"), Online);
    h.advance(1_000);
    assert_eq!(
        h.state("a"),
        Offline,
        "offline one second after the 30 s sync timeout"
    );
}

#[test]
fn remote_state_expires_after_federation_timeout() {
    let mut h = H::new();
    h.run(vec![Input::Remote {
        origin: presence_router::ServerName::parse("remote").unwrap(),
        entries: vec![presence_engine::RemotePresence {
            user_id: "@r:remote".into(),
            presence: "online".into(),
            last_active_ago: Some(10),
            status_msg: Some("far".into()),
            currently_active: Some(true),
        }],
    }]);
    assert_eq!(h.state("r:remote"), Online);
    h.advance(1_799_000);
    assert_eq!(h.state("r:remote"), Online);
    h.advance(2_000);
    let s = h.get("r:remote");
    assert_eq!((s.state, s.status_msg.as_deref()), (Offline, Some("far")));
}

#[test]
fn forced_local_state_times_out_when_tracked() {
    // The reference's: a state forced with no device (`ModuleApi.set_presence_for_users`)
    // never timed out, as its `handle_timeout` moves a state only through device changes.
    let mut h = H::new();
    let user = h.u("test");
    h.run(vec![Input::Force {
        user,
        state: Online,
        status_msg: Some("set by server".into()),
    }]);
    assert_eq!(h.state("test"), Online);
    h.advance(31_000);
    assert_eq!(h.state("test"), Offline);
}
