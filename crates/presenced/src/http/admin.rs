//! Presenced's admin API for presence (admin users only):
//! - `POST /_presenced/admin/v1/send_local_online_presence_to` `{"users": [...]}`: the module
//!   API call of the same name, for operators and integrations.
//! - `POST /_presenced/admin/v1/set_presence_for_users`
//!   `{"users": {"@u:hs": {"presence": "online", "status_msg": "..."}}}`: the module API call
//!   of the same name (local or remote users, no device, always announced).
//! - `GET /_presenced/admin/v1/presence?from=N&limit=M`: current presence of every known user,
//!   paged in interning order.
//!
//! Served in both modes: beside Synapse on the writer's client listener, to users whom
//! Synapse's `users` table marks admin.

use axum::{
    Json, Router,
    extract::{RawQuery, State},
    routing::{get, post},
};
use std::collections::BTreeMap;

use presence_router::{ForcedPresence, ModuleApiError, PresenceState, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{MatrixJson, auth::Admin, extract::query_uint};
use crate::app::App;
use crate::{
    error::ApiError,
    presence::{format, now_ms},
};

const SEND_PATH: &str = "/_presenced/admin/v1/send_local_online_presence_to";
const SET_PATH: &str = "/_presenced/admin/v1/set_presence_for_users";
const LIST_PATH: &str = "/_presenced/admin/v1/presence";
const MAX_PAGE: usize = 1000;

/// The admin presence routes.
pub(super) fn routes() -> Router<App> {
    Router::new()
        .route(SEND_PATH, post(send_local_online_presence_to))
        .route(SET_PATH, post(set_presence_for_users))
        .route(LIST_PATH, get(list_presence))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SendBody {
    users: Vec<UserId>,
}

async fn send_local_online_presence_to(
    State(state): State<App>,
    Admin(_admin): Admin,
    MatrixJson(body): MatrixJson<SendBody>,
) -> Result<Json<Value>, ApiError> {
    if body.users.is_empty() {
        return Err(ApiError::invalid_param("users must not be empty"));
    }
    state
        .presence()
        .send_local_online_presence_to(body.users)
        .await
        .map_err(refused)?;
    Ok(Json(json!({})))
}

/// A module API call the server refused: what it names is not there (an unknown local
/// user), else an internal error.
fn refused(e: ModuleApiError) -> ApiError {
    match e {
        ModuleApiError::Rejected(msg) => ApiError::not_found(msg),
        other => ApiError::internal(other),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetBody {
    users: BTreeMap<UserId, SetState>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetState {
    presence: String,
    #[serde(default)]
    status_msg: Option<String>,
}

async fn set_presence_for_users(
    State(state): State<App>,
    Admin(_admin): Admin,
    MatrixJson(body): MatrixJson<SetBody>,
) -> Result<Json<Value>, ApiError> {
    if body.users.is_empty() {
        return Err(ApiError::invalid_param("users must not be empty"));
    }
    let mut states = Vec::with_capacity(body.users.len());
    for (user, s) in body.users {
        let presence = PresenceState::from_wire(&s.presence).ok_or_else(|| {
            ApiError::invalid_param(format!("invalid presence {:?} for {user}", s.presence))
        })?;
        states.push(ForcedPresence {
            user,
            state: presence,
            status_msg: s.status_msg.map(Into::into),
        });
    }
    state
        .presence()
        .set_presence_for_users(states)
        .await
        .map_err(refused)?;
    Ok(Json(json!({})))
}

async fn list_presence(
    State(state): State<App>,
    Admin(_admin): Admin,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let from = query_uint(query.as_deref(), "from")?.unwrap_or(0);
    let from = usize::try_from(from)
        .map_err(|_| ApiError::invalid_param("Query parameter \"from\" is out of range"))?;
    let limit = query_uint(query.as_deref(), "limit")?
        .map_or(100, |l| usize::try_from(l).unwrap_or(MAX_PAGE))
        .clamp(1, MAX_PAGE);
    let now = now_ms();
    let (states, total) = state.presence().page(from, limit);
    let rows: Vec<Value> = states
        .iter()
        .map(|p| {
            let mut c = format::content(p, now);
            c.insert("user_id".into(), json!(p.user_id.as_str()));
            Value::Object(c)
        })
        .collect();
    let mut body = json!({"presence": rows, "total": total});
    if from.saturating_add(limit) < total {
        body["next_from"] = json!(from + limit);
    }
    Ok(Json(body))
}
