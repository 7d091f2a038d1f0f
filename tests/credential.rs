//! Credential stuffing, spraying and the people who must not be caught in
//! it, against a real login upstream (200 for the valid pair, 401
//! otherwise) through the real proxy. Client addresses come through
//! `X-Forwarded-For` from a trusted proxy (127.0.0.1), so one test can be
//! hundreds of clients.

mod common;
use common::*;

use bytes::Bytes;
use http_body_util::Full;

const TRUSTED: &str = common::trusted_config!("");

/// The header set of a scripted credential-stuffing tool (python-requests).
fn tool_request(url: &str, ip: &str, user: &str, password: &str) -> http::Request<Full<Bytes>> {
    request(
        "POST",
        url,
        &[
            ("user-agent", "python-requests/2.34.2"),
            ("accept-encoding", "gzip, deflate"),
            ("accept", "*/*"),
            ("connection", "keep-alive"),
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-forwarded-for", ip),
        ],
        &format!("username={user}&password={password}"),
    )
}

/// A person in a current Chrome, with its full header set.
fn browser_request(url: &str, ip: &str, user: &str, password: &str) -> http::Request<Full<Bytes>> {
    request(
        "POST",
        url,
        &[
            ("cache-control", "max-age=0"),
            ("sec-ch-ua", r#""Chromium";v="156", "Not)A;Brand";v="8""#),
            ("sec-ch-ua-mobile", "?0"),
            ("sec-ch-ua-platform", "\"Linux\""),
            ("origin", "https://bank.example"),
            ("content-type", "application/x-www-form-urlencoded"),
            ("upgrade-insecure-requests", "1"),
            (
                "user-agent",
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36",
            ),
            ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
            ("sec-fetch-site", "same-origin"),
            ("sec-fetch-mode", "navigate"),
            ("sec-fetch-user", "?1"),
            ("sec-fetch-dest", "document"),
            ("referer", "https://bank.example/login"),
            ("accept-encoding", "gzip, deflate, br, zstd"),
            ("accept-language", "en-GB,en;q=0.9"),
            ("x-forwarded-for", ip),
        ],
        &format!("username={user}&password={password}"),
    )
}

/// A mobile banking app (okhttp) posting JSON.
fn app_request(url: &str, ip: &str, user: &str, password: &str) -> http::Request<Full<Bytes>> {
    request(
        "POST",
        url,
        &[
            ("content-type", "application/json; charset=UTF-8"),
            ("accept-encoding", "gzip"),
            ("user-agent", "okhttp/4.12.0"),
            ("x-forwarded-for", ip),
        ],
        &format!(r#"{{"username":"{user}","password":"{password}"}}"#),
    )
}

/// Whether palisade itself refused the request (429 or 403).
fn refused(status: u16) -> bool {
    status == 429 || status == 403
}

/// A combo list: 300 pairs, the valid one (`password=right`) at position 250.
fn combo(i: usize) -> (String, String) {
    let user = format!("victim{i}@example.com");
    let password = if i == 250 { "right".to_string() } else { format!("leaked-pass-{i}") };
    (user, password)
}

#[tokio::test]
async fn one_client_cycling_a_combo_list_is_stopped_early() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start(TRUSTED, &upstream).await;
    let client = http1_client();
    let mut first_refusal = None;
    let mut reached = 0;
    for i in 0..300 {
        let (user, password) = combo(i);
        let answer = send(&client, tool_request(&palisade.url("/login"), "203.0.113.7", &user, &password)).await;
        if refused(answer.status) {
            first_refusal.get_or_insert(i + 1);
        } else {
            reached += 1;
            assert_ne!(answer.status, 200, "attempt {} reached the valid pair", i + 1);
        }
    }
    let stopped_at = first_refusal.expect("the attack was stopped");
    eprintln!("single client: stopped at attempt {stopped_at}; {reached} of 300 attempts reached the upstream");
    assert!(stopped_at <= 20, "stopped only at attempt {stopped_at}");
    assert!(reached <= 20, "{reached} attempts reached the upstream");
    assert!(upstream.seen().iter().all(|seen| !String::from_utf8_lossy(&seen.body).contains("password=right")));
}

#[tokio::test]
async fn five_addresses_in_one_subnet_are_stopped_together() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start(TRUSTED, &upstream).await;
    let client = http1_client();
    let mut reached_after_30 = 0;
    let mut reached = 0;
    for i in 0..300 {
        let (user, password) = combo(i);
        let ip = format!("198.51.100.{}", 10 + i % 5);
        let answer = send(&client, tool_request(&palisade.url("/login"), &ip, &user, &password)).await;
        if !refused(answer.status) {
            reached += 1;
            if i >= 30 {
                reached_after_30 += 1;
            }
        }
    }
    eprintln!("five rotating addresses: {reached} of 300 reached the upstream, {reached_after_30} after the first 30");
    assert!(reached <= 30, "{reached} attempts reached the upstream");
    assert_eq!(reached_after_30, 0);
}

/// The distributed attack (300 addresses, one attempt each, one tool
/// fingerprint), interleaved with 200 people logging in from browsers,
/// some after a typo or two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distributed_attack_is_stopped_and_people_are_not() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start(TRUSTED, &upstream).await;
    let client = http1_client();
    let mut attack_reached_after_40 = 0;
    let mut attack_reached = 0;
    let mut humans_refused = Vec::new();
    let mut human = 0;
    for i in 0..300 {
        let (user, password) = combo(i);
        let ip = format!("100.{}.{}.{}", 64 + i / 250, i % 7, i % 250 + 1);
        let answer = send(&client, tool_request(&palisade.url("/login"), &ip, &user, &password)).await;
        if !refused(answer.status) {
            attack_reached += 1;
            if i >= 40 {
                attack_reached_after_40 += 1;
            }
        }
        // Two people for every three attack attempts.
        while human < 200 && human * 3 <= i * 2 {
            let ip = format!("10.{}.{}.{}", human % 13, human / 13, 20 + human % 200);
            let user = format!("person{human}@example.com");
            let typos = if human % 10 == 0 {
                2
            } else if human % 4 == 0 {
                1
            } else {
                0
            };
            for attempt in 0..=typos {
                let password = if attempt < typos { "typo-pass" } else { "right" };
                let answer = send(&client, browser_request(&palisade.url("/login"), &ip, &user, password)).await;
                if refused(answer.status) {
                    humans_refused.push((human, attempt, answer.status));
                }
                if attempt == typos {
                    assert_eq!(answer.status, 200, "person {human} could not log in: {}", answer.body);
                }
            }
            human += 1;
        }
    }
    let after_40 = attack_reached_after_40 as f64 / 260.0;
    eprintln!(
        "distributed attack: {attack_reached} of 300 reached the upstream, {attack_reached_after_40} of the 260 after the first 40 ({:.1}%); people refused: {}",
        after_40 * 100.0,
        humans_refused.len()
    );
    assert!(after_40 <= 0.15, "{:.1}% of the attack reached the upstream after the first 40", after_40 * 100.0);
    assert_eq!(human, 200);
    assert!(humans_refused.is_empty(), "people were refused: {humans_refused:?}");
}

#[tokio::test]
async fn people_behind_shared_addresses_using_a_mobile_app_are_not_refused() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start(TRUSTED, &upstream).await;
    let client = http1_client();
    let mut refusals = Vec::new();
    for person in 0..50 {
        let ip = format!("100.70.0.{}", person % 5 + 1);
        let user = format!("mobile{person}@example.com");
        let typos = if person % 3 == 0 { 1 } else { 0 };
        for attempt in 0..=typos {
            let password = if attempt < typos { "wrong" } else { "right" };
            let answer = send(&client, app_request(&palisade.url("/login"), &ip, &user, password)).await;
            if refused(answer.status) {
                refusals.push((person, answer.status));
            } else if attempt == typos {
                assert_eq!(answer.status, 200);
            }
        }
    }
    if !refusals.is_empty() {
        let refused_lines: Vec<String> = palisade
            .log_lines(0)
            .await
            .into_iter()
            .filter(|line| line["action"] == "block" || line["action"] == "rate_limit")
            .take(3)
            .map(|line| line.to_string())
            .collect();
        panic!("people were refused: {refusals:?}\n{}", refused_lines.join("\n"));
    }
}

#[tokio::test]
async fn a_partner_logging_in_600_times_a_minute_is_never_blocked() {
    let upstream = Upstream::start().await;
    let key_hash = palisade::identify::api_key_sha256("pk_live_partner_demo");
    let config = format!(
        "{TRUSTED}\n[[partner]]\nname = \"payroll\"\napi_key_sha256 = [\"{key_hash}\"]\nquota = {{ requests = 1200, period_secs = 60 }}\n"
    );
    let palisade = Palisade::start(&config, &upstream).await;
    let client = http1_client();
    for i in 0..600 {
        let mut request = tool_request(&palisade.url("/login"), "203.0.113.200", "svc-payroll", "right");
        request.headers_mut().insert("x-api-key", "pk_live_partner_demo".parse().unwrap());
        let answer = send(&client, request).await;
        assert_eq!(answer.status, 200, "partner login {} got {}: {}", i + 1, answer.status, answer.body);
    }
}

#[tokio::test]
async fn no_password_or_clear_username_is_stored_or_logged() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start(TRUSTED, &upstream).await;
    let client = http1_client();
    for i in 0..60 {
        let user = format!("secretuser{i}");
        let password = format!("pw-{i}-hunter2");
        let answer = if i % 2 == 0 {
            send(&client, tool_request(&palisade.url("/login"), &format!("198.51.100.{}", i % 3), &user, &password))
                .await
        } else {
            send(&client, app_request(&palisade.url("/login"), "203.0.113.9", &user, &password)).await
        };
        assert!(answer.status >= 200);
    }
    let keys = palisade.store.keys();
    assert!(!keys.is_empty());
    let log = std::fs::read_to_string(&palisade.log_path).unwrap_or_default();
    let log = if log.is_empty() { palisade.log_lines(60).await.iter().map(|l| l.to_string()).collect() } else { log };
    for text in keys.iter().map(String::as_str).chain([log.as_str()]) {
        assert!(!text.contains("hunter2"), "a password leaked: {text}");
        assert!(!text.contains("secretuser"), "a username leaked: {text}");
        assert!(!text.contains("198.51.100.") || text == log, "a client address is in a store key: {text}");
    }
    eprintln!("{} store keys, e.g. {:?}", keys.len(), &keys[..keys.len().min(3)]);
}

#[tokio::test]
async fn a_person_who_mistypes_twice_keeps_a_high_score() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start(TRUSTED, &upstream).await;
    let client = http1_client();
    for password in ["typo-1", "typo-2", "right"] {
        let answer =
            send(&client, browser_request(&palisade.url("/login"), "198.18.0.7", "carol@example.com", password)).await;
        assert!(!refused(answer.status));
        let score: u8 = upstream.last().headers["x-palisade-score"].to_str().unwrap().parse().unwrap();
        assert!(score >= 70, "score {score} after {password}");
    }
    assert_eq!(upstream.seen().len(), 3);
}

#[tokio::test]
async fn failures_in_a_200_body_count_and_breached_passwords_are_flagged() {
    let upstream = Upstream::start().await;
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/replay/breached-passwords.sample.txt");
    let config = format!(
        r#"{TRUSTED}
[breach]
path = "{sample}"

[[route]]
name = "login"
profile = "login"
path = "/login"
methods = ["POST"]

[[route]]
name = "legacy-login"
profile = "login"
path = "/status/200"
methods = ["POST"]
[route.login]
failure_statuses = []
failure_body_contains = "status 200"
"#
    );
    let palisade = Palisade::start(&config, &upstream).await;
    let client = http1_client();
    let answer =
        send(&client, browser_request(&palisade.url("/login"), "198.18.1.1", "dave@example.com", "123456")).await;
    assert_eq!(answer.status, 401);
    let answer =
        send(&client, browser_request(&palisade.url("/login"), "198.18.1.2", "erin@example.com", "right")).await;
    assert_eq!(answer.status, 200);
    let mut statuses = Vec::new();
    for i in 0..20 {
        let answer =
            send(&client, tool_request(&palisade.url("/status/200"), "198.18.2.2", &format!("u{i}"), "x")).await;
        statuses.push(answer.status);
    }
    assert_eq!(statuses[0], 200, "the app answers 200 even on failure");
    assert!(statuses.iter().any(|s| refused(*s)), "failures read from the body escalate: {statuses:?}");
    let lines = palisade.log_lines(22).await;
    let detections = |line: &serde_json::Value| {
        line["detections"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    assert!(detections(&lines[0]).contains(&"cred.breached_password".to_string()), "{}", lines[0]);
    assert!(!detections(&lines[1]).contains(&"cred.breached_password".to_string()), "{}", lines[1]);
    assert_eq!(
        (lines[2]["upstream_status"].as_u64(), lines[2]["login_outcome"].as_str()),
        (Some(200), Some("failure"))
    );
}

/// The default login route without its per-address rate limit, so that
/// only the credential counters stop an attack.
const NO_RATE_LIMIT: &str = common::trusted_config!(
    r#"[[route]]
name = "login"
profile = "login"
path = "/login"
methods = ["POST", "PUT", "PATCH"]
"#
);

/// Client addresses spread over unrelated subnets.
fn scattered_ip(n: u32) -> String {
    std::net::Ipv4Addr::from(n.wrapping_mul(0x9e37_79b1).rotate_left(13) | 0x0100_0000).to_string()
}

/// Login attempts that reached the upstream.
fn logins_seen(upstream: &Upstream) -> usize {
    upstream.seen().iter().filter(|seen| seen.uri.starts_with("/login")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_attempts_sent_at_once_against_a_slow_login_stop_at_the_threshold() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start(NO_RATE_LIMIT, &upstream).await;
    let client = http1_client();
    // One browser build (one fingerprint) from 300 addresses, all at once, against
    // a login backend that takes half a second: no outcome is known
    // before every attempt has been decided.
    let attempts: Vec<_> = (0..300u32)
        .map(|i| {
            let client = client.clone();
            let mut request =
                browser_request(&palisade.url("/login"), &scattered_ip(i), &format!("victim{i}"), "leaked-pass");
            request.headers_mut().insert("x-test-delay-ms", "500".parse().unwrap());
            tokio::spawn(async move { send(&client, request).await.status })
        })
        .collect();
    let mut refused_count = 0;
    for attempt in attempts {
        refused_count += usize::from(refused(attempt.await.unwrap()));
    }
    let reached = logins_seen(&upstream);
    let threshold = palisade::config::AbuseConfig::default().fingerprint_failures as usize;
    eprintln!("300 attempts at once: {reached} reached the upstream, {refused_count} refused (threshold {threshold})");
    assert_eq!(reached + refused_count, 300);
    // Decisions on two cores may each miss the other's last attempt.
    assert!(reached <= threshold + 4, "{reached} attempts reached the upstream");
}

/// Wrong guesses against victims, two per victim, that reached the
/// upstream before palisade stopped them; with `own_login`, the attacker
/// logs in to its own account after every two guesses.
async fn guesses_let_through(own_login: bool) -> usize {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start(NO_RATE_LIMIT, &upstream).await;
    let client = http1_client();
    let mut reached = 0;
    for victim in 0..40 {
        for guess in 0..2 {
            let request = browser_request(
                &palisade.url("/login"),
                "203.0.113.50",
                &format!("victim{victim}"),
                &format!("guess{guess}"),
            );
            reached += usize::from(!refused(send(&client, request).await.status));
        }
        if own_login {
            send(&client, browser_request(&palisade.url("/login"), "203.0.113.50", "attacker", "right")).await;
        }
    }
    reached
}

#[tokio::test]
async fn logging_in_to_an_own_account_between_guesses_does_not_dilute_the_failures() {
    let undiluted = guesses_let_through(false).await;
    let diluted = guesses_let_through(true).await;
    eprintln!("wrong guesses let through: {undiluted} alone, {diluted} with an own-account login after every two");
    assert!(undiluted < 80, "the undiluted attack was stopped ({undiluted} of 80 let through)");
    assert!(diluted <= 2 * undiluted, "{diluted} guesses let through, undiluted {undiluted}");
}

#[tokio::test]
async fn put_patch_and_format_suffixed_logins_count_on_the_default_route() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start(TRUSTED, &upstream).await;
    let client = http1_client();
    let mut first_refusal = None;
    for i in 0..40 {
        let (method, path) =
            [("PUT", "/login"), ("POST", "/login.json"), ("PATCH", "/login"), ("PUT", "/login.")][i % 4];
        let mut request = tool_request(&palisade.url(path), "203.0.113.60", &format!("victim{i}"), "wrong");
        *request.method_mut() = method.parse().unwrap();
        if refused(send(&client, request).await.status) {
            first_refusal.get_or_insert(i + 1);
        }
    }
    let lines = palisade.log_lines(10).await;
    let routes: Vec<&str> = lines.iter().filter_map(|line| line["route"].as_str()).collect();
    eprintln!("PUT/PATCH /login, /login.json, /login.: first refused at attempt {first_refusal:?}; routes {routes:?}");
    assert!(!routes.is_empty() && routes.iter().all(|route| *route == "login"), "{routes:?}");
    let stopped_at = first_refusal.expect("the attempts were counted and stopped");
    assert!(stopped_at <= 20, "stopped only at attempt {stopped_at}");
}
