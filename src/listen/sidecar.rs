//! Sidecar mode: palisade as the decision service of a proxy that is
//! already there, answering authorization sub-requests instead of
//! forwarding.
//!
//! - **nginx `auth_request`** (`[sidecar] nginx_path`): the sub-request
//!   carries the client's headers; the original method and URI come in
//!   `X-Original-Method` and `X-Original-URI`. nginx accepts only 2xx
//!   (allow), 401 and 403 (deny) from it, so every refusal is a 403 and
//!   `X-Palisade-Status` says which answer palisade would give (429, 403 or
//!   503) for an `error_page` to turn into that status. nginx cannot send
//!   the request body to an auth sub-request.
//! - **Envoy `ext_authz`, HTTP service** (`[sidecar] envoy_prefix`): the
//!   check request keeps the original method, its path is the prefix
//!   followed by the original path, and with `with_request_body` it carries
//!   the body. A 200 allows (the decision headers go upstream through
//!   `allowed_upstream_headers`); any other status is sent to the client as
//!   it is: the same 403/429/503 the proxy gives.
//! - **Outcome reports** (`[sidecar] outcome_path`): the application (or a
//!   proxy that can see its answer) reports a login's status or outcome —
//!   and the username when palisade could not read the body — keyed by the
//!   request id palisade handed out in `X-Palisade-Request-Id`.
//!
//! Every decision goes through the same [`crate::lifecycle`] as the proxy's.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::ProxyBody;
use super::answer;
use super::client_addr::resolve_client;
use super::forward::full_body;
use super::runtime::{ConnectionInfo, Runtime};
use crate::config::{Config, Invalid, SidecarConfig, Spanned};
use crate::lifecycle::{Arrival, Ending, Exchange, Lifecycle, Reporters};
use crate::outcome::LoginOutcome;
use crate::request_id::RequestId;

/// The answer palisade would give, on a refusal nginx can only pass as 403.
pub const STATUS_HEADER: &str = "x-palisade-status";
/// Headers nginx's configuration sets for the sub-request.
const ORIGINAL_METHOD: &str = "x-original-method";
const ORIGINAL_URI: &str = "x-original-uri";

/// `[sidecar]`, checked.
#[derive(Debug, Clone)]
pub struct SidecarSettings {
    pub nginx_path: String,
    pub envoy_prefix: String,
    pub outcome_path: String,
    pub outcome_wait: Duration,
    pub max_pending_outcomes: usize,
}

impl SidecarSettings {
    pub fn from_config(config: &Config, sidecar: &SidecarConfig) -> Result<Self, Vec<Invalid>> {
        let mut problems = Vec::new();
        let mut path = |value: &Spanned<String>, key: &str| {
            let text = value.get_ref();
            if !text.starts_with('/') || text.contains(['?', '#', ' ']) || text.len() < 2 {
                problems.push(Invalid::new(
                    value.span(),
                    key,
                    format!("{text:?} is not a path like \"/_palisade/auth\" (starts with '/', no query)"),
                ));
            }
            text.trim_end_matches('/').to_string()
        };
        let nginx_path = path(&sidecar.nginx_path, "sidecar.nginx_path");
        let envoy_prefix = path(&sidecar.envoy_prefix, "sidecar.envoy_prefix");
        let outcome_path = path(&sidecar.outcome_path, "sidecar.outcome_path");
        for (value, key) in [(&nginx_path, "sidecar.nginx_path"), (&outcome_path, "sidecar.outcome_path")] {
            if value.starts_with(&format!("{envoy_prefix}/")) || *value == envoy_prefix {
                problems.push(Invalid::new(
                    0..0,
                    key,
                    format!("{value:?} is under sidecar.envoy_prefix {envoy_prefix:?}; give them separate paths"),
                ));
            }
        }
        if nginx_path == outcome_path {
            problems.push(Invalid::new(0..0, "sidecar.outcome_path", "must differ from sidecar.nginx_path"));
        }
        if config.server.trusted_proxies.is_empty() {
            problems.push(Invalid::new(
                0..0,
                "server.trusted_proxies",
                "sidecar mode needs the address nginx or Envoy connects from here (e.g. [\"127.0.0.1/32\"]); \
                 otherwise every client would look like the proxy itself",
            ));
        }
        if sidecar.outcome_wait_ms == 0 || sidecar.max_pending_outcomes == 0 {
            problems.push(Invalid::new(
                0..0,
                "sidecar.outcome_wait_ms",
                "outcome_wait_ms and max_pending_outcomes must be above 0",
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(SidecarSettings {
            nginx_path,
            envoy_prefix,
            outcome_path,
            outcome_wait: Duration::from_millis(sidecar.outcome_wait_ms),
            max_pending_outcomes: sidecar.max_pending_outcomes,
        })
    }
}

/// Which proxy asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asker {
    Nginx,
    Envoy,
}

pub async fn handle(
    runtime: Arc<Runtime>,
    request: Request<Incoming>,
    connection: Arc<ConnectionInfo>,
    settings: Arc<SidecarSettings>,
) -> Result<Response<ProxyBody>, Infallible> {
    let path = request.uri().path().trim_end_matches('/');
    if path == settings.outcome_path {
        return Ok(report_outcome(&runtime, request).await);
    }
    let (asker, method, uri) = if path == settings.nginx_path {
        match nginx_original(request.headers()) {
            Ok((method, uri)) => (Asker::Nginx, method, uri),
            Err(why) => return Ok(answer::error(StatusCode::BAD_REQUEST, why)),
        }
    } else if let Some(original) = request.uri().path().strip_prefix(&settings.envoy_prefix) {
        match envoy_original(original, request.uri()) {
            Some(uri) => (Asker::Envoy, request.method().clone(), uri),
            None => return Ok(answer::error(StatusCode::BAD_REQUEST, "bad_original_path")),
        }
    } else {
        return Ok(answer::error(StatusCode::NOT_FOUND, "not_an_authorization_path"));
    };
    Ok(check(&runtime, request, &connection, asker, method, uri).await)
}

/// Decide on the original request a check describes.
async fn check(
    runtime: &Runtime,
    request: Request<Incoming>,
    connection: &ConnectionInfo,
    asker: Asker,
    method: Method,
    uri: Uri,
) -> Response<ProxyBody> {
    let app = runtime.app.load_full();
    let lifecycle = &app.lifecycle;
    let reporters = Reporters { log: Some(&runtime.log), metrics: Some(&runtime.metrics) };
    let (parts, body) = request.into_parts();
    let client_ip = resolve_client(connection.peer.ip(), &parts.headers, &app.proxy.trusted_proxies);
    let headers = original_headers(&parts.headers);
    let routed = lifecycle.route(&method, &uri);
    // Envoy sends the body when `with_request_body` is set; nginx never can.
    // Signed partner requests too, to check their Content-Digest.
    let signed_body = lifecycle.pipeline().allowlist().wants_body(&headers);
    let body = if (routed.inspects_body() || signed_body) && asker == Asker::Envoy {
        match read_body(body, app.proxy.limits.max_inspected_body_bytes, app.proxy.timeouts.header_read).await {
            Ok(bytes) => Some(bytes),
            Err(response) => return response,
        }
    } else {
        None
    };
    let arrival = Arrival {
        method: &method,
        uri: &uri,
        version: parts.version,
        headers: &headers,
        client_ip,
        ja4: connection.ja4.as_deref(),
        wire_names: None,
        // The connection is the proxy's, not the client's.
        client_cert: None,
    };
    let mut exchange = lifecycle.decide(routed, &arrival, body.as_deref(), reporters).await;
    let mut response = if exchange.stops_request() {
        refusal(&exchange, asker)
    } else {
        let mut allowed = Response::new(full_body(Bytes::new()));
        *allowed.status_mut() = StatusCode::OK;
        allowed
    };
    app.proxy.headers.insert(response.headers_mut(), &exchange.decision);
    if exchange.stops_request() {
        lifecycle.complete(&mut exchange, Ending::Refused, reporters);
    } else if exchange.route.login.is_some() {
        // The outcome comes later, in a report.
        let given_up = {
            let mut pending = runtime.pending_outcomes();
            pending.insert(exchange.decision.request_id, exchange, Instant::now())
        };
        give_up(lifecycle, given_up, reporters);
    } else {
        lifecycle.complete(&mut exchange, Ending::Unanswered { upstream_time: None }, reporters);
    }
    response
}

/// The refusal for each proxy: Envoy passes any status to the client,
/// nginx only 401 and 403.
fn refusal(exchange: &Exchange, asker: Asker) -> Response<ProxyBody> {
    let mut response = answer::for_decision(&exchange.decision);
    let status = response.status();
    if let Ok(value) = HeaderValue::from_str(status.as_str()) {
        response.headers_mut().insert(HeaderName::from_static(STATUS_HEADER), value);
    }
    if asker == Asker::Nginx {
        *response.status_mut() = StatusCode::FORBIDDEN;
    }
    response
}

/// Log exchanges whose outcome never came.
fn give_up(lifecycle: &Lifecycle, exchanges: Vec<Exchange>, reporters: Reporters<'_>) {
    for mut exchange in exchanges {
        lifecycle.complete(&mut exchange, Ending::Unanswered { upstream_time: None }, reporters);
    }
}

/// The original method and URI of an nginx sub-request.
fn nginx_original(headers: &HeaderMap) -> Result<(Method, Uri), &'static str> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let method = text(ORIGINAL_METHOD)
        .ok_or("missing_x_original_method: add `proxy_set_header X-Original-Method $request_method;`")?;
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| "bad_x_original_method")?;
    let uri =
        text(ORIGINAL_URI).ok_or("missing_x_original_uri: add `proxy_set_header X-Original-URI $request_uri;`")?;
    let uri = uri.parse::<Uri>().map_err(|_| "bad_x_original_uri")?;
    if !uri.path().starts_with('/') {
        return Err("bad_x_original_uri");
    }
    Ok((method, uri))
}

/// The original path and query of an Envoy check request.
fn envoy_original(path: &str, check: &Uri) -> Option<Uri> {
    if !path.is_empty() && !path.starts_with('/') {
        return None;
    }
    let path = if path.is_empty() { "/" } else { path };
    let target = match check.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    };
    target.parse().ok()
}

/// The client's headers as the proxy passed them, without those the
/// proxy added for palisade (they are not the client's, and would change
/// its fingerprint).
fn original_headers(headers: &HeaderMap) -> HeaderMap {
    let mut original = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let added = matches!(name.as_str(), ORIGINAL_METHOD | ORIGINAL_URI | "connection" | "content-length")
            || name.as_str().starts_with("x-envoy-");
        if !added {
            original.append(name.clone(), value.clone());
        }
    }
    original
}

async fn read_body(body: Incoming, limit: usize, timeout: Duration) -> Result<Bytes, Response<ProxyBody>> {
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
            Err(answer::error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"))
        }
        Ok(Err(_)) => Err(answer::error(StatusCode::BAD_REQUEST, "bad_body")),
        Err(_) => Err(answer::error(StatusCode::REQUEST_TIMEOUT, "body_timeout")),
    }
}

// === impl outcome reports ===

/// One outcome report, from a form, JSON or the query string.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct Report {
    request_id: String,
    status: Option<u16>,
    outcome: Option<String>,
    username: Option<String>,
}

async fn report_outcome(runtime: &Runtime, request: Request<Incoming>) -> Response<ProxyBody> {
    if request.method() != Method::POST {
        return answer::error(StatusCode::METHOD_NOT_ALLOWED, "post_the_outcome");
    }
    let query = request.uri().query().map(str::to_string);
    let json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    let body = match read_body(request.into_body(), 16 * 1024, Duration::from_secs(5)).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let report = if json {
        match serde_json::from_slice::<Report>(&body) {
            Ok(report) => report,
            Err(_) => return answer::error(StatusCode::BAD_REQUEST, "bad_json_report"),
        }
    } else {
        let mut report = Report::default();
        let pairs =
            form_urlencoded::parse(&body).chain(form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()));
        for (key, value) in pairs {
            match &*key {
                "request_id" => report.request_id = value.into_owned(),
                "status" => report.status = value.parse().ok(),
                "outcome" => report.outcome = Some(value.into_owned()),
                "username" => report.username = Some(value.into_owned()),
                _ => {}
            }
        }
        report
    };
    let Ok(id) = u64::from_str_radix(report.request_id.trim(), 16) else {
        return answer::error(StatusCode::BAD_REQUEST, "request_id_must_be_16_hex_digits");
    };
    let login = match report.outcome.as_deref() {
        None => None,
        Some("success") => Some(LoginOutcome::Success),
        Some("failure") => Some(LoginOutcome::Failure),
        Some(_) => return answer::error(StatusCode::BAD_REQUEST, "outcome_is_success_or_failure"),
    };
    if login.is_none() && report.status.is_none() {
        return answer::error(StatusCode::BAD_REQUEST, "give_status_or_outcome");
    }
    let app = runtime.app.load_full();
    let reporters = Reporters { log: Some(&runtime.log), metrics: Some(&runtime.metrics) };
    let (exchange, expired) = {
        let mut pending = runtime.pending_outcomes();
        let exchange = pending.take(RequestId(id));
        (exchange, pending.expire(Instant::now()))
    };
    give_up(&app.lifecycle, expired, reporters);
    let Some(mut exchange) = exchange else {
        return answer::error(StatusCode::NOT_FOUND, "unknown_request_id: not a login, already reported, or too late");
    };
    let username = report.username.as_deref().filter(|u| !u.is_empty());
    let ending = Ending::Reported { status: report.status, login, username };
    let outcome = app.lifecycle.complete(&mut exchange, ending, reporters);
    let mut response = answer::error(StatusCode::OK, "");
    *response.body_mut() = full_body(Bytes::from(
        serde_json::json!({ "recorded": outcome.map(LoginOutcome::as_str), "action": exchange.decision.action().as_str() })
            .to_string(),
    ));
    response
}
