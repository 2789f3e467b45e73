//! The reference's unit cases for `handle_update` (`PresenceUpdateTestCase`) and
//! `handle_timeout` (`PresenceTimeoutTestCase`) in `tests/handlers/test_presence.py`, against
//! the pure functions.

use super::*;

const NOW: Millis = 5_000_000;

fn t() -> Timers {
    Timers::default()
}

fn online(last_active: Millis) -> Record {
    Record {
        state: PresenceState::Online,
        last_active_ts: last_active,
        currently_active: true,
        ..Record::default()
    }
}

fn device(state: PresenceState, last_active: Millis, last_sync: Millis, syncing: bool) -> Devices {
    vec![Device {
        id: Some(DeviceId::parse("dev-1").unwrap()),
        state,
        last_active_ts: last_active,
        last_sync_ts: last_sync,
        syncing: u32::from(syncing),
        restored: false,
    }]
}

/// Synapse: `tests/handlers/test_presence.py::PresenceUpdateTestCase::test_offline_to_online`.
#[test]
fn offline_to_online() {
    let prev = Record::default();
    let new = Record {
        state: PresenceState::Online,
        last_active_ts: NOW,
        ..Record::default()
    };
    let u = handle_update(&prev, new, true, NOW, &t());
    assert!(u.notify);
    assert!(u.record.currently_active);
    assert_eq!(u.record.last_federation_update_ts, NOW);
    // Earliest check: currently_active expires after the granularity.
    assert_eq!(
        next_check(&u.record, None, true, NOW, &t()),
        Some(NOW + 60_000 + 1)
    );
}

/// Synapse: `tests/handlers/test_presence.py::PresenceUpdateTestCase::test_online_to_online`.
#[test]
fn online_to_online_pings() {
    let prev = online(NOW);
    let u = handle_update(&prev, online(NOW), true, NOW, &t());
    assert!(!u.notify);
    assert!(u.federation_ping, "the old last_federation_update_ts was 0");
    assert!(u.record.currently_active);
    assert_eq!(u.record.last_federation_update_ts, NOW);
}

/// Synapse:
/// `tests/handlers/test_presence.py::PresenceUpdateTestCase::test_online_to_online_last_active_noop`.
#[test]
fn online_to_online_last_active_noop() {
    let prev = online(NOW - 60_000 - 10);
    let u = handle_update(&prev, online(NOW), true, NOW, &t());
    assert!(!u.notify, "still active: nothing to tell");
    assert!(u.federation_ping);
    assert!(u.record.currently_active);
}

/// Synapse:
/// `tests/handlers/test_presence.py::PresenceUpdateTestCase::test_online_to_online_last_active`.
#[test]
fn online_to_online_last_active_expires() {
    let prev = online(NOW - 60_000 - 1);
    let u = handle_update(&prev, online(NOW - 60_000 - 1), true, NOW, &t());
    assert!(u.notify, "currently_active flips to false");
    assert!(!u.record.currently_active);
    // No granularity check any more: the next one is the idle timeout.
    let devs = device(PresenceState::Online, NOW - 60_001, NOW, true);
    assert_eq!(
        next_check(&u.record, Some(&devs), true, NOW, &t()),
        Some(NOW - 60_001 + 300_000 + 1)
    );
}

/// Synapse: `tests/handlers/test_presence.py::PresenceUpdateTestCase::test_remote_ping_timer`.
#[test]
fn remote_ping_timer() {
    let prev = Record {
        last_federation_update_ts: NOW,
        ..online(NOW)
    };
    let mut new = prev.clone();
    new.currently_active = false;
    let prev = Record {
        currently_active: false,
        ..prev
    };
    let u = handle_update(&prev, new, false, NOW, &t());
    assert!(!u.notify);
    assert!(!u.federation_ping);
    assert!(!u.record.currently_active);
    assert_eq!(
        next_check(&u.record, None, false, NOW, &t()),
        Some(NOW + 1_800_000 + 1)
    );
}

/// Synapse: `tests/handlers/test_presence.py::PresenceUpdateTestCase::test_online_to_offline`.
#[test]
fn online_to_offline() {
    let prev = online(NOW);
    let new = Record {
        state: PresenceState::Offline,
        ..prev.clone()
    };
    let u = handle_update(&prev, new, true, NOW, &t());
    assert!(u.notify);
    assert_eq!(u.record.last_federation_update_ts, NOW);
    assert_eq!(
        next_check(&u.record, None, true, NOW, &t()),
        None,
        "offline needs no timer"
    );
}

/// Synapse: `tests/handlers/test_presence.py::PresenceUpdateTestCase::test_online_to_idle`.
#[test]
fn online_to_idle() {
    let prev = online(NOW);
    let new = Record {
        state: PresenceState::Unavailable,
        ..prev.clone()
    };
    let u = handle_update(&prev, new, true, NOW, &t());
    assert!(u.notify);
    // Only the sync timeout remains relevant for an unavailable device.
    let devs = device(PresenceState::Unavailable, NOW, NOW, false);
    assert_eq!(
        next_check(&u.record, Some(&devs), true, NOW, &t()),
        Some(NOW + 30_000 + 1)
    );
}

/// Synapse: `tests/handlers/test_presence.py::PresenceUpdateTestCase::test_override`.
#[test]
fn override_all_permutations_notify_on_state_change() {
    for from in PresenceState::ALL {
        for to in PresenceState::ALL {
            let prev = Record {
                state: from,
                ..Record::default()
            };
            let new = Record {
                state: to,
                ..Record::default()
            };
            let u = handle_update(&prev, new, true, NOW, &t());
            assert_eq!(u.notify, from != to, "{from} -> {to}");
        }
    }
}

/// Synapse: `tests/handlers/test_presence.py::PresenceTimeoutTestCase::test_idle_timer`.
#[test]
fn idle_timer() {
    let rec = Record {
        status_msg: Some("msg".into()),
        last_user_sync_ts: NOW,
        ..online(NOW - 300_000 - 1)
    };
    let mut devs = device(PresenceState::Online, NOW - 300_001, NOW, false);
    let out = handle_timeout(&rec, Some(&mut devs), true, NOW, &t()).unwrap();
    assert_eq!(out.state, PresenceState::Unavailable);
    assert_eq!(out.status_msg.as_deref(), Some("msg"));
}

/// Synapse: `tests/handlers/test_presence.py::PresenceTimeoutTestCase::test_busy_no_idle`.
#[test]
fn busy_does_not_idle() {
    let rec = Record {
        state: PresenceState::Busy,
        last_user_sync_ts: NOW,
        ..online(NOW - 300_001)
    };
    let mut devs = device(PresenceState::Busy, NOW - 300_001, NOW, false);
    let out = handle_timeout(&rec, Some(&mut devs), true, NOW, &t()).unwrap();
    assert_eq!(out.state, PresenceState::Busy);
}

/// Synapse: `tests/handlers/test_presence.py::PresenceTimeoutTestCase::test_sync_timeout`.
#[test]
fn sync_timeout() {
    let rec = Record {
        status_msg: Some("m".into()),
        last_user_sync_ts: NOW - 30_001,
        ..online(0)
    };
    let mut devs = device(PresenceState::Online, 0, NOW - 30_001, false);
    let out = handle_timeout(&rec, Some(&mut devs), true, NOW, &t()).unwrap();
    assert_eq!(out.state, PresenceState::Offline);
    assert_eq!(
        out.status_msg.as_deref(),
        Some("m"),
        "timeouts keep the status"
    );
    assert!(devs.is_empty(), "the device is removed");
}

/// Synapse: `tests/handlers/test_presence.py::PresenceTimeoutTestCase::test_sync_online`.
#[test]
fn sync_online_while_syncing() {
    let rec = Record {
        last_user_sync_ts: NOW - 30_001,
        ..online(0)
    };
    let mut devs = device(PresenceState::Online, NOW, NOW - 30_001, true);
    let out = handle_timeout(&rec, Some(&mut devs), true, NOW, &t()).unwrap();
    assert_eq!(out.state, PresenceState::Online);
}

/// Synapse: `tests/handlers/test_presence.py::PresenceTimeoutTestCase::test_federation_ping`.
#[test]
fn federation_ping() {
    let rec = Record {
        last_user_sync_ts: NOW,
        last_federation_update_ts: NOW - 1_500_000 - 1,
        ..online(NOW)
    };
    let mut devs = device(PresenceState::Online, NOW, NOW, false);
    let out = handle_timeout(&rec, Some(&mut devs), true, NOW, &t()).unwrap();
    assert_eq!(out, rec);
}

/// Synapse: `tests/handlers/test_presence.py::PresenceTimeoutTestCase::test_no_timeout`.
#[test]
fn no_timeout() {
    let rec = Record {
        last_user_sync_ts: NOW,
        last_federation_update_ts: NOW,
        ..online(NOW)
    };
    let mut devs = device(PresenceState::Online, NOW, NOW, false);
    assert_eq!(handle_timeout(&rec, Some(&mut devs), true, NOW, &t()), None);
}

/// Synapse: `tests/handlers/test_presence.py::PresenceTimeoutTestCase::test_federation_timeout`.
#[test]
fn federation_timeout() {
    let rec = Record {
        status_msg: Some("away".into()),
        last_federation_update_ts: NOW - 1_800_000 - 1,
        ..online(NOW)
    };
    let out = handle_timeout(&rec, None, false, NOW, &t()).unwrap();
    assert_eq!(out.state, PresenceState::Offline);
    assert_eq!(out.status_msg.as_deref(), Some("away"));
}

/// Synapse: `tests/handlers/test_presence.py::PresenceTimeoutTestCase::test_last_active`.
#[test]
fn last_active_granularity_recheck() {
    let rec = Record {
        last_user_sync_ts: NOW,
        last_federation_update_ts: NOW,
        ..online(NOW - 60_000 - 1)
    };
    let mut devs = device(PresenceState::Online, NOW, NOW, false);
    assert_eq!(
        handle_timeout(&rec, Some(&mut devs), true, NOW, &t()),
        Some(rec)
    );
}

#[test]
fn should_notify_rules() {
    let g = 60_000;
    let a = online(1000);
    assert!(!should_notify(&a, &a, g));
    let b = Record {
        status_msg: Some("x".into()),
        ..a.clone()
    };
    assert!(should_notify(&a, &b, g));
    let c = Record {
        last_user_sync_ts: 99,
        ..a.clone()
    };
    assert!(
        !should_notify(&a, &c, g),
        "sync bookkeeping alone does not notify"
    );
    let d = Record {
        last_active_ts: 1000 + g + 1,
        ..a.clone()
    };
    assert!(!should_notify(&a, &d, g), "still currently active");
    let e = Record {
        last_active_ts: 1000 + g + 1,
        currently_active: false,
        ..a.clone()
    };
    assert!(should_notify(&a, &e, g));
    let off = Record::default();
    let off2 = Record {
        last_active_ts: g + 1,
        ..Record::default()
    };
    assert!(should_notify(&off, &off2, g));
}

#[test]
fn combine_prefers_priority() {
    use PresenceState::*;
    let mk = |s| Device {
        state: s,
        ..Device::new(None)
    };
    assert_eq!(combine(&[]), Offline);
    assert_eq!(combine(&[mk(Online), mk(Unavailable)]), Online);
    assert_eq!(combine(&[mk(Unavailable), mk(Busy)]), Busy);
    assert_eq!(combine(&[mk(Unavailable), mk(Offline)]), Unavailable);
}
