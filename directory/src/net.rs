//! Where the service may connect for a tenant's LDAP configuration, and
//! which password it may send there.
//!
//! A configuration's URI is tenant input, so a connection to it is a
//! request the tenant makes from inside the operator's network. Two rules
//! keep that from reaching what the tenant could not reach itself:
//!
//! - the operator's bind password goes only to servers the operator lists
//!   (`ldap_allowed_servers`); anywhere else a `BindDN` needs the tenant's
//!   own `BindPassword`;
//! - a server the operator has not listed must resolve only to ordinary
//!   unicast addresses: loopback, link-local, unspecified, multicast and
//!   broadcast addresses (and IPv4 ones mapped into IPv6) are refused
//!   before any connection. The connection is then made to an address that
//!   was checked, never to a second resolution of the name (which DNS could
//!   answer differently).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use crate::DirectoryError;

/// One entry of the operator's list: a host (name or address, compared
/// case-insensitively as written in URIs) and optionally a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedServer {
    host: String,
    port: Option<u16>,
}

impl std::str::FromStr for AllowedServer {
    type Err = String;

    /// `host`, `host:port`, `[v6]` or `[v6]:port`.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bad = || format!("{s:?} is not host[:port] (IPv6 in brackets)");
        let (host, port) = split_host_port(s).ok_or_else(bad)?;
        if host.is_empty() || host.contains(['/', '@', ' ', '?', '#']) {
            return Err(bad());
        }
        Ok(AllowedServer {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// The operator's rules for tenant LDAP servers, one per process.
#[derive(Debug, Clone, Default)]
pub struct DirectoryPolicy {
    pub allowed_servers: Vec<AllowedServer>,
}

static POLICY: OnceLock<DirectoryPolicy> = OnceLock::new();

/// Sets this process's policy (once, at start; later calls are ignored so
/// a policy cannot be loosened while running). Without it no server is
/// listed: the operator's password is never sent and special addresses
/// are refused.
pub fn install_policy(policy: DirectoryPolicy) {
    if POLICY.set(policy).is_err() {
        tracing::warn!("the LDAP server policy was already set; the first one stays");
    }
}

pub(crate) fn policy() -> &'static DirectoryPolicy {
    static EMPTY: OnceLock<DirectoryPolicy> = OnceLock::new();
    POLICY
        .get()
        .unwrap_or_else(|| EMPTY.get_or_init(DirectoryPolicy::default))
}

impl DirectoryPolicy {
    /// Whether the operator listed `host:port`.
    pub fn lists(&self, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        self.allowed_servers
            .iter()
            .any(|a| a.host == host && a.port.is_none_or(|p| p == port))
    }
}

/// `host` and optional port of `host[:port]` or `[v6][:port]` (brackets
/// kept, as URIs and the operator's list write them).
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if s.starts_with('[') {
        let end = s.find(']')?;
        let (h, rest) = s.split_at(end + 1);
        match rest {
            "" => (h, None),
            r => (h, Some(r.strip_prefix(':')?)),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => return None,
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p != 0)?),
    };
    Some((host, port))
}

/// Scheme, host (brackets kept) and port (the scheme's default when absent)
/// of a URI `validate_uri` accepted.
pub(crate) fn target(uri: &str) -> Option<(bool, String, u16)> {
    let (tls, rest) = match uri.strip_prefix("ldaps://") {
        Some(r) => (true, r),
        None => (false, uri.strip_prefix("ldap://")?),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = split_host_port(rest)?;
    let port = port.unwrap_or(if tls { 636 } else { 389 });
    Some((tls, host.to_string(), port))
}

/// Whether a tenant's server may be at `ip` without the operator listing it.
pub fn ordinary_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => ordinary_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => ordinary_v4(v4),
            None => ordinary_v6(v6),
        },
    }
}

fn ordinary_v4(ip: Ipv4Addr) -> bool {
    !(ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        // 0.0.0.0/8 is "this network": Linux connects it to the host.
        || ip.octets()[0] == 0)
}

fn ordinary_v6(ip: Ipv6Addr) -> bool {
    let link_local = (ip.segments()[0] & 0xffc0) == 0xfe80;
    // ::a.b.c.d (IPv4-compatible, deprecated) reaches the IPv4 address.
    let compatible = ip.segments()[..6].iter().all(|s| *s == 0);
    !(ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || link_local || compatible)
}

/// Resolves the URI's host and checks every address before any connection;
/// returns the checked addresses to connect to.
pub(crate) async fn checked_addresses(
    uri: &str,
    policy: &DirectoryPolicy,
    timeout: Duration,
) -> Result<(bool, Vec<SocketAddr>), DirectoryError> {
    let (tls, host, port) = target(uri).ok_or_else(|| DirectoryError::BadUri(uri.to_string()))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => {
            match tokio::time::timeout(timeout, tokio::net::lookup_host((bare, port))).await {
                Ok(Ok(found)) => found.collect(),
                // A name that does not resolve says nothing about the network.
                Ok(Err(_)) | Err(_) => Vec::new(),
            }
        }
    };
    if addrs.is_empty() {
        return Err(DirectoryError::unreachable(uri));
    }
    if !policy.lists(&host, port) && !addrs.iter().all(|a| ordinary_address(a.ip())) {
        return Err(DirectoryError::Forbidden(uri.to_string()));
    }
    Ok((tls, addrs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_addresses_are_not_ordinary() {
        for bad in [
            "127.0.0.1",
            "127.5.6.7",
            "0.0.0.0",
            "0.1.2.3",
            "169.254.169.254",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
        ] {
            assert!(!ordinary_address(bad.parse().unwrap()), "{bad}");
        }
        for ok in ["10.0.0.5", "192.0.2.2", "8.8.8.8", "2001:db8::1"] {
            assert!(ordinary_address(ok.parse().unwrap()), "{ok}");
        }
    }

    #[test]
    fn the_operator_list_matches_host_and_port() {
        let p = DirectoryPolicy {
            allowed_servers: vec![
                "LDAP.corp:389".parse().unwrap(),
                "127.0.0.1".parse().unwrap(),
                "[::1]:636".parse().unwrap(),
            ],
        };
        assert!(p.lists("ldap.corp", 389));
        assert!(!p.lists("ldap.corp", 636));
        assert!(p.lists("127.0.0.1", 12345));
        assert!(p.lists("[::1]", 636));
        assert!(!p.lists("127.0.0.2", 389));
        for bad in ["", ":389", "h:0", "h:x", "::1", "a/b"] {
            assert!(bad.parse::<AllowedServer>().is_err(), "{bad}");
        }
    }

    #[test]
    fn targets() {
        assert_eq!(target("ldap://h"), Some((false, "h".into(), 389)));
        assert_eq!(target("ldaps://h:1/"), Some((true, "h".into(), 1)));
        assert_eq!(target("ldap://[::1]:7"), Some((false, "[::1]".into(), 7)));
    }
}
