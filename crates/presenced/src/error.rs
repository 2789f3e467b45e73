//! Errors: [`ApiError`], what a request to the server can fail with, described as a Matrix
//! [`ErrorKind`] and the text the client sees; and [`StartError`], why the server could not
//! start.
//!
//! `ApiError` belongs to the application core, not to HTTP: services return it, and the HTTP
//! layer turns it into a response in one place (`http::response`). Each kind's `errcode` and
//! status come from `presence-matrix`, which the federation API shares. Internal failures
//! keep their cause for the log and are answered with a generic 500 `M_UNKNOWN`, so nothing
//! internal leaks to clients.
//! Spec: <https://spec.matrix.org/v1.15/client-server-api/#standard-error-response>.

use std::{borrow::Cow, error::Error as StdError, fmt, io, net::SocketAddr, path::PathBuf};

pub use presence_matrix::ErrorKind;

use crate::config::ConfigError;

/// The error text of unknown endpoints and methods, as the reference homeserver words it.
const UNRECOGNIZED_TEXT: &str = "Unrecognized request";

/// What rate-limited a request: its label on the `rate_limited` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limiter {
    /// `rc_presence` on `PUT /presence`.
    Presence,
    /// The store's write queue is full (back-pressure).
    Store,
    /// A bounded pool of pending registrations or sessions is full.
    PendingAuth,
    /// `rc_login`.
    Login,
    /// Another `rc_*` limit.
    Other(&'static str),
}

impl Limiter {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Presence => "presence",
            Self::Store => "store",
            Self::PendingAuth => "pending_auth",
            Self::Login => "login",
            Self::Other(name) => name,
        }
    }
}

/// A failed request: a Matrix error kind, the text the client sees, and for internal errors
/// the cause (logged, never sent).
#[derive(Debug)]
pub struct ApiError {
    kind: ErrorKind,
    message: Cow<'static, str>,
    retry: Option<(u64, Limiter)>,
    cause: Option<InternalError>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            Some(cause) => write!(f, "{}: {cause}", self.kind.errcode()),
            None => write!(f, "{}: {}", self.kind.errcode(), self.message),
        }
    }
}

impl StdError for ApiError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.cause.as_ref().map(|c| c as &(dyn StdError + 'static))
    }
}

/// How long a client is asked to wait when the store's write queue is full.
const OVERLOADED_RETRY_MS: u64 = 200;

impl From<presence_store::StoreError> for ApiError {
    fn from(e: presence_store::StoreError) -> Self {
        match e {
            // Back-pressure, not a failure: the client retries shortly.
            presence_store::StoreError::Overloaded => {
                Self::limit_exceeded(OVERLOADED_RETRY_MS, Limiter::Store)
            }
            other => Self::internal(other),
        }
    }
}

impl From<crate::presence::PresenceError> for ApiError {
    fn from(e: crate::presence::PresenceError) -> Self {
        match e.store_error() {
            // Back-pressure on a batch is back-pressure for each change in it.
            Some(presence_store::StoreError::Overloaded) => {
                Self::limit_exceeded(OVERLOADED_RETRY_MS, Limiter::Store)
            }
            _ => Self::internal(e),
        }
    }
}

impl ApiError {
    /// An error of `kind` showing `message`.
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            message: message.into(),
            retry: None,
            cause: None,
        }
    }

    /// An internal error caused by `cause` (logged when the response is built).
    pub fn internal<E: StdError + Send + Sync + 'static>(cause: E) -> Self {
        Self {
            cause: Some(InternalError(Box::new(cause))),
            ..Self::new(ErrorKind::Internal, presence_matrix::INTERNAL_ERROR_TEXT)
        }
    }

    /// A 403 `M_FORBIDDEN`.
    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Forbidden, message)
    }

    /// A 400 `M_BAD_JSON`.
    pub fn bad_json(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::BadJson, message)
    }

    /// A 400 `M_NOT_JSON`.
    pub fn not_json(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::NotJson, message)
    }

    /// A 404 `M_NOT_FOUND`.
    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// A 400 `M_INVALID_PARAM`.
    pub fn invalid_param(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::InvalidParam, message)
    }

    /// A 400 `M_UNKNOWN`.
    pub fn unknown(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Unknown, message)
    }

    /// A 400 `M_USER_IN_USE`.
    pub fn user_in_use(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::UserInUse, message)
    }

    /// A 400 `M_INVALID_USERNAME`.
    pub fn invalid_username(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::InvalidUsername, message)
    }

    /// A 400 `M_ROOM_IN_USE`.
    pub fn room_in_use(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::RoomInUse, message)
    }

    /// A 400 `M_UNSUPPORTED_ROOM_VERSION`.
    pub fn unsupported_room_version(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::UnsupportedRoomVersion, message)
    }

    /// A 400 `M_EXCLUSIVE`.
    pub fn exclusive(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Exclusive, message)
    }

    /// A 401 `M_UNAUTHORIZED`.
    pub fn unauthorized(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Unauthorized, message)
    }

    /// A 413 `M_TOO_LARGE`.
    pub fn too_large(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::TooLarge, message)
    }

    /// A 401 `M_UNKNOWN_TOKEN`.
    pub fn unknown_token() -> Self {
        Self::new(ErrorKind::UnknownToken, "Unknown access token")
    }

    /// A 401 `M_MISSING_TOKEN`.
    pub fn missing_token() -> Self {
        Self::new(ErrorKind::MissingToken, "Missing access token")
    }

    /// A 404 `M_UNRECOGNIZED`: no such endpoint.
    pub fn unrecognized() -> Self {
        Self::new(ErrorKind::Unrecognized, UNRECOGNIZED_TEXT)
    }

    /// A 405 `M_BAD_JSON`: account data of a type the server manages itself.
    pub fn server_managed(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::ServerManaged, message)
    }

    /// A 405 `M_UNRECOGNIZED`: the endpoint does not take this method.
    pub fn method_not_allowed() -> Self {
        Self::new(ErrorKind::MethodNotAllowed, UNRECOGNIZED_TEXT)
    }

    /// A 429 `M_LIMIT_EXCEEDED`, to retry after `retry_after_ms`, counted against `limiter`.
    pub fn limit_exceeded(retry_after_ms: u64, limiter: Limiter) -> Self {
        Self {
            retry: Some((retry_after_ms, limiter)),
            ..Self::new(ErrorKind::LimitExceeded, "Too many requests")
        }
    }

    /// The Matrix error kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The text the client sees.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// When to retry and what limited the request, for 429s.
    pub fn retry(&self) -> Option<(u64, Limiter)> {
        self.retry
    }

    /// The cause of an internal error, for the log.
    pub fn cause(&self) -> Option<&InternalError> {
        self.cause.as_ref()
    }
}

/// The cause of a 500: kept for the log, never shown to the client.
pub struct InternalError(Box<dyn StdError + Send + Sync + 'static>);

impl InternalError {
    /// The cause and its sources, joined with `: `.
    pub fn chain(&self) -> String {
        chain(&*self.0)
    }
}

/// `error` and its sources, joined with `: `; a source whose text the message already ends
/// with (errors that print their source themselves) is not repeated.
pub fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
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

/// Why the server could not start. Each variant keeps its cause.
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
    /// The database directory could not be created.
    #[error("cannot create the database directory {}: {source}", path.display())]
    StoreDirectory {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The database could not be opened.
    #[error("cannot open the database {}: {source}", path.display())]
    StoreOpen {
        /// The database file.
        path: PathBuf,
        /// Why.
        #[source]
        source: presence_store::StoreError,
    },
    /// The database file is another program's (Synapse's, above all); it was not changed.
    #[error(
        "{}: {}; it was left unchanged. Presenced keeps its own data and needs a database file \
         of its own: point database.args.database at a new file{}",
        path.display(),
        source,
        if *synapse {
            ". To run beside Synapse instead, make Presenced the deployment's presence writer \
             on Synapse's PostgreSQL database (the writer mode, docs/synapse-writer.md)"
        } else {
            ""
        }
    )]
    ForeignDatabase {
        /// The database file.
        path: PathBuf,
        /// Whether it is Synapse's.
        synapse: bool,
        /// What the store found.
        #[source]
        source: presence_store::StoreError,
    },
    /// Persisted presence could not be loaded.
    #[error("cannot restore presence from the database: {0}")]
    Restore(#[source] crate::presence::PresenceError),
    /// A presence router could not be built from its configuration.
    #[error(transparent)]
    Router(#[from] presence_router::ConfigError),
    /// Loading the routers stopped before finishing (a panic in a router's constructor).
    #[error("loading the presence routers failed: {0}")]
    RouterTask(#[source] tokio::task::JoinError),
    /// The Python interpreter for Python routers could not be started.
    #[cfg(feature = "python")]
    #[error("python: cannot start Python: {0}")]
    Python(#[source] presence_python::PythonError),
    /// Federation could not be set up (signing key, TLS files, settings).
    #[error("{what}: {source}")]
    Federation {
        /// What was being set up, with the configuration key and file.
        what: String,
        /// Why.
        #[source]
        source: presence_federation::Error,
    },
    /// The Synapse deployment could not be reached or used (writer mode).
    #[error("{what}: {source}")]
    Synapse {
        /// What was being set up, with the configuration key.
        what: String,
        /// Why.
        #[source]
        source: presence_synapse::Error,
    },
    /// Synapse's database is at a schema version Presenced was not tested with (writer mode).
    #[error(
        "Synapse's database is at schema version {found}; Presenced is tested with schema \
         versions {}..={} (Synapse {tested_synapse}). Upgrade Presenced, or, if you have checked \
         that the tables Presenced uses are unchanged, start it with --allow-untested-synapse",
        tested.start(),
        tested.end()
    )]
    UntestedSynapse {
        /// `schema_version.version`.
        found: u32,
        /// The versions Presenced was tested with.
        tested: std::ops::RangeInclusive<u32>,
        /// The Synapse release those versions belong to.
        tested_synapse: &'static str,
    },
    /// Another process (Synapse's own worker) already writes presence under this name.
    #[error(
        "another process already writes presence as {instance:?}: it answered REPLICATE on \
         Redis with a POSITION of the presence stream. Stop Synapse's own presence writer \
         (the worker named {instance:?}) before starting Presenced in its place"
    )]
    WriterRunning {
        /// The instance name, `worker_name`.
        instance: String,
    },
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
    use super::*;

    #[test]
    fn each_constructor_has_its_kind() {
        let cases: Vec<(ApiError, ErrorKind)> = vec![
            (ApiError::forbidden("no"), ErrorKind::Forbidden),
            (ApiError::unknown_token(), ErrorKind::UnknownToken),
            (ApiError::missing_token(), ErrorKind::MissingToken),
            (ApiError::bad_json("shape"), ErrorKind::BadJson),
            (ApiError::not_json("x"), ErrorKind::NotJson),
            (ApiError::not_found("x"), ErrorKind::NotFound),
            (
                ApiError::limit_exceeded(1, Limiter::Presence),
                ErrorKind::LimitExceeded,
            ),
            (ApiError::unknown("x"), ErrorKind::Unknown),
            (ApiError::unrecognized(), ErrorKind::Unrecognized),
            (ApiError::method_not_allowed(), ErrorKind::MethodNotAllowed),
            (ApiError::server_managed("x"), ErrorKind::ServerManaged),
            (ApiError::too_large("x"), ErrorKind::TooLarge),
            (ApiError::invalid_param("x"), ErrorKind::InvalidParam),
            (ApiError::user_in_use("x"), ErrorKind::UserInUse),
            (ApiError::invalid_username("x"), ErrorKind::InvalidUsername),
            (ApiError::unauthorized("x"), ErrorKind::Unauthorized),
            (ApiError::exclusive("x"), ErrorKind::Exclusive),
            (ApiError::room_in_use("x"), ErrorKind::RoomInUse),
            (
                ApiError::unsupported_room_version("x"),
                ErrorKind::UnsupportedRoomVersion,
            ),
            (
                ApiError::internal(io::Error::other("disk on fire")),
                ErrorKind::Internal,
            ),
        ];
        for (error, kind) in cases {
            assert_eq!(error.kind(), kind, "{error:?}");
        }
    }

    #[test]
    fn store_back_pressure_is_a_rate_limit() {
        let e = ApiError::from(presence_store::StoreError::Overloaded);
        assert_eq!(e.kind(), ErrorKind::LimitExceeded);
        assert_eq!(e.retry(), Some((OVERLOADED_RETRY_MS, Limiter::Store)));
    }

    #[test]
    fn a_chain_does_not_repeat_a_cause_its_message_already_has() {
        let e = ApiError::internal(presence_store::StoreError::Io(io::Error::other(
            "disk full",
        )));
        let chain = e.cause().unwrap().chain();
        assert_eq!(chain, "store I/O error: disk full");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("query failed")]
    struct Outer(#[source] io::Error);

    #[test]
    fn internal_errors_keep_their_cause_out_of_the_message() {
        let error = ApiError::internal(Outer(io::Error::other("/var/lib/secret.db is locked")));
        assert_eq!(
            error.cause().map(InternalError::chain).as_deref(),
            Some("query failed: /var/lib/secret.db is locked")
        );
        assert_eq!(error.message(), presence_matrix::INTERNAL_ERROR_TEXT);
    }
}
