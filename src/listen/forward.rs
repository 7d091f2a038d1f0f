//! Forwarding to the upstream: the pooled client and the request and
//! response rewriting a reverse proxy owes both sides (hop-by-hop headers,
//! `X-Forwarded-For`, the decision headers for the application).

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::{DecisionHeaders, ProxyBody};
use crate::identify::Identity;
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
    let path_and_query = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let mut parts = upstream.clone().into_parts();
    parts.path_and_query = path_and_query.parse().ok();
    if let Ok(uri) = Uri::from_parts(parts) {
        let host = request.uri().authority().map(|a| a.as_str().to_string());
        *request.uri_mut() = uri;
        // HTTP/2 clients send :authority instead of Host.
        if !request.headers().contains_key(header::HOST)
            && let Some(value) = host.and_then(|h| HeaderValue::from_str(&h).ok())
        {
            request.headers_mut().insert(header::HOST, value);
        }
    }
    *request.version_mut() = Version::HTTP_11;
    let headers = request.headers_mut();
    strip_hop_by_hop(headers);

    // Only a trusted proxy's chain is kept; anything else the client wrote
    // into X-Forwarded-For is dropped rather than passed on as fact.
    let peer_text = peer.to_string();
    let forwarded = if peer_trusted {
        let previous: Vec<&str> = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect();
        if previous.is_empty() { peer_text } else { format!("{}, {peer_text}", previous.join(", ")) }
    } else {
        peer_text
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded) {
        headers.insert("x-forwarded-for", value);
    }

    for name in names.all() {
        headers.remove(name);
    }
    headers.insert(names.score.clone(), HeaderValue::from(u16::from(decision.score())));
    let detections: Vec<&str> = decision.enforced_detections().collect();
    if let Ok(value) = HeaderValue::from_str(&detections.join(",")) {
        headers.insert(names.detections.clone(), value);
    }
    if let Ok(value) = HeaderValue::from_str(&decision.request_id.to_string()) {
        headers.insert(names.request_id.clone(), value);
    }
    headers.insert(names.action.clone(), HeaderValue::from_static(decision.action().as_str()));
    if let Identity::Partner { partner, .. } = &decision.identity
        && let Ok(value) = HeaderValue::from_str(&partner.name)
    {
        headers.insert(names.partner.clone(), value);
    }
}

/// Body type used for everything palisade sends.
pub fn full_body(bytes: Bytes) -> ProxyBody {
    use http_body_util::BodyExt;
    http_body_util::Full::new(bytes).map_err(|never| match never {}).boxed()
}
