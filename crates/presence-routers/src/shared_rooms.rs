//! `shared_rooms`: users who share a room receive each other's presence.
//!
//! In the additive mode (the default) this is not a router but the rule every router adds
//! to, and naming it is refused. In the restricting mode (`presence.routing: restricting`) it
//! is the router that brings shared-room delivery back: without it, room-mates receive
//! nothing of each other unless another router routes it. The presence engine serves it
//! from its membership index (rooms listed in `exclude_rooms_from_presence` still share
//! nothing); the module here exists so that the name is registered, its `config:` checked
//! and its place in the configuration known. Its two methods answer nothing, and it removes
//! nobody: other routers' filters apply to room-mates as to everyone.

use presence_router::{
    ConfigError, InterestedUsers, ModuleApi, PresenceRouter, RouterError, RouterModule,
    RouterRegistry, StateBatch, UserId, UserStates, async_trait, parse_typed_config,
};
use serde::Deserialize;

/// The canonical module name of the shared-rooms router.
pub const SHARED_ROOMS_ROUTER_NAME: &str = "presenced.routers.SharedRooms";

/// Its short alias.
pub const SHARED_ROOMS_ROUTER_ALIAS: &str = "shared_rooms";

/// Whether `name` names the shared-rooms router.
pub fn is_shared_rooms(name: &str) -> bool {
    name == SHARED_ROOMS_ROUTER_NAME || name == SHARED_ROOMS_ROUTER_ALIAS
}

/// The `config:` block: empty (absent, `null` or `{}`); any key is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SharedRoomsConfig {}

/// The shared-rooms router. See the module documentation.
#[derive(Debug, Clone, Default)]
pub struct SharedRoomsRouter;

#[async_trait]
impl PresenceRouter for SharedRoomsRouter {
    async fn get_users_for_states(&self, _batch: &StateBatch) -> Result<UserStates, RouterError> {
        Ok(UserStates::new())
    }

    async fn get_interested_users(&self, _user: &UserId) -> Result<InterestedUsers, RouterError> {
        Ok(InterestedUsers::none())
    }
}

impl RouterModule for SharedRoomsRouter {
    type Config = SharedRoomsConfig;

    fn parse_config(config: &serde_json::Value) -> Result<SharedRoomsConfig, ConfigError> {
        parse_typed_config(config)
    }

    fn new(_config: SharedRoomsConfig, _api: ModuleApi) -> Self {
        Self
    }
}

/// Registers the router under [`SHARED_ROOMS_ROUTER_NAME`] and [`SHARED_ROOMS_ROUTER_ALIAS`].
pub fn register(registry: &mut RouterRegistry) {
    registry.register::<SharedRoomsRouter>(&[SHARED_ROOMS_ROUTER_NAME, SHARED_ROOMS_ROUTER_ALIAS]);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::router_conformance;

    #[test]
    fn config_is_empty_or_refused_with_its_path() {
        for ok in [json!(null), json!({})] {
            assert_eq!(
                SharedRoomsRouter::parse_config(&ok).unwrap(),
                SharedRoomsConfig {}
            );
        }
        let e = SharedRoomsRouter::parse_config(&json!({"rooms": []}))
            .unwrap_err()
            .at("modules[0].config");
        assert!(
            e.to_string()
                .starts_with("modules[0].config.rooms: unknown field `rooms`"),
            "{e}"
        );
        assert!(is_shared_rooms("shared_rooms"));
        assert!(is_shared_rooms("presenced.routers.SharedRooms"));
        assert!(!is_shared_rooms("example"));
    }

    router_conformance! {
        mod shared_rooms_conformance;
        router: SharedRoomsRouter,
    }
}
