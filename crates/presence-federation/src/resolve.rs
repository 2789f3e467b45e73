//! Server-name resolution: from a server name to addresses, certificate name and `Host`.
//!
//! The order is the server-server specification's
//! (<https://spec.matrix.org/v1.15/server-server-api/#resolving-server-names>):
//! 1. an IP literal, or a hostname with an explicit port, is contacted directly;
//! 2. otherwise `https://<hostname>/.well-known/matrix/server` may delegate to another name
//!    (cached per its `Cache-Control`, 24 h by default, failures for 1 h), which is then
//!    resolved by the same rules minus the `.well-known` step;
//! 3. otherwise SRV `_matrix-fed._tcp.<hostname>` (then the deprecated `_matrix._tcp`);
//! 4. otherwise `<hostname>:8448`.
//!
//! Every address, from DNS or from a literal, passes the [`IpRangeFilter`] (the reference's
//! `federation_ip_range_blacklist` / `_whitelist`) before it is used: a server name must not
//! be a way to make us reach into private networks. SRV needs a DNS client (hickory); when the
//! system DNS configuration cannot be read, SRV is skipped with a warning and the rest works.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use ipnet::IpNet;
use presence_router::ServerName;
use tokio::time::Instant;

use crate::{
    Error,
    https::{Endpoint, HttpsConnector},
};

/// The default federation port.
pub const DEFAULT_FEDERATION_PORT: u16 = 8448;
/// Where delegation is published.
const WELL_KNOWN_PATH: &str = "/.well-known/matrix/server";
/// Redirects followed when fetching `.well-known`.
const MAX_WELL_KNOWN_REDIRECTS: usize = 5;
/// Largest `.well-known` body read.
const MAX_WELL_KNOWN_BYTES: usize = 50 * 1024;

/// Ranges blocked by default: the reference's default `federation_ip_range_blacklist`
/// (loopback, private, link-local, shared, documentation and multicast ranges).
pub const DEFAULT_IP_RANGE_BLACKLIST: &[&str] = &[
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "192.0.0.0/24",
    "169.254.0.0/16",
    "192.88.99.0/24",
    "198.18.0.0/15",
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "::1/128",
    "fe80::/10",
    "fc00::/7",
    "2001:db8::/32",
    "ff00::/8",
    "fec0::/10",
];

/// Ranges that are always blocked whatever the configuration says (as in the reference):
/// the unspecified addresses.
const ALWAYS_BLOCKED: &[&str] = &["0.0.0.0/32", "::/128"];

/// Which IP addresses federation may connect to: blocked if in a blacklisted range and in no
/// whitelisted range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRangeFilter {
    blacklist: Vec<IpNet>,
    whitelist: Vec<IpNet>,
}

impl Default for IpRangeFilter {
    fn default() -> Self {
        let parse = |s: &&str| s.parse::<IpNet>().ok();
        Self::new(
            DEFAULT_IP_RANGE_BLACKLIST
                .iter()
                .filter_map(parse)
                .collect(),
            Vec::new(),
        )
    }
}

impl IpRangeFilter {
    /// A filter from ranges (the unspecified addresses are always added to the blacklist).
    pub fn new(mut blacklist: Vec<IpNet>, whitelist: Vec<IpNet>) -> Self {
        blacklist.extend(
            ALWAYS_BLOCKED
                .iter()
                .filter_map(|s| s.parse::<IpNet>().ok()),
        );
        Self {
            blacklist,
            whitelist,
        }
    }

    /// Parses ranges written as CIDR (`10.0.0.0/8`) or single addresses (`::1`).
    pub fn parse<S: AsRef<str>>(blacklist: &[S], whitelist: &[S]) -> Result<Self, Error> {
        Ok(Self::new(
            parse_ranges(blacklist)?,
            parse_ranges(whitelist)?,
        ))
    }

    /// The same filter with extra whitelisted ranges (e.g. loopback for tests).
    pub fn allowing<S: AsRef<str>>(mut self, ranges: &[S]) -> Result<Self, Error> {
        self.whitelist.extend(parse_ranges(ranges)?);
        Ok(self)
    }

    /// Whether `ip` may be contacted.
    pub fn allows(&self, ip: IpAddr) -> bool {
        // An IPv4-mapped IPv6 address is the IPv4 address in disguise.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let blocked = self.blacklist.iter().any(|n| n.contains(&ip));
        !blocked || self.whitelist.iter().any(|n| n.contains(&ip))
    }
}

fn parse_ranges<S: AsRef<str>>(ranges: &[S]) -> Result<Vec<IpNet>, Error> {
    ranges
        .iter()
        .map(|r| {
            let r = r.as_ref().trim();
            r.parse::<IpNet>()
                .or_else(|_| r.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| Error::Config(format!("{r:?} is not an IP range")))
        })
        .collect()
}

/// One SRV answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SrvTarget {
    /// Target host.
    pub target: String,
    /// Target port.
    pub port: u16,
    /// Lower is tried first.
    pub priority: u16,
    /// Higher is preferred among equal priorities.
    pub weight: u16,
}

impl SrvTarget {
    /// An SRV answer.
    pub fn new(target: impl Into<String>, port: u16, priority: u16, weight: u16) -> Self {
        Self {
            target: target.into(),
            port,
            priority,
            weight,
        }
    }
}

/// Name lookups used by discovery (the system's, or a fake in tests).
#[async_trait]
pub trait Dns: Send + Sync + 'static {
    /// SRV records for `name`; empty when there are none or DNS failed.
    async fn srv(&self, name: &str) -> Vec<SrvTarget>;
    /// Addresses of `host` (A/AAAA, hosts file) with `port`.
    async fn lookup(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String>;
}

/// The system resolver for addresses (`getaddrinfo`, so the hosts file applies) and hickory
/// for SRV.
pub struct SystemDns {
    srv: Option<hickory_resolver::TokioResolver>,
}

impl std::fmt::Debug for SystemDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemDns")
            .field("srv", &self.srv.is_some())
            .finish()
    }
}

impl SystemDns {
    /// The system resolver; SRV lookups only when `use_srv` and the system DNS configuration
    /// is readable.
    pub fn new(use_srv: bool) -> Self {
        let srv = if use_srv {
            match hickory_resolver::TokioResolver::builder_tokio().and_then(|b| b.build()) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(error = %e, "No usable DNS configuration: SRV lookups are off.");
                    None
                }
            }
        } else {
            None
        };
        Self { srv }
    }
}

#[async_trait]
impl Dns for SystemDns {
    async fn srv(&self, name: &str) -> Vec<SrvTarget> {
        let Some(resolver) = &self.srv else {
            return Vec::new();
        };
        let fqdn = format!("{name}.");
        match resolver.srv_lookup(fqdn.as_str()).await {
            Ok(lookup) => lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    hickory_resolver::proto::rr::RData::SRV(srv) => Some(SrvTarget::new(
                        srv.target.to_ascii().trim_end_matches('.'),
                        srv.port,
                        srv.priority,
                        srv.weight,
                    )),
                    _ => None,
                })
                .collect(),
            Err(e) => {
                tracing::debug!(%name, error = %e, "No SRV record.");
                Vec::new()
            }
        }
    }

    async fn lookup(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        tokio::net::lookup_host((host, port))
            .await
            .map(Iterator::collect)
            .map_err(|e| e.to_string())
    }
}

/// A server name split into host and optional port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostPort<'a> {
    /// The host without IPv6 brackets.
    host: &'a str,
    ip: Option<IpAddr>,
    port: Option<u16>,
}

fn split_host_port(name: &str) -> Option<HostPort<'_>> {
    if let Some(rest) = name.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        return Some(HostPort {
            host: v6,
            ip: Some(IpAddr::V6(v6.parse().ok()?)),
            port,
        });
    }
    let (host, port) = match name.rsplit_once(':') {
        Some((h, p)) => (h, Some(p.parse().ok()?)),
        None => (name, None),
    };
    Some(HostPort {
        host,
        ip: host.parse().ok(),
        port,
    })
}

struct WellKnown {
    expires: Instant,
    delegated: Option<String>,
}

/// Resolves server names to [`Endpoint`]s, caching `.well-known` answers.
pub struct Resolver {
    dns: Arc<dyn Dns>,
    connector: Arc<HttpsConnector>,
    well_known: Mutex<HashMap<String, WellKnown>>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

impl Resolver {
    pub(crate) fn new(dns: Arc<dyn Dns>, connector: Arc<HttpsConnector>) -> Self {
        Self {
            dns,
            connector,
            well_known: Mutex::new(HashMap::new()),
        }
    }

    fn resolve_error(server: &str, reason: impl Into<String>) -> Error {
        Error::Resolve {
            server: server.to_owned(),
            reason: reason.into(),
        }
    }

    /// Where to send requests for `server`. Bounded by the request timeout, so a slow DNS
    /// server cannot hold a caller forever.
    pub async fn resolve(&self, server: &ServerName) -> Result<Endpoint, Error> {
        let limit = self.connector.config().request_timeout;
        tokio::time::timeout(limit, self.resolve_inner(server))
            .await
            .map_err(|_| Self::resolve_error(server.as_str(), "resolution timed out"))?
    }

    async fn resolve_inner(&self, server: &ServerName) -> Result<Endpoint, Error> {
        let name = server.as_str();
        let hp = split_host_port(name)
            .ok_or_else(|| Self::resolve_error(name, "not a valid server name"))?;
        if hp.ip.is_some() || hp.port.is_some() {
            return self.direct(name, &hp).await;
        }
        if let Some(delegated) = self.well_known(hp.host).await {
            tracing::debug!(%server, %delegated, "Server delegates through .well-known.");
            let dhp = split_host_port(&delegated)
                .ok_or_else(|| Self::resolve_error(name, "bad .well-known delegation"))?;
            if dhp.ip.is_some() || dhp.port.is_some() {
                return self.direct(&delegated, &dhp).await;
            }
            return self.srv_or_default(name, dhp.host).await;
        }
        self.srv_or_default(name, hp.host).await
    }

    /// An IP literal or a name with a port: contacted as written.
    async fn direct(&self, name: &str, hp: &HostPort<'_>) -> Result<Endpoint, Error> {
        let port = hp.port.unwrap_or(DEFAULT_FEDERATION_PORT);
        let addrs = match hp.ip {
            Some(ip) => vec![SocketAddr::new(ip, port)],
            None => self
                .dns
                .lookup(hp.host, port)
                .await
                .map_err(|e| Self::resolve_error(name, e))?,
        };
        let addrs = self.filter(name, addrs)?;
        Ok(Endpoint::new(hp.host.to_owned(), name.to_owned(), addrs))
    }

    /// SRV records of `host`, else `host:8448`. Certificate and `Host` are `host`.
    async fn srv_or_default(&self, name: &str, host: &str) -> Result<Endpoint, Error> {
        for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
            let mut targets = self.dns.srv(&format!("{service}.{host}")).await;
            // A single "." target means "no service here" (RFC 2782).
            targets.retain(|t| !t.target.is_empty() && t.target != ".");
            if targets.is_empty() {
                continue;
            }
            targets.sort_by_key(|t| (t.priority, std::cmp::Reverse(t.weight)));
            let mut addrs = Vec::new();
            for t in &targets {
                match self.dns.lookup(&t.target, t.port).await {
                    Ok(found) => addrs.extend(found),
                    Err(e) => {
                        tracing::debug!(target = %t.target, error = %e, "SRV target does not resolve.")
                    }
                }
            }
            let addrs = self.filter(name, addrs)?;
            return Ok(Endpoint::new(host.to_owned(), host.to_owned(), addrs));
        }
        let addrs = self
            .dns
            .lookup(host, DEFAULT_FEDERATION_PORT)
            .await
            .map_err(|e| Self::resolve_error(name, e))?;
        let addrs = self.filter(name, addrs)?;
        Ok(Endpoint::new(host.to_owned(), host.to_owned(), addrs))
    }

    fn filter(&self, name: &str, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, Error> {
        if addrs.is_empty() {
            return Err(Self::resolve_error(name, "no address"));
        }
        let filter = &self.connector.config().ip_filter;
        let allowed: Vec<SocketAddr> = addrs
            .iter()
            .copied()
            .filter(|a| filter.allows(a.ip()))
            .collect();
        if allowed.is_empty() {
            return Err(Self::resolve_error(
                name,
                format!("every address ({addrs:?}) is in federation_ip_range_blacklist"),
            ));
        }
        Ok(allowed)
    }

    /// The `m.server` delegation of `host`, from cache or fetched.
    async fn well_known(&self, host: &str) -> Option<String> {
        let now = Instant::now();
        if let Ok(cache) = self.well_known.lock()
            && let Some(entry) = cache.get(host)
            && entry.expires > now
        {
            return entry.delegated.clone();
        }
        let config = self.connector.config();
        let (delegated, ttl) = match tokio::time::timeout(
            config.well_known_timeout,
            self.fetch_well_known(host),
        )
        .await
        {
            Ok(Ok((delegated, ttl))) => (Some(delegated), ttl.unwrap_or(config.well_known_cache)),
            Ok(Err(reason)) => {
                tracing::debug!(%host, %reason, "No usable .well-known delegation.");
                (None, config.well_known_failure_cache)
            }
            Err(_) => {
                tracing::debug!(%host, "The .well-known lookup timed out.");
                (None, config.well_known_failure_cache)
            }
        };
        let ttl = ttl.min(config.well_known_max_cache);
        if let Ok(mut cache) = self.well_known.lock() {
            cache.retain(|_, e| e.expires > now);
            cache.insert(
                host.to_owned(),
                WellKnown {
                    expires: now + ttl,
                    delegated: delegated.clone(),
                },
            );
        }
        delegated
    }

    /// Fetches and parses `.well-known/matrix/server`, following a few redirects. Returns
    /// the delegated name and the lifetime the answer asked for.
    async fn fetch_well_known(&self, host: &str) -> Result<(String, Option<Duration>), String> {
        let mut host = host.to_owned();
        let mut port = 443;
        let mut path = WELL_KNOWN_PATH.to_owned();
        for _ in 0..=MAX_WELL_KNOWN_REDIRECTS {
            let addrs = self.dns.lookup(&host, port).await?;
            let filter = &self.connector.config().ip_filter;
            let addrs: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| filter.allows(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err("no allowed address".to_owned());
            }
            let host_header = if port == 443 {
                host.clone()
            } else {
                format!("{host}:{port}")
            };
            let endpoint = Endpoint::new(host.clone(), host_header, addrs);
            let request = http::Request::get(path.as_str())
                .body(Vec::new())
                .map_err(|e| e.to_string())?;
            let response = self
                .connector
                .send(&endpoint, request)
                .await
                .map_err(|e| e.to_string())?;
            if response.status.is_redirection() {
                let location = response
                    .headers
                    .get(http::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .ok_or("redirect without a location")?;
                let uri: http::Uri = location.parse().map_err(|_| "bad redirect location")?;
                if let Some(authority) = uri.authority() {
                    if uri.scheme_str() != Some("https") {
                        return Err("redirect away from https".to_owned());
                    }
                    host = authority.host().trim_matches(['[', ']']).to_owned();
                    port = authority.port_u16().unwrap_or(443);
                }
                path = uri
                    .path_and_query()
                    .map_or_else(|| "/".to_owned(), |p| p.to_string());
                continue;
            }
            if response.status != http::StatusCode::OK {
                return Err(format!("status {}", response.status));
            }
            if response.body.len() > MAX_WELL_KNOWN_BYTES {
                return Err("response too large".to_owned());
            }
            let json: serde_json::Value =
                serde_json::from_slice(&response.body).map_err(|e| format!("not JSON: {e}"))?;
            let delegated = json
                .get("m.server")
                .and_then(serde_json::Value::as_str)
                .ok_or("no m.server string")?;
            ServerName::parse(delegated).map_err(|e| format!("bad m.server: {e}"))?;
            return Ok((delegated.to_owned(), cache_lifetime(&response.headers)));
        }
        Err("too many redirects".to_owned())
    }
}

/// The lifetime a response's `Cache-Control` asks for, if any (`no-store` means none).
fn cache_lifetime(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::CACHE_CONTROL)?.to_str().ok()?;
    for directive in value.split(',').map(str::trim) {
        if directive.eq_ignore_ascii_case("no-store") || directive.eq_ignore_ascii_case("no-cache")
        {
            return Some(Duration::ZERO);
        }
        if let Some(age) = directive.strip_prefix("max-age=") {
            return age.trim_matches('"').parse().ok().map(Duration::from_secs);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_server_names() {
        let hp = split_host_port("example.org").unwrap();
        assert_eq!((hp.host, hp.ip, hp.port), ("example.org", None, None));
        let hp = split_host_port("example.org:8449").unwrap();
        assert_eq!((hp.host, hp.port), ("example.org", Some(8449)));
        let hp = split_host_port("[::1]:8448").unwrap();
        assert_eq!(hp.host, "::1");
        assert_eq!(hp.ip, Some("::1".parse().unwrap()));
        let hp = split_host_port("1.2.3.4").unwrap();
        assert_eq!(hp.ip, Some("1.2.3.4".parse().unwrap()));
        assert!(split_host_port("example.org:port").is_none());
    }

    #[test]
    fn ip_filter_blocks_private_ranges_unless_whitelisted() {
        let f = IpRangeFilter::default();
        assert!(!f.allows("127.0.0.1".parse().unwrap()));
        assert!(!f.allows("::1".parse().unwrap()));
        assert!(!f.allows("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!f.allows("0.0.0.0".parse().unwrap()));
        assert!(f.allows("93.184.216.34".parse().unwrap()));
        let f = f.allowing(&["127.0.0.0/8", "::1"]).unwrap();
        assert!(f.allows("127.0.0.1".parse().unwrap()));
        assert!(f.allows("::1".parse().unwrap()));
        assert!(!f.allows("10.0.0.1".parse().unwrap()));
        assert!(IpRangeFilter::parse(&["nope"], &[]).is_err());
    }

    #[test]
    fn cache_control_lifetime() {
        let mut h = http::HeaderMap::new();
        assert_eq!(cache_lifetime(&h), None);
        h.insert(
            http::header::CACHE_CONTROL,
            "public, max-age=600".parse().unwrap(),
        );
        assert_eq!(cache_lifetime(&h), Some(Duration::from_secs(600)));
        h.insert(http::header::CACHE_CONTROL, "no-store".parse().unwrap());
        assert_eq!(cache_lifetime(&h), Some(Duration::ZERO));
    }
}
