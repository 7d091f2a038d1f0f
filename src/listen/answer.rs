//! Answers palisade gives itself instead of forwarding: blocks, rate
//! limits and rejections of bad requests. They carry the request id and
//! detection ids, never internals (rule text, thresholds, counters).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

use super::ProxyBody;
use crate::decision_log::retry_after_secs;
use crate::pipeline::Decision;
use crate::session::ChallengeAnswer;
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

/// The answer to a challenged request: the interstitial page (403, as
/// the request was not served) or, for API clients, a 429 whose
/// `X-Palisade-Challenge` header says how to earn a clearance.
pub fn challenge(decision: &Decision, answer: &ChallengeAnswer) -> Response<ProxyBody> {
    let mut response = match answer {
        ChallengeAnswer::Page { html, .. } => {
            let mut response =
                Response::new(Full::new(Bytes::from(html.clone())).map_err(|never| match never {}).boxed());
            *response.status_mut() = StatusCode::FORBIDDEN;
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            headers.insert(CHALLENGE_HEADER, HeaderValue::from_static("pow; page"));
            response
        }
        ChallengeAnswer::Status { header } => {
            let detections: Vec<&str> = decision.enforced_detections().collect();
            let body = serde_json::json!({
                "error": "challenge",
                "request_id": decision.request_id.to_string(),
                "detections": detections,
            });
            let mut response = json_response(StatusCode::TOO_MANY_REQUESTS, body.to_string());
            if let Ok(value) = HeaderValue::from_str(header) {
                response.headers_mut().insert(CHALLENGE_HEADER, value);
            }
            response
        }
    };
    if let Ok(value) = HeaderValue::from_str(&decision.request_id.to_string()) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// The header that marks palisade's challenges (and, on 429s, carries it).
pub const CHALLENGE_HEADER: &str = "x-palisade-challenge";

/// A solved challenge: the clearance cookie, and back to the page.
pub fn cleared(set_cookie: &str, location: &str) -> Response<ProxyBody> {
    let mut response = Response::new(Full::new(Bytes::new()).map_err(|never| match never {}).boxed());
    *response.status_mut() = StatusCode::SEE_OTHER;
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let (Ok(cookie), Ok(location)) = (HeaderValue::from_str(set_cookie), HeaderValue::from_str(location)) {
        headers.insert(header::SET_COOKIE, cookie);
        headers.insert(header::LOCATION, location);
    }
    response
}

/// A refused answer to a challenge: 403 and why.
pub fn challenge_failed(reason: &str) -> Response<ProxyBody> {
    json_response(
        StatusCode::FORBIDDEN,
        serde_json::json!({ "error": "challenge_failed", "reason": reason }).to_string(),
    )
}

/// A plain error answer (bad request, body too large, upstream down).
pub fn error(status: StatusCode, reason: &str) -> Response<ProxyBody> {
    json_response(status, serde_json::json!({ "error": reason }).to_string())
}
