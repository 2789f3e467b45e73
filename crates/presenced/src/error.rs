//! Errors: [`ApiError`], what an HTTP request can fail with, turned into a Matrix error
//! response in exactly one place (its `IntoResponse`); and [`StartError`], why the server
//! could not start.
//!
//! Every API error has the status code and `errcode` the Matrix specification gives it and
//! a readable `error` text. Internal failures are logged with their whole cause chain and
//! answered with a generic 500 `M_UNKNOWN`, so nothing internal leaks to clients.
//! Spec: <https://spec.matrix.org/v1.15/client-server-api/#standard-error-response>.

use std::{borrow::Cow, error::Error as StdError, fmt, io, net::SocketAddr};

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::config::ConfigError;

/// The error text of every internal error: the details go to the log, not to the client.
const INTERNAL_ERROR_TEXT: &str = "Internal server error";
/// The error text of unknown endpoints and methods, as the reference homeserver words it.
const UNRECOGNIZED_TEXT: &str = "Unrecognized request";

/// Matrix `errcode` values used by this server.
mod errcode {
    pub(super) const FORBIDDEN: &str = "M_FORBIDDEN";
    pub(super) const UNKNOWN_TOKEN: &str = "M_UNKNOWN_TOKEN";
    pub(super) const MISSING_TOKEN: &str = "M_MISSING_TOKEN";
    pub(super) const BAD_JSON: &str = "M_BAD_JSON";
    pub(super) const NOT_JSON: &str = "M_NOT_JSON";
    pub(super) const NOT_FOUND: &str = "M_NOT_FOUND";
    pub(super) const LIMIT_EXCEEDED: &str = "M_LIMIT_EXCEEDED";
    pub(super) const UNKNOWN: &str = "M_UNKNOWN";
    pub(super) const UNRECOGNIZED: &str = "M_UNRECOGNIZED";
    pub(super) const TOO_LARGE: &str = "M_TOO_LARGE";
    pub(super) const INVALID_PARAM: &str = "M_INVALID_PARAM";
    pub(super) const USER_IN_USE: &str = "M_USER_IN_USE";
    pub(super) const INVALID_USERNAME: &str = "M_INVALID_USERNAME";
    pub(super) const UNAUTHORIZED: &str = "M_UNAUTHORIZED";
    pub(super) const EXCLUSIVE: &str = "M_EXCLUSIVE";
    pub(super) const ROOM_IN_USE: &str = "M_ROOM_IN_USE";
    pub(super) const UNSUPPORTED_ROOM_VERSION: &str = "M_UNSUPPORTED_ROOM_VERSION";
}

/// A failed API request. Each variant is one Matrix error; the text is what the client sees.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// 403 `M_FORBIDDEN`: authenticated but not allowed.
    #[error("forbidden: {0}")]
    Forbidden(Cow<'static, str>),
    /// 401 `M_UNKNOWN_TOKEN` (with `soft_logout: false`): the access token is not valid.
    #[error("unknown access token")]
    UnknownToken,
    /// 401 `M_MISSING_TOKEN`: no access token was given.
    #[error("missing access token")]
    MissingToken,
    /// 400 `M_BAD_JSON`: valid JSON of the wrong shape.
    #[error("bad JSON: {0}")]
    BadJson(Cow<'static, str>),
    /// 400 `M_NOT_JSON`: the body is not JSON at all.
    #[error("not JSON: {0}")]
    NotJson(Cow<'static, str>),
    /// 404 `M_NOT_FOUND`: the resource does not exist.
    #[error("not found: {0}")]
    NotFound(Cow<'static, str>),
    /// 429 `M_LIMIT_EXCEEDED`, with `retry_after_ms` and a `Retry-After` header.
    #[error("rate limited, retry after {retry_after_ms} ms")]
    LimitExceeded {
        /// How long the client should wait before retrying, in milliseconds.
        retry_after_ms: u64,
    },
    /// 400 `M_UNKNOWN`: a request error with no more specific code.
    #[error("bad request: {0}")]
    Unknown(Cow<'static, str>),
    /// 404 `M_UNRECOGNIZED`: no such endpoint.
    #[error("unrecognized endpoint")]
    Unrecognized,
    /// 405 `M_UNRECOGNIZED`: the endpoint exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 413 `M_TOO_LARGE`: the request body is over `max_request_body_size`.
    #[error("too large: {0}")]
    TooLarge(Cow<'static, str>),
    /// 400 `M_INVALID_PARAM`: a parameter (path or query) is malformed.
    #[error("invalid parameter: {0}")]
    InvalidParam(Cow<'static, str>),
    /// 400 `M_USER_IN_USE`: the user ID is taken.
    #[error("user in use: {0}")]
    UserInUse(Cow<'static, str>),
    /// 400 `M_INVALID_USERNAME`: the requested localpart is not allowed.
    #[error("invalid username: {0}")]
    InvalidUsername(Cow<'static, str>),
    /// 401 `M_UNAUTHORIZED`: the request is not correctly authorized (e.g. a bad federation
    /// signature).
    #[error("unauthorized: {0}")]
    Unauthorized(Cow<'static, str>),
    /// 400 `M_EXCLUSIVE`: the resource is reserved by an application service.
    #[error("exclusive: {0}")]
    Exclusive(Cow<'static, str>),
    /// 400 `M_ROOM_IN_USE`: the room alias is taken.
    #[error("room in use: {0}")]
    RoomInUse(Cow<'static, str>),
    /// 400 `M_UNSUPPORTED_ROOM_VERSION`: the requested room version is not supported.
    #[error("unsupported room version: {0}")]
    UnsupportedRoomVersion(Cow<'static, str>),
    /// 500 `M_UNKNOWN`: something failed inside the server. The cause is logged, never sent.
    #[error("internal error")]
    Internal(#[source] InternalError),
}

/// How long a client is asked to wait when the store's write queue is full.
const OVERLOADED_RETRY_MS: u64 = 200;

impl From<presence_store::StoreError> for ApiError {
    fn from(e: presence_store::StoreError) -> Self {
        match e {
            // Back-pressure, not a failure: the client retries shortly.
            presence_store::StoreError::Overloaded => {
                crate::metrics::rate_limited("store");
                Self::LimitExceeded {
                    retry_after_ms: OVERLOADED_RETRY_MS,
                }
            }
            other => Self::internal(other),
        }
    }
}

impl From<crate::presence::PresenceError> for ApiError {
    fn from(e: crate::presence::PresenceError) -> Self {
        match e {
            crate::presence::PresenceError::Store(e) => e.into(),
            // Back-pressure on a batch is back-pressure for each change in it.
            other
                if matches!(
                    other.store_error(),
                    Some(presence_store::StoreError::Overloaded)
                ) =>
            {
                presence_store::StoreError::Overloaded.into()
            }
            other => Self::internal(other),
        }
    }
}

impl ApiError {
    /// An internal error caused by `cause` (logged when the response is built).
    pub fn internal<E: StdError + Send + Sync + 'static>(cause: E) -> Self {
        Self::Internal(InternalError(Box::new(cause)))
    }

    /// A 403 `M_FORBIDDEN`.
    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::Forbidden(message.into())
    }

    /// A 400 `M_BAD_JSON`.
    pub fn bad_json(message: impl Into<Cow<'static, str>>) -> Self {
        Self::BadJson(message.into())
    }

    /// A 400 `M_INVALID_PARAM`.
    pub fn invalid_param(message: impl Into<Cow<'static, str>>) -> Self {
        Self::InvalidParam(message.into())
    }

    /// A 400 `M_UNKNOWN`.
    pub fn unknown(message: impl Into<Cow<'static, str>>) -> Self {
        Self::Unknown(message.into())
    }

    /// The HTTP status of the response.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::UnknownToken | Self::MissingToken | Self::Unauthorized(_) => {
                StatusCode::UNAUTHORIZED
            }
            Self::BadJson(_)
            | Self::NotJson(_)
            | Self::Unknown(_)
            | Self::InvalidParam(_)
            | Self::UserInUse(_)
            | Self::InvalidUsername(_)
            | Self::Exclusive(_)
            | Self::RoomInUse(_)
            | Self::UnsupportedRoomVersion(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) | Self::Unrecognized => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::LimitExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The Matrix `errcode` of the response.
    pub fn errcode(&self) -> &'static str {
        match self {
            Self::Forbidden(_) => errcode::FORBIDDEN,
            Self::UnknownToken => errcode::UNKNOWN_TOKEN,
            Self::MissingToken => errcode::MISSING_TOKEN,
            Self::BadJson(_) => errcode::BAD_JSON,
            Self::NotJson(_) => errcode::NOT_JSON,
            Self::NotFound(_) => errcode::NOT_FOUND,
            Self::LimitExceeded { .. } => errcode::LIMIT_EXCEEDED,
            Self::Unknown(_) | Self::Internal(_) => errcode::UNKNOWN,
            Self::Unrecognized | Self::MethodNotAllowed => errcode::UNRECOGNIZED,
            Self::TooLarge(_) => errcode::TOO_LARGE,
            Self::InvalidParam(_) => errcode::INVALID_PARAM,
            Self::UserInUse(_) => errcode::USER_IN_USE,
            Self::InvalidUsername(_) => errcode::INVALID_USERNAME,
            Self::Unauthorized(_) => errcode::UNAUTHORIZED,
            Self::Exclusive(_) => errcode::EXCLUSIVE,
            Self::RoomInUse(_) => errcode::ROOM_IN_USE,
            Self::UnsupportedRoomVersion(_) => errcode::UNSUPPORTED_ROOM_VERSION,
        }
    }

    /// The `error` text the client sees.
    fn client_message(&self) -> &str {
        match self {
            Self::Forbidden(m)
            | Self::BadJson(m)
            | Self::NotJson(m)
            | Self::NotFound(m)
            | Self::Unknown(m)
            | Self::TooLarge(m)
            | Self::InvalidParam(m)
            | Self::UserInUse(m)
            | Self::InvalidUsername(m)
            | Self::Unauthorized(m)
            | Self::Exclusive(m)
            | Self::RoomInUse(m)
            | Self::UnsupportedRoomVersion(m) => m,
            Self::UnknownToken => "Unknown access token",
            Self::MissingToken => "Missing access token",
            Self::LimitExceeded { .. } => "Too many requests",
            Self::Unrecognized | Self::MethodNotAllowed => UNRECOGNIZED_TEXT,
            Self::Internal(_) => INTERNAL_ERROR_TEXT,
        }
    }
}

/// The Matrix error body.
#[derive(Serialize)]
struct ErrorBody<'a> {
    errcode: &'static str,
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    soft_logout: Option<bool>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            Self::Internal(cause) => {
                tracing::error!(error = %cause.chain(), "Internal error while handling a request.");
            }
            other => {
                tracing::debug!(errcode = other.errcode(), %status, "Request failed: {other}.")
            }
        }
        let retry_after_ms = match &self {
            Self::LimitExceeded { retry_after_ms } => Some(*retry_after_ms),
            _ => None,
        };
        let body = ErrorBody {
            errcode: self.errcode(),
            error: self.client_message(),
            retry_after_ms,
            soft_logout: matches!(self, Self::UnknownToken).then_some(false),
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(ms) = retry_after_ms {
            // Retry-After counts whole seconds; round up so a client never retries too early.
            let seconds = ms.div_ceil(1000);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// The cause of a 500: kept for the log, never shown to the client.
pub struct InternalError(Box<dyn StdError + Send + Sync + 'static>);

impl InternalError {
    /// The cause and its sources, joined with `: `.
    fn chain(&self) -> String {
        let mut text = self.0.to_string();
        let mut source = self.0.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }
}

impl fmt::Debug for InternalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for InternalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl StdError for InternalError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.source()
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not bind its address.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address that could not be bound.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The database could not be opened or loaded.
    #[error("{0}")]
    Store(String),
    /// A presence router could not be built from its configuration.
    #[error("{0}")]
    Router(String),
    /// Federation could not be set up (signing key, TLS files, settings).
    #[error("{0}")]
    Federation(String),
    /// A listener failed while serving.
    #[error("listener on {addr} failed: {source}")]
    Serve {
        /// The listener's address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
}

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;
    use serde_json::{Value, json};

    use super::*;

    async fn render(error: ApiError) -> (StatusCode, Option<String>, Value) {
        let response = error.into_response();
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, retry_after, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn every_variant_has_its_status_and_errcode() {
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (ApiError::forbidden("no"), 403, "M_FORBIDDEN"),
            (ApiError::UnknownToken, 401, "M_UNKNOWN_TOKEN"),
            (ApiError::MissingToken, 401, "M_MISSING_TOKEN"),
            (ApiError::bad_json("shape"), 400, "M_BAD_JSON"),
            (ApiError::NotJson("x".into()), 400, "M_NOT_JSON"),
            (ApiError::NotFound("x".into()), 404, "M_NOT_FOUND"),
            (
                ApiError::LimitExceeded { retry_after_ms: 1 },
                429,
                "M_LIMIT_EXCEEDED",
            ),
            (ApiError::unknown("x"), 400, "M_UNKNOWN"),
            (ApiError::Unrecognized, 404, "M_UNRECOGNIZED"),
            (ApiError::MethodNotAllowed, 405, "M_UNRECOGNIZED"),
            (ApiError::TooLarge("x".into()), 413, "M_TOO_LARGE"),
            (ApiError::invalid_param("x"), 400, "M_INVALID_PARAM"),
            (ApiError::UserInUse("x".into()), 400, "M_USER_IN_USE"),
            (
                ApiError::InvalidUsername("x".into()),
                400,
                "M_INVALID_USERNAME",
            ),
            (ApiError::Unauthorized("x".into()), 401, "M_UNAUTHORIZED"),
            (ApiError::Exclusive("x".into()), 400, "M_EXCLUSIVE"),
            (ApiError::RoomInUse("x".into()), 400, "M_ROOM_IN_USE"),
            (
                ApiError::UnsupportedRoomVersion("x".into()),
                400,
                "M_UNSUPPORTED_ROOM_VERSION",
            ),
            (
                ApiError::internal(io::Error::other("disk on fire")),
                500,
                "M_UNKNOWN",
            ),
        ];
        for (error, status, errcode) in cases {
            let label = format!("{error:?}");
            assert_eq!(error.status().as_u16(), status, "{label}");
            assert_eq!(error.errcode(), errcode, "{label}");
            let (rendered, _, body) = render(error).await;
            assert_eq!(rendered.as_u16(), status, "{label}");
            assert_eq!(body["errcode"], errcode, "{label}");
            assert!(body["error"].is_string(), "{label}");
        }
    }

    #[tokio::test]
    async fn the_body_carries_the_message() {
        let (_, _, body) =
            render(ApiError::forbidden("Can only set your own presence state")).await;
        assert_eq!(
            body,
            json!({"errcode": "M_FORBIDDEN", "error": "Can only set your own presence state"})
        );
    }

    #[tokio::test]
    async fn rate_limits_say_when_to_retry() {
        let (status, retry_after, body) = render(ApiError::LimitExceeded {
            retry_after_ms: 1500,
        })
        .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            retry_after.as_deref(),
            Some("2"),
            "whole seconds, rounded up"
        );
        assert_eq!(
            body,
            json!({"errcode": "M_LIMIT_EXCEEDED", "error": "Too many requests", "retry_after_ms": 1500})
        );
        let (_, retry_after, _) = render(ApiError::LimitExceeded {
            retry_after_ms: 3000,
        })
        .await;
        assert_eq!(retry_after.as_deref(), Some("3"));
        let (_, retry_after, _) = render(ApiError::forbidden("x")).await;
        assert_eq!(retry_after, None);
    }

    #[tokio::test]
    async fn unknown_tokens_are_not_soft_logouts() {
        let (_, _, body) = render(ApiError::UnknownToken).await;
        assert_eq!(
            body,
            json!({"errcode": "M_UNKNOWN_TOKEN", "error": "Unknown access token", "soft_logout": false})
        );
        let (_, _, body) = render(ApiError::MissingToken).await;
        assert_eq!(
            body,
            json!({"errcode": "M_MISSING_TOKEN", "error": "Missing access token"})
        );
    }

    #[derive(Debug, thiserror::Error)]
    #[error("query failed")]
    struct Outer(#[source] io::Error);

    #[tokio::test]
    async fn internal_errors_do_not_leak() {
        let error = ApiError::internal(Outer(io::Error::other("/var/lib/secret.db is locked")));
        let ApiError::Internal(cause) = &error else {
            panic!("not internal")
        };
        assert_eq!(cause.chain(), "query failed: /var/lib/secret.db is locked");
        let (status, _, body) = render(error).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            body,
            json!({"errcode": "M_UNKNOWN", "error": "Internal server error"})
        );
    }
}
