//! The same recorded request sequence through the real proxy twice — once
//! on the in-process store, once on a real `redis-server` — must get the
//! same decisions. Time is the capture's own (a manual clock, passed to
//! Redis' scripts), so both runs are deterministic.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::redis::RedisServer;
use common::{Palisade, Upstream, http1_client};
use http_body_util::{BodyExt, Full};
use palisade::capture::CaptureRecord;
use palisade::clock::{ManualClock, SharedClock};
use palisade::config::parse_str;
use palisade::store::{CounterStore, LocalStore, RedisSettings, RedisStore, RedisTarget, TimeSource};

fn recorded_sequence() -> Vec<CaptureRecord> {
    let mut records = Vec::new();
    for file in ["replay/regression/mixed.jsonl", "replay/regression/login-gap.jsonl"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let (mut read, bad) =
            palisade::capture::read_capture(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
        assert!(bad.is_empty(), "{file}: {bad:?}");
        // The second capture after the first, in its own time order.
        let offset = records.last().map_or(0.0, |last: &CaptureRecord| last.ts + 60.0) - read[0].ts;
        for record in &mut read {
            record.ts += offset.max(0.0);
        }
        records.extend(read);
    }
    records
}

fn config_text() -> String {
    let base =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/replay/regression/palisade.toml")).unwrap();
    // A quota for the partner, so partner quotas are compared too.
    let base =
        base.replace("name = \"partner-demo\"", "name = \"partner-demo\"\nquota = { requests = 3, period_secs = 60 }");
    assert!(base.contains("quota ="), "the regression configuration still names partner-demo");
    format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n[decision_log]\nsample_allowed = 1.0\n\
         [store]\nhash_key = \"replay\"\n{base}"
    )
}

/// What must match between the runs, per request.
fn decision_of(line: &serde_json::Value) -> String {
    let field = |name: &str| line.get(name).cloned().unwrap_or(serde_json::Value::Null);
    format!(
        "{} {} {} route={} action={} score={} detections={} would={} upstream={} outcome={}",
        field("client"),
        field("method"),
        field("path"),
        field("route"),
        field("action"),
        field("score"),
        field("detections"),
        field("would_action"),
        field("upstream_status"),
        field("login_outcome"),
    )
}

/// Send every record through `palisade` at its recorded time, from its
/// recorded address (via a trusted `X-Forwarded-For`), the upstream
/// answering the recorded status; the decisions from the log.
async fn run(palisade: &Palisade, clock: &ManualClock, records: &[CaptureRecord]) -> Vec<String> {
    let client = http1_client();
    for record in records {
        clock.set(record.ts_nanos());
        let captured = record.to_request().unwrap();
        let mut builder = http::Request::builder()
            .method(captured.method.clone())
            .uri(palisade.url(&record.target))
            .version(captured.version);
        for (name, value) in &captured.headers {
            if !matches!(name.as_str(), "connection" | "content-length" | "transfer-encoding" | "keep-alive") {
                builder = builder.header(name, value);
            }
        }
        builder = builder.header("x-forwarded-for", record.client_ip.to_string());
        if let Some(status) = record.status {
            builder = builder.header("x-test-status", status.to_string());
        }
        let request = builder.body(Full::new(Bytes::from(captured.body.clone().unwrap_or_default()))).unwrap();
        let response = client.request(request).await.expect("palisade answered");
        let _ = response.into_body().collect().await;
        // Login outcomes reach Redis from a background writer; the next
        // request of the sequence must see them, as on the local store.
        palisade.store.flush().await;
    }
    let lines = palisade.log_lines(records.len()).await;
    assert_eq!(lines.len(), records.len(), "one decision line per request");
    lines.iter().map(decision_of).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_and_redis_stores_decide_a_recorded_sequence_alike() {
    let records = recorded_sequence();
    let upstream = Upstream::start().await;
    let server = RedisServer::start();

    let clock = Arc::new(ManualClock::new(records[0].ts_nanos()));
    let shared: SharedClock = clock.clone();
    let mut config = parse_str(&config_text(), "regression.toml").unwrap();
    let store = Arc::new(CounterStore::Local(LocalStore::new(shared.clone())));
    let local = Palisade::start_with(&mut config, &upstream, store, shared).await;
    let in_process = run(&local, &clock, &records).await;
    drop(local);

    let clock = Arc::new(ManualClock::new(records[0].ts_nanos()));
    let shared: SharedClock = clock.clone();
    let mut settings = RedisSettings::new(RedisTarget::Single(server.url()));
    settings.time = TimeSource::Clock;
    settings.timeout = Duration::from_secs(2);
    let redis = RedisStore::start(settings, shared.clone()).await.unwrap();
    assert!(redis.is_up());
    let mut config = parse_str(&config_text(), "regression.toml").unwrap();
    let shared_palisade =
        Palisade::start_with(&mut config, &upstream, Arc::new(CounterStore::Redis(redis)), shared).await;
    let in_redis = run(&shared_palisade, &clock, &records).await;

    let stopped =
        in_process.iter().filter(|d| d.contains("action=\"block\"") || d.contains("action=\"rate_limit\"")).count();
    let differences: Vec<String> = in_process
        .iter()
        .zip(&in_redis)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, (a, b))| format!("request {i}:\n  in process: {a}\n  in Redis:   {b}"))
        .collect();
    let quota_limited = in_process.iter().filter(|d| d.contains("partner.quota")).count();
    println!(
        "{} requests, {stopped} stopped ({quota_limited} by the partner's quota); {} decisions differ",
        records.len(),
        differences.len()
    );
    assert!(differences.is_empty(), "{}", differences.join("\n"));
    assert!(stopped > 20, "the sequence exercises blocks and limits: {stopped}");
    assert!(quota_limited > 0, "the partner ran into its quota");
    assert!(server.keys().len() > 10, "the Redis run counted in Redis");
}
