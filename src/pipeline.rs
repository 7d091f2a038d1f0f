//! The decision pipeline: identify → detect → decide, as explicit steps,
//! and observe once the upstream has answered.
//!
//! Nothing here does I/O except through the counter store, and the local
//! store is in memory; the same pipeline runs behind the proxy, in replay
//! and in benches.

use std::sync::Arc;

use crate::clock::{Nanos, SharedClock};
use crate::config::{Config, Invalid, RateLimitConfig, RouteMode, StoreFailure};
use crate::credential::{CredentialStage, KeyHasher, LoginAttempt, ResponseFacts};
use crate::decide::{Decider, Verdict};
use crate::detect::{ClientRouteRateLimit, Detector};
use crate::identify::{Allowlist, Identification, Identity};
use crate::request_id::{RequestId, RequestIds};
use crate::routes::{Route, RouteTable};
use crate::signal::{Action, Evidence, Signal};
use crate::signatures::SignatureSet;
use crate::store::{CounterPlan, CounterReadings, CounterStore, GcraReading, Key};
use crate::view::RequestView;

pub const PARTNER_QUOTA_ID: &str = "partner.quota";
/// The shared store was unavailable on a route set to fail closed.
pub const STORE_UNAVAILABLE_ID: &str = "store.unavailable";

/// A request between planning and detecting: what `begin` learned and
/// the counter operations it needs.
struct Pending {
    at: Nanos,
    request_id: RequestId,
    identified: Identification,
    plan: CounterPlan,
    login: Option<LoginAttempt>,
    /// A partner's quota key and limit.
    quota: Option<(Key, RateLimitConfig)>,
}

/// Whether `store.unavailable` is among the acted-on signals and no other
/// acted-on signal stops the request.
fn stopped_only_by_store(signals: &[Signal], mode: RouteMode) -> bool {
    let monitored = mode == RouteMode::Monitor;
    let acted_on = || signals.iter().filter(move |s| !s.shadow && !monitored);
    acted_on().any(|s| &*s.id == STORE_UNAVAILABLE_ID)
        && !acted_on().any(|s| &*s.id != STORE_UNAVAILABLE_ID && s.action.is_some_and(Action::stops_request))
}

fn store_unavailable() -> Signal {
    let mut signal = Signal::new(Arc::from(STORE_UNAVAILABLE_ID), 0);
    signal.action = Some(Action::Block);
    signal.retry_after = Some(std::time::Duration::from_secs(1));
    signal.evidence = vec![Evidence::text("shared_store", "unavailable; route fails closed")];
    signal
}

/// Everything the pipeline decided about one request.
#[derive(Debug, Clone)]
pub struct Decision {
    pub request_id: RequestId,
    pub at: Nanos,
    pub identity: Identity,
    pub verdict: Verdict,
    pub signals: Vec<Signal>,
    pub mode: RouteMode,
    /// The request's HTTP fingerprint (see [`crate::fingerprint`]).
    pub fingerprint: String,
    /// On login routes: the attempt's counter keys, until its outcome is known.
    pub login: Option<LoginAttempt>,
}

impl Decision {
    pub fn action(&self) -> Action {
        self.verdict.enforced.action
    }

    pub fn score(&self) -> u8 {
        self.verdict.enforced.score
    }

    /// Whether the request is stopped only because the shared store is
    /// unavailable on a route that fails closed (503, not 403: the client
    /// did nothing wrong).
    pub fn only_store_unavailable(&self) -> bool {
        stopped_only_by_store(&self.signals, self.mode)
    }

    /// Ids of the signals that were acted on (not shadow, not monitored).
    pub fn enforced_detections(&self) -> impl Iterator<Item = &str> {
        let monitored = self.mode == RouteMode::Monitor;
        self.signals.iter().filter(move |s| !s.shadow && !monitored).map(|s| &*s.id)
    }
}

pub use crate::credential::LoginOutcome;

/// The stages of the pipeline, built from a configuration.
#[derive(Debug)]
pub struct PipelineParts {
    pub routes: RouteTable,
    pub allowlist: Allowlist,
    pub detectors: Vec<Box<dyn Detector>>,
    pub credential: CredentialStage,
    pub decider: Decider,
}

/// Builds the pipeline's stages, collecting every configuration problem.
pub struct PipelineBuilder<'a> {
    config: &'a Config,
}

impl<'a> PipelineBuilder<'a> {
    pub fn new(config: &'a Config) -> Self {
        PipelineBuilder { config }
    }

    pub fn build_parts(&self) -> Result<PipelineParts, Vec<Invalid>> {
        let mut problems = Vec::new();
        let routes = keep(RouteTable::from_config(self.config), &mut problems);
        let allowlist = keep(Allowlist::from_config(self.config), &mut problems);
        let signatures = keep(SignatureSet::from_config(self.config), &mut problems);
        let decider = keep(Decider::from_config(&self.config.decision), &mut problems);
        // One secret for every keyed hash of this configuration.
        let hasher = KeyHasher::from_config(self.config);
        let credential = keep(CredentialStage::from_config(self.config, hasher.clone()), &mut problems);
        match (routes, allowlist, signatures, decider, credential) {
            (Some(routes), Some(allowlist), Some(signatures), Some(decider), Some(credential))
                if problems.is_empty() =>
            {
                let detectors: Vec<Box<dyn Detector>> =
                    vec![Box::new(ClientRouteRateLimit::new(hasher)), Box::new(signatures)];
                Ok(PipelineParts { routes, allowlist, detectors, credential, decider })
            }
            _ => Err(problems),
        }
    }

    pub fn build(
        &self,
        store: Arc<CounterStore>,
        clock: SharedClock,
        request_ids: RequestIds,
    ) -> Result<Pipeline, Vec<Invalid>> {
        let parts = self.build_parts()?;
        Ok(Pipeline { parts, store, clock, request_ids })
    }
}

/// The value of a builder's result, moving its problems into `problems`.
fn keep<T>(result: Result<T, Vec<Invalid>>, problems: &mut Vec<Invalid>) -> Option<T> {
    result.map_err(|mut errs| problems.append(&mut errs)).ok()
}

#[derive(Debug)]
pub struct Pipeline {
    parts: PipelineParts,
    store: Arc<CounterStore>,
    clock: SharedClock,
    request_ids: RequestIds,
}

impl Pipeline {
    pub fn routes(&self) -> &RouteTable {
        &self.parts.routes
    }

    pub fn allowlist(&self) -> &Allowlist {
        &self.parts.allowlist
    }

    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    pub fn store(&self) -> &Arc<CounterStore> {
        &self.store
    }

    /// Normalize a request path and find its route.
    pub fn route(&self, method: &http::Method, raw_path: &str) -> (String, &Arc<Route>) {
        let path = crate::normalize::normalize_path(raw_path, self.parts.routes.case_insensitive());
        let route = self.parts.routes.find(method, &path);
        (path, route)
    }

    /// Run identify → detect → decide over one request, on counters that
    /// answer at once (the in-process store; a Redis store's local
    /// counters): replay, explain and benches.
    pub fn evaluate(&self, view: &RequestView<'_>) -> Decision {
        let pending = self.begin(view);
        let mut readings = CounterReadings::default();
        self.store.execute(&pending.plan, pending.at, &mut readings);
        self.finish(view, pending, &readings)
    }

    /// The same, with the counters where they are shared: one round trip
    /// to Redis when it is configured (serving).
    pub async fn evaluate_shared(&self, view: &RequestView<'_>) -> Decision {
        let pending = self.begin(view);
        let mut readings = CounterReadings::default();
        self.store.execute_shared(&pending.plan, pending.at, &mut readings).await;
        self.finish(view, pending, &readings)
    }

    /// Identify, and plan every counter operation the request needs.
    fn begin(&self, view: &RequestView<'_>) -> Pending {
        let at = self.clock.now();
        let request_id = self.request_ids.next_id();
        let identified = self.parts.allowlist.identify(view, at);
        if let Identity::Partner { partner, .. } = &identified.identity {
            // Partners skip bot heuristics but not their quota.
            let mut plan = CounterPlan::new(partner.shard.clone());
            let quota = partner.quota.map(|quota| {
                plan.gcra(partner.quota_key.clone(), quota);
                (partner.quota_key.clone(), quota)
            });
            identified.plan(&mut plan);
            return Pending { at, request_id, identified, plan, login: None, quota };
        }
        let mut plan = CounterPlan::new(view.route.name.clone());
        let login = view.route.abuse.as_ref().and_then(|_| self.parts.credential.attempt(view));
        for detector in &self.parts.detectors {
            detector.plan(view, &mut plan);
        }
        if let (Some(attempt), Some(abuse)) = (&login, &view.route.abuse) {
            self.parts.credential.plan(attempt, abuse, &mut plan);
        }
        Pending { at, request_id, identified, plan, login, quota: None }
    }

    /// Detect over the readings, decide, and record what the decision
    /// changes in the store.
    fn finish(&self, view: &RequestView<'_>, pending: Pending, readings: &CounterReadings) -> Decision {
        let Pending { at, request_id, mut identified, plan, login, quota } = pending;
        identified.settle(readings);
        let identity = identified.identity;
        let mut signals = identified.signals;
        if readings.degraded() && view.route.store_failure == StoreFailure::Closed {
            signals.push(store_unavailable());
        }
        if signals.iter().any(|s| &*s.id == crate::identify::SIGNATURE_REPLAYED_ID) {
            // Planned as a partner (only the quota and the nonce), so no
            // detector has readings: the replay decides.
            let verdict = self.parts.decider.decide(&signals, view.route.mode);
            let fingerprint = view.fingerprint().to_string();
            return Decision {
                request_id,
                at,
                identity,
                verdict,
                signals,
                mode: view.route.mode,
                fingerprint,
                login: None,
            };
        }
        if matches!(identity, Identity::Partner { .. }) {
            if let Some((key, quota)) = quota
                && let Some(GcraReading::Limited { retry_after }) = readings.gcra(&key)
            {
                let mut signal = Signal::new(Arc::from(PARTNER_QUOTA_ID), 0);
                signal.action = Some(Action::RateLimit);
                signal.retry_after = Some(retry_after);
                signal.evidence = vec![
                    Evidence::number("quota_requests", f64::from(quota.requests), None),
                    Evidence::number("quota_period_s", quota.period_secs as f64, None),
                    Evidence::number("retry_after_ms", retry_after.as_millis() as f64, None),
                ];
                signals.push(signal);
            }
            let mut verdict = self.parts.decider.decide(&signals, view.route.mode);
            verdict.enforced.score = self.parts.decider.trusted_score();
            let fingerprint = view.fingerprint().to_string();
            return Decision {
                request_id,
                at,
                identity,
                verdict,
                signals,
                mode: view.route.mode,
                fingerprint,
                login: None,
            };
        }

        for detector in &self.parts.detectors {
            detector.detect(view, readings, &mut signals);
        }
        let mut bans = Vec::new();
        if let (Some(attempt), Some(abuse)) = (&login, &view.route.abuse) {
            self.parts.credential.detect(attempt, abuse, readings, &mut signals, &mut bans);
        }

        // Decide, then record what the decision changes in the store.
        let verdict = self.parts.decider.decide(&signals, view.route.mode);
        if let (Some(attempt), Some(abuse)) = (&login, &view.route.abuse) {
            let action = verdict.enforced.action;
            let enforced_bans = if action == Action::Block { &bans[..] } else { &[] };
            // An attempt refused only because the shared store is down is
            // not the client's doing: it does not count toward escalation.
            let refused = action.stops_request() && !stopped_only_by_store(&signals, view.route.mode);
            let mut writes = CounterPlan::new(plan.shard_key().clone());
            self.parts.credential.record_decision(attempt, abuse, refused, enforced_bans, &mut writes);
            if !writes.is_empty() {
                self.store.write(writes, at);
            }
        }
        let fingerprint = view.fingerprint().to_string();
        Decision { request_id, at, identity, verdict, signals, mode: view.route.mode, fingerprint, login }
    }

    /// Learn from the upstream's answer: on login routes, classify the
    /// outcome and add it to the attempt's counters.
    pub fn observe(&self, route: &Route, decision: &Decision, response: &ResponseFacts<'_>) -> Option<LoginOutcome> {
        let outcome = crate::credential::classify(route.login.as_ref()?, response)?;
        if let (Some(attempt), Some(abuse)) = (&decision.login, &route.abuse) {
            let mut plan = CounterPlan::new(route.name.clone());
            self.parts.credential.observe(attempt, abuse, outcome, &mut plan);
            self.store.write(plan, self.clock.now());
        }
        Some(outcome)
    }

    /// The detectors, in the order they run (for `palisade explain`).
    pub fn detectors(&self) -> &[Box<dyn Detector>] {
        &self.parts.detectors
    }
}
