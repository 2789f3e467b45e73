//! Access-token authentication at the HTTP edge: the [`Requester`] and [`Admin`] extractors
//! and query-string helpers.
//!
//! Tokens come from `Authorization: Bearer <token>` or the deprecated `access_token` query
//! parameter; the application core resolves them ([`App::authenticate`]).
//! Spec: <https://spec.matrix.org/v1.15/client-server-api/#using-access-tokens>.

use axum::{extract::FromRequestParts, http::request::Parts};

pub use crate::app::auth::Requester;
use crate::{app::App, error::ApiError, query::form_urlencoded_get};

/// The access token of a request, if any.
pub fn access_token(parts: &Parts) -> Option<String> {
    if let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))?;
        return Some(token.trim().to_owned());
    }
    let query = parts.uri.query()?;
    form_urlencoded_get(query, "access_token")
}

impl FromRequestParts<App> for Requester {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let token = access_token(parts).ok_or_else(ApiError::missing_token)?;
        app.authenticate(token).await
    }
}

/// An [`Requester`] requester who is a server admin (else 403 `M_FORBIDDEN`).
#[derive(Debug, Clone)]
pub struct Admin(pub Requester);

impl FromRequestParts<App> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &App) -> Result<Self, ApiError> {
        let token = access_token(parts).ok_or_else(ApiError::missing_token)?;
        // Not the cached flag: it would outlive a demotion.
        let authed = state.authenticate_fresh(token).await?;
        if !authed.admin {
            return Err(ApiError::forbidden("You are not a server admin"));
        }
        Ok(Self(authed))
    }
}
