//! Property tests: aggregation ignores device order, tokens only grow, no duplicates in a
//! sync, and failing routers never break a sync or an update.

use std::sync::Arc;

use presence_engine::{Input, machine};
use presence_router::{
    InterestedUsers, PresenceRouter, PresenceState, RouterError, StateBatch, UserId, UserStates,
};
use proptest::prelude::*;

use crate::harness::*;

fn any_state() -> impl Strategy<Value = PresenceState> {
    prop::sample::select(PresenceState::ALL.to_vec())
}

proptest! {
    #[test]
    fn aggregation_ignores_device_order(states in prop::collection::vec(any_state(), 0..6), seed in any::<u64>()) {
        let devs: Vec<machine::Device> = states
            .iter()
            .map(|&s| machine::Device { state: s, ..machine::Device::new(None) })
            .collect();
        let mut shuffled = devs.clone();
        let n = shuffled.len();
        if n > 1 {
            shuffled.rotate_left((seed as usize) % n);
            shuffled.swap(0, (seed as usize / 7) % n);
        }
        prop_assert_eq!(machine::combine(&devs), machine::combine(&shuffled));
    }
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, PresenceState),
    Join(u8, u8),
    Leave(u8, u8),
    Sync(u8),
    Advance(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..8, any_state()).prop_map(|(u, s)| Op::Put(u, s)),
        2 => (0u8..8, 0u8..3).prop_map(|(u, r)| Op::Join(u, r)),
        1 => (0u8..8, 0u8..3).prop_map(|(u, r)| Op::Leave(u, r)),
        3 => (0u8..8).prop_map(Op::Sync),
        1 => (0u32..120_000).prop_map(Op::Advance),
    ]
}

/// A router that fails in every way it can, depending on the call.
struct Chaos;

#[presence_router::async_trait]
impl PresenceRouter for Chaos {
    async fn get_users_for_states(&self, states: &StateBatch) -> Result<UserStates, RouterError> {
        match states.len() % 3 {
            0 => Err(RouterError::Failed("no".into())),
            1 => panic!("router bug"),
            _ => {
                // States from another batch: must be rejected whole.
                let other = StateBatch::new(states.states().to_vec());
                Ok([(uid("u0"), other.all())].into_iter().collect())
            }
        }
    }

    async fn get_interested_users(&self, user_id: &UserId) -> Result<InterestedUsers, RouterError> {
        if user_id.localpart().ends_with('1') {
            panic!("router bug");
        }
        Err(RouterError::Failed("no".into()))
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn tokens_grow_and_syncs_have_no_duplicates(ops in prop::collection::vec(op(), 1..60), chaos in any::<bool>()) {
        let mut h = H::new();
        h.example_router(&["u7"], &["u6"]);
        if chaos {
            h.routers.push("chaos", Arc::new(Chaos));
        }
        let mut tokens = [None::<u64>; 8];
        let mut last_current = h.e.current_token();
        for op in ops {
            match op {
                Op::Put(u, s) => { h.put(&format!("u{u}"), s, None); }
                Op::Join(u, r) => { h.join(&format!("r{r}"), &format!("u{u}")); }
                Op::Leave(u, r) => { h.e.leave(&room(&format!("r{r}")), &uid(&format!("u{u}"))); }
                Op::Sync(u) => {
                    let name = format!("u{u}");
                    let user = h.u(&name);
                    h.run(vec![Input::SyncStarted { user, device: dev("d"), state: PresenceState::Online }]);
                    // `names` asserts that nobody appears twice.
                    let (_, next) = h.names(&name, tokens[u as usize]);
                    if let Some(prev) = tokens[u as usize] {
                        prop_assert!(next >= prev, "token went back: {} < {}", next, prev);
                    }
                    tokens[u as usize] = Some(next);
                    h.run(vec![Input::SyncEnded { user, device: dev("d") }]);
                }
                Op::Advance(ms) => h.advance(u64::from(ms)),
            }
            let cur = h.e.current_token();
            prop_assert!(cur >= last_current);
            last_current = cur;
        }
    }

    /// With a chaotic router added, every sync returns what the example router alone gives.
    #[test]
    fn failing_routers_change_nothing(ops in prop::collection::vec(op(), 1..40)) {
        let mut plain = H::new();
        plain.example_router(&["u7"], &["u6"]);
        let mut chaotic = H::new();
        chaotic.example_router(&["u7"], &["u6"]);
        chaotic.routers.push("chaos", Arc::new(Chaos));
        for op in ops {
            for h in [&mut plain, &mut chaotic] {
                match &op {
                    Op::Put(u, s) => { h.put(&format!("u{u}"), *s, None); }
                    Op::Join(u, r) => { h.join(&format!("r{r}"), &format!("u{u}")); }
                    Op::Leave(u, r) => { h.e.leave(&room(&format!("r{r}")), &uid(&format!("u{u}"))); }
                    Op::Sync(_) | Op::Advance(_) => {}
                }
            }
            if let Op::Sync(u) = op {
                let name = format!("u{u}");
                prop_assert_eq!(plain.names(&name, None).0, chaotic.names(&name, None).0);
            }
        }
    }
}
