//! The HTTPS connection layer: connect to already-resolved addresses, speak TLS with the
//! name discovery chose, send one HTTP/1.1 request, and keep idle connections for reuse.
//!
//! Federation discovery decides three things separately: which addresses to connect to,
//! which name the certificate must match, and the `Host` header. A general-purpose client
//! derives all three from one URL, so this small layer takes them from an [`Endpoint`]
//! instead. Connections are pooled per (certificate name, address): a destination's queue
//! sends one transaction after another over the same connection.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use rustls::pki_types::ServerName as TlsServerName;
use tokio::{net::TcpStream, time::Instant};

use crate::ClientConfig;

/// Where and how to reach a server, as decided by discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Endpoint {
    /// The name the TLS certificate must match (a hostname or an IP address, no brackets).
    pub tls_name: String,
    /// The `Host` header value.
    pub host_header: String,
    /// Addresses to try, in order; already checked against the IP range filter.
    pub addrs: Vec<SocketAddr>,
}

impl Endpoint {
    /// An endpoint.
    pub fn new(tls_name: String, host_header: String, addrs: Vec<SocketAddr>) -> Self {
        Self {
            tls_name,
            host_header,
            addrs,
        }
    }
}

/// A response with its body read in full.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// Why a request failed at the connection level.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum Failure {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("timed out")]
    Timeout,
    #[error("HTTP error: {0}")]
    Protocol(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    tls_name: String,
    addr: SocketAddr,
}

struct Idle {
    sender: SendRequest<Full<Bytes>>,
    since: Instant,
}

/// Sends requests to [`Endpoint`]s over TLS.
pub(crate) struct HttpsConnector {
    tls: tokio_rustls::TlsConnector,
    config: ClientConfig,
    pool: Mutex<HashMap<PoolKey, Vec<Idle>>>,
}

impl HttpsConnector {
    pub(crate) fn new(tls: Arc<rustls::ClientConfig>, config: ClientConfig) -> Self {
        Self {
            tls: tokio_rustls::TlsConnector::from(tls),
            config,
            pool: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Sends `request` (its URI in origin form) to `endpoint`, within the request timeout.
    pub(crate) async fn send(
        &self,
        endpoint: &Endpoint,
        request: http::Request<Vec<u8>>,
    ) -> Result<Response, Failure> {
        tokio::time::timeout(
            self.config.request_timeout,
            self.send_inner(endpoint, request),
        )
        .await
        .map_err(|_| Failure::Timeout)?
    }

    async fn send_inner(
        &self,
        endpoint: &Endpoint,
        request: http::Request<Vec<u8>>,
    ) -> Result<Response, Failure> {
        let (mut parts, body) = request.into_parts();
        let host = HeaderValue::from_str(&endpoint.host_header)
            .map_err(|e| Failure::Protocol(format!("bad Host header: {e}")))?;
        parts.headers.insert(http::header::HOST, host);
        let body = Bytes::from(body);
        let mut last = Failure::Connect("no address to connect to".to_owned());
        for addr in &endpoint.addrs {
            let key = PoolKey {
                tls_name: endpoint.tls_name.clone(),
                addr: *addr,
            };
            // A pooled connection may have been closed by the peer a moment ago; the
            // requests sent here are idempotent, so a failure on one is retried fresh.
            if let Some(sender) = self.take_idle(&key).await {
                match self.exchange(sender, &key, &parts, &body).await {
                    Ok(r) => return Ok(r),
                    Err(e) => {
                        tracing::debug!(%addr, error = %e, "Pooled connection failed; reconnecting.")
                    }
                }
            }
            let sender = match self.connect(&key).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "Connecting failed.");
                    last = e;
                    continue;
                }
            };
            match self.exchange(sender, &key, &parts, &body).await {
                Ok(r) => return Ok(r),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn take_idle(&self, key: &PoolKey) -> Option<SendRequest<Full<Bytes>>> {
        loop {
            let idle = {
                let mut pool = self.pool.lock().ok()?;
                let list = pool.get_mut(key)?;
                let idle = list.pop();
                if list.is_empty() {
                    pool.remove(key);
                }
                idle?
            };
            if idle.since.elapsed() > self.config.idle_timeout || idle.sender.is_closed() {
                continue;
            }
            let mut sender = idle.sender;
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    fn put_idle(&self, key: &PoolKey, sender: SendRequest<Full<Bytes>>) {
        if self.config.max_idle_connections == 0 || sender.is_closed() {
            return;
        }
        if let Ok(mut pool) = self.pool.lock() {
            let list = pool.entry(key.clone()).or_default();
            list.retain(|i| !i.sender.is_closed());
            if list.len() < self.config.max_idle_connections {
                list.push(Idle {
                    sender,
                    since: Instant::now(),
                });
            }
        }
    }

    async fn connect(&self, key: &PoolKey) -> Result<SendRequest<Full<Bytes>>, Failure> {
        let handshake = async {
            let tcp = TcpStream::connect(key.addr)
                .await
                .map_err(|e| Failure::Connect(e.to_string()))?;
            // Small requests and responses: do not wait to coalesce packets.
            let _ = tcp.set_nodelay(true);
            let name = TlsServerName::try_from(key.tls_name.clone())
                .map_err(|e| Failure::Connect(format!("bad TLS name {:?}: {e}", key.tls_name)))?;
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| Failure::Connect(format!("TLS: {e}")))?;
            let (sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                    .await
                    .map_err(|e| Failure::Connect(format!("HTTP handshake: {e}")))?;
            let addr = key.addr;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(%addr, error = %e, "Federation connection closed with an error.");
                }
            });
            Ok(sender)
        };
        tokio::time::timeout(self.config.connect_timeout, handshake)
            .await
            .map_err(|_| Failure::Connect("connect timed out".to_owned()))?
    }

    async fn exchange(
        &self,
        mut sender: SendRequest<Full<Bytes>>,
        key: &PoolKey,
        parts: &http::request::Parts,
        body: &Bytes,
    ) -> Result<Response, Failure> {
        let mut builder = http::Request::builder()
            .method(parts.method.clone())
            .uri(parts.uri.clone())
            .version(http::Version::HTTP_11);
        if let Some(headers) = builder.headers_mut() {
            headers.extend(parts.headers.clone());
        }
        let request = builder
            .body(Full::new(body.clone()))
            .map_err(|e| Failure::Protocol(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| Failure::Protocol(e.to_string()))?;
        let (head, incoming) = response.into_parts();
        let body = Limited::new(incoming, self.config.max_response_bytes)
            .collect()
            .await
            .map_err(|e| Failure::Protocol(format!("reading the response: {e}")))?
            .to_bytes();
        self.put_idle(key, sender);
        Ok(Response {
            status: head.status,
            headers: head.headers,
            body,
        })
    }
}
