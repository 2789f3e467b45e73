//! The example router of the router contract: a fixed list of users receives everybody's
//! presence, and a fixed list of users is never routed.
//!
//! This is the behaviour of `ExamplePresenceRouter` in the reference homeserver's presence
//! router documentation (<https://element-hq.github.io/synapse/latest/presence_router_module.html>),
//! which the conformance scenarios were recorded with:
//!
//! - `always_send_to_users`: each of these users receives every update of every user that is
//!   not blacklisted, and [`get_interested_users`](PresenceRouter::get_interested_users)
//!   answers [`InterestedUsers::All`] for them.
//! - `blacklisted_users`: updates *of* these users are never routed by this router. Presence
//!   between users who share a room is not the router's business and is unaffected.
//!
//! Everybody else gets nothing from this router.
//!
//! When no update of a batch survives the blacklist, the answer has **no entry at all**
//! (rather than one empty set per recipient, as the reference's Python code returns): the
//! server treats a missing recipient as "nothing for this user", so the two are equivalent,
//! and omitting them costs nothing.

use std::{collections::HashSet, fmt};

use presence_router::{
    ConfigError, InterestedUsers, ModuleApi, PresenceRouter, RouterError, RouterModule,
    RouterRegistry, StateBatch, UserId, UserStates, async_trait, parse_typed_config,
};
use serde::{
    Deserialize, Deserializer,
    de::{MapAccess, Visitor, value::MapAccessDeserializer},
};

/// The canonical module name of the example router, as written under `module:`.
pub const EXAMPLE_ROUTER_NAME: &str = "presenced.routers.ExamplePresenceRouter";

/// The short alias of the example router, also accepted under `module:`.
pub const EXAMPLE_ROUTER_ALIAS: &str = "example";

/// The example router's `config:` block.
///
/// Both keys are optional; a missing key or a `null` value means an empty list. Unknown keys,
/// values that are not lists of strings and strings that are not user IDs are refused with the
/// key path of the offending value. The block itself must be a mapping (or absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExampleRouterConfig {
    /// Users (local or remote) who receive every routable presence update.
    pub always_send_to_users: Vec<UserId>,
    /// Users whose presence this router never routes.
    pub blacklisted_users: Vec<UserId>,
}

/// The shape of the `config:` mapping. Kept apart from [`ExampleRouterConfig`] because a
/// derived `Deserialize` also accepts a struct written as a positional list, which would let
/// `config: [[...], [...]]` through.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default, deserialize_with = "null_as_empty")]
    always_send_to_users: Vec<UserId>,
    #[serde(default, deserialize_with = "null_as_empty")]
    blacklisted_users: Vec<UserId>,
}

impl<'de> Deserialize<'de> for ExampleRouterConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MappingOnly;

        impl<'de> Visitor<'de> for MappingOnly {
            type Value = RawConfig;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping with `always_send_to_users` and/or `blacklisted_users`")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawConfig, A::Error> {
                RawConfig::deserialize(MapAccessDeserializer::new(map))
            }
        }

        let raw = d.deserialize_map(MappingOnly)?;
        Ok(Self {
            always_send_to_users: raw.always_send_to_users,
            blacklisted_users: raw.blacklisted_users,
        })
    }
}

impl ExampleRouterConfig {
    /// A config with the given lists.
    pub fn new(
        always_send_to_users: impl IntoIterator<Item = UserId>,
        blacklisted_users: impl IntoIterator<Item = UserId>,
    ) -> Self {
        Self {
            always_send_to_users: always_send_to_users.into_iter().collect(),
            blacklisted_users: blacklisted_users.into_iter().collect(),
        }
    }
}

/// YAML operators write `blacklisted_users:` with nothing after it; that is `null`, and the
/// reference treats it as an empty list.
fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<UserId>, D::Error> {
    Ok(Option::<Vec<UserId>>::deserialize(d)?.unwrap_or_default())
}

/// The example router. See the module documentation for what it routes.
#[derive(Debug, Clone)]
pub struct ExamplePresenceRouter {
    /// Recipients of everything, without duplicates, in configuration order.
    always_send_to_users: Vec<UserId>,
    /// The same users, for the per-sync membership test.
    always_lookup: HashSet<UserId>,
    /// Looked up once per state of every batch, hence a hash set rather than the list.
    blacklisted_users: HashSet<UserId>,
}

impl ExamplePresenceRouter {
    /// Builds the router from an already validated config. It needs nothing from the server,
    /// so this is also how tests and embedders build it without a [`ModuleApi`].
    pub fn with_config(config: ExampleRouterConfig) -> Self {
        let mut always_lookup = HashSet::with_capacity(config.always_send_to_users.len());
        let always_send_to_users: Vec<UserId> = config
            .always_send_to_users
            .into_iter()
            .filter(|u| always_lookup.insert(u.clone()))
            .collect();
        Self {
            always_send_to_users,
            always_lookup,
            blacklisted_users: config.blacklisted_users.into_iter().collect(),
        }
    }

    /// Whether `user` receives every routable update.
    pub fn sends_all_to(&self, user: &UserId) -> bool {
        self.always_lookup.contains(user)
    }

    /// Whether this router holds back the updates of `user`.
    pub fn is_blacklisted(&self, user: &UserId) -> bool {
        self.blacklisted_users.contains(user)
    }
}

#[async_trait]
impl PresenceRouter for ExamplePresenceRouter {
    async fn get_users_for_states(&self, batch: &StateBatch) -> Result<UserStates, RouterError> {
        if self.always_send_to_users.is_empty() {
            return Ok(UserStates::new());
        }
        // One set for all recipients: each recipient's entry is a reference-count increment.
        let routable = batch.select(|s| !self.blacklisted_users.contains(&s.user_id));
        if routable.is_empty() {
            return Ok(UserStates::new());
        }
        Ok(self
            .always_send_to_users
            .iter()
            .map(|u| (u.clone(), routable.clone()))
            .collect())
    }

    async fn get_interested_users(&self, user_id: &UserId) -> Result<InterestedUsers, RouterError> {
        Ok(if self.sends_all_to(user_id) {
            InterestedUsers::All
        } else {
            InterestedUsers::none()
        })
    }
}

impl RouterModule for ExamplePresenceRouter {
    type Config = ExampleRouterConfig;

    fn parse_config(config: &serde_json::Value) -> Result<ExampleRouterConfig, ConfigError> {
        parse_typed_config(config)
    }

    fn new(config: ExampleRouterConfig, _api: ModuleApi) -> Self {
        Self::with_config(config)
    }
}

/// Registers the example router under [`EXAMPLE_ROUTER_NAME`] and [`EXAMPLE_ROUTER_ALIAS`].
pub fn register(registry: &mut RouterRegistry) {
    registry.register::<ExamplePresenceRouter>(&[EXAMPLE_ROUTER_NAME, EXAMPLE_ROUTER_ALIAS]);
}

#[cfg(test)]
mod tests {
    use presence_router::{PresenceState, ServerName, StateSet, UserPresenceState};
    use serde_json::json;

    use super::*;

    fn uid(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    fn parse(v: serde_json::Value) -> Result<ExampleRouterConfig, ConfigError> {
        ExamplePresenceRouter::parse_config(&v)
    }

    /// The error's key path as the loader reports it for `modules[0]`.
    fn error_path(v: serde_json::Value) -> String {
        match parse(v).unwrap_err().at("modules[0].config") {
            ConfigError::Invalid { path, .. } => path,
            other => panic!("unexpected error {other:?}"),
        }
    }

    fn state(user: &str, presence: PresenceState) -> UserPresenceState {
        UserPresenceState {
            state: presence,
            ..UserPresenceState::offline(uid(user))
        }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        crate::conformance::block_on(f)
    }

    fn users_of(set: &StateSet) -> Vec<&str> {
        set.iter().map(|s| s.user_id.as_str()).collect()
    }

    #[test]
    fn config_accepts_both_lists() {
        let cfg = parse(json!({
            "always_send_to_users": ["@gobbler:hs", "@remote:other.org:8448"],
            "blacklisted_users": ["@blocked:hs"],
        }))
        .unwrap();
        assert_eq!(
            cfg.always_send_to_users,
            [uid("@gobbler:hs"), uid("@remote:other.org:8448")]
        );
        assert_eq!(cfg.blacklisted_users, [uid("@blocked:hs")]);
    }

    #[test]
    fn config_missing_or_null_means_empty() {
        let empty = ExampleRouterConfig::default();
        assert_eq!(parse(serde_json::Value::Null).unwrap(), empty);
        assert_eq!(parse(json!({})).unwrap(), empty);
        assert_eq!(
            parse(json!({"always_send_to_users": null, "blacklisted_users": null})).unwrap(),
            empty
        );
        let cfg = parse(json!({"blacklisted_users": ["@b:hs"]})).unwrap();
        assert!(cfg.always_send_to_users.is_empty());
        assert_eq!(cfg.blacklisted_users, [uid("@b:hs")]);
    }

    #[test]
    fn config_rejects_wrong_types_with_their_path() {
        assert_eq!(
            error_path(json!({"always_send_to_users": "@a:hs"})),
            "modules[0].config.always_send_to_users"
        );
        assert_eq!(
            error_path(json!({"blacklisted_users": {"@a:hs": 1}})),
            "modules[0].config.blacklisted_users"
        );
        assert_eq!(
            error_path(json!({"always_send_to_users": ["@a:hs", 7]})),
            "modules[0].config.always_send_to_users[1]"
        );
        assert_eq!(
            error_path(json!({"blacklisted_users": [null]})),
            "modules[0].config.blacklisted_users[0]"
        );
        // The whole block must be a mapping, not the fields written as a list.
        assert_eq!(error_path(json!([["@a:hs"], []])), "modules[0].config");
        assert_eq!(error_path(json!("@a:hs")), "modules[0].config");
    }

    #[test]
    fn config_rejects_invalid_user_ids_with_their_path() {
        let err = parse(json!({"blacklisted_users": ["@ok:hs", "@ok2:hs", "nosigil:hs"]}))
            .unwrap_err()
            .at("presence.presence_router.config");
        let text = err.to_string();
        assert!(
            text.starts_with("presence.presence_router.config.blacklisted_users[2]: "),
            "{text}"
        );
        assert!(text.contains("'@'"), "{text}");
        assert_eq!(
            error_path(json!({"always_send_to_users": ["@nocolon"]})),
            "modules[0].config.always_send_to_users[0]"
        );
        assert_eq!(
            error_path(json!({"always_send_to_users": [""]})),
            "modules[0].config.always_send_to_users[0]"
        );
    }

    #[test]
    fn config_rejects_unknown_keys() {
        let err = parse(json!({"always_send_to_user": []})).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("unknown field `always_send_to_user`"),
            "{text}"
        );
        // The message lists what is accepted, so a typo is easy to fix.
        assert!(text.contains("always_send_to_users"), "{text}");
    }

    #[test]
    fn routes_everything_but_the_blacklist_to_always_users() {
        let router = ExamplePresenceRouter::with_config(ExampleRouterConfig::new(
            [uid("@gobbler:hs"), uid("@far:remote.org")],
            [uid("@blocked:hs")],
        ));
        let batch = StateBatch::new(vec![
            state("@alice:hs", PresenceState::Online),
            state("@blocked:hs", PresenceState::Online),
            state("@bob:remote.org", PresenceState::Offline),
            state("@gobbler:hs", PresenceState::Unavailable),
        ]);
        let answer = block_on(router.get_users_for_states(&batch)).unwrap();
        assert_eq!(answer.len(), 2);
        for recipient in ["@gobbler:hs", "@far:remote.org"] {
            let set = &answer[&uid(recipient)];
            assert!(set.batch().same_batch(&batch));
            assert_eq!(
                users_of(set),
                ["@alice:hs", "@bob:remote.org", "@gobbler:hs"]
            );
        }
        // Every recipient shares one set rather than a copy of it.
        assert_eq!(answer[&uid("@gobbler:hs")], answer[&uid("@far:remote.org")]);
    }

    #[test]
    fn omits_recipients_when_nothing_is_routable() {
        let router = ExamplePresenceRouter::with_config(ExampleRouterConfig::new(
            [uid("@gobbler:hs")],
            [uid("@blocked:hs")],
        ));
        let only_blocked = StateBatch::new(vec![state("@blocked:hs", PresenceState::Online)]);
        assert!(
            block_on(router.get_users_for_states(&only_blocked))
                .unwrap()
                .is_empty()
        );
        let empty = StateBatch::new(Vec::new());
        assert!(
            block_on(router.get_users_for_states(&empty))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn without_always_users_nothing_is_routed() {
        let router =
            ExamplePresenceRouter::with_config(ExampleRouterConfig::new([], [uid("@b:hs")]));
        let batch = StateBatch::new(vec![state("@alice:hs", PresenceState::Online)]);
        assert!(
            block_on(router.get_users_for_states(&batch))
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            block_on(router.get_interested_users(&uid("@alice:hs"))).unwrap(),
            InterestedUsers::none()
        );
    }

    #[test]
    fn interested_users_is_all_only_for_always_users() {
        let router = ExamplePresenceRouter::with_config(ExampleRouterConfig::new(
            [uid("@gobbler:hs"), uid("@gobbler:hs")],
            [uid("@gobbler:hs")],
        ));
        assert_eq!(
            block_on(router.get_interested_users(&uid("@gobbler:hs"))).unwrap(),
            InterestedUsers::All
        );
        assert_eq!(
            block_on(router.get_interested_users(&uid("@gobbler:other"))).unwrap(),
            InterestedUsers::none()
        );
        assert_eq!(
            block_on(router.get_interested_users(&uid("@alice:hs"))).unwrap(),
            InterestedUsers::none()
        );
        // A duplicated recipient is one key, and a blacklisted recipient still gets the others.
        let batch = StateBatch::new(vec![
            state("@gobbler:hs", PresenceState::Online),
            state("@alice:hs", PresenceState::Online),
        ]);
        let answer = block_on(router.get_users_for_states(&batch)).unwrap();
        assert_eq!(answer.len(), 1);
        assert_eq!(users_of(&answer[&uid("@gobbler:hs")]), ["@alice:hs"]);
    }

    #[test]
    fn registered_under_both_names() {
        let mut registry = RouterRegistry::new();
        register(&mut registry);
        assert_eq!(
            registry.names().collect::<Vec<_>>(),
            [EXAMPLE_ROUTER_ALIAS, EXAMPLE_ROUTER_NAME]
        );
        let api = ModuleApi::detached(ServerName::parse("hs").unwrap());
        let config = json!({"always_send_to_users": ["@gobbler:hs"]});
        for name in [EXAMPLE_ROUTER_NAME, EXAMPLE_ROUTER_ALIAS] {
            let router = registry.build("modules[1]", name, &config, &api).unwrap();
            assert_eq!(
                block_on(router.get_interested_users(&uid("@gobbler:hs"))).unwrap(),
                InterestedUsers::All
            );
        }
        let err = registry
            .build(
                "modules[1]",
                EXAMPLE_ROUTER_ALIAS,
                &json!({"blacklisted_users": [1]}),
                &api,
            )
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .starts_with("modules[1].config.blacklisted_users[0]: "),
            "{err}"
        );
    }
}
