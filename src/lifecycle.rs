//! One request's life, written once for every front door: the reverse
//! proxy, the sidecar (nginx `auth_request`, Envoy `ext_authz`), the tower
//! layer, replay and the benches.
//!
//! A front door owns its transport (sockets, bodies, forwarding); the
//! lifecycle owns every step that decides and records:
//!
//! 1. [`Lifecycle::route`] — normalize the path, find the route (the door
//!    then reads the body when the route inspects it);
//! 2. [`Lifecycle::decide`] / [`Lifecycle::decide_now`] — view, identify,
//!    plan, the counter store, detect, decide; metrics and the capture
//!    record begin here;
//! 3. the door forwards the request or answers it ([`Exchange::decision`]
//!    says which);
//! 4. [`Lifecycle::complete`] — learn the outcome from the upstream's
//!    answer, write the decision log line and the capture record, count
//!    the upstream's answer.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, Method, Uri, Version};

use crate::capture::CaptureSink;
use crate::capture::sink::PendingCapture;
use crate::decision_log::{DecisionLog, RequestFacts, render_line};
use crate::detect::Observed;
use crate::metrics::Metrics;
use crate::outcome::{LoginOutcome, ResponseFacts};
use crate::pipeline::{Decision, Pipeline};
use crate::routes::Route;
use crate::session::{ChallengeAnswer, SessionOutcome};
use crate::view::RequestView;

/// The pipeline and the capture of one compiled configuration: what every
/// front door runs a request through.
#[derive(Debug)]
pub struct Lifecycle {
    pipeline: Pipeline,
    /// Capture mode (`[capture]`), when configured.
    capture: Option<Arc<CaptureSink>>,
}

/// Where a front door reports what happened: its decision log and
/// metrics. Replay and benches report nowhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reporters<'a> {
    pub log: Option<&'a DecisionLog>,
    pub metrics: Option<&'a Metrics>,
}

/// What a front door knows about a request before deciding on it.
#[derive(Debug, Clone, Copy)]
pub struct Arrival<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub version: Version,
    pub headers: &'a HeaderMap,
    /// The client as the front door resolved it (socket, or a trusted
    /// proxy's `X-Forwarded-For`).
    pub client_ip: IpAddr,
    /// JA4 of the connection's TLS ClientHello, when palisade terminated TLS.
    pub ja4: Option<&'a str>,
    /// Header names exactly as sent, when the door could see them (HTTP/1).
    pub wire_names: Option<&'a [Box<str>]>,
    /// The client certificate the TLS handshake verified (mutual TLS).
    pub client_cert: Option<&'a crate::view::ClientCert>,
}

/// A request's route, found before its body is read.
#[derive(Debug, Clone)]
pub struct Routed {
    /// The normalized path routes are matched on.
    pub path: String,
    pub route: Arc<Route>,
}

impl Routed {
    /// Whether the front door must read the body before deciding.
    pub fn inspects_body(&self) -> bool {
        self.route.inspects_body()
    }
}

/// A decided request, until its outcome is recorded.
#[derive(Debug)]
pub struct Exchange {
    pub decision: Decision,
    pub route: Arc<Route>,
    pub path: String,
    method: Method,
    client_ip: IpAddr,
    ja4: Option<Arc<str>>,
    decision_time: Duration,
    capture: Option<PendingCapture>,
}

impl Exchange {
    /// Whether palisade answers the request itself instead of letting it
    /// through: a refusal, or a challenge it serves itself.
    pub fn stops_request(&self) -> bool {
        self.decision.action().stops_request() || self.challenge().is_some()
    }

    /// The challenge palisade serves instead of forwarding (the session
    /// stage's interstitial page or 429), when there is one.
    pub fn challenge(&self) -> Option<&ChallengeAnswer> {
        self.decision.context.get::<SessionOutcome>()?.challenge.as_ref()
    }

    /// A `Set-Cookie` value for the forwarded answer (a new session).
    pub fn set_cookie(&self) -> Option<&str> {
        self.decision.context.get::<SessionOutcome>()?.set_cookie.as_deref()
    }

    pub fn client_ip(&self) -> IpAddr {
        self.client_ip
    }

    pub fn decision_time(&self) -> Duration {
        self.decision_time
    }
}

/// How a request ended, as far as the front door knows.
#[derive(Debug, Clone, Copy)]
pub enum Ending<'a> {
    /// palisade answered it (the decision stopped it).
    Refused,
    /// The upstream answered.
    Answered { response: ResponseFacts<'a>, upstream_time: Option<Duration> },
    /// The request was let through but no answer is known (the upstream
    /// failed, the client went away, or a sidecar's app never reported).
    Unanswered { upstream_time: Option<Duration> },
    /// A sidecar's outcome report: the application's status, or the login
    /// outcome it states, and the username when the front door could not
    /// read the login body itself.
    Reported { status: Option<u16>, login: Option<LoginOutcome>, username: Option<&'a str> },
}

impl Lifecycle {
    pub fn new(pipeline: Pipeline, capture: Option<Arc<CaptureSink>>) -> Self {
        Lifecycle { pipeline, capture }
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    pub fn capture(&self) -> Option<&Arc<CaptureSink>> {
        self.capture.as_ref()
    }

    /// Step 1: normalize the path and find the route.
    pub fn route(&self, method: &Method, uri: &Uri) -> Routed {
        let (path, route) = self.pipeline.route(method, uri.path());
        Routed { path, route: route.clone() }
    }

    /// Step 2, serving: decide with the counters where they are shared
    /// (one round trip to Redis when it is configured).
    pub async fn decide(
        &self,
        routed: Routed,
        arrival: &Arrival<'_>,
        body: Option<&[u8]>,
        reporters: Reporters<'_>,
    ) -> Exchange {
        let started = Instant::now();
        let decision = {
            let view = self.view(&routed, arrival, body);
            self.pipeline.evaluate_shared(&view).await
        };
        self.decided(routed, arrival, body, decision, started.elapsed(), reporters)
    }

    /// Step 2, replay and benches: decide on counters that answer at once
    /// (the in-process store), on the pipeline's own clock.
    pub fn decide_now(
        &self,
        routed: Routed,
        arrival: &Arrival<'_>,
        body: Option<&[u8]>,
        reporters: Reporters<'_>,
    ) -> Exchange {
        self.decide_now_knowing(routed, arrival, body, crate::view::Known::default(), reporters)
    }

    /// [`Lifecycle::decide_now`], with what the caller already knows of the
    /// request's view (replay keeps it per header block and target; see
    /// [`crate::view::Known`]).
    pub fn decide_now_knowing(
        &self,
        routed: Routed,
        arrival: &Arrival<'_>,
        body: Option<&[u8]>,
        known: crate::view::Known,
        reporters: Reporters<'_>,
    ) -> Exchange {
        let started = Instant::now();
        let decision = self.pipeline.evaluate(&self.view(&routed, arrival, body).with_known(known));
        self.decided(routed, arrival, body, decision, started.elapsed(), reporters)
    }

    /// The request view every stage works from, as step 2 builds it.
    pub fn view<'a>(&self, routed: &'a Routed, arrival: &Arrival<'a>, body: Option<&'a [u8]>) -> RequestView<'a> {
        RequestView::new(
            arrival.method,
            arrival.version,
            arrival.uri,
            &routed.path,
            arrival.headers,
            arrival.client_ip,
            &routed.route,
            body,
        )
        .with_ja4(arrival.ja4)
        .with_client_cert(arrival.client_cert)
        .with_asn(self.pipeline.network().lookup(arrival.client_ip))
        .with_wire_names(arrival.wire_names)
    }

    fn decided(
        &self,
        routed: Routed,
        arrival: &Arrival<'_>,
        body: Option<&[u8]>,
        decision: Decision,
        decision_time: Duration,
        reporters: Reporters<'_>,
    ) -> Exchange {
        if let Some(metrics) = reporters.metrics {
            metrics.decision_latency.record(decision_time);
            metrics.record_decision(&routed.route.name, decision.action(), &decision.signals);
            if let Some(session) = decision.context.get::<SessionOutcome>() {
                let ordering = std::sync::atomic::Ordering::Relaxed;
                if session.challenge.is_some() {
                    metrics.challenges_issued.fetch_add(1, ordering);
                } else if session.clearance_used {
                    metrics.clearances_used.fetch_add(1, ordering);
                }
            }
            if let crate::identify::Identity::Partner { partner, .. } = &decision.identity {
                metrics.record_partner(&partner.name, decision.action() == crate::signal::Action::RateLimit);
            }
        }
        // Capture mode: the request as received, redacted, finished with the status.
        let capture = self.capture.as_ref().and_then(|sink| {
            sink.begin(
                &routed.route,
                &decision,
                arrival.method,
                arrival.uri,
                arrival.version,
                arrival.headers,
                arrival.wire_names,
                body,
                arrival.client_ip,
            )
        });
        let exchange = Exchange {
            decision,
            route: routed.route,
            path: routed.path,
            method: arrival.method.clone(),
            client_ip: arrival.client_ip,
            ja4: arrival.ja4.map(Arc::from),
            decision_time,
            capture,
        };
        if !exchange.stops_request() {
            self.pipeline.forward(&exchange.route, &exchange.decision);
        }
        exchange
    }

    /// Step 4: learn from the upstream's answer (the login outcome and
    /// every stage's observe hook), then write the decision log line and
    /// the capture record.
    pub fn complete(
        &self,
        exchange: &mut Exchange,
        ending: Ending<'_>,
        reporters: Reporters<'_>,
    ) -> Option<LoginOutcome> {
        let (status, outcome, upstream_time) = match ending {
            Ending::Refused => (None, None, None),
            Ending::Unanswered { upstream_time } => {
                self.pipeline.abandon(&exchange.route, &exchange.decision);
                (None, None, upstream_time)
            }
            Ending::Answered { response, upstream_time } => {
                if let Some(metrics) = reporters.metrics {
                    if let Some(time) = upstream_time {
                        metrics.upstream_latency.record(time);
                    }
                    metrics.record_upstream(&exchange.route.name, response.status);
                }
                let outcome = self.pipeline.observe(&exchange.route, &exchange.decision, &response);
                (Some(response.status), outcome, upstream_time)
            }
            Ending::Reported { status, login, username } => {
                let response = ResponseFacts::status(status.unwrap_or(0));
                let login = login.or_else(|| {
                    let spec = exchange.route.login.as_ref()?;
                    status.and_then(|_| crate::outcome::classify(spec, &response))
                });
                let observed = Observed { response: &response, login, username };
                self.pipeline.observe_with(&exchange.route, &exchange.decision, &observed);
                (status, login, None)
            }
        };
        if let Some(capture) = exchange.capture.take() {
            capture.finish(status);
        }
        if let Some(log) = reporters.log
            && let Some(suppressed) = log.admit(&exchange.decision, exchange.client_ip)
        {
            let facts = RequestFacts {
                client: exchange.client_ip,
                method: exchange.method.as_str(),
                path: &exchange.path,
                route: &exchange.route.name,
                profile: exchange.route.profile.as_str(),
                upstream_status: status,
                login_outcome: outcome,
                decision_time: exchange.decision_time,
                upstream_time,
                ja4: exchange.ja4.as_deref(),
                suppressed,
            };
            log.write(render_line(&exchange.decision, &facts));
        }
        outcome
    }
}
