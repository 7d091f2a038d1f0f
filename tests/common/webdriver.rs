//! Real headless Chromium driven through Debian's `chromedriver` (the W3C
//! WebDriver protocol: JSON over HTTP, so the test's own HTTP client is
//! enough). Just what page tests need: open a URL, run a script, take a
//! screenshot. Both binaries must be installed (`.ci/run` installs the
//! `chromium` and `chromium-driver` packages); a missing one fails loudly.
#![allow(dead_code)]

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use super::{TestClient, http1_client, request, send};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// One chromedriver with one headless Chromium session.
pub struct Chromium {
    driver: tokio::process::Child,
    base: String,
    session: String,
    client: TestClient,
}

impl Chromium {
    /// Start chromedriver and a headless Chromium window of `width`×`height`.
    pub async fn start(width: u32, height: u32) -> Chromium {
        for binary in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(binary).exists(),
                "{binary} is missing: apt-get install -y chromium chromium-driver (.ci/run does)"
            );
        }
        // chromedriver takes a port, not a listener: find a free one.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            // Its own process group, with the Chromium it starts: a test
            // that fails before `quit` still stops both (see `Drop`).
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let client = http1_client();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let ready = client.request(request("GET", &format!("{base}/status"), &[], "")).await.is_ok();
            if ready {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let capabilities = json!({ "capabilities": { "alwaysMatch": { "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                     "--disable-crash-reporter", "--disable-breakpad",
                     "--disable-background-networking", "--hide-scrollbars", format!("--window-size={width},{height}")],
        }}}});
        let mut chromium = Chromium { driver, base, session: String::new(), client };
        let created = chromium.call("POST", "/session", capabilities).await;
        chromium.session = created["sessionId"].as_str().expect("a WebDriver session").to_string();
        chromium
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = if self.session.is_empty() {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let body = if body.is_null() { String::new() } else { body.to_string() };
        let answer = send(&self.client, request(method, &url, &[("content-type", "application/json")], &body)).await;
        let reply: Value = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
        assert_eq!(answer.status, 200, "WebDriver {method} {path}: {}", answer.body);
        reply["value"].clone()
    }

    pub async fn open(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url })).await;
    }

    /// Run `script` (a function body; `return` gives the value) in the page.
    pub async fn eval(&self, script: &str) -> Value {
        self.call("POST", "/execute/sync", json!({ "script": script, "args": [] })).await
    }

    /// Poll `script` until it returns `true` (fails the test after `limit`).
    pub async fn wait_for(&self, script: &str, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.eval(script).await != Value::Bool(true) {
            assert!(tokio::time::Instant::now() < deadline, "the page never satisfied: {script}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        let encoded = self.call("GET", "/screenshot", Value::Null).await;
        base64::engine::general_purpose::STANDARD.decode(encoded.as_str().expect("base64 PNG")).expect("base64")
    }

    /// End the session (closing Chromium) and stop chromedriver.
    pub async fn quit(self) {
        self.call("DELETE", "", Value::Null).await;
    }
}

impl Drop for Chromium {
    /// Stop chromedriver's process group: chromedriver and the Chromium it
    /// started, whether or not the test got as far as `quit`.
    fn drop(&mut self) {
        if let Some(pid) = self.driver.id() {
            let _ = std::process::Command::new("kill").args(["-TERM", "--", &format!("-{pid}")]).status();
        }
    }
}

/// Save a screenshot where tests keep their output and, when
/// `PALISADE_UPDATE_SCREENSHOTS=1`, over the one in `docs/images/` (which
/// the README shows). Returns the path written under the target directory.
pub fn save_screenshot(name: &str, png: &[u8]) -> std::path::PathBuf {
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, png).unwrap();
    if std::env::var("PALISADE_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/images");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::write(docs.join(name), png).unwrap();
    }
    path
}
