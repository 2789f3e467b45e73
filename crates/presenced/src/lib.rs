//! Presenced, a Matrix presence server: the library behind the `presenced` binary.
//!
//! - [`config`] loads and validates the YAML configuration (the reference homeserver's key
//!   names, every problem reported with its key path).
//! - [`cli`] is the command line: run the server, check a configuration, or register a user
//!   on a running server.
//! - [`http`] builds the axum application ([`http::app`]) and its shared state.
//! - [`error`] holds the HTTP error type, turned into Matrix error responses in one place,
//!   and the startup error.
//! - [`federation`] connects the federation crate to the presence service.
//! - [`server`] binds the listeners, serves them and shuts down gracefully.
//!
//! The binary's `main` only calls [`cli::main`]; everything else lives here so tests can
//! start the server in-process.

pub mod app;
pub mod cli;
pub mod config;
pub mod error;
pub mod federation;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod presence;
pub mod query;
pub mod ratelimit;
pub mod routers;
pub mod server;

/// Locks `m`, ignoring poisoning. Every mutex in the server guards a short in-memory section
/// that leaves its data consistent at each step (single inserts, removes or swaps; the
/// engine between calls), so a panic while one was held is no reason to stop serving.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub use crate::{
    app::App,
    config::Config,
    error::{ApiError, StartError},
    http::app,
    server::{RunningServer, Server, Shutdown},
};
