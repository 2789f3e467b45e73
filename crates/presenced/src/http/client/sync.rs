//! `GET /_matrix/client/{v3,r0}/sync` with its presence section, long-polling until something
//! visible changes. Spec: <https://spec.matrix.org/v1.15/client-server-api/#get_matrixclientv3sync>.
//!
//! A sync that sets presence (`set_presence` online or unavailable, within the `rc_presence`
//! limit) counts as a syncing device for as long as the request runs; `offline`, or a
//! rate-limited sync, leaves presence alone (the reference's `PresenceHandler.user_syncing`
//! with `affect_presence` false).

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Json,
    extract::{RawQuery, State},
    response::{IntoResponse, Response},
};
use presence_router::{DeviceId, PresenceState, UserId};
use presence_store::PresenceStore;
use serde::Serialize;
use serde_json::Value;

use crate::{
    error::ApiError,
    http::{
        AppState,
        auth::{Authed, form_urlencoded_raw, percent_decode},
    },
    notify::Subscription,
    presence::{format, now_ms},
};

/// The paths (current and legacy versions).
pub(super) const PATHS: [&str; 2] = ["/_matrix/client/v3/sync", "/_matrix/client/r0/sync"];

/// The longest a sync waits, whatever `timeout` says.
const MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// A parsed `since` / `next_batch` token: `s<presence position>_<rooms position>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SyncToken {
    /// The presence stream position.
    pub(crate) presence: u64,
    /// The rooms (events) stream position.
    pub(crate) rooms: u64,
}

impl SyncToken {
    /// Parses a token this server issued.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let (p, r) = s.strip_prefix('s')?.split_once('_')?;
        Some(Self {
            presence: p.parse().ok()?,
            rooms: r.parse().ok()?,
        })
    }

    fn render(self) -> String {
        format!("s{}_{}", self.presence, self.rooms)
    }
}

struct Query<'q> {
    since: Option<SyncToken>,
    timeout: Duration,
    set_presence: PresenceState,
    full_state: bool,
    /// As sent (percent-encoded): the filter cache's key, decoded only on a miss.
    filter: Option<&'q str>,
}

fn parse_query(raw: Option<&str>) -> Result<Query<'_>, ApiError> {
    let raw = raw.unwrap_or("");
    let get = |k| form_urlencoded_raw(raw, k).map(percent_decode);
    let since = match get("since") {
        None => None,
        Some(s) if s.is_empty() => None,
        Some(s) => Some(
            SyncToken::parse(&s).ok_or_else(|| ApiError::invalid_param("Invalid since token"))?,
        ),
    };
    let timeout = match get("timeout") {
        None => Duration::ZERO,
        Some(t) => Duration::from_millis(
            t.parse::<u64>()
                .map_err(|_| ApiError::invalid_param("timeout must be an integer"))?,
        ),
    };
    let set_presence = match get("set_presence").as_deref() {
        None | Some("online") => PresenceState::Online,
        Some("offline") => PresenceState::Offline,
        Some("unavailable") => PresenceState::Unavailable,
        Some(_) => {
            return Err(ApiError::invalid_param(
                "set_presence must be one of online, offline, unavailable",
            ));
        }
    };
    let full_state = match get("full_state").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::invalid_param("full_state must be true or false")),
    };
    Ok(Query {
        since,
        timeout: timeout.min(MAX_TIMEOUT),
        set_presence,
        full_state,
        filter: form_urlencoded_raw(raw, "filter"),
    })
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
        let list = |key: &str| -> Result<Option<Vec<String>>, ApiError> {
            match p.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|v| {
                        v.as_str().map(str::to_owned).ok_or_else(|| {
                            ApiError::bad_json(format!("filter.presence.{key} must hold strings"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some),
                Some(_) => Err(ApiError::bad_json(format!(
                    "filter.presence.{key} must be a list"
                ))),
            }
        };
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
    fn wants_presence(&self) -> bool {
        let ty = "m.presence";
        !self.not_types.iter().any(|p| glob(p, ty))
            && self
                .types
                .as_ref()
                .is_none_or(|ts| ts.iter().any(|p| glob(p, ty)))
    }

    fn keeps(&self, sender: &UserId) -> bool {
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
/// database for it, again. Bounded: past the limit the cache starts over.
#[derive(Default)]
pub(crate) struct SyncFilters {
    map: std::sync::Mutex<FilterMap>,
}

/// (requester, the `filter` parameter still percent-encoded) → the parsed filter.
type FilterMap = HashMap<(UserId, String), Arc<PresenceFilter>>;

const SYNC_FILTER_CACHE_LIMIT: usize = 10_000;

impl SyncFilters {
    fn lock(&self) -> std::sync::MutexGuard<'_, FilterMap> {
        crate::lock(&self.map)
    }
}

async fn load_filter(
    state: &AppState,
    user: &UserId,
    encoded: Option<&str>,
) -> Result<Arc<PresenceFilter>, ApiError> {
    let Some(encoded) = encoded else {
        return Ok(Arc::default());
    };
    let key = (user.clone(), encoded.to_owned());
    if let Some(found) = state.sync_filters().lock().get(&key) {
        return Ok(found.clone());
    }
    let raw = percent_decode(encoded);
    let definition: Value = if raw.trim_start().starts_with('{') {
        serde_json::from_str(&raw).map_err(|_| ApiError::bad_json("filter is not valid JSON"))?
    } else {
        let stored = state
            .store()
            .get_filter(user, &raw)
            .await?
            .ok_or_else(|| ApiError::NotFound("No such filter".into()))?;
        serde_json::from_str(&stored).map_err(ApiError::internal)?
    };
    let filter = Arc::new(PresenceFilter::from_filter(&definition)?);
    let mut cache = state.sync_filters().lock();
    if cache.len() >= SYNC_FILTER_CACHE_LIMIT {
        cache.clear();
    }
    cache.insert(key, filter.clone());
    Ok(filter)
}

/// The rooms section, its next position, and whether it holds anything new.
async fn rooms_part(
    state: &AppState,
    user: &UserId,
    since: Option<u64>,
    full_state: bool,
) -> Result<(Value, u64, bool), ApiError> {
    let (rooms, next) = crate::rooms::sync::rooms_section(state, user, since, full_state).await?;
    let news = crate::rooms::sync::has_news(&rooms);
    Ok((rooms, next, news))
}

/// Ends the presence-affecting part of a sync when the request finishes or is dropped.
struct SyncGuard {
    state: AppState,
    user: UserId,
    device: Option<DeviceId>,
}

impl Drop for SyncGuard {
    fn drop(&mut self) {
        let (state, user, device) = (self.state.clone(), self.user.clone(), self.device.take());
        tokio::spawn(async move { state.presence().sync_ended(&user, device).await });
    }
}

/// `GET .../sync`.
pub(super) async fn sync(
    State(state): State<AppState>,
    auth: Authed,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let q = parse_query(raw.as_deref())?;
    let filter = load_filter(&state, &auth.user_id, q.filter).await?;
    let user = auth.user_id.clone();

    let _guard = if q.set_presence != PresenceState::Offline
        && state
            .presence_sync_limit()
            .check(&user, Instant::now())
            .is_ok()
    {
        match state
            .presence()
            .sync_started(&user, Some(auth.device_id.clone()), q.set_presence)
            .await
        {
            Ok(()) => Some(SyncGuard {
                state: state.clone(),
                user: user.clone(),
                device: Some(auth.device_id.clone()),
            }),
            Err(e) => {
                // Presence is best effort here: the sync itself still proceeds.
                tracing::warn!(error = %e, "Could not record a syncing device.");
                None
            }
        }
    } else {
        None
    };

    let presence_since = if q.full_state {
        None
    } else {
        q.since.map(|t| t.presence)
    };
    let rooms_since = q.since.map(|t| t.rooms);
    let deadline = tokio::time::Instant::now() + q.timeout;
    let presence_enabled = state.config().presence.enabled.is_enabled();
    // Registered before the first read, so nothing that happens after it can be missed.
    let mut waiting = Waiting::new(&state, &user);
    let (mut shown, rooms, next) = loop {
        let presence = if presence_enabled
            || presence_since.is_some_and(|t| t < state.presence().current_token())
        {
            state.presence().read(&user, presence_since).await
        } else {
            crate::presence::PresenceRead {
                states: Vec::new(),
                next_token: state.presence().current_token(),
            }
        };
        let (rooms, rooms_next, rooms_news) =
            rooms_part(&state, &user, rooms_since, q.full_state).await?;
        let mut shown = presence.states;
        if filter.wants_presence() {
            shown.retain(|s| filter.keeps(&s.user_id));
        } else {
            shown.clear();
        }
        let next = SyncToken {
            presence: presence.next_token,
            rooms: rooms_next,
        };
        if !shown.is_empty() || rooms_news || q.since.is_none() {
            break (shown, rooms, next);
        }
        if !waiting.wait_until(deadline).await {
            break (shown, rooms, next);
        }
    };
    drop(waiting);
    if let Some(limit) = filter.limit {
        shown.truncate(limit);
    }

    let now = now_ms();
    let body = SyncResponse {
        next_batch: next.render(),
        rooms,
        presence: (!shown.is_empty()).then(|| PresenceEvents {
            events: shown
                .iter()
                .map(|state| format::SyncEvent(format::Content { state, now }))
                .collect(),
        }),
        account_data: NoEvents { events: [] },
        to_device: NoEvents { events: [] },
        device_one_time_keys_count: EmptyObject {},
    };
    let response = Json(body).into_response();
    crate::metrics::sync_duration(started.elapsed());
    Ok(response)
}

/// A `/sync` response, serialized as it is written (no intermediate JSON tree).
#[derive(Serialize)]
struct SyncResponse<'a> {
    next_batch: String,
    rooms: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence: Option<PresenceEvents<'a>>,
    account_data: NoEvents,
    to_device: NoEvents,
    device_one_time_keys_count: EmptyObject,
}

#[derive(Serialize)]
struct PresenceEvents<'a> {
    events: Vec<format::SyncEvent<'a>>,
}

/// `{"events": []}`.
#[derive(Serialize)]
struct NoEvents {
    events: [(); 0],
}

/// `{}`.
#[derive(Serialize)]
struct EmptyObject {}

/// A sync's registration as a waiter. One registration serves every wait of the request;
/// dropping it (the request answered, failed or abandoned by the client) unregisters, so the
/// engine stops counting the user as listening.
struct Waiting<'a> {
    state: &'a AppState,
    user: &'a UserId,
    sub: Option<Subscription>,
}

impl<'a> Waiting<'a> {
    fn new(state: &'a AppState, user: &'a UserId) -> Self {
        Self {
            state,
            user,
            sub: Some(state.presence().subscribe(user)),
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
                true
            }
            () = tokio::time::sleep_until(deadline) => false,
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(sub) = self.sub.take() {
            self.state.presence().unsubscribe(self.user, sub);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tokens_round_trip() {
        let t = SyncToken {
            presence: 12,
            rooms: 7,
        };
        assert_eq!(SyncToken::parse(&t.render()), Some(t));
        assert_eq!(SyncToken::parse("garbage"), None);
        assert_eq!(SyncToken::parse("s1_"), None);
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
    fn query_validation() {
        assert!(parse_query(Some("set_presence=busy")).is_err());
        assert!(parse_query(Some("since=nope")).is_err());
        let q = parse_query(Some("timeout=1000&set_presence=offline&full_state=true")).unwrap();
        assert_eq!(q.set_presence, PresenceState::Offline);
        assert!(q.full_state);
        assert_eq!(q.timeout, Duration::from_secs(1));
    }
}
