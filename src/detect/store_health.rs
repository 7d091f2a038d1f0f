//! The shared store's health: on a route set to fail closed, a request
//! whose counters could not be read from the shared store is refused.

use std::sync::Arc;

use super::{Audience, RequestContext, Stage};
use crate::config::StoreFailure;
use crate::signal::{Action, Evidence, Signal};
use crate::store::CounterReadings;
use crate::view::RequestView;

/// The shared store was unavailable on a route set to fail closed.
pub const STORE_UNAVAILABLE_ID: &str = "store.unavailable";

#[derive(Debug)]
pub struct StoreHealth {
    id: Arc<str>,
}

impl Default for StoreHealth {
    fn default() -> Self {
        StoreHealth { id: Arc::from(STORE_UNAVAILABLE_ID) }
    }
}

impl Stage for StoreHealth {
    fn name(&self) -> &'static str {
        "store"
    }

    fn audience(&self) -> Audience {
        Audience::Everyone
    }

    fn detect(
        &self,
        view: &RequestView<'_>,
        _context: &mut RequestContext,
        readings: &CounterReadings,
        signals: &mut Vec<Signal>,
    ) {
        if readings.degraded() && view.route.store_failure == StoreFailure::Closed {
            let mut signal = Signal::new(self.id.clone(), 0);
            signal.action = Some(Action::Block);
            signal.retry_after = Some(std::time::Duration::from_secs(1));
            signal.evidence = vec![Evidence::text("shared_store", "unavailable; route fails closed")];
            signals.push(signal);
        }
    }
}
