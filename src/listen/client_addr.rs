//! Which address a request comes from.
//!
//! The socket peer, unless the peer is a configured trusted proxy: then the
//! rightmost `X-Forwarded-For` entry that is not itself a trusted proxy.
//! Entries to the left of that are whatever the client claimed and are
//! never believed, so a client cannot pick its own address by sending the
//! header.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName};

use crate::cidr::{CidrSet, canonical_ip};

/// Named once: a lookup by the name's text parses and checks it every time.
pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

pub fn resolve_client(peer: IpAddr, headers: &HeaderMap, trusted_proxies: &CidrSet) -> IpAddr {
    let peer = canonical_ip(peer);
    if trusted_proxies.is_empty() || !trusted_proxies.contains(peer) {
        return peer;
    }
    let mut client = peer;
    // Later header lines were appended by later hops: walk right to left.
    let values = headers.get_all(&X_FORWARDED_FOR).iter().rev().filter_map(|v| v.to_str().ok());
    for entry in values.flat_map(|value| value.rsplit(',')) {
        match parse_forwarded_addr(entry) {
            Some(addr) => {
                client = addr;
                if !trusted_proxies.contains(addr) {
                    return addr;
                }
            }
            // Garbage in the chain: stop at the last hop we could read.
            None => return client,
        }
    }
    client
}

/// An `X-Forwarded-For` entry: an address, possibly with a port or brackets.
fn parse_forwarded_addr(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(canonical_ip(ip));
    }
    if let Ok(socket) = entry.parse::<std::net::SocketAddr>() {
        return Some(canonical_ip(socket.ip()));
    }
    let bracketed = entry.strip_prefix('[').and_then(|rest| rest.split(']').next())?;
    bracketed.parse::<IpAddr>().ok().map(canonical_ip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::unspanned;

    fn trusted() -> CidrSet {
        CidrSet::parse(&[unspanned("10.0.0.0/8".into())], "t").unwrap()
    }

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in xff {
            map.append("x-forwarded-for", value.parse().unwrap());
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peers_cannot_spoof() {
        assert_eq!(resolve_client(ip("198.51.100.9"), &headers(&["1.2.3.4"]), &trusted()), ip("198.51.100.9"));
    }

    #[test]
    fn trusted_peer_gives_rightmost_untrusted_hop() {
        let h = headers(&["6.6.6.6, 203.0.113.5, 10.1.1.1"]);
        assert_eq!(resolve_client(ip("10.0.0.2"), &h, &trusted()), ip("203.0.113.5"));
        let split = headers(&["6.6.6.6", "203.0.113.5:4711"]);
        assert_eq!(resolve_client(ip("10.0.0.2"), &split, &trusted()), ip("203.0.113.5"));
    }

    #[test]
    fn trusted_peer_without_header_is_the_client() {
        assert_eq!(resolve_client(ip("10.0.0.2"), &HeaderMap::new(), &trusted()), ip("10.0.0.2"));
        assert_eq!(resolve_client(ip("10.0.0.2"), &headers(&["garbage"]), &trusted()), ip("10.0.0.2"));
    }

    #[test]
    fn values_that_are_not_text_are_skipped() {
        let mut map = headers(&["203.0.113.9"]);
        map.append("x-forwarded-for", http::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap());
        assert_eq!(resolve_client(ip("10.0.0.2"), &map, &trusted()), ip("203.0.113.9"));
        map.append("x-forwarded-for", "10.9.9.9, 198.51.100.4, 10.1.1.1".parse().unwrap());
        assert_eq!(resolve_client(ip("10.0.0.2"), &map, &trusted()), ip("198.51.100.4"));
    }
}
