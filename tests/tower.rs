//! The tower layer inside axum: `examples/axum_login.rs` itself, served on
//! an ephemeral port, stops a stuffing loop against its login handler
//! while a person logs in.

#[path = "../examples/axum_login.rs"]
#[allow(dead_code)]
mod example;

mod common;

use common::{TestClient, request, send};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

fn client_from(ip: &str) -> TestClient {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(ip.parse().unwrap()));
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector)
}

const CHROME_UA: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";
const FIREFOX_UA: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:146.0) Gecko/20100101 Firefox/146.0";

fn form_login(
    url: &str,
    user_agent: &str,
    user: &str,
    password: &str,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let mut headers = vec![("user-agent", user_agent), ("accept", "text/html")];
    if user_agent == FIREFOX_UA {
        // Another browser sends another header set: another fingerprint.
        headers.push(("accept-language", "en-GB,en;q=0.5"));
        headers.push(("origin", "http://shop.example"));
    }
    headers.push(("content-type", "application/x-www-form-urlencoded"));
    request("POST", url, &headers, &format!("username={user}&password={password}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_example_stops_stuffing_and_lets_a_person_in() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = palisade::config::Config::default();
    config.decision_log.path = dir.path().join("decisions.jsonl").display().to_string();
    let layer = palisade::tower::Layer::from_config(&config).unwrap();
    let metrics = layer.metrics().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(example::serve(listener, layer));
    let url = format!("http://{addr}/login");

    // A combo list from one address: the handler answers 401 a few times,
    // then palisade answers before the handler runs.
    let stuffer = client_from("127.0.0.2");
    let mut statuses = Vec::new();
    for i in 0..30 {
        statuses
            .push(send(&stuffer, form_login(&url, CHROME_UA, &format!("user{i}@example.com"), "123456")).await.status);
    }
    let reached_handler = statuses.iter().filter(|s| **s == 401).count();
    let stopped = statuses.iter().filter(|s| **s == 403 || **s == 429).count();
    assert!(reached_handler <= 10, "{reached_handler} of 30 reached the handler: {statuses:?}");
    assert_eq!(reached_handler + stopped, 30, "{statuses:?}");

    // A person on another network, in another browser (a stuffer copying
    // a person's exact browser is the session and challenge stage's work,
    // tests/session*.rs), mistypes once, then logs in.
    let alice = client_from("127.0.1.3");
    let typo = send(&alice, form_login(&url, FIREFOX_UA, "alice", "wonderlnad")).await;
    assert_eq!(typo.status, 401, "{}", typo.body);
    let welcome = send(&alice, form_login(&url, FIREFOX_UA, "alice", "wonderland")).await;
    assert_eq!(welcome.status, 200, "{}", welcome.body);
    assert_eq!(welcome.body, "welcome");

    // The page is untouched, and the layer's metrics count the decisions.
    let page = send(&alice, request("GET", &format!("http://{addr}/"), &[], "")).await;
    assert_eq!(page.status, 200);
    let text = metrics.render();
    assert!(text.contains("palisade_requests_total"), "{text}");
}
