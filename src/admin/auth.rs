//! Who may change things: the bearer token of `[admin] token` (or
//! `PALISADE_ADMIN_TOKEN`), compared in constant time. Without a token
//! configured, no change is accepted at all.

use std::net::SocketAddr;

use http::{HeaderMap, StatusCode, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AdminToken;
use super::Answer;

/// Header an operator may set to name themselves in audit lines.
pub const OPERATOR_HEADER: &str = "x-palisade-operator";

/// Who made a change, for the audit line.
#[derive(Debug, Clone)]
pub struct Actor {
    pub peer: SocketAddr,
    /// The `X-Palisade-Operator` header, when sent (at most 100 characters).
    pub operator: Option<String>,
}

/// The actor when the request carries the token; the refusal otherwise.
pub fn authorize(headers: &HeaderMap, token: Option<&AdminToken>, peer: SocketAddr) -> Result<Actor, Answer> {
    let Some(token) = token else {
        return Err(Answer::error(
            StatusCode::FORBIDDEN,
            "no admin token is configured ([admin] token or PALISADE_ADMIN_TOKEN): the admin API is read-only",
        ));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(presented) = presented else {
        return Err(Answer::error(StatusCode::UNAUTHORIZED, "send the admin token as `Authorization: Bearer TOKEN`"));
    };
    if !same_secret(presented, &token.0) {
        return Err(Answer::error(StatusCode::UNAUTHORIZED, "wrong admin token"));
    }
    let operator = headers
        .get(OPERATOR_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(|name| name.chars().filter(|c| !c.is_control()).take(100).collect::<String>())
        .filter(|name| !name.trim().is_empty());
    Ok(Actor { peer, operator })
}

/// Compare digests, so that neither the contents nor the length of the
/// token shows in the time taken.
fn same_secret(presented: &str, expected: &str) -> bool {
    let (a, b) = (Sha256::digest(presented.as_bytes()), Sha256::digest(expected.as_bytes()));
    a.as_slice().ct_eq(b.as_slice()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn only_the_right_token_passes() {
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let token = AdminToken("s3cret".into());
        let refused = |h: &HeaderMap, t: Option<&AdminToken>| authorize(h, t, peer).err().map(|a| a.status);
        assert_eq!(refused(&headers(&[]), Some(&token)), Some(StatusCode::UNAUTHORIZED));
        assert_eq!(
            refused(&headers(&[("authorization", "Bearer nope")]), Some(&token)),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            refused(&headers(&[("authorization", "Basic s3cret")]), Some(&token)),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(refused(&headers(&[("authorization", "Bearer s3cret")]), None), Some(StatusCode::FORBIDDEN));
        let actor = authorize(
            &headers(&[("authorization", "Bearer s3cret"), ("x-palisade-operator", "ana")]),
            Some(&token),
            peer,
        )
        .unwrap();
        assert_eq!(actor.operator.as_deref(), Some("ana"));
    }
}
