//! The embeddable front door: a [`tower`](https://docs.rs/tower) layer that
//! runs palisade's lifecycle inside a Rust HTTP service (axum, hyper, tonic's
//! HTTP side), with no proxy hop.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = palisade::app::parse_str("", "inline defaults")?;
//! let layer = palisade::tower::Layer::from_config(&config)?;
//! // axum: Router::new().route("/login", post(login)).layer(layer)
//! # let _ = layer; Ok(()) }
//! ```
//!
//! Per request it does what the proxy does: route, read the body on routes
//! that inspect it (so the inner service still gets all of it), decide,
//! answer 403/429/503 itself or pass the request in with the decision
//! headers, then learn the login outcome from the inner service's response
//! and log. The client address is the connection's (`axum::extract::ConnectInfo`
//! or a `SocketAddr` request extension), or a trusted proxy's
//! `X-Forwarded-For`.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};

use crate::cidr::CidrSet;
use crate::clock::{SharedClock, SystemClock};
use crate::config::{Config, ConfigError};
use crate::decision_headers::DecisionHeaders;
use crate::decision_log::DecisionLog;
use crate::lifecycle::{Arrival, Ending, Lifecycle, Reporters};
use crate::listen::{App, answer, client_addr};
use crate::metrics::Metrics;
use crate::outcome::{BODY_PREFIX_LIMIT, ResponseFacts};
use crate::request_id::RequestIds;
use crate::store::{CounterStore, LocalStore};

pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
/// The body the inner service receives and the layer answers with.
pub type LayerBody = UnsyncBoxBody<Bytes, BoxError>;

type SendFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What every clone of the layer and its services share.
#[derive(Debug)]
struct Shared {
    lifecycle: Lifecycle,
    headers: DecisionHeaders,
    trusted_proxies: CidrSet,
    max_body: usize,
    log: DecisionLog,
    metrics: Arc<Metrics>,
}

/// palisade as a `tower::Layer`.
#[derive(Debug, Clone)]
pub struct Layer {
    shared: Arc<Shared>,
    peer_of: PeerOf,
}

impl Layer {
    /// Compile `config` (in-process counters, the system clock). Problems
    /// come back with their lines, as `palisade check` reports them.
    pub fn from_config(config: &Config) -> Result<Layer, ConfigError> {
        let clock: SharedClock = Arc::new(SystemClock);
        let store = Arc::new(CounterStore::Local(LocalStore::new(clock.clone())));
        Self::with_store(config, store, clock)
    }

    /// The same on a given counter store (Redis, to share limits with
    /// other replicas) and clock.
    pub fn with_store(config: &Config, store: Arc<CounterStore>, clock: SharedClock) -> Result<Layer, ConfigError> {
        let located = |invalid| crate::app::located(config, "layer configuration", invalid);
        let app = App::build(config, store, clock, RequestIds::random_seed()).map_err(located)?;
        let metrics = Arc::new(Metrics::default());
        let log = DecisionLog::open(&config.decision_log, metrics.clone()).map_err(|error| {
            located(vec![crate::config::Invalid::new(0..0, "decision_log.path", error.to_string())])
        })?;
        let App { lifecycle, proxy, .. } = app;
        Ok(Layer {
            peer_of: socket_addr_extension,
            shared: Arc::new(Shared {
                lifecycle,
                headers: proxy.headers,
                trusted_proxies: proxy.trusted_proxies,
                max_body: proxy.limits.max_inspected_body_bytes,
                log,
                metrics,
            }),
        })
    }

    /// How to find the connection's address in a request's extensions,
    /// e.g. axum's `ConnectInfo`:
    /// `|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip())`.
    /// Without one, a request is from 0.0.0.0 — every client would share
    /// one address's limits.
    pub fn peer_from(self, peer_of: PeerOf) -> Layer {
        Layer { peer_of, ..self }
    }

    /// The layer's metrics (the same counters `/metrics` shows for the proxy).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }
}

impl<S> tower_layer::Layer<S> for Layer {
    type Service = Service<S>;

    fn layer(&self, inner: S) -> Service<S> {
        Service { inner, shared: self.shared.clone(), peer_of: self.peer_of }
    }
}

/// The service the layer wraps around `S`.
#[derive(Debug, Clone)]
pub struct Service<S> {
    inner: S,
    shared: Arc<Shared>,
    peer_of: PeerOf,
}

impl<S, B, ResBody> tower_service::Service<Request<B>> for Service<S>
where
    S: tower_service::Service<Request<LayerBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<LayerBody>;
    type Error = S::Error;
    type Future = SendFuture<Result<Response<LayerBody>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The clone that was polled ready serves this request (tower's rule).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(serve(self.shared.clone(), self.peer_of, inner, request))
    }
}

async fn serve<S, B, ResBody>(
    shared: Arc<Shared>,
    peer_of: PeerOf,
    mut inner: S,
    request: Request<B>,
) -> Result<Response<LayerBody>, S::Error>
where
    S: tower_service::Service<Request<LayerBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let lifecycle = &shared.lifecycle;
    let reporters = Reporters { log: Some(&shared.log), metrics: Some(&shared.metrics) };
    let (mut parts, body) = request.into_parts();
    let peer = peer_of(&parts.extensions).unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let client_ip = client_addr::resolve_client(peer, &parts.headers, &shared.trusted_proxies);
    let routed = lifecycle.route(&parts.method, &parts.uri);
    let (inspected, body): (Option<Bytes>, LayerBody) = if routed.inspects_body() {
        match Limited::new(body, shared.max_body).collect().await {
            Ok(collected) => {
                let bytes = collected.to_bytes();
                (Some(bytes.clone()), Full::new(bytes).map_err(|never| match never {}).boxed_unsync())
            }
            Err(error) if error.is::<http_body_util::LengthLimitError>() => {
                return Ok(boxed(answer::error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")));
            }
            Err(_) => return Ok(boxed(answer::error(StatusCode::BAD_REQUEST, "bad_body"))),
        }
    } else {
        (None, body.map_err(Into::into).boxed_unsync())
    };
    let arrival = Arrival {
        method: &parts.method,
        uri: &parts.uri,
        version: parts.version,
        headers: &parts.headers,
        client_ip,
        ja4: None,
        wire_names: None,
        client_cert: None,
    };
    let mut exchange = lifecycle.decide(routed, &arrival, inspected.as_deref(), reporters).await;
    if exchange.stops_request() {
        lifecycle.complete(&mut exchange, Ending::Refused, reporters);
        return Ok(boxed(answer::for_decision(&exchange.decision)));
    }
    shared.headers.insert(&mut parts.headers, &exchange.decision);
    // Boxed where its type is known, so the serving future is provably Send.
    let called: SendFuture<Result<Response<ResBody>, S::Error>> =
        Box::pin(inner.call(Request::from_parts(parts, body)));
    let response = called.await?;
    let (parts, body) = response.into_parts();
    let wants_body = exchange.route.reads_response_body();
    let body: LayerBody = if wants_body {
        // A login or payment answer is small; read it (up to the prefix
        // limit) to look for the failure or decline marker, then pass it on.
        match Limited::new(body, BODY_PREFIX_LIMIT).collect().await {
            Ok(collected) => {
                let bytes = collected.to_bytes();
                let response = ResponseFacts {
                    status: parts.status.as_u16(),
                    headers: Some(&parts.headers),
                    body_prefix: Some(&bytes),
                };
                lifecycle.complete(&mut exchange, Ending::Answered { response, upstream_time: None }, reporters);
                return Ok(Response::from_parts(
                    parts,
                    Full::new(bytes).map_err(|never| match never {}).boxed_unsync(),
                ));
            }
            Err(_) => {
                lifecycle.complete(&mut exchange, Ending::Unanswered { upstream_time: None }, reporters);
                return Ok(boxed(answer::error(StatusCode::BAD_GATEWAY, "bad_response_body")));
            }
        }
    } else {
        body.map_err(Into::into).boxed_unsync()
    };
    let response = ResponseFacts { status: parts.status.as_u16(), headers: Some(&parts.headers), body_prefix: None };
    lifecycle.complete(&mut exchange, Ending::Answered { response, upstream_time: None }, reporters);
    Ok(Response::from_parts(parts, body))
}

/// Where a request's connection came from: read from its extensions.
pub type PeerOf = fn(&http::Extensions) -> Option<IpAddr>;

/// The default: a `SocketAddr` request extension (hyper services put it
/// there; axum users pass [`Layer::peer_from`] its `ConnectInfo`).
fn socket_addr_extension(extensions: &http::Extensions) -> Option<IpAddr> {
    extensions.get::<SocketAddr>().map(SocketAddr::ip)
}

fn boxed(response: Response<crate::listen::ProxyBody>) -> Response<LayerBody> {
    response.map(BodyExt::boxed_unsync)
}
