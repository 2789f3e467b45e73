//! Running the server: bind every configured listener, serve each with its router, and shut
//! down gracefully.
//!
//! All sockets are bound before anything is served, so a bad address fails startup as a
//! whole instead of leaving half the listeners running. [`Shutdown`] stops the server in
//! order: listeners stop accepting and drain, bounded by the grace period; then the cleanup
//! (timers, flushes, the federation outbox, Python, closing the store) always runs.

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
    app::App,
    config::{Config, ListenerConfig, ResourceName},
    error::StartError,
    http, presence,
};

/// Starts servers from a [`Config`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Server;

impl Server {
    /// Binds every listener and starts serving. Port 0 picks a free port; the bound
    /// addresses are in [`RunningServer::local_addrs`].
    pub async fn start(config: Config) -> Result<RunningServer, StartError> {
        let tls = tls_config(&config)?;
        let (state, background) = App::build(config).await?;
        let mut bound = Vec::new();
        for listener in &state.config().listeners {
            let resources = listener_resources(listener);
            let app = http::app_for(state.clone(), &resources)
                .layer(axum::Extension(http::ForwardedFor(listener.x_forwarded)));
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

        let shutdown = Shutdown::new();
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
                shutdown.requested.clone()
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
        let mut background_tasks = JoinSet::new();
        presence::spawn_background(
            state.presence(),
            background.module_commands,
            shutdown.background.clone(),
            &mut background_tasks,
        );
        let mut publisher = None;
        if let Some(r) = background.replication {
            background_tasks.spawn(r.subscriber.run(shutdown.background.clone()));
            background_tasks.spawn(crate::app::synapse::run_replication(
                state.clone(),
                r.writer,
                r.events,
                shutdown.background.clone(),
            ));
            // Stopped last, once what it queued has gone out (see `App::close`).
            publisher = Some(tokio::spawn(r.publisher.run(shutdown.publisher.clone())));
        }
        Ok(RunningServer {
            local_addrs,
            shutdown: Shutdown {
                outbox: background.federation_shutdown,
                ..shutdown
            },
            tasks,
            state,
            background_tasks,
            publisher,
        })
    }
}

/// How a running server stops, in order: `requested` stops accepting connections and starts
/// draining the listeners (federation and keys listeners a little later, once the outbox has
/// handed over what it queued); `hurry` cuts the draining short (the grace period, or a second
/// signal); then, whatever happened while draining, the background tasks stop (`background`,
/// the writer mode's replication subscriber among them), the outbox stops (`outbox`), Python
/// stops, the store closes, and last the writer mode's Redis publisher (`publisher`), once
/// the rows committed by the final flushes have gone out.
#[derive(Clone)]
pub struct Shutdown {
    requested: CancellationToken,
    hurry: CancellationToken,
    background: CancellationToken,
    outbox: CancellationToken,
    publisher: CancellationToken,
}

impl Shutdown {
    fn new() -> Self {
        Self {
            requested: CancellationToken::new(),
            hurry: CancellationToken::new(),
            background: CancellationToken::new(),
            outbox: CancellationToken::new(),
            publisher: CancellationToken::new(),
        }
    }

    /// Stops accepting connections; open requests keep running until they finish.
    pub fn request(&self) {
        self.requested.cancel();
    }

    /// Drops the requests still open (the cleanup after them still runs).
    pub fn hurry(&self) {
        self.requested.cancel();
        self.hurry.cancel();
    }

    /// Whether a shutdown was requested.
    pub fn is_requested(&self) -> bool {
        self.requested.is_cancelled()
    }
}

/// A started server.
pub struct RunningServer {
    local_addrs: Vec<SocketAddr>,
    shutdown: Shutdown,
    tasks: JoinSet<Result<(), StartError>>,
    state: App,
    background_tasks: JoinSet<()>,
    publisher: Option<tokio::task::JoinHandle<()>>,
}

impl RunningServer {
    /// Every bound socket address, in configuration order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The application core the handlers share.
    pub fn state(&self) -> &App {
        &self.state
    }

    /// The server's shutdown handle (clones share it).
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// The token that stops the server when cancelled (clones share it).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.requested.clone()
    }

    /// Stops accepting connections; open requests keep running until they finish.
    pub fn shutdown(&self) {
        self.shutdown.request();
    }

    /// Waits until every listener has stopped (after [`Self::shutdown`], or a failure), then
    /// cleans up. If one listener fails, the others are shut down too and the first error is
    /// returned.
    pub async fn wait(mut self) -> Result<(), StartError> {
        let first_error = self.drain().await;
        self.clean_up().await;
        first_error.map_or(Ok(()), Err)
    }

    /// Shuts down and waits up to `grace` for open requests; the rest are dropped. The
    /// cleanup after them (timers, flushes, Python, closing the store) always runs.
    pub async fn stop(mut self, grace: Duration) -> Result<(), StartError> {
        self.shutdown.request();
        let hurry = self.shutdown.clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            if !hurry.hurry.is_cancelled() {
                tracing::warn!(
                    grace_ms = grace.as_millis() as u64,
                    "Dropping the requests still open after the grace period."
                );
            }
            hurry.hurry();
        });
        let first_error = self.drain().await;
        timer.abort();
        self.clean_up().await;
        first_error.map_or(Ok(()), Err)
    }

    /// Joins the listeners; aborts them when `hurry` fires. Returns the first listener error.
    async fn drain(&mut self) -> Option<StartError> {
        let mut first_error = None;
        loop {
            let joined = tokio::select! {
                joined = self.tasks.join_next() => joined,
                () = self.shutdown.hurry.cancelled() => {
                    self.tasks.abort_all();
                    while self.tasks.join_next().await.is_some() {}
                    break;
                }
            };
            let Some(joined) = joined else { break };
            let result = match joined {
                Ok(result) => result,
                Err(e) if e.is_panic() => {
                    tracing::error!(error = %e, "A listener task panicked.");
                    Ok(())
                }
                Err(_) => Ok(()),
            };
            if let Err(e) = result {
                self.shutdown.request();
                first_error.get_or_insert(e);
            }
        }
        first_error
    }

    /// Stops the timers, flushes bookkeeping, hands federation what is queued (briefly),
    /// stops Python and closes the store (which commits everything still queued).
    async fn clean_up(&mut self) {
        self.shutdown.background.cancel();
        while self.background_tasks.join_next().await.is_some() {}
        match self.state.federation() {
            Some(federation) => crate::federation::shutdown(federation).await,
            None => self.shutdown.outbox.cancel(),
        }
        self.state.python().shutdown().await;
        self.state.close().await;
        self.shutdown.publisher.cancel();
        if let Some(publisher) = self.publisher.take() {
            let _ = publisher.await;
        }
        tracing::info!("Stopped.");
    }
}

/// The token that stops the federation and keys listeners: cancelled once a shutdown is
/// requested and the outbox has handed over what it queued (briefly), so that remote servers
/// can still fetch our key to accept those last transactions.
fn federation_listeners_token(state: &App, shutdown: &Shutdown) -> CancellationToken {
    let Some(federation) = state.federation() else {
        return shutdown.requested.clone();
    };
    let token = CancellationToken::new();
    let (outbox, requested, stop) = (
        federation.outbox().clone(),
        shutdown.requested.clone(),
        token.clone(),
    );
    tokio::spawn(async move {
        requested.cancelled().await;
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
        return Err(StartError::Federation {
            what: "TLS listener".to_owned(),
            source: presence_federation::Error::Config(
                "tls_certificate_path and tls_private_key_path are required for tls: true"
                    .to_owned(),
            ),
        });
    };
    let tls = presence_federation::tls::server_tls_config(cert, key).map_err(|source| {
        StartError::Federation {
            what: format!(
                "TLS listener (tls_certificate_path {}, tls_private_key_path {})",
                cert.display(),
                key.display()
            ),
            source,
        }
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
    // The peer's address is what the per-address rate limits key on.
    axum::serve(
        socket,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
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
