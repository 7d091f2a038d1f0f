//! The classifier end to end: the shipped model behind the real proxy (in
//! shadow and enforce mode), the same features live and in replay, a model
//! built for other features refused by `check` and by a reload, and
//! `palisade train` writing a model that loads.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use palisade::capture::CaptureRecord;
use palisade::capture::read::OnBadLine;
use palisade::clock::{ManualClock, SharedClock};
use palisade::config::parse_str;
use palisade::model::features::{FEATURE_COUNT, FEATURES, hash_of};
use palisade::replay::{Engine, Inputs};
use palisade::store::{CounterStore, LocalStore};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shipped_model() -> PathBuf {
    root().join("models/palisade-gbdt-v2.json")
}

/// The first `n` requests of the holdout capture whose source contains
/// `source` (all sources for "").
fn holdout(source: &str, n: usize) -> Vec<CaptureRecord> {
    let file = std::fs::File::open(root().join("models/corpus/holdout.jsonl.gz")).unwrap();
    let reader = std::io::BufReader::new(flate2::read::GzDecoder::new(file));
    let (records, bad) = palisade::capture::read_capture(reader);
    assert!(bad.is_empty(), "{bad:?}");
    records.into_iter().filter(|r| r.source.as_deref().unwrap_or("").contains(source)).take(n).collect()
}

fn model_config(mode: &str, extra: &str) -> String {
    format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n[decision_log]\nsample_allowed = 1.0\n{extra}\n\
         [store]\nhash_key = \"model test\"\n\
         [[model]]\nname = \"gbdt\"\npath = {:?}\nmode = \"{mode}\"\nblock_at_probability = 0.9\n",
        shipped_model().display().to_string()
    )
}

/// The raw HTTP/1.1 bytes of a record, header names in their recorded
/// case and order, from its address (a trusted X-Forwarded-For), the
/// upstream told to answer the recorded status.
fn raw_bytes(record: &CaptureRecord) -> Vec<u8> {
    let body = record.body.clone().unwrap_or_default();
    let mut text = format!("{} {} HTTP/1.1\r\n", record.method, record.target);
    for (name, value) in &record.headers {
        if !name.eq_ignore_ascii_case("connection") && !name.eq_ignore_ascii_case("content-length") {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    text.push_str(&format!("X-Forwarded-For: {}\r\n", record.client_ip));
    if let Some(status) = record.status {
        text.push_str(&format!("X-Test-Status: {status}\r\n"));
    }
    if !body.is_empty() || record.method == "POST" {
        text.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    text.push_str("Connection: close\r\n\r\n");
    text.push_str(&body);
    text.into_bytes()
}

/// Send every record through the proxy at its own time; the statuses.
async fn send_all(palisade: &Palisade, clock: &ManualClock, records: &[CaptureRecord]) -> Vec<u16> {
    let mut statuses = Vec::new();
    for record in records {
        clock.set(record.ts_nanos());
        let response = raw_request(palisade.addr(), &raw_bytes(record)).await;
        statuses.push(raw_status(&response).expect("palisade answered"));
    }
    statuses
}

async fn start(config: &str, upstream: &Upstream, at: &CaptureRecord) -> (Palisade, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(at.ts_nanos()));
    let shared: SharedClock = clock.clone();
    let mut config = parse_str(config, "model.toml").unwrap();
    let store = Arc::new(CounterStore::Local(LocalStore::new(shared.clone())));
    (Palisade::start_with(&mut config, upstream, store, shared).await, clock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_proxy_and_replay_compute_identical_features() {
    // A slice of everything: people, apps, partners, stuffing, scanners.
    let records = holdout("", 400);
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("live.jsonl");
    let capture_section = format!("model_features = true\n[capture]\npath = {:?}\n", capture.display().to_string());
    let config = model_config("shadow", &capture_section);
    let (palisade, clock) = start(&config, &upstream, &records[0]).await;
    send_all(&palisade, &clock, &records).await;
    let lines = palisade.log_lines(records.len()).await;
    assert_eq!(lines.len(), records.len(), "every request is logged (sample_allowed = 1)");
    let live: Vec<Vec<Option<f64>>> = lines
        .iter()
        .map(|line| {
            let features = line["features"].as_object().expect("features in the log line");
            assert_eq!(features.len(), FEATURE_COUNT);
            FEATURES.iter().map(|def| features[def.name].as_f64()).collect()
        })
        .collect();
    drop(palisade);

    // The capture the proxy wrote, replayed on the same configuration.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(&capture).unwrap_or_default().lines().count() < records.len() {
        assert!(std::time::Instant::now() < deadline, "the capture holds every request");
        std::thread::sleep(Duration::from_millis(20));
    }
    let config = parse_str(&config.replace(&capture_section, "model_features = true\n"), "model.toml").unwrap();
    let engine = Engine::new(&config).unwrap();
    let mut inputs = Inputs::open(&[capture], OnBadLine::Stop).unwrap();
    let mut replayed: Vec<Vec<Option<f64>>> = Vec::new();
    inputs.for_each(|request, _| {
        let (decision, _) = engine.run(request);
        let features = decision.model().expect("the model stage ran").features;
        replayed.push(features.iter().map(|v| (!v.is_nan()).then_some(*v)).collect());
    });
    assert_eq!(replayed.len(), live.len());
    let login_rows = live
        .iter()
        .filter(|row| row[FEATURES.iter().position(|f| f.name == "has_username").unwrap()].is_some())
        .count();
    assert!(login_rows > 30, "logins (with the credential counters) are among them: {login_rows}");
    // serde_json reads a logged float back to within one unit in the last
    // place; anything more is a real difference.
    let same = |a: &Option<f64>, b: &Option<f64>| match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0),
        (a, b) => a == b,
    };
    for (index, (live, replayed)) in live.iter().zip(&replayed).enumerate() {
        if !live.iter().zip(replayed).all(|(a, b)| same(a, b)) {
            let differences: Vec<String> = FEATURES
                .iter()
                .zip(live.iter().zip(replayed))
                .filter(|(_, (a, b))| !same(a, b))
                .map(|(def, (a, b))| format!("{}: live {a:?}, replay {b:?}", def.name))
                .collect();
            panic!("request {index} ({} {}): {differences:#?}", records[index].method, records[index].target);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_model_logs_what_it_would_do_and_never_acts() {
    // A path scanner with a browser's user agent: the default rules stop
    // only its payload probes; the model would block most of the scan.
    let records = holdout("nuclei", 30);
    let without_model = model_config("shadow", "").split("[[model]]").next().unwrap().to_string();
    let baseline_upstream = Upstream::start().await;
    let (baseline, clock) = start(&without_model, &baseline_upstream, &records[0]).await;
    let baseline_statuses = send_all(&baseline, &clock, &records).await;
    drop(baseline);

    let upstream = Upstream::start().await;
    let (shadow, clock) = start(&model_config("shadow", ""), &upstream, &records[0]).await;
    let statuses = send_all(&shadow, &clock, &records).await;
    assert_eq!(statuses, baseline_statuses, "a shadow model changes no answer");
    assert_eq!(upstream.seen().len(), baseline_upstream.seen().len(), "nor what reaches the upstream");
    let lines = shadow.log_lines(records.len()).await;
    let would_block: Vec<&serde_json::Value> =
        lines.iter().filter(|line| line["would_action"] == "block" && line["action"] != "block").collect();
    assert!(would_block.len() >= records.len() / 2, "the model would block the scan: {lines:#?}");
    for line in &would_block {
        let signal =
            line["signals"].as_array().unwrap().iter().find(|s| s["id"] == "model.gbdt").expect("model signal");
        assert_eq!(signal["shadow"], true);
        assert!(signal["evidence"][0]["value"].as_f64().unwrap() >= 0.9, "{signal}");
        assert!(!line["detections"].as_array().unwrap().iter().any(|d| d == "model.gbdt"), "{line}");
        assert!(line["model"]["gbdt"].as_f64().unwrap() >= 0.9);
    }
    drop(shadow);

    // The same model enforcing blocks the scan.
    let upstream = Upstream::start().await;
    let (enforcing, clock) = start(&model_config("enforce", ""), &upstream, &records[0]).await;
    let statuses = send_all(&enforcing, &clock, &records).await;
    let blocked = statuses.iter().filter(|s| **s == 403).count();
    let blocked_before = baseline_statuses.iter().filter(|s| **s == 403).count();
    assert!(blocked >= blocked_before + would_block.len(), "{statuses:?} against {baseline_statuses:?}");
    let lines = enforcing.log_lines(records.len()).await;
    assert!(
        lines
            .iter()
            .any(|l| l["action"] == "block" && l["detections"].as_array().unwrap().iter().any(|d| d == "model.gbdt"))
    );
}

/// The shipped model, rewritten as if built for another feature table.
fn mismatched_model(path: &Path) {
    let mut file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(shipped_model()).unwrap()).unwrap();
    file["features"]["names"][3] = "header_case".into();
    let names: Vec<String> =
        file["features"]["names"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string()).collect();
    // Built for the first feature schema (v1), before the arrival and browsing features.
    file["features"]["version"] = 1.into();
    file["features"]["hash"] = hash_of(1, names.iter().map(String::as_str)).into();
    std::fs::write(path, serde_json::to_string(&file).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_for_other_features_is_refused_by_check_and_by_reload() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.json");
    std::fs::copy(shipped_model(), &model).unwrap();
    let config = dir.path().join("palisade.toml");
    std::fs::write(&config, "[decision_log]\npath = \"off\"\n\n[[model]]\nname = \"gbdt\"\npath = \"model.json\"\n")
        .unwrap();
    let check = |config: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_palisade"))
            .args(["check", "--config", config.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let good = check(&config);
    assert!(good.status.success(), "{}", String::from_utf8_lossy(&good.stderr));

    let upstream = Upstream::start().await;
    let palisade =
        BinaryPalisade::spawn(&["serve", "--config", config.to_str().unwrap(), "--upstream", &upstream.url()]).await;

    mismatched_model(&model);
    let bad = check(&config);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(stderr.contains("palisade.toml:6: model[0].path"), "{stderr}");
    assert!(stderr.contains("built for feature schema v1"), "{stderr}");
    assert!(stderr.contains("first difference at feature 3"), "{stderr}");
    assert!(stderr.contains("retrain it with `palisade train`"), "{stderr}");

    palisade.signal("HUP");
    assert!(palisade.wait_for_stderr("reload failed").await, "{:#?}", palisade.stderr());
    let reason = palisade.stderr().into_iter().find(|l| l.contains("reload failed")).unwrap();
    assert!(reason.contains("model[0].path") && reason.contains("feature schema"), "{reason}");
    // Still serving on the model it had.
    let answer = send(&http1_client(), request("GET", &format!("http://{}/", palisade.addr), &[], "")).await;
    assert_eq!(answer.status, 200);
}

#[test]
fn palisade_train_writes_a_model_that_loads_and_reports_held_out_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model.json");
    let captures = root().join("models/corpus/captures");
    let mut args: Vec<String> =
        ["train", "--test-source", "hydra", "--test-source", "Chromium", "--trees", "10", "--seed", "3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    args.extend(["--out".to_string(), out.display().to_string()]);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&captures).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    args.extend(files.iter().map(|p| p.display().to_string()));
    let run = || std::process::Command::new(env!("CARGO_BIN_EXE_palisade")).args(&args).output().unwrap();
    let first = run();
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&first.stderr));
    assert!(stdout.contains("ROC-AUC"), "{stdout}");
    assert!(stdout.contains("held out 2 sources"), "{stdout}");
    let written = std::fs::read(&out).unwrap();
    let model = palisade::model::Model::load(&out).unwrap();
    assert_eq!(model.tree_count(), 10);
    assert!(run().status.success());
    assert_eq!(std::fs::read(&out).unwrap(), written, "the same captures and seed give the same bytes");
}

/// What `models/train.sh` checks, on the corpus it generates (committed):
/// the shipped model is what `palisade train` makes from it today. A
/// change to a feature's inputs (login counting once) silently left the
/// shipped model trained on yesterday's features; this test says so.
#[test]
fn the_shipped_model_is_what_train_makes_from_the_committed_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("palisade-gbdt-v2.json");
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("models/corpus/captures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files.push(root().join("models/corpus/generated.jsonl.gz"));
    let mut args: Vec<String> = ["train"].iter().map(|s| s.to_string()).collect();
    args.extend(files.iter().map(|p| p.display().to_string()));
    for source in ["hydra", "Go net/http", "firefox", "dart:io"] {
        args.extend(["--test-source".to_string(), source.to_string()]);
    }
    // The shape `models/train.sh` asks for (80 trees of depth 4), not train's defaults.
    args.extend(
        ["--trees", "80", "--depth", "4", "--seed", "1", "--name", "palisade-gbdt", "--out"]
            .iter()
            .map(|s| s.to_string()),
    );
    args.push(out.display().to_string());
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_palisade")).args(&args).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(
        std::fs::read(&out).unwrap() == std::fs::read(shipped_model()).unwrap(),
        "models/palisade-gbdt-v2.json is not what `palisade train` makes from models/corpus today: \
         run `models/train.sh --write` and check the held-out metrics and the replay comparison (docs/model.md)"
    );
}
