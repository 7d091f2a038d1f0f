//! One request, phase by phase: resolve the client, route, read the body
//! when the route inspects it, build the view, run the pipeline, then
//! answer or forward, observe the upstream's answer, and record.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::App;
use super::ProxyBody;
use super::answer;
use super::client_addr::resolve_client;
use super::forward::{UpstreamBody, full_body, prepare_request, strip_hop_by_hop};
use super::runtime::{ConnectionInfo, Runtime};
use super::wire_head::WireHeads;
use crate::lifecycle::{Arrival, Ending, Reporters};
use crate::outcome::{BODY_PREFIX_LIMIT, ResponseFacts};

/// `app` is the configuration the request is served with, loaded once
/// for it by the caller.
pub async fn handle(
    runtime: Arc<Runtime>,
    app: Arc<App>,
    request: Request<Incoming>,
    connection: Arc<ConnectionInfo>,
    wire_heads: WireHeads,
) -> Result<Response<ProxyBody>, Infallible> {
    let peer = connection.peer;
    let lifecycle = &app.lifecycle;
    let reporters = Reporters { log: Some(&runtime.log), metrics: Some(&runtime.metrics) };
    let (parts, body) = request.into_parts();
    // Taken first, before any early answer, so heads and requests stay paired.
    let wire_names = match parts.version {
        http::Version::HTTP_10 | http::Version::HTTP_11 => wire_heads.take_matching(&parts.headers),
        _ => None,
    };
    if let Some(problem) = host_problem(&parts) {
        runtime.metrics.rejected_requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(%peer, problem, "request refused");
        return Ok(answer::error(StatusCode::BAD_REQUEST, problem));
    }
    let client_ip = resolve_client(peer.ip(), &parts.headers, &app.proxy.trusted_proxies);
    if let Some(response) = verify_challenge(&runtime, &app, &parts, client_ip).await {
        return Ok(response);
    }
    let routed = lifecycle.route(&parts.method, &parts.uri);

    // Phase: body. Only inspected routes are buffered (up to the limit);
    // everything else streams straight through.
    // Signed partner requests are read too, to check their Content-Digest.
    let signed_body = lifecycle.pipeline().allowlist().wants_body(&parts.headers);
    let (inspected, body) = if routed.inspects_body() || signed_body {
        match read_inspected_body(body, &parts.headers, &app).await {
            Ok(bytes) => (Some(bytes.clone()), full_body(bytes)),
            Err(response) => {
                runtime.metrics.rejected_requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Ok(response);
            }
        }
    } else {
        (None, body.map_err(|e| Box::new(ClientBodyError(e)) as super::BoxError).boxed())
    };

    // Phase: decide (view, identify, detect, decide; metrics and capture begin).
    let arrival = Arrival {
        method: &parts.method,
        uri: &parts.uri,
        version: parts.version,
        headers: &parts.headers,
        client_ip,
        ja4: connection.ja4.as_deref(),
        wire_names: wire_names.as_deref(),
        client_cert: connection.client_cert.as_deref(),
    };
    let mut exchange = lifecycle.decide(routed, &arrival, inspected.as_deref(), reporters).await;

    // Phase: act.
    if exchange.stops_request() {
        lifecycle.complete(&mut exchange, Ending::Refused, reporters);
        return Ok(match exchange.challenge() {
            Some(challenge) => answer::challenge(&exchange.decision, challenge),
            None => answer::for_decision(&exchange.decision),
        });
    }
    let mut upstream_request = Request::from_parts(parts, body);
    let peer_ip = crate::cidr::canonical_ip(peer.ip());
    let peer_trusted = app.proxy.trusted_proxies.contains(peer_ip);
    prepare_request(
        &mut upstream_request,
        &app.proxy.upstream,
        peer_ip,
        peer_trusted,
        &exchange.decision,
        &app.proxy.headers,
    );
    let upstream_started = Instant::now();
    let Some(authority) = app.proxy.upstream.authority() else {
        // Never: `server.upstream` is checked to have one when loaded.
        runtime.metrics.record_upstream_error("unavailable");
        lifecycle.complete(&mut exchange, Ending::Unanswered { upstream_time: None }, reporters);
        return Ok(answer::error(StatusCode::BAD_GATEWAY, "upstream_unavailable"));
    };
    let result = tokio::time::timeout(
        app.proxy.timeouts.upstream_response,
        runtime.client.request(authority, upstream_request, upstream_started),
    )
    .await;
    let upstream_time = Some(upstream_started.elapsed());
    let response = match result {
        Ok(Ok(response)) => response,
        // The client's body broke while it streamed; the upstream is fine.
        Ok(Err(error)) if caused_by_client_body(&*error) => {
            tracing::debug!(%error, request_id = %exchange.decision.request_id, "client request body failed");
            runtime.metrics.rejected_requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            lifecycle.complete(&mut exchange, Ending::Unanswered { upstream_time }, reporters);
            return Ok(answer::error(StatusCode::BAD_REQUEST, "bad_body"));
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, request_id = %exchange.decision.request_id, "upstream request failed");
            runtime.metrics.record_upstream_error("unavailable");
            lifecycle.complete(&mut exchange, Ending::Unanswered { upstream_time }, reporters);
            return Ok(answer::error(StatusCode::BAD_GATEWAY, "upstream_unavailable"));
        }
        Err(_) => {
            runtime.metrics.record_upstream_error("timeout");
            lifecycle.complete(&mut exchange, Ending::Unanswered { upstream_time }, reporters);
            return Ok(answer::error(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"));
        }
    };

    // Phase: observe (outcome, decision log, capture record).
    let status = response.status().as_u16();
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let wants_body = exchange.route.reads_response_body();
    let (body_prefix, body) = if wants_body {
        read_body_prefix(body).await
    } else {
        (None, body.map_err(|e| Box::new(e) as super::BoxError).boxed())
    };
    let response = ResponseFacts { status, headers: Some(&parts.headers), body_prefix: body_prefix.as_deref() };
    lifecycle.complete(&mut exchange, Ending::Answered { response, upstream_time }, reporters);
    if let Some(cookie) = exchange.set_cookie()
        && let Ok(value) = http::HeaderValue::from_str(cookie)
    {
        parts.headers.append(header::SET_COOKIE, value);
    }
    Ok(Response::from_parts(parts, body))
}

/// What is wrong with a request's `Host`, if anything: HTTP/1.1 requires
/// exactly one (RFC 9112 §3.2). Two let palisade route by one and the
/// application by the other; none leaves the application to guess. HTTP/1.0
/// may omit it; HTTP/2 names the host in `:authority`.
fn host_problem(parts: &http::request::Parts) -> Option<&'static str> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Some("duplicate_host"),
        (None, _) if parts.version == http::Version::HTTP_11 => Some("missing_host"),
        _ => None,
    }
}

/// Answers to a served challenge, sent to the session stage's verify
/// path: a clearance cookie and back to the page, or 403.
async fn verify_challenge(
    runtime: &Runtime,
    app: &super::App,
    parts: &http::request::Parts,
    client_ip: std::net::IpAddr,
) -> Option<Response<ProxyBody>> {
    let pipeline = app.lifecycle.pipeline();
    let stage = pipeline.session()?;
    if parts.uri.path() != stage.verify_path() || parts.method != http::Method::GET {
        return None;
    }
    let query = parts.uri.query().unwrap_or("");
    let ordering = std::sync::atomic::Ordering::Relaxed;
    match pipeline.verify_challenge(query, &parts.headers, client_ip).await? {
        Ok(verified) => {
            runtime.metrics.challenges_solved.fetch_add(1, ordering);
            Some(answer::cleared(&verified.set_cookie, &verified.return_to))
        }
        Err(error) => {
            runtime.metrics.challenges_failed.fetch_add(1, ordering);
            tracing::debug!(reason = error.as_str(), %client_ip, "challenge answer refused");
            Some(answer::challenge_failed(error.as_str()))
        }
    }
}

/// The first [`BODY_PREFIX_LIMIT`] bytes of a response body (for login
/// routes that signal failure in the body), and the whole body to send on:
/// the prefix followed by whatever was not read yet.
async fn read_body_prefix(mut body: UpstreamBody) -> (Option<Bytes>, ProxyBody) {
    let mut prefix = bytes::BytesMut::new();
    let mut trailers = None;
    let mut finished = false;
    while prefix.len() < BODY_PREFIX_LIMIT {
        match body.frame().await {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => prefix.extend_from_slice(&data),
                Err(frame) => trailers = frame.into_trailers().ok(),
            },
            Some(Err(error)) => {
                let failed = http_body_util::StreamBody::new(futures_util::stream::iter([Err::<
                    hyper::body::Frame<Bytes>,
                    super::BoxError,
                >(Box::new(
                    error,
                ))]));
                return (None, failed.boxed());
            }
            None => {
                finished = true;
                break;
            }
        }
    }
    let prefix = prefix.freeze();
    let head = futures_util::stream::iter(
        std::iter::once(Ok(hyper::body::Frame::data(prefix.clone())))
            .chain(trailers.map(|t| Ok(hyper::body::Frame::trailers(t)))),
    );
    let rest: ProxyBody = if finished {
        http_body_util::StreamBody::new(head).boxed()
    } else {
        use futures_util::{StreamExt, TryStreamExt};
        let tail = TryStreamExt::map_err(http_body_util::BodyStream::new(body), |e| Box::new(e) as super::BoxError);
        BodyExt::boxed(http_body_util::StreamBody::new(head.chain(tail)))
    };
    (Some(prefix), rest)
}

/// A failure of the client's request body while it streams to the upstream
/// (broken chunked framing, the client going away). hyper reports it as a
/// failed upstream request; this marker lets the handler tell the two apart
/// so a client's garbage is answered 400 and never counted as the
/// upstream being down.
#[derive(Debug)]
struct ClientBodyError(hyper::Error);

impl std::fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "client request body: {}", self.0)
    }
}

impl std::error::Error for ClientBodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Whether a [`ClientBodyError`] is anywhere in the error's causes.
fn caused_by_client_body(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(current) = cause {
        if current.is::<ClientBodyError>() {
            return true;
        }
        cause = current.source();
    }
    false
}

/// Read an inspected body: at most the configured size, within the header
/// read timeout, answering 413/408/400 instead of waiting or buffering more.
async fn read_inspected_body(
    body: Incoming,
    headers: &http::HeaderMap,
    app: &App,
) -> Result<Bytes, Response<ProxyBody>> {
    let limit = app.proxy.limits.max_inspected_body_bytes;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(answer::error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"));
    }
    let read = Limited::new(body, limit).collect();
    match tokio::time::timeout(app.proxy.timeouts.header_read, read).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
            Err(answer::error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"))
        }
        Ok(Err(_)) => Err(answer::error(StatusCode::BAD_REQUEST, "bad_body")),
        Err(_) => Err(answer::error(StatusCode::REQUEST_TIMEOUT, "body_timeout")),
    }
}
