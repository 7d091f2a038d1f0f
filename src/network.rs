//! Network context: which autonomous system (ASN, organisation) a client
//! address belongs to, from a local MMDB file (MaxMind GeoLite2/GeoIP2
//! ASN or DB-IP ASN format, read with the `maxminddb` crate). Nothing is
//! downloaded: the operator puts the file in place and reloads.
//!
//! The lookup happens once per request, when the request view is built;
//! signature rules see it as the `asn` and `asn_org` fields and routes
//! can count per ASN (`asn_rate_limit`).

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::{Config, Invalid};

/// The autonomous system of a client address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsnInfo {
    pub number: u32,
    pub organisation: Option<Arc<str>>,
}

/// The loaded MMDB file, when one is configured.
#[derive(Clone, Default)]
pub struct NetworkContext {
    reader: Option<Arc<maxminddb::Reader<Vec<u8>>>>,
}

impl std::fmt::Debug for NetworkContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let database = self.reader.as_ref().map(|reader| reader.metadata().database_type.clone());
        f.debug_struct("NetworkContext").field("database", &database).finish()
    }
}

impl NetworkContext {
    /// Open `[network] mmdb_path` (relative to the configuration file);
    /// an unreadable or invalid file is reported against its key and line.
    pub fn from_config(config: &Config) -> Result<Self, Vec<Invalid>> {
        let Some(path) = &config.network.mmdb_path else { return Ok(NetworkContext::default()) };
        let file = config.resolve_path(path.get_ref());
        let bytes = std::fs::read(&file).map_err(|error| {
            vec![Invalid::new(path.span(), "network.mmdb_path", format!("cannot read {}: {error}", file.display()))]
        })?;
        let reader = maxminddb::Reader::from_source(bytes).map_err(|error| {
            vec![Invalid::new(
                path.span(),
                "network.mmdb_path",
                format!("{} is not an MMDB file: {error}", file.display()),
            )]
        })?;
        Ok(NetworkContext { reader: Some(Arc::new(reader)) })
    }

    pub fn is_configured(&self) -> bool {
        self.reader.is_some()
    }

    /// The ASN of `ip`, when the file has one for it. An IPv6 address in
    /// an IPv4-only file, or a corrupt record, is simply unknown.
    pub fn lookup(&self, ip: IpAddr) -> Option<AsnInfo> {
        let reader = self.reader.as_ref()?;
        let found = reader.lookup(crate::cidr::canonical_ip(ip)).ok()?;
        let asn: maxminddb::geoip2::Asn<'_> = found.decode().ok()??;
        Some(AsnInfo {
            number: asn.autonomous_system_number?,
            organisation: asn.autonomous_system_organization.map(Arc::from),
        })
    }
}
