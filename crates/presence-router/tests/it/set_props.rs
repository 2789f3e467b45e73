//! Property: whatever mix of well-behaved and misbehaving routers a RouterSet holds, its answers
//! are exactly the merge of the well-behaved routers' answers.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use presence_router::{DEFAULT_CALL_TIMEOUT, InterestedUsers, StateBatch, UserId};
use proptest::prelude::*;

use crate::support::{Behaviour, Scripted, batch_of, set_of, stats, uid};

const POOL: &[&str] = &["@a:hs", "@b:hs", "@c:hs", "@d:remote.org", "@e:remote.org"];

fn behaviour() -> impl Strategy<Value = Behaviour> {
    prop_oneof![
        3 => Just(Behaviour::Good),
        1 => Just(Behaviour::Sleeps(DEFAULT_CALL_TIMEOUT / 4)),
        1 => Just(Behaviour::Sleeps(DEFAULT_CALL_TIMEOUT * 3)),
        1 => Just(Behaviour::Fails),
        1 => Just(Behaviour::Panics),
        1 => Just(Behaviour::ForeignBatch),
    ]
}

/// One router: its behaviour, its routing table (recipient → senders), the users it answers
/// `All` for and its interest table (user → users).
type RouterSpec = (
    Behaviour,
    Vec<(usize, Vec<usize>)>,
    Vec<usize>,
    Vec<(usize, Vec<usize>)>,
);

fn table() -> impl Strategy<Value = Vec<(usize, Vec<usize>)>> {
    proptest::collection::vec(
        (
            0..POOL.len(),
            proptest::collection::vec(0..POOL.len(), 0..4),
        ),
        0..4,
    )
}

fn router() -> impl Strategy<Value = RouterSpec> {
    (
        behaviour(),
        table(),
        proptest::collection::vec(0..POOL.len(), 0..2),
        table(),
    )
}

fn build((behaviour, routes, all, interest): &RouterSpec) -> Scripted {
    let names = |v: &[usize]| v.iter().map(|&i| POOL[i]).collect::<Vec<_>>();
    let mut r = Scripted::new(*behaviour);
    for (recipient, senders) in routes {
        r = r.route(POOL[*recipient], &names(senders));
    }
    for &u in all {
        r = r.all_for(POOL[u]);
    }
    for (user, users) in interest {
        r = r.interest(POOL[*user], &names(users));
    }
    r
}

/// Whether the router's `get_users_for_states` answer is used.
fn states_used(b: Behaviour) -> bool {
    match b {
        Behaviour::Good => true,
        Behaviour::Sleeps(d) => d < DEFAULT_CALL_TIMEOUT,
        Behaviour::Fails | Behaviour::Panics | Behaviour::ForeignBatch => false,
    }
}

/// Whether the router's `get_interested_users` answer is used.
fn interest_used(b: Behaviour) -> bool {
    b == Behaviour::ForeignBatch || states_used(b)
}

/// Recipient → positions in the batch, without empty entries.
fn positions(answer: &presence_router::UserStates) -> BTreeMap<UserId, BTreeSet<usize>> {
    answer
        .iter()
        .map(|(u, set)| (u.clone(), set.indices().collect::<BTreeSet<_>>()))
        .filter(|(_, set)| !set.is_empty())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn merged_answers_are_the_well_behaved_routers_answers(
        specs in proptest::collection::vec(router(), 0..5),
        senders in proptest::collection::btree_set(0..POOL.len(), 0..=POOL.len()),
    ) {
        let routers: Vec<Arc<Scripted>> = specs.iter().map(|s| Arc::new(build(s))).collect();
        let set = set_of(routers.clone());
        let batch: StateBatch = batch_of(&senders.iter().map(|&i| POOL[i]).collect::<Vec<_>>());

        // Expected answers, computed from the well-behaved routers alone.
        let mut want_states: BTreeMap<UserId, BTreeSet<usize>> = BTreeMap::new();
        for (r, spec) in routers.iter().zip(&specs) {
            if states_used(spec.0) {
                for (u, set) in positions(&r.expected_states(&batch)) {
                    want_states.entry(u).or_default().extend(set);
                }
            }
        }
        let want_interest = |user: &UserId| {
            let mut union = BTreeSet::new();
            for (r, spec) in routers.iter().zip(&specs) {
                if !interest_used(spec.0) {
                    continue;
                }
                match r.expected_interest(user) {
                    InterestedUsers::All => return InterestedUsers::All,
                    InterestedUsers::Users(users) => union.extend(users),
                }
            }
            InterestedUsers::Users(union)
        };

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let (got_states, got_interest) = rt.block_on(async {
            let states = set.get_users_for_states(&batch).await;
            let mut interest = Vec::new();
            for u in POOL {
                interest.push(set.get_interested_users(&uid(u)).await);
            }
            (states, interest)
        });

        prop_assert!(got_states.values().all(|s| s.batch().same_batch(&batch)));
        prop_assert!(got_states.values().all(|s| !s.is_empty()));
        prop_assert_eq!(positions(&got_states), want_states);
        for (u, got) in POOL.iter().zip(&got_interest) {
            prop_assert_eq!(got, &want_interest(&uid(u)), "interested users of {}", u);
        }

        // Routers that fail on every call have every call counted as a failure.
        for (i, spec) in specs.iter().enumerate() {
            let (calls, failures, timeouts, panics) = stats(&set, &format!("r{i}"));
            prop_assert_eq!(calls, routers[i].calls() as u64);
            match spec.0 {
                Behaviour::Fails => prop_assert_eq!((failures, timeouts, panics), (calls, 0, 0)),
                Behaviour::Panics => prop_assert_eq!((failures, timeouts, panics), (calls, 0, calls)),
                Behaviour::Sleeps(d) if d > DEFAULT_CALL_TIMEOUT => {
                    prop_assert_eq!((failures, timeouts, panics), (calls, calls, 0));
                }
                Behaviour::Good | Behaviour::Sleeps(_) => prop_assert_eq!((failures, timeouts, panics), (0, 0, 0)),
                Behaviour::ForeignBatch => {
                    // Only a non-empty answer can hold a set of another batch, and the router
                    // is only asked about non-empty batches.
                    let invalid = !batch.is_empty() && !spec.1.is_empty();
                    prop_assert_eq!((failures, timeouts, panics), (u64::from(invalid), 0, 0));
                }
            }
        }
    }
}

#[test]
fn sleeping_behaviours_straddle_the_budget() {
    // The property relies on these two lying on either side of the default budget.
    assert!(DEFAULT_CALL_TIMEOUT / 4 < DEFAULT_CALL_TIMEOUT);
    assert!(DEFAULT_CALL_TIMEOUT * 3 > DEFAULT_CALL_TIMEOUT + Duration::from_millis(1));
}
