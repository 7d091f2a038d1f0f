//! The decision pipeline: identify → detect → decide, as explicit steps,
//! and observe once the upstream has answered.
//!
//! Nothing here does I/O except through the counter store, and the local
//! store is in memory; the same pipeline runs behind the proxy, in replay
//! and in benches.

use std::sync::Arc;

use crate::clock::{Nanos, SharedClock};
use crate::config::{Config, Invalid, RouteMode};
use crate::decide::{Decider, Verdict};
use crate::detect::{ClientRouteRateLimit, Detector};
use crate::identify::{Allowlist, Identity};
use crate::request_id::{RequestId, RequestIds};
use crate::routes::{Route, RouteTable};
use crate::signal::{Action, Evidence, Signal};
use crate::signatures::SignatureSet;
use crate::store::{CounterPlan, CounterReadings, CounterStore, GcraReading};
use crate::view::RequestView;

pub const PARTNER_QUOTA_ID: &str = "partner.quota";

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
}

impl Decision {
    pub fn action(&self) -> Action {
        self.verdict.enforced.action
    }

    pub fn score(&self) -> u8 {
        self.verdict.enforced.score
    }

    /// Ids of the signals that were acted on (not shadow, not monitored).
    pub fn enforced_detections(&self) -> impl Iterator<Item = &str> {
        let monitored = self.mode == RouteMode::Monitor;
        self.signals.iter().filter(move |s| !s.shadow && !monitored).map(|s| &*s.id)
    }
}

/// What a login attempt's response said, for login routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginOutcome {
    Success,
    Failure,
}

impl LoginOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            LoginOutcome::Success => "success",
            LoginOutcome::Failure => "failure",
        }
    }
}

/// The stages of the pipeline, built from a configuration.
#[derive(Debug)]
pub struct PipelineParts {
    pub routes: RouteTable,
    pub allowlist: Allowlist,
    pub detectors: Vec<Box<dyn Detector>>,
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
        match (routes, allowlist, signatures, decider) {
            (Some(routes), Some(allowlist), Some(signatures), Some(decider)) if problems.is_empty() => {
                let detectors: Vec<Box<dyn Detector>> =
                    vec![Box::new(ClientRouteRateLimit::default()), Box::new(signatures)];
                Ok(PipelineParts { routes, allowlist, detectors, decider })
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

    /// Run identify → detect → decide over one request.
    pub fn evaluate(&self, view: &RequestView<'_>) -> Decision {
        let at = self.clock.now();
        let request_id = self.request_ids.next_id();
        let identity = self.parts.allowlist.identify(view.headers, view.client_ip);
        let mut plan = CounterPlan::default();
        let mut readings = CounterReadings::default();
        let mut signals = Vec::new();

        if let Identity::Partner { partner, .. } = &identity {
            // Partners skip bot heuristics but not their quota.
            let quota_key = partner.quota.map(|quota| {
                let key = format!("pq:{}", partner.name);
                plan.gcra(key.clone(), quota);
                key
            });
            self.store.execute(&plan, at, &mut readings);
            if let (Some(key), Some(quota)) = (quota_key, partner.quota)
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
            return Decision { request_id, at, identity, verdict, signals, mode: view.route.mode, fingerprint };
        }

        for detector in &self.parts.detectors {
            detector.plan(view, &mut plan);
        }
        self.store.execute(&plan, at, &mut readings);
        for detector in &self.parts.detectors {
            detector.detect(view, &readings, &mut signals);
        }
        let verdict = self.parts.decider.decide(&signals, view.route.mode);
        let fingerprint = view.fingerprint().to_string();
        Decision { request_id, at, identity, verdict, signals, mode: view.route.mode, fingerprint }
    }

    /// Learn from the upstream's answer. Login routes classify the outcome
    /// (the credential-abuse detectors feed it into their counters).
    pub fn observe(&self, route: &Route, _decision: &Decision, status: u16) -> Option<LoginOutcome> {
        let login = route.login.as_ref()?;
        if login.failure_statuses.contains(&status) {
            Some(LoginOutcome::Failure)
        } else if (200..400).contains(&status) {
            Some(LoginOutcome::Success)
        } else {
            None
        }
    }
}
