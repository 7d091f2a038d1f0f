//! Partner signature keys: Ed25519 and ECDSA P-256 public keys, written
//! inline in the configuration or read from a local key directory (a JWKS
//! file, as Web Bot Auth publishes one). Nothing is fetched at run time.
//!
//! A key is found by its key id: the one the configuration or the JWK's
//! `kid` gives, and always its JWK thumbprint (RFC 7638), which is what
//! Web Bot Auth signers put in `keyid`.

use std::sync::Arc;

use base64::Engine as _;
use ring::signature::{ECDSA_P256_SHA256_FIXED, ED25519, UnparsedPublicKey};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::Error;

/// A signature algorithm palisade verifies (RFC 9421 §3.3 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Ed25519,
    EcdsaP256Sha256,
}

impl Algorithm {
    pub fn parse(name: &str) -> Option<Algorithm> {
        match name {
            "ed25519" => Some(Algorithm::Ed25519),
            "ecdsa-p256-sha256" => Some(Algorithm::EcdsaP256Sha256),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Ed25519 => "ed25519",
            Algorithm::EcdsaP256Sha256 => "ecdsa-p256-sha256",
        }
    }
}

/// One public key and the ids it is found by.
#[derive(Debug, Clone)]
pub struct VerifyingKey {
    pub algorithm: Algorithm,
    /// Ed25519: the 32-byte key; P-256: the 65-byte uncompressed point.
    public: Vec<u8>,
    /// The ids a signature's `keyid` may name: the configured id or `kid`,
    /// and the JWK thumbprint.
    pub ids: Vec<Arc<str>>,
}

impl VerifyingKey {
    /// A key from its raw public bytes; `id` is added to the thumbprint.
    pub fn from_raw(algorithm: Algorithm, public: Vec<u8>, id: Option<&str>) -> Result<VerifyingKey, Error> {
        let expected = match algorithm {
            Algorithm::Ed25519 => 32,
            Algorithm::EcdsaP256Sha256 => 65,
        };
        if public.len() != expected || (algorithm == Algorithm::EcdsaP256Sha256 && public[0] != 4) {
            return Err(Error::malformed(format!(
                "an {} public key is {expected} bytes{}, this one is {}",
                algorithm.as_str(),
                if algorithm == Algorithm::EcdsaP256Sha256 { " (0x04, x, y)" } else { "" },
                public.len()
            )));
        }
        let mut key = VerifyingKey { algorithm, public, ids: Vec::new() };
        if let Some(id) = id.filter(|id| !id.is_empty()) {
            key.ids.push(Arc::from(id));
        }
        let thumbprint = key.thumbprint();
        if !key.ids.iter().any(|id| **id == *thumbprint) {
            key.ids.push(Arc::from(thumbprint));
        }
        Ok(key)
    }

    /// The JWK thumbprint (RFC 7638): SHA-256 over the key's required
    /// members in lexical order, base64url without padding.
    pub fn thumbprint(&self) -> String {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let canonical = match self.algorithm {
            Algorithm::Ed25519 => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b64(&self.public)),
            Algorithm::EcdsaP256Sha256 => format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                b64(&self.public[1..33]),
                b64(&self.public[33..65])
            ),
        };
        b64(&Sha256::digest(canonical.as_bytes()))
    }

    /// Whether `signature` is this key's signature over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let algorithm: &'static dyn ring::signature::VerificationAlgorithm = match self.algorithm {
            Algorithm::Ed25519 => &ED25519,
            Algorithm::EcdsaP256Sha256 => &ECDSA_P256_SHA256_FIXED,
        };
        UnparsedPublicKey::new(algorithm, &self.public).verify(message, signature).is_ok()
    }
}

/// Decode base64 in any of its usual spellings (standard or URL-safe,
/// padded or not): keys are pasted from many tools.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let text = text.trim();
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD].iter().find_map(|engine| engine.decode(text).ok())
}

// === impl key directory ===

/// One JWK of a key directory; members other than these are ignored.
#[derive(Debug, Deserialize)]
struct Jwk {
    kty: String,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    kid: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

/// Why a key directory could not be read, with the line where it can be told.
#[derive(Debug, PartialEq, Eq)]
pub struct DirectoryError {
    pub line: Option<usize>,
    pub message: String,
}

/// Parse a JWKS document (`{"keys": [...]}`) into verifying keys.
pub fn parse_key_directory(text: &str) -> Result<Vec<VerifyingKey>, DirectoryError> {
    let jwks: Jwks = serde_json::from_str(text).map_err(|error| DirectoryError {
        line: Some(error.line()),
        message: format!("not a JWKS document ({{\"keys\": [...]}}): {error}"),
    })?;
    let mut keys = Vec::with_capacity(jwks.keys.len());
    for (index, jwk) in jwks.keys.iter().enumerate() {
        let fail = |message: String| DirectoryError { line: None, message: format!("keys[{index}]: {message}") };
        let coordinate = |name: &str, value: &Option<String>| {
            let text = value.as_deref().ok_or_else(|| fail(format!("`{name}` is missing")))?;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(text.trim_end_matches('='))
                .map_err(|error| fail(format!("`{name}` is not base64url: {error}")))
        };
        let key = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
            ("OKP", Some("Ed25519")) => {
                VerifyingKey::from_raw(Algorithm::Ed25519, coordinate("x", &jwk.x)?, jwk.kid.as_deref())
            }
            ("EC", Some("P-256")) => {
                let mut point = vec![4u8];
                point.extend(coordinate("x", &jwk.x)?);
                point.extend(coordinate("y", &jwk.y)?);
                VerifyingKey::from_raw(Algorithm::EcdsaP256Sha256, point, jwk.kid.as_deref())
            }
            (kty, crv) => {
                return Err(fail(format!(
                    "unsupported key type {kty:?} / curve {crv:?} (palisade verifies OKP Ed25519 and EC P-256)"
                )));
            }
        };
        keys.push(key.map_err(|error| fail(error.to_string()))?);
    }
    if keys.is_empty() {
        return Err(DirectoryError { line: None, message: "the key directory holds no key".into() });
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Ed25519 test key of RFC 9421 Appendix B.1.4, as a JWK.
    const RFC_KEY_X: &str = "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs";

    #[test]
    fn reads_a_web_bot_auth_key_directory() {
        let text =
            format!(r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{RFC_KEY_X}","kid":"test-key-ed25519"}}]}}"#);
        let keys = parse_key_directory(&text).unwrap();
        assert_eq!(keys.len(), 1);
        // The thumbprint Web Bot Auth's examples give for this key.
        assert_eq!(&*keys[0].ids[1], "poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U");
        assert_eq!(&*keys[0].ids[0], "test-key-ed25519");
    }

    #[test]
    fn bad_directories_say_where() {
        let error = parse_key_directory("{\n  \"keys\": [\n  oops\n]}").unwrap_err();
        assert_eq!(error.line, Some(3));
        let error = parse_key_directory(r#"{"keys":[{"kty":"RSA","n":"AQAB"}]}"#).unwrap_err();
        assert!(error.message.contains("unsupported key type"), "{}", error.message);
        let error = parse_key_directory(r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AAAA"}]}"#).unwrap_err();
        assert!(error.message.contains("32 bytes"), "{}", error.message);
    }

    #[test]
    fn base64_in_any_spelling() {
        let raw = decode_base64(RFC_KEY_X).unwrap();
        let standard = base64::engine::general_purpose::STANDARD.encode(&raw);
        assert_eq!(decode_base64(&standard), Some(raw));
    }
}
