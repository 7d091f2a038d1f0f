//! Several palisade replicas sharing counters through real Redis
//! processes (one server, then a three-master Cluster) started by the
//! tests on free ports: one set of limits, bans that hold everywhere, and
//! serving on through a Redis crash.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::redis::{RedisCluster, RedisServer};
use common::{Palisade, Upstream, http1_client, login, request, send};

const LOGIN_ATTEMPTS: usize = 300;

/// `[store]` for one Redis server or a Cluster, shared by every replica.
fn store_toml(redis: &Target<'_>) -> String {
    let target = match redis {
        Target::Server(server) => format!("redis_url = \"{}\"", server.url()),
        Target::Cluster(cluster) => {
            let nodes: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
            format!("redis_cluster = [{}]", nodes.join(", "))
        }
    };
    format!(
        "[store]\n{target}\nhash_key = \"replicas share this secret\"\n\
         timeout_ms = 1000\nretry_interval_ms = 100\n"
    )
}

enum Target<'a> {
    Server(&'a RedisServer),
    Cluster(&'a RedisCluster),
}

impl Target<'_> {
    fn flush_all(&self) {
        match self {
            Target::Server(server) => assert_eq!(server.cli(&["FLUSHALL"]).trim(), "OK"),
            Target::Cluster(cluster) => {
                for node in &cluster.nodes {
                    assert_eq!(node.cli(&["FLUSHALL"]).trim(), "OK");
                }
            }
        }
    }

    fn keys(&self) -> Vec<String> {
        match self {
            Target::Server(server) => server.keys(),
            Target::Cluster(cluster) => cluster.keys_by_node().into_iter().flat_map(|(_, keys)| keys).collect(),
        }
    }

    /// Every value, as `redis-cli` prints it.
    fn dump(&self) -> String {
        match self {
            Target::Server(server) => server.dump(),
            Target::Cluster(cluster) => cluster.nodes.iter().map(RedisServer::dump).collect(),
        }
    }
}

/// The login route: a limit per client (40 an hour), and the credential
/// thresholds raised a little (the account and site-wide signals off), so
/// that a stuffing run is stopped by the failures of its one address.
const ROUTES: &str = r#"
[[route]]
name = "login"
profile = "login"
path = "/login"
methods = ["POST"]
rate_limit = { requests = 40, period_secs = 3600, burst = 40 }

[route.login.abuse]
ip_failures = 15
subnet_failures = 15
fingerprint_failures = 15
ip_distinct_usernames = 1000
subnet_distinct_usernames = 1000
fingerprint_distinct_usernames = 1000
username_distinct_addresses = 1000
site_min_attempts = 100000
"#;

/// `count` replicas, each counting in Redis: a replica whose first check
/// of Redis failed (a slow Cluster answer on a loaded machine) starts on
/// its local counters and joins within a retry interval, so the
/// comparisons below wait for it (at most five seconds) rather than
/// measure its fallback.
async fn replicas(count: usize, config: &str, upstream: &Upstream) -> Vec<Palisade> {
    let mut started = Vec::new();
    for _ in 0..count {
        started.push(Palisade::start(config, upstream).await);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for replica in &started {
        while metric(&replica.metrics_text().await, "palisade_store_redis_up") != 1.0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    started
}

/// What replicas decided without Redis: requests on local counters and
/// writes that never reached it. Either makes replicas count apart, so a
/// comparison that fails says whether they did.
async fn store_trouble(replicas: &[Palisade]) -> String {
    let (mut fallbacks, mut dropped, mut down) = (0.0, 0.0, 0);
    for replica in replicas {
        let text = replica.metrics_text().await;
        fallbacks += metric(&text, "palisade_store_fallback_requests_total");
        dropped += metric(&text, "palisade_store_writes_dropped_total");
        down += usize::from(metric(&text, "palisade_store_redis_up") != 1.0);
    }
    format!("{fallbacks} requests on local counters, {dropped} writes dropped, {down} replicas down")
}

/// One client (one address, one browser) sends `LOGIN_ATTEMPTS` login
/// attempts round robin over `replicas`; how many were let through to the
/// upstream before palisade stopped it.
async fn attempts_let_through(replicas: &[Palisade], password: &str) -> usize {
    let client = http1_client();
    let mut through = 0;
    for attempt in 0..LOGIN_ATTEMPTS {
        let replica = &replicas[attempt % replicas.len()];
        let answer = send(&client, login(&replica.url("/login"), &format!("user{attempt}"), password)).await;
        if answer.status != 429 && answer.status != 403 {
            through += 1;
        }
    }
    through
}

/// Failing logins (a new username each) to `replica` until it answers
/// 403 naming a ban; whether it did within `LOGIN_ATTEMPTS`.
async fn stuff_until_banned(client: &common::TestClient, replica: &Palisade) -> bool {
    for attempt in 0..LOGIN_ATTEMPTS {
        let answer = send(client, login(&replica.url("/login"), &format!("victim{attempt}"), "wrong")).await;
        if answer.status == 403 && answer.body.contains("cred.banned") {
            return true;
        }
    }
    false
}

/// Log in to `replica` with the right password until it answers 403
/// `cred.banned` (the address is banned); how long after `since` that was.
/// Fails the test when it still lets the client in `limit` after `since`.
async fn until_banned(client: &common::TestClient, replica: &Palisade, since: Instant, limit: Duration) -> Duration {
    loop {
        let answer = send(client, login(&replica.url("/login"), "someone", "right")).await;
        if answer.status == 403 && answer.body.contains("cred.banned") {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < limit,
            "{} still answers {} {} {limit:?} after the ban",
            replica.addr(),
            answer.status,
            answer.body
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn within_ten_percent(single: usize, shared: usize) -> bool {
    (shared as f64 - single as f64).abs() <= (single as f64 * 0.1).max(1.0)
}

/// The shared-state checks, against one Redis server or a Cluster.
async fn replicas_share_limits_and_bans(redis: Target<'_>) {
    let upstream = Upstream::start().await;
    let config = format!("{}{ROUTES}", store_toml(&redis));

    // A limit: successful logins, stopped by the per-client rate limit.
    let one = replicas(1, &config, &upstream).await;
    let single_limit = attempts_let_through(&one, "right").await;
    drop(one);
    redis.flush_all();
    let three = replicas(3, &config, &upstream).await;
    let shared_limit = attempts_let_through(&three, "right").await;
    let trouble = store_trouble(&three).await;
    drop(three);
    redis.flush_all();
    println!("rate limit: one replica let {single_limit} through, three replicas {shared_limit} ({trouble})");
    assert!(within_ten_percent(single_limit, shared_limit), "{single_limit} vs {shared_limit} ({trouble})");
    assert!((40..60).contains(&single_limit), "the 40-request burst: {single_limit}");

    // Credential stuffing: failing logins, stopped by the failure counters
    // (login outcomes are written to Redis after each upstream answer).
    let one = replicas(1, &config, &upstream).await;
    let single_stuffing = attempts_let_through(&one, "wrong").await;
    let single_trouble = store_trouble(&one).await;
    drop(one);
    redis.flush_all();
    let three = replicas(3, &config, &upstream).await;
    let shared_stuffing = attempts_let_through(&three, "wrong").await;
    let trouble = store_trouble(&three).await;
    println!(
        "stuffing: one replica let {single_stuffing} through ({single_trouble}), three replicas {shared_stuffing} ({trouble})"
    );
    assert!(
        within_ten_percent(single_stuffing, shared_stuffing),
        "{single_stuffing} vs {shared_stuffing}: one replica {single_trouble}; three {trouble}"
    );
    assert!((5..40).contains(&single_stuffing), "stopped by failures, not the limit: {single_stuffing}");
    drop(three);
    redis.flush_all();

    // A ban made through replica A holds on B and C within a second.
    let three = replicas(3, &config, &upstream).await;
    let client = http1_client();
    let (a, b, c) = (&three[0], &three[1], &three[2]);
    // Failures and refused attempts past twice the threshold: block and
    // ban; A's next answer names the ban.
    assert!(stuff_until_banned(&client, a).await, "replica A blocked and banned the stuffing client");
    let banned_at = Instant::now();
    for (name, replica) in [("B", b), ("C", c)] {
        let after = until_banned(&client, replica, banned_at, Duration::from_secs(1)).await;
        println!("ban from A held on {name} {after:?} after A set it");
    }
    // The ban is in Redis: a `ban` entry (its end time) of the address's group.
    let keys = redis.keys();
    let values = redis.dump();
    assert!(values.lines().any(|line| line.contains(";ban=")), "no ban in Redis: {keys:?}");
    // Nothing in Redis names a user, an address or a password.
    for secret in ["victim", "someone", "127.0.0.1", "wrong", "right"] {
        assert!(!keys.iter().any(|k| k.contains(secret)), "a key holds {secret:?}: {keys:?}");
        assert!(!values.contains(secret), "a value holds {secret:?}: {values}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_one_redis_meet_one_limit_and_one_ban() {
    let server = RedisServer::start();
    replicas_share_limits_and_bans(Target::Server(&server)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_a_redis_cluster_meet_one_limit_and_one_ban() {
    let cluster = RedisCluster::start(3);
    replicas_share_limits_and_bans(Target::Cluster(&cluster)).await;
    // Every key of a route shares the route's hash tag, so each request's
    // script ran on one node; different routes may live on different nodes.
    for (port, keys) in cluster.keys_by_node() {
        for key in &keys {
            assert!(key.starts_with("palisade:{login}:"), "node {port}: {key}");
        }
    }
}

/// Values of a metric in Prometheus text (summed over label sets).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(name) && !line.starts_with('#'))
        .filter(|line| line[name.len()..].starts_with([' ', '{']))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Requests from four clients until stopped; every answer must be 200.
struct Traffic {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    fn start(palisade: &Arc<Palisade>) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mut tasks = Vec::new();
        for worker in 0..4 {
            let (palisade, stop, sent, failed) = (palisade.clone(), stop.clone(), sent.clone(), failed.clone());
            tasks.push(tokio::spawn(async move {
                let client = http1_client();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let url = palisade.url(&format!("/api/items/{worker}-{n}"));
                    match client.request(request("GET", &url, &[], "")).await {
                        Ok(response) if response.status() == 200 => {}
                        Ok(response) => {
                            eprintln!("GET {url}: {}", response.status());
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) => {
                            eprintln!("GET {url}: {error}");
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        Traffic { stop, sent, failed, tasks }
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Wait until `n` more requests have been answered.
    async fn wait_for(&self, n: u64) {
        let target = self.sent() + n;
        while self.sent() < target {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stop; the number of failed requests.
    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        self.failed.load(Ordering::Relaxed)
    }
}

fn fault_config(server: &RedisServer) -> String {
    format!(
        "[store]\nredis_url = \"{}\"\nhash_key = \"k\"\ntimeout_ms = 200\nconnect_timeout_ms = 200\n\
         retry_interval_ms = 100\n\
         [[route]]\nname = \"api\"\nprofile = \"api\"\npath = \"/api/*\"\n\
         rate_limit = {{ requests = 1000000, period_secs = 60 }}\n\
         [[route]]\nname = \"ledger\"\nprofile = \"payment\"\npath = \"/ledger/*\"\n\
         on_store_failure = \"closed\"\nrate_limit = {{ requests = 1000000, period_secs = 60 }}\n",
        server.url()
    )
}

/// Wait (at most two seconds) until `server` counts script calls again.
async fn shared_counting_resumes(server: &RedisServer, calls_before: u64) -> Duration {
    let since = Instant::now();
    while server.command_calls("evalsha") <= calls_before {
        assert!(since.elapsed() < Duration::from_secs(2), "no shared counting 2 s after Redis came back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    since.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_crash_fails_open_and_sharing_resumes_after_restart() {
    let mut server = RedisServer::start();
    let upstream = Upstream::start().await;
    let palisade = Arc::new(Palisade::start(&fault_config(&server), &upstream).await);
    let traffic = Traffic::start(&palisade);
    traffic.wait_for(200).await;
    assert!(server.command_calls("evalsha") > 0, "requests are counted in Redis");
    let client = http1_client();
    assert_eq!(send(&client, request("GET", &palisade.url("/ledger/1"), &[], "")).await.status, 200);

    // Kill Redis mid-traffic.
    server.kill();
    let killed_at = traffic.sent();
    traffic.wait_for(300).await;
    let metrics = palisade.metrics_text().await;
    println!("{}", metrics.lines().filter(|l| l.starts_with("palisade_store")).collect::<Vec<_>>().join("\n"));
    assert_eq!(metric(&metrics, "palisade_store_redis_up"), 0.0);
    assert!(metric(&metrics, "palisade_store_fallback_requests_total") >= 250.0, "requests counted locally");
    assert!(metric(&metrics, "palisade_store_redis_errors_total") >= 1.0);
    assert!(metric(&metrics, "palisade_store_fallback_seconds_total") > 0.0);
    // The route set to fail closed answers 503 meanwhile, naming why.
    let closed = send(&client, request("GET", &palisade.url("/ledger/1"), &[], "")).await;
    assert_eq!(closed.status, 503, "{}", closed.body);
    assert!(closed.body.contains("store.unavailable"), "{}", closed.body);
    assert!(closed.headers.contains_key("retry-after"));

    // Restart it (empty): shared counting resumes within two seconds.
    server.restart();
    let resumed_after = shared_counting_resumes(&server, 0).await;
    traffic.wait_for(100).await;
    let sent = traffic.sent();
    let failed = traffic.finish().await;
    let metrics = palisade.metrics_text().await;
    assert_eq!(metric(&metrics, "palisade_store_redis_up"), 1.0);
    assert_eq!(send(&client, request("GET", &palisade.url("/ledger/1"), &[], "")).await.status, 200);
    assert!(server.keys().iter().any(|k| k.starts_with("palisade:{api}:")), "counters are back in Redis");
    println!(
        "{sent} requests ({} after the kill), {failed} failed; shared counting resumed {resumed_after:?} after the restart",
        sent - killed_at
    );
    assert_eq!(failed, 0, "no client request failed while Redis was down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_costs_one_timeout_then_requests_go_local_until_it_answers() {
    let server = RedisServer::start();
    let upstream = Upstream::start().await;
    let palisade = Arc::new(Palisade::start(&fault_config(&server), &upstream).await);
    let traffic = Traffic::start(&palisade);
    traffic.wait_for(200).await;

    // Freeze Redis: its connections stay open and nothing answers.
    server.pause();
    let paused_at = traffic.sent();
    traffic.wait_for(300).await;
    let metrics = palisade.metrics_text().await;
    assert_eq!(metric(&metrics, "palisade_store_redis_up"), 0.0);
    let timeouts = metric(&metrics, "palisade_store_redis_errors_total");
    assert!(timeouts >= 1.0, "the first requests after the freeze timed out");
    // Requests after the first timeouts did not wait on Redis: they went
    // local at once (at most one timeout per request in flight then).
    assert!(timeouts <= 8.0, "{timeouts} timeouts: requests kept waiting on a hung Redis");
    assert!(metric(&metrics, "palisade_store_fallback_requests_total") >= 250.0);

    server.resume();
    // Back up means the store says so and the fail-closed route serves;
    // scripts queued during the freeze running late would not show that.
    let thawed = Instant::now();
    while metric(&palisade.metrics_text().await, "palisade_store_redis_up") != 1.0 {
        assert!(thawed.elapsed() < Duration::from_secs(2), "Redis not back in use 2 s after the thaw");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let resumed_after = thawed.elapsed();
    let calls = server.command_calls("evalsha");
    traffic.wait_for(100).await;
    assert!(server.command_calls("evalsha") > calls, "requests count in Redis again");
    let client = http1_client();
    assert_eq!(send(&client, request("GET", &palisade.url("/ledger/1"), &[], "")).await.status, 200);
    let sent = traffic.sent();
    let failed = traffic.finish().await;
    println!(
        "{sent} requests ({} after the freeze), {failed} failed, {timeouts} timed out; sharing resumed {resumed_after:?} after the thaw",
        sent - paused_at
    );
    assert_eq!(failed, 0, "no client request failed while Redis hung");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn palisade_starts_and_serves_while_redis_is_unreachable() {
    // Port 1 on loopback: nothing listens there, connections are refused.
    let url = "redis://127.0.0.1:1";
    let upstream = Upstream::start().await;
    let config = format!("[store]\nredis_url = \"{url}\"\nhash_key = \"k\"\nconnect_timeout_ms = 100\n");
    let palisade = Palisade::start(&config, &upstream).await;
    let client = http1_client();
    for attempt in 0..5 {
        let answer = send(&client, login(&palisade.url("/login"), &format!("u{attempt}"), "right")).await;
        assert_eq!(answer.status, 200);
    }
    let metrics = palisade.metrics_text().await;
    assert_eq!(metric(&metrics, "palisade_store_redis_up"), 0.0);
    assert_eq!(metric(&metrics, "palisade_store_fallback_requests_total"), 5.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_made_while_redis_was_down_reaches_it_when_it_returns() {
    let mut server = RedisServer::start();
    let upstream = Upstream::start().await;
    let config = format!(
        "[store]\nredis_url = \"{}\"\nhash_key = \"k\"\ntimeout_ms = 200\nconnect_timeout_ms = 200\n\
         retry_interval_ms = 100\n{ROUTES}",
        server.url()
    );
    let (a, b) = (Palisade::start(&config, &upstream).await, Palisade::start(&config, &upstream).await);
    let client = http1_client();
    server.kill();
    // Replica A, counting on its own, bans the stuffing client.
    assert!(stuff_until_banned(&client, &a).await, "replica A banned the client on its local counters");
    assert_eq!(metric(&a.metrics_text().await, "palisade_store_redis_up"), 0.0);

    server.restart();
    let after = until_banned(&client, &b, Instant::now(), Duration::from_secs(3)).await;
    println!("B enforced A's outage ban {after:?} after Redis came back");
    assert!(server.dump().lines().any(|line| line.contains(";ban=")), "the ban is in Redis");
}

/// A password-protected redis-server listening on a port and a Unix socket.
struct LockedRedis {
    child: std::process::Child,
    port: u16,
    socket: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl LockedRedis {
    fn start(password: &str) -> LockedRedis {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("r.sock");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new(common::redis::require("redis-server"))
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--requirepass", password, "--loglevel", "warning"])
            .arg("--unixsocket")
            .arg(&socket)
            .args(["--unixsocketperm", "700"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() || std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not open its socket within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        LockedRedis { child, port, socket, _dir: dir }
    }
}

impl Drop for LockedRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_password_in_the_redis_url_never_reaches_a_log_line() {
    const PASSWORD: &str = "Hunter2-redis-S3CRET";
    let upstream = Upstream::start().await;
    let redis = LockedRedis::start(PASSWORD);
    let socket = redis.socket.display().to_string();
    let urls = [
        format!("redis+unix://{socket}?pass={PASSWORD}"),
        format!("unix://{socket}?pass={PASSWORD}"),
        format!("redis://127.0.0.1:{}/0?password={PASSWORD}", redis.port),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (index, url) in urls.iter().enumerate() {
        let path = dir.path().join(format!("palisade-{index}.toml"));
        std::fs::write(&path, format!("[store]\nhash_key = \"k\"\nredis_url = \"{url}\"\n")).unwrap();
        let palisade = common::BinaryPalisade::spawn_logging(
            &["serve", "--config", path.to_str().unwrap(), "--upstream", &upstream.url()],
            "info",
        )
        .await;
        // Available (the start-up line) or unreachable (the warning): either names the target.
        assert!(palisade.wait_for_stderr("Redis").await, "no Redis line for {url}: {:#?}", palisade.stderr());
        let client = http1_client();
        let answer = send(&client, login(&format!("http://{}/login", palisade.addr), "alice", "nope")).await;
        assert!(answer.status >= 200);
        let lines = palisade.stderr();
        eprintln!("{url}:\n  {}", lines.join("\n  "));
        for line in &lines {
            assert!(!line.contains(PASSWORD), "the Redis password is in a log line: {line}");
        }
        assert!(
            lines.iter().any(|line| line.contains("Redis") && line.contains("***")),
            "the target is logged, redacted: {lines:#?}"
        );
    }
    drop(redis);
}
