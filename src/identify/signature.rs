//! HTTP Message Signatures (RFC 9421) on requests: reading the
//! `Signature-Input` and `Signature` fields (structured fields, parsed with
//! `sfv`), rebuilding the signature base from the request, and checking a
//! body against its `Content-Digest` (RFC 9530).
//!
//! This module knows nothing about partners: it answers "what does this
//! request say it signed, and what are those bytes". Which keys, which
//! components and which time window count is `super::signed`'s policy.

use base64::Engine as _;
use sfv::{BareItem, Dictionary, InnerList, ListEntry, ListSerializer, Parser};
use sha2::{Digest, Sha256, Sha512};

/// Why a signature could not be verified; `as_str` is what the decision
/// log shows as the `reason` evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// `Signature-Input` or `Signature` is not a valid structured field, or
    /// their labels do not pair up.
    Malformed(String),
    /// A covered component is not in the request.
    MissingComponent(String),
    /// A covered component palisade does not derive (`@target-uri`,
    /// component parameters such as `;sf`).
    UnsupportedComponent(String),
    /// The partner requires a component the signature does not cover.
    NotCovered(String),
    /// The body does not match its `Content-Digest`.
    DigestMismatch,
    /// No `created`, or `created` older than allowed.
    Expired,
    /// `created` in the future beyond the allowed clock skew.
    NotYetValid,
    /// `expires` has passed.
    PastExpires,
    /// The `alg` parameter names another algorithm than the key's.
    AlgorithmMismatch,
    /// A `tag` other than the one the partner signs with.
    WrongTag,
    /// `Signature-Agent` missing, not covered, or not the partner's.
    AgentMismatch,
    /// A nonce is required and there is none.
    MissingNonce,
    /// The signature does not verify with the key its `keyid` names.
    BadSignature,
}

impl Failure {
    pub fn as_str(&self) -> &'static str {
        match self {
            Failure::Malformed(_) => "malformed",
            Failure::MissingComponent(_) => "missing_component",
            Failure::UnsupportedComponent(_) => "unsupported_component",
            Failure::NotCovered(_) => "component_not_covered",
            Failure::DigestMismatch => "content_digest_mismatch",
            Failure::Expired => "expired",
            Failure::NotYetValid => "created_in_future",
            Failure::PastExpires => "past_expires",
            Failure::AlgorithmMismatch => "alg_mismatch",
            Failure::WrongTag => "wrong_tag",
            Failure::AgentMismatch => "signature_agent_mismatch",
            Failure::MissingNonce => "missing_nonce",
            Failure::BadSignature => "bad_signature",
        }
    }

    /// The component or parse error behind the failure, when there is one.
    pub fn detail(&self) -> Option<&str> {
        match self {
            Failure::Malformed(detail)
            | Failure::MissingComponent(detail)
            | Failure::UnsupportedComponent(detail)
            | Failure::NotCovered(detail) => Some(detail),
            _ => None,
        }
    }
}

/// The parts of a request a signature base is built from.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// The request target as sent: path and query, not decoded.
    pub target: &'a str,
    /// The `:authority` of HTTP/2, when the URI carries one.
    pub authority: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
    pub body: Option<&'a [u8]>,
}

/// The signature parameters RFC 9421 §2.3 defines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    pub created: Option<i64>,
    pub expires: Option<i64>,
    pub nonce: Option<String>,
    pub alg: Option<String>,
    pub keyid: Option<String>,
    pub tag: Option<String>,
}

/// One signature a request carries: its label, what it covers, and the
/// signature bytes.
#[derive(Debug, Clone)]
pub struct Presented {
    pub label: String,
    pub components: Vec<String>,
    pub params: Params,
    pub signature: Vec<u8>,
    /// The `Signature-Input` member, kept to serialize `@signature-params`.
    input: InnerList,
}

/// Every signature in the request's `Signature-Input` / `Signature`
/// fields, in `Signature-Input` order. No fields: an empty list.
pub fn presented(headers: &http::HeaderMap) -> Result<Vec<Presented>, Failure> {
    let input = joined(headers, "signature-input");
    let signature = joined(headers, "signature");
    let (input, signature) = match (input, signature) {
        (None, None) => return Ok(Vec::new()),
        (Some(input), Some(signature)) => (input, signature),
        (Some(_), None) => return Err(Failure::Malformed("Signature-Input without Signature".into())),
        (None, Some(_)) => return Err(Failure::Malformed("Signature without Signature-Input".into())),
    };
    let inputs: Dictionary =
        Parser::new(&input).parse().map_err(|error| Failure::Malformed(format!("Signature-Input: {error}")))?;
    let signatures: Dictionary =
        Parser::new(&signature).parse().map_err(|error| Failure::Malformed(format!("Signature: {error}")))?;
    let mut out = Vec::with_capacity(inputs.len());
    for (label, entry) in &inputs {
        let ListEntry::InnerList(list) = entry else {
            return Err(Failure::Malformed(format!("Signature-Input {label} is not an inner list")));
        };
        let bytes = match signatures.get(label) {
            Some(ListEntry::Item(item)) => item.bare_item.as_byte_sequence().map(<[u8]>::to_vec),
            _ => None,
        }
        .ok_or_else(|| Failure::Malformed(format!("Signature has no byte sequence labelled {label}")))?;
        let mut components = Vec::with_capacity(list.items.len());
        for item in &list.items {
            let name = item
                .bare_item
                .as_string()
                .ok_or_else(|| Failure::Malformed(format!("Signature-Input {label}: components are strings")))?;
            if !item.params.is_empty() {
                return Err(Failure::UnsupportedComponent(format!("{} with parameters", name.as_str())));
            }
            components.push(name.as_str().to_string());
        }
        out.push(Presented {
            label: label.as_str().to_string(),
            components,
            params: params_of(label.as_str(), list)?,
            signature: bytes,
            input: list.clone(),
        });
    }
    Ok(out)
}

fn params_of(label: &str, list: &InnerList) -> Result<Params, Failure> {
    let mut params = Params::default();
    for (key, value) in &list.params {
        let bad = || Failure::Malformed(format!("Signature-Input {label}: bad `{}` parameter", key.as_str()));
        let integer = || value.as_integer().map(i64::from).ok_or_else(bad);
        let string = || value.as_string().map(|s| s.as_str().to_string()).ok_or_else(bad);
        match key.as_str() {
            "created" => params.created = Some(integer()?),
            "expires" => params.expires = Some(integer()?),
            "nonce" => params.nonce = Some(string()?),
            "alg" => params.alg = Some(string()?),
            "keyid" => params.keyid = Some(string()?),
            "tag" => params.tag = Some(string()?),
            // Unknown parameters are signed over (they are in
            // @signature-params) and otherwise ignored, as RFC 9421 allows.
            _ => {}
        }
    }
    Ok(params)
}

/// All values of a header joined with `, ` (RFC 9421 §2.1), or `None`.
fn joined(headers: &http::HeaderMap, name: &str) -> Option<String> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    let mut out = String::new();
    for (i, value) in values.enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        // Obsolete line folding and non-UTF-8 bytes are kept as Latin-1
        // would show them; signers sign what they sent.
        out.push_str(&String::from_utf8_lossy(value.as_bytes().trim_ascii()));
    }
    Some(out)
}

impl Presented {
    /// The signature base (RFC 9421 §2.5) of this signature over `request`.
    pub fn base(&self, request: &SignedRequest<'_>) -> Result<String, Failure> {
        let mut base = String::with_capacity(256);
        for name in &self.components {
            let value = component_value(name, request)?;
            base.push('"');
            base.push_str(name);
            base.push_str("\": ");
            base.push_str(&value);
            base.push('\n');
        }
        base.push_str("\"@signature-params\": ");
        base.push_str(&self.signature_params());
        Ok(base)
    }

    /// The serialized `Signature-Input` member: the `@signature-params` value.
    pub fn signature_params(&self) -> String {
        let mut serializer = ListSerializer::new();
        serializer.members(std::iter::once(&ListEntry::InnerList(self.input.clone())));
        serializer.finish().unwrap_or_default()
    }
}

/// The value of one covered component (RFC 9421 §2.1, §2.2).
fn component_value(name: &str, request: &SignedRequest<'_>) -> Result<String, Failure> {
    let (path, query) = match request.target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (request.target, None),
    };
    Ok(match name {
        "@method" => request.method.to_string(),
        "@authority" => {
            let authority = request
                .authority
                .map(str::to_string)
                .or_else(|| joined(request.headers, "host"))
                .ok_or_else(|| Failure::MissingComponent(name.into()))?;
            authority.to_ascii_lowercase()
        }
        "@path" => if path.is_empty() { "/" } else { path }.to_string(),
        "@query" => format!("?{}", query.unwrap_or("")),
        "@request-target" => request.target.to_string(),
        "@signature-params" => return Err(Failure::Malformed("@signature-params is not a covered component".into())),
        derived if derived.starts_with('@') => return Err(Failure::UnsupportedComponent(derived.into())),
        field => {
            if field.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(Failure::Malformed(format!("component names are lowercase: {field:?}")));
            }
            joined(request.headers, field).ok_or_else(|| Failure::MissingComponent(field.into()))?
        }
    })
}

// === impl content digest ===

/// Check `body` against the request's `Content-Digest` (RFC 9530): every
/// `sha-256` / `sha-512` member must match, and at least one must be there.
pub fn check_content_digest(headers: &http::HeaderMap, body: &[u8]) -> Result<(), Failure> {
    let field = joined(headers, "content-digest").ok_or_else(|| Failure::MissingComponent("content-digest".into()))?;
    let digests: Dictionary =
        Parser::new(&field).parse().map_err(|error| Failure::Malformed(format!("Content-Digest: {error}")))?;
    let mut checked = 0;
    for (algorithm, entry) in &digests {
        let ListEntry::Item(item) = entry else { continue };
        let BareItem::ByteSequence(expected) = &item.bare_item else { continue };
        let actual: Vec<u8> = match algorithm.as_str() {
            "sha-256" => Sha256::digest(body).to_vec(),
            "sha-512" => Sha512::digest(body).to_vec(),
            _ => continue,
        };
        if actual != *expected {
            return Err(Failure::DigestMismatch);
        }
        checked += 1;
    }
    if checked == 0 {
        return Err(Failure::Malformed("Content-Digest has no sha-256 or sha-512 member".into()));
    }
    Ok(())
}

/// The `Content-Digest` value for a body (sha-256), for signers and tests.
pub fn content_digest(body: &[u8]) -> String {
    format!("sha-256=:{}:", base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identify::keys::{Algorithm, VerifyingKey, decode_base64};

    /// RFC 9421 Appendix B.1.4: the Ed25519 test key (public half, SPKI).
    const RFC_ED25519_SPKI: &str = "MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=";

    /// The test request of RFC 9421 Appendix B.2 with the fields B.2.6 signs.
    fn rfc_request() -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert("host", "example.com".parse().unwrap());
        headers.insert("date", "Tue, 20 Apr 2021 02:07:55 GMT".parse().unwrap());
        headers.insert("content-type", "application/json".parse().unwrap());
        headers.insert(
            "content-digest",
            "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:"
                .parse()
                .unwrap(),
        );
        headers.insert("content-length", "18".parse().unwrap());
        headers.insert(
            "signature-input",
            r#"sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519""#
                .parse()
                .unwrap(),
        );
        headers.insert(
            "signature",
            "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:"
                .parse()
                .unwrap(),
        );
        headers
    }

    fn rfc_key() -> VerifyingKey {
        // The last 32 bytes of the SPKI are the raw key.
        let spki = decode_base64(RFC_ED25519_SPKI).unwrap();
        VerifyingKey::from_raw(Algorithm::Ed25519, spki[12..].to_vec(), Some("test-key-ed25519")).unwrap()
    }

    const RFC_BODY: &[u8] = b"{\"hello\": \"world\"}";

    #[test]
    fn rfc_9421_b_2_6_base_is_rebuilt_byte_for_byte_and_verifies() {
        let headers = rfc_request();
        let request = SignedRequest {
            method: "POST",
            target: "/foo?param=Value&Pet=dog",
            authority: None,
            headers: &headers,
            body: None,
        };
        let signatures = presented(&headers).unwrap();
        assert_eq!(signatures.len(), 1);
        let signature = &signatures[0];
        assert_eq!(signature.label, "sig-b26");
        assert_eq!(signature.params.created, Some(1_618_884_473));
        assert_eq!(signature.params.keyid.as_deref(), Some("test-key-ed25519"));
        let base = signature.base(&request).unwrap();
        // The signature base printed in RFC 9421 B.2.6 (line wrapping undone).
        let expected = concat!(
            "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n",
            "\"@method\": POST\n",
            "\"@path\": /foo\n",
            "\"@authority\": example.com\n",
            "\"content-type\": application/json\n",
            "\"content-length\": 18\n",
            "\"@signature-params\": (\"date\" \"@method\" \"@path\" \"@authority\" \"content-type\" \"content-length\");created=1618884473;keyid=\"test-key-ed25519\"",
        );
        assert_eq!(base, expected);
        assert!(rfc_key().verify(base.as_bytes(), &signature.signature));
        // One changed byte anywhere and it does not.
        let tampered = base.replace("/foo", "/fob");
        assert!(!rfc_key().verify(tampered.as_bytes(), &signature.signature));
    }

    #[test]
    fn rfc_9421_b_2_content_digest_matches_the_test_body() {
        let headers = rfc_request();
        check_content_digest(&headers, RFC_BODY).unwrap();
        assert_eq!(check_content_digest(&headers, b"{\"hello\": \"World\"}"), Err(Failure::DigestMismatch));
        let mut sha256 = http::HeaderMap::new();
        sha256.insert("content-digest", content_digest(RFC_BODY).parse().unwrap());
        check_content_digest(&sha256, RFC_BODY).unwrap();
    }

    #[test]
    fn derived_components_follow_the_rfc() {
        let mut headers = http::HeaderMap::new();
        headers.insert("host", "Example.COM".parse().unwrap());
        headers.append("x-multi", " a ".parse().unwrap());
        headers.append("x-multi", "b".parse().unwrap());
        let request =
            SignedRequest { method: "GET", target: "/p/q?x=1", authority: None, headers: &headers, body: None };
        assert_eq!(component_value("@authority", &request).unwrap(), "example.com");
        assert_eq!(component_value("@path", &request).unwrap(), "/p/q");
        assert_eq!(component_value("@query", &request).unwrap(), "?x=1");
        assert_eq!(component_value("x-multi", &request).unwrap(), "a, b");
        assert_eq!(component_value("x-absent", &request), Err(Failure::MissingComponent("x-absent".into())));
        assert!(matches!(component_value("@target-uri", &request), Err(Failure::UnsupportedComponent(_))));
    }

    #[test]
    fn malformed_fields_are_failures_not_panics() {
        for (input, signature) in [
            ("sig1=(\"@method\";created=1", "sig1=:AAAA:"),
            ("sig1=(\"@method\");created=1", "sig2=:AAAA:"),
            ("sig1=\"@method\"", "sig1=:AAAA:"),
            ("sig1=(@method);created=1", "sig1=:AAAA:"),
            ("sig1=(\"@method\");created=\"x\"", "sig1=:AAAA:"),
        ] {
            let mut headers = http::HeaderMap::new();
            headers.insert("signature-input", input.parse().unwrap());
            headers.insert("signature", signature.parse().unwrap());
            assert!(matches!(presented(&headers), Err(Failure::Malformed(_))), "{input}");
        }
    }
}
