//! `GET /_matrix/client/{v3,r0}/pushrules/...`: the server-default push rules of
//! [`crate::app::push_rules`], read-only — the whole set (`/pushrules/`), the `global`
//! scope (`/pushrules/global/`), one kind (`/pushrules/global/{kind}/`), one rule and its
//! `enabled` / `actions`. Paths and errors follow the reference's `PushRuleRestServlet`.
//! Spec: <https://spec.matrix.org/v1.15/client-server-api/#push-rules-api>.

use axum::{Json, Router, routing::get};
use serde_json::{Map, Value, json};

use crate::{
    app::{App, push_rules::default_rules},
    error::ApiError,
    http::{auth::Requester, extract::MatrixPath},
};

/// The client API prefixes Presenced serves (current and legacy).
const PREFIXES: [&str; 2] = ["/_matrix/client/v3", "/_matrix/client/r0"];

/// The push rule routes.
pub(super) fn routes() -> Router<App> {
    let mut router = Router::new();
    for p in PREFIXES {
        router = router
            .route(&format!("{p}/pushrules/"), get(all_rules))
            .route(&format!("{p}/pushrules/global/"), get(global_rules))
            .route(&format!("{p}/pushrules/global/{{kind}}/"), get(kind_rules))
            .route(
                &format!("{p}/pushrules/global/{{kind}}/{{rule_id}}"),
                get(one_rule),
            )
            .route(
                &format!("{p}/pushrules/global/{{kind}}/{{rule_id}}/{{attribute}}"),
                get(rule_attribute),
            );
    }
    router
}

/// `GET /pushrules/`: every scope (only `global` exists).
async fn all_rules(auth: Requester) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({"global": default_rules(&auth.user_id)?})))
}

/// `GET /pushrules/global/`.
async fn global_rules(auth: Requester) -> Result<Json<Map<String, Value>>, ApiError> {
    Ok(Json(default_rules(&auth.user_id)?))
}

/// The rules of one kind: 404 `M_UNRECOGNIZED` (no such endpoint) for a kind that does not
/// exist; the reference answers 400.
fn rules_of(mut rules: Map<String, Value>, kind: &str) -> Result<Vec<Value>, ApiError> {
    match rules.remove(kind) {
        Some(Value::Array(list)) => Ok(list),
        _ => Err(ApiError::unrecognized()),
    }
}

/// One rule: 404 `M_NOT_FOUND` when the kind has no rule of that ID.
fn rule_of(rules: Map<String, Value>, kind: &str, rule_id: &str) -> Result<Value, ApiError> {
    rules_of(rules, kind)?
        .into_iter()
        .find(|r| r.get("rule_id").and_then(Value::as_str) == Some(rule_id))
        .ok_or_else(|| ApiError::not_found("Unknown rule"))
}

/// `GET /pushrules/global/{kind}/`.
async fn kind_rules(
    auth: Requester,
    MatrixPath(kind): MatrixPath<String>,
) -> Result<Json<Vec<Value>>, ApiError> {
    Ok(Json(rules_of(default_rules(&auth.user_id)?, &kind)?))
}

/// `GET /pushrules/global/{kind}/{ruleId}`.
async fn one_rule(
    auth: Requester,
    MatrixPath((kind, rule_id)): MatrixPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(rule_of(
        default_rules(&auth.user_id)?,
        &kind,
        &rule_id,
    )?))
}

/// `GET /pushrules/global/{kind}/{ruleId}/{enabled,actions}`.
async fn rule_attribute(
    auth: Requester,
    MatrixPath((kind, rule_id, attribute)): MatrixPath<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let rule = rule_of(default_rules(&auth.user_id)?, &kind, &rule_id)?;
    match attribute.as_str() {
        "enabled" | "actions" => Ok(Json(json!({attribute.as_str(): rule[attribute.as_str()]}))),
        _ => Err(ApiError::unrecognized()),
    }
}
