//! Running the server: bind every configured listener, serve each with its router, and shut
//! down gracefully.
//!
//! All sockets are bound before anything is served, so a bad address fails startup as a
//! whole instead of leaving half the listeners running. Shutdown is a [`CancellationToken`]:
//! cancelling it stops accepting connections and lets open requests finish; whatever is
//! still running after the grace period is dropped.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use axum::Router;
use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{
    config::{Config, ListenerConfig, ResourceName},
    error::StartError,
    http::{self, AppState},
    presence,
};
use presence_store::PresenceStore as _;

/// Starts servers from a [`Config`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Server;

impl Server {
    /// Binds every listener and starts serving. Port 0 picks a free port; the bound
    /// addresses are in [`RunningServer::local_addrs`].
    pub async fn start(config: Config) -> Result<RunningServer, StartError> {
        let tls = tls_config(&config)?;
        let (state, background) = AppState::build(config).await?;
        let mut bound = Vec::new();
        for listener in &state.config().listeners {
            let resources = listener_resources(listener);
            let app = http::app_for(state.clone(), &resources);
            let listener_tls = if listener.tls { tls.clone() } else { None };
            for socket in bind_listener(listener).await? {
                let addr = local_addr(&socket)?;
                bound.push((
                    socket,
                    addr,
                    app.clone(),
                    resources.clone(),
                    listener_tls.clone(),
                ));
            }
        }

        let shutdown = CancellationToken::new();
        let federation_listeners = federation_listeners_token(&state, &shutdown);
        let mut tasks = JoinSet::new();
        let mut local_addrs = Vec::with_capacity(bound.len());
        for (socket, addr, app, resources, tls) in bound {
            let names: Vec<&str> = resources.iter().map(|r| r.as_str()).collect();
            let scheme = if tls.is_some() { "https" } else { "http" };
            tracing::info!(%addr, resources = %names.join(","), scheme, "Listening on {addr}.");
            local_addrs.push(addr);
            let token = if resources.contains(&ResourceName::Federation)
                || resources.contains(&ResourceName::Keys)
            {
                federation_listeners.clone()
            } else {
                shutdown.clone()
            };
            match tls {
                Some(tls) => {
                    tasks.spawn(async move {
                        presence_federation::tls::serve_tls(socket, tls, app, token).await;
                        Ok(())
                    });
                }
                None => {
                    tasks.spawn(serve(socket, addr, app, token));
                }
            }
        }
        let background_shutdown = CancellationToken::new();
        let mut background_tasks = JoinSet::new();
        presence::spawn_background(
            state.presence(),
            background.module_commands,
            background_shutdown.clone(),
            &mut background_tasks,
        );
        Ok(RunningServer {
            local_addrs,
            shutdown,
            tasks,
            state,
            background_shutdown,
            background_tasks,
            federation_shutdown: background.federation_shutdown,
        })
    }
}

/// A started server.
pub struct RunningServer {
    local_addrs: Vec<SocketAddr>,
    shutdown: CancellationToken,
    tasks: JoinSet<Result<(), StartError>>,
    state: AppState,
    background_shutdown: CancellationToken,
    background_tasks: JoinSet<()>,
    federation_shutdown: CancellationToken,
}

impl RunningServer {
    /// Every bound socket address, in configuration order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The application state the handlers share.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The token that stops the server when cancelled (clones share it).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting connections; open requests keep running until they finish.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until every listener has stopped (after [`Self::shutdown`], or a failure).
    /// If one listener fails, the others are shut down too and the first error is returned.
    pub async fn wait(mut self) -> Result<(), StartError> {
        let mut first_error = None;
        while let Some(joined) = self.tasks.join_next().await {
            let result = match joined {
                Ok(result) => result,
                Err(e) if e.is_panic() => {
                    tracing::error!(error = %e, "A listener task panicked.");
                    Ok(())
                }
                Err(_) => Ok(()),
            };
            if let Err(e) = result {
                self.shutdown.cancel();
                first_error.get_or_insert(e);
            }
        }
        // Listeners are drained: stop the timers, flush bookkeeping, close the store (which
        // commits everything still queued).
        self.background_shutdown.cancel();
        while self.background_tasks.join_next().await.is_some() {}
        // Remote servers get what is still queued for them (briefly), then the outbox stops.
        match self.state.federation() {
            Some(federation) => crate::federation::shutdown(federation).await,
            None => self.federation_shutdown.cancel(),
        }
        self.state.python().shutdown().await;
        if let Err(e) = self.state.store().close().await {
            tracing::warn!(error = %e, "Closing the database failed.");
        }
        tracing::info!("Stopped.");
        first_error.map_or(Ok(()), Err)
    }

    /// Shuts down and waits up to `grace` for open requests; the rest are dropped.
    pub async fn stop(self, grace: Duration) -> Result<(), StartError> {
        self.shutdown();
        match tokio::time::timeout(grace, self.wait()).await {
            Ok(result) => result,
            Err(_) => {
                // Dropping the `wait` future dropped the JoinSet, which aborts the tasks.
                tracing::warn!(
                    grace_ms = grace.as_millis(),
                    "Requests still open after the grace period were dropped."
                );
                Ok(())
            }
        }
    }
}

/// The token that stops the federation and keys listeners: cancelled once `shutdown` is and
/// the outbox has handed over what it queued (briefly), so that remote servers can still
/// fetch our key to accept those last transactions.
fn federation_listeners_token(state: &AppState, shutdown: &CancellationToken) -> CancellationToken {
    let Some(federation) = state.federation() else {
        return shutdown.clone();
    };
    let token = CancellationToken::new();
    let (outbox, shutdown, stop) = (federation.outbox().clone(), shutdown.clone(), token.clone());
    tokio::spawn(async move {
        shutdown.cancelled().await;
        outbox.flush(crate::federation::SHUTDOWN_FLUSH).await;
        stop.cancel();
    });
    token
}

/// The TLS configuration of `tls: true` listeners, loaded once (`None` if there are none).
fn tls_config(config: &Config) -> Result<Option<Arc<rustls::ServerConfig>>, StartError> {
    if !config.listeners.iter().any(|l| l.tls) {
        return Ok(None);
    }
    let f = &config.federation;
    let (Some(cert), Some(key)) = (&f.tls_certificate_path, &f.tls_private_key_path) else {
        // Config validation requires both; an error rather than a panic path.
        return Err(StartError::Federation(
            "tls_certificate_path and tls_private_key_path are required for tls: true".to_owned(),
        ));
    };
    let tls = presence_federation::tls::server_tls_config(cert, key).map_err(|e| {
        StartError::Federation(format!(
            "TLS listener (tls_certificate_path {}, tls_private_key_path {}): {e}",
            cert.display(),
            key.display()
        ))
    })?;
    Ok(Some(Arc::new(tls)))
}

/// The resources a listener serves, without duplicates.
fn listener_resources(listener: &ListenerConfig) -> Vec<ResourceName> {
    let mut names: Vec<ResourceName> = listener
        .resources
        .iter()
        .flat_map(|r| r.names.iter().copied())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Binds each address of `listener`.
///
/// The reference homeserver's default is `['::', '0.0.0.0']`. On a dual-stack host `::`
/// already accepts IPv4, so binding `0.0.0.0` to the same port then fails with "address in
/// use": that failure is expected and skipped. On a host without IPv6, `::` fails and
/// `0.0.0.0` alone serves. Any other failure stops startup.
async fn bind_listener(listener: &ListenerConfig) -> Result<Vec<TcpListener>, StartError> {
    let any_v4 = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let any_v6 = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    let mut addresses = listener.bind_addresses.clone();
    // `::` first, so the dual-stack socket exists before `0.0.0.0` is tried.
    addresses.sort_by_key(|ip| *ip != any_v6);
    addresses.dedup();

    let mut sockets = Vec::new();
    let mut bound_any_v6 = false;
    for ip in &addresses {
        let addr = SocketAddr::new(*ip, listener.port);
        match TcpListener::bind(addr).await {
            Ok(socket) => {
                bound_any_v6 |= *ip == any_v6;
                sockets.push(socket);
            }
            Err(e) if *ip == any_v4 && bound_any_v6 && e.kind() == io::ErrorKind::AddrInUse => {
                tracing::debug!(%addr, "Not binding 0.0.0.0: the [::] socket accepts IPv4 too.");
            }
            Err(e)
                if *ip == any_v6
                    && addresses.contains(&any_v4)
                    && e.kind() != io::ErrorKind::AddrInUse =>
            {
                tracing::warn!(%addr, error = %e, "Cannot listen on [::]; serving IPv4 only.");
            }
            Err(source) => return Err(StartError::Bind { addr, source }),
        }
    }
    Ok(sockets)
}

fn local_addr(socket: &TcpListener) -> Result<SocketAddr, StartError> {
    socket.local_addr().map_err(|source| StartError::Bind {
        addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        source,
    })
}

/// Serves one socket until `shutdown` is cancelled and its open requests are done.
async fn serve(
    socket: TcpListener,
    addr: SocketAddr,
    app: Router,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    axum::serve(socket, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(|source| StartError::Serve { addr, source })
}

/// SIGTERM and SIGINT (Ctrl-C), the signals that stop the server.
///
/// Install them before announcing that the server is up: until they are installed, a
/// SIGTERM would kill the process outright instead of shutting it down gracefully.
pub struct ShutdownSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Starts catching the shutdown signals (needs a Tokio runtime).
    pub fn install() -> io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// Waits for the next shutdown signal and returns its name.
    pub async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            // If Ctrl-C cannot be caught, never report it rather than stopping at once.
            match tokio::signal::ctrl_c().await {
                Ok(()) => "Ctrl-C",
                Err(_) => std::future::pending().await,
            }
        }
    }
}
