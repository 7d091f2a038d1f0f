//! The configuration schema and its defaults.
//!
//! Every field has a default, so an empty file (or no file) is a working
//! configuration: `POST /login` is protected as a login route and
//! `/api/payments` as a payment route. Values that need checking beyond
//! their type (CIDRs, path patterns, profiles, regexes) are kept as
//! [`Spanned`] strings so that [`super::validate`] can point at their line.

use serde::Deserialize;
pub use toml::Spanned;

/// Wrap a default value in a span that points nowhere (it came from code).
pub fn unspanned<T>(value: T) -> Spanned<T> {
    Spanned::new(0..0, value)
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    /// TLS termination; absent means plain HTTP on `server.listen`.
    pub tls: Option<TlsConfig>,
    pub limits: LimitsConfig,
    pub timeouts: TimeoutsConfig,
    pub decision: DecisionConfig,
    pub headers: HeadersConfig,
    pub decision_log: DecisionLogConfig,
    pub paths: PathConfig,
    pub identify: IdentifyConfig,
    #[serde(rename = "partner")]
    pub partners: Vec<PartnerConfig>,
    #[serde(rename = "route")]
    pub routes: Vec<RouteConfig>,
    pub signatures: SignaturesConfig,
    pub store: StoreConfig,
    pub breach: BreachConfig,
    /// Network context: ASN and organisation per client address.
    pub network: NetworkConfig,
    /// Session and clearance cookies, the proof-of-work challenge and the
    /// under-attack state (`[session]`, see docs/session.md).
    pub session: SessionConfig,
    /// Capture mode (`[capture]`); absent means nothing is captured.
    pub capture: Option<CaptureConfig>,
    /// Classifier models (`[[model]]`, see docs/model.md).
    #[serde(rename = "model")]
    pub models: Vec<ModelConfig>,
    /// Compute model features even without a model (`palisade train`
    /// sets it; not a configuration key).
    #[serde(skip)]
    pub collect_features: bool,
    /// Sidecar mode (`[sidecar]`): answer authorization requests from
    /// nginx or Envoy instead of proxying; absent means reverse proxy.
    pub sidecar: Option<SidecarConfig>,
    /// The admin API on `server.admin` (`[admin]`).
    pub admin: AdminConfig,
    /// The folder of the configuration file; relative paths in it are
    /// relative to this folder. `None` for the built-in defaults.
    #[serde(skip)]
    pub base_dir: Option<std::path::PathBuf>,
    /// The text the configuration was parsed from, so that problems found
    /// later (when it is compiled) can still be given their line.
    #[serde(skip)]
    pub source: SourceText,
}

/// The text a configuration was read from. Not part of what the
/// configuration means: two configurations that say the same are equal
/// whatever their spelling.
#[derive(Debug, Clone, Default)]
pub struct SourceText(pub Option<std::sync::Arc<str>>);

impl PartialEq for SourceText {
    fn eq(&self, _other: &SourceText) -> bool {
        true
    }
}

impl Config {
    /// A path from the configuration, relative to the configuration file.
    pub fn resolve_path(&self, path: &str) -> std::path::PathBuf {
        let path = std::path::Path::new(path);
        match &self.base_dir {
            Some(base) if path.is_relative() => base.join(path),
            _ => path.to_path_buf(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerConfig::default(),
            tls: None,
            limits: LimitsConfig::default(),
            timeouts: TimeoutsConfig::default(),
            decision: DecisionConfig::default(),
            headers: HeadersConfig::default(),
            decision_log: DecisionLogConfig::default(),
            paths: PathConfig::default(),
            identify: IdentifyConfig::default(),
            partners: Vec::new(),
            routes: default_routes(),
            signatures: SignaturesConfig::default(),
            store: StoreConfig::default(),
            breach: BreachConfig::default(),
            network: NetworkConfig::default(),
            session: SessionConfig::default(),
            capture: None,
            models: Vec::new(),
            collect_features: false,
            sidecar: None,
            admin: AdminConfig::default(),
            base_dir: None,
            source: SourceText::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the proxy listens on.
    pub listen: Spanned<String>,
    /// Base URL of the protected application (`http://host:port`).
    pub upstream: Spanned<String>,
    /// Address of the admin listener (`/metrics`, `/healthz`).
    pub admin: Spanned<String>,
    /// Peers whose `X-Forwarded-For` is believed (CIDRs).
    pub trusted_proxies: Vec<Spanned<String>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: unspanned("127.0.0.1:8080".into()),
            upstream: unspanned("http://127.0.0.1:3000".into()),
            admin: unspanned("127.0.0.1:9090".into()),
            trusted_proxies: Vec::new(),
        }
    }
}

/// TLS termination. With this section, `server.listen` speaks HTTPS (TLS
/// 1.2 and 1.3, HTTP/2 or HTTP/1.1 chosen by ALPN) and every connection
/// gets a JA4 fingerprint of its ClientHello. Relative paths are relative
/// to the configuration file. Both files are read by `palisade check`, at
/// start and on reload (SIGHUP), so a renewed certificate is picked up by
/// new connections without a restart.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, the server's certificate first.
    pub cert_path: Spanned<String>,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 RSA or
    /// SEC1 EC).
    pub key_path: Spanned<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request head (request line and headers) accepted, in bytes.
    /// hyper cannot go below 8192.
    pub max_header_bytes: usize,
    /// Most header fields accepted in one request.
    pub max_headers: usize,
    /// Largest body read on routes whose body is inspected (login).
    pub max_inspected_body_bytes: usize,
    /// Open connections one client address may hold (IPv6: one /64);
    /// trusted proxies are exempt. More are refused at accept.
    pub max_connections_per_client: usize,
    /// Open client connections in all; 0: derived from the process's
    /// file-descriptor limit. Near it idle connections are shed, at it new
    /// ones are answered 503 and closed.
    pub max_connections: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            max_inspected_body_bytes: 64 * 1024,
            max_connections_per_client: 256,
            max_connections: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsConfig {
    /// Time a client has to send a complete request head (HTTP/1).
    pub header_read_ms: u64,
    /// A client connection with no bytes moving for this long is closed.
    pub idle_ms: u64,
    /// Time to open a TCP connection to the upstream.
    pub upstream_connect_ms: u64,
    /// Time from forwarding a request to receiving the upstream's response head.
    pub upstream_response_ms: u64,
    /// Time in-flight requests get to finish after SIGTERM/SIGINT.
    pub shutdown_grace_ms: u64,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        TimeoutsConfig {
            header_read_ms: 10_000,
            idle_ms: 60_000,
            upstream_connect_ms: 2_000,
            upstream_response_ms: 30_000,
            shutdown_grace_ms: 30_000,
        }
    }
}

/// How signals turn into a score and an action.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionConfig {
    /// Score of a request no detector said anything about (99 = human).
    pub base_score: u8,
    /// At or below this score the request is logged.
    pub log_at_or_below: u8,
    /// At or below this score the request is challenged.
    pub challenge_at_or_below: u8,
    /// At or below this score the request is blocked.
    pub block_at_or_below: u8,
}

impl Default for DecisionConfig {
    fn default() -> Self {
        DecisionConfig { base_score: 80, log_at_or_below: 50, challenge_at_or_below: 30, block_at_or_below: 10 }
    }
}

/// Names of the request headers that tell the application the decision.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeadersConfig {
    pub score: Spanned<String>,
    pub detections: Spanned<String>,
    pub request_id: Spanned<String>,
    pub action: Spanned<String>,
    pub partner: Spanned<String>,
}

impl Default for HeadersConfig {
    fn default() -> Self {
        HeadersConfig {
            score: unspanned("X-Palisade-Score".into()),
            detections: unspanned("X-Palisade-Detections".into()),
            request_id: unspanned("X-Palisade-Request-Id".into()),
            action: unspanned("X-Palisade-Action".into()),
            partner: unspanned("X-Palisade-Partner".into()),
        }
    }
}

/// The admin API's settings.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Bearer token for the admin API's changes (lift or add a ban,
    /// reload); empty: the environment's `PALISADE_ADMIN_TOKEN`, and
    /// without either only the read-only endpoints answer.
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionLogConfig {
    /// `-` for standard output, `off` to disable, or a file path (appended).
    pub path: String,
    /// Fraction of allowed requests also logged (0.0 to 1.0).
    pub sample_allowed: f64,
    /// Log every model feature of each logged request (for checking a
    /// model's inputs; off by default: it makes lines long).
    pub model_features: bool,
    /// Lines per minute for one client, action and first detection; more
    /// are left out and counted in the next line's `suppressed`. 0: no cap.
    pub max_repeats_per_minute: u32,
    /// Lines per second in all; more are left out and counted
    /// (`palisade_decision_log_suppressed_total`). 0: no cap.
    pub max_lines_per_second: u32,
    /// Rotate the log file before it would grow past this many bytes
    /// (standard output is never rotated); 0: never.
    pub max_file_bytes: u64,
    /// Rotated files kept (`.1` … `.N`); older ones are deleted.
    pub max_files: usize,
}

impl Default for DecisionLogConfig {
    fn default() -> Self {
        DecisionLogConfig {
            path: "-".into(),
            sample_allowed: 0.0,
            model_features: false,
            max_repeats_per_minute: 100,
            max_lines_per_second: 1000,
            max_file_bytes: 100 * 1024 * 1024,
            max_files: 5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PathConfig {
    /// Match routes case-insensitively (`/Login` is `/login`).
    pub case_insensitive: bool,
}

impl Default for PathConfig {
    fn default() -> Self {
        PathConfig { case_insensitive: true }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentifyConfig {
    /// Header carrying a partner's API key.
    pub api_key_header: Spanned<String>,
}

impl Default for IdentifyConfig {
    fn default() -> Self {
        IdentifyConfig { api_key_header: unspanned("X-API-Key".into()) }
    }
}

/// An allowlisted partner integration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerConfig {
    pub name: String,
    /// SHA-256 hex digests of the partner's API keys (never the keys).
    #[serde(default)]
    pub api_key_sha256: Vec<Spanned<String>>,
    /// Networks the partner calls from.
    #[serde(default)]
    pub cidrs: Vec<Spanned<String>>,
    /// The partner's own quota; over it, requests get 429.
    pub quota: Option<RateLimitConfig>,
    /// Requests signed with HTTP Message Signatures (RFC 9421, Web Bot Auth).
    pub signature: Option<PartnerSignatureConfig>,
    /// Client certificates (mutual TLS; needs `[tls]`).
    pub mtls: Option<PartnerMtlsConfig>,
}

/// How a partner signs its requests (RFC 9421 HTTP Message Signatures, as
/// profiled by Web Bot Auth). A valid signature identifies the partner; an
/// invalid one on a request that names the partner's key is blocked
/// (`partner.signature_invalid`), never judged as an anonymous request.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerSignatureConfig {
    /// Public keys written here.
    #[serde(default)]
    pub keys: Vec<SignatureKeyConfig>,
    /// A local JWKS file (`{"keys": [...]}`, as a Web Bot Auth key
    /// directory serves it), relative to the configuration file. Never
    /// fetched: copy the partner's directory here when it rotates keys.
    pub key_directory: Option<Spanned<String>>,
    /// Components every signature must cover. `content-digest` is added
    /// for requests with a body, whatever this says.
    #[serde(default = "default_signed_components")]
    pub components: Vec<Spanned<String>>,
    /// Oldest `created` accepted, in seconds.
    #[serde(default = "default_signature_max_age")]
    pub max_age_secs: u64,
    /// Clock difference tolerated on `created` and `expires`, in seconds.
    #[serde(default = "default_signature_clock_skew")]
    pub clock_skew_secs: u64,
    /// The `tag` parameter the signatures carry; empty accepts any.
    #[serde(default = "default_signature_tag")]
    pub tag: String,
    /// The `Signature-Agent` the partner sends; when set, it must be
    /// present, covered by the signature and equal to this.
    pub agent: Option<String>,
    /// Refuse signatures without a `nonce` (a nonce is checked for replay
    /// whenever there is one).
    #[serde(default)]
    pub require_nonce: bool,
}

fn default_signed_components() -> Vec<Spanned<String>> {
    ["@method", "@authority", "@path"].into_iter().map(|c| unspanned(c.to_string())).collect()
}

fn default_signature_max_age() -> u64 {
    300
}

fn default_signature_clock_skew() -> u64 {
    30
}

fn default_signature_tag() -> String {
    "web-bot-auth".into()
}

/// One public key of a signing partner.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureKeyConfig {
    /// The `keyid` signatures name; the key's JWK thumbprint is accepted too.
    pub keyid: Option<String>,
    /// `ed25519` or `ecdsa-p256-sha256`.
    #[serde(default = "default_signature_alg")]
    pub alg: Spanned<String>,
    /// The raw public key in base64 or base64url: 32 bytes for Ed25519, the
    /// 65-byte uncompressed point for P-256.
    pub public_key: Spanned<String>,
}

fn default_signature_alg() -> Spanned<String> {
    unspanned("ed25519".into())
}

/// Which client certificates prove the partner. The certificate must chain
/// to `ca_path` (checked in the TLS handshake), and then be one of
/// `cert_sha256`, or carry `subject_cn`, or, with `any_from_ca`, be any
/// certificate that CA issued.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerMtlsConfig {
    /// PEM file with the CA certificate that issues the partner's client
    /// certificates (relative to the configuration file).
    pub ca_path: Spanned<String>,
    /// SHA-256 fingerprints (hex, `:` allowed) of pinned client certificates.
    #[serde(default)]
    pub cert_sha256: Vec<Spanned<String>>,
    /// A subject common name: any certificate from the CA with this CN.
    pub subject_cn: Option<String>,
    /// Every certificate the CA issued is the partner's (CA-wide trust).
    #[serde(default)]
    pub any_from_ca: bool,
}

/// A GCRA limit: `requests` per `period_secs`, with bursts up to `burst`
/// (defaults to `requests`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub requests: u32,
    pub period_secs: u64,
    pub burst: Option<u32>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RouteMode {
    /// Decisions are carried out.
    #[default]
    Enforce,
    /// Decisions are logged ("would have …") and every request passes.
    Monitor,
}

/// What a route does while the shared store (Redis) is unavailable.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreFailure {
    /// Keep serving, counting on this replica's own counters.
    #[default]
    Open,
    /// Answer 503 (detection `store.unavailable`) until Redis is back.
    Closed,
}

/// A route: which requests it covers and how they are protected.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: String,
    /// `login`, `payment`, `api` or `default`.
    pub profile: Spanned<String>,
    /// Exact normalized path, or a prefix when it ends in `/*`.
    pub path: Option<Spanned<String>>,
    /// A regex over the normalized path, instead of `path`.
    pub path_regex: Option<Spanned<String>>,
    /// Methods covered; empty means every method.
    #[serde(default)]
    pub methods: Vec<Spanned<String>>,
    #[serde(default)]
    pub mode: RouteMode,
    /// While Redis is unavailable: `open` (serve on local counters) or
    /// `closed` (answer 503).
    #[serde(default)]
    pub on_store_failure: StoreFailure,
    /// Limit per client address on this route.
    pub rate_limit: Option<RateLimitConfig>,
    /// Limit per autonomous system (ASN, from `[network] mmdb_path`) on
    /// this route: a distributed attack from one hosting network is one
    /// counter, whatever its addresses.
    pub asn_rate_limit: Option<RateLimitConfig>,
    /// Quota per OAuth client: `client_id` from the form body or HTTP
    /// Basic authentication (hashed before it is counted). A `client_id` is
    /// not a secret, so it never makes a request a partner.
    pub client_quota: Option<RateLimitConfig>,
    /// Where the username is, for login routes.
    pub login: Option<LoginConfig>,
    /// Where the card is and what a decline looks like, for payment
    /// routes (see docs/payments.md); absent: the defaults.
    pub payment: Option<PaymentConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginConfig {
    /// Form field (`application/x-www-form-urlencoded`) holding the username.
    pub username_field: Option<String>,
    /// JSON pointer (RFC 6901) to the username in a JSON body.
    pub username_json_pointer: Option<Spanned<String>>,
    /// Form field holding the password (read only for the breached-password
    /// check, hashed at once, never stored or logged).
    pub password_field: Option<String>,
    /// JSON pointer to the password in a JSON body.
    pub password_json_pointer: Option<Spanned<String>>,
    /// Upstream statuses that mean the login failed.
    pub failure_statuses: Vec<u16>,
    /// Upstream statuses that mean success; empty: any other 2xx or 3xx.
    pub success_statuses: Vec<u16>,
    /// A response header whose presence means failure, for applications
    /// that answer 200 either way.
    pub failure_header: Option<Spanned<String>>,
    /// Text in the response body that means failure (the first 64 KiB of
    /// the body are read for it).
    pub failure_body_contains: Option<String>,
    /// Thresholds and windows of the credential-abuse detectors.
    pub abuse: AbuseConfig,
}

impl LoginConfig {
    /// The defaults of `profile = "oauth_token"` (RFC 6749 §4.3, §5.2): the
    /// username and password of `grant_type=password` form bodies, failure
    /// when the answer is `"error":"invalid_grant"`.
    pub fn oauth_token() -> Self {
        LoginConfig {
            username_field: Some("username".into()),
            username_json_pointer: None,
            password_field: Some("password".into()),
            password_json_pointer: None,
            failure_statuses: Vec::new(),
            success_statuses: vec![200],
            failure_header: None,
            failure_body_contains: Some("\"invalid_grant\"".into()),
            abuse: AbuseConfig::default(),
        }
    }
}

impl Default for LoginConfig {
    fn default() -> Self {
        LoginConfig {
            username_field: Some("username".into()),
            username_json_pointer: Some(unspanned("/username".into())),
            password_field: Some("password".into()),
            password_json_pointer: Some(unspanned("/password".into())),
            failure_statuses: vec![401],
            success_statuses: Vec::new(),
            failure_header: None,
            failure_body_contains: None,
            abuse: AbuseConfig::default(),
        }
    }
}

/// Credential-abuse thresholds of one login route. Failures are counted
/// over a sliding `window_secs`; a key (client address, subnet and
/// fingerprint, fingerprint) escalates only while its failure ratio is at
/// or above its `*_failure_ratio`, so addresses and fingerprints that
/// people share (carrier NAT, a browser version, a mobile app) and that
/// mostly log in successfully are never punished for their numbers alone.
/// At half the failure threshold the key is challenged, at the threshold
/// it is rate-limited, and at twice it (failures plus refused attempts) it
/// is blocked and banned for `ban_secs`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AbuseConfig {
    pub window_secs: u64,
    pub ban_secs: u64,
    /// One client address.
    pub ip_failures: u32,
    pub ip_failure_ratio: f64,
    pub ip_distinct_usernames: u32,
    /// One /24 (IPv4) or /48 (IPv6) subnet with one HTTP fingerprint.
    pub subnet_failures: u32,
    pub subnet_failure_ratio: f64,
    pub subnet_distinct_usernames: u32,
    /// One HTTP fingerprint (and JA4, when palisade terminates TLS),
    /// whatever the address.
    pub fingerprint_failures: u32,
    pub fingerprint_failure_ratio: f64,
    pub fingerprint_distinct_usernames: u32,
    /// One account: failures (cracking) and distinct addresses (one account
    /// attacked from many places). These challenge, never block, so an
    /// attacker cannot lock a person out of their account.
    pub username_failures: u32,
    pub username_distinct_addresses: u32,
    /// Site-wide: the failure ratio of the last minutes against its learned
    /// baseline (half-life `baseline_half_life_secs`).
    pub site_min_attempts: u32,
    pub site_failure_ratio_rise: f64,
    /// Attempts per minute this many times the baseline rate is a surge.
    pub site_attempt_rate_factor: f64,
    pub baseline_half_life_secs: u64,
    /// A scope (address, subnet, fingerprint) with at least this many
    /// successful logins in the window is shared by people: it is never
    /// banned, its requests are asked for a session or clearance instead.
    pub popular_successes: u32,
}

impl Default for AbuseConfig {
    fn default() -> Self {
        AbuseConfig {
            window_secs: 600,
            ban_secs: 900,
            ip_failures: 8,
            ip_failure_ratio: 0.8,
            ip_distinct_usernames: 20,
            subnet_failures: 12,
            subnet_failure_ratio: 0.8,
            subnet_distinct_usernames: 30,
            fingerprint_failures: 20,
            fingerprint_failure_ratio: 0.9,
            fingerprint_distinct_usernames: 50,
            username_failures: 10,
            username_distinct_addresses: 10,
            site_min_attempts: 30,
            site_failure_ratio_rise: 0.3,
            site_attempt_rate_factor: 5.0,
            baseline_half_life_secs: 3600,
            popular_successes: 10,
        }
    }
}

/// A payment route: where the card, the amount and the account are in a
/// request, what approval and decline look like in the answer, and the
/// card-testing thresholds (see docs/payments.md). Only a keyed hash of
/// the card number, its BIN and its last four digits are kept; expiry
/// and CVV are never read.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentConfig {
    /// Form fields that may hold the card number, tried in order
    /// (a checkout form, Stripe-style `card[number]`).
    pub card_fields: Vec<String>,
    /// JSON pointers that may hold the card number, tried in order (a
    /// checkout body, an "add payment method" body).
    pub card_json_pointers: Vec<String>,
    /// Form fields / JSON pointers holding the amount, in the body's units.
    pub amount_fields: Vec<String>,
    pub amount_json_pointers: Vec<String>,
    /// A logged-in user id from a header the application sets (or an
    /// authenticating gateway), or from a cookie; hashed before counting.
    pub account_header: Option<String>,
    pub account_cookie: Option<String>,
    /// Digits of the card number that make its BIN (issuer range): 6 to 8.
    pub bin_digits: u8,
    /// Upstream statuses that mean declined.
    pub decline_statuses: Vec<u16>,
    /// Upstream statuses that mean approved; empty: any other 2xx.
    pub approve_statuses: Vec<u16>,
    /// JSON pointers into the answer whose presence (a non-empty, non-null
    /// value) means declined, e.g. `/decline_code`, `/error/decline_code`.
    pub decline_json_pointers: Vec<String>,
    /// A JSON pointer to a status field, and the values of it that mean declined.
    pub status_json_pointer: Option<String>,
    pub decline_status_values: Vec<String>,
    /// Text in the answer's body that means declined.
    pub decline_body_contains: Option<String>,
    /// Thresholds and windows of the card-testing detectors.
    pub abuse: PaymentAbuseConfig,
}

impl Default for PaymentConfig {
    fn default() -> Self {
        PaymentConfig {
            card_fields: ["card_number", "card[number]", "cc_number", "number"].map(String::from).to_vec(),
            card_json_pointers: [
                "/card/number",
                "/card_number",
                "/payment_method/card/number",
                "/source/number",
                "/payment/card/number",
            ]
            .map(String::from)
            .to_vec(),
            amount_fields: vec!["amount".into()],
            amount_json_pointers: ["/amount", "/order/amount", "/payment/amount"].map(String::from).to_vec(),
            account_header: None,
            account_cookie: None,
            bin_digits: 6,
            decline_statuses: vec![402],
            approve_statuses: Vec::new(),
            decline_json_pointers: ["/decline_code", "/error/decline_code"].map(String::from).to_vec(),
            status_json_pointer: Some("/status".into()),
            decline_status_values: ["declined", "failed"].map(String::from).to_vec(),
            decline_body_contains: None,
            abuse: PaymentAbuseConfig::default(),
        }
    }
}

impl PaymentConfig {
    /// Problems with the values (key below `payment.`, message), for the
    /// route builder to report with the route's line.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let pointers = self
            .card_json_pointers
            .iter()
            .map(|p| ("card_json_pointers", p))
            .chain(self.amount_json_pointers.iter().map(|p| ("amount_json_pointers", p)))
            .chain(self.decline_json_pointers.iter().map(|p| ("decline_json_pointers", p)))
            .chain(self.status_json_pointer.iter().map(|p| ("status_json_pointer", p)));
        for (name, pointer) in pointers {
            if !pointer.starts_with('/') {
                problems.push((name.to_string(), format!("{pointer:?}: a JSON pointer starts with '/'")));
            }
        }
        if !(6..=8).contains(&self.bin_digits) {
            problems.push(("bin_digits".into(), "a BIN is 6 to 8 digits".into()));
        }
        let abuse = &self.abuse;
        for (value, name) in [
            (abuse.ip_decline_ratio, "ip_decline_ratio"),
            (abuse.subnet_decline_ratio, "subnet_decline_ratio"),
            (abuse.fingerprint_decline_ratio, "fingerprint_decline_ratio"),
            (abuse.account_decline_ratio, "account_decline_ratio"),
            (abuse.session_decline_ratio, "session_decline_ratio"),
            (abuse.distinct_cards_min_decline_ratio, "distinct_cards_min_decline_ratio"),
            (abuse.site_decline_ratio_rise, "site_decline_ratio_rise"),
        ] {
            if !(0.0..=1.0).contains(&value) {
                problems.push((format!("abuse.{name}"), "a ratio between 0.0 and 1.0".into()));
            }
        }
        for (value, name) in [
            (abuse.window_secs, "window_secs"),
            (abuse.ban_secs, "ban_secs"),
            (abuse.baseline_half_life_secs, "baseline_half_life_secs"),
        ] {
            if value == 0 {
                problems.push((format!("abuse.{name}"), "must be at least 1 second".into()));
            }
        }
        problems
    }
}

/// Card-testing thresholds of one payment route. Declines and approvals
/// are counted over a sliding `window_secs` per client address, subnet
/// (with fingerprint, and alone), fingerprint, session and account; a
/// scope escalates only while its decline ratio is at or above its
/// `*_decline_ratio`: a step-up hint (`X-Palisade-Action: challenge`) at
/// half its decline threshold, 429 at the threshold, block and a ban for
/// `ban_secs` at twice it (declines plus refused attempts).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentAbuseConfig {
    pub window_secs: u64,
    pub ban_secs: u64,
    pub ip_declines: u32,
    pub ip_decline_ratio: f64,
    /// One /24 (IPv4) or /64 (IPv6) with one fingerprint, and the subnet alone.
    pub subnet_declines: u32,
    pub subnet_decline_ratio: f64,
    pub fingerprint_declines: u32,
    pub fingerprint_decline_ratio: f64,
    /// A logged-in account (`account_header` / `account_cookie`).
    pub account_declines: u32,
    pub account_decline_ratio: f64,
    /// A palisade session (`[session]`).
    pub session_declines: u32,
    pub session_decline_ratio: f64,
    /// Distinct cards per address, fingerprint, account and session,
    /// counted only while the scope's decline ratio is at least
    /// `distinct_cards_min_decline_ratio`.
    pub ip_distinct_cards: u32,
    pub fingerprint_distinct_cards: u32,
    pub account_distinct_cards: u32,
    pub session_distinct_cards: u32,
    pub distinct_cards_min_decline_ratio: f64,
    /// One card on this many accounts is being tested across accounts.
    pub card_accounts: u32,
    /// Attempts with one card (any outcome) before it is slowed down:
    /// expiry and CVV guessing.
    pub card_attempts: u32,
    /// Amounts below this (in the body's units) are probes; this many
    /// from one address or fingerprint, mostly declined, are probing.
    /// 0 turns the detector off.
    pub small_amount_below: f64,
    pub small_amount_attempts: u32,
    /// Distinct cards of one BIN from one address or fingerprint.
    pub bin_distinct_cards: u32,
    /// A scope with this many approvals is shared by customers: it is
    /// challenged, never banned.
    pub popular_approvals: u32,
    /// Site-wide: the decline ratio of the last minutes against its
    /// learned baseline.
    pub site_min_attempts: u32,
    pub site_decline_ratio_rise: f64,
    pub baseline_half_life_secs: u64,
}

impl Default for PaymentAbuseConfig {
    fn default() -> Self {
        PaymentAbuseConfig {
            window_secs: 900,
            ban_secs: 3600,
            ip_declines: 5,
            ip_decline_ratio: 0.6,
            subnet_declines: 10,
            subnet_decline_ratio: 0.7,
            fingerprint_declines: 15,
            fingerprint_decline_ratio: 0.8,
            account_declines: 5,
            account_decline_ratio: 0.6,
            session_declines: 5,
            session_decline_ratio: 0.6,
            ip_distinct_cards: 4,
            fingerprint_distinct_cards: 20,
            account_distinct_cards: 4,
            session_distinct_cards: 4,
            distinct_cards_min_decline_ratio: 0.5,
            card_accounts: 3,
            card_attempts: 8,
            small_amount_below: 2.0,
            small_amount_attempts: 5,
            bin_distinct_cards: 4,
            popular_approvals: 20,
            site_min_attempts: 30,
            site_decline_ratio_rise: 0.3,
            baseline_half_life_secs: 3600,
        }
    }
}

/// Counter keys and shared state.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Secret for the keyed hashes that stand in for usernames and client
    /// addresses in the store. Empty: the `PALISADE_HASH_KEY` environment
    /// variable, else a random key per process (counters then do not
    /// survive a restart, and replicas do not share them).
    pub hash_key: String,
    /// One Redis server shared by every replica (`redis://host:port/db`).
    /// Empty (and no `redis_cluster`): counters stay in this process.
    pub redis_url: Spanned<String>,
    /// Redis Cluster: some of its nodes (`redis://host:port`), instead of
    /// `redis_url`.
    pub redis_cluster: Vec<Spanned<String>>,
    /// First part of every Redis key, so deployments can share a Redis.
    pub key_prefix: String,
    /// Longest wait for one Redis round trip before the request is decided
    /// on local counters and Redis is marked down.
    pub timeout_ms: u64,
    /// Longest wait to connect to Redis.
    pub connect_timeout_ms: u64,
    /// How often a replica counting locally checks whether Redis is back.
    pub retry_interval_ms: u64,
    /// Memory budget of the in-process counters (with Redis: of the local
    /// fallback counters), in MiB. When it is reached the least useful
    /// keys are evicted (bans in force last, busy scopes before one-off
    /// keys); at the default about a million keys fit.
    pub max_memory_mb: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            hash_key: String::new(),
            redis_url: unspanned(String::new()),
            redis_cluster: Vec::new(),
            key_prefix: "palisade".to_string(),
            timeout_ms: 5,
            connect_timeout_ms: 500,
            retry_interval_ms: 250,
            max_memory_mb: 192,
        }
    }
}

/// palisade's own session cookie, the proof-of-work challenge it serves
/// and the clearance cookie earned by solving it (docs/session.md).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Off by default: nothing is set or served, `challenge` decisions are
    /// forwarded with `X-Palisade-Action: challenge` as before.
    pub enabled: bool,
    /// HMAC secret of the cookies and challenges; every replica needs the
    /// same one. Empty: `PALISADE_SESSION_SECRET`, else a random secret
    /// per process (cookies then last only as long as the process).
    pub secret: String,
    /// Name of the session cookie set on HTML page loads.
    pub cookie: Spanned<String>,
    /// Name of the clearance cookie set when a challenge is solved.
    pub clearance_cookie: Spanned<String>,
    pub session_ttl_secs: u64,
    pub clearance_ttl_secs: u64,
    /// How long a served challenge may take to be answered.
    pub challenge_ttl_secs: u64,
    /// Leading zero bits the proof-of-work must find (each bit doubles the
    /// work; 16 is about 65,000 SHA-256 hashes, well under a second).
    pub difficulty: u8,
    /// Where the challenge page sends its answer.
    pub verify_path: Spanned<String>,
    /// A clearance (or a session) used for this many distinct usernames
    /// stops being honoured.
    pub max_usernames: u32,
    /// Login attempts per minute without a valid session or clearance
    /// (decayed) that put the site under attack.
    pub attack_bare_attempts: f64,
    /// How long the under-attack state lasts after its last trigger.
    pub attack_hold_secs: u64,
    /// Per route name: `interstitial` (browsers get the challenge page,
    /// other clients the header), `header` (forward with
    /// `X-Palisade-Action: challenge`), `status` (429 with an
    /// `X-Palisade-Challenge` header) or `off`. Unlisted routes:
    /// `interstitial` on login and default routes, `header` otherwise.
    pub challenge: std::collections::BTreeMap<String, Spanned<String>>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            enabled: false,
            secret: String::new(),
            cookie: unspanned("__palisade_session".into()),
            clearance_cookie: unspanned("__palisade_clearance".into()),
            session_ttl_secs: 3600,
            clearance_ttl_secs: 1800,
            challenge_ttl_secs: 120,
            difficulty: 16,
            verify_path: unspanned("/.palisade/verify".into()),
            max_usernames: 3,
            attack_bare_attempts: 30.0,
            attack_hold_secs: 300,
            challenge: Default::default(),
        }
    }
}

/// The breached-password check.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct BreachConfig {
    /// A file of breached password hashes, one `SHA1HEX:COUNT` (or
    /// `SUFFIX:COUNT` inside a file named by its 5-character prefix) per
    /// line; empty: the check is off.
    pub path: String,
}

/// Whether a model's findings are acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ModelMode {
    /// Scored and logged with `would_action`, never acted on.
    #[default]
    Shadow,
    /// Its score contribution and action count.
    Enforce,
}

/// One classifier model (`[[model]]`). Several may run; at most one enforces.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Detection id `model.<name>`: lowercase letters, digits, `_` and `-`.
    pub name: Spanned<String>,
    /// The model file (relative to the configuration file).
    pub path: Spanned<String>,
    #[serde(default)]
    pub mode: ModelMode,
    /// Below this probability the model says nothing.
    #[serde(default = "default_min_probability")]
    pub min_probability: f64,
    /// Points taken off the score at probability 1 (scaled linearly from
    /// 0 at `min_probability`).
    #[serde(default = "default_max_penalty")]
    pub max_penalty: u8,
    /// At or above this probability the model demands a block.
    pub block_at_probability: Option<f64>,
}

fn default_min_probability() -> f64 {
    0.5
}

fn default_max_penalty() -> u8 {
    60
}

/// Which signature rules run.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignaturesConfig {
    /// Run the rule files shipped with palisade (`signatures/*.toml`, built in).
    pub builtin: bool,
    /// More rule files, or folders of `*.toml` rule files.
    pub paths: Vec<Spanned<String>>,
    /// Rule ids to run in shadow mode: logged with `would_action`, not acted on.
    pub shadow: Vec<Spanned<String>>,
    /// Rule ids to turn off.
    pub disable: Vec<Spanned<String>>,
}

impl Default for SignaturesConfig {
    fn default() -> Self {
        SignaturesConfig { builtin: true, paths: Vec::new(), shadow: Vec::new(), disable: Vec::new() }
    }
}

fn default_routes() -> Vec<RouteConfig> {
    vec![
        RouteConfig {
            name: "login".into(),
            profile: unspanned("login".into()),
            path: Some(unspanned("/login".into())),
            path_regex: None,
            // Every method a form or an API sends credentials with.
            methods: vec![unspanned("POST".into()), unspanned("PUT".into()), unspanned("PATCH".into())],
            mode: RouteMode::Enforce,
            on_store_failure: StoreFailure::Open,
            rate_limit: Some(RateLimitConfig { requests: 30, period_secs: 60, burst: Some(20) }),
            asn_rate_limit: None,
            client_quota: None,
            login: Some(LoginConfig::default()),
            payment: None,
        },
        RouteConfig {
            name: "payments".into(),
            profile: unspanned("payment".into()),
            path: Some(unspanned("/api/payments/*".into())),
            path_regex: None,
            methods: Vec::new(),
            mode: RouteMode::Enforce,
            on_store_failure: StoreFailure::Open,
            rate_limit: Some(RateLimitConfig { requests: 30, period_secs: 60, burst: Some(10) }),
            asn_rate_limit: None,
            client_quota: None,
            login: None,
            payment: None,
        },
    ]
}

/// Capture mode: requests written to a capture file (format v1, see
/// `replay/CAPTURE_FORMAT.md`) for `palisade replay`, with secret fields
/// redacted before anything reaches the disk. Read at start; a reload
/// (SIGHUP) applies new `routes`, `sample` and redaction lists, and a new
/// `path` opens a new file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// The capture file (relative to the configuration file); rotated
    /// files get `.1`, `.2`, … appended.
    pub path: Spanned<String>,
    /// Route names whose requests are captured; empty captures every route.
    pub routes: Vec<Spanned<String>>,
    /// Fraction (0.0 to 1.0) of those requests captured, chosen by request id.
    pub sample: f64,
    /// Rotate before the file would grow past this many bytes; 0 never rotates.
    pub max_file_bytes: u64,
    /// Rotated files kept; older ones are deleted.
    pub max_files: usize,
    /// Body and query fields whose values are replaced by `<redacted>`
    /// (setting this replaces the default list; the login routes' password
    /// fields are redacted whatever it says).
    pub redact_fields: Vec<String>,
    /// Headers whose values are replaced by `<redacted>`.
    pub redact_headers: Vec<Spanned<String>>,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            path: unspanned("capture.jsonl".into()),
            routes: Vec::new(),
            sample: 1.0,
            max_file_bytes: 100 * 1024 * 1024,
            max_files: 10,
            redact_fields: DEFAULT_REDACT_FIELDS.iter().map(|f| f.to_string()).collect(),
            redact_headers: DEFAULT_REDACT_HEADERS.iter().map(|h| unspanned(h.to_string())).collect(),
        }
    }
}

/// Secret body and query fields redacted by default (`[capture]
/// redact_fields`).
pub const DEFAULT_REDACT_FIELDS: &[&str] = &[
    "password",
    "passwd",
    "pass",
    "pwd",
    "new_password",
    "old_password",
    "current_password",
    "password_confirmation",
    "pin",
    "otp",
    "totp",
    "mfa_code",
    "card_number",
    "cc_number",
    "pan",
    "cvv",
    "cvc",
    "cvv2",
    "security_code",
    "exp_month",
    "exp_year",
    "exp_date",
    "expiry",
    "expiry_date",
    "expiration",
    "expiration_date",
    "card_expiry",
    "secret",
    "client_secret",
    "access_token",
    "refresh_token",
    "id_token",
    "code",
    "code_verifier",
    "assertion",
    "client_assertion",
];

/// Headers whose values are redacted by default (`[capture]
/// redact_headers`).
pub const DEFAULT_REDACT_HEADERS: &[&str] = &["authorization", "proxy-authorization", "cookie"];

/// Sidecar mode: palisade answers authorization sub-requests (nginx
/// `auth_request`, Envoy `ext_authz` in HTTP service mode) on
/// `server.listen` instead of forwarding; `server.upstream` is not used.
/// The proxy in front must be in `server.trusted_proxies`, so that the
/// client address it forwards is believed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SidecarConfig {
    /// Where nginx's `auth_request` sub-requests arrive (exact path); the
    /// original method and URI come in `X-Original-Method` and `X-Original-URI`.
    pub nginx_path: Spanned<String>,
    /// Envoy's `ext_authz` `path_prefix`: a check request's path is this
    /// prefix followed by the original path.
    pub envoy_prefix: Spanned<String>,
    /// Where the application (or the proxy) reports a login's outcome,
    /// keyed by palisade's request id.
    pub outcome_path: Spanned<String>,
    /// How long an allowed login waits for its outcome report.
    pub outcome_wait_ms: u64,
    /// Allowed logins waiting for an outcome at most; the oldest is
    /// given up first (logged without an outcome).
    pub max_pending_outcomes: usize,
}

impl Default for SidecarConfig {
    fn default() -> Self {
        SidecarConfig {
            nginx_path: unspanned("/_palisade/auth".into()),
            envoy_prefix: unspanned("/_palisade/check".into()),
            outcome_path: unspanned("/_palisade/outcome".into()),
            outcome_wait_ms: 30_000,
            max_pending_outcomes: 100_000,
        }
    }
}

/// Network context for client addresses.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// A local MMDB file (MaxMind GeoLite2/GeoIP2 ASN or DB-IP ASN format)
    /// giving each client address its autonomous system number and
    /// organisation. Read at start and on reload, never downloaded.
    pub mmdb_path: Option<Spanned<String>>,
}
