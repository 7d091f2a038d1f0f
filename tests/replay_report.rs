//! `palisade replay --report`: the HTML report opened in real headless
//! Chromium from a file (no server, nothing fetched) shows the same numbers
//! as the JSON report of the same replay — summary, confusion matrix,
//! histograms, false positives and misses, and the diff against a baseline
//! grouped by detection id. Saves a screenshot
//! (`PALISADE_UPDATE_SCREENSHOTS=1` refreshes `docs/images/replay-report.png`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::webdriver::{Chromium, save_screenshot};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn captures() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(root().join("replay/captures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    files
}

/// The regression configuration with a stricter challenge threshold and
/// the sqlmap rules turned off: changes in both directions, by detection id.
fn new_config(dir: &Path) -> PathBuf {
    let base = std::fs::read_to_string(root().join("replay/regression/palisade.toml")).unwrap();
    let path = dir.join("new.toml");
    let changed = format!(
        "{base}\n[decision]\nchallenge_at_or_below = 45\n\n[signatures]\ndisable = [\"tool.sqlmap\", \"ua.attack_tool\"]\n"
    );
    std::fs::write(&path, changed).unwrap();
    path
}

async fn text_of(browser: &Chromium, selector: &str) -> String {
    let value = browser.eval(&format!("return document.querySelector('{selector}').textContent")).await;
    value.as_str().unwrap_or_else(|| panic!("no {selector}")).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_report_shows_what_the_json_report_says() {
    let dir = tempfile::tempdir().unwrap();
    let config = new_config(dir.path());
    let report = dir.path().join("report.html");
    let baseline = root().join("replay/regression/palisade.toml");
    let mut args = vec![
        "replay".to_string(),
        "-q".into(),
        "--format".into(),
        "json".into(),
        "-c".into(),
        config.display().to_string(),
        "--baseline".into(),
        baseline.display().to_string(),
        "--report".into(),
        report.display().to_string(),
    ];
    args.extend(captures());
    let output = Command::new(env!("CARGO_BIN_EXE_palisade")).args(&args).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    let html = std::fs::read_to_string(&report).unwrap();
    for external in ["<script", "src=", "href=", "@import", "url("] {
        assert!(!html.contains(external), "the report is self-contained: found {external}");
    }

    let browser = Chromium::start(1300, 2000).await;
    browser.open(&format!("file://{}", report.display())).await;
    browser.wait_for("return document.readyState === 'complete'", Duration::from_secs(10)).await;

    let summary = &json["summary"];
    assert_eq!(text_of(&browser, "#requests").await, summary["requests"].to_string());
    for action in ["allow", "log", "challenge", "rate_limit", "block"] {
        assert_eq!(text_of(&browser, &format!("#action-{action}")).await, summary["by_action"][action].to_string());
    }
    // The confusion matrix, label by label, outcome by outcome.
    let labels = summary["labels"].as_object().unwrap();
    assert!(labels.contains_key("human") && labels.contains_key("bot") && labels.contains_key("partner"));
    for (label, row) in labels {
        for outcome in ["allowed", "challenged", "limited", "blocked"] {
            let shown =
                text_of(&browser, &format!("#confusion tr[data-label=\"{label}\"] td[data-outcome=\"{outcome}\"]"))
                    .await;
            assert_eq!(shown, row[outcome].to_string(), "{label} {outcome}");
        }
        // Each label's histogram holds all of its requests.
        let binned = browser
            .eval(&format!(
                "return Array.from(document.querySelectorAll('svg.histogram[data-label=\"{label}\"] rect'))\
                 .reduce((sum, r) => sum + Number(r.dataset.count), 0)"
            ))
            .await;
        assert_eq!(binned, row["requests"], "{label} histogram");
    }
    // Misses: bots allowed or only challenged, listed with their evidence.
    let bot = &labels["bot"];
    let misses = bot["allowed"].as_u64().unwrap() + bot["challenged"].as_u64().unwrap();
    assert!(misses > 0);
    assert_eq!(text_of(&browser, "#misses-total").await, misses.to_string());
    let first_miss = text_of(&browser, "#misses tr:nth-child(2)").await;
    // The sqlmap requests the new configuration lets through, with the one
    // signal left and the rule text it matched.
    assert!(first_miss.contains("sqlmap-1.7.2-get.jsonl:1"), "{first_miss}");
    assert!(first_miss.contains("crawler.contact_url") && first_miss.contains("field=user_agent"), "{first_miss}");
    // No person or partner is stopped by these configurations.
    assert_eq!(json["summary"]["rates"]["human_false_positive_rate"], 0.0);
    assert_eq!(text_of(&browser, "#false-positives-none").await, "None.");

    // The diff: the same total, the same groups by detection id, with examples.
    let diff = &json["diff"];
    assert_eq!(text_of(&browser, "#diff-changed").await, diff["changed"].to_string());
    let groups = browser
        .eval(
            "return Array.from(document.querySelectorAll('.diff-group'))\
             .map(g => [g.dataset.detection, Number(g.dataset.requests), g.querySelectorAll('tr').length - 1])",
        )
        .await;
    let groups = groups.as_array().unwrap();
    let expected = diff["groups"].as_array().unwrap();
    assert_eq!(groups.len(), expected.len());
    for (shown, group) in groups.iter().zip(expected) {
        assert_eq!(shown[0], group["detection"]);
        assert_eq!(shown[1], group["requests"]);
        assert_eq!(shown[2].as_u64().unwrap() as usize, group["examples"].as_array().unwrap().len());
    }
    assert!(
        expected.iter().any(|g| g["detection"] == "tool.sqlmap" && g["change"] == "looser"),
        "a rule turned off shows under its id: {diff}"
    );
    assert!(expected.iter().any(|g| g["change"] == "stricter"), "the stricter threshold shows too: {diff}");

    let png = browser.screenshot().await;
    let saved = save_screenshot("replay-report.png", &png);
    println!("report screenshot: {}", saved.display());
    browser.quit().await;
}
