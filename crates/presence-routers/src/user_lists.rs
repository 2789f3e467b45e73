//! `user_lists`: each user decides who receives their presence, with an allow list and a
//! deny list in their own account data.
//!
//! In the spirit of MSC4325 (presence privacy), under an unstable, Presenced-namespaced
//! event type until a specification settles one: global account data of type
//! [`PRESENCE_LISTS_TYPE`] (`io.presenced.presence_lists`), whose content is
//!
//! ```json
//! {"allow": ["@friend:example.org", "*:example.org"], "deny": ["@boss:example.org"]}
//! ```
//!
//! Entries are user IDs, or globs over user IDs (`*` any run of characters, `?` one). For a
//! user `x` with such an entry, a recipient `r`:
//!
//! - is refused if an entry of `deny` matches it;
//! - otherwise, if `allow` is present, is refused unless an entry of `allow` matches it;
//! - otherwise receives `x`'s presence as the other routers (and `shared_rooms`) decide.
//!
//! And every exact user ID of `allow` receives `x`'s presence even without a shared room.
//! A user without the entry (or with `{}`) is unaffected. Removing recipients needs the
//! restricting mode (the additive mode refuses this router at startup):
//!
//! ```yaml
//! presence: {routing: restricting}
//! modules:
//!   - module: shared_rooms
//!   - module: user_lists
//! ```
//!
//! Only this server's users' lists are known (account data is not federated): the lists
//! govern local users' presence, to local and remote recipients alike.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::{Arc, RwLock, RwLockReadGuard},
};

use presence_router::{
    ConfigError, InterestedUsers, ModuleApi, PresenceRouter, RecipientFilter, RoomId, RouterError,
    RouterModule, RouterRegistry, StateBatch, UserId, UserStates, async_trait, parse_typed_config,
};
use serde::Deserialize;
use serde_json::Value;

/// The canonical module name of the user-lists router.
pub const USER_LISTS_ROUTER_NAME: &str = "presenced.routers.UserLists";

/// Its short alias.
pub const USER_LISTS_ROUTER_ALIAS: &str = "user_lists";

/// The (unstable) account-data type holding a user's lists.
pub const PRESENCE_LISTS_TYPE: &str = "io.presenced.presence_lists";

/// The `config:` block: empty (absent, `null` or `{}`); any key is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct UserListsConfig {}

/// One user's lists, as read from their account data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresenceLists {
    /// `allow`, if present.
    pub allow: Option<Vec<String>>,
    /// `deny`.
    pub deny: Vec<String>,
}

impl PresenceLists {
    /// Reads a content; entries that are not strings are ignored, as is any other key.
    pub fn from_content(content: &Value) -> Self {
        let list = |key: &str| {
            content.get(key).and_then(Value::as_array).map(|items| {
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
        };
        Self {
            allow: list("allow"),
            deny: list("deny").unwrap_or_default(),
        }
    }

    /// Whether `recipient` may receive the presence of the lists' owner.
    pub fn allows(&self, recipient: &UserId) -> bool {
        let r = recipient.as_str();
        !self.deny.iter().any(|p| glob(p, r))
            && self
                .allow
                .as_ref()
                .is_none_or(|allow| allow.iter().any(|p| glob(p, r)))
    }

    /// The exact user IDs of `allow` (entries without wildcards).
    fn exact_allowed(&self) -> impl Iterator<Item = UserId> + '_ {
        self.allow
            .iter()
            .flatten()
            .filter(|p| !p.contains(['*', '?']))
            .filter_map(|p| UserId::parse(p).ok())
    }
}

/// Matches `pattern` (`*` any run, `?` one character) against all of `text`.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[derive(Debug, Default)]
struct Tables {
    lists: HashMap<UserId, PresenceLists>,
    /// recipient -> the owners whose `allow` names it exactly (the added recipients).
    allowed_by: HashMap<UserId, HashSet<UserId>>,
}

/// The lists, shared by the router and its filter.
#[derive(Debug, Default)]
pub struct ListsFilter {
    tables: RwLock<Tables>,
}

impl ListsFilter {
    fn read(&self) -> RwLockReadGuard<'_, Tables> {
        // Every update leaves the tables whole, so a poisoned lock is still good.
        self.tables
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl RecipientFilter for ListsFilter {
    fn allows(&self, sender: &UserId, recipient: &UserId) -> bool {
        self.read()
            .lists
            .get(sender)
            .is_none_or(|lists| lists.allows(recipient))
    }
}

/// The user-lists router. See the module documentation.
#[derive(Debug, Default)]
pub struct UserListsRouter {
    filter: Arc<ListsFilter>,
}

impl UserListsRouter {
    /// Replaces `owner`'s lists (an empty content removes them).
    pub fn set_lists(&self, owner: &UserId, lists: PresenceLists) {
        let mut tables = self
            .filter
            .tables
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(old) = tables.lists.remove(owner) {
            for r in old.exact_allowed() {
                if let Some(owners) = tables.allowed_by.get_mut(&r) {
                    owners.remove(owner);
                    if owners.is_empty() {
                        tables.allowed_by.remove(&r);
                    }
                }
            }
        }
        if lists == PresenceLists::default() {
            return;
        }
        for r in lists.exact_allowed() {
            if r != *owner && lists.allows(&r) {
                tables
                    .allowed_by
                    .entry(r)
                    .or_default()
                    .insert(owner.clone());
            }
        }
        tables.lists.insert(owner.clone(), lists);
    }
}

#[async_trait]
impl PresenceRouter for UserListsRouter {
    async fn get_users_for_states(&self, batch: &StateBatch) -> Result<UserStates, RouterError> {
        let tables = self.filter.read();
        let mut positions: HashMap<UserId, Vec<usize>> = HashMap::new();
        for (i, state) in batch.iter().enumerate() {
            let Some(lists) = tables.lists.get(&state.user_id) else {
                continue;
            };
            for r in lists.exact_allowed() {
                if r != state.user_id && lists.allows(&r) {
                    positions.entry(r).or_default().push(i);
                }
            }
        }
        Ok(positions
            .into_iter()
            .map(|(user, indices)| (user, batch.from_indices(indices)))
            .collect())
    }

    async fn get_interested_users(&self, user_id: &UserId) -> Result<InterestedUsers, RouterError> {
        let owners: BTreeSet<UserId> = self
            .filter
            .read()
            .allowed_by
            .get(user_id)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        Ok(InterestedUsers::Users(owners))
    }

    fn recipient_filter(&self) -> Option<Arc<dyn RecipientFilter>> {
        Some(self.filter.clone())
    }

    fn followed_account_data(&self) -> Vec<String> {
        vec![PRESENCE_LISTS_TYPE.to_owned()]
    }

    fn account_data_changed(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        event_type: &str,
        content: &Value,
    ) {
        if room.is_none() && event_type == PRESENCE_LISTS_TYPE {
            self.set_lists(user, PresenceLists::from_content(content));
        }
    }
}

impl RouterModule for UserListsRouter {
    type Config = UserListsConfig;

    fn parse_config(config: &Value) -> Result<UserListsConfig, ConfigError> {
        parse_typed_config(config)
    }

    fn new(_config: UserListsConfig, _api: ModuleApi) -> Self {
        Self::default()
    }
}

/// Registers the router under [`USER_LISTS_ROUTER_NAME`] and [`USER_LISTS_ROUTER_ALIAS`].
pub fn register(registry: &mut RouterRegistry) {
    registry.register::<UserListsRouter>(&[USER_LISTS_ROUTER_NAME, USER_LISTS_ROUTER_ALIAS]);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{conformance::block_on, router_conformance};

    fn uid(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    fn router() -> UserListsRouter {
        let r = UserListsRouter::default();
        r.account_data_changed(
            &uid("@alice:hs"),
            None,
            PRESENCE_LISTS_TYPE,
            &json!({"allow": ["@bob:hs", "*:partner.org", "@boss:hs"], "deny": ["@boss:hs"]}),
        );
        r.account_data_changed(
            &uid("@carol:hs"),
            None,
            PRESENCE_LISTS_TYPE,
            &json!({"deny": ["*"]}),
        );
        r
    }

    #[test]
    fn globs_match_whole_ids() {
        assert!(glob("*:partner.org", "@x:partner.org"));
        assert!(!glob("*:partner.org", "@x:partner.org.evil"));
        assert!(glob("@?ob:hs", "@bob:hs"));
        assert!(!glob("@?ob:hs", "@bbob:hs"));
        assert!(glob("*", ""));
        assert!(glob("@a*b*c", "@axxbyyc"));
        assert!(!glob("@a*b*c", "@axxbyy"));
    }

    #[test]
    fn deny_wins_allow_restricts_and_exact_allows_are_added() {
        let r = router();
        let f = r.recipient_filter().unwrap();
        let (alice, carol) = (uid("@alice:hs"), uid("@carol:hs"));
        assert!(f.allows(&alice, &uid("@bob:hs")));
        assert!(f.allows(&alice, &uid("@dan:partner.org")));
        assert!(!f.allows(&alice, &uid("@boss:hs")), "deny wins over allow");
        assert!(!f.allows(&alice, &uid("@eve:hs")), "not in allow");
        assert!(!f.allows(&carol, &alice));
        // Someone without lists is unaffected.
        assert!(f.allows(&uid("@eve:hs"), &alice));
        // Exact, non-denied allows are added recipients.
        let interested = block_on(r.get_interested_users(&uid("@bob:hs"))).unwrap();
        assert_eq!(interested, InterestedUsers::Users([alice.clone()].into()));
        let boss = block_on(r.get_interested_users(&uid("@boss:hs"))).unwrap();
        assert_eq!(boss, InterestedUsers::none());
        // Replacing the lists with {} forgets them.
        r.account_data_changed(&alice, None, PRESENCE_LISTS_TYPE, &json!({}));
        assert!(f.allows(&alice, &uid("@eve:hs")));
        let interested = block_on(r.get_interested_users(&uid("@bob:hs"))).unwrap();
        assert_eq!(interested, InterestedUsers::none());
        // Room account data of the type is not the lists.
        let room = RoomId::parse("!r:hs").unwrap();
        r.account_data_changed(
            &alice,
            Some(&room),
            PRESENCE_LISTS_TYPE,
            &json!({"deny": ["*"]}),
        );
        assert!(f.allows(&alice, &uid("@eve:hs")));
    }

    router_conformance! {
        mod user_lists_conformance;
        router: router(),
        probe_users: ["@alice:hs", "@bob:hs", "@boss:hs", "@carol:hs", "@dan:partner.org"],
    }
}
