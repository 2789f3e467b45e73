//! The Matrix error vocabulary shared by every crate that answers HTTP requests.
//!
//! [`ErrorKind`] is the one place where an `errcode` string and its HTTP status exist: the
//! client API (`presenced`) and the federation API (`presence-federation`) both describe
//! their failures as a kind and a message, and [`MatrixError`] turns that into the standard
//! error response. Spec:
//! <https://spec.matrix.org/v1.15/client-server-api/#standard-error-response>.

use std::borrow::Cow;

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

/// Every kind of Matrix error Presenced answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// 403 `M_FORBIDDEN`: authenticated but not allowed.
    Forbidden,
    /// 401 `M_UNKNOWN_TOKEN`: the access token is not recognised.
    UnknownToken,
    /// 401 `M_MISSING_TOKEN`: no access token was given.
    MissingToken,
    /// 400 `M_BAD_JSON`: valid JSON of the wrong shape.
    BadJson,
    /// 400 `M_NOT_JSON`: the body is not JSON.
    NotJson,
    /// 404 `M_NOT_FOUND`: the resource does not exist.
    NotFound,
    /// 429 `M_LIMIT_EXCEEDED`: rate limited.
    LimitExceeded,
    /// 400 `M_UNKNOWN`: a request the reference rejects without a more specific code.
    Unknown,
    /// 404 `M_UNRECOGNIZED`: no such endpoint.
    Unrecognized,
    /// 405 `M_UNRECOGNIZED`: a known endpoint with a method it does not accept.
    MethodNotAllowed,
    /// 405 `M_BAD_JSON`: account data of a type the server manages itself (`m.fully_read`,
    /// `m.push_rules`) cannot be set with the account-data endpoints.
    ServerManaged,
    /// 413 `M_TOO_LARGE`: the request body is larger than allowed.
    TooLarge,
    /// 400 `M_INVALID_PARAM`: a parameter (path or query) is malformed.
    InvalidParam,
    /// 400 `M_MISSING_PARAM`: a required parameter is missing.
    MissingParam,
    /// 400 `M_USER_IN_USE`: the user ID is taken.
    UserInUse,
    /// 400 `M_INVALID_USERNAME`: the requested localpart is not allowed.
    InvalidUsername,
    /// 401 `M_UNAUTHORIZED`: the request is not correctly authorized (a bad federation
    /// signature, a wrong replication secret).
    Unauthorized,
    /// 400 `M_EXCLUSIVE`: the resource is reserved by an application service.
    Exclusive,
    /// 400 `M_ROOM_IN_USE`: the room alias is taken.
    RoomInUse,
    /// 400 `M_UNSUPPORTED_ROOM_VERSION`: the requested room version is not supported.
    UnsupportedRoomVersion,
    /// 403 `M_USER_DEACTIVATED`: the account has been deactivated.
    UserDeactivated,
    /// 401 `M_USER_LOCKED`: the account has been locked by an administrator.
    UserLocked,
    /// 500 `M_UNKNOWN`: something failed inside the server.
    Internal,
    /// 503 `M_UNKNOWN`: a service the server depends on is unreachable; retry later.
    Unavailable,
}

impl ErrorKind {
    /// The Matrix `errcode`.
    pub fn errcode(self) -> &'static str {
        match self {
            Self::Forbidden => "M_FORBIDDEN",
            Self::UnknownToken => "M_UNKNOWN_TOKEN",
            Self::MissingToken => "M_MISSING_TOKEN",
            Self::BadJson | Self::ServerManaged => "M_BAD_JSON",
            Self::NotJson => "M_NOT_JSON",
            Self::NotFound => "M_NOT_FOUND",
            Self::LimitExceeded => "M_LIMIT_EXCEEDED",
            Self::Unknown | Self::Internal | Self::Unavailable => "M_UNKNOWN",
            Self::Unrecognized | Self::MethodNotAllowed => "M_UNRECOGNIZED",
            Self::TooLarge => "M_TOO_LARGE",
            Self::InvalidParam => "M_INVALID_PARAM",
            Self::MissingParam => "M_MISSING_PARAM",
            Self::UserInUse => "M_USER_IN_USE",
            Self::InvalidUsername => "M_INVALID_USERNAME",
            Self::Unauthorized => "M_UNAUTHORIZED",
            Self::Exclusive => "M_EXCLUSIVE",
            Self::RoomInUse => "M_ROOM_IN_USE",
            Self::UnsupportedRoomVersion => "M_UNSUPPORTED_ROOM_VERSION",
            Self::UserDeactivated => "M_USER_DEACTIVATED",
            Self::UserLocked => "M_USER_LOCKED",
        }
    }

    /// The HTTP status the specification pairs with this error.
    pub fn status(self) -> StatusCode {
        match self {
            Self::Forbidden | Self::UserDeactivated => StatusCode::FORBIDDEN,
            Self::UnknownToken | Self::MissingToken | Self::Unauthorized | Self::UserLocked => {
                StatusCode::UNAUTHORIZED
            }
            Self::BadJson
            | Self::NotJson
            | Self::Unknown
            | Self::InvalidParam
            | Self::MissingParam
            | Self::UserInUse
            | Self::InvalidUsername
            | Self::Exclusive
            | Self::RoomInUse
            | Self::UnsupportedRoomVersion => StatusCode::BAD_REQUEST,
            Self::NotFound | Self::Unrecognized => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed | Self::ServerManaged => StatusCode::METHOD_NOT_ALLOWED,
            Self::LimitExceeded => StatusCode::TOO_MANY_REQUESTS,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Whether the failure is the server's, not the requester's (its cause is logged, the
    /// client only sees a generic text).
    pub fn is_server_error(self) -> bool {
        self.status().is_server_error()
    }
}

/// The text of every internal error: details go to the log, not to the client.
pub const INTERNAL_ERROR_TEXT: &str = "Internal server error";

/// A Matrix error response: a kind, the text the client sees, and the extras some kinds
/// carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatrixError {
    kind: ErrorKind,
    message: Cow<'static, str>,
    retry_after_ms: Option<u64>,
}

impl MatrixError {
    /// An error of `kind` showing `message` (server errors show a generic text instead).
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        let message = if kind.is_server_error() {
            Cow::Borrowed(INTERNAL_ERROR_TEXT)
        } else {
            message.into()
        };
        Self {
            kind,
            message,
            retry_after_ms: None,
        }
    }

    /// Asks the client to retry after `ms` (`retry_after_ms` and `Retry-After`).
    pub fn with_retry_after_ms(mut self, ms: u64) -> Self {
        self.retry_after_ms = Some(ms);
        self
    }

    /// The kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The text the client sees.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// The standard error body.
#[derive(Serialize)]
struct ErrorBody<'a> {
    errcode: &'static str,
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
    /// Only on `M_UNKNOWN_TOKEN`: the token is gone for good, not soft-logged-out.
    #[serde(skip_serializing_if = "Option::is_none")]
    soft_logout: Option<bool>,
}

impl IntoResponse for MatrixError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            errcode: self.kind.errcode(),
            error: &self.message,
            retry_after_ms: self.retry_after_ms,
            soft_logout: (self.kind == ErrorKind::UnknownToken).then_some(false),
        };
        let mut response = (self.kind.status(), Json(body)).into_response();
        if let Some(ms) = self.retry_after_ms {
            // Retry-After counts whole seconds; round up so a client never retries too early.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(ms.div_ceil(1000)));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;
    use serde_json::{Value, json};

    use super::*;

    async fn render(error: MatrixError) -> (StatusCode, Option<String>, Value) {
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
    async fn every_kind_renders_its_status_and_errcode() {
        let cases = [
            (ErrorKind::Forbidden, 403, "M_FORBIDDEN"),
            (ErrorKind::UnknownToken, 401, "M_UNKNOWN_TOKEN"),
            (ErrorKind::MissingToken, 401, "M_MISSING_TOKEN"),
            (ErrorKind::BadJson, 400, "M_BAD_JSON"),
            (ErrorKind::NotJson, 400, "M_NOT_JSON"),
            (ErrorKind::NotFound, 404, "M_NOT_FOUND"),
            (ErrorKind::LimitExceeded, 429, "M_LIMIT_EXCEEDED"),
            (ErrorKind::Unknown, 400, "M_UNKNOWN"),
            (ErrorKind::Unrecognized, 404, "M_UNRECOGNIZED"),
            (ErrorKind::MethodNotAllowed, 405, "M_UNRECOGNIZED"),
            (ErrorKind::ServerManaged, 405, "M_BAD_JSON"),
            (ErrorKind::TooLarge, 413, "M_TOO_LARGE"),
            (ErrorKind::InvalidParam, 400, "M_INVALID_PARAM"),
            (ErrorKind::MissingParam, 400, "M_MISSING_PARAM"),
            (ErrorKind::UserInUse, 400, "M_USER_IN_USE"),
            (ErrorKind::InvalidUsername, 400, "M_INVALID_USERNAME"),
            (ErrorKind::Unauthorized, 401, "M_UNAUTHORIZED"),
            (ErrorKind::Exclusive, 400, "M_EXCLUSIVE"),
            (ErrorKind::RoomInUse, 400, "M_ROOM_IN_USE"),
            (
                ErrorKind::UnsupportedRoomVersion,
                400,
                "M_UNSUPPORTED_ROOM_VERSION",
            ),
            (ErrorKind::UserDeactivated, 403, "M_USER_DEACTIVATED"),
            (ErrorKind::UserLocked, 401, "M_USER_LOCKED"),
            (ErrorKind::Internal, 500, "M_UNKNOWN"),
            (ErrorKind::Unavailable, 503, "M_UNKNOWN"),
        ];
        for (kind, status, errcode) in cases {
            let (rendered, _, body) = render(MatrixError::new(kind, "why")).await;
            assert_eq!(rendered.as_u16(), status, "{kind:?}");
            assert_eq!(body["errcode"], errcode, "{kind:?}");
            let shown = if kind.is_server_error() {
                INTERNAL_ERROR_TEXT
            } else {
                "why"
            };
            assert_eq!(body["error"], shown, "{kind:?}");
        }
    }

    #[tokio::test]
    async fn rate_limits_say_when_to_retry() {
        let limited = MatrixError::new(ErrorKind::LimitExceeded, "Too many requests");
        let (status, retry_after, body) = render(limited.clone().with_retry_after_ms(1500)).await;
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
        let (_, retry_after, _) = render(limited.with_retry_after_ms(3000)).await;
        assert_eq!(retry_after.as_deref(), Some("3"));
        let (_, retry_after, _) = render(MatrixError::new(ErrorKind::Forbidden, "x")).await;
        assert_eq!(retry_after, None);
    }

    #[tokio::test]
    async fn unknown_tokens_are_not_soft_logouts() {
        let (_, _, body) = render(MatrixError::new(
            ErrorKind::UnknownToken,
            "Unknown access token",
        ))
        .await;
        assert_eq!(
            body,
            json!({"errcode": "M_UNKNOWN_TOKEN", "error": "Unknown access token", "soft_logout": false})
        );
        let (_, _, body) = render(MatrixError::new(
            ErrorKind::MissingToken,
            "Missing access token",
        ))
        .await;
        assert_eq!(
            body,
            json!({"errcode": "M_MISSING_TOKEN", "error": "Missing access token"})
        );
    }
}
