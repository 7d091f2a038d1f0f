//! Shared harness for integration tests: a real upstream server written
//! here, the real palisade server on ephemeral ports in front of it, and
//! clients (hyper HTTP/1.1 and HTTP/2, raw TCP for what hyper won't send).
#![allow(dead_code)]

pub mod browser;
pub mod mmdb;
pub mod redis;
pub mod webdriver;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A test configuration: palisade trusting `X-Forwarded-For` from the
/// tests' own address (127.0.0.1), logging every decision, with a fixed
/// counter-key secret, then `$rest` (more TOML, a string literal). A
/// macro, so that the result is still a `&'static str` constant.
#[allow(unused_macros)]
macro_rules! trusted_config {
    ($rest:literal) => {
        concat!(
            "\n[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n[decision_log]\nsample_allowed = 1.0\n[store]\nhash_key = \"test-secret\"\n",
            $rest
        )
    };
}
#[allow(unused_imports)]
pub(crate) use trusted_config;

use palisade::app::App;
use palisade::clock::{SharedClock, SystemClock};
use palisade::config::{Config, parse_str, unspanned};
use palisade::decision_log::DecisionLog;
use palisade::listen::{Running, Server};
use palisade::metrics::Metrics;
use palisade::store::CounterStore;

/// A request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub version: http::Version,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// The test upstream. Paths:
/// - with an `x-test-status: NNN` header: answers NNN (replayed captures);
/// - `POST`, `PUT` or `PATCH` `/login` (or `/login.FORMAT`): 200 when the body contains
///   `password=right` (or `"password":"right"`), else 401; after `x-test-delay-ms` milliseconds
///   when the request has that header (a slow login backend);
/// - `GET /signin`: an HTML sign-in page (a form posting to `/login`, a
///   stylesheet and a script), `/static/*`: those sub-resources;
/// - `POST /oauth/token`: an OAuth token endpoint (400 `invalid_grant` for a wrong password);
/// - `/status/NNN`: answers NNN;
/// - `/slow/MS`: waits MS milliseconds, then 200;
/// - `/stream`: a chunked body of 3 chunks;
/// - anything else: 200 with body `echo` + the path.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let record = record.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| upstream_answer(record.clone(), request));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream { addr, seen }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.seen().last().cloned().expect("the upstream received a request")
    }
}

type UpstreamBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn upstream_answer(
    seen: Arc<Mutex<Vec<Seen>>>,
    request: Request<Incoming>,
) -> Result<Response<UpstreamBody>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        version: parts.version,
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    let path = parts.uri.path().to_string();
    let text = |status: u16, text: String| {
        let mut response = Response::new(Full::new(Bytes::from(text)).boxed());
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        response
    };
    // A replayed request carries the status it got when it was recorded.
    if let Some(status) = parts.headers.get("x-test-status").and_then(|v| v.to_str().ok()?.parse().ok()) {
        return Ok(text(status, "recorded status".into()));
    }
    let login_method = matches!(parts.method, http::Method::POST | http::Method::PUT | http::Method::PATCH);
    if (path == "/login" || path.starts_with("/login.")) && login_method {
        if let Some(ms) = parts.headers.get("x-test-delay-ms").and_then(|v| v.to_str().ok()?.parse().ok()) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let body_text = String::from_utf8_lossy(&body);
        let ok = body_text.contains("password=right") || body_text.contains("\"password\":\"right\"");
        return Ok(text(if ok { 200 } else { 401 }, if ok { "welcome".into() } else { "denied".into() }));
    }
    // An OAuth 2.0 token endpoint (RFC 6749 §5): `password=right` or any
    // non-password grant gets a token, a wrong password `invalid_grant`.
    if path == "/oauth/token" && parts.method == http::Method::POST {
        let body_text = String::from_utf8_lossy(&body);
        let wrong = body_text.contains("grant_type=password") && !body_text.contains("password=right");
        let (status, answer) = if wrong {
            (400, r#"{"error":"invalid_grant","error_description":"bad credentials"}"#.to_string())
        } else {
            (200, r#"{"access_token":"at-SECRET-0d9f","token_type":"Bearer","refresh_token":"rt-SECRET-77aa"}"#.into())
        };
        let mut response = text(status, answer);
        response.headers_mut().insert("content-type", "application/json".parse().unwrap());
        return Ok(response);
    }
    if path == "/signin" {
        let mut response = text(200, SIGNIN_PAGE.into());
        response.headers_mut().insert("content-type", "text/html; charset=utf-8".parse().unwrap());
        return Ok(response);
    }
    if let Some(file) = path.strip_prefix("/static/") {
        let (kind, content) = match file {
            "app.css" => ("text/css", "form{margin:2rem}"),
            _ => ("text/javascript", "window.appLoaded = true;"),
        };
        let mut response = text(200, content.into());
        response.headers_mut().insert("content-type", kind.parse().unwrap());
        return Ok(response);
    }
    if let Some(code) = path.strip_prefix("/status/") {
        return Ok(text(code.parse().unwrap_or(500), format!("status {code}")));
    }
    if let Some(ms) = path.strip_prefix("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(100))).await;
        return Ok(text(200, "slow done".into()));
    }
    if path == "/stream" {
        let chunks = futures_chunks();
        return Ok(Response::new(chunks));
    }
    let mut response = text(200, format!("echo {path}"));
    response.headers_mut().insert("x-upstream", "yes".parse().unwrap());
    // A hop-by-hop header palisade must not pass back to the client.
    response.headers_mut().insert("keep-alive", "timeout=5".parse().unwrap());
    Ok(response)
}

/// The upstream's sign-in page.
const SIGNIN_PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Sign in</title>
<link rel="stylesheet" href="/static/app.css"><script src="/static/app.js"></script></head>
<body><form id="login" method="post" action="/login">
<input name="username" autocomplete="username"><input name="password" type="password">
<button type="submit">Sign in</button></form></body></html>
"#;

fn futures_chunks() -> UpstreamBody {
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    let chunks: Vec<Result<Frame<Bytes>, Infallible>> =
        ["one,", "two,", "three"].iter().map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes())))).collect();
    StreamBody::new(tokio_stream_iter(chunks)).boxed()
}

fn tokio_stream_iter<T>(items: Vec<T>) -> impl futures_core_stream::Stream<Item = T> {
    futures_core_stream::iter(items)
}

/// Minimal stream-from-iterator, so the harness needs no extra crates.
mod futures_core_stream {
    pub use futures_util::stream::{Stream, iter};
}

/// A running palisade in front of an upstream.
pub struct Palisade {
    pub running: Running,
    pub log_path: PathBuf,
    /// The counter store, so tests can read back every key it holds.
    pub store: Arc<CounterStore>,
    _dir: tempfile::TempDir,
}

impl Palisade {
    /// Start palisade with `config_toml` (empty for the defaults), its
    /// upstream set to `upstream` and the decision log in a temp file
    /// (allowed requests are logged only if the TOML sets
    /// `decision_log.sample_allowed`).
    pub async fn start(config_toml: &str, upstream: &Upstream) -> Palisade {
        let mut config = parse_str(config_toml, "test.toml").unwrap_or_else(|e| panic!("test config: {e}"));
        Self::start_config(&mut config, upstream).await
    }

    pub async fn start_config(config: &mut Config, upstream: &Upstream) -> Palisade {
        let clock: SharedClock = Arc::new(SystemClock);
        // The store the configuration asks for: Redis when `[store]` names one.
        let store =
            palisade::app::build_store(config, clock.clone()).await.unwrap_or_else(|e| panic!("test store: {e}"));
        Self::start_with(config, upstream, store, clock).await
    }

    /// Start with a given store and clock (a manual clock replays a
    /// recorded sequence on its own timestamps).
    pub async fn start_with(
        config: &mut Config,
        upstream: &Upstream,
        store: Arc<CounterStore>,
        clock: SharedClock,
    ) -> Palisade {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("decisions.jsonl");
        config.server.upstream = unspanned(upstream.url());
        config.decision_log.path = log_path.display().to_string();
        let app = App::build(config, store.clone(), clock, 7).unwrap_or_else(|e| panic!("test config: {e:?}"));
        let metrics = Arc::new(Metrics::default());
        let log = DecisionLog::open(&config.decision_log, metrics.clone()).unwrap();
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = Server::new(app, log, metrics).start(proxy, admin).unwrap();
        Palisade { running, log_path, store, _dir: dir }
    }

    pub fn addr(&self) -> SocketAddr {
        self.running.proxy_addr
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.running.proxy_addr, path)
    }

    /// Decision log lines, waiting up to 2 s for at least `at_least` of them
    /// (the log is written by a background thread).
    pub async fn log_lines(&self, at_least: usize) -> Vec<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
            let lines: Vec<serde_json::Value> =
                text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect();
            if lines.len() >= at_least || tokio::time::Instant::now() > deadline {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn metrics_text(&self) -> String {
        let response =
            raw_request(self.running.admin_addr, b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
                .await;
        String::from_utf8_lossy(&response).into_owned()
    }
}

pub type TestClient =
    hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

pub fn http1_client() -> TestClient {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

pub fn http2_client() -> TestClient {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).http2_only(true).build_http()
}

/// A finished response: status, headers and the whole body.
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
    pub version: http::Version,
}

pub async fn send(client: &TestClient, request: Request<Full<Bytes>>) -> Answer {
    let response = client.request(request).await.expect("palisade answered");
    let version = response.version();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("whole body").to_bytes();
    Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        version,
    }
}

/// `method url` with headers and a body.
pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

/// A browser-like login POST.
pub fn login(url: &str, user: &str, password: &str) -> Request<Full<Bytes>> {
    request(
        "POST",
        url,
        &[
            (
                "user-agent",
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36",
            ),
            ("content-type", "application/x-www-form-urlencoded"),
            ("accept", "text/html"),
        ],
        &format!("username={user}&password={password}"),
    )
}

/// A raw HTTP/1.1 request with exactly these header lines, in this order
/// (names spelled and ordered as given, which hyper's client would not keep).
pub fn raw_http1(method: &str, target: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(body);
    out.into_bytes()
}

/// Write raw bytes on a new connection and read until the server closes
/// it (or 5 s pass).
pub async fn raw_request(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    out
}

/// The status code of a raw HTTP/1.x response.
pub fn raw_status(response: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(response);
    text.split_whitespace().nth(1)?.parse().ok()
}

/// An upstream address nothing listens on (bound, then released), so
/// palisade's connections to it are refused.
pub async fn dead_upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    Upstream { addr, seen: Arc::default() }
}

/// The real `palisade` binary, started with `args` and `--listen`/`--admin`
/// on ephemeral ports; stderr lines are collected as they come.
pub struct BinaryPalisade {
    pub child: tokio::process::Child,
    pub addr: SocketAddr,
    /// The admin listener's address.
    pub admin: SocketAddr,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl BinaryPalisade {
    pub async fn spawn(args: &[&str]) -> BinaryPalisade {
        Self::spawn_logging(args, "warn").await
    }

    /// The same, logging at `level` (`PALISADE_LOG`).
    pub async fn spawn_logging(args: &[&str], level: &str) -> BinaryPalisade {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_palisade"))
            .args(args)
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .env("PALISADE_LOG", level)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the palisade binary starts");
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let stderr: Arc<Mutex<Vec<String>>> = Arc::default();
        let find_addr = async {
            while let Some(line) = lines.next_line().await.unwrap() {
                stderr.lock().unwrap().push(line.clone());
                let listening = line.strip_prefix("palisade listening on ");
                if let Some(rest) =
                    listening.and_then(|l| l.strip_prefix("http://").or_else(|| l.strip_prefix("https://")))
                {
                    let addr = rest.split_whitespace().next().unwrap().parse::<SocketAddr>().unwrap();
                    let admin = rest.split("(admin http://").nth(1).unwrap().split(')').next().unwrap();
                    return (addr, admin.parse::<SocketAddr>().unwrap());
                }
            }
            panic!("palisade exited without saying where it listens: {:#?}", stderr.lock().unwrap());
        };
        let (addr, admin) =
            tokio::time::timeout(Duration::from_secs(10), find_addr).await.expect("palisade printed its address");
        let collected = stderr.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                collected.lock().unwrap().push(line);
            }
        });
        BinaryPalisade { child, addr, admin, stderr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("palisade is running")
    }

    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill").args([&format!("-{name}"), &self.pid().to_string()]).status();
        assert!(status.unwrap().success(), "kill -{name} failed");
    }

    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Wait (up to 10 s) for a stderr line containing `text`.
    pub async fn wait_for_stderr(&self, text: &str) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            if self.stderr().iter().any(|line| line.contains(text)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}
