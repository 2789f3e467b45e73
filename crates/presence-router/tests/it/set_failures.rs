//! A RouterSet isolates routers that fail, panic, overrun their budget or answer with states
//! they were not given: such an answer is dropped whole, the others still merge, and the
//! failure is counted.

use std::{sync::Arc, time::Duration};

use presence_router::{DEFAULT_CALL_TIMEOUT, InterestedUsers, RouterSet};

use crate::support::{Behaviour, Scripted, batch_of, expect, set_of, stats, uid, users, view};

const ALICE: &str = "@alice:hs";
const BOB: &str = "@bob:hs";
const CAROL: &str = "@carol:hs";
const DAVE: &str = "@dave:remote.org";
const ERIN: &str = "@erin:hs";

const TOO_SLOW: Behaviour = Behaviour::Sleeps(Duration::from_secs(5));

/// Good router r0, the router under test r1, good router r2. The router under test routes
/// something to every recipient, including ones the good routers also serve, so that any
/// partial merge of its answer would show.
fn sandwich(behaviour: Behaviour) -> (RouterSet, Arc<Scripted>) {
    let before = Scripted::new(Behaviour::Good)
        .route(CAROL, &[ALICE])
        .interest(CAROL, &[ALICE]);
    let bad = Scripted::new(behaviour)
        .route(CAROL, &[BOB, ERIN])
        .route(DAVE, &[ALICE, BOB, ERIN])
        .route(ERIN, &[ALICE])
        .interest(CAROL, &[DAVE, ERIN])
        .all_for(DAVE);
    let after = Scripted::new(Behaviour::Good)
        .route(DAVE, &[BOB])
        .interest(CAROL, &[BOB]);
    let bad = Arc::new(bad);
    (
        set_of(vec![Arc::new(before), bad.clone(), Arc::new(after)]),
        bad,
    )
}

/// What the two good routers of [`sandwich`] answer together.
async fn assert_only_good_routers_merged(set: &RouterSet) {
    let merged = set
        .get_users_for_states(&batch_of(&[ALICE, BOB, ERIN]))
        .await;
    assert_eq!(view(&merged), expect(&[(CAROL, &[ALICE]), (DAVE, &[BOB])]));
}

#[tokio::test]
async fn a_router_error_is_skipped() {
    let (set, bad) = sandwich(Behaviour::Fails);
    assert_only_good_routers_merged(&set).await;
    assert_eq!(
        set.get_interested_users(&uid(CAROL)).await,
        users(&[ALICE, BOB])
    );
    assert_eq!(
        set.get_interested_users(&uid(DAVE)).await,
        InterestedUsers::none()
    );
    assert_eq!(bad.calls(), 3);
    assert_eq!(stats(&set, "r1"), (3, 3, 0, 0));
    assert_eq!(stats(&set, "r0"), (3, 0, 0, 0));
    assert_eq!(stats(&set, "r2"), (3, 0, 0, 0));
}

#[tokio::test]
async fn a_router_panic_is_caught_and_skipped() {
    let (set, bad) = sandwich(Behaviour::Panics);
    assert_only_good_routers_merged(&set).await;
    assert_eq!(
        set.get_interested_users(&uid(CAROL)).await,
        users(&[ALICE, BOB])
    );
    // Its `All` for Dave would have short-circuited: a panic must not.
    assert_eq!(
        set.get_interested_users(&uid(DAVE)).await,
        InterestedUsers::none()
    );
    assert_eq!(bad.calls(), 3);
    assert_eq!(stats(&set, "r1"), (3, 3, 0, 3));
    assert_eq!(stats(&set, "r2"), (3, 0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_router_past_its_time_budget_is_cut_off_and_skipped() {
    let (set, bad) = sandwich(TOO_SLOW);
    let start = tokio::time::Instant::now();
    assert_only_good_routers_merged(&set).await;
    assert_eq!(
        start.elapsed(),
        DEFAULT_CALL_TIMEOUT,
        "the slow call is abandoned at the budget"
    );
    assert_eq!(
        set.get_interested_users(&uid(CAROL)).await,
        users(&[ALICE, BOB])
    );
    assert_eq!(
        set.get_interested_users(&uid(DAVE)).await,
        InterestedUsers::none()
    );
    assert_eq!(start.elapsed(), DEFAULT_CALL_TIMEOUT * 3);
    assert_eq!(bad.calls(), 3);
    assert_eq!(stats(&set, "r1"), (3, 3, 3, 0));
    assert_eq!(stats(&set, "r0"), (3, 0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn the_time_budget_is_configurable() {
    let slow = Arc::new(
        Scripted::new(Behaviour::Sleeps(Duration::from_millis(300))).route(CAROL, &[ALICE]),
    );
    let mut tight = RouterSet::new(Duration::from_millis(100));
    tight.push("slow", slow.clone());
    assert!(
        tight
            .get_users_for_states(&batch_of(&[ALICE]))
            .await
            .is_empty()
    );
    assert_eq!(stats(&tight, "slow"), (1, 1, 1, 0));

    let mut loose = RouterSet::new(Duration::from_millis(500));
    loose.push("slow", slow);
    assert_eq!(
        view(&loose.get_users_for_states(&batch_of(&[ALICE])).await),
        expect(&[(CAROL, &[ALICE])])
    );
    assert_eq!(stats(&loose, "slow"), (1, 0, 0, 0));
}

#[tokio::test]
async fn an_answer_with_states_from_another_batch_is_dropped_whole() {
    let (set, bad) = sandwich(Behaviour::ForeignBatch);
    assert_only_good_routers_merged(&set).await;
    assert_eq!(bad.calls(), 1);
    assert_eq!(stats(&set, "r1"), (1, 1, 0, 0));
    assert_eq!(stats(&set, "r2"), (1, 0, 0, 0));
    // Its get_interested_users answers are fine and are used.
    assert_eq!(
        set.get_interested_users(&uid(CAROL)).await,
        users(&[ALICE, BOB, DAVE, ERIN])
    );
    assert_eq!(
        set.get_interested_users(&uid(DAVE)).await,
        InterestedUsers::All
    );
    assert_eq!(stats(&set, "r1"), (3, 1, 0, 0));
}

#[tokio::test]
async fn a_failing_router_is_asked_again_next_time() {
    let (set, bad) = sandwich(Behaviour::Fails);
    for _ in 0..3 {
        assert_only_good_routers_merged(&set).await;
    }
    assert_eq!(bad.calls(), 3);
    assert_eq!(stats(&set, "r1"), (3, 3, 0, 0));
}

#[tokio::test]
async fn the_first_router_failing_does_not_lose_the_others() {
    let bad = Arc::new(
        Scripted::new(Behaviour::Panics)
            .all_for(CAROL)
            .route(CAROL, &[ALICE]),
    );
    let good = Arc::new(
        Scripted::new(Behaviour::Good)
            .route(CAROL, &[BOB])
            .interest(CAROL, &[BOB]),
    );
    let set = set_of(vec![bad, good]);
    assert_eq!(
        view(&set.get_users_for_states(&batch_of(&[ALICE, BOB])).await),
        expect(&[(CAROL, &[BOB])])
    );
    assert_eq!(set.get_interested_users(&uid(CAROL)).await, users(&[BOB]));
}

/// The restricting mode's filters combine as "every filter allows"; a filter that panics
/// refuses the pair (and keeps refusing it) without disturbing the others, and a set whose
/// routers have no filter has none.
#[test]
fn filters_combine_and_a_panicking_filter_fails_closed() {
    use presence_router::{
        FilterSet, PresenceRouter, RecipientFilter, RouterError, StateBatch, UserId, UserStates,
        async_trait,
    };

    struct NotTo(&'static str);
    impl RecipientFilter for NotTo {
        fn allows(&self, _sender: &UserId, recipient: &UserId) -> bool {
            assert!(recipient.as_str() != CAROL, "filter bug");
            recipient.as_str() != self.0
        }
    }
    struct Filtering(Arc<NotTo>);
    #[async_trait]
    impl PresenceRouter for Filtering {
        async fn get_users_for_states(&self, _: &StateBatch) -> Result<UserStates, RouterError> {
            Ok(UserStates::new())
        }
        async fn get_interested_users(&self, _: &UserId) -> Result<InterestedUsers, RouterError> {
            Ok(InterestedUsers::none())
        }
        fn recipient_filter(&self) -> Option<Arc<dyn RecipientFilter>> {
            Some(self.0.clone())
        }
    }

    let plain = set_of(vec![Arc::new(Scripted::new(Behaviour::Good))]);
    assert!(plain.recipient_filter().is_none());

    let mut set = RouterSet::new(DEFAULT_CALL_TIMEOUT);
    set.push("plain", Arc::new(Scripted::new(Behaviour::Good)));
    set.push("not-bob", Arc::new(Filtering(Arc::new(NotTo(BOB)))));
    set.push("not-dave", Arc::new(Filtering(Arc::new(NotTo(DAVE)))));
    let filter: Arc<FilterSet> = set.recipient_filter().unwrap();
    assert_eq!(filter.names().collect::<Vec<_>>(), ["not-bob", "not-dave"]);
    let (alice, bob, carol, dave, erin) = (uid(ALICE), uid(BOB), uid(CAROL), uid(DAVE), uid(ERIN));
    assert!(filter.allows(&alice, &erin));
    assert!(!filter.allows(&alice, &bob));
    assert!(!filter.allows(&alice, &dave));
    // Both filters panic on carol: refused, every time.
    assert!(!filter.allows(&alice, &carol));
    assert!(!filter.allows(&bob, &carol));
    assert!(filter.allows(&carol, &erin));
}
