//! The detect stage: independent detector stages behind one trait with
//! default hooks, in the manner of pingora's proxy phases.
//!
//! A stage is pure and synchronous. Its hooks run at fixed points of a
//! request's life ([`crate::pipeline`] calls them, in stage order):
//!
//! 1. [`Stage::plan`] — the counter operations the request needs; the
//!    pipeline executes every stage's operations in one store call;
//! 2. [`Stage::detect`] — findings from the view and the readings;
//! 3. [`Stage::after_decision`] — counter writes that depend on what was
//!    decided (a refused attempt, a ban an enforced block sets);
//! 4. [`Stage::observe`] — counter writes from the upstream's answer.
//!
//! A stage never does I/O and never sees another stage's signals;
//! combining findings is the decide stage's job. What a stage must carry
//! from one hook to the next for the same request (a login attempt's
//! keys) lives in the per-request [`RequestContext`].

mod asn_rate;
mod context;
pub mod escalation;
mod oauth_client;
mod quota;
mod rate;
mod store_health;

pub use asn_rate::AsnRouteRateLimit;
pub use context::{Decided, Observed, RequestContext, Vouched};
pub use oauth_client::OAuthClientQuota;
pub use quota::{PARTNER_QUOTA_ID, PartnerQuota};
pub use rate::ClientRouteRateLimit;
pub use store_health::{STORE_UNAVAILABLE_ID, StoreHealth};

use crate::identify::Identity;
use crate::routes::Route;
use crate::signal::Signal;
use crate::store::{CounterPlan, CounterReadings};
use crate::view::RequestView;

/// Which requests a stage looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Everyone but allowlisted partners (bot heuristics).
    Visitors,
    /// Only allowlisted partners (their quota).
    Partners,
    /// Every request (the health of the shared store).
    Everyone,
}

impl Audience {
    pub fn includes(self, identity: &Identity) -> bool {
        let partner = matches!(identity, Identity::Partner { .. });
        match self {
            Audience::Visitors => !partner,
            Audience::Partners => partner,
            Audience::Everyone => true,
        }
    }
}

pub trait Stage: Send + Sync + std::fmt::Debug {
    /// Stable name, used in metrics and `explain` output.
    fn name(&self) -> &'static str;

    /// Which requests the stage runs on; bot heuristics never see partners.
    fn audience(&self) -> Audience {
        Audience::Visitors
    }

    /// Where the stage's counters live in a shared store: `None` with the
    /// request's own (its route's, or its partner's), or a shard of the
    /// stage's own when its counters span routes (a session's page loads
    /// and its login attempt). Its plan, writes and observations all go there.
    fn shard(&self) -> Option<&'static str> {
        None
    }

    /// Counter operations this request needs; most stages need none.
    fn plan(&self, _view: &RequestView<'_>, _context: &mut RequestContext, _plan: &mut CounterPlan) {}

    /// Findings about the request, given the readings of the plan.
    fn detect(
        &self,
        view: &RequestView<'_>,
        context: &mut RequestContext,
        readings: &CounterReadings,
        signals: &mut Vec<Signal>,
    );

    /// Counter writes that depend on the decision; the stage may keep what
    /// the decision means for it (a cookie to set) in the context.
    fn after_decision(
        &self,
        _view: &RequestView<'_>,
        _context: &mut RequestContext,
        _decided: &Decided<'_>,
        _writes: &mut CounterPlan,
    ) {
    }

    /// Counter writes learned from the upstream's answer.
    fn observe(&self, _route: &Route, _context: &RequestContext, _observed: &Observed<'_>, _writes: &mut CounterPlan) {}

    /// Counter writes for a request about to be let through to the
    /// upstream (the front door's decision: not refused, no challenge
    /// served instead). Not called when a pipeline only evaluates (benches,
    /// `explain`).
    fn forwarded(&self, _route: &Route, _context: &RequestContext, _writes: &mut CounterPlan) {}

    /// Counter writes for a request let through whose answer will never
    /// be known (the upstream failed, the client left, a sidecar's
    /// application never reported).
    fn abandoned(&self, _route: &Route, _context: &RequestContext, _writes: &mut CounterPlan) {}
}
