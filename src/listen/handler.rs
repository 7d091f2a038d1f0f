//! One request, phase by phase: resolve the client, route, read the body
//! when the route inspects it, build the view, run the pipeline, then
//! answer or forward, observe the upstream's answer, and record.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::ProxyBody;
use super::answer;
use super::client_addr::resolve_client;
use super::forward::{full_body, prepare_request, strip_hop_by_hop};
use super::server::{ConnectionInfo, Runtime};
use super::wire_head::WireHeads;
use crate::app::App;
use crate::credential::{BODY_PREFIX_LIMIT, ResponseFacts};
use crate::decision_log::{RequestFacts, render_line};
use crate::pipeline::{Decision, LoginOutcome};
use crate::routes::Route;
use crate::view::RequestView;

pub async fn handle(
    runtime: Arc<Runtime>,
    request: Request<Incoming>,
    connection: Arc<ConnectionInfo>,
    wire_heads: WireHeads,
) -> Result<Response<ProxyBody>, Infallible> {
    let peer = connection.peer;
    let app = runtime.app.load_full();
    let (parts, body) = request.into_parts();
    // Taken first, before any early answer, so heads and requests stay paired.
    let wire_names = match parts.version {
        http::Version::HTTP_10 | http::Version::HTTP_11 => wire_heads.take_matching(&parts.headers),
        _ => None,
    };
    let client_ip = resolve_client(peer.ip(), &parts.headers, &app.proxy.trusted_proxies);
    let (path, route) = app.pipeline.route(&parts.method, parts.uri.path());
    let route = route.clone();

    // Phase: body. Only inspected routes are buffered (up to the limit);
    // everything else streams straight through.
    // Signed partner requests are read too, to check their Content-Digest.
    let (inspected, body) = if route.inspects_body() || app.pipeline.allowlist().wants_body(&parts.headers) {
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

    // Phase: view and decision.
    let started = Instant::now();
    let decision = {
        let view = RequestView::new(
            &parts.method,
            parts.version,
            &parts.uri,
            &path,
            &parts.headers,
            client_ip,
            &route,
            inspected.as_deref(),
        )
        .with_ja4(connection.ja4.as_deref())
        .with_client_cert(connection.client_cert.as_deref())
        .with_wire_names(wire_names.as_deref());
        app.pipeline.evaluate_shared(&view).await
    };
    let decision_time = started.elapsed();
    runtime.metrics.decision_latency.record(decision_time);
    runtime.metrics.record_decision(&route.name, decision.action(), &decision.signals);
    let method = parts.method.clone();
    // Capture mode: the request as received, redacted, finished with the status.
    let capture = app
        .capture
        .as_ref()
        .and_then(|sink| sink.begin(&route, &decision, &parts, wire_names.as_deref(), inspected.as_deref(), client_ip));
    let mut record = Record {
        runtime: &runtime,
        decision: &decision,
        route: &route,
        client_ip,
        method: method.as_str(),
        path: &path,
        decision_time,
        ja4: connection.ja4.as_deref(),
        capture,
    };

    // Phase: act.
    if decision.action().stops_request() {
        record.write(None, None, None);
        return Ok(answer::for_decision(&decision));
    }
    let mut upstream_request = Request::from_parts(parts, body);
    let peer_ip = crate::cidr::canonical_ip(peer.ip());
    let peer_trusted = app.proxy.trusted_proxies.contains(peer_ip);
    prepare_request(&mut upstream_request, &app.proxy.upstream, peer_ip, peer_trusted, &decision, &app.proxy.headers);
    let upstream_started = Instant::now();
    let result =
        tokio::time::timeout(app.proxy.timeouts.upstream_response, runtime.client.request(upstream_request)).await;
    let upstream_time = upstream_started.elapsed();
    let response = match result {
        Ok(Ok(response)) => response,
        // The client's body broke while it streamed; the upstream is fine.
        Ok(Err(error)) if caused_by_client_body(&error) => {
            tracing::debug!(%error, request_id = %decision.request_id, "client request body failed");
            runtime.metrics.rejected_requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            record.write(None, None, Some(upstream_time));
            return Ok(answer::error(StatusCode::BAD_REQUEST, "bad_body"));
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, request_id = %decision.request_id, "upstream request failed");
            runtime.metrics.record_upstream_error("unavailable");
            record.write(None, None, Some(upstream_time));
            return Ok(answer::error(StatusCode::BAD_GATEWAY, "upstream_unavailable"));
        }
        Err(_) => {
            runtime.metrics.record_upstream_error("timeout");
            record.write(None, None, Some(upstream_time));
            return Ok(answer::error(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"));
        }
    };

    // Phase: observe.
    let status = response.status().as_u16();
    runtime.metrics.upstream_latency.record(upstream_time);
    runtime.metrics.record_upstream(&route.name, status);
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let wants_body = route.login.as_ref().is_some_and(|login| login.failure_body_contains.is_some());
    let (body_prefix, body) = if wants_body {
        read_body_prefix(body).await
    } else {
        (None, body.map_err(|e| Box::new(e) as super::BoxError).boxed())
    };
    let facts = ResponseFacts { status, headers: Some(&parts.headers), body_prefix: body_prefix.as_deref() };
    let outcome = app.pipeline.observe(&route, &decision, &facts);
    record.write(Some(status), outcome, Some(upstream_time));
    Ok(Response::from_parts(parts, body))
}

/// The first [`BODY_PREFIX_LIMIT`] bytes of a response body (for login
/// routes that signal failure in the body), and the whole body to send on:
/// the prefix followed by whatever was not read yet.
async fn read_body_prefix(mut body: Incoming) -> (Option<Bytes>, ProxyBody) {
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

/// Writes the decision log line (and finishes the capture record); kept
/// apart so every exit of the handler records the same way.
struct Record<'a> {
    runtime: &'a Runtime,
    decision: &'a Decision,
    route: &'a Route,
    client_ip: std::net::IpAddr,
    method: &'a str,
    path: &'a str,
    decision_time: Duration,
    ja4: Option<&'a str>,
    capture: Option<crate::capture::sink::PendingCapture>,
}

impl Record<'_> {
    fn write(
        &mut self,
        upstream_status: Option<u16>,
        login_outcome: Option<LoginOutcome>,
        upstream_time: Option<Duration>,
    ) {
        if let Some(capture) = self.capture.take() {
            capture.finish(upstream_status);
        }
        if !self.runtime.log.wants(self.decision) {
            return;
        }
        let facts = RequestFacts {
            client: self.client_ip,
            method: self.method,
            path: self.path,
            route: &self.route.name,
            profile: self.route.profile.as_str(),
            upstream_status,
            login_outcome,
            decision_time: self.decision_time,
            upstream_time,
            ja4: self.ja4,
        };
        self.runtime.log.write(render_line(self.decision, &facts));
    }
}
