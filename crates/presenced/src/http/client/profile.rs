//! `GET /_matrix/client/{v3,r0}/profile/{userId}` and its `displayname` and `avatar_url`
//! fields, without authentication (the reference's default). The profile comes from
//! [`crate::app::profile`]; a field the user does not have is left out.
//! Spec: <https://spec.matrix.org/v1.15/client-server-api/#profiles>.

use axum::{Json, Router, extract::State, routing::get};
use presence_router::UserId;
use serde_json::{Map, Value, json};

use crate::{
    app::{
        App,
        profile::{Profile, profile},
    },
    error::ApiError,
    http::extract::MatrixPath,
};

/// The client API prefixes Presenced serves (current and legacy).
const PREFIXES: [&str; 2] = ["/_matrix/client/v3", "/_matrix/client/r0"];

/// The profile routes.
pub(super) fn routes() -> Router<App> {
    let mut router = Router::new();
    for p in PREFIXES {
        router = router
            .route(&format!("{p}/profile/{{user_id}}"), get(get_profile))
            .route(
                &format!("{p}/profile/{{user_id}}/displayname"),
                get(get_displayname),
            )
            .route(
                &format!("{p}/profile/{{user_id}}/avatar_url"),
                get(get_avatar_url),
            );
    }
    router
}

/// The profile of the path's user: 400 `M_INVALID_PARAM` for an invalid ID, 404
/// `M_NOT_FOUND` for a user this server does not have.
async fn lookup(state: &App, user_id: &str) -> Result<Profile, ApiError> {
    let user = UserId::parse(user_id).map_err(|_| ApiError::invalid_param("Invalid user id"))?;
    profile(state, &user).await
}

fn displayname_field(profile: Profile) -> Map<String, Value> {
    let mut body = Map::new();
    if let Some(name) = profile.displayname {
        body.insert("displayname".to_owned(), json!(name));
    }
    body
}

/// `GET /profile/{userId}`.
async fn get_profile(
    State(state): State<App>,
    MatrixPath(user_id): MatrixPath<String>,
) -> Result<Json<Map<String, Value>>, ApiError> {
    Ok(Json(displayname_field(lookup(&state, &user_id).await?)))
}

/// `GET /profile/{userId}/displayname`.
async fn get_displayname(
    State(state): State<App>,
    MatrixPath(user_id): MatrixPath<String>,
) -> Result<Json<Map<String, Value>>, ApiError> {
    Ok(Json(displayname_field(lookup(&state, &user_id).await?)))
}

/// `GET /profile/{userId}/avatar_url`: Presenced has no avatars, so an existing user's
/// answer is `{}`.
async fn get_avatar_url(
    State(state): State<App>,
    MatrixPath(user_id): MatrixPath<String>,
) -> Result<Json<Map<String, Value>>, ApiError> {
    lookup(&state, &user_id).await?;
    Ok(Json(Map::new()))
}
