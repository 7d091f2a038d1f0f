//! The login path without the network: extract the username, read and
//! update every credential-abuse counter, decide, then feed the outcome
//! back (the request lifecycle: `route` + `decide_now` + `complete`),
//! over a stream of login attempts from many addresses and accounts with
//! a mix of successes and failures.
//!
//! `cargo bench --bench login` runs the criterion benchmark, then prints
//! p50/p99 per attempt from an HDR histogram over 200,000 timed attempts
//! (criterion reports means and medians, not tails).

#[path = "support/lifecycle.rs"]
mod support;

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use palisade::config::Config;
use palisade::lifecycle::Lifecycle;
use palisade::outcome::ResponseFacts;

use support::{Request, print_tail, through};

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

/// One attempt through the login path, as every front door runs it.
fn login_path(lifecycle: &Lifecycle, attempt: &Attempt) -> palisade::signal::Action {
    let request = Request {
        method: &attempt.method,
        uri: &attempt.uri,
        headers: &attempt.headers,
        client: attempt.client,
        body: &attempt.body,
    };
    through(lifecycle, &request, ResponseFacts::status(attempt.status))
}

fn config() -> Config {
    let mut config = Config::default();
    config.store.hash_key = "bench".into();
    config
}

fn main() {
    let stream = attempts(20_000);
    let (lifecycle, clock) = support::lifecycle(&config());
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

    let (lifecycle, clock) = support::lifecycle(&config());
    print_tail("login", "attempts", |i| {
        clock.advance(Duration::from_millis(5));
        login_path(&lifecycle, &stream[i % stream.len()])
    });
}
