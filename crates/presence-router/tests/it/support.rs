//! A scriptable router and helpers shared by the RouterSet tests.

use std::{
    collections::{BTreeMap, BTreeSet},
    panic,
    sync::{
        Arc, Once,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use presence_router::{
    InterestedUsers, PresenceRouter, PresenceState, RouterError, RouterSet, StateBatch, UserId,
    UserPresenceState, UserStates, async_trait,
};

/// How a [`Scripted`] router behaves on each call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Behaviour {
    /// Answers at once.
    Good,
    /// Answers after this long (virtual time in paused tests).
    Sleeps(Duration),
    /// Returns an error.
    Fails,
    /// Panics.
    Panics,
    /// `get_users_for_states` answers correctly except that the first recipient's set is drawn
    /// from a copy of the batch; `get_interested_users` answers correctly.
    ForeignBatch,
}

/// The payload of a scripted panic, recognised by the quiet panic hook.
struct ScriptedPanic;

/// A router whose answers are a table, and whose failures are scripted.
pub(crate) struct Scripted {
    behaviour: Behaviour,
    /// Recipient → the users whose states it receives.
    routes: BTreeMap<UserId, BTreeSet<UserId>>,
    /// Users for whom `get_interested_users` answers `All`.
    all: BTreeSet<UserId>,
    /// Users for whom `get_interested_users` answers this set.
    interested: BTreeMap<UserId, BTreeSet<UserId>>,
    /// Calls of either method.
    pub(crate) calls: Arc<AtomicUsize>,
}

impl Scripted {
    pub(crate) fn new(behaviour: Behaviour) -> Self {
        if behaviour == Behaviour::Panics {
            quiet_scripted_panics();
        }
        Self {
            behaviour,
            routes: BTreeMap::new(),
            all: BTreeSet::new(),
            interested: BTreeMap::new(),
            calls: Arc::default(),
        }
    }

    /// Routes the states of `senders` to `recipient`.
    pub(crate) fn route(mut self, recipient: &str, senders: &[&str]) -> Self {
        self.routes
            .entry(uid(recipient))
            .or_default()
            .extend(senders.iter().map(|s| uid(s)));
        self
    }

    /// `get_interested_users(user)` answers `All`.
    pub(crate) fn all_for(mut self, user: &str) -> Self {
        self.all.insert(uid(user));
        self
    }

    /// `get_interested_users(user)` answers (at least) these users.
    pub(crate) fn interest(mut self, user: &str, users: &[&str]) -> Self {
        self.interested
            .entry(uid(user))
            .or_default()
            .extend(users.iter().map(|s| uid(s)));
        self
    }

    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// What a well-behaved router with this table answers.
    pub(crate) fn expected_states(&self, batch: &StateBatch) -> UserStates {
        self.routes
            .iter()
            .map(|(recipient, senders)| {
                (
                    recipient.clone(),
                    batch.select(|s| senders.contains(&s.user_id)),
                )
            })
            .collect()
    }

    pub(crate) fn expected_interest(&self, user: &UserId) -> InterestedUsers {
        if self.all.contains(user) {
            InterestedUsers::All
        } else {
            InterestedUsers::Users(self.interested.get(user).cloned().unwrap_or_default())
        }
    }

    async fn misbehave(&self) -> Result<(), RouterError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match self.behaviour {
            Behaviour::Good | Behaviour::ForeignBatch => Ok(()),
            Behaviour::Sleeps(d) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
            Behaviour::Fails => Err(RouterError::Failed("scripted failure".to_owned())),
            Behaviour::Panics => panic::panic_any(ScriptedPanic),
        }
    }
}

#[async_trait]
impl PresenceRouter for Scripted {
    async fn get_users_for_states(&self, batch: &StateBatch) -> Result<UserStates, RouterError> {
        self.misbehave().await?;
        let mut answer = self.expected_states(batch);
        if self.behaviour == Behaviour::ForeignBatch {
            let copy = StateBatch::new(batch.to_vec());
            if let Some((_, set)) = answer.iter_mut().next() {
                *set = copy.from_indices(set.indices().collect::<Vec<_>>());
            }
        }
        Ok(answer)
    }

    async fn get_interested_users(&self, user_id: &UserId) -> Result<InterestedUsers, RouterError> {
        self.misbehave().await?;
        Ok(self.expected_interest(user_id))
    }
}

/// Keeps deliberate panics out of the test output; every other panic is reported as usual.
fn quiet_scripted_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !info.payload().is::<ScriptedPanic>() {
                previous(info);
            }
        }));
    });
}

pub(crate) fn uid(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

/// A batch with one state of each user, in order.
pub(crate) fn batch_of(users: &[&str]) -> StateBatch {
    StateBatch::new(
        users
            .iter()
            .map(|u| UserPresenceState {
                state: PresenceState::Online,
                ..UserPresenceState::offline(uid(u))
            })
            .collect(),
    )
}

/// An answer as recipient → senders of the states it receives, for readable comparisons.
pub(crate) fn view(answer: &UserStates) -> BTreeMap<String, Vec<String>> {
    answer
        .iter()
        .map(|(recipient, set)| {
            let senders = set.iter().map(|s| s.user_id.to_string()).collect();
            (recipient.to_string(), senders)
        })
        .collect()
}

/// Builds the `view` expectation from literals.
pub(crate) fn expect(entries: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    entries
        .iter()
        .map(|(r, senders)| {
            (
                (*r).to_owned(),
                senders.iter().map(|s| (*s).to_owned()).collect(),
            )
        })
        .collect()
}

pub(crate) fn users(list: &[&str]) -> InterestedUsers {
    InterestedUsers::Users(list.iter().map(|s| uid(s)).collect())
}

/// A snapshot of one router's counters: (calls, failures, timeouts, panics).
pub(crate) fn stats(set: &RouterSet, name: &str) -> (u64, u64, u64, u64) {
    let (_, s) = set.stats().find(|(n, _)| *n == name).unwrap();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::SeqCst);
    (
        load(&s.calls),
        load(&s.failures),
        load(&s.timeouts),
        load(&s.panics),
    )
}

/// A set of `routers` named `r0`, `r1`, ... in order, with the default time budget.
pub(crate) fn set_of(routers: Vec<Arc<Scripted>>) -> RouterSet {
    let mut set = RouterSet::new(presence_router::DEFAULT_CALL_TIMEOUT);
    for (i, r) in routers.into_iter().enumerate() {
        set.push(format!("r{i}"), r);
    }
    set
}
