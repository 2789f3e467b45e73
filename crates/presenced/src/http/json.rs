//! [`MatrixJson`]: the JSON body extractor that fails the Matrix way.
//!
//! A body that is not JSON is 400 `M_NOT_JSON`; JSON of the wrong shape is 400 `M_BAD_JSON`
//! with a short reason naming the field; a body over `max_request_body_size` is 413
//! `M_TOO_LARGE`. The `Content-Type` header is not checked: many clients omit it, and the
//! reference homeserver does not require it either.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The reference's text for a body that is not JSON.
const NOT_JSON_TEXT: &str = "Content not JSON.";
/// The text for JSON that is not an object.
const NOT_OBJECT_TEXT: &str = "Content must be a JSON object.";

/// A JSON request body of type `T`, rejected with Matrix errors.
#[derive(Debug, Clone, Copy, Default)]
pub struct MatrixJson<T>(pub T);

impl<S, T> FromRequest<S> for MatrixJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let _ = state;
        let bytes = read_body(request).await?;
        parse_json_body(&bytes).map(MatrixJson)
    }
}

/// The configured `max_request_body_size`, put in every request's extensions by the
/// common layers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimit(pub(crate) usize);

/// Past the limit, a body is still read (and thrown away) up to this many times the limit,
/// so the client finishes sending and reads the 413 instead of seeing its connection reset.
const DRAIN_FACTOR: usize = 16;

/// Reads a request body. Over the limit it is 413 `M_TOO_LARGE`; the excess is drained
/// (bounded) so the client receives the answer.
pub(crate) async fn read_body(request: Request) -> Result<Bytes, ApiError> {
    use futures::StreamExt;
    let limit = request
        .extensions()
        .get::<BodyLimit>()
        .map_or(usize::MAX, |l| l.0);
    let drain_limit = limit.saturating_mul(DRAIN_FACTOR);
    let mut stream = request.into_body().into_data_stream();
    let mut buf = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| ApiError::unknown("Failed to read the request body"))?;
        total = total.saturating_add(chunk.len());
        if total <= limit {
            buf.extend_from_slice(&chunk);
        } else if total > drain_limit {
            break;
        }
    }
    if total > limit {
        return Err(ApiError::too_large("Request body too large"));
    }
    Ok(Bytes::from(buf))
}

/// Parses a request body: syntax first (`M_NOT_JSON`), then shape (`M_BAD_JSON`), so a body
/// that is both malformed and of the wrong shape is reported as not JSON, as the reference
/// does.
pub fn parse_json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| ApiError::not_json(NOT_JSON_TEXT))?;
    // Every Matrix request body is an object; without this check serde would also accept
    // a struct written as an array.
    if !value.is_object() {
        return Err(ApiError::bad_json(NOT_OBJECT_TEXT));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let reason = e.into_inner();
        if path == "." {
            ApiError::bad_json(format!("Invalid JSON: {reason}"))
        } else {
            ApiError::bad_json(format!("Invalid JSON at {path}: {reason}"))
        }
    })
}
