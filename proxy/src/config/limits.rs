//! `[limits]`: bounds on what a client may send, rate limits, and the trusted proxies.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::{self, invalid};
use super::{ConfigError, Store};

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

#[derive(Debug, Deserialize, Serialize)]
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

pub(super) fn validate_limits(file: FileLimits) -> Result<LimitsConfig, ConfigError> {
    check::between(
        "limits.max_header_bytes",
        file.max_header_bytes,
        1024,
        1024 * 1024,
    )?;
    check::above_zero("limits.max_body_bytes", file.max_body_bytes)?;
    check::between("limits.max_path_bytes", file.max_path_bytes, 64, 65_536)?;
    check::above_zero("limits.header_read_timeout_ms", file.header_read_timeout_ms)?;
    check::between("limits.idle_timeout_s", file.idle_timeout_s, 1, 86_400)?;
    check::above_zero("limits.max_connections", file.max_connections)?;
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
    check::above_zero("limits.per_account_burst", file.per_account_burst)?;
    check::above_zero("limits.max_in_flight", file.max_in_flight)?;
    check::above_zero("limits.per_account_in_flight", file.per_account_in_flight)?;
    check::between(
        "limits.body_read_timeout_ms",
        file.body_read_timeout_ms,
        1,
        3_600_000,
    )?;
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
