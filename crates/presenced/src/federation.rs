//! Federation wiring: builds [`Federation`] from the configuration and connects it to the
//! presence service in both directions.
//!
//! - Inbound: an authenticated `m.presence` EDU goes to [`PresenceService::remote_presence`]
//!   (`Input::Remote` through the engine, then routers, persistence and sync wake-ups like
//!   any other change) before the transaction is answered.
//! - Outbound: the service hands each step's `Effects::federation` (and
//!   `send_local_online_presence_to` snapshots for remote users) to the outbox, which only
//!   takes a short lock: a slow or dead server never delays local presence.
//!
//! Federation runs when a listener serves `federation` or `keys`; otherwise remote
//! recipients are simply not sent anything.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use presence_engine::RemotePresence;
use presence_federation::{
    Federation, FederationConfig, InboundPresence, IpRangeFilter, Outbox, TrustedKeyServer,
};
use presence_router::{ServerName, UserPresenceState};
use tokio_util::sync::CancellationToken;

use crate::{
    app::synapse::Persistence,
    config::Config,
    error::StartError,
    presence::{FederationSender, PresenceService},
};

/// How long a stopping server waits for its outbox to hand over queued presence.
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);

/// Inbound presence into the presence service.
struct ToPresence(PresenceService<Persistence>);

#[async_trait]
impl InboundPresence for ToPresence {
    async fn apply(&self, origin: ServerName, entries: Vec<RemotePresence>) {
        crate::metrics::federation_received(entries.len());
        match self.0.remote_presence(origin.clone(), entries).await {
            Ok(dropped) if dropped > 0 => crate::metrics::remote_dropped(dropped),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(%origin, error = %e, "Inbound presence could not be stored.");
            }
        }
    }
}

/// Outbound presence into the outbox.
struct ToOutbox(Outbox);

impl FederationSender for ToOutbox {
    fn enqueue(&self, destination: ServerName, states: Vec<UserPresenceState>) {
        self.0.enqueue(vec![(destination, states)]);
    }
}

/// Builds federation if the configuration asks for it and connects it to `presence`. The
/// outbox stops when `shutdown` is cancelled.
pub(crate) async fn start(
    config: &Config,
    presence: &PresenceService<Persistence>,
    shutdown: CancellationToken,
) -> Result<Option<Federation>, StartError> {
    if !config.federates() {
        return Ok(None);
    }
    let fail = |what: &str, source: presence_federation::Error| StartError::Federation {
        what: what.to_owned(),
        source,
    };
    let Some(key_path) = config.federation.signing_key_path.clone() else {
        // Config validation requires it; kept as an error rather than a panic path.
        return Err(fail(
            "signing_key_path",
            presence_federation::Error::Config("required to federate".to_owned()),
        ));
    };
    let shown = key_path.display().to_string();
    // A new key is generated (and logged) by the federation crate when the file is missing.
    let (keys, _) = presence_federation::load_or_generate_async(key_path)
        .await
        .map_err(|e| fail(&format!("signing_key_path {shown}"), e))?;
    let federation_config = federation_config(config).map_err(|e| fail("federation", e))?;
    let federation = Federation::builder(
        federation_config,
        keys,
        Arc::new(ToPresence(presence.clone())),
    )
    .build(shutdown)
    .map_err(|e| fail("federation", e))?;
    presence.set_federation(Arc::new(ToOutbox(federation.outbox().clone())));
    tracing::info!(
        server_name = %config.server_name,
        key_id = %federation.server_keys().signing_key().key_id(),
        "Federation enabled."
    );
    Ok(Some(federation))
}

/// Maps the server configuration (reference key names) onto the federation crate's.
fn federation_config(config: &Config) -> Result<FederationConfig, presence_federation::Error> {
    let f = &config.federation;
    let t = &f.timers;
    let mut c = FederationConfig::new(config.server_name.clone());
    c.key_validity = f.key_refresh_interval;
    c.trusted_key_servers = f
        .trusted_key_servers
        .iter()
        .filter(|n| {
            let usable = !n.verify_keys.is_empty();
            if !usable {
                tracing::warn!(
                    notary = %n.server_name,
                    "Not using a trusted key server without verify_keys: its answers could not be checked."
                );
            }
            usable
        })
        .map(|n| TrustedKeyServer::new(n.server_name.clone(), n.verify_keys.clone()))
        .collect();
    c.key_cache.refetch_interval = t.key_refetch_interval;
    c.domain_whitelist = f
        .federation_domain_whitelist
        .as_ref()
        .map(|w| w.iter().cloned().collect());
    c.client.verify_certificates = f.federation_verify_certificates;
    c.client.custom_ca_list = f.federation_custom_ca_list.clone();
    c.client.ip_filter = match &f.ip_range_blacklist {
        Some(blacklist) => IpRangeFilter::parse(blacklist, &f.ip_range_whitelist)?,
        None => IpRangeFilter::default().allowing(&f.ip_range_whitelist)?,
    };
    c.client.connect_timeout = t.connect_timeout;
    c.client.request_timeout = t.client_timeout;
    c.outbox.backoff_base = t.destination_min_retry_interval;
    c.outbox.backoff_multiplier = t.destination_retry_multiplier;
    c.outbox.backoff_max = t.destination_max_retry_interval;
    c.outbox.send_timeout = t.transaction_timeout;
    c.outbox.pending_ttl = t.pending_presence_ttl;
    c.inbound.max_buffered_body_bytes = t.inbound_body_buffer;
    c.inbound.rate_limit = f.rc_federation.clone();
    if !f.federation_verify_certificates {
        tracing::warn!(
            "federation_verify_certificates is false: remote servers' certificates are not checked."
        );
    }
    Ok(c)
}

/// Hands queued presence over (up to [`SHUTDOWN_FLUSH`]), then stops the outbox.
pub(crate) async fn shutdown(federation: &Federation) {
    let outbox = federation.outbox();
    if !outbox.flush(SHUTDOWN_FLUSH).await {
        tracing::warn!("Some queued presence could not be sent before stopping.");
    }
    outbox.shutdown().await;
}
