//! The outbound federation client: discovery, HTTPS and `X-Matrix` signing put together,
//! plus the two things built on it: the real [`Transport`] for the outbox and the
//! [`HttpKeySource`] for the key cache.
//!
//! Spec: <https://spec.matrix.org/v1.15/server-server-api/#server-discovery> and
//! <https://spec.matrix.org/v1.15/server-server-api/#querying-keys-through-another-server>.

use std::{fmt, sync::Arc};

use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, StatusCode};
use presence_router::ServerName;

use crate::{
    ClientConfig, Error, KeySource, Resolver, SendError, SigningKey, Transaction, Transport,
    TrustedKeyServer,
    auth::sign_request,
    https::{Failure, HttpsConnector},
    remote_keys::verify_notary_signature,
    resolve::Dns,
    tls::client_tls_config,
};

/// Longest part of an error body kept for logs.
const ERROR_BODY_LOG_LEN: usize = 200;

/// Sends (optionally signed) requests to other servers.
pub struct FederationClient {
    origin: ServerName,
    key: Arc<SigningKey>,
    resolver: Resolver,
    connector: Arc<HttpsConnector>,
}

impl fmt::Debug for FederationClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FederationClient")
            .field("origin", &self.origin)
            .field("key", &self.key.key_id())
            .finish_non_exhaustive()
    }
}

/// A response from another server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RemoteResponse {
    /// The status.
    pub status: StatusCode,
    /// The body.
    pub body: Bytes,
}

impl FederationClient {
    /// A client sending as `origin`, signing with `key`, resolving names with `dns`.
    pub fn new(
        origin: ServerName,
        key: Arc<SigningKey>,
        config: ClientConfig,
        dns: Arc<dyn Dns>,
    ) -> Result<Self, Error> {
        let tls = client_tls_config(config.verify_certificates, &config.custom_ca_list)?;
        let connector = Arc::new(HttpsConnector::new(Arc::new(tls), config));
        Ok(Self {
            origin,
            key,
            resolver: Resolver::new(dns, connector.clone()),
            connector,
        })
    }

    /// The server-name resolver (for diagnostics and tests).
    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    /// Sends a request to `destination`. `path_and_query` is the request target exactly as
    /// signed (already percent-encoded); `body` must be JSON when given.
    pub async fn request(
        &self,
        destination: &ServerName,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        signed: bool,
    ) -> Result<RemoteResponse, Error> {
        let failed = |reason: String| Error::Request {
            server: destination.to_string(),
            reason,
        };
        let endpoint = self.resolver.resolve(destination).await?;
        let has_body = body.is_some();
        let mut request = http::Request::builder()
            .method(method)
            .uri(path_and_query)
            .body(body.unwrap_or_default())
            .map_err(|e| failed(format!("bad request: {e}")))?;
        if has_body {
            request.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
        }
        if signed {
            sign_request(&self.key, &self.origin, destination, &mut request)?;
        }
        let response = self
            .connector
            .send(&endpoint, request)
            .await
            .map_err(|e| failed(e.to_string()))?;
        Ok(RemoteResponse {
            status: response.status,
            body: response.body,
        })
    }
}

fn body_excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.chars().take(ERROR_BODY_LOG_LEN).collect()
}

#[async_trait]
impl Transport for FederationClient {
    async fn send_transaction(
        &self,
        destination: &ServerName,
        txn_id: &str,
        body: &Transaction,
    ) -> Result<(), SendError> {
        // Our transaction IDs are `[0-9_]`; anything else would need percent-encoding.
        if !txn_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        {
            return Err(SendError::Unreachable(format!(
                "unsupported transaction ID {txn_id:?}"
            )));
        }
        let json = serde_json::to_vec(body)
            .map_err(|e| SendError::Unreachable(format!("cannot serialise: {e}")))?;
        let path = format!("/_matrix/federation/v1/send/{txn_id}");
        let endpoint = self
            .resolver
            .resolve(destination)
            .await
            .map_err(|e| SendError::Unreachable(e.to_string()))?;
        let mut request = http::Request::put(path.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(json)
            .map_err(|e| SendError::Unreachable(e.to_string()))?;
        sign_request(&self.key, &self.origin, destination, &mut request)
            .map_err(|e| SendError::Unreachable(e.to_string()))?;
        match self.connector.send(&endpoint, request).await {
            Ok(r) if r.status == StatusCode::OK => Ok(()),
            Ok(r) => Err(SendError::Rejected {
                status: r.status.as_u16(),
                body: body_excerpt(&r.body),
            }),
            Err(Failure::Timeout) => Err(SendError::Timeout),
            Err(e) => Err(SendError::Unreachable(e.to_string())),
        }
    }
}

/// Fetches key documents from the servers themselves, then from the configured notaries.
pub struct HttpKeySource {
    client: Arc<FederationClient>,
    notaries: Vec<TrustedKeyServer>,
}

impl fmt::Debug for HttpKeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpKeySource")
            .field("notaries", &self.notaries)
            .finish_non_exhaustive()
    }
}

impl HttpKeySource {
    /// A source using `client`, falling back to `notaries` in order.
    pub fn new(client: Arc<FederationClient>, notaries: Vec<TrustedKeyServer>) -> Self {
        Self { client, notaries }
    }

    async fn direct(&self, server: &ServerName) -> Result<Vec<u8>, Error> {
        let response = self
            .client
            .request(server, Method::GET, "/_matrix/key/v2/server", None, false)
            .await?;
        if response.status != StatusCode::OK {
            return Err(Error::RemoteKeys {
                server: server.clone(),
                reason: format!("key request answered {}", response.status),
            });
        }
        Ok(response.body.to_vec())
    }

    async fn via_notary(
        &self,
        notary: &TrustedKeyServer,
        server: &ServerName,
    ) -> Result<Vec<u8>, Error> {
        let fail = |reason: String| Error::RemoteKeys {
            server: server.clone(),
            reason: format!("via {}: {reason}", notary.server_name),
        };
        let query = serde_json::json!({ "server_keys": { server.as_str(): {} } });
        let body = serde_json::to_vec(&query).map_err(|e| fail(e.to_string()))?;
        let response = self
            .client
            .request(
                &notary.server_name,
                Method::POST,
                "/_matrix/key/v2/query",
                Some(body),
                false,
            )
            .await?;
        if response.status != StatusCode::OK {
            return Err(fail(format!("answered {}", response.status)));
        }
        let answer: serde_json::Value =
            serde_json::from_slice(&response.body).map_err(|e| fail(e.to_string()))?;
        let documents = answer
            .get("server_keys")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| fail("no server_keys list".to_owned()))?;
        let document = documents
            .iter()
            .find(|d| {
                d.get("server_name").and_then(serde_json::Value::as_str) == Some(server.as_str())
            })
            .ok_or_else(|| fail("the notary has no keys for the server".to_owned()))?;
        let json = serde_json::to_vec(document).map_err(|e| fail(e.to_string()))?;
        verify_notary_signature(&json, &notary.server_name, &notary.verify_keys)?;
        Ok(json)
    }
}

#[async_trait]
impl KeySource for HttpKeySource {
    async fn fetch_server_keys(&self, server: &ServerName) -> Result<Vec<u8>, Error> {
        let direct = self.direct(server).await;
        let mut last = match direct {
            Ok(json) => return Ok(json),
            Err(e) => e,
        };
        for notary in &self.notaries {
            match self.via_notary(notary, server).await {
                Ok(json) => return Ok(json),
                Err(e) => {
                    tracing::debug!(%server, notary = %notary.server_name, error = %e, "Notary key query failed.");
                    last = e;
                }
            }
        }
        Err(last)
    }
}
