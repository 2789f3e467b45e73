//! Presence routers written in Python for the reference homeserver, run unmodified.
//!
//! Operators have presence router modules written for the reference homeserver: a Python
//! class configured either in the legacy `presence.presence_router` block or as a
//! `modules:` entry. This crate embeds CPython (with pyo3) so that Presenced can load those
//! modules, with the same configuration block, and run each as one more
//! [`PresenceRouter`](presence_router::PresenceRouter), with the same failure isolation as a
//! Rust router.
//!
//! - [`PythonHost`] owns the interpreter: one dedicated thread running an asyncio event loop
//!   (with Twisted's reactor on it when Twisted is installed). Tokio threads never take the
//!   GIL; they queue calls to that thread and await the answer on a channel.
//! - [`PythonHost::load`] imports a module by its dotted path, runs its `parse_config`, and
//!   constructs it in the legacy or the `modules:` form ([`ModuleForm`]), giving a
//!   [`PythonRouter`].
//! - The modules import a small `synapse` compatibility package served from memory
//!   (`synapse.module_api`, `synapse.events.presence_router`, `synapse.api.presence`, ...);
//!   its `ModuleApi` forwards `send_local_online_presence_to` to the Rust
//!   [`ModuleApi`](presence_router::ModuleApi).
//! - Every call has a time budget; exceptions, answers of the wrong type, hangs and busy
//!   loops are logged, counted ([`PythonRouterStats`], [`PythonHostStats`]) and turned into a
//!   [`RouterError`](presence_router::RouterError). A busy loop is interrupted by the
//!   watchdog, and while the interpreter is stuck calls fail at once.
//!
//! The guide for module authors, `docs/module-authors.md`, has a section on Python routers.
//! Binaries that link this crate need the run-time library path of the libpython they were
//! built against: see `build.rs`.

mod bridge;
mod convert;
mod error;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod host;
mod options;
mod outbound;
mod router;
mod shim;
mod watchdog;

pub use error::PythonError;
pub use host::{ModuleForm, PythonHost, PythonHostStats, is_python_class_path};
pub use options::{PythonOptions, TwistedMode};
pub use router::{PythonRouter, PythonRouterStats};
