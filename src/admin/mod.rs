//! The admin listener: `GET /metrics` (Prometheus text), `GET /healthz`,
//! the analyst's JSON API under `/api/` and the live dashboard at
//! `/dashboard`. It runs on its own address (loopback by default) so it
//! can stay off the public interface.
//!
//! Reading is open, like `/metrics`; changes (lifting and adding bans,
//! reloading) need the bearer token of `[admin] token` and are written to
//! the decision log as audit lines. See `docs/admin-api.md`.

mod api;
mod audit;
mod auth;
mod dashboard;
mod stats;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::decision_log::DecisionLog;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;

/// Re-reads the configuration and compiles it, as SIGHUP does; the error
/// is every problem with its file and line.
pub type Reloader<A> =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<A, crate::error::Error>> + Send>> + Send + Sync>;

/// What the admin API needs of the compiled configuration the proxy
/// serves (the listen stage's `App`, which this module does not name, so
/// that the server can start the admin listener without an import cycle).
pub trait Served: Send + Sync + 'static {
    fn pipeline(&self) -> &Pipeline;
    fn admin_settings(&self) -> &AdminSettings;
    /// Put `new` in place of the running configuration (what SIGHUP does).
    fn swap_in(current: &ArcSwap<Self>, new: Self, metrics: &Metrics)
    where
        Self: Sized;
}

/// What the admin API needs from the configuration.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub token: Option<AdminToken>,
    /// Turns a client address into its ban keys, as the credential stage does.
    pub hasher: crate::keyed_hash::KeyHasher,
}

/// The admin API's bearer token; never printed.
#[derive(Clone)]
pub struct AdminToken(pub String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<secret>)")
    }
}

impl AdminSettings {
    /// `[admin] token`, else `PALISADE_ADMIN_TOKEN`, else none.
    pub fn from_config(config: &crate::config::Config) -> Self {
        let token = Some(config.admin.token.trim().to_string())
            .filter(|token| !token.is_empty())
            .or_else(|| std::env::var("PALISADE_ADMIN_TOKEN").ok().map(|t| t.trim().to_string()))
            .filter(|token| !token.is_empty())
            .map(AdminToken);
        AdminSettings { token, hasher: crate::keyed_hash::KeyHasher::from_config(config) }
    }
}

/// Largest request body the admin API reads.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the admin listener serves from: the running configuration (shared
/// with the proxy), the metrics, the decision log for audit lines.
pub struct AdminContext<A> {
    app: Arc<ArcSwap<A>>,
    metrics: Arc<Metrics>,
    log: DecisionLog,
    reloader: OnceLock<Reloader<A>>,
    started: Instant,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
}

impl<A> std::fmt::Debug for AdminContext<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminContext").field("reloader", &self.reloader.get().is_some()).finish_non_exhaustive()
    }
}

impl<A> AdminContext<A> {
    pub fn new(app: Arc<ArcSwap<A>>, metrics: Arc<Metrics>, log: DecisionLog) -> Self {
        AdminContext {
            app,
            metrics,
            log,
            reloader: OnceLock::new(),
            started: Instant::now(),
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    pub fn set_reloader(&self, reloader: Reloader<A>) {
        let _ = self.reloader.set(reloader);
    }
}

pub async fn serve<A: Served>(
    listener: TcpListener,
    context: Arc<AdminContext<A>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(_) => continue,
            },
            _ = shutdown.changed() => return,
        };
        let context = context.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| respond(context.clone(), peer, request));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// An answer: status, content type, body.
#[derive(Debug)]
pub(crate) struct Answer {
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
}

impl Answer {
    fn text(status: StatusCode, body: impl Into<String>) -> Self {
        Answer { status, content_type: "text/plain; charset=utf-8", body: Bytes::from(body.into()) }
    }

    fn json(status: StatusCode, value: &serde_json::Value) -> Self {
        let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
        body.push(b'\n');
        Answer { status, content_type: "application/json", body: Bytes::from(body) }
    }

    fn error(status: StatusCode, message: impl Into<String>) -> Self {
        Answer::json(status, &serde_json::json!({ "error": message.into() }))
    }
}

async fn respond<A: Served>(
    context: Arc<AdminContext<A>>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let answer = route(&context, peer, request).await;
    let mut response = Response::new(Full::new(answer.body));
    *response.status_mut() = answer.status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(answer.content_type));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if answer.status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    Ok(response)
}

async fn route<A: Served>(context: &AdminContext<A>, peer: SocketAddr, request: Request<Incoming>) -> Answer {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    match (&parts.method, path.as_str()) {
        (&Method::GET, "/metrics") => Answer {
            status: StatusCode::OK,
            content_type: "text/plain; version=0.0.4",
            body: Bytes::from(context.metrics.render()),
        },
        (&Method::GET, "/healthz") => Answer::text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/" | "/dashboard") => dashboard::page(),
        (&Method::GET, "/api/stats") => stats::stats(context).await,
        (&Method::GET, "/api/bans") => api::list_bans(context, &query).await,
        (&Method::GET, "/api/partners") => api::partners(context),
        (&Method::POST, "/api/bans" | "/api/bans/lift" | "/api/reload") => {
            let app = context.app.load_full();
            let actor = match auth::authorize(&parts.headers, app.admin_settings().token.as_ref(), peer) {
                Ok(actor) => actor,
                Err(refusal) => return refusal,
            };
            let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(_) => {
                    return Answer::error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("the body is larger than {MAX_BODY_BYTES} bytes"),
                    );
                }
            };
            match path.as_str() {
                "/api/bans" => api::add_ban(context, &app, &actor, &body).await,
                "/api/bans/lift" => api::lift_ban(context, &app, &actor, &body).await,
                _ => api::reload(context, &actor).await,
            }
        }
        (_, "/metrics" | "/healthz" | "/dashboard" | "/api/stats" | "/api/partners") => {
            Answer::error(StatusCode::METHOD_NOT_ALLOWED, "use GET")
        }
        (_, "/api/bans") => Answer::error(StatusCode::METHOD_NOT_ALLOWED, "use GET to list, POST to add a ban"),
        (_, "/api/bans/lift" | "/api/reload") => Answer::error(StatusCode::METHOD_NOT_ALLOWED, "use POST"),
        _ => Answer::text(
            StatusCode::NOT_FOUND,
            "not found: try /dashboard, /metrics, /healthz, /api/stats, /api/bans, /api/partners\n",
        ),
    }
}
