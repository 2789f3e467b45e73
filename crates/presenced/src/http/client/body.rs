//! [`RawBody`]: a request body read as bytes with Matrix errors, for endpoints that must
//! check something before parsing it, or that accept an empty body (`/join`, `/leave`,
//! `/logout`: many clients send none).

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
};
use serde::de::DeserializeOwned;

use crate::{error::ApiError, http::parse_json_body};

/// The request body, unparsed. Over `max_request_body_size` it is 413 `M_TOO_LARGE`.
#[derive(Debug, Clone, Default)]
pub(crate) struct RawBody(pub(crate) Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let _ = state;
        crate::http::json::read_body(request).await.map(Self)
    }
}

impl RawBody {
    /// Parses the body as JSON (Matrix errors).
    pub(super) fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        parse_json_body(&self.0)
    }

    /// Parses the body, an empty (or blank) one counting as `{}`.
    pub(super) fn json_or_empty<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        if self.0.iter().all(u8::is_ascii_whitespace) {
            parse_json_body(b"{}")
        } else {
            parse_json_body(&self.0)
        }
    }
}
