//! Per-client, per-route rate limit: the route's GCRA limit, keyed by the
//! client address and the route.

use std::sync::Arc;

use super::Detector;
use crate::signal::{Action, Evidence, Signal};
use crate::store::{CounterPlan, CounterReadings, GcraReading};
use crate::view::RequestView;

pub const DETECTION_ID: &str = "rate.client_route";

/// Points a limited request loses: fast repetition is a bot trait, but a
/// person double-clicking can trip a tight limit too.
const PENALTY: u8 = 40;

#[derive(Debug)]
pub struct ClientRouteRateLimit {
    id: Arc<str>,
}

impl Default for ClientRouteRateLimit {
    fn default() -> Self {
        ClientRouteRateLimit { id: Arc::from(DETECTION_ID) }
    }
}

fn counter_key(view: &RequestView<'_>) -> String {
    format!("rl:{}:{}", view.route.name, view.client_ip)
}

impl Detector for ClientRouteRateLimit {
    fn name(&self) -> &'static str {
        "rate"
    }

    fn plan(&self, view: &RequestView<'_>, plan: &mut CounterPlan) {
        if let Some(limit) = view.route.rate_limit {
            plan.gcra(counter_key(view), limit);
        }
    }

    fn detect(&self, view: &RequestView<'_>, readings: &CounterReadings, signals: &mut Vec<Signal>) {
        let Some(limit) = view.route.rate_limit else { return };
        if let Some(GcraReading::Limited { retry_after }) = readings.gcra(&counter_key(view)) {
            let mut signal = Signal::new(self.id.clone(), PENALTY);
            signal.action = Some(Action::RateLimit);
            signal.retry_after = Some(retry_after);
            signal.evidence = vec![
                Evidence::number("limit_requests", f64::from(limit.requests), None),
                Evidence::number("limit_period_s", limit.period_secs as f64, None),
                Evidence::number("burst", f64::from(limit.burst.unwrap_or(limit.requests)), None),
                Evidence::number("retry_after_ms", retry_after.as_millis() as f64, None),
            ];
            signals.push(signal);
        }
    }
}
