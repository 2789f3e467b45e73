//! [`PythonError`]: why the Python module host cannot start.
//!
//! Loading a module fails with the registry's
//! [`ConfigError`](presence_router::ConfigError) (a module problem stops startup like any
//! router configuration problem), and a router call fails with
//! [`RouterError`](presence_router::RouterError), as for every router.

/// Why the Python module host cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PythonError {
    /// The interpreter or the compatibility package could not be set up.
    #[error("cannot start the Python module host: {0}")]
    Start(String),
    /// [`TwistedMode::Required`](crate::TwistedMode::Required) was asked for, and Twisted
    /// cannot be used.
    #[error("Twisted is required but cannot be used: {0}")]
    Twisted(String),
    /// The configured virtualenv cannot be used.
    #[error("virtualenv {path}: {reason}")]
    Venv {
        /// The configured directory.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A thread or socket could not be created.
    #[error("cannot start the Python module host: {0}")]
    Io(#[from] std::io::Error),
}
