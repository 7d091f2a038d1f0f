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
use palisade::credential::ResponseFacts;
use palisade::pipeline::{Pipeline, PipelineBuilder};
use palisade::request_id::RequestIds;
use palisade::session::token::{Signer, Token, TokenKind};
use palisade::store::{CounterStore, LocalStore};
use palisade::view::RequestView;

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

fn pipeline(session: bool) -> (Pipeline, Arc<ManualClock>) {
    let mut config = Config::default();
    config.store.hash_key = "bench".into();
    config.session.enabled = session;
    config.session.secret = "bench-secret".into();
    let clock = Arc::new(ManualClock::new(1_800_000_000_000_000_000));
    let shared: SharedClock = clock.clone();
    let store = Arc::new(CounterStore::Local(LocalStore::new(shared.clone())));
    let pipeline = PipelineBuilder::new(&config).build(store, shared, RequestIds::new(1)).expect("default config");
    (pipeline, clock)
}

/// Route, view, evaluate and (on login routes) observe: what the proxy
/// handler runs per request.
fn run(pipeline: &Pipeline, request: &Request) -> palisade::signal::Action {
    let client: std::net::IpAddr = "203.0.113.7".parse().unwrap();
    let (path, route) = pipeline.route(&request.method, request.uri.path());
    let route = route.clone();
    let body = route.inspects_body().then_some(&request.body[..]);
    let view = RequestView::new(
        &request.method,
        http::Version::HTTP_11,
        &request.uri,
        &path,
        &request.headers,
        client,
        &route,
        body,
    );
    let decision = pipeline.evaluate(&view);
    drop(view);
    pipeline.observe(&route, &decision, &ResponseFacts::status(200));
    decision.action()
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    let mut group = criterion.benchmark_group("session");
    group.throughput(Throughput::Elements(1));
    for enabled in [false, true] {
        let (pipeline, clock) = pipeline(enabled);
        // A page load without a cookie sets one (when on); later requests carry it.
        let first = run_for_cookie(&pipeline, &request(http::Method::GET, "/signin", None, ""));
        let cookie = first.as_deref();
        let page = request(http::Method::GET, "/signin", cookie, "");
        let login = request(http::Method::POST, "/login", cookie, "username=alice%40example.com&password=pw");
        let side = if enabled { "on" } else { "off" };
        group.bench_function(format!("page_load/{side}"), |b| {
            b.iter(|| {
                clock.advance(Duration::from_micros(1));
                black_box(run(&pipeline, black_box(&page)))
            })
        });
        group.bench_function(format!("login/{side}"), |b| {
            b.iter(|| {
                clock.advance(Duration::from_micros(1));
                black_box(run(&pipeline, black_box(&login)))
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

/// The session cookie a page load sets, as `name=value`.
fn run_for_cookie(pipeline: &Pipeline, request: &Request) -> Option<String> {
    let client: std::net::IpAddr = "203.0.113.7".parse().unwrap();
    let (path, route) = pipeline.route(&request.method, request.uri.path());
    let route = route.clone();
    let view = RequestView::new(
        &request.method,
        http::Version::HTTP_11,
        &request.uri,
        &path,
        &request.headers,
        client,
        &route,
        None,
    );
    let decision = pipeline.evaluate(&view);
    let set = decision.session?.set_cookie?;
    Some(set.split(';').next()?.to_string())
}
