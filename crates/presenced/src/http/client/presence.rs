//! `PUT`/`GET /_matrix/client/{v3,r0}/presence/{userId}/status`.
//! Spec: <https://spec.matrix.org/v1.15/client-server-api/#put_matrixclientv3presenceuseridstatus>.
//!
//! Validation follows the order of the reference's `PresenceStatusRestServlet`
//! (`synapse/rest/client/presence.py`): authentication, a malformed user ID,
//! someone else's presence, the rate limit (spent before the body is read), the body's JSON,
//! its keys and types, then the state itself — plus Presenced's bound on `status_msg`.

use std::{sync::Arc, time::Instant};

use axum::{Json, extract::State};
use presence_router::{PresenceState, UserId};
use serde_json::{Map, Value, json};

use super::body::RawBody;
use crate::http::extract::MatrixPath;
use crate::{
    app::App,
    config::PresenceMode,
    error::{ApiError, Limiter},
    http::auth::Requester,
    presence::{format, now_ms},
};

/// The paths (current and legacy versions).
pub(super) const PATHS: [&str; 2] = [
    "/_matrix/client/v3/presence/{user_id}/status",
    "/_matrix/client/r0/presence/{user_id}/status",
];

/// The paths a Synapse deployment routes to its presence writer
/// (`^/_matrix/client/(api/v1|r0|v3|unstable)/presence/`).
pub(super) const WRITER_PATHS: [&str; 4] = [
    "/_matrix/client/v3/presence/{user_id}/status",
    "/_matrix/client/r0/presence/{user_id}/status",
    "/_matrix/client/api/v1/presence/{user_id}/status",
    "/_matrix/client/unstable/presence/{user_id}/status",
];

const PARSE_ERROR: &str = "Unable to parse state";

/// Parses the `{userId}` path segment: 400 `M_INVALID_PARAM` if it is not a user ID.
fn path_user(raw: &str) -> Result<UserId, ApiError> {
    UserId::parse(raw).map_err(|e| ApiError::invalid_param(format!("Invalid user ID: {e}")))
}

/// `PUT .../presence/{userId}/status`.
pub(super) async fn set_presence(
    State(state): State<App>,
    auth: Requester,
    MatrixPath(user_id): MatrixPath<String>,
    RawBody(body): RawBody,
) -> Result<Json<Value>, ApiError> {
    let user = path_user(&user_id)?;
    if user != auth.user_id {
        return Err(ApiError::forbidden("Can only set your own presence state"));
    }
    if let Err(wait) = state.presence_put_limit().check(&user, Instant::now()) {
        return Err(ApiError::limit_exceeded(
            wait.0.as_millis() as u64,
            Limiter::Presence,
        ));
    }
    let body: Map<String, Value> = crate::http::parse_json_body(&body)?;
    if body.keys().any(|k| k != "presence" && k != "status_msg") {
        return Err(ApiError::unknown(PARSE_ERROR));
    }
    let Some(Value::String(presence)) = body.get("presence") else {
        return Err(ApiError::unknown(PARSE_ERROR));
    };
    let status_msg = match body.get("status_msg") {
        None => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(ApiError::unknown("status_msg must be a string.")),
    };
    let config = state.config();
    if !config.presence.enabled.tracks() {
        // Disabled or untracked: accepted and ignored, whatever the value.
        return Ok(Json(json!({})));
    }
    let presence = PresenceState::from_wire(presence)
        .filter(|s| *s != PresenceState::Busy || config.experimental_features.msc3026_enabled)
        .ok_or_else(|| ApiError::unknown("Invalid presence state"))?;
    if let Some(msg) = status_msg
        && msg.len() > config.max_status_msg_length
    {
        return Err(ApiError::invalid_param(format!(
            "status_msg is longer than {} bytes",
            config.max_status_msg_length
        )));
    }
    state
        .presence()
        .set_presence(
            &user,
            Some(auth.device_id),
            presence,
            status_msg.map(Arc::from),
        )
        .await?;
    Ok(Json(json!({})))
}

/// `GET .../presence/{userId}/status`: allowed exactly when the requester would receive the
/// user's updates (itself, a shared room, or a router).
pub(super) async fn get_presence(
    State(state): State<App>,
    auth: Requester,
    MatrixPath(user_id): MatrixPath<String>,
) -> Result<Json<Value>, ApiError> {
    let target = path_user(&user_id)?;
    if state.config().presence.enabled == PresenceMode::Disabled {
        return Ok(Json(json!({"presence": "offline"})));
    }
    let presence = state
        .visible_presence(&auth.user_id, &target)
        .await?
        .ok_or_else(|| ApiError::forbidden("You are not allowed to see their presence."))?;
    Ok(Json(Value::Object(format::content(&presence, now_ms()))))
}
