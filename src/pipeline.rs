//! The decision pipeline: identify → plan → detect → decide → after
//! decision, and observe once the upstream has answered.
//!
//! Every detector is a [`Stage`] with default hooks; the pipeline calls
//! each hook of each stage in order, with one store call between plan and
//! detect. Nothing here does I/O except through the counter store, and the
//! local store is in memory; the same pipeline runs behind every front
//! door, in replay and in benches (see [`crate::lifecycle`]).

use std::sync::Arc;

use crate::clock::{Nanos, SharedClock};
use crate::config::{Config, Invalid, RouteMode};
use crate::credential::{CredentialStage, KeyHasher};
use crate::decide::{Decider, Verdict};
use crate::detect::{
    AsnRouteRateLimit, ClientRouteRateLimit, Decided, OAuthClientQuota, Observed, PartnerQuota, RequestContext, Stage,
    StoreHealth,
};
use crate::identify::{Allowlist, Identification, Identity};
use crate::model::{ModelReport, ModelStage};
use crate::network::NetworkContext;
use crate::outcome::{LoginOutcome, ResponseFacts};
use crate::payment::PaymentStage;
use crate::request_id::{RequestId, RequestIds};
use crate::routes::{Route, RouteTable};
use crate::session::{SessionStage, Verified, VerifyError};
use crate::signal::{Action, Signal};
use crate::signatures::SignatureSet;
use crate::store::{CounterPlan, CounterReadings, CounterStore, Key};
use crate::view::RequestView;

pub use crate::detect::{PARTNER_QUOTA_ID, STORE_UNAVAILABLE_ID};

/// A request between planning and detecting: what `begin` learned and
/// the counter operations it needs.
struct Pending {
    at: Nanos,
    request_id: RequestId,
    context: RequestContext,
    plan: CounterPlan,
    /// Plans of stages that keep their counters in a shard of their own
    /// (see [`Stage::shard`]).
    own_shards: Vec<CounterPlan>,
    /// The identify step's failed proofs and the nonce it asked to count.
    identified: Identification,
}

impl Pending {
    /// How many counter operations the request planned, over all its plans.
    fn ops(&self) -> usize {
        self.plan.ops().len() + self.own_shards.iter().map(|plan| plan.ops().len()).sum::<usize>()
    }
}

/// Whether `store.unavailable` is among the acted-on signals and no other
/// acted-on signal stops the request.
fn stopped_only_by_store(signals: &[Signal], mode: RouteMode) -> bool {
    let monitored = mode == RouteMode::Monitor;
    let acted_on = || signals.iter().filter(move |s| !s.shadow && !monitored);
    acted_on().any(|s| &*s.id == STORE_UNAVAILABLE_ID)
        && !acted_on().any(|s| &*s.id != STORE_UNAVAILABLE_ID && s.action.is_some_and(Action::stops_request))
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
    pub fingerprint: Arc<str>,
    /// What the stages keep about the request until its outcome is known.
    pub context: RequestContext,
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

    /// The model stage's features and probabilities, when it ran.
    pub fn model(&self) -> Option<&ModelReport> {
        self.context.get::<ModelReport>()
    }
}

/// The stages of the pipeline, built from a configuration.
#[derive(Debug)]
pub struct PipelineParts {
    pub routes: RouteTable,
    pub allowlist: Allowlist,
    /// Detector stages in the order their hooks run.
    pub stages: Vec<Box<dyn Stage>>,
    /// The model stage (also among `stages`), for reports.
    pub models: Option<ModelStage>,
    pub decider: Decider,
    /// The session stage again (when `[session]` is enabled), for the
    /// challenge's verify path, which is answered before any stage runs.
    pub session: Option<SessionStage>,
    /// ASN lookups for the request view (`[network]`).
    pub network: NetworkContext,
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
        let session = keep(SessionStage::from_config(self.config), &mut problems);
        let models = keep(ModelStage::from_config(self.config, hasher.clone()), &mut problems);
        let network = keep(NetworkContext::from_config(self.config), &mut problems).unwrap_or_default();
        match (routes, allowlist, signatures, decider, credential, session, models) {
            (
                Some(routes),
                Some(allowlist),
                Some(signatures),
                Some(decider),
                Some(credential),
                Some(session),
                Some(models),
            ) if problems.is_empty() => {
                let mut stages =
                    stage_list(&routes, &allowlist, hasher.clone(), signatures, session.clone(), credential);
                if routes.routes().any(|route| route.client_quota.is_some()) {
                    stages.insert(1, Box::new(OAuthClientQuota::new(hasher.clone())));
                }
                if routes.routes().any(|route| route.asn_rate_limit.is_some()) {
                    stages.insert(1, Box::new(AsnRouteRateLimit::new()));
                }
                // Last: it reads the login attempt the credential stage planned.
                if let Some(models) = &models {
                    stages.push(Box::new(models.clone()));
                }
                Ok(PipelineParts { routes, allowlist, stages, models, decider, session, network })
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
        let mut shard_keys: Vec<Key> = Vec::new();
        for shard in parts.stages.iter().filter_map(|stage| stage.shard()) {
            if !shard_keys.iter().any(|key| **key == *shard) {
                shard_keys.push(Key::from(shard));
            }
        }
        Ok(Pipeline { parts, store, clock, request_ids, shard_keys })
    }
}

/// The stages a configuration needs, in the order their signals are
/// reported: a stage that nothing in the configuration would use is left
/// out rather than asked on every request.
fn stage_list(
    routes: &RouteTable,
    allowlist: &Allowlist,
    hasher: KeyHasher,
    signatures: SignatureSet,
    session: Option<SessionStage>,
    credential: CredentialStage,
) -> Vec<Box<dyn Stage>> {
    let payment = routes.routes().any(|route| route.payment.is_some()).then(|| PaymentStage::new(hasher.clone()));
    let mut stages: Vec<Box<dyn Stage>> = vec![Box::new(StoreHealth::default())];
    if allowlist.partners().any(|partner| partner.quota.is_some()) {
        stages.push(Box::new(PartnerQuota::default()));
    }
    if routes.routes().any(|route| route.rate_limit.is_some()) {
        stages.push(Box::new(ClientRouteRateLimit::new(hasher)));
    }
    if signatures.rule_count() > 0 {
        stages.push(Box::new(signatures));
    }
    // Before the credential stage: it says whether a cookie vouches for
    // the client, which the credential stage's shared scopes defer to.
    if let Some(session) = session {
        stages.push(Box::new(session));
    }
    if routes.routes().any(|route| route.abuse.is_some()) {
        stages.push(Box::new(credential));
    }
    // After the session stage too: it reads the session the payment is made in.
    if let Some(payment) = payment {
        stages.push(Box::new(payment));
    }
    stages
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
    /// The stages' own shards (see [`Stage::shard`]) as keys, made once:
    /// each hook of each request plans into them, and making the key
    /// there allocated it every time.
    shard_keys: Vec<Key>,
}

impl Pipeline {
    pub fn routes(&self) -> &RouteTable {
        &self.parts.routes
    }

    /// ASN lookups for the request view.
    pub fn network(&self) -> &NetworkContext {
        &self.parts.network
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
        let mut pending = self.begin(view);
        let mut readings = CounterReadings::with_capacity(pending.ops());
        // The plans' keys move into the readings: after this, only their
        // shards are needed.
        self.store.execute_taking(&mut pending.plan, pending.at, &mut readings);
        for plan in pending.own_shards.iter_mut().filter(|plan| !plan.is_empty()) {
            self.store.execute_taking(plan, pending.at, &mut readings);
        }
        self.finish(view, pending, &readings)
    }

    /// The same, with the counters where they are shared: one round trip
    /// to Redis when it is configured (serving).
    pub async fn evaluate_shared(&self, view: &RequestView<'_>) -> Decision {
        let mut pending = self.begin(view);
        let mut readings = CounterReadings::with_capacity(pending.ops());
        self.store.execute_shared_taking(&mut pending.plan, pending.at, &mut readings).await;
        for plan in pending.own_shards.iter_mut().filter(|plan| !plan.is_empty()) {
            self.store.execute_shared_taking(plan, pending.at, &mut readings).await;
        }
        self.finish(view, pending, &readings)
    }

    /// The session stage, when `[session]` is enabled.
    pub fn session(&self) -> Option<&SessionStage> {
        self.parts.session.as_ref()
    }

    /// Check an answer to a served challenge (the verify path's query):
    /// the clearance cookie to set, once per challenge. `None` when the
    /// session stage is off.
    pub async fn verify_challenge(
        &self,
        query: &str,
        headers: &http::HeaderMap,
        client_ip: std::net::IpAddr,
    ) -> Option<Result<Verified, VerifyError>> {
        let stage = self.parts.session.as_ref()?;
        let at = self.clock.now();
        let verified = match stage.verify(query, headers, client_ip, at) {
            Ok(verified) => verified,
            Err(error) => return Some(Err(error)),
        };
        let mut plan = CounterPlan::new(Key::from(stage.shard().unwrap_or("session")));
        stage.count_use(&verified, &mut plan);
        let mut readings = CounterReadings::default();
        self.store.execute_shared(&plan, at, &mut readings).await;
        Some(if stage.reused(&verified, &readings) { Err(VerifyError::Reused) } else { Ok(verified) })
    }

    /// The plan a stage writes into: the request's, or its own shard's.
    fn plan_for<'p>(
        &self,
        stage: &dyn Stage,
        plan: &'p mut CounterPlan,
        own: &'p mut Vec<CounterPlan>,
    ) -> &'p mut CounterPlan {
        let Some(shard) = stage.shard() else { return plan };
        let index = match own.iter().position(|p| p.shard() == shard) {
            Some(index) => index,
            None => {
                let key = self.shard_keys.iter().find(|key| ***key == *shard).cloned();
                own.push(CounterPlan::new(key.unwrap_or_else(|| Key::from(shard))));
                own.len() - 1
            }
        };
        &mut own[index]
    }

    /// Write a request's plans (its own and its stages' own shards).
    fn write_all(&self, plan: CounterPlan, own: Vec<CounterPlan>, at: Nanos) {
        for plan in std::iter::once(plan).chain(own).filter(|plan| !plan.is_empty()) {
            self.store.write(plan, at);
        }
    }

    /// [`Pipeline::write_all`] at the clock's time, read only when there is
    /// something to write: most requests' forward and observe hooks write
    /// nothing (a `GET` of a page), and a read of the clock costs ~100
    /// instructions.
    fn write_now(&self, plan: CounterPlan, own: Vec<CounterPlan>) {
        if plan.is_empty() && own.iter().all(CounterPlan::is_empty) {
            return;
        }
        self.write_all(plan, own, self.clock.now());
    }

    /// The stages that run for a request of this identity, in order.
    fn stages_for<'s>(&'s self, context: &'s RequestContext) -> impl Iterator<Item = &'s dyn Stage> + 's {
        self.parts.stages.iter().map(|stage| &**stage).filter(|stage| stage.audience().includes(&context.identity))
    }

    /// Identify, and plan every counter operation the request needs.
    fn begin(&self, view: &RequestView<'_>) -> Pending {
        let at = self.clock.now();
        let request_id = self.request_ids.next_id();
        let identified = self.parts.allowlist.identify(view, at);
        // A partner's counters live with the partner, a visitor's with the route.
        let shard = match &identified.identity {
            Identity::Partner { partner, .. } => partner.shard.clone(),
            Identity::Anonymous => view.route.name.clone(),
        };
        let mut context = RequestContext::new(identified.identity.clone()).with_time(at);
        let mut plan = CounterPlan::new(shard);
        identified.plan(&mut plan);
        let mut own_shards = Vec::new();
        for stage in &self.parts.stages {
            if stage.audience().includes(&context.identity) {
                stage.plan(view, &mut context, self.plan_for(&**stage, &mut plan, &mut own_shards));
            }
        }
        Pending { at, request_id, context, plan, own_shards, identified }
    }

    /// Detect over the readings, decide, and record what the decision
    /// changes in the store.
    fn finish(&self, view: &RequestView<'_>, pending: Pending, readings: &CounterReadings) -> Decision {
        let Pending { at, request_id, mut context, plan, own_shards: _, mut identified } = pending;
        // A replayed signature's nonce makes the partner anonymous again;
        // the visitors' stages then detect on whatever readings they have
        // (none were planned for them), so the replay's block decides.
        identified.settle(readings);
        context.identity = identified.identity;
        let mut signals = identified.signals;
        for stage in &self.parts.stages {
            if stage.audience().includes(&context.identity) {
                stage.detect(view, &mut context, readings, &mut signals);
            }
        }
        let mut verdict = self.parts.decider.decide(&signals, view.route.mode);
        if context.is_partner() {
            // Partners are not scored by bot heuristics.
            verdict.enforced.score = self.parts.decider.trusted_score();
        }

        // Record what the decision changes in the store. An attempt refused
        // only because the shared store is down is not the client's doing.
        let refused = verdict.enforced.action.stops_request() && !stopped_only_by_store(&signals, view.route.mode);
        let decided = Decided { verdict: &verdict, signals: &signals, refused };
        let mut writes = CounterPlan::new(plan.shard_key().clone());
        let mut own_writes = Vec::new();
        for stage in &self.parts.stages {
            if stage.audience().includes(&context.identity) {
                let target = self.plan_for(&**stage, &mut writes, &mut own_writes);
                stage.after_decision(view, &mut context, &decided, target);
            }
        }
        self.write_all(writes, own_writes, at);
        let fingerprint = view.shared_fingerprint().clone();
        Decision {
            request_id,
            at,
            identity: context.identity.clone(),
            verdict,
            signals,
            mode: view.route.mode,
            fingerprint,
            context,
        }
    }

    /// Learn from the upstream's answer: on login routes, classify the
    /// outcome, and let every stage add what it learns to its counters.
    pub fn observe(&self, route: &Route, decision: &Decision, response: &ResponseFacts<'_>) -> Option<LoginOutcome> {
        let login = route.login.as_ref().and_then(|spec| crate::outcome::classify(spec, response));
        self.observe_with(route, decision, &Observed { response, login, username: None });
        login
    }

    /// Let every stage learn from an answer already read (a sidecar's
    /// outcome report).
    pub fn observe_with(&self, route: &Route, decision: &Decision, observed: &Observed<'_>) {
        let mut writes = CounterPlan::new(route.name.clone());
        let mut own_writes = Vec::new();
        for stage in self.stages_for(&decision.context) {
            stage.observe(route, &decision.context, observed, self.plan_for(stage, &mut writes, &mut own_writes));
        }
        self.write_now(writes, own_writes);
    }

    /// A request is let through to the upstream: let every stage note it.
    pub fn forward(&self, route: &Route, decision: &Decision) {
        let mut writes = CounterPlan::new(route.name.clone());
        let mut own_writes = Vec::new();
        for stage in self.stages_for(&decision.context) {
            stage.forwarded(route, &decision.context, self.plan_for(stage, &mut writes, &mut own_writes));
        }
        self.write_now(writes, own_writes);
    }

    /// A request let through ended without an answer: let every stage
    /// close what it opened for it.
    pub fn abandon(&self, route: &Route, decision: &Decision) {
        let mut writes = CounterPlan::new(route.name.clone());
        let mut own_writes = Vec::new();
        for stage in self.stages_for(&decision.context) {
            stage.abandoned(route, &decision.context, self.plan_for(stage, &mut writes, &mut own_writes));
        }
        self.write_now(writes, own_writes);
    }

    /// The detector stages, in the order they run (for `palisade explain`).
    pub fn stages(&self) -> &[Box<dyn Stage>] {
        &self.parts.stages
    }

    /// The model stage, when models run (for `explain` and replay reports).
    pub fn models(&self) -> Option<&ModelStage> {
        self.parts.models.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::lifecycle::{Arrival, Ending, Lifecycle, Reporters};
    use crate::store::LocalStore;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A manual clock that counts its reads.
    #[derive(Debug)]
    struct Counting {
        clock: ManualClock,
        reads: AtomicU64,
    }

    impl Clock for Counting {
        fn now(&self) -> Nanos {
            self.reads.fetch_add(1, Ordering::Relaxed);
            self.clock.now()
        }
    }

    /// Forwarding and observing a request no stage writes for (a page)
    /// neither writes nor reads the clock; a login's do both, at the
    /// clock's time.
    #[test]
    fn hooks_with_nothing_to_write_leave_the_clock_alone() {
        let counting =
            Arc::new(Counting { clock: ManualClock::new(1_800_000_000_000_000_000), reads: AtomicU64::new(0) });
        let clock: SharedClock = counting.clone();
        let config = Config::default();
        let store = Arc::new(CounterStore::Local(LocalStore::new(clock.clone())));
        let pipeline =
            PipelineBuilder::new(&config).build(store.clone(), clock, RequestIds::new(1)).expect("a pipeline");
        let lifecycle = Lifecycle::new(pipeline, None);
        let mut headers = http::HeaderMap::new();
        headers.insert("host", "example.com".parse().unwrap());
        headers.insert("user-agent", "curl/8.5.0".parse().unwrap());
        headers.insert("content-type", "application/json".parse().unwrap());
        for (method, path, body, writes) in [
            (http::Method::GET, "/", None, false),
            (http::Method::POST, "/login", Some(&br#"{"username":"a","password":"b"}"#[..]), true),
        ] {
            let uri: http::Uri = path.parse().unwrap();
            let arrival = Arrival {
                method: &method,
                uri: &uri,
                version: http::Version::HTTP_11,
                headers: &headers,
                client_ip: "203.0.113.5".parse().unwrap(),
                ja4: None,
                wire_names: None,
                client_cert: None,
            };
            let routed = lifecycle.route(&method, &uri);
            let mut exchange = lifecycle.decide_now(routed, &arrival, body, Reporters::default());
            assert!(!exchange.stops_request(), "{path}");
            let keys = store.keys().len();
            let reads = counting.reads.load(Ordering::Relaxed);
            lifecycle.pipeline().forward(&exchange.route, &exchange.decision);
            let response = ResponseFacts::status(200);
            lifecycle.complete(&mut exchange, Ending::Answered { response, upstream_time: None }, Reporters::default());
            let read = counting.reads.load(Ordering::Relaxed) - reads;
            assert_eq!(read > 0, writes, "{path}: {read} clock reads");
            assert_eq!(store.keys().len() > keys, writes, "{path}");
        }
    }
}
