//! Sets of networks, parsed from configuration (trusted proxies, partner
//! networks). A bare address is read as a single-host network.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::{Invalid, Spanned};

#[derive(Debug, Clone, Default)]
pub struct CidrSet {
    networks: Vec<IpNet>,
}

impl CidrSet {
    /// Parse every entry; `key` names the list in errors.
    pub fn parse(entries: &[Spanned<String>], key: &str) -> Result<Self, Vec<Invalid>> {
        let mut networks = Vec::new();
        let mut problems = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            let text = entry.get_ref().trim();
            let parsed = text.parse::<IpNet>().or_else(|_| text.parse::<IpAddr>().map(IpNet::from));
            match parsed {
                Ok(network) => networks.push(network.trunc()),
                Err(_) => problems.push(Invalid::new(
                    entry.span(),
                    format!("{key}[{index}]"),
                    format!("{text:?} is not a CIDR (write e.g. \"10.0.0.0/8\", \"2001:db8::/32\" or one address)"),
                )),
            }
        }
        if problems.is_empty() { Ok(CidrSet { networks }) } else { Err(problems) }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.networks.iter().any(|network| network.contains(&ip))
    }

    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    /// The networks, as written canonically (`198.51.100.0/24`).
    pub fn networks(&self) -> Vec<String> {
        self.networks.iter().map(ToString::to_string).collect()
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`, as a dual-stack socket
/// reports IPv4 peers) are the IPv4 address they carry.
/// `ip` as `Display` writes it, into `buffer` (any address fits: at most
/// 45 characters). IPv4, nearly every address, is written digit by digit:
/// the formatting machinery cost ~1k instructions, paid per request by the
/// forwarded-for header and the classifier's keys.
pub fn ip_text(ip: IpAddr, buffer: &mut [u8; 64]) -> &str {
    let length = match ip {
        IpAddr::V4(v4) => {
            let mut at = 0;
            for (index, octet) in v4.octets().into_iter().enumerate() {
                if index > 0 {
                    buffer[at] = b'.';
                    at += 1;
                }
                if octet >= 100 {
                    buffer[at] = b'0' + octet / 100;
                    at += 1;
                }
                if octet >= 10 {
                    buffer[at] = b'0' + octet / 10 % 10;
                    at += 1;
                }
                buffer[at] = b'0' + octet % 10;
                at += 1;
            }
            at
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            let mut cursor = std::io::Cursor::new(&mut buffer[..]);
            let _ = write!(cursor, "{v6}");
            cursor.position() as usize
        }
    };
    std::str::from_utf8(&buffer[..length]).unwrap_or_default()
}

pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::unspanned;

    #[test]
    fn parses_networks_and_single_addresses() {
        let set = CidrSet::parse(&[unspanned("10.0.0.0/8".into()), unspanned("192.0.2.7".into())], "x").unwrap();
        assert!(set.contains("10.1.2.3".parse().unwrap()));
        assert!(set.contains("192.0.2.7".parse().unwrap()));
        assert!(set.contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!set.contains("192.0.2.8".parse().unwrap()));
    }

    #[test]
    fn bad_entries_are_named() {
        let problems = CidrSet::parse(&[unspanned("10.0.0.0/33".into())], "server.trusted_proxies").unwrap_err();
        assert_eq!(problems[0].key, "server.trusted_proxies[0]");
    }
}
