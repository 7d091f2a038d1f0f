//! Per-ASN, per-route rate limit: one GCRA counter for every client of an
//! autonomous system on a route, so an attack spread over many addresses
//! of one hosting network is counted as one client, while other networks'
//! users keep their own budgets.

use std::sync::Arc;

use super::{RequestContext, Stage};
use crate::signal::{Evidence, Signal};
use crate::store::{CounterPlan, CounterReadings, GcraReading};
use crate::view::RequestView;

pub const DETECTION_ID: &str = "rate.asn_route";

/// Points a limited request loses: the 429 is the answer; the penalty only
/// keeps the decision log honest about why.
const PENALTY: u8 = 10;

#[derive(Debug)]
pub struct AsnRouteRateLimit {
    id: Arc<str>,
}

impl AsnRouteRateLimit {
    pub fn new() -> Self {
        AsnRouteRateLimit { id: Arc::from(DETECTION_ID) }
    }

    /// ASNs are public facts about networks, not personal data: they are
    /// kept in clear so operators can read the counters.
    fn counter_key(view: &RequestView<'_>) -> Option<String> {
        let asn = view.asn.as_ref()?;
        Some(format!("ra:{}:as{}", view.route.name, asn.number))
    }
}

impl Default for AsnRouteRateLimit {
    fn default() -> Self {
        Self::new()
    }
}

impl Stage for AsnRouteRateLimit {
    fn name(&self) -> &'static str {
        "asn_rate"
    }

    fn plan(&self, view: &RequestView<'_>, _context: &mut RequestContext, plan: &mut CounterPlan) {
        if let (Some(limit), Some(key)) = (view.route.asn_rate_limit, Self::counter_key(view)) {
            plan.gcra(key.into(), limit);
        }
    }

    fn detect(
        &self,
        view: &RequestView<'_>,
        _context: &mut RequestContext,
        readings: &CounterReadings,
        signals: &mut Vec<Signal>,
    ) {
        let (Some(limit), Some(key), Some(asn)) = (view.route.asn_rate_limit, Self::counter_key(view), &view.asn)
        else {
            return;
        };
        if let Some(GcraReading::Limited { retry_after }) = readings.gcra(&key) {
            let mut signal = Signal::rate_limited(
                self.id.clone(),
                PENALTY,
                retry_after,
                [
                    Evidence::number("asn", f64::from(asn.number), None),
                    Evidence::number("limit_requests", f64::from(limit.requests), None),
                    Evidence::number("limit_period_s", limit.period_secs as f64, None),
                ],
            );
            if let Some(organisation) = &asn.organisation {
                signal.evidence.push(Evidence::text("asn_org", organisation.clone()));
            }
            signals.push(signal);
        }
    }
}
