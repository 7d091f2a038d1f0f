//! Mixed traffic for the soak test (`benches/soak.sh`): for a bounded
//! time, several client tasks send, through palisade, in turn
//! - page loads (`GET /` with a browser's headers) from a stable set of
//!   a thousand addresses;
//! - logins of the same people (form posts, a stable username each);
//! - an address-rotating login flood: every attempt from a new address
//!   (`X-Forwarded-For`, palisade must trust 127.0.0.1) with a new
//!   username, as a botnet cycling a combo list does.
//!
//! ```text
//! cargo run --release --example soak_load -- http://127.0.0.1:18183 600 [tasks]
//! ```
//!
//! Prints one line per 10 s (requests sent, by kind, and answers by
//! status class), then the totals.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const CHROME: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";

#[derive(Default)]
struct Totals {
    pages: AtomicU64,
    logins: AtomicU64,
    flood: AtomicU64,
    ok: AtomicU64,
    client_errors: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
}

/// A mixed 64-bit value of `n` (splitmix64), for addresses and names.
fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn address(n: u64) -> String {
    std::net::Ipv4Addr::from((mix(n) as u32) | 0x0100_0000).to_string()
}

fn build(base: &str, kind: u64, n: u64) -> http::Request<Full<Bytes>> {
    let builder = http::Request::builder().header("user-agent", CHROME).header("accept", "text/html");
    match kind {
        // A person's page load.
        0 => builder
            .method("GET")
            .uri(format!("{base}/"))
            .header("x-forwarded-for", address(n % 1000))
            .body(Full::new(Bytes::new())),
        // The same person logging in.
        1 => builder
            .method("POST")
            .uri(format!("{base}/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-forwarded-for", address(n % 1000))
            .body(Full::new(Bytes::from(format!("username=person{}&password=their-own", n % 1000)))),
        // The flood: a new address and a new username every time.
        _ => http::Request::builder()
            .method("POST")
            .uri(format!("{base}/login"))
            .header("user-agent", "python-requests/2.34.2")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-forwarded-for", address(1_000_000 + n))
            .body(Full::new(Bytes::from(format!("username=victim{:x}&password=guess{n}", mix(n))))),
    }
    .expect("a valid request")
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(base), Some(seconds)) = (args.next(), args.next().and_then(|s| s.parse::<u64>().ok())) else {
        eprintln!("usage: soak_load <palisade base URL> <seconds> [tasks]");
        return std::process::ExitCode::from(2);
    };
    let tasks = args.next().and_then(|t| t.parse::<u64>().ok()).unwrap_or(16).max(1);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let totals = Arc::new(Totals::default());
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let base = Arc::<str>::from(base);
    let workers: Vec<_> = (0..tasks)
        .map(|task| {
            let (client, totals, base) = (client.clone(), totals.clone(), base.clone());
            tokio::spawn(async move {
                let mut n = task;
                while Instant::now() < deadline {
                    // Half the requests are the flood, the rest people.
                    let kind = match n % 10 {
                        0..=3 => 0,
                        4 => 1,
                        _ => 2,
                    };
                    let counter = [&totals.pages, &totals.logins, &totals.flood][kind as usize];
                    counter.fetch_add(1, Ordering::Relaxed);
                    match client.request(build(&base, kind, n / 10)).await {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let _ = response.into_body().collect().await;
                            let class = match status {
                                200..=399 => &totals.ok,
                                403 | 429 => &totals.refused,
                                _ => &totals.client_errors,
                            };
                            class.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            totals.failed.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                    n += tasks;
                }
            })
        })
        .collect();
    let report = {
        let totals = totals.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                println!("{}", line(&totals, started.elapsed()));
            }
        })
    };
    for worker in workers {
        let _ = worker.await;
    }
    report.abort();
    println!("total {}", line(&totals, Duration::from_secs(seconds)));
    if totals.failed.load(Ordering::Relaxed) > 0 {
        eprintln!("soak_load: some requests got no answer");
    }
    std::process::ExitCode::SUCCESS
}

fn line(totals: &Totals, elapsed: Duration) -> String {
    let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    format!(
        "t={:>4}s pages={} logins={} flood={} ok={} refused={} other={} unanswered={}",
        elapsed.as_secs(),
        get(&totals.pages),
        get(&totals.logins),
        get(&totals.flood),
        get(&totals.ok),
        get(&totals.refused),
        get(&totals.client_errors),
        get(&totals.failed)
    )
}
