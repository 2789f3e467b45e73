//! The "buddy list" router of `docs/module-authors.md`: each configured user watches a fixed
//! list of other users. The code between the markers is the guide's, character for character
//! (a test of `presence-routers` checks it); `main` builds the router through the registry and
//! routes one update.
//!
//! `cargo run -p presence-routers --example buddy_router`

// guide: begin
use std::collections::{BTreeMap, BTreeSet, HashMap};

use presence_router::{
    ConfigError, InterestedUsers, ModuleApi, PresenceRouter, RouterError, RouterModule,
    RouterRegistry, StateBatch, UserId, UserStates, async_trait, parse_typed_config,
};
use serde::Deserialize;

/// `config:` of the router: `watchers: { "@watcher:hs": ["@watched:hs", ...] }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuddyConfig {
    /// Each watcher and the users whose presence it receives.
    #[serde(default)]
    watchers: BTreeMap<UserId, Vec<UserId>>,
}

/// Routes each watched user's presence to its watchers.
pub struct BuddyRouter {
    /// watched user -> the users who watch them (the direction updates travel).
    watched_by: HashMap<UserId, Vec<UserId>>,
    /// watcher -> the users they watch (the direction syncs ask).
    watching: HashMap<UserId, BTreeSet<UserId>>,
}

#[async_trait]
impl PresenceRouter for BuddyRouter {
    async fn get_users_for_states(&self, batch: &StateBatch) -> Result<UserStates, RouterError> {
        // Positions in the batch, per recipient; recipients differ per state, so the sets
        // are built from indices rather than one shared `select`.
        let mut positions: HashMap<&UserId, Vec<usize>> = HashMap::new();
        for (i, state) in batch.iter().enumerate() {
            for watcher in self.watched_by.get(&state.user_id).into_iter().flatten() {
                positions.entry(watcher).or_default().push(i);
            }
        }
        Ok(positions
            .into_iter()
            .map(|(watcher, indices)| (watcher.clone(), batch.from_indices(indices)))
            .collect())
    }

    async fn get_interested_users(&self, user_id: &UserId) -> Result<InterestedUsers, RouterError> {
        Ok(InterestedUsers::Users(
            self.watching.get(user_id).cloned().unwrap_or_default(),
        ))
    }
}

impl RouterModule for BuddyRouter {
    type Config = BuddyConfig;

    fn parse_config(config: &serde_json::Value) -> Result<BuddyConfig, ConfigError> {
        // Errors name the failing key, e.g. `modules[0].config.watchers.@a:hs[1]`.
        parse_typed_config(config)
    }

    fn new(config: BuddyConfig, _api: ModuleApi) -> Self {
        let mut watched_by: HashMap<UserId, Vec<UserId>> = HashMap::new();
        let mut watching: HashMap<UserId, BTreeSet<UserId>> = HashMap::new();
        for (watcher, watched) in config.watchers {
            for user in watched {
                watched_by
                    .entry(user.clone())
                    .or_default()
                    .push(watcher.clone());
                watching.entry(watcher.clone()).or_default().insert(user);
            }
        }
        Self {
            watched_by,
            watching,
        }
    }
}

/// Makes the router available as `module: buddies`.
pub fn register(registry: &mut RouterRegistry) {
    registry.register::<BuddyRouter>(&["buddies"]);
}
// guide: end

fn main() -> Result<(), Box<dyn std::error::Error>> {
    use presence_router::{ServerName, StateBatch, UserPresenceState};

    let mut registry = RouterRegistry::new();
    register(&mut registry);
    let config = serde_json::json!({"watchers": {"@alice:example.org": ["@bob:example.org"]}});
    let api = ModuleApi::detached(ServerName::parse("example.org")?);
    let router = registry.build("modules[0]", "buddies", &config, &api)?;

    let bob = UserId::parse("@bob:example.org")?;
    let batch = StateBatch::new(vec![UserPresenceState::offline(bob)]);
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let routed = runtime.block_on(router.get_users_for_states(&batch))?;
    for (recipient, states) in &routed {
        println!(
            "{recipient} receives {} update(s)",
            states.indices().count()
        );
    }
    Ok(())
}
