mod common;
use common::*;

#[tokio::test]
async fn harness_passes_a_request_through() {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start("", &upstream).await;
    let answer =
        send(&http1_client(), request("GET", &palisade.url("/hello?x=1"), &[("user-agent", "Mozilla/5.0")], "")).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "echo /hello");
    assert_eq!(upstream.last().uri, "/hello?x=1");
}
