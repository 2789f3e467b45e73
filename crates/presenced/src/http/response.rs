//! The one place an [`ApiError`] becomes an HTTP response: internal causes are logged here
//! with their whole chain, rate limits are counted here, and the body is the standard Matrix
//! error from `presence-matrix`.

use axum::response::{IntoResponse, Response};
use presence_matrix::MatrixError;

use crate::error::ApiError;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = self.kind();
        if let Some(cause) = self.cause() {
            tracing::error!(error = %cause.chain(), "Internal error while handling a request.");
        } else {
            tracing::debug!(
                errcode = kind.errcode(),
                status = %kind.status(),
                "Request failed: {}.",
                self.message()
            );
        }
        let mut error = MatrixError::new(kind, self.message().to_owned());
        if let Some((retry_after_ms, limiter)) = self.retry() {
            crate::metrics::rate_limited(limiter.label());
            error = error.with_retry_after_ms(retry_after_ms);
        }
        error.into_response()
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use axum::{
        body::to_bytes,
        http::{StatusCode, header},
    };
    use serde_json::{Value, json};

    use super::*;
    use crate::error::Limiter;

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
        let (status, retry_after, body) =
            render(ApiError::limit_exceeded(1500, Limiter::Presence)).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(retry_after.as_deref(), Some("2"));
        assert_eq!(
            body,
            json!({"errcode": "M_LIMIT_EXCEEDED", "error": "Too many requests", "retry_after_ms": 1500})
        );
    }

    #[tokio::test]
    async fn unknown_tokens_are_not_soft_logouts() {
        let (status, _, body) = render(ApiError::unknown_token()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            body,
            json!({"errcode": "M_UNKNOWN_TOKEN", "error": "Unknown access token", "soft_logout": false})
        );
    }

    #[derive(Debug, thiserror::Error)]
    #[error("query failed")]
    struct Outer(#[source] io::Error);

    #[tokio::test]
    async fn internal_errors_do_not_leak() {
        let error = ApiError::internal(Outer(io::Error::other("/var/lib/secret.db is locked")));
        let (status, _, body) = render(error).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            body,
            json!({"errcode": "M_UNKNOWN", "error": "Internal server error"})
        );
    }
}
