//! The feature table (schema version 2): what a model sees of a request.
//!
//! Every feature is a number computed from the request view and counter
//! readings; `NaN` means "missing" (not applicable or not known, e.g. login
//! features on a route that is not a login route, or header-case features
//! on HTTP/2 where names arrive lowercase). Trees send missing values down
//! a learned side; logistic regression treats them as the mean.
//!
//! The table is the contract between a model file and this code: its
//! names, in order, with the schema version, hash to the schema hash a
//! model file records ([`schema_hash`]). A model trained for another table
//! is refused at load. Change anything here (a feature's meaning too) and
//! bump [`SCHEMA_VERSION`].
//!
//! One function, [`FeatureExtractor::compute`], computes the vector; the
//! model stage calls it behind the proxy and in replay alike, and
//! `palisade train` reads the vectors a replay computed.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use super::value_cache::{self, remember};
use crate::credential::{Counter, KeyHasher, LoginAttempt, Scope};
use crate::session::RequestKind;
use crate::store::{CounterOp, CounterPlan, CounterReadings, Key};
use crate::view::RequestView;

/// Bump on any change of the table below (names, order or meaning).
pub const SCHEMA_VERSION: u32 = 2;

/// One row of the feature table.
#[derive(Debug, Clone, Copy)]
pub struct FeatureDef {
    pub feature: Feature,
    pub name: &'static str,
    pub doc: &'static str,
}

macro_rules! feature_table {
    ($( $variant:ident = $name:literal : $doc:literal, )*) => {
        /// A feature's position in the vector.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Feature { $($variant,)* }

        /// The feature table, in vector order.
        pub const FEATURES: &[FeatureDef] = &[$(FeatureDef { feature: Feature::$variant, name: $name, doc: $doc },)*];
    };
}

feature_table! {
    // --- The request line and the header set ---
    Method = "method": "0 GET or HEAD, 1 POST, 2 any other method",
    HttpVersion = "http_version": "1.0, 1.1 or 2 (3 for HTTP/3)",
    HeaderCount = "header_count": "header names sent, proxy-added ones (X-Forwarded-*, Via, ...) left out",
    LowercaseNames = "lowercase_names": "share of header names sent all lowercase; missing when wire case is unknown (HTTP/2)",
    HostFirst = "host_first": "1 when Host is the first header sent; missing when wire order is unknown",
    HasAccept = "has_accept": "Accept present",
    AcceptWildcard = "accept_wildcard": "1 when Accept is exactly */*; missing without Accept",
    HasAcceptLanguage = "has_accept_language": "Accept-Language present",
    AcceptLanguageTags = "accept_language_tags": "language tags in Accept-Language; missing without it",
    HasAcceptEncoding = "has_accept_encoding": "Accept-Encoding present",
    AcceptEncodingBrotli = "accept_encoding_br": "1 when Accept-Encoding offers br; missing without it",
    HasCookie = "has_cookie": "Cookie present",
    HasReferer = "has_referer": "Referer present",
    SecFetchHeaders = "sec_fetch_headers": "Sec-Fetch-* headers present (browsers send 3 or 4)",
    ClientHints = "client_hints": "Sec-CH-UA* client hints present (Chromium sends 3)",
    UpgradeInsecure = "upgrade_insecure_requests": "Upgrade-Insecure-Requests present",
    ConnectionClose = "connection_close": "1 when Connection: close",
    HasApiCredential = "has_api_credential": "Authorization or an *api-key* / *token* header present",
    ContentType = "content_type": "0 form, 1 JSON, 2 other; missing without Content-Type",
    QueryLength = "query_length": "bytes of query string (0 without one)",
    SuspiciousTokens = "suspicious_tokens": "quote, angle bracket, semicolon, ../ and SQL keywords in the target",
    PathDepth = "path_depth": "segments in the normalized path",
    StaticAsset = "static_asset": "1 when the path ends in a static file extension (.css, .js, .png, ...)",
    LoginRoute = "login_route": "1 on a route with a [route.login] section",
    // --- The user agent ---
    UaLength = "ua_length": "bytes of User-Agent (0 without one)",
    UaClass = "ua_class": "0 none, 1 browser, 2 mobile-app library, 3 HTTP library or CLI, 4 declared crawler, 5 attack tool or scanner, 6 other",
    UaBrowserFamily = "ua_browser_family": "claimed browser: 0 none, 1 Chromium-based, 2 Firefox, 3 Safari",
    UaMobile = "ua_mobile": "1 when the user agent says Mobile, Android, iPhone or iPad",
    BrowserConsistency = "browser_consistency": "share of the claimed browser's header traits present (client hints, Sec-Fetch-*, Accept-Language, order); missing when no browser is claimed",
    // --- Rates and fingerprint statistics (own counters) ---
    IpRequests10s = "ip_requests_10s": "requests from the client address over the last 10 s (this one included)",
    IpRequests60s = "ip_requests_60s": "requests from the client address over the last 60 s",
    IpDistinctPaths60s = "ip_distinct_paths_60s": "distinct paths the client address asked for over the last 60 s (pages and sub-resources)",
    IpDistinctUas10m = "ip_distinct_uas_10m": "distinct user agents from the client address over the last 10 min",
    FingerprintShare5m = "fingerprint_share_5m": "share of all requests over the last 5 min that carry this request's fingerprint",
    FingerprintDistinctIps5m = "fingerprint_distinct_ips_5m": "distinct client addresses with this fingerprint over the last 5 min",
    FingerprintDistinctUas5m = "fingerprint_distinct_uas_5m": "distinct user agents with this fingerprint over the last 5 min",
    IpArrivalVariation = "ip_arrival_variation": "regularity of the client address's arrivals: coefficient of variation of the gaps between its last ~16 requests (0 = a fixed pace; a person's pages and pauses give well over 1); missing before 3 gaps within 60 s",
    // --- Browsing before the request (the client: address and user agent) ---
    ClientPageLoads10m = "client_page_loads_10m": "page loads (HTML navigations) by this address and user agent over the last 10 min, this request included",
    ClientSubresources10m = "client_subresources_10m": "other GETs (styles, scripts, images, fetches) by this address and user agent over the last 10 min",
    ClientRecentPageLoad = "client_recent_page_load": "page loads by this address and user agent, decayed with a 30 s half-life (about 1 just after one page, half that 30 s later): how long ago the form was loaded",
    SessionState = "session_state": "palisade's session cookie: 0 none, 1 a valid session or clearance, 2 presented but refused (forged, expired, another client's); missing when the session stage is off",
    // --- Logins (the credential stage's counters; missing off login routes) ---
    HasUsername = "has_username": "1 when a username was found in the login body",
    IpLoginFailures = "ip_login_failures": "failed logins from the client address in the abuse window",
    IpFailureRatio = "ip_failure_ratio": "failed / (failed + successful) logins from the address; missing before the first outcome",
    IpDistinctUsernames = "ip_distinct_usernames": "distinct usernames tried from the address",
    SubnetFailureRatio = "subnet_failure_ratio": "failure ratio of the subnet (/24, /48) with this fingerprint; missing before an outcome",
    SubnetDistinctUsernames = "subnet_distinct_usernames": "distinct usernames from the subnet with this fingerprint",
    FingerprintLoginFailures = "fingerprint_login_failures": "failed logins with this fingerprint anywhere",
    FingerprintFailureRatio = "fingerprint_failure_ratio": "failure ratio of the fingerprint; missing before an outcome",
    FingerprintDistinctUsernames = "fingerprint_distinct_usernames": "distinct usernames tried with this fingerprint",
    AccountFailures = "account_failures": "failed logins of this username; missing without a username",
    AccountDistinctIps = "account_distinct_ips": "distinct addresses that tried this username; missing without a username",
    SiteFailureRatio = "site_failure_ratio": "the login route's failure ratio over the last minutes (decayed); missing before an outcome",
}

pub const FEATURE_COUNT: usize = FEATURES.len();

/// One request's features, in table order; `NaN` is missing.
pub type FeatureVector = [f64; FEATURE_COUNT];

/// The vector of a request before anything is known: all missing.
pub const MISSING: FeatureVector = [f64::NAN; FEATURE_COUNT];

/// The feature names, in vector order.
pub fn names() -> impl Iterator<Item = &'static str> {
    FEATURES.iter().map(|def| def.name)
}

/// The hash a model file records: BLAKE3 over the schema version and the
/// names in order (16 hex characters).
pub fn schema_hash() -> String {
    hash_of(SCHEMA_VERSION, names())
}

/// The schema hash of any list of names (for checking a model file).
pub fn hash_of<'a>(version: u32, names: impl IntoIterator<Item = &'a str>) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(format!("palisade features v{version}\n").as_bytes());
    for name in names {
        hasher.update(name.as_bytes());
        hasher.update(b"\n");
    }
    hex::encode(&hasher.finalize().as_bytes()[..8])
}

/// Position of a feature name in the table.
pub fn index_of(name: &str) -> Option<usize> {
    FEATURES.iter().position(|def| def.name == name)
}

// === impl FeatureExtractor ===

/// Windows of the stage's own counters.
const WINDOW_10S: Duration = Duration::from_secs(10);
const WINDOW_60S: Duration = Duration::from_secs(60);
const WINDOW_5M: Duration = Duration::from_secs(300);
const WINDOW_10M: Duration = Duration::from_secs(600);
const HALF_LIFE_30S: Duration = Duration::from_secs(30);

/// The counter keys of one request, made once in `plan` and read again
/// after the store answered, and what its user agent says (worked out, or
/// remembered, with the user agent's key). Each scope's keys are shared by
/// the requests that name the same address, fingerprint or client on a
/// route (remembered per thread with the scope's id).
#[derive(Debug, Clone)]
pub struct FeatureKeys {
    user_agent: UaFacts,
    /// Requests in 10 s and 60 s, distinct paths, distinct user agents,
    /// arrival rhythm.
    ip: Arc<[Key; 5]>,
    /// Requests in 5 min, distinct addresses, distinct user agents.
    fingerprint: Arc<[Key; 3]>,
    /// Page loads and subresources in 10 min, recent page loads.
    client: Arc<[Key; 3]>,
    /// The route's requests in 5 min.
    site: Key,
}

/// The counters the features keep of their own (the login features read
/// the credential stage's). The suffixes are what the stores hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModelCounter {
    Requests10s,
    Requests60s,
    Requests5m,
    DistinctPaths,
    DistinctUserAgents,
    DistinctAddresses,
    Rhythm,
    PageLoads10m,
    Subresources10m,
    RecentPageLoads,
}

impl ModelCounter {
    fn suffix(self) -> &'static str {
        match self {
            ModelCounter::Requests10s => "r10",
            ModelCounter::Requests60s => "r60",
            ModelCounter::Requests5m => "r300",
            ModelCounter::DistinctPaths => "paths",
            ModelCounter::DistinctUserAgents => "uas",
            ModelCounter::DistinctAddresses => "ips",
            ModelCounter::Rhythm => "gap",
            ModelCounter::PageLoads10m => "pg600",
            ModelCounter::Subresources10m => "sub600",
            ModelCounter::RecentPageLoads => "pg30",
        }
    }
}

/// Computes features: plans the counters they need and reads them back.
#[derive(Debug, Clone)]
pub struct FeatureExtractor {
    hasher: KeyHasher,
}

impl FeatureExtractor {
    pub fn new(hasher: KeyHasher) -> Self {
        FeatureExtractor { hasher }
    }

    /// Plan the counters of a request (each counts the request itself).
    /// `kind` is the session stage's reading of the request when it ran
    /// (else it is worked out here, by the same rule).
    pub fn plan(&self, view: &RequestView<'_>, kind: Option<RequestKind>, plan: &mut CounterPlan) -> FeatureKeys {
        // Keys and hash inputs are put together on the stack: a request
        // makes a dozen, and each would otherwise be a string or two on the
        // heap.
        let mut ip_buffer = [0u8; 64];
        let ip_text = crate::cidr::ip_text(crate::cidr::canonical_ip(view.client_ip), &mut ip_buffer);
        // One keyed hash serves both as the address's counter-key id and
        // as its item in the fingerprint's distinct-address sketch: the key
        // hasher's text is the hex of the item's bytes.
        // A fingerprint's and a user agent's work repeats across clients, a
        // client's across its requests, a path's across clients: the items
        // and each scope's keys are remembered per thread (`value_cache`),
        // keyed by the hashed bytes themselves (and the route, for keys).
        let tag = self.hasher.tag();
        let route = &*view.route.name;
        // The route is part of every key: remembered under its length and
        // its name, so that no two (route, id) pairs lay out the same bytes.
        let route_len = (route.len() as u32).to_le_bytes();
        let route_parts: [&[u8]; 2] = [&route_len, route.as_bytes()];
        use ModelCounter::*;
        let user_agent = view.user_agent.unwrap_or("");
        // The client as a browser tab sees it: one address, one user agent.
        // What its requests share on a route (the address's item and keys,
        // what the user agent says and its item, the client's keys, the
        // route's key) is remembered together, under the client: one
        // lookup a request where there were four. A client not remembered
        // gets each part from its own cache (an address's, a user agent's
        // and a route's work is shared with other clients).
        let client_parts: &[&[u8]] =
            &[route_parts[0], route_parts[1], ip_text.as_bytes(), b"\n", user_agent.as_bytes()];
        let client = remember(&CLIENTS, tag, client_parts, || {
            let (ip_item, ip_keys) =
                remember(&ADDRESSES, tag, &[route_parts[0], route_parts[1], ip_text.as_bytes()], || {
                    // Shared with the rate limit's and the login's keys.
                    let item = self.hasher.address_item(view.client_ip);
                    (
                        item,
                        scope_keys(
                            route,
                            "ip",
                            item,
                            [Requests10s, Requests60s, DistinctPaths, DistinctUserAgents, Rhythm],
                        ),
                    )
                });
            let (facts, ua_item) = remember(&USER_AGENTS, tag, &[user_agent.as_bytes()], || {
                (UaFacts::of(user_agent), self.hasher.item("ua", user_agent.as_bytes()))
            });
            let site = remember(&SITES, 0, &route_parts, || {
                let [site] = counter_keys(&mut String::new(), route, "site", "all", [Requests5m]);
                site
            });
            let item = self.hasher.item_of("client", &client_parts[2..]);
            ClientScopes {
                ip_item,
                ip_keys,
                facts,
                ua_item,
                keys: scope_keys(route, "cl", item, [PageLoads10m, Subresources10m, RecentPageLoads]),
                site,
            }
        });
        let ClientScopes { ip_item, ip_keys, facts, ua_item, keys: client_keys, site } = client;
        let fingerprint_bytes = view.fingerprint().as_bytes();
        // Without JA4 the fingerprint alone is hashed; with it, the two
        // joined by `|`.
        let fingerprint_parts: &[&[u8]] = match view.ja4 {
            Some(ja4) => &[route_parts[0], route_parts[1], fingerprint_bytes, b"|", ja4.as_bytes()],
            None => &[route_parts[0], route_parts[1], fingerprint_bytes],
        };
        let fingerprint_keys = remember(&FINGERPRINTS, tag, fingerprint_parts, || {
            let item = self.hasher.item_of("fp", &fingerprint_parts[2..]);
            scope_keys(route, "fp", item, [Requests5m, DistinctAddresses, DistinctUserAgents])
        });
        let path = view.path.as_bytes();
        let path_item = remember(&PATHS, tag, &[path], || self.hasher.item("path", path));
        let [ip_10s, ip_60s, ip_paths, ip_uas, ip_rhythm] = &*ip_keys;
        let [fp_5m, fp_ips, fp_uas] = &*fingerprint_keys;
        let [client_pages, client_subs, client_recent_page] = &*client_keys;
        let kind = kind.unwrap_or_else(|| crate::session::request_kind(view).0);
        let page = u64::from(kind == RequestKind::Navigation);
        let sub = u64::from(kind == RequestKind::SubResource);
        // Planned scope by scope: the store runs consecutive operations on
        // one scope (one key group) under one lookup.
        plan.push(CounterOp::Count { key: ip_10s.clone(), window: WINDOW_10S, add: 1 });
        plan.push(CounterOp::Count { key: ip_60s.clone(), window: WINDOW_60S, add: 1 });
        plan.push(CounterOp::Distinct { key: ip_paths.clone(), window: WINDOW_60S, item: Some(path_item) });
        plan.push(CounterOp::Distinct { key: ip_uas.clone(), window: WINDOW_10M, item: Some(ua_item) });
        plan.push(CounterOp::Rhythm { key: ip_rhythm.clone(), window: WINDOW_60S });
        plan.push(CounterOp::Count { key: fp_5m.clone(), window: WINDOW_5M, add: 1 });
        plan.push(CounterOp::Distinct { key: fp_ips.clone(), window: WINDOW_5M, item: Some(ip_item) });
        plan.push(CounterOp::Distinct { key: fp_uas.clone(), window: WINDOW_5M, item: Some(ua_item) });
        plan.push(CounterOp::Count { key: site.clone(), window: WINDOW_5M, add: 1 });
        plan.push(CounterOp::Count { key: client_pages.clone(), window: WINDOW_10M, add: page });
        plan.push(CounterOp::Count { key: client_subs.clone(), window: WINDOW_10M, add: sub });
        plan.push(CounterOp::Decay { key: client_recent_page.clone(), half_life: HALF_LIFE_30S, add: page as f64 });
        FeatureKeys { user_agent: facts, ip: ip_keys, fingerprint: fingerprint_keys, client: client_keys, site }
    }

    /// The features of a request, from its view, the readings of the plan,
    /// and (on login routes) the credential stage's attempt, whose counters
    /// the same readings hold.
    pub fn compute(
        &self,
        view: &RequestView<'_>,
        keys: &FeatureKeys,
        readings: &CounterReadings,
        login: Option<&LoginAttempt>,
        session: Option<f64>,
    ) -> FeatureVector {
        let mut v = MISSING;
        request_features(view, keys.user_agent, &mut v);
        let set = |v: &mut FeatureVector, f: Feature, value: f64| v[f as usize] = value;
        let [ip_10s, ip_60s, ip_paths, ip_uas, ip_rhythm] = &*keys.ip;
        let [fp_5m, fp_ips, fp_uas] = &*keys.fingerprint;
        let [client_pages, client_subs, client_recent_page] = &*keys.client;
        set(&mut v, Feature::IpRequests10s, readings.number(ip_10s));
        set(&mut v, Feature::IpRequests60s, readings.number(ip_60s));
        set(&mut v, Feature::IpDistinctPaths60s, readings.number(ip_paths));
        set(&mut v, Feature::IpDistinctUas10m, readings.number(ip_uas));
        let site = readings.number(&keys.site);
        set(&mut v, Feature::FingerprintShare5m, if site > 0.0 { readings.number(fp_5m) / site } else { f64::NAN });
        set(&mut v, Feature::FingerprintDistinctIps5m, readings.number(fp_ips));
        set(&mut v, Feature::FingerprintDistinctUas5m, readings.number(fp_uas));
        set(&mut v, Feature::IpArrivalVariation, readings.number(ip_rhythm));
        set(&mut v, Feature::ClientPageLoads10m, readings.number(client_pages));
        set(&mut v, Feature::ClientSubresources10m, readings.number(client_subs));
        set(&mut v, Feature::ClientRecentPageLoad, readings.number(client_recent_page));
        if let Some(session) = session {
            set(&mut v, Feature::SessionState, session);
        }
        if let Some(attempt) = login {
            login_features(attempt, readings, &mut v);
        }
        v
    }
}

/// The text of [`KeyHasher::item_hex`]'s digits.
fn hex_text(digits: &[u8; 16]) -> &str {
    std::str::from_utf8(digits).unwrap_or_default()
}

/// A scope's keys for the id whose keyed item is `item` (the id is the
/// item's hex, as [`KeyHasher::hash`] writes it), shared by the requests
/// that name it. Built only when a thread does not remember them.
fn scope_keys<const N: usize>(route: &str, scope: &str, item: u64, counters: [ModelCounter; N]) -> Arc<[Key; N]> {
    let mut text = String::with_capacity(route.len() + 32);
    Arc::new(counter_keys(&mut text, route, scope, hex_text(&KeyHasher::item_hex(item)), counters))
}

/// The keys `ml:{route}:{scope}:{id}:{suffix}` of `counters`, put together
/// in `text` (the prefix once, then each suffix after it): one allocation
/// per key, the key's own.
fn counter_keys<const N: usize>(
    text: &mut String,
    route: &str,
    scope: &str,
    id: &str,
    counters: [ModelCounter; N],
) -> [Key; N] {
    text.clear();
    for part in ["ml:", route, ":", scope, ":", id, ":"] {
        text.push_str(part);
    }
    let prefix = text.len();
    counters.map(|counter| {
        text.truncate(prefix);
        text.push_str(counter.suffix());
        Key::from(text.as_str())
    })
}

/// Failure ratio of a scope; missing before its first outcome.
fn failure_ratio(readings: &CounterReadings, attempt: &LoginAttempt, scope: Scope) -> f64 {
    let failures = readings.number(&attempt.keys.name(scope, Counter::Failures));
    let successes = readings.number(&attempt.keys.name(scope, Counter::Successes));
    if failures + successes > 0.0 { failures / (failures + successes) } else { f64::NAN }
}

fn login_features(attempt: &LoginAttempt, readings: &CounterReadings, v: &mut FeatureVector) {
    let keys = &attempt.keys;
    let number = |scope: Scope, counter: Counter| readings.number(&keys.name(scope, counter));
    v[Feature::HasUsername as usize] = f64::from(u8::from(keys.user.is_some()));
    v[Feature::IpLoginFailures as usize] = number(Scope::Ip, Counter::Failures);
    v[Feature::IpFailureRatio as usize] = failure_ratio(readings, attempt, Scope::Ip);
    v[Feature::IpDistinctUsernames as usize] = number(Scope::Ip, Counter::Usernames);
    v[Feature::SubnetFailureRatio as usize] = failure_ratio(readings, attempt, Scope::Subnet);
    v[Feature::SubnetDistinctUsernames as usize] = number(Scope::Subnet, Counter::Usernames);
    v[Feature::FingerprintLoginFailures as usize] = number(Scope::Fingerprint, Counter::Failures);
    v[Feature::FingerprintFailureRatio as usize] = failure_ratio(readings, attempt, Scope::Fingerprint);
    v[Feature::FingerprintDistinctUsernames as usize] = number(Scope::Fingerprint, Counter::Usernames);
    if keys.user.is_some() {
        v[Feature::AccountFailures as usize] = number(Scope::User, Counter::Failures);
        v[Feature::AccountDistinctIps as usize] = number(Scope::User, Counter::Addresses);
    }
    let attempts = number(Scope::Site, Counter::RecentAttempts);
    if attempts > 0.0 {
        v[Feature::SiteFailureRatio as usize] = number(Scope::Site, Counter::RecentFailures) / attempts;
    }
}

/// What the header set holds, gathered in one pass over the names.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct HeaderTraits {
    count: u32,
    lowercase: u32,
    first_is_host: Option<bool>,
    /// Positions of User-Agent and Accept in wire order.
    user_agent_at: Option<u32>,
    accept_at: Option<u32>,
    sec_fetch: u32,
    client_hints: u32,
    credential: bool,
}

/// The traits of the request's header names: a function of the names in
/// the order [`RequestView::header_names`] gives them, which the clients
/// of one browser or library share, so they are remembered per thread,
/// keyed by the names themselves (a newline after each: no name holds
/// one). The names are laid end to end on the stack first: hashed and
/// compared as one run of bytes, not two parts per name (in the model
/// bench, 1,250 instructions a request as parts, 310 as one run). A header set longer
/// than the cache keeps ([`value_cache::MAX_VALUE`]) is read every time.
fn header_traits(view: &RequestView<'_>) -> HeaderTraits {
    let mut names = [0u8; value_cache::MAX_VALUE];
    let mut len = 0;
    for name in view.header_names() {
        let Some(room) = names.get_mut(len..len + name.len() + 1) else { return traits_of(view) };
        let (text, newline) = room.split_at_mut(name.len());
        text.copy_from_slice(name.as_bytes());
        newline[0] = b'\n';
        len += name.len() + 1;
    }
    remember(&HEADER_SETS, 0, &[&names[..len]], || traits_of(view))
}

fn traits_of(view: &RequestView<'_>) -> HeaderTraits {
    let mut traits = HeaderTraits::default();
    for name in view.header_names() {
        if crate::fingerprint::added_by_proxies(name) {
            continue;
        }
        if traits.count == 0 {
            traits.first_is_host = Some(name.eq_ignore_ascii_case("host"));
        }
        if name.bytes().all(|b| !b.is_ascii_uppercase()) {
            traits.lowercase += 1;
        }
        let starts = |prefix: &str| name.len() >= prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix);
        if starts("sec-fetch-") {
            traits.sec_fetch += 1;
        } else if starts("sec-ch-ua") {
            traits.client_hints += 1;
        } else if name.eq_ignore_ascii_case("user-agent") {
            traits.user_agent_at.get_or_insert(traits.count);
        } else if name.eq_ignore_ascii_case("accept") {
            traits.accept_at.get_or_insert(traits.count);
        } else if name.eq_ignore_ascii_case("authorization")
            || contains_ignore_case(name, "api-key")
            || contains_ignore_case(name, "apikey")
            || contains_ignore_case(name, "token")
        {
            traits.credential = true;
        }
        traits.count += 1;
    }
    traits
}

fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    let needle = needle.as_bytes();
    let Some(first) = needle.first().map(u8::to_ascii_lowercase) else { return true };
    // Most windows fail on their first byte: test it before the rest.
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w[0].to_ascii_lowercase() == first && w.eq_ignore_ascii_case(needle))
}

fn flag(b: bool) -> f64 {
    f64::from(u8::from(b))
}

/// Features of the request alone (no counters); `ua_facts` is what its
/// user agent says ([`UaFacts::of`]).
fn request_features(view: &RequestView<'_>, ua_facts: UaFacts, v: &mut FeatureVector) {
    let headers = ReadHeaders::of(view.headers);
    fn text(value: Option<&http::HeaderValue>) -> Option<&str> {
        value.and_then(|value| value.to_str().ok())
    }
    let set = |v: &mut FeatureVector, f: Feature, value: f64| v[f as usize] = value;
    set(
        v,
        Feature::Method,
        match *view.method {
            http::Method::GET | http::Method::HEAD => 0.0,
            http::Method::POST => 1.0,
            _ => 2.0,
        },
    );
    set(
        v,
        Feature::HttpVersion,
        match view.version {
            http::Version::HTTP_09 | http::Version::HTTP_10 => 1.0,
            http::Version::HTTP_2 => 2.0,
            http::Version::HTTP_3 => 3.0,
            _ => 1.1,
        },
    );
    let traits = header_traits(view);
    set(v, Feature::HeaderCount, f64::from(traits.count));
    if view.wire_names.is_some() && traits.count > 0 {
        set(v, Feature::LowercaseNames, f64::from(traits.lowercase) / f64::from(traits.count));
        set(v, Feature::HostFirst, flag(traits.first_is_host == Some(true)));
    }
    let accept = text(headers.accept);
    set(v, Feature::HasAccept, flag(accept.is_some()));
    if let Some(accept) = accept {
        set(v, Feature::AcceptWildcard, flag(accept.as_bytes().trim_ascii() == b"*/*"));
    }
    let language = text(headers.language);
    set(v, Feature::HasAcceptLanguage, flag(language.is_some()));
    if let Some(language) = language {
        set(v, Feature::AcceptLanguageTags, language_tags(language) as f64);
    }
    let encoding = text(headers.encoding);
    set(v, Feature::HasAcceptEncoding, flag(encoding.is_some()));
    if let Some(encoding) = encoding {
        set(v, Feature::AcceptEncodingBrotli, flag(offers_brotli(encoding)));
    }
    set(v, Feature::HasCookie, flag(headers.cookie));
    set(v, Feature::HasReferer, flag(headers.referer));
    set(v, Feature::SecFetchHeaders, f64::from(traits.sec_fetch));
    set(v, Feature::ClientHints, f64::from(traits.client_hints));
    set(v, Feature::UpgradeInsecure, flag(headers.upgrade_insecure));
    set(
        v,
        Feature::ConnectionClose,
        flag(text(headers.connection).is_some_and(|c| c.as_bytes().trim_ascii().eq_ignore_ascii_case(b"close"))),
    );
    set(v, Feature::HasApiCredential, flag(traits.credential));
    if let Some(content_type) = text(headers.content_type) {
        let kind = if content_type.starts_with("application/x-www-form-urlencoded") {
            0.0
        } else if content_type.contains("json") {
            1.0
        } else {
            2.0
        };
        set(v, Feature::ContentType, kind);
    }
    set(v, Feature::QueryLength, view.query.map_or(0, str::len) as f64);
    set(v, Feature::SuspiciousTokens, suspicious_tokens(view.target) as f64);
    set(v, Feature::PathDepth, path_depth(view.path) as f64);
    set(v, Feature::StaticAsset, flag(is_static(view.path)));
    set(v, Feature::LoginRoute, flag(view.route.login.is_some()));

    let ua = view.user_agent.unwrap_or("");
    set(v, Feature::UaLength, ua.len() as f64);
    let UaFacts { class, family, mobile } = ua_facts;
    set(v, Feature::UaClass, f64::from(class as u8));
    set(v, Feature::UaBrowserFamily, f64::from(family as u8));
    set(v, Feature::UaMobile, flag(mobile));
    if family != BrowserFamily::None {
        set(
            v,
            Feature::BrowserConsistency,
            browser_consistency(family, &traits, language.is_some(), encoding.is_some(), view.wire_names.is_some()),
        );
    }
}

// Header values read as text hold visible ASCII, spaces and tabs only
// (`HeaderValue::to_str`), so `str::trim` and `trim_ascii` strip the same
// bytes there, and the values are read byte by byte: `str::split` and
// `trim` on a `char` pattern cost ~900 instructions a request in the
// model bench (callgrind), for a few dozen bytes.

/// Language tags in an Accept-Language value: its comma-separated parts
/// that hold anything but spaces and tabs.
fn language_tags(language: &str) -> usize {
    let (mut tags, mut filled) = (0, false);
    for byte in language.bytes() {
        if byte == b',' {
            tags += usize::from(filled);
            filled = false;
        } else if byte != b' ' && byte != b'\t' {
            filled = true;
        }
    }
    tags + usize::from(filled)
}

/// Whether an Accept-Encoding value offers `br`: a comma-separated part
/// that starts with it after blanks.
fn offers_brotli(encoding: &str) -> bool {
    encoding.as_bytes().split(|&byte| byte == b',').any(|part| part.trim_ascii_start().starts_with(b"br"))
}

/// The headers [`request_features`] reads: the first value of each (what
/// `HeaderMap::get` gives) and whether the others are present, found in
/// one pass over the map rather than a hashed lookup per name (eight of
/// them, a tenth of the features' instructions).
#[derive(Debug, Default, PartialEq)]
struct ReadHeaders<'a> {
    accept: Option<&'a http::HeaderValue>,
    language: Option<&'a http::HeaderValue>,
    encoding: Option<&'a http::HeaderValue>,
    connection: Option<&'a http::HeaderValue>,
    content_type: Option<&'a http::HeaderValue>,
    cookie: bool,
    referer: bool,
    upgrade_insecure: bool,
}

impl<'a> ReadHeaders<'a> {
    fn of(headers: &'a http::HeaderMap) -> Self {
        use http::header;
        let mut read = ReadHeaders::default();
        // The map yields each name's values together, its first value
        // first: the first value seen of a name is the one `get` gives.
        for (name, value) in headers {
            let first = if name == header::ACCEPT {
                &mut read.accept
            } else if name == header::ACCEPT_LANGUAGE {
                &mut read.language
            } else if name == header::ACCEPT_ENCODING {
                &mut read.encoding
            } else if name == header::CONNECTION {
                &mut read.connection
            } else if name == header::CONTENT_TYPE {
                &mut read.content_type
            } else {
                if name == header::COOKIE {
                    read.cookie = true;
                } else if name == header::REFERER {
                    read.referer = true;
                } else if name == header::UPGRADE_INSECURE_REQUESTS {
                    read.upgrade_insecure = true;
                }
                continue;
            };
            first.get_or_insert(value);
        }
        read
    }
}

/// Target tokens typical of injection and traversal probes.
fn suspicious_tokens(target: &str) -> usize {
    let mut decoded = String::new();
    // Decoding allocates only when the target is encoded (one pass over
    // its bytes says, where two `char` searches did).
    let text: &str = if target.bytes().any(|byte| byte == b'%' || byte == b'+') {
        decoded.extend(percent_encoding::percent_decode_str(&target.replace('+', " ")).decode_utf8_lossy().chars());
        &decoded
    } else {
        target
    };
    let punctuation = text.bytes().filter(|b| matches!(b, b'\'' | b'"' | b'<' | b'>' | b';' | b'`')).count();
    // How many of the words occur (each counted once, overlaps too): one
    // pass of one automaton, rather than a search per word.
    static AUTOMATON: std::sync::LazyLock<Option<aho_corasick::AhoCorasick>> = std::sync::LazyLock::new(|| {
        aho_corasick::AhoCorasick::builder().ascii_case_insensitive(true).build(SUSPICIOUS_WORDS).ok()
    });
    let words = match AUTOMATON.as_ref() {
        Some(automaton) => {
            let found = automaton.find_overlapping_iter(text).fold(0u32, |found, m| found | 1 << m.pattern().as_u32());
            found.count_ones() as usize
        }
        None => SUSPICIOUS_WORDS.iter().filter(|word| contains_ignore_case(text, word)).count(),
    };
    punctuation + words
}

/// Words of injection and traversal probes (at most 32: a found word is a
/// bit of a `u32`).
const SUSPICIOUS_WORDS: &[&str] =
    &["union", "select", "sleep(", "../", "or 1=1", "script", "information_schema", "waitfor", "/etc/passwd"];

/// Non-empty segments between slashes (what `split('/')` and a filter of
/// the empty ones count, a byte at a time).
fn path_depth(path: &str) -> usize {
    let mut depth = 0;
    let mut previous = b'/';
    for byte in path.bytes() {
        if byte != b'/' && previous == b'/' {
            depth += 1;
        }
        previous = byte;
    }
    depth
}

fn is_static(path: &str) -> bool {
    // After the last `.` (what `rsplit_once('.')` gives, found byte-wise:
    // a `.` is never part of a longer UTF-8 character).
    let extension = path.bytes().rposition(|byte| byte == b'.').map(|at| &path[at + 1..]);
    matches!(
        extension,
        Some("css" | "js" | "mjs" | "png" | "jpg" | "jpeg" | "gif" | "svg" | "ico" | "woff" | "woff2" | "webp" | "map")
    )
}

/// What a user agent says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UaClass {
    None = 0,
    Browser = 1,
    MobileApp = 2,
    Library = 3,
    Crawler = 4,
    AttackTool = 5,
    Other = 6,
}

const ATTACK_TOOLS: &[&str] = &[
    "sqlmap",
    "hydra",
    "nikto",
    "nmap",
    "masscan",
    "zgrab",
    "wpscan",
    "dirbuster",
    "gobuster",
    "ffuf",
    "wfuzz",
    "nuclei",
    "acunetix",
    "burp",
    "openvas",
    "havij",
    "medusa",
    "jaeles",
    "feroxbuster",
    "dirb/",
];
const MOBILE_LIBRARIES: &[&str] = &["okhttp", "cfnetwork", "dalvik/", "dart/", "alamofire", "ktor-client", "volley/"];
const HTTP_LIBRARIES: &[&str] = &[
    "curl/",
    "wget/",
    "python-",
    "python/",
    "aiohttp",
    "httpx",
    "go-http-client",
    "java/",
    "apache-httpclient",
    "axios/",
    "node-fetch",
    "undici",
    "libwww-perl",
    "ruby",
    "php/",
    "guzzle",
    "postmanruntime",
    "insomnia",
    "httpie",
    "reqwest",
    "powershell",
    "scrapy",
    "mechanize",
    "headlesschrome",
    "phantomjs",
];
const CRAWLER_WORDS: &[&str] = &["bot", "crawl", "spider", "slurp", "fetcher", "monitor", "scanner", "checker"];

/// The class of a user agent, by the words it contains (case-insensitive).
pub fn ua_class(ua: &str) -> UaClass {
    if ua.is_empty() {
        return UaClass::None;
    }
    // The word lists in priority order: the first list with a word in the
    // user agent decides. One pass of one automaton over the user agent
    // (a word-by-word search cost ~120,000 instructions a request).
    static WORDS: std::sync::LazyLock<Option<(aho_corasick::AhoCorasick, Vec<UaClass>)>> =
        std::sync::LazyLock::new(|| {
            let lists = [
                (ATTACK_TOOLS, UaClass::AttackTool),
                (HTTP_LIBRARIES, UaClass::Library),
                (MOBILE_LIBRARIES, UaClass::MobileApp),
                (CRAWLER_WORDS, UaClass::Crawler),
            ];
            let classes = lists.iter().flat_map(|(words, class)| words.iter().map(|_| *class)).collect();
            let words = lists.iter().flat_map(|(words, _)| words.iter());
            aho_corasick::AhoCorasick::builder().ascii_case_insensitive(true).build(words).ok().map(|ac| (ac, classes))
        });
    let rank = |class: UaClass| match class {
        UaClass::AttackTool => 0,
        UaClass::Library => 1,
        UaClass::MobileApp => 2,
        _ => 3,
    };
    let found = WORDS.as_ref().and_then(|(ac, classes)| {
        ac.find_overlapping_iter(ua).map(|m| classes[m.pattern().as_usize()]).min_by_key(|class| rank(*class))
    });
    if let Some(class) = found {
        class
    } else if ua.starts_with("Mozilla/5.0 (") && (ua.contains("Gecko") || ua.contains("AppleWebKit")) {
        UaClass::Browser
    } else {
        UaClass::Other
    }
}

/// What a user agent says: its class, the browser it claims and whether it
/// claims a mobile device. It depends on the user agent alone, so it is
/// remembered per thread with the user agent's key ([`USER_AGENTS`]).
/// What the requests of one client (route, address and user agent)
/// share, remembered per thread with the client ([`CLIENTS`]).
#[derive(Debug, Clone)]
struct ClientScopes {
    /// The address's keyed item (its entry in a fingerprint's
    /// distinct-address count) and its keys.
    ip_item: u64,
    ip_keys: Arc<[Key; 5]>,
    /// What the user agent says, and its keyed item.
    facts: UaFacts,
    ua_item: u64,
    /// The client's keys.
    keys: Arc<[Key; 3]>,
    /// The route's site-wide key.
    site: Key,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UaFacts {
    class: UaClass,
    family: BrowserFamily,
    mobile: bool,
}

impl UaFacts {
    fn of(ua: &str) -> UaFacts {
        let class = ua_class(ua);
        UaFacts {
            class,
            family: browser_family(ua, class),
            mobile: ["Mobile", "Android", "iPhone", "iPad"].iter().any(|word| ua.contains(word)),
        }
    }
}

thread_local! {
    /// User agent → its facts and its keyed item (under a secret's tag).
    static USER_AGENTS: RefCell<value_cache::Cache<(UaFacts, u64)>> = RefCell::new(value_cache::cache());
    /// Route and fingerprint (with JA4) → the fingerprint's counter keys.
    static FINGERPRINTS: RefCell<value_cache::Cache<Arc<[Key; 3]>>> = RefCell::new(value_cache::cache());
    /// Route and client address → the address's keyed item and counter keys.
    static ADDRESSES: RefCell<value_cache::Cache<(u64, Arc<[Key; 5]>)>> = RefCell::new(value_cache::cache());
    /// Route, client address and user agent → what the client's requests
    /// share ([`ClientScopes`]).
    static CLIENTS: RefCell<value_cache::Cache<ClientScopes>> = RefCell::new(value_cache::cache());
    /// Route → its site-wide counter key (no secret involved: tag 0).
    static SITES: RefCell<value_cache::Cache<Key>> = RefCell::new(value_cache::cache());
    /// Normalized path → its keyed item.
    static PATHS: RefCell<value_cache::Cache<u64>> = RefCell::new(value_cache::cache());
    /// Header names in order → their traits (no secret involved: tag 0).
    static HEADER_SETS: RefCell<value_cache::Cache<HeaderTraits>> = RefCell::new(value_cache::cache());
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrowserFamily {
    None = 0,
    Chromium = 1,
    Firefox = 2,
    Safari = 3,
}

fn browser_family(ua: &str, class: UaClass) -> BrowserFamily {
    if class != UaClass::Browser {
        BrowserFamily::None
    } else if ua.contains("Firefox/") {
        BrowserFamily::Firefox
    } else if ua.contains("Chrome/") || ua.contains("CriOS/") || ua.contains("Edg/") {
        BrowserFamily::Chromium
    } else if ua.contains("Safari/") {
        BrowserFamily::Safari
    } else {
        BrowserFamily::None
    }
}

/// Share of the traits a real browser of this family sends that this
/// request has: Accept-Language, Accept-Encoding, Sec-Fetch-*, client
/// hints on Chromium (and none elsewhere), and, in wire order, Host first
/// and User-Agent before Accept on Chromium and Firefox (after it on
/// Safari).
fn browser_consistency(
    family: BrowserFamily,
    traits: &HeaderTraits,
    language: bool,
    encoding: bool,
    wire: bool,
) -> f64 {
    let (mut passed, mut checked) = (0u32, 0u32);
    let mut check = |ok: bool| {
        checked += 1;
        passed += u32::from(ok);
    };
    check(language);
    check(encoding);
    check(traits.sec_fetch >= 3);
    check(match family {
        BrowserFamily::Chromium => traits.client_hints >= 2,
        _ => traits.client_hints == 0,
    });
    if wire {
        check(traits.first_is_host == Some(true));
        if let (Some(ua), Some(accept)) = (traits.user_agent_at, traits.accept_at) {
            check(match family {
                BrowserFamily::Safari => accept < ua,
                _ => ua < accept,
            });
        }
    }
    f64::from(passed) / f64::from(checked)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The header values read byte by byte give what the `str` splits
        /// and trims they replaced gave, on header text (visible ASCII,
        /// spaces and tabs), and the static-file test what `rsplit_once`
        /// gave on any path.
        #[test]
        fn byte_wise_value_readers_match_the_str_ones(
            value in "([ \t,;=.*/]|br|BR|b|r|close|gzip|en-US|q=0\\.9|\\*/\\*|[ -~]){0,24}",
            path in "([./]|css|js|woff2|map|é|ü|[a-z]){0,12}",
        ) {
            proptest::prop_assert_eq!(
                language_tags(&value),
                value.split(',').filter(|tag| tag.bytes().any(|b| b != b' ' && b != b'\t')).count()
            );
            proptest::prop_assert_eq!(offers_brotli(&value), value.split(',').any(|e| e.trim().starts_with("br")));
            proptest::prop_assert_eq!(value.as_bytes().trim_ascii() == b"*/*", value.trim() == "*/*");
            proptest::prop_assert_eq!(
                value.as_bytes().trim_ascii().eq_ignore_ascii_case(b"close"),
                value.trim().eq_ignore_ascii_case("close")
            );
            let by_split = matches!(
                path.rsplit_once('.').map(|(_, ext)| ext),
                Some("css" | "js" | "mjs" | "png" | "jpg" | "jpeg" | "gif" | "svg" | "ico" | "woff" | "woff2" | "webp" | "map")
            );
            proptest::prop_assert_eq!(is_static(&path), by_split);
            let target = format!("{path}{value}");
            proptest::prop_assert_eq!(
                target.bytes().any(|byte| byte == b'%' || byte == b'+'),
                target.contains('%') || target.contains('+')
            );
        }

        /// The byte-wise counts give what the string searches they replaced
        /// gave, on text made of the bytes those searches look for.
        #[test]
        fn target_counts_match_the_searches_they_replaced(
            text in "([/.;a-zA-Z_=1(' <>\"`%+-]|union|SELECT|sleep\\(|\\.\\./|or 1=1|Script|information_schema|waitfor|/etc/passwd){0,40}"
        ) {
            proptest::prop_assert_eq!(path_depth(&text), text.split('/').filter(|s| !s.is_empty()).count());
            let punctuation = text.bytes().filter(|b| matches!(b, b'\'' | b'"' | b'<' | b'>' | b';' | b'`')).count();
            let words = SUSPICIOUS_WORDS.iter().filter(|word| contains_ignore_case(&text, word)).count();
            // Plain text (no `%` or `+`) is searched as it is.
            if !text.contains('%') && !text.contains('+') {
                proptest::prop_assert_eq!(suspicious_tokens(&text), punctuation + words);
            }
        }
    }

    /// One pass over the map reads what a lookup per name read, repeated
    /// and differently cased names included.
    #[test]
    fn headers_read_in_one_pass_are_those_looked_up() {
        use http::header::{self, HeaderMap, HeaderName, HeaderValue};
        let names = [
            "Accept",
            "accept-language",
            "ACCEPT-ENCODING",
            "connection",
            "content-type",
            "cookie",
            "referer",
            "upgrade-insecure-requests",
            "user-agent",
            "x-accept",
            "sec-fetch-mode",
        ];
        for seed in 0u64..400 {
            let mut headers = HeaderMap::new();
            let mut next = crate::test_support::xorshift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            for at in 0..(seed % 12) {
                let name = HeaderName::from_bytes(names[(next() % names.len() as u64) as usize].as_bytes()).unwrap();
                headers.append(name, HeaderValue::from_str(&format!("v{at}")).unwrap());
            }
            let looked_up = ReadHeaders {
                accept: headers.get(header::ACCEPT),
                language: headers.get(header::ACCEPT_LANGUAGE),
                encoding: headers.get(header::ACCEPT_ENCODING),
                connection: headers.get(header::CONNECTION),
                content_type: headers.get(header::CONTENT_TYPE),
                cookie: headers.contains_key(header::COOKIE),
                referer: headers.contains_key(header::REFERER),
                upgrade_insecure: headers.contains_key(header::UPGRADE_INSECURE_REQUESTS),
            };
            assert_eq!(ReadHeaders::of(&headers), looked_up, "{headers:?}");
        }
    }

    /// The remembered traits of a header set are those read afresh, for
    /// sets that differ only in where one name ends, and for a set too
    /// long to remember.
    #[test]
    fn remembered_header_traits_are_the_traits_read_afresh() {
        let config = crate::config::parse_str("[store]\nhash_key = \"test\"\n", "test.toml").unwrap();
        let long: Vec<String> = (0..40).map(|i| format!("x-long-header-name-{i:02}")).collect();
        let sets: Vec<Vec<&str>> = vec![
            vec!["host", "user-agent", "accept", "sec-fetch-mode", "sec-ch-ua"],
            vec!["host", "user-agent", "accept", "sec-fetch-mod", "esec-ch-ua"],
            vec!["authorization", "accept"],
            vec!["x-api-key"],
            vec![],
            long.iter().map(String::as_str).chain(["sec-fetch-site", "user-agent"]).collect(),
        ];
        for _ in 0..2 {
            for names in &sets {
                let headers: Vec<(&str, &str)> = names.iter().map(|name| (*name, "v")).collect();
                crate::test_support::view_under(&config, "GET", "/", &headers, None, |view| {
                    assert_eq!(header_traits(view), traits_of(view), "{names:?}");
                });
            }
        }
    }

    #[test]
    fn names_are_unique_and_in_enum_order() {
        for (index, def) in FEATURES.iter().enumerate() {
            assert_eq!(def.feature as usize, index, "{}", def.name);
            assert_eq!(index_of(def.name), Some(index));
        }
        assert_eq!(schema_hash().len(), 16);
        assert_ne!(hash_of(SCHEMA_VERSION + 1, names()), schema_hash());
    }

    #[test]
    fn user_agent_classes() {
        assert_eq!(ua_class("sqlmap/1.7.2#stable (https://sqlmap.org)"), UaClass::AttackTool);
        assert_eq!(ua_class("Mozilla/5.0 (Hydra)"), UaClass::AttackTool);
        assert_eq!(ua_class("python-requests/2.34.2"), UaClass::Library);
        assert_eq!(ua_class("okhttp/4.12.0"), UaClass::MobileApp);
        assert_eq!(
            ua_class("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"),
            UaClass::Crawler
        );
        assert_eq!(
            ua_class(
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36"
            ),
            UaClass::Browser
        );
        assert_eq!(ua_class(""), UaClass::None);
    }

    /// The automaton decides as the word lists read one by one would, over
    /// every user agent of the fixtures (crawlers and browsers, thousands).
    #[test]
    fn user_agent_classes_match_the_word_lists_one_by_one() {
        let by_lists = |ua: &str| {
            let has = |words: &[&str]| words.iter().any(|word| contains_ignore_case(ua, word));
            if ua.is_empty() {
                UaClass::None
            } else if has(ATTACK_TOOLS) {
                UaClass::AttackTool
            } else if has(HTTP_LIBRARIES) {
                UaClass::Library
            } else if has(MOBILE_LIBRARIES) {
                UaClass::MobileApp
            } else if has(CRAWLER_WORDS) {
                UaClass::Crawler
            } else if ua.starts_with("Mozilla/5.0 (") && (ua.contains("Gecko") || ua.contains("AppleWebKit")) {
                UaClass::Browser
            } else {
                UaClass::Other
            }
        };
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/user-agents");
        let mut compared = 0;
        for file in ["crawlers.yml", "browsers.yml"] {
            let text = std::fs::read_to_string(root.join(file)).unwrap();
            for line in text.lines() {
                let ua = line.trim().trim_start_matches("- ").trim_matches(|c| c == '\'' || c == '"');
                assert_eq!(ua_class(ua), by_lists(ua), "{ua}");
                compared += 1;
            }
        }
        for word in ATTACK_TOOLS.iter().chain(HTTP_LIBRARIES).chain(MOBILE_LIBRARIES).chain(CRAWLER_WORDS) {
            let ua = format!("Mozilla/5.0 (X) {} bot", word.to_uppercase());
            assert_eq!(ua_class(&ua), by_lists(&ua), "{ua}");
        }
        assert!(compared > 1000, "{compared}");
    }

    /// The keys are put together by hand, and must read as the strings
    /// the stores already hold.
    #[test]
    fn hand_made_key_parts_read_as_the_formatted_ones() {
        let config = crate::config::parse_str("[store]\nhash_key = \"test\"\n", "test.toml").unwrap();
        let hasher = KeyHasher::from_config(&config);
        for value in ["", "10.0.0.1", "Mozilla/5.0 (X11; Linux x86_64)", &"x".repeat(300)] {
            assert_eq!(
                std::str::from_utf8(&KeyHasher::item_hex(hasher.item("ip", value.as_bytes()))).unwrap(),
                hasher.hash("ip", value.as_bytes())
            );
        }
        for ip in [
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "192.168.1.20",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:1.2.3.4",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(crate::cidr::ip_text(ip, &mut [0; 64]), ip.to_string());
        }
        let mut text = String::new();
        for route in ["login", &"r".repeat(300)] {
            let keys = counter_keys(
                &mut text,
                route,
                "ip",
                "0123456789abcdef",
                [ModelCounter::Requests10s, ModelCounter::Rhythm],
            );
            assert_eq!(&*keys[0], format!("ml:{route}:ip:0123456789abcdef:r10"));
            assert_eq!(&*keys[1], format!("ml:{route}:ip:0123456789abcdef:gap"));
        }
        assert_eq!(hasher.item_of("fp", &[b"a", b"|", b"bc"]), hasher.item("fp", b"a|bc"));
    }

    /// Each scope's keys are remembered per thread with the route, the
    /// address, the fingerprint or the client: a remembered key must be
    /// the key built afresh, on every route, and a client's remembered
    /// items those of its address and user agent (two clients share the
    /// address, and each user agent is also sent from another address).
    #[test]
    fn remembered_keys_are_the_keys_of_the_route_and_the_client() {
        let config = crate::config::parse_str(
            "[store]\nhash_key = \"test\"\n[[route]]\nname = \"a\"\nprofile = \"api\"\npath = \"/a\"\n[[route]]\nname = \"b\"\nprofile = \"api\"\npath = \"/b\"\n",
            "test.toml",
        )
        .unwrap();
        let hasher = KeyHasher::from_config(&config);
        let extractor = FeatureExtractor::new(hasher.clone());
        let clients = [
            ("192.0.2.1", "Mozilla/5.0 (X11; Linux x86_64)"),
            ("192.0.2.1", "curl/8.5.0"),
            ("198.51.100.7", "curl/8.5.0"),
            ("198.51.100.7", "Mozilla/5.0 (X11; Linux x86_64)"),
        ];
        for (address, user_agent) in clients.into_iter().cycle().take(clients.len() * 2) {
            for (target, route) in [("/a", "a"), ("/b", "b"), ("/a", "a")] {
                let keys: Vec<String> = view_from(
                    &config,
                    target,
                    &[("user-agent", user_agent), ("accept", "*/*")],
                    address.parse().unwrap(),
                    |view| {
                        let mut plan = CounterPlan::default();
                        let keys = extractor.plan(view, None, &mut plan);
                        assert_eq!(keys.user_agent, UaFacts::of(user_agent));
                        let fingerprint = hasher.hash("fp", view.fingerprint().as_bytes());
                        let ip = hasher.hash("ip", address.as_bytes());
                        let client = hasher.hash("client", format!("{address}\n{user_agent}").as_bytes());
                        let items = plan.distinct_items();
                        assert_eq!(
                            items,
                            [
                                Some(hasher.item("path", target.as_bytes())),
                                Some(hasher.item("ua", user_agent.as_bytes())),
                                Some(hasher.item("ip", address.as_bytes())),
                                Some(hasher.item("ua", user_agent.as_bytes())),
                            ]
                        );
                        let expected = [
                            format!("ml:{route}:ip:{ip}:r10"),
                            format!("ml:{route}:ip:{ip}:r60"),
                            format!("ml:{route}:ip:{ip}:paths"),
                            format!("ml:{route}:ip:{ip}:uas"),
                            format!("ml:{route}:ip:{ip}:gap"),
                            format!("ml:{route}:fp:{fingerprint}:r300"),
                            format!("ml:{route}:fp:{fingerprint}:ips"),
                            format!("ml:{route}:fp:{fingerprint}:uas"),
                            format!("ml:{route}:site:all:r300"),
                            format!("ml:{route}:cl:{client}:pg600"),
                            format!("ml:{route}:cl:{client}:sub600"),
                            format!("ml:{route}:cl:{client}:pg30"),
                        ];
                        let planned: Vec<String> = plan.ops().iter().map(|op| op.key().to_string()).collect();
                        assert_eq!(planned, expected);
                        planned
                    },
                );
                assert!(keys.iter().all(|key| key.starts_with(&format!("ml:{route}:"))));
            }
        }
    }

    /// A GET of `target` with `headers` from `client_ip` (what
    /// `test_support::view_under` gives, from another address).
    fn view_from<T>(
        config: &crate::config::Config,
        target: &str,
        headers: &[(&str, &str)],
        client_ip: std::net::IpAddr,
        f: impl FnOnce(&RequestView<'_>) -> T,
    ) -> T {
        let routes = crate::routes::RouteTable::from_config(config).unwrap();
        let uri: http::Uri = target.parse().unwrap();
        let mut map = http::HeaderMap::new();
        for (name, value) in headers {
            map.append(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        let normalized = crate::normalize::normalize_path(uri.path(), true);
        let route = routes.find(&http::Method::GET, &normalized).clone();
        let view = RequestView::new(
            &http::Method::GET,
            http::Version::HTTP_11,
            &uri,
            &normalized,
            &map,
            client_ip,
            &route,
            None,
        );
        f(&view)
    }

    #[test]
    fn suspicious_tokens_are_counted_after_decoding() {
        assert_eq!(suspicious_tokens("/item?id=1"), 0);
        assert!(suspicious_tokens("/item?id=1%27%20UNION%20SELECT%201--") >= 3);
        assert!(suspicious_tokens("/a/../../etc/passwd") >= 2);
    }
}
