//! Per-client, per-route rate limit: the route's GCRA limit, keyed by the
//! client address and the route.

use std::sync::Arc;

use super::{RequestContext, Stage};
use crate::keyed_hash::KeyHasher;
use crate::signal::{Evidence, Signal};
use crate::store::{CounterPlan, CounterReadings, GcraReading, Key};
use crate::view::RequestView;

pub const DETECTION_ID: &str = "rate.client_route";

/// Points a limited request loses. Small: being over a rate is answered
/// by the 429 itself and says little about who is asking (a carrier NAT
/// trips limits too), so it must not push a request into a block.
const PENALTY: u8 = 10;

/// The request's limit key, from plan to detect.
#[derive(Debug, Clone)]
struct RateKey(Key);

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

    fn plan(&self, view: &RequestView<'_>, context: &mut RequestContext, plan: &mut CounterPlan) {
        if let Some(limit) = view.route.rate_limit {
            let key = Key::from(self.counter_key(view));
            plan.gcra(key.clone(), limit);
            // Detect finds its reading under the same key: keep it rather
            // than hash the address a second time.
            context.insert(RateKey(key));
        }
    }

    fn detect(
        &self,
        view: &RequestView<'_>,
        context: &mut RequestContext,
        readings: &CounterReadings,
        signals: &mut Vec<Signal>,
    ) {
        let Some(limit) = view.route.rate_limit else { return };
        let reading = match context.get::<RateKey>() {
            Some(RateKey(key)) => readings.gcra(key),
            None => readings.gcra(&self.counter_key(view)),
        };
        if let Some(GcraReading::Limited { retry_after }) = reading {
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
