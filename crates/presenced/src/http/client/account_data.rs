//! `GET`/`PUT /user/{userId}/account_data/{type}` and
//! `GET`/`PUT /user/{userId}/rooms/{roomId}/account_data/{type}`: the requester's own account
//! data, global or per room. The content is any JSON object; `m.fully_read` and
//! `m.push_rules` are the server's and refused (405 `M_BAD_JSON`); an entry never written is
//! 404 `M_NOT_FOUND`. Spec: <https://spec.matrix.org/v1.15/client-server-api/#client-config>.

use axum::{Json, Router, extract::State, routing::get};
use presence_router::{RoomId, UserId};
use serde_json::{Map, Value, json};

use crate::{
    app::App,
    error::ApiError,
    http::{MatrixJson, auth::Requester, extract::MatrixPath},
};

/// The client API prefixes Presenced serves (current and legacy).
const PREFIXES: [&str; 2] = ["/_matrix/client/v3", "/_matrix/client/r0"];

/// The account-data routes.
pub(super) fn routes() -> Router<App> {
    let mut router = Router::new();
    for p in PREFIXES {
        router = router
            .route(
                &format!("{p}/user/{{user_id}}/account_data/{{data_type}}"),
                get(get_global).put(put_global),
            )
            .route(
                &format!("{p}/user/{{user_id}}/rooms/{{room_id}}/account_data/{{data_type}}"),
                get(get_room).put(put_room),
            );
    }
    router
}

/// The path's user, who must be the requester.
fn own_user(raw: &str, auth: &Requester) -> Result<UserId, ApiError> {
    let user =
        UserId::parse(raw).map_err(|e| ApiError::invalid_param(format!("Invalid user ID: {e}")))?;
    if user != auth.user_id {
        return Err(ApiError::forbidden(
            "Cannot get or set account data for other users",
        ));
    }
    Ok(user)
}

fn room(raw: &str) -> Result<RoomId, ApiError> {
    RoomId::parse(raw).map_err(|e| ApiError::invalid_param(format!("Invalid room ID: {e}")))
}

fn found(content: Option<Value>) -> Result<Json<Value>, ApiError> {
    content
        .map(Json)
        .ok_or_else(|| ApiError::not_found("Account data not found"))
}

async fn get_global(
    State(app): State<App>,
    auth: Requester,
    MatrixPath((user_id, data_type)): MatrixPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let user = own_user(&user_id, &auth)?;
    found(app.get_account_data(&user, None, &data_type).await?)
}

async fn put_global(
    State(app): State<App>,
    auth: Requester,
    MatrixPath((user_id, data_type)): MatrixPath<(String, String)>,
    MatrixJson(content): MatrixJson<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    let user = own_user(&user_id, &auth)?;
    app.put_account_data(&user, None, &data_type, content)
        .await?;
    Ok(Json(json!({})))
}

async fn get_room(
    State(app): State<App>,
    auth: Requester,
    MatrixPath((user_id, room_id, data_type)): MatrixPath<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let user = own_user(&user_id, &auth)?;
    let room = room(&room_id)?;
    found(app.get_account_data(&user, Some(&room), &data_type).await?)
}

async fn put_room(
    State(app): State<App>,
    auth: Requester,
    MatrixPath((user_id, room_id, data_type)): MatrixPath<(String, String, String)>,
    MatrixJson(content): MatrixJson<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    let user = own_user(&user_id, &auth)?;
    let room = room(&room_id)?;
    app.put_account_data(&user, Some(&room), &data_type, content)
        .await?;
    Ok(Json(json!({})))
}
