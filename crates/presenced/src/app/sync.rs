//! `/sync` in the core: the presence section (routed and shared-room presence since the
//! client's token), the rooms section, the presence filter, and long-polling until something
//! visible changes. The HTTP layer parses the request into a [`SyncRequest`] and renders the
//! [`SyncResult`]. Spec: <https://spec.matrix.org/v1.15/client-server-api/#get_matrixclientv3sync>.
//!
//! A sync that sets presence (`set_presence` online or unavailable, within the `rc_presence`
//! limit) counts as a syncing device for as long as the request runs; `offline`, or a
//! rate-limited sync, leaves presence alone (as the reference's `user_syncing` does).

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use presence_router::{DeviceId, PresenceState, UserId, UserPresenceState};
use presence_store::PresenceStore;
use serde_json::Value;

use super::{App, auth::Requester};
use crate::{error::ApiError, notify::Subscription, query::percent_decode};

/// The longest a sync waits, whatever `timeout` says.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// A parsed `since` / `next_batch` token:
/// `s<presence position>_<rooms position>_<account-data position>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncToken {
    /// The presence stream position.
    pub presence: u64,
    /// The rooms (events) stream position.
    pub rooms: u64,
    /// The account-data stream position. A token of an earlier release has only two parts;
    /// it reads as 0, so such a client is sent all its account data once.
    pub account_data: u64,
}

impl SyncToken {
    /// Parses a token this server issued.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.strip_prefix('s')?.split('_');
        let presence = parts.next()?.parse().ok()?;
        let rooms = parts.next()?.parse().ok()?;
        let account_data = match parts.next() {
            Some(a) => a.parse().ok()?,
            None => 0,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            presence,
            rooms,
            account_data,
        })
    }

    /// The token as clients see it.
    pub fn render(self) -> String {
        format!("s{}_{}_{}", self.presence, self.rooms, self.account_data)
    }
}

/// What a sync asks for.
#[derive(Debug, Clone)]
pub struct SyncRequest<'q> {
    /// Where the client is; `None` for an initial sync.
    pub since: Option<SyncToken>,
    /// How long to wait for something new (capped at [`MAX_TIMEOUT`]).
    pub timeout: Duration,
    /// `set_presence`.
    pub set_presence: PresenceState,
    /// `full_state`: presence from the start, whatever `since` says.
    pub full_state: bool,
    /// The `filter` parameter as sent (percent-encoded): an inline definition or a stored
    /// filter's ID.
    pub filter: Option<&'q str>,
}

/// What a sync answers.
#[derive(Debug, Clone)]
pub struct SyncResult {
    /// The next token.
    pub next_batch: SyncToken,
    /// The rooms section.
    pub rooms: Value,
    /// The presence to show, each user once, filtered.
    pub presence: Vec<UserPresenceState>,
    /// Global account-data events (`{"type", "content"}`) changed since the token.
    pub account_data: Vec<Value>,
}

/// The parts of a filter `/sync` applies: its presence section and the room IDs of its room
/// section.
#[derive(Debug, Default)]
pub(crate) struct SyncFilter {
    pub(crate) presence: PresenceFilter,
    pub(crate) room: RoomFilter,
}

impl SyncFilter {
    /// Bytes this filter holds (itself and its lists), for the cache's budget.
    pub(crate) fn heap_size(&self) -> usize {
        let p = &self.presence;
        std::mem::size_of::<Self>()
            + [
                p.types.as_deref(),
                Some(&p.not_types[..]),
                p.senders.as_deref(),
                Some(&p.not_senders[..]),
                self.room.rooms.as_deref(),
                Some(&self.room.not_rooms[..]),
            ]
            .into_iter()
            .flatten()
            .map(strings_size)
            .sum::<usize>()
    }

    /// Reads a filter definition; a section of the wrong shape is a 400 `M_BAD_JSON`.
    pub(crate) fn from_filter(filter: &Value) -> Result<Self, ApiError> {
        Ok(Self {
            presence: PresenceFilter::from_filter(filter)?,
            room: RoomFilter::from_filter(filter)?,
        })
    }
}

/// `room.rooms` and `room.not_rooms` of a filter: which rooms the rooms section shows
/// (spec "Filtering": `not_rooms` wins over `rooms`; without `rooms`, every room).
#[derive(Debug, Default)]
pub(crate) struct RoomFilter {
    rooms: Option<Vec<String>>,
    not_rooms: Vec<String>,
}

impl RoomFilter {
    fn from_filter(filter: &Value) -> Result<Self, ApiError> {
        let Some(room) = filter.get("room") else {
            return Ok(Self::default());
        };
        let room = room
            .as_object()
            .ok_or_else(|| ApiError::bad_json("filter.room must be an object"))?;
        Ok(Self {
            rooms: string_list(room, "room", "rooms")?,
            not_rooms: string_list(room, "room", "not_rooms")?.unwrap_or_default(),
        })
    }

    /// Whether the rooms section shows `room_id`.
    pub(crate) fn keeps(&self, room_id: &str) -> bool {
        !self.not_rooms.iter().any(|r| r == room_id)
            && self
                .rooms
                .as_ref()
                .is_none_or(|rs| rs.iter().any(|r| r == room_id))
    }
}

/// Heap bytes of a list of strings (the lists are built by `collect`, so length is
/// capacity).
fn strings_size(list: &[String]) -> usize {
    std::mem::size_of_val(list) + list.iter().map(String::capacity).sum::<usize>()
}

/// `section.key` of a filter as a list of strings; absent or null is `None`.
fn string_list(
    section: &serde_json::Map<String, Value>,
    name: &str,
    key: &str,
) -> Result<Option<Vec<String>>, ApiError> {
    match section.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str().map(str::to_owned).ok_or_else(|| {
                    ApiError::bad_json(format!("filter.{name}.{key} must hold strings"))
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(ApiError::bad_json(format!(
            "filter.{name}.{key} must be a list"
        ))),
    }
}

/// The presence section of a filter (spec "Filtering"; `*` is a wildcard in `types`).
#[derive(Debug, Default)]
pub(crate) struct PresenceFilter {
    types: Option<Vec<String>>,
    not_types: Vec<String>,
    senders: Option<Vec<String>>,
    not_senders: Vec<String>,
    limit: Option<usize>,
}

impl PresenceFilter {
    /// Reads the `presence` section of a filter definition; anything malformed is a 400.
    pub(crate) fn from_filter(filter: &Value) -> Result<Self, ApiError> {
        let Some(p) = filter.get("presence") else {
            return Ok(Self::default());
        };
        let p = p
            .as_object()
            .ok_or_else(|| ApiError::bad_json("filter.presence must be an object"))?;
        let list = |key: &str| string_list(p, "presence", key);
        let limit = match p.get("limit") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().filter(|&n| n >= 1).ok_or_else(|| {
                ApiError::bad_json("filter.presence.limit must be a positive integer")
            })? as usize),
        };
        Ok(Self {
            types: list("types")?,
            not_types: list("not_types")?.unwrap_or_default(),
            senders: list("senders")?,
            not_senders: list("not_senders")?.unwrap_or_default(),
            limit,
        })
    }

    /// Whether presence events are wanted at all.
    pub(crate) fn wants_presence(&self) -> bool {
        let ty = "m.presence";
        !self.not_types.iter().any(|p| glob(p, ty))
            && self
                .types
                .as_ref()
                .is_none_or(|ts| ts.iter().any(|p| glob(p, ty)))
    }

    pub(crate) fn keeps(&self, sender: &UserId) -> bool {
        let s = sender.as_str();
        !self.not_senders.iter().any(|x| x == s)
            && self
                .senders
                .as_ref()
                .is_none_or(|ss| ss.iter().any(|x| x == s))
    }
}

/// Matches `pattern` (with `*` wildcards) against `text`.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

/// Parsed presence filters of `/sync`, by user and `filter` parameter as sent (an inline
/// definition or a stored filter's ID). Filters never change once created, so a sync loop
/// that sends the same filter each time neither decodes nor parses it, nor reads the
/// database for it, again.
///
/// Bounded in bytes, not entries: an inline filter is as long as the client makes it, so
/// one user sending distinct large filters could otherwise fill memory. Each entry counts
/// the `filter` parameter's length plus the parsed filter's size; past the per-user or the
/// total budget the least recently used entries go (the user's own first), and a filter
/// larger than [`FilterCacheLimits::entry`] is parsed for each request and never kept.
pub(crate) struct SyncFilters {
    cache: std::sync::Mutex<FilterCache>,
}

impl Default for SyncFilters {
    fn default() -> Self {
        Self::new(FilterCacheLimits::default())
    }
}

/// The byte budgets of [`SyncFilters`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct FilterCacheLimits {
    /// All users together.
    pub(crate) total: usize,
    /// One user's entries.
    pub(crate) per_user: usize,
    /// One entry; a larger filter is not cached.
    pub(crate) entry: usize,
}

impl Default for FilterCacheLimits {
    fn default() -> Self {
        // A client's filter is usually well under 1 KiB; 32 MiB keeps tens of thousands of
        // users' filters, and no user can hold more than 256 KiB of it.
        Self {
            total: 32 * 1024 * 1024,
            per_user: 256 * 1024,
            entry: 32 * 1024,
        }
    }
}

/// Map slots, the `Arc` headers and the ordering indexes of one entry, roughly.
const ENTRY_OVERHEAD: usize = 192;

#[derive(Default)]
struct FilterCache {
    limits: FilterCacheLimits,
    users: HashMap<UserId, UserFilters>,
    /// Every entry by last use (ticks are unique), oldest first.
    by_use: BTreeMap<u64, (UserId, Arc<str>)>,
    bytes: usize,
    tick: u64,
}

/// One user's entries: the `filter` parameter still percent-encoded → the parsed filter.
#[derive(Default)]
struct UserFilters {
    entries: HashMap<Arc<str>, CachedFilter>,
    by_use: BTreeMap<u64, Arc<str>>,
    bytes: usize,
}

struct CachedFilter {
    filter: Arc<SyncFilter>,
    bytes: usize,
    used: u64,
}

impl SyncFilters {
    pub(crate) fn new(limits: FilterCacheLimits) -> Self {
        Self {
            cache: std::sync::Mutex::new(FilterCache {
                limits,
                ..FilterCache::default()
            }),
        }
    }

    /// The cached filter of `user` for `encoded`, marked as just used.
    fn get(&self, user: &UserId, encoded: &str) -> Option<Arc<SyncFilter>> {
        let mut guard = crate::lock(&self.cache);
        let cache = &mut *guard;
        cache.tick += 1;
        let tick = cache.tick;
        let filters = cache.users.get_mut(user)?;
        let (key, entry) = filters.entries.get_key_value(encoded)?;
        let (key, old) = (key.clone(), entry.used);
        filters.by_use.remove(&old);
        filters.by_use.insert(tick, key.clone());
        let entry = filters.entries.get_mut(encoded)?;
        entry.used = tick;
        let filter = entry.filter.clone();
        cache.by_use.remove(&old);
        cache.by_use.insert(tick, (user.clone(), key));
        Some(filter)
    }

    /// Keeps `filter` for (`user`, `encoded`) unless it is too large, then evicts down to
    /// the budgets.
    fn insert(&self, user: &UserId, encoded: &str, filter: Arc<SyncFilter>) {
        let bytes = encoded.len() + user.as_str().len() + filter.heap_size() + ENTRY_OVERHEAD;
        let mut guard = crate::lock(&self.cache);
        let cache = &mut *guard;
        if bytes > cache.limits.entry {
            return;
        }
        cache.tick += 1;
        let tick = cache.tick;
        let key: Arc<str> = Arc::from(encoded);
        let filters = cache.users.entry(user.clone()).or_default();
        let entry = CachedFilter {
            filter,
            bytes,
            used: tick,
        };
        if let Some(old) = filters.entries.insert(key.clone(), entry) {
            // Two syncs with the same new filter raced; the later copy replaces the earlier.
            filters.by_use.remove(&old.used);
            filters.bytes -= old.bytes;
            cache.by_use.remove(&old.used);
            cache.bytes -= old.bytes;
        }
        filters.by_use.insert(tick, key.clone());
        filters.bytes += bytes;
        cache.by_use.insert(tick, (user.clone(), key));
        cache.bytes += bytes;
        while cache
            .users
            .get(user)
            .is_some_and(|f| f.bytes > cache.limits.per_user)
        {
            let oldest = cache
                .users
                .get(user)
                .and_then(|f| f.by_use.first_key_value())
                .map(|(&used, key)| (used, key.clone()));
            let Some((used, key)) = oldest else { break };
            cache.by_use.remove(&used);
            cache.remove(user, &key);
        }
        while cache.bytes > cache.limits.total {
            let Some((_, (user, key))) = cache.by_use.pop_first() else {
                break;
            };
            cache.remove(&user, &key);
        }
    }

    /// Bytes the cache holds, as counted against its budgets.
    pub(crate) fn bytes(&self) -> usize {
        crate::lock(&self.cache).bytes
    }

    #[cfg(test)]
    fn user_bytes(&self, user: &UserId) -> usize {
        crate::lock(&self.cache)
            .users
            .get(user)
            .map_or(0, |f| f.bytes)
    }
}

impl FilterCache {
    /// Drops one entry (already taken out of the global `by_use`).
    fn remove(&mut self, user: &UserId, key: &str) {
        let Some(filters) = self.users.get_mut(user) else {
            return;
        };
        if let Some(entry) = filters.entries.remove(key) {
            filters.by_use.remove(&entry.used);
            filters.bytes -= entry.bytes;
            self.bytes -= entry.bytes;
        }
        if filters.entries.is_empty() {
            self.users.remove(user);
        }
    }
}

impl App {
    /// Answers a sync of `requester`: at once when something is new or this is an initial
    /// sync, else when something visible changes or `timeout` passes.
    pub async fn sync(
        &self,
        requester: &Requester,
        request: SyncRequest<'_>,
    ) -> Result<SyncResult, ApiError> {
        let filter = self.load_filter(&requester.user_id, request.filter).await?;
        let user = &requester.user_id;
        let _guard = self
            .start_syncing(user, &requester.device_id, request.set_presence)
            .await;

        let presence_since = if request.full_state {
            None
        } else {
            request.since.map(|t| t.presence)
        };
        let rooms_since = request.since.map(|t| t.rooms);
        let deadline = tokio::time::Instant::now() + request.timeout.min(MAX_TIMEOUT);
        let presence_enabled = self.config().presence.enabled.is_enabled();
        // Registered before the first read, so nothing that happens after it can be missed.
        let mut waiting = Waiting::new(self, user);
        let account_since = request.since.map(|t| t.account_data);
        let (mut shown, mut rooms, next_batch, account) = loop {
            let presence = if presence_enabled
                || presence_since.is_some_and(|t| t < self.presence().current_token())
            {
                self.presence().read(user, presence_since).await
            } else {
                crate::presence::PresenceRead {
                    states: Vec::new(),
                    next_token: self.presence().current_token(),
                }
            };
            let (rooms, rooms_next) = super::rooms::sync::filtered_rooms_section(
                self,
                user,
                rooms_since,
                request.full_state,
                &filter.room,
            )
            .await?;
            let rooms_news = super::rooms::sync::has_news(&rooms);
            let (account, account_next) = self.account_data_since(user, account_since).await?;
            let mut shown = presence.states;
            if filter.presence.wants_presence() {
                shown.retain(|s| filter.presence.keeps(&s.user_id));
            } else {
                shown.clear();
            }
            let next = SyncToken {
                presence: presence.next_token,
                rooms: rooms_next,
                account_data: account_next,
            };
            if !shown.is_empty() || rooms_news || !account.is_empty() || request.since.is_none() {
                break (shown, rooms, next, account);
            }
            if !waiting.wait_until(deadline).await {
                break (shown, rooms, next, account);
            }
        };
        let account_data = self.place_account_data(user, account, &mut rooms);
        drop(waiting);
        if let Some(limit) = filter.presence.limit {
            shown.truncate(limit);
        }
        Ok(SyncResult {
            next_batch,
            rooms,
            presence: shown,
            account_data,
        })
    }

    /// Splits account-data entries into the global events, returned, and the per-room ones,
    /// put under `rooms.join.{roomId}.account_data` for the rooms `user` is joined to
    /// (entries of other rooms wait until the user joins and asks for everything).
    fn place_account_data(
        &self,
        user: &UserId,
        entries: Vec<presence_store::AccountDataEntry>,
        rooms: &mut Value,
    ) -> Vec<Value> {
        let mut global = Vec::new();
        for entry in entries {
            let Ok(content) = serde_json::from_str::<Value>(&entry.content) else {
                tracing::warn!(user = %user, data_type = %entry.data_type, "Stored account data is not JSON; not sent.");
                continue;
            };
            let event = serde_json::json!({"type": entry.data_type, "content": content});
            let Some(room) = entry.room_id else {
                global.push(event);
                continue;
            };
            if !self.presence().members(&room).contains(user) {
                continue;
            }
            if !rooms.is_object() {
                *rooms = serde_json::json!({});
            }
            let slot = &mut rooms["join"][room.as_str()]["account_data"]["events"];
            match slot.as_array_mut() {
                Some(events) => events.push(event),
                None => *slot = Value::Array(vec![event]),
            }
        }
        global
    }

    /// Counts the requester's device as syncing for as long as the guard lives, unless the
    /// sync leaves presence alone (`offline`, or over the `rc_presence` limit).
    async fn start_syncing(
        &self,
        user: &UserId,
        device: &DeviceId,
        set_presence: PresenceState,
    ) -> Option<SyncGuard> {
        if set_presence == PresenceState::Offline
            || self
                .presence_sync_limit()
                .check(user, Instant::now())
                .is_err()
        {
            return None;
        }
        match self
            .presence()
            .sync_started(user, Some(device.clone()), set_presence)
            .await
        {
            Ok(()) => Some(SyncGuard {
                app: self.clone(),
                user: user.clone(),
                device: Some(device.clone()),
            }),
            Err(e) => {
                // Presence is best effort here: the sync itself still proceeds.
                tracing::warn!(error = %e, "Could not record a syncing device.");
                None
            }
        }
    }

    async fn load_filter(
        &self,
        user: &UserId,
        encoded: Option<&str>,
    ) -> Result<Arc<SyncFilter>, ApiError> {
        let Some(encoded) = encoded else {
            return Ok(Arc::default());
        };
        if let Some(found) = self.sync_filters().get(user, encoded) {
            return Ok(found);
        }
        let raw = percent_decode(encoded);
        // The reference's answers (`synapse/rest/client/sync.py`, `SyncRestServlet.on_GET`):
        // 400 M_NOT_JSON for an inline definition that does not parse, 400 M_INVALID_PARAM
        // for a filter ID that names no filter of this user.
        let definition: Value = if let Some(inline) = inline_definition(&raw) {
            inline?
        } else {
            let stored = self
                .store()?
                .get_filter(user, &raw)
                .await?
                .ok_or_else(|| ApiError::invalid_param("No such filter"))?;
            serde_json::from_str(&stored).map_err(ApiError::internal)?
        };
        let filter = Arc::new(SyncFilter::from_filter(&definition)?);
        self.sync_filters().insert(user, encoded, filter.clone());
        Ok(filter)
    }
}

/// An inline filter definition (`filter={...}`, already decoded) as JSON; `None` when `raw`
/// is a filter ID.
pub(crate) fn inline_definition(raw: &str) -> Option<Result<Value, ApiError>> {
    raw.trim_start()
        .starts_with('{')
        .then(|| serde_json::from_str(raw).map_err(|_| ApiError::not_json("Invalid filter JSON")))
}

/// Ends the presence-affecting part of a sync when the request finishes or is dropped.
struct SyncGuard {
    app: App,
    user: UserId,
    device: Option<DeviceId>,
}

impl Drop for SyncGuard {
    fn drop(&mut self) {
        let (app, user, device) = (self.app.clone(), self.user.clone(), self.device.take());
        tokio::spawn(async move { app.presence().sync_ended(&user, device).await });
    }
}

/// A sync's registration as a waiter. One registration serves every wait of the request;
/// dropping it (the request answered, failed or abandoned by the client) unregisters, so the
/// engine stops counting the user as listening.
struct Waiting<'a> {
    app: &'a App,
    user: &'a UserId,
    sub: Option<Subscription>,
}

impl<'a> Waiting<'a> {
    fn new(app: &'a App, user: &'a UserId) -> Self {
        Self {
            app,
            user,
            sub: Some(app.presence().subscribe(user)),
        }
    }

    /// Waits for a wake-up or `deadline`; true if woken (re-armed for the next wait before
    /// returning, so the read that follows cannot miss anything).
    async fn wait_until(&mut self, deadline: tokio::time::Instant) -> bool {
        let Some(sub) = self.sub.as_mut() else {
            return false;
        };
        tokio::select! {
            () = &mut sub.notified => {
                sub.rearm();
                // Let the tasks already queued run before reading: under load more changes
                // land first and one response carries them together (fewer, fuller answers).
                tokio::task::yield_now().await;
                // While changes keep arriving, gather for a bounded moment more; never on an
                // idle server, whose one change is answered at once.
                let gather = self.app.config().presence.sync_gather;
                if !gather.is_zero() && self.app.presence().notifier().busy(gather) {
                    let until = (tokio::time::Instant::now() + gather).min(deadline);
                    tokio::time::sleep_until(until).await;
                    crate::metrics::sync_gathered();
                }
                true
            }
            () = tokio::time::sleep_until(deadline) => false,
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(sub) = self.sub.take() {
            self.app.presence().unsubscribe(self.user, sub);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A distinct filter naming `senders` users, as a client would send it inline.
    fn inline_filter(tag: &str, senders: usize) -> (String, Arc<SyncFilter>) {
        let senders: Vec<String> = (0..senders).map(|i| format!("@{tag}x{i:05}:hs")).collect();
        let definition = json!({"presence": {"not_senders": senders}});
        let filter = SyncFilter::from_filter(&definition).unwrap();
        (definition.to_string(), Arc::new(filter))
    }

    #[test]
    fn filter_cache_stays_within_its_byte_budgets() {
        let limits = FilterCacheLimits {
            total: 200_000,
            per_user: 50_000,
            entry: 20_000,
        };
        let cache = SyncFilters::new(limits);
        let users: Vec<UserId> = (0..8)
            .map(|u| UserId::parse(&format!("@u{u}:hs")).unwrap())
            .collect();
        // About 9 KB sent and 8 KB parsed per filter: five fit a user's budget.
        for i in 0..200 {
            for (u, user) in users.iter().enumerate() {
                let (encoded, filter) = inline_filter(&format!("{u}x{i}"), 300);
                cache.insert(user, &encoded, filter);
                assert!(cache.user_bytes(user) <= limits.per_user);
                assert!(cache.bytes() <= limits.total, "{}", cache.bytes());
            }
        }
        assert!(cache.bytes() > limits.total / 2, "{}", cache.bytes());
        // The most recently used entries are the ones kept.
        let (encoded, filter) = inline_filter("last", 300);
        cache.insert(&users[0], &encoded, filter);
        assert!(cache.get(&users[0], &encoded).is_some());
        let (first, _) = inline_filter("0x0", 300);
        assert!(cache.get(&users[0], &first).is_none());
    }

    #[test]
    fn filter_cache_evicts_least_recently_used_first() {
        let limits = FilterCacheLimits {
            total: 1 << 30,
            per_user: 40_000,
            entry: 20_000,
        };
        let cache = SyncFilters::new(limits);
        let user = UserId::parse("@u:hs").unwrap();
        let (kept, filter) = inline_filter("kept", 300);
        cache.insert(&user, &kept, filter);
        for i in 0..20 {
            let (encoded, filter) = inline_filter(&format!("n{i}"), 300);
            cache.insert(&user, &encoded, filter);
            // Used by every sync: it stays while newer, unused filters come and go.
            assert!(cache.get(&user, &kept).is_some(), "evicted at {i}");
        }
    }

    #[test]
    fn filters_over_the_entry_limit_are_not_cached() {
        let cache = SyncFilters::default();
        let user = UserId::parse("@u:hs").unwrap();
        // About 63 KB, like the filters a misbehaving client sent.
        let (encoded, filter) = inline_filter("big", 4_000);
        assert!(encoded.len() > 60_000);
        cache.insert(&user, &encoded, filter);
        assert!(cache.get(&user, &encoded).is_none());
        assert_eq!(cache.bytes(), 0);
        let (small, filter) = inline_filter("small", 3);
        cache.insert(&user, &small, filter);
        assert!(cache.get(&user, &small).is_some());
        assert!(cache.bytes() > small.len());
    }

    #[test]
    fn tokens_round_trip() {
        let t = SyncToken {
            presence: 12,
            rooms: 7,
            account_data: 3,
        };
        assert_eq!(t.render(), "s12_7_3");
        assert_eq!(SyncToken::parse(&t.render()), Some(t));
        assert_eq!(SyncToken::parse("garbage"), None);
        assert_eq!(SyncToken::parse("s1_"), None);
        assert_eq!(SyncToken::parse("s1_2_3_4"), None);
        assert_eq!(SyncToken::parse("s1_2_x"), None);
        // A token of an earlier release: no account-data part.
        assert_eq!(
            SyncToken::parse("s12_7"),
            Some(SyncToken {
                account_data: 0,
                ..t
            })
        );
    }

    #[test]
    fn presence_filter_rules() {
        let f = PresenceFilter::from_filter(&json!({"presence": {"types": ["m.*"]}})).unwrap();
        assert!(f.wants_presence(), "wildcards match (reference differs)");
        let f = PresenceFilter::from_filter(&json!({"presence": {"not_types": ["*"]}})).unwrap();
        assert!(!f.wants_presence());
        let f =
            PresenceFilter::from_filter(&json!({"presence": {"senders": ["@foo:bar"]}})).unwrap();
        assert!(f.keeps(&UserId::parse("@foo:bar").unwrap()));
        assert!(!f.keeps(&UserId::parse("@baz:bar").unwrap()));
        let f = PresenceFilter::from_filter(&json!({"presence": {"not_senders": ["@foo:bar"]}}))
            .unwrap();
        assert!(!f.keeps(&UserId::parse("@foo:bar").unwrap()));
        assert!(PresenceFilter::from_filter(&json!({"presence": {"senders": "x"}})).is_err());
        assert!(glob("m.pre*ce", "m.presence") && !glob("m.room.*", "m.presence"));
    }

    #[test]
    fn room_filter_rules() {
        let f = SyncFilter::from_filter(&json!({"presence": {}}))
            .unwrap()
            .room;
        assert!(f.keeps("!a:hs"), "no room section: every room");
        let f = SyncFilter::from_filter(&json!({"room": {"rooms": []}}))
            .unwrap()
            .room;
        assert!(!f.keeps("!a:hs"), "an empty list: no room");
        let f = SyncFilter::from_filter(
            &json!({"room": {"rooms": ["!a:hs", "!b:hs"], "not_rooms": ["!b:hs"]}}),
        )
        .unwrap()
        .room;
        assert!(f.keeps("!a:hs"));
        assert!(!f.keeps("!b:hs"), "not_rooms wins");
        assert!(!f.keeps("!c:hs"));
        let f = SyncFilter::from_filter(&json!({"room": {"not_rooms": ["!b:hs"]}}))
            .unwrap()
            .room;
        assert!(f.keeps("!a:hs") && !f.keeps("!b:hs"));
        for bad in [
            json!({"room": []}),
            json!({"room": {"rooms": "!a:hs"}}),
            json!({"room": {"not_rooms": [1]}}),
        ] {
            let err = SyncFilter::from_filter(&bad).unwrap_err();
            assert_eq!(err.kind().errcode(), "M_BAD_JSON", "{bad}");
        }
    }
}
