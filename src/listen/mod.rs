//! The listen stage and the edges of the process: accepting client
//! connections (HTTP/1.1 and HTTP/2, over TLS with a JA4 fingerprint when
//! `[tls]` is configured, see [`TlsSettings`]), limits and timeouts, forwarding to
//! the upstream, and graceful shutdown. All network I/O lives here and in
//! [`crate::admin`]; the pipeline it calls is pure.

pub mod answer;
pub mod client_addr;
mod connections;
pub mod forward;
mod handler;
mod idle;
mod pending;
mod runtime;
mod server;
pub mod sidecar;
mod tls;
mod upstream;
mod wire_head;
mod woken;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, Uri};
use http_body_util::combinators::BoxBody;

pub use runtime::ConnectionInfo;
pub use server::{Running, Server, Stopped};
pub use tls::TlsSettings;
/// The wire-head recorder, public for the fuzz targets (`fuzz/`).
pub use wire_head::{HeadRecorder, WireHeads};

use crate::cidr::CidrSet;
use crate::clock::SharedClock;
use crate::config::{Config, Invalid, LimitsConfig, Spanned};
use crate::decision_headers::DecisionHeaders;
use crate::lifecycle::Lifecycle;
use crate::pipeline::PipelineBuilder;
use crate::request_id::RequestIds;
use crate::store::{CounterStore, LocalStore, RedisSettings};

/// A configuration compiled into everything a running palisade serves
/// with: the request lifecycle (pipeline and capture) and the listen
/// stage's own settings. Building one validates the whole configuration,
/// so `check`, `serve` and reload all accept the same files; a reload
/// swaps it whole.
#[derive(Debug)]
pub struct App {
    pub lifecycle: Lifecycle,
    pub proxy: ProxySettings,
    /// The admin API's token, and the keyed hash that names a client
    /// address's bans.
    pub admin: crate::admin::AdminSettings,
}

impl App {
    /// Compile `config`, sharing `store` (counters survive reloads).
    pub fn build(
        config: &Config,
        store: Arc<CounterStore>,
        clock: SharedClock,
        request_id_seed: u64,
    ) -> Result<App, Vec<Invalid>> {
        let proxy = ProxySettings::from_config(config);
        let pipeline = PipelineBuilder::new(config).build(store, clock, RequestIds::new(request_id_seed));
        let capture = crate::capture::CaptureSink::from_config(config);
        // The store is built once at start; compiling checks its settings
        // so `check` and reload report them.
        let redis = RedisSettings::from_config(config);
        let budget = crate::store::local_budget(config).map_err(|invalid| vec![invalid]);
        match (pipeline, proxy, capture, redis.and(budget)) {
            (Ok(pipeline), Ok(proxy), Ok(capture), Ok(_)) => Ok(App {
                lifecycle: Lifecycle::new(pipeline, capture),
                proxy,
                admin: crate::admin::AdminSettings::from_config(config),
            }),
            (pipeline, proxy, capture, redis) => {
                let mut problems = pipeline.err().unwrap_or_default();
                problems.extend(proxy.err().unwrap_or_default());
                problems.extend(capture.err().unwrap_or_default());
                problems.extend(redis.err().unwrap_or_default());
                Err(problems)
            }
        }
    }

    /// Every problem in `config`, as `palisade check` reports them.
    pub fn check(config: &Config) -> Vec<Invalid> {
        let clock: SharedClock = Arc::new(crate::clock::SystemClock);
        let store = Arc::new(CounterStore::Local(LocalStore::new(clock.clone())));
        App::build(config, store, clock, 0).err().unwrap_or_default()
    }

    pub fn pipeline(&self) -> &crate::pipeline::Pipeline {
        self.lifecycle.pipeline()
    }
}

impl crate::admin::Served for App {
    fn pipeline(&self) -> &crate::pipeline::Pipeline {
        self.lifecycle.pipeline()
    }

    fn admin_settings(&self) -> &crate::admin::AdminSettings {
        &self.admin
    }

    /// Put `new` in place of the running configuration; requests already
    /// running keep the one they started with.
    fn swap_in(current: &arc_swap::ArcSwap<Self>, new: Self, metrics: &crate::metrics::Metrics) {
        let old = current.load();
        if old.proxy.listen != new.proxy.listen || old.proxy.admin != new.proxy.admin {
            tracing::warn!("listen and admin addresses change only on restart; keeping the bound ones");
        }
        if old.proxy.tls.is_some() != new.proxy.tls.is_some() {
            tracing::warn!("TLS turned on or off: new connections on the listen address use the new setting");
        }
        current.store(Arc::new(new));
        metrics.reloads_ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// Timeouts, as durations.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header_read: Duration,
    pub idle: Duration,
    pub upstream_connect: Duration,
    pub upstream_response: Duration,
    pub shutdown_grace: Duration,
}

/// What the listen stage needs from the configuration.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub upstream: Uri,
    pub trusted_proxies: CidrSet,
    pub limits: LimitsConfig,
    pub timeouts: Timeouts,
    pub headers: DecisionHeaders,
    /// TLS termination on `listen`, when configured.
    pub tls: Option<TlsSettings>,
    /// Sidecar mode: answer authorization requests instead of forwarding.
    pub sidecar: Option<Arc<sidecar::SidecarSettings>>,
}

impl ProxySettings {
    pub fn from_config(config: &Config) -> Result<Self, Vec<Invalid>> {
        let mut problems = Vec::new();
        let mut socket = |value: &Spanned<String>, key: &str| {
            value.get_ref().parse::<SocketAddr>().map_err(|_| {
                problems.push(Invalid::new(
                    value.span(),
                    key,
                    format!("{:?} is not an address like \"127.0.0.1:8080\"", value.get_ref()),
                ))
            })
        };
        let listen = socket(&config.server.listen, "server.listen");
        let admin = socket(&config.server.admin, "server.admin");
        let upstream = parse_upstream(&config.server.upstream).map_err(|invalid| problems.push(invalid));
        let trusted_proxies = CidrSet::parse(&config.server.trusted_proxies, "server.trusted_proxies")
            .map_err(|mut errs| problems.append(&mut errs));
        let mut header = |value: &Spanned<String>, key: &str| {
            // Interned: cloned into every forwarded request (see `interned`).
            HeaderName::from_bytes(value.get_ref().as_bytes()).map(crate::decision_headers::interned).map_err(|_| {
                problems.push(Invalid::new(
                    value.span(),
                    key,
                    format!("{:?} is not a valid header name", value.get_ref()),
                ))
            })
        };
        let h = &config.headers;
        let names = (
            header(&h.score, "headers.score"),
            header(&h.detections, "headers.detections"),
            header(&h.request_id, "headers.request_id"),
            header(&h.action, "headers.action"),
            header(&h.partner, "headers.partner"),
        );
        // Limits, timeouts and other numbers that size memory (hyper's
        // 8192-byte minimum buffer among them).
        problems.extend(crate::config::ranges::check(config));
        if !(0.0..=1.0).contains(&config.decision_log.sample_allowed) {
            problems.push(Invalid::new(0..0, "decision_log.sample_allowed", "a fraction between 0.0 and 1.0"));
        }
        let t = &config.timeouts;
        for (value, key) in [
            (t.header_read_ms, "timeouts.header_read_ms"),
            (t.idle_ms, "timeouts.idle_ms"),
            (t.upstream_connect_ms, "timeouts.upstream_connect_ms"),
            (t.upstream_response_ms, "timeouts.upstream_response_ms"),
        ] {
            if value == 0 {
                problems.push(Invalid::new(
                    0..0,
                    key,
                    "a timeout of 0 ms would fail every request; give milliseconds > 0",
                ));
            }
        }
        let tls = match &config.tls {
            Some(tls) => TlsSettings::from_config(config, tls).map(Some).map_err(|mut errs| problems.append(&mut errs)),
            None => Ok(None),
        };
        let sidecar = match &config.sidecar {
            Some(sidecar) => sidecar::SidecarSettings::from_config(config, sidecar)
                .map(|settings| Some(Arc::new(settings)))
                .map_err(|mut errs| problems.append(&mut errs)),
            None => Ok(None),
        };
        match (listen, admin, upstream, trusted_proxies, names, tls, sidecar) {
            (
                Ok(listen),
                Ok(admin),
                Ok(upstream),
                Ok(trusted_proxies),
                (Ok(score), Ok(detections), Ok(request_id), Ok(action), Ok(partner)),
                Ok(tls),
                Ok(sidecar),
            ) if problems.is_empty() => Ok(ProxySettings {
                listen,
                admin,
                upstream,
                trusted_proxies,
                limits: config.limits.clone(),
                timeouts: Timeouts {
                    header_read: Duration::from_millis(t.header_read_ms),
                    idle: Duration::from_millis(t.idle_ms),
                    upstream_connect: Duration::from_millis(t.upstream_connect_ms),
                    upstream_response: Duration::from_millis(t.upstream_response_ms),
                    shutdown_grace: Duration::from_millis(t.shutdown_grace_ms),
                },
                headers: DecisionHeaders { score, detections, request_id, action, partner },
                tls,
                sidecar,
            }),
            _ => Err(problems),
        }
    }
}

fn parse_upstream(value: &Spanned<String>) -> Result<Uri, Invalid> {
    let bad = |why: &str| Invalid::new(value.span(), "server.upstream", format!("{:?} {why}", value.get_ref()));
    let uri: Uri = value.get_ref().parse().map_err(|_| bad("is not a URL like \"http://127.0.0.1:3000\""))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(bad("uses https: TLS to the upstream is not supported yet; use http")),
        _ => return Err(bad("needs the http:// scheme")),
    }
    if uri.authority().is_none() {
        return Err(bad("has no host"));
    }
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(bad(
            "has a path; palisade forwards the client's path unchanged, so give only scheme, host and port",
        ));
    }
    Ok(uri)
}
