//! The state every handler can reach: a cheap `Clone` handle around shared, immutable
//! parts. Components are added here as fields of `Inner` as the server grows (the store,
//! the presence engine), each reachable through its own accessor, so handlers ask for what
//! they use rather than for a catch-all service locator.

use std::sync::Arc;

use crate::config::Config;

/// Shared application state (a handle: cloning it is cheap).
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
}

impl AppState {
    /// State for a server running with `config`.
    pub fn new(config: Config) -> Self {
        Self {
            inner: Arc::new(Inner { config }),
        }
    }

    /// The configuration the server was started with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }
}
