//! `POST /user/{userId}/filter` and `GET /user/{userId}/filter/{filterId}`: stored sync
//! filters, for the requester only.
//!
//! A filter is checked leniently when it is stored (an object; the sections Presenced reads
//! must have the right shape, the parts `/sync` applies exactly as it will read them), then
//! kept as the JSON the client sent, so `/sync?filter=<id>` reads back what was written.
//! Spec: <https://spec.matrix.org/v1.15/client-server-api/#filtering>.

use axum::{
    Json, Router,
    extract::State,
    routing::{get, post},
};
use presence_router::UserId;
use presence_store::PresenceStore;
use serde_json::{Map, Value, json};

use crate::app::sync::SyncFilter;
use crate::{
    app::App,
    error::ApiError,
    http::{MatrixJson, auth::Requester, extract::MatrixPath},
};

/// The client API prefixes Presenced serves (current and legacy).
const PREFIXES: [&str; 2] = ["/_matrix/client/v3", "/_matrix/client/r0"];
/// Sections of a filter that must be objects when present.
const OBJECT_SECTIONS: [&str; 3] = ["presence", "room", "account_data"];

/// The filter routes.
pub(super) fn routes() -> Router<App> {
    let mut router = Router::new();
    for p in PREFIXES {
        router = router
            .route(&format!("{p}/user/{{user_id}}/filter"), post(create_filter))
            .route(
                &format!("{p}/user/{{user_id}}/filter/{{filter_id}}"),
                get(get_filter),
            );
    }
    router
}

/// The path's user, who must be the requester.
fn own_user(raw: &str, auth: &Requester, action: &'static str) -> Result<UserId, ApiError> {
    let user =
        UserId::parse(raw).map_err(|e| ApiError::invalid_param(format!("Invalid user ID: {e}")))?;
    if user != auth.user_id {
        return Err(ApiError::forbidden(action));
    }
    Ok(user)
}

/// Checks the shape of a filter definition.
pub(crate) fn validate(filter: &Map<String, Value>) -> Result<(), ApiError> {
    for section in OBJECT_SECTIONS {
        if let Some(v) = filter.get(section)
            && !v.is_object()
        {
            return Err(ApiError::bad_json(format!(
                "filter.{section} must be an object"
            )));
        }
    }
    if let Some(fields) = filter.get("event_fields")
        && !fields
            .as_array()
            .is_some_and(|a| a.iter().all(Value::is_string))
    {
        return Err(ApiError::bad_json(
            "filter.event_fields must be a list of strings",
        ));
    }
    match filter.get("event_format").map(Value::as_str) {
        None | Some(Some("client" | "federation")) => {}
        Some(_) => {
            return Err(ApiError::bad_json(
                "filter.event_format must be client or federation",
            ));
        }
    }
    SyncFilter::from_filter(&Value::Object(filter.clone()))?;
    Ok(())
}

/// `POST /user/{userId}/filter`.
async fn create_filter(
    State(state): State<App>,
    auth: Requester,
    MatrixPath(user_id): MatrixPath<String>,
    MatrixJson(filter): MatrixJson<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    let user = own_user(&user_id, &auth, "Can only create filters for yourself")?;
    validate(&filter)?;
    let text = Value::Object(filter).to_string();
    let filter_id = state.store()?.create_filter(&user, text).await?;
    Ok(Json(json!({"filter_id": filter_id})))
}

/// `GET /user/{userId}/filter/{filterId}`.
async fn get_filter(
    State(state): State<App>,
    auth: Requester,
    MatrixPath((user_id, filter_id)): MatrixPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let user = own_user(&user_id, &auth, "Can only get your own filters")?;
    let stored = state
        .store()?
        .get_filter(&user, &filter_id)
        .await?
        .ok_or_else(|| ApiError::not_found("No such filter"))?;
    let filter: Value = serde_json::from_str(&stored).map_err(ApiError::internal)?;
    Ok(Json(filter))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(v: Value) -> Result<(), ApiError> {
        validate(v.as_object().unwrap())
    }

    #[test]
    fn filter_shapes() {
        assert!(check(json!({})).is_ok());
        assert!(
            check(
                json!({"room": {"timeline": {"limit": 10}}, "presence": {"types": ["m.presence"]}})
            )
            .is_ok()
        );
        assert!(check(json!({"event_fields": ["content.body"], "event_format": "client"})).is_ok());
        for bad in [
            json!({"presence": []}),
            json!({"room": 1}),
            json!({"account_data": "x"}),
            json!({"event_fields": "x"}),
            json!({"event_fields": [1]}),
            json!({"event_format": "xml"}),
            json!({"presence": {"senders": "x"}}),
        ] {
            assert_eq!(
                check(bad.clone()).unwrap_err().kind().errcode(),
                "M_BAD_JSON",
                "{bad}"
            );
        }
    }
}
