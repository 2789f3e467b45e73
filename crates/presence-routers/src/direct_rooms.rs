//! `direct_rooms`: presence between members of rooms that either of them marks as direct.
//!
//! Two users receive each other's presence when both are joined to a room that at least one
//! of them lists in their `m.direct` account data (the spec's map of user ID to direct room
//! IDs; only its room IDs matter here). An additive router: in the default mode it adds
//! nothing room-mates do not already get; its use is the restricting mode without
//! `shared_rooms`, where presence is then shared **only** in direct rooms:
//!
//! ```yaml
//! presence: {routing: restricting}
//! modules:
//!   - module: direct_rooms
//! ```
//!
//! It follows `m.direct` and room memberships: the server replays both when it starts and
//! passes every change, so the router answers from memory. Only this server's users' `m.direct`
//! is known (account data is not federated), so a room counts as direct when a local member
//! marks it.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::{RwLock, RwLockReadGuard, RwLockWriteGuard},
};

use presence_router::{
    ConfigError, InterestedUsers, ModuleApi, PresenceRouter, RoomId, RouterError, RouterModule,
    RouterRegistry, StateBatch, UserId, UserStates, async_trait, parse_typed_config,
};
use serde::Deserialize;
use serde_json::Value;

/// The canonical module name of the direct-rooms router.
pub const DIRECT_ROOMS_ROUTER_NAME: &str = "presenced.routers.DirectRooms";

/// Its short alias.
pub const DIRECT_ROOMS_ROUTER_ALIAS: &str = "direct_rooms";

/// The account-data type it reads.
pub const M_DIRECT: &str = "m.direct";

/// The `config:` block: empty (absent, `null` or `{}`); any key is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DirectRoomsConfig {}

#[derive(Debug, Default)]
struct Tables {
    /// Each user's direct rooms (the room IDs of their `m.direct`).
    direct: HashMap<UserId, HashSet<RoomId>>,
    /// Joined members of each room.
    members: HashMap<RoomId, HashSet<UserId>>,
    /// Rooms each user is joined to.
    rooms: HashMap<UserId, HashSet<RoomId>>,
}

impl Tables {
    fn is_direct(&self, user: &UserId, room: &RoomId) -> bool {
        self.direct
            .get(user)
            .is_some_and(|rooms| rooms.contains(room))
    }

    /// The users who share a direct room with `user` (never `user` itself).
    fn partners(&self, user: &UserId) -> BTreeSet<UserId> {
        let mut out = BTreeSet::new();
        for room in self.rooms.get(user).into_iter().flatten() {
            let mine = self.is_direct(user, room);
            for member in self.members.get(room).into_iter().flatten() {
                if member != user && (mine || self.is_direct(member, room)) {
                    out.insert(member.clone());
                }
            }
        }
        out
    }
}

/// The direct-rooms router. See the module documentation.
#[derive(Debug, Default)]
pub struct DirectRoomsRouter {
    tables: RwLock<Tables>,
}

impl DirectRoomsRouter {
    fn read(&self) -> RwLockReadGuard<'_, Tables> {
        // Every update leaves the tables whole, so a poisoned lock is still good.
        self.tables
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Tables> {
        self.tables
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The users who share a direct room with `user`.
    pub fn partners(&self, user: &UserId) -> BTreeSet<UserId> {
        self.read().partners(user)
    }
}

/// The room IDs of an `m.direct` content (`{"@user:hs": ["!room:hs", ...], ...}`); anything
/// else in it is ignored.
fn direct_rooms_of(content: &Value) -> HashSet<RoomId> {
    content
        .as_object()
        .into_iter()
        .flat_map(|map| map.values())
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|r| RoomId::parse(r).ok())
        .collect()
}

#[async_trait]
impl PresenceRouter for DirectRoomsRouter {
    async fn get_users_for_states(&self, batch: &StateBatch) -> Result<UserStates, RouterError> {
        let tables = self.read();
        let mut positions: HashMap<UserId, Vec<usize>> = HashMap::new();
        for (i, state) in batch.iter().enumerate() {
            for partner in tables.partners(&state.user_id) {
                positions.entry(partner).or_default().push(i);
            }
        }
        Ok(positions
            .into_iter()
            .map(|(user, indices)| (user, batch.from_indices(indices)))
            .collect())
    }

    async fn get_interested_users(&self, user_id: &UserId) -> Result<InterestedUsers, RouterError> {
        Ok(InterestedUsers::Users(self.partners(user_id)))
    }

    fn followed_account_data(&self) -> Vec<String> {
        vec![M_DIRECT.to_owned()]
    }

    fn account_data_changed(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        event_type: &str,
        content: &Value,
    ) {
        if room.is_some() || event_type != M_DIRECT {
            return;
        }
        let rooms = direct_rooms_of(content);
        let mut tables = self.write();
        if rooms.is_empty() {
            tables.direct.remove(user);
        } else {
            tables.direct.insert(user.clone(), rooms);
        }
    }

    fn follows_memberships(&self) -> bool {
        true
    }

    fn membership_changed(&self, room: &RoomId, user: &UserId, joined: bool) {
        let mut tables = self.write();
        if joined {
            tables
                .members
                .entry(room.clone())
                .or_default()
                .insert(user.clone());
            tables
                .rooms
                .entry(user.clone())
                .or_default()
                .insert(room.clone());
        } else {
            if let Some(members) = tables.members.get_mut(room) {
                members.remove(user);
                if members.is_empty() {
                    tables.members.remove(room);
                }
            }
            if let Some(rooms) = tables.rooms.get_mut(user) {
                rooms.remove(room);
                if rooms.is_empty() {
                    tables.rooms.remove(user);
                }
            }
        }
    }
}

impl RouterModule for DirectRoomsRouter {
    type Config = DirectRoomsConfig;

    fn parse_config(config: &Value) -> Result<DirectRoomsConfig, ConfigError> {
        parse_typed_config(config)
    }

    fn new(_config: DirectRoomsConfig, _api: ModuleApi) -> Self {
        Self::default()
    }
}

/// Registers the router under [`DIRECT_ROOMS_ROUTER_NAME`] and [`DIRECT_ROOMS_ROUTER_ALIAS`].
pub fn register(registry: &mut RouterRegistry) {
    registry.register::<DirectRoomsRouter>(&[DIRECT_ROOMS_ROUTER_NAME, DIRECT_ROOMS_ROUTER_ALIAS]);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{conformance::block_on, router_conformance};

    fn uid(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    fn rid(s: &str) -> RoomId {
        RoomId::parse(s).unwrap()
    }

    /// alice, bob and carol in !group; alice and dave in !dm, which dave marks direct;
    /// erin and frank in !other, unmarked.
    fn router() -> DirectRoomsRouter {
        let r = DirectRoomsRouter::default();
        for (room, users) in [
            ("!group:hs", &["@alice:hs", "@bob:hs", "@carol:hs"][..]),
            ("!dm:hs", &["@alice:hs", "@dave:example.com"]),
            ("!other:hs", &["@erin:hs", "@frank:hs"]),
        ] {
            for u in users {
                r.membership_changed(&rid(room), &uid(u), true);
            }
        }
        r.account_data_changed(
            &uid("@dave:example.com"),
            None,
            M_DIRECT,
            &json!({"@alice:hs": ["!dm:hs", "not a room"], "@x:hs": "nope"}),
        );
        r
    }

    #[test]
    fn either_member_marking_the_room_is_enough() {
        let r = router();
        let names = |u: &str| -> Vec<String> {
            r.partners(&uid(u))
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(names("@alice:hs"), ["@dave:example.com"]);
        assert_eq!(names("@dave:example.com"), ["@alice:hs"]);
        assert!(names("@bob:hs").is_empty());
        // bob marks !group direct: he and everyone there now share presence with him.
        r.account_data_changed(
            &uid("@bob:hs"),
            None,
            M_DIRECT,
            &json!({"@carol:hs": ["!group:hs"]}),
        );
        assert_eq!(names("@bob:hs"), ["@alice:hs", "@carol:hs"]);
        assert_eq!(names("@carol:hs"), ["@bob:hs"]);
        // Room account data and other types are not m.direct.
        r.account_data_changed(
            &uid("@erin:hs"),
            Some(&rid("!other:hs")),
            M_DIRECT,
            &json!({"@frank:hs": ["!other:hs"]}),
        );
        assert!(names("@erin:hs").is_empty());
        // Leaving ends it; an empty m.direct forgets.
        r.membership_changed(&rid("!dm:hs"), &uid("@dave:example.com"), false);
        assert_eq!(names("@alice:hs"), ["@bob:hs"]);
        r.account_data_changed(&uid("@bob:hs"), None, M_DIRECT, &json!({}));
        assert!(names("@alice:hs").is_empty());
    }

    #[test]
    fn routes_each_state_to_its_partners() {
        let r = router();
        let batch = StateBatch::new(vec![
            presence_router::UserPresenceState::offline(uid("@alice:hs")),
            presence_router::UserPresenceState::offline(uid("@bob:hs")),
        ]);
        let answer = block_on(r.get_users_for_states(&batch)).unwrap();
        assert_eq!(answer.len(), 1);
        assert_eq!(
            answer[&uid("@dave:example.com")]
                .indices()
                .collect::<Vec<_>>(),
            [0]
        );
        let e = DirectRoomsRouter::parse_config(&json!({"x": 1})).unwrap_err();
        assert!(e.to_string().contains("unknown field `x`"), "{e}");
    }

    router_conformance! {
        mod direct_rooms_conformance;
        router: router(),
        probe_users: ["@alice:hs", "@bob:hs", "@dave:example.com", "@erin:hs"],
    }
}
