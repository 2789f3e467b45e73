//! The HTTP/1.1 listeners of Presenced: one accept loop for plain and TLS sockets, with the
//! limits that keep a flood of idle or half-sent connections from starving real clients.
//!
//! - **A connection cap** ([`ConnectionCap`]) shared by every listener of the process, so the
//!   sum of open connections stays below the open-file limit. At the cap the loop stops
//!   accepting (new connections wait in the kernel's backlog) and resumes as soon as one
//!   closes; the connections already open keep being served.
//! - **A header-read timeout**: a connection must send a complete request head within
//!   [`Limits::header_read_timeout`] of connecting (TLS handshake included), and each later
//!   head within that long of its first byte (slowloris).
//! - **An idle timeout**: a connection with no request in flight and no bytes moving for
//!   [`Limits::idle_timeout`] is closed. A request being handled is never idle, however long
//!   it takes, so long-polling `/sync` is unaffected.
//! - **Accept failures** (usually "too many open files" when other descriptors use up the
//!   limit) back off briefly instead of spinning, and serving resumes by itself.
//!
//! Shutdown: when the token fires the loop stops accepting, each open connection finishes
//! the request it is serving, and [`serve`] returns once they are all closed.

mod activity;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::{GracefulShutdown, Watcher},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_util::sync::CancellationToken;

use crate::activity::{Activity, Counted, Tracked};

/// Timeouts of one listener's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a connection may take to send a complete request head: from connecting (the
    /// TLS handshake included) for its first request, from the head's first byte for later
    /// ones.
    pub header_read_timeout: Duration,
    /// How long a connection may sit with no request in flight and no bytes moving.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// The cap on concurrent connections, shared by every listener it is cloned into.
#[derive(Debug, Clone)]
pub struct ConnectionCap {
    permits: Arc<Semaphore>,
    max: usize,
    /// When the "at the cap" warning was last logged (ms since `epoch`), to log it at most
    /// once a minute however long a flood lasts.
    last_warned_ms: Arc<AtomicU64>,
    epoch: Instant,
}

impl ConnectionCap {
    /// A cap of `max` connections (at least one).
    pub fn new(max: usize) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(max)),
            max,
            last_warned_ms: Arc::new(AtomicU64::new(u64::MAX)),
            epoch: Instant::now(),
        }
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }

    /// How many connections are open now.
    pub fn open(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    /// A slot for one more connection, waiting while the cap is reached.
    async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Some(permit);
        }
        self.warn_at_cap();
        // The semaphore is never closed: `None` only if that ever changes.
        self.permits.clone().acquire_owned().await.ok()
    }

    fn warn_at_cap(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_warned_ms.load(Ordering::Relaxed);
        if last != u64::MAX && now.saturating_sub(last) < 60_000 {
            return;
        }
        if self
            .last_warned_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::warn!(
                max_connections = self.max,
                "At the connection limit: new connections wait until open ones close."
            );
        }
    }
}

/// How long to pause after a failed `accept` before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `app` on `listener` (over TLS when `tls` is given) until `shutdown` fires, then
/// lets each open connection finish its current request and returns when all are closed.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: axum::Router,
    limits: Limits,
    cap: ConnectionCap,
    shutdown: CancellationToken,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = cap.acquire() => match permit {
                Some(p) => p,
                None => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "Accepting a connection failed.");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // Responses are small and latency matters more than packet count.
        let _ = tcp.set_nodelay(true);
        let connection = Connection {
            app: app.clone(),
            limits,
            watcher: graceful.watcher(),
            peer,
            _permit: permit,
        };
        match &acceptor {
            None => {
                tokio::spawn(connection.serve(tcp, Activity::new()));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // The handshake counts against the first request's header deadline.
                    let activity = Activity::new();
                    let handshake = acceptor.accept(tcp);
                    match tokio::time::timeout(limits.header_read_timeout, handshake).await {
                        Ok(Ok(stream)) => connection.serve(stream, activity).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed."),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out."),
                    }
                });
            }
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

/// One accepted connection and what it needs to be served.
struct Connection {
    app: axum::Router,
    limits: Limits,
    watcher: Watcher,
    peer: std::net::SocketAddr,
    /// Held for the connection's lifetime: its slot under the cap.
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    async fn serve<I>(self, io: I, activity: Arc<Activity>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            app,
            limits,
            watcher,
            peer,
            _permit,
        } = self;
        // The peer's address, as `axum::serve` gives it with connect info (the client API's
        // per-address rate limits key on it).
        let app = tower::ServiceExt::map_request(app, move |mut request: Request<Incoming>| {
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            request
        });
        let service = Counted::new(TowerToHyperService::new(app), activity.clone());
        let io = TokioIo::new(Tracked::new(io, activity.clone()));
        let mut builder = hyper::server::conn::http1::Builder::new();
        // Header deadlines are enforced by `Activity`, which also covers the idle time between
        // requests; hyper's own timer would start while a connection merely sits idle.
        builder.timer(TokioTimer::new()).header_read_timeout(None);
        let connection = watcher.watch(builder.serve_connection(io, service));
        tokio::select! {
            served = connection => {
                if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "Connection ended with an error.");
                }
            }
            reason = activity.expired(limits) => {
                tracing::debug!(%peer, reason, "Closing the connection.");
            }
        }
    }
}
