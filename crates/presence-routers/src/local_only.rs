//! `local_only`: local users' presence goes to no other server, or only to listed servers.
//!
//! A restricting router (`presence.routing: restricting`; the additive mode refuses it at
//! startup, since it could not honour it): it adds nobody and, through its
//! [`RecipientFilter`], removes every remote recipient of a local user's presence unless
//! the recipient's server is listed in `servers`. Compose it with `shared_rooms` (and any
//! other router) for "rooms as usual, but never outside this server":
//!
//! ```yaml
//! presence:
//!   routing: restricting
//! modules:
//!   - module: shared_rooms
//!   - module: local_only
//!     config:
//!       servers: ["partner.example.org"]   # optional; absent or empty: no other server
//! ```
//!
//! It removes on every path: no federation destination is chosen for the local user's
//! presence (room-based, routed or `send_local_online_presence_to`), and remote users are not
//! told it in any other way. Remote users' presence still reaches local users as usual.

use std::{collections::HashSet, sync::Arc};

use presence_router::{
    ConfigError, InterestedUsers, ModuleApi, PresenceRouter, RecipientFilter, RouterError,
    RouterModule, RouterRegistry, ServerName, StateBatch, UserId, UserStates, async_trait,
    parse_typed_config,
};
use serde::Deserialize;

/// The canonical module name of the local-only router.
pub const LOCAL_ONLY_ROUTER_NAME: &str = "presenced.routers.LocalOnly";

/// Its short alias.
pub const LOCAL_ONLY_ROUTER_ALIAS: &str = "local_only";

/// The `config:` block.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LocalOnlyConfig {
    /// Servers that may still receive local users' presence (an allowlist); absent, `null`
    /// or empty: none.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub servers: Vec<ServerName>,
}

impl LocalOnlyConfig {
    /// A config allowing `servers`.
    pub fn new(servers: impl IntoIterator<Item = ServerName>) -> Self {
        Self {
            servers: servers.into_iter().collect(),
        }
    }
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ServerName>, D::Error> {
    Ok(Option::<Vec<ServerName>>::deserialize(d)?.unwrap_or_default())
}

/// The filter: which pairs `local_only` allows.
#[derive(Debug)]
pub struct LocalOnlyFilter {
    server_name: ServerName,
    allowed: HashSet<String>,
}

impl RecipientFilter for LocalOnlyFilter {
    fn allows(&self, sender: &UserId, recipient: &UserId) -> bool {
        !sender.is_on(&self.server_name)
            || recipient.is_on(&self.server_name)
            || self.allowed.contains(recipient.server_name().as_str())
    }
}

/// The local-only router. See the module documentation.
#[derive(Debug, Clone)]
pub struct LocalOnlyRouter {
    filter: Arc<LocalOnlyFilter>,
}

impl LocalOnlyRouter {
    /// The router of server `server_name` with `config`.
    pub fn with_config(server_name: ServerName, config: LocalOnlyConfig) -> Self {
        Self {
            filter: Arc::new(LocalOnlyFilter {
                server_name,
                allowed: config
                    .servers
                    .iter()
                    .map(|s| s.as_str().to_owned())
                    .collect(),
            }),
        }
    }
}

#[async_trait]
impl PresenceRouter for LocalOnlyRouter {
    async fn get_users_for_states(&self, _batch: &StateBatch) -> Result<UserStates, RouterError> {
        Ok(UserStates::new())
    }

    async fn get_interested_users(&self, _user: &UserId) -> Result<InterestedUsers, RouterError> {
        Ok(InterestedUsers::none())
    }

    fn recipient_filter(&self) -> Option<Arc<dyn RecipientFilter>> {
        Some(self.filter.clone())
    }
}

impl RouterModule for LocalOnlyRouter {
    type Config = LocalOnlyConfig;

    fn parse_config(config: &serde_json::Value) -> Result<LocalOnlyConfig, ConfigError> {
        parse_typed_config(config)
    }

    fn new(config: LocalOnlyConfig, api: ModuleApi) -> Self {
        Self::with_config(api.server_name().clone(), config)
    }
}

/// Registers the router under [`LOCAL_ONLY_ROUTER_NAME`] and [`LOCAL_ONLY_ROUTER_ALIAS`].
pub fn register(registry: &mut RouterRegistry) {
    registry.register::<LocalOnlyRouter>(&[LOCAL_ONLY_ROUTER_NAME, LOCAL_ONLY_ROUTER_ALIAS]);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::router_conformance;

    fn uid(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    fn router(servers: &[&str]) -> LocalOnlyRouter {
        LocalOnlyRouter::with_config(
            ServerName::parse("example.com").unwrap(),
            LocalOnlyConfig::new(servers.iter().map(|s| ServerName::parse(s).unwrap())),
        )
    }

    #[test]
    fn config_lists_servers_and_refuses_bad_values_with_their_path() {
        let parse = |v| LocalOnlyRouter::parse_config(&v);
        assert_eq!(parse(json!(null)).unwrap(), LocalOnlyConfig::default());
        assert_eq!(
            parse(json!({"servers": null})).unwrap(),
            LocalOnlyConfig::default()
        );
        let c = parse(json!({"servers": ["a.example", "[::1]:8448"]})).unwrap();
        assert_eq!(c.servers.len(), 2);
        let at = |v| parse(v).unwrap_err().at("modules[1].config").to_string();
        assert!(
            at(json!({"servers": ["ok.example", "bad server"]}))
                .starts_with("modules[1].config.servers[1]: "),
            "{}",
            at(json!({"servers": ["ok.example", "bad server"]}))
        );
        assert!(at(json!({"servers": "a.example"})).starts_with("modules[1].config.servers: "));
        assert!(
            at(json!({"server": []}))
                .starts_with("modules[1].config.server: unknown field `server`")
        );
    }

    #[test]
    fn removes_remote_recipients_of_local_users_only() {
        let r = router(&["partner.org"]);
        let filter = r.recipient_filter().unwrap();
        let (alice, bob) = (uid("@alice:example.com"), uid("@bob:example.com"));
        let (remote, partner) = (uid("@carol:other.org"), uid("@dan:partner.org"));
        assert!(filter.allows(&alice, &bob));
        assert!(!filter.allows(&alice, &remote));
        assert!(filter.allows(&alice, &partner));
        // Remote users' presence is not this router's business.
        assert!(filter.allows(&remote, &alice));
        assert!(filter.allows(&remote, &partner));
        let none = router(&[]);
        assert!(!none.recipient_filter().unwrap().allows(&alice, &partner));
    }

    router_conformance! {
        mod local_only_conformance;
        router: router(&["partner.org"]),
        probe_users: ["@dan:partner.org"],
    }
}
