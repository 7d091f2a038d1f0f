//! What stages share about one request across its hooks: the per-request
//! context, the decision as stages see it, and the upstream's answer.

use crate::decide::Verdict;
use crate::identify::Identity;
use crate::outcome::{LoginOutcome, ResponseFacts};
use crate::signal::Signal;

/// State a request carries from one stage hook to the next (plan →
/// detect → after decision → observe), like pingora's per-request `CTX`.
///
/// Each stage keeps its own state under its own type (the credential
/// stage its login attempt), so this module needs to know none of them
/// and stages stay independent of each other.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// Who the identify step says sent the request (set before any stage runs).
    pub identity: Identity,
    /// When the request arrived, on the pipeline's clock (set before any
    /// stage runs; 0 when a caller runs stages on their own).
    pub at: crate::clock::Nanos,
    state: http::Extensions,
}

impl RequestContext {
    pub fn new(identity: Identity) -> Self {
        RequestContext { identity, at: 0, state: http::Extensions::new() }
    }

    /// The same, arrived at `at`.
    pub fn with_time(mut self, at: crate::clock::Nanos) -> Self {
        self.at = at;
        self
    }

    /// Keep a stage's state for this request (replacing one of the same type).
    pub fn insert<T: Clone + Send + Sync + 'static>(&mut self, value: T) {
        self.state.insert(value);
    }

    /// A stage's state, when it kept one.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.state.get::<T>()
    }

    pub fn get_mut<T: Send + Sync + 'static>(&mut self) -> Option<&mut T> {
        self.state.get_mut::<T>()
    }

    pub fn is_partner(&self) -> bool {
        matches!(self.identity, Identity::Partner { .. })
    }
}

/// A valid session or clearance cookie vouches for the client: set by the
/// session stage, read by stages that judge scopes many clients share (a
/// subnet, a fingerprint), which then leave the request to the cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vouched;

/// The decision, as the after-decision hook sees it.
#[derive(Debug, Clone, Copy)]
pub struct Decided<'a> {
    pub verdict: &'a Verdict,
    pub signals: &'a [Signal],
    /// The request is refused for something the client did (not only
    /// because the shared store is down on a fail-closed route).
    pub refused: bool,
}

/// The upstream's answer, as the observe hook sees it.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    pub response: &'a ResponseFacts<'a>,
    /// On login routes: the outcome the route's login settings read from it.
    pub login: Option<LoginOutcome>,
    /// The login's username, when it was learned only with the outcome (a
    /// sidecar behind nginx cannot see the login body; the application
    /// reports it).
    pub username: Option<&'a str>,
}
