//! Fuzz entry point (feature `fuzzing`): a Python router's answers, as `convert.rs` reads
//! them. The `fuzz/` workspace calls it; the unit test below replays the committed corpus so
//! CI runs it on stable.
//!
//! The input is a Python literal (`ast.literal_eval`: dicts, sets, frozensets, lists,
//! tuples, strings, numbers, `None`; nothing is executed), in which the strings `"$0"` to
//! `"$2"` stand for the records of the batch the router was given. It is read both as a
//! `get_users_for_states` answer and as a `get_interested_users` answer: either is accepted
//! or refused with a reason, never a panic, and what is accepted only names states of the
//! batch and valid user IDs.

use std::sync::{Arc, OnceLock};

use presence_router::{Millis, PresenceState, StateBatch, UserId, UserPresenceState};
use pyo3::{prelude::*, types::PyModule};

use crate::{
    convert::{StateObjects, interested_from_py, users_from_py},
    router::PythonRouterStats,
};

/// Replaces the `"$N"` placeholders of a literal with the batch's records, recursively.
const SUBSTITUTE: &str = r#"
def substitute(value, records, depth=0):
    if depth > 50:
        return value
    if isinstance(value, str) and value.startswith("$") and value[1:].isdigit():
        i = int(value[1:])
        return records[i] if i < len(records) else value
    if isinstance(value, dict):
        return {substitute(k, records, depth + 1): substitute(v, records, depth + 1)
                for k, v in value.items()}
    if isinstance(value, (set, frozenset, list, tuple)):
        items = [substitute(v, records, depth + 1) for v in value]
        try:
            return type(value)(items)
        except TypeError:
            return value
    return value
"#;

/// The batch every answer is read against.
fn batch() -> StateBatch {
    let state = |user: &str, state, msg: Option<&str>| {
        let mut s = UserPresenceState::offline(
            UserId::parse(user).unwrap_or_else(|_| unreachable!("a valid literal user ID")),
        );
        s.state = state;
        s.status_msg = msg.map(Arc::from);
        s.last_active_ts = 1_700_000_000_000 as Millis;
        s
    };
    StateBatch::new(vec![
        state("@alice:test", PresenceState::Online, Some("hi")),
        state("@bob:test", PresenceState::Unavailable, None),
        state("@carol:remote.example", PresenceState::Offline, None),
    ])
}

/// `fuzz/fuzz_targets/router_answer.rs`.
pub fn router_answer(data: &[u8]) {
    static SETUP: OnceLock<()> = OnceLock::new();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    Python::attach(|py| {
        SETUP.get_or_init(|| {
            if let Err(e) = crate::shim::install(py) {
                panic!("the embedded synapse package does not import: {e}");
            }
        });
        let Ok(class) = py
            .import("synapse.api.presence")
            .and_then(|m| m.getattr("UserPresenceState"))
        else {
            panic!("synapse.api.presence.UserPresenceState is missing");
        };
        let states = match StateObjects::new(py, &class) {
            Ok(s) => s,
            Err(e) => panic!("StateObjects: {e}"),
        };
        let batch = batch();
        let prepared = match states.prepare(py, &batch) {
            Ok(p) => p,
            Err(e) => panic!("preparing the batch: {e}"),
        };
        let Ok(value) = py
            .import("ast")
            .and_then(|ast| ast.call_method1("literal_eval", (text,)))
        else {
            // Not a literal (or too deep for the parser): not an answer a router can give.
            return;
        };
        let helper = PyModule::from_code(
            py,
            &std::ffi::CString::new(SUBSTITUTE).unwrap_or_default(),
            c"<presenced>/fuzz_substitute.py",
            c"presenced_fuzz_substitute",
        );
        let value = match helper.and_then(|m| {
            m.getattr("substitute")?
                .call1((value.clone(), prepared.as_list(py)?))
        }) {
            Ok(v) => v,
            Err(_) => value,
        };
        let stats = PythonRouterStats::default();
        if let Ok(users) = users_from_py(py, &value, &prepared, &states, "fuzz", &stats) {
            for (user, set) in users.iter() {
                assert!(UserId::parse(user.as_str()).is_ok(), "{user}");
                assert!(
                    set.batch().same_batch(&batch),
                    "{user}'s set is of another batch"
                );
                assert!(set.indices().all(|i| i < batch.len()), "{user}: {set:?}");
            }
        }
        let _ = interested_from_py(&value, "fuzz", &stats);
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn router_answer_corpus_replays() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fuzz/corpus/router_answer"
        );
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            super::router_answer(&std::fs::read(&path).unwrap());
            n += 1;
        }
        assert!(n > 0, "no corpus in {dir}");
    }
}
