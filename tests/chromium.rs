//! Real headless Chromium (Debian's `chromium`; `.ci/run` installs it):
//! people sign in through palisade with the session stage on while a
//! script stuffs credentials with requests copied byte for byte from that
//! Chromium, or with a browser-like header set varied per request, from
//! hundreds of addresses. The people must all get in, none of their
//! requests refused; at most a tenth of the attack may reach the upstream,
//! and the valid pair planted in the attack list must never be accepted.
//!
//! One browser process serves every scenario; each person is a browser
//! context of its own behind a relay on its own loopback address (see
//! `common::browser`).

mod common;
use common::browser::{Browser, RawRequest, Relay, Tab, exchange};
use common::*;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::future::join_all;

const CONFIG: &str = common::trusted_config!(
    r#"[session]
enabled = true
secret = "chromium-test-secret"
"#
);

const ATTEMPTS: usize = 600;
/// Where the valid pair sits in the attack list.
const PLANTED_AT: usize = 580;

/// The form is there and the page has finished loading.
const FORM_READY: &str = "(document.readyState === 'complete' && document.querySelector('#login')) ? 'form' : ''";
/// Where a submitted form landed: welcome, denied, the form again (after a
/// challenge), or a refusal. Empty while still on the old document or on
/// the challenge page.
const AFTER_SUBMIT: &str = r#"(() => {
  if (window.__submitted || document.readyState !== 'complete' || !document.body) return '';
  const text = document.body.innerText.trim();
  if (text.startsWith('welcome')) return 'welcome';
  if (text.startsWith('denied')) return 'denied';
  if (document.querySelector('#login')) return 'form';
  if (text.includes('"error"')) return 'refused: ' + text;
  return '';
})()"#;

struct Person {
    tab: Tab,
    relay: Relay,
    user: String,
    typos: usize,
}

#[derive(Debug, PartialEq)]
enum Outcome {
    LoggedIn,
    Failed(String),
}

impl Person {
    async fn new(browser: &Browser, palisade: SocketAddr, index: usize, tag: &str) -> Person {
        let address = IpAddr::V4(Ipv4Addr::new(127, 10 + index as u8, 0, 1));
        Person {
            tab: browser.person().await,
            relay: Relay::start(palisade, address).await,
            user: format!("{tag}-person{index}@example.com"),
            typos: usize::from(index % 4 == 1),
        }
    }

    /// Open the sign-in page, type the credentials (mistyping first when
    /// this person does), and submit until signed in.
    async fn log_in(&self) -> Outcome {
        let mut typos_left = self.typos;
        for _ in 0..6 {
            self.tab.goto(&self.relay.url("/signin")).await;
            let ready = self.tab.wait_for(FORM_READY, Duration::from_secs(60)).await;
            if ready != "form" {
                let text = self.tab.eval("document.body ? document.body.innerText : ''").await;
                return Outcome::Failed(format!("no form: {text}"));
            }
            let password = if typos_left > 0 { "typo-pass" } else { "right" };
            let submit = format!(
                "(() => {{ const f = document.querySelector('#login'); f.username.value = {}; f.password.value = {}; window.__submitted = true; f.requestSubmit(); return true; }})()",
                serde_json::Value::from(self.user.as_str()),
                serde_json::Value::from(password),
            );
            self.tab.eval(&submit).await;
            let landed = self.tab.wait_for(AFTER_SUBMIT, Duration::from_secs(60)).await;
            match landed.as_str().unwrap_or("") {
                "welcome" => return Outcome::LoggedIn,
                "denied" if typos_left > 0 => typos_left -= 1,
                // Challenged on the way: solved by the browser, back at the form.
                "form" => {}
                other => return Outcome::Failed(format!("after submitting: {other:?}")),
            }
        }
        Outcome::Failed("gave up after 6 rounds".into())
    }

    /// palisade's refusals (403/429 that are not challenges) and the
    /// challenges this person was shown.
    fn refusals_and_challenges(&self) -> (Vec<u16>, usize) {
        let answers = self.relay.answers();
        let refused = answers.iter().filter(|(s, challenge)| (*s == 403 || *s == 429) && !challenge).map(|(s, _)| *s);
        (refused.collect(), answers.iter().filter(|(_, challenge)| *challenge).count())
    }
}

/// How the script attacks.
#[derive(Debug, Clone, Copy)]
enum Attack {
    /// The recorded Chromium login POST, cookie and all, a new address each.
    Copied,
    /// The recorded page load first (keeping the cookie palisade sets),
    /// then the recorded login POST with that cookie.
    PageFirst,
    /// A browser-like header set varied per request (name case, a random
    /// extra header, two headers swapped), no cookie.
    Varied(Addresses),
}

#[derive(Debug, Clone, Copy)]
enum Addresses {
    Distinct,
    OneSlash24,
    OneSlash64,
}

fn address(attack: Attack, i: usize) -> String {
    match attack {
        Attack::Varied(Addresses::OneSlash24) => format!("203.0.113.{}", 1 + i % 250),
        Attack::Varied(Addresses::OneSlash64) => format!("2001:db8:77:1::{:x}", 1 + i),
        // Every attempt from its own /24.
        _ => format!("100.{}.{}.{}", 64 + i % 50, i / 50, 1 + i % 200),
    }
}

fn attack_pair(i: usize) -> (String, String) {
    if i == PLANTED_AT {
        ("planted-victim@example.com".into(), "right".into())
    } else {
        (format!("attack-victim{i}@example.com"), format!("leaked-pass-{i}"))
    }
}

/// A small deterministic generator for the variations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The recorded login POST, varied: some names' case changed, one extra
/// header with a random name, two optional headers swapped, no cookie.
fn varied(post: &RawRequest, body: &str, forwarded_for: &str, rng: &mut Rng) -> Vec<u8> {
    let mut lines: Vec<String> = post.head.trim_end_matches("\r\n").split("\r\n").map(String::from).collect();
    let request_line = lines.remove(0);
    lines.retain(|line| !line.to_ascii_lowercase().starts_with("cookie:"));
    for line in lines.iter_mut() {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("content-length:") {
            *line = format!("Content-Length: {}", body.len());
        }
    }
    for _ in 0..2 {
        let index = (rng.next() % lines.len() as u64) as usize;
        let (name, value) = lines[index].split_once(':').unwrap();
        let name = match rng.next() % 3 {
            0 => name.to_ascii_lowercase(),
            1 => name.to_ascii_uppercase(),
            _ => name
                .chars()
                .enumerate()
                .map(|(k, c)| if k % 2 == 0 { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
                .collect(),
        };
        lines[index] = format!("{name}:{value}");
    }
    let extra = format!("X-{:x}: {:x}", rng.next() % 0xffffff, rng.next());
    let at = (rng.next() % (lines.len() as u64 + 1)) as usize;
    lines.insert(at, extra);
    let optional: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            let l = l.to_ascii_lowercase();
            l.starts_with("accept-language")
                || l.starts_with("accept-encoding")
                || l.starts_with("cache-control")
                || l.starts_with("sec-ch-ua-mobile")
                || l.starts_with("sec-ch-ua-platform")
        })
        .map(|(k, _)| k)
        .collect();
    if optional.len() >= 2 {
        let a = optional[(rng.next() % optional.len() as u64) as usize];
        let b = optional[(rng.next() % optional.len() as u64) as usize];
        lines.swap(a, b);
    }
    let mut out = request_line;
    for line in lines {
        out.push_str("\r\n");
        out.push_str(&line);
    }
    out.push_str(&format!("\r\nX-Forwarded-For: {forwarded_for}\r\n\r\n{body}"));
    out.into_bytes()
}

/// The whole attack, six requests at a time.
async fn run_attack(attack: Attack, palisade: SocketAddr, post: &RawRequest, page: &RawRequest) {
    let next = AtomicUsize::new(0);
    let worker = |seed: u64| {
        let next = &next;
        async move {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= ATTEMPTS {
                    return;
                }
                let ip = address(attack, i);
                let (user, password) = attack_pair(i);
                let body = format!("username={}&password={password}", user.replace('@', "%40"));
                let bytes = match attack {
                    Attack::Copied => post.copy_with(&body, None, &ip),
                    Attack::PageFirst => {
                        let (_, headers, _) = exchange(palisade, &page.copy_with("", None, &ip)).await;
                        let set = headers.iter().find(|(n, _)| n == "set-cookie").map(|(_, v)| v.clone());
                        let cookie = set.map(|v| v.split(';').next().unwrap().to_string());
                        post.copy_with(&body, cookie.as_deref(), &ip)
                    }
                    Attack::Varied(_) => varied(post, &body, &ip, &mut rng),
                };
                exchange(palisade, &bytes).await;
            }
        }
    };
    join_all((0..6).map(worker)).await;
}

/// What one scenario measured.
#[derive(Debug)]
struct Numbers {
    people: usize,
    logged_in: usize,
    refused: Vec<(String, Vec<u16>)>,
    people_challenged: usize,
    attack_reached: usize,
    planted_reached: bool,
}

async fn scenario(browser: &Browser, attack: Attack, people: usize, tag: &str) -> Numbers {
    let upstream = Upstream::start().await;
    let palisade = Palisade::start(CONFIG, &upstream).await;
    let mut persons = Vec::new();
    for index in 0..people {
        persons.push(Person::new(browser, palisade.addr(), index, tag).await);
    }
    // The site's ordinary traffic first: half the people sign in.
    let (before, during) = persons.split_at(people / 2);
    let mut outcomes = join_all(before.iter().map(Person::log_in)).await;
    // The script copies what that Chromium sent.
    let posts = before[0].relay.requests("POST /login ");
    let post = posts.last().expect("the browser's login POST went through the relay").clone();
    let page = before[0].relay.requests("GET /signin ").first().expect("the page load").clone();
    assert!(post.header("cookie").is_some_and(|c| c.contains("__palisade_session=")), "{}", post.head);
    // Then the attack, with the other half signing in meanwhile.
    let (_, during_outcomes) =
        tokio::join!(run_attack(attack, palisade.addr(), &post, &page), join_all(during.iter().map(Person::log_in)));
    outcomes.extend(during_outcomes);

    let seen = upstream.seen();
    let body = |s: &Seen| String::from_utf8_lossy(&s.body).into_owned();
    let numbers = Numbers {
        people,
        logged_in: outcomes.iter().filter(|o| **o == Outcome::LoggedIn).count(),
        refused: persons
            .iter()
            .map(|p| (p.user.clone(), p.refusals_and_challenges().0))
            .filter(|(_, refused)| !refused.is_empty())
            .collect(),
        people_challenged: persons.iter().map(|p| p.refusals_and_challenges().1).sum(),
        attack_reached: seen.iter().filter(|s| body(s).contains("victim")).count(),
        planted_reached: seen.iter().any(|s| body(s).contains("planted-victim")),
    };
    eprintln!(
        "{tag}: {} of {} people signed in, {} refusals, {} challenges shown to people; {} of {ATTEMPTS} attack attempts reached the upstream; valid pair accepted: {}",
        numbers.logged_in,
        numbers.people,
        numbers.refused.len(),
        numbers.people_challenged,
        numbers.attack_reached,
        numbers.planted_reached
    );
    for (person, outcome) in persons.iter().zip(&outcomes) {
        assert_eq!(*outcome, Outcome::LoggedIn, "{tag}: {} could not sign in", person.user);
    }
    numbers
}

fn assert_held(numbers: &Numbers, tag: &str) {
    assert_eq!(numbers.logged_in, numbers.people, "{tag}: {numbers:?}");
    assert!(numbers.refused.is_empty(), "{tag}: people were refused: {numbers:?}");
    assert!(numbers.attack_reached <= ATTEMPTS / 10, "{tag}: {} attempts reached the upstream", numbers.attack_reached);
    assert!(!numbers.planted_reached, "{tag}: the valid pair reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_in_chromium_sign_in_while_copied_and_varied_requests_stuff() {
    let browser = Browser::launch().await;
    // 1. 20 people; 600 copies of their Chromium's login POST, cookie and all.
    let copied = scenario(&browser, Attack::Copied, 20, "copied").await;
    assert_held(&copied, "copied");
    // 2. The same, the script loading the page first for a fresh cookie.
    let page_first = scenario(&browser, Attack::PageFirst, 20, "page-first").await;
    assert_held(&page_first, "page-first");
    // 3. Browser-like headers varied per request: distinct addresses, one /24, one IPv6 /64.
    for (addresses, tag) in
        [(Addresses::Distinct, "varied"), (Addresses::OneSlash24, "varied-24"), (Addresses::OneSlash64, "varied-64")]
    {
        let numbers = scenario(&browser, Attack::Varied(addresses), 6, tag).await;
        assert_held(&numbers, tag);
    }
}
