//! `X-Matrix` request authentication: signing outbound requests and verifying inbound ones.
//!
//! Both directions use ruma's `XMatrix` (`sign_http_request` / `verify_http_request`), which
//! builds the signed object (`method`, `uri`, `origin`, `destination`, `content`) in canonical
//! JSON. This module adds the policy around it: the request must be for us, the origin must be
//! allowed by `federation_domain_whitelist`, and the origin's key must verify.
//!
//! Spec: <https://spec.matrix.org/v1.15/server-server-api/#request-authentication>.

use std::{collections::BTreeSet, fmt, sync::Arc};

use presence_router::ServerName;
use ruma::{
    api::federation::authentication::{XMatrix, XMatrixSigningInput},
    serde::Base64,
    signatures::{PublicKeyMap, PublicKeySet},
};

use crate::{Error, KeyCache, SigningKey, keys::to_ruma_server_name};

/// Adds an `Authorization: X-Matrix ...` header to `request`, signed by `key` for a request
/// from `origin` to `destination`. The request URI must be in origin form (path and query)
/// or absolute; the body is the exact bytes that will be sent (empty or a JSON object).
pub fn sign_request(
    key: &SigningKey,
    origin: &ServerName,
    destination: &ServerName,
    request: &mut http::Request<Vec<u8>>,
) -> Result<(), Error> {
    if request.uri().path_and_query().is_none() {
        return Err(Error::Signing("the request URI has no path".to_owned()));
    }
    let input = XMatrixSigningInput::new(
        to_ruma_server_name(origin)?,
        to_ruma_server_name(destination)?,
        key.key_pair(),
    );
    let header =
        XMatrix::sign_http_request(request, input).map_err(|e| Error::Signing(e.to_string()))?;
    let value = http::HeaderValue::from(&header);
    request
        .headers_mut()
        .insert(http::header::AUTHORIZATION, value);
    Ok(())
}

/// Verifies inbound federation requests for one server name.
#[derive(Clone)]
pub struct RequestVerifier {
    server_name: ServerName,
    ruma_name: ruma::OwnedServerName,
    whitelist: Option<Arc<BTreeSet<ServerName>>>,
    keys: Arc<KeyCache>,
}

impl fmt::Debug for RequestVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestVerifier")
            .field("server_name", &self.server_name)
            .field("whitelist", &self.whitelist)
            .finish_non_exhaustive()
    }
}

impl RequestVerifier {
    /// A verifier for requests to `server_name`. With `whitelist` set, only those origins
    /// are accepted (the reference's `federation_domain_whitelist`).
    pub fn new(
        server_name: ServerName,
        whitelist: Option<BTreeSet<ServerName>>,
        keys: Arc<KeyCache>,
    ) -> Result<Self, Error> {
        let ruma_name = to_ruma_server_name(&server_name)?;
        Ok(Self {
            server_name,
            ruma_name,
            whitelist: whitelist.map(Arc::new),
            keys,
        })
    }

    /// The server name requests must be addressed to.
    pub fn server_name(&self) -> &ServerName {
        &self.server_name
    }

    /// Whether `origin` may talk to us at all.
    pub fn origin_allowed(&self, origin: &ServerName) -> bool {
        self.whitelist.as_ref().is_none_or(|w| w.contains(origin))
    }

    /// Checks the `X-Matrix` authorization of `request` and returns the authenticated origin.
    ///
    /// - missing or malformed header, a destination that is not us, an unknown key or a bad
    ///   signature: [`Error::Unauthorized`] / [`Error::RemoteKeys`] (401 `M_UNAUTHORIZED`);
    /// - an origin outside the whitelist: [`Error::Forbidden`] (403 `M_FORBIDDEN`), checked
    ///   before any key is fetched so that unwanted servers cost us nothing.
    pub async fn verify<B: AsRef<[u8]>>(
        &self,
        request: &http::Request<B>,
    ) -> Result<ServerName, Error> {
        let checked = self.check_header(request.headers(), request.uri())?;
        check_json(request.body().as_ref())?;
        let key = self.origin_key(&checked).await?;
        self.check_signature(&checked, key, request)
    }

    /// The checks that need neither the body nor the network: the header parses, names us
    /// as the destination and a valid origin other than us that the whitelist allows. Run
    /// before a body is read, so a malformed or unwanted request costs nothing more.
    pub fn check_header(
        &self,
        headers: &http::HeaderMap,
        uri: &http::Uri,
    ) -> Result<CheckedHeader, Error> {
        let header = XMatrix::extract_from_http_headers(headers)
            .map_err(|e| Error::unauthorized(format!("bad X-Matrix authorization: {e}")))?;
        if header
            .destination
            .as_ref()
            .is_some_and(|d| *d != self.ruma_name)
        {
            return Err(Error::unauthorized(
                "the request is addressed to another server",
            ));
        }
        let origin = ServerName::parse(header.origin.as_str())
            .map_err(|e| Error::unauthorized(format!("bad origin: {e}")))?;
        if origin == self.server_name {
            return Err(Error::unauthorized("the request claims to come from us"));
        }
        if !self.origin_allowed(&origin) {
            return Err(Error::Forbidden(format!(
                "federation with {origin} is not allowed"
            )));
        }
        if uri.path_and_query().is_none() {
            return Err(Error::unauthorized("the request URI has no path"));
        }
        Ok(CheckedHeader { header, origin })
    }

    /// The origin's public key named by the header (from the cache, or fetched).
    pub async fn origin_key(&self, checked: &CheckedHeader) -> Result<Base64, Error> {
        self.keys
            .public_key(&checked.origin, checked.header.key.as_str())
            .await
    }

    /// Verifies the signature over `request` (body included) with the origin's `key`, and
    /// returns the authenticated origin.
    pub fn check_signature<B: AsRef<[u8]>>(
        &self,
        checked: &CheckedHeader,
        key: Base64,
        request: &http::Request<B>,
    ) -> Result<ServerName, Error> {
        // One ed25519 verification costs tens of microseconds: cheaper inline than the
        // hand-off to the blocking pool would be.
        let map = PublicKeyMap::from([(
            checked.origin.as_str().to_owned(),
            PublicKeySet::from([(checked.header.key.as_str().to_owned(), key)]),
        )]);
        checked
            .header
            .verify_http_request(request, &self.ruma_name, &map)
            .map_err(|e| Error::unauthorized(format!("invalid signature: {e}")))?;
        Ok(checked.origin.clone())
    }
}

/// Signed content must be JSON (or empty); say so instead of "bad signature".
pub fn check_json(body: &[u8]) -> Result<(), Error> {
    if !body.is_empty() && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
        return Err(Error::NotJson);
    }
    Ok(())
}

/// An `X-Matrix` header that passed [`RequestVerifier::check_header`]; its signature is
/// not checked yet.
#[derive(Debug)]
pub struct CheckedHeader {
    header: XMatrix,
    origin: ServerName,
}

impl CheckedHeader {
    /// The origin the header claims (not authenticated yet).
    pub fn origin(&self) -> &ServerName {
        &self.origin
    }
}
