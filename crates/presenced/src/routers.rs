//! Building the configured presence routers: built-in Rust routers by name and, in builds
//! with the `python` feature, any other name as a Python class path (`my_module.MyRouter`),
//! loaded the way the reference homeserver loads it.
//!
//! The legacy `presence.presence_router` block loads a Python class in the legacy form
//! (`Class(config=..., module_api=...)`, methods looked up on the instance); a `modules:`
//! entry in the modules form (the constructor registers its callbacks). Loading blocks on the
//! interpreter thread, so it runs off the async workers.

use std::sync::Arc;

use presence_router::{ModuleApi, RouterRegistry, RouterSet};

use crate::{config::Config, error::StartError};

/// The routers of a server, and the Python module host when any of them is written in Python.
pub struct Routers {
    /// Every configured router, in configuration order.
    pub set: RouterSet,
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

fn build_blocking(config: &Config, api: &ModuleApi) -> Result<Routers, StartError> {
    let mut registry = RouterRegistry::new();
    presence_routers::register_builtin(&mut registry);
    if !cfg!(feature = "python") {
        // Only changes the unknown-module error, so it says how to get Python routers.
        registry.set_fallback(
            "a Python class path (in builds with the `python` feature)",
            Arc::new(|_, _, _| None),
        );
    }
    let mut python = PythonModules::default();
    let mut set = RouterSet::new(config.presence.router_call_timeout);
    for (path, module) in config.module_entries() {
        let built_in = registry.names().any(|name| name == module.module);
        let router = if built_in || !cfg!(feature = "python") {
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
        tracing::info!(module = %module.module, at = %path, "Loaded presence router.");
        set.push(module.module.clone(), router);
    }
    Ok(Routers { set, python })
}

#[cfg(feature = "python")]
mod python {
    use std::{
        sync::{Arc, atomic::Ordering::Relaxed},
        time::Duration,
    };

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
            let Some(host) = self.host.clone() else {
                return;
            };
            let ended = tokio::task::spawn_blocking(move || host.shutdown(Duration::from_secs(5)))
                .await
                .unwrap_or(false);
            if !ended {
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
    }
}

pub use python::PythonModules;
