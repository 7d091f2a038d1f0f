//! Forwarding to the upstream: the pooled client and the request and
//! response rewriting a reverse proxy owes both sides (hop-by-hop headers,
//! `X-Forwarded-For`, the decision headers for the application).

use std::io::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::ProxyBody;
use crate::decision_headers::DecisionHeaders;
use crate::pipeline::Decision;

pub type UpstreamClient = Client<HttpConnector, ProxyBody>;

pub fn upstream_client(connect_timeout: Duration) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build(connector)
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// Remove hop-by-hop headers, including any the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
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
    retarget(request, upstream);
    *request.version_mut() = Version::HTTP_11;
    let headers = request.headers_mut();
    strip_hop_by_hop(headers);

    if !peer_trusted {
        strip_client_address_claims(headers);
    }
    if let Some(value) = forwarded_for(headers, peer, peer_trusted) {
        headers.insert("x-forwarded-for", value);
    }

    names.insert(headers, decision);
}

/// Point the request at the upstream, keeping the client's path and query.
/// The parts are moved, not reformatted and parsed again.
fn retarget(request: &mut Request<ProxyBody>, upstream: &Uri) {
    let client = std::mem::take(request.uri_mut()).into_parts();
    let mut parts = upstream.clone().into_parts();
    parts.path_and_query = Some(client.path_and_query.unwrap_or_else(|| PathAndQuery::from_static("/")));
    // HTTP/2 clients send :authority instead of Host.
    if !request.headers().contains_key(header::HOST)
        && let Some(value) = client.authority.and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        request.headers_mut().insert(header::HOST, value);
    }
    // Cannot fail: the upstream has a scheme and an authority (checked
    // when the configuration is loaded) and there is a path.
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
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
/// WSGI and Rack read `X_Real_IP` as `X-Real-IP`).
fn strip_client_address_claims(headers: &mut HeaderMap) {
    for name in &CLIENT_ADDRESS_HEADERS[1..] {
        headers.remove(*name);
    }
    crate::decision_headers::strip_underscore_aliases(headers, &CLIENT_ADDRESS_HEADERS);
}

/// Only a trusted proxy's chain is kept; anything else the client wrote
/// into X-Forwarded-For is dropped rather than passed on as fact.
fn forwarded_for(headers: &HeaderMap, peer: IpAddr, peer_trusted: bool) -> Option<HeaderValue> {
    // An address is at most 45 characters: formatted on the stack.
    let mut text = [0u8; 64];
    let peer_text = {
        let mut cursor = std::io::Cursor::new(&mut text[..]);
        write!(cursor, "{peer}").ok()?;
        let length = cursor.position() as usize;
        &text[..length]
    };
    if peer_trusted {
        let previous: Vec<&str> = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect();
        if !previous.is_empty() {
            let peer_text = std::str::from_utf8(peer_text).ok()?;
            return HeaderValue::from_str(&format!("{}, {peer_text}", previous.join(", "))).ok();
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
    fn forwarded_for_keeps_only_a_trusted_chain() {
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        headers.append("x-forwarded-for", HeaderValue::from_static("2.2.2.2, 3.3.3.3"));
        let peer: IpAddr = "2001:db8::ffff:1:2:3".parse().unwrap();
        assert_eq!(forwarded_for(&headers, peer, false).unwrap(), "2001:db8::ffff:1:2:3");
        assert_eq!(forwarded_for(&headers, peer, true).unwrap(), "1.1.1.1, 2.2.2.2, 3.3.3.3, 2001:db8::ffff:1:2:3");
        assert_eq!(forwarded_for(&HeaderMap::new(), "10.0.0.1".parse().unwrap(), true).unwrap(), "10.0.0.1");
    }
}
