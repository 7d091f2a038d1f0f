//! `limits.max_headers` at its edges: exactly the configured number of
//! request headers gets past hyper's parse and one more is refused with
//! 431, for the default (100, which palisade leaves to hyper's own limit
//! instead of setting it) and for limits below and above it.
//!
//! The requests carry `Host` twice, so palisade answers them itself (400
//! `duplicate_host`) once hyper has parsed them: forwarded, they would
//! meet the test upstream's own limit of 100 with palisade's headers added.

mod common;
use common::*;

/// A request with `count` header lines in all, two of them `Host`, on a
/// connection that closes after it.
fn request_with_headers(count: usize) -> Vec<u8> {
    let mut head = String::from("GET /limits HTTP/1.1\r\nHost: a\r\nHost: a\r\nConnection: close\r\n");
    for i in 3..count {
        head.push_str(&format!("X-H{i}: {i}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// The status palisade answers a request with `count` headers.
async fn status_for(palisade: &Palisade, count: usize) -> Option<u16> {
    raw_status(&raw_request(palisade.addr(), &request_with_headers(count)).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_limit_is_one_hundred_headers() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start("", &upstream).await;
    assert_eq!(status_for(&palisade, 100).await, Some(400), "100 headers get past the parse (duplicate_host)");
    assert_eq!(status_for(&palisade, 101).await, Some(431), "101 do not");
    assert!(upstream.seen().is_empty(), "nothing was forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_limit_is_kept_below_and_above_the_default() {
    for limit in [50, 150] {
        let upstream = Upstream::start().await;
        let palisade = Palisade::start(&format!("[limits]\nmax_headers = {limit}\n"), &upstream).await;
        assert_eq!(status_for(&palisade, limit).await, Some(400), "{limit} headers get past a limit of {limit}");
        assert_eq!(status_for(&palisade, limit + 1).await, Some(431), "{} do not", limit + 1);
        assert!(upstream.seen().is_empty(), "limit {limit}: nothing was forwarded");
    }
}
