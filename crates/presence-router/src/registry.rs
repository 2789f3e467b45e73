//! The router registry: turns a configured `module: <name>` with its `config:` into a running
//! router, validating the config at startup.

use std::{collections::BTreeMap, fmt, sync::Arc};

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{ModuleApi, PresenceRouter};

/// A router configuration problem; it stops startup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value under the router's `config:` is invalid.
    #[error("{path}: {message}")]
    Invalid {
        /// Key path from the top of the configuration file, e.g. `modules[0].config.blacklisted_users[2]`.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// No router is registered under that name.
    #[error("{path}: unknown presence router module {name:?}; known modules: {known}")]
    UnknownModule {
        /// Key path of the `module` key.
        path: String,
        /// The name that was configured.
        name: String,
        /// The names that are registered, comma separated.
        known: String,
    },
}

impl ConfigError {
    /// An error at `path` (relative to the router's `config:`), to be prefixed by the loader.
    pub fn invalid(path: impl Into<String>, message: impl fmt::Display) -> Self {
        Self::Invalid {
            path: path.into(),
            message: message.to_string(),
        }
    }

    /// Prefixes the key path with `prefix` (the location of the router's `config:` block).
    pub fn at(self, prefix: &str) -> Self {
        match self {
            Self::Invalid { path, message } => {
                let path = match (prefix.is_empty(), path.is_empty()) {
                    (true, _) => path,
                    (false, true) => prefix.to_owned(),
                    (false, false) if path.starts_with('[') => format!("{prefix}{path}"),
                    (false, false) => format!("{prefix}.{path}"),
                };
                Self::Invalid { path, message }
            }
            other => other,
        }
    }
}

/// Deserializes a router's `config:` into its typed config, naming the failing key path.
/// A missing or null config is treated as an empty mapping, as the reference does.
pub fn parse_typed_config<T: DeserializeOwned>(config: &Value) -> Result<T, ConfigError> {
    let value = if config.is_null() {
        Value::Object(Default::default())
    } else {
        config.clone()
    };
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        ConfigError::invalid(path, e.into_inner())
    })
}

/// A router module built into (or loaded by) the server.
pub trait RouterModule: PresenceRouter + Sized {
    /// The validated configuration.
    type Config;

    /// Validates the module's `config:` value (the seed's `parse_config`).
    fn parse_config(config: &Value) -> Result<Self::Config, ConfigError>;

    /// Builds the router from its validated config.
    fn new(config: Self::Config, api: ModuleApi) -> Self;
}

/// Builds routers of one kind from their raw config.
pub type RouterFactory =
    Arc<dyn Fn(&Value, &ModuleApi) -> Result<Arc<dyn PresenceRouter>, ConfigError> + Send + Sync>;

/// Names → router factories.
#[derive(Clone, Default)]
pub struct RouterRegistry {
    factories: BTreeMap<String, RouterFactory>,
    fallback: Option<(String, FallbackFactory)>,
}

/// Builds a router from a module name that is not registered (for instance a Python import
/// path). Returns `None` if it does not handle that name.
pub type FallbackFactory = Arc<
    dyn Fn(&str, &Value, &ModuleApi) -> Option<Result<Arc<dyn PresenceRouter>, ConfigError>>
        + Send
        + Sync,
>;

impl RouterRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a [`RouterModule`] under each of `names`.
    pub fn register<M: RouterModule>(&mut self, names: &[&str]) {
        let factory: RouterFactory = Arc::new(|config, api| {
            let parsed = M::parse_config(config)?;
            Ok(Arc::new(M::new(parsed, api.clone())) as Arc<dyn PresenceRouter>)
        });
        for name in names {
            self.factories.insert((*name).to_owned(), factory.clone());
        }
    }

    /// Registers a raw factory under `name`.
    pub fn register_factory(&mut self, name: &str, factory: RouterFactory) {
        self.factories.insert(name.to_owned(), factory);
    }

    /// Sets the factory consulted for names that are not registered; `description` appears in
    /// the unknown-module error (e.g. "any importable Python class").
    pub fn set_fallback(&mut self, description: &str, factory: FallbackFactory) {
        self.fallback = Some((description.to_owned(), factory));
    }

    /// The registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.factories.keys().map(String::as_str)
    }

    /// Builds the router `name` from `config`. `path` locates the entry in the configuration
    /// file (e.g. `modules[0]`) for error messages.
    pub fn build(
        &self,
        path: &str,
        name: &str,
        config: &Value,
        api: &ModuleApi,
    ) -> Result<Arc<dyn PresenceRouter>, ConfigError> {
        if let Some(factory) = self.factories.get(name) {
            return factory(config, api).map_err(|e| e.at(&format!("{path}.config")));
        }
        if let Some((_, fallback)) = &self.fallback
            && let Some(result) = fallback(name, config, api)
        {
            return result.map_err(|e| e.at(&format!("{path}.config")));
        }
        let mut known: Vec<&str> = self.names().collect();
        if let Some((description, _)) = &self.fallback {
            known.push(description);
        }
        Err(ConfigError::UnknownModule {
            path: format!("{path}.module"),
            name: name.to_owned(),
            known: known.join(", "),
        })
    }
}

impl fmt::Debug for RouterRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouterRegistry")
            .field("names", &self.factories.keys().collect::<Vec<_>>())
            .field("fallback", &self.fallback.as_ref().map(|(d, _)| d))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        #[serde(default)]
        users: Vec<crate::UserId>,
    }

    #[test]
    fn typed_config_errors_name_the_key_path() {
        let err = parse_typed_config::<Cfg>(&serde_json::json!({"users": ["@a:b", "nope"]}))
            .unwrap_err()
            .at("modules[0].config");
        let text = err.to_string();
        assert!(text.starts_with("modules[0].config.users[1]: "), "{text}");
        assert!(text.contains("must start with '@'"), "{text}");

        let err = parse_typed_config::<Cfg>(&serde_json::json!({"user": []})).unwrap_err();
        assert!(err.to_string().contains("unknown field `user`"), "{err}");

        let ok = parse_typed_config::<Cfg>(&Value::Null).unwrap();
        assert!(ok.users.is_empty());
    }
}
