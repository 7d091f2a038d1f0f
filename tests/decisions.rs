//! Decision behaviour end to end: real sockets, a real palisade in front of
//! the harness's real upstream. Distinct clients are distinct loopback
//! source addresses (127.0.0.2, 127.0.0.3, …), which Linux routes to the
//! 127.0.0.1 listener without any setup.

mod common;
use common::*;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

const BROWSER_UA: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";
const SQLMAP_UA: &str = "sqlmap/1.7.2#stable (https://sqlmap.org)";

/// What Chrome sends with every request besides its user agent: client
/// hints and fetch metadata. The default rule set flags a Chrome 90+ user
/// agent without them (`consistency.chrome_without_client_hints`), so the
/// browser requests here carry them, as a real Chrome does.
const CHROME_HEADERS: &[(&str, &str)] = &[
    ("sec-ch-ua", "\"Chromium\";v=\"156\", \"Not.A/Brand\";v=\"24\""),
    ("sec-ch-ua-mobile", "?0"),
    ("sec-ch-ua-platform", "\"Linux\""),
    ("sec-fetch-site", "same-origin"),
    ("sec-fetch-mode", "navigate"),
    ("sec-fetch-dest", "document"),
    ("accept-language", "en-US,en;q=0.9"),
    ("accept-encoding", "gzip, deflate, br, zstd"),
];

/// The same, as raw header lines.
const CHROME_HEADER_LINES: &str = "sec-ch-ua: \"Chromium\";v=\"156\", \"Not.A/Brand\";v=\"24\"\r\n\
    sec-ch-ua-mobile: ?0\r\nsec-ch-ua-platform: \"Linux\"\r\nsec-fetch-site: same-origin\r\n\
    sec-fetch-mode: navigate\r\nsec-fetch-dest: document\r\naccept-language: en-US,en;q=0.9\r\n\
    accept-encoding: gzip, deflate, br, zstd\r\n";

/// The detection ids a 403/429 body names, sorted.
fn detections(body: &Value) -> Vec<String> {
    let list = body["detections"].as_array().expect("detections is a list");
    let mut ids: Vec<String> = list.iter().map(|d| d.as_str().expect("an id").to_string()).collect();
    ids.sort();
    ids
}

/// sqlmap is named by its own rule and by the attack-tool catch-all.
fn assert_sqlmap_detected(body: &Value) {
    let ids = detections(body);
    assert!(ids.iter().any(|d| d == "tool.sqlmap") && ids.iter().any(|d| d == "ua.attack_tool"), "{ids:?}");
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A hyper client whose connections come from `ip` (a loopback address).
fn client_from(ip: &str) -> TestClient {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(ip.parse().unwrap()));
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector)
}

/// Chrome's user agent and headers, then `extra`.
fn chrome_headers<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut headers = vec![("user-agent", BROWSER_UA)];
    headers.extend_from_slice(CHROME_HEADERS);
    headers.extend_from_slice(extra);
    headers
}

/// A browser-like GET.
fn browser_get(url: &str, extra: &[(&str, &str)]) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let mut headers = chrome_headers(&[("accept", "text/html")]);
    headers.extend_from_slice(extra);
    request("GET", url, &headers, "")
}

/// A browser-like login POST with a JSON body.
fn json_login(url: &str, user: &str, password: &str) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    request(
        "POST",
        url,
        &chrome_headers(&[("content-type", "application/json"), ("accept", "application/json")]),
        &format!(r#"{{"username":"{user}","password":"{password}"}}"#),
    )
}

/// A browser-like form login POST. (This shadows `common::login`, whose
/// Chrome user agent comes without Chrome's client hints and fetch
/// metadata, which the default rules flag.)
fn login(url: &str, user: &str, password: &str) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    request(
        "POST",
        url,
        &chrome_headers(&[("content-type", "application/x-www-form-urlencoded"), ("accept", "text/html")]),
        &format!("username={user}&password={password}"),
    )
}

/// A raw HTTP/1.1 response, parsed just enough for assertions.
#[derive(Debug)]
struct RawAnswer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl RawAnswer {
    fn parse(bytes: &[u8]) -> RawAnswer {
        let split = bytes.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete response head");
        let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
        let body = String::from_utf8_lossy(&bytes[split + 4..]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        RawAnswer { status, headers, body }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Send raw bytes from a socket bound to `ip` on a fresh connection and
/// read until the server closes it (the request should say
/// `Connection: close`).
async fn raw_from(ip: &str, addr: SocketAddr, bytes: &[u8]) -> RawAnswer {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(ip.parse::<IpAddr>().unwrap(), 0)).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    RawAnswer::parse(&out)
}

/// A raw browser-like form login: `method target`, closing the connection.
fn raw_login(method: &str, target: &str) -> Vec<u8> {
    raw_login_as(method, target, "alice")
}

/// The same login, as `user`.
fn raw_login_as(method: &str, target: &str, user: &str) -> Vec<u8> {
    let body = format!("username={user}&password=wrong");
    format!(
        "{method} {target} HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: {BROWSER_UA}\r\n{CHROME_HEADER_LINES}\
         Accept: text/html\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The one value of a header the upstream received, as text.
fn seen_header<'a>(seen: &'a Seen, name: &str) -> &'a str {
    let values: Vec<_> = seen.headers.get_all(name).iter().collect();
    assert_eq!(values.len(), 1, "exactly one {name} header reaches the upstream: {values:?}");
    values[0].to_str().unwrap()
}

fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
}

/// The log line with this request id.
fn line_for<'a>(lines: &'a [Value], request_id: &str) -> &'a Value {
    lines.iter().find(|l| l["request_id"] == request_id).unwrap_or_else(|| panic!("no log line for {request_id}"))
}

/// The value of the metrics sample whose line starts with `series `.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Decision-log TOML that logs every decision, allowed ones included.
const LOG_ALL: &str = "[decision_log]\nsample_allowed = 1.0\n";

/// The login route with a 10/60 s limit and credential-abuse escalation
/// out of the way, for tests of the rate limit itself: they send many
/// wrong-password logins from one client, which the credential stage
/// (tested in tests/credential.rs) would otherwise stop first.
const RATE_ONLY: &str = r#"
[[route]]
name = "login"
profile = "login"
path = "/login"
methods = ["POST"]
rate_limit = { requests = 10, period_secs = 60, burst = 10 }
[route.login.abuse]
ip_failures = 1000
subnet_failures = 1000
fingerprint_failures = 1000
username_failures = 1000
"#;

// ---------------------------------------------------------------------------
// 1. Rate limit
// ---------------------------------------------------------------------------

#[tokio::test]
async fn login_rate_limit_answers_429_per_client() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start(RATE_ONLY, &upstream).await;
    let url = palisade.url("/login");
    let client_a = client_from("127.0.0.2");
    let client_b = client_from("127.0.0.3");

    for i in 0..60 {
        let answer = send(&client_a, login(&url, "alice", "wrong")).await;
        if i < 10 {
            assert_eq!((answer.status, answer.body.as_str()), (401, "denied"), "login {i} reaches the upstream");
        } else {
            assert_eq!(answer.status, 429, "login {i} is over the 10/60 s limit: {}", answer.body);
            let retry_after: u64 = answer.headers["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=60).contains(&retry_after), "Retry-After {retry_after} is whole seconds within the period");
            let body = parse_json(&answer.body);
            assert_eq!(body["detections"], json!(["rate.client_route"]));
            let request_id = body["request_id"].as_str().expect("request_id is a string");
            assert_eq!(answer.headers["x-request-id"].to_str().unwrap(), request_id);
            assert_no_internals(&answer.body, request_id);
        }
        // Another client is not affected by A's budget.
        if i % 20 == 15 {
            assert_eq!(send(&client_b, login(&url, "bob", "wrong")).await.status, 401);
            assert_eq!(send(&client_b, login(&url, "bob", "right")).await.status, 200);
        }
    }
    let from_a = upstream.seen().iter().filter(|s| seen_header(s, "x-forwarded-for") == "127.0.0.2").count();
    assert_eq!(from_a, 10, "only A's first 10 logins reached the upstream");
    let from_b = upstream.seen().iter().filter(|s| seen_header(s, "x-forwarded-for") == "127.0.0.3").count();
    assert_eq!(from_b, 6);
}

/// A 429/403 body names the decision, never how it was reached: only the
/// error code, the request id and detection ids.
fn assert_no_internals(body: &str, request_id: &str) {
    let value = parse_json(body);
    let mut keys: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["detections", "error", "request_id"], "{body}");
    // Without the (hex) request id nothing numeric is left: no limit, no
    // period, no burst, no counter, no retry time in milliseconds.
    let rest = body.replace(request_id, "");
    assert!(!rest.contains(|c: char| c.is_ascii_digit()), "numbers in a client answer: {body}");
    // "rate_limited" is the error code; nothing else may mention limits.
    let rest = rest.replace("\"rate_limited\"", "");
    for word in ["limit", "burst", "period", "evidence", "threshold", "score", "retry", "127.0.0"] {
        assert!(!rest.contains(word), "{word:?} in a client answer: {body}");
    }
}

// ---------------------------------------------------------------------------
// 2. Block, and empty user agents
// ---------------------------------------------------------------------------

#[tokio::test]
async fn attack_tool_is_blocked_and_empty_user_agent_only_scored() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start("", &upstream).await;
    let client = http1_client();

    for (method, path) in [("GET", "/hello"), ("POST", "/login")] {
        let answer =
            send(&client, request(method, &palisade.url(path), &[("user-agent", SQLMAP_UA)], "username=a")).await;
        assert_eq!(answer.status, 403, "{method} {path}: {}", answer.body);
        let body = parse_json(&answer.body);
        assert_eq!(body["error"], "forbidden");
        assert_sqlmap_detected(&body);
        let request_id = body["request_id"].as_str().unwrap();
        assert_eq!(request_id.len(), 16);
        assert_eq!(answer.headers["x-request-id"].to_str().unwrap(), request_id);
        assert_no_internals(&answer.body, request_id);
    }
    assert!(upstream.seen().is_empty(), "blocked requests never reach the upstream");

    // No User-Agent at all (hyper's client adds none), and a blank one.
    for headers in [vec![], vec![("user-agent", "")]] {
        let answer = send(&client, request("GET", &palisade.url("/hello"), &headers, "")).await;
        assert_eq!((answer.status, answer.body.as_str()), (200, "echo /hello"));
        let seen = upstream.last();
        let score: u8 = seen_header(&seen, "x-palisade-score").parse().unwrap();
        assert_eq!(score, 80 - 50, "ua.empty takes its 50 points off the base score of 80");
        assert_eq!(seen_header(&seen, "x-palisade-detections"), "ua.empty");
        // Score 30 is the default challenge threshold: forwarded, flagged.
        assert_eq!(seen_header(&seen, "x-palisade-action"), "challenge");
    }
    assert_eq!(upstream.seen().len(), 2);
}

/// User agents with bytes outside ASCII are legal (obs-text) and real
/// browsers send them (device names in UTF-8). They are neither "empty" nor
/// a way around the attack-tool rule.
#[tokio::test]
async fn non_ascii_user_agents_are_matched_not_treated_as_empty() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start("", &upstream).await;
    // A phone's Chrome: client hints and fetch metadata as Chrome sends them.
    let raw = |ua: &[u8]| {
        let mut bytes = b"GET /hello HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: ".to_vec();
        bytes.extend_from_slice(ua);
        bytes.extend_from_slice(b"\r\nAccept: text/html\r\n");
        bytes.extend_from_slice(CHROME_HEADER_LINES.replace("?0", "?1").replace("Linux", "Android").as_bytes());
        bytes.extend_from_slice(b"Connection: close\r\n\r\n");
        bytes
    };

    let phone = "Mozilla/5.0 (Linux; Android 12; HUAWEI 畅享 50) AppleWebKit/537.36 Chrome/156.0 Mobile Safari/537.36";
    let answer = raw_from("127.0.0.1", palisade.addr(), &raw(phone.as_bytes())).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let seen = upstream.last();
    assert_eq!(seen.headers["user-agent"].as_bytes(), phone.as_bytes(), "forwarded unchanged");
    assert_eq!(seen_header(&seen, "x-palisade-detections"), "", "a present user agent is not ua.empty");
    assert_eq!(seen_header(&seen, "x-palisade-score"), "80");

    // sqlmap with one Latin-1 byte in it is still sqlmap.
    let answer = raw_from("127.0.0.1", palisade.addr(), &raw(b"sqlmap/1.7.2 (caf\xe9)")).await;
    assert_eq!(answer.status, 403, "{answer:?}");
    let body = parse_json(&answer.body);
    assert_sqlmap_detected(&body);
    assert_eq!(answer.header("x-request-id"), body["request_id"].as_str());
    assert_eq!(upstream.seen().len(), 1);
}

// ---------------------------------------------------------------------------
// 3. Decision headers for the application
// ---------------------------------------------------------------------------

#[tokio::test]
async fn upstream_gets_decision_headers_and_client_copies_are_replaced() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start("", &upstream).await;
    let client = http1_client();
    let forged = [
        ("x-palisade-score", "99"),
        ("x-palisade-detections", "x"),
        ("x-palisade-partner", "evil"),
        ("x-palisade-action", "allow-all"),
        ("x-palisade-request-id", "forged"),
    ];

    let mut request_ids = Vec::new();
    for req in [
        browser_get(&palisade.url("/hello"), &forged),
        request(
            "POST",
            &palisade.url("/login"),
            &chrome_headers(&[("content-type", "application/x-www-form-urlencoded"), ("accept", "text/html")])
                .into_iter()
                .chain(forged)
                .collect::<Vec<_>>(),
            "username=alice&password=right",
        ),
    ] {
        let answer = send(&client, req).await;
        assert!(answer.status == 200, "{}", answer.body);
        let seen = upstream.last();
        let score: u8 = seen_header(&seen, "x-palisade-score").parse().unwrap();
        assert!((1..=99).contains(&score));
        assert_eq!(score, 80, "a clean browser request gets the base score");
        assert_eq!(seen_header(&seen, "x-palisade-detections"), "", "present and empty when nothing fired");
        assert_eq!(seen_header(&seen, "x-palisade-action"), "allow");
        let request_id = seen_header(&seen, "x-palisade-request-id").to_string();
        assert_eq!(request_id.len(), 16);
        assert!(request_id.chars().all(|c| c.is_ascii_hexdigit()), "{request_id}");
        assert!(seen.headers.get("x-palisade-partner").is_none(), "anonymous requests carry no partner header");
        request_ids.push(request_id);
    }
    assert_ne!(request_ids[0], request_ids[1], "request ids are unique");
}

// ---------------------------------------------------------------------------
// 4. Monitor mode per route, shadow mode per rule
// ---------------------------------------------------------------------------

const MONITOR_CONFIG: &str = r#"
[[route]]
name = "login"
profile = "login"
path = "/login"
methods = ["POST"]
mode = "monitor"
rate_limit = { requests = 3, period_secs = 3600 }

[[route]]
name = "api"
profile = "api"
path = "/api/*"
rate_limit = { requests = 3, period_secs = 3600 }

[signatures]
builtin = false
paths = ["RULES_PATH"]
"#;

/// Two rules in a rule file of the test's own: one in shadow mode, one
/// enforced, so shadow is shown to be per rule.
const MONITOR_RULES: &str = r#"
[[rule]]
id = "ua.attack_tool"
field = "user_agent"
contains = ["sqlmap"]
score = 79
action = "block"
mode = "shadow"

[[rule]]
id = "ua.scanner"
field = "user_agent"
contains = ["nikto"]
score = 79
action = "block"
"#;

#[tokio::test]
async fn monitor_routes_and_shadow_rules_log_what_they_would_do() {
    let upstream = Upstream::start().await;
    let rules_dir = tempfile::tempdir().unwrap();
    let rules_path = rules_dir.path().join("rules.toml");
    std::fs::write(&rules_path, MONITOR_RULES).unwrap();
    let config = MONITOR_CONFIG.replace("RULES_PATH", rules_path.to_str().unwrap());
    let palisade = Palisade::start(&config, &upstream).await;
    let client = http1_client();

    // Shadow rule: sqlmap passes, and the app is not told about it.
    let answer = send(&client, request("GET", &palisade.url("/hello"), &[("user-agent", SQLMAP_UA)], "")).await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "echo /hello"));
    let seen = upstream.last();
    assert_eq!(seen.headers["user-agent"], SQLMAP_UA);
    assert_eq!(seen_header(&seen, "x-palisade-action"), "log");
    assert_eq!(seen_header(&seen, "x-palisade-score"), "80");
    assert_eq!(seen_header(&seen, "x-palisade-detections"), "");
    let shadow_id = seen_header(&seen, "x-palisade-request-id").to_string();

    // An enforcing rule next to it still blocks.
    let answer = send(&client, request("GET", &palisade.url("/hello"), &[("user-agent", "Nikto/2.5.0")], "")).await;
    assert_eq!(answer.status, 403);

    // Monitored route: every login passes, over the limit or not.
    let mut monitored_ids = Vec::new();
    for i in 0..6 {
        let answer = send(&client, login(&palisade.url("/login"), "alice", "wrong")).await;
        assert_eq!(answer.status, 401, "login {i} passes on a monitored route");
        let seen = upstream.last();
        let action = seen_header(&seen, "x-palisade-action");
        assert_eq!(action, if i < 3 { "allow" } else { "log" }, "login {i}");
        if i >= 3 {
            monitored_ids.push(seen_header(&seen, "x-palisade-request-id").to_string());
        }
    }

    // Monitor mode is per route: the enforcing API route still limits.
    for i in 0..4 {
        let answer = send(&client, browser_get(&palisade.url("/api/items"), &[])).await;
        assert_eq!(answer.status, if i < 3 { 200 } else { 429 }, "api request {i}");
    }

    // sqlmap + 3 over-limit logins + nikto + the api 429.
    let lines = palisade.log_lines(6).await;
    assert_eq!(lines.len(), 6, "{lines:#?}");
    let shadow = line_for(&lines, &shadow_id);
    assert_eq!(shadow["action"], "log");
    assert_eq!(shadow["would_action"], "block");
    assert_eq!(shadow["score"], 80);
    assert_eq!(shadow["would_score"], 1);
    assert_eq!(shadow["detections"], json!([]), "shadow signals are not enforced detections");
    assert_eq!(shadow["signals"][0]["id"], "ua.attack_tool");
    assert_eq!(shadow["signals"][0]["shadow"], true);
    for id in &monitored_ids {
        let line = line_for(&lines, id);
        assert_eq!(line["action"], "log");
        assert_eq!(line["would_action"], "rate_limit");
        assert_eq!(line["mode"], "monitor");
        assert_eq!(line["route"], "login");
        assert_eq!(line["signals"][0]["id"], "rate.client_route");
        assert!(line.get("retry_after_s").is_none(), "nothing was enforced, so no retry time");
    }
    assert_eq!(lines.iter().filter(|l| l["action"] == "block").count(), 1);
    let limited: Vec<_> = lines.iter().filter(|l| l["action"] == "rate_limit").collect();
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0]["route"], "api");
    assert_eq!(limited[0]["mode"], "enforce");
}

// ---------------------------------------------------------------------------
// 5. Trusted proxies
// ---------------------------------------------------------------------------

#[tokio::test]
async fn trusted_proxy_forwarded_clients_have_their_own_budgets() {
    let upstream = Upstream::start().await;
    let config = format!("[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n{LOG_ALL}{RATE_ONLY}");
    let palisade = Palisade::start(&config, &upstream).await;
    let proxy = client_from("127.0.0.1");
    let url = palisade.url("/login");
    let behind = |xff: &str| {
        let mut req = login(&url, "alice", "wrong");
        req.headers_mut().insert("x-forwarded-for", xff.parse().unwrap());
        req
    };

    for i in 0..10 {
        assert_eq!(send(&proxy, behind("198.51.100.1")).await.status, 401, "client .1 login {i}");
        assert_eq!(send(&proxy, behind("198.51.100.2")).await.status, 401, "client .2 login {i}");
    }
    let seen = upstream.last();
    assert_eq!(seen_header(&seen, "x-forwarded-for"), "198.51.100.2, 127.0.0.1", "the chain plus the peer");

    let limited = send(&proxy, behind("198.51.100.1")).await;
    assert_eq!(limited.status, 429);
    let limited_id = parse_json(&limited.body)["request_id"].as_str().unwrap().to_string();
    assert_eq!(send(&proxy, behind("198.51.100.2")).await.status, 429);
    // What the client wrote left of the trusted proxy's entry is not believed.
    assert_eq!(send(&proxy, behind("203.0.113.9, 198.51.100.1")).await.status, 429);
    // A new client behind the same proxy still has its budget.
    assert_eq!(send(&proxy, behind("198.51.100.3")).await.status, 401);

    let lines = palisade.log_lines(24).await;
    assert_eq!(lines.len(), 24);
    assert_eq!(line_for(&lines, &limited_id)["client"], "198.51.100.1");
    let clients: std::collections::BTreeSet<&str> = lines.iter().map(|l| l["client"].as_str().unwrap()).collect();
    assert_eq!(clients.into_iter().collect::<Vec<_>>(), ["198.51.100.1", "198.51.100.2", "198.51.100.3"]);
}

#[tokio::test]
async fn untrusted_peer_cannot_rotate_x_forwarded_for() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start(RATE_ONLY, &upstream).await;
    let client = client_from("127.0.0.1");
    let url = palisade.url("/login");

    let mut last = None;
    for i in 0..11 {
        let mut req = login(&url, "alice", "wrong");
        req.headers_mut().insert("x-forwarded-for", format!("198.51.100.{}", i + 1).parse().unwrap());
        let answer = send(&client, req).await;
        assert_eq!(answer.status, if i < 10 { 401 } else { 429 }, "login {i}");
        if i < 10 {
            let seen = upstream.last();
            assert_eq!(seen_header(&seen, "x-forwarded-for"), "127.0.0.1", "spoofed entries are dropped");
        }
        last = Some(answer);
    }
    let request_id = parse_json(&last.unwrap().body)["request_id"].as_str().unwrap().to_string();
    let lines = palisade.log_lines(1).await;
    assert_eq!(lines.len(), 1);
    assert_eq!(line_for(&lines, &request_id)["client"], "127.0.0.1");
}

// ---------------------------------------------------------------------------
// 6. Route normalization
// ---------------------------------------------------------------------------

const TIGHT_LOGIN: &str = r#"
[decision_log]
sample_allowed = 1.0

[[route]]
name = "login"
profile = "login"
path = "/login"
methods = ["POST"]
rate_limit = { requests = 3, period_secs = 3600 }
"#;

/// Request targets that name `/login` to a typical application. A raw
/// backslash (`\login`) is not here: hyper answers 400 to it before any
/// routing, so it cannot bypass anything; `%5c` is its encoded form.
const LOGIN_VARIANTS: &[&str] = &[
    "/login",
    "/Login",
    "/LOGIN",
    "/login/",
    "//login",
    "/./login",
    "/x/../login",
    "/%6cogin",
    "/%6Cogin",
    "/%256cogin",
    "/%6c%6f%67%69%6e",
    "/login;jsessionid=1",
    "/login%2f",
    "/login%2F",
    "/login/.",
    "/%2e/login",
    "/%2E%2E/login",
    "/login?x=1",
    "///login//",
    "/static/..%2flogin",
    "/login%5c",
    "/login/..;/login",
    "http://shop.example/login",
];

#[tokio::test]
async fn login_path_variants_share_the_login_limit() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start(TIGHT_LOGIN, &upstream).await;
    assert!(LOGIN_VARIANTS.len() >= 15);

    // One client cycling through the variants: the 4th onward are limited,
    // whichever variant they use.
    for (i, target) in LOGIN_VARIANTS.iter().enumerate() {
        let answer = raw_from("127.0.0.2", palisade.addr(), &raw_login("POST", target)).await;
        if i < 3 {
            assert_ne!(answer.status, 429, "{target} is within the limit: {answer:?}");
        } else {
            assert_eq!(answer.status, 429, "{target} counts against the login limit: {answer:?}");
            assert!(answer.header("retry-after").is_some(), "{answer:?}");
        }
    }

    // Each variant on its own, from its own client (a person of their own:
    // the test upstream answers 200 to most variants, and one account's
    // successes would not offset the subnet's failures): three of them use
    // up the budget that a plain /login then finds empty.
    for (i, target) in LOGIN_VARIANTS.iter().enumerate() {
        let ip = format!("127.0.1.{}", i + 1);
        let user = format!("person{i}");
        for n in 0..3 {
            let answer = raw_from(&ip, palisade.addr(), &raw_login_as("POST", target, &user)).await;
            assert_ne!(answer.status, 429, "{target} #{n}: {answer:?}");
        }
        let answer = raw_from(&ip, palisade.addr(), &raw_login_as("POST", target, &user)).await;
        assert_eq!(answer.status, 429, "4th {target}");
        let answer = raw_from(&ip, palisade.addr(), &raw_login_as("POST", "/login", &user)).await;
        assert_eq!(answer.status, 429, "/login after 3× {target}");
    }

    let expected = LOGIN_VARIANTS.len() * 6;
    let lines = palisade.log_lines(expected).await;
    assert_eq!(lines.len(), expected);
    for line in &lines {
        assert_eq!(line["route"], "login", "{line}");
        assert_eq!(line["path"], "/login", "{line}");
    }
}

/// Methods are case-sensitive in HTTP, but frameworks that upper-case them
/// (Django's `request.method`, Werkzeug's router) would run their login
/// view for `post /login`; it must not skip the login route's limit.
#[tokio::test]
async fn lowercase_method_does_not_escape_the_login_route() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start(TIGHT_LOGIN, &upstream).await;
    for i in 0..5 {
        let method = if i % 2 == 0 { "post" } else { "Post" };
        let answer = raw_from("127.0.0.2", palisade.addr(), &raw_login(method, "/login")).await;
        assert_eq!(answer.status == 429, i >= 3, "{method} /login #{i}: {answer:?}");
    }
    let lines = palisade.log_lines(5).await;
    assert!(lines.iter().all(|l| l["route"] == "login"), "{lines:#?}");
    // A GET is not a login attempt and stays on the default route.
    let answer = raw_from(
        "127.0.0.2",
        palisade.addr(),
        b"GET /login HTTP/1.1\r\nHost: x\r\nUser-Agent: Mozilla/5.0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, 200);
}

// ---------------------------------------------------------------------------
// 7. Partners
// ---------------------------------------------------------------------------

const PARTNER_KEY: &str = "pk_live_acme_5f1c2d";

#[tokio::test]
async fn partners_skip_bot_detection_but_keep_their_quota() {
    let upstream = Upstream::start().await;
    let config = format!(
        r#"
[[partner]]
name = "acme"
api_key_sha256 = ["{}"]
quota = {{ requests = 5, period_secs = 60 }}

[[partner]]
name = "netco"
cidrs = ["127.0.0.5/32"]
"#,
        palisade::identify::api_key_sha256(PARTNER_KEY)
    );
    let palisade = Palisade::start(&config, &upstream).await;
    let client = client_from("127.0.0.2");
    let url = palisade.url("/api/partner/orders");
    let partner_request = |key: &str| request("GET", &url, &[("user-agent", "sqlmap/1.7.2"), ("x-api-key", key)], "");

    for i in 0..5 {
        let answer = send(&client, partner_request(PARTNER_KEY)).await;
        assert_eq!(answer.status, 200, "partner request {i}: {}", answer.body);
        let seen = upstream.last();
        assert_eq!(seen_header(&seen, "x-palisade-partner"), "acme");
        assert_eq!(seen_header(&seen, "x-palisade-score"), "99");
        assert_eq!(seen_header(&seen, "x-palisade-detections"), "");
        assert_eq!(seen_header(&seen, "x-palisade-action"), "allow");
    }
    let over = send(&client, partner_request(PARTNER_KEY)).await;
    assert_eq!(over.status, 429, "{}", over.body);
    assert!(over.headers.contains_key("retry-after"));
    let body = parse_json(&over.body);
    assert_eq!(body["detections"], json!(["partner.quota"]));
    let over_id = body["request_id"].as_str().unwrap().to_string();
    assert_no_internals(&over.body, &over_id);
    assert_eq!(upstream.seen().len(), 5);

    // A wrong key identifies nobody: sqlmap is sqlmap.
    let wrong = send(&client, partner_request("pk_live_acme_guess")).await;
    assert_eq!(wrong.status, 403);
    assert_sqlmap_detected(&parse_json(&wrong.body));

    // The network partner: recognised by address, not rate limited by the
    // login route's per-client limit (partners skip every bot detector).
    let netco = client_from("127.0.0.5");
    let answer = send(&netco, request("GET", &palisade.url("/hello"), &[("user-agent", SQLMAP_UA)], "")).await;
    assert_eq!(answer.status, 200);
    let seen = upstream.last();
    assert_eq!(seen_header(&seen, "x-palisade-partner"), "netco");
    assert_eq!(seen_header(&seen, "x-palisade-score"), "99");
    for i in 0..12 {
        assert_eq!(send(&netco, login(&palisade.url("/login"), "svc", "wrong")).await.status, 401, "login {i}");
    }
    // The same traffic from a neighbour address is anonymous.
    let neighbour = client_from("127.0.0.6");
    let answer = send(&neighbour, request("GET", &palisade.url("/hello"), &[("user-agent", SQLMAP_UA)], "")).await;
    assert_eq!(answer.status, 403);

    let lines = palisade.log_lines(3).await;
    let line = line_for(&lines, &over_id);
    assert_eq!(line["partner"], "acme");
    assert_eq!(line["action"], "rate_limit");
}

// ---------------------------------------------------------------------------
// 8. Observe
// ---------------------------------------------------------------------------

#[tokio::test]
async fn upstream_status_and_login_outcome_are_logged() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start(LOG_ALL, &upstream).await;
    let client = http1_client();
    let url = palisade.url("/login");

    let mut expected = Vec::new();
    for (req, status, outcome) in [
        (login(&url, "alice", "wrong"), 401, Some("failure")),
        (login(&url, "alice", "right"), 200, Some("success")),
        (json_login(&url, "bob", "wrong"), 401, Some("failure")),
        (json_login(&url, "bob", "right"), 200, Some("success")),
        (browser_get(&palisade.url("/hello"), &[]), 200, None),
        (browser_get(&palisade.url("/status/503"), &[]), 503, None),
    ] {
        assert_eq!(send(&client, req).await.status, status);
        let id = seen_header(&upstream.last(), "x-palisade-request-id").to_string();
        expected.push((id, status, outcome));
    }

    let lines = palisade.log_lines(expected.len()).await;
    assert_eq!(lines.len(), expected.len());
    for (id, status, outcome) in &expected {
        let line = line_for(&lines, id);
        assert_eq!(line["upstream_status"], *status, "{line}");
        assert_eq!(line["login_outcome"].as_str(), *outcome, "{line}");
        assert_eq!(line["action"], "allow");
        assert!(line["upstream_ms"].is_number());
    }
    assert_eq!(line_for(&lines, &expected[0].0)["route"], "login");
    assert_eq!(line_for(&lines, &expected[4].0)["route"], "default");
}

// ---------------------------------------------------------------------------
// 9. Secrets stay out of logs and metrics
// ---------------------------------------------------------------------------

#[tokio::test]
async fn passwords_and_query_strings_stay_out_of_logs_and_metrics() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start(&format!("{LOG_ALL}{RATE_ONLY}"), &upstream).await;
    let client = http1_client();

    for i in 0..12 {
        let url = palisade.url(if i % 3 == 0 { "/login?token=abc123secret" } else { "/login" });
        let req = if i % 2 == 0 { json_login(&url, "u", "hunter2-secret") } else { login(&url, "u", "hunter2-secret") };
        let answer = send(&client, req).await;
        assert_eq!(answer.status, if i < 10 { 401 } else { 429 });
        assert!(!answer.body.contains("hunter2") && !answer.body.contains("abc123"));
    }
    let answer = send(&client, browser_get(&palisade.url("/hello?token=abc123secret"), &[])).await;
    assert_eq!(answer.status, 200);
    let blocked =
        send(&client, request("GET", &palisade.url("/hello?token=abc123secret"), &[("user-agent", SQLMAP_UA)], ""))
            .await;
    assert_eq!(blocked.status, 403);
    assert!(!blocked.body.contains("abc123"));

    // The secrets were really in the traffic: the upstream got them.
    let seen = upstream.seen();
    assert!(seen.iter().any(|s| s.uri == "/login?token=abc123secret"));
    assert!(seen.iter().any(|s| s.body.as_ref() == br#"{"username":"u","password":"hunter2-secret"}"#));
    assert!(seen.iter().any(|s| s.body.as_ref() == b"username=u&password=hunter2-secret"));

    let lines = palisade.log_lines(14).await;
    assert_eq!(lines.len(), 14);
    let log_text = std::fs::read_to_string(&palisade.log_path).unwrap();
    let metrics = palisade.metrics_text().await;
    for (what, text) in [("decision log", &log_text), ("metrics", &metrics)] {
        for secret in ["hunter2", "abc123secret", "token="] {
            assert!(!text.contains(secret), "{secret:?} in the {what}:\n{text}");
        }
    }
    assert!(lines.iter().all(|l| !l["path"].as_str().unwrap().contains('?')));
}

// ---------------------------------------------------------------------------
// 10. Metrics and health
// ---------------------------------------------------------------------------

#[tokio::test]
async fn metrics_count_actions_detections_and_latency() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start(RATE_ONLY, &upstream).await;
    let client = http1_client();

    for i in 0..11 {
        let answer = send(&client, login(&palisade.url("/login"), "alice", "wrong")).await;
        assert_eq!(answer.status, if i < 10 { 401 } else { 429 });
    }
    let blocked = send(&client, request("GET", &palisade.url("/hello"), &[("user-agent", SQLMAP_UA)], "")).await;
    assert_eq!(blocked.status, 403);

    let text = palisade.metrics_text().await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(metric(&text, r#"palisade_requests_total{route="login",action="allow"}"#), Some(10.0), "{text}");
    assert_eq!(metric(&text, r#"palisade_requests_total{route="login",action="rate_limit"}"#), Some(1.0), "{text}");
    assert_eq!(metric(&text, r#"palisade_requests_total{route="default",action="block"}"#), Some(1.0), "{text}");
    assert_eq!(
        metric(&text, r#"palisade_detections_total{detection="ua.attack_tool",shadow="false"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, r#"palisade_detections_total{detection="rate.client_route",shadow="false"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(metric(&text, r#"palisade_upstream_responses_total{route="login",status="4xx"}"#), Some(10.0), "{text}");
    // A histogram: every decision falls in the +Inf bucket, and the buckets are cumulative.
    assert_eq!(metric(&text, r#"palisade_decision_latency_seconds_bucket{le="+Inf"}"#), Some(12.0), "{text}");
    let under_1ms = metric(&text, r#"palisade_decision_latency_seconds_bucket{le="0.001"}"#).expect("1 ms bucket");
    let under_1s = metric(&text, r#"palisade_decision_latency_seconds_bucket{le="1"}"#).expect("1 s bucket");
    assert!(under_1ms <= under_1s && under_1s <= 12.0, "{text}");
    assert_eq!(metric(&text, "palisade_decision_latency_seconds_count"), Some(12.0), "{text}");

    let health =
        raw_request(palisade.running.admin_addr, b"GET /healthz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
            .await;
    let health = RawAnswer::parse(&health);
    assert_eq!(health.status, 200);
    assert_eq!(health.body.trim(), "ok");
}
