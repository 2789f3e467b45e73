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
    map: Mutex<Tokens>,
}

/// The cache's entries and, per device, the tokens among them: a logout, a device deletion
/// or a re-login touches only that device's entries, not the whole cache.
#[derive(Default)]
struct Tokens {
    by_token: FxHashMap<String, (UserId, DeviceId, bool)>,
    by_device: FxHashMap<(UserId, DeviceId), Vec<String>>,
}

const TOKEN_CACHE_LIMIT: usize = 200_000;

impl TokenCache {
    fn get(&self, token: &str) -> Option<(UserId, DeviceId, bool)> {
        lock(&self.map).by_token.get(token).cloned()
    }

    fn put(&self, token: String, entry: (UserId, DeviceId, bool)) {
        let mut tokens = lock(&self.map);
        if tokens.by_token.len() >= TOKEN_CACHE_LIMIT {
            tokens.by_token.clear();
            tokens.by_device.clear();
        }
        let key = (entry.0.clone(), entry.1.clone());
        if let Some(old) = tokens.by_token.insert(token.clone(), entry) {
            // Same token, fresher entry (e.g. an admin check): drop it from its old device.
            tokens.unlink(&(old.0, old.1), &token);
        }
        tokens.by_device.entry(key).or_default().push(token);
    }

    /// Forgets a token (logout).
    pub fn remove(&self, token: &str) {
        let mut tokens = lock(&self.map);
        if let Some((user, device, _)) = tokens.by_token.remove(token) {
            tokens.unlink(&(user, device), token);
        }
    }

    /// Forgets every token of a device.
    pub fn remove_device(&self, user: &UserId, device: &DeviceId) {
        self.remove_device_counted(user, device);
    }

    /// [`Self::remove_device`], answering how many cache entries it looked at.
    fn remove_device_counted(&self, user: &UserId, device: &DeviceId) -> usize {
        let mut tokens = lock(&self.map);
        let Some(list) = tokens.by_device.remove(&(user.clone(), device.clone())) else {
            return 0;
        };
        for token in &list {
            tokens.by_token.remove(token);
        }
        list.len()
    }
}

impl Tokens {
    fn unlink(&mut self, key: &(UserId, DeviceId), token: &str) {
        if let Some(list) = self.by_device.get_mut(key) {
            list.retain(|t| t != token);
            if list.is_empty() {
                self.by_device.remove(key);
            }
        }
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

    /// Resolves `token` for an admin endpoint: always from the deployment, never from the
    /// cache, so an admin demoted (by Synapse's admin API, or in the database) is refused on
    /// the next request. Admin requests are rare; the read is cheap. The fresh entry replaces
    /// the cached one.
    pub async fn authenticate_fresh(&self, token: String) -> Result<Requester, ApiError> {
        let resolved = self.access_tokens().resolve(&token).await?;
        let Some((user_id, device_id, admin)) = resolved else {
            self.tokens().remove(&token);
            return Err(ApiError::unknown_token());
        };
        self.tokens()
            .put(token.clone(), (user_id.clone(), device_id.clone(), admin));
        Ok(Requester {
            user_id,
            device_id,
            admin,
            token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(user: &str, device: &str) -> (UserId, DeviceId, bool) {
        let user = UserId::parse(&format!("@{user}:test")).unwrap();
        (user, DeviceId::parse(device).unwrap(), false)
    }

    #[test]
    fn removing_a_device_forgets_only_its_tokens() {
        let cache = TokenCache::default();
        cache.put("a1".into(), entry("alice", "PHONE"));
        cache.put("a2".into(), entry("alice", "PHONE"));
        cache.put("a3".into(), entry("alice", "LAPTOP"));
        cache.put("b1".into(), entry("bob", "PHONE"));
        let (alice, phone, _) = entry("alice", "PHONE");
        assert_eq!(cache.remove_device_counted(&alice, &phone), 2);
        assert_eq!(cache.get("a1"), None);
        assert_eq!(cache.get("a2"), None);
        assert_eq!(cache.get("a3"), Some(entry("alice", "LAPTOP")));
        assert_eq!(cache.get("b1"), Some(entry("bob", "PHONE")));
        // A logged-out token leaves the device index too.
        cache.remove("a3");
        let (_, laptop, _) = entry("alice", "LAPTOP");
        assert_eq!(cache.remove_device_counted(&alice, &laptop), 0);
        assert_eq!(cache.remove_device_counted(&alice, &phone), 0);
    }

    #[test]
    fn removing_a_device_does_not_depend_on_other_users_tokens() {
        let visited = |others: usize| {
            let cache = TokenCache::default();
            for i in 0..others {
                cache.put(format!("t{i}"), entry(&format!("u{i}"), "DEV"));
            }
            cache.put("mine1".into(), entry("alice", "PHONE"));
            cache.put("mine2".into(), entry("alice", "PHONE"));
            let (alice, phone, _) = entry("alice", "PHONE");
            let visited = cache.remove_device_counted(&alice, &phone);
            assert_eq!(cache.get("t0").is_some(), others > 0);
            visited
        };
        assert_eq!(visited(0), 2);
        assert_eq!(visited(50_000), 2);
    }

    #[test]
    fn a_refreshed_entry_moves_between_devices() {
        let cache = TokenCache::default();
        cache.put("t".into(), entry("alice", "OLD"));
        cache.put("t".into(), entry("alice", "NEW"));
        let (alice, old, _) = entry("alice", "OLD");
        assert_eq!(cache.remove_device_counted(&alice, &old), 0);
        assert_eq!(cache.get("t"), Some(entry("alice", "NEW")));
        let (_, new, _) = entry("alice", "NEW");
        assert_eq!(cache.remove_device_counted(&alice, &new), 1);
        assert_eq!(cache.get("t"), None);
    }
}
