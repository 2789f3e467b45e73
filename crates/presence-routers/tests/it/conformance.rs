//! The conformance suite, run against the example router in several configurations, and
//! against deliberately broken routers to show that it fails them.

use std::{collections::BTreeSet, sync::Arc};

use presence_router::{
    InterestedUsers, ModuleApi, PresenceRouter, RouterError, RouterRegistry, ServerName,
    StateBatch, UserId, UserPresenceState, UserStates, async_trait,
};
use presence_routers::{
    EXAMPLE_ROUTER_ALIAS, ExamplePresenceRouter, ExampleRouterConfig, conformance,
    register_builtin, router_conformance,
};
use serde_json::json;

const GOBBLER: &str = "@gobbler:example.com";
const GOBBLER_REMOTE: &str = "@gobbler2:elsewhere.org";
const BLOCKED: &str = "@blocked:example.com";

fn uid(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

fn configured_router() -> ExamplePresenceRouter {
    ExamplePresenceRouter::with_config(ExampleRouterConfig::new(
        [uid(GOBBLER), uid(GOBBLER_REMOTE)],
        // A recipient may be blacklisted too: it still receives everybody else.
        [uid(BLOCKED), uid(GOBBLER_REMOTE)],
    ))
}

/// The example router's documented hold-back: blacklisted users' states are never routed.
fn blacklisted(_recipient: &UserId, state: &UserPresenceState) -> bool {
    [BLOCKED, GOBBLER_REMOTE].contains(&state.user_id.as_str())
}

router_conformance! {
    mod example_router;
    router: configured_router(),
    probe_users: [GOBBLER, GOBBLER_REMOTE, BLOCKED],
    hold_back: blacklisted,
}

router_conformance! {
    mod example_router_unconfigured;
    router: ExamplePresenceRouter::with_config(ExampleRouterConfig::default()),
}

router_conformance! {
    mod example_router_from_registry;
    router: {
        let mut registry = RouterRegistry::new();
        register_builtin(&mut registry);
        let api = ModuleApi::detached(ServerName::parse("example.com").unwrap());
        let config = json!({"always_send_to_users": [GOBBLER], "blacklisted_users": [BLOCKED]});
        registry.build("modules[0]", EXAMPLE_ROUTER_ALIAS, &config, &api).unwrap()
    },
    probe_users: [GOBBLER, BLOCKED],
    hold_back: |_recipient, state| state.user_id.as_str() == BLOCKED,
}

/// Without the hold-back predicate, the example router's blacklist breaks the rule: the suite
/// must notice.
#[test]
#[should_panic(expected = "did not route")]
fn undeclared_hold_back_fails_the_suite() {
    conformance::block_on(async {
        let probes = conformance::probe_users(&[GOBBLER, BLOCKED]);
        let router = configured_router();
        conformance::check_consistency(&router, &probes, conformance::no_hold_back).await;
    });
}

/// Says everyone is interested in everyone and routes nothing.
struct Deaf;

#[async_trait]
impl PresenceRouter for Deaf {
    async fn get_users_for_states(&self, _: &StateBatch) -> Result<UserStates, RouterError> {
        Ok(UserStates::new())
    }
    async fn get_interested_users(&self, _: &UserId) -> Result<InterestedUsers, RouterError> {
        Ok(InterestedUsers::Users(BTreeSet::from([uid(
            "@bob:example.com",
        )])))
    }
}

#[test]
#[should_panic(expected = "is interested in @bob:example.com")]
fn inconsistent_router_fails_the_suite() {
    conformance::block_on(async {
        conformance::check_consistency(
            &Deaf,
            &conformance::probe_users(&[]),
            conformance::no_hold_back,
        )
        .await;
    });
}

/// Answers with sets of a batch of its own making.
struct Forger;

#[async_trait]
impl PresenceRouter for Forger {
    async fn get_users_for_states(&self, batch: &StateBatch) -> Result<UserStates, RouterError> {
        let copy = StateBatch::new(batch.to_vec());
        Ok(UserStates::from([(uid(GOBBLER), copy.all())]))
    }
    async fn get_interested_users(&self, _: &UserId) -> Result<InterestedUsers, RouterError> {
        Ok(InterestedUsers::none())
    }
}

#[test]
#[should_panic(expected = "drawn from another batch")]
fn sets_from_another_batch_fail_the_suite() {
    conformance::block_on(async {
        conformance::check_answers_from_batch(&Forger, &conformance::probe_users(&[])).await;
    });
}

#[test]
#[should_panic(expected = "failed on an empty batch")]
fn failing_on_an_empty_batch_fails_the_suite() {
    struct Grumpy;
    #[async_trait]
    impl PresenceRouter for Grumpy {
        async fn get_users_for_states(&self, _: &StateBatch) -> Result<UserStates, RouterError> {
            Err(RouterError::Failed("no".to_owned()))
        }
        async fn get_interested_users(&self, _: &UserId) -> Result<InterestedUsers, RouterError> {
            Ok(InterestedUsers::none())
        }
    }
    conformance::block_on(conformance::check_empty_batch(&Grumpy));
}

#[test]
fn probe_batches_cover_every_probe_user_and_span_several_words() {
    let probes = conformance::probe_users(&[GOBBLER, "@alice:example.com"]);
    assert_eq!(
        probes.len(),
        conformance::DEFAULT_PROBE_USERS.len() + 1,
        "duplicates are dropped"
    );
    let batches = conformance::probe_batches(&probes);
    let large = batches.iter().map(|b| b.len()).max().unwrap();
    assert!(large > 128, "largest probe batch has {large} states");
    for batch in &batches {
        assert!(!batch.is_empty());
    }
    for user in &probes {
        assert!(
            batches[0].iter().any(|s| &s.user_id == user),
            "{user} missing from the first batch"
        );
        let alone = batches
            .iter()
            .filter(|b| b.len() == 1 && &b[0].user_id == user)
            .count();
        assert_eq!(alone, 1, "{user} has no batch of its own");
    }
}

/// A router that is only reachable as a shared handle still runs through the suite.
#[test]
fn shared_handles_are_routers() {
    let shared: Arc<dyn PresenceRouter> = Arc::new(configured_router());
    conformance::block_on(conformance::check_consistency(
        &shared,
        &conformance::probe_users(&[GOBBLER, BLOCKED]),
        blacklisted,
    ));
}
