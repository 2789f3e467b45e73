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
    /// Each registration's names, full name first then its aliases, in registration order:
    /// what the unknown-module error lists.
    modules: Vec<Vec<String>>,
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

    /// Registers a [`RouterModule`] under each of `names`: its full name first, then its
    /// aliases (the unknown-module error lists them that way).
    pub fn register<M: RouterModule>(&mut self, names: &[&str]) {
        let factory: RouterFactory = Arc::new(|config, api| {
            let parsed = M::parse_config(config)?;
            Ok(Arc::new(M::new(parsed, api.clone())) as Arc<dyn PresenceRouter>)
        });
        for name in names {
            self.factories.insert((*name).to_owned(), factory.clone());
        }
        self.add_module(names);
    }

    /// Registers a raw factory under `name`.
    pub fn register_factory(&mut self, name: &str, factory: RouterFactory) {
        self.factories.insert(name.to_owned(), factory);
        self.add_module(&[name]);
    }

    fn add_module(&mut self, names: &[&str]) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        // A name registered again is replaced: it belongs to the latest registration only.
        for module in &mut self.modules {
            module.retain(|n| !names.contains(n));
        }
        self.modules.retain(|m| !m.is_empty());
        if !names.is_empty() {
            self.modules.push(names);
        }
    }

    /// Whether `name` is registered (a full name or an alias).
    pub fn contains(&self, name: &str) -> bool {
        self.factories.contains_key(name)
    }

    /// Every registered module by its full name and aliases, e.g.
    /// `presenced.routers.ExamplePresenceRouter (alias: example)`, comma separated.
    pub fn describe_modules(&self) -> String {
        let described: Vec<String> = self
            .modules
            .iter()
            .map(|names| match names.split_first() {
                Some((full, [])) => full.clone(),
                Some((full, [alias])) => format!("{full} (alias: {alias})"),
                Some((full, aliases)) => format!("{full} (aliases: {})", aliases.join(", ")),
                None => String::new(),
            })
            .collect();
        described.join(", ")
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
        Err(self.unknown(path, name))
    }

    /// The error for a module name that is neither registered nor handled by the fallback:
    /// it lists every registered module by full name and alias, then the fallback.
    pub fn unknown(&self, path: &str, name: &str) -> ConfigError {
        let mut known = self.describe_modules();
        if let Some((description, _)) = &self.fallback {
            if !known.is_empty() {
                known.push_str(", or ");
            }
            known.push_str(description);
        }
        ConfigError::UnknownModule {
            path: format!("{path}.module"),
            name: name.to_owned(),
            known,
        }
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

    struct Nothing;

    #[crate::async_trait]
    impl crate::PresenceRouter for Nothing {
        async fn get_users_for_states(
            &self,
            _: &crate::StateBatch,
        ) -> Result<crate::UserStates, crate::RouterError> {
            Ok(crate::UserStates::new())
        }

        async fn get_interested_users(
            &self,
            _: &crate::UserId,
        ) -> Result<crate::InterestedUsers, crate::RouterError> {
            Ok(crate::InterestedUsers::Users(Default::default()))
        }
    }

    impl RouterModule for Nothing {
        type Config = ();

        fn parse_config(_: &Value) -> Result<(), ConfigError> {
            Ok(())
        }

        fn new((): (), _: ModuleApi) -> Self {
            Self
        }
    }

    #[test]
    fn unknown_modules_list_every_module_by_full_name_and_alias() {
        let mut registry = RouterRegistry::new();
        registry.register::<Nothing>(&["pkg.routers.Nothing", "nothing", "none"]);
        registry.register::<Nothing>(&["pkg.routers.Other", "other"]);
        registry.register::<Nothing>(&["pkg.routers.Bare"]);
        assert!(registry.contains("none") && !registry.contains("nope"));
        let api = ModuleApi::detached(crate::ServerName::parse("hs").unwrap());
        let err = registry
            .build("modules[2]", "nothnig", &Value::Null, &api)
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "modules[2].module: unknown presence router module \"nothnig\"; known modules: \
             pkg.routers.Nothing (aliases: nothing, none), pkg.routers.Other (alias: other), \
             pkg.routers.Bare"
        );

        registry.set_fallback("a Python class path", Arc::new(|_, _, _| None));
        // Registering a name again moves it to the new registration.
        registry.register::<Nothing>(&["pkg.routers.Bare", "other"]);
        let err = registry.unknown("presence.presence_router", "x");
        assert_eq!(
            err.to_string(),
            "presence.presence_router.module: unknown presence router module \"x\"; known \
             modules: pkg.routers.Nothing (aliases: nothing, none), pkg.routers.Other, \
             pkg.routers.Bare (alias: other), or a Python class path"
        );
    }
}
