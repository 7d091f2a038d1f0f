//! The HTTP fingerprint through the real proxy: header order and case as
//! sent on the wire (HTTP/1), untouched by proxy-added headers.

mod common;
use common::*;

use palisade::fingerprint::http_fingerprint;

const UA: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";

const LOG_ALL: &str = "[decision_log]\nsample_allowed = 1.0\n[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n";

fn expected(method: &http::Method, headers: &[(&str, &str)]) -> String {
    http_fingerprint(http::Version::HTTP_11, method, headers.iter().map(|(name, _)| *name)).to_string()
}

fn fingerprints(lines: &[serde_json::Value]) -> Vec<String> {
    lines.iter().map(|line| line["fingerprint"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn same_user_agent_different_header_order_gives_different_fingerprints() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start(LOG_ALL, &upstream).await;
    let browser_order =
        [("Host", "a"), ("User-Agent", UA), ("Accept", "*/*"), ("Accept-Language", "en"), ("Connection", "close")];
    let script_order =
        [("Host", "a"), ("Accept", "*/*"), ("User-Agent", UA), ("Accept-Language", "en"), ("Connection", "close")];
    let lowercase =
        [("host", "a"), ("user-agent", UA), ("accept", "*/*"), ("accept-language", "en"), ("connection", "close")];
    for headers in [&browser_order[..], &script_order[..], &lowercase[..]] {
        let response = raw_request(palisade.addr(), &raw_http1("GET", "/x", headers, "")).await;
        assert_eq!(raw_status(&response), Some(200));
    }
    let seen = fingerprints(&palisade.log_lines(3).await);
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0], expected(&http::Method::GET, &browser_order), "wire order and case are what is hashed");
    assert_eq!(seen[1], expected(&http::Method::GET, &script_order));
    assert_eq!(seen[2], expected(&http::Method::GET, &lowercase));
    assert_ne!(seen[0], seen[1], "order differs");
    assert_ne!(seen[0], seen[2], "case differs");
    eprintln!("fingerprints: {seen:?}");
}

#[tokio::test]
async fn a_client_keeps_its_fingerprint_when_x_forwarded_for_changes() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start(LOG_ALL, &upstream).await;
    for (i, forwarded) in ["198.51.100.1", "198.51.100.2", "203.0.113.9, 198.51.100.3"].iter().enumerate() {
        let mut headers = vec![("Host", "a"), ("User-Agent", UA), ("Accept", "*/*")];
        if i > 0 {
            // A proxy may add its headers anywhere; they never count.
            headers.insert(1, ("Via", "1.1 edge"));
        }
        headers.push(("X-Forwarded-For", forwarded));
        headers.push(("Connection", "close"));
        assert_eq!(raw_status(&raw_request(palisade.addr(), &raw_http1("GET", "/x", &headers, "")).await), Some(200));
    }
    let lines = palisade.log_lines(3).await;
    let clients: Vec<&str> = lines.iter().map(|l| l["client"].as_str().unwrap()).collect();
    assert_eq!(clients, ["198.51.100.1", "198.51.100.2", "198.51.100.3"], "the client address did change");
    let seen = fingerprints(&lines);
    assert!(seen.iter().all(|fp| *fp == seen[0]), "{seen:?}");
    assert_eq!(
        seen[0],
        expected(&http::Method::GET, &[("Host", ""), ("User-Agent", ""), ("Accept", ""), ("Connection", "")])
    );
}

#[tokio::test]
async fn heads_stay_paired_with_requests_on_a_keep_alive_connection() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start(LOG_ALL, &upstream).await;
    let first = [("Host", "a"), ("User-Agent", UA), ("Content-Type", "text/plain"), ("Content-Length", "11")];
    let second = [("Host", "a"), ("Transfer-Encoding", "chunked"), ("User-Agent", UA)];
    let third = [("HOST", "a"), ("user-agent", UA), ("X-Dup", "1"), ("X-Dup", "2"), ("Connection", "close")];
    let mut bytes = raw_http1("POST", "/one", &first, "hello world");
    bytes.extend(raw_http1("POST", "/two", &second, "5\r\nhello\r\n0\r\n\r\n"));
    bytes.extend(raw_http1("GET", "/three", &third, ""));
    let response = raw_request(palisade.addr(), &bytes).await;
    assert_eq!(String::from_utf8_lossy(&response).matches("HTTP/1.1 200").count(), 3);
    let seen = fingerprints(&palisade.log_lines(3).await);
    assert_eq!(
        seen,
        [
            expected(&http::Method::POST, &first),
            expected(&http::Method::POST, &second),
            expected(&http::Method::GET, &third)
        ]
    );
}

#[tokio::test]
async fn http2_fingerprints_use_the_decoded_header_order() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start(LOG_ALL, &upstream).await;
    let answer =
        send(&http2_client(), request("GET", &palisade.url("/h2"), &[("user-agent", UA), ("accept", "*/*")], "")).await;
    assert_eq!(answer.status, 200);
    let seen = fingerprints(&palisade.log_lines(1).await);
    assert!(seen[0].starts_with("20ge---02_"), "{seen:?}");
}
