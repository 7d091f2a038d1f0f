//! Signed tokens: the session cookie, the clearance cookie and the
//! proof-of-work challenge are one compact format, told apart by a kind
//! byte and authenticated with HMAC-SHA256 under the configured secret.
//!
//! ```text
//! version(1) kind(1) issued(4) expires(4) id(8) binding(8) extra(1) | tag(16)
//! ```
//!
//! 43 bytes, 58 characters of unpadded base64url. Times are Unix seconds;
//! `id` is random (it keys the token's counters); `binding` is a keyed hash
//! of the client's address prefix and browser identity, so a token copied
//! to another network or another browser is worth nothing; `extra` is the
//! difficulty of a challenge. Nothing in a token names a person.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::error::Error;

type HmacSha256 = Hmac<Sha256>;

const VERSION: u8 = 1;
const BODY_LEN: usize = 27;
const TAG_LEN: usize = 16;

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Session,
    Clearance,
    Challenge,
}

impl TokenKind {
    fn byte(self) -> u8 {
        match self {
            TokenKind::Session => b's',
            TokenKind::Clearance => b'c',
            TokenKind::Challenge => b'p',
        }
    }
}

/// A token's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    pub issued: u32,
    pub expires: u32,
    pub id: [u8; 8],
    pub binding: [u8; 8],
    pub extra: u8,
}

impl Token {
    /// The id as 16 hex characters (counter keys, the decision log).
    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }
}

/// Why a presented token is not honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Not a token at all, or the signature does not match (forged, or
    /// signed with another secret).
    BadSignature,
    /// A token of another kind (a session cookie offered as clearance).
    WrongKind,
    Expired,
    /// Signed, but for another address prefix or browser.
    OtherClient,
}

impl Rejection {
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::BadSignature => "bad_signature",
            Rejection::WrongKind => "wrong_kind",
            Rejection::Expired => "expired",
            Rejection::OtherClient => "bound_to_another_client",
        }
    }
}

/// Signs and checks tokens with one secret.
#[derive(Clone)]
pub struct Signer {
    mac: HmacSha256,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<secret>)")
    }
}

impl Signer {
    /// A signer for `secret` (any length; HMAC hashes long keys).
    pub fn new(secret: &[u8]) -> Result<Signer, Error> {
        let mac = <HmacSha256 as KeyInit>::new_from_slice(secret)
            .map_err(|e| Error::config(format!("session secret: {e}")))?;
        Ok(Signer { mac })
    }

    /// The binding of a client: a keyed hash of its address prefix and its
    /// browser identity (the User-Agent).
    pub fn binding(&self, prefix: &str, identity: &str) -> [u8; 8] {
        let mut mac = self.mac.clone();
        for part in [b"bind".as_slice(), prefix.as_bytes(), identity.as_bytes()] {
            mac.update(&(part.len() as u32).to_be_bytes());
            mac.update(part);
        }
        let full = mac.finalize().into_bytes();
        let mut binding = [0u8; 8];
        binding.copy_from_slice(&full[..8]);
        binding
    }

    pub fn encode(&self, token: &Token) -> String {
        let mut bytes = [0u8; BODY_LEN + TAG_LEN];
        bytes[0] = VERSION;
        bytes[1] = token.kind.byte();
        bytes[2..6].copy_from_slice(&token.issued.to_be_bytes());
        bytes[6..10].copy_from_slice(&token.expires.to_be_bytes());
        bytes[10..18].copy_from_slice(&token.id);
        bytes[18..26].copy_from_slice(&token.binding);
        bytes[26] = token.extra;
        let mut mac = self.mac.clone();
        mac.update(&bytes[..BODY_LEN]);
        let tag = mac.finalize().into_bytes();
        bytes[BODY_LEN..].copy_from_slice(&tag[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Check a presented token: signature first (constant time), then
    /// kind, expiry at `now_secs` and binding.
    pub fn check(&self, text: &str, kind: TokenKind, now_secs: u32, binding: &[u8; 8]) -> Result<Token, Rejection> {
        let token = self.verify(text)?;
        if token.kind != kind {
            return Err(Rejection::WrongKind);
        }
        if now_secs >= token.expires {
            return Err(Rejection::Expired);
        }
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&token.binding[..], &binding[..])) {
            return Err(Rejection::OtherClient);
        }
        Ok(token)
    }

    /// The token, when its signature is ours.
    fn verify(&self, text: &str) -> Result<Token, Rejection> {
        // A token is 58 characters; anything much longer is not worth decoding.
        if text.len() > 80 {
            return Err(Rejection::BadSignature);
        }
        let bytes = URL_SAFE_NO_PAD.decode(text.trim()).map_err(|_| Rejection::BadSignature)?;
        if bytes.len() != BODY_LEN + TAG_LEN || bytes[0] != VERSION {
            return Err(Rejection::BadSignature);
        }
        let mut mac = self.mac.clone();
        mac.update(&bytes[..BODY_LEN]);
        mac.verify_truncated_left(&bytes[BODY_LEN..]).map_err(|_| Rejection::BadSignature)?;
        let kind = match bytes[1] {
            b's' => TokenKind::Session,
            b'c' => TokenKind::Clearance,
            b'p' => TokenKind::Challenge,
            _ => return Err(Rejection::BadSignature),
        };
        let word = |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let mut id = [0u8; 8];
        id.copy_from_slice(&bytes[10..18]);
        let mut binding = [0u8; 8];
        binding.copy_from_slice(&bytes[18..26]);
        Ok(Token { kind, issued: word(2), expires: word(6), id, binding, extra: bytes[26] })
    }
}

/// Eight random bytes from the operating system, for token ids.
pub fn random_id() -> [u8; 8] {
    let mut id = [0u8; 8];
    if getrandom::fill(&mut id).is_err() {
        // Without an OS source, a clock-and-counter id is still unique; it
        // only needs to be unguessable to keep one client's counters from
        // being spent by another, and the binding already prevents that.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let hash = blake3::hash(
            &[crate::clock::Clock::now(&crate::clock::SystemClock).to_le_bytes(), n.to_le_bytes()].concat(),
        );
        id.copy_from_slice(&hash.as_bytes()[..8]);
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(kind: TokenKind, binding: [u8; 8]) -> Token {
        Token { kind, issued: 1_000, expires: 2_000, id: [7; 8], binding, extra: 16 }
    }

    #[test]
    fn a_token_round_trips_and_is_compact() {
        let signer = Signer::new(b"secret").unwrap();
        let binding = signer.binding("203.0.113.0/24", "Mozilla/5.0");
        let text = signer.encode(&token(TokenKind::Session, binding));
        assert_eq!(text.len(), 58);
        assert_eq!(signer.check(&text, TokenKind::Session, 1_500, &binding), Ok(token(TokenKind::Session, binding)));
    }

    #[test]
    fn forged_expired_misbound_and_wrong_kind_tokens_are_refused() {
        let signer = Signer::new(b"secret").unwrap();
        let other = Signer::new(b"another secret").unwrap();
        let binding = signer.binding("203.0.113.0/24", "Mozilla/5.0");
        let text = signer.encode(&token(TokenKind::Clearance, binding));
        assert_eq!(other.check(&text, TokenKind::Clearance, 1_500, &binding), Err(Rejection::BadSignature));
        assert_eq!(signer.check(&text, TokenKind::Clearance, 2_000, &binding), Err(Rejection::Expired));
        assert_eq!(signer.check(&text, TokenKind::Session, 1_500, &binding), Err(Rejection::WrongKind));
        let elsewhere = signer.binding("198.51.100.0/24", "Mozilla/5.0");
        assert_eq!(signer.check(&text, TokenKind::Clearance, 1_500, &elsewhere), Err(Rejection::OtherClient));
        // One flipped bit anywhere breaks the signature.
        let mut bytes = URL_SAFE_NO_PAD.decode(&text).unwrap();
        bytes[7] ^= 1;
        let tampered = URL_SAFE_NO_PAD.encode(&bytes);
        assert_eq!(signer.check(&tampered, TokenKind::Clearance, 1_500, &binding), Err(Rejection::BadSignature));
        assert_eq!(signer.check("not a token", TokenKind::Clearance, 1_500, &binding), Err(Rejection::BadSignature));
        assert_eq!(signer.check(&"A".repeat(500), TokenKind::Clearance, 1_500, &binding), Err(Rejection::BadSignature));
    }

    #[test]
    fn ids_are_random() {
        assert_ne!(random_id(), random_id());
    }
}
