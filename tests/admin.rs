//! The admin API on the admin listener, against the real proxy: changes
//! need the token; a lifted ban lets the client back in (in process, and
//! across two replicas sharing one real Redis); a bad reload answers its
//! problems with their lines and keeps the running configuration; every
//! change leaves an audit line in the decision log.

mod common;

use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::{BinaryPalisade, Palisade, TestClient, Upstream, http1_client, login, request, send};
use serde_json::Value;

const TOKEN: &str = "correct horse battery staple";

/// A login route whose failures from one address ban it quickly; the
/// subnet, fingerprint, account and site-wide signals kept out of the way.
const ROUTES: &str = r#"
[admin]
token = "correct horse battery staple"

[[route]]
name = "login"
profile = "login"
path = "/login"
methods = ["POST"]
rate_limit = { requests = 1000, period_secs = 60, burst = 1000 }

[route.login.abuse]
ip_failures = 4
subnet_failures = 1000
fingerprint_failures = 1000
ip_distinct_usernames = 1000
subnet_distinct_usernames = 1000
fingerprint_distinct_usernames = 1000
username_failures = 1000
username_distinct_addresses = 1000
site_min_attempts = 100000
"#;

async fn admin(
    client: &TestClient,
    admin: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json"), ("x-palisade-operator", "test-analyst")];
    if let Some(bearer) = &bearer {
        headers.push(("authorization", bearer.as_str()));
    }
    let answer = send(client, request(method, &format!("http://{admin}{path}"), &headers, body)).await;
    let json = serde_json::from_str(&answer.body).unwrap_or(Value::String(answer.body.clone()));
    (answer.status, json)
}

/// Failing logins until the address is banned; the answer names `cred.banned`.
async fn get_banned(client: &TestClient, palisade: &Palisade) {
    for attempt in 0..100 {
        let answer = send(client, login(&palisade.url("/login"), &format!("victim{attempt}"), "wrong")).await;
        if answer.status == 403 && answer.body.contains("cred.banned") {
            return;
        }
    }
    panic!("the address was never banned");
}

fn audit_lines(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|line| line.get("audit").is_some()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_need_the_token_and_a_lifted_ban_lets_the_client_back_in() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start(ROUTES, &upstream).await;
    let admin_addr = palisade.running.admin_addr;
    let client = http1_client();
    get_banned(&client, &palisade).await;

    // Listing is open, like /metrics: the ban, its scope, time left and cause.
    let (status, listed) = admin(&client, admin_addr, "GET", "/api/bans", None, "").await;
    assert_eq!(status, 200, "{listed}");
    let bans = listed["bans"].as_array().unwrap();
    assert_eq!(bans.len(), 1, "{listed}");
    assert_eq!(bans[0]["scope"], "address");
    assert_eq!(bans[0]["route"], "login");
    assert_eq!(bans[0]["detections"], serde_json::json!(["cred.ip_failures"]));
    let left = bans[0]["left_s"].as_u64().unwrap();
    assert!(left > 800 && left <= 900, "ban_secs is 900 by default: {left}");
    let key = bans[0]["key"].as_str().unwrap().to_string();
    assert!(!key.contains("127.0.0.1"), "the store holds keyed hashes, not addresses: {key}");
    let (_, by_address) = admin(&client, admin_addr, "GET", "/api/bans?ip=127.0.0.1", None, "").await;
    assert_eq!(by_address["bans"][0]["key"], key.as_str());
    let (_, other) = admin(&client, admin_addr, "GET", "/api/bans?ip=192.0.2.1", None, "").await;
    assert_eq!(other["bans"], serde_json::json!([]));

    // Changes without the token, or with a wrong one: 401, nothing lifted.
    let lift = r#"{"ip": "127.0.0.1"}"#;
    let (status, _) = admin(&client, admin_addr, "POST", "/api/bans/lift", None, lift).await;
    assert_eq!(status, 401);
    let (status, _) = admin(&client, admin_addr, "POST", "/api/bans/lift", Some("guess"), lift).await;
    assert_eq!(status, 401);
    let still = send(&client, login(&palisade.url("/login"), "someone", "right")).await;
    assert_eq!(still.status, 403, "{}", still.body);

    // Bad requests are 400s that say what is wrong.
    let (status, answer) = admin(&client, admin_addr, "POST", "/api/bans/lift", Some(TOKEN), "{nope").await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) =
        admin(&client, admin_addr, "POST", "/api/bans/lift", Some(TOKEN), r#"{"ip": "not-an-address"}"#).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("not an IP address"), "{answer}");

    // With the token: lifted, and the client's next request passes.
    let (status, answer) = admin(&client, admin_addr, "POST", "/api/bans/lift", Some(TOKEN), lift).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["lifted"], serde_json::json!([key]));
    let next = send(&client, login(&palisade.url("/login"), "someone", "right")).await;
    assert_eq!(next.status, 200, "the lifted client passes: {}", next.body);
    let (_, listed) = admin(&client, admin_addr, "GET", "/api/bans", None, "").await;
    assert_eq!(listed["bans"], serde_json::json!([]));

    // Adding a temporary ban stops the client at once, with the reason given.
    let (status, answer) = admin(
        &client,
        admin_addr,
        "POST",
        "/api/bans",
        Some(TOKEN),
        r#"{"ip": "127.0.0.1", "ttl_secs": 120, "reason": "incident-42"}"#,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let stopped = send(&client, login(&palisade.url("/login"), "someone", "right")).await;
    assert_eq!(stopped.status, 403, "{}", stopped.body);
    assert!(stopped.body.contains("cred.banned"), "{}", stopped.body);
    let (_, listed) = admin(&client, admin_addr, "GET", "/api/bans", None, "").await;
    assert_eq!(listed["bans"][0]["detections"], serde_json::json!(["incident-42"]));
    assert!(listed["bans"][0]["left_s"].as_u64().unwrap() <= 120);

    // Every change is in the decision log: who, what, when, the result.
    let lines = palisade.log_lines(1).await;
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut audits = audit_lines(&lines).len();
    while audits < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        audits = audit_lines(&palisade.log_lines(1).await).len();
    }
    let lines = palisade.log_lines(1).await;
    let audits = audit_lines(&lines);
    assert_eq!(audits.len(), 2, "one audit line per change (refused ones change nothing): {audits:#?}");
    assert_eq!(audits[0]["audit"], "lift_ban");
    assert_eq!(audits[0]["operator"], "test-analyst");
    assert!(audits[0]["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(audits[0]["result"]["lifted"], serde_json::json!([key]));
    assert!(audits[0]["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(audits[1]["audit"], "add_ban");
    assert_eq!(audits[1]["target"]["ttl_secs"], 120);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_api_is_read_only() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start(&ROUTES.replace(&format!("token = \"{TOKEN}\""), ""), &upstream).await;
    let admin_addr = palisade.running.admin_addr;
    let client = http1_client();
    let (status, answer) =
        admin(&client, admin_addr, "POST", "/api/bans", Some(TOKEN), r#"{"ip": "127.0.0.1", "ttl_secs": 60}"#).await;
    assert_eq!(status, 403, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("read-only"), "{answer}");
    let (status, _) = admin(&client, admin_addr, "GET", "/api/bans", None, "").await;
    assert_eq!(status, 200);
    let (status, partners) = admin(&client, admin_addr, "GET", "/api/partners", None, "").await;
    assert_eq!((status, partners["partners"].as_array().map(Vec::len)), (200, Some(0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partners_are_listed_with_their_quota_use() {
    let upstream = Upstream::start().await;
    let config = format!(
        "{ROUTES}\n[[partner]]\nname = \"acme\"\ncidrs = [\"127.0.0.0/8\"]\nquota = {{ requests = 3, period_secs = 60 }}\n"
    );
    let palisade = Palisade::start(&config, &upstream).await;
    let client = http1_client();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(send(&client, request("GET", &palisade.url("/api/items"), &[], "")).await.status);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    let (status, answer) = admin(&client, palisade.running.admin_addr, "GET", "/api/partners", None, "").await;
    assert_eq!(status, 200);
    let acme = &answer["partners"][0];
    assert_eq!(acme["name"], "acme");
    assert_eq!(acme["networks"], serde_json::json!(["127.0.0.0/8"]));
    assert_eq!(acme["quota"]["requests"], 3);
    assert_eq!((acme["requests_total"].as_u64(), acme["quota_limited_total"].as_u64()), (Some(5), Some(2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_reload_answers_its_problems_and_keeps_the_running_configuration() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("palisade.toml");
    let log = dir.path().join("decisions.jsonl");
    let good = format!("{ROUTES}\n[decision_log]\npath = \"{}\"\n", log.display());
    std::fs::write(&path, &good).unwrap();
    let palisade =
        BinaryPalisade::spawn(&["serve", "--config", path.to_str().unwrap(), "--upstream", &upstream.url()]).await;
    let client = http1_client();
    let sqlmap = || request("GET", &format!("http://{}/item?id=1", palisade.addr), &[("user-agent", "sqlmap/1.7")], "");
    assert_eq!(send(&client, sqlmap()).await.status, 403);

    // A broken file: an unknown key on line 3 and a bad CIDR further down.
    let broken = good.replace("[admin]\n", "[admin]\nlisten_here = 1\n")
        + "\n[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n[signatures]\nbuiltin = false\n";
    std::fs::write(&path, &broken).unwrap();
    let (status, _) = admin(&client, palisade.admin, "POST", "/api/reload", None, "").await;
    assert_eq!(status, 401);
    let (status, answer) = admin(&client, palisade.admin, "POST", "/api/reload", Some(TOKEN), "").await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["reloaded"], false);
    let problems: Vec<&str> = answer["problems"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    let file = path.display().to_string();
    assert!(
        problems.iter().any(|p| p.starts_with(&format!("{file}:3: admin.listen_here: unknown field"))),
        "the unknown key, with its line: {problems:#?}"
    );
    // The running configuration stays: sqlmap is still blocked (the broken
    // file turned the built-in signatures off).
    assert_eq!(send(&client, sqlmap()).await.status, 403);

    // A good file reloads; the change takes effect.
    std::fs::write(&path, good.clone() + "\n[signatures]\nbuiltin = false\n").unwrap();
    let (status, answer) = admin(&client, palisade.admin, "POST", "/api/reload", Some(TOKEN), "").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(send(&client, sqlmap()).await.status, 200);

    let deadline = Instant::now() + Duration::from_secs(5);
    let audits = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let audits: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l.get("audit").is_some())
            .collect();
        if audits.len() >= 2 || Instant::now() > deadline {
            break audits;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let results: Vec<(&str, bool)> =
        audits.iter().map(|a| (a["audit"].as_str().unwrap(), a["result"]["reloaded"].as_bool().unwrap())).collect();
    assert_eq!(results, [("reload", false), ("reload", true)]);
    assert!(audits[0]["result"]["problems"].to_string().contains("admin.listen_here"), "{:?}", audits[0]);
}

/// Two replicas sharing one real Redis: a ban set through one is listed
/// by the other; lifted through the second, the client passes on the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_lifted_through_one_replica_is_lifted_on_all() {
    let server = RedisServer::start();
    let upstream = Upstream::start().await;
    let config = format!(
        "[store]\nredis_url = \"{}\"\nhash_key = \"replicas share this secret\"\ntimeout_ms = 1000\n{ROUTES}",
        server.url()
    );
    let (a, b) = (Palisade::start(&config, &upstream).await, Palisade::start(&config, &upstream).await);
    let client = http1_client();
    get_banned(&client, &a).await;
    a.store.flush().await;
    // Replica b reads the ban from Redis, and remembers it as a denial.
    let banned_on_b = send(&client, login(&b.url("/login"), "someone", "right")).await;
    assert_eq!(banned_on_b.status, 403, "{}", banned_on_b.body);
    let (_, listed) = admin(&client, b.running.admin_addr, "GET", "/api/bans", None, "").await;
    assert_eq!(listed["store"], "redis");
    assert_eq!(listed["bans"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["bans"][0]["detections"], serde_json::json!(["cred.ip_failures"]));

    let (status, answer) =
        admin(&client, b.running.admin_addr, "POST", "/api/bans/lift", Some(TOKEN), r#"{"ip": "127.0.0.1"}"#).await;
    assert_eq!(status, 200, "{answer}");
    let next_on_b = send(&client, login(&b.url("/login"), "someone", "right")).await;
    assert_eq!(next_on_b.status, 200, "{}", next_on_b.body);
    // Replica a set the ban and remembers it; the lift feed makes it forget
    // (read every half second).
    let since = Instant::now();
    loop {
        let answer = send(&client, login(&a.url("/login"), "someone", "right")).await;
        if answer.status == 200 {
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(5),
            "replica a still refuses: {} {} feed {}",
            answer.status,
            answer.body,
            server.cli(&["XRANGE", "palisade:lifts", "-", "+"])
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, listed) = admin(&client, a.running.admin_addr, "GET", "/api/bans", None, "").await;
    assert_eq!(listed["bans"], serde_json::json!([]));
    assert!(server.keys().iter().all(|k| !k.contains("127.0.0.1")), "{:?}", server.keys());
}
