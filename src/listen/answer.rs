//! Answers palisade gives itself instead of forwarding: blocks, rate
//! limits and rejections of bad requests. They carry the request id and
//! detection ids, never internals (rule text, thresholds, counters).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

use super::ProxyBody;
use crate::decision_log::retry_after_secs;
use crate::pipeline::Decision;
use crate::signal::Action;

fn json_response(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut response = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The 403, 429 (or 503) for a decision that stops the request.
pub fn for_decision(decision: &Decision) -> Response<ProxyBody> {
    let unavailable = decision.only_store_unavailable();
    let (status, error) = match decision.action() {
        // A route that fails closed while the shared store is down: the
        // client did nothing wrong and may retry.
        _ if unavailable => (StatusCode::SERVICE_UNAVAILABLE, "shared_state_unavailable"),
        Action::RateLimit => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        _ => (StatusCode::FORBIDDEN, "forbidden"),
    };
    let detections: Vec<&str> = decision.enforced_detections().collect();
    let body = serde_json::json!({
        "error": error,
        "request_id": decision.request_id.to_string(),
        "detections": detections,
    });
    let mut response = json_response(status, body.to_string());
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&decision.request_id.to_string()) {
        headers.insert("x-request-id", value);
    }
    if let Some(wait) = decision.verdict.enforced.retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs(wait)));
    } else if unavailable {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// A plain error answer (bad request, body too large, upstream down).
pub fn error(status: StatusCode, reason: &str) -> Response<ProxyBody> {
    json_response(status, serde_json::json!({ "error": reason }).to_string())
}
