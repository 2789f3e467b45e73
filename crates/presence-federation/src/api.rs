//! The federation HTTP endpoints as an axum `Router`, for the server to merge into its
//! federation listener.
//!
//! - `GET /_matrix/key/v2/server`: our signed keys (no authentication).
//! - `GET /_matrix/federation/v1/version`: server name and version (no authentication).
//! - `PUT /_matrix/federation/v1/send/{txnId}`: `X-Matrix`-authenticated transactions; the
//!   [`SignedRequest`] extractor verifies the signature before the handler runs, and the
//!   parsed presence goes to the server through the [`InboundPresence`] sink.
//!
//! The body is read last: the header's shape, destination and origin are checked and the
//! origin's key is obtained first, and then the body's declared length is reserved from
//! the shared [`crate::BodyBudget`], so forged requests cannot make us buffer their bodies
//! and honest ones together buffer a bounded number of bytes.
//!
//! Every failure is an [`Error`], turned into a Matrix error response in one place
//! (`error.rs`). Spec: <https://spec.matrix.org/v1.15/server-server-api/>.

use std::sync::Arc;

use async_trait::async_trait;
use axum::{
    Json, Router,
    extract::{FromRequest, OriginalUri, Path, Request, State, rejection::PathRejection},
    http::header,
    response::{IntoResponse, Response},
    routing::{get, put},
};
use bytes::Bytes;
use presence_engine::RemotePresence;
use presence_router::ServerName;
use serde_json::json;

use crate::{
    BodyPermit, Error, Inbound, Outbox, RequestVerifier, ServerKeys,
    auth::check_json,
    inbound::{Received, TransactionResponse},
};

/// Largest signed request body accepted (50 PDUs of at most 64 KiB plus EDUs fit easily).
pub const MAX_REQUEST_BYTES: usize = 8 * 1024 * 1024;

/// Path of the key endpoint.
pub const KEY_SERVER_PATH: &str = "/_matrix/key/v2/server";
/// Path of the version endpoint.
pub const VERSION_PATH: &str = "/_matrix/federation/v1/version";
/// Path pattern of the transaction endpoint.
pub const SEND_TRANSACTION_PATH: &str = "/_matrix/federation/v1/send/{txnId}";

/// Where inbound presence goes: the server feeds it to the engine
/// (`Input::Remote { origin, entries }`).
#[async_trait]
pub trait InboundPresence: Send + Sync + 'static {
    /// Applies type-checked presence entries from the authenticated `origin`.
    async fn apply(&self, origin: ServerName, entries: Vec<RemotePresence>);
}

struct ApiInner {
    keys: Arc<ServerKeys>,
    verifier: RequestVerifier,
    inbound: Arc<Inbound>,
    sink: Arc<dyn InboundPresence>,
    outbox: Option<Outbox>,
}

/// The state behind the federation endpoints. Cheap to clone.
#[derive(Clone)]
pub struct FederationApi {
    inner: Arc<ApiInner>,
}

impl std::fmt::Debug for FederationApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FederationApi")
            .field("server_name", self.inner.verifier.server_name())
            .finish_non_exhaustive()
    }
}

impl FederationApi {
    /// The endpoints' state. With `outbox`, a valid request from a server also resets that
    /// server's outbound backoff (it is evidently up).
    pub fn new(
        keys: Arc<ServerKeys>,
        verifier: RequestVerifier,
        inbound: Arc<Inbound>,
        sink: Arc<dyn InboundPresence>,
        outbox: Option<Outbox>,
    ) -> Self {
        Self {
            inner: Arc::new(ApiInner {
                keys,
                verifier,
                inbound,
                sink,
                outbox,
            }),
        }
    }

    /// The router with the three endpoints, ready to merge (`Router::merge`, not `nest`:
    /// the signed URI is the full path).
    pub fn router(&self) -> Router {
        self.keys_router().merge(self.federation_router())
    }

    /// The `keys` resource alone: `GET /_matrix/key/v2/server`.
    pub fn keys_router(&self) -> Router {
        Router::new()
            .route(KEY_SERVER_PATH, get(get_server_keys))
            .with_state(self.clone())
    }

    /// The `federation` resource alone: version and transactions.
    pub fn federation_router(&self) -> Router {
        Router::new()
            .route(VERSION_PATH, get(get_version))
            .route(SEND_TRANSACTION_PATH, put(send_transaction))
            .with_state(self.clone())
    }
}

/// A request whose `X-Matrix` signature verified: the origin and the raw body.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SignedRequest {
    /// The authenticated origin server.
    pub origin: ServerName,
    /// The body, exactly as signed.
    pub body: Bytes,
    /// The body's share of the budget, held until the request is handled.
    _permit: Arc<BodyPermit>,
}

impl FromRequest<FederationApi> for SignedRequest {
    type Rejection = Error;

    async fn from_request(req: Request, state: &FederationApi) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        // Under `nest` axum strips the prefix from the URI; the signature covers the full one.
        if let Some(OriginalUri(uri)) = parts.extensions.get::<OriginalUri>() {
            parts.uri = uri.clone();
        }
        let verifier = &state.inner.verifier;
        let checked = verifier.check_header(&parts.headers, &parts.uri)?;
        let limit = match declared_length(&parts.headers) {
            Some(n) if n > MAX_REQUEST_BYTES => {
                return Err(Error::TooLarge {
                    limit: MAX_REQUEST_BYTES,
                });
            }
            Some(n) => n,
            None => MAX_REQUEST_BYTES,
        };
        let key = verifier.origin_key(&checked).await?;
        let permit = state.inner.inbound.body_budget().reserve(limit).await?;
        let body = axum::body::to_bytes(body, limit)
            .await
            .map_err(|_| Error::TooLarge {
                limit: MAX_REQUEST_BYTES,
            })?;
        check_json(&body)?;
        let request = http::Request::from_parts(parts, body);
        let origin = verifier.check_signature(&checked, key, &request)?;
        Ok(Self {
            origin,
            body: request.into_body(),
            _permit: Arc::new(permit),
        })
    }
}

/// The `Content-Length` a request declares, if it declares a usable one (hyper refuses a
/// malformed one, and stops a body at its declared length).
fn declared_length(headers: &http::HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// `GET /_matrix/key/v2/server`
async fn get_server_keys(State(api): State<FederationApi>) -> Result<Response, Error> {
    let document = api.inner.keys.document()?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        document.get().to_owned(),
    )
        .into_response())
}

/// `GET /_matrix/federation/v1/version`
async fn get_version() -> Json<serde_json::Value> {
    Json(json!({
        "server": { "name": "Presenced", "version": env!("CARGO_PKG_VERSION") }
    }))
}

/// `PUT /_matrix/federation/v1/send/{txnId}`
async fn send_transaction(
    State(api): State<FederationApi>,
    txn_id: Result<Path<String>, PathRejection>,
    signed: SignedRequest,
) -> Result<Json<TransactionResponse>, Error> {
    let Path(txn_id) = txn_id.map_err(|e| Error::bad_json(format!("bad transaction ID: {e}")))?;
    let inner = &api.inner;
    if let Some(outbox) = &inner.outbox {
        outbox.mark_up(&signed.origin);
    }
    let _turn = inner.inbound.enter(&signed.origin).await?;
    match inner
        .inbound
        .receive(&signed.origin, &txn_id, &signed.body)?
    {
        Received::New(parsed) => {
            if !parsed.presence.is_empty() {
                // The transaction is already remembered as done, so the presence must be
                // applied even if the sender hangs up now: run it as its own task.
                let sink = inner.sink.clone();
                let origin = signed.origin.clone();
                let entries = parsed.presence;
                let applied = tokio::spawn(async move { sink.apply(origin, entries).await });
                if let Err(e) = applied.await {
                    tracing::error!(origin = %signed.origin, error = %e, "Applying inbound presence failed.");
                }
            }
            Ok(Json(parsed.response))
        }
        Received::Repeat(response) => Ok(Json(response)),
    }
}
