//! Presenced's admin API for room membership (admin users only):
//! `PUT /_presenced/admin/v1/rooms/{roomId}/members/{userId}` with
//! `{"membership": "join" | "leave"}` sets a local or remote user's membership directly,
//! creating the room (owned by the server) on first use. An integration uses it to mirror
//! audiences into Presenced (an organisation's groups, another server's rooms), so that
//! their members share presence. The change is stored as events like any other membership.

use axum::{Json, Router, extract::State, routing::put};
use presence_router::UserId;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{MatrixJson, auth::Admin, extract::MatrixPath};
use crate::{
    app::{App, rooms},
    error::ApiError,
};

const MEMBER_PATH: &str = "/_presenced/admin/v1/rooms/{room_id}/members/{user_id}";

/// The admin room routes.
pub(super) fn routes() -> Router<App> {
    Router::new().route(MEMBER_PATH, put(set_membership))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MembershipBody {
    membership: String,
}

/// `PUT .../rooms/{roomId}/members/{userId}`.
async fn set_membership(
    State(state): State<App>,
    Admin(admin): Admin,
    MatrixPath((room, user)): MatrixPath<(String, String)>,
    MatrixJson(body): MatrixJson<MembershipBody>,
) -> Result<Json<Value>, ApiError> {
    let room = rooms::parse_room_id(&room)?;
    let user = UserId::parse(&user)
        .map_err(|e| ApiError::invalid_param(format!("Invalid user ID: {e}")))?;
    let join = match body.membership.as_str() {
        "join" => true,
        "leave" => false,
        _ => return Err(ApiError::invalid_param("membership must be join or leave")),
    };
    rooms::admin_set_membership(&state, &room, &user, join).await?;
    tracing::info!(
        admin = %admin.user_id,
        room = %room,
        user = %user,
        membership = %body.membership,
        "Set a room membership through the admin API."
    );
    Ok(Json(json!({})))
}
