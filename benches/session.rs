//! What the session stage costs per request: the same page load and the
//! same login attempt through the pipeline with `[session]` off and on
//! (the on side carrying a valid session cookie, so its counters are read
//! and written), and checking one cookie alone.
//!
//! `cargo bench --bench session`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use palisade::clock::{ManualClock, SharedClock};
use palisade::config::Config;
use palisade::lifecycle::{Arrival, Ending, Exchange, Lifecycle, Reporters};
use palisade::outcome::ResponseFacts;
use palisade::pipeline::PipelineBuilder;
use palisade::request_id::RequestIds;
use palisade::session::token::{Signer, Token, TokenKind};
use palisade::store::{CounterStore, LocalStore};

const CHROME: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/148.0.0.0 Safari/537.36";

struct Request {
    method: http::Method,
    uri: http::Uri,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

fn request(method: http::Method, path: &str, cookie: Option<&str>, body: &str) -> Request {
    let mut headers = http::HeaderMap::new();
    for (name, value) in [
        ("host", "bank.example"),
        ("sec-ch-ua", r#""Chromium";v="148", "Not/A)Brand";v="99""#),
        ("user-agent", CHROME),
        ("accept", "text/html,application/xhtml+xml"),
        ("sec-fetch-mode", "navigate"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("content-type", "application/x-www-form-urlencoded"),
    ] {
        headers.append(name, value.parse().unwrap());
    }
    if let Some(cookie) = cookie {
        headers.append("cookie", cookie.parse().unwrap());
    }
    Request { method, uri: path.parse().unwrap(), headers, body: body.as_bytes().to_vec() }
}

fn lifecycle(session: bool) -> (Lifecycle, Arc<ManualClock>) {
    let mut config = Config::default();
    config.store.hash_key = "bench".into();
    config.session.enabled = session;
    config.session.secret = "bench-secret".into();
    let clock = Arc::new(ManualClock::new(1_800_000_000_000_000_000));
    let shared: SharedClock = clock.clone();
    let store = Arc::new(CounterStore::Local(LocalStore::new(shared.clone())));
    let pipeline = PipelineBuilder::new(&config).build(store, shared, RequestIds::new(1)).expect("default config");
    (Lifecycle::new(pipeline, None), clock)
}

/// One request as every front door runs it (route, decide, complete with
/// a 200 from the upstream); the exchange, so nothing is optimized away.
fn run(lifecycle: &Lifecycle, request: &Request) -> Exchange {
    let routed = lifecycle.route(&request.method, &request.uri);
    let body = routed.inspects_body().then_some(&request.body[..]);
    let arrival = Arrival {
        method: &request.method,
        uri: &request.uri,
        version: http::Version::HTTP_11,
        headers: &request.headers,
        client_ip: "203.0.113.7".parse().unwrap(),
        ja4: None,
        wire_names: None,
        client_cert: None,
    };
    let mut exchange = lifecycle.decide_now(routed, &arrival, body, Reporters::default());
    let ending = if exchange.stops_request() {
        Ending::Refused
    } else {
        Ending::Answered { response: ResponseFacts::status(200), upstream_time: None }
    };
    lifecycle.complete(&mut exchange, ending, Reporters::default());
    exchange
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    let mut group = criterion.benchmark_group("session");
    group.throughput(Throughput::Elements(1));
    for enabled in [false, true] {
        let (lifecycle, clock) = lifecycle(enabled);
        // A page load without a cookie sets one (when on); later requests carry it.
        let first = run(&lifecycle, &request(http::Method::GET, "/signin", None, ""));
        let cookie = first.set_cookie().and_then(|set| set.split(';').next()).map(str::to_string);
        assert_eq!(cookie.is_some(), enabled, "a page load sets the session cookie when the stage is on");
        let cookie = cookie.as_deref();
        let page = request(http::Method::GET, "/signin", cookie, "");
        let login = request(http::Method::POST, "/login", cookie, "username=alice%40example.com&password=pw");
        let side = if enabled { "on" } else { "off" };
        group.bench_function(format!("page_load/{side}"), |b| {
            b.iter(|| {
                clock.advance(Duration::from_micros(1));
                black_box(run(&lifecycle, black_box(&page)).decision.action())
            })
        });
        group.bench_function(format!("login/{side}"), |b| {
            b.iter(|| {
                clock.advance(Duration::from_micros(1));
                black_box(run(&lifecycle, black_box(&login)).decision.action())
            })
        });
    }
    let signer = Signer::new(b"bench-secret").unwrap();
    let binding = signer.binding("203.0.113.0/24", CHROME);
    let token = signer.encode(&Token {
        kind: TokenKind::Session,
        issued: 1_000,
        expires: 5_000,
        id: [1; 8],
        binding,
        extra: 0,
    });
    group.bench_function("cookie_check", |b| {
        b.iter(|| black_box(signer.check(black_box(&token), TokenKind::Session, 2_000, &binding)))
    });
    group.finish();
    criterion.final_summary();
}
