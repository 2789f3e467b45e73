//! Access-token authentication: the [`Authed`] extractor.
//!
//! Tokens come from `Authorization: Bearer <token>` or the deprecated `access_token` query
//! parameter. Resolved tokens are cached in memory (a logout removes its entry), so a hot
//! endpoint does not read the database for every request.
//! Spec: <https://spec.matrix.org/v1.15/client-server-api/#using-access-tokens>.

use std::{borrow::Cow, sync::Mutex};

use axum::{extract::FromRequestParts, http::request::Parts};
use presence_router::{DeviceId, UserId};
use presence_store::PresenceStore;
use rustc_hash::FxHashMap;

use super::AppState;
use crate::error::ApiError;

/// The authenticated requester.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authed {
    /// The user.
    pub user_id: UserId,
    /// The device the token belongs to.
    pub device_id: DeviceId,
    /// Whether the user is a server admin.
    pub admin: bool,
    /// The token itself (for logout).
    pub token: String,
}

/// Resolved tokens. Bounded: past the limit the cache is cleared (entries are re-read from
/// the store on demand). Hashed with Fx, not SipHash: only tokens the server issued are ever
/// inserted, so a client cannot choose keys to collide.
#[derive(Default)]
pub struct TokenCache {
    map: Mutex<FxHashMap<String, (UserId, DeviceId, bool)>>,
}

const TOKEN_CACHE_LIMIT: usize = 200_000;

impl TokenCache {
    fn get(&self, token: &str) -> Option<(UserId, DeviceId, bool)> {
        crate::lock(&self.map).get(token).cloned()
    }

    fn put(&self, token: String, entry: (UserId, DeviceId, bool)) {
        let mut map = crate::lock(&self.map);
        if map.len() >= TOKEN_CACHE_LIMIT {
            map.clear();
        }
        map.insert(token, entry);
    }

    /// Forgets a token (logout).
    pub fn remove(&self, token: &str) {
        crate::lock(&self.map).remove(token);
    }

    /// Forgets every token of a device.
    pub fn remove_device(&self, user: &UserId, device: &DeviceId) {
        crate::lock(&self.map).retain(|_, (u, d, _)| !(u == user && d == device));
    }
}

/// The access token of a request, if any.
pub fn access_token(parts: &Parts) -> Option<String> {
    if let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))?;
        return Some(token.trim().to_owned());
    }
    let query = parts.uri.query()?;
    form_urlencoded_get(query, "access_token")
}

/// The first value of `key` in a query string, percent-decoded.
pub fn form_urlencoded_get(query: &str, key: &str) -> Option<String> {
    form_urlencoded_raw(query, key).map(|v| percent_decode(v).into_owned())
}

/// The first value of `key` in a query string as sent (still percent-encoded).
pub fn form_urlencoded_raw<'q>(query: &'q str, key: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then_some(v)
    })
}

/// Decodes `%XX` escapes and `+` (a space); borrows when there is nothing to decode.
pub fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

impl FromRequestParts<AppState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = access_token(parts).ok_or(ApiError::MissingToken)?;
        if let Some((user_id, device_id, admin)) = state.tokens().get(&token) {
            return Ok(Self {
                user_id,
                device_id,
                admin,
                token,
            });
        }
        let (user_id, device_id) = state
            .store()
            .resolve_token(&token)
            .await?
            .ok_or(ApiError::UnknownToken)?;
        let admin = state
            .store()
            .get_user(&user_id)
            .await?
            .is_some_and(|u| u.admin);
        state
            .tokens()
            .put(token.clone(), (user_id.clone(), device_id.clone(), admin));
        Ok(Self {
            user_id,
            device_id,
            admin,
            token,
        })
    }
}

/// An [`Authed`] requester who is a server admin (else 403 `M_FORBIDDEN`).
#[derive(Debug, Clone)]
pub struct Admin(pub Authed);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let authed = Authed::from_request_parts(parts, state).await?;
        if !authed.admin {
            return Err(ApiError::forbidden("You are not a server admin"));
        }
        Ok(Self(authed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(
            form_urlencoded_get("a=1&access_token=x%2By+z", "access_token").as_deref(),
            Some("x+y z")
        );
        assert_eq!(form_urlencoded_get("a=1", "access_token"), None);
        assert_eq!(
            form_urlencoded_get("x=%zz%4", "x").as_deref(),
            Some("%zz%4")
        );
    }
}
