//! Signature matching cost against the number of rules: the default set,
//! and synthetic sets of 10 to 5,000 rules (literal and regex rules over
//! the user agent, path, query and headers), scanned over a browser
//! request and an attack-tool request. All literals of a field share one
//! automaton and all regexes one multi-pattern regex, so the time should
//! stay nearly flat as the rule count grows.
//!
//! `cargo bench --bench signatures`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use palisade::config::Config;
use palisade::routes::RouteTable;
use palisade::signatures::{RuleSource, SignatureSet};
use palisade::view::RequestView;

/// `count` rules: three in four literal, one in four regex, over several fields.
fn synthetic_rules(count: usize) -> String {
    let mut text = String::new();
    for i in 0..count {
        let (field, matcher) = match i % 8 {
            0 => ("user_agent", format!("contains = \"scanner-{i}/\"")),
            1 => ("path", format!("prefix = \"/probe-{i}/\"")),
            2 => ("query", format!("contains = \"payload{i}=\"")),
            3 => ("header:x-tool", format!("equals = \"tool-{i}\"")),
            4 => ("user_agent", format!("regex = 'botnet{i}/[0-9]+\\.[0-9]+'")),
            5 => ("header:referer", format!("contains = \"spam-{i}.example\"")),
            6 => ("user_agent", format!("contains = [\"crawler-{i}\", \"fetcher-{i}\"]")),
            _ => ("query", format!("regex = 'inject{i}[a-z]{{2,4}}'")),
        };
        text.push_str(&format!("[[rule]]\nid = \"synthetic.r{i}\"\nfield = \"{field}\"\n{matcher}\nscore = 10\n\n"));
    }
    text
}

struct Request {
    method: http::Method,
    uri: http::Uri,
    headers: http::HeaderMap,
}

fn request(target: &str, headers: &[(&'static str, &str)]) -> Request {
    let mut map = http::HeaderMap::new();
    for (name, value) in headers {
        map.append(*name, value.parse().unwrap());
    }
    Request { method: http::Method::GET, uri: target.parse().unwrap(), headers: map }
}

fn scan(
    set: &SignatureSet,
    routes: &RouteTable,
    request: &Request,
    signals: &mut Vec<palisade::signal::Signal>,
) -> usize {
    let path = palisade::normalize::normalize_path(request.uri.path(), true);
    let route: Arc<_> = routes.find(&request.method, &path).clone();
    let view = RequestView::new(
        &request.method,
        http::Version::HTTP_11,
        &request.uri,
        &path,
        &request.headers,
        "192.0.2.1".parse().unwrap(),
        &route,
        None,
    );
    signals.clear();
    set.scan(&view, signals);
    signals.len()
}

fn bench(c: &mut Criterion) {
    let routes = RouteTable::from_config(&Config::default()).unwrap();
    let browser = request(
        "/account/overview?tab=payments&page=2",
        &[
            ("host", "bank.example"),
            ("sec-ch-ua", r#""Chromium";v="156", "Not)A;Brand";v="8""#),
            (
                "user-agent",
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36",
            ),
            ("accept", "text/html,application/xhtml+xml"),
            ("sec-fetch-mode", "navigate"),
            ("referer", "https://bank.example/"),
            ("accept-language", "en-GB,en;q=0.9"),
        ],
    );
    let tool = request(
        "/item?id=1%20UNION%20SELECT%20NULL--",
        &[("host", "a"), ("user-agent", "sqlmap/1.7.2#stable (https://sqlmap.org)"), ("accept", "*/*")],
    );
    let mut group = c.benchmark_group("signatures");
    let default_set = SignatureSet::from_config(&Config::default()).unwrap();
    let mut signals = Vec::new();
    group.bench_function(BenchmarkId::new("default_set_browser", default_set.rule_count()), |b| {
        b.iter(|| black_box(scan(&default_set, &routes, black_box(&browser), &mut signals)))
    });
    group.bench_function(BenchmarkId::new("default_set_sqlmap", default_set.rule_count()), |b| {
        b.iter(|| black_box(scan(&default_set, &routes, black_box(&tool), &mut signals)))
    });
    for count in [10, 100, 1_000, 5_000] {
        let source = RuleSource { name: format!("synthetic-{count}.toml"), text: synthetic_rules(count) };
        let set = SignatureSet::from_sources(&[source], &[], &[]).expect("synthetic rules compile");
        group.bench_function(BenchmarkId::new("synthetic_browser", count), |b| {
            b.iter(|| black_box(scan(&set, &routes, black_box(&browser), &mut signals)))
        });
        group.bench_function(BenchmarkId::new("synthetic_sqlmap", count), |b| {
            b.iter(|| black_box(scan(&set, &routes, black_box(&tool), &mut signals)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
