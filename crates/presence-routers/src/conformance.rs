//! The router conformance suite: checks every presence router must pass, and the
//! [`router_conformance!`](crate::router_conformance) macro that turns them into a test module.
//!
//! The contract being checked is the one in `presence_router`'s `PresenceRouter` docs:
//!
//! - a router answers an empty batch (with nothing) and never panics on ordinary input;
//! - every [`StateSet`](presence_router::StateSet) it answers with is drawn from the batch it was given;
//! - `get_interested_users` agrees with `get_users_for_states`: if `u` is interested in the
//!   presence of `s.user_id` (the answer is [`InterestedUsers::All`] or contains that user),
//!   then `u` is a recipient of `s`, unless the router documents that it holds `s` back from
//!   `u` (the example router's blacklist). Without this, a change would not wake the
//!   interested user's sync, and an `All` user would never see it, since an `All` user's sync
//!   is served by passing updates through `get_users_for_states`.
//!
//! The functions here panic with a descriptive message when a check fails: they are meant to be
//! called from tests, and the macro is the usual way to do so.

use std::{collections::BTreeSet, sync::Arc};

use presence_router::{
    InterestedUsers, PresenceRouter, PresenceState, StateBatch, UserId, UserPresenceState,
    UserStates,
};

/// Users every conformance run probes, besides the ones a router's test names: local-looking
/// and remote users, a server with a port, an IPv6 literal and a historical localpart.
pub const DEFAULT_PROBE_USERS: &[&str] = &[
    "@alice:example.com",
    "@bob:example.com",
    "@charlie:somewhere.org",
    "@dave:example.com:8448",
    "@=old.style_/name:[::1]",
];

/// How many users, besides the probe users, fill the large probe batch: enough that the batch
/// spans several 64-state words of a [`StateSet`](presence_router::StateSet).
const FILLER_USERS: usize = 70;

/// Runs `fut` to completion on a fresh single-threaded Tokio runtime with timers enabled, so
/// routers that await Tokio primitives can be checked from a plain `#[test]`. Inside an async
/// test, await the `check_*` functions directly instead: a runtime cannot be started from
/// within another.
///
/// # Panics
///
/// If the runtime cannot be built (the process is out of resources).
pub fn block_on<F: Future>(fut: F) -> F::Output {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(fut),
        Err(e) => panic!("cannot build a Tokio runtime for the conformance suite: {e}"),
    }
}

/// The default hold-back predicate: no state is ever held back from an interested user.
pub fn no_hold_back(_recipient: &UserId, _state: &UserPresenceState) -> bool {
    false
}

/// Parses `extra` and adds it to [`DEFAULT_PROBE_USERS`], without duplicates, in order.
///
/// # Panics
///
/// If a string is not a valid user ID (a mistake in the test, not in the router).
pub fn probe_users(extra: &[&str]) -> Vec<UserId> {
    let mut seen = BTreeSet::new();
    DEFAULT_PROBE_USERS
        .iter()
        .chain(extra)
        .map(|s| match UserId::parse(s) {
            Ok(u) => u,
            Err(e) => panic!("probe user {s:?} is not a user ID: {e}"),
        })
        .filter(|u| seen.insert(u.clone()))
        .collect()
}

/// The batches a router is probed with: one state per probe user; each probe user alone; and a
/// large batch in which every probe user appears several times, in every presence state,
/// between filler users, so that it spans several words of a [`StateSet`](presence_router::StateSet).
pub fn probe_batches(probes: &[UserId]) -> Vec<StateBatch> {
    let state_of = |user: &UserId, n: usize| UserPresenceState {
        state: PresenceState::ALL[n % PresenceState::ALL.len()],
        last_active_ts: 1_700_000_000_000 + n as u64,
        status_msg: n
            .is_multiple_of(3)
            .then(|| Arc::from(format!("status {n}"))),
        currently_active: n.is_multiple_of(2),
        ..UserPresenceState::offline(user.clone())
    };
    let mut batches = vec![StateBatch::new(
        probes
            .iter()
            .enumerate()
            .map(|(n, u)| state_of(u, n))
            .collect(),
    )];
    batches.extend(probes.iter().map(|u| StateBatch::new(vec![state_of(u, 2)])));
    let fillers: Vec<UserId> = (0..FILLER_USERS)
        .filter_map(|i| UserId::parse(&format!("@filler{i}:example.net")).ok())
        .collect();
    let mut large = Vec::new();
    for round in 0..PresenceState::ALL.len() {
        for (n, u) in fillers.iter().chain(probes).enumerate() {
            large.push(state_of(u, round + n));
        }
    }
    batches.push(StateBatch::new(large));
    batches
}

/// Checks that `router` answers an empty batch with no state, and does not panic.
pub async fn check_empty_batch<R: PresenceRouter + ?Sized>(router: &R) {
    let batch = StateBatch::new(Vec::new());
    match router.get_users_for_states(&batch).await {
        Ok(answer) => {
            assert_from_batch(&answer, &batch);
            for (user, set) in &answer {
                assert!(set.is_empty(), "{user} was routed states of an empty batch");
            }
        }
        Err(e) => panic!("get_users_for_states failed on an empty batch: {e}"),
    }
}

/// Checks that every set `router` answers with is drawn from the batch it was given, for every
/// probe batch, and that `get_interested_users` answers every probe user.
pub async fn check_answers_from_batch<R: PresenceRouter + ?Sized>(router: &R, probes: &[UserId]) {
    for batch in probe_batches(probes) {
        let answer = users_for_states(router, &batch).await;
        assert_from_batch(&answer, &batch);
    }
    for user in probes {
        interested_users(router, user).await;
    }
}

/// Checks the consistency rule for every probe user and every state of every probe batch: if
/// the user is interested in the state's user, the state is routed to the user, unless
/// `hold_back(recipient, state)` says the router holds it back on purpose.
pub async fn check_consistency<R, H>(router: &R, probes: &[UserId], hold_back: H)
where
    R: PresenceRouter + ?Sized,
    H: Fn(&UserId, &UserPresenceState) -> bool,
{
    let mut interest = Vec::with_capacity(probes.len());
    for user in probes {
        interest.push((user, interested_users(router, user).await));
    }
    for batch in probe_batches(probes) {
        let answer = users_for_states(router, &batch).await;
        assert_from_batch(&answer, &batch);
        for (user, interested) in &interest {
            let routed = answer.get(*user);
            for (i, state) in batch.iter().enumerate() {
                let wants = match interested {
                    InterestedUsers::All => true,
                    InterestedUsers::Users(users) => users.contains(&state.user_id),
                };
                if !wants || hold_back(user, state) {
                    continue;
                }
                assert!(
                    routed.is_some_and(|set| set.contains_index(i)),
                    "{user} is interested in {} ({interested:?}) but get_users_for_states did \
                     not route that user's state (position {i} of a batch of {}) to it",
                    state.user_id,
                    batch.len(),
                );
            }
        }
    }
}

async fn users_for_states<R: PresenceRouter + ?Sized>(
    router: &R,
    batch: &StateBatch,
) -> UserStates {
    match router.get_users_for_states(batch).await {
        Ok(answer) => answer,
        Err(e) => panic!(
            "get_users_for_states failed on a batch of {} states: {e}",
            batch.len()
        ),
    }
}

async fn interested_users<R: PresenceRouter + ?Sized>(
    router: &R,
    user: &UserId,
) -> InterestedUsers {
    match router.get_interested_users(user).await {
        Ok(answer) => answer,
        Err(e) => panic!("get_interested_users({user}) failed: {e}"),
    }
}

fn assert_from_batch(answer: &UserStates, batch: &StateBatch) {
    for (user, set) in answer {
        assert!(
            set.batch().same_batch(batch),
            "the set routed to {user} is drawn from another batch than the one given"
        );
    }
}

/// Generates a test module checking that a router follows the router contract.
///
/// ```text
/// router_conformance! {
///     mod <module name>;
///     router: <expression building the router>,
///     probe_users: [<user ID strings>, ...],   // optional
///     hold_back: <predicate>,                  // optional
/// }
/// ```
///
/// - `router` is evaluated afresh in each test, inside a Tokio runtime; it may be any
///   [`PresenceRouter`], including an `Arc<dyn PresenceRouter>` built by a registry. Names in
///   the invoking module are in scope (the generated module imports `super::*`).
/// - `probe_users` are added to [`DEFAULT_PROBE_USERS`]: list the users your router's config
///   names, so that the interesting paths are probed.
/// - `hold_back` is a `Fn(&UserId, &UserPresenceState) -> bool` (recipient, state) returning
///   true where the router documents that it does not route a state to a user who is
///   interested in its sender. Default: never.
///
/// The generated tests are `empty_batch`, `answers_only_with_sets_from_the_batch` and
/// `interested_users_agree_with_users_for_states`.
///
/// ```
/// use presence_router::UserId;
/// use presence_routers::{
///     example::{ExamplePresenceRouter, ExampleRouterConfig},
///     router_conformance,
/// };
///
/// fn router() -> ExamplePresenceRouter {
///     let u = |s: &str| UserId::parse(s).unwrap();
///     ExamplePresenceRouter::with_config(ExampleRouterConfig::new(
///         [u("@all:example.org")],
///         [u("@hidden:example.org")],
///     ))
/// }
///
/// router_conformance! {
///     mod example_conformance;
///     router: router(),
///     probe_users: ["@all:example.org", "@hidden:example.org"],
///     hold_back: |_recipient, state| state.user_id.as_str() == "@hidden:example.org",
/// }
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! router_conformance {
    (
        mod $name:ident;
        router: $router:expr
        $(, probe_users: [$($probe:expr),* $(,)?])?
        $(, hold_back: $hold_back:expr)?
        $(,)?
    ) => {
        mod $name {
            #[allow(unused_imports, clippy::wildcard_imports)]
            use super::*;

            #[test]
            fn empty_batch() {
                $crate::conformance::block_on(async {
                    let router = $router;
                    $crate::conformance::check_empty_batch(&router).await;
                });
            }

            #[test]
            fn answers_only_with_sets_from_the_batch() {
                $crate::conformance::block_on(async {
                    let probes = $crate::conformance::probe_users(&[$($($probe),*)?]);
                    let router = $router;
                    $crate::conformance::check_answers_from_batch(&router, &probes).await;
                });
            }

            #[test]
            fn interested_users_agree_with_users_for_states() {
                $crate::conformance::block_on(async {
                    let probes = $crate::conformance::probe_users(&[$($($probe),*)?]);
                    let router = $router;
                    $crate::conformance::check_consistency(
                        &router,
                        &probes,
                        $crate::__conformance_hold_back!($($hold_back)?),
                    )
                    .await;
                });
            }
        }
    };
}

/// Picks the hold-back predicate of [`router_conformance!`](crate::router_conformance).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_hold_back {
    () => {
        $crate::conformance::no_hold_back
    };
    ($hold_back:expr) => {
        $hold_back
    };
}
