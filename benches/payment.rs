//! The payment path without the network: read the card from the body
//! (JSON checkout and Stripe-style forms), hash it, read and update every
//! card-testing counter, decide, then feed the outcome back (the request
//! lifecycle: `route` + `decide_now` + `complete`), over a stream of
//! payments from many customers, accounts and cards with one in ten
//! declined, and a card-testing run mixed in.
//!
//! `cargo bench --bench payment` runs the criterion benchmark, then prints
//! p50/p99 per payment from an HDR histogram over 200,000 timed payments
//! (criterion reports means and medians, not tails).

#[path = "support/lifecycle.rs"]
mod support;

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use palisade::config::{Config, parse_str};
use palisade::lifecycle::Lifecycle;
use palisade::outcome::ResponseFacts;

use support::{Request, print_tail, through};

/// The benchmarked route: a checkout with the account from a header.
const CONFIG: &str = r#"
[store]
hash_key = "bench"

[[route]]
name = "checkout"
profile = "payment"
path = "/api/checkout"
methods = ["POST"]
[route.payment]
account_header = "x-user-id"
"#;

/// Time between payments: 20 payments a second, so one pass over the
/// stream (20,000 payments, 1,000 s) outlasts the 15-minute window and a
/// customer's card is seen once per window, as in a real checkout.
const STEP: Duration = Duration::from_millis(50);

/// One payment, prepared once.
struct Payment {
    method: http::Method,
    uri: http::Uri,
    headers: http::HeaderMap,
    body: Vec<u8>,
    client: std::net::IpAddr,
    status: u16,
    answer: &'static [u8],
}

/// splitmix64's finalizer: neighbouring inputs give unrelated outputs.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A Luhn-valid 16-digit number from a BIN and a serial.
fn card_number(bin: u32, serial: u64) -> String {
    let body = format!("{bin:06}{serial:09}");
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 0 { if d * 2 > 9 { d * 2 - 9 } else { d * 2 } } else { d }
        })
        .sum();
    format!("{body}{}", (10 - sum % 10) % 10)
}

fn payments(count: usize) -> Vec<Payment> {
    const DECLINED: &[u8] = br#"{"error":{"type":"card_error","code":"card_declined","decline_code":"do_not_honor"}}"#;
    const APPROVED: &[u8] = br#"{"id":"ch_3Pq","status":"succeeded"}"#;
    (0..count)
        .map(|i| {
            // One in twenty payments is a card tester's (one address, one tool).
            let tester = i % 20 == 0;
            let mut headers = http::HeaderMap::new();
            let mut add = |name: &'static str, value: &str| {
                headers.append(name, value.parse().unwrap());
            };
            add("host", "shop.example");
            if tester {
                add("user-agent", "python-requests/2.34.2");
                add("accept", "*/*");
            } else {
                add("sec-ch-ua", r#""Chromium";v="156", "Not)A;Brand";v="8""#);
                add("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36");
                add("accept", "application/json");
                add("sec-fetch-mode", "cors");
                add("accept-language", "en-GB,en;q=0.9");
                add("x-user-id", &format!("customer-{}", i % 5000));
            }
            // A customer pays with their own card; a tester with a new one each time.
            let holder = if tester { i } else { i % 5000 };
            let card = card_number(400_000 + (holder % 37) as u32 * 1_117, holder as u64);
            let (content_type, body) = if i % 2 == 0 {
                (
                    "application/json",
                    format!(
                        r#"{{"amount":"{}.99","currency":"eur","card":{{"number":"{card}","exp_month":8,"exp_year":2030,"cvc":"424"}}}}"#,
                        if tester { 0 } else { 10 + i % 90 }
                    ),
                )
            } else {
                (
                    "application/x-www-form-urlencoded",
                    format!("amount={}.99&card%5Bnumber%5D={card}&card%5Bexp_month%5D=8&card%5Bexp_year%5D=2030&card%5Bcvc%5D=424", 10 + i % 90),
                )
            };
            add("content-type", content_type);
            // One customer payment in ten declined, picked by a mixing hash
            // (splitmix64's finalizer) so that no account is always declined.
            let declined = tester || mix(i as u64) % 10 == 3;
            Payment {
                method: http::Method::POST,
                uri: "/api/checkout".parse().unwrap(),
                headers,
                body: body.into_bytes(),
                client: if tester {
                    "203.0.113.66".parse().unwrap()
                } else {
                    format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255).parse().unwrap()
                },
                status: if declined { 402 } else { 200 },
                answer: if declined { DECLINED } else { APPROVED },
            }
        })
        .collect()
}

/// One payment through the payment path, as every front door runs it
/// (route, decide, complete with the upstream's status and answer).
fn payment_path(lifecycle: &Lifecycle, payment: &Payment) -> palisade::signal::Action {
    let request = Request {
        method: &payment.method,
        uri: &payment.uri,
        headers: &payment.headers,
        client: payment.client,
        body: &payment.body,
    };
    let response = ResponseFacts { status: payment.status, headers: None, body_prefix: Some(payment.answer) };
    through(lifecycle, &request, response)
}

fn config() -> Config {
    parse_str(CONFIG, "bench.toml").expect("bench config")
}

fn main() {
    let stream = payments(20_000);
    let (lifecycle, clock) = support::lifecycle(&config());
    let mut criterion = Criterion::default().configure_from_args();
    let mut group = criterion.benchmark_group("payment");
    group.throughput(Throughput::Elements(1));
    let mut next = 0;
    group.bench_function("attempt", |b| {
        b.iter(|| {
            clock.advance(STEP);
            let payment = &stream[next];
            next = (next + 1) % stream.len();
            black_box(payment_path(&lifecycle, black_box(payment)))
        })
    });
    group.finish();
    criterion.final_summary();

    let (lifecycle, clock) = support::lifecycle(&config());
    print_tail("payment", "payments", |i| {
        clock.advance(STEP);
        payment_path(&lifecycle, &stream[i % stream.len()])
    });
}
