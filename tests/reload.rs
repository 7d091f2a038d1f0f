//! SIGHUP reload of the real binary: a good file takes effect, a bad one
//! is rejected and the running configuration stays.

mod common;
use common::*;

const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0";

async fn score_header_names(palisade: &BinaryPalisade, upstream: &Upstream) -> Vec<String> {
    let url = format!("http://{}/hello", palisade.addr);
    let answer = send(&http1_client(), request("GET", &url, &[("user-agent", BROWSER)], "")).await;
    assert_eq!(answer.status, 200);
    upstream.last().headers.keys().map(|k| k.as_str().to_string()).filter(|k| k.contains("score")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_good_file_and_keeps_running_on_a_bad_one() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("palisade.toml");
    std::fs::write(&path, "[decision_log]\npath = \"off\"\n").unwrap();
    let palisade =
        BinaryPalisade::spawn(&["serve", "--config", path.to_str().unwrap(), "--upstream", &upstream.url()]).await;
    assert_eq!(score_header_names(&palisade, &upstream).await, ["x-palisade-score"]);

    // A broken file: rejected, named with its line, old configuration kept.
    std::fs::write(&path, "[decision_log]\npath = \"off\"\n[headers]\nscore = \"X-Bot-Score\"\nbogus = 1\n").unwrap();
    palisade.signal("HUP");
    assert!(palisade.wait_for_stderr("reload failed").await, "{:#?}", palisade.stderr());
    assert!(palisade.stderr().iter().any(|l| l.contains("palisade.toml:5: headers.bogus")), "{:#?}", palisade.stderr());
    assert_eq!(score_header_names(&palisade, &upstream).await, ["x-palisade-score"]);

    // A good file: takes effect without a restart; the flags still apply on top.
    std::fs::write(&path, "[decision_log]\npath = \"off\"\n[headers]\nscore = \"X-Bot-Score\"\n").unwrap();
    palisade.signal("HUP");
    assert!(palisade.wait_for_stderr("configuration reloaded").await, "{:#?}", palisade.stderr());
    assert_eq!(score_header_names(&palisade, &upstream).await, ["x-bot-score"]);
    assert!(upstream.last().uri.starts_with("/hello"), "the --upstream flag still applies after reload");
}
