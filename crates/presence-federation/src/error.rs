//! The crate's error type and its one mapping to Matrix error responses.
//!
//! Every failure in this crate is an [`Error`]. The federation endpoints return it directly;
//! [`Error::kind`] names its Matrix error kind, and `presence-matrix` gives that kind its
//! `errcode` and HTTP status, the same mapping the client API uses
//! (<https://spec.matrix.org/v1.15/client-server-api/#standard-error-response>). Internal
//! causes are logged, never echoed.

use std::{io, path::PathBuf};

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use presence_matrix::{ErrorKind, MatrixError};
use presence_router::ServerName;

/// Everything that can go wrong in the federation layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The signing key file exists but cannot be used.
    #[error("signing key file {path}: {reason}")]
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading or writing a local file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A configuration value is unusable (bad certificate, bad key, bad range).
    #[error("invalid federation configuration: {0}")]
    Config(String),
    /// The request is not (correctly) signed, or is not for this server.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The request is authenticated but its origin is not allowed to talk to us.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The request body is not JSON.
    #[error("request body is not JSON")]
    NotJson,
    /// The request body is JSON of the wrong shape, or breaks a limit.
    #[error("bad request: {0}")]
    BadJson(String),
    /// The request body is larger than the endpoint accepts.
    #[error("request body larger than {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// Too many request bodies are being read at once; the sender should retry later.
    #[error("too many requests are being received; retry later")]
    Busy {
        /// When to retry, in milliseconds.
        retry_after_ms: u64,
    },
    /// A remote server's signing keys could not be obtained or did not verify.
    #[error("signing keys of {server}: {reason}")]
    RemoteKeys {
        /// The server whose keys were wanted.
        server: ServerName,
        /// Why they are not available.
        reason: String,
    },
    /// A server name could not be resolved to an address we may connect to.
    #[error("cannot resolve {server}: {reason}")]
    Resolve {
        /// The server name.
        server: String,
        /// Why.
        reason: String,
    },
    /// An outbound HTTP request failed.
    #[error("request to {server} failed: {reason}")]
    Request {
        /// The server name (or host) the request went to.
        server: String,
        /// Why.
        reason: String,
    },
    /// A signature could not be produced (a bug or a corrupt key, never the peer's fault).
    #[error("signing failed: {0}")]
    Signing(String),
    /// Shared state is unusable after a panic elsewhere (a bug).
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl Error {
    pub(crate) fn unauthorized(reason: impl Into<String>) -> Self {
        Self::Unauthorized(reason.into())
    }

    pub(crate) fn bad_json(reason: impl Into<String>) -> Self {
        Self::BadJson(reason.into())
    }

    /// The Matrix error kind this error is reported with.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Unauthorized(_) | Self::RemoteKeys { .. } => ErrorKind::Unauthorized,
            Self::Forbidden(_) => ErrorKind::Forbidden,
            Self::NotJson => ErrorKind::NotJson,
            Self::BadJson(_) => ErrorKind::BadJson,
            Self::TooLarge { .. } => ErrorKind::TooLarge,
            Self::Busy { .. } => ErrorKind::LimitExceeded,
            Self::KeyFile { .. }
            | Self::Io { .. }
            | Self::Config(_)
            | Self::Resolve { .. }
            | Self::Request { .. }
            | Self::Signing(_)
            | Self::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The HTTP status and Matrix `errcode` this error is reported with (from [`Self::kind`]).
    pub fn status_and_errcode(&self) -> (StatusCode, &'static str) {
        let kind = self.kind();
        (kind.status(), kind.errcode())
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let kind = self.kind();
        if kind.is_server_error() {
            tracing::error!(error = %self, "Federation request failed internally.");
        } else {
            tracing::debug!(error = %self, status = %kind.status(), "Federation request rejected.");
        }
        let message = match &self {
            // A key-fetch failure is the remote's problem; say so without the details of our
            // own network path.
            Self::RemoteKeys { server, .. } => {
                format!("Failed to find a key to verify the request from {server}")
            }
            other => other.to_string(),
        };
        let error = MatrixError::new(kind, message);
        match self {
            Self::Busy { retry_after_ms } => error.with_retry_after_ms(retry_after_ms),
            _ => error,
        }
        .into_response()
    }
}

/// Why an outbound transaction was not delivered. Every variant is retried with backoff by
/// the outbox; the distinction is for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The destination could not be resolved, connected to, or talked TLS with.
    #[error("destination unreachable: {0}")]
    Unreachable(String),
    /// The destination answered with a non-success status.
    #[error("destination answered {status}: {body}")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The start of the response body, for the logs.
        body: String,
    },
    /// The request did not complete in time.
    #[error("request timed out")]
    Timeout,
}
