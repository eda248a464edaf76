//! The client's address: the TCP peer, or — only when the peer is a configured trusted proxy —
//! the nearest untrusted hop in `X-Forwarded-For`. Believing the header from anyone would let a
//! client choose its own address and dodge per-IP limits and the admin allowlist.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// How the request reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientInfo {
    /// The client's address.
    pub ip: IpAddr,
    /// True when the client spoke HTTPS to us or to a trusted proxy.
    pub secure: bool,
    /// True when the client is this machine (loopback, no proxy involved).
    pub loopback: bool,
}

/// Works out [`ClientInfo`] from the peer address and headers.
pub fn resolve(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet], tls: bool) -> ClientInfo {
    let peer_ip = canonical(peer.ip());
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer_ip) {
        return ClientInfo {
            ip: peer_ip,
            secure: tls,
            loopback: peer_ip.is_loopback(),
        };
    }
    let mut ip = peer_ip;
    if let Some(xff) = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        // Walk from the nearest hop outwards; stop at the first address we do not trust.
        for hop in xff.rsplit(',').map(str::trim) {
            let Ok(hop_ip) = hop.parse::<IpAddr>().map(canonical) else {
                break;
            };
            ip = hop_ip;
            if !is_trusted(&hop_ip) {
                break;
            }
        }
    }
    let forwarded_https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    ClientInfo {
        ip,
        secure: tls || forwarded_https,
        loopback: false,
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(xff: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert("x-forwarded-for", xff.parse().unwrap());
        m.insert("x-forwarded-proto", "https".parse().unwrap());
        m
    }

    #[test]
    fn forwarded_headers_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: SocketAddr = "203.0.113.9:5000".parse().unwrap();
        let c = resolve(peer, &h("1.2.3.4"), &trusted, false);
        assert_eq!(c.ip.to_string(), "203.0.113.9");
        assert!(!c.secure);

        let proxy: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        let c = resolve(
            proxy,
            &h("1.2.3.4, 198.51.100.7, 10.9.9.9"),
            &trusted,
            false,
        );
        assert_eq!(
            c.ip.to_string(),
            "198.51.100.7",
            "nearest untrusted hop, not the spoofable first"
        );
        assert!(c.secure && !c.loopback);

        let local: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(resolve(local, &HeaderMap::new(), &[], false).loopback);
    }
}
