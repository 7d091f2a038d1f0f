//! Credential stuffing, cracking and spraying: how logins behave over time.
//!
//! A stage of its own rather than a plain detector, because it learns from
//! outcomes: at request time it reads counters (failures, successes,
//! refused attempts, distinct usernames and addresses, bans) for every
//! scope the attempt belongs to — the client address, its subnet together
//! with its fingerprint, the fingerprint anywhere, the account, the whole
//! login route — and after the upstream answers it adds the outcome to
//! them. Every escalation is gated on a failure *ratio*, so the shared
//! addresses and fingerprints of people who mostly log in successfully
//! are never punished for their volume alone.

mod breach;
mod keys;

use std::sync::Arc;
use std::time::Duration;

pub use crate::outcome::{BODY_PREFIX_LIMIT, LoginOutcome, ResponseFacts, classify};
pub use breach::BreachFilter;
pub use keys::{Counter, KeyHasher, LoginKeys, Scope, folded, subnet};

use crate::config::{AbuseConfig, Config, Invalid};
use crate::detect::escalation::{Penalties, Step};
use crate::detect::{Decided, Observed, RequestContext, Stage, Vouched};
use crate::routes::Route;
use crate::signal::{Action, Evidence, Signal};
use crate::store::{CounterOp, CounterPlan, CounterReadings};
use crate::view::RequestView;

/// The scopes an attempt is counted in and escalated on.
const SCOPES: [Scope; 4] = [Scope::Ip, Scope::Subnet, Scope::Fingerprint, Scope::Net];

/// Half-life of the "last few minutes" side of the site-wide comparison.
const SITE_RECENT_HALF_LIFE: Duration = Duration::from_secs(60);

/// Window of the in-flight count (attempts let through minus those whose
/// request ended): a login slower than this is not waited for, and an
/// attempt whose end was never seen stops counting within two windows.
const PENDING_WINDOW: Duration = Duration::from_secs(60);

/// What the stage knows about one login attempt, carried in the decision
/// until the outcome is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginAttempt {
    pub keys: LoginKeys,
    pub breached_password: bool,
}

/// A ban a signal asks for, carried out only when the block is enforced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanRequest {
    pub key: crate::store::Key,
    pub ttl: Duration,
    /// The detection id that asked for the ban.
    pub reason: &'static str,
}

#[derive(Debug)]
pub struct CredentialStage {
    hasher: KeyHasher,
    breach: Option<Arc<BreachFilter>>,
}

/// What each escalation step weighs in the score on login routes.
const PENALTIES: Penalties = Penalties { challenge: 30, rate_limit: 50, block: 70 };

/// One scope's escalation settings.
struct Escalation {
    scope: Scope,
    failures: u32,
    ratio: f64,
    id: &'static str,
}

impl CredentialStage {
    pub fn from_config(config: &Config, hasher: KeyHasher) -> Result<Self, Vec<Invalid>> {
        let breach = if config.breach.path.is_empty() {
            None
        } else {
            let path = config.resolve_path(&config.breach.path);
            let filter = BreachFilter::load(&path)
                .map_err(|message| vec![Invalid::new(0..0, "breach.path", format!("{}: {message}", path.display()))])?;
            Some(Arc::new(filter))
        };
        Ok(CredentialStage { hasher, breach })
    }

    /// The attempt's keys, on login routes.
    pub fn attempt(&self, view: &RequestView<'_>) -> Option<LoginAttempt> {
        let login = view.route.login.as_ref()?;
        let keys = LoginKeys::new(
            &self.hasher,
            &view.route.name,
            view.client_ip,
            view.counter_fingerprint(),
            view.username.as_deref(),
        );
        let breached_password = match (&self.breach, view.body) {
            (Some(filter), Some(body)) => {
                let content_type = view.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
                login.password(content_type, body).is_some_and(|password| filter.contains_password(&password))
            }
            _ => false,
        };
        Some(LoginAttempt { keys, breached_password })
    }

    /// Counter operations at request time: read what is known, and count
    /// the username and the address as seen.
    fn plan_counters(&self, attempt: &LoginAttempt, abuse: &AbuseConfig, plan: &mut CounterPlan) {
        let keys = &attempt.keys;
        let window = Duration::from_secs(abuse.window_secs);
        for scope in SCOPES {
            // A scope's keys come as one array, in `SCOPE_COUNTERS`' order:
            // a login plans some forty operations, and finding each key by
            // its scope and counter was half of planning them (the keys'
            // hashing aside).
            let Some([ban, failures, successes, refused, usernames, forwarded, resolved, accounts]) =
                keys.scope_keys(scope)
            else {
                continue;
            };
            plan.push(CounterOp::BanCheck { key: ban.clone() });
            for key in [failures, successes, refused] {
                plan.push(CounterOp::Count { key: key.clone(), window, add: 0 });
            }
            plan.push(CounterOp::Distinct { key: usernames.clone(), window, item: keys.user_item });
            for key in [forwarded, resolved] {
                plan.push(CounterOp::Count { key: key.clone(), window: PENDING_WINDOW, add: 0 });
            }
            plan.push(CounterOp::Distinct { key: accounts.clone(), window, item: None });
        }
        if keys.user.is_some() {
            plan.push(CounterOp::Count { key: keys.key(Scope::User, Counter::Failures), window, add: 0 });
            // Only an account already tracked takes the address now: a
            // refused attempt (a banned client cycling usernames) must not
            // create state per username. A let-through attempt adds it in
            // `record_decision`.
            plan.push(CounterOp::DistinctIfHeld {
                key: keys.key(Scope::User, Counter::Addresses),
                window,
                item: keys.ip_item,
            });
        }
        let baseline = Duration::from_secs(abuse.baseline_half_life_secs);
        let [recent_attempts, recent_failures, baseline_attempts, baseline_failures] = keys.site_keys();
        for (key, half_life) in [
            (recent_attempts, SITE_RECENT_HALF_LIFE),
            (recent_failures, SITE_RECENT_HALF_LIFE),
            (baseline_attempts, baseline),
            (baseline_failures, baseline),
        ] {
            plan.push(CounterOp::Decay { key: key.clone(), half_life, add: 0.0 });
        }
    }

    /// Signals from the readings; bans that an enforced block should set.
    ///
    /// `vouched`: the request carries a valid session or clearance cookie
    /// (the session stage says so with [`Vouched`]). Scopes many clients
    /// share (a subnet, a fingerprint) say nothing against such a request:
    /// their bans and escalations are what the cookie answers.
    fn detect_attempt(
        &self,
        attempt: &LoginAttempt,
        abuse: &AbuseConfig,
        readings: &CounterReadings,
        vouched: bool,
        signals: &mut Vec<Signal>,
        bans: &mut Vec<BanRequest>,
    ) {
        let keys = &attempt.keys;
        let skipped = |scope: Scope| vouched && scope != Scope::Ip;
        for scope in SCOPES.into_iter().filter(|scope| !skipped(*scope)) {
            if let Some(left) = readings.ban(&keys.name(scope, Counter::Ban)) {
                let mut signal = Signal::new(Arc::from("cred.banned"), 79);
                signal.action = Some(Action::Block);
                signal.evidence.push(Evidence::text("scope", scope.as_str()));
                signal.evidence.push(Evidence::number("ban_left_s", left.as_secs_f64().ceil(), None));
                signals.push(signal);
                return;
            }
        }
        let escalations = [
            Escalation {
                scope: Scope::Ip,
                failures: abuse.ip_failures,
                ratio: abuse.ip_failure_ratio,
                id: "cred.ip_failures",
            },
            Escalation {
                scope: Scope::Subnet,
                failures: abuse.subnet_failures,
                ratio: abuse.subnet_failure_ratio,
                id: "cred.subnet_failures",
            },
            Escalation {
                scope: Scope::Fingerprint,
                failures: abuse.fingerprint_failures,
                ratio: abuse.fingerprint_failure_ratio,
                id: "cred.fingerprint_failures",
            },
            Escalation {
                scope: Scope::Net,
                failures: abuse.subnet_failures,
                ratio: abuse.subnet_failure_ratio,
                id: "cred.net_failures",
            },
        ];
        // Each scope's outcomes are read once: the escalations and the
        // distinct-username checks below both weigh them.
        let scope_outcomes = SCOPES.map(|scope| (!skipped(scope)).then(|| outcomes(readings, keys, scope)));
        for (escalation, outcomes) in escalations.iter().zip(&scope_outcomes) {
            if let Some(outcomes) = outcomes {
                self.escalate(escalation, outcomes, keys, abuse, readings, vouched, signals, bans);
            }
        }
        // Many usernames from one place is what a carrier NAT, an office or
        // a popular app looks like too: it only counts when most of those
        // logins fail.
        for ((scope, threshold, id, min_ratio), outcomes) in [
            (Scope::Ip, abuse.ip_distinct_usernames, "cred.ip_usernames", 0.5),
            (Scope::Subnet, abuse.subnet_distinct_usernames, "cred.subnet_usernames", 0.5),
            (Scope::Fingerprint, abuse.fingerprint_distinct_usernames, "cred.fingerprint_usernames", 0.5),
            (Scope::Net, abuse.subnet_distinct_usernames, "cred.net_usernames", 0.5),
        ]
        .into_iter()
        .zip(&scope_outcomes)
        {
            // A skipped scope has no outcomes read.
            let Some(outcomes) = outcomes else { continue };
            let distinct = readings.number(&keys.name(scope, Counter::Usernames));
            let ratio = outcomes.ratio;
            if distinct >= f64::from(threshold) && ratio >= min_ratio {
                let mut signal = Signal::new(Arc::from(id), 25);
                signal.evidence.push(Evidence::number("distinct_usernames", distinct, Some(f64::from(threshold))));
                signal.evidence.push(Evidence::number("failure_ratio", round3(ratio), Some(min_ratio)));
                signal.evidence.push(Evidence::number("window_s", abuse.window_secs as f64, None));
                signals.push(signal);
            }
        }
        if keys.user.is_some() {
            let failures = readings.number(&keys.name(Scope::User, Counter::Failures));
            if failures >= f64::from(abuse.username_failures) {
                // Challenge, never block: blocking would let anyone lock a
                // person out of their own account.
                let mut signal = Signal::new(Arc::from("cred.account_failures"), 10);
                signal.action = Some(Action::Challenge);
                signal.evidence.push(Evidence::number("failures", failures, Some(f64::from(abuse.username_failures))));
                signals.push(signal);
            }
            let addresses = readings.number(&keys.name(Scope::User, Counter::Addresses));
            if addresses >= f64::from(abuse.username_distinct_addresses) {
                let mut signal = Signal::new(Arc::from("cred.account_addresses"), 15);
                signal.action = Some(Action::Challenge);
                signal.evidence.push(Evidence::number(
                    "distinct_addresses",
                    addresses,
                    Some(f64::from(abuse.username_distinct_addresses)),
                ));
                signals.push(signal);
            }
        }
        self.site_spike(keys, abuse, readings, signals);
        if attempt.breached_password {
            let mut signal = Signal::new(Arc::from("cred.breached_password"), 25);
            signal.evidence.push(Evidence::text("password", "in the breached-password list"));
            signals.push(signal);
        }
    }

    /// Challenge at half the failure threshold, rate-limit at it, block and
    /// ban at twice it (failures plus attempts already refused) — always
    /// only while the failure ratio is at or above the scope's ratio. A
    /// popular scope (many successful logins: a browser version, a carrier
    /// NAT) is never banned: while it is under attack its requests are
    /// challenged instead, which a valid session or clearance answers.
    #[allow(clippy::too_many_arguments)]
    fn escalate(
        &self,
        escalation: &Escalation,
        outcomes: &Outcomes,
        keys: &LoginKeys,
        abuse: &AbuseConfig,
        readings: &CounterReadings,
        vouched: bool,
        signals: &mut Vec<Signal>,
        bans: &mut Vec<BanRequest>,
    ) {
        let Outcomes { failures, pending, successes, ratio } = *outcomes;
        // Attempts still in flight weigh as failures until their outcome
        // is known: a burst sent at once is stopped at the threshold.
        let failures = failures + pending;
        let refused = readings.number(&keys.name(escalation.scope, Counter::Refused));
        let threshold = f64::from(escalation.failures.max(1));
        let popular = successes >= f64::from(abuse.popular_successes.max(1));
        if popular {
            // The ratio gate would keep a popular scope quiet however large
            // the attack: here the failures alone count.
            if vouched || failures < threshold || ratio < 0.5 {
                return;
            }
            let mut signal = Signal::new(Arc::from("cred.popular_scope"), 20);
            signal.action = Some(Action::Challenge);
            signal.evidence = vec![
                Evidence::text("scope", escalation.scope.as_str()),
                Evidence::number("failures", failures, Some(threshold)),
                Evidence::number("successes", successes, Some(f64::from(abuse.popular_successes))),
                Evidence::number("failure_ratio", round3(ratio), None),
                Evidence::number("window_s", abuse.window_secs as f64, None),
            ];
            push_pending(&mut signal, pending);
            signals.push(signal);
            return;
        }
        if ratio < escalation.ratio || failures < threshold / 2.0 {
            return;
        }
        let step = Step::for_failures(failures, refused, threshold);
        if step == Step::Block {
            bans.push(BanRequest {
                key: keys.key(escalation.scope, Counter::Ban),
                ttl: Duration::from_secs(abuse.ban_secs),
                reason: escalation.id,
            });
        }
        let mut signal = step.signal(escalation.id, PENALTIES, abuse.window_secs);
        signal.evidence = vec![
            Evidence::number("failures", failures, Some(threshold)),
            Evidence::number("successes", successes, None),
            Evidence::number("failure_ratio", round3(ratio), Some(escalation.ratio)),
            Evidence::number("refused", refused, None),
            Evidence::number("window_s", abuse.window_secs as f64, None),
        ];
        push_pending(&mut signal, pending);
        signals.push(signal);
    }

    /// The route's recent failure ratio well above its learned baseline,
    /// or its attempt rate far above its usual rate, with enough attempts
    /// to mean something: a distributed attack in which every address
    /// tries only once or twice.
    fn site_spike(&self, keys: &LoginKeys, abuse: &AbuseConfig, readings: &CounterReadings, signals: &mut Vec<Signal>) {
        let recent_attempts = readings.number(&keys.name(Scope::Site, Counter::RecentAttempts));
        let recent_failures = readings.number(&keys.name(Scope::Site, Counter::RecentFailures));
        let baseline_attempts = readings.number(&keys.name(Scope::Site, Counter::BaselineAttempts));
        let baseline_failures = readings.number(&keys.name(Scope::Site, Counter::BaselineFailures));
        if recent_attempts < f64::from(abuse.site_min_attempts) {
            return;
        }
        let recent_ratio = recent_failures / recent_attempts;
        let baseline_ratio = if baseline_attempts > 0.0 { baseline_failures / baseline_attempts } else { 0.0 };
        // A decayed count with half-life h holds rate × h / ln 2 in the
        // steady state, so both sides turn into attempts per minute.
        let per_minute = |sum: f64, half_life: Duration| sum * std::f64::consts::LN_2 / half_life.as_secs_f64() * 60.0;
        let recent_rate = per_minute(recent_attempts, SITE_RECENT_HALF_LIFE);
        let baseline_rate = per_minute(baseline_attempts, Duration::from_secs(abuse.baseline_half_life_secs));
        // With no history yet there is nothing to surge against.
        if baseline_attempts >= f64::from(abuse.site_min_attempts)
            && recent_rate >= abuse.site_attempt_rate_factor * baseline_rate
        {
            let mut signal = Signal::new(Arc::from("cred.site_attempt_surge"), 10);
            signal.evidence = vec![
                Evidence::number(
                    "attempts_per_min",
                    round3(recent_rate),
                    Some(round3(abuse.site_attempt_rate_factor * baseline_rate)),
                ),
                Evidence::number("baseline_attempts_per_min", round3(baseline_rate), None),
            ];
            signals.push(signal);
        }
        if recent_ratio >= baseline_ratio + abuse.site_failure_ratio_rise {
            let mut signal = Signal::new(Arc::from("cred.site_failure_spike"), 15);
            signal.evidence = vec![
                Evidence::number(
                    "recent_failure_ratio",
                    round3(recent_ratio),
                    Some(round3(baseline_ratio + abuse.site_failure_ratio_rise)),
                ),
                Evidence::number("baseline_failure_ratio", round3(baseline_ratio), None),
                Evidence::number("recent_attempts", round3(recent_attempts), Some(f64::from(abuse.site_min_attempts))),
            ];
            signals.push(signal);
        }
    }

    /// After deciding: refused attempts count toward escalation; attempts
    /// let through join their account's addresses; enforced blocks set
    /// their bans.
    fn record_decision(
        &self,
        attempt: &LoginAttempt,
        abuse: &AbuseConfig,
        refused: bool,
        bans: &[BanRequest],
        plan: &mut CounterPlan,
    ) {
        let keys = &attempt.keys;
        let window = Duration::from_secs(abuse.window_secs);
        if refused {
            for scope in SCOPES {
                plan.push(CounterOp::Count { key: keys.key(scope, Counter::Refused), window, add: 1 });
            }
        } else if keys.user.is_some() {
            plan.push(CounterOp::Distinct {
                key: keys.key(Scope::User, Counter::Addresses),
                window,
                item: Some(keys.ip_item),
            });
        }
        for ban in bans {
            plan.push(CounterOp::Ban {
                key: ban.key.clone(),
                ttl: ban.ttl,
                reason: crate::store::Key::from(ban.reason),
            });
        }
    }

    /// A username reported with the outcome joins the distinct-username
    /// counts of the attempt's scopes, and the address joins the account's.
    fn count_late_username(&self, keys: &LoginKeys, abuse: &AbuseConfig, plan: &mut CounterPlan) {
        let window = Duration::from_secs(abuse.window_secs);
        for scope in [Scope::Ip, Scope::Subnet, Scope::Fingerprint] {
            plan.push(CounterOp::Distinct { key: keys.key(scope, Counter::Usernames), window, item: keys.user_item });
        }
        plan.push(CounterOp::Distinct {
            key: keys.key(Scope::User, Counter::Addresses),
            window,
            item: Some(keys.ip_item),
        });
    }

    /// After the upstream answered: the outcome goes into every scope.
    /// `resolved`: the attempt's end is counted here too, each scope's
    /// with its outcome ([`CredentialStage::abandoned`]'s counts).
    ///
    /// A scope's writes come together (its end, its outcome, its account):
    /// the store runs consecutive operations on one group with one lookup,
    /// and written a counter at a time across the scopes, the outcome took
    /// a lookup per operation. The same operations as the counter-by-counter
    /// order, and the account's and the route's after them as before.
    fn observe_outcome(
        &self,
        attempt: &LoginAttempt,
        abuse: &AbuseConfig,
        outcome: LoginOutcome,
        resolved: bool,
        plan: &mut CounterPlan,
    ) {
        let keys = &attempt.keys;
        let window = Duration::from_secs(abuse.window_secs);
        let counter = match outcome {
            LoginOutcome::Success => Counter::Successes,
            LoginOutcome::Failure => Counter::Failures,
        };
        // Successes count per account: logging in to one's own account
        // between guesses adds one success, however often. A success
        // without a username counts on its own.
        let success_item = (outcome == LoginOutcome::Success).then(|| keys.user_item.unwrap_or_else(anonymous_success));
        for scope in SCOPES {
            if resolved {
                plan.push(CounterOp::Count { key: keys.key(scope, Counter::Resolved), window: PENDING_WINDOW, add: 1 });
            }
            plan.push(CounterOp::Count { key: keys.key(scope, counter), window, add: 1 });
            if let Some(item) = success_item {
                plan.push(CounterOp::Distinct {
                    key: keys.key(scope, Counter::SuccessAccounts),
                    window,
                    item: Some(item),
                });
            }
        }
        account_and_site_outcome(keys, abuse, outcome, |op| plan.push(op));
    }
}

/// The writes of an outcome after the scopes': the account's failure and
/// the route's site-wide decayed sums, in that order.
fn account_and_site_outcome(
    keys: &LoginKeys,
    abuse: &AbuseConfig,
    outcome: LoginOutcome,
    mut push: impl FnMut(CounterOp),
) {
    let window = Duration::from_secs(abuse.window_secs);
    if keys.user.is_some() && outcome == LoginOutcome::Failure {
        push(CounterOp::Count { key: keys.key(Scope::User, Counter::Failures), window, add: 1 });
    }
    let failed = f64::from(u8::from(outcome == LoginOutcome::Failure));
    let baseline = Duration::from_secs(abuse.baseline_half_life_secs);
    for (counter, half_life, add) in [
        (Counter::RecentAttempts, SITE_RECENT_HALF_LIFE, 1.0),
        (Counter::RecentFailures, SITE_RECENT_HALF_LIFE, failed),
        (Counter::BaselineAttempts, baseline, 1.0),
        (Counter::BaselineFailures, baseline, failed),
    ] {
        push(CounterOp::Decay { key: keys.key(Scope::Site, counter), half_life, add });
    }
}

// === impl Stage ===

/// The login attempt this stage planned for the request, for stages that
/// read its counters too (the model stage's login features).
pub fn login_attempt(context: &RequestContext) -> Option<&LoginAttempt> {
    context.get::<AttemptState>().map(|state| &state.attempt)
}

/// The stage's state for one login request, kept in the request context
/// until the outcome is known.
#[derive(Debug, Clone)]
struct AttemptState {
    attempt: LoginAttempt,
    /// Bans the signals ask for, set only when a block is enforced.
    bans: Vec<BanRequest>,
}

impl Stage for CredentialStage {
    fn name(&self) -> &'static str {
        "credential"
    }

    fn plan(&self, view: &RequestView<'_>, context: &mut RequestContext, plan: &mut CounterPlan) {
        let Some(abuse) = &view.route.abuse else { return };
        if let Some(attempt) = self.attempt(view) {
            self.plan_counters(&attempt, abuse, plan);
            context.insert(AttemptState { attempt, bans: Vec::new() });
        }
    }

    fn detect(
        &self,
        view: &RequestView<'_>,
        context: &mut RequestContext,
        readings: &CounterReadings,
        signals: &mut Vec<Signal>,
    ) {
        let vouched = context.get::<Vouched>().is_some();
        if let (Some(state), Some(abuse)) = (context.get_mut::<AttemptState>(), &view.route.abuse) {
            let mut bans = Vec::new();
            self.detect_attempt(&state.attempt, abuse, readings, vouched, signals, &mut bans);
            state.bans = bans;
        }
    }

    fn after_decision(
        &self,
        view: &RequestView<'_>,
        context: &mut RequestContext,
        decided: &Decided<'_>,
        writes: &mut CounterPlan,
    ) {
        if let (Some(state), Some(abuse)) = (context.get::<AttemptState>(), &view.route.abuse) {
            let enforced_bans = if decided.verdict.enforced.action == Action::Block { &state.bans[..] } else { &[] };
            self.record_decision(&state.attempt, abuse, decided.refused, enforced_bans, writes);
        }
    }

    fn observe(&self, route: &Route, context: &RequestContext, observed: &Observed<'_>, writes: &mut CounterPlan) {
        let (Some(state), Some(abuse), Some(outcome)) = (context.get::<AttemptState>(), &route.abuse, observed.login)
        else {
            // The request has ended: the attempt is no longer in flight.
            self.abandoned(route, context, writes);
            return;
        };
        match observed.username {
            // Learned only now: count it where the request would have.
            Some(username) if state.attempt.keys.user.is_none() => {
                self.abandoned(route, context, writes);
                let keys = state.attempt.keys.with_user(&self.hasher, username);
                self.count_late_username(&keys, abuse, writes);
                let attempt = LoginAttempt { keys, breached_password: false };
                self.observe_outcome(&attempt, abuse, outcome, false, writes);
            }
            // The attempt's end counted with its outcome, scope by scope.
            _ => self.observe_outcome(&state.attempt, abuse, outcome, true, writes),
        }
    }

    /// The attempt goes to the upstream: in flight until its request ends.
    fn forwarded(&self, route: &Route, context: &RequestContext, writes: &mut CounterPlan) {
        if let (Some(state), Some(_)) = (context.get::<AttemptState>(), &route.abuse) {
            for scope in SCOPES {
                let key = state.attempt.keys.key(scope, Counter::Forwarded);
                writes.push(CounterOp::Count { key, window: PENDING_WINDOW, add: 1 });
            }
        }
    }

    /// The request ended (answered or not): the attempt is no longer in
    /// flight.
    fn abandoned(&self, route: &Route, context: &RequestContext, writes: &mut CounterPlan) {
        if let (Some(state), Some(_)) = (context.get::<AttemptState>(), &route.abuse) {
            for scope in SCOPES {
                let key = state.attempt.keys.key(scope, Counter::Resolved);
                writes.push(CounterOp::Count { key, window: PENDING_WINDOW, add: 1 });
            }
        }
    }
}

/// What a scope's counters say about its logins.
#[derive(Debug, Clone, Copy)]
struct Outcomes {
    failures: f64,
    /// Attempts let through whose request has not ended yet.
    pending: f64,
    /// Successful logins, counted per distinct account.
    successes: f64,
    /// Failures (in-flight attempts counted as failures) over attempts.
    ratio: f64,
}

fn outcomes(readings: &CounterReadings, keys: &LoginKeys, scope: Scope) -> Outcomes {
    let failures = readings.number(&keys.name(scope, Counter::Failures));
    let logins = readings.number(&keys.name(scope, Counter::Successes));
    let accounts = readings.number(&keys.name(scope, Counter::SuccessAccounts));
    // Counters written before accounts were counted have no sketch: their
    // plain count stands until the window passes.
    let successes = if accounts > 0.0 { accounts.min(logins) } else { logins };
    let pending = (readings.number(&keys.name(scope, Counter::Forwarded))
        - readings.number(&keys.name(scope, Counter::Resolved)))
    .max(0.0)
    .floor();
    let counted = failures + pending;
    let attempts = counted + successes;
    Outcomes { failures, pending, successes, ratio: if attempts > 0.0 { counted / attempts } else { 0.0 } }
}

/// The in-flight attempts behind a signal, when there are any (sequential
/// traffic, and so replay, never has them).
fn push_pending(signal: &mut Signal, pending: f64) {
    if pending > 0.0 {
        signal.evidence.push(Evidence::number("pending", pending, None));
    }
}

/// A sketch item for a success whose username is not known: unique, so
/// that it counts as an account of its own.
fn anonymous_success() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    crate::store::sketch::item_hash(&[b"anonymous success".as_slice(), &n.to_le_bytes()].concat())
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// The outcome's writes as they were before a scope's came together:
    /// counter by counter across the scopes.
    fn outcome_as_before(keys: &LoginKeys, abuse: &AbuseConfig, outcome: LoginOutcome) -> Vec<CounterOp> {
        let window = Duration::from_secs(abuse.window_secs);
        let mut ops = Vec::new();
        for scope in SCOPES {
            ops.push(CounterOp::Count { key: keys.key(scope, Counter::Resolved), window: PENDING_WINDOW, add: 1 });
        }
        let counter = if outcome == LoginOutcome::Success { Counter::Successes } else { Counter::Failures };
        for scope in SCOPES {
            ops.push(CounterOp::Count { key: keys.key(scope, counter), window, add: 1 });
        }
        if outcome == LoginOutcome::Success {
            for scope in SCOPES {
                ops.push(CounterOp::Distinct {
                    key: keys.key(scope, Counter::SuccessAccounts),
                    window,
                    item: keys.user_item,
                });
            }
        }
        // The account's and the route's writes did not change order.
        account_and_site_outcome(keys, abuse, outcome, |op| ops.push(op));
        ops
    }

    /// An outcome writes the operations it always wrote, each scope's
    /// together (one store lookup per scope), the account's and the
    /// route's after them in the same order as before.
    #[test]
    fn an_outcome_writes_the_same_operations_scope_by_scope() {
        let config = Config::default();
        let hasher = KeyHasher::from_config(&config);
        let stage = CredentialStage::from_config(&config, hasher.clone()).expect("a stage");
        let abuse = AbuseConfig::default();
        for outcome in [LoginOutcome::Success, LoginOutcome::Failure] {
            let keys = LoginKeys::new(&hasher, "login", "203.0.113.7".parse().unwrap(), "11po", Some("alice"));
            let attempt = LoginAttempt { keys, breached_password: false };
            let mut plan = CounterPlan::default();
            stage.observe_outcome(&attempt, &abuse, outcome, true, &mut plan);
            let before = outcome_as_before(&attempt.keys, &abuse, outcome);
            let text = |ops: &[CounterOp]| {
                let mut listed: Vec<String> = ops.iter().map(|op| format!("{op:?}")).collect();
                listed.sort();
                listed
            };
            assert_eq!(text(plan.ops()), text(&before), "{outcome:?}");
            let scoped = if outcome == LoginOutcome::Success { 12 } else { 8 };
            assert_eq!(plan.ops()[scoped..], before[scoped..], "the account's and the route's, in order");
            for (index, chunk) in plan.ops()[..scoped].chunks(scoped / SCOPES.len()).enumerate() {
                let group = |op: &CounterOp| op.key().rsplit_once(':').map(|(group, _)| group.to_string());
                assert!(chunk.iter().all(|op| group(op) == group(&chunk[0])), "scope {index}: {chunk:?}");
            }
            // Without the end counted (a late username), the same less the ends.
            let mut unresolved = CounterPlan::default();
            stage.observe_outcome(&attempt, &abuse, outcome, false, &mut unresolved);
            let ended: Vec<&CounterOp> = plan.ops().iter().filter(|op| op.key().ends_with(":r")).collect();
            assert_eq!(ended.len(), SCOPES.len());
            assert_eq!(unresolved.ops().len(), plan.ops().len() - SCOPES.len());
        }
        // An anonymous success counts one account of its own, the same in every scope.
        let keys = LoginKeys::new(&hasher, "login", "203.0.113.7".parse().unwrap(), "11po", None);
        let attempt = LoginAttempt { keys, breached_password: false };
        let mut plan = CounterPlan::default();
        stage.observe_outcome(&attempt, &abuse, LoginOutcome::Success, true, &mut plan);
        let items = plan.distinct_items();
        assert_eq!(items.len(), SCOPES.len());
        assert!(items.iter().all(|item| item.is_some() && *item == items[0]), "{items:?}");
    }

    /// The operations the stage plans, key by key, as looked up by scope
    /// and counter one at a time: the order the store runs them in (and
    /// so when it prunes) is the order planned.
    #[test]
    fn planned_operations_are_each_scope_and_counter_in_order() {
        let config = Config::default();
        let hasher = KeyHasher::from_config(&config);
        let stage = CredentialStage::from_config(&config, hasher.clone()).expect("a stage");
        let abuse = AbuseConfig::default();
        for username in [Some("alice"), None] {
            let keys = LoginKeys::new(&hasher, "login", "203.0.113.7".parse().unwrap(), "11po", username);
            let attempt = LoginAttempt { keys, breached_password: false };
            let mut plan = CounterPlan::default();
            stage.plan_counters(&attempt, &abuse, &mut plan);
            let keys = &attempt.keys;
            let window = Duration::from_secs(abuse.window_secs);
            let mut expected = Vec::new();
            for scope in SCOPES {
                expected.push(CounterOp::BanCheck { key: keys.key(scope, Counter::Ban) });
                for counter in [Counter::Failures, Counter::Successes, Counter::Refused] {
                    expected.push(CounterOp::Count { key: keys.key(scope, counter), window, add: 0 });
                }
                expected.push(CounterOp::Distinct {
                    key: keys.key(scope, Counter::Usernames),
                    window,
                    item: keys.user_item,
                });
                for counter in [Counter::Forwarded, Counter::Resolved] {
                    expected.push(CounterOp::Count { key: keys.key(scope, counter), window: PENDING_WINDOW, add: 0 });
                }
                expected.push(CounterOp::Distinct {
                    key: keys.key(scope, Counter::SuccessAccounts),
                    window,
                    item: None,
                });
            }
            if keys.user.is_some() {
                expected.push(CounterOp::Count { key: keys.key(Scope::User, Counter::Failures), window, add: 0 });
                expected.push(CounterOp::DistinctIfHeld {
                    key: keys.key(Scope::User, Counter::Addresses),
                    window,
                    item: keys.ip_item,
                });
            }
            let baseline = Duration::from_secs(abuse.baseline_half_life_secs);
            for (counter, half_life) in [
                (Counter::RecentAttempts, SITE_RECENT_HALF_LIFE),
                (Counter::RecentFailures, SITE_RECENT_HALF_LIFE),
                (Counter::BaselineAttempts, baseline),
                (Counter::BaselineFailures, baseline),
            ] {
                expected.push(CounterOp::Decay { key: keys.key(Scope::Site, counter), half_life, add: 0.0 });
            }
            assert_eq!(plan.ops(), &expected[..], "username {username:?}");
        }
    }
}
