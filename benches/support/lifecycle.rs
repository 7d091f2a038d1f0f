//! What the login and payment benches share: a pipeline on the local
//! store and a manual clock, one request through the lifecycle as every
//! front door runs it, and the HDR tail printed after criterion's means.

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use palisade::clock::{ManualClock, SharedClock};
use palisade::config::Config;
use palisade::lifecycle::{Arrival, Ending, Lifecycle, Reporters};
use palisade::outcome::ResponseFacts;
use palisade::pipeline::PipelineBuilder;
use palisade::request_id::RequestIds;
use palisade::signal::Action;
use palisade::store::{CounterStore, LocalStore};

/// The lifecycle of `config` on a fresh local store, with its clock.
pub fn lifecycle(config: &Config) -> (Lifecycle, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000_000_000));
    let shared: SharedClock = clock.clone();
    let store = Arc::new(CounterStore::Local(LocalStore::new(shared.clone())));
    let pipeline = PipelineBuilder::new(config).build(store, shared, RequestIds::new(1)).expect("bench config");
    (Lifecycle::new(pipeline, None), clock)
}

/// One HTTP/1.1 request with a body.
pub struct Request<'a> {
    pub method: &'a http::Method,
    pub uri: &'a http::Uri,
    pub headers: &'a http::HeaderMap,
    pub client: IpAddr,
    pub body: &'a [u8],
}

/// One request through the lifecycle (route, decide, complete with
/// `response` when it was let through); the action, so that nothing is
/// optimized away.
pub fn through(lifecycle: &Lifecycle, request: &Request<'_>, response: ResponseFacts<'_>) -> Action {
    let routed = lifecycle.route(request.method, request.uri);
    let arrival = Arrival {
        method: request.method,
        uri: request.uri,
        version: http::Version::HTTP_11,
        headers: request.headers,
        client_ip: request.client,
        ja4: None,
        wire_names: None,
        client_cert: None,
    };
    let mut exchange = lifecycle.decide_now(routed, &arrival, Some(request.body), Reporters::default());
    let ending =
        if exchange.stops_request() { Ending::Refused } else { Ending::Answered { response, upstream_time: None } };
    lifecycle.complete(&mut exchange, ending, Reporters::default());
    exchange.decision.action()
}

/// Time `run(i)` one call at a time, 20,000 warm-up calls then 200,000
/// timed, and print p50/p99/p99.9 and the actions taken (criterion
/// reports means and medians, not tails). Only under `cargo bench`.
pub fn print_tail(path: &str, items: &str, mut run: impl FnMut(usize) -> Action) {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let mut histogram = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).expect("bounds");
    let mut actions = std::collections::BTreeMap::new();
    for i in 0..220_000 {
        let started = Instant::now();
        let action = black_box(run(i));
        if i >= 20_000 {
            histogram.record(started.elapsed().as_nanos() as u64).expect("in bounds");
            *actions.entry(action.as_str()).or_insert(0u64) += 1;
        }
    }
    println!(
        "{path} path over {} {items}: p50 {:.2} µs, p99 {:.2} µs, p99.9 {:.2} µs; actions {actions:?}",
        histogram.len(),
        histogram.value_at_quantile(0.5) as f64 / 1000.0,
        histogram.value_at_quantile(0.99) as f64 / 1000.0,
        histogram.value_at_quantile(0.999) as f64 / 1000.0,
    );
}
