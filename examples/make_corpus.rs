//! Builds the labelled training corpus for palisade's shipped model:
//! generated traffic from real header sets, deterministic for a seed.
//!
//! ```text
//! cargo run --release --example make_corpus -- --seed 1 --start 1795917000 \
//!     --out models/corpus/generated.jsonl.gz
//! ```
//!
//! Every request is written in capture format v1 with `label` (`human`,
//! `bot` or `partner`) and `source` (what produced it), so `palisade
//! train` can hold sources out whole. The header sets are those real
//! clients send, in their wire order: Chromium's as recorded in
//! `models/corpus/captures/chromium-156-human-login.jsonl`, Firefox's and
//! Safari's navigation, sub-resource and form requests, and the mobile-app
//! libraries (OkHttp, Alamofire on CFNetwork, Dart's `dart:io`), partner
//! integrations, attack tools and scanners as they send them. User agents
//! come from the isbot fixtures (`tests/fixtures/user-agents`, Unlicense)
//! as well as current browser versions. What the login app answers (401 on
//! a wrong password) follows each actor: people mostly get their password
//! right, stuffing mostly fails.
//!
//! The actors: people on Chrome (desktop and Android), Edge, Firefox and
//! Safari (macOS and iOS) loading pages, sub-resources and logging in
//! (sometimes after a typo), many behind carrier NAT; mobile apps'
//! users; three partner integrations; and bots — credential stuffing
//! with python-requests under browser user agents from residential
//! proxies, Go net/http and axios stuffing, the mobile app's login API
//! replayed with OkHttp's header set, stuffing with a full browser
//! header set but no page load, headless Chrome, hydra, path scanners
//! (nikto, gobuster, nuclei, wpscan) and crawlers.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};

use palisade::capture::record::CaptureRecord;
use palisade::model::train::SplitMix64;

const HOST: &str = "shop.example";

struct Args {
    seed: u64,
    start: f64,
    out: String,
    /// Scale of every actor's numbers (1.0 = the training corpus).
    scale: f64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { seed: 1, start: 1_795_917_000.0, out: "-".into(), scale: 1.0 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--seed" => args.seed = value.parse().map_err(|_| "bad --seed")?,
            "--start" => args.start = value.parse().map_err(|_| "bad --start")?,
            "--out" => args.out = value,
            "--scale" => args.scale = value.parse().map_err(|_| "bad --scale")?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(args)
}

// === impl Rng ===

struct Rng(SplitMix64);

impl Rng {
    fn f(&mut self) -> f64 {
        self.0.next_f64()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.0.next_u64() % n.max(1) as u64) as usize
    }
    fn range(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.f()
    }
    fn chance(&mut self, p: f64) -> bool {
        self.f() < p
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

// === impl user agents ===

/// `Family:` then `  - <user agent>` lines.
fn read_fixture(path: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let mut family = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(ua) = line.trim_start().strip_prefix("- ") {
            let ua = ua.trim().trim_matches('"').to_string();
            out.push((family.clone(), ua));
        } else if !line.starts_with(' ') && line.trim_end().ends_with(':') {
            family = line.trim_end().trim_end_matches(':').trim_matches('"').to_string();
        }
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Browser {
    ChromeDesktop,
    ChromeAndroid,
    Edge,
    Firefox,
    SafariMac,
    SafariIos,
}

impl Browser {
    fn source(self) -> &'static str {
        match self {
            Browser::ChromeDesktop => "Chrome desktop (people)",
            Browser::ChromeAndroid => "Chrome Android (people)",
            Browser::Edge => "Edge desktop (people)",
            Browser::Firefox => "Firefox desktop (people)",
            Browser::SafariMac => "Safari macOS (people)",
            Browser::SafariIos => "Safari iOS (people)",
        }
    }
}

struct Agents {
    browsers: Vec<String>,
    crawlers: Vec<String>,
}

/// A current user agent of a browser, now and then one from the fixtures
/// of the same family.
fn browser_ua(rng: &mut Rng, browser: Browser, agents: &Agents) -> (String, u32) {
    if rng.chance(0.08) {
        let wanted: &[&str] = match browser {
            Browser::ChromeDesktop | Browser::ChromeAndroid => &["Chrome/"],
            Browser::Edge => &["Edg/"],
            Browser::Firefox => &["Firefox/"],
            Browser::SafariMac | Browser::SafariIos => &["Version/"],
        };
        let candidates: Vec<&String> = agents
            .browsers
            .iter()
            .filter(|ua| ua.starts_with("Mozilla/5.0 (") && wanted.iter().all(|w| ua.contains(w)))
            .filter(|ua| browser != Browser::SafariMac && browser != Browser::SafariIos || !ua.contains("Chrome"))
            .filter(|ua| browser != Browser::ChromeDesktop || !ua.contains("Edg"))
            .collect();
        if !candidates.is_empty() {
            let ua = (*rng.pick(&candidates)).clone();
            let major = version_after(&ua, wanted[0]).unwrap_or(100);
            return (ua, major);
        }
    }
    match browser {
        Browser::ChromeDesktop => {
            let major = 120 + rng.below(37) as u32;
            let platform =
                rng.pick(&["Windows NT 10.0; Win64; x64", "Macintosh; Intel Mac OS X 10_15_7", "X11; Linux x86_64"]);
            (
                format!(
                    "Mozilla/5.0 ({platform}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{major}.0.0.0 Safari/537.36"
                ),
                major,
            )
        }
        Browser::ChromeAndroid => {
            let major = 120 + rng.below(37) as u32;
            (
                format!(
                    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{major}.0.0.0 Mobile Safari/537.36"
                ),
                major,
            )
        }
        Browser::Edge => {
            let major = 120 + rng.below(37) as u32;
            (
                format!(
                    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{major}.0.0.0 Safari/537.36 Edg/{major}.0.0.0"
                ),
                major,
            )
        }
        Browser::Firefox => {
            let major = 115 + rng.below(25) as u32;
            let platform = rng.pick(&[
                "Windows NT 10.0; Win64; x64",
                "Macintosh; Intel Mac OS X 10.15",
                "X11; Linux x86_64",
                "X11; Ubuntu; Linux x86_64",
            ]);
            (format!("Mozilla/5.0 ({platform}; rv:{major}.0) Gecko/20100101 Firefox/{major}.0"), major)
        }
        Browser::SafariMac => {
            let major = 16 + rng.below(3) as u32;
            let minor = rng.below(6);
            (
                format!(
                    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{major}.{minor} Safari/605.1.15"
                ),
                major,
            )
        }
        Browser::SafariIos => {
            let major = 16 + rng.below(3) as u32;
            let minor = rng.below(6);
            (
                format!(
                    "Mozilla/5.0 (iPhone; CPU iPhone OS {major}_{minor} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{major}.{minor} Mobile/15E148 Safari/604.1"
                ),
                major,
            )
        }
    }
}

fn version_after(ua: &str, marker: &str) -> Option<u32> {
    let rest = &ua[ua.find(marker)? + marker.len()..];
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

// === impl header sets ===

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A page navigation.
    Document,
    Style,
    Script,
    Image,
    /// The login form's POST.
    Form,
}

struct BrowserRequest<'a> {
    kind: Kind,
    referer: Option<&'a str>,
    cookie: Option<&'a str>,
    content_length: usize,
    same_origin: bool,
}

fn h(name: &str, value: impl Into<String>) -> (String, String) {
    (name.to_string(), value.into())
}

/// Chromium's header set (the recorded Chromium 156 order), for a UA of
/// version `major`: client hints from 89, Sec-Fetch-* from 76.
fn chromium_headers(
    ua: &str,
    major: u32,
    mobile: bool,
    edge: bool,
    language: &str,
    r: &BrowserRequest<'_>,
) -> Vec<(String, String)> {
    let brand = if edge { "Microsoft Edge" } else { "Google Chrome" };
    let ch_ua = format!("\"Chromium\";v=\"{major}\", \"Not:A-Brand\";v=\"24\", \"{brand}\";v=\"{major}\"");
    let platform = if mobile {
        "\"Android\""
    } else if ua.contains("Windows") {
        "\"Windows\""
    } else if ua.contains("Mac") {
        "\"macOS\""
    } else {
        "\"Linux\""
    };
    let hints = major >= 89;
    let fetch = major >= 76;
    let site = if r.same_origin { "same-origin" } else { "none" };
    let mut out = vec![h("Host", HOST), h("Connection", "keep-alive")];
    let push_hints = |out: &mut Vec<(String, String)>| {
        if hints {
            out.push(h("sec-ch-ua", ch_ua.clone()));
            out.push(h("sec-ch-ua-mobile", if mobile { "?1" } else { "?0" }));
            out.push(h("sec-ch-ua-platform", platform));
        }
    };
    match r.kind {
        Kind::Document => {
            push_hints(&mut out);
            out.push(h("Upgrade-Insecure-Requests", "1"));
            out.push(h("User-Agent", ua));
            out.push(h("Accept-Language", language));
            out.push(h("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"));
            if fetch {
                out.push(h("Sec-Fetch-Site", site));
                out.push(h("Sec-Fetch-Mode", "navigate"));
                out.push(h("Sec-Fetch-User", "?1"));
                out.push(h("Sec-Fetch-Dest", "document"));
            }
            if let Some(referer) = r.referer {
                out.push(h("Referer", referer));
            }
            out.push(h("Accept-Encoding", "gzip, deflate, br, zstd"));
        }
        Kind::Style | Kind::Script | Kind::Image => {
            if hints {
                out.push(h("sec-ch-ua-platform", platform));
            }
            out.push(h("User-Agent", ua));
            if hints {
                out.push(h("sec-ch-ua", ch_ua.clone()));
            }
            out.push(h("Accept-Language", language));
            if hints {
                out.push(h("sec-ch-ua-mobile", if mobile { "?1" } else { "?0" }));
            }
            let (accept, dest) = match r.kind {
                Kind::Style => ("text/css,*/*;q=0.1", "style"),
                Kind::Script => ("*/*", "script"),
                _ => ("image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8", "image"),
            };
            out.push(h("Accept", accept));
            if fetch {
                out.push(h("Sec-Fetch-Site", "same-origin"));
                out.push(h("Sec-Fetch-Mode", "no-cors"));
                out.push(h("Sec-Fetch-Dest", dest));
            }
            if let Some(referer) = r.referer {
                out.push(h("Referer", referer));
            }
            out.push(h("Accept-Encoding", "gzip, deflate, br, zstd"));
        }
        Kind::Form => {
            out.push(h("Content-Length", r.content_length.to_string()));
            out.push(h("Cache-Control", "max-age=0"));
            push_hints(&mut out);
            out.push(h("Upgrade-Insecure-Requests", "1"));
            out.push(h("Content-Type", "application/x-www-form-urlencoded"));
            out.push(h("User-Agent", ua));
            out.push(h("Origin", format!("https://{HOST}")));
            out.push(h("Accept-Language", language));
            out.push(h("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"));
            if fetch {
                out.push(h("Sec-Fetch-Site", "same-origin"));
                out.push(h("Sec-Fetch-Mode", "navigate"));
                out.push(h("Sec-Fetch-User", "?1"));
                out.push(h("Sec-Fetch-Dest", "document"));
            }
            if let Some(referer) = r.referer {
                out.push(h("Referer", referer));
            }
            out.push(h("Accept-Encoding", "gzip, deflate, br, zstd"));
        }
    }
    if let Some(cookie) = r.cookie {
        out.push(h("Cookie", cookie));
    }
    out
}

/// Firefox's header set (Sec-Fetch-* from 90, Priority from 120).
fn firefox_headers(ua: &str, major: u32, language: &str, r: &BrowserRequest<'_>) -> Vec<(String, String)> {
    let mut out = vec![h("Host", HOST), h("User-Agent", ua)];
    let accept = match r.kind {
        Kind::Document | Kind::Form => "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        Kind::Style => "text/css,*/*;q=0.1",
        Kind::Script => "*/*",
        Kind::Image => "image/avif,image/webp,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5",
    };
    out.push(h("Accept", accept));
    out.push(h("Accept-Language", language));
    out.push(h("Accept-Encoding", "gzip, deflate, br, zstd"));
    if r.kind == Kind::Form {
        out.push(h("Content-Type", "application/x-www-form-urlencoded"));
        out.push(h("Content-Length", r.content_length.to_string()));
        out.push(h("Origin", format!("https://{HOST}")));
    }
    out.push(h("Connection", "keep-alive"));
    if let Some(referer) = r.referer {
        out.push(h("Referer", referer));
    }
    if let Some(cookie) = r.cookie {
        out.push(h("Cookie", cookie));
    }
    let navigation = matches!(r.kind, Kind::Document | Kind::Form);
    if navigation {
        out.push(h("Upgrade-Insecure-Requests", "1"));
    }
    if major >= 90 {
        let (dest, mode) = match r.kind {
            Kind::Document | Kind::Form => ("document", "navigate"),
            Kind::Style => ("style", "no-cors"),
            Kind::Script => ("script", "no-cors"),
            Kind::Image => ("image", "no-cors"),
        };
        out.push(h("Sec-Fetch-Dest", dest));
        out.push(h("Sec-Fetch-Mode", mode));
        out.push(h("Sec-Fetch-Site", if r.same_origin || !navigation { "same-origin" } else { "none" }));
        if navigation {
            out.push(h("Sec-Fetch-User", "?1"));
        }
    }
    if major >= 120 {
        out.push(h("Priority", if navigation { "u=0, i" } else { "u=2" }));
    }
    out
}

/// Safari's header set (Sec-Fetch-* from 16.4; Accept before User-Agent).
fn safari_headers(ua: &str, major: u32, language: &str, r: &BrowserRequest<'_>) -> Vec<(String, String)> {
    let fetch = major >= 17 || (major == 16 && ua.contains("16.4"));
    let navigation = matches!(r.kind, Kind::Document | Kind::Form);
    let mut out = vec![h("Host", HOST)];
    if r.kind == Kind::Form {
        out.push(h("Content-Type", "application/x-www-form-urlencoded"));
        out.push(h("Origin", format!("https://{HOST}")));
    }
    let accept = match r.kind {
        Kind::Document | Kind::Form => "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        Kind::Style => "text/css,*/*;q=0.1",
        Kind::Script => "*/*",
        Kind::Image => {
            "image/webp,image/avif,image/jxl,image/heic,image/heic-sequence,video/*;q=0.8,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5"
        }
    };
    out.push(h("Accept", accept));
    if fetch {
        out.push(h("Sec-Fetch-Site", if r.same_origin || !navigation { "same-origin" } else { "none" }));
    }
    if let Some(cookie) = r.cookie {
        out.push(h("Cookie", cookie));
    }
    if fetch {
        out.push(h(
            "Sec-Fetch-Dest",
            match r.kind {
                Kind::Document | Kind::Form => "document",
                Kind::Style => "style",
                Kind::Script => "script",
                Kind::Image => "image",
            },
        ));
    }
    out.push(h("Accept-Language", language));
    if fetch {
        out.push(h("Sec-Fetch-Mode", if navigation { "navigate" } else { "no-cors" }));
    }
    out.push(h("User-Agent", ua));
    if let Some(referer) = r.referer {
        out.push(h("Referer", referer));
    }
    if r.kind == Kind::Form {
        out.push(h("Content-Length", r.content_length.to_string()));
    }
    out.push(h("Accept-Encoding", "gzip, deflate, br"));
    out.push(h("Connection", "keep-alive"));
    out
}

fn browser_headers(
    browser: Browser,
    ua: &str,
    major: u32,
    language: &str,
    r: &BrowserRequest<'_>,
) -> Vec<(String, String)> {
    match browser {
        Browser::ChromeDesktop => chromium_headers(ua, major, false, false, language, r),
        Browser::ChromeAndroid => chromium_headers(ua, major, true, false, language, r),
        Browser::Edge => chromium_headers(ua, major, false, true, language, r),
        Browser::Firefox => firefox_headers(ua, major, language, r),
        Browser::SafariMac | Browser::SafariIos => safari_headers(ua, major, language, r),
    }
}

const LANGUAGES: &[&str] = &[
    "en-US,en;q=0.9",
    "en-GB,en;q=0.9",
    "de-DE,de;q=0.9,en;q=0.8",
    "fr-FR,fr;q=0.9,en-US;q=0.8,en;q=0.7",
    "es-ES,es;q=0.9",
    "en-US",
    "nl-NL,nl;q=0.9,en-US;q=0.8,en;q=0.7",
    "pt-BR,pt;q=0.9,en-US;q=0.8,en;q=0.7",
];

/// Firefox writes languages with q=0.5 steps.
fn firefox_language(language: &str) -> String {
    language.replace("q=0.9", "q=0.8").replace(";q=0.8,en;", ";q=0.5,en;")
}

// === impl the corpus ===

/// Headers of a bot's request (`usize::MAX`: the login page's GET, else
/// the form's POST), and whether the body is JSON.
type HeaderMaker<'a> = dyn Fn(&mut Rng, usize) -> (Vec<(String, String)>, bool) + 'a;

struct Corpus {
    records: Vec<CaptureRecord>,
    rng: Rng,
    start: f64,
    duration: f64,
    scale: f64,
}

fn record(
    ts: f64,
    ip: IpAddr,
    method: &str,
    target: &str,
    headers: Vec<(String, String)>,
    label: &str,
    source: &str,
) -> CaptureRecord {
    let mut r = CaptureRecord::new((ts * 1e4).round() / 1e4, ip, method, target, headers);
    r.label = Some(label.into());
    r.source = Some(source.into());
    r
}

fn form_body(username: &str) -> String {
    format!("username={}&password=<redacted>", username.replace('@', "%40"))
}

fn json_body(username: &str) -> String {
    format!("{{\"username\":\"{username}\",\"password\":\"<redacted>\"}}")
}

impl Corpus {
    fn count(&self, n: usize) -> usize {
        ((n as f64) * self.scale).round().max(1.0) as usize
    }

    fn at(&mut self) -> f64 {
        self.start + self.rng.range(0.0, self.duration)
    }

    /// A residential or mobile address; `cgnat` draws from a few shared
    /// carrier-NAT addresses many people sit behind.
    fn person_ip(&mut self, cgnat: bool) -> IpAddr {
        if cgnat {
            IpAddr::V4(Ipv4Addr::new(100, 64, self.rng.below(4) as u8, 1 + self.rng.below(6) as u8))
        } else {
            IpAddr::V4(Ipv4Addr::new(
                *self.rng.pick(&[24u8, 73, 81, 86, 92, 109, 176, 188]),
                self.rng.below(256) as u8,
                self.rng.below(256) as u8,
                1 + self.rng.below(254) as u8,
            ))
        }
    }

    /// A person on a browser: the home page and its sub-resources, the
    /// login page, the form (a typo now and then), the account, a few
    /// more pages.
    fn browser_session(&mut self, browser: Browser, agents: &Agents, user: usize) {
        let cgnat =
            self.rng.chance(if matches!(browser, Browser::ChromeAndroid | Browser::SafariIos) { 0.5 } else { 0.1 });
        let ip = self.person_ip(cgnat);
        let (ua, major) = browser_ua(&mut self.rng, browser, agents);
        let language = self.rng.pick(LANGUAGES).to_string();
        let language = if browser == Browser::Firefox { firefox_language(&language) } else { language };
        let username = format!("user{user}@mail.example");
        let source = browser.source();
        let mut t = self.at();
        let mut cookie: Option<String> =
            if self.rng.chance(0.4) { Some(format!("_ga=GA1.1.{}", self.rng.below(1 << 30))) } else { None };
        let home = format!("https://{HOST}/");
        let login_page = format!("https://{HOST}/login");
        let page = |this: &mut Corpus,
                    t: &mut f64,
                    target: &str,
                    referer: Option<&str>,
                    cookie: &Option<String>,
                    same_origin: bool| {
            let r = BrowserRequest {
                kind: Kind::Document,
                referer,
                cookie: cookie.as_deref(),
                content_length: 0,
                same_origin,
            };
            let headers = browser_headers(browser, &ua, major, &language, &r);
            let mut rec = record(*t, ip, "GET", target, headers, "human", source);
            rec.status = Some(200);
            this.records.push(rec);
            // Sub-resources, unless cached.
            if this.rng.chance(0.7) {
                let referer = format!("https://{HOST}{target}");
                for (path, kind) in [
                    ("/static/app.css", Kind::Style),
                    ("/static/app.js", Kind::Script),
                    ("/static/logo.png", Kind::Image),
                ] {
                    if this.rng.chance(0.85) {
                        *t += this.rng.range(0.02, 0.3);
                        let r = BrowserRequest {
                            kind,
                            referer: Some(&referer),
                            cookie: cookie.as_deref(),
                            content_length: 0,
                            same_origin: true,
                        };
                        let headers = browser_headers(browser, &ua, major, &language, &r);
                        let mut rec = record(*t, ip, "GET", path, headers, "human", source);
                        rec.status = Some(200);
                        this.records.push(rec);
                    }
                }
            }
        };
        let direct_to_login = self.rng.chance(0.3);
        if !direct_to_login {
            page(self, &mut t, "/", None, &cookie, false);
            t += self.rng.range(2.0, 30.0);
        }
        page(self, &mut t, "/login", if direct_to_login { None } else { Some(&home) }, &cookie, !direct_to_login);
        let attempts = if self.rng.chance(0.12) { 2 + usize::from(self.rng.chance(0.3)) } else { 1 };
        for attempt in 0..attempts {
            t += self.rng.range(4.0, 25.0);
            let body = form_body(&username);
            let r = BrowserRequest {
                kind: Kind::Form,
                referer: Some(&login_page),
                cookie: cookie.as_deref(),
                content_length: body.len(),
                same_origin: true,
            };
            let headers = browser_headers(browser, &ua, major, &language, &r);
            let mut rec = record(t, ip, "POST", "/login", headers, "human", source);
            rec.body = Some(body);
            let success = attempt + 1 == attempts && self.rng.chance(0.95);
            rec.status = Some(if success { 302 } else { 401 });
            self.records.push(rec);
            if !success && attempt + 1 < attempts {
                t += self.rng.range(0.2, 1.0);
                page(self, &mut t, "/login", Some(&login_page), &cookie, true);
            }
        }
        cookie = Some(format!("session=s{}", self.rng.below(1 << 40)));
        t += self.rng.range(0.1, 0.5);
        page(self, &mut t, "/account", Some(&login_page), &cookie, true);
        for _ in 0..self.rng.below(4) {
            t += self.rng.range(3.0, 60.0);
            let target = format!("/item?id={}", 1 + self.rng.below(500));
            page(self, &mut t, &target, Some(&home), &cookie, true);
        }
    }

    /// A mobile app's user: JSON login, then API calls with a bearer token.
    fn app_session(&mut self, library: &str, user: usize) {
        let cgnat = self.rng.chance(0.6);
        let ip = self.person_ip(cgnat);
        let username = format!("user{user}@mail.example");
        let mut t = self.at();
        let (source, ua) = match library {
            "okhttp" => ("Android app on OkHttp (people)", format!("okhttp/4.{}.0", 9 + self.rng.below(4))),
            "alamofire" => (
                "iOS app on Alamofire (people)",
                format!(
                    "ShopApp/3.{} (com.example.shop; build:{}; iOS 17.{}.0) Alamofire/5.9.1",
                    self.rng.below(5),
                    400 + self.rng.below(30),
                    self.rng.below(5)
                ),
            ),
            _ => ("Flutter app on dart:io (people)", format!("Dart/3.{} (dart:io)", 2 + self.rng.below(3))),
        };
        let headers = |this: &mut Corpus, content: Option<usize>, token: Option<&str>| -> Vec<(String, String)> {
            match library {
                "okhttp" => {
                    let mut out = Vec::new();
                    if let Some(token) = token {
                        out.push(h("Authorization", format!("Bearer {token}")));
                    }
                    out.push(h("X-App-Version", "5.12.0"));
                    if let Some(len) = content {
                        out.push(h("Content-Type", "application/json; charset=UTF-8"));
                        out.push(h("Content-Length", len.to_string()));
                    }
                    out.extend([
                        h("Host", HOST),
                        h("Connection", "Keep-Alive"),
                        h("Accept-Encoding", "gzip"),
                        h("User-Agent", ua.clone()),
                    ]);
                    out
                }
                "alamofire" => {
                    let mut out = vec![h("Host", HOST)];
                    if content.is_some() {
                        out.push(h("Content-Type", "application/json"));
                    }
                    out.push(h("Accept", "*/*"));
                    if let Some(token) = token {
                        out.push(h("Authorization", format!("Bearer {token}")));
                    }
                    out.push(h("Accept-Encoding", "br;q=1.0, gzip;q=0.9, deflate;q=0.8"));
                    out.push(h(
                        "Accept-Language",
                        if this.rng.chance(0.7) { "en-US;q=1.0" } else { "de-DE;q=1.0, en-US;q=0.9" },
                    ));
                    if let Some(len) = content {
                        out.push(h("Content-Length", len.to_string()));
                    }
                    out.push(h("User-Agent", ua.clone()));
                    out.push(h("Connection", "keep-alive"));
                    out
                }
                _ => {
                    // dart:io sends lowercase names.
                    let mut out = vec![h("user-agent", ua.clone())];
                    if content.is_some() {
                        out.push(h("content-type", "application/json; charset=utf-8"));
                    }
                    out.push(h("accept-encoding", "gzip"));
                    if let Some(len) = content {
                        out.push(h("content-length", len.to_string()));
                    }
                    if let Some(token) = token {
                        out.push(h("authorization", format!("Bearer {token}")));
                    }
                    out.push(h("host", HOST));
                    out
                }
            }
        };
        let attempts = if self.rng.chance(0.1) { 2 } else { 1 };
        for attempt in 0..attempts {
            let body = json_body(&username);
            let hs = headers(self, Some(body.len()), None);
            let mut rec = record(t, ip, "POST", "/login", hs, "human", source);
            rec.body = Some(body);
            let success = attempt + 1 == attempts && self.rng.chance(0.97);
            rec.status = Some(if success { 200 } else { 401 });
            self.records.push(rec);
            t += self.rng.range(3.0, 15.0);
        }
        let token = format!("eyJ{}", self.rng.below(1 << 40));
        for _ in 0..1 + self.rng.below(6) {
            t += self.rng.range(0.3, 40.0);
            let target =
                *self.rng.pick(&["/api/feed", "/api/cart", "/api/profile", "/api/orders", "/api/items?page=2"]);
            let hs = headers(self, None, Some(&token));
            let mut rec = record(t, ip, "GET", target, hs, "human", source);
            rec.status = Some(200);
            self.records.push(rec);
        }
    }

    /// A partner's integration: steady logins of its service accounts and API calls.
    fn partner(&mut self, name: &str, requests: usize) {
        let ip = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 100 + self.rng.below(50) as u8));
        let (source, ua) = match name {
            "go" => ("partner integration, Go net/http", "Go-http-client/2.0".to_string()),
            "java" => ("partner integration, Java HttpClient", "Java-http-client/17.0.9".to_string()),
            _ => ("partner integration, Node undici", "undici".to_string()),
        };
        let key = format!("pk_live_{name}_{}", self.rng.below(1 << 30));
        let mut t = self.at();
        for i in 0..requests {
            let login = i % 5 == 0;
            let mut hs = match name {
                "go" => vec![h("Host", HOST), h("User-Agent", ua.clone())],
                "java" => vec![
                    h("Connection", "Upgrade, HTTP2-Settings"),
                    h("Host", HOST),
                    h("HTTP2-Settings", "AAEAAEAAAAIAAAABAAMAAABkAAQBAAAAAAUAAEAA"),
                    h("Upgrade", "h2c"),
                    h("User-Agent", ua.clone()),
                ],
                _ => vec![
                    h("host", HOST),
                    h("connection", "keep-alive"),
                    h("accept", "*/*"),
                    h("accept-language", "*"),
                    h("sec-fetch-mode", "cors"),
                    h("user-agent", ua.clone()),
                ],
            };
            hs.push(h("X-API-Key", key.clone()));
            let method = if login { "POST" } else { "GET" };
            let target = if login { "/login".to_string() } else { format!("/api/orders?since={}", i * 17) };
            let body = login.then(|| json_body(&format!("svc-{name}-{}@partner.example", i % 3)));
            if let Some(body) = &body {
                hs.push(h("Content-Type", "application/json"));
                hs.push(h("Content-Length", body.len().to_string()));
            }
            if name == "go" {
                hs.push(h("Accept-Encoding", "gzip"));
            }
            let mut rec = record(t, ip, method, &target, hs, "partner", source);
            rec.body = body;
            rec.status = Some(200);
            self.records.push(rec);
            t += self.rng.range(0.5, 12.0);
        }
    }

    /// Credential stuffing: each address tries a few usernames of a combo
    /// list; about 1 in 100 works. `per_ip` attempts per address.
    #[allow(clippy::too_many_arguments)]
    fn stuffing(
        &mut self,
        source: &str,
        attempts: usize,
        per_ip: usize,
        gap: (f64, f64),
        page_first: bool,
        headers: &HeaderMaker<'_>,
    ) {
        let mut t = self.at().min(self.start + self.duration * 0.7);
        let mut ip = self.person_ip(false);
        for i in 0..attempts {
            if i % per_ip.max(1) == 0 {
                ip = self.person_ip(false);
            }
            let username = format!("victim{}@mail.example", self.rng.below(1_000_000));
            let (mut hs, json) = headers(&mut self.rng, 0);
            if page_first {
                let (get_headers, _) = headers(&mut self.rng, usize::MAX);
                let mut rec = record(t, ip, "GET", "/login", get_headers, "bot", source);
                rec.status = Some(200);
                self.records.push(rec);
                t += self.rng.range(0.05, 0.6);
            }
            let body = if json { json_body(&username) } else { form_body(&username) };
            for (name, value) in hs.iter_mut() {
                if name.eq_ignore_ascii_case("content-length") {
                    *value = body.len().to_string();
                }
            }
            let mut rec = record(t, ip, "POST", "/login", hs, "bot", source);
            rec.body = Some(body);
            rec.status = Some(if self.rng.chance(0.01) { 200 } else { 401 });
            self.records.push(rec);
            t += self.rng.range(gap.0, gap.1);
        }
    }

    /// A scanner: many paths from one address, mostly 404.
    fn scanner(&mut self, source: &str, ua: &str, requests: usize, extra: &[(&str, &str)]) {
        let ip = IpAddr::V4(Ipv4Addr::new(45, 155, self.rng.below(256) as u8, 1 + self.rng.below(254) as u8));
        let mut t = self.at();
        const PATHS: &[&str] = &[
            "/admin",
            "/.env",
            "/wp-login.php",
            "/phpmyadmin/",
            "/.git/config",
            "/backup.zip",
            "/config.php",
            "/server-status",
            "/api/v1/users",
            "/login.php",
            "/xmlrpc.php",
            "/actuator/health",
            "/cgi-bin/test.cgi",
            "/search?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
            "/item?id=1%27%20OR%20%271%27%3D%271",
            "/../../etc/passwd",
            "/robots.txt",
            "/sitemap.xml",
            "/console",
            "/debug",
        ];
        for i in 0..requests {
            let path = if let Some(first) = PATHS.get(i) {
                first.to_string()
            } else {
                format!(
                    "{}{}",
                    self.rng.pick(PATHS),
                    if self.rng.chance(0.5) { format!("/{}", self.rng.below(9999)) } else { String::new() }
                )
            };
            let mut hs = vec![h("Host", HOST), h("User-Agent", ua)];
            for (n, v) in extra {
                hs.push(h(n, *v));
            }
            let mut rec = record(t, ip, "GET", &path, hs, "bot", source);
            rec.status = Some(if self.rng.chance(0.9) { 404 } else { 200 });
            self.records.push(rec);
            t += self.rng.range(0.01, 0.3);
        }
    }
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("make_corpus: {error}");
            std::process::exit(2);
        }
    };
    let fixture = |name: &str| format!("{}/tests/fixtures/user-agents/{name}", env!("CARGO_MANIFEST_DIR"));
    let agents = Agents {
        browsers: read_fixture(&fixture("browsers.yml"))
            .into_iter()
            .filter(|(f, _)| !f.starts_with("ZZZ"))
            .map(|(_, ua)| ua)
            .collect(),
        crawlers: read_fixture(&fixture("crawlers.yml")).into_iter().map(|(_, ua)| ua).collect(),
    };
    let mut corpus = Corpus {
        records: Vec::new(),
        rng: Rng(SplitMix64::new(args.seed)),
        start: args.start,
        duration: 7200.0,
        scale: args.scale,
    };
    let mut user = 0usize;
    for (browser, sessions) in [
        (Browser::ChromeDesktop, 450),
        (Browser::ChromeAndroid, 250),
        (Browser::Edge, 120),
        (Browser::Firefox, 250),
        (Browser::SafariMac, 120),
        (Browser::SafariIos, 200),
    ] {
        for _ in 0..corpus.count(sessions) {
            user += 1;
            corpus.browser_session(browser, &agents, user % 4000);
        }
    }
    for (library, sessions) in [("okhttp", 350), ("alamofire", 300), ("dart", 300)] {
        for _ in 0..corpus.count(sessions) {
            user += 1;
            corpus.app_session(library, user % 4000);
        }
    }
    for name in ["go", "java", "node"] {
        let n = corpus.count(400);
        corpus.partner(name, n);
    }

    // python-requests under browser user agents, from residential proxies.
    let browser_uas: Vec<String> =
        agents.browsers.iter().filter(|ua| ua.contains("Chrome/") || ua.contains("Firefox/")).cloned().collect();
    let spoofed = move |rng: &mut Rng, _: usize| {
        let ua = rng.pick(&browser_uas).clone();
        (
            vec![
                h("Host", HOST),
                h("User-Agent", ua),
                h("Accept-Encoding", "gzip, deflate"),
                h("Accept", "*/*"),
                h("Connection", "keep-alive"),
                h("Content-Length", "0"),
                h("Content-Type", "application/x-www-form-urlencoded"),
            ],
            false,
        )
    };
    let n = corpus.count(1500);
    corpus.stuffing(
        "stuffing: python-requests with browser user agents, residential proxies",
        n,
        2,
        (0.2, 3.0),
        false,
        &spoofed,
    );
    let go = |_: &mut Rng, get: usize| {
        let mut hs = vec![h("Host", HOST), h("User-Agent", "Go-http-client/1.1")];
        if get != usize::MAX {
            hs.push(h("Content-Length", "0"));
            hs.push(h("Content-Type", "application/x-www-form-urlencoded"));
        }
        hs.push(h("Accept-Encoding", "gzip"));
        (hs, false)
    };
    let n = corpus.count(700);
    corpus.stuffing("stuffing: Go net/http", n, 14, (0.3, 2.0), true, &go);
    let axios = |_: &mut Rng, _: usize| {
        (
            vec![
                h("Accept", "application/json, text/plain, */*"),
                h("Content-Type", "application/json"),
                h("User-Agent", "axios/1.6.8"),
                h("Content-Length", "0"),
                h("Accept-Encoding", "gzip, compress, deflate, br"),
                h("Host", HOST),
                h("Connection", "keep-alive"),
            ],
            true,
        )
    };
    let n = corpus.count(600);
    corpus.stuffing("stuffing: Node axios", n, 60, (0.1, 1.0), false, &axios);
    // A full Chrome header set, but straight to the form: no page, no sub-resources.
    let chrome_like = |rng: &mut Rng, get: usize| {
        let major = 120 + rng.below(37) as u32;
        let ua = format!(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{major}.0.0.0 Safari/537.36"
        );
        let referer = format!("https://{HOST}/login");
        let kind = if get == usize::MAX { Kind::Document } else { Kind::Form };
        let r = BrowserRequest { kind, referer: Some(&referer), cookie: None, content_length: 0, same_origin: true };
        (chromium_headers(&ua, major, false, false, "en-US,en;q=0.9", &r), false)
    };
    let n = corpus.count(900);
    corpus.stuffing(
        "stuffing: browser header set, residential proxies, no page load",
        n,
        3,
        (0.5, 4.0),
        false,
        &chrome_like,
    );
    let headless = |_: &mut Rng, get: usize| {
        let ua = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0.6367.60 Safari/537.36";
        let referer = format!("https://{HOST}/login");
        let kind = if get == usize::MAX { Kind::Document } else { Kind::Form };
        let r = BrowserRequest { kind, referer: Some(&referer), cookie: None, content_length: 0, same_origin: true };
        let mut hs = chromium_headers(ua, 124, false, false, "en-US", &r);
        hs.retain(|(n, _)| !n.starts_with("sec-ch-ua"));
        (hs, false)
    };
    let n = corpus.count(500);
    corpus.stuffing("stuffing: headless Chrome (puppeteer)", n, 20, (0.8, 3.0), true, &headless);
    // The mobile app's own login call, replayed with OkHttp's exact header
    // set: only behaviour (many usernames, failures) tells it apart.
    let okhttp = |rng: &mut Rng, _: usize| {
        let ua = format!("okhttp/4.{}.0", 9 + rng.below(4));
        (
            vec![
                h("X-App-Version", "5.12.0"),
                h("Content-Type", "application/json; charset=UTF-8"),
                h("Content-Length", "0"),
                h("Host", HOST),
                h("Connection", "Keep-Alive"),
                h("Accept-Encoding", "gzip"),
                h("User-Agent", ua),
            ],
            true,
        )
    };
    let n = corpus.count(900);
    corpus.stuffing("stuffing: mobile login API with OkHttp's header set", n, 4, (0.5, 5.0), false, &okhttp);
    let hydra = |_: &mut Rng, get: usize| {
        let mut hs = vec![h("Host", HOST), h("User-Agent", "Mozilla/5.0 (Hydra)")];
        if get != usize::MAX {
            hs.push(h("Content-Length", "0"));
            hs.push(h("Content-Type", "application/x-www-form-urlencoded"));
        }
        (hs, false)
    };
    let n = corpus.count(250);
    corpus.stuffing("hydra 9.4 http-post-form", n, 50, (0.01, 0.2), true, &hydra);

    for _ in 0..corpus.count(3) {
        let n = corpus.count(120);
        corpus.scanner(
            "nikto 2.5 scan",
            "Mozilla/5.00 (Nikto/2.5.0) (Evasions:None) (Test:000123)",
            n,
            &[("Connection", "Keep-Alive")],
        );
        corpus.scanner("gobuster 3.6 dir", "gobuster/3.6", n, &[("Accept-Encoding", "gzip")]);
        corpus.scanner("nuclei 3 scan", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36", n, &[("Connection", "close"), ("Accept", "*/*"), ("Accept-Language", "en"), ("Accept-Encoding", "gzip")]);
        corpus.scanner(
            "wpscan 3.8",
            "WPScan v3.8.25 (https://wpscan.com/wordpress-security-scanner)",
            n,
            &[("Accept", "*/*"), ("Accept-Encoding", "gzip, deflate")],
        );
    }
    // Crawlers: a few pages each, with their plain header sets.
    for _ in 0..corpus.count(500) {
        let ua = corpus.rng.pick(&agents.crawlers).clone();
        let ip = IpAddr::V4(Ipv4Addr::new(66, 249, corpus.rng.below(256) as u8, 1 + corpus.rng.below(254) as u8));
        let mut t = corpus.at();
        for i in 0..1 + corpus.rng.below(5) {
            let target =
                if i == 0 { "/robots.txt".to_string() } else { format!("/item?id={}", 1 + corpus.rng.below(500)) };
            let mut hs = vec![h("Host", HOST), h("User-Agent", ua.clone()), h("Accept", "*/*")];
            if corpus.rng.chance(0.6) {
                hs.push(h("Accept-Encoding", "gzip, deflate, br"));
            }
            if corpus.rng.chance(0.3) {
                hs.push(h("Connection", "close"));
            }
            let mut rec = record(t, ip, "GET", &target, hs, "bot", "crawlers (isbot fixtures)");
            rec.status = Some(200);
            corpus.records.push(rec);
            t += corpus.rng.range(0.5, 20.0);
        }
    }

    // Time order; ties keep generation order (a stable sort).
    corpus.records.sort_by(|a, b| a.ts.total_cmp(&b.ts));
    let mut text = String::new();
    for rec in &corpus.records {
        text.push_str(&serde_json::to_string(rec).expect("a record serializes"));
        text.push('\n');
    }
    let result = if args.out == "-" {
        std::io::stdout().write_all(text.as_bytes())
    } else if args.out.ends_with(".gz") {
        // Level and no file name/time in the header: the same bytes every run.
        let file = std::fs::File::create(&args.out).expect("create the output");
        let mut gz = flate2::GzBuilder::new().mtime(0).write(file, flate2::Compression::best());
        gz.write_all(text.as_bytes()).and_then(|_| gz.finish().map(|_| ()))
    } else {
        std::fs::write(&args.out, text)
    };
    if let Err(error) = result {
        eprintln!("make_corpus: cannot write {}: {error}", args.out);
        std::process::exit(1);
    }
    eprintln!("make_corpus: {} requests written to {}", corpus.records.len(), args.out);
}
