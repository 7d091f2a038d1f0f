//! Per-client, per-route rate limit: the route's GCRA limit, keyed by the
//! client address and the route.

use std::sync::Arc;

use super::{RequestContext, Stage};
use crate::keyed_hash::KeyHasher;
use crate::signal::{Evidence, Signal};
use crate::store::{CounterPlan, CounterReadings, GcraReading};
use crate::view::RequestView;

pub const DETECTION_ID: &str = "rate.client_route";

/// Points a limited request loses. Small: being over a rate is answered
/// by the 429 itself and says little about who is asking (a carrier NAT
/// trips limits too), so it must not push a request into a block.
const PENALTY: u8 = 10;

#[derive(Debug)]
pub struct ClientRouteRateLimit {
    id: Arc<str>,
    /// Client addresses are keyed by their keyed hash, never in clear.
    hasher: KeyHasher,
}

impl ClientRouteRateLimit {
    pub fn new(hasher: KeyHasher) -> Self {
        ClientRouteRateLimit { id: Arc::from(DETECTION_ID), hasher }
    }

    fn counter_key(&self, view: &RequestView<'_>) -> String {
        let ip = crate::cidr::canonical_ip(view.client_ip).to_string();
        format!("rl:{}:{}", view.route.name, self.hasher.hash("ip", ip.as_bytes()))
    }
}

impl Stage for ClientRouteRateLimit {
    fn name(&self) -> &'static str {
        "rate"
    }

    fn plan(&self, view: &RequestView<'_>, _context: &mut RequestContext, plan: &mut CounterPlan) {
        if let Some(limit) = view.route.rate_limit {
            plan.gcra(self.counter_key(view).into(), limit);
        }
    }

    fn detect(
        &self,
        view: &RequestView<'_>,
        _context: &mut RequestContext,
        readings: &CounterReadings,
        signals: &mut Vec<Signal>,
    ) {
        let Some(limit) = view.route.rate_limit else { return };
        if let Some(GcraReading::Limited { retry_after }) = readings.gcra(&self.counter_key(view)) {
            signals.push(Signal::rate_limited(
                self.id.clone(),
                PENALTY,
                retry_after,
                [
                    Evidence::number("limit_requests", f64::from(limit.requests), None),
                    Evidence::number("limit_period_s", limit.period_secs as f64, None),
                    Evidence::number("burst", f64::from(limit.burst.unwrap_or(limit.requests)), None),
                ],
            ));
        }
    }
}
