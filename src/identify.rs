//! The identify stage: is this request from an allowlisted partner?
//!
//! It runs before every detector and before any ban check. A partner is
//! recognised by an API key (stored only as its SHA-256, compared in
//! constant time) or by the network it calls from. Partners get their own
//! quota and are never scored by bot heuristics.

use std::net::IpAddr;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::cidr::CidrSet;
use crate::config::{Config, Invalid, RateLimitConfig};

#[derive(Debug)]
pub struct Partner {
    pub name: Arc<str>,
    pub quota: Option<RateLimitConfig>,
    /// Counter key of the quota, and where the partner's counters live
    /// (see `CounterPlan::new`), made once rather than per request.
    pub quota_key: Arc<str>,
    pub shard: Arc<str>,
    key_hashes: Vec<[u8; 32]>,
    networks: CidrSet,
}

/// Who the identify stage says sent the request.
impl Partner {
    /// How many API keys identify the partner (their hashes stay private).
    pub fn api_key_count(&self) -> usize {
        self.key_hashes.len()
    }

    /// The networks that identify the partner.
    pub fn networks(&self) -> Vec<String> {
        self.networks.networks()
    }
}

#[derive(Debug, Clone)]
pub enum Identity {
    Anonymous,
    Partner { partner: Arc<Partner>, by: IdentifiedBy },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentifiedBy {
    ApiKey,
    Network,
}

impl IdentifiedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentifiedBy::ApiKey => "api_key",
            IdentifiedBy::Network => "cidr",
        }
    }
}

#[derive(Debug)]
pub struct Allowlist {
    partners: Vec<Arc<Partner>>,
    api_key_header: http::HeaderName,
}

impl Allowlist {
    pub fn from_config(config: &Config) -> Result<Self, Vec<Invalid>> {
        let mut problems = Vec::new();
        let mut partners = Vec::new();
        for (index, partner) in config.partners.iter().enumerate() {
            let key = |field: &str| format!("partner[{index}].{field}");
            let mut key_hashes = Vec::new();
            for (i, hash) in partner.api_key_sha256.iter().enumerate() {
                match decode_sha256(hash.get_ref()) {
                    Some(bytes) => key_hashes.push(bytes),
                    None => problems.push(Invalid::new(
                        hash.span(),
                        format!("partner[{index}].api_key_sha256[{i}]"),
                        "expected 64 hex characters: the SHA-256 of the key (e.g. `printf %s KEY | sha256sum`)",
                    )),
                }
            }
            let networks = CidrSet::parse(&partner.cidrs, &key("cidrs")).unwrap_or_else(|mut errs| {
                problems.append(&mut errs);
                CidrSet::default()
            });
            if let Some(quota) = &partner.quota
                && let Err(message) = crate::routes::check_rate_limit(quota)
            {
                problems.push(Invalid::new(0..0, key("quota"), message));
            }
            if partner.api_key_sha256.is_empty() && partner.cidrs.is_empty() {
                problems.push(Invalid::new(0..0, key("name"), "a partner needs `api_key_sha256` or `cidrs`"));
            }
            partners.push(Arc::new(Partner {
                name: Arc::from(partner.name.as_str()),
                quota: partner.quota,
                quota_key: Arc::from(format!("pq:{}", partner.name)),
                shard: Arc::from(format!("partner:{}", partner.name)),
                key_hashes,
                networks,
            }));
        }
        let header = config.identify.api_key_header.get_ref();
        let api_key_header = http::HeaderName::from_bytes(header.as_bytes()).unwrap_or_else(|_| {
            problems.push(Invalid::new(
                config.identify.api_key_header.span(),
                "identify.api_key_header",
                "not a valid header name",
            ));
            http::HeaderName::from_static("x-api-key")
        });
        if problems.is_empty() { Ok(Allowlist { partners, api_key_header }) } else { Err(problems) }
    }

    pub fn api_key_header(&self) -> &http::HeaderName {
        &self.api_key_header
    }

    /// Identify a request by its API key header and client address. A key
    /// that matches no partner identifies nobody (it is not an error: the
    /// request is then judged like any other).
    /// The configured partners, in configuration order.
    pub fn partners(&self) -> impl Iterator<Item = &Arc<Partner>> {
        self.partners.iter()
    }

    pub fn identify(&self, headers: &http::HeaderMap, client_ip: IpAddr) -> Identity {
        if self.partners.is_empty() {
            return Identity::Anonymous;
        }
        if let Some(presented) = headers.get(&self.api_key_header) {
            let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
            for partner in &self.partners {
                // Compare against every stored hash so timing does not tell
                // which partner (or how many) exist.
                let mut found = subtle::Choice::from(0);
                for stored in &partner.key_hashes {
                    found |= stored.ct_eq(&digest);
                }
                if bool::from(found) {
                    return Identity::Partner { partner: partner.clone(), by: IdentifiedBy::ApiKey };
                }
            }
        }
        for partner in &self.partners {
            if partner.networks.contains(client_ip) {
                return Identity::Partner { partner: partner.clone(), by: IdentifiedBy::Network };
            }
        }
        Identity::Anonymous
    }
}

fn decode_sha256(text: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(text.trim()).ok()?;
    bytes.try_into().ok()
}

/// The hex SHA-256 of an API key, as the configuration stores it.
pub fn api_key_sha256(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}
