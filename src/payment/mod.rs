//! Card testing: how payment attempts behave over time.
//!
//! Card testers (carders) validate stolen card numbers with many small
//! authorisations or "add card" calls, spread over addresses, accounts and
//! sessions; the merchant pays for every decline and its authorisation
//! rate suffers. The attack has the shape of credential stuffing — many
//! secrets per source, most attempts failing — so this stage mirrors the
//! credential stage: at request time it reads the counters of every scope
//! the attempt belongs to (address, subnet, fingerprint, account, session,
//! the card, the route), and once the upstream has answered it adds the
//! outcome (approved or declined) to them.
//!
//! Every escalation is gated on a decline *ratio*: a shared address or a
//! popular browser whose payments mostly go through is never punished for
//! its volume alone. A scope is first given a step-up hint (`challenge`:
//! the application can ask for 3-D Secure), then 429, then blocked and
//! banned. Partners are not judged here (the stage's audience is
//! visitors); their quota still applies.
//!
//! Card numbers never leave the request: the card is reduced to a keyed
//! hash, its BIN and its last four digits as soon as it is read
//! ([`card`]), and only the hash reaches the store.

mod card;
mod keys;
mod outcome;

use std::sync::Arc;
use std::time::Duration;

pub use card::{Card, PaymentFacts, luhn};
pub use keys::{Counter, PaymentKeys, SOURCES, Scope};
pub use outcome::{PaymentOutcome, classify};

use crate::config::{PaymentAbuseConfig, PaymentConfig};
use crate::detect::escalation::{Penalties, Step};
use crate::detect::{Decided, Observed, RequestContext, Stage, Vouched};
use crate::keyed_hash::KeyHasher;
use crate::routes::Route;
use crate::signal::{Action, Evidence, Signal};
use crate::store::{CounterOp, CounterPlan, CounterReadings, Key};
use crate::view::RequestView;

/// A ban in force on one of the attempt's scopes.
pub const BANNED_ID: &str = "pay.banned";
/// Declines of one source (address, subnet, fingerprint, account, session).
pub const DECLINE_RATIO_ID: &str = "pay.decline_ratio";
/// Many distinct cards from one source, mostly declined.
pub const DISTINCT_CARDS_ID: &str = "pay.distinct_cards";
/// One card on many accounts.
pub const ACCOUNTS_PER_CARD_ID: &str = "pay.accounts_per_card";
/// One card tried again and again (expiry and CVV guessing).
pub const CARD_VELOCITY_ID: &str = "pay.card_velocity";
/// Repeated small amounts from one source, mostly declined.
pub const SMALL_AMOUNTS_ID: &str = "pay.small_amounts";
/// Many distinct cards of one BIN from one source, mostly declined.
pub const BIN_CONCENTRATION_ID: &str = "pay.bin_concentration";
/// The route's decline ratio well above its learned baseline.
pub const SITE_DECLINE_SPIKE_ID: &str = "pay.site_decline_spike";

/// Every detection id of the stage (docs/payments.md documents each).
pub const DETECTION_IDS: [&str; 8] = [
    BANNED_ID,
    DECLINE_RATIO_ID,
    DISTINCT_CARDS_ID,
    ACCOUNTS_PER_CARD_ID,
    CARD_VELOCITY_ID,
    SMALL_AMOUNTS_ID,
    BIN_CONCENTRATION_ID,
    SITE_DECLINE_SPIKE_ID,
];

/// Half-life of the "last minute" side of the site-wide comparison.
const SITE_RECENT_HALF_LIFE: Duration = Duration::from_secs(60);

/// Scopes many clients share: a valid session or clearance cookie
/// answers for the request there.
const SHARED: [Scope; 4] = [Scope::Subnet, Scope::Net, Scope::Fingerprint, Scope::FingerprintBin];

/// What the stage knows about one payment attempt, kept in the request
/// context until the outcome is known. Holds no card number.
#[derive(Debug, Clone)]
pub struct PaymentAttempt {
    pub keys: PaymentKeys,
    pub facts: PaymentFacts,
}

/// A ban a signal asks for, set only when the block is enforced.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BanRequest {
    key: Key,
    reason: &'static str,
}

#[derive(Debug, Clone)]
struct AttemptState {
    attempt: PaymentAttempt,
    bans: Vec<BanRequest>,
}

#[derive(Debug, Clone)]
pub struct PaymentStage {
    hasher: KeyHasher,
}

/// Declines, approvals and the decline ratio of one scope.
#[derive(Debug, Clone, Copy)]
struct Outcomes {
    declines: f64,
    approvals: f64,
    ratio: f64,
}

/// What each escalation step weighs in the score on payment routes: the
/// step is demanded; the penalties only colour the score, and several
/// step-up hints together stay a step-up (not a block).
const PENALTIES: Penalties = Penalties { challenge: 10, rate_limit: 20, block: 70 };

impl PaymentStage {
    pub fn new(hasher: KeyHasher) -> Self {
        PaymentStage { hasher }
    }

    /// The attempt's facts and keys, on payment routes.
    pub fn attempt(&self, view: &RequestView<'_>, session: Option<&str>) -> Option<PaymentAttempt> {
        let config = view.route.payment.as_ref()?;
        let facts = PaymentFacts::read(config, &self.hasher, view.headers, view.body);
        let keys = PaymentKeys::new(
            &self.hasher,
            &view.route.name,
            view.client_ip,
            view.counter_fingerprint(),
            session,
            &facts,
        );
        Some(PaymentAttempt { keys, facts })
    }

    /// Counter operations at request time: read what is known, and count
    /// the card, the account, the attempt and a small amount as seen.
    fn plan_counters(&self, attempt: &PaymentAttempt, config: &PaymentConfig, plan: &mut CounterPlan) {
        let abuse = &config.abuse;
        let keys = &attempt.keys;
        let window = Duration::from_secs(abuse.window_secs);
        let card = attempt.facts.card.as_ref();
        let small = is_small(&attempt.facts, abuse);
        let mut push = |scope: Scope, counter: Counter, op: &dyn Fn(Key) -> CounterOp| {
            if let Some(key) = keys.key(scope, counter) {
                plan.push(op(key.clone()));
            }
        };
        let count = |add: u64| move |key| CounterOp::Count { key, window, add };
        for scope in SOURCES {
            push(scope, Counter::Ban, &|key| CounterOp::BanCheck { key });
            for counter in [Counter::Declines, Counter::Approvals, Counter::Refused] {
                push(scope, counter, &count(0));
            }
            push(scope, Counter::SmallAmounts, &count(u64::from(small)));
            push(scope, Counter::Cards, &|key| CounterOp::Distinct { key, window, item: card.map(|c| c.item) });
        }
        push(Scope::Card, Counter::Ban, &|key| CounterOp::BanCheck { key });
        push(Scope::Card, Counter::Attempts, &count(1));
        push(Scope::Card, Counter::Declines, &count(0));
        push(Scope::Card, Counter::Approvals, &count(0));
        let account = attempt.facts.account.as_ref().map(|(_, item)| *item);
        push(Scope::Card, Counter::Accounts, &|key| CounterOp::Distinct { key, window, item: account });
        for scope in [Scope::IpBin, Scope::FingerprintBin] {
            push(scope, Counter::Cards, &|key| CounterOp::Distinct { key, window, item: card.map(|c| c.item) });
        }
        let baseline = Duration::from_secs(abuse.baseline_half_life_secs);
        for (counter, half_life) in [
            (Counter::RecentAttempts, SITE_RECENT_HALF_LIFE),
            (Counter::RecentDeclines, SITE_RECENT_HALF_LIFE),
            (Counter::BaselineAttempts, baseline),
            (Counter::BaselineDeclines, baseline),
        ] {
            push(Scope::Site, counter, &|key| CounterOp::Decay { key, half_life, add: 0.0 });
        }
    }

    /// Signals from the readings, and the bans an enforced block sets.
    fn detect_attempt(
        &self,
        attempt: &PaymentAttempt,
        abuse: &PaymentAbuseConfig,
        readings: &CounterReadings,
        vouched: bool,
        signals: &mut Vec<Signal>,
        bans: &mut Vec<BanRequest>,
    ) {
        let keys = &attempt.keys;
        let skipped = |scope: Scope| vouched && SHARED.contains(&scope);
        let read = |scope: Scope, counter: Counter| keys.key(scope, counter).map_or(0.0, |key| readings.number(key));
        let outcomes = |scope: Scope| {
            let (declines, approvals) = (read(scope, Counter::Declines), read(scope, Counter::Approvals));
            let total = declines + approvals;
            Outcomes { declines, approvals, ratio: if total > 0.0 { declines / total } else { 0.0 } }
        };
        let card_evidence = |signal: &mut Signal| {
            if let Some(card) = &attempt.facts.card {
                signal.evidence.push(Evidence::text("bin", card.bin.as_str()));
                signal.evidence.push(Evidence::text("last4", card.last4.as_str()));
            }
        };

        // A ban in force decides alone.
        for scope in SOURCES.into_iter().chain([Scope::Card]).filter(|scope| !skipped(*scope)) {
            if let Some(left) = keys.key(scope, Counter::Ban).and_then(|key| readings.ban(key)) {
                let mut signal = Signal::new(Arc::from(BANNED_ID), 79);
                signal.action = Some(Action::Block);
                signal.evidence.push(Evidence::text("scope", scope.as_str()));
                signal.evidence.push(Evidence::number("ban_left_s", left.as_secs_f64().ceil(), None));
                if scope == Scope::Card {
                    card_evidence(&mut signal);
                }
                signals.push(signal);
                return;
            }
        }

        let popular = |o: &Outcomes| o.approvals >= f64::from(abuse.popular_approvals.max(1));
        let window = abuse.window_secs as f64;
        // One signal per detection id: the scopes of one client (its
        // address, account, session) climb together, and their penalties
        // must not add up to a block where each asks only for a step-up.
        // The most severe scope's signal stands for the id; every scope
        // that reached a block is banned.
        let mut found: Vec<(Step, Signal)> = Vec::new();
        let mut escalate = |scope: Scope, id: &'static str, step: Step, evidence: Vec<Evidence>, popular: bool| {
            // A scope shared by customers is asked to step up, never refused.
            let step = if popular { Step::Challenge } else { step };
            if step == Step::Block
                && let Some(key) = keys.key(scope, Counter::Ban)
            {
                bans.push(BanRequest { key: key.clone(), reason: id });
            }
            let mut signal = step.signal(id, PENALTIES, abuse.window_secs);
            signal.evidence.push(Evidence::text("scope", scope.as_str()));
            signal.evidence.extend(evidence);
            signal.evidence.push(Evidence::number("window_s", window, None));
            match found.iter_mut().find(|(_, existing)| &*existing.id == id) {
                Some(existing) if existing.0 < step => *existing = (step, signal),
                Some(_) => {}
                None => found.push((step, signal)),
            }
        };

        // Declines per source: challenge at half the threshold, 429 at it,
        // block and ban at twice it (declines plus refused attempts).
        let min_ratio = abuse.distinct_cards_min_decline_ratio;
        for (scope, threshold, ratio) in [
            (Scope::Ip, abuse.ip_declines, abuse.ip_decline_ratio),
            (Scope::Subnet, abuse.subnet_declines, abuse.subnet_decline_ratio),
            (Scope::Net, abuse.subnet_declines, abuse.subnet_decline_ratio),
            (Scope::Fingerprint, abuse.fingerprint_declines, abuse.fingerprint_decline_ratio),
            (Scope::Account, abuse.account_declines, abuse.account_decline_ratio),
            (Scope::Session, abuse.session_declines, abuse.session_decline_ratio),
        ] {
            if skipped(scope) || !keys.has(scope) {
                continue;
            }
            let o = outcomes(scope);
            let refused = read(scope, Counter::Refused);
            let threshold = f64::from(threshold.max(1));
            if o.ratio < ratio || o.declines < threshold / 2.0 {
                continue;
            }
            let step = Step::for_failures(o.declines, refused, threshold);
            let evidence = vec![
                Evidence::number("declines", o.declines, Some(threshold)),
                Evidence::number("approvals", o.approvals, None),
                Evidence::number("decline_ratio", round3(o.ratio), Some(ratio)),
                Evidence::number("refused", refused, None),
            ];
            escalate(scope, DECLINE_RATIO_ID, step, evidence, popular(&o));
        }

        // Many cards from one source, mostly declined: challenge at the
        // threshold, 429 at one and a half times it, block and ban at twice it.
        for (scope, threshold) in [
            (Scope::Ip, abuse.ip_distinct_cards),
            (Scope::Fingerprint, abuse.fingerprint_distinct_cards),
            (Scope::Account, abuse.account_distinct_cards),
            (Scope::Session, abuse.session_distinct_cards),
        ] {
            if skipped(scope) || !keys.has(scope) {
                continue;
            }
            let cards = read(scope, Counter::Cards);
            let o = outcomes(scope);
            let threshold = f64::from(threshold.max(1));
            if cards < threshold || o.ratio < min_ratio || o.declines < 2.0 {
                continue;
            }
            let step = if cards >= 2.0 * threshold {
                Step::Block
            } else if cards >= 1.5 * threshold {
                Step::RateLimit
            } else {
                Step::Challenge
            };
            let evidence = vec![
                Evidence::number("distinct_cards", cards, Some(threshold)),
                Evidence::number("decline_ratio", round3(o.ratio), Some(min_ratio)),
            ];
            escalate(scope, DISTINCT_CARDS_ID, step, evidence, popular(&o));
        }

        // Small amounts, repeated and mostly declined: probes.
        if abuse.small_amount_below > 0.0 {
            for scope in [Scope::Ip, Scope::Fingerprint, Scope::Account] {
                if skipped(scope) || !keys.has(scope) {
                    continue;
                }
                let small = read(scope, Counter::SmallAmounts);
                let o = outcomes(scope);
                let threshold = f64::from(abuse.small_amount_attempts.max(1));
                if small < threshold || o.ratio < min_ratio || o.declines < 2.0 {
                    continue;
                }
                let evidence = vec![
                    Evidence::number("small_amounts", small, Some(threshold)),
                    Evidence::number("below", abuse.small_amount_below, None),
                    Evidence::number("decline_ratio", round3(o.ratio), Some(min_ratio)),
                ];
                escalate(scope, SMALL_AMOUNTS_ID, Step::RateLimit, evidence, popular(&o));
            }
        }

        // Many cards of one BIN from one source, mostly declined: numbers
        // generated in an issuer's range. Challenge at the threshold, 429
        // at twice it.
        for (scope, parent) in [(Scope::IpBin, Scope::Ip), (Scope::FingerprintBin, Scope::Fingerprint)] {
            if skipped(scope) || !keys.has(scope) {
                continue;
            }
            let cards = read(scope, Counter::Cards);
            let o = outcomes(parent);
            let threshold = f64::from(abuse.bin_distinct_cards.max(1));
            if cards < threshold || o.ratio < min_ratio || o.declines < 2.0 {
                continue;
            }
            let mut evidence = vec![
                Evidence::number("distinct_cards_in_bin", cards, Some(threshold)),
                Evidence::number("decline_ratio", round3(o.ratio), Some(min_ratio)),
            ];
            if let Some(card) = &attempt.facts.card {
                evidence.push(Evidence::text("bin", card.bin.as_str()));
            }
            let step = if cards >= 2.0 * threshold { Step::RateLimit } else { Step::Challenge };
            escalate(scope, BIN_CONCENTRATION_ID, step, evidence, popular(&o));
        }

        // The card itself: on many accounts, or tried again and again.
        if keys.has(Scope::Card) {
            let o = outcomes(Scope::Card);
            let declined = o.declines >= 1.0 && o.ratio >= min_ratio;
            let accounts = read(Scope::Card, Counter::Accounts);
            let threshold = f64::from(abuse.card_accounts.max(1));
            if accounts >= threshold {
                let step = if declined { Step::Block } else { Step::Challenge };
                let mut evidence = vec![
                    Evidence::number("distinct_accounts", accounts, Some(threshold)),
                    Evidence::number("card_declines", o.declines, None),
                ];
                if let Some(card) = &attempt.facts.card {
                    evidence.push(Evidence::text("bin", card.bin.as_str()));
                    evidence.push(Evidence::text("last4", card.last4.as_str()));
                }
                escalate(Scope::Card, ACCOUNTS_PER_CARD_ID, step, evidence, false);
            }
            let attempts = read(Scope::Card, Counter::Attempts);
            let threshold = f64::from(abuse.card_attempts.max(1));
            if attempts >= threshold {
                let step = match (declined && o.declines >= 2.0, attempts >= 2.0 * threshold) {
                    (true, true) => Step::Block,
                    (true, false) => Step::RateLimit,
                    (false, _) => Step::Challenge,
                };
                let mut evidence = vec![
                    Evidence::number("attempts", attempts, Some(threshold)),
                    Evidence::number("card_declines", o.declines, None),
                ];
                if let Some(card) = &attempt.facts.card {
                    evidence.push(Evidence::text("bin", card.bin.as_str()));
                    evidence.push(Evidence::text("last4", card.last4.as_str()));
                }
                escalate(Scope::Card, CARD_VELOCITY_ID, step, evidence, false);
            }
        }
        signals.extend(found.into_iter().map(|(_, signal)| signal));
        self.site_spike(keys, abuse, readings, signals);
    }

    /// The route's decline ratio of the last minute well above its
    /// learned baseline, with enough attempts to mean something: a
    /// distributed attack in which every source tries once or twice.
    fn site_spike(
        &self,
        keys: &PaymentKeys,
        abuse: &PaymentAbuseConfig,
        readings: &CounterReadings,
        signals: &mut Vec<Signal>,
    ) {
        let read = |counter: Counter| keys.key(Scope::Site, counter).map_or(0.0, |key| readings.number(key));
        let recent_attempts = read(Counter::RecentAttempts);
        if recent_attempts < f64::from(abuse.site_min_attempts) {
            return;
        }
        let recent_ratio = read(Counter::RecentDeclines) / recent_attempts;
        let baseline_attempts = read(Counter::BaselineAttempts);
        let baseline_ratio =
            if baseline_attempts > 0.0 { read(Counter::BaselineDeclines) / baseline_attempts } else { 0.0 };
        if recent_ratio >= baseline_ratio + abuse.site_decline_ratio_rise {
            let mut signal = Signal::new(Arc::from(SITE_DECLINE_SPIKE_ID), 15);
            signal.evidence = vec![
                Evidence::number(
                    "recent_decline_ratio",
                    round3(recent_ratio),
                    Some(round3(baseline_ratio + abuse.site_decline_ratio_rise)),
                ),
                Evidence::number("baseline_decline_ratio", round3(baseline_ratio), None),
                Evidence::number("recent_attempts", round3(recent_attempts), Some(f64::from(abuse.site_min_attempts))),
            ];
            signals.push(signal);
        }
    }

    /// After the upstream answered: the outcome goes into every scope.
    fn observe_outcome(
        &self,
        attempt: &PaymentAttempt,
        abuse: &PaymentAbuseConfig,
        outcome: PaymentOutcome,
        plan: &mut CounterPlan,
    ) {
        let keys = &attempt.keys;
        let window = Duration::from_secs(abuse.window_secs);
        let counter = match outcome {
            PaymentOutcome::Approved => Counter::Approvals,
            PaymentOutcome::Declined => Counter::Declines,
        };
        for scope in SOURCES.into_iter().chain([Scope::Card]) {
            if let Some(key) = keys.key(scope, counter) {
                plan.push(CounterOp::Count { key: key.clone(), window, add: 1 });
            }
        }
        let declined = f64::from(u8::from(outcome == PaymentOutcome::Declined));
        let baseline = Duration::from_secs(abuse.baseline_half_life_secs);
        for (counter, half_life, add) in [
            (Counter::RecentAttempts, SITE_RECENT_HALF_LIFE, 1.0),
            (Counter::RecentDeclines, SITE_RECENT_HALF_LIFE, declined),
            (Counter::BaselineAttempts, baseline, 1.0),
            (Counter::BaselineDeclines, baseline, declined),
        ] {
            if let Some(key) = keys.key(Scope::Site, counter) {
                plan.push(CounterOp::Decay { key: key.clone(), half_life, add });
            }
        }
    }
}

/// The payment attempt this stage planned for the request.
pub fn payment_attempt(context: &RequestContext) -> Option<&PaymentAttempt> {
    context.get::<AttemptState>().map(|state| &state.attempt)
}

impl Stage for PaymentStage {
    fn name(&self) -> &'static str {
        "payment"
    }

    fn plan(&self, view: &RequestView<'_>, context: &mut RequestContext, plan: &mut CounterPlan) {
        let Some(config) = &view.route.payment else { return };
        // The session stage (before this one) read the session cookie.
        let session = context
            .get::<crate::session::SessionFacts>()
            .and_then(|facts| facts.session.valid())
            .map(crate::session::token::Token::id_hex);
        if let Some(attempt) = self.attempt(view, session.as_deref()) {
            self.plan_counters(&attempt, config, plan);
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
        if let (Some(state), Some(config)) = (context.get_mut::<AttemptState>(), &view.route.payment) {
            let mut bans = Vec::new();
            self.detect_attempt(&state.attempt, &config.abuse, readings, vouched, signals, &mut bans);
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
        let (Some(state), Some(config)) = (context.get::<AttemptState>(), &view.route.payment) else { return };
        let abuse = &config.abuse;
        if decided.refused {
            let window = Duration::from_secs(abuse.window_secs);
            for scope in SOURCES {
                if let Some(key) = state.attempt.keys.key(scope, Counter::Refused) {
                    writes.push(CounterOp::Count { key: key.clone(), window, add: 1 });
                }
            }
        }
        if decided.verdict.enforced.action == Action::Block {
            for ban in &state.bans {
                writes.push(CounterOp::Ban {
                    key: ban.key.clone(),
                    ttl: Duration::from_secs(abuse.ban_secs),
                    reason: Key::from(ban.reason),
                });
            }
        }
    }

    fn observe(&self, route: &Route, context: &RequestContext, observed: &Observed<'_>, writes: &mut CounterPlan) {
        let (Some(state), Some(config)) = (context.get::<AttemptState>(), &route.payment) else { return };
        if let Some(outcome) = classify(config, observed.response) {
            self.observe_outcome(&state.attempt, &config.abuse, outcome, writes);
        }
    }
}

/// Whether the attempt's amount is under the configured probe threshold.
fn is_small(facts: &PaymentFacts, abuse: &PaymentAbuseConfig) -> bool {
    abuse.small_amount_below > 0.0 && facts.amount.is_some_and(|amount| amount < abuse.small_amount_below)
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}
