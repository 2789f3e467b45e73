//! `organisation`: every member of the organisation sees every other member's presence.
//!
//! The organisation is this server's users, plus every user of the servers listed in
//! `servers`. An additive router (it works in both routing modes and removes nobody):
//!
//! ```yaml
//! modules:
//!   - module: organisation
//!     config:
//!       servers: ["branch.example.org"]   # optional; absent or empty: this server only
//!       members: ["@boss:branch.example.org"]  # optional: members known from the start
//! ```
//!
//! A router is never told who the users are, so the router learns the members as they show
//! up: a member whose presence passes through `get_users_for_states`, or who asks
//! `get_interested_users` (every sync does), is remembered for the process's lifetime. For
//! every member `get_interested_users` answers `All`, and `get_users_for_states` sends every
//! member's state to every known member (an `All` member is sent members' states only: that
//! is the router's hold-back, as the example router holds back its blacklist). A local user is therefore known from its first sync
//! or presence change on, and a remote member from the first presence of theirs this server
//! receives; until then nothing is routed to them (shared rooms still apply). Remote members
//! listed in `members` are known from the start, which is how two servers that list each
//! other start exchanging their members' presence. The memory is one user ID per member.

use std::{
    collections::HashSet,
    sync::{Mutex, MutexGuard},
};

use presence_router::{
    ConfigError, InterestedUsers, ModuleApi, PresenceRouter, RouterError, RouterModule,
    RouterRegistry, ServerName, StateBatch, UserId, UserStates, async_trait, parse_typed_config,
};
use serde::Deserialize;

/// The canonical module name of the organisation router.
pub const ORGANISATION_ROUTER_NAME: &str = "presenced.routers.Organisation";

/// Its short alias.
pub const ORGANISATION_ROUTER_ALIAS: &str = "organisation";

/// The `config:` block.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct OrganisationConfig {
    /// Servers whose users belong to the organisation besides this server's; absent, `null`
    /// or empty: none.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub servers: Vec<ServerName>,
    /// Members known from the start; a user on neither this server nor a listed one is not a
    /// member and is ignored. Absent, `null` or empty: none.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub members: Vec<UserId>,
}

impl OrganisationConfig {
    /// A config listing `servers`.
    pub fn new(servers: impl IntoIterator<Item = ServerName>) -> Self {
        Self {
            servers: servers.into_iter().collect(),
            members: Vec::new(),
        }
    }
}

fn null_as_empty<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// The organisation router. See the module documentation.
#[derive(Debug)]
pub struct OrganisationRouter {
    /// This server and the listed ones.
    servers: HashSet<String>,
    /// Members seen so far, in the order they were first seen.
    known: Mutex<Known>,
}

#[derive(Debug, Default)]
struct Known {
    set: HashSet<UserId>,
    list: Vec<UserId>,
}

impl Known {
    fn learn(&mut self, user: &UserId) {
        if self.set.insert(user.clone()) {
            self.list.push(user.clone());
        }
    }
}

impl OrganisationRouter {
    /// The router of server `server_name` with `config`.
    pub fn with_config(server_name: &ServerName, config: OrganisationConfig) -> Self {
        let mut servers: HashSet<String> = config
            .servers
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect();
        servers.insert(server_name.as_str().to_owned());
        let mut known = Known::default();
        for member in &config.members {
            if servers.contains(member.server_name().as_str()) {
                known.learn(member);
            }
        }
        Self {
            servers,
            known: Mutex::new(known),
        }
    }

    /// Whether `user` belongs to the organisation.
    pub fn is_member(&self, user: &UserId) -> bool {
        self.servers.contains(user.server_name().as_str())
    }

    /// The members known so far.
    pub fn known_members(&self) -> Vec<UserId> {
        self.known().list.clone()
    }

    fn known(&self) -> MutexGuard<'_, Known> {
        // Nothing can leave the set half-updated, so a poisoned lock is still good.
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl PresenceRouter for OrganisationRouter {
    async fn get_users_for_states(&self, batch: &StateBatch) -> Result<UserStates, RouterError> {
        let members = batch.select(|s| self.is_member(&s.user_id));
        let mut known = self.known();
        for state in members.iter() {
            known.learn(&state.user_id);
        }
        if members.is_empty() {
            return Ok(UserStates::new());
        }
        Ok(known
            .list
            .iter()
            .map(|u| (u.clone(), members.clone()))
            .collect())
    }

    async fn get_interested_users(&self, user_id: &UserId) -> Result<InterestedUsers, RouterError> {
        if !self.is_member(user_id) {
            return Ok(InterestedUsers::none());
        }
        self.known().learn(user_id);
        Ok(InterestedUsers::All)
    }
}

impl RouterModule for OrganisationRouter {
    type Config = OrganisationConfig;

    fn parse_config(config: &serde_json::Value) -> Result<OrganisationConfig, ConfigError> {
        parse_typed_config(config)
    }

    fn new(config: OrganisationConfig, api: ModuleApi) -> Self {
        Self::with_config(api.server_name(), config)
    }
}

/// Registers the router under [`ORGANISATION_ROUTER_NAME`] and [`ORGANISATION_ROUTER_ALIAS`].
pub fn register(registry: &mut RouterRegistry) {
    registry.register::<OrganisationRouter>(&[ORGANISATION_ROUTER_NAME, ORGANISATION_ROUTER_ALIAS]);
}

#[cfg(test)]
mod tests {
    use presence_router::{PresenceState, UserPresenceState};
    use serde_json::json;

    use super::*;
    use crate::{conformance::block_on, router_conformance};

    fn uid(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    fn router() -> OrganisationRouter {
        OrganisationRouter::with_config(
            &ServerName::parse("example.com").unwrap(),
            OrganisationConfig::new([ServerName::parse("branch.org").unwrap()]),
        )
    }

    fn online(user: &str) -> UserPresenceState {
        UserPresenceState {
            state: PresenceState::Online,
            ..UserPresenceState::offline(uid(user))
        }
    }

    #[test]
    fn config_lists_servers_and_refuses_bad_values_with_their_path() {
        let parse = |v| OrganisationRouter::parse_config(&v);
        assert_eq!(parse(json!(null)).unwrap(), OrganisationConfig::default());
        assert_eq!(
            parse(json!({"servers": ["a.example"]}))
                .unwrap()
                .servers
                .len(),
            1
        );
        let at = |v| parse(v).unwrap_err().at("modules[0].config").to_string();
        let e = at(json!({"servers": [3]}));
        assert!(e.starts_with("modules[0].config.servers[0]: "), "{e}");
        let e = at(json!({"people": []}));
        assert!(
            e.starts_with("modules[0].config.people: unknown field `people`"),
            "{e}"
        );
    }

    #[test]
    fn members_see_each_other_once_known_and_outsiders_nothing() {
        let r = router();
        block_on(async {
            let alice = uid("@alice:example.com");
            assert_eq!(
                r.get_interested_users(&alice).await.unwrap(),
                InterestedUsers::All
            );
            let outsider = uid("@eve:else.net");
            assert_eq!(
                r.get_interested_users(&outsider).await.unwrap(),
                InterestedUsers::none()
            );
            // bob (branch) and eve (outsider) change: alice gets bob's, bob is learned.
            let batch = StateBatch::new(vec![online("@bob:branch.org"), online("@eve:else.net")]);
            let answer = r.get_users_for_states(&batch).await.unwrap();
            let mut recipients: Vec<&str> = answer.keys().map(UserId::as_str).collect();
            recipients.sort_unstable();
            assert_eq!(recipients, ["@alice:example.com", "@bob:branch.org"]);
            for set in answer.values() {
                assert_eq!(set.indices().collect::<Vec<_>>(), [0]);
            }
            // An outsider's state alone is routed to nobody.
            let batch = StateBatch::new(vec![online("@eve:else.net")]);
            assert!(r.get_users_for_states(&batch).await.unwrap().is_empty());
        });
        assert_eq!(r.known_members().len(), 2);
    }

    #[test]
    fn listed_members_are_known_from_the_start() {
        let config: OrganisationConfig = OrganisationRouter::parse_config(&json!({
            "servers": ["branch.org"],
            "members": ["@boss:branch.org", "@eve:else.net"],
        }))
        .unwrap();
        let r = OrganisationRouter::with_config(&ServerName::parse("example.com").unwrap(), config);
        assert_eq!(r.known_members(), [uid("@boss:branch.org")]);
        let batch = StateBatch::new(vec![online("@alice:example.com")]);
        let answer = block_on(r.get_users_for_states(&batch)).unwrap();
        assert!(answer.contains_key(&uid("@boss:branch.org")));
        let e = OrganisationRouter::parse_config(&json!({"members": ["boss"]}))
            .unwrap_err()
            .at("modules[0].config")
            .to_string();
        assert!(e.starts_with("modules[0].config.members[0]: "), "{e}");
    }

    /// The documented hold-back: an `All` member is sent members' states only.
    fn outsider(_recipient: &UserId, state: &UserPresenceState) -> bool {
        !["example.com", "branch.org"].contains(&state.user_id.server_name().as_str())
    }

    router_conformance! {
        mod organisation_conformance;
        router: router(),
        probe_users: ["@bob:branch.org"],
        hold_back: outsider,
    }
}
