//! The detect stage: independent detectors behind one small trait.
//!
//! A detector is pure and synchronous. It may ask for counter operations
//! ([`Detector::plan`]); the pipeline executes every detector's operations
//! in one store call, then hands each detector the readings
//! ([`Detector::detect`]). It never does I/O and never sees another
//! detector's output; combining findings is the decide stage's job.

mod rate;

pub use rate::ClientRouteRateLimit;

use crate::signal::Signal;
use crate::store::{CounterPlan, CounterReadings};
use crate::view::RequestView;

pub trait Detector: Send + Sync + std::fmt::Debug {
    /// Stable name, used in metrics and `explain` output.
    fn name(&self) -> &'static str;

    /// Counter operations this request needs; most detectors need none.
    fn plan(&self, _view: &RequestView<'_>, _plan: &mut CounterPlan) {}

    /// Findings about the request, given the readings of the plan.
    fn detect(&self, view: &RequestView<'_>, readings: &CounterReadings, signals: &mut Vec<Signal>);
}
