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

use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{
    app::App,
    config::{Config, ConnectionsConfig, ListenerConfig, ResourceName},
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
        let cap = connection_cap(&config);
        let (state, background) = App::build(config).await?;
        let mut bound = Vec::new();
        for listener in &state.config().listeners {
            let resources = listener_resources(listener);
            let app = http::app_for(state.clone(), &resources)
                .layer(axum::Extension(http::ForwardedFor(listener.x_forwarded)));
            let listener_tls = if listener.tls { tls.clone() } else { None };
            let limits = listener_limits(&state.config().connections, &resources);
            for socket in bind_listener(listener).await? {
                let addr = local_addr(&socket)?;
                bound.push((
                    socket,
                    addr,
                    app.clone(),
                    resources.clone(),
                    listener_tls.clone(),
                    limits,
                ));
            }
        }

        let shutdown = Shutdown::new();
        let federation_listeners = federation_listeners_token(&state, &shutdown);
        let mut tasks = JoinSet::new();
        let mut local_addrs = Vec::with_capacity(bound.len());
        tracing::info!(
            max_connections = cap.max(),
            "Serving at most {} connections at once.",
            cap.max()
        );
        for (socket, addr, app, resources, tls, limits) in bound {
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
            let cap = cap.clone();
            tasks.spawn(async move {
                presence_listen::serve(socket, tls, app, limits, cap, token).await;
                Ok(())
            });
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

/// The timeouts of a listener's connections: a listener serving `replication` keeps idle
/// connections longer, past Synapse's connection pool.
fn listener_limits(c: &ConnectionsConfig, resources: &[ResourceName]) -> presence_listen::Limits {
    let idle_timeout = if resources.contains(&ResourceName::Replication) {
        c.replication_idle_timeout.max(c.idle_timeout)
    } else {
        c.idle_timeout
    };
    presence_listen::Limits {
        header_read_timeout: c.header_read_timeout,
        idle_timeout,
    }
}

/// The connection cap every listener shares: `connections.max_connections`, or by default
/// the open-file limit less a reserve for the descriptors that are not client connections
/// (the database, outbound federation, Redis and PostgreSQL pools, Python modules, logs), so
/// that the limit is never what refuses a connection.
fn connection_cap(config: &Config) -> presence_listen::ConnectionCap {
    let open_files = open_file_limit();
    let max = match config.connections.max_connections {
        Some(max) => {
            if open_files.is_some_and(|limit| max as u64 >= limit) {
                tracing::warn!(
                    max_connections = max,
                    open_file_limit = open_files,
                    "connections.max_connections is not below the open-file limit: at the \
                     limit, accepting fails (and is retried) instead of waiting."
                );
            }
            max
        }
        None => default_max_connections(open_files),
    };
    presence_listen::ConnectionCap::new(max)
}

/// The default cap for an open-file limit (`None`: unlimited).
fn default_max_connections(open_files: Option<u64>) -> usize {
    /// With no limit at all, a cap still bounds memory.
    const UNLIMITED: usize = 1 << 20;
    let Some(limit) = open_files else {
        return UNLIMITED;
    };
    let reserve = (limit / 8).max(64);
    usize::try_from(limit.saturating_sub(reserve))
        .unwrap_or(UNLIMITED)
        .clamp(16, UNLIMITED)
}

/// The soft open-file limit of this process (`None`: unlimited).
fn open_file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// Raises the soft open-file limit to the hard one, as the reference homeserver does at
/// startup: the soft default (often 1,024) is far below what a busy server needs, and the
/// connection cap is sized from it. Returns the limit now in force.
pub fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, "Could not raise the open-file limit.");
        }
    }
    open_file_limit()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replication_listener_outlasts_synapses_connection_pool() {
        let c = ConnectionsConfig::default();
        let client = listener_limits(&c, &[ResourceName::Client]);
        assert_eq!(client.idle_timeout, Duration::from_secs(60));
        assert_eq!(client.header_read_timeout, Duration::from_secs(30));
        let replication = listener_limits(&c, &[ResourceName::Replication]);
        assert!(replication.idle_timeout > crate::config::SYNAPSE_REPLICATION_POOL_TIMEOUT);
    }

    #[test]
    fn the_default_cap_stays_below_the_open_file_limit() {
        assert_eq!(default_max_connections(Some(1024)), 896);
        assert_eq!(default_max_connections(Some(256)), 192);
        // A tiny limit still serves a few connections.
        assert_eq!(default_max_connections(Some(10)), 16);
        assert_eq!(
            default_max_connections(Some(1 << 20)),
            (1 << 20) - (1 << 17)
        );
        assert_eq!(default_max_connections(None), 1 << 20);
    }
}
