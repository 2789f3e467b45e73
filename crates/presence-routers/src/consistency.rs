//! The consistency checker behind `presenced routers check`: does a router's
//! `get_interested_users` describe exactly what its `get_users_for_states` sends?
//!
//! The router contract says the two methods are "two different sides of the same coin" and
//! that their routing "should line up". This module makes that checkable. For every user `u`
//! of a pool and every state `s` (of a user `x` other than `u`) of every batch tried:
//!
//! - when `get_interested_users(u)` is a set, `s` must be sent to `u` by
//!   `get_users_for_states` **if and only if** the set contains `x`, both when `s` is alone in
//!   its batch and inside the larger batch. A user interested in `x` who is not sent `x`'s
//!   states is never woken for them (and, for a remote user, never sent them over federation);
//!   a user sent `x`'s states but not interested in `x` is woken for updates its sync does not
//!   show.
//! - when it is [`InterestedUsers::All`], the user's sync *is* what `get_users_for_states`
//!   sends it (an `All` user's sync passes the updates through that method), so the two views
//!   agree by construction as long as the answer for `(u, s)` does not depend on the other
//!   states of the batch: the sync passes a different batch than the one that woke it. A
//!   state sent to `u` alone but not within a batch, or the reverse, is a disagreement.
//!
//! A user's own presence is delivered to it whatever the routers say, so `u == x` is never
//! checked. Each disagreement is reported with the smallest batch that still shows it (the
//! state alone when that suffices, otherwise the batch with every state removed that can be),
//! once per (user, state's user, kind).
//!
//! Batches are generated from a seed, so a run is reproducible, or read from recorded states
//! ([`parse_recorded_states`]).

use std::{
    collections::{BTreeSet, HashSet},
    fmt,
    sync::Arc,
};

use presence_router::{
    InterestedUsers, PresenceRouter, PresenceState, RouterError, RouterSet, ServerName, StateBatch,
    UserId, UserPresenceState, UserStates, async_trait,
};
use serde_json::Value;

/// What the checker calls: a single router, or the merged routers of a server ([`Merged`]).
#[async_trait]
pub trait Subject: Send + Sync {
    /// `get_users_for_states`.
    async fn users_for_states(&self, batch: &StateBatch) -> Result<UserStates, RouterError>;
    /// `get_interested_users`.
    async fn interested_users(&self, user: &UserId) -> Result<InterestedUsers, RouterError>;
}

#[async_trait]
impl<R: PresenceRouter + ?Sized> Subject for R {
    async fn users_for_states(&self, batch: &StateBatch) -> Result<UserStates, RouterError> {
        self.get_users_for_states(batch).await
    }

    async fn interested_users(&self, user: &UserId) -> Result<InterestedUsers, RouterError> {
        self.get_interested_users(user).await
    }
}

/// Every configured router together, merged as the server merges them (failed answers are
/// dropped, never reported: check the routers one by one to see failures).
pub struct Merged<'a>(pub &'a RouterSet);

#[async_trait]
impl Subject for Merged<'_> {
    async fn users_for_states(&self, batch: &StateBatch) -> Result<UserStates, RouterError> {
        Ok(self.0.get_users_for_states(batch).await)
    }

    async fn interested_users(&self, user: &UserId) -> Result<InterestedUsers, RouterError> {
        Ok(self.0.get_interested_users(user).await)
    }
}

/// How many disagreements are printed in full (each costs a few calls to shrink); the rest
/// are counted.
pub const DEFAULT_MAX_REPORTS: usize = 20;

/// What makes a (user, state) pair disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DisagreementKind {
    /// The user is interested in the state's user, but the state is not sent to it.
    InterestedButNotSent,
    /// The state is sent to the user, who is not interested in the state's user.
    SentButNotInterested,
    /// The user answers `All`, and whether the state is sent to it depends on the rest of the
    /// batch.
    DependsOnBatch,
}

/// One disagreement between the two methods, as a minimal example.
#[derive(Debug, Clone)]
pub struct Disagreement {
    /// The router (or `all routers, merged`).
    pub router: String,
    /// The user whose two views disagree.
    pub user: UserId,
    /// The state on which they disagree.
    pub state: UserPresenceState,
    /// The smallest batch found that shows it; it contains `state`.
    pub batch: Vec<UserPresenceState>,
    /// What `get_interested_users(user)` answered.
    pub interested: InterestedUsers,
    /// Whether `get_users_for_states(batch)` sent `state` to `user`.
    pub sent: bool,
    /// For [`DisagreementKind::DependsOnBatch`]: whether the state alone was sent.
    pub sent_alone: bool,
    /// Which way they disagree.
    pub kind: DisagreementKind,
}

/// A router call that failed during a check.
#[derive(Debug, Clone)]
pub struct CallFailure {
    /// The router.
    pub router: String,
    /// The call, with its argument (`get_interested_users(@u:hs)`, or
    /// `get_users_for_states(<n states>)`).
    pub call: String,
    /// The error.
    pub error: RouterError,
}

/// The outcome of checking one subject.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Batches tried.
    pub batches: usize,
    /// (user, state) pairs compared.
    pub pairs: usize,
    /// Distinct disagreements found ((user, state's user, kind) triples).
    pub disagreements_found: usize,
    /// The first of them, in full.
    pub disagreements: Vec<Disagreement>,
    /// Calls that failed.
    pub failures: Vec<CallFailure>,
}

impl Report {
    /// Whether nothing disagreed and no call failed.
    pub fn is_clean(&self) -> bool {
        self.disagreements_found == 0 && self.failures.is_empty()
    }
}

/// Checks `subject` (named `name` in the report) on every batch, for every user of `pool`.
pub async fn check<S: Subject + ?Sized>(
    name: &str,
    subject: &S,
    pool: &[UserId],
    batches: &[Vec<UserPresenceState>],
    max_reports: usize,
) -> Report {
    let mut report = Report::default();
    let mut interest = Vec::with_capacity(pool.len());
    for user in pool {
        match subject.interested_users(user).await {
            Ok(answer) => interest.push((user, answer)),
            Err(error) => report.failures.push(CallFailure {
                router: name.to_owned(),
                call: format!("get_interested_users({user})"),
                error,
            }),
        }
    }
    let mut seen = HashSet::new();
    for states in batches {
        if states.is_empty() {
            continue;
        }
        report.batches += 1;
        let batch = StateBatch::new(states.clone());
        let answer = match subject.users_for_states(&batch).await {
            Ok(answer) => answer,
            Err(error) => {
                report
                    .failures
                    .push(failed_batch(name, states.len(), error));
                continue;
            }
        };
        // Each state alone, as a wake-up for a single update would pass it.
        let mut alone = Vec::with_capacity(states.len());
        for state in states {
            let single = StateBatch::new(vec![state.clone()]);
            match subject.users_for_states(&single).await {
                Ok(answer) => alone.push(Some(answer)),
                Err(error) => {
                    report.failures.push(failed_batch(name, 1, error));
                    alone.push(None);
                }
            }
        }
        for (user, interested) in &interest {
            for (i, state) in states.iter().enumerate() {
                if state.user_id == **user {
                    continue;
                }
                let Some(alone) = &alone[i] else { continue };
                report.pairs += 1;
                let sent = sent_to(&answer, user, i);
                let sent_alone = sent_to(alone, user, 0);
                let expected = match interested {
                    InterestedUsers::All => None,
                    InterestedUsers::Users(users) => Some(users.contains(&state.user_id)),
                };
                let (kind, minimal) = match expected {
                    Some(want) if sent_alone != want => (kind_for(want), Some(vec![state.clone()])),
                    Some(want) if sent != want => (kind_for(want), None),
                    None if sent != sent_alone => (DisagreementKind::DependsOnBatch, None),
                    _ => continue,
                };
                if !seen.insert((user.to_string(), state.user_id.to_string(), kind)) {
                    continue;
                }
                report.disagreements_found += 1;
                if report.disagreements.len() >= max_reports {
                    continue;
                }
                let batch = match minimal {
                    Some(batch) => batch,
                    None => shrink(subject, states, i, user, expected, sent_alone).await,
                };
                let target = batch.iter().position(|s| s == state).unwrap_or(0);
                let sent_in_minimal = match subject
                    .users_for_states(&StateBatch::new(batch.clone()))
                    .await
                {
                    Ok(answer) => sent_to(&answer, user, target),
                    Err(_) => sent,
                };
                report.disagreements.push(Disagreement {
                    router: name.to_owned(),
                    user: (*user).clone(),
                    state: state.clone(),
                    batch,
                    interested: interested.clone(),
                    sent: sent_in_minimal,
                    sent_alone,
                    kind,
                });
            }
        }
    }
    report
}

fn failed_batch(name: &str, len: usize, error: RouterError) -> CallFailure {
    CallFailure {
        router: name.to_owned(),
        call: format!("get_users_for_states(<{len} states>)"),
        error,
    }
}

fn kind_for(interested: bool) -> DisagreementKind {
    if interested {
        DisagreementKind::InterestedButNotSent
    } else {
        DisagreementKind::SentButNotInterested
    }
}

fn sent_to(answer: &UserStates, user: &UserId, index: usize) -> bool {
    answer
        .get(user)
        .is_some_and(|set| set.contains_index(index))
}

/// Removes every state of `states` but the one at `target` that can go while the
/// disagreement still shows: the sent/not-sent answer for `target` differs from `expected`
/// (a set answer) or from `sent_alone` (an `All` answer).
async fn shrink<S: Subject + ?Sized>(
    subject: &S,
    states: &[UserPresenceState],
    target: usize,
    user: &UserId,
    expected: Option<bool>,
    sent_alone: bool,
) -> Vec<UserPresenceState> {
    let reference = expected.unwrap_or(sent_alone);
    let mut kept: Vec<usize> = (0..states.len()).collect();
    loop {
        let mut removed_any = false;
        let mut j = 0;
        while j < kept.len() {
            if kept[j] == target {
                j += 1;
                continue;
            }
            let trial: Vec<usize> = kept.iter().copied().filter(|&k| k != kept[j]).collect();
            let batch: Vec<UserPresenceState> = trial.iter().map(|&k| states[k].clone()).collect();
            let position = trial.iter().position(|&k| k == target).unwrap_or(0);
            let shows = match subject.users_for_states(&StateBatch::new(batch)).await {
                Ok(answer) => sent_to(&answer, user, position) != reference,
                Err(_) => false,
            };
            if shows {
                kept = trial;
                removed_any = true;
            } else {
                j += 1;
            }
        }
        if !removed_any {
            break;
        }
    }
    kept.into_iter().map(|k| states[k].clone()).collect()
}

impl fmt::Display for Disagreement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let x = &self.state.user_id;
        let what = match self.kind {
            DisagreementKind::InterestedButNotSent => "interested but not sent",
            DisagreementKind::SentButNotInterested => "sent but not interested",
            DisagreementKind::DependsOnBatch => "answer depends on the rest of the batch",
        };
        writeln!(f, "disagreement in {} ({what}):", self.router)?;
        writeln!(f, "  user:  {}", self.user)?;
        writeln!(f, "  state: {}", describe(&self.state))?;
        let interested = match &self.interested {
            InterestedUsers::All => "All".to_owned(),
            InterestedUsers::Users(users) => {
                let verdict = if users.contains(x) {
                    "contains"
                } else {
                    "does not contain"
                };
                format!("{} ({verdict} {x})", summarise(users))
            }
        };
        writeln!(f, "  get_interested_users({}) = {interested}", self.user)?;
        let sent = |yes: bool| {
            if yes {
                "sends it to"
            } else {
                "does not send it to"
            }
        };
        if self.batch.len() == 1 {
            writeln!(
                f,
                "  get_users_for_states([that state]) {} {}",
                sent(self.sent),
                self.user
            )?;
        } else {
            writeln!(
                f,
                "  get_users_for_states([that state] alone) {} {}",
                sent(self.sent_alone),
                self.user
            )?;
            writeln!(
                f,
                "  get_users_for_states(batch of {}) {} {}; the batch:",
                self.batch.len(),
                sent(self.sent),
                self.user
            )?;
            for s in &self.batch {
                writeln!(f, "    {}", describe(s))?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for CallFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} failed: {}", self.router, self.call, self.error)
    }
}

/// A state on one line: `@x:hs online, status "lunch", currently active`.
pub fn describe(s: &UserPresenceState) -> String {
    let mut out = format!("{} {}", s.user_id, s.state);
    if let Some(msg) = &s.status_msg {
        out.push_str(&format!(", status {msg:?}"));
    }
    if s.currently_active {
        out.push_str(", currently active");
    }
    if s.last_active_ts != 0 {
        out.push_str(&format!(", last active at {}", s.last_active_ts));
    }
    out
}

fn summarise(users: &BTreeSet<UserId>) -> String {
    const SHOWN: usize = 5;
    let names: Vec<&str> = users.iter().take(SHOWN).map(UserId::as_str).collect();
    let more = users.len().saturating_sub(SHOWN);
    if more > 0 {
        format!("{{{}, and {more} more}}", names.join(", "))
    } else {
        format!("{{{}}}", names.join(", "))
    }
}

/// A small deterministic generator (SplitMix64): the same seed gives the same cases on every
/// platform and release, which a library generator does not promise.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`0` when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }
}

/// The users a check probes: `locals` generated local users, the users named in router
/// configurations, and for each server named there (and one unnamed remote server,
/// `remote.invalid`) `remotes` generated users. Sorted, without duplicates.
pub fn user_pool(
    server_name: &ServerName,
    named_users: impl IntoIterator<Item = UserId>,
    named_servers: impl IntoIterator<Item = ServerName>,
    locals: usize,
    remotes: usize,
) -> Vec<UserId> {
    let mut pool: BTreeSet<UserId> = named_users.into_iter().collect();
    let mut servers: Vec<ServerName> = named_servers.into_iter().collect();
    if let Ok(unnamed) = ServerName::parse("remote.invalid") {
        servers.push(unnamed);
    }
    let mut add = |localpart: String, server: &ServerName| {
        if let Ok(user) = UserId::from_parts(&localpart, server) {
            pool.insert(user);
        }
    };
    for i in 0..locals {
        add(format!("local{i}"), server_name);
    }
    for server in servers
        .iter()
        .filter(|s| s.as_str() != server_name.as_str())
    {
        for i in 0..remotes {
            add(format!("remote{i}"), server);
        }
    }
    pool.into_iter().collect()
}

/// The user IDs and server names a router configuration mentions: every string (value or
/// mapping key) that is a user ID, and every server name it holds (a user ID's, or a string
/// with a dot that is a valid server name).
pub fn names_in_config(config: &Value) -> (Vec<UserId>, Vec<ServerName>) {
    fn visit(text: &str, users: &mut BTreeSet<String>, servers: &mut BTreeSet<String>) {
        if let Ok(user) = UserId::parse(text) {
            servers.insert(user.server_name().as_str().to_owned());
            users.insert(text.to_owned());
        } else if text.contains('.') && ServerName::parse(text).is_ok() {
            servers.insert(text.to_owned());
        }
    }
    fn walk(value: &Value, users: &mut BTreeSet<String>, servers: &mut BTreeSet<String>) {
        match value {
            Value::String(s) => visit(s, users, servers),
            Value::Array(items) => items.iter().for_each(|v| walk(v, users, servers)),
            Value::Object(map) => {
                for (k, v) in map {
                    visit(k, users, servers);
                    walk(v, users, servers);
                }
            }
            _ => {}
        }
    }
    let (mut users, mut servers) = (BTreeSet::new(), BTreeSet::new());
    walk(config, &mut users, &mut servers);
    (
        users.iter().filter_map(|u| UserId::parse(u).ok()).collect(),
        servers
            .iter()
            .filter_map(|s| ServerName::parse(s).ok())
            .collect(),
    )
}

/// `cases` batches drawn from `pool` with the generator seeded by `seed`: each holds 1 to
/// `max_batch` distinct users, each in a random presence state, with or without a status
/// message and the currently-active flag.
pub fn generated_batches(
    pool: &[UserId],
    seed: u64,
    cases: usize,
    max_batch: usize,
) -> Vec<Vec<UserPresenceState>> {
    let mut rng = SplitMix64::new(seed);
    let largest = max_batch.clamp(1, pool.len().max(1));
    let mut batches = Vec::with_capacity(cases);
    if pool.is_empty() {
        return batches;
    }
    for case in 0..cases {
        let len = 1 + rng.below(largest);
        let mut order: Vec<usize> = (0..pool.len()).collect();
        // A partial Fisher-Yates shuffle picks `len` distinct users.
        for i in 0..len {
            let j = i + rng.below(order.len() - i);
            order.swap(i, j);
        }
        let batch = order[..len]
            .iter()
            .map(|&u| {
                let state = PresenceState::ALL[rng.below(PresenceState::ALL.len())];
                UserPresenceState {
                    state,
                    last_active_ts: 1_700_000_000_000 + case as u64,
                    status_msg: (rng.below(3) == 0).then(|| Arc::from(format!("status {case}"))),
                    currently_active: state == PresenceState::Online && rng.below(2) == 0,
                    ..UserPresenceState::offline(pool[u].clone())
                }
            })
            .collect();
        batches.push(batch);
    }
    batches
}

/// Why a recorded-states file cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedStatesError {
    /// Where (`line 3`, `[2]`, `line 4.content.presence`).
    pub at: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for RecordedStatesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

impl std::error::Error for RecordedStatesError {}

/// Reads recorded presence states: a JSON array, or one JSON value per line (blank lines and
/// lines starting with `#` skipped). Each value is either a state,
/// `{"user_id": "@x:hs", "presence": "online", "status_msg": "...", "currently_active": true,
/// "last_active_ts": 1700000000000}` (`state` is accepted for `presence`), or an `m.presence`
/// event as a client receives it, `{"sender": "@x:hs", "content": {"presence": ...}}`.
/// Consecutive values make one batch, up to `max_batch` states and one state per user.
pub fn parse_recorded_states(
    text: &str,
    max_batch: usize,
) -> Result<Vec<Vec<UserPresenceState>>, RecordedStatesError> {
    let trimmed = text.trim_start();
    let mut values: Vec<(String, Value)> = Vec::new();
    if trimmed.starts_with('[') {
        let all: Vec<Value> = serde_json::from_str(text).map_err(|e| RecordedStatesError {
            at: format!("line {}", e.line()),
            message: e.to_string(),
        })?;
        values.extend(
            all.into_iter()
                .enumerate()
                .map(|(i, v)| (format!("[{i}]"), v)),
        );
    } else {
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let value = serde_json::from_str(line).map_err(|e| RecordedStatesError {
                at: format!("line {}", n + 1),
                message: e.to_string(),
            })?;
            values.push((format!("line {}", n + 1), value));
        }
    }
    let mut batches: Vec<Vec<UserPresenceState>> = Vec::new();
    let mut current: Vec<UserPresenceState> = Vec::new();
    for (at, value) in values {
        let state = recorded_state(&at, &value)?;
        if current.len() >= max_batch.max(1) || current.iter().any(|s| s.user_id == state.user_id) {
            batches.push(std::mem::take(&mut current));
        }
        current.push(state);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    Ok(batches)
}

fn recorded_state(at: &str, value: &Value) -> Result<UserPresenceState, RecordedStatesError> {
    let err = |key: &str, message: &str| RecordedStatesError {
        at: if key.is_empty() {
            at.to_owned()
        } else {
            format!("{at}.{key}")
        },
        message: message.to_owned(),
    };
    let Value::Object(map) = value else {
        return Err(err(
            "",
            "expected an object (a presence state or an m.presence event)",
        ));
    };
    let (user_key, fields, prefix) = match map.get("content") {
        Some(Value::Object(content)) => ("sender", content, "content."),
        Some(_) => return Err(err("content", "expected an object")),
        None => ("user_id", map, ""),
    };
    let user = match map.get(user_key) {
        Some(Value::String(s)) => UserId::parse(s).map_err(|e| err(user_key, &e.to_string()))?,
        _ => return Err(err(user_key, "expected a user ID")),
    };
    let key = |k: &str| format!("{prefix}{k}");
    let presence_key = if fields.contains_key("presence") {
        "presence"
    } else {
        "state"
    };
    let state = match fields.get(presence_key) {
        Some(Value::String(s)) => PresenceState::from_wire(s)
            .ok_or_else(|| err(&key(presence_key), "unknown presence state"))?,
        _ => return Err(err(&key("presence"), "expected a presence state")),
    };
    let status_msg = match fields.get("status_msg") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(Arc::from(s.as_str())),
        Some(_) => return Err(err(&key("status_msg"), "expected a string")),
    };
    let currently_active = match fields.get("currently_active") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(err(&key("currently_active"), "expected a boolean")),
    };
    let last_active_ts = match fields.get("last_active_ts") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| err(&key("last_active_ts"), "expected milliseconds"))?,
    };
    Ok(UserPresenceState {
        state,
        status_msg,
        currently_active,
        last_active_ts,
        ..UserPresenceState::offline(user)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ExamplePresenceRouter, ExampleRouterConfig};
    use presence_router::{RouterError, StateBatch, UserStates};
    use serde_json::json;

    fn uid(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    /// Interested in everybody on `hs`, but sends only online states: the offline update of
    /// a watched user never wakes the watcher.
    struct OnlineOnly;

    #[async_trait]
    impl PresenceRouter for OnlineOnly {
        async fn get_users_for_states(&self, b: &StateBatch) -> Result<UserStates, RouterError> {
            let watcher = uid("@watcher:hs");
            let watched = |u: &UserId| ["@a:hs", "@b:hs", "@c:hs"].contains(&u.as_str());
            let sent = b.select(|s| watched(&s.user_id) && s.state == PresenceState::Online);
            Ok([(watcher, sent)].into())
        }

        async fn get_interested_users(&self, u: &UserId) -> Result<InterestedUsers, RouterError> {
            Ok(if u.as_str() == "@watcher:hs" {
                InterestedUsers::Users(["@a:hs", "@b:hs", "@c:hs"].into_iter().map(uid).collect())
            } else {
                InterestedUsers::none()
            })
        }
    }

    /// Answers `All` for `@all:hs`, and sends it a state only when the batch holds more than
    /// one: its sync (one batch) and its wake-ups (another) disagree.
    struct Crowded;

    #[async_trait]
    impl PresenceRouter for Crowded {
        async fn get_users_for_states(&self, b: &StateBatch) -> Result<UserStates, RouterError> {
            if b.len() < 2 {
                return Ok(UserStates::new());
            }
            Ok([(uid("@all:hs"), b.all())].into())
        }

        async fn get_interested_users(&self, u: &UserId) -> Result<InterestedUsers, RouterError> {
            Ok(if u.as_str() == "@all:hs" {
                InterestedUsers::All
            } else {
                InterestedUsers::none()
            })
        }
    }

    fn pool() -> Vec<UserId> {
        [
            "@a:hs",
            "@b:hs",
            "@c:hs",
            "@watcher:hs",
            "@all:hs",
            "@x:other.org",
        ]
        .into_iter()
        .map(uid)
        .collect()
    }

    async fn run<S: Subject + ?Sized>(subject: &S, seed: u64) -> Report {
        let pool = pool();
        let batches = generated_batches(&pool, seed, 100, 5);
        check("test", subject, &pool, &batches, DEFAULT_MAX_REPORTS).await
    }

    #[tokio::test]
    async fn the_example_router_is_consistent() {
        let router = ExamplePresenceRouter::with_config(ExampleRouterConfig::new(
            [uid("@all:hs"), uid("@x:other.org")],
            [uid("@b:hs")],
        ));
        let report = run(&router, 7).await;
        assert!(report.is_clean(), "{:?}", report.disagreements);
        assert_eq!(report.batches, 100);
        assert!(report.pairs > 500, "{}", report.pairs);
    }

    #[tokio::test]
    async fn a_state_held_back_from_an_interested_user_is_a_single_state_example() {
        let report = run(&OnlineOnly, 1).await;
        assert!(!report.is_clean());
        assert!(!report.disagreements.is_empty());
        for d in &report.disagreements {
            assert_eq!(d.user.as_str(), "@watcher:hs");
            assert_eq!(d.kind, DisagreementKind::InterestedButNotSent);
            assert_ne!(d.state.state, PresenceState::Online);
            assert_eq!(d.batch, std::slice::from_ref(&d.state), "not minimal: {d}");
            assert!(!d.sent);
            let text = d.to_string();
            assert!(text.contains("interested but not sent"), "{text}");
            assert!(text.contains("(contains "), "{text}");
            assert!(text.contains("does not send it to @watcher:hs"), "{text}");
        }
        // One report per (user, state's user, kind): a, b and c.
        assert_eq!(report.disagreements_found, 3);
    }

    #[tokio::test]
    async fn a_batch_dependent_answer_to_an_all_user_shrinks_to_two_states() {
        let report = run(&Crowded, 3).await;
        assert!(report.disagreements_found > 0);
        for d in &report.disagreements {
            assert_eq!(d.kind, DisagreementKind::DependsOnBatch);
            assert_eq!(d.user.as_str(), "@all:hs");
            assert_eq!(d.batch.len(), 2, "not minimal: {d}");
            assert!(d.sent && !d.sent_alone);
            assert!(d.to_string().contains("= All"), "{d}");
        }
    }

    #[tokio::test]
    async fn generation_is_reproducible_and_varies_with_the_seed() {
        let pool = pool();
        let a = generated_batches(&pool, 42, 50, 4);
        assert_eq!(a, generated_batches(&pool, 42, 50, 4));
        assert_ne!(a, generated_batches(&pool, 43, 50, 4));
        assert_eq!(a.len(), 50);
        for batch in &a {
            assert!((1..=4).contains(&batch.len()));
            let users: BTreeSet<_> = batch.iter().map(|s| &s.user_id).collect();
            assert_eq!(users.len(), batch.len(), "a user twice in one batch");
        }
        // Every presence state comes up.
        let states: BTreeSet<_> = a.iter().flatten().map(|s| s.state).collect();
        assert_eq!(states.len(), PresenceState::ALL.len());
    }

    #[test]
    fn the_pool_holds_generated_and_named_users() {
        let (users, servers) = names_in_config(&json!({
            "always_send_to_users": ["@a:hs", "@b:elsewhere.org"],
            "watchers": {"@w:hs": ["@c:third.net"]},
            "servers": ["listed.example", "not a server", 3],
        }));
        let names: Vec<&str> = users.iter().map(UserId::as_str).collect();
        assert_eq!(
            names,
            ["@a:hs", "@b:elsewhere.org", "@c:third.net", "@w:hs"]
        );
        let servers: Vec<&str> = servers.iter().map(ServerName::as_str).collect();
        assert_eq!(
            servers,
            ["elsewhere.org", "hs", "listed.example", "third.net"]
        );
        let pool = user_pool(
            &ServerName::parse("hs").unwrap(),
            users,
            servers.iter().map(|s| ServerName::parse(s).unwrap()),
            2,
            1,
        );
        let pool: Vec<&str> = pool.iter().map(UserId::as_str).collect();
        assert_eq!(
            pool,
            [
                "@a:hs",
                "@b:elsewhere.org",
                "@c:third.net",
                "@local0:hs",
                "@local1:hs",
                "@remote0:elsewhere.org",
                "@remote0:listed.example",
                "@remote0:remote.invalid",
                "@remote0:third.net",
                "@w:hs",
            ]
        );
    }

    #[test]
    fn recorded_states_in_both_shapes_and_their_errors() {
        let lines = "# recorded\n\
            {\"user_id\": \"@a:hs\", \"presence\": \"online\", \"status_msg\": \"hi\", \"currently_active\": true}\n\
            \n\
            {\"type\": \"m.presence\", \"sender\": \"@b:hs\", \"content\": {\"presence\": \"unavailable\"}}\n\
            {\"user_id\": \"@a:hs\", \"state\": \"offline\", \"last_active_ts\": 5}\n";
        let batches = parse_recorded_states(lines, 10).unwrap();
        // @a twice: the second starts a new batch.
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].len(), 2);
        assert_eq!(batches[0][0].status_msg.as_deref(), Some("hi"));
        assert!(batches[0][0].currently_active);
        assert_eq!(batches[0][1].state, PresenceState::Unavailable);
        assert_eq!(batches[1][0].last_active_ts, 5);

        let array = r#"[{"user_id": "@a:hs", "presence": "online"}, {"user_id": "@b:hs", "presence": "online"}]"#;
        assert_eq!(parse_recorded_states(array, 1).unwrap().len(), 2);

        let bad = "{\"sender\": \"@a:hs\", \"content\": {\"presence\": \"here\"}}\n";
        let e = parse_recorded_states(bad, 10).unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 1.content.presence: unknown presence state"
        );
        let e = parse_recorded_states("[{\"user_id\": \"a\"}]", 10).unwrap_err();
        assert_eq!(e.at, "[0].user_id");
        let e = parse_recorded_states("{\n", 10).unwrap_err();
        assert_eq!(e.at, "line 1");
    }
}
