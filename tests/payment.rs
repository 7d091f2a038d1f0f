//! Card testing against a real payment upstream written here (a small
//! processor: the cards it issued are approved, every other card is
//! declined with a decline code, an expired date too), through the real
//! proxy. Client addresses come through `X-Forwarded-For` from a trusted
//! proxy (127.0.0.1), so one test can be hundreds of clients.

mod common;
use common::*;

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const CONFIG: &str = common::trusted_config!(
    r#"[identify]
api_key_header = "X-API-Key"

[[partner]]
name = "payouts-partner"
# sha256 of "payout-key-1"
api_key_sha256 = ["PARTNER_KEY_SHA256"]
quota = { requests = 5000, period_secs = 60 }

[[route]]
name = "checkout"
profile = "payment"
path = "/api/checkout"
methods = ["POST"]
[route.payment]
account_header = "x-user-id"

[[route]]
name = "payment_methods"
profile = "payment"
path = "/api/payment_methods"
methods = ["POST"]
[route.payment]
account_cookie = "uid"
"#
);

fn config() -> String {
    use sha2::Digest as _;
    CONFIG.replace("PARTNER_KEY_SHA256", &hex::encode(sha2::Sha256::digest(b"payout-key-1")))
}

/// A Luhn-valid 16-digit card number: `bin` (6 digits), then `serial`.
fn card_number(bin: &str, serial: u64) -> String {
    let body = format!("{bin}{serial:09}");
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            // The check digit goes last, so the rightmost body digit is doubled.
            if i % 2 == 0 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    format!("{body}{}", (10 - sum % 10) % 10)
}

/// One payment as the client sends it.
struct Payment<'a> {
    card: &'a str,
    exp_month: u32,
    exp_year: u32,
    cvc: &'a str,
    amount: &'a str,
}

/// The test processor: approves the cards it issued (with a valid
/// expiry), declines everything else with a decline code. It echoes the
/// action palisade forwarded (`X-Palisade-Action`).
#[derive(Clone)]
struct Processor {
    addr: SocketAddr,
    issued: Arc<Mutex<HashSet<String>>>,
    /// Card numbers that reached the processor.
    reached: Arc<Mutex<Vec<String>>>,
}

impl Processor {
    async fn start() -> Processor {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let processor = Processor { addr, issued: Arc::default(), reached: Arc::default() };
        let serving = processor.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let serving = serving.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| serving.clone().answer(request));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        processor
    }

    fn issue(&self, card: &str) {
        self.issued.lock().unwrap().insert(card.to_string());
    }

    /// The harness's upstream handle: only its address is used, to point
    /// palisade at the processor.
    async fn upstream(&self) -> Upstream {
        let mut upstream = dead_upstream().await;
        upstream.addr = self.addr;
        upstream
    }

    fn reached(&self) -> Vec<String> {
        self.reached.lock().unwrap().clone()
    }

    async fn answer(self, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
        let (parts, body) = request.into_parts();
        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let json = parts.headers.get("content-type").is_some_and(|v| v.to_str().unwrap_or("").contains("json"));
        let field = |name: &str| -> Option<String> {
            if json {
                let value: serde_json::Value = serde_json::from_slice(&body).ok()?;
                let card = value.pointer("/card").or_else(|| value.pointer("/payment_method/card"))?;
                card.get(name).map(|v| v.as_str().map(String::from).unwrap_or_else(|| v.to_string()))
            } else {
                form_urlencoded::parse(&body)
                    .find(|(key, _)| key == &format!("card[{name}]"))
                    .map(|(_, value)| value.into_owned())
            }
        };
        let number = field("number").unwrap_or_default();
        let exp_year: u32 = field("exp_year").and_then(|y| y.parse().ok()).unwrap_or(0);
        self.reached.lock().unwrap().push(number.clone());
        let (status, answer) = if exp_year < 2027 {
            (402, r#"{"error":{"type":"card_error","code":"expired_card","decline_code":"expired_card"}}"#.to_string())
        } else if self.issued.lock().unwrap().contains(&number) {
            (200, r#"{"id":"ch_3Pq","status":"succeeded","decline_code":null}"#.to_string())
        } else {
            (402, r#"{"error":{"type":"card_error","code":"card_declined","decline_code":"do_not_honor"}}"#.to_string())
        };
        let mut response = Response::new(Full::new(Bytes::from(answer)));
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
        response.headers_mut().insert("content-type", "application/json".parse().unwrap());
        if let Some(action) = parts.headers.get("x-palisade-action") {
            response.headers_mut().insert("x-seen-action", action.clone());
        }
        Ok(response)
    }
}

/// A carding script's header set (python-requests posting JSON).
fn tool_headers(ip: &str) -> Vec<(String, String)> {
    [
        ("user-agent", "python-requests/2.34.2"),
        ("accept-encoding", "gzip, deflate"),
        ("accept", "*/*"),
        ("connection", "keep-alive"),
        ("content-type", "application/json"),
        ("x-forwarded-for", ip),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect()
}

/// A customer's browser at checkout (fetch from the checkout page).
fn browser_headers(ip: &str, account: &str) -> Vec<(String, String)> {
    [
        ("sec-ch-ua", r#""Chromium";v="156", "Not)A;Brand";v="8""#),
        ("sec-ch-ua-mobile", "?0"),
        ("sec-ch-ua-platform", "\"Linux\""),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36",
        ),
        ("content-type", "application/json"),
        ("accept", "application/json"),
        ("origin", "https://shop.example"),
        ("sec-fetch-site", "same-origin"),
        ("sec-fetch-mode", "cors"),
        ("sec-fetch-dest", "empty"),
        ("referer", "https://shop.example/checkout"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("x-user-id", account),
        ("x-forwarded-for", ip),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect()
}

fn checkout_body(payment: &Payment<'_>) -> String {
    format!(
        r#"{{"amount":"{}","currency":"eur","card":{{"number":"{}","exp_month":{},"exp_year":{},"cvc":"{}"}}}}"#,
        payment.amount, payment.card, payment.exp_month, payment.exp_year, payment.cvc
    )
}

fn post(url: &str, headers: &[(String, String)], body: String) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method("POST").uri(url);
    for (name, value) in headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder.body(Full::new(Bytes::from(body))).unwrap()
}

/// Whether palisade itself refused the request (429 or 403).
fn refused(status: u16) -> bool {
    status == 429 || status == 403
}

async fn start() -> (Processor, Palisade) {
    let processor = Processor::start().await;
    let palisade = Palisade::start(&config(), &processor.upstream().await).await;
    (processor, palisade)
}

/// Detection ids of every decision log line.
async fn detections(palisade: &Palisade, at_least: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for line in palisade.log_lines(at_least).await {
        for signal in line["signals"].as_array().into_iter().flatten() {
            *seen.entry(signal["id"].as_str().unwrap_or("").to_string()).or_insert(0) += 1;
        }
    }
    seen
}

#[tokio::test]
async fn one_client_trying_200_cards_is_stopped_within_15_attempts() {
    let (processor, palisade) = start().await;
    // One card among the 200 is live.
    let cards: Vec<String> =
        (0..200).map(|i| card_number(["453201", "552433", "401288"][i % 3], 7_000 + i as u64)).collect();
    processor.issue(&cards[120]);
    let client = http1_client();
    let mut first_refusal = None;
    let mut reached = 0;
    for (i, card) in cards.iter().enumerate() {
        let payment = Payment { card, exp_month: 11, exp_year: 2029, cvc: "318", amount: "1.00" };
        let answer =
            send(&client, post(&palisade.url("/api/checkout"), &tool_headers("203.0.113.7"), checkout_body(&payment)))
                .await;
        if refused(answer.status) {
            first_refusal.get_or_insert(i + 1);
        } else {
            reached += 1;
        }
    }
    let stopped_at = first_refusal.expect("the card test was stopped");
    let found = detections(&palisade, 200).await;
    eprintln!("one client: stopped at attempt {stopped_at}; {reached} of 200 reached the processor; {found:?}");
    assert!(stopped_at <= 15, "stopped only at attempt {stopped_at}");
    assert!(reached <= 15, "{reached} attempts reached the processor");
    assert_eq!(processor.reached().len(), reached);
    assert!(found.contains_key("pay.banned"), "the address is banned: {found:?}");
}

/// A logged-in account in a real browser trying one dead card after
/// another: first the application is asked to step up (the payment is
/// forwarded with `X-Palisade-Action: challenge`, so it can require
/// 3-D Secure), then 429, then 403 and a ban.
#[tokio::test]
async fn escalation_steps_up_then_limits_then_blocks() {
    let (processor, palisade) = start().await;
    let client = http1_client();
    let mut steps = Vec::new();
    for i in 0..15u64 {
        let card = card_number("601100", 9_100 + i);
        let payment = Payment { card: &card, exp_month: 6, exp_year: 2030, cvc: "215", amount: "39.90" };
        let headers = browser_headers("100.70.3.4", "acct-stepped");
        let answer = send(&client, post(&palisade.url("/api/checkout"), &headers, checkout_body(&payment))).await;
        let step = match answer.status {
            429 => "429",
            403 => "403",
            _ if answer.headers.get("x-seen-action").is_some_and(|a| a == "challenge") => "challenge",
            _ => "forwarded",
        };
        steps.push(step);
    }
    eprintln!("steps: {steps:?}");
    let first = |step: &str| steps.iter().position(|s| *s == step);
    let (challenge, limited, blocked) = (first("challenge"), first("429"), first("403"));
    assert!(challenge.is_some() && limited.is_some() && blocked.is_some(), "{steps:?}");
    assert!(challenge < limited && limited < blocked, "challenge, then 429, then 403: {steps:?}");
    assert!(steps[..3].iter().all(|s| *s == "forwarded"), "two declines are a customer's: {steps:?}");
    assert_eq!(processor.reached().len(), steps.iter().filter(|s| **s == "forwarded" || **s == "challenge").count());
}

/// 200 cards from 200 addresses (each its own /24) with one tool
/// fingerprint, interleaved with 100 customers paying once each from
/// browsers, one in six after a decline (a mistyped expiry), eight of
/// them behind one carrier NAT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distributed_card_test_is_stopped_and_customers_are_not() {
    let (processor, palisade) = start().await;
    let client = http1_client();
    let mut attack_reached = 0;
    let mut attack_reached_after_30 = 0;
    let mut customers_refused = Vec::new();
    let mut customers_challenged = Vec::new();
    let mut customer = 0;
    for i in 0..200 {
        // Cards from 25 issuers: not one BIN range.
        let card = card_number(&format!("4{:05}", 10_000 + (i % 25) * 3_371), 40_000 + i as u64);
        let ip = format!("198.18.{i}.23");
        let payment = Payment { card: &card, exp_month: 3, exp_year: 2030, cvc: "902", amount: "0.50" };
        let answer =
            send(&client, post(&palisade.url("/api/checkout"), &tool_headers(&ip), checkout_body(&payment))).await;
        if !refused(answer.status) {
            attack_reached += 1;
            if i >= 30 {
                attack_reached_after_30 += 1;
            }
        }
        // One customer for every two attack attempts.
        while customer < 100 && customer * 2 <= i {
            let card = card_number(["424242", "535310", "401288", "455673"][customer % 4], 900_000 + customer as u64);
            processor.issue(&card);
            let ip =
                if customer < 8 { "100.64.0.1".to_string() } else { format!("10.{}.{}.9", customer % 11, customer) };
            let account = format!("customer-{customer}");
            let mistyped = customer % 6 == 3;
            for attempt in 0..=usize::from(mistyped) {
                let exp_year = if attempt == 0 && mistyped { 2024 } else { 2030 };
                let amount = format!("{}.99", 10 + customer % 90);
                let payment = Payment { card: &card, exp_month: 8, exp_year, cvc: "424", amount: &amount };
                let answer = send(
                    &client,
                    post(&palisade.url("/api/checkout"), &browser_headers(&ip, &account), checkout_body(&payment)),
                )
                .await;
                if refused(answer.status) {
                    customers_refused.push((customer, attempt, answer.status));
                }
                if answer.headers.get("x-seen-action").is_some_and(|a| a == "challenge") {
                    customers_challenged.push((customer, attempt));
                }
                if attempt == usize::from(mistyped) {
                    assert_eq!(answer.status, 200, "customer {customer} could not pay: {}", answer.body);
                }
            }
            customer += 1;
        }
    }
    let after_30 = attack_reached_after_30 as f64 / 170.0;
    let found = detections(&palisade, 300).await;
    eprintln!(
        "distributed card test: {attack_reached} of 200 reached the processor, {attack_reached_after_30} of the 170 after the first 30 ({:.1}%); customers refused: {}, challenged: {}; {found:?}",
        after_30 * 100.0,
        customers_refused.len(),
        customers_challenged.len()
    );
    assert!(after_30 <= 0.15, "{:.1}% of the card test reached the processor after the first 30", after_30 * 100.0);
    assert_eq!(customer, 100);
    assert!(customers_refused.is_empty(), "customers were refused: {customers_refused:?}");
    assert!(customers_challenged.is_empty(), "customers were challenged: {customers_challenged:?}");
}

/// 30 cards, each tried on 5 of 50 accounts, from a new address and a
/// new browser profile (header set) every time: nothing but the card
/// ties the attempts together.
#[tokio::test]
async fn cards_tried_across_50_accounts_are_caught_by_accounts_per_card() {
    let (processor, palisade) = start().await;
    let client = http1_client();
    let mut per_card: BTreeMap<String, usize> = BTreeMap::new();
    let mut refusals = 0;
    let mut n = 0;
    for round in 0..5 {
        for c in 0..30u64 {
            let card = card_number("523456", 300 + c);
            let account = format!("acct-{}", (c as usize * 7 + round * 11) % 50);
            let ip = format!("172.{}.{}.{}", 16 + n % 16, n / 16 % 250, 1 + n % 250);
            let mut headers = browser_headers(&ip, &account);
            // A new header set (anti-detect browser profile) each time.
            headers.insert(n % 10, (format!("x-profile-{n}"), "1".into()));
            n += 1;
            let payment = Payment { card: &card, exp_month: 5, exp_year: 2031, cvc: "551", amount: "4.99" };
            let answer = send(&client, post(&palisade.url("/api/checkout"), &headers, checkout_body(&payment))).await;
            if refused(answer.status) {
                refusals += 1;
            } else {
                *per_card.entry(card).or_insert(0) += 1;
            }
        }
    }
    let found = detections(&palisade, 150).await;
    let most = per_card.values().max().copied().unwrap_or(0);
    eprintln!(
        "cards across accounts: {refusals} of 150 refused; at most {most} accounts per card reached the processor; {found:?}"
    );
    assert!(found.contains_key("pay.accounts_per_card"), "{found:?}");
    assert!(most <= 3, "a card reached the processor from {most} accounts");
    assert!(refusals >= 60, "only {refusals} of 150 refused");
    assert_eq!(processor.reached().len(), 150 - refusals);
}

/// A partner's payout integration: 1,000 card payouts from one server,
/// one in ten declined, far past every card-testing threshold; it is
/// identified by its API key and held only to its quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partners_payout_integration_is_never_stopped() {
    let (processor, palisade) = start().await;
    let client = http1_client();
    let mut refused_at = Vec::new();
    for i in 0..1000u64 {
        let card = card_number("411111", 500_000 + i);
        if i % 10 != 0 {
            processor.issue(&card);
        }
        let mut headers = tool_headers("192.0.2.50");
        headers.push(("x-api-key".into(), "payout-key-1".into()));
        let payment = Payment { card: &card, exp_month: 1, exp_year: 2032, cvc: "000", amount: "0.01" };
        let answer = send(&client, post(&palisade.url("/api/checkout"), &headers, checkout_body(&payment))).await;
        if refused(answer.status) {
            refused_at.push((i, answer.status));
        }
    }
    eprintln!("partner payouts: {} of 1000 refused", refused_at.len());
    assert!(refused_at.is_empty(), "the partner was refused: {:?}", &refused_at[..refused_at.len().min(10)]);
    assert_eq!(processor.reached().len(), 1000);
}

/// A card test from one address and from rotating ones, a few customers
/// and an "add payment method" form; returns every card number sent.
async fn attack_and_customers(palisade: &Palisade, processor: &Processor) -> Vec<String> {
    let client = http1_client();
    let mut sent = Vec::new();
    for i in 0..60u64 {
        let card = card_number("453201", 61_000 + i);
        let ip = if i < 30 { "203.0.113.9".to_string() } else { format!("198.19.{i}.4") };
        let payment = Payment { card: &card, exp_month: 11, exp_year: 2029, cvc: "7319", amount: "0.99" };
        send(&client, post(&palisade.url("/api/checkout"), &tool_headers(&ip), checkout_body(&payment))).await;
        sent.push(card);
    }
    for c in 0..10u64 {
        let card = card_number("535310", 77_000 + c);
        processor.issue(&card);
        let ip = format!("10.9.{c}.1");
        let payment = Payment { card: &card, exp_month: 4, exp_year: 2030, cvc: "8412", amount: "25.00" };
        let answer = send(
            &client,
            post(&palisade.url("/api/checkout"), &browser_headers(&ip, &format!("c{c}")), checkout_body(&payment)),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        // The same customer saves the card ("add payment method", Stripe-style form).
        let spaced = format!("{} {} {} {}", &card[..4], &card[4..8], &card[8..12], &card[12..]);
        let form = format!(
            "type=card&card%5Bnumber%5D={}&card%5Bexp_month%5D=4&card%5Bexp_year%5D=2030&card%5Bcvc%5D=8412",
            spaced.replace(' ', "+")
        );
        let headers = [
            ("content-type".to_string(), "application/x-www-form-urlencoded".to_string()),
            ("cookie".to_string(), format!("uid=c{c}")),
            ("x-forwarded-for".to_string(), ip.clone()),
        ];
        send(&client, post(&palisade.url("/api/payment_methods"), &headers, form)).await;
        sent.push(card);
    }
    sent
}

/// What must never be anywhere palisade writes: each card number whole
/// and without its BIN (the part that is never shown).
fn assert_no_card_numbers(place: &str, text: &str, cards: &[String]) {
    for card in cards {
        assert!(!text.contains(card.as_str()), "a card number is in the {place}");
        assert!(!text.contains(&card[6..]), "a card number's hidden digits are in the {place}");
    }
    // Bodies are never copied there, so neither are the expiry and CVV
    // fields (their digits alone would match hashes by chance).
    for field in ["cvc", "exp_month", "exp_year"] {
        assert!(!text.contains(field), "{field:?} is in the {place}");
    }
}

/// Every captured payment body has its card number, expiry and CVV redacted.
fn assert_capture_redacted(capture: &str, cards: &[String]) {
    let mut payments = 0;
    for line in capture.lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        let body = record["body"].as_str().unwrap_or("");
        if record["target"].as_str().is_some_and(|t| t.starts_with("/api/")) {
            payments += 1;
            assert!(body.contains("<redacted>"), "an unredacted payment body: {body}");
        }
        for card in cards {
            assert!(!body.contains(card.as_str()) && !body.contains(&card[6..]), "a card number in the capture");
        }
        for secret in ["7319", "8412", "2029", "2030"] {
            assert!(!body.contains(secret), "{secret} in a captured body: {body}");
        }
    }
    assert!(payments >= 70, "the capture recorded the payments ({payments})");
}

async fn capture_text(path: &std::path::Path, at_least: usize) -> String {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= at_least || tokio::time::Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn no_card_data_in_store_keys_decision_log_or_capture() {
    let processor = Processor::start().await;
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("capture.jsonl");
    let config = format!("{}\n[capture]\npath = \"{}\"\n", config(), capture.display());
    let palisade = Palisade::start(&config, &processor.upstream().await).await;
    let cards = attack_and_customers(&palisade, &processor).await;
    let keys = palisade.store.keys();
    assert!(keys.iter().any(|key| key.starts_with("pay:checkout:card:")), "card counters were kept");
    assert!(keys.iter().any(|key| key.starts_with("pay:payment_methods:account:")), "account counters were kept");
    assert_no_card_numbers("in-process store", &keys.join("\n"), &cards);
    let log = palisade.log_lines(80).await;
    assert!(log.len() >= 80, "the decision log has every request");
    assert_no_card_numbers("decision log", &std::fs::read_to_string(&palisade.log_path).unwrap(), &cards);
    let refused_by_card = log.iter().any(|line| line.to_string().contains("\"last4\""));
    assert!(refused_by_card || log.iter().any(|line| line.to_string().contains("pay.")), "pay.* detections logged");
    assert_capture_redacted(&capture_text(&capture, 80).await, &cards);
}

#[tokio::test]
async fn no_card_data_in_redis() {
    let redis = common::redis::RedisServer::start();
    let processor = Processor::start().await;
    let config =
        config().replace("[store]\n", &format!("[store]\nredis_url = \"{}\"\ntimeout_ms = 1000\n", redis.url()));
    let palisade = Palisade::start(&config, &processor.upstream().await).await;
    let cards = attack_and_customers(&palisade, &processor).await;
    palisade.store.flush().await;
    let keys = redis.keys();
    assert!(keys.iter().any(|key| key.contains("pay:checkout:card:")), "card counters reached Redis: {keys:?}");
    assert!(keys.iter().any(|key| key.contains(":ban")), "the card test's ban reached Redis");
    assert_no_card_numbers("Redis keys", &keys.join("\n"), &cards);
    let values = redis.dump();
    for card in &cards {
        assert!(!values.contains(card.as_str()) && !values.contains(&card[6..]), "a card number in a Redis value");
    }
    assert_no_card_numbers("decision log", &std::fs::read_to_string(&palisade.log_path).unwrap(), &cards);
}

/// The labelled card-testing capture of `replay/regression/` meets its
/// expectations: customers and the partner get through, both card tests
/// are stopped (`palisade replay` as CI runs it).
#[test]
fn the_card_testing_regression_capture_meets_its_expectations() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_palisade"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "replay",
            "-q",
            "-c",
            "replay/regression/palisade.toml",
            "--expect",
            "replay/regression/card-testing.expect.jsonl",
            "--max-false-positive-rate",
            "0",
            "--min-bot-recall",
            "0.8",
            "replay/regression/card-testing.jsonl",
        ])
        .output()
        .expect("palisade runs");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    assert!(output.status.success(), "{}\n{}", text(&output.stderr), text(&output.stdout));
}
