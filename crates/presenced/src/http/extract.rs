//! Extractors that fail the Matrix way: [`MatrixPath`] for path parameters, and
//! [`query_uint`] for the integer query parameters of the admin API; and [`ClientIp`], the
//! address the per-address rate limits key on.
//!
//! axum's own `Path` and `Query` reject with plain-text bodies; every error a client sees must
//! be a Matrix error with an `errcode`.

use std::{
    convert::Infallible,
    net::{IpAddr, SocketAddr},
};

use axum::extract::{ConnectInfo, FromRequestParts, Path, rejection::PathRejection};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::{error::ApiError, query::form_urlencoded_raw};

/// Path parameters of type `T`, percent-decoded. A parameter that does not decode (`%ff`,
/// invalid UTF-8) is 400 `M_INVALID_PARAM`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MatrixPath<T>(pub T);

impl<S, T> FromRequestParts<S> for MatrixPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Self(value)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => Err(ApiError::invalid_param(
                format!("Invalid path parameter: {}", e.body_text()),
            )),
            // A route whose handler expects parameters it does not have: a bug of ours.
            Err(other) => Err(ApiError::internal(other)),
        }
    }
}

/// Set on the requests of a listener with `x_forwarded: true`: its peer is a reverse proxy,
/// and the client's address is the one the proxy wrote into `X-Forwarded-For`.
#[derive(Debug, Clone, Copy)]
pub struct ForwardedFor(pub bool);

/// The client's address: the peer of the connection, or behind a trusted proxy the last
/// `X-Forwarded-For` entry (the one the proxy itself appended; earlier entries are the
/// client's to choose). `None` for a request that came through no socket (in-process).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_canonical());
        if parts.extensions.get::<ForwardedFor>().is_some_and(|f| f.0) {
            let forwarded = parts
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .next_back()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .and_then(|ip| ip.trim().parse::<IpAddr>().ok());
            if let Some(ip) = forwarded {
                return Ok(Self(Some(ip.to_canonical())));
            }
        }
        Ok(Self(peer))
    }
}

/// The non-negative integer query parameter `name`, if present, as the reference's
/// `parse_integer` reads it: anything else (not a number, negative, too large) is 400
/// `M_INVALID_PARAM`.
pub(crate) fn query_uint(query: Option<&str>, name: &str) -> Result<Option<u64>, ApiError> {
    let Some(raw) = query.and_then(|q| form_urlencoded_raw(q, name)) else {
        return Ok(None);
    };
    let value = crate::query::percent_decode(raw);
    // `u64::from_str` takes a leading `+`; the reference's `int()` would too, but not a
    // space or a sign on its own, which `parse` rejects as well.
    value.parse::<u64>().map(Some).map_err(|_| {
        ApiError::invalid_param(format!(
            "Query parameter \"{name}\" must be a non-negative integer"
        ))
    })
}

#[cfg(test)]
mod tests {
    use presence_matrix::ErrorKind;

    use super::*;

    async fn client_ip(peer: Option<&str>, trusted: bool, forwarded: &[&str]) -> Option<IpAddr> {
        let mut request = axum::http::Request::builder();
        for f in forwarded {
            request = request.header("x-forwarded-for", *f);
        }
        let (mut parts, ()) = request.body(()).unwrap().into_parts();
        if let Some(peer) = peer {
            parts
                .extensions
                .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        }
        parts.extensions.insert(ForwardedFor(trusted));
        ClientIp::from_request_parts(&mut parts, &())
            .await
            .unwrap()
            .0
    }

    #[tokio::test]
    async fn the_client_address_is_the_peer_or_what_a_trusted_proxy_appended() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(
            client_ip(Some("10.0.0.1:5"), false, &[]).await,
            ip("10.0.0.1")
        );
        // An untrusted peer's header is the client's own words.
        assert_eq!(
            client_ip(Some("10.0.0.1:5"), false, &["1.2.3.4"]).await,
            ip("10.0.0.1")
        );
        // Behind the proxy: the entry it appended, not the one the client wrote first.
        assert_eq!(
            client_ip(Some("10.0.0.1:5"), true, &["6.6.6.6", "1.2.3.4, 5.6.7.8"]).await,
            ip("5.6.7.8")
        );
        assert_eq!(
            client_ip(Some("10.0.0.1:5"), true, &["garbage"]).await,
            ip("10.0.0.1")
        );
        // IPv4 over an IPv6 socket is one address, not two.
        assert_eq!(
            client_ip(Some("[::ffff:10.0.0.2]:5"), false, &[]).await,
            ip("10.0.0.2")
        );
        assert_eq!(client_ip(None, false, &[]).await, None);
    }

    #[test]
    fn integer_query_parameters() {
        assert_eq!(
            query_uint(Some("from=12&limit=3"), "limit").unwrap(),
            Some(3)
        );
        assert_eq!(query_uint(Some("limit=3"), "from").unwrap(), None);
        assert_eq!(query_uint(None, "from").unwrap(), None);
        for bad in [
            "from=x",
            "from=-1",
            "from=",
            "from=1.5",
            "from=99999999999999999999999",
        ] {
            let e = query_uint(Some(bad), "from").unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidParam, "{bad}");
        }
    }
}
