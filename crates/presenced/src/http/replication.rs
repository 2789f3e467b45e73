//! Synapse's HTTP replication endpoints that the presence writer serves, on a listener
//! with the `replication` resource (the writer mode only):
//!
//! - `POST /_synapse/replication/presence_set_state/{user_id}`: a worker relays a client's
//!   presence (`is_sync` for syncs);
//! - `POST /_synapse/replication/bump_presence_active_time/{user_id}`: activity (receipts,
//!   typing, messages);
//! - `GET /_synapse/replication/get_repl_stream_updates/{stream}/{txn_id}`: the rows a
//!   process missed (`presence` and the writer's `caches` rows from the database,
//!   `presence_federation` from memory);
//! - `POST /_synapse/replication/fed_send_edu/m.presence/{txn_id}`: inbound federation
//!   presence received by another process.
//!
//! With `worker_replication_secret` set, a request without `Authorization: Bearer <secret>`
//! is 403 `M_FORBIDDEN` (Synapse's own writer answers 500). Answers carry
//! `_INT_STREAM_POS: {"presence": T}` so callers read their own writes. Reference:
//! `synapse/replication/http/{presence,streams,federation}.py`.

use axum::{
    Json, Router,
    extract::{RawQuery, State},
    http::HeaderMap,
    routing::{get, post},
};
use presence_engine::RemotePresence;
use presence_router::{DeviceId, PresenceState, ServerName, UserId};
use presence_synapse::{CACHES_STREAM, PRESENCE_FEDERATION_STREAM, PRESENCE_STREAM};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{client::RawBody, extract::MatrixPath};
use crate::{app::App, error::ApiError, query::form_urlencoded_get};

/// Rows per `get_repl_stream_updates` page, as Synapse's streams use.
const UPDATES_PAGE: usize = 100;

/// The replication routes.
pub(super) fn routes() -> Router<App> {
    Router::new()
        .route(
            "/_synapse/replication/presence_set_state/{user_id}",
            post(presence_set_state),
        )
        .route(
            "/_synapse/replication/bump_presence_active_time/{user_id}",
            post(bump_presence_active_time),
        )
        .route(
            "/_synapse/replication/get_repl_stream_updates/{stream}/{txn_id}",
            get(get_repl_stream_updates),
        )
        .route(
            "/_synapse/replication/fed_send_edu/{edu_type}/{txn_id}",
            post(fed_send_edu),
        )
}

/// Checks the replication bearer (when a secret is configured).
fn authorize(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(secret) = app
        .config()
        .writer
        .as_ref()
        .and_then(|w| w.replication_secret.as_ref())
    else {
        return Ok(());
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Compared whole; the secret is an operator's shared secret, not a per-user token.
    if given.is_some_and(|g| constant_time_eq(g.as_bytes(), secret.expose().as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "Missing or wrong worker_replication_secret",
        ))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn writer(app: &App) -> Result<&std::sync::Arc<crate::app::synapse::SynapseWriter>, ApiError> {
    app.writer().ok_or_else(ApiError::unrecognized)
}

/// `{"_INT_STREAM_POS": {"presence": T}}`: the position after the caller's write.
fn stream_pos(app: &App) -> Result<Json<Value>, ApiError> {
    let at = writer(app)?.position();
    Ok(Json(json!({"_INT_STREAM_POS": {PRESENCE_STREAM: at}})))
}

fn path_user(raw: &str) -> Result<UserId, ApiError> {
    UserId::parse(raw).map_err(|e| ApiError::invalid_param(format!("Invalid user ID: {e}")))
}

fn device(raw: Option<String>) -> Result<Option<DeviceId>, ApiError> {
    raw.map(|d| DeviceId::parse(&d).map_err(|e| ApiError::bad_json(format!("device_id: {e}"))))
        .transpose()
}

#[derive(Deserialize)]
pub(crate) struct SetStateBody {
    #[serde(default)]
    device_id: Option<String>,
    state: Map,
    #[serde(default)]
    is_sync: bool,
}

type Map = serde_json::Map<String, Value>;

/// `POST .../presence_set_state/{user_id}`.
async fn presence_set_state(
    State(app): State<App>,
    headers: HeaderMap,
    MatrixPath(user_id): MatrixPath<String>,
    RawBody(body): RawBody,
) -> Result<Json<Value>, ApiError> {
    authorize(&app, &headers)?;
    let user = path_user(&user_id)?;
    let body: SetStateBody = crate::http::parse_json_body(&body)?;
    let device = device(body.device_id)?;
    let state = body
        .state
        .get("presence")
        .and_then(Value::as_str)
        .and_then(PresenceState::from_wire)
        .ok_or_else(|| ApiError::invalid_param("Invalid presence state"))?;
    if body.is_sync {
        // A sync-driven update: the state the sync asked for, status untouched.
        app.presence().synced(&user, device, state).await?;
    } else {
        let status_msg = match body.state.get("status_msg") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(std::sync::Arc::from(s.as_str())),
            Some(_) => return Err(ApiError::bad_json("status_msg must be a string")),
        };
        app.presence()
            .set_presence(&user, device, state, status_msg)
            .await?;
    }
    stream_pos(&app)
}

#[derive(Deserialize)]
pub(crate) struct BumpBody {
    #[serde(default)]
    device_id: Option<String>,
}

/// `POST .../bump_presence_active_time/{user_id}`.
async fn bump_presence_active_time(
    State(app): State<App>,
    headers: HeaderMap,
    MatrixPath(user_id): MatrixPath<String>,
    RawBody(body): RawBody,
) -> Result<Json<Value>, ApiError> {
    authorize(&app, &headers)?;
    let user = path_user(&user_id)?;
    let body: BumpBody = crate::http::parse_json_body(&body)?;
    app.presence()
        .activity(&user, device(body.device_id)?)
        .await;
    stream_pos(&app)
}

/// `GET .../get_repl_stream_updates/{stream}/{txn_id}?from_token=N&upto_token=M`.
async fn get_repl_stream_updates(
    State(app): State<App>,
    headers: HeaderMap,
    MatrixPath((stream, _txn)): MatrixPath<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    authorize(&app, &headers)?;
    let query = query.unwrap_or_default();
    let token = |key: &str| -> Result<u64, ApiError> {
        form_urlencoded_get(&query, key)
            .ok_or_else(|| {
                ApiError::new(
                    crate::error::ErrorKind::MissingParam,
                    format!("{key} is required"),
                )
            })?
            .parse::<u64>()
            .map_err(|_| ApiError::invalid_param(format!("{key} must be a non-negative integer")))
    };
    let (from, upto) = (token("from_token")?, token("upto_token")?);
    let page = |updates: Vec<Value>, upto_token: u64, limited: bool| {
        Ok(Json(json!({
            "updates": updates,
            "upto_token": upto_token,
            "limited": limited,
        })))
    };
    match stream.as_str() {
        PRESENCE_STREAM => {
            let p = writer(&app)?
                .db()
                .presence_updates(from, upto, UPDATES_PAGE)
                .await
                .map_err(ApiError::internal)?;
            let rows = p.updates.iter().map(|(id, row)| json!([id, row])).collect();
            page(rows, p.upto_token, p.limited)
        }
        PRESENCE_FEDERATION_STREAM => {
            let p = writer(&app)?.federation_updates(from, upto, UPDATES_PAGE);
            let rows = p
                .updates
                .iter()
                .map(|(id, row)| json!([id, [row.destination.as_str(), row.user_id.as_str()]]))
                .collect();
            page(rows, p.upto_token, p.limited)
        }
        CACHES_STREAM => {
            let p = writer(&app)?
                .cache_updates(from, upto, UPDATES_PAGE)
                .await
                .map_err(ApiError::internal)?;
            let rows = p.updates.iter().map(|(id, row)| json!([id, row])).collect();
            page(rows, p.upto_token, p.limited)
        }
        other => Err(ApiError::not_found(format!("Unknown stream {other:?}"))),
    }
}

#[derive(Deserialize)]
pub(crate) struct EduBody {
    origin: String,
    content: EduContent,
}

#[derive(Deserialize)]
struct EduContent {
    #[serde(default)]
    push: Vec<Value>,
}

/// `POST .../fed_send_edu/m.presence/{txn_id}`: inbound federation presence.
async fn fed_send_edu(
    State(app): State<App>,
    headers: HeaderMap,
    MatrixPath((edu_type, _txn)): MatrixPath<(String, String)>,
    RawBody(body): RawBody,
) -> Result<Json<Value>, ApiError> {
    authorize(&app, &headers)?;
    if edu_type != "m.presence" {
        return Err(ApiError::not_found(format!(
            "The presence writer handles m.presence only, not {edu_type}"
        )));
    }
    let body: EduBody = crate::http::parse_json_body(&body)?;
    let origin =
        ServerName::parse(&body.origin).map_err(|e| ApiError::bad_json(format!("origin: {e}")))?;
    // Shapes are checked here; the engine validates each entry (domain, state) and drops
    // what is wrong, as the stock writer does.
    let entries: Vec<RemotePresence> = body
        .content
        .push
        .iter()
        .filter_map(|e| {
            Some(RemotePresence {
                user_id: e.get("user_id")?.as_str()?.to_owned(),
                presence: e.get("presence")?.as_str()?.to_owned(),
                last_active_ago: e.get("last_active_ago").and_then(Value::as_u64),
                status_msg: e
                    .get("status_msg")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                currently_active: e.get("currently_active").and_then(Value::as_bool),
            })
        })
        .collect();
    let dropped = app.presence().remote_presence(origin, entries).await?;
    if dropped > 0 {
        crate::metrics::remote_dropped(dropped);
    }
    stream_pos(&app)
}
