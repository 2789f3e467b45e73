//! Presence over Matrix federation.
//!
//! - [`keys`]: this server's ed25519 key file and the signed `GET /_matrix/key/v2/server`.
//! - [`remote_keys`]: other servers' keys, fetched (directly or via notaries), verified,
//!   cached.
//! - [`auth`]: `X-Matrix` request signing and verification, with the domain whitelist.
//! - [`resolve`]: server-name discovery (`.well-known`, SRV, 8448) and the IP range filter.
//! - [`tls`]: rustls (ring provider) on both sides, and a TLS listener for axum.
//! - [`client`]: the outbound client, the HTTPS [`Transport`] and the network key source.
//! - [`wire`]: the EDU and transaction shapes we send.
//! - [`outbox`]: per-destination presence queues with batching, backoff and expiry.
//! - [`inbound`]: `PUT /send/{txnId}` parsing, limits and idempotence.
//! - [`budget`]: the bound on inbound body bytes buffered at once.
//! - [`api`]: the axum router for the federation endpoints.
//! - [`Federation`]: everything above, built from one [`FederationConfig`].
//!
//! The engine decides who gets what; this crate only moves presence between servers.
//! Spec: <https://spec.matrix.org/v1.15/server-server-api/>.
//!
//! # Wiring it into a server
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use presence_engine::RemotePresence;
//! use presence_federation::{Federation, FederationConfig, InboundPresence, tls};
//! use presence_router::ServerName;
//!
//! /// Hands inbound presence to the task that owns the engine.
//! struct ToEngine(tokio::sync::mpsc::Sender<(ServerName, Vec<RemotePresence>)>);
//!
//! #[async_trait::async_trait]
//! impl InboundPresence for ToEngine {
//!     async fn apply(&self, origin: ServerName, entries: Vec<RemotePresence>) {
//!         // The engine task turns this into `Input::Remote { origin, entries }`.
//!         let _ = self.0.send((origin, entries)).await;
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let name = ServerName::parse("example.org")?;
//! let (keys, _) =
//!     presence_federation::load_or_generate_async("/data/signing.key".into()).await?;
//! let (to_engine, _from_federation) = tokio::sync::mpsc::channel(1024);
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let federation = Federation::builder(FederationConfig::new(name), keys, Arc::new(ToEngine(to_engine)))
//!     .build(shutdown.clone())?;
//!
//! // The federation listener: merge (not nest) the router, serve it over TLS.
//! let app = axum::Router::new().merge(federation.router());
//! let tls_config = tls::server_tls_config("tls.crt".as_ref(), "tls.key".as_ref())?;
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8448").await?;
//! tokio::spawn(presence_listen::serve(
//!     listener,
//!     Some(Arc::new(tls_config)),
//!     app,
//!     presence_listen::Limits::default(),
//!     presence_listen::ConnectionCap::new(10_000),
//!     shutdown.clone(),
//! ));
//!
//! // After each engine step, send what it decided:
//! // federation.outbox().enqueue(effects.federation);
//! # Ok(()) }
//! ```

pub mod api;
pub mod auth;
pub mod budget;
pub mod client;
mod clock;
mod config;
mod error;
mod federation;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod https;
pub mod inbound;
pub mod keys;
pub mod outbox;
pub mod ratelimit;
pub mod remote_keys;
pub mod resolve;
pub mod tls;
pub mod transport;
pub mod wire;

pub use api::{FederationApi, InboundPresence, SignedRequest};
pub use auth::{CheckedHeader, RequestVerifier, sign_request};
pub use budget::{BodyBudget, BodyPermit};
pub use client::{FederationClient, HttpKeySource, RemoteResponse};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{ClientConfig, FederationConfig, InboundConfig, OutboxConfig, TrustedKeyServer};
pub use error::{Error, SendError};
pub use federation::{Federation, FederationBuilder};
pub use https::Endpoint;
pub use inbound::{Inbound, InboundStats, ParsedTransaction, Received, TransactionResponse};
pub use keys::{
    KeyFileOrigin, OldVerifyKey, ServerKeys, SigningKey, load_or_generate, load_or_generate_async,
};
pub use outbox::{Outbox, OutboxStats};
pub use ratelimit::{FederationRateLimit, FederationRateLimiter, Turn};
pub use remote_keys::{KeyCache, KeyCacheConfig, KeySource, VerifiedKeys};
pub use resolve::{Dns, IpRangeFilter, Resolver, SrvTarget, SystemDns};
pub use transport::{MockTransport, Transport};
pub use wire::{Edu, PresencePush, Transaction};
