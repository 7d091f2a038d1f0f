//! `GET /api/stats`: what the dashboard draws, read from what palisade
//! already keeps — the metrics (counters and latency histograms) and the
//! counter store — when it is asked, so serving requests costs nothing
//! more. Counters are totals since start; the page turns them into rates.

use std::sync::atomic::Ordering;

use http::StatusCode;
use serde_json::{Value, json};

use super::{AdminContext, Answer, Served};
use crate::clock::Clock as _;
use crate::metrics::LatencyHistogram;
use crate::signal::Action;
use crate::store::Key;

/// Rows in each "top" list.
const TOP: usize = 8;

fn quantiles(histogram: &LatencyHistogram, unit_per_second: f64) -> Value {
    let at = |q: f64| histogram.quantile(q).map(|d| (d.as_secs_f64() * unit_per_second * 1000.0).round() / 1000.0);
    json!({ "p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "p999": at(0.999) })
}

/// Failure counts per login scope (`login:ROUTE:SCOPE:ID:f`), largest first.
fn under_attack<A: Served>(context: &AdminContext<A>) -> Value {
    let app = context.app.load();
    let now = app.pipeline().clock().now();
    let rows = app.pipeline().store().top_counts(":f", now, 200);
    let mut by_scope = serde_json::Map::new();
    for scope in ["ip", "net", "fp", "user"] {
        let marker = format!(":{scope}:");
        let top: Vec<Value> = rows
            .iter()
            .filter_map(|(key, failures)| {
                let (route_part, rest) = key.strip_prefix("login:")?.split_once(&marker)?;
                let id = rest.strip_suffix(":f")?;
                Some(json!({ "route": route_part, "id": id, "failures": failures.round() }))
            })
            .take(TOP)
            .collect();
        by_scope.insert(scope.to_string(), Value::Array(top));
    }
    Value::Object(by_scope)
}

pub async fn stats<A: Served>(context: &AdminContext<A>) -> Answer {
    let metrics = &context.metrics;
    let by_action = metrics.requests_by_action();
    let mut requests = serde_json::Map::new();
    for action in Action::ALL {
        let count = by_action.iter().find(|(a, _)| *a == action).map_or(0, |(_, n)| *n);
        requests.insert(action.to_string(), json!(count));
    }
    let total: u64 = by_action.iter().map(|(_, n)| n).sum();
    let detections: Vec<Value> = metrics
        .detection_counts()
        .into_iter()
        .filter(|(_, shadow, _)| !shadow)
        .take(TOP)
        .map(|(id, _, count)| json!({ "id": &*id, "count": count }))
        .collect();
    let redis = metrics.store().map(|store| {
        let (up, fallback_s) = store.health();
        json!({
            "up": up,
            "fallback_s": (fallback_s * 10.0).round() / 10.0,
            "roundtrip_ms": quantiles(&store.roundtrip, 1000.0),
            "errors_total": store.errors_total(),
            "fallback_requests_total": store.fallback_requests.load(Ordering::Relaxed),
            "cached_denials_total": store.cached_denials.load(Ordering::Relaxed),
            "writes_dropped_total": store.writes_dropped.load(Ordering::Relaxed),
        })
    });
    let app = context.app.load_full();
    let shards: Vec<Key> = app
        .pipeline()
        .routes()
        .routes()
        .filter(|route| route.abuse.is_some())
        .map(|route| route.name.clone())
        .collect();
    let bans = app.pipeline().store().bans(&shards, app.pipeline().clock().now()).await;
    let challenged = requests.get("challenge").cloned().unwrap_or(json!(0));
    let body = json!({
        "time_ms": crate::clock::SystemClock.now() / 1_000_000,
        "uptime_s": context.started.elapsed().as_secs(),
        "requests_total": total,
        "requests": requests,
        "rejected_total": metrics.rejected_requests.load(Ordering::Relaxed),
        "detections": detections,
        "decision_latency_us": quantiles(&metrics.decision_latency, 1_000_000.0),
        "upstream_latency_ms": quantiles(&metrics.upstream_latency, 1000.0),
        "under_attack": under_attack(context),
        "bans_in_force": bans.len(),
        // palisade forwards challenged requests for the application to
        // step up; it serves no challenge itself, so it cannot see solves.
        "challenges": { "issued_total": challenged, "solved_total": Value::Null },
        "redis": redis,
        "reloads_total": metrics.reloads_ok.load(Ordering::Relaxed),
        "reload_failures_total": metrics.reloads_failed.load(Ordering::Relaxed),
    });
    Answer::json(StatusCode::OK, &body)
}
