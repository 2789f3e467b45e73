//! How a RouterSet merges well-behaved routers.

use std::{sync::Arc, time::Duration};

use presence_router::{DEFAULT_CALL_TIMEOUT, InterestedUsers, RouterSet, StateBatch};

use crate::support::{Behaviour, Scripted, batch_of, expect, set_of, stats, uid, users, view};

const ALICE: &str = "@alice:hs";
const BOB: &str = "@bob:hs";
const CAROL: &str = "@carol:hs";
const DAVE: &str = "@dave:remote.org";
const ERIN: &str = "@erin:hs";
const FRANK: &str = "@frank:remote.org";

#[tokio::test]
async fn users_for_states_is_the_union_per_recipient() {
    let a = Arc::new(
        Scripted::new(Behaviour::Good)
            .route(CAROL, &[ALICE])
            .route(DAVE, &[BOB]),
    );
    let b = Arc::new(
        Scripted::new(Behaviour::Good)
            .route(CAROL, &[BOB, ALICE])
            .route(FRANK, &[ERIN]),
    );
    let set = set_of(vec![a.clone(), b.clone()]);
    let batch = batch_of(&[ALICE, BOB, ERIN]);

    let merged = set.get_users_for_states(&batch).await;

    assert_eq!(
        view(&merged),
        expect(&[(CAROL, &[ALICE, BOB]), (DAVE, &[BOB]), (FRANK, &[ERIN])])
    );
    assert!(merged.values().all(|s| s.batch().same_batch(&batch)));
    assert_eq!((a.calls(), b.calls()), (1, 1));
    assert_eq!(stats(&set, "r0"), (1, 0, 0, 0));
    assert_eq!(stats(&set, "r1"), (1, 0, 0, 0));
}

#[tokio::test]
async fn recipients_with_nothing_are_left_out() {
    // Routes Frank's states, but Frank is not in the batch: the set for Carol is empty.
    let a = Arc::new(
        Scripted::new(Behaviour::Good)
            .route(CAROL, &[FRANK])
            .route(DAVE, &[ALICE]),
    );
    let set = set_of(vec![a]);
    let merged = set.get_users_for_states(&batch_of(&[ALICE, BOB])).await;
    assert_eq!(view(&merged), expect(&[(DAVE, &[ALICE])]));
}

#[tokio::test]
async fn an_empty_batch_is_not_sent_to_routers() {
    let a = Arc::new(Scripted::new(Behaviour::Good).route(CAROL, &[ALICE]));
    let set = set_of(vec![a.clone()]);
    assert!(
        set.get_users_for_states(&StateBatch::new(Vec::new()))
            .await
            .is_empty()
    );
    assert_eq!(a.calls(), 0);
}

#[tokio::test]
async fn interested_users_is_the_union_of_the_sets() {
    let a = Arc::new(Scripted::new(Behaviour::Good).interest(CAROL, &[ALICE, DAVE]));
    let b = Arc::new(Scripted::new(Behaviour::Good).interest(CAROL, &[BOB, ALICE]));
    let set = set_of(vec![a, b]);
    assert_eq!(
        set.get_interested_users(&uid(CAROL)).await,
        users(&[ALICE, BOB, DAVE])
    );
    // Nobody says anything about Erin.
    assert_eq!(
        set.get_interested_users(&uid(ERIN)).await,
        InterestedUsers::none()
    );
}

#[tokio::test]
async fn all_short_circuits_later_routers() {
    let a = Arc::new(
        Scripted::new(Behaviour::Good)
            .all_for(CAROL)
            .interest(DAVE, &[ALICE]),
    );
    let b = Arc::new(
        Scripted::new(Behaviour::Good)
            .interest(CAROL, &[BOB])
            .interest(DAVE, &[BOB]),
    );
    let set = set_of(vec![a.clone(), b.clone()]);

    assert_eq!(
        set.get_interested_users(&uid(CAROL)).await,
        InterestedUsers::All
    );
    assert_eq!(
        (a.calls(), b.calls()),
        (1, 0),
        "the router after an All answer is not asked"
    );
    assert_eq!(stats(&set, "r1"), (0, 0, 0, 0));

    // For a user the first router gives a set, both are asked and their sets merge.
    assert_eq!(
        set.get_interested_users(&uid(DAVE)).await,
        users(&[ALICE, BOB])
    );
    assert_eq!((a.calls(), b.calls()), (2, 1));
}

#[tokio::test]
async fn all_from_a_later_router_wins_over_earlier_sets() {
    let a = Arc::new(Scripted::new(Behaviour::Good).interest(CAROL, &[ALICE]));
    let b = Arc::new(Scripted::new(Behaviour::Good).all_for(CAROL));
    let set = set_of(vec![a.clone(), b.clone()]);
    assert_eq!(
        set.get_interested_users(&uid(CAROL)).await,
        InterestedUsers::All
    );
    assert_eq!((a.calls(), b.calls()), (1, 1));
}

#[tokio::test]
async fn an_empty_set_answers_nothing() {
    let set = RouterSet::new(DEFAULT_CALL_TIMEOUT);
    assert!(set.is_empty());
    assert_eq!(set.stats().count(), 0);
    assert!(
        set.get_users_for_states(&batch_of(&[ALICE, BOB]))
            .await
            .is_empty()
    );
    assert_eq!(
        set.get_interested_users(&uid(ALICE)).await,
        InterestedUsers::none()
    );
}

#[tokio::test(start_paused = true)]
async fn a_router_within_its_time_budget_is_merged() {
    let slow = Arc::new(
        Scripted::new(Behaviour::Sleeps(DEFAULT_CALL_TIMEOUT / 2))
            .route(CAROL, &[ALICE])
            .interest(CAROL, &[BOB]),
    );
    let set = set_of(vec![slow]);
    let start = tokio::time::Instant::now();
    assert_eq!(
        view(&set.get_users_for_states(&batch_of(&[ALICE])).await),
        expect(&[(CAROL, &[ALICE])])
    );
    assert_eq!(set.get_interested_users(&uid(CAROL)).await, users(&[BOB]));
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(1),
        "two calls of half a second each"
    );
    assert_eq!(stats(&set, "r0"), (2, 0, 0, 0));
}
