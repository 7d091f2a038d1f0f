//! Capture and replay end to end: the real `palisade` binary replaying,
//! diffing, gating, importing and explaining, the replay engine on a
//! capture with long gaps, and capture mode behind the real proxy.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use palisade::capture::{CaptureRecord, read_capture};
use palisade::replay::{Engine, Inputs};
use palisade::signal::Action;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shared captures, in name order.
fn shared_captures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("replay/captures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files
}

fn palisade(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .env("PALISADE_LOG", "warn")
        .current_dir(root())
        .output()
        .expect("the palisade binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A capture file of `records` in `dir`.
fn write_capture(dir: &Path, name: &str, records: &[CaptureRecord]) -> PathBuf {
    let path = dir.join(name);
    let lines: Vec<String> = records.iter().map(|r| serde_json::to_string(r).unwrap()).collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

const CHROME_UA: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";

/// A browser's login POST at `ts` from `ip`, answered with `status`.
fn browser_login(ts: f64, ip: &str, status: u16) -> CaptureRecord {
    let mut record = CaptureRecord::new(
        ts,
        ip.parse().unwrap(),
        "POST",
        "/login",
        vec![
            ("Host".into(), "shop.example".into()),
            ("User-Agent".into(), CHROME_UA.into()),
            ("Accept".into(), "text/html".into()),
            ("Accept-Language".into(), "en-US".into()),
            ("Content-Type".into(), "application/x-www-form-urlencoded".into()),
        ],
    );
    record.body = Some("username=alice&password=<redacted>".into());
    record.status = Some(status);
    record.label = Some("human".into());
    record
}

/// A configuration whose login route allows `requests` per minute.
fn login_limit_config(requests: u32) -> String {
    format!(
        "[[route]]\nname = \"login\"\nprofile = \"login\"\npath = \"/login\"\nmethods = [\"POST\"]\n\
         rate_limit = {{ requests = {requests}, period_secs = 60, burst = {requests} }}\n"
    )
}

// ---------------------------------------------------------------------------
// Replay: determinism, time, reports
// ---------------------------------------------------------------------------

#[test]
fn replaying_the_same_captures_twice_gives_byte_identical_json_and_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let captures = shared_captures();
    let run = |n: usize| {
        let decisions = dir.path().join(format!("decisions-{n}.jsonl"));
        let mut args = vec!["replay", "--format", "json", "--quiet", "--decisions", path_str(&decisions)];
        args.extend(captures.iter().map(|p| path_str(p)));
        let output = palisade(&args);
        assert!(output.status.success(), "{}", text(&output.stderr));
        (output.stdout, std::fs::read(&decisions).unwrap())
    };
    let (first_json, first_decisions) = run(1);
    let (second_json, second_decisions) = run(2);
    assert_eq!(text(&first_json), text(&second_json));
    assert_eq!(first_decisions, second_decisions);

    // With a baseline too: the diff's groups and examples come out in the same order.
    let with_baseline = || {
        let mut args = vec!["replay", "-q", "--format", "json", "-c", "replay/regression/palisade.toml"];
        args.extend(["--baseline", "palisade.example.toml"]);
        args.extend(captures.iter().map(|p| path_str(p)));
        let output = palisade(&args);
        assert!(output.status.success(), "{}", text(&output.stderr));
        output.stdout
    };
    let (first_diff, second_diff) = (with_baseline(), with_baseline());
    assert_eq!(text(&first_diff), text(&second_diff));
    let diff: serde_json::Value = serde_json::from_slice(&first_diff).unwrap();
    assert!(diff["diff"]["changed"].as_u64().unwrap() > 0, "allowlisting the partner changes something");

    let report: serde_json::Value = serde_json::from_slice(&first_json).unwrap();
    assert_eq!(report["summary"]["requests"], 300);
    assert_eq!(report["summary"]["labels"]["human"]["requests"], 34);
    assert_eq!(report["summary"]["labels"]["bot"]["requests"], 226);
    assert_eq!(report["passed"], true);
    let lines: Vec<serde_json::Value> =
        text(&first_decisions).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 300);
    let sqlmap = lines.iter().find(|l| l["capture"] == "sqlmap-1.7.2-get.jsonl").unwrap();
    assert_eq!(sqlmap["action"], "block");
    assert!(sqlmap["request_id"].as_str().unwrap().len() == 16);
    assert!(sqlmap["detections"].as_array().unwrap().iter().any(|d| d == "ua.attack_tool"), "{sqlmap}");
    assert!(sqlmap["signals"][0]["evidence"].is_array(), "{sqlmap}");
}

#[test]
fn a_capture_with_gaps_of_hours_behaves_like_real_time() {
    let dir = tempfile::tempdir().unwrap();
    let start = 1_795_916_406.0;
    // Six logins in half a second, then one three hours later, from one address.
    let mut records: Vec<CaptureRecord> =
        (0..6).map(|i| browser_login(start + f64::from(i) * 0.1, "100.64.7.10", 200)).collect();
    records.push(browser_login(start + 3.0 * 3600.0, "100.64.7.10", 200));
    let capture = write_capture(dir.path(), "gap.jsonl", &records);
    let config = palisade::config::parse_str(&login_limit_config(3), "gap.toml").unwrap();
    let engine = Engine::new(&config).unwrap();
    let mut inputs = Inputs::open(&[capture], Default::default()).unwrap();
    let mut actions = Vec::new();
    let started = std::time::Instant::now();
    inputs.for_each(|request, _| actions.push(engine.run(request).0.action()));
    assert!(started.elapsed() < Duration::from_secs(5), "replay does not wait for the clock");
    let limited: Vec<bool> = actions.iter().map(|a| *a == Action::RateLimit).collect();
    assert_eq!(limited, [false, false, false, true, true, true, false], "{actions:?}");
}

#[test]
fn requests_of_several_captures_are_interleaved_by_time() {
    let dir = tempfile::tempdir().unwrap();
    // Two clients' captures overlapping in time; each alone stays under a
    // per-client limit, so the order only shows in the decisions file.
    let a = write_capture(
        dir.path(),
        "a.jsonl",
        &[browser_login(10.0, "192.0.2.1", 200), browser_login(30.0, "192.0.2.1", 200)],
    );
    let b = write_capture(dir.path(), "b.jsonl", &[browser_login(20.0, "192.0.2.2", 200)]);
    let decisions = dir.path().join("d.jsonl");
    let output = palisade(&["replay", "-q", "--decisions", path_str(&decisions), path_str(&a), path_str(&b)]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let order: Vec<(String, u64)> = std::fs::read_to_string(&decisions)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| (v["capture"].as_str().unwrap().to_string(), v["line"].as_u64().unwrap()))
        .collect();
    assert_eq!(order, [("a.jsonl".to_string(), 1), ("b.jsonl".to_string(), 1), ("a.jsonl".to_string(), 2)]);
}

#[test]
fn the_text_report_has_actions_detections_routes_and_a_confusion_matrix() {
    let mut args = vec!["replay", "-q"];
    let captures = shared_captures();
    args.extend(captures.iter().map(|p| path_str(p)));
    let output = palisade(&args);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report = text(&output.stdout);
    for needle in
        ["by action", "by detection id", "ua.attack_tool", "by route", "login", "confusion matrix", "bot recall"]
    {
        assert!(report.contains(needle), "no {needle:?} in\n{report}");
    }
    let human = report.lines().find(|l| l.trim_start().starts_with("human ")).expect("a human row");
    let numbers: Vec<&str> = human.split_whitespace().skip(1).collect();
    assert_eq!(numbers[0], "34", "{human}");
}

#[test]
fn gzip_captures_replay_like_plain_ones() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let plain = root().join("replay/captures/hydra-9.4-http-post-form.jsonl");
    let gz = dir.path().join("hydra.jsonl.gz");
    let mut encoder =
        flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::default());
    encoder.write_all(&std::fs::read(&plain).unwrap()).unwrap();
    encoder.finish().unwrap();
    let summary = |path: &Path| {
        let output = palisade(&["replay", "-q", "--format", "json", path_str(path)]);
        assert!(output.status.success(), "{}", text(&output.stderr));
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()["summary"].clone()
    };
    assert_eq!(summary(&plain), summary(&gz));
}

#[test]
fn bad_capture_lines_are_reported_by_number_and_skipped_or_stopped_at() {
    let dir = tempfile::tempdir().unwrap();
    let good = serde_json::to_string(&browser_login(1.0, "192.0.2.1", 200)).unwrap();
    let capture = dir.path().join("bad.jsonl");
    std::fs::write(&capture, format!("{good}\nnot json\n{good}\n{{\"ts\":1}}\n")).unwrap();
    let skipped = palisade(&["replay", "-q", "--format", "json", path_str(&capture)]);
    assert!(skipped.status.success(), "{}", text(&skipped.stderr));
    let stderr = text(&skipped.stderr);
    assert!(stderr.contains("bad.jsonl: line 2:") && stderr.contains("(skipped)"), "{stderr}");
    assert!(stderr.contains("line 4:"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&skipped.stdout).unwrap();
    assert_eq!(report["summary"]["requests"], 2);
    assert_eq!(report["captures"][0]["bad_lines"][0]["line"], 2);

    let stopped = palisade(&["replay", "-q", "--on-bad-line", "stop", path_str(&capture)]);
    assert_eq!(stopped.status.code(), Some(2));
    assert!(text(&stopped.stderr).contains("line 2:") && text(&stopped.stderr).contains("(stopped)"));
    assert!(text(&stopped.stdout).contains("requests: 1"), "{}", text(&stopped.stdout));
}

// ---------------------------------------------------------------------------
// Diff against a baseline
// ---------------------------------------------------------------------------

#[test]
fn the_diff_names_a_tightened_rate_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (new, old) = (dir.path().join("new.toml"), dir.path().join("old.toml"));
    std::fs::write(&new, login_limit_config(2)).unwrap();
    std::fs::write(&old, login_limit_config(100)).unwrap();
    let records: Vec<CaptureRecord> = (0..8).map(|i| browser_login(100.0 + f64::from(i), "100.64.7.10", 200)).collect();
    let capture = write_capture(dir.path(), "logins.jsonl", &records);
    let output = palisade(&[
        "replay",
        "-q",
        "--format",
        "json",
        "--config",
        path_str(&new),
        "--baseline",
        path_str(&old),
        path_str(&capture),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let diff = &report["diff"];
    assert_eq!(diff["changed"], 6, "{diff:#}");
    let group = &diff["groups"][0];
    assert_eq!(group["detection"], "rate.client_route");
    assert_eq!((group["change"].as_str(), group["action"].as_str()), (Some("stricter"), Some("rate_limit")));
    let from: u64 = group["others"].as_object().unwrap().values().map(|n| n.as_u64().unwrap()).sum();
    assert_eq!(from, 6, "{group:#}");
    assert_eq!(group["labels"]["human"], 6);
    assert!(group["summary"].as_str().unwrap().starts_with("rule rate.client_route would newly rate_limit 6 requests"));
    assert_eq!(group["examples"].as_array().unwrap().len(), 3);
    assert_eq!(group["examples"][0]["line"], 3);
    assert_eq!(report["baseline"]["by_action"]["rate_limit"], 0);
}

#[test]
fn the_diff_names_a_new_signature_rule_and_counts_its_labels() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.toml"),
        "[[rule]]\nid = \"test.curl\"\ndescription = \"curl names itself\"\nfalse_positives = \"scripts\"\n\
         field = \"user_agent\"\ncontains = \"curl/\"\nscore = 79\naction = \"block\"\n",
    )
    .unwrap();
    let new = dir.path().join("new.toml");
    let old = dir.path().join("old.toml");
    // An absolute path: `parse_str` validates before it knows the file's folder.
    let rules = dir.path().join("rules.toml");
    std::fs::write(&new, format!("[signatures]\nbuiltin = false\npaths = [{:?}]\n", path_str(&rules))).unwrap();
    std::fs::write(&old, "[signatures]\nbuiltin = false\n").unwrap();
    let curl = root().join("replay/captures/curl-7.88.1.jsonl");
    let human = root().join("replay/captures/chromium-156-human-login.jsonl");
    let output = palisade(&[
        "replay",
        "-q",
        "-c",
        path_str(&new),
        "--baseline",
        path_str(&old),
        path_str(&curl),
        path_str(&human),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report = text(&output.stdout);
    let sentence = report.lines().find(|l| l.contains("rule test.curl would newly block")).expect(&report);
    assert!(sentence.trim_end().ends_with(" bot") && !sentence.contains("human"), "{sentence}");
    assert!(report.contains("curl-7.88.1.jsonl:1 [bot]"), "{report}");
}

// ---------------------------------------------------------------------------
// Gates
// ---------------------------------------------------------------------------

#[test]
fn the_false_positive_gate_fails_when_people_are_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tight.toml");
    std::fs::write(&config, login_limit_config(1)).unwrap();
    let human = root().join("replay/captures/chromium-156-human-login.jsonl");
    let failing =
        palisade(&["replay", "-q", "-c", path_str(&config), "--max-false-positive-rate", "0.01", path_str(&human)]);
    assert_eq!(failing.status.code(), Some(1), "{}", text(&failing.stdout));
    let stderr = text(&failing.stderr);
    assert!(stderr.contains("gate failed: human false-positive rate"), "{stderr}");
    assert!(stderr.contains("above --max-false-positive-rate 0.01"), "{stderr}");
    let passing = palisade(&["replay", "-q", "--max-false-positive-rate", "0.01", path_str(&human)]);
    assert!(passing.status.success(), "{}", text(&passing.stderr));
}

#[test]
fn the_bot_recall_gate_fails_when_bots_get_through() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("open.toml");
    std::fs::write(&config, "route = []\n[signatures]\nbuiltin = false\n").unwrap();
    let hydra = root().join("replay/captures/hydra-9.4-http-post-form.jsonl");
    let failing = palisade(&["replay", "-q", "-c", path_str(&config), "--min-bot-recall", "0.5", path_str(&hydra)]);
    assert_eq!(failing.status.code(), Some(1));
    assert!(text(&failing.stderr).contains("gate failed: bot recall 0.0000 (0 of 60 bot requests stopped)"));
    let passing = palisade(&["replay", "-q", "--min-bot-recall", "0.5", path_str(&hydra)]);
    assert!(passing.status.success(), "{}", text(&passing.stderr));
    // A gate with nothing to measure fails rather than passing silently.
    let unlabeled = palisade(&[
        "replay",
        "-q",
        "--min-bot-recall",
        "0.5",
        path_str(&root().join("replay/regression/login-gap.jsonl")),
    ]);
    assert_eq!(unlabeled.status.code(), Some(1));
}

#[test]
fn the_expect_gate_names_the_request_that_changed() {
    let dir = tempfile::tempdir().unwrap();
    let expect = dir.path().join("wrong.expect.jsonl");
    std::fs::write(
        &expect,
        "{\"capture\":\"sqlmap-1.7.2-get.jsonl\",\"line\":3,\"action\":\"allow\",\"note\":\"deliberately wrong\"}\n\
         {\"capture\":\"sqlmap-1.7.2-get.jsonl\",\"line\":4,\"action\":\"block\"}\n\
         {\"capture\":\"sqlmap-1.7.2-get.jsonl\",\"line\":9999,\"action\":\"block\"}\n",
    )
    .unwrap();
    let sqlmap = root().join("replay/captures/sqlmap-1.7.2-get.jsonl");
    let output = palisade(&["replay", "-q", "--expect", path_str(&expect), path_str(&sqlmap)]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("1 of 3 expectations"), "{stderr}");
    assert!(
        stderr.contains("sqlmap-1.7.2-get.jsonl:3: expected allow, got block (expectation line 1): deliberately wrong"),
        "{stderr}"
    );
    assert!(stderr.contains("sqlmap-1.7.2-get.jsonl:9999: expected block, but it was not replayed"), "{stderr}");

    let bad = dir.path().join("bad.expect.jsonl");
    std::fs::write(&bad, "{\"line\":3,\"action\":\"allow\"}\n").unwrap();
    let output = palisade(&["replay", "-q", "--expect", path_str(&bad), path_str(&sqlmap)]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("bad.expect.jsonl:1: give either"), "{}", text(&output.stderr));
}

#[test]
fn written_expectations_pass_on_the_same_replay() {
    let dir = tempfile::tempdir().unwrap();
    let expect = dir.path().join("now.expect.jsonl");
    let mixed = root().join("replay/regression/mixed.jsonl");
    let write = palisade(&["replay", "-q", "--write-expect", path_str(&expect), path_str(&mixed)]);
    assert!(write.status.success(), "{}", text(&write.stderr));
    assert_eq!(std::fs::read_to_string(&expect).unwrap().lines().count(), 300);
    assert!(std::fs::read_to_string(&expect).unwrap().starts_with("{\"action\":"));
    let check = palisade(&["replay", "-q", "--expect", path_str(&expect), path_str(&mixed)]);
    assert!(check.status.success(), "{}", text(&check.stderr));
}

#[test]
fn the_regression_captures_meet_their_expectations() {
    let config = "replay/regression/palisade.toml";
    let mixed = palisade(&[
        "replay",
        "-q",
        "-c",
        config,
        "--expect",
        "replay/regression/mixed.expect.jsonl",
        "--max-false-positive-rate",
        "0",
        "--min-bot-recall",
        "0.6",
        "replay/regression/mixed.jsonl",
    ]);
    assert!(mixed.status.success(), "{}\n{}", text(&mixed.stderr), text(&mixed.stdout));
    let gap = palisade(&[
        "replay",
        "-q",
        "-c",
        config,
        "--expect",
        "replay/regression/login-gap.expect.jsonl",
        "replay/regression/login-gap.jsonl",
    ]);
    assert!(gap.status.success(), "{}\n{}", text(&gap.stderr), text(&gap.stdout));
}

// ---------------------------------------------------------------------------
// Import
// ---------------------------------------------------------------------------

#[test]
fn a_har_file_imports_with_secrets_redacted_and_replays() {
    let dir = tempfile::tempdir().unwrap();
    let har = dir.path().join("session.har");
    std::fs::write(
        &har,
        format!(
            r#"{{"log":{{"version":"1.2","creator":{{"name":"WebInspector","version":"537.36"}},"entries":[
              {{"startedDateTime":"2026-11-29T01:40:00.000Z","request":{{"method":"GET","url":"https://shop.example/login","httpVersion":"HTTP/1.1",
                "headers":[{{"name":"Host","value":"shop.example"}},{{"name":"User-Agent","value":"{CHROME_UA}"}},{{"name":"Cookie","value":"session=abc"}}]}},
                "response":{{"status":200}}}},
              {{"startedDateTime":"2026-11-29T01:40:05.250Z","request":{{"method":"POST","url":"https://shop.example/login","httpVersion":"HTTP/1.1",
                "headers":[{{"name":"Host","value":"shop.example"}},{{"name":"User-Agent","value":"{CHROME_UA}"}},{{"name":"Content-Type","value":"application/json"}}],
                "postData":{{"mimeType":"application/json","text":"{{\"username\":\"alice\",\"password\":\"hunter2\"}}"}}}},
                "response":{{"status":401}},"serverIPAddress":"198.51.100.9"}},
              {{"startedDateTime":"not a time","request":{{"method":"GET","url":"https://shop.example/"}}}}
            ]}}}}"#
        ),
    )
    .unwrap();
    let out = dir.path().join("har.jsonl");
    let output = palisade(&["import", "har", path_str(&har), "-o", path_str(&out), "--label", "human"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("line 3: entry: startedDateTime"), "{}", text(&output.stderr));
    let written = std::fs::read_to_string(&out).unwrap();
    assert!(!written.contains("hunter2") && !written.contains("session=abc"), "{written}");
    let (records, bad) = read_capture(written.as_bytes());
    assert!(bad.is_empty());
    assert_eq!(records.len(), 2);
    let post = &records[1];
    assert_eq!(post.client_ip.to_string(), "192.0.2.1");
    assert_eq!(post.ts, 1_795_916_405.25);
    assert_eq!(post.body.as_deref(), Some(r#"{"username":"alice","password":"<redacted>"}"#));
    assert_eq!((post.status, post.label.as_deref()), (Some(401), Some("human")));

    let replay = palisade(&["replay", "-q", "--format", "json", path_str(&out)]);
    assert!(replay.status.success(), "{}", text(&replay.stderr));
    let report: serde_json::Value = serde_json::from_slice(&replay.stdout).unwrap();
    assert_eq!(report["summary"]["requests"], 2);
    let login: u64 =
        report["summary"]["by_route"]["login"].as_object().unwrap().values().map(|n| n.as_u64().unwrap()).sum();
    assert_eq!(login, 1);
}

#[test]
fn an_nginx_log_imports_with_bad_lines_numbered() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    std::fs::write(
        &log,
        "203.0.113.7 - - [29/Nov/2026:01:27:44 +0000] \"GET /login HTTP/1.0\" 200 512 \"-\" \"Mozilla/5.0 (Hydra)\"\n\
         203.0.113.7 - - [29/Nov/2026:01:27:44 +0000] \"-\" 400 0 \"-\" \"-\"\n\
         100.64.7.10 - alice [29/Nov/2026:02:27:45 +0100] \"GET /account?password=x HTTP/1.1\" 200 9 \"https://shop.example/\" \"sqlmap/1.7.2#stable\"\n",
    )
    .unwrap();
    let out = dir.path().join("nginx.jsonl");
    let output = palisade(&["import", "nginx", path_str(&log), "--output", path_str(&out), "--label", "bot"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("access.log: line 2:") && stderr.contains("(skipped)"), "{stderr}");
    assert!(stderr.contains("2 requests written"), "{stderr}");
    let (records, _) = read_capture(std::fs::read_to_string(&out).unwrap().as_bytes());
    assert_eq!(records[0].headers, [("User-Agent".to_string(), "Mozilla/5.0 (Hydra)".to_string())]);
    assert_eq!(records[1].ts, 1_795_915_665.0);
    assert_eq!(records[1].target, "/account?password=<redacted>");
    assert_eq!(records[1].headers[1], ("Referer".to_string(), "https://shop.example/".to_string()));

    let replay = palisade(&["replay", "-q", "--min-bot-recall", "1", path_str(&out)]);
    assert!(replay.status.success(), "attack tools in an nginx log are blocked: {}", text(&replay.stdout));

    let stopped_out = dir.path().join("stopped.jsonl");
    let stop = palisade(&["import", "nginx", path_str(&log), "-o", path_str(&stopped_out), "--on-bad-line", "stop"]);
    assert_eq!(stop.status.code(), Some(2));
    assert!(text(&stop.stderr).contains("(stopped)"));
    assert_eq!(std::fs::read_to_string(&stopped_out).unwrap().lines().count(), 1);
}

// ---------------------------------------------------------------------------
// Explain
// ---------------------------------------------------------------------------

#[test]
fn explain_prints_every_stage_of_a_capture_line() {
    let output = palisade(&["explain", "--capture-line", "5", "replay/captures/hydra-9.4-http-post-form.jsonl"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let out = text(&output.stdout);
    for needle in [
        "POST /login HTTP/1.0 from 203.0.113.7",
        "line 5, label bot, 4 earlier requests replayed first",
        "route        login (profile login",
        "username     (none found in the body)",
        "identity     anonymous",
        "signatures  ",
        "ua.attack_tool",
        "penalty",
        "score        80 (base)",
        "action       block",
    ] {
        assert!(out.contains(needle), "no {needle:?} in\n{out}");
    }
    let missing = palisade(&["explain", "--capture-line", "999", "replay/captures/hydra-9.4-http-post-form.jsonl"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("has no request on line 999"));
}

#[test]
fn explain_reads_a_raw_request_on_stdin_and_names_the_partner() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("partner.toml");
    std::fs::write(
        &config,
        "[[partner]]\nname = \"acme\"\napi_key_sha256 = [\"c01f04acc048488804b57a334837294a74f1bf2f9a961f84ad8f191e64e53740\"]\n",
    )
    .unwrap();
    let explain = |args: &[&str], input: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_palisade"))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let request = "POST /login HTTP/1.1\nHost: shop.example\nUser-Agent: python-requests/2.34.2\nX-API-Key: pk_live_partner_demo\n\
                   Content-Type: application/json\nContent-Length: 19\n\n{\"username\":\"bob\"}\n";
    let output = explain(&["explain", "--config", path_str(&config), "--client-ip", "198.51.100.7", "-"], request);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let out = text(&output.stdout);
    assert!(out.contains("from 198.51.100.7"), "{out}");
    assert!(out.contains("identity     partner acme (by api_key)"), "{out}");
    assert!(out.contains("username     bob"), "{out}");
    assert!(out.contains("action       allow"), "{out}");
    let garbage = explain(&["explain", "-"], "hello\n\n");
    assert_eq!(garbage.status.code(), Some(2));
}

// ---------------------------------------------------------------------------
// Capture mode behind the real proxy
// ---------------------------------------------------------------------------

/// The capture file's records, waiting up to 3 s for `at_least` of them
/// (the writer is a background thread).
async fn captured(path: &Path, at_least: usize) -> (String, Vec<CaptureRecord>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let (records, bad) = read_capture(text.as_bytes());
        assert!(bad.is_empty(), "{bad:?}");
        if records.len() >= at_least || tokio::time::Instant::now() > deadline {
            return (text, records);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every way of writing a password that a field-by-field redactor could
/// miss: compressed, UTF-16 and multipart bodies with encoded names, and
/// dressed-up form names. None may leave the password in the capture file,
/// whether the body is kept (redacted) or dropped whole.
#[tokio::test]
async fn capture_mode_never_keeps_a_password_however_the_body_is_written() {
    use std::io::Write as _;
    const SECRET: &str = "Hunter2-Capture-S3cret";
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("capture.jsonl");
    let config = format!("[capture]\npath = {:?}\n", path.display().to_string());
    let palisade = Palisade::start(&config, &upstream).await;
    let client = http1_client();
    let form = format!("username=alice&password={SECRET}");
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(form.as_bytes()).unwrap();
    let gzipped = gzip.finish().unwrap();
    let utf16: Vec<u8> = form.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let multipart = format!(
        "--b\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\nalice\r\n\
         --b\r\nContent-Disposition: form-data; name*=UTF-8\'\'p%61ssword\r\n\r\n{SECRET}\r\n--b--\r\n"
    );
    let form_type = "application/x-www-form-urlencoded";
    let bodies: Vec<(&str, Option<&str>, Vec<u8>)> = vec![
        (form_type, Some("gzip"), gzipped),
        ("application/x-www-form-urlencoded; charset=utf-16le", None, utf16),
        ("multipart/form-data; boundary=b", None, multipart.into_bytes()),
        (form_type, None, format!("username=alice&password[]={SECRET}").into_bytes()),
        (form_type, None, format!("username=alice;password={SECRET}").into_bytes()),
        (form_type, None, format!("username=alice&password+={SECRET}").into_bytes()),
    ];
    let sent = bodies.len();
    for (content_type, encoding, body) in bodies {
        let mut builder = http::Request::builder()
            .method("POST")
            .uri(palisade.url("/login"))
            .header("user-agent", CHROME_UA)
            .header("content-type", content_type);
        if let Some(encoding) = encoding {
            builder = builder.header("content-encoding", encoding);
        }
        let request = builder.body(http_body_util::Full::new(bytes::Bytes::from(body))).unwrap();
        assert!(send(&client, request).await.status >= 200);
    }
    let (text, records) = captured(&path, sent).await;
    assert_eq!(records.len(), sent, "{text}");
    for record in &records {
        let body = record.body_bytes().unwrap().unwrap_or_default();
        let decoded = {
            let mut out = Vec::new();
            let _ = std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&body[..]), &mut out);
            out
        };
        let without_nuls: Vec<u8> = body.iter().copied().filter(|b| *b != 0).collect();
        for form in [&body, &decoded, &without_nuls] {
            assert!(!String::from_utf8_lossy(form).contains(SECRET), "the password was captured: {record:?}");
        }
    }
    assert!(!text.contains(SECRET), "{text}");
}

#[tokio::test]
async fn capture_mode_redacts_passwords_before_they_reach_the_disk() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("capture.jsonl");
    let config = format!("[capture]\npath = {:?}\n", path.display().to_string());
    let palisade = Palisade::start(&config, &upstream).await;
    let client = http1_client();

    let form = send(&client, login(&palisade.url("/login"), "alice", "hunter2-secret")).await;
    assert_eq!(form.status, 401);
    let json = request(
        "POST",
        &palisade.url("/login?next=/home"),
        &[("user-agent", CHROME_UA), ("content-type", "application/json"), ("cookie", "session=s3cr3t")],
        r#"{"username":"bob","password":"right","card":{"cvv":"cvv-secret-9"}}"#,
    );
    assert_eq!(send(&client, json).await.status, 200);
    let page = send(&client, request("GET", &palisade.url("/account"), &[("user-agent", CHROME_UA)], "")).await;
    assert_eq!(page.status, 200);

    let (text, records) = captured(&path, 3).await;
    assert_eq!(records.len(), 3, "{text}");
    for secret in ["hunter2-secret", "\"right\"", "cvv-secret-9", "s3cr3t"] {
        assert!(!text.contains(secret), "{secret:?} reached the capture file:\n{text}");
    }
    assert!(text.contains("alice") && text.contains("bob"), "usernames are kept:\n{text}");
    let [form, json, page] = &records[..] else { unreachable!() };
    assert_eq!(form.body.as_deref(), Some("username=alice&password=<redacted>"));
    assert_eq!(form.status, Some(401));
    assert_eq!(form.client_ip.to_string(), "127.0.0.1");
    assert_eq!(form.version.as_deref(), Some("HTTP/1.1"));
    assert!(form.headers.iter().any(|(n, v)| n.eq_ignore_ascii_case("user-agent") && v.contains("Chrome")));
    assert_eq!(json.body.as_deref(), Some(r#"{"username":"bob","password":"<redacted>","card":{"cvv":"<redacted>"}}"#));
    assert_eq!(json.target, "/login?next=/home");
    assert!(json.headers.iter().any(|(n, v)| n.eq_ignore_ascii_case("cookie") && v == "<redacted>"));
    assert_eq!((page.target.as_str(), page.body.as_deref(), page.status), ("/account", None, Some(200)));

    // What was captured replays.
    let output = palisade_binary_replay(&path);
    assert_eq!(output["summary"]["requests"], 3);
}

fn palisade_binary_replay(path: &Path) -> serde_json::Value {
    let output = palisade(&["replay", "-q", "--format", "json", path_str(path)]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test]
async fn capture_mode_keeps_to_its_routes_and_captures_stopped_requests() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("login-only.jsonl");
    let config = format!("[capture]\npath = {:?}\nroutes = [\"login\"]\n", path.display().to_string());
    let palisade = Palisade::start(&config, &upstream).await;
    let client = http1_client();
    send(&client, request("GET", &palisade.url("/"), &[("user-agent", CHROME_UA)], "")).await;
    let blocked = request(
        "POST",
        &palisade.url("/login"),
        &[("user-agent", "sqlmap/1.7.2#stable"), ("content-type", "application/x-www-form-urlencoded")],
        "username=root&password=toor",
    );
    assert_eq!(send(&client, blocked).await.status, 403);
    let (text, records) = captured(&path, 1).await;
    assert_eq!(records.len(), 1, "{text}");
    assert_eq!(records[0].status, None, "palisade answered, not the upstream");
    assert_eq!(records[0].body.as_deref(), Some("username=root&password=<redacted>"));
}

#[test]
fn serve_refuses_to_start_when_the_capture_file_cannot_be_opened() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("capture.toml");
    std::fs::write(&config, "[capture]\npath = \"no-such-folder/capture.jsonl\"\n").unwrap();
    let output =
        palisade(&["serve", "--config", path_str(&config), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("cannot open the capture file"), "{}", text(&output.stderr));
    // The same configuration checks and replays fine elsewhere.
    assert!(palisade(&["check", "--config", path_str(&config)]).status.success());
    let hydra = root().join("replay/captures/hydra-9.4-http-post-form.jsonl");
    assert!(palisade(&["replay", "-q", "--config", path_str(&config), path_str(&hydra)]).status.success());
}
