//! Header names as sent, through the real proxy, when a keep-alive
//! connection repeats its heads: the recorder checks a repeated head
//! against the last one's names instead of parsing it again, and every
//! request must still be fingerprinted by exactly its own names, order and
//! case (HTTP/1.1), and by the decoded order on HTTP/2.

mod common;
use common::*;

use palisade::fingerprint::http_fingerprint;

const UA: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";

const LOG_ALL: &str = "[decision_log]\nsample_allowed = 1.0\n";

fn expected(method: &str, headers: &[(&str, &str)]) -> String {
    let method = http::Method::from_bytes(method.as_bytes()).unwrap();
    http_fingerprint(http::Version::HTTP_11, &method, headers.iter().map(|(name, _)| *name)).to_string()
}

/// A request: method, header lines, body.
type Sent<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);

fn fingerprints(lines: &[serde_json::Value]) -> Vec<String> {
    lines.iter().map(|line| line["fingerprint"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn repeated_heads_on_one_connection_keep_their_own_names() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start(LOG_ALL, &upstream).await;
    let get = [("Host", "a"), ("User-Agent", UA), ("Accept", "*/*"), ("Accept-Language", "en")];
    let post = |length: &'static str| [("Host", "a"), ("User-Agent", UA), ("Content-Length", length)];
    let upper = [("HOST", "a"), ("User-Agent", UA), ("Accept", "*/*"), ("Accept-Language", "en")];
    let chunked = [("Host", "a"), ("Transfer-Encoding", "chunked"), ("User-Agent", UA)];
    let close =
        [("Host", "a"), ("User-Agent", UA), ("Accept", "*/*"), ("Accept-Language", "en"), ("Connection", "close")];
    let requests: Vec<Sent> = vec![
        ("GET", get.to_vec(), ""),
        ("GET", get.to_vec(), ""),
        ("POST", post("5").to_vec(), "hello"),
        ("POST", post("11").to_vec(), "hello world"),
        ("POST", post("0").to_vec(), ""),
        ("GET", get.to_vec(), ""),
        ("GET", upper.to_vec(), ""),
        ("GET", upper.to_vec(), ""),
        ("POST", chunked.to_vec(), "5\r\nhello\r\n0\r\n\r\n"),
        ("POST", chunked.to_vec(), "3\r\nabc\r\n0\r\n\r\n"),
        ("GET", get.to_vec(), ""),
        ("GET", close.to_vec(), ""),
    ];
    let mut bytes = Vec::new();
    for (method, headers, body) in &requests {
        bytes.extend(raw_http1(method, "/r", headers, body));
    }
    let response = raw_request(palisade.addr(), &bytes).await;
    assert_eq!(String::from_utf8_lossy(&response).matches("HTTP/1.1 200").count(), requests.len());
    let seen = fingerprints(&palisade.log_lines(requests.len()).await);
    let wanted: Vec<String> = requests.iter().map(|(method, headers, _)| expected(method, headers)).collect();
    assert_eq!(seen, wanted);
    assert_ne!(seen[0], seen[6], "case counts");
}

#[tokio::test]
async fn repeated_http2_requests_use_the_decoded_header_order() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start(LOG_ALL, &upstream).await;
    let client = http2_client();
    for _ in 0..3 {
        let answer =
            send(&client, request("GET", &palisade.url("/h2"), &[("user-agent", UA), ("accept", "*/*")], "")).await;
        assert_eq!(answer.status, 200);
    }
    let seen = fingerprints(&palisade.log_lines(3).await);
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|fp| fp == &seen[0] && fp.starts_with("20ge---02_")), "{seen:?}");
}
