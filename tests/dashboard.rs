//! The live dashboard in real headless Chromium: opened while traffic
//! runs through the real proxy, it draws its charts, and the counts it
//! shows are the ones `/metrics` reports. Saves a screenshot
//! (`PALISADE_UPDATE_SCREENSHOTS=1` refreshes `docs/images/dashboard.png`).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::webdriver::{Chromium, save_screenshot};
use common::{Palisade, Upstream, http1_client, request, send};

/// Clients arrive through a trusted proxy on loopback, so each attacker
/// can have its own address (`X-Forwarded-For`).
const CONFIG: &str = r#"
[server]
trusted_proxies = ["127.0.0.1"]

[[route]]
name = "login"
profile = "login"
path = "/login"
methods = ["POST"]
rate_limit = { requests = 600, period_secs = 60, burst = 100 }

[route.login.abuse]
ip_failures = 6
"#;

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

/// Mixed traffic until `stop`: people browsing, a curl script, sqlmap,
/// and a combo list from a handful of addresses.
fn start_traffic(palisade: &Palisade, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    let base = palisade.url("");
    tokio::spawn(async move {
        let client = http1_client();
        let mut round = 0u64;
        while !stop.load(Ordering::Relaxed) {
            round += 1;
            let attacker = format!("203.0.113.{}", round % 7 + 1);
            let requests = [
                request("GET", &format!("{base}/"), &[("user-agent", FIREFOX), ("accept", "text/html")], ""),
                request("GET", &format!("{base}/account"), &[("user-agent", FIREFOX), ("accept", "text/html")], ""),
                request("GET", &format!("{base}/api/items"), &[("user-agent", "curl/8.5.0"), ("accept", "*/*")], ""),
                request("GET", &format!("{base}/item?id=1"), &[("user-agent", "sqlmap/1.7.2#stable")], ""),
                request(
                    "POST",
                    &format!("{base}/login"),
                    &[
                        ("user-agent", FIREFOX),
                        ("accept", "text/html"),
                        ("content-type", "application/x-www-form-urlencoded"),
                        ("x-forwarded-for", &attacker),
                    ],
                    &format!("username=user{round}&password=wrong"),
                ),
            ];
            for request in requests {
                send(&client, request).await;
                sent.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    })
}

/// `palisade_requests_total` summed over routes, for one action.
fn metric_requests(metrics: &str, action: &str) -> u64 {
    metrics
        .lines()
        .filter(|line| line.starts_with("palisade_requests_total{") && line.contains(&format!("action=\"{action}\"")))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

fn metric_detection(metrics: &str, id: &str) -> u64 {
    let prefix = format!("palisade_detections_total{{detection=\"{id}\",shadow=\"false\"}} ");
    metrics.lines().find_map(|line| line.strip_prefix(&prefix)).map_or(0, |n| n.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_draws_live_traffic_and_its_counts_match_the_metrics() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start(CONFIG, &upstream).await;
    let (stop, sent) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let traffic = start_traffic(&palisade, stop.clone(), sent.clone());

    let browser = Chromium::start(1400, 1250).await;
    browser.open(&format!("http://{}/dashboard", palisade.running.admin_addr)).await;
    // Charts drawn from at least two polls, with traffic in them.
    browser
        .wait_for(
            "return document.body.dataset.ready === '1' \
             && document.querySelectorAll('#rate-chart polyline').length === 5 \
             && Number(document.getElementById('total-block').textContent) > 0",
            Duration::from_secs(30),
        )
        .await;
    // Let the lines show a few seconds of traffic before stopping it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    traffic.await.unwrap();
    assert!(sent.load(Ordering::Relaxed) > 50, "traffic ran");

    // Wait for a poll after the last request, then compare with /metrics.
    let metrics = palisade.metrics_text().await;
    let total: u64 =
        ["allow", "log", "challenge", "rate_limit", "block"].iter().map(|a| metric_requests(&metrics, a)).sum();
    browser
        .wait_for(
            &format!("return document.getElementById('total-requests').textContent === '{total}'"),
            Duration::from_secs(10),
        )
        .await;
    let png = browser.screenshot().await;
    let saved = save_screenshot("dashboard.png", &png);
    println!("dashboard screenshot: {}", saved.display());

    for action in ["allow", "log", "challenge", "rate_limit", "block"] {
        let shown = browser.eval(&format!("return document.getElementById('total-{action}').textContent")).await;
        let shown: u64 = shown.as_str().unwrap().parse().unwrap();
        assert_eq!(shown, metric_requests(&metrics, action), "{action}: page {shown} vs /metrics");
    }
    for action in ["allow", "log", "block"] {
        assert!(metric_requests(&metrics, action) > 0, "{action} happened: {metrics}");
    }
    assert!(
        metric_requests(&metrics, "challenge") + metric_requests(&metrics, "rate_limit") > 0,
        "the combo list escalated"
    );
    // The top detections as the page lists them, with the metrics' counts.
    let rows = browser
        .eval(
            "return Array.from(document.querySelectorAll('#detections tr')).slice(1)\
             .map(tr => [tr.cells[0].textContent, Number(tr.cells[2].textContent)])",
        )
        .await;
    let rows = rows.as_array().unwrap();
    assert!(rows.iter().any(|row| row[0] == "tool.sqlmap"), "{rows:?}");
    for row in rows {
        let id = row[0].as_str().unwrap();
        assert_eq!(row[1].as_u64().unwrap(), metric_detection(&metrics, id), "{id}");
    }
    // The combo list's addresses are under attack, as keyed hashes.
    let attacked = browser.eval("return document.querySelectorAll('#attack-ip tr').length").await;
    assert!(attacked.as_u64().unwrap() > 1, "addresses with failures are listed");
    let page = browser.eval("return document.body.innerText").await;
    assert!(!page.as_str().unwrap().contains("203.0.113."), "no address in clear on the page");
    browser.quit().await;
}
