//! `GET /_matrix/client/{v3,r0}/sync`: parses the query into a [`SyncRequest`], lets the core
//! answer it ([`App::sync`]) and serializes the result straight from the presence states (no
//! intermediate JSON tree).
//! Spec: <https://spec.matrix.org/v1.15/client-server-api/#get_matrixclientv3sync>.

use std::time::{Duration, Instant};

use axum::{
    Json,
    extract::{RawQuery, State},
    response::{IntoResponse, Response},
};
use presence_router::PresenceState;
use serde::Serialize;
use serde_json::Value;

use crate::{
    app::{
        App,
        sync::{SyncRequest, SyncToken},
    },
    error::ApiError,
    http::auth::Requester,
    presence::{format, now_ms},
    query::{form_urlencoded_raw, percent_decode},
};

/// The paths (current and legacy versions).
pub(super) const PATHS: [&str; 2] = ["/_matrix/client/v3/sync", "/_matrix/client/r0/sync"];

pub(crate) fn parse_query(raw: Option<&str>) -> Result<SyncRequest<'_>, ApiError> {
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
    Ok(SyncRequest {
        since,
        timeout,
        set_presence,
        full_state,
        filter: form_urlencoded_raw(raw, "filter"),
    })
}

/// `GET .../sync`.
pub(super) async fn sync(
    State(app): State<App>,
    requester: Requester,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let request = parse_query(raw.as_deref())?;
    let result = app.sync(&requester, request).await?;
    let now = now_ms();
    let body = SyncResponse {
        next_batch: result.next_batch.render(),
        rooms: result.rooms,
        presence: (!result.presence.is_empty()).then(|| PresenceEvents {
            events: result
                .presence
                .iter()
                .map(|state| format::SyncEvent(format::Content { state, now }))
                .collect(),
        }),
        account_data: AccountData {
            events: &result.account_data,
        },
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
    account_data: AccountData<'a>,
    to_device: NoEvents,
    device_one_time_keys_count: EmptyObject,
}

#[derive(Serialize)]
struct PresenceEvents<'a> {
    events: Vec<format::SyncEvent<'a>>,
}

/// `{"events": [...]}` of global account data.
#[derive(Serialize)]
struct AccountData<'a> {
    events: &'a [Value],
}

/// `{"events": []}`.
#[derive(Serialize)]
struct NoEvents {
    events: [(); 0],
}

/// `{}`.
#[derive(Serialize)]
struct EmptyObject {}

#[cfg(test)]
mod tests {
    use super::*;

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
