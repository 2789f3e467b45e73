//! Property tests of the example router: on random configurations and random batches, its two
//! methods agree with each other and with the seed's rule.

use std::collections::BTreeSet;

use presence_router::{
    InterestedUsers, PresenceRouter, PresenceState, StateBatch, UserId, UserPresenceState,
};
use presence_routers::{ExamplePresenceRouter, ExampleRouterConfig, conformance};
use proptest::prelude::*;

/// A small pool, so that configurations and batches overlap often. Two users are remote.
const POOL: &[&str] = &[
    "@a:hs.example",
    "@b:hs.example",
    "@c:hs.example",
    "@d:hs.example",
    "@e:other.example",
    "@f:other.example:8448",
];

fn user(i: usize) -> UserId {
    UserId::parse(POOL[i]).unwrap()
}

fn users() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(0..POOL.len(), 0..=POOL.len())
}

fn batch() -> impl Strategy<Value = Vec<(usize, usize)>> {
    // (user, presence state); a user may appear more than once in a batch.
    proptest::collection::vec((0..POOL.len(), 0..PresenceState::ALL.len()), 0..20)
}

proptest! {
    #[test]
    fn routes_exactly_what_the_config_says(
        always in users(),
        blacklisted in users(),
        batch in batch(),
    ) {
        let always: BTreeSet<usize> = always.into_iter().collect();
        let blacklisted: BTreeSet<usize> = blacklisted.into_iter().collect();
        let router = ExamplePresenceRouter::with_config(ExampleRouterConfig::new(
            always.iter().map(|&i| user(i)),
            blacklisted.iter().map(|&i| user(i)),
        ));
        let senders: Vec<usize> = batch.iter().map(|&(u, _)| u).collect();
        let batch = StateBatch::new(
            batch
                .into_iter()
                .map(|(u, s)| UserPresenceState {
                    state: PresenceState::ALL[s],
                    ..UserPresenceState::offline(user(u))
                })
                .collect(),
        );

        let (answer, interest) = conformance::block_on(async {
            let answer = router.get_users_for_states(&batch).await.unwrap();
            let mut interest = Vec::new();
            for u in 0..POOL.len() {
                interest.push(router.get_interested_users(&user(u)).await.unwrap());
            }
            (answer, interest)
        });

        for (recipient, set) in &answer {
            prop_assert!(set.batch().same_batch(&batch));
            prop_assert!(!set.is_empty(), "{recipient} has an empty entry");
            prop_assert!(POOL.contains(&recipient.as_str()));
        }
        for u in 0..POOL.len() {
            let is_all = interest[u] == InterestedUsers::All;
            prop_assert_eq!(is_all, always.contains(&u));
            if !is_all {
                prop_assert_eq!(&interest[u], &InterestedUsers::none());
            }
            let routed = answer.get(&user(u));
            for (i, &sender) in senders.iter().enumerate() {
                let got = routed.is_some_and(|set| set.contains_index(i));
                let want = is_all && !blacklisted.contains(&sender);
                prop_assert_eq!(got, want, "recipient {} state #{} of {}", POOL[u], i, POOL[sender]);
            }
        }
    }
}
