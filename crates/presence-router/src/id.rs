//! Validated Matrix identifiers: [`UserId`] and [`ServerName`].
//!
//! These are Presenced's own types rather than ruma's so that the module API stays stable
//! when ruma makes a breaking release; the HTTP edge converts between the two.
//! Grammar: <https://spec.matrix.org/v1.15/appendices/#user-identifiers> and
//! <https://spec.matrix.org/v1.15/appendices/#server-name>.

use std::{fmt, sync::Arc};

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// The longest user ID the specification allows, in bytes (sigil included).
pub const MAX_USER_ID_LEN: usize = 255;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The user ID does not start with `@`.
    #[error("user ID must start with '@'")]
    MissingSigil,
    /// There is no `:` between the localpart and the server name.
    #[error("user ID must contain ':' between localpart and server name")]
    MissingColon,
    /// The localpart is empty.
    #[error("user ID localpart is empty")]
    EmptyLocalpart,
    /// The localpart holds a character outside the (historical) grammar.
    #[error("user ID localpart contains an invalid character")]
    InvalidLocalpart,
    /// The whole ID is longer than 255 bytes.
    #[error("user ID is longer than 255 bytes")]
    TooLong,
    /// The server name is not a hostname, IP literal, or has a bad port.
    #[error("invalid server name")]
    InvalidServerName,
    /// A device ID is empty, too long, or holds control characters.
    #[error("invalid device ID")]
    InvalidDeviceId,
}

/// A server name: `hostname`, `IPv4`, or `[IPv6]`, with an optional `:port`.
///
/// Cheap to clone (reference counted). A server name is a byte offset into a shared string:
/// the whole string when parsed on its own, the tail of a user ID when taken from
/// [`UserId::server_name`]. That way a user's server costs one reference-count increment,
/// with no allocation and no second validation, on the hot paths (fan-out to remote
/// servers, inbound EDUs). It keeps the user ID's string alive, which is a few bytes.
#[derive(Clone)]
pub struct ServerName {
    repr: Arc<str>,
    /// Where the server name starts in `repr`: 0, or the byte after a user ID's first `:`.
    start: usize,
}

impl ServerName {
    /// Parses and validates a server name.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        validate_server_name(s)?;
        Ok(Self {
            repr: Arc::from(s),
            start: 0,
        })
    }

    /// The server name as a string.
    pub fn as_str(&self) -> &str {
        // `start` always follows an ASCII ':' (or is 0), so it is a char boundary.
        &self.repr[self.start..]
    }
}

/// A user ID: `@localpart:server_name`. Cheap to clone (reference counted).
///
/// Localparts are accepted in the historical grammar (printable ASCII except `:`), because
/// remote servers may still host such users.
// One `Arc<str>` and nothing else: user IDs are the most numerous values (every interned
// user, every state), so [`Self::server_name`] returns an owned view rather than this
// struct storing one (8 more bytes per ID).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId {
    full: Arc<str>,
}

impl UserId {
    /// Parses and validates a user ID.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        validate_user_id(s)?;
        Ok(Self { full: Arc::from(s) })
    }

    /// Builds `@localpart:server` from parts, validating the result.
    pub fn from_parts(localpart: &str, server: &ServerName) -> Result<Self, IdError> {
        Self::parse(&format!("@{localpart}:{}", server.as_str()))
    }

    /// The full ID, sigil included.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The part between `@` and the first `:`.
    pub fn localpart(&self) -> &str {
        let colon = self.colon();
        &self.full[1..colon]
    }

    /// The server name part (after the first `:`): a view of this ID's string, so no
    /// allocation and no re-validation.
    pub fn server_name(&self) -> ServerName {
        ServerName {
            repr: self.full.clone(),
            start: self.colon() + 1,
        }
    }

    /// Whether this user lives on `server`.
    pub fn is_on(&self, server: &ServerName) -> bool {
        self.full[self.colon() + 1..] == *server.as_str()
    }

    fn colon(&self) -> usize {
        // Validation guarantees a ':' after the sigil; fall back to the end for safety.
        self.full.find(':').unwrap_or(self.full.len())
    }
}

// Identity is the string (the offset inside a shared string is storage detail), ordered and
// hashed exactly as the string was before: `BTreeMap`/`HashMap` keys behave as they did.
macro_rules! str_identity_impls {
    ($t:ty) => {
        impl PartialEq for $t {
            fn eq(&self, other: &Self) -> bool {
                self.as_str() == other.as_str()
            }
        }
        impl Eq for $t {}
        impl PartialOrd for $t {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }
        impl Ord for $t {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                self.as_str().cmp(other.as_str())
            }
        }
        impl std::hash::Hash for $t {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.as_str().hash(state);
            }
        }
    };
}

str_identity_impls!(ServerName);

impl PartialEq<str> for ServerName {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ServerName {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

fn validate_user_id(s: &str) -> Result<(), IdError> {
    if s.len() > MAX_USER_ID_LEN {
        return Err(IdError::TooLong);
    }
    let rest = s.strip_prefix('@').ok_or(IdError::MissingSigil)?;
    let (localpart, server) = rest.split_once(':').ok_or(IdError::MissingColon)?;
    if localpart.is_empty() {
        return Err(IdError::EmptyLocalpart);
    }
    // Historical grammar: 0x21-0x39 and 0x3B-0x7E (printable ASCII except ':').
    if !localpart
        .bytes()
        .all(|b| (0x21..=0x7E).contains(&b) && b != b':')
    {
        return Err(IdError::InvalidLocalpart);
    }
    validate_server_name(server)
}

fn validate_server_name(s: &str) -> Result<(), IdError> {
    let bad = || IdError::InvalidServerName;
    if s.is_empty() || s.len() > 255 {
        return Err(bad());
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']').ok_or_else(bad)?;
        let v6 = &rest[..end];
        if v6.is_empty()
            || !v6
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(bad());
        }
        let after = &rest[end + 1..];
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(bad)?),
        };
        (None, port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(s), None),
        }
    };
    if let Some(host) = host {
        let ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !ok {
            return Err(bad());
        }
    }
    if let Some(port) = port {
        let ok = !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
        if !ok || port.parse::<u32>().map_or(true, |p| p > 65535) {
            return Err(bad());
        }
    }
    Ok(())
}

/// A room ID: `!opaque:server_name`. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(Arc<str>);

impl RoomId {
    /// Parses and validates a room ID.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.len() > MAX_USER_ID_LEN {
            return Err(IdError::TooLong);
        }
        let rest = s.strip_prefix('!').ok_or(IdError::MissingSigil)?;
        // Room version 12 IDs are `!` and the create event's hash, with no server name;
        // earlier versions are `!opaque:server`.
        let (opaque, server) = match rest.split_once(':') {
            Some((opaque, server)) => (opaque, Some(server)),
            None => (rest, None),
        };
        if opaque.is_empty() {
            return Err(IdError::EmptyLocalpart);
        }
        if !opaque.bytes().all(|b| (0x21..=0x7E).contains(&b)) {
            return Err(IdError::InvalidLocalpart);
        }
        if let Some(server) = server {
            validate_server_name(server)?;
        }
        Ok(Self(Arc::from(s)))
    }

    /// The full ID, sigil included.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The server name part (empty for room version 12 IDs, which have none).
    pub fn server_name(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, s)| s)
    }
}

/// A device ID: any non-empty string of at most 255 bytes without control characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(Arc<str>);

impl DeviceId {
    /// Parses and validates a device ID.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.is_empty() || s.len() > MAX_USER_ID_LEN || s.chars().any(char::is_control) {
            return Err(IdError::InvalidDeviceId);
        }
        Ok(Self(Arc::from(s)))
    }

    /// The ID as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_id_impls {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self.as_str(), f)
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }
        impl std::str::FromStr for $t {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }
        impl TryFrom<&str> for $t {
            type Error = IdError;
            fn try_from(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).map_err(|e| de::Error::custom(format!("{e}: {s:?}")))
            }
        }
    };
}

string_id_impls!(UserId);
string_id_impls!(ServerName);
string_id_impls!(RoomId);
string_id_impls!(DeviceId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_user_ids() {
        for s in [
            "@alice:example.com",
            "@a:localhost:8008",
            "@bob:1.2.3.4",
            "@c:[::1]:8448",
            "@=historical!:example.org",
        ] {
            let id = UserId::parse(s).unwrap();
            assert_eq!(id.as_str(), s);
        }
        let id = UserId::parse("@alice:localhost:8008").unwrap();
        assert_eq!(id.localpart(), "alice");
        assert_eq!(id.server_name(), "localhost:8008");
    }

    #[test]
    fn server_name_of_a_user_is_a_server_name() {
        let id = UserId::parse("@alice:localhost:8008").unwrap();
        let parsed = ServerName::parse("localhost:8008").unwrap();
        assert_eq!(id.server_name(), parsed);
        assert!(id.is_on(&parsed));
        let mut set = std::collections::HashSet::new();
        set.insert(parsed);
        assert!(set.contains(&id.server_name()), "hashes as the string does");
        assert_eq!(format!("{:?}", id.server_name()), "\"localhost:8008\"");
    }

    #[test]
    fn rejects_malformed_user_ids() {
        let cases = [
            ("alice:example.com", IdError::MissingSigil),
            ("@alice", IdError::MissingColon),
            ("@:example.com", IdError::EmptyLocalpart),
            ("@al ice:example.com", IdError::InvalidLocalpart),
            ("@alice:", IdError::InvalidServerName),
            ("@alice:exa mple.com", IdError::InvalidServerName),
            ("@alice:host:99999", IdError::InvalidServerName),
            ("@alice:[zz]", IdError::InvalidServerName),
        ];
        for (s, want) in cases {
            assert_eq!(UserId::parse(s).unwrap_err(), want, "{s}");
        }
        let long = format!("@{}:x.org", "a".repeat(250));
        assert_eq!(UserId::parse(&long).unwrap_err(), IdError::TooLong);
    }

    #[test]
    fn room_and_device_ids() {
        let r = RoomId::parse("!abc:example.org").unwrap();
        assert_eq!(r.server_name(), "example.org");
        assert!(RoomId::parse("#alias:example.org").is_err());
        assert!(RoomId::parse("!:example.org").is_err());
        // Room version 12: the create event's hash, no server name.
        let v12 = RoomId::parse("!FLwoJLFKadcQVTt9VxqDL4fB6Hrp9rGFcM0pnSfGeJI").unwrap();
        assert_eq!(v12.server_name(), "");
        assert!(RoomId::parse("!").is_err());
        assert!(RoomId::parse("!a b").is_err());
        assert!(DeviceId::parse("ABCDEF").is_ok());
        assert!(DeviceId::parse("").is_err());
    }

    #[test]
    fn serde_round_trip_validates() {
        let id: UserId = serde_json::from_str("\"@a:b.c\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"@a:b.c\"");
        assert!(serde_json::from_str::<UserId>("\"nope\"").is_err());
    }
}
