//! The route table: which protection profile a request falls under.
//!
//! Routes are matched in configuration order on the normalized path (see
//! [`crate::normalize`]) and the method; the first match wins and requests
//! no route covers fall under an implicit `default` route with no limits.

use std::sync::Arc;

use regex_automata::meta::Regex;

use crate::config::{
    AbuseConfig, Config, Invalid, LoginConfig, PaymentConfig, RateLimitConfig, RouteConfig, RouteMode, StoreFailure,
};

/// What kind of endpoint a route is; detectors tune themselves by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteProfile {
    Login,
    Payment,
    Api,
    Default,
    /// An OAuth 2.0 token endpoint: a login endpoint (`grant_type=password`)
    /// whose failures are `400` with `"error":"invalid_grant"`.
    OAuthToken,
}

impl RouteProfile {
    pub const NAMES: [&'static str; 5] = ["login", "payment", "api", "default", "oauth_token"];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "login" => Some(RouteProfile::Login),
            "payment" => Some(RouteProfile::Payment),
            "api" => Some(RouteProfile::Api),
            "default" => Some(RouteProfile::Default),
            "oauth_token" => Some(RouteProfile::OAuthToken),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

#[derive(Debug)]
enum PathMatcher {
    Exact(String),
    /// An exact path that also covers the same path with a format suffix
    /// (`/login.json`, `/login.`) or trailing spaces (`/login%20`): how
    /// frameworks route `/login(.:format)`, so on login routes the
    /// suffixed path is the same endpoint, not a way around the route.
    ExactWithSuffix(String),
    /// `/api/payments/*` covers `/api/payments` and everything below it.
    Prefix(String),
    Regex(Regex),
    Any,
}

impl PathMatcher {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatcher::Exact(exact) => path == exact,
            PathMatcher::ExactWithSuffix(exact) => path.strip_prefix(exact.as_str()).is_some_and(is_format_suffix),
            PathMatcher::Prefix(prefix) => {
                path.strip_prefix(prefix.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
                    || prefix == "/"
            }
            PathMatcher::Regex(regex) => regex.is_match(path),
            PathMatcher::Any => true,
        }
    }
}

/// What may follow a login route's exact path on the same endpoint:
/// nothing, a format (`.json`, `.xml`, or a bare `.`), then spaces.
fn is_format_suffix(rest: &str) -> bool {
    let rest = rest.trim_end_matches(char::is_whitespace);
    match rest.strip_prefix('.') {
        Some(format) => format.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
        None => rest.is_empty(),
    }
}

/// Where a login route's username (and password) are, and what success and
/// failure look like.
#[derive(Debug, Clone)]
pub struct LoginSpec {
    pub username_field: Option<String>,
    pub username_json_pointer: Option<String>,
    pub password_field: Option<String>,
    pub password_json_pointer: Option<String>,
    pub failure_statuses: Vec<u16>,
    pub success_statuses: Vec<u16>,
    pub failure_header: Option<http::HeaderName>,
    pub failure_body_contains: Option<String>,
}

impl LoginSpec {
    /// The username in a login body, if the route says where it is and the
    /// body has it.
    pub fn username(&self, content_type: Option<&str>, body: &[u8]) -> Option<String> {
        body_field(content_type, body, self.username_field.as_deref(), self.username_json_pointer.as_deref())
    }

    /// The password, for the breached-password check only: the caller
    /// hashes it at once and keeps nothing else.
    pub fn password(&self, content_type: Option<&str>, body: &[u8]) -> Option<String> {
        body_field(content_type, body, self.password_field.as_deref(), self.password_json_pointer.as_deref())
    }
}

/// A form field or a JSON pointer's string (or number) in a request body.
fn body_field(content_type: Option<&str>, body: &[u8], field: Option<&str>, pointer: Option<&str>) -> Option<String> {
    let looks_json = content_type
        .is_some_and(|content_type| content_type.as_bytes().windows(4).any(|word| word.eq_ignore_ascii_case(b"json")))
        || body.first() == Some(&b'{');
    if looks_json {
        return crate::json_pointer::text_at(body, pointer?);
    }
    crate::form::field(body, field?)
}

#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    pub profile: RouteProfile,
    pub mode: RouteMode,
    /// What to do while the shared store is unavailable.
    pub store_failure: StoreFailure,
    pub rate_limit: Option<RateLimitConfig>,
    /// Limit per autonomous system of the client (needs `[network]`).
    pub asn_rate_limit: Option<RateLimitConfig>,
    /// Quota per OAuth client (`client_id` in the body or HTTP Basic).
    pub client_quota: Option<RateLimitConfig>,
    pub login: Option<LoginSpec>,
    /// Credential-abuse thresholds, on login routes.
    pub abuse: Option<AbuseConfig>,
    /// Card extraction, outcome and card-testing thresholds, on payment routes.
    pub payment: Option<PaymentConfig>,
    matcher: PathMatcher,
    methods: Vec<http::Method>,
}

impl Route {
    /// Whether palisade reads this route's body before forwarding it.
    pub fn inspects_body(&self) -> bool {
        self.login.is_some() || self.payment.is_some()
    }

    /// Whether the start of the upstream's answer is read for the outcome
    /// (a login failure marker; a payment's decline code or marker).
    pub fn reads_response_body(&self) -> bool {
        let login = self.login.as_ref().is_some_and(|login| login.failure_body_contains.is_some());
        let payment = self.payment.as_ref().is_some_and(|payment| {
            !payment.decline_json_pointers.is_empty()
                || payment.status_json_pointer.is_some()
                || payment.decline_body_contains.is_some()
        });
        login || payment
    }

    fn matches(&self, method: &http::Method, path: &str) -> bool {
        // HTTP methods are case-sensitive, but frameworks that upper-case
        // them (Django, Werkzeug) run their POST view for `post /login`;
        // matching loosely only ever puts more requests under a route.
        let method_matches =
            self.methods.is_empty() || self.methods.iter().any(|m| m.as_str().eq_ignore_ascii_case(method.as_str()));
        method_matches && self.matcher.matches(path)
    }
}

#[derive(Debug)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
    fallback: Arc<Route>,
    case_insensitive: bool,
}

impl RouteTable {
    pub fn from_config(config: &Config) -> Result<Self, Vec<Invalid>> {
        let mut problems = Vec::new();
        let mut routes = Vec::new();
        for (index, route) in config.routes.iter().enumerate() {
            match build_route(index, route, config.paths.case_insensitive) {
                Ok(route) => routes.push(Arc::new(route)),
                Err(mut errs) => problems.append(&mut errs),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let fallback = Arc::new(Route {
            name: Arc::from("default"),
            profile: RouteProfile::Default,
            mode: RouteMode::Enforce,
            store_failure: StoreFailure::Open,
            rate_limit: None,
            asn_rate_limit: None,
            client_quota: None,
            login: None,
            abuse: None,
            payment: None,
            matcher: PathMatcher::Any,
            methods: Vec::new(),
        });
        Ok(RouteTable { routes, fallback, case_insensitive: config.paths.case_insensitive })
    }

    pub fn case_insensitive(&self) -> bool {
        self.case_insensitive
    }

    /// The route for a normalized path.
    pub fn find(&self, method: &http::Method, normalized_path: &str) -> &Arc<Route> {
        self.routes.iter().find(|route| route.matches(method, normalized_path)).unwrap_or(&self.fallback)
    }

    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.iter().chain(std::iter::once(&self.fallback))
    }
}

fn build_route(index: usize, config: &RouteConfig, case_insensitive: bool) -> Result<Route, Vec<Invalid>> {
    let key = |field: &str| format!("route[{index}].{field}");
    let mut problems = Vec::new();
    let profile = RouteProfile::parse(config.profile.get_ref()).unwrap_or_else(|| {
        problems.push(Invalid::new(
            config.profile.span(),
            key("profile"),
            format!(
                "unknown route profile {:?}; use one of {}",
                config.profile.get_ref(),
                RouteProfile::NAMES.join(", ")
            ),
        ));
        RouteProfile::Default
    });
    let matcher = match (&config.path, &config.path_regex) {
        (Some(path), None) => {
            let text = path.get_ref();
            if !text.starts_with('/') {
                problems.push(Invalid::new(path.span(), key("path"), "a route path starts with '/'"));
            }
            let canonical = |p: &str| crate::normalize::normalize_path(p, case_insensitive);
            match text.strip_suffix("/*") {
                Some(prefix) => PathMatcher::Prefix(canonical(prefix)),
                None => PathMatcher::Exact(canonical(text)),
            }
        }
        (None, Some(pattern)) => match Regex::new(pattern.get_ref()) {
            Ok(regex) => PathMatcher::Regex(regex),
            Err(error) => {
                problems.push(Invalid::new(pattern.span(), key("path_regex"), regex_problem(&error)));
                PathMatcher::Any
            }
        },
        _ => {
            problems.push(Invalid::new(
                config.profile.span(),
                format!("route[{index}]"),
                "a route needs exactly one of `path` or `path_regex`",
            ));
            PathMatcher::Any
        }
    };
    let mut methods = Vec::new();
    for method in &config.methods {
        match http::Method::from_bytes(method.get_ref().to_ascii_uppercase().as_bytes()) {
            Ok(m) => methods.push(m),
            Err(_) => problems.push(Invalid::new(method.span(), key("methods"), "not an HTTP method")),
        }
    }
    if let Some(limit) = &config.client_quota
        && let Err(message) = check_rate_limit(limit)
    {
        problems.push(Invalid::new(config.profile.span(), key("client_quota"), message.to_string()));
    }
    if let Some(limit) = &config.asn_rate_limit
        && let Err(message) = check_rate_limit(limit)
    {
        problems.push(Invalid::new(config.profile.span(), key("asn_rate_limit"), message.to_string()));
    }
    if let Some(limit) = &config.rate_limit
        && let Err(message) = check_rate_limit(limit)
    {
        problems.push(Invalid::new(config.profile.span(), key("rate_limit"), message.to_string()));
    }
    let login_config = match (profile, &config.login) {
        (RouteProfile::Login, spec) => Some(spec.clone().unwrap_or_default()),
        (RouteProfile::OAuthToken, spec) => Some(spec.clone().unwrap_or_else(LoginConfig::oauth_token)),
        _ => None,
    };
    let abuse = login_config.as_ref().map(|login| login.abuse.clone());
    if let Some(abuse) = &abuse {
        check_abuse(abuse, &key, &mut problems);
    }
    let login = match (profile, login_config) {
        (RouteProfile::Login | RouteProfile::OAuthToken, Some(spec)) => Some(login_spec(spec, &key, &mut problems)),
        (_, _) if config.login.is_some() => {
            problems.push(Invalid::new(
                config.profile.span(),
                key("login"),
                "`login` settings only apply to routes with profile = \"login\" or \"oauth_token\"",
            ));
            None
        }
        _ => None,
    };
    let payment = match (profile, &config.payment) {
        (RouteProfile::Payment, spec) => Some(spec.clone().unwrap_or_default()),
        (_, Some(_)) => {
            problems.push(Invalid::new(
                config.profile.span(),
                key("payment"),
                "`payment` settings only apply to routes with profile = \"payment\"",
            ));
            None
        }
        _ => None,
    };
    for (name, message) in payment.iter().flat_map(PaymentConfig::problems) {
        problems.push(Invalid::new(config.profile.span(), key(&format!("payment.{name}")), message));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    // A login endpoint answers under its format suffixes too.
    let matcher = match matcher {
        PathMatcher::Exact(path) if login.is_some() => PathMatcher::ExactWithSuffix(path),
        other => other,
    };
    Ok(Route {
        name: Arc::from(config.name.as_str()),
        profile,
        mode: config.mode,
        store_failure: config.on_store_failure,
        rate_limit: config.rate_limit,
        asn_rate_limit: config.asn_rate_limit,
        client_quota: config.client_quota,
        login,
        abuse,
        payment,
        matcher,
        methods,
    })
}

fn login_spec(config: LoginConfig, key: &dyn Fn(&str) -> String, problems: &mut Vec<Invalid>) -> LoginSpec {
    for (pointer, name) in [
        (&config.username_json_pointer, "login.username_json_pointer"),
        (&config.password_json_pointer, "login.password_json_pointer"),
    ] {
        if let Some(pointer) = pointer
            && !pointer.get_ref().is_empty()
            && !pointer.get_ref().starts_with('/')
        {
            problems.push(Invalid::new(
                pointer.span(),
                key(name),
                "a JSON pointer starts with '/', e.g. \"/username\" or \"/credentials/user\"",
            ));
        }
    }
    let failure_header = config.failure_header.as_ref().and_then(|name| {
        http::HeaderName::from_bytes(name.get_ref().as_bytes())
            .map_err(|_| {
                problems.push(Invalid::new(name.span(), key("login.failure_header"), "not a valid header name"))
            })
            .ok()
    });
    LoginSpec {
        username_field: config.username_field,
        username_json_pointer: config.username_json_pointer.map(|p| p.into_inner()),
        password_field: config.password_field,
        password_json_pointer: config.password_json_pointer.map(|p| p.into_inner()),
        failure_statuses: config.failure_statuses,
        success_statuses: config.success_statuses,
        failure_header,
        failure_body_contains: config.failure_body_contains,
    }
}

fn check_abuse(abuse: &AbuseConfig, key: &dyn Fn(&str) -> String, problems: &mut Vec<Invalid>) {
    for (value, name) in [
        (abuse.ip_failure_ratio, "ip_failure_ratio"),
        (abuse.subnet_failure_ratio, "subnet_failure_ratio"),
        (abuse.fingerprint_failure_ratio, "fingerprint_failure_ratio"),
        (abuse.site_failure_ratio_rise, "site_failure_ratio_rise"),
    ] {
        if !(0.0..=1.0).contains(&value) {
            problems.push(Invalid::new(0..0, key(&format!("login.abuse.{name}")), "a ratio between 0.0 and 1.0"));
        }
    }
    for (value, name) in [
        (abuse.window_secs, "window_secs"),
        (abuse.ban_secs, "ban_secs"),
        (abuse.baseline_half_life_secs, "baseline_half_life_secs"),
    ] {
        if value == 0 {
            problems.push(Invalid::new(0..0, key(&format!("login.abuse.{name}")), "must be at least 1 second"));
        }
    }
}

/// A regex build error in one line: the syntax error's own words when
/// there is one ("unclosed group"), not just "error parsing pattern 0".
pub fn regex_problem(error: &regex_automata::meta::BuildError) -> String {
    let detail = match error.syntax_error() {
        Some(syntax) => {
            let text = syntax.to_string();
            text.lines().find_map(|line| line.strip_prefix("error: ")).unwrap_or(&text).trim().to_string()
        }
        None => error.to_string(),
    };
    format!("bad regex: {detail}")
}

/// Checks a limit's numbers; shared by routes and partner quotas.
pub fn check_rate_limit(limit: &RateLimitConfig) -> Result<(), crate::error::Error> {
    if limit.requests == 0 || limit.period_secs == 0 || limit.burst == Some(0) {
        return Err(crate::error::Error::config("requests, period_secs and burst must be at least 1"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        RouteTable::from_config(&Config::default()).unwrap()
    }

    #[test]
    fn default_routes_protect_login_and_payments() {
        let table = table();
        assert_eq!(table.find(&http::Method::POST, "/login").profile, RouteProfile::Login);
        assert_eq!(table.find(&http::Method::GET, "/login").profile, RouteProfile::Default);
        for method in [http::Method::PUT, http::Method::PATCH] {
            assert_eq!(table.find(&method, "/login").profile, RouteProfile::Login, "{method}");
        }
        for path in ["/login.json", "/login.", "/login ", "/login.xml  "] {
            assert_eq!(table.find(&http::Method::POST, path).profile, RouteProfile::Login, "{path:?}");
        }
        for path in ["/loginx", "/login.json/x", "/login/x", "/login.j%n"] {
            assert_eq!(table.find(&http::Method::POST, path).profile, RouteProfile::Default, "{path:?}");
        }
        assert_eq!(table.find(&http::Method::POST, "/api/payments").profile, RouteProfile::Payment);
        assert_eq!(table.find(&http::Method::POST, "/api/payments/42").profile, RouteProfile::Payment);
        assert_eq!(table.find(&http::Method::POST, "/api/paymentsx").profile, RouteProfile::Default);
    }

    #[test]
    fn methods_match_whatever_their_case() {
        let table = table();
        for method in ["post", "Post", "pOST"] {
            let method = http::Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(table.find(&method, "/login").profile, RouteProfile::Login, "{method}");
        }
        assert_eq!(table.find(&http::Method::from_bytes(b"get").unwrap(), "/login").profile, RouteProfile::Default);
    }

    #[test]
    fn username_from_form_and_json() {
        let spec = LoginSpec {
            username_field: Some("username".into()),
            username_json_pointer: Some("/user/name".into()),
            password_field: Some("password".into()),
            password_json_pointer: Some("/password".into()),
            failure_statuses: vec![401],
            success_statuses: vec![],
            failure_header: None,
            failure_body_contains: None,
        };
        assert_eq!(
            spec.username(Some("application/x-www-form-urlencoded"), b"username=al%40x.io&password=pw").as_deref(),
            Some("al@x.io")
        );
        assert_eq!(
            spec.username(Some("application/json"), br#"{"user":{"name":"bo"},"password":"x"}"#).as_deref(),
            Some("bo")
        );
        assert_eq!(spec.username(Some("application/json"), b"{not json"), None);
    }
}
