//! Building the configured presence routers: built-in Rust routers by name and, in builds
//! with the `python` feature, any other name as a Python class path (`my_module.MyRouter`),
//! loaded the way the reference homeserver loads it.
//!
//! The legacy `presence.presence_router` block loads a Python class in the legacy form
//! (`Class(config=..., module_api=...)`, methods looked up on the instance); a `modules:`
//! entry in the modules form (the constructor registers its callbacks). Loading blocks on the
//! interpreter thread, so it runs off the async workers.

use std::sync::Arc;

use presence_router::{ConfigError, ModuleApi, RouterRegistry, RouterSet};
use presence_routers::shared_rooms::is_shared_rooms;

use crate::{
    config::{Config, RoutingMode},
    error::StartError,
};

/// The routers of a server, and the Python module host when any of them is written in Python.
pub struct Routers {
    /// Every configured router, in configuration order.
    pub set: RouterSet,
    /// Where each router of `set` is configured and its name (`modules[0] (example)`), in
    /// the same order.
    pub labels: Vec<String>,
    /// Whether `presence.routing` is `restricting`.
    pub restricting: bool,
    /// Restricting mode: whether the `shared_rooms` router is configured (the engine serves
    /// it; it is not in `set`). Always true in the additive mode.
    pub shared_rooms: bool,
    /// The Python side, if it was started.
    pub python: PythonModules,
}

/// Builds every configured router, `modules:` entries first, then the legacy block. Starts
/// the Python interpreter only if a name is not a built-in router.
pub async fn build(config: &Config, api: &ModuleApi) -> Result<Routers, StartError> {
    let config = config.clone();
    let api = api.clone();
    tokio::task::spawn_blocking(move || build_blocking(&config, &api))
        .await
        .map_err(StartError::RouterTask)?
}

/// Builds every configured router exactly as [`build`] does (Python modules imported and
/// constructed, configs validated), then stops them: `check-config` fails where startup
/// would. Blocking; call it outside an async runtime.
pub fn check(config: &Config) -> Result<(), StartError> {
    // Kept alive until the routers are stopped, so a module that sends a command while it
    // loads sees a server, as it would at startup.
    let (tx, _commands) = tokio::sync::mpsc::channel(MODULE_COMMAND_QUEUE);
    let api = ModuleApi::new(config.server_name.clone(), tx);
    let routers = build_blocking(config, &api)?;
    routers.python.shutdown_blocking();
    Ok(())
}

/// Builds every configured router exactly as [`build`] does, for a tool that calls them
/// itself (`presenced routers check`). Blocking; call it outside an async runtime, and stop
/// the Python side with [`PythonModules::shutdown_blocking`] when done. The module API is
/// detached: a router that sends a command while it is checked is told this process does not
/// write presence.
pub fn build_for_tool(config: &Config) -> Result<Routers, StartError> {
    let api = ModuleApi::detached(config.server_name.clone());
    build_blocking(config, &api)
}

/// Room for module commands sent while `check` loads the routers (nobody reads them).
const MODULE_COMMAND_QUEUE: usize = 64;

fn build_blocking(config: &Config, api: &ModuleApi) -> Result<Routers, StartError> {
    let mut registry = RouterRegistry::new();
    presence_routers::register_builtin(&mut registry);
    // Only changes the unknown-module error, so it says what else a name may be.
    let other_names = if cfg!(feature = "python") {
        "a Python class path (package.module.Class)"
    } else {
        "a Python class path (in builds with the `python` feature)"
    };
    registry.set_fallback(other_names, Arc::new(|_, _, _| None));
    let mut python = PythonModules::default();
    let mut set = RouterSet::new(config.presence.router_call_timeout);
    let mut labels = Vec::new();
    let restricting = config.presence.routing == RoutingMode::Restricting;
    let mut shared_rooms = !restricting;
    for (path, module) in config.module_entries() {
        if is_shared_rooms(&module.module) {
            if !restricting {
                return Err(ConfigError::invalid(
                    format!("{path}.module"),
                    "shared_rooms is a router of the restricting mode (presence.routing: \
                     restricting); in the additive mode room-mates always receive each \
                     other's presence",
                )
                .into());
            }
            // Validates its config; the engine serves it, so it is never called.
            registry.build(&path, &module.module, &module.config, api)?;
            tracing::info!(module = %module.module, at = %path, "Shared-room presence delivery is on.");
            shared_rooms = true;
            continue;
        }
        let router = if !is_python_candidate(&registry, &module.module) {
            registry.build(&path, &module.module, &module.config, api)?
        } else {
            match python.load(config, &path, &module.module, &module.config, api) {
                Ok(Some(router)) => router,
                // Beside Synapse, `modules:` is the deployment's list: it also holds spam
                // checkers, auth providers and the like, written against Synapse's internals.
                // They are Synapse's business; Presenced only needs the presence routers.
                Ok(None) if config.is_writer() => {
                    tracing::warn!(
                        module = %module.module,
                        at = %path,
                        "Module registers no presence router callbacks; Presenced does not use it."
                    );
                    continue;
                }
                Ok(None) => continue,
                Err(e) if config.is_writer() && path.starts_with("modules[") => {
                    tracing::warn!(
                        module = %module.module,
                        at = %path,
                        error = %e,
                        "Skipping a module Presenced cannot load (Synapse's processes still load it)."
                    );
                    continue;
                }
                Err(e) => return Err(e),
            }
        };
        if !restricting && router.recipient_filter().is_some() {
            return Err(ConfigError::invalid(
                format!("{path}.module"),
                format!(
                    "{} removes recipients, which only the restricting mode can honour: set \
                     presence.routing: restricting (and add the shared_rooms router to keep \
                     shared-room presence)",
                    module.module
                ),
            )
            .into());
        }
        tracing::info!(module = %module.module, at = %path, "Loaded presence router.");
        labels.push(format!("{path} ({})", module.module));
        set.push(module.module.clone(), router);
    }
    if restricting && !shared_rooms {
        tracing::info!(
            "Restricting presence routing without the shared_rooms router: room-mates \
             receive only what the routers route."
        );
    }
    Ok(Routers {
        set,
        labels,
        restricting,
        shared_rooms,
        python,
    })
}

/// Whether `name` goes to Python: not a built-in, not in the built-ins' namespace (a
/// mistyped built-in, which must list the built-ins rather than fail an import), and shaped
/// like a class path (`exmaple` is a typo, not a module). Never in builds without Python.
fn is_python_candidate(registry: &RouterRegistry, name: &str) -> bool {
    !registry.contains(name)
        && !name.starts_with(presence_routers::BUILTIN_NAMESPACE)
        && python::is_class_path(name)
}

#[cfg(feature = "python")]
mod python {
    use std::{
        sync::{Arc, atomic::Ordering::Relaxed},
        time::Duration,
    };

    pub(super) use presence_python::is_python_class_path as is_class_path;
    use presence_python::{
        ModuleForm, PythonHost, PythonOptions, PythonRouter, PythonRouterStats, TwistedMode,
    };
    use presence_router::{ModuleApi, PresenceRouter};
    use serde_json::Value;

    use crate::{
        config::{Config, TwistedSetting},
        error::StartError,
        metrics as names,
    };

    /// The Python module host and the routers it runs.
    #[derive(Clone, Default)]
    pub struct PythonModules {
        host: Option<PythonHost>,
        routers: Vec<(String, Arc<PythonRouterStats>)>,
    }

    impl PythonModules {
        /// Loads `module` as a Python class path, starting the interpreter on first use.
        /// `None`: the module registers no presence router (it is loaded and kept, as the
        /// reference keeps modules of other kinds).
        pub(super) fn load(
            &mut self,
            config: &Config,
            path: &str,
            module: &str,
            module_config: &Value,
            api: &ModuleApi,
        ) -> Result<Option<Arc<dyn PresenceRouter>>, StartError> {
            let host = match &self.host {
                Some(host) => host,
                None => self.host.insert(start(config)?),
            };
            let form = if path.starts_with("modules[") {
                ModuleForm::Modules
            } else {
                ModuleForm::Legacy
            };
            // Beside Synapse a `modules:` entry that fails is skipped, with one warning from
            // the caller; the traceback would read as a startup failure.
            let router: Option<PythonRouter> = if config.is_writer() && form == ModuleForm::Modules
            {
                host.load_optional(form, path, module, module_config, api)?
            } else {
                host.load(form, path, module, module_config, api)?
            };
            Ok(router.map(|router| {
                self.routers
                    .push((module.to_owned(), router.stats().clone()));
                Arc::new(router) as Arc<dyn PresenceRouter>
            }))
        }

        /// Publishes the host's and the Python routers' own counters (what the generic router
        /// counters cannot tell apart: exceptions, wrong answers, refused calls, stalls).
        pub fn record_metrics(&self) {
            let Some(host) = &self.host else { return };
            let stats = host.stats();
            ::metrics::counter!(names::PYTHON_STALLS).absolute(stats.stalls.load(Relaxed));
            ::metrics::counter!(names::PYTHON_INTERRUPTS).absolute(stats.interrupts.load(Relaxed));
            ::metrics::counter!(names::PYTHON_BACKGROUND_FAILURES)
                .absolute(stats.background_failures.load(Relaxed));
            ::metrics::gauge!(names::PYTHON_ALLOCATED_BLOCKS)
                .set(stats.allocated_blocks.load(Relaxed) as f64);
            for (name, stats) in &self.routers {
                let labels = [("router", name.clone())];
                ::metrics::counter!(names::PYTHON_EXCEPTIONS, &labels)
                    .absolute(stats.exceptions.load(Relaxed));
                ::metrics::counter!(names::PYTHON_INVALID_ANSWERS, &labels).absolute(
                    stats.invalid_answers.load(Relaxed)
                        + stats.foreign_states.load(Relaxed)
                        + stats.invalid_user_ids.load(Relaxed),
                );
                ::metrics::counter!(names::PYTHON_REJECTED, &labels)
                    .absolute(stats.rejected.load(Relaxed));
            }
        }

        /// Stops the interpreter's event loop (modules' background work is cancelled) and
        /// waits briefly for its thread.
        pub async fn shutdown(&self) {
            let this = self.clone();
            // Ending the wait early only skips the warning; the process goes on stopping.
            let _ = tokio::task::spawn_blocking(move || this.shutdown_blocking()).await;
        }

        /// [`Self::shutdown`], blocking the calling thread.
        pub fn shutdown_blocking(&self) {
            let Some(host) = &self.host else { return };
            if !host.shutdown(Duration::from_secs(5)) {
                tracing::warn!("The Python interpreter did not stop within 5 s; leaving it.");
            }
        }
    }

    fn start(config: &Config) -> Result<PythonHost, StartError> {
        let python = &config.python;
        let mut options = PythonOptions::default();
        options.paths = python.paths.clone();
        options.venv = python.venv.clone();
        options.call_timeout = config.presence.router_call_timeout;
        options.load_timeout = python.load_timeout;
        options.twisted = match python.twisted {
            TwistedSetting::Off => TwistedMode::Off,
            TwistedSetting::Required => TwistedMode::Required,
            _ => TwistedMode::Auto,
        };
        let host = PythonHost::start(options).map_err(StartError::Python)?;
        tracing::info!(
            version = host.python_version(),
            twisted = host.twisted(),
            "Started the Python interpreter for presence routers."
        );
        Ok(host)
    }
}

#[cfg(not(feature = "python"))]
mod python {
    use std::sync::Arc;

    use presence_router::{ModuleApi, PresenceRouter};
    use serde_json::Value;

    use crate::{config::Config, error::StartError};

    /// No name is loaded as Python in this build.
    pub(super) fn is_class_path(_: &str) -> bool {
        false
    }

    /// Nothing: this build runs no Python. (A field, so that both builds construct it with
    /// `default()`.)
    #[derive(Clone, Default)]
    pub struct PythonModules {
        _none: (),
    }

    impl PythonModules {
        pub(super) fn load(
            &mut self,
            _: &Config,
            _: &str,
            _: &str,
            _: &Value,
            _: &ModuleApi,
        ) -> Result<Option<Arc<dyn PresenceRouter>>, StartError> {
            Ok(None)
        }

        /// Nothing to publish.
        pub fn record_metrics(&self) {}

        /// Nothing to stop.
        pub async fn shutdown(&self) {}

        /// Nothing to stop.
        pub fn shutdown_blocking(&self) {}
    }
}

pub use python::PythonModules;
