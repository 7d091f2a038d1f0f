//! The identify stage: is this request from an allowlisted partner?
//!
//! It runs before every detector and before any ban check. A partner is
//! proven, strongest first, by a client certificate ([`mtls`]), an HTTP
//! Message Signature ([`signed`], RFC 9421 / Web Bot Auth), an API key
//! (stored only as its SHA-256, compared in constant time) or the network
//! it calls from. Partners get their own quota and are never scored by bot
//! heuristics. A signature that names a partner's key and does not verify
//! is not ignored: the request is blocked with a detection id saying why.

pub mod keys;
pub mod mtls;
pub mod signature;
pub mod signed;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::cidr::CidrSet;
use crate::config::{Config, Invalid, RateLimitConfig};
use crate::signal::{Action, Evidence, Signal};
use crate::store::{CounterOp, CounterPlan, CounterReadings, Key};
use crate::view::RequestView;

pub use crate::view::ClientCert;
use mtls::CertPartners;
use signature::SignedRequest;
use signed::{SignedOutcome, SignedPartners};

/// A signature named a partner's key (or agent) and did not prove it.
pub const SIGNATURE_INVALID_ID: &str = "partner.signature_invalid";
/// A valid signature whose nonce was already used.
pub const SIGNATURE_REPLAYED_ID: &str = "partner.signature_replayed";

/// Points a failed partner proof takes off; the block is what stops it.
const FAILED_PROOF_PENALTY: u8 = 60;

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

/// Who the identify stage says sent the request.
#[derive(Debug, Clone)]
pub enum Identity {
    Anonymous,
    /// `proof` says what proved it: the signature's key id, the client
    /// certificate's fingerprint and subject (never an API key).
    Partner {
        partner: Arc<Partner>,
        by: IdentifiedBy,
        proof: Option<Arc<str>>,
    },
}

impl Identity {
    fn partner(partner: &Arc<Partner>, by: IdentifiedBy, proof: Option<String>) -> Identity {
        Identity::Partner { partner: partner.clone(), by, proof: proof.map(Arc::from) }
    }
}

/// How a partner was proven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentifiedBy {
    Mtls,
    Signature,
    ApiKey,
    Network,
}

impl IdentifiedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentifiedBy::Mtls => "mtls",
            IdentifiedBy::Signature => "signature",
            IdentifiedBy::ApiKey => "api_key",
            IdentifiedBy::Network => "cidr",
        }
    }
}

/// What the identify stage found before the counters are read: the
/// identity, signals of failed proofs, and the counter operation a
/// signature's nonce needs.
#[derive(Debug)]
pub struct Identification {
    pub identity: Identity,
    pub signals: Vec<Signal>,
    nonce: Option<(Key, Duration)>,
}

impl Identification {
    fn anonymous() -> Self {
        Identification { identity: Identity::Anonymous, signals: Vec::new(), nonce: None }
    }

    /// Add the nonce's replay check to the request's counter plan: count
    /// the nonce's uses over the time its signature stays acceptable.
    pub fn plan(&self, plan: &mut CounterPlan) {
        if let Some((key, window)) = &self.nonce {
            plan.push(CounterOp::Count { key: key.clone(), window: *window, add: 1 });
        }
    }

    /// After the counters are read: a nonce used before turns the partner
    /// back into an anonymous request, blocked as a replay.
    pub fn settle(&mut self, readings: &CounterReadings) {
        let Some((key, _)) = &self.nonce else { return };
        let uses = readings.number(key);
        if uses <= 1.0 {
            return;
        }
        if let Identity::Partner { partner, proof, .. } = &self.identity {
            let mut signal = failed_proof(SIGNATURE_REPLAYED_ID, Some(&partner.name), proof.as_deref(), "nonce_reused");
            signal.evidence.push(Evidence::number("nonce_uses", uses, Some(1.0)));
            self.signals.push(signal);
        }
        self.identity = Identity::Anonymous;
        self.nonce = None;
    }
}

/// A blocking signal for a failed partner proof.
fn failed_proof(id: &'static str, partner: Option<&str>, keyid: Option<&str>, reason: &str) -> Signal {
    let mut signal = Signal::new(Arc::from(id), FAILED_PROOF_PENALTY);
    signal.action = Some(Action::Block);
    signal.evidence.push(Evidence::text("reason", reason));
    if let Some(partner) = partner {
        signal.evidence.push(Evidence::text("claimed_partner", partner));
    }
    if let Some(keyid) = keyid {
        signal.evidence.push(Evidence::text("keyid", keyid));
    }
    signal
}

#[derive(Debug)]
pub struct Allowlist {
    partners: Vec<Arc<Partner>>,
    api_key_header: http::HeaderName,
    signed: SignedPartners,
    certs: CertPartners,
}

impl Allowlist {
    pub fn from_config(config: &Config) -> Result<Self, Vec<Invalid>> {
        let mut problems = Vec::new();
        let mut partners = Vec::new();
        let mut signed = SignedPartners::default();
        let mut certs = CertPartners::default();
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
                problems.push(Invalid::new(0..0, key("quota"), message.to_string()));
            }
            if partner.api_key_sha256.is_empty()
                && partner.cidrs.is_empty()
                && partner.signature.is_none()
                && partner.mtls.is_none()
            {
                problems.push(Invalid::new(
                    0..0,
                    key("name"),
                    "a partner needs `api_key_sha256`, `cidrs`, `[partner.signature]` or `[partner.mtls]`",
                ));
            }
            let compiled = Arc::new(Partner {
                name: Arc::from(partner.name.as_str()),
                quota: partner.quota,
                quota_key: Arc::from(format!("pq:{}", partner.name)),
                shard: Arc::from(format!("partner:{}", partner.name)),
                key_hashes,
                networks,
            });
            if let Some(signature) = &partner.signature {
                signed.add(config, index, compiled.clone(), signature, &mut problems);
            }
            if let Some(mtls) = &partner.mtls {
                certs.add(config, index, compiled.clone(), mtls, &mut problems);
            }
            partners.push(compiled);
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
        if problems.is_empty() { Ok(Allowlist { partners, api_key_header, signed, certs }) } else { Err(problems) }
    }

    /// The configured partners, in configuration order.
    pub fn partners(&self) -> impl Iterator<Item = &Arc<Partner>> {
        self.partners.iter()
    }

    pub fn api_key_header(&self) -> &http::HeaderName {
        &self.api_key_header
    }

    /// Whether the request may carry a signature over its body: such
    /// bodies are read (within the inspected-body limit) on every route,
    /// so `content-digest` can be checked.
    pub fn wants_body(&self, headers: &http::HeaderMap) -> bool {
        !self.signed.is_empty() && headers.contains_key("signature-input")
    }

    /// Identify a request at `now` (nanoseconds since the epoch): by client
    /// certificate, signature, API key, then network. A key that matches no
    /// partner identifies nobody (the request is then judged like any
    /// other); a signature that claims a partner and fails is a signal.
    pub fn identify(&self, view: &RequestView<'_>, now: u64) -> Identification {
        if self.partners.is_empty() {
            return Identification::anonymous();
        }
        if let Some(cert) = view.client_cert
            && let Some(partner) = self.certs.identify(cert)
        {
            return Identification {
                identity: Identity::partner(&partner, IdentifiedBy::Mtls, Some(cert.describe())),
                signals: Vec::new(),
                nonce: None,
            };
        }
        let mut identification = Identification::anonymous();
        let request = SignedRequest {
            method: view.method.as_str(),
            target: view.target,
            authority: view.authority,
            headers: view.headers,
            body: view.body,
        };
        let now_secs = i64::try_from(now / 1_000_000_000).unwrap_or(i64::MAX);
        match self.signed.check(&request, now_secs) {
            SignedOutcome::Verified { partner, keyid, nonce } => {
                identification.identity =
                    Identity::Partner { partner, by: IdentifiedBy::Signature, proof: Some(keyid) };
                identification.nonce = nonce;
                return identification;
            }
            SignedOutcome::Failed { partner, keyid, failure } => {
                let mut signal = failed_proof(
                    SIGNATURE_INVALID_ID,
                    partner.as_ref().map(|p| &*p.name),
                    keyid.as_deref(),
                    failure.as_str(),
                );
                if let Some(detail) = failure.detail() {
                    signal.evidence.push(Evidence::text("detail", detail));
                }
                identification.signals.push(signal);
                // Never fall back to a weaker proof: a request whose
                // signature fails is not a partner, whatever its address.
                return identification;
            }
            SignedOutcome::Unsigned => {}
        }
        identification.identity = self.identify_by_key_or_network(view.headers, view.client_ip);
        identification
    }

    /// Identify a request by its API key header and client address.
    pub fn identify_by_key_or_network(&self, headers: &http::HeaderMap, client_ip: IpAddr) -> Identity {
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
                    return Identity::partner(partner, IdentifiedBy::ApiKey, None);
                }
            }
        }
        for partner in &self.partners {
            if partner.networks.contains(client_ip) {
                return Identity::partner(partner, IdentifiedBy::Network, None);
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
