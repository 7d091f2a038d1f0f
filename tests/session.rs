//! The session stage over HTTP, without a browser: the proof-of-work
//! answer cannot be reused, moved to another address, forged or replayed
//! after expiry; clearance and session cookies survive a SIGHUP reload and
//! are honoured by every replica sharing the secret; API routes get a
//! machine-readable challenge instead of HTML. (Real Chromium: `tests/chromium.rs`.)

mod common;
use common::*;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use palisade::clock::{ManualClock, SharedClock};
use palisade::session::challenge;

/// Always under attack (`attack_bare_attempts = 0`): every page load
/// without clearance gets the challenge.
const ALWAYS: &str = common::trusted_config!(
    r#"[session]
enabled = true
secret = "shared-session-secret"
attack_bare_attempts = 0.0
difficulty = 12
"#
);

const CHROME: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/148.0.0.0 Safari/537.36";

/// A browser's page load from `ip`, with `cookie` when given.
fn page_load(url: &str, ip: &str, cookie: Option<&str>) -> http::Request<Full<Bytes>> {
    let mut headers = vec![
        ("user-agent", CHROME),
        ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-dest", "document"),
        ("x-forwarded-for", ip),
    ];
    if let Some(cookie) = cookie {
        headers.push(("cookie", cookie));
    }
    request("GET", url, &headers, "")
}

fn challenge_token(page: &str) -> String {
    let start = page.find("var token = \"").expect("a challenge page") + "var token = \"".len();
    page[start..start + page[start..].find('"').unwrap()].to_string()
}

/// The `name=value` of a Set-Cookie answer.
fn cookie_of(answer: &Answer) -> String {
    let set = answer.headers.get("set-cookie").expect("a cookie is set").to_str().unwrap();
    set.split(';').next().unwrap().to_string()
}

async fn verify(palisade_url: &str, ip: &str, token: &str, answer: u64) -> Answer {
    let url = format!("{palisade_url}/.palisade/verify?t={token}&n={answer}&r=%2Fsignin");
    send(&http1_client(), page_load(&url, ip, None)).await
}

/// Load a page, solve its challenge, and return the clearance cookie.
async fn clearance(palisade: &Palisade, ip: &str) -> String {
    let page = send(&http1_client(), page_load(&palisade.url("/signin"), ip, None)).await;
    assert_eq!(page.status, 403);
    assert_eq!(page.headers["x-palisade-challenge"], "pow; page");
    let token = challenge_token(&page.body);
    let solved = verify(&palisade.url(""), ip, &token, challenge::solve(&token, 12)).await;
    assert_eq!(solved.status, 303, "{}", solved.body);
    assert_eq!(solved.headers["location"], "/signin");
    cookie_of(&solved)
}

#[tokio::test]
async fn a_proof_of_work_answer_is_good_once_for_one_client_until_it_expires() {
    let upstream = Upstream::start().await;
    let clock = Arc::new(ManualClock::new(1_800_000_000_000_000_000));
    let shared: SharedClock = clock.clone();
    let mut config = palisade::config::parse_str(ALWAYS, "test.toml").unwrap();
    let store = Arc::new(palisade::store::CounterStore::Local(palisade::store::LocalStore::new(shared.clone())));
    let palisade = Palisade::start_with(&mut config, &upstream, store, shared).await;
    let client = http1_client();

    let page = send(&client, page_load(&palisade.url("/signin"), "203.0.113.5", None)).await;
    assert_eq!(page.status, 403, "always under attack: the page is the challenge");
    assert!(page.body.contains("<script>") && !page.body.contains("src="), "inline script only");
    assert!(upstream.seen().is_empty());
    let token = challenge_token(&page.body);
    let answer = challenge::solve(&token, 12);

    // Wrong answers, forged tokens and other addresses are refused.
    let wrong = (0..).find(|n| !challenge::solves(&token, &n.to_string(), 12)).unwrap();
    let refused = verify(&palisade.url(""), "203.0.113.5", &token, wrong).await;
    assert_eq!((refused.status, refused.body.contains("wrong_answer")), (403, true), "{}", refused.body);
    let mut forged = token.clone().into_bytes();
    forged[20] = if forged[20] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let refused = verify(&palisade.url(""), "203.0.113.5", &forged, challenge::solve(&forged, 12)).await;
    assert_eq!((refused.status, refused.body.contains("bad_signature")), (403, true), "{}", refused.body);
    let refused = verify(&palisade.url(""), "198.51.100.9", &token, answer).await;
    assert_eq!((refused.status, refused.body.contains("bound_to_another_client")), (403, true), "{}", refused.body);

    // The right answer from the right client: a clearance, once.
    let solved = verify(&palisade.url(""), "203.0.113.5", &token, answer).await;
    assert_eq!(solved.status, 303, "{}", solved.body);
    let clearance = cookie_of(&solved);
    assert!(clearance.starts_with("__palisade_clearance="));
    let again = verify(&palisade.url(""), "203.0.113.5", &token, answer).await;
    assert_eq!((again.status, again.body.contains("already_used")), (403, true), "{}", again.body);

    // The clearance opens the page for this client only.
    let page = send(&client, page_load(&palisade.url("/signin"), "203.0.113.5", Some(&clearance))).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let session = cookie_of(&page);
    assert!(session.starts_with("__palisade_session="), "a page load sets the session cookie");
    let elsewhere = send(&client, page_load(&palisade.url("/signin"), "198.51.100.9", Some(&clearance))).await;
    assert_eq!(elsewhere.status, 403, "a copied clearance is worth nothing from another network");

    // A fresh challenge answered after it expired: refused.
    let page = send(&client, page_load(&palisade.url("/signin"), "203.0.113.5", None)).await;
    let token = challenge_token(&page.body);
    clock.advance(std::time::Duration::from_secs(121));
    let late = verify(&palisade.url(""), "203.0.113.5", &token, challenge::solve(&token, 12)).await;
    assert_eq!((late.status, late.body.contains("expired")), (403, true), "{}", late.body);
    // And the clearance itself expires (30 minutes).
    clock.advance(std::time::Duration::from_secs(1800));
    let page = send(&client, page_load(&palisade.url("/signin"), "203.0.113.5", Some(&clearance))).await;
    assert_eq!(page.status, 403, "an expired clearance is challenged again");

    let metrics = palisade.metrics_text().await;
    for line in [
        "palisade_challenges_solved_total 1",
        "palisade_challenges_failed_total 5",
        "palisade_challenges_issued_total 4",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
}

#[tokio::test]
async fn replicas_sharing_the_secret_honour_each_others_cookies() {
    let upstream = Upstream::start().await;
    let first = Palisade::start(ALWAYS, &upstream).await;
    let second = Palisade::start(ALWAYS, &upstream).await;
    let other = Palisade::start(&ALWAYS.replace("shared-session-secret", "another-secret"), &upstream).await;
    let clearance = clearance(&first, "203.0.113.5").await;
    let client = http1_client();
    let page = send(&client, page_load(&second.url("/signin"), "203.0.113.5", Some(&clearance))).await;
    assert_eq!(page.status, 200, "a replica with the same secret honours the clearance");
    let session = cookie_of(&page);
    let page = send(&client, page_load(&other.url("/signin"), "203.0.113.5", Some(&clearance))).await;
    assert_eq!(page.status, 403, "a deployment with another secret does not");

    // The session cookie set by one replica vouches for a login on another.
    let login = |url: String, cookie: &str| {
        request(
            "POST",
            &url,
            &[
                ("user-agent", CHROME),
                ("accept", "text/html"),
                ("content-type", "application/x-www-form-urlencoded"),
                ("x-forwarded-for", "203.0.113.5"),
                ("cookie", cookie),
            ],
            "username=alice&password=right",
        )
    };
    let answer = send(&client, login(first.url("/login"), &session)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let answer = send(&client, login(other.url("/login"), &session)).await;
    assert_eq!(answer.status, 403, "not vouched for where the secret differs: challenged");
    assert_eq!(answer.headers["x-palisade-challenge"], "pow; page");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_survive_a_sighup_reload() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("palisade.toml");
    std::fs::write(&path, ALWAYS).unwrap();
    let binary =
        BinaryPalisade::spawn(&["serve", "--config", path.to_str().unwrap(), "--upstream", &upstream.url()]).await;
    let url = format!("http://{}", binary.addr);
    let client = http1_client();
    let page = send(&client, page_load(&format!("{url}/signin"), "127.0.0.1", None)).await;
    let token = challenge_token(&page.body);
    let solved = verify(&url, "127.0.0.1", &token, challenge::solve(&token, 12)).await;
    let clearance = cookie_of(&solved);
    let page = send(&client, page_load(&format!("{url}/signin"), "127.0.0.1", Some(&clearance))).await;
    assert_eq!(page.status, 200);
    let session = cookie_of(&page);

    std::fs::write(&path, format!("{ALWAYS}\n[headers]\nscore = \"X-Bot-Score\"\n")).unwrap();
    binary.signal("HUP");
    assert!(binary.wait_for_stderr("configuration reloaded").await, "{:#?}", binary.stderr());
    let both = format!("{clearance}; {session}");
    let page = send(&client, page_load(&format!("{url}/signin"), "127.0.0.1", Some(&both))).await;
    assert_eq!(page.status, 200, "the clearance is still honoured after the reload");
    assert!(upstream.last().headers.contains_key("x-bot-score"), "the new configuration is in force");
    assert!(page.headers.get("set-cookie").is_none(), "the session cookie is still valid: no new one");
}

#[tokio::test]
async fn api_routes_get_a_machine_readable_challenge_and_partners_none() {
    let upstream = Upstream::start().await;
    let key_hash = palisade::identify::api_key_sha256("pk_partner");
    let config = format!(
        "{ALWAYS}\n[session.challenge]\napi = \"status\"\n\n[[route]]\nname = \"api\"\nprofile = \"api\"\npath = \"/api/*\"\n\n[[route]]\nname = \"login\"\nprofile = \"login\"\npath = \"/login\"\nmethods = [\"POST\"]\n\n[[partner]]\nname = \"p\"\napi_key_sha256 = [\"{key_hash}\"]\n"
    );
    let palisade = Palisade::start(&config, &upstream).await;
    let client = http1_client();
    let app = |cookie: Option<&str>| {
        let mut headers = vec![("user-agent", "okhttp/4.12.0"), ("accept", "application/json")];
        headers.push(("x-forwarded-for", "203.0.113.8"));
        if let Some(cookie) = cookie {
            headers.push(("cookie", cookie));
        }
        request("GET", &palisade.url("/api/accounts"), &headers, "")
    };
    // Not a page load: the API route is not under-attack-challenged, it is served.
    assert_eq!(send(&client, app(None)).await.status, 200);
    // A mobile app's login without a session while under attack: forwarded
    // with the step-up hint, never HTML.
    let login = request(
        "POST",
        &palisade.url("/login"),
        &[("user-agent", "okhttp/4.12.0"), ("content-type", "application/json"), ("x-forwarded-for", "203.0.113.8")],
        r#"{"username":"m","password":"right"}"#,
    );
    let answer = send(&client, login).await;
    assert_eq!(answer.status, 200);
    assert_eq!(upstream.last().headers["x-palisade-action"], "challenge");
    // A partner: never challenged, even as a browser page load.
    let mut partner = page_load(&palisade.url("/signin"), "203.0.113.9", None);
    partner.headers_mut().insert("x-api-key", "pk_partner".parse().unwrap());
    assert_eq!(send(&client, partner).await.status, 200);
}

#[tokio::test]
async fn the_status_mode_answers_429_with_the_challenge_in_a_header() {
    let upstream = Upstream::start().await;
    let config = format!(
        "{ALWAYS}\n[session.challenge]\nlogin = \"status\"\n\n[[route]]\nname = \"login\"\nprofile = \"login\"\npath = \"/login\"\nmethods = [\"POST\"]\n"
    );
    let palisade = Palisade::start(&config, &upstream).await;
    let login = request(
        "POST",
        &palisade.url("/login"),
        &[
            ("user-agent", CHROME),
            ("accept", "text/html"),
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-forwarded-for", "203.0.113.10"),
        ],
        "username=a&password=right",
    );
    let answer = send(&http1_client(), login).await;
    assert_eq!(answer.status, 429, "{}", answer.body);
    let header = answer.headers["x-palisade-challenge"].to_str().unwrap().to_string();
    assert!(header.starts_with("pow; token=") && header.contains("difficulty=12"), "{header}");
    let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(body["error"], "challenge");
    assert!(body["detections"].as_array().unwrap().iter().any(|d| d == "session.under_attack"), "{body}");
    assert!(upstream.seen().is_empty());
}

/// A session's distinct usernames are counted where the counters are
/// shared: two replicas on one Redis see one session trying four accounts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_usernames_are_counted_across_replicas_through_redis() {
    let redis = common::redis::RedisServer::start();
    let upstream = Upstream::start().await;
    let config = format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n[decision_log]\nsample_allowed = 1.0\n\
         [store]\nredis_url = \"{}\"\nhash_key = \"replicas\"\ntimeout_ms = 1000\n\
         [session]\nenabled = true\nsecret = \"shared-session-secret\"\n",
        redis.url()
    );
    let first = Palisade::start(&config, &upstream).await;
    let second = Palisade::start(&config, &upstream).await;
    let client = http1_client();
    let page = send(&client, page_load(&first.url("/signin"), "203.0.113.5", None)).await;
    assert_eq!(page.status, 200);
    let session = cookie_of(&page);
    let login = |url: String, user: &str| {
        request(
            "POST",
            &url,
            &[
                ("user-agent", CHROME),
                ("accept", "text/html"),
                ("content-type", "application/x-www-form-urlencoded"),
                ("x-forwarded-for", "203.0.113.5"),
                ("cookie", session.as_str()),
            ],
            &format!("username={user}&password=wrong"),
        )
    };
    for (replica, user) in [(&first, "u1"), (&first, "u2"), (&second, "u3")] {
        let answer = send(&client, login(replica.url("/login"), user)).await;
        assert_eq!(answer.status, 401, "{user}: forwarded, the upstream refused the password");
    }
    let answer = send(&client, login(second.url("/login"), "u4")).await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert_eq!(answer.headers["x-palisade-challenge"], "pow; page");
    let lines = second.log_lines(2).await;
    let last = lines.last().unwrap();
    assert_eq!(last["challenge"], "page", "{last}");
    let signal = last["signals"].as_array().unwrap().iter().find(|s| s["id"] == "session.usernames");
    let signal = signal.unwrap_or_else(|| panic!("no session.usernames in {last}"));
    let distinct = signal["evidence"].as_array().unwrap().iter().find(|e| e["name"] == "distinct_usernames").unwrap();
    assert_eq!(distinct["value"], 4.0, "{signal}");
    assert!(redis.keys().iter().any(|k| k.contains("sess:")), "the session's counters live in Redis");
}

#[test]
fn check_names_every_session_problem_with_its_line() {
    let text = "[session]\nenabled = true\ndifficulty = 40\ncookie = \"bad name\"\nverify_path = \"//x\"\n[session.challenge]\nlogin = \"captcha\"\nnope = \"off\"\n";
    let error = palisade::app::parse_str(text, "s.toml").unwrap_err().to_string();
    for expected in [
        "session.difficulty",
        "s.toml:4: session.cookie",
        "s.toml:5: session.verify_path",
        "s.toml:7: session.challenge.login: unknown challenge mode",
        "s.toml:8: session.challenge.nope: no route",
    ] {
        assert!(error.contains(expected), "{expected} not in:\n{error}");
    }
}
