//! Room endpoints (`/_matrix/client/{v3,r0}`): `createRoom`, `join/{roomIdOrAlias}`,
//! `rooms/{roomId}/{join,invite,leave,joined_members,state,send}`, `joined_rooms` and
//! `directory/room/{roomAlias}`. The logic lives in [`crate::app::rooms`]; this file turns
//! requests into its calls and its results into the specification's JSON.
//! Spec: <https://spec.matrix.org/v1.15/client-server-api/#rooms>.

use axum::{
    Json, Router,
    extract::State,
    routing::{get, post, put},
};
use presence_router::UserId;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::body::RawBody;
use crate::http::extract::MatrixPath;
use crate::{
    app::App,
    app::rooms::{
        self, InitialState, NewRoom, Preset, RoomAlias,
        events::{CREATE, MEMBER, client_event_in_room, content, find_state},
    },
    error::ApiError,
    http::{MatrixJson, auth::Requester},
    presence::now_ms,
};

/// The client API prefixes Presenced serves (current and legacy).
const PREFIXES: [&str; 2] = ["/_matrix/client/v3", "/_matrix/client/r0"];

/// The room routes.
pub(super) fn routes() -> Router<App> {
    let mut router = Router::new();
    for p in PREFIXES {
        router = router
            .route(&format!("{p}/createRoom"), post(create_room))
            .route(&format!("{p}/join/{{room}}"), post(join))
            .route(&format!("{p}/rooms/{{room}}/join"), post(join_by_id))
            .route(&format!("{p}/rooms/{{room}}/invite"), post(invite))
            .route(&format!("{p}/rooms/{{room}}/leave"), post(leave))
            .route(
                &format!("{p}/rooms/{{room}}/joined_members"),
                get(joined_members),
            )
            .route(&format!("{p}/rooms/{{room}}/state"), get(room_state))
            .route(
                &format!("{p}/rooms/{{room}}/state/{{event_type}}"),
                get(state_event_empty_key),
            )
            // An empty state key as clients write it: a trailing slash.
            .route(
                &format!("{p}/rooms/{{room}}/state/{{event_type}}/"),
                get(state_event_empty_key),
            )
            .route(
                &format!("{p}/rooms/{{room}}/state/{{event_type}}/{{state_key}}"),
                get(state_event),
            )
            .route(
                &format!("{p}/rooms/{{room}}/send/{{event_type}}/{{txn_id}}"),
                put(send_event),
            )
            .route(&format!("{p}/joined_rooms"), get(joined_rooms))
            .route(&format!("{p}/directory/room/{{alias}}"), get(resolve_alias));
    }
    router
}

#[derive(Deserialize)]
pub(crate) struct CreateRoomBody {
    visibility: Option<String>,
    room_alias_name: Option<String>,
    name: Option<String>,
    topic: Option<String>,
    #[serde(default)]
    invite: Vec<UserId>,
    preset: Option<String>,
    #[serde(default)]
    is_direct: bool,
    room_version: Option<String>,
    #[serde(default)]
    creation_content: Map<String, Value>,
    #[serde(default)]
    initial_state: Vec<InitialStateBody>,
    #[serde(default)]
    power_level_content_override: Map<String, Value>,
}

#[derive(Deserialize)]
struct InitialStateBody {
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    state_key: String,
    content: Map<String, Value>,
}

/// `POST /createRoom`.
async fn create_room(
    State(state): State<App>,
    auth: Requester,
    MatrixJson(body): MatrixJson<CreateRoomBody>,
) -> Result<Json<Value>, ApiError> {
    let public = match body.visibility.as_deref() {
        None | Some("private") => false,
        Some("public") => true,
        Some(_) => {
            return Err(ApiError::invalid_param(
                "visibility must be public or private",
            ));
        }
    };
    let preset = match body.preset.as_deref() {
        None if public => Preset::PublicChat,
        None => Preset::PrivateChat,
        Some(p) => Preset::parse(p).ok_or_else(|| {
            ApiError::invalid_param(
                "preset must be public_chat, private_chat or trusted_private_chat",
            )
        })?,
    };
    let mut new = NewRoom::new(preset);
    new.public = public;
    new.name = body.name;
    new.topic = body.topic;
    new.alias = body
        .room_alias_name
        .map(|a| RoomAlias::local(&a, &state.config().server_name))
        .transpose()?;
    new.invite = body.invite;
    new.is_direct = body.is_direct;
    if let Some(v) = body.room_version {
        new.room_version = v;
    }
    new.creation_content = body.creation_content;
    new.power_level_override = body.power_level_content_override;
    for s in body.initial_state {
        // Membership goes through the membership endpoints, creation through this one.
        if s.event_type == MEMBER || s.event_type == CREATE {
            return Err(ApiError::invalid_param(format!(
                "initial_state may not hold {} events",
                s.event_type
            )));
        }
        new.initial_state.push(InitialState {
            event_type: s.event_type,
            state_key: s.state_key,
            content: s.content,
        });
    }
    let room = rooms::create_room(&state, &auth.user_id, new).await?;
    Ok(Json(json!({"room_id": room.as_str()})))
}

/// `POST /join/{roomIdOrAlias}`.
async fn join(
    State(state): State<App>,
    auth: Requester,
    MatrixPath(room): MatrixPath<String>,
    body: RawBody,
) -> Result<Json<Value>, ApiError> {
    let _: Map<String, Value> = body.json_or_empty()?;
    let room = rooms::resolve(&state, &room).await?;
    rooms::join(&state, &auth.user_id, &room).await?;
    Ok(Json(json!({"room_id": room.as_str()})))
}

/// `POST /rooms/{roomId}/join`.
async fn join_by_id(
    State(state): State<App>,
    auth: Requester,
    MatrixPath(room): MatrixPath<String>,
    body: RawBody,
) -> Result<Json<Value>, ApiError> {
    let _: Map<String, Value> = body.json_or_empty()?;
    let room = rooms::parse_room_id(&room)?;
    rooms::join(&state, &auth.user_id, &room).await?;
    Ok(Json(json!({"room_id": room.as_str()})))
}

#[derive(Deserialize)]
pub(crate) struct InviteBody {
    user_id: UserId,
}

/// `POST /rooms/{roomId}/invite`.
async fn invite(
    State(state): State<App>,
    auth: Requester,
    MatrixPath(room): MatrixPath<String>,
    MatrixJson(body): MatrixJson<InviteBody>,
) -> Result<Json<Value>, ApiError> {
    let room = rooms::parse_room_id(&room)?;
    rooms::invite(&state, &auth.user_id, &room, &body.user_id).await?;
    Ok(Json(json!({})))
}

/// `POST /rooms/{roomId}/leave`.
async fn leave(
    State(state): State<App>,
    auth: Requester,
    MatrixPath(room): MatrixPath<String>,
    body: RawBody,
) -> Result<Json<Value>, ApiError> {
    let _: Map<String, Value> = body.json_or_empty()?;
    let room = rooms::parse_room_id(&room)?;
    rooms::leave(&state, &auth.user_id, &room).await?;
    Ok(Json(json!({})))
}

/// `GET /rooms/{roomId}/joined_members`.
async fn joined_members(
    State(state): State<App>,
    auth: Requester,
    MatrixPath(room): MatrixPath<String>,
) -> Result<Json<Value>, ApiError> {
    let room = rooms::parse_room_id(&room)?;
    let joined = rooms::joined_members(&state, &auth.user_id, &room).await?;
    Ok(Json(json!({"joined": joined})))
}

/// `GET /rooms/{roomId}/state`: every current state event.
async fn room_state(
    State(state): State<App>,
    auth: Requester,
    MatrixPath(room): MatrixPath<String>,
) -> Result<Json<Value>, ApiError> {
    let room = rooms::parse_room_id(&room)?;
    let events = rooms::state_for_member(&state, &auth.user_id, &room).await?;
    let now = now_ms();
    let out: Vec<Value> = events
        .iter()
        .map(|e| client_event_in_room(e, room.as_str(), now))
        .collect();
    Ok(Json(Value::Array(out)))
}

/// `GET /rooms/{roomId}/state/{eventType}/{stateKey}`: one state event's content.
async fn state_event(
    State(state): State<App>,
    auth: Requester,
    MatrixPath((room, event_type, state_key)): MatrixPath<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    one_state_event(&state, &auth, &room, &event_type, &state_key).await
}

/// `GET /rooms/{roomId}/state/{eventType}`: the state event with an empty state key.
async fn state_event_empty_key(
    State(state): State<App>,
    auth: Requester,
    MatrixPath((room, event_type)): MatrixPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    one_state_event(&state, &auth, &room, &event_type, "").await
}

async fn one_state_event(
    state: &App,
    auth: &Requester,
    room: &str,
    event_type: &str,
    state_key: &str,
) -> Result<Json<Value>, ApiError> {
    let room = rooms::parse_room_id(room)?;
    let events = rooms::state_for_member(state, &auth.user_id, &room).await?;
    let event = find_state(&events, event_type, state_key)
        .ok_or_else(|| ApiError::not_found("Event not found."))?;
    Ok(Json(content(&event.event)))
}

/// `PUT /rooms/{roomId}/send/{eventType}/{txnId}`: sends a message; it counts as activity
/// for presence.
async fn send_event(
    State(state): State<App>,
    auth: Requester,
    MatrixPath((room, event_type, txn_id)): MatrixPath<(String, String, String)>,
    MatrixJson(content): MatrixJson<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    let room = rooms::parse_room_id(&room)?;
    if event_type.is_empty() || txn_id.is_empty() {
        return Err(ApiError::invalid_param(
            "Empty event type or transaction ID",
        ));
    }
    let event_id = rooms::send_event(
        &state,
        &auth.user_id,
        &auth.device_id,
        &room,
        &event_type,
        &txn_id,
        content,
    )
    .await?;
    state
        .presence()
        .activity(&auth.user_id, Some(auth.device_id.clone()))
        .await;
    Ok(Json(json!({"event_id": event_id})))
}

/// `GET /joined_rooms`.
async fn joined_rooms(State(state): State<App>, auth: Requester) -> Result<Json<Value>, ApiError> {
    let rooms: Vec<String> = rooms::joined_rooms(&state, &auth.user_id)
        .await?
        .into_iter()
        .map(|r| r.as_str().to_owned())
        .collect();
    Ok(Json(json!({"joined_rooms": rooms})))
}

/// `GET /directory/room/{roomAlias}`: the room an alias names.
async fn resolve_alias(
    State(state): State<App>,
    MatrixPath(alias): MatrixPath<String>,
) -> Result<Json<Value>, ApiError> {
    if !alias.starts_with('#') {
        return Err(ApiError::invalid_param("Room alias must start with #"));
    }
    let room = rooms::resolve(&state, &alias).await?;
    Ok(Json(json!({
        "room_id": room.as_str(),
        "servers": [state.config().server_name.as_str()],
    })))
}
