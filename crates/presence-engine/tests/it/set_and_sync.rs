//! Explicit sets and syncs: the reference's `PresenceHandlerTestCase` cases from
//! `test_user_goes_offline_manually_with_no_status_msg` to
//! `test_set_presence_from_syncing_keeps_busy` (`tests/handlers/test_presence.py`).

use presence_router::{PresenceState, PresenceState::*};

use crate::harness::*;

/// Synapse:
/// `tests/handlers/test_presence.py::PresenceHandlerTestCase::test_user_goes_offline_manually_with_no_status_msg`.
#[test]
fn offline_manually_without_status_clears_it() {
    let mut h = H::new();
    h.put("test", Online, Some("msg"));
    h.put("test", Offline, None);
    let s = h.get("test");
    assert_eq!((s.state, s.status_msg), (Offline, None));
}

/// Synapse:
/// `tests/handlers/test_presence.py::PresenceHandlerTestCase::test_user_goes_offline_manually_with_status_msg`.
#[test]
fn offline_manually_with_status() {
    let mut h = H::new();
    h.put("test", Online, Some("msg"));
    h.put("test", Offline, Some("And now here."));
    let s = h.get("test");
    assert_eq!(
        (s.state, s.status_msg.as_deref()),
        (Offline, Some("And now here."))
    );
}

/// Synapse:
/// `tests/handlers/test_presence.py::PresenceHandlerTestCase::test_user_reset_online_with_no_status` and
/// `tests/handlers/test_presence.py::PresenceHandlerTestCase::test_set_presence_with_status_msg_none`.
#[test]
fn reset_online_without_status() {
    let mut h = H::new();
    h.put("test", Online, Some("msg"));
    h.put("test", Online, None);
    assert_eq!(h.get("test").status_msg, None);
    h.put("test", Online, Some("x"));
    h.put("test", Online, Some(""));
    assert_eq!(
        h.get("test").status_msg,
        None,
        "an empty status is no status"
    );
}

/// Synapse:
/// `tests/handlers/test_presence.py::PresenceHandlerTestCase::test_set_presence_from_syncing_not_set`.
#[test]
fn sync_with_offline_leaves_presence_alone() {
    let mut h = H::new();
    h.put("test", Unavailable, Some("msg"));
    h.sync_start("test", "dev-2", Offline);
    let s = h.get("test");
    assert_eq!(
        (s.state, s.status_msg.as_deref()),
        (Unavailable, Some("msg"))
    );
}

/// Synapse:
/// `tests/handlers/test_presence.py::PresenceHandlerTestCase::test_set_presence_from_syncing_is_set` and
/// `tests/handlers/test_presence.py::PresenceHandlerTestCase::test_set_presence_from_syncing_keeps_status`.
#[test]
fn sync_sets_presence_and_keeps_status() {
    let mut h = H::new();
    h.put("test", Unavailable, Some("msg"));
    h.sync_start("test", "dev-1", Online);
    let s = h.get("test");
    assert_eq!((s.state, s.status_msg.as_deref()), (Online, Some("msg")));
}

fn st(c: char) -> PresenceState {
    match c {
        'B' => Busy,
        'O' => Online,
        'U' => Unavailable,
        _ => Offline,
    }
}

/// (d1, d2, e1, e2, e3) rows of the reference's multi-device tables.
const ROWS: [(char, char, char, char, char); 16] = [
    ('B', 'B', 'B', 'B', 'B'),
    ('O', 'O', 'O', 'O', 'U'),
    ('U', 'U', 'U', 'U', 'U'),
    ('-', '-', '-', '-', '-'),
    ('B', 'O', 'B', 'B', 'B'),
    ('B', 'U', 'B', 'B', 'B'),
    ('B', '-', 'B', 'B', 'B'),
    ('O', 'U', 'O', 'U', 'U'),
    ('O', '-', 'O', 'U', 'U'),
    ('U', '-', 'U', 'U', 'U'),
    ('O', 'B', 'B', 'B', 'B'),
    ('U', 'B', 'B', 'B', 'B'),
    ('-', 'B', 'B', 'B', 'B'),
    ('U', 'O', 'O', 'O', 'U'),
    ('-', 'O', 'O', 'O', 'U'),
    ('-', 'U', 'U', 'U', 'U'),
];

/// Synapse:
/// `tests/handlers/test_presence.py::PresenceHandlerTestCase::test_set_presence_from_syncing_multi_device`.
#[test]
fn multi_device_syncing() {
    for (d1, d2, e1, e2, e3) in ROWS {
        let mut h = H::new();
        h.sync_start("test", "dev-1", st(d1));
        h.advance(150_000);
        h.sync_start("test", "dev-2", st(d2));
        assert_eq!(h.state("test"), st(e1), "e1 for {d1},{d2}");
        h.advance(151_000);
        assert_eq!(h.state("test"), st(e2), "e2 for {d1},{d2}");
        h.advance(150_000);
        assert_eq!(h.state("test"), st(e3), "e3 for {d1},{d2}");
    }
}

/// Synapse:
/// `tests/handlers/test_presence.py::PresenceHandlerTestCase::test_set_presence_from_non_syncing_multi_device`.
#[test]
fn multi_device_not_syncing() {
    for (d1, d2, e1, _, _) in ROWS {
        let mut h = H::new();
        h.sync_start("test", "dev-1", st(d1));
        h.sync_start("test", "dev-2", st(d2));
        assert_eq!(h.state("test"), st(e1), "e1 for {d1},{d2}");
        h.sync_end("test", "dev-1");
        h.advance(31_000);
        let any_busy = d1 == 'B' || d2 == 'B';
        let e2 = if any_busy { Busy } else { st(d2) };
        assert_eq!(h.state("test"), e2, "e2 for {d1},{d2}");
        h.sync_end("test", "dev-2");
        h.advance(if any_busy { 3_601_000 } else { 31_000 });
        assert_eq!(h.state("test"), Offline, "e3 for {d1},{d2}");
    }
}

/// Synapse:
/// `tests/handlers/test_presence.py::PresenceHandlerTestCase::test_set_presence_from_syncing_keeps_busy`.
#[test]
fn sync_keeps_busy() {
    let mut h = H::new();
    h.put("test", Busy, Some("I'm busy!"));
    h.sync_start("test", "dev-1", Online);
    assert_eq!(h.state("test"), Busy);
    h.advance(301_000);
    assert_eq!(h.state("test"), Busy);
    h.put("test", Online, Some("I'm busy!"));
    assert_eq!(h.state("test"), Online);
}
