//! The OAuth 2.0 token endpoint profile through the real proxy, in front
//! of the test upstream's `/oauth/token`, with counters in a real Redis:
//! `grant_type=password` stuffing is stopped like a form login, a
//! confidential client over its quota gets 429 while another client
//! passes, and no secret or token reaches the decision log, the capture
//! file or Redis.

mod common;

use base64::Engine as _;

use common::redis::RedisServer;
use common::{Palisade, Upstream, http1_client, request, send};

const CLIENT_SECRET: &str = "cs-SECRET-4b1e";
const PASSWORD: &str = "pw-SECRET-93c2";
const REFRESH_TOKEN: &str = "rt-SECRET-77aa";
const ACCESS_TOKEN: &str = "at-SECRET-0d9f";
const UA: &str = "okhttp/4.12.0";
const SERVICE_UA: &str = "batch-service/2.1 (Java/21.0.4)";

fn token_request(
    url: &str,
    body: &str,
    basic: Option<(&str, &str)>,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    token_request_as(UA, url, body, basic)
}

/// A token request from a client identifying itself as `user_agent`.
fn token_request_as(
    user_agent: &str,
    url: &str,
    body: &str,
    basic: Option<(&str, &str)>,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let authorization = basic.map(|(id, secret)| {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")))
    });
    let mut headers = vec![
        ("user-agent", user_agent),
        ("content-type", "application/x-www-form-urlencoded"),
        ("accept", "application/json"),
    ];
    if let Some(value) = &authorization {
        headers.push(("authorization", value.as_str()));
    }
    request("POST", url, &headers, body)
}

#[tokio::test]
async fn token_endpoint_stuffing_client_quotas_and_no_secrets_anywhere() {
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("capture.jsonl");
    let config = format!(
        r#"
[decision_log]
sample_allowed = 1.0

[store]
redis_url = "{redis}"
hash_key = "oauth test secret"
timeout_ms = 1000

[capture]
path = "{capture}"

[[route]]
name = "token"
profile = "oauth_token"
path = "/oauth/token"
methods = ["POST"]
client_quota = {{ requests = 5, period_secs = 60, burst = 5 }}
"#,
        redis = redis.url(),
        capture = capture.display()
    );
    let palisade = Palisade::start(&config, &upstream).await;
    let client = http1_client();
    let url = palisade.url("/oauth/token");

    // A legitimate password grant and a refresh (a public client, no
    // client_id: the quota below is for confidential clients): 200.
    let good = "grant_type=password&username=alice&password=right";
    assert_eq!(send(&client, token_request(&url, good, None)).await.status, 200);
    let refresh = format!("grant_type=refresh_token&refresh_token={REFRESH_TOKEN}");
    assert_eq!(send(&client, token_request(&url, &refresh, None)).await.status, 200);

    // Stuffing through grant_type=password from one address: the upstream
    // answers 400 invalid_grant, palisade counts failures per address as
    // for a form login, and stops the run.
    let mut statuses = Vec::new();
    let mut stopped_by = None;
    for i in 0..30 {
        let body = format!("grant_type=password&username=user{i}%40example.com&password={PASSWORD}");
        let answer = send(&client, token_request(&url, &body, None)).await;
        if answer.status == 403 || answer.status == 429 {
            stopped_by
                .get_or_insert(serde_json::from_str::<serde_json::Value>(&answer.body).unwrap()["detections"].clone());
        }
        statuses.push(answer.status);
    }
    let invalid_grants = statuses.iter().filter(|s| **s == 400).count();
    let stopped = statuses.iter().filter(|s| **s == 403 || **s == 429).count();
    assert!((8..15).contains(&invalid_grants), "{statuses:?}");
    assert!(stopped >= 15, "{statuses:?}");
    let stopped_by = stopped_by.unwrap();
    assert!(stopped_by.as_array().unwrap().iter().any(|id| id.as_str().unwrap().starts_with("cred.")), "{stopped_by}");

    // A confidential client (HTTP Basic) over its quota: 429 with
    // oauth.client_quota; another client passes. (A back-end service on
    // its own network, not the stuffing run's address or fingerprint.)
    let other_address = {
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_local_address(Some("127.0.5.21".parse().unwrap()));
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector)
    };
    let grant = "grant_type=client_credentials&scope=payments";
    let mut quota = Vec::new();
    for _ in 0..7 {
        let answer =
            send(&other_address, token_request_as(SERVICE_UA, &url, grant, Some(("batch-service", CLIENT_SECRET))))
                .await;
        quota.push((answer.status, answer.body));
    }
    assert_eq!(quota.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![200, 200, 200, 200, 200, 429, 429]);
    let limited: serde_json::Value = serde_json::from_str(&quota[5].1).unwrap();
    assert_eq!(limited["detections"], serde_json::json!(["oauth.client_quota"]));
    let another =
        send(&other_address, token_request_as(SERVICE_UA, &url, grant, Some(("reporting", CLIENT_SECRET)))).await;
    assert_eq!(another.status, 200, "{}", another.body);

    // No secret or token anywhere palisade writes.
    palisade.store.flush().await;
    let log = palisade.log_lines(40).await;
    let log_text = std::fs::read_to_string(&palisade.log_path).unwrap();
    assert!(log.len() >= 40);
    let capture_text = std::fs::read_to_string(&capture).unwrap();
    assert!(capture_text.lines().count() >= 40, "the capture recorded the requests");
    let redis_text = format!("{:?}{}", redis.keys(), redis.dump());
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("batch-service:{CLIENT_SECRET}"));
    for (place, text) in [("decision log", &log_text), ("capture", &capture_text), ("redis", &redis_text)] {
        for secret in [CLIENT_SECRET, PASSWORD, REFRESH_TOKEN, ACCESS_TOKEN, basic.as_str()] {
            assert!(!text.contains(secret), "{secret} in the {place}");
        }
    }
    // Usernames and client ids are not in Redis in clear either.
    for clear in ["user3%40example.com", "user3@example.com", "batch-service"] {
        assert!(!redis_text.contains(clear), "{clear} in redis");
    }
}
