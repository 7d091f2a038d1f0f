//! Sidecar mode: palisade as the decision service of a real nginx
//! (`auth_request`) and as Envoy's `ext_authz` HTTP service, in front of
//! an application written here that reports login outcomes back.
//!
//! nginx is Debian's package, started on free ports with a configuration
//! written by the test; `.ci/run` installs it when it is missing, and the
//! test fails (never skips) without it.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{Palisade, TestClient, Upstream, request, send};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

const BROWSER_UA: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";
const SQLMAP_UA: &str = "sqlmap/1.7.2#stable (https://sqlmap.org)";
/// `printf %s partner-key-1 | sha256sum`
const PARTNER_KEY: &str = "partner-key-1";

fn sidecar_config() -> String {
    let key_hash = hex_sha256(PARTNER_KEY);
    format!(
        r#"
[server]
trusted_proxies = ["127.0.0.1/32"]

[sidecar]

[decision_log]
sample_allowed = 1.0

[[partner]]
name = "acme-payouts"
api_key_sha256 = ["{key_hash}"]

[[route]]
name = "login"
profile = "login"
path = "/login"
methods = ["POST"]

[[route]]
name = "api"
profile = "api"
path = "/api/*"
rate_limit = {{ requests = 3, period_secs = 60, burst = 3 }}
"#
    )
}

fn hex_sha256(text: &str) -> String {
    use std::fmt::Write;
    let digest = <sha2::Sha256 as sha2::Digest>::digest(text.as_bytes());
    digest.iter().fold(String::new(), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}

// ---------------------------------------------------------------------------
// The application behind the proxy
// ---------------------------------------------------------------------------

/// What the application received.
#[derive(Debug, Clone)]
struct AppSeen {
    path: String,
    headers: http::HeaderMap,
}

/// A login application that reports every login's outcome to palisade
/// (`POST /_palisade/outcome` with the request id nginx passed on), as
/// docs/sidecar.md tells an application to.
#[derive(Clone)]
struct App {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<AppSeen>>>,
}

impl App {
    async fn start(palisade: SocketAddr) -> App {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<AppSeen>>> = Arc::default();
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let record = record.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |incoming| answer(record.clone(), palisade, incoming));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        App { addr, seen }
    }

    fn seen(&self) -> Vec<AppSeen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn answer(
    seen: Arc<Mutex<Vec<AppSeen>>>,
    palisade: SocketAddr,
    incoming: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let (parts, body) = incoming.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    seen.lock().unwrap().push(AppSeen { path: parts.uri.path().to_string(), headers: parts.headers.clone() });
    if parts.uri.path() != "/login" {
        return Ok(Response::new(Full::new(Bytes::from("page"))));
    }
    let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
    let status = if field("password") == "right" { 200 } else { 401 };
    // Report the outcome, keyed by the request id palisade handed out.
    if let Some(id) = parts.headers.get("x-palisade-request-id").and_then(|v| v.to_str().ok()) {
        let report = format!("request_id={id}&status={status}&username={}", field("username"));
        let client = common::http1_client();
        let url = format!("http://{palisade}/_palisade/outcome");
        let reported =
            send(&client, request("POST", &url, &[("content-type", "application/x-www-form-urlencoded")], &report))
                .await;
        assert_eq!(reported.status, 200, "outcome report refused: {}", reported.body);
    }
    let mut response = Response::new(Full::new(Bytes::from(if status == 200 { "welcome" } else { "denied" })));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    Ok(response)
}

// ---------------------------------------------------------------------------
// nginx
// ---------------------------------------------------------------------------

struct Nginx {
    child: std::process::Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_binary() -> PathBuf {
    for candidate in ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!("nginx is not installed: `apt-get install -y nginx` (.ci/run does it); the sidecar test needs the real one");
}

/// The nginx configuration docs/sidecar.md documents, with test ports.
fn nginx_config(dir: &Path, listen: SocketAddr, palisade: SocketAddr, app: SocketAddr) -> String {
    let d = dir.display();
    format!(
        r#"
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;

    upstream palisade {{ server {palisade}; keepalive 16; }}
    upstream app {{ server {app}; }}

    server {{
        listen {listen};

        location / {{
            auth_request /_palisade;
            auth_request_set $palisade_score $upstream_http_x_palisade_score;
            auth_request_set $palisade_id $upstream_http_x_palisade_request_id;
            auth_request_set $palisade_action $upstream_http_x_palisade_action;
            auth_request_set $palisade_detections $upstream_http_x_palisade_detections;
            auth_request_set $palisade_partner $upstream_http_x_palisade_partner;
            auth_request_set $palisade_status $upstream_http_x_palisade_status;
            auth_request_set $palisade_retry $upstream_http_retry_after;
            proxy_set_header X-Palisade-Score $palisade_score;
            proxy_set_header X-Palisade-Request-Id $palisade_id;
            proxy_set_header X-Palisade-Action $palisade_action;
            proxy_set_header X-Palisade-Detections $palisade_detections;
            proxy_set_header X-Palisade-Partner $palisade_partner;
            error_page 403 = @palisade_refused;
            proxy_pass http://app;
        }}

        location = /_palisade {{
            internal;
            proxy_pass http://palisade/_palisade/auth;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Host $host;
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}

        # auth_request passes only 401/403: palisade says which answer it means.
        location @palisade_refused {{
            default_type application/json;
            add_header X-Palisade-Request-Id $palisade_id always;
            if ($palisade_status = 429) {{
                add_header Retry-After $palisade_retry always;
                return 429 '{{"error":"rate_limited","request_id":"$palisade_id"}}';
            }}
            if ($palisade_status = 503) {{
                return 503 '{{"error":"shared_state_unavailable","request_id":"$palisade_id"}}';
            }}
            return 403 '{{"error":"forbidden","request_id":"$palisade_id","detections":"$palisade_detections"}}';
        }}
    }}
}}
"#
    )
}

async fn start_nginx(palisade: SocketAddr, app: SocketAddr) -> Nginx {
    let dir = tempfile::tempdir().unwrap();
    // A free port: bound, released, then bound by nginx.
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = dir.path().join("nginx.conf");
    std::fs::write(&config, nginx_config(dir.path(), listen, palisade, app)).unwrap();
    let child = std::process::Command::new(nginx_binary())
        .arg("-c")
        .arg(&config)
        .arg("-p")
        .arg(dir.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start nginx");
    let nginx = Nginx { child, addr: listen, _dir: dir };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(listen).await.is_ok() {
            return nginx;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = std::fs::read_to_string(nginx._dir.path().join("error.log")).unwrap_or_default();
    panic!("nginx did not start listening on {listen}: {log}");
}

/// A client whose connections come from `ip` (a loopback address), so
/// nginx sees a different client per address.
fn client_from(ip: &str) -> TestClient {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(ip.parse().unwrap()));
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector)
}

fn browser(method: &str, url: &str, extra: &[(&str, &str)], body: &str) -> Request<Full<Bytes>> {
    let mut headers = vec![
        ("user-agent", BROWSER_UA),
        ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        ("accept-language", "en-US,en;q=0.9"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("sec-ch-ua", "\"Chromium\";v=\"156\", \"Not.A/Brand\";v=\"24\""),
        ("sec-ch-ua-mobile", "?0"),
        ("sec-ch-ua-platform", "\"Linux\""),
        ("sec-fetch-site", "same-origin"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-dest", "document"),
    ];
    headers.extend_from_slice(extra);
    request(method, url, &headers, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_in_front_of_an_app() {
    // palisade's own upstream is unused in sidecar mode.
    let unused = Upstream::start().await;
    let palisade = Palisade::start(&sidecar_config(), &unused).await;
    let app = App::start(palisade.addr()).await;
    let nginx = start_nginx(palisade.addr(), app.addr).await;
    let url = |path: &str| format!("http://{}{path}", nginx.addr);

    // A person's page load passes, with palisade's score reaching the app.
    let person = client_from("127.0.0.2");
    let page = send(&person, browser("GET", &url("/account"), &[], "")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let at_app = app.seen().into_iter().find(|s| s.path == "/account").expect("the page reached the app");
    let score: u8 = at_app.headers["x-palisade-score"].to_str().unwrap().parse().unwrap();
    assert!(score >= 50, "a browser's score is high: {score}");
    assert_eq!(at_app.headers["x-palisade-action"], "allow");
    assert_eq!(at_app.headers["x-palisade-request-id"].len(), 16);

    // sqlmap is refused by nginx on palisade's word, and never reaches the app.
    let tool = client_from("127.0.0.3");
    let attack =
        send(&tool, request("GET", &url("/item?id=1%27%20OR%201=1--"), &[("user-agent", SQLMAP_UA)], "")).await;
    assert_eq!(attack.status, 403, "{}", attack.body);
    assert!(attack.body.contains("tool.sqlmap") || attack.body.contains("ua.attack_tool"), "{}", attack.body);
    assert!(!app.seen().iter().any(|s| s.path == "/item"), "sqlmap reached the app");

    // A combo list from one client: the app reports each failure, and
    // palisade stops the client after a few.
    let stuffer = client_from("127.0.0.4");
    let mut statuses = Vec::new();
    for i in 0..25 {
        let body = format!("username=victim{i}%40example.com&password=guess{i}");
        let login = browser("POST", &url("/login"), &[("content-type", "application/x-www-form-urlencoded")], &body);
        statuses.push(send(&stuffer, login).await.status);
    }
    let reached = app.seen().iter().filter(|s| s.path == "/login").count();
    eprintln!("combo list through nginx: {statuses:?}, {reached} reached the app");
    assert!(statuses.iter().any(|s| *s == 403 || *s == 429), "never stopped: {statuses:?}");
    assert!(reached <= 10, "{reached} of 25 combo-list attempts reached the app: {statuses:?}");
    let first_stop = statuses.iter().position(|s| *s == 403 || *s == 429).unwrap();
    assert!(statuses[first_stop..].iter().all(|s| *s != 401), "let through again after a stop: {statuses:?}");

    // The rate-limited route: nginx answers palisade's 429, with Retry-After.
    let reader = client_from("127.0.0.6");
    let mut api = Vec::new();
    for _ in 0..5 {
        let answer = send(&reader, browser("GET", &url("/api/balance"), &[], "")).await;
        api.push((answer.status, answer.headers.get("retry-after").cloned()));
    }
    assert_eq!(api.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [200, 200, 200, 429, 429], "{api:?}");
    assert!(api[3].1.is_some(), "429 without Retry-After");

    // A partner with an API key passes, named to the app.
    let partner = client_from("127.0.0.5");
    for _ in 0..5 {
        let call = send(
            &partner,
            request("GET", &url("/payouts"), &[("x-api-key", PARTNER_KEY), ("user-agent", "acme-payouts/2.1")], ""),
        )
        .await;
        assert_eq!(call.status, 200, "{}", call.body);
    }
    let at_app = app.seen().into_iter().rfind(|s| s.path == "/payouts").unwrap();
    assert_eq!(at_app.headers["x-palisade-partner"], "acme-payouts");

    // Every refusal is in the decision log with its detections; the
    // combo list's outcomes reached palisade (logged with the outcome).
    let lines = palisade.log_lines(10).await;
    assert!(
        lines.iter().any(|l| l["login_outcome"] == "failure" && l["client"] == "127.0.0.4"),
        "no reported outcome in the decision log"
    );
    assert!(lines.iter().any(|l| l["action"] == "block" && l["client"] == "127.0.0.3"));
}

// ---------------------------------------------------------------------------
// Envoy ext_authz (HTTP service)
// ---------------------------------------------------------------------------

/// A check request as Envoy's HTTP ext_authz filter sends it: the original
/// method, `path_prefix` + the original path and query, the original
/// headers it allows (Host, the client's headers, and `x-forwarded-for`
/// as the connection manager set it), and with `with_request_body` the
/// buffered body with `x-envoy-auth-partial-body`.
fn envoy_check(
    palisade: SocketAddr,
    method: &str,
    path: &str,
    client: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Request<Full<Bytes>> {
    let url = format!("http://{palisade}/_palisade/check{path}");
    let mut all =
        vec![("host", "shop.example"), ("x-forwarded-for", client), ("x-envoy-expected-rq-timeout-ms", "200")];
    all.extend_from_slice(headers);
    if !body.is_empty() {
        all.push(("x-envoy-auth-partial-body", "false"));
    }
    request(method, &url, &all, body)
}

fn browser_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("user-agent", BROWSER_UA),
        ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        ("accept-language", "en-US,en;q=0.9"),
        ("sec-fetch-mode", "navigate"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_ext_authz_http_service() {
    let unused = Upstream::start().await;
    let palisade = Palisade::start(&sidecar_config(), &unused).await;
    let envoy = common::http1_client();
    let addr = palisade.addr();

    // Allowed: 200, and the decision headers for `allowed_upstream_headers`.
    let page =
        send(&envoy, envoy_check(addr, "GET", "/account?tab=cards", "198.51.100.7", &browser_headers(), "")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.headers["x-palisade-action"], "allow");
    assert!(page.headers["x-palisade-score"].to_str().unwrap().parse::<u8>().unwrap() >= 50);

    // Denied: the status, headers and body go to the client as they are.
    let attack = send(
        &envoy,
        envoy_check(addr, "GET", "/item?id=1%20UNION%20SELECT", "198.51.100.8", &[("user-agent", SQLMAP_UA)], ""),
    )
    .await;
    assert_eq!(attack.status, 403);
    assert_eq!(attack.headers["content-type"], "application/json");
    let body: serde_json::Value = serde_json::from_str(&attack.body).unwrap();
    assert_eq!(body["error"], "forbidden");
    assert!(body["detections"].as_array().unwrap().iter().any(|d| d == "tool.sqlmap"), "{body}");

    // A rate limit is a real 429 with Retry-After (Envoy passes any status).
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let answer =
            send(&envoy, envoy_check(addr, "GET", "/api/balance", "198.51.100.9", &browser_headers(), "")).await;
        statuses.push(answer.status);
        if answer.status == 429 {
            assert!(answer.headers.contains_key("retry-after"));
        }
    }
    assert_eq!(statuses, [200, 200, 200, 429]);

    // Login stuffing with the body (`with_request_body`): palisade reads
    // the username itself; the application reports each status.
    let mut login_statuses = Vec::new();
    let mut form = browser_headers();
    form.push(("content-type", "application/x-www-form-urlencoded"));
    for i in 0..25 {
        let body = format!("username=victim{i}&password=wrong{i}");
        let check = send(&envoy, envoy_check(addr, "POST", "/login", "198.51.100.10", &form, &body)).await;
        login_statuses.push(check.status);
        if check.status == 200 {
            let id = check.headers["x-palisade-request-id"].to_str().unwrap().to_string();
            let report = serde_json::json!({ "request_id": id, "status": 401 }).to_string();
            let url = format!("http://{addr}/_palisade/outcome");
            let reported = send(&envoy, request("POST", &url, &[("content-type", "application/json")], &report)).await;
            assert_eq!(reported.status, 200, "{}", reported.body);
            assert!(reported.body.contains("\"recorded\":\"failure\""), "{}", reported.body);
        }
    }
    let allowed = login_statuses.iter().filter(|s| **s == 200).count();
    assert!(allowed <= 10, "{allowed} of 25 allowed: {login_statuses:?}");
    assert!(login_statuses.iter().any(|s| *s == 403 || *s == 429), "{login_statuses:?}");

    // The username comes from the body: one account tried from twelve
    // networks (once each, so no address or subnet escalates) is named
    // `cred.account_failures` once its failures reach the account threshold (10).
    let mut account = Vec::new();
    let app_headers =
        [("user-agent", "ExampleBank/7.1 (Android 15)"), ("content-type", "application/x-www-form-urlencoded")];
    for i in 0..12 {
        let client = format!("10.{}.0.1", 20 + i);
        let check =
            send(&envoy, envoy_check(addr, "POST", "/login", &client, &app_headers, "username=alice&password=nope"))
                .await;
        account.push(check.headers["x-palisade-detections"].to_str().unwrap().to_string());
        let id = check.headers["x-palisade-request-id"].to_str().unwrap().to_string();
        let report = format!("request_id={id}&outcome=failure");
        send(&envoy, request("POST", &format!("http://{addr}/_palisade/outcome"), &[], &report)).await;
    }
    assert!(account[..10].iter().all(|d| !d.contains("cred.account_failures")), "{account:?}");
    assert!(account[10].contains("cred.account_failures"), "{account:?}");

    // Reports for unknown ids, or without an outcome, get a clear 4xx.
    let url = format!("http://{addr}/_palisade/outcome");
    let unknown = send(&envoy, request("POST", &url, &[], "request_id=00000000000000ff&status=200")).await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    let vague = send(&envoy, request("POST", &url, &[], "request_id=00000000000000ff")).await;
    assert_eq!(vague.status, 400, "{}", vague.body);
}

#[test]
fn sidecar_mode_needs_a_trusted_proxy() {
    let error = palisade::app::parse_str("[sidecar]\n", "sidecar.toml").unwrap_err().to_string();
    assert!(error.contains("server.trusted_proxies") && error.contains("sidecar"), "{error}");
    let error = palisade::app::parse_str(
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n[sidecar]\nnginx_path = \"auth\"\n",
        "sidecar.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("sidecar.nginx_path") && error.contains("sidecar.toml:4:"), "{error}");
}
