//! Extractors that fail the Matrix way: [`MatrixPath`] for path parameters, and
//! [`query_uint`] for the integer query parameters of the admin API.
//!
//! axum's own `Path` and `Query` reject with plain-text bodies; every error a client sees must
//! be a Matrix error with an `errcode`.

use axum::extract::{FromRequestParts, Path, rejection::PathRejection};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::{error::ApiError, query::form_urlencoded_raw};

/// Path parameters of type `T`, percent-decoded. A parameter that does not decode (`%ff`,
/// invalid UTF-8) is 400 `M_INVALID_PARAM`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MatrixPath<T>(pub T);

impl<S, T> FromRequestParts<S> for MatrixPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Self(value)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => Err(ApiError::invalid_param(
                format!("Invalid path parameter: {}", e.body_text()),
            )),
            // A route whose handler expects parameters it does not have: a bug of ours.
            Err(other) => Err(ApiError::internal(other)),
        }
    }
}

/// The non-negative integer query parameter `name`, if present, as the reference's
/// `parse_integer` reads it: anything else (not a number, negative, too large) is 400
/// `M_INVALID_PARAM`.
pub(crate) fn query_uint(query: Option<&str>, name: &str) -> Result<Option<u64>, ApiError> {
    let Some(raw) = query.and_then(|q| form_urlencoded_raw(q, name)) else {
        return Ok(None);
    };
    let value = crate::query::percent_decode(raw);
    // `u64::from_str` takes a leading `+`; the reference's `int()` would too, but not a
    // space or a sign on its own, which `parse` rejects as well.
    value.parse::<u64>().map(Some).map_err(|_| {
        ApiError::invalid_param(format!(
            "Query parameter \"{name}\" must be a non-negative integer"
        ))
    })
}

#[cfg(test)]
mod tests {
    use presence_matrix::ErrorKind;

    use super::*;

    #[test]
    fn integer_query_parameters() {
        assert_eq!(
            query_uint(Some("from=12&limit=3"), "limit").unwrap(),
            Some(3)
        );
        assert_eq!(query_uint(Some("limit=3"), "from").unwrap(), None);
        assert_eq!(query_uint(None, "from").unwrap(), None);
        for bad in [
            "from=x",
            "from=-1",
            "from=",
            "from=1.5",
            "from=99999999999999999999999",
        ] {
            let e = query_uint(Some(bad), "from").unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidParam, "{bad}");
        }
    }
}
