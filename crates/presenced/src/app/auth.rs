//! Who a request comes from: access tokens resolved to a [`Requester`] through the
//! deployment's [`AccessTokens`] (the standalone mode's own store today; Synapse's tables
//! beside Synapse), with a bounded in-memory cache so a hot endpoint does not read the
//! database for every request. A logout removes its entries.
//! Spec: <https://spec.matrix.org/v1.15/client-server-api/#using-access-tokens>.

use std::sync::Mutex;

use async_trait::async_trait;
use presence_router::{DeviceId, UserId};
use presence_store::PresenceStore;
use rustc_hash::FxHashMap;

use crate::{app::Store, error::ApiError, lock};

/// The authenticated requester.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    /// The user.
    pub user_id: UserId,
    /// The device the token belongs to.
    pub device_id: DeviceId,
    /// Whether the user is a server admin.
    pub admin: bool,
    /// The token itself (for logout).
    pub token: String,
}

/// Where access tokens come from: one implementation per deployment mode, chosen once at
/// startup.
#[async_trait]
pub trait AccessTokens: Send + Sync + 'static {
    /// The user, device and admin flag behind `token`, or `None` if it is not a valid token.
    async fn resolve(&self, token: &str) -> Result<Option<(UserId, DeviceId, bool)>, ApiError>;
}

/// The standalone mode's tokens: the devices table of its own store.
pub struct StoreTokens(pub Store);

#[async_trait]
impl AccessTokens for StoreTokens {
    async fn resolve(&self, token: &str) -> Result<Option<(UserId, DeviceId, bool)>, ApiError> {
        let Some((user_id, device_id)) = self.0.resolve_token(token).await? else {
            return Ok(None);
        };
        let admin = self.0.get_user(&user_id).await?.is_some_and(|u| u.admin);
        Ok(Some((user_id, device_id, admin)))
    }
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
        lock(&self.map).get(token).cloned()
    }

    fn put(&self, token: String, entry: (UserId, DeviceId, bool)) {
        let mut map = lock(&self.map);
        if map.len() >= TOKEN_CACHE_LIMIT {
            map.clear();
        }
        map.insert(token, entry);
    }

    /// Forgets a token (logout).
    pub fn remove(&self, token: &str) {
        lock(&self.map).remove(token);
    }

    /// Forgets every token of a device.
    pub fn remove_device(&self, user: &UserId, device: &DeviceId) {
        lock(&self.map).retain(|_, (u, d, _)| !(u == user && d == device));
    }
}

impl super::App {
    /// Resolves `token` (from the cache when possible): 401 `M_UNKNOWN_TOKEN` if it is not
    /// valid.
    pub async fn authenticate(&self, token: String) -> Result<Requester, ApiError> {
        let (user_id, device_id, admin) = match self.tokens().get(&token) {
            Some(found) => found,
            None => {
                let found = self
                    .access_tokens()
                    .resolve(&token)
                    .await?
                    .ok_or_else(ApiError::unknown_token)?;
                self.tokens().put(token.clone(), found.clone());
                found
            }
        };
        Ok(Requester {
            user_id,
            device_id,
            admin,
            token,
        })
    }
}
