//! Partners proven by HTTP Message Signatures: which partner a signature
//! names (by its `keyid`), and whether it meets that partner's policy
//! (covered components, tag, `Signature-Agent`, time window, nonce) and
//! verifies.
//!
//! A nonce is not checked here: the check needs the counter store (so
//! replicas share it), so a verified signature hands its nonce's counter
//! key to the pipeline's plan, and [`super::Identification::settle`] reads
//! the count back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::Partner;
use super::keys::{Algorithm, VerifyingKey, decode_base64, parse_key_directory};
use super::signature::{Failure, Presented, SignedRequest, check_content_digest, presented};
use crate::config::{Config, Invalid, PartnerSignatureConfig};

/// A signing partner's keys and what its signatures must satisfy.
#[derive(Debug)]
struct Policy {
    partner: Arc<Partner>,
    keys: Vec<VerifyingKey>,
    components: Vec<String>,
    max_age_secs: i64,
    clock_skew_secs: i64,
    tag: Option<String>,
    agent: Option<String>,
    require_nonce: bool,
}

/// What the signatures on one request prove.
#[derive(Debug)]
pub enum SignedOutcome {
    /// No signature naming a configured key or agent.
    Unsigned,
    Verified {
        partner: Arc<Partner>,
        keyid: Arc<str>,
        /// Counter key of the signature's nonce, and how long it must be
        /// remembered (as long as the signature could still be accepted).
        nonce: Option<(Arc<str>, Duration)>,
    },
    /// A signature that claims a partner (or cannot even be read) and does
    /// not prove it.
    Failed { partner: Option<Arc<Partner>>, keyid: Option<Arc<str>>, failure: Failure },
}

/// Every signing partner, with their keys indexed by key id.
#[derive(Debug, Default)]
pub struct SignedPartners {
    policies: Vec<Policy>,
    /// Key id → (policy index, key index).
    by_keyid: HashMap<Arc<str>, Vec<(usize, usize)>>,
}

impl SignedPartners {
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Add a partner's `[partner.signature]` section, reading its key
    /// directory; problems name the key, and the file and line for JWKS.
    pub fn add(
        &mut self,
        root: &Config,
        index: usize,
        partner: Arc<Partner>,
        config: &PartnerSignatureConfig,
        problems: &mut Vec<Invalid>,
    ) {
        let key = |field: &str| format!("partner[{index}].signature.{field}");
        let mut keys = Vec::new();
        for (i, inline) in config.keys.iter().enumerate() {
            let Some(algorithm) = Algorithm::parse(inline.alg.get_ref()) else {
                problems.push(Invalid::new(
                    inline.alg.span(),
                    key(&format!("keys[{i}].alg")),
                    "expected `ed25519` or `ecdsa-p256-sha256`",
                ));
                continue;
            };
            let parsed = decode_base64(inline.public_key.get_ref())
                .ok_or_else(|| crate::error::Error::malformed("not base64 or base64url"))
                .and_then(|raw| VerifyingKey::from_raw(algorithm, raw, inline.keyid.as_deref()));
            match parsed {
                Ok(verifying) => keys.push(verifying),
                Err(error) => problems.push(Invalid::new(
                    inline.public_key.span(),
                    key(&format!("keys[{i}].public_key")),
                    error.to_string(),
                )),
            }
        }
        if let Some(path) = &config.key_directory {
            let file = root.resolve_path(path.get_ref());
            match std::fs::read_to_string(&file) {
                Ok(text) => match parse_key_directory(&text) {
                    Ok(mut directory) => keys.append(&mut directory),
                    Err(error) => problems.push(Invalid::in_file(
                        file.display().to_string(),
                        error.line,
                        key("key_directory"),
                        error.message,
                    )),
                },
                Err(error) => problems.push(Invalid::new(
                    path.span(),
                    key("key_directory"),
                    format!("cannot read {}: {error}", file.display()),
                )),
            }
        }
        if keys.is_empty() && config.key_directory.is_none() && config.keys.is_empty() {
            problems.push(Invalid::new(0..0, key("keys"), "a signing partner needs `keys` or `key_directory`"));
        }
        let mut components = Vec::new();
        for component in &config.components {
            let name = component.get_ref();
            let derived = ["@method", "@authority", "@path", "@query", "@request-target"];
            let valid = if name.starts_with('@') {
                derived.contains(&name.as_str())
            } else {
                http::HeaderName::from_bytes(name.as_bytes()).is_ok() && !name.bytes().any(|b| b.is_ascii_uppercase())
            };
            if valid {
                components.push(name.clone());
            } else {
                problems.push(Invalid::new(
                    component.span(),
                    key("components"),
                    format!(
                        "{name:?} is not a component palisade can check: a lowercase header name or one of {}",
                        derived.join(", ")
                    ),
                ));
            }
        }
        let policy = self.policies.len();
        for (k, verifying) in keys.iter().enumerate() {
            for id in &verifying.ids {
                self.by_keyid.entry(id.clone()).or_default().push((policy, k));
            }
        }
        self.policies.push(Policy {
            partner,
            keys,
            components,
            max_age_secs: i64::try_from(config.max_age_secs).unwrap_or(i64::MAX),
            clock_skew_secs: i64::try_from(config.clock_skew_secs).unwrap_or(i64::MAX),
            tag: Some(config.tag.clone()).filter(|tag| !tag.is_empty()),
            agent: config.agent.clone(),
            require_nonce: config.require_nonce,
        });
    }

    /// Check the request's signatures at `now` (seconds since the epoch).
    pub fn check(&self, request: &SignedRequest<'_>, now: i64) -> SignedOutcome {
        if self.policies.is_empty() {
            return SignedOutcome::Unsigned;
        }
        let signatures = match presented(request.headers) {
            Ok(signatures) if signatures.is_empty() => return SignedOutcome::Unsigned,
            Ok(signatures) => signatures,
            Err(failure) => {
                let partner = self.by_agent(request.headers);
                return SignedOutcome::Failed { partner, keyid: None, failure };
            }
        };
        // The first signature naming a key palisade knows is the claim.
        let claimed = signatures.iter().find_map(|signature| {
            let keyid = signature.params.keyid.as_deref()?;
            let (id, candidates) = self.by_keyid.get_key_value(keyid)?;
            Some((signature, id.clone(), candidates))
        });
        let Some((signature, keyid, candidates)) = claimed else {
            // Signed by someone palisade has no key for. That is only a
            // claim when it names a partner's agent.
            return match self.by_agent(request.headers) {
                Some(partner) => {
                    SignedOutcome::Failed { partner: Some(partner), keyid: None, failure: Failure::BadSignature }
                }
                None => SignedOutcome::Unsigned,
            };
        };
        let mut first_failure = None;
        for &(policy, key) in candidates {
            let policy = &self.policies[policy];
            match policy.verify(signature, &policy.keys[key], request, now) {
                Ok(nonce) => {
                    return SignedOutcome::Verified { partner: policy.partner.clone(), keyid, nonce };
                }
                Err(failure) => {
                    first_failure.get_or_insert((policy.partner.clone(), failure));
                }
            }
        }
        match first_failure {
            Some((partner, failure)) => SignedOutcome::Failed { partner: Some(partner), keyid: Some(keyid), failure },
            None => SignedOutcome::Unsigned,
        }
    }

    /// The partner whose `agent` the request's `Signature-Agent` names.
    fn by_agent(&self, headers: &http::HeaderMap) -> Option<Arc<Partner>> {
        let sent = signature_agent(headers)?;
        self.policies.iter().find(|p| p.agent.as_deref() == Some(sent.as_str())).map(|p| p.partner.clone())
    }
}

impl Policy {
    /// Check one signature against this policy and key; the nonce's
    /// counter key when it verifies.
    fn verify(
        &self,
        signature: &Presented,
        key: &VerifyingKey,
        request: &SignedRequest<'_>,
        now: i64,
    ) -> Result<Option<(Arc<str>, Duration)>, Failure> {
        if let Some(tag) = &self.tag
            && signature.params.tag.as_deref() != Some(tag.as_str())
        {
            return Err(Failure::WrongTag);
        }
        if let Some(alg) = &signature.params.alg
            && Algorithm::parse(alg) != Some(key.algorithm)
        {
            return Err(Failure::AlgorithmMismatch);
        }
        let covers = |name: &str| signature.components.iter().any(|c| c == name);
        if let Some(missing) = self.components.iter().find(|c| !covers(c)) {
            return Err(Failure::NotCovered(missing.clone()));
        }
        let has_body = request.body.is_some_and(|body| !body.is_empty());
        if has_body && !covers("content-digest") {
            return Err(Failure::NotCovered("content-digest".into()));
        }
        if let Some(agent) = &self.agent {
            let sent = signature_agent(request.headers);
            if sent.as_deref() != Some(agent.as_str()) || !covers("signature-agent") {
                return Err(Failure::AgentMismatch);
            }
        }
        let base = signature.base(request)?;
        if !key.verify(base.as_bytes(), &signature.signature) {
            return Err(Failure::BadSignature);
        }
        // The signature is the key holder's: now whether it is current,
        // and whether the body is the one it covers.
        let created = signature.params.created.ok_or(Failure::Expired)?;
        if created > now.saturating_add(self.clock_skew_secs) {
            return Err(Failure::NotYetValid);
        }
        if now.saturating_sub(created) > self.max_age_secs.saturating_add(self.clock_skew_secs) {
            return Err(Failure::Expired);
        }
        if let Some(expires) = signature.params.expires
            && now > expires.saturating_add(self.clock_skew_secs)
        {
            return Err(Failure::PastExpires);
        }
        // Without the body (a sidecar asked by nginx, which never sends
        // it) the signature still binds the Content-Digest field; the
        // application can check the body against it.
        if covers("content-digest")
            && let Some(body) = request.body
        {
            check_content_digest(request.headers, body)?;
        }
        let nonce = match &signature.params.nonce {
            Some(nonce) => {
                let digest = blake3::hash(format!("{}\0{nonce}", self.partner.name).as_bytes());
                let key = format!("sn:{}:n", &digest.to_hex()[..32]);
                // Accepted from `skew` ahead to `max_age + skew` behind.
                let window = self.max_age_secs.saturating_add(2 * self.clock_skew_secs).max(1);
                Some((Arc::from(key), Duration::from_secs(window.unsigned_abs())))
            }
            None if self.require_nonce => return Err(Failure::MissingNonce),
            None => None,
        };
        Ok(nonce)
    }
}

/// The `Signature-Agent` value: a structured-field string (early Web Bot
/// Auth drafts) or the string of a dictionary's first member (later ones);
/// a bare value is taken as it is.
pub fn signature_agent(headers: &http::HeaderMap) -> Option<String> {
    let value = headers.get("signature-agent")?.to_str().ok()?.trim();
    if let Ok(item) = sfv::Parser::new(value).parse::<sfv::Item>() {
        return item.bare_item.as_string().map(|s| s.as_str().to_string());
    }
    if let Ok(dictionary) = sfv::Parser::new(value).parse::<sfv::Dictionary>()
        && let Some((_, sfv::ListEntry::Item(item))) = dictionary.first()
    {
        return item.bare_item.as_string().map(|s| s.as_str().to_string());
    }
    Some(value.to_string())
}
