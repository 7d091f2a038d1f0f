//! Forwarding to the upstream: the request and response rewriting a
//! reverse proxy owes both sides (hop-by-hop headers, `X-Forwarded-For`,
//! the decision headers for the application). The connections themselves
//! are in [`super::upstream`].

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Uri, Version};

use super::ProxyBody;
use super::client_addr::X_FORWARDED_FOR;
use crate::decision_headers::{DecisionHeaders, has_underscore};
use crate::pipeline::Decision;

pub use super::upstream::{UpstreamBody, UpstreamClient};

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
/// A `static`: a `const` array of names would be built (and dropped) at
/// every use.
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// Whether a (lower-case) name is one of [`HOP_BY_HOP`] or
/// Transfer-Encoding: what [`strip_hop_by_hop`] removes besides the names
/// `Connection` lists (which it lists only when it is there).
#[inline]
fn is_hop_by_hop(name: &str) -> bool {
    // One match on the text (by length, then bytes), run for every header
    // both ways; the test below holds it to HOP_BY_HOP.
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "upgrade"
            | "transfer-encoding"
    )
}

/// Remove hop-by-hop headers, including any the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names, instead of a
    // hashed lookup per name that is not there (both ways, every request).
    if headers.keys().any(|name| is_hop_by_hop(name.as_str())) {
        remove_hop_by_hop(headers);
    }
}

/// [`strip_hop_by_hop`]'s removals, for headers that have one.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    // hyper frames the body itself; a forwarded Transfer-Encoding would lie.
    headers.remove(header::TRANSFER_ENCODING);
}

/// Turn the client's request into the upstream's.
pub fn prepare_request(
    request: &mut Request<ProxyBody>,
    upstream: &Uri,
    peer: IpAddr,
    peer_trusted: bool,
    decision: &Decision,
    names: &DecisionHeaders,
) {
    let found = Found::in_names(request.headers(), names);
    retarget(request, upstream, found.host);
    *request.version_mut() = Version::HTTP_11;
    let headers = request.headers_mut();
    if found.hop_by_hop {
        remove_hop_by_hop(headers);
    }

    if !peer_trusted && found.address_claim {
        remove_client_address_claims(headers);
    }
    if let Some(value) = forwarded_for(headers, peer, peer_trusted) {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }

    // `Host` and `X-Forwarded-For` are set above; a configuration that
    // names a decision header so has it removed first, as any claim.
    let lengths = names.lengths();
    let claimed =
        found.decision_claim || names.is_one(&header::HOST, lengths) || names.is_one(&X_FORWARDED_FOR, lengths);
    names.insert_claimed(headers, decision, claimed);
}

/// What one pass over a request's names finds, for each rewrite that only
/// has work to do when a name is there (most requests have none of them):
/// one pass instead of one per rewrite. Found before anything is removed,
/// so a rewrite may run with nothing left to remove, which changes nothing.
#[derive(Debug, Default)]
struct Found {
    host: bool,
    /// A name [`strip_hop_by_hop`] removes.
    hop_by_hop: bool,
    /// A name [`remove_client_address_claims`] removes, or one with an
    /// underscore (which may spell one).
    address_claim: bool,
    /// A decision header's name, or one with an underscore (see
    /// [`DecisionHeaders::insert_claimed`]).
    decision_claim: bool,
}

impl Found {
    fn in_names(headers: &HeaderMap, names: &DecisionHeaders) -> Found {
        let lengths = names.lengths();
        let mut found = Found::default();
        for key in headers.keys() {
            let name = key.as_str();
            let underscore = has_underscore(name.as_bytes());
            found.host |= key == header::HOST;
            found.hop_by_hop |= is_hop_by_hop(name);
            found.address_claim |= underscore || is_client_address_claim(name);
            found.decision_claim |= underscore || names.is_one(key, lengths);
        }
        found
    }
}

/// Point the request at the upstream: the client's path and query in
/// origin-form (`/path?query`, what goes on a connection to the upstream
/// itself), the client's `Host` kept (`has_host`: the request has one).
/// HTTP/2 clients send `:authority` instead of `Host`; a request with
/// neither gets the upstream's.
fn retarget(request: &mut Request<ProxyBody>, upstream: &Uri, has_host: bool) {
    let client = std::mem::take(request.uri_mut()).into_parts();
    if !has_host {
        let host = match client.authority {
            Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
            None => upstream_host(upstream),
        };
        if let Some(host) = host {
            request.headers_mut().insert(header::HOST, host);
        }
    }
    let path = client.path_and_query.unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(path);
    // Cannot fail: a path alone is an origin-form URI.
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
}

/// The upstream's `Host`: its host, and its port unless it is http's 80.
fn upstream_host(upstream: &Uri) -> Option<HeaderValue> {
    let host = upstream.host()?;
    match upstream.port_u16() {
        Some(port) if port != 80 => HeaderValue::from_str(&format!("{host}:{port}")).ok(),
        _ => HeaderValue::from_str(host).ok(),
    }
}

/// Headers in which a proxy tells the application who the client is. Only
/// a trusted proxy may say that; from anyone else they are a client's
/// claim about itself, which an application (or its rate limiter) might
/// believe. `X-Forwarded-For` is rewritten, not removed: see [`forwarded_for`].
const CLIENT_ADDRESS_HEADERS: [&str; 9] = [
    "x-forwarded-for",
    "x-real-ip",
    "forwarded",
    "true-client-ip",
    "cf-connecting-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "fastly-client-ip",
    "x-original-forwarded-for",
];

/// Remove what an untrusted peer claims about the client's address, in
/// any of the [`CLIENT_ADDRESS_HEADERS`], spelled with `-` or `_` (CGI,
/// WSGI and Rack read `X_Real_IP` as `X-Real-IP`). Called for headers
/// that may have a claim ([`Found::address_claim`]).
fn remove_client_address_claims(headers: &mut HeaderMap) {
    for name in &CLIENT_ADDRESS_HEADERS[1..] {
        headers.remove(*name);
    }
    crate::decision_headers::strip_underscore_aliases(headers, &CLIENT_ADDRESS_HEADERS);
}

/// Whether a name is one of [`CLIENT_ADDRESS_HEADERS`] but
/// `X-Forwarded-For`: one match instead of eight comparisons, for every
/// header of every request.
fn is_client_address_claim(name: &str) -> bool {
    matches!(
        name,
        "x-real-ip"
            | "forwarded"
            | "true-client-ip"
            | "cf-connecting-ip"
            | "x-client-ip"
            | "x-cluster-client-ip"
            | "fastly-client-ip"
            | "x-original-forwarded-for"
    )
}

/// Only a trusted proxy's chain is kept; anything else the client wrote
/// into X-Forwarded-For is dropped rather than passed on as fact.
fn forwarded_for(headers: &HeaderMap, peer: IpAddr, peer_trusted: bool) -> Option<HeaderValue> {
    let mut text = [0u8; 64];
    let peer_text = crate::cidr::ip_text(peer, &mut text).as_bytes();
    if peer_trusted {
        // The values as they are joined with ", ", then the peer; written
        // into one buffer (no list of the values, no formatting).
        let mut chain = Vec::new();
        for value in headers.get_all(&X_FORWARDED_FOR).iter().filter(|v| v.to_str().is_ok()) {
            chain.extend_from_slice(value.as_bytes());
            chain.extend_from_slice(b", ");
        }
        if !chain.is_empty() {
            chain.extend_from_slice(peer_text);
            return HeaderValue::from_bytes(&chain).ok();
        }
    }
    HeaderValue::from_bytes(peer_text).ok()
}

/// Body type used for everything palisade sends.
pub fn full_body(bytes: Bytes) -> ProxyBody {
    use http_body_util::BodyExt;
    http_body_util::Full::new(bytes).map_err(|never| match never {}).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quick_checks_know_every_name_they_stand_for() {
        for name in HOP_BY_HOP.iter().chain([&header::TRANSFER_ENCODING]) {
            assert!(is_hop_by_hop(name.as_str()), "{name}");
        }
        assert!(!is_hop_by_hop("host"));
        for name in &CLIENT_ADDRESS_HEADERS[1..] {
            assert!(is_client_address_claim(name), "{name}");
        }
        assert!(!is_client_address_claim("x-forwarded-for"));
        assert!(!is_client_address_claim("host"));
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("a"));
        headers.insert("connection", HeaderValue::from_static("x-secret"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("x_real_ip", HeaderValue::from_static("1.2.3.4"));
        headers.insert("cf-connecting-ip", HeaderValue::from_static("1.2.3.4"));
        strip_hop_by_hop(&mut headers);
        remove_client_address_claims(&mut headers);
        assert_eq!(headers.keys().map(HeaderName::as_str).collect::<Vec<_>>(), ["host"]);
    }

    #[test]
    fn requests_go_out_in_origin_form_with_a_host() {
        let upstream: Uri = "http://app.internal:8080".parse().unwrap();
        let mut request = Request::builder().uri("http://example.com/a/b?c=d").body(full_body(Bytes::new())).unwrap();
        retarget(&mut request, &upstream, false);
        assert_eq!(request.uri(), "/a/b?c=d");
        assert_eq!(request.headers()[header::HOST], "example.com", "HTTP/2's :authority becomes Host");
        let mut request = Request::builder().uri("/x").body(full_body(Bytes::new())).unwrap();
        retarget(&mut request, &upstream, false);
        assert_eq!(request.uri(), "/x");
        assert_eq!(request.headers()[header::HOST], "app.internal:8080", "no Host: the upstream's");
        let mut request = Request::builder().uri("/").header("host", "client").body(full_body(Bytes::new())).unwrap();
        retarget(&mut request, &"http://app:80".parse().unwrap(), true);
        assert_eq!(request.headers()[header::HOST], "client");
        assert_eq!(upstream_host(&"http://app:80".parse().unwrap()).unwrap(), "app");
    }

    /// The request rewriting as it was before the names were looked at in
    /// one pass ([`Found`]): each rewrite with its own pass or lookups.
    fn prepare_request_as_before(
        request: &mut Request<ProxyBody>,
        upstream: &Uri,
        peer: IpAddr,
        peer_trusted: bool,
        decision: &Decision,
        names: &DecisionHeaders,
    ) {
        let has_host = request.headers().contains_key(header::HOST);
        retarget(request, upstream, has_host);
        *request.version_mut() = Version::HTTP_11;
        let headers = request.headers_mut();
        strip_hop_by_hop(headers);
        if !peer_trusted
            && headers.keys().any(|name| name.as_str().contains('_') || is_client_address_claim(name.as_str()))
        {
            remove_client_address_claims(headers);
        }
        if let Some(value) = forwarded_for(headers, peer, peer_trusted) {
            headers.insert(X_FORWARDED_FOR.clone(), value);
        }
        for name in names.all() {
            headers.remove(name);
        }
        crate::decision_headers::strip_underscore_aliases(headers, &names.all().map(HeaderName::as_str));
        names.insert_claimed(headers, decision, false);
    }

    fn decision(score: u8) -> Decision {
        use crate::identify::Identity;
        let enforced = crate::decide::Outcome { score, action: crate::signal::Action::Allow, retry_after: None };
        Decision {
            request_id: crate::request_id::RequestId(0x0123_4567_89ab_cdef),
            at: 0,
            identity: Identity::Anonymous,
            verdict: crate::decide::Verdict { enforced, would: None },
            signals: Vec::new(),
            mode: crate::config::RouteMode::Enforce,
            fingerprint: std::sync::Arc::from(""),
            context: crate::detect::RequestContext::new(Identity::Anonymous),
        }
    }

    /// Names a client may send, the ones each rewrite looks for among them.
    const CLIENT_NAMES: [&str; 20] = [
        "host",
        "user-agent",
        "accept",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "x-secret",
        "x-real-ip",
        "x_real_ip",
        "forwarded",
        "x-forwarded-for",
        "x_forwarded_for",
        "x-palisade-score",
        "x_palisade_score",
        "x-palisade-action",
        "x-palisade-partner",
        "x_other",
        "sec-ch-ua-mobile",
        "via",
    ];

    proptest::proptest! {
        /// The one-pass rewriting against the one before, header by header
        /// and in order, for requests made of the names each rewrite looks
        /// for, from trusted and untrusted peers, with the default decision
        /// header names and with ones that are also `Host`, `Via` or
        /// `X-Forwarded-For`.
        #[test]
        fn requests_are_rewritten_as_before(
            sent in proptest::collection::vec((0..CLIENT_NAMES.len(), 0..4usize), 0..12),
            trusted in proptest::prelude::any::<bool>(),
            odd_names in 0..4usize,
            authority in proptest::prelude::any::<bool>(),
        ) {
            let defaults = DecisionHeaders::default();
            let names = match odd_names {
                0 => defaults,
                1 => DecisionHeaders { score: header::HOST, ..defaults },
                2 => DecisionHeaders { request_id: HeaderName::from_static("x-forwarded-for"), ..defaults },
                _ => DecisionHeaders { detections: header::VIA, partner: HeaderName::from_static("x-secret"), ..defaults },
            };
            let values = ["a", "x-secret", "x-secret, keep-alive", "1.2.3.4"];
            let upstream: Uri = "http://app.internal:8080".parse().unwrap();
            let uri = if authority { "http://example.com/a?b" } else { "/a?b" };
            let build = || {
                let mut builder = Request::builder().uri(uri);
                for (name, value) in &sent {
                    builder = builder.header(CLIENT_NAMES[*name], values[*value]);
                }
                builder.body(full_body(Bytes::new())).unwrap()
            };
            let (mut now, mut before) = (build(), build());
            let peer: IpAddr = "192.0.2.7".parse().unwrap();
            let decision = decision(42);
            prepare_request(&mut now, &upstream, peer, trusted, &decision, &names);
            prepare_request_as_before(&mut before, &upstream, peer, trusted, &decision, &names);
            let listed = |request: &Request<ProxyBody>| {
                request.headers().iter().map(|(name, value)| (name.clone(), value.clone())).collect::<Vec<_>>()
            };
            proptest::prop_assert_eq!(listed(&now), listed(&before));
            proptest::prop_assert_eq!(now.uri(), before.uri());
        }

        #[test]
        fn addresses_are_written_as_display_writes_them(octets in proptest::prelude::any::<[u8; 4]>(), v6 in proptest::prelude::any::<[u16; 8]>()) {
            let mut text = [0u8; 64];
            let v4 = IpAddr::from(octets);
            let expected = v4.to_string();
            proptest::prop_assert_eq!(crate::cidr::ip_text(v4, &mut text), expected);
            let v6 = IpAddr::from(v6);
            let expected = v6.to_string();
            proptest::prop_assert_eq!(crate::cidr::ip_text(v6, &mut text), expected);
        }
    }

    #[test]
    fn forwarded_for_keeps_only_a_trusted_chain() {
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        headers.append("x-forwarded-for", HeaderValue::from_static("2.2.2.2, 3.3.3.3"));
        let peer: IpAddr = "2001:db8::ffff:1:2:3".parse().unwrap();
        assert_eq!(forwarded_for(&headers, peer, false).unwrap(), "2001:db8::ffff:1:2:3");
        assert_eq!(forwarded_for(&headers, peer, true).unwrap(), "1.1.1.1, 2.2.2.2, 3.3.3.3, 2001:db8::ffff:1:2:3");
        assert_eq!(forwarded_for(&HeaderMap::new(), "10.0.0.1".parse().unwrap(), true).unwrap(), "10.0.0.1");
        // A value that is not text is left out; an empty one is kept.
        let mut odd = HeaderMap::new();
        odd.append("x-forwarded-for", HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap());
        odd.append("x-forwarded-for", HeaderValue::from_static(""));
        odd.append("x-forwarded-for", HeaderValue::from_static("4.4.4.4"));
        assert_eq!(forwarded_for(&odd, "10.0.0.1".parse().unwrap(), true).unwrap(), ", 4.4.4.4, 10.0.0.1");
        let mut only_odd = HeaderMap::new();
        only_odd.append("x-forwarded-for", HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap());
        assert_eq!(forwarded_for(&only_odd, "10.0.0.1".parse().unwrap(), true).unwrap(), "10.0.0.1");
    }
}
