//! Session continuity, the served proof-of-work challenge and the
//! site-wide under-attack state (docs/session.md).
//!
//! Nothing in a single copied request tells a script from a person; what
//! a browser does across requests does, and so does a test a browser
//! passes and a plain script does not. This stage:
//!
//! - sets a small signed **session cookie** on HTML page loads it forwards,
//!   bound to the client's address prefix and browser, and counts per
//!   session the page loads, sub-resource loads, distinct usernames tried
//!   and failures;
//! - serves the **challenge** (an interstitial page running a proof of
//!   work) when the decision is `challenge` on a browser route, and sets a
//!   signed **clearance cookie** when it is solved — honoured until it is
//!   used for too many usernames;
//! - keeps a site-wide **under-attack** state, entered when logins spike
//!   or when many login attempts arrive without a session, during which
//!   page loads without clearance and logins without a session or
//!   clearance are challenged, whatever their fingerprint or address.
//!
//! The stage's counters live in their own shard (`session`), because a
//! session's page loads and its login attempt fall under different routes.

mod casing;
pub mod challenge;
pub mod token;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;

pub use casing::odd_name;
use token::{Rejection, Signer, Token, TokenKind};

use crate::clock::Nanos;
use crate::config::{Config, Invalid, SessionConfig};
use crate::detect::{Decided, Observed, RequestContext, Stage, Vouched};
use crate::keyed_hash::KeyHasher;
use crate::routes::{Route, RouteProfile};
use crate::signal::{Action, Evidence, Signal};
use crate::store::{CounterOp, CounterPlan, CounterReadings, Key};
use crate::view::RequestView;

/// Half-life of the count of login attempts without a session.
const BARE_HALF_LIFE: Duration = Duration::from_secs(60);
/// Credential signals that put the site under attack.
const ATTACK_TRIGGERS: [&str; 3] = ["cred.site_failure_spike", "cred.site_attempt_surge", "cred.popular_scope"];
const ATTACK_KEY: &str = "session:attack";
const BARE_KEY: &str = "session:bare";

/// How a route answers a `challenge` decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeMode {
    /// Browsers get the interstitial page; other clients the header.
    Interstitial,
    /// Forwarded with `X-Palisade-Action: challenge` (the application steps up).
    Header,
    /// 429 with a machine-readable `X-Palisade-Challenge` header.
    Status,
    Off,
}

impl ChallengeMode {
    const NAMES: [&'static str; 4] = ["interstitial", "header", "status", "off"];

    fn parse(text: &str) -> Option<Self> {
        match text {
            "interstitial" => Some(ChallengeMode::Interstitial),
            "header" => Some(ChallengeMode::Header),
            "status" => Some(ChallengeMode::Status),
            "off" => Some(ChallengeMode::Off),
            _ => None,
        }
    }
}

/// What kind of request this is, for the session's bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// A page load: GET/HEAD of an HTML document.
    Navigation,
    /// Another GET from a page (styles, scripts, images, fetches).
    SubResource,
    /// An attempt on a login route.
    Login,
    Other,
}

/// What kind of request this is, and whether it looks like a browser's
/// (accepts HTML, or sends `Sec-Fetch-*`): it can be shown the
/// interstitial. The model's browsing features count by the same rule.
pub fn request_kind(view: &RequestView<'_>) -> (RequestKind, bool) {
    // Accept by its constant: a name given as text is parsed and matched
    // against the standard names first.
    let accept = view.headers.get(http::header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let accepts_html = accept.contains("text/html");
    let fetch_mode = view.headers.get("sec-fetch-mode").and_then(|v| v.to_str().ok()).unwrap_or("");
    let browser = accepts_html || !fetch_mode.is_empty();
    let is_get = view.method == http::Method::GET || view.method == http::Method::HEAD;
    let kind = if view.route.login.is_some() {
        RequestKind::Login
    } else if is_get && (fetch_mode == "navigate" || (fetch_mode.is_empty() && accepts_html)) {
        RequestKind::Navigation
    } else if is_get {
        RequestKind::SubResource
    } else {
        RequestKind::Other
    };
    (kind, browser)
}

/// A cookie as presented: valid (and its token), absent, or refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented {
    Valid(Token),
    Missing,
    Refused(Rejection),
}

impl Presented {
    pub fn valid(&self) -> Option<&Token> {
        match self {
            Presented::Valid(token) => Some(token),
            _ => None,
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Presented::Valid(_) => "valid",
            Presented::Missing => "missing",
            Presented::Refused(rejection) => rejection.as_str(),
        }
    }
}

/// What the stage knows about one request before the store is read.
#[derive(Debug, Clone)]
pub struct SessionFacts {
    pub kind: RequestKind,
    /// The request looks like a browser's (accepts HTML, or sends
    /// `Sec-Fetch-*`): it can be shown the interstitial.
    pub browser: bool,
    pub binding: [u8; 8],
    pub session: Presented,
    pub clearance: Presented,
    now_secs: u32,
    user_item: Option<u64>,
    /// Where to send the browser after a challenge.
    return_to: String,
    /// The header name whose case no client writes, if any.
    pub odd_case: Option<Box<str>>,
    /// Read by detect: login attempts per minute without a session or
    /// clearance (decayed), and whether the site is under attack.
    bare: f64,
    under_attack: bool,
}

impl SessionFacts {
    /// A valid session or clearance: the proof popular scopes ask for.
    pub fn vouched(&self) -> bool {
        self.session.valid().is_some() || self.clearance.valid().is_some()
    }

    /// A cookie was presented and refused (forged, expired, bound to
    /// another client).
    pub fn refused(&self) -> bool {
        matches!(self.session, Presented::Refused(_)) || matches!(self.clearance, Presented::Refused(_))
    }
}

/// What the stage decided besides the signals: a challenge to serve
/// instead of forwarding, and a cookie to set on the forwarded answer.
#[derive(Debug, Clone, Default)]
pub struct SessionOutcome {
    pub challenge: Option<ChallengeAnswer>,
    /// A `Set-Cookie` value for the response (a new session).
    pub set_cookie: Option<String>,
    /// The session's id, to count the login outcome against.
    pub session_id: Option<String>,
    /// A valid clearance was honoured for this request.
    pub clearance_used: bool,
}

/// A challenge palisade answers with itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChallengeAnswer {
    /// The interstitial HTML page.
    Page { html: String, token: String },
    /// 429 with `X-Palisade-Challenge` (API clients).
    Status { header: String },
}

/// A solved challenge: the clearance cookie and where to go back to.
#[derive(Debug, Clone)]
pub struct Verified {
    pub set_cookie: String,
    pub return_to: String,
    /// The challenge's one-time-use key.
    pub use_key: Key,
}

/// Why a challenge answer was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyError {
    /// No token or no answer in the query.
    Incomplete,
    Token(Rejection),
    /// The number does not solve the challenge.
    WrongAnswer,
    /// The same challenge was already answered.
    Reused,
}

impl VerifyError {
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyError::Incomplete => "incomplete",
            VerifyError::Token(rejection) => rejection.as_str(),
            VerifyError::WrongAnswer => "wrong_answer",
            VerifyError::Reused => "already_used",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SessionStage {
    hasher: KeyHasher,
    signer: Signer,
    cookie: String,
    clearance_cookie: String,
    session_ttl: u32,
    clearance_ttl: u32,
    challenge_ttl: u32,
    difficulty: u8,
    verify_path: String,
    max_usernames: u32,
    attack_bare_attempts: f64,
    attack_hold: Duration,
    modes: HashMap<Arc<str>, ChallengeMode>,
}

// === impl SessionStage: building ===

impl SessionStage {
    /// The stage, or `None` when `[session] enabled` is false.
    pub fn from_config(config: &Config) -> Result<Option<Self>, Vec<Invalid>> {
        let session = &config.session;
        let mut problems = Vec::new();
        let mut modes = HashMap::new();
        for (route, mode) in &session.challenge {
            let key = format!("session.challenge.{route}");
            match ChallengeMode::parse(mode.get_ref()) {
                Some(parsed) => {
                    modes.insert(Arc::from(route.as_str()), parsed);
                }
                None => problems.push(Invalid::new(
                    mode.span(),
                    key.clone(),
                    format!(
                        "unknown challenge mode {:?}; use one of {}",
                        mode.get_ref(),
                        ChallengeMode::NAMES.join(", ")
                    ),
                )),
            }
            if !config.routes.iter().any(|r| &r.name == route) && route != "default" {
                problems.push(Invalid::new(mode.span(), key, format!("no route is named {route:?}")));
            }
        }
        if !(1..=30).contains(&session.difficulty) {
            problems.push(Invalid::new(0..0, "session.difficulty", "must be 1 to 30 (leading zero bits)"));
        }
        for (name, value) in [("cookie", &session.cookie), ("clearance_cookie", &session.clearance_cookie)] {
            let text = value.get_ref();
            let token_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
            if text.is_empty() || !text.chars().all(token_char) {
                problems.push(Invalid::new(value.span(), format!("session.{name}"), "not a valid cookie name"));
            }
        }
        if session.cookie.get_ref() == session.clearance_cookie.get_ref() {
            problems.push(Invalid::new(
                session.clearance_cookie.span(),
                "session.clearance_cookie",
                "must differ from session.cookie",
            ));
        }
        let verify = session.verify_path.get_ref();
        if challenge::safe_return(verify).is_none() || verify.contains('?') {
            problems.push(Invalid::new(
                session.verify_path.span(),
                "session.verify_path",
                "must be a local path like /.palisade/verify",
            ));
        }
        for (name, secs) in [
            ("session_ttl_secs", session.session_ttl_secs),
            ("clearance_ttl_secs", session.clearance_ttl_secs),
            ("challenge_ttl_secs", session.challenge_ttl_secs),
            ("attack_hold_secs", session.attack_hold_secs),
        ] {
            if secs == 0 || secs > 30 * 86_400 {
                problems.push(Invalid::new(0..0, format!("session.{name}"), "must be 1 second to 30 days"));
            }
        }
        if session.max_usernames == 0 {
            problems.push(Invalid::new(0..0, "session.max_usernames", "must be at least 1"));
        }
        let signer = match Signer::new(&session_secret(session)) {
            Ok(signer) => Some(signer),
            Err(message) => {
                problems.push(Invalid::new(0..0, "session.secret", message.to_string()));
                None
            }
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        let (Some(signer), true) = (signer, session.enabled) else { return Ok(None) };
        let secs = |value: u64| u32::try_from(value).unwrap_or(u32::MAX);
        Ok(Some(SessionStage {
            hasher: KeyHasher::from_config(config),
            signer,
            cookie: session.cookie.get_ref().clone(),
            clearance_cookie: session.clearance_cookie.get_ref().clone(),
            session_ttl: secs(session.session_ttl_secs),
            clearance_ttl: secs(session.clearance_ttl_secs),
            challenge_ttl: secs(session.challenge_ttl_secs),
            difficulty: session.difficulty,
            verify_path: verify.clone(),
            max_usernames: session.max_usernames,
            attack_bare_attempts: session.attack_bare_attempts,
            attack_hold: Duration::from_secs(session.attack_hold_secs),
            modes,
        }))
    }

    pub fn verify_path(&self) -> &str {
        &self.verify_path
    }

    /// The route's challenge mode: configured, else by profile.
    pub fn mode(&self, route: &Route) -> ChallengeMode {
        self.modes.get(&route.name).copied().unwrap_or(match route.profile {
            RouteProfile::Login | RouteProfile::Default => ChallengeMode::Interstitial,
            RouteProfile::Api | RouteProfile::Payment | RouteProfile::OAuthToken => ChallengeMode::Header,
        })
    }

    fn binding(&self, headers: &HeaderMap, ip: IpAddr) -> [u8; 8] {
        let identity = headers.get(http::header::USER_AGENT).map(|v| v.as_bytes()).unwrap_or_default();
        self.signer.binding(&crate::credential::subnet(ip), &String::from_utf8_lossy(identity))
    }

    fn presented(&self, headers: &HeaderMap, name: &str, kind: TokenKind, now: u32, binding: &[u8; 8]) -> Presented {
        match cookie_value(headers, name) {
            None => Presented::Missing,
            Some(value) => match self.signer.check(value, kind, now, binding) {
                Ok(token) => Presented::Valid(token),
                Err(rejection) => Presented::Refused(rejection),
            },
        }
    }
}

// === impl SessionStage: the request ===

impl SessionStage {
    /// Read the request's cookies and classify it.
    pub fn facts(&self, view: &RequestView<'_>, at: Nanos, user_item: Option<u64>) -> SessionFacts {
        let headers = view.headers;
        let now_secs = secs_of(at);
        let binding = self.binding(headers, view.client_ip);
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
        let (kind, browser) = request_kind(view);
        let return_to = match kind {
            RequestKind::Navigation => view.target.to_string(),
            // After a challenged POST, back to the page the form was on.
            _ => referer_path(header("referer")).unwrap_or("/").to_string(),
        };
        let odd_case = match view.wire_names {
            Some(names) => odd_name(names.iter().map(|n| &**n)).map(Box::from),
            None => None,
        };
        SessionFacts {
            kind,
            browser,
            binding,
            session: self.presented(headers, &self.cookie, TokenKind::Session, now_secs, &binding),
            clearance: self.presented(headers, &self.clearance_cookie, TokenKind::Clearance, now_secs, &binding),
            now_secs,
            user_item,
            return_to,
            odd_case,
            bare: 0.0,
            under_attack: false,
        }
    }

    /// Counter operations (shard `session`): the under-attack state, and
    /// the session's and clearance's bookkeeping.
    pub fn plan_counters(&self, facts: &SessionFacts, plan: &mut CounterPlan) {
        let session_window = Duration::from_secs(u64::from(self.session_ttl));
        let session = facts.session.valid().map(Token::id_hex);
        match facts.kind {
            RequestKind::Navigation => {
                plan.push(CounterOp::BanCheck { key: Key::from(ATTACK_KEY) });
                if let Some(id) = &session {
                    plan.push(count(format!("sess:{id}:pages"), session_window, 1));
                }
            }
            RequestKind::SubResource => {
                if let Some(id) = &session {
                    plan.push(count(format!("sess:{id}:subs"), session_window, 1));
                }
            }
            RequestKind::Login => {
                plan.push(CounterOp::BanCheck { key: Key::from(ATTACK_KEY) });
                let bare = facts.browser && !facts.vouched();
                plan.push(CounterOp::Decay {
                    key: Key::from(BARE_KEY),
                    half_life: BARE_HALF_LIFE,
                    add: if bare { 1.0 } else { 0.0 },
                });
                if let Some(id) = &session {
                    plan.push(count(format!("sess:{id}:pages"), session_window, 0));
                    plan.push(count(format!("sess:{id}:subs"), session_window, 0));
                    plan.push(count(format!("sess:{id}:f"), session_window, 0));
                    plan.push(CounterOp::Distinct {
                        key: Key::from(format!("sess:{id}:users")),
                        window: session_window,
                        item: facts.user_item,
                    });
                }
                if let Some(clearance) = facts.clearance.valid() {
                    plan.push(CounterOp::Distinct {
                        key: Key::from(format!("clr:{}:users", clearance.id_hex())),
                        window: Duration::from_secs(u64::from(self.clearance_ttl)),
                        item: facts.user_item,
                    });
                }
            }
            RequestKind::Other => {}
        }
    }

    /// Signals from the session's readings and the signals so far.
    pub fn detect_signals(&self, facts: &mut SessionFacts, readings: &CounterReadings, signals: &mut Vec<Signal>) {
        if let Some(name) = &facts.odd_case {
            let mut signal = Signal::new(Arc::from("header.odd_case"), 15);
            signal.evidence.push(Evidence::text("header_name", &**name));
            signals.push(signal);
        }
        if facts.kind == RequestKind::Login {
            self.login_evidence(facts, readings, signals);
        }
        let attack_left = readings.ban(ATTACK_KEY);
        let bare = readings.number(BARE_KEY);
        let under_attack = attack_left.is_some() || bare >= self.attack_bare_attempts;
        facts.bare = bare;
        facts.under_attack = under_attack;
        let unproven = match facts.kind {
            // Page loads need clearance: a session is had for the asking.
            RequestKind::Navigation => facts.clearance.valid().is_none(),
            RequestKind::Login => !facts.vouched(),
            _ => false,
        };
        if under_attack && unproven {
            let mut signal = Signal::new(Arc::from("session.under_attack"), 0);
            signal.action = Some(Action::Challenge);
            signal.evidence = vec![
                Evidence::text("session", facts.session.describe()),
                Evidence::text("clearance", facts.clearance.describe()),
                Evidence::number("unvouched_logins_per_min", round1(bare), Some(self.attack_bare_attempts)),
            ];
            if let Some(left) = attack_left {
                signal.evidence.push(Evidence::number("attack_left_s", left.as_secs_f64().ceil(), None));
            }
            signals.push(signal);
        } else if facts.kind == RequestKind::Login && facts.browser && !facts.vouched() {
            let mut signal = Signal::new(Arc::from("session.missing"), 5);
            signal.evidence = vec![
                Evidence::text("session", facts.session.describe()),
                Evidence::text("clearance", facts.clearance.describe()),
            ];
            signals.push(signal);
        }
    }

    /// Per-session and per-clearance evidence on a login attempt. A
    /// clearance or session used for too many usernames stops vouching.
    fn login_evidence(&self, facts: &mut SessionFacts, readings: &CounterReadings, signals: &mut Vec<Signal>) {
        let limit = f64::from(self.max_usernames);
        if let Some(clearance) = facts.clearance.valid() {
            let users = readings.number(&format!("clr:{}:users", clearance.id_hex()));
            if users > limit {
                let mut signal = Signal::new(Arc::from("session.clearance_overused"), 20);
                signal.action = Some(Action::Challenge);
                signal.evidence = vec![Evidence::number("distinct_usernames", users, Some(limit))];
                signals.push(signal);
                facts.clearance = Presented::Refused(Rejection::Expired);
            }
        }
        let Some(session) = facts.session.valid().copied() else { return };
        let id = session.id_hex();
        let users = readings.number(&format!("sess:{id}:users"));
        let pages = readings.number(&format!("sess:{id}:pages"));
        let subs = readings.number(&format!("sess:{id}:subs"));
        let failures = readings.number(&format!("sess:{id}:f"));
        let age = f64::from(facts.now_secs.saturating_sub(session.issued));
        let context = || {
            vec![
                Evidence::number("page_loads", pages, None),
                Evidence::number("subresource_loads", subs, None),
                Evidence::number("failures", failures, None),
                Evidence::number("session_age_s", age, None),
            ]
        };
        if users > limit {
            let mut signal = Signal::new(Arc::from("session.usernames"), 30);
            signal.action = Some(Action::Challenge);
            signal.evidence = vec![Evidence::number("distinct_usernames", users, Some(limit))];
            signal.evidence.extend(context());
            signals.push(signal);
            facts.session = Presented::Refused(Rejection::Expired);
        } else if pages >= 1.0 && subs == 0.0 {
            // A page loaded without its styles, scripts or images: a script
            // fetching the page for its cookie.
            let mut signal = Signal::new(Arc::from("session.no_subresources"), 10);
            signal.evidence = context();
            signals.push(signal);
        }
    }

    /// After deciding: enter or prolong the under-attack state, and say
    /// what to answer or set.
    pub fn answer(
        &self,
        facts: &SessionFacts,
        route: &Route,
        action: Action,
        signals: &[Signal],
        writes: &mut CounterPlan,
    ) -> SessionOutcome {
        let triggered = signals.iter().any(|s| !s.shadow && ATTACK_TRIGGERS.contains(&&*s.id))
            || (facts.kind == RequestKind::Login && facts.bare >= self.attack_bare_attempts);
        if triggered {
            // A ban record, so operators see (and may lift) the state with the other bans.
            writes.push(CounterOp::Ban {
                key: Key::from(ATTACK_KEY),
                ttl: self.attack_hold,
                reason: Key::from("session.under_attack"),
            });
        }
        let mut outcome = SessionOutcome {
            session_id: facts.session.valid().map(Token::id_hex),
            clearance_used: facts.clearance.valid().is_some() && facts.kind == RequestKind::Login,
            ..SessionOutcome::default()
        };
        if action == Action::Challenge && facts.clearance.valid().is_none() {
            let mode = self.mode(route);
            let interstitial = mode == ChallengeMode::Interstitial
                && facts.browser
                && matches!(facts.kind, RequestKind::Navigation | RequestKind::Login);
            if interstitial || mode == ChallengeMode::Status {
                let token = self.issue(TokenKind::Challenge, facts, self.challenge_ttl, self.difficulty);
                outcome.challenge = Some(if interstitial {
                    let html = challenge::page(&token, self.difficulty, &self.verify_path, &facts.return_to);
                    ChallengeAnswer::Page { html, token }
                } else {
                    ChallengeAnswer::Status {
                        header: format!(
                            "pow; token={token}; difficulty={}; verify=\"{}\"",
                            self.difficulty, self.verify_path
                        ),
                    }
                });
                return outcome;
            }
        }
        if facts.kind == RequestKind::Navigation && facts.session.valid().is_none() && !action.stops_request() {
            let token = self.issue(TokenKind::Session, facts, self.session_ttl, 0);
            outcome.set_cookie = Some(self.set_cookie(&self.cookie, &token, self.session_ttl));
        }
        outcome
    }

    /// After the upstream answered a login: count a failure on the session.
    pub fn observe_outcome(&self, outcome: &SessionOutcome, failed: bool, plan: &mut CounterPlan) {
        if let (Some(id), true) = (&outcome.session_id, failed) {
            plan.push(count(format!("sess:{id}:f"), Duration::from_secs(u64::from(self.session_ttl)), 1));
        }
    }

    fn issue(&self, kind: TokenKind, facts: &SessionFacts, ttl: u32, extra: u8) -> String {
        self.signer.encode(&Token {
            kind,
            issued: facts.now_secs,
            expires: facts.now_secs.saturating_add(ttl),
            id: token::random_id(),
            binding: facts.binding,
            extra,
        })
    }

    fn set_cookie(&self, name: &str, value: &str, ttl: u32) -> String {
        format!("{name}={value}; Path=/; Max-Age={ttl}; HttpOnly; SameSite=Lax")
    }
}

// === impl Stage for SessionStage ===

impl Stage for SessionStage {
    fn name(&self) -> &'static str {
        "session"
    }

    /// A session's page loads and its login fall under different routes.
    fn shard(&self) -> Option<&'static str> {
        Some("session")
    }

    fn plan(&self, view: &RequestView<'_>, context: &mut RequestContext, plan: &mut CounterPlan) {
        let user_item =
            view.username.as_deref().map(|user| self.hasher.item("user", crate::credential::folded(user).as_bytes()));
        let facts = self.facts(view, context.at, user_item);
        self.plan_counters(&facts, plan);
        context.insert(facts);
    }

    fn detect(
        &self,
        _view: &RequestView<'_>,
        context: &mut RequestContext,
        readings: &CounterReadings,
        signals: &mut Vec<Signal>,
    ) {
        let Some(facts) = context.get_mut::<SessionFacts>() else { return };
        self.detect_signals(facts, readings, signals);
        if facts.vouched() {
            context.insert(Vouched);
        }
    }

    fn after_decision(
        &self,
        view: &RequestView<'_>,
        context: &mut RequestContext,
        decided: &Decided<'_>,
        writes: &mut CounterPlan,
    ) {
        let Some(facts) = context.get::<SessionFacts>() else { return };
        let outcome = self.answer(facts, view.route, decided.verdict.enforced.action, decided.signals, writes);
        context.insert(outcome);
    }

    fn observe(&self, _route: &Route, context: &RequestContext, observed: &Observed<'_>, writes: &mut CounterPlan) {
        if let (Some(outcome), Some(login)) = (context.get::<SessionOutcome>(), observed.login) {
            self.observe_outcome(outcome, login == crate::outcome::LoginOutcome::Failure, writes);
        }
    }
}

// === impl SessionStage: the verify endpoint ===

impl SessionStage {
    /// Check an answer sent to the verify path (`?t=TOKEN&n=NUMBER&r=PATH`)
    /// by the client at `ip` with `headers`. The caller still checks the
    /// one-time use of [`Verified::use_key`] against the store.
    pub fn verify(&self, query: &str, headers: &HeaderMap, ip: IpAddr, at: Nanos) -> Result<Verified, VerifyError> {
        let (mut token, mut nonce, mut back) = (None, None, None);
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*name {
                "t" => token = Some(value.into_owned()),
                "n" => nonce = Some(value.into_owned()),
                "r" => back = Some(value.into_owned()),
                _ => {}
            }
        }
        let (Some(token_text), Some(nonce)) = (token, nonce) else { return Err(VerifyError::Incomplete) };
        let now = secs_of(at);
        let binding = self.binding(headers, ip);
        let challenge =
            self.signer.check(&token_text, TokenKind::Challenge, now, &binding).map_err(VerifyError::Token)?;
        if !challenge::solves(&token_text, &nonce, challenge.extra) {
            return Err(VerifyError::WrongAnswer);
        }
        let clearance = self.signer.encode(&Token {
            kind: TokenKind::Clearance,
            issued: now,
            expires: now.saturating_add(self.clearance_ttl),
            id: token::random_id(),
            binding,
            extra: 0,
        });
        let return_to = back.as_deref().and_then(challenge::safe_return).unwrap_or("/").to_string();
        Ok(Verified {
            set_cookie: self.set_cookie(&self.clearance_cookie, &clearance, self.clearance_ttl),
            return_to,
            use_key: Key::from(format!("pow:{}:uses", challenge.id_hex())),
        })
    }

    /// The operation that counts one use of a solved challenge.
    pub fn count_use(&self, verified: &Verified, plan: &mut CounterPlan) {
        plan.push(count_key(verified.use_key.clone(), Duration::from_secs(u64::from(self.challenge_ttl) + 60), 1));
    }

    /// Whether the readings of [`Self::count_use`] say it was already used.
    pub fn reused(&self, verified: &Verified, readings: &CounterReadings) -> bool {
        readings.number(&verified.use_key) > 1.0
    }
}

fn count(key: String, window: Duration, add: u64) -> CounterOp {
    count_key(Key::from(key), window, add)
}

fn count_key(key: Key, window: Duration, add: u64) -> CounterOp {
    CounterOp::Count { key, window, add }
}

fn secs_of(at: Nanos) -> u32 {
    u32::try_from(at / 1_000_000_000).unwrap_or(u32::MAX)
}

fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// The secret: configured, else `PALISADE_SESSION_SECRET`, else one random
/// secret for the whole process (so a reload keeps every cookie valid).
fn session_secret(config: &SessionConfig) -> Vec<u8> {
    if !config.secret.is_empty() {
        return config.secret.clone().into_bytes();
    }
    if let Ok(from_env) = std::env::var("PALISADE_SESSION_SECRET")
        && !from_env.is_empty()
    {
        return from_env.into_bytes();
    }
    static SECRET: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    SECRET
        .get_or_init(|| {
            let mut secret = [0u8; 32];
            for chunk in secret.chunks_mut(8) {
                chunk.copy_from_slice(&token::random_id());
            }
            secret
        })
        .to_vec()
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"'))
}

/// The path (and query) of a Referer URL.
fn referer_path(referer: &str) -> Option<&str> {
    let rest = referer.split_once("://").map(|(_, rest)| rest)?;
    let path = &rest[rest.find('/')?..];
    challenge::safe_return(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::COOKIE, "a=1; __palisade_session=abc; b=2".parse().unwrap());
        assert_eq!(cookie_value(&headers, "__palisade_session"), Some("abc"));
        assert_eq!(cookie_value(&headers, "c"), None);
        assert_eq!(referer_path("https://bank.example/login?x=1"), Some("/login?x=1"));
        assert_eq!(referer_path("nonsense"), None);
    }
}
