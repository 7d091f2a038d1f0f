//! Partners proven by client certificates (mutual TLS).
//!
//! The TLS handshake (see `listen::tls`) already checked that the client's
//! certificate chains to one of the partner CAs and that the client holds
//! its key. What is left is *which* partner: the certificate's SHA-256
//! fingerprint (pinned), or its issuer plus subject common name, or its
//! issuer alone for CA-wide trust. The facts are read once per connection
//! ([`ClientCert::from_der`], in the view's vocabulary), not per request.

use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::Partner;
use crate::config::{Config, Invalid, PartnerMtlsConfig};
use crate::error::Error;
use crate::view::ClientCert;

/// One partner's certificate rule.
#[derive(Debug)]
struct Pin {
    partner: Arc<Partner>,
    /// The CA's subject name (DER), which its certificates name as issuer.
    ca_subject: Vec<u8>,
    fingerprints: Vec<[u8; 32]>,
    subject_cn: Option<String>,
    any_from_ca: bool,
}

/// Every partner proven by certificate, and the CAs the TLS listener
/// must trust for client certificates.
#[derive(Debug, Default)]
pub struct CertPartners {
    pins: Vec<Pin>,
}

impl CertPartners {
    pub fn is_empty(&self) -> bool {
        self.pins.is_empty()
    }

    /// Add a partner's `[partner.mtls]` section.
    pub fn add(
        &mut self,
        root: &Config,
        index: usize,
        partner: Arc<Partner>,
        config: &PartnerMtlsConfig,
        problems: &mut Vec<Invalid>,
    ) {
        let key = |field: &str| format!("partner[{index}].mtls.{field}");
        if root.tls.is_none() {
            problems.push(Invalid::new(
                config.ca_path.span(),
                key("ca_path"),
                "client certificates need a `[tls]` section",
            ));
        }
        let ca_subject = match read_ca(root, config) {
            Ok(der) => match x509_parser::parse_x509_certificate(&der) {
                Ok((_, ca)) => ca.subject().as_raw().to_vec(),
                Err(error) => {
                    problems.push(Invalid::new(
                        config.ca_path.span(),
                        key("ca_path"),
                        format!("not a certificate: {error}"),
                    ));
                    Vec::new()
                }
            },
            Err(message) => {
                problems.push(Invalid::new(config.ca_path.span(), key("ca_path"), message.to_string()));
                Vec::new()
            }
        };
        let mut fingerprints = Vec::new();
        for (i, text) in config.cert_sha256.iter().enumerate() {
            let cleaned: String = text.get_ref().chars().filter(|c| *c != ':' && !c.is_whitespace()).collect();
            match hex::decode(&cleaned).ok().and_then(|bytes| <[u8; 32]>::try_from(bytes).ok()) {
                Some(fingerprint) => fingerprints.push(fingerprint),
                None => problems.push(Invalid::new(
                    text.span(),
                    key(&format!("cert_sha256[{i}]")),
                    "expected the certificate's SHA-256 as 64 hex characters (e.g. `openssl x509 -noout -fingerprint -sha256`)",
                )),
            }
        }
        if fingerprints.is_empty() && config.subject_cn.is_none() && !config.any_from_ca {
            problems.push(Invalid::new(
                config.ca_path.span(),
                key("cert_sha256"),
                "say which certificates are the partner's: `cert_sha256`, `subject_cn`, or `any_from_ca = true`",
            ));
        }
        self.pins.push(Pin {
            partner,
            ca_subject,
            fingerprints,
            subject_cn: config.subject_cn.clone(),
            any_from_ca: config.any_from_ca,
        });
    }

    /// The partner a verified client certificate proves, if any.
    pub fn identify(&self, cert: &ClientCert) -> Option<Arc<Partner>> {
        self.pins.iter().find(|pin| pin.matches(cert)).map(|pin| pin.partner.clone())
    }
}

impl Pin {
    fn matches(&self, cert: &ClientCert) -> bool {
        if self.fingerprints.contains(&cert.sha256) {
            return true;
        }
        let from_ca = !self.ca_subject.is_empty() && cert.issuer == self.ca_subject;
        from_ca && (self.any_from_ca || (self.subject_cn.is_some() && self.subject_cn == cert.subject_cn))
    }
}

/// The DER of the first certificate in a partner's `ca_path`.
pub fn read_ca(root: &Config, config: &PartnerMtlsConfig) -> Result<CertificateDer<'static>, Error> {
    let file = root.resolve_path(config.ca_path.get_ref());
    let text = std::fs::read(&file).map_err(|error| Error::read(format!("cannot read {}: {error}", file.display())))?;
    CertificateDer::pem_slice_iter(&text)
        .next()
        .ok_or_else(|| Error::malformed(format!("{} holds no PEM certificate", file.display())))?
        .map_err(|error| Error::malformed(format!("{} is not valid PEM: {error}", file.display())))
}

/// Every partner CA of the configuration: the roots client certificates
/// are verified against. Unreadable files are left to the allowlist's
/// problems.
pub fn client_roots(root: &Config) -> Vec<CertificateDer<'static>> {
    root.partners.iter().filter_map(|p| p.mtls.as_ref()).filter_map(|mtls| read_ca(root, mtls).ok()).collect()
}
