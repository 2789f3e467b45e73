//! The `synapse` compatibility package, compiled into the binary and served from memory.
//!
//! Python router modules written for the reference homeserver import `synapse.module_api`,
//! `synapse.events.presence_router`, `synapse.api.presence` and a few others. Those modules
//! are provided here as Python sources (`src/python/`), installed through a meta-path finder
//! placed first on `sys.meta_path`: no files are written, and a real `synapse` that happens
//! to be installed in the same environment is never picked up instead.

use std::ffi::CString;

use pyo3::{
    prelude::*,
    types::{PyBool, PyDict, PyString},
};

/// `(dotted name, is a package, source)` of every module of the package.
const MODULES: &[(&str, bool, &str)] = &[
    ("synapse", true, include_str!("python/synapse/__init__.py")),
    (
        "synapse._presenced",
        false,
        include_str!("python/synapse/_presenced.py"),
    ),
    (
        "synapse.api",
        true,
        include_str!("python/synapse/api/__init__.py"),
    ),
    (
        "synapse.api.constants",
        false,
        include_str!("python/synapse/api/constants.py"),
    ),
    (
        "synapse.api.errors",
        false,
        include_str!("python/synapse/api/errors.py"),
    ),
    (
        "synapse.api.presence",
        false,
        include_str!("python/synapse/api/presence.py"),
    ),
    (
        "synapse.config",
        true,
        include_str!("python/synapse/config/__init__.py"),
    ),
    (
        "synapse.config._base",
        false,
        include_str!("python/synapse/config/_base.py"),
    ),
    (
        "synapse.events",
        true,
        include_str!("python/synapse/events/__init__.py"),
    ),
    (
        "synapse.events.presence_router",
        false,
        include_str!("python/synapse/events/presence_router.py"),
    ),
    (
        "synapse.handlers",
        true,
        include_str!("python/synapse/handlers/__init__.py"),
    ),
    (
        "synapse.handlers.presence",
        false,
        include_str!("python/synapse/handlers/presence.py"),
    ),
    (
        "synapse.logging",
        true,
        include_str!("python/synapse/logging/__init__.py"),
    ),
    (
        "synapse.logging.context",
        false,
        include_str!("python/synapse/logging/context.py"),
    ),
    (
        "synapse.module_api",
        true,
        include_str!("python/synapse/module_api/__init__.py"),
    ),
    (
        "synapse.module_api.errors",
        false,
        include_str!("python/synapse/module_api/errors.py"),
    ),
    (
        "synapse.types",
        true,
        include_str!("python/synapse/types/__init__.py"),
    ),
];

const BOOTSTRAP: &str = include_str!("python/bootstrap.py");

/// The module of the host glue, `synapse._presenced`.
pub(crate) const HOST_MODULE: &str = "synapse._presenced";

/// Installs the finder serving the package (once per process) and imports the host glue.
pub(crate) fn install(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    let sources = PyDict::new(py);
    for (name, is_package, source) in MODULES {
        let entry = (
            PyBool::new(py, *is_package).to_owned(),
            PyString::new(py, source),
        );
        sources.set_item(*name, entry)?;
    }
    let code = c_string(BOOTSTRAP)?;
    let bootstrap = PyModule::from_code(
        py,
        &code,
        c"<presenced>/bootstrap.py",
        c"presenced_shim_bootstrap",
    )?;
    bootstrap.call_method1("install", (sources,))?;
    py.import(HOST_MODULE)
}

fn c_string(source: &str) -> PyResult<CString> {
    CString::new(source).map_err(|e| {
        pyo3::exceptions::PyValueError::new_err(format!("embedded source holds a NUL byte: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_package_has_its_parent() {
        for (name, _, _) in MODULES {
            if let Some((parent, _)) = name.rsplit_once('.') {
                assert!(
                    MODULES.iter().any(|(n, pkg, _)| *n == parent && *pkg),
                    "{name} has no parent package {parent}"
                );
            }
        }
    }
}
