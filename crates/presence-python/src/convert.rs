//! Conversions between Rust values and the Python values modules see, on the Python thread.
//!
//! A batch becomes a list of `UserPresenceState` records, and the router's answer must name
//! records of that list: each returned record is matched to its position in the batch by
//! identity first (the record objects Presenced created), then by value (a router that
//! rebuilt an equal record). A record equal to none of the batch was invented by the router:
//! it is dropped, logged and counted, and the rest of the answer stands. A value of the wrong
//! type (a list where a set belongs, a dict that is not one) makes the whole answer invalid,
//! as for a Rust router: nothing of it is merged.

use std::{collections::BTreeSet, sync::atomic::Ordering};

use presence_router::{
    InterestedUsers, PresenceState, RouterError, StateBatch, StateSet, UserId, UserStates,
};
use pyo3::{
    prelude::*,
    types::{PyBool, PyDict, PyFrozenSet, PyList, PySet, PyString, PyTuple},
};
use rustc_hash::FxHashMap;
use serde_json::Value;

use crate::PythonRouterStats;

/// The value of `PresenceRouter.ALL_USERS`.
const ALL_USERS: &str = "ALL";

/// A JSON value (a module's `config:` block) as the equivalent Python value.
pub(crate) fn json_to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (key, item) in map {
                dict.set_item(key, json_to_py(py, item)?)?;
            }
            dict.into_any()
        }
    })
}

/// The Python `UserPresenceState` class, and the state strings, made once.
pub(crate) struct StateObjects {
    class: Py<PyAny>,
    /// `UserPresenceState._make`: builds a record from a 7-tuple.
    make: Py<PyAny>,
    offline: Py<PyString>,
    unavailable: Py<PyString>,
    online: Py<PyString>,
    busy: Py<PyString>,
}

/// A batch as handed to a Python router, with what is needed to read the answer back.
pub(crate) struct PreparedBatch {
    batch: StateBatch,
    /// The records, in batch order. Holding them keeps their addresses unique until the
    /// answer is read.
    records: Py<PyTuple>,
    /// Record address → position in the batch.
    by_address: FxHashMap<usize, usize>,
}

impl StateObjects {
    pub(crate) fn new(py: Python<'_>, class: &Bound<'_, PyAny>) -> PyResult<Self> {
        let name = |s: PresenceState| PyString::intern(py, s.as_str()).unbind();
        Ok(Self {
            class: class.clone().unbind(),
            make: class.getattr("_make")?.unbind(),
            offline: name(PresenceState::Offline),
            unavailable: name(PresenceState::Unavailable),
            online: name(PresenceState::Online),
            busy: name(PresenceState::Busy),
        })
    }

    fn state_name<'py>(&self, py: Python<'py>, state: PresenceState) -> Bound<'py, PyString> {
        match state {
            PresenceState::Offline => self.offline.bind(py).clone(),
            PresenceState::Unavailable => self.unavailable.bind(py).clone(),
            PresenceState::Online => self.online.bind(py).clone(),
            PresenceState::Busy => self.busy.bind(py).clone(),
            other => PyString::new(py, other.as_str()),
        }
    }

    /// Builds the Python records of `batch`.
    pub(crate) fn prepare(&self, py: Python<'_>, batch: &StateBatch) -> PyResult<PreparedBatch> {
        let make = self.make.bind(py);
        let mut records = Vec::with_capacity(batch.len());
        let mut by_address = FxHashMap::default();
        by_address.reserve(batch.len());
        for (i, s) in batch.iter().enumerate() {
            let fields = (
                PyString::new(py, s.user_id.as_str()),
                self.state_name(py, s.state),
                s.last_active_ts,
                s.last_federation_update_ts,
                s.last_user_sync_ts,
                s.status_msg.as_deref(),
                s.currently_active,
            );
            let record = make.call1((fields,))?;
            by_address.insert(record.as_ptr() as usize, i);
            records.push(record);
        }
        Ok(PreparedBatch {
            batch: batch.clone(),
            records: PyTuple::new(py, &records)?.unbind(),
            by_address,
        })
    }
}

impl PreparedBatch {
    /// A fresh list of the records, to give to the router (which may change the list).
    pub(crate) fn as_list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.records.bind(py).iter())
    }

    /// Position in the batch of a record equal to `record`, looked up in `index` (built on
    /// first use: most routers return the records they were given).
    fn position_by_value<'py>(
        &self,
        py: Python<'py>,
        index: &mut Option<Bound<'py, PyDict>>,
        record: &Bound<'py, PyAny>,
    ) -> PyResult<Option<usize>> {
        let index = match index {
            Some(index) => index,
            None => {
                let built = PyDict::new(py);
                for (i, r) in self.records.bind(py).iter().enumerate() {
                    // The first of equal records stands for all of them.
                    if !built.contains(&r)? {
                        built.set_item(r, i)?;
                    }
                }
                index.insert(built)
            }
        };
        index.get_item(record)?.map(|i| i.extract()).transpose()
    }
}

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "object".to_owned())
}

fn is_set(value: &Bound<'_, PyAny>) -> bool {
    value.is_instance_of::<PySet>() || value.is_instance_of::<PyFrozenSet>()
}

fn python_error(e: PyErr) -> RouterError {
    RouterError::Failed(format!("reading the answer failed: {e}"))
}

/// Reads a `get_users_for_states` answer: a dict of user ID → set of records of the batch.
pub(crate) fn users_from_py(
    py: Python<'_>,
    answer: &Bound<'_, PyAny>,
    batch: &PreparedBatch,
    states: &StateObjects,
    router: &str,
    stats: &PythonRouterStats,
) -> Result<UserStates, RouterError> {
    let dict = answer.cast::<PyDict>().map_err(|_| {
        invalid(
            stats,
            format!(
                "get_users_for_states returned {}, not a dict of user IDs to sets",
                type_name(answer)
            ),
        )
    })?;
    let class = states.class.bind(py);
    let mut out = UserStates::with_capacity(dict.len());
    // Routers often give several users the same set object: read it once.
    let mut seen_sets: FxHashMap<usize, Option<StateSet>> = FxHashMap::default();
    let mut value_index = None;
    let mut invented = 0u64;
    let mut bad_users = Vec::new();
    for (key, value) in dict.iter() {
        let Ok(key) = key.cast::<PyString>() else {
            return Err(invalid(
                stats,
                format!(
                    "get_users_for_states returned a {} key; keys must be user ID strings",
                    type_name(&key)
                ),
            ));
        };
        let key = key.to_str().map_err(python_error)?;
        if !is_set(&value) {
            return Err(invalid(
                stats,
                format!(
                    "get_users_for_states returned a {} for {key:?}; values must be sets",
                    type_name(&value)
                ),
            ));
        }
        let address = value.as_ptr() as usize;
        let set = match seen_sets.get(&address) {
            Some(set) => set.clone(),
            None => {
                let mut positions = Vec::new();
                for record in value.try_iter().map_err(python_error)? {
                    let record = record.map_err(python_error)?;
                    if let Some(&i) = batch.by_address.get(&(record.as_ptr() as usize)) {
                        positions.push(i);
                        continue;
                    }
                    if !record.is_instance(class).map_err(python_error)? {
                        return Err(invalid(
                            stats,
                            format!(
                                "get_users_for_states returned a set holding a {} for {key:?}; \
                                 sets must hold UserPresenceState records",
                                type_name(&record)
                            ),
                        ));
                    }
                    match batch
                        .position_by_value(py, &mut value_index, &record)
                        .map_err(python_error)?
                    {
                        Some(i) => positions.push(i),
                        None => invented += 1,
                    }
                }
                let set = (!positions.is_empty()).then(|| batch.batch.from_indices(positions));
                seen_sets.insert(address, set.clone());
                set
            }
        };
        match UserId::parse(key) {
            Ok(user) => {
                if let Some(set) = set {
                    out.insert(user, set);
                }
            }
            Err(_) => bad_users.push(key.to_owned()),
        }
    }
    if invented > 0 {
        stats.foreign_states.fetch_add(invented, Ordering::Relaxed);
        tracing::warn!(
            router,
            states = invented,
            "Python presence router returned states that are not in the batch it was given; \
             they are ignored."
        );
    }
    if !bad_users.is_empty() {
        stats
            .invalid_user_ids
            .fetch_add(bad_users.len() as u64, Ordering::Relaxed);
        tracing::warn!(
            router,
            users = ?bad_users,
            "Python presence router routed states to strings that are not user IDs; they are ignored."
        );
    }
    Ok(out)
}

/// Reads a `get_interested_users` answer: a set of user IDs, or `"ALL"`.
pub(crate) fn interested_from_py(
    answer: &Bound<'_, PyAny>,
    router: &str,
    stats: &PythonRouterStats,
) -> Result<InterestedUsers, RouterError> {
    if let Ok(text) = answer.cast::<PyString>() {
        let text = text.to_str().map_err(python_error)?;
        if text == ALL_USERS {
            return Ok(InterestedUsers::All);
        }
        return Err(invalid(
            stats,
            format!(
                "get_interested_users returned the string {text:?}; the only string allowed is \
                 {ALL_USERS:?} (PresenceRouter.ALL_USERS)"
            ),
        ));
    }
    if !is_set(answer) {
        return Err(invalid(
            stats,
            format!(
                "get_interested_users returned {}, not a set of user IDs or \
                 PresenceRouter.ALL_USERS",
                type_name(answer)
            ),
        ));
    }
    let mut users = BTreeSet::new();
    let mut bad_users = Vec::new();
    for item in answer.try_iter().map_err(python_error)? {
        let item = item.map_err(python_error)?;
        let Ok(text) = item.cast::<PyString>() else {
            return Err(invalid(
                stats,
                format!(
                    "get_interested_users returned a set holding a {}; it must hold user ID strings",
                    type_name(&item)
                ),
            ));
        };
        let text = text.to_str().map_err(python_error)?;
        match UserId::parse(text) {
            Ok(user) => {
                users.insert(user);
            }
            Err(_) => bad_users.push(text.to_owned()),
        }
    }
    if !bad_users.is_empty() {
        stats
            .invalid_user_ids
            .fetch_add(bad_users.len() as u64, Ordering::Relaxed);
        tracing::warn!(
            router,
            users = ?bad_users,
            "Python presence router named strings that are not user IDs as interesting; they are ignored."
        );
    }
    Ok(InterestedUsers::Users(users))
}

fn invalid(stats: &PythonRouterStats, message: String) -> RouterError {
    stats.invalid_answers.fetch_add(1, Ordering::Relaxed);
    RouterError::Invalid(message)
}
