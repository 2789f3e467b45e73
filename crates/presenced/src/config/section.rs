//! A reader over one mapping of the configuration tree that records problems instead of
//! stopping at the first one.
//!
//! Each key is taken out of the mapping as it is read, so whatever is left when the section
//! is finished is, by construction, a key Presenced does not use. Sections that mirror the
//! reference homeserver report those keys as unknown (a warning: an operator's
//! `homeserver.yaml` carries many keys for features Presenced does not have); sections
//! Presenced owns reject them, since there a stray key is most likely a typo.

use std::{cell::RefCell, collections::BTreeSet, fmt};

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::ConfigProblem;

/// Problems, warnings and unknown keys collected while reading a configuration.
#[derive(Debug, Default)]
pub(super) struct Diagnostics {
    problems: RefCell<Vec<ConfigProblem>>,
    warnings: RefCell<Vec<ConfigProblem>>,
    unknown: RefCell<BTreeSet<String>>,
}

impl Diagnostics {
    pub(super) fn problem(&self, path: impl Into<String>, message: impl fmt::Display) {
        self.problems
            .borrow_mut()
            .push(ConfigProblem::new(path, message));
    }

    pub(super) fn warning(&self, path: impl Into<String>, message: impl fmt::Display) {
        self.warnings
            .borrow_mut()
            .push(ConfigProblem::new(path, message));
    }

    pub(super) fn has_problems(&self) -> bool {
        self.problem_count() > 0
    }

    pub(super) fn problem_count(&self) -> usize {
        self.problems.borrow().len()
    }

    /// Splits into (problems, warnings, unknown keys sorted).
    pub(super) fn into_parts(self) -> (Vec<ConfigProblem>, Vec<ConfigProblem>, Vec<String>) {
        (
            self.problems.into_inner(),
            self.warnings.into_inner(),
            self.unknown.into_inner().into_iter().collect(),
        )
    }
}

/// What to do with keys that are left over when a section is finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Leftovers {
    /// Report them once as unknown (reference homeserver sections).
    Report,
    /// Reject them as problems (sections Presenced owns).
    Reject,
}

/// Joins a parent path and a key: `a` + `b` → `a.b`, `` + `b` → `b`.
pub(super) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// A mapping being read.
pub(super) struct Section<'d> {
    diag: &'d Diagnostics,
    path: String,
    map: Map<String, Value>,
    leftovers: Leftovers,
}

impl<'d> Section<'d> {
    /// Reads `value` at `path` as a mapping; records a problem and returns `None` otherwise.
    pub(super) fn new(
        diag: &'d Diagnostics,
        path: String,
        value: Value,
        leftovers: Leftovers,
    ) -> Option<Self> {
        match value {
            Value::Object(map) => Some(Self {
                diag,
                path,
                map,
                leftovers,
            }),
            other => {
                diag.problem(
                    path,
                    format!("must be a mapping, found {}", describe(&other)),
                );
                None
            }
        }
    }

    /// The full path of `key` in this section.
    pub(super) fn path_of(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The diagnostics this section reports to.
    pub(super) fn diagnostics(&self) -> &'d Diagnostics {
        self.diag
    }

    /// Records a problem at `key` of this section.
    pub(super) fn problem(&self, key: &str, message: impl fmt::Display) {
        self.diag.problem(self.path_of(key), message);
    }

    /// Records a warning at `key` of this section.
    pub(super) fn warning(&self, key: &str, message: impl fmt::Display) {
        self.diag.warning(self.path_of(key), message);
    }

    /// Whether `key` is present with a non-null value.
    pub(super) fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| !v.is_null())
    }

    /// Takes the raw value of `key`. A null value (`key:` with nothing after it) counts as
    /// absent, as it does for the reference homeserver's `config.get(key) or default`.
    pub(super) fn take_raw(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key).filter(|v| !v.is_null())
    }

    /// Takes `key` as a `T`; records a problem (with the nested key path) if it does not fit.
    pub(super) fn get<T: DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        let value = self.take_raw(key)?;
        deserialize_at(self.diag, &self.path_of(key), value)
    }

    /// Takes `key` as a `T`, recording a problem if it is absent.
    pub(super) fn require<T: DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        if !self.has(key) {
            self.map.remove(key);
            self.problem(key, "is required");
            return None;
        }
        self.get(key)
    }

    /// Takes `key` as a `T`, or `default` when it is absent (or invalid: the problem is
    /// recorded, so the default never reaches a running server).
    pub(super) fn get_or<T: DeserializeOwned>(&mut self, key: &str, default: T) -> T {
        self.get(key).unwrap_or(default)
    }

    /// Takes `key` as a nested section.
    pub(super) fn section(&mut self, key: &str, leftovers: Leftovers) -> Option<Section<'d>> {
        let value = self.take_raw(key)?;
        Section::new(self.diag, self.path_of(key), value, leftovers)
    }

    /// Takes `key` as a list, returning each element with its path (`key[i]`).
    pub(super) fn list(&mut self, key: &str) -> Vec<(String, Value)> {
        let path = self.path_of(key);
        match self.take_raw(key) {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| (format!("{path}[{i}]"), item))
                .collect(),
            Some(other) => {
                self.diag
                    .problem(path, format!("must be a list, found {}", describe(&other)));
                Vec::new()
            }
        }
    }

    /// Ends the section: leftover keys are reported or rejected according to its policy.
    pub(super) fn finish(self) {
        for key in self.map.keys() {
            let path = join(&self.path, key);
            match self.leftovers {
                Leftovers::Report => {
                    self.diag.unknown.borrow_mut().insert(path);
                }
                Leftovers::Reject => self.diag.problem(path, "unknown key"),
            }
        }
    }
}

/// Deserializes `value` found at `path`, recording a problem with the precise nested path.
pub(super) fn deserialize_at<T: DeserializeOwned>(
    diag: &Diagnostics,
    path: &str,
    value: Value,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let full = match inner.as_str() {
                "." => path.to_owned(),
                p if p.starts_with('[') => format!("{path}{p}"),
                p => join(path, p),
            };
            diag.problem(full, e.into_inner());
            None
        }
    }
}

/// A short description of a value's kind for error messages.
pub(super) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "nothing".to_owned(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "a mapping".to_owned(),
    }
}
