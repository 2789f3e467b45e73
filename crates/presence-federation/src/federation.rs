//! Assembly: builds every federation component from a [`FederationConfig`] and the signing
//! keys, so the server wires one object. Each piece can be replaced (DNS, clock, transport,
//! key source) for tests; by default they are the real network ones.

use std::{fmt, sync::Arc};

use tokio_util::sync::CancellationToken;

use crate::{
    Clock, Error, FederationApi, FederationClient, FederationConfig, HttpKeySource, Inbound,
    InboundPresence, KeyCache, KeySource, Outbox, RequestVerifier, ServerKeys, SigningKey,
    SystemClock, Transport,
    resolve::{Dns, SystemDns},
};

/// Builder of [`Federation`]; see [`Federation::builder`].
pub struct FederationBuilder {
    config: FederationConfig,
    keys: Vec<SigningKey>,
    sink: Arc<dyn InboundPresence>,
    dns: Option<Arc<dyn Dns>>,
    clock: Option<Arc<dyn Clock>>,
    transport: Option<Arc<dyn Transport>>,
    key_source: Option<Arc<dyn KeySource>>,
}

impl fmt::Debug for FederationBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FederationBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl FederationBuilder {
    /// Resolves names with `dns` instead of the system resolver.
    pub fn dns(mut self, dns: Arc<dyn Dns>) -> Self {
        self.dns = Some(dns);
        self
    }

    /// Reads wall time from `clock` instead of the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Sends outbound transactions through `transport` instead of HTTPS.
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Gets remote keys from `source` instead of the network.
    pub fn key_source(mut self, source: Arc<dyn KeySource>) -> Self {
        self.key_source = Some(source);
        self
    }

    /// Builds everything; the outbox's tasks stop when `shutdown` is cancelled.
    pub fn build(self, shutdown: CancellationToken) -> Result<Federation, Error> {
        let config = self.config;
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let dns = self
            .dns
            .unwrap_or_else(|| Arc::new(SystemDns::new(config.client.use_srv)));
        let keys: Vec<Arc<SigningKey>> = self.keys.into_iter().map(Arc::new).collect();
        let server_keys = Arc::new(ServerKeys::new(
            &config.server_name,
            keys.clone(),
            &config.old_verify_keys,
            config.key_validity,
            clock.clone(),
        )?);
        let client = Arc::new(FederationClient::new(
            config.server_name.clone(),
            server_keys.signing_key().clone(),
            config.client.clone(),
            dns,
        )?);
        let key_source = self.key_source.unwrap_or_else(|| {
            Arc::new(HttpKeySource::new(
                client.clone(),
                config.trusted_key_servers.clone(),
            ))
        });
        let key_cache = Arc::new(KeyCache::new(
            key_source,
            clock.clone(),
            config.key_cache.clone(),
        ));
        let verifier = RequestVerifier::new(
            config.server_name.clone(),
            config.domain_whitelist.clone(),
            key_cache.clone(),
        )?;
        let transport = self.transport.unwrap_or_else(|| client.clone());
        let outbox = Outbox::new(
            config.server_name.clone(),
            config.outbox.clone(),
            transport,
            clock,
            config.domain_whitelist.clone(),
            shutdown,
        );
        let inbound = Arc::new(Inbound::new(config.inbound.clone()));
        let api = FederationApi::new(
            server_keys.clone(),
            verifier.clone(),
            inbound.clone(),
            self.sink,
            Some(outbox.clone()),
        );
        Ok(Federation {
            server_keys,
            client,
            key_cache,
            verifier,
            inbound,
            outbox,
            api,
        })
    }
}

/// Every federation component of one server.
#[derive(Clone)]
pub struct Federation {
    server_keys: Arc<ServerKeys>,
    client: Arc<FederationClient>,
    key_cache: Arc<KeyCache>,
    verifier: RequestVerifier,
    inbound: Arc<Inbound>,
    outbox: Outbox,
    api: FederationApi,
}

impl fmt::Debug for Federation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Federation")
            .field("server_keys", &self.server_keys)
            .field("outbox", &self.outbox)
            .finish_non_exhaustive()
    }
}

impl Federation {
    /// Starts a builder: `keys` from [`crate::load_or_generate`] (the first signs), inbound
    /// presence handed to `sink`.
    pub fn builder(
        config: FederationConfig,
        keys: Vec<SigningKey>,
        sink: Arc<dyn InboundPresence>,
    ) -> FederationBuilder {
        FederationBuilder {
            config,
            keys,
            sink,
            dns: None,
            clock: None,
            transport: None,
            key_source: None,
        }
    }

    /// The federation endpoints, to merge into the federation listener's router.
    pub fn router(&self) -> axum::Router {
        self.api.router()
    }

    /// The `keys` resource's endpoints alone.
    pub fn keys_router(&self) -> axum::Router {
        self.api.keys_router()
    }

    /// The `federation` resource's endpoints alone (without the key endpoint).
    pub fn federation_router(&self) -> axum::Router {
        self.api.federation_router()
    }

    /// The outbound presence queues: feed them the engine's `Effects::federation`.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The outbound client (signed requests to other servers).
    pub fn client(&self) -> &Arc<FederationClient> {
        &self.client
    }

    /// Our published keys.
    pub fn server_keys(&self) -> &Arc<ServerKeys> {
        &self.server_keys
    }

    /// The remote key cache.
    pub fn key_cache(&self) -> &Arc<KeyCache> {
        &self.key_cache
    }

    /// The inbound request verifier.
    pub fn verifier(&self) -> &RequestVerifier {
        &self.verifier
    }

    /// The inbound transaction handler (for its counters).
    pub fn inbound(&self) -> &Arc<Inbound> {
        &self.inbound
    }
}
