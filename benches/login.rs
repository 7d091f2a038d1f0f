//! The login path without the network: extract the username, read and
//! update every credential-abuse counter, decide, then feed the outcome
//! back (the request lifecycle: `route` + `decide_now` + `complete`),
//! over a stream of login attempts from many addresses and accounts with
//! a mix of successes and failures.
//!
//! `cargo bench --bench login` runs the criterion benchmark, then prints
//! p50/p99 per attempt from an HDR histogram over 200,000 timed attempts
//! (criterion reports means and medians, not tails).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use palisade::clock::{ManualClock, SharedClock};
use palisade::config::Config;
use palisade::lifecycle::{Arrival, Ending, Lifecycle, Reporters};
use palisade::outcome::ResponseFacts;
use palisade::pipeline::PipelineBuilder;
use palisade::request_id::RequestIds;
use palisade::store::{CounterStore, LocalStore};

/// The allocator `palisade` itself runs with (see `src/main.rs`), so that
/// these numbers are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One login attempt, prepared once.
struct Attempt {
    method: http::Method,
    uri: http::Uri,
    headers: http::HeaderMap,
    body: Vec<u8>,
    client: std::net::IpAddr,
    status: u16,
}

fn attempts(count: usize) -> Vec<Attempt> {
    (0..count)
        .map(|i| {
            let browser = i % 3 != 0;
            let mut headers = http::HeaderMap::new();
            let mut add = |name: &'static str, value: &str| {
                headers.append(name, value.parse().unwrap());
            };
            add("host", "bank.example");
            if browser {
                add("sec-ch-ua", r#""Chromium";v="156", "Not)A;Brand";v="8""#);
                add("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36");
                add("accept", "text/html");
                add("sec-fetch-mode", "navigate");
                add("accept-language", "en-GB,en;q=0.9");
            } else {
                add("user-agent", "okhttp/4.12.0");
                add("accept-encoding", "gzip");
            }
            let (content_type, body) = if i % 2 == 0 {
                ("application/x-www-form-urlencoded", format!("username=user{}%40example.com&password=pw{i}", i % 5000))
            } else {
                ("application/json", format!(r#"{{"username":"user{}@example.com","password":"pw{i}"}}"#, i % 5000))
            };
            add("content-type", content_type);
            Attempt {
                method: http::Method::POST,
                uri: "/login".parse().unwrap(),
                headers,
                body: body.into_bytes(),
                client: format!("10.{}.{}.{}", i % 7, (i / 7) % 250, i % 250).parse().unwrap(),
                status: if i % 4 == 0 { 401 } else { 200 },
            }
        })
        .collect()
}

fn lifecycle() -> (Lifecycle, Arc<ManualClock>) {
    let mut config = Config::default();
    config.store.hash_key = "bench".into();
    let clock = Arc::new(ManualClock::new(1_800_000_000_000_000_000));
    let shared: SharedClock = clock.clone();
    let store = Arc::new(CounterStore::Local(LocalStore::new(shared.clone())));
    let pipeline = PipelineBuilder::new(&config).build(store, shared, RequestIds::new(1)).expect("default config");
    (Lifecycle::new(pipeline, None), clock)
}

/// One attempt through the login path, as every front door runs it
/// (route, decide, complete with the upstream's status); returns the
/// action so nothing is optimized away.
fn login_path(lifecycle: &Lifecycle, attempt: &Attempt) -> palisade::signal::Action {
    let routed = lifecycle.route(&attempt.method, &attempt.uri);
    let arrival = Arrival {
        method: &attempt.method,
        uri: &attempt.uri,
        version: http::Version::HTTP_11,
        headers: &attempt.headers,
        client_ip: attempt.client,
        ja4: None,
        wire_names: None,
        client_cert: None,
    };
    let mut exchange = lifecycle.decide_now(routed, &arrival, Some(&attempt.body), Reporters::default());
    let ending = if exchange.stops_request() {
        Ending::Refused
    } else {
        Ending::Answered { response: ResponseFacts::status(attempt.status), upstream_time: None }
    };
    lifecycle.complete(&mut exchange, ending, Reporters::default());
    exchange.decision.action()
}

fn main() {
    let stream = attempts(20_000);
    let (lifecycle, clock) = lifecycle();
    let mut criterion = Criterion::default().configure_from_args();
    let mut group = criterion.benchmark_group("login");
    group.throughput(Throughput::Elements(1));
    let mut next = 0;
    group.bench_function("attempt", |b| {
        b.iter(|| {
            clock.advance(Duration::from_millis(5));
            let attempt = &stream[next];
            next = (next + 1) % stream.len();
            black_box(login_path(&lifecycle, black_box(attempt)))
        })
    });
    group.finish();
    criterion.final_summary();

    // Tails: criterion's estimates are of the mean and median.
    if std::env::args().any(|a| a == "--bench") {
        let (lifecycle, clock) = self::lifecycle();
        let mut histogram = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).unwrap();
        let mut actions = std::collections::BTreeMap::new();
        for i in 0..220_000 {
            clock.advance(Duration::from_millis(5));
            let attempt = &stream[i % stream.len()];
            let started = Instant::now();
            let action = black_box(login_path(&lifecycle, attempt));
            if i >= 20_000 {
                histogram.record(started.elapsed().as_nanos() as u64).unwrap();
                *actions.entry(action.as_str()).or_insert(0u64) += 1;
            }
        }
        println!(
            "login path over {} attempts: p50 {:.2} µs, p99 {:.2} µs, p99.9 {:.2} µs; actions {actions:?}",
            histogram.len(),
            histogram.value_at_quantile(0.5) as f64 / 1000.0,
            histogram.value_at_quantile(0.99) as f64 / 1000.0,
            histogram.value_at_quantile(0.999) as f64 / 1000.0,
        );
    }
}
