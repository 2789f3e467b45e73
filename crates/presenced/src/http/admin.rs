//! Presenced's admin API for presence (admin users only):
//! - `POST /_presenced/admin/v1/send_local_online_presence_to` `{"users": [...]}`: the module
//!   API call of the same name, for operators and integrations.
//! - `GET /_presenced/admin/v1/presence?from=N&limit=M`: current presence of every known user,
//!   paged in interning order.

use axum::{
    Json, Router,
    extract::{Query, State},
    routing::{get, post},
};
use presence_router::{ModuleApiError, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppState, MatrixJson, auth::Admin};
use crate::{
    error::ApiError,
    presence::{format, now_ms},
};

const SEND_PATH: &str = "/_presenced/admin/v1/send_local_online_presence_to";
const LIST_PATH: &str = "/_presenced/admin/v1/presence";
const MAX_PAGE: usize = 1000;

/// The admin presence routes.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(SEND_PATH, post(send_local_online_presence_to))
        .route(LIST_PATH, get(list_presence))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    users: Vec<UserId>,
}

async fn send_local_online_presence_to(
    State(state): State<AppState>,
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
        .map_err(|e| match e {
            ModuleApiError::Rejected(msg) => ApiError::NotFound(msg.into()),
            other => ApiError::internal(other),
        })?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct Page {
    from: Option<usize>,
    limit: Option<usize>,
}

async fn list_presence(
    State(state): State<AppState>,
    Admin(_admin): Admin,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let from = page.from.unwrap_or(0);
    let limit = page.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let now = now_ms();
    let (rows, total) = state.presence().with_engine(|e| {
        let total = e.user_count();
        let rows: Vec<Value> = (from..total.min(from.saturating_add(limit)))
            .filter_map(|i| e.user_at(i))
            .map(|u| {
                let p = e.presence(u);
                let mut c = format::content(&p, now);
                c.insert("user_id".into(), json!(p.user_id.as_str()));
                Value::Object(c)
            })
            .collect();
        (rows, total)
    });
    let mut body = json!({"presence": rows, "total": total});
    if from.saturating_add(limit) < total {
        body["next_from"] = json!(from + limit);
    }
    Ok(Json(body))
}
