//! Network context through the real proxy: an ASN database written by the
//! test (tests/common/mmdb.rs), clients on distinct loopback addresses of
//! different "networks", a signature rule on the ASN, and a counter per
//! ASN that stops a distributed attack from one hosting network while
//! another network's users pass.

mod common;

use std::net::Ipv4Addr;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use common::{Palisade, TestClient, Upstream, request, send};

const HOSTING: u32 = 64_512;
const HOME_ISP: u32 = 64_500;
const BLOCKED: u32 = 64_666;

fn client_from(ip: &str) -> TestClient {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(ip.parse().unwrap()));
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector)
}

const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0";

async fn start(dir: &tempfile::TempDir, upstream: &Upstream) -> Palisade {
    let database = common::mmdb::asn_database(&[
        (Ipv4Addr::new(127, 2, 0, 0), 16, HOME_ISP, "Home ISP"),
        (Ipv4Addr::new(127, 10, 0, 0), 16, HOSTING, "Cloudy Hosting"),
        (Ipv4Addr::new(127, 66, 0, 0), 16, BLOCKED, "Bulletproof Hosting"),
    ]);
    std::fs::write(dir.path().join("asn.mmdb"), database).unwrap();
    std::fs::write(
        dir.path().join("network.toml"),
        format!(
            r#"
[[rule]]
id = "network.bulletproof_hosting"
description = "A hosting network that sells to abusers."
false_positives = "None known: nobody browses from it."
field = "asn"
equals = "{BLOCKED}"
score = 70
action = "block"
"#
        ),
    )
    .unwrap();
    let config = format!(
        r#"
[network]
mmdb_path = "{dir}/asn.mmdb"

[signatures]
paths = ["{dir}/network.toml"]

[[route]]
name = "search"
profile = "api"
path = "/api/*"
rate_limit = {{ requests = 5, period_secs = 60, burst = 5 }}
asn_rate_limit = {{ requests = 20, period_secs = 60, burst = 20 }}
"#,
        dir = dir.path().display()
    );
    Palisade::start(&config, upstream).await
}

#[tokio::test]
async fn a_rule_on_the_asn_blocks_and_a_counter_per_asn_stops_a_distributed_attack() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let palisade = start(&dir, &upstream).await;
    let url = palisade.url("/api/search?q=shoes");
    let browser = [
        ("user-agent", BROWSER),
        ("accept", "application/json"),
        ("accept-language", "en-GB,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br"),
    ];
    let get = || request("GET", &url, &browser, "");

    // The rule on the ASN: blocked, with the rule's id.
    let answer = send(&client_from("127.66.0.9"), get()).await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(body["detections"], serde_json::json!(["network.bulletproof_hosting"]));

    // 30 addresses of the hosting network, 3 requests each: every address
    // stays under its own limit (5 a minute), the network does not (20).
    let mut hosting = (0, 0);
    for host in 1..=30u8 {
        let client = client_from(&format!("127.10.0.{host}"));
        for _ in 0..3 {
            let answer = send(&client, get()).await;
            match answer.status {
                200 => hosting.0 += 1,
                429 => {
                    hosting.1 += 1;
                    let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
                    assert_eq!(body["detections"], serde_json::json!(["rate.asn_route"]), "{}", answer.body);
                }
                other => panic!("unexpected {other}: {}", answer.body),
            }
        }
    }
    assert_eq!(hosting, (20, 70), "(allowed, limited) from the hosting ASN");

    // Meanwhile 6 users of the home ISP, 3 requests each: all pass (their
    // network has its own budget, untouched by the hosting network).
    for host in 1..=6u8 {
        let client = client_from(&format!("127.2.0.{host}"));
        for _ in 0..3 {
            assert_eq!(send(&client, get()).await.status, 200, "home user 127.2.0.{host}");
        }
    }

    // The decision log names the network.
    let lines = palisade.log_lines(71).await;
    let limited = lines.iter().find(|l| l["detections"] == serde_json::json!(["rate.asn_route"])).unwrap();
    let evidence = limited["signals"][0]["evidence"].as_array().unwrap();
    assert!(evidence.iter().any(|e| e["name"] == "asn" && e["value"] == f64::from(HOSTING)), "{evidence:?}");
    assert!(evidence.iter().any(|e| e["name"] == "asn_org" && e["value"] == "Cloudy Hosting"), "{evidence:?}");
}

#[test]
fn palisade_check_rejects_a_file_that_is_not_an_mmdb() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("asn.mmdb"), b"not a database").unwrap();
    let path = dir.path().join("palisade.toml");
    std::fs::write(&path, "\n[network]\nmmdb_path = \"asn.mmdb\"\n").unwrap();
    let error = palisade::app::load_file(&path).unwrap_err().to_string();
    assert!(error.contains("palisade.toml:3: network.mmdb_path"), "{error}");
    assert!(error.contains("is not an MMDB file"), "{error}");
}
