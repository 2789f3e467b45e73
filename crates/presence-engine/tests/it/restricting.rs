//! The restricting mode: property tests that a pair the routers' filter refuses is never
//! delivered on any path (sync reads, `can_see`, federation destinations, snapshots for
//! remote users), that the restricting machinery removing nothing delivers exactly what the
//! additive default does, and that without `shared_rooms` rooms share nothing; plus the
//! wake-up rule as a plain test.

use std::{collections::BTreeSet, sync::Arc};

use futures::executor::block_on;
use presence_engine::{Audience, Effects, Input, RemotePresence};
use presence_router::{AllowAll, PresenceState, RecipientFilter, UserId};
use proptest::prelude::*;

use crate::harness::*;

/// The users of the tests: five local, three remote on two servers.
const NAMES: [&str; 8] = [
    "u0",
    "u1",
    "u2",
    "u3",
    "u4",
    "r0:other.org",
    "r1:other.org",
    "r2:third.net",
];
const LOCALS: usize = 5;

fn any_state() -> impl Strategy<Value = PresenceState> {
    prop::sample::select(PresenceState::ALL.to_vec())
}

/// Refuses the (sender, recipient) pairs it holds, by index in [`NAMES`].
#[derive(Debug)]
struct Deny {
    users: Vec<UserId>,
    pairs: BTreeSet<(usize, usize)>,
}

impl Deny {
    fn new(pairs: BTreeSet<(usize, usize)>) -> Self {
        Self {
            users: NAMES.iter().map(|n| uid(n)).collect(),
            pairs,
        }
    }

    fn index(&self, user: &UserId) -> Option<usize> {
        self.users.iter().position(|u| u == user)
    }

    fn denies(&self, sender: &UserId, recipient: &UserId) -> bool {
        sender != recipient
            && matches!(
                (self.index(sender), self.index(recipient)),
                (Some(s), Some(r)) if self.pairs.contains(&(s, r))
            )
    }
}

impl RecipientFilter for Deny {
    fn allows(&self, sender: &UserId, recipient: &UserId) -> bool {
        !self.denies(sender, recipient)
    }
}

#[derive(Debug, Clone)]
enum Op {
    Put(usize, PresenceState),
    Remote(usize, PresenceState),
    Join(usize, u8),
    Leave(usize, u8),
    Sync(usize, bool),
    Snapshot(usize),
    Advance(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..LOCALS, any_state()).prop_map(|(u, s)| Op::Put(u, s)),
        2 => (LOCALS..NAMES.len(), any_state()).prop_map(|(u, s)| Op::Remote(u, s)),
        3 => (0..NAMES.len(), 0u8..3).prop_map(|(u, r)| Op::Join(u, r)),
        1 => (0..NAMES.len(), 0u8..3).prop_map(|(u, r)| Op::Leave(u, r)),
        3 => (0..LOCALS, any::<bool>()).prop_map(|(u, initial)| Op::Sync(u, initial)),
        1 => (LOCALS..NAMES.len()).prop_map(Op::Snapshot),
        1 => (0u32..90_000).prop_map(Op::Advance),
    ]
}

fn pairs() -> impl Strategy<Value = BTreeSet<(usize, usize)>> {
    prop::collection::btree_set((0..NAMES.len(), 0..NAMES.len()), 0..24)
}

/// A harness with the example router (an `All` user locally and remotely) and `audience`.
fn harness(audience: Audience) -> H {
    let mut h = H::with(|c| c.audience = audience);
    h.example_router(&["u4", "r2:third.net"], &["u3"]);
    h
}

/// What one op delivered: sync reads `(reader, senders)` and remote snapshots.
#[derive(Debug, Default, PartialEq, Eq)]
struct Delivered {
    reads: Vec<(String, Vec<String>, u64)>,
    snapshots: Vec<(String, Vec<String>)>,
}

/// Runs `op` on `h`; `tokens` are the readers' sync tokens.
fn step(h: &mut H, op: &Op, tokens: &mut [Option<u64>; LOCALS]) -> Delivered {
    let mut out = Delivered::default();
    match *op {
        Op::Put(u, s) => {
            h.put(NAMES[u], s, None);
        }
        Op::Remote(u, s) => {
            let user = uid(NAMES[u]);
            let origin = user.server_name();
            h.run(vec![Input::Remote {
                origin,
                entries: vec![RemotePresence {
                    user_id: user.to_string(),
                    presence: s.as_str().to_owned(),
                    last_active_ago: Some(1000),
                    status_msg: None,
                    currently_active: None,
                }],
            }]);
        }
        Op::Join(u, r) => {
            h.join(&format!("r{r}"), NAMES[u]);
        }
        Op::Leave(u, r) => h.e.leave(&room(&format!("r{r}")), &uid(NAMES[u])),
        Op::Sync(u, initial) => {
            let since = if initial { None } else { tokens[u] };
            let (states, next) = h.read(NAMES[u], since);
            tokens[u] = Some(next);
            let senders = states.iter().map(|s| s.user_id.to_string()).collect();
            out.reads.push((uid(NAMES[u]).to_string(), senders, next));
        }
        Op::Snapshot(t) => {
            let target = uid(NAMES[t]);
            let online = h.e.local_online();
            let routes = block_on(h.routers.get_users_for_states(online.batch()));
            let states =
                h.e.snapshot_for_remote(&target, &online, routes.get(&target));
            let senders = states.iter().map(|s| s.user_id.to_string()).collect();
            out.snapshots.push((target.to_string(), senders));
        }
        Op::Advance(ms) => h.advance(u64::from(ms)),
    }
    out
}

/// Every state sent to `dest` has a recipient there that the filter allows.
fn federation_allowed(deny: &Deny, fx: &Effects) -> Result<(), TestCaseError> {
    for (dest, states) in &fx.federation {
        for s in states {
            let allowed = deny
                .users
                .iter()
                .filter(|r| r.server_name() == *dest)
                .any(|r| !deny.denies(&s.user_id, r));
            prop_assert!(
                allowed,
                "{} was sent to {} although every user there is refused",
                s.user_id,
                dest
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Whatever the rooms, the routers and the changes, a refused pair is never delivered:
    /// not in a sync, not through `can_see`, not in a snapshot for a remote user, and no
    /// server is sent a state that none of its users may receive.
    #[test]
    fn a_refused_pair_is_never_delivered(
        ops in prop::collection::vec(op(), 1..60),
        refused in pairs(),
        shared_rooms in any::<bool>(),
    ) {
        let deny = Arc::new(Deny::new(refused));
        let mut h = harness(Audience { shared_rooms, filter: Some(deny.clone()) });
        let mut tokens = [None; LOCALS];
        for op in &ops {
            let logged = h.log.len();
            let delivered = step(&mut h, op, &mut tokens);
            for fx in &h.log[logged..] {
                federation_allowed(&deny, fx)?;
            }
            for (reader, senders, _) in delivered.reads {
                let reader = UserId::parse(&reader).unwrap();
                for sender in senders {
                    let sender = UserId::parse(&sender).unwrap();
                    prop_assert!(!deny.denies(&sender, &reader), "{reader} read {sender}");
                }
            }
            for (target, senders) in delivered.snapshots {
                let target = UserId::parse(&target).unwrap();
                for sender in senders {
                    let sender = UserId::parse(&sender).unwrap();
                    prop_assert!(!deny.denies(&sender, &target), "{target} was sent {sender}");
                }
            }
        }
        for reader in NAMES {
            for target in NAMES {
                let (ru, tu) = (h.u(reader), h.u(target));
                if deny.denies(&uid(target), &uid(reader)) {
                    prop_assert!(!h.e.can_see(ru, tu, true));
                    prop_assert!(!h.e.can_see(ru, tu, false));
                }
            }
        }
    }

    /// The restricting machinery with shared rooms and a filter that removes nothing delivers
    /// exactly what the additive default does: the same effects, syncs and snapshots.
    #[test]
    fn removing_nothing_is_the_additive_mode(ops in prop::collection::vec(op(), 1..60)) {
        let mut additive = harness(Audience::additive());
        let mut open = harness(Audience { shared_rooms: true, filter: Some(Arc::new(AllowAll)) });
        let (mut ta, mut to) = ([None; LOCALS], [None; LOCALS]);
        for op in &ops {
            let (la, lo) = (additive.log.len(), open.log.len());
            let a = step(&mut additive, op, &mut ta);
            let o = step(&mut open, op, &mut to);
            prop_assert_eq!(&a, &o);
            prop_assert_eq!(
                format!("{:?}", &additive.log[la..]),
                format!("{:?}", &open.log[lo..])
            );
        }
    }

    /// Without `shared_rooms` and without routers, rooms share nothing: a sync shows the
    /// reader only, nothing is sent over federation, nobody else is visible.
    #[test]
    fn without_shared_rooms_rooms_share_nothing(ops in prop::collection::vec(op(), 1..50)) {
        let mut h = H::with(|c| c.audience = Audience { shared_rooms: false, filter: None });
        let mut tokens = [None; LOCALS];
        for op in &ops {
            let logged = h.log.len();
            let delivered = step(&mut h, op, &mut tokens);
            for fx in &h.log[logged..] {
                prop_assert!(fx.federation.is_empty(), "{:?}", fx.federation);
            }
            for (reader, senders, _) in delivered.reads {
                prop_assert!(senders.iter().all(|s| *s == reader), "{reader} read {senders:?}");
            }
            for (_, senders) in delivered.snapshots {
                prop_assert!(senders.is_empty(), "{senders:?}");
            }
        }
        for reader in NAMES {
            for target in NAMES {
                let (ru, tu) = (h.u(reader), h.u(target));
                prop_assert_eq!(h.e.can_see(ru, tu, false), reader == target);
            }
        }
    }
}

/// A change wakes the room-mates the filter allows, not the others; the routers' own
/// recipients are filtered the same way.
#[test]
fn wake_ups_follow_the_filter() {
    let deny = Arc::new(Deny::new([(0, 1), (0, 4)].into_iter().collect()));
    let mut h = harness(Audience {
        shared_rooms: true,
        filter: Some(deny),
    });
    for u in ["u0", "u1", "u2", "u4"] {
        h.join("r0", u);
        let idx = h.u(u);
        h.e.set_listening(idx, true);
    }
    let fx = h.put("u0", PresenceState::Online, None);
    let mut woken: Vec<String> = fx.wake.iter().map(|&u| short(h.e.user_id(u))).collect();
    woken.sort();
    // u1 is refused u0's presence; u4 (an `All` user of the example router) too.
    assert_eq!(woken, ["u0", "u2"]);
    // u2's change wakes everybody in the room.
    let fx = h.put("u2", PresenceState::Online, None);
    let mut woken: Vec<String> = fx.wake.iter().map(|&u| short(h.e.user_id(u))).collect();
    woken.sort();
    assert_eq!(woken, ["u0", "u1", "u2", "u4"]);
    // And the refused pair cannot be read: u1 sees u2 only.
    let (names, _) = h.names("u1", None);
    assert_eq!(names, ["u2"]);
}
