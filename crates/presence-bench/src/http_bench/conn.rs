//! One plain HTTP/1.1 connection per load task (each update worker, each watcher).
//!
//! The load phase sends tens of thousands of requests per second from one core; a general
//! client (URL parsing, a connection pool, per-request middleware) would make the generator
//! the bottleneck of what it measures. A task owns its connection, so requests on it are
//! sequential, as a real client's long-poll loop is; a broken connection is reopened on the
//! next request.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    Method, Request, StatusCode,
    client::conn::http1::{self, SendRequest},
    header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue},
};
use tokio::net::TcpStream;

use super::client::matrix_error;
use crate::BenchError;

/// Where the load connections go: `host:port` of an `http://` base URL.
#[derive(Debug, Clone)]
pub struct Target {
    authority: String,
    host: HeaderValue,
}

impl Target {
    /// The target of `base_url`, which must be `http://host:port` (no TLS: the benchmark runs
    /// on loopback).
    pub fn new(base_url: &str) -> Result<Self, BenchError> {
        let bad = || {
            BenchError::InvalidArgs(format!(
                "--base-url must be http://host[:port] (the load phase speaks plain HTTP/1.1), not {base_url}"
            ))
        };
        let rest = base_url.strip_prefix("http://").ok_or_else(bad)?;
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(bad());
        }
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(Self {
            host: HeaderValue::from_str(authority).map_err(|_| bad())?,
            authority: with_port,
        })
    }
}

/// A task's connection, opened on first use and reopened after an error.
#[derive(Debug)]
pub struct Conn {
    target: Target,
    sender: Option<SendRequest<Full<Bytes>>>,
}

/// The `Authorization` header of an access token.
pub fn bearer(token: &str) -> Result<HeaderValue, BenchError> {
    HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
        BenchError::Http("the server issued an access token that is not a header value".into())
    })
}

impl Conn {
    /// A connection to `target`, not yet opened.
    pub fn new(target: Target) -> Self {
        Self {
            target,
            sender: None,
        }
    }

    async fn open(&self) -> Result<SendRequest<Full<Bytes>>, BenchError> {
        let transport = |e: &dyn std::fmt::Display| {
            BenchError::Http(format!("connecting to {}: {e}", self.target.authority))
        };
        let stream = TcpStream::connect(&self.target.authority)
            .await
            .map_err(|e| transport(&e))?;
        stream.set_nodelay(true).map_err(|e| transport(&e))?;
        let (sender, connection) = http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| transport(&e))?;
        tokio::spawn(async move {
            // Ends when the connection closes or fails; the next request reopens it.
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// Sends one request and returns the body of a 2xx answer; otherwise the Matrix error,
    /// or a transport failure or the timeout (the connection is then dropped and reopened
    /// next time).
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        auth: &HeaderValue,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<Bytes, BenchError> {
        let result = tokio::time::timeout(timeout, self.exchange(method, path, auth, body)).await;
        match result {
            Ok(Ok((status, body))) if status.is_success() => Ok(body),
            Ok(Ok((status, body))) => Err(matrix_error(status.as_u16(), &body)),
            Ok(Err(e)) => {
                self.sender = None;
                Err(e)
            }
            Err(_) => {
                self.sender = None;
                Err(BenchError::Http(format!(
                    "{path}: no answer within {timeout:?}"
                )))
            }
        }
    }

    async fn exchange(
        &mut self,
        method: Method,
        path: &str,
        auth: &HeaderValue,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes), BenchError> {
        let sender = match &mut self.sender {
            Some(s) if !s.is_closed() => s,
            _ => self.sender.insert(self.open().await?),
        };
        let transport = |e: &dyn std::fmt::Display| BenchError::Http(format!("{path}: {e}"));
        sender.ready().await.map_err(|e| transport(&e))?;
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.target.host.clone())
            .header(AUTHORIZATION, auth.clone());
        if body.is_some() {
            request = request.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let request = request
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| transport(&e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| transport(&e))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| transport(&e))?
            .to_bytes();
        Ok((status, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Target::new("http://127.0.0.1:8008/").unwrap();
        assert_eq!(t.authority, "127.0.0.1:8008");
        assert_eq!(t.host, "127.0.0.1:8008");
        assert_eq!(
            Target::new("http://localhost").unwrap().authority,
            "localhost:80"
        );
        assert!(Target::new("https://example.org").is_err());
        assert!(Target::new("http://host/path").is_err());
        assert!(Target::new("http://").is_err());
    }
}
