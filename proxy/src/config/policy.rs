//! The policy tables of the config: `[routes]`, `[cors]`, `[limits]` and `[guard]`.

use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use super::{invalid, ConfigError, Store};
use crate::steps::cors::OriginPattern;
use crate::steps::routes::RouteTemplate;

/// `[routes]`: changes to the SDK allowlist.
#[derive(Debug, Clone, Default)]
pub struct RoutesConfig {
    /// Extra `METHOD /path/{param}` templates to let through.
    pub allow: Vec<RouteTemplate>,
    /// Templates of the allowlist to refuse.
    pub deny: Vec<RouteTemplate>,
    /// Let the SDK's private `updateAccount` (`PUT /api/v2/public/linked-account`) through.
    pub allow_update_account: bool,
}

/// `[cors]`: which browser origins may call the proxy.
#[derive(Debug, Clone)]
pub struct CorsConfig {
    pub allowed_origins: Vec<OriginPattern>,
    pub max_age: Duration,
    pub allow_credentials: bool,
}

/// `[limits]`: bounds on what a client may send.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Where the per-account buckets live (`redis`: one bucket per account for every
    /// replica; the local one stands in while Redis is unreachable).
    pub store: Store,
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
    pub max_path_bytes: usize,
    /// Time a connection has from its accept to its first complete request head (TLS
    /// handshake and protocol detection included); HTTP/1.1 heads after the first too.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed (GOAWAY on HTTP/2).
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// Peers whose `Forwarded`/`X-Forwarded-*` headers are believed.
    pub trusted_proxies: Vec<Cidr>,
    /// Sustained requests per second per linked account.
    pub per_account_rps: f64,
    /// Requests a linked account may send at once before the rate applies.
    pub per_account_burst: u32,
    /// Requests in flight at once, all callers together.
    pub max_in_flight: usize,
    /// Requests in flight at once per linked account.
    pub per_account_in_flight: u32,
    /// A request whose body sends no new bytes for this long ends with 408.
    pub body_read_timeout: Duration,
}

/// `[guard]`: the response guard that keeps secrets from going back to the caller.
#[derive(Debug, Clone)]
pub struct GuardConfig {
    /// Textual bodies up to this size are held and scanned whole before a byte is sent;
    /// larger ones are scanned as they stream.
    pub max_scan_bytes: usize,
    /// Textual bodies of at least this size are compressed toward a client that accepts
    /// br or gzip.
    pub compress_min_bytes: usize,
    /// The most a reply Refold compressed anyway may decode to (a decompression bomb
    /// beyond it is refused).
    pub max_decoded_bytes: u64,
}

/// An IP network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `::1/128` or a bare address (a /32 or /128).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an IP network"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?} has a bad prefix length"))?,
            None => max,
        };
        Ok(Self { network, prefix })
    }

    /// Whether `ip` lies in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileRoutes {
    allow: Vec<String>,
    deny: Vec<String>,
    allow_update_account: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileCors {
    allowed_origins: Vec<String>,
    max_age_s: u64,
    allow_credentials: bool,
}

impl Default for FileCors {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            max_age_s: 600,
            allow_credentials: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileLimits {
    store: Store,
    max_header_bytes: usize,
    max_body_bytes: u64,
    max_path_bytes: usize,
    header_read_timeout_ms: u64,
    idle_timeout_s: u64,
    max_connections: usize,
    trusted_proxies: Vec<String>,
    per_account_rps: f64,
    per_account_burst: u32,
    max_in_flight: usize,
    per_account_in_flight: u32,
    body_read_timeout_ms: u64,
}

impl Default for FileLimits {
    fn default() -> Self {
        Self {
            store: Store::Memory,
            max_header_bytes: 16 * 1024,
            max_body_bytes: 10 * 1024 * 1024,
            max_path_bytes: 2048,
            header_read_timeout_ms: 10_000,
            idle_timeout_s: 60,
            max_connections: 10_000,
            trusted_proxies: Vec::new(),
            // Refold allows an org about 20 requests/s: one account gets a quarter of
            // that sustained. A page of the SDK makes about 25 calls at load, then polls
            // every few seconds; a burst of 50 lets two page loads through back to back.
            per_account_rps: 5.0,
            per_account_burst: 50,
            max_in_flight: 4096,
            // Above the 25 or so calls of a page load, far below what one account could
            // hold of `max_in_flight`.
            per_account_in_flight: 32,
            body_read_timeout_ms: 30_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileGuard {
    max_scan_bytes: usize,
    compress_min_bytes: usize,
    max_decoded_bytes: u64,
}

impl Default for FileGuard {
    fn default() -> Self {
        Self {
            max_scan_bytes: 1024 * 1024,
            // Below about a kilobyte, compression saves less than it costs.
            compress_min_bytes: 1024,
            max_decoded_bytes: 16 * 1024 * 1024,
        }
    }
}

pub(super) fn validate_routes(
    file: FileRoutes,
    warnings: &mut Vec<String>,
) -> Result<RoutesConfig, ConfigError> {
    let parse = |key: &'static str, list: &[String]| {
        list.iter()
            .map(|t| RouteTemplate::parse(t).map_err(|e| invalid(key, e)))
            .collect::<Result<Vec<_>, _>>()
    };
    let allow = parse("routes.allow", &file.allow)?;
    let deny = parse("routes.deny", &file.deny)?;
    for template in &allow {
        if let Some(why) = crate::steps::routes::hard_denied(template) {
            warnings.push(format!(
                "routes.allow: \"{template}\" is never forwarded ({why}); the entry has no effect"
            ));
        }
    }
    Ok(RoutesConfig {
        allow,
        deny,
        allow_update_account: file.allow_update_account,
    })
}

pub(super) fn validate_cors(file: FileCors) -> Result<CorsConfig, ConfigError> {
    let allowed_origins = file
        .allowed_origins
        .iter()
        .map(|o| OriginPattern::parse(o).map_err(|e| invalid("cors.allowed_origins", e)))
        .collect::<Result<Vec<_>, _>>()?;
    if file.max_age_s > 86_400 {
        return Err(invalid("cors.max_age_s", "must be at most 86400"));
    }
    Ok(CorsConfig {
        allowed_origins,
        max_age: Duration::from_secs(file.max_age_s),
        allow_credentials: file.allow_credentials,
    })
}

pub(super) fn validate_limits(file: FileLimits) -> Result<LimitsConfig, ConfigError> {
    if !(1024..=1024 * 1024).contains(&file.max_header_bytes) {
        return Err(invalid(
            "limits.max_header_bytes",
            "must be between 1024 and 1048576",
        ));
    }
    if file.max_body_bytes == 0 {
        return Err(invalid("limits.max_body_bytes", "must be above 0"));
    }
    if !(64..=65_536).contains(&file.max_path_bytes) {
        return Err(invalid(
            "limits.max_path_bytes",
            "must be between 64 and 65536",
        ));
    }
    if file.header_read_timeout_ms == 0 {
        return Err(invalid("limits.header_read_timeout_ms", "must be above 0"));
    }
    if !(1..=86_400).contains(&file.idle_timeout_s) {
        return Err(invalid(
            "limits.idle_timeout_s",
            "must be between 1 and 86400",
        ));
    }
    if file.max_connections == 0 {
        return Err(invalid("limits.max_connections", "must be above 0"));
    }
    let trusted_proxies = file
        .trusted_proxies
        .iter()
        .map(|c| Cidr::parse(c).map_err(|e| invalid("limits.trusted_proxies", e)))
        .collect::<Result<Vec<_>, _>>()?;
    if !(file.per_account_rps.is_finite()
        && file.per_account_rps > 0.0
        && file.per_account_rps <= 1e6)
    {
        return Err(invalid(
            "limits.per_account_rps",
            "must be a number above 0",
        ));
    }
    if file.per_account_burst == 0 {
        return Err(invalid("limits.per_account_burst", "must be above 0"));
    }
    if file.max_in_flight == 0 {
        return Err(invalid("limits.max_in_flight", "must be above 0"));
    }
    if file.per_account_in_flight == 0 {
        return Err(invalid("limits.per_account_in_flight", "must be above 0"));
    }
    if !(1..=3_600_000).contains(&file.body_read_timeout_ms) {
        return Err(invalid(
            "limits.body_read_timeout_ms",
            "must be between 1 and 3600000",
        ));
    }
    Ok(LimitsConfig {
        max_header_bytes: file.max_header_bytes,
        max_body_bytes: file.max_body_bytes,
        max_path_bytes: file.max_path_bytes,
        header_read_timeout: Duration::from_millis(file.header_read_timeout_ms),
        idle_timeout: Duration::from_secs(file.idle_timeout_s),
        max_connections: file.max_connections,
        trusted_proxies,
        store: file.store,
        per_account_rps: file.per_account_rps,
        per_account_burst: file.per_account_burst,
        max_in_flight: file.max_in_flight,
        per_account_in_flight: file.per_account_in_flight,
        body_read_timeout: Duration::from_millis(file.body_read_timeout_ms),
    })
}

pub(super) fn validate_guard(file: FileGuard) -> Result<GuardConfig, ConfigError> {
    if file.max_scan_bytes > 64 * 1024 * 1024 {
        return Err(invalid("guard.max_scan_bytes", "must be at most 67108864"));
    }
    if file.max_decoded_bytes == 0 {
        return Err(invalid("guard.max_decoded_bytes", "must be at least 1"));
    }
    Ok(GuardConfig {
        max_scan_bytes: file.max_scan_bytes,
        compress_min_bytes: file.compress_min_bytes,
        max_decoded_bytes: file.max_decoded_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_timeout_defaults_to_a_minute_and_must_be_a_positive_day_at_most() {
        let limits = validate_limits(FileLimits::default()).unwrap();
        assert_eq!(limits.idle_timeout, Duration::from_secs(60));
        for bad in [0, 86_401] {
            let err = validate_limits(FileLimits {
                idle_timeout_s: bad,
                ..FileLimits::default()
            })
            .unwrap_err()
            .to_string();
            assert!(err.contains("limits.idle_timeout_s"), "{bad}: {err}");
        }
    }

    #[test]
    fn guard_keys_default_and_refuse_a_zero_decode_limit() {
        let guard = validate_guard(FileGuard::default()).unwrap();
        assert_eq!(guard.compress_min_bytes, 1024);
        assert_eq!(guard.max_decoded_bytes, 16 * 1024 * 1024);
        let zero = FileGuard {
            max_decoded_bytes: 0,
            ..FileGuard::default()
        };
        let err = validate_guard(zero).unwrap_err().to_string();
        assert!(err.contains("guard.max_decoded_bytes"), "{err}");
    }

    #[test]
    fn cidrs_match_their_networks() {
        let net = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        assert!(Cidr::parse("::/0")
            .unwrap()
            .contains("2001:db8::1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }
}
