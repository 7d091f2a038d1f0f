//! How to reach Redis, from `[store]`: checked when the configuration is
//! compiled (a malformed URL names its line), connected only when serving.

use std::time::Duration;

use crate::config::{Config, Invalid};
use crate::error::Error;

/// Where Redis is.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server (or a proxy in front of several): `redis://host:port/db`.
    Single(String),
    /// Redis Cluster, found through any of these nodes.
    Cluster(Vec<String>),
}

/// A Redis URL with its password (and user) replaced by `***`, for logs
/// and error messages: in the authority (`redis://user:pw@host`) and in
/// the query, where the Unix-socket forms carry them
/// (`redis+unix:///r.sock?pass=…`, `unix://…?user=…&pass=…`) and some
/// clients read `?password=`. A query parameter whose name (decoded)
/// mentions a password, a secret, a token or a user is redacted whatever
/// the scheme; a fragment is dropped.
pub fn redact_url(url: &str) -> String {
    let url = url.split_once('#').map_or(url, |(before, _)| before);
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
                None => base.to_string(),
            }
        }
        None => match base.rfind('@') {
            // Not a URL at all, but it may still hold `user:pw@host`.
            Some(at) => format!("***@{}", &base[at + 1..]),
            None => base.to_string(),
        },
    };
    if let Some(query) = query {
        out.push('?');
        let pairs: Vec<String> = query
            .split(['&', ';'])
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if is_secret_parameter(name) => format!("{name}=***"),
                _ if is_secret_parameter(pair) => "***".to_string(),
                _ => pair.to_string(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    out
}

/// Whether a query parameter's name says it holds a credential.
fn is_secret_parameter(name: &str) -> bool {
    let decoded = percent_decode(name).to_ascii_lowercase();
    ["pass", "pwd", "secret", "token", "auth", "user", "key", "cred"].iter().any(|word| decoded.contains(word))
}

/// `%xx` and `+` decoded (invalid escapes kept as they are).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// Written by hand so a password in a URL never reaches a log.
impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisTarget::Single(url) => f.debug_tuple("Single").field(&redact_url(url)).finish(),
            RedisTarget::Cluster(nodes) => {
                f.debug_tuple("Cluster").field(&nodes.iter().map(|n| redact_url(n)).collect::<Vec<_>>()).finish()
            }
        }
    }
}

/// Where the scripts take their time from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSource {
    /// Redis `TIME`: replicas' clocks never matter (serving).
    Redis,
    /// The store's clock, passed to the script (replaying a capture against
    /// Redis, and tests that need to step time).
    Clock,
}

/// How to reach Redis and how long to wait for it.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisSettings {
    pub target: RedisTarget,
    /// First part of every key, so several deployments can share a Redis.
    pub key_prefix: String,
    /// Longest wait for one round trip before a request falls back.
    pub timeout: Duration,
    /// Longest wait for one call of the background writer (it carries the
    /// merged writes of many requests; a slow one never fails a request).
    pub write_timeout: Duration,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// How often a replica in fallback checks whether Redis is back.
    pub retry_interval: Duration,
    /// Writes waiting for the background writer before new ones are dropped.
    pub write_queue: usize,
    pub time: TimeSource,
    /// Answer a plan whose limit or ban is known to be in force from this
    /// replica's memory, without a Redis call (the plan's other counters
    /// are then not updated in Redis: the request is refused anyway).
    pub cache_denials: bool,
    /// Memory budget of the local fallback counters, in bytes.
    pub local_budget: u64,
}

impl RedisSettings {
    pub fn new(target: RedisTarget) -> Self {
        RedisSettings {
            target,
            key_prefix: "palisade".to_string(),
            timeout: Duration::from_millis(5),
            write_timeout: Duration::from_millis(250),
            connect_timeout: Duration::from_millis(500),
            retry_interval: Duration::from_millis(250),
            write_queue: 10_000,
            time: TimeSource::Redis,
            cache_denials: true,
            local_budget: crate::store::DEFAULT_MAX_MEMORY_MB * 1024 * 1024,
        }
    }

    /// Check the addresses without connecting (a malformed URL is an
    /// error; an unreachable server is only a fallback).
    pub fn validate(&self) -> Result<(), Error> {
        let urls: Vec<&String> = match &self.target {
            RedisTarget::Single(url) => vec![url],
            RedisTarget::Cluster(nodes) if nodes.is_empty() => return Err(Error::config("no cluster nodes given")),
            RedisTarget::Cluster(nodes) => nodes.iter().collect(),
        };
        urls.into_iter().find_map(|url| url_problem(url)).map_or(Ok(()), |problem| Err(Error::config(problem)))
    }
}

/// What is wrong with a Redis URL (its password redacted), if anything.
fn url_problem(url: &str) -> Option<String> {
    redis::Client::open(url).err().map(|error| {
        format!("{:?} is not a Redis URL ({error}); write redis://HOST:PORT or redis://HOST:PORT/DB", redact_url(url))
    })
}

/// Whether a keyed-hash secret is configured for every replica alike.
fn has_shared_hash_key(config: &Config) -> bool {
    !config.store.hash_key.is_empty() || std::env::var_os("PALISADE_HASH_KEY").is_some_and(|key| !key.is_empty())
}

impl RedisSettings {
    /// The Redis settings of `config`, `None` when counters stay in process.
    pub fn from_config(config: &Config) -> Result<Option<RedisSettings>, Vec<Invalid>> {
        let store = &config.store;
        let url = store.redis_url.get_ref();
        let target = match (url.is_empty(), store.redis_cluster.is_empty()) {
            (true, true) => return Ok(None),
            (false, false) => {
                return Err(vec![Invalid::new(
                    store.redis_url.span(),
                    "store.redis_url",
                    "set either redis_url (one server) or redis_cluster (cluster nodes), not both",
                )]);
            }
            (false, true) => RedisTarget::Single(url.clone()),
            (true, false) => RedisTarget::Cluster(store.redis_cluster.iter().map(|n| n.get_ref().clone()).collect()),
        };
        let mut problems = Vec::new();
        let urls: Vec<(&toml::Spanned<String>, &str)> = if url.is_empty() {
            store.redis_cluster.iter().map(|n| (n, "store.redis_cluster")).collect()
        } else {
            vec![(&store.redis_url, "store.redis_url")]
        };
        for (value, key) in urls {
            if let Some(problem) = url_problem(value.get_ref()) {
                problems.push(Invalid::new(value.span(), key, problem));
            }
        }
        if !has_shared_hash_key(config) {
            problems.push(Invalid::new(
                store.redis_url.span(),
                "store.hash_key",
                "replicas sharing Redis must hash usernames and addresses with the same secret: \
                 set store.hash_key (or PALISADE_HASH_KEY) to the same value on every replica",
            ));
        }
        if store.timeout_ms == 0 || store.connect_timeout_ms == 0 || store.retry_interval_ms == 0 {
            problems.push(Invalid::new(
                0..0,
                "store.timeout_ms",
                "timeout_ms, connect_timeout_ms and retry_interval_ms must be at least 1",
            ));
        }
        if store.key_prefix.contains(['{', '}']) {
            problems.push(Invalid::new(
                0..0,
                "store.key_prefix",
                "the key prefix must not contain { or } (they mark Redis Cluster hash tags)",
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut settings = RedisSettings::new(target);
        settings.key_prefix = store.key_prefix.clone();
        settings.timeout = Duration::from_millis(store.timeout_ms);
        settings.write_timeout = Duration::from_millis(store.timeout_ms.saturating_mul(50).max(250));
        settings.connect_timeout = Duration::from_millis(store.connect_timeout_ms);
        settings.retry_interval = Duration::from_millis(store.retry_interval_ms);
        settings.local_budget = crate::store::local_budget(config).unwrap_or(settings.local_budget);
        Ok(Some(settings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::parse_str;

    /// Problems as `palisade check` prints them (file:line: key: message).
    fn problems(toml: &str) -> String {
        parse_str(toml, "t.toml").map(|_| String::new()).unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn redis_settings_are_checked_with_their_keys_and_lines() {
        let config = parse_str("", "t.toml").unwrap();
        assert!(RedisSettings::from_config(&config).unwrap().is_none(), "no Redis by default");
        let ok = "[store]\nredis_url = \"redis://127.0.0.1:6379/0\"\nhash_key = \"s\"\ntimeout_ms = 7\n";
        let settings = RedisSettings::from_config(&parse_str(ok, "t.toml").unwrap()).unwrap().unwrap();
        assert_eq!(settings.target, RedisTarget::Single("redis://127.0.0.1:6379/0".into()));
        assert_eq!(settings.timeout, Duration::from_millis(7));

        let both =
            problems("[store]\nhash_key = \"s\"\nredis_url = \"redis://a:1\"\nredis_cluster = [\"redis://b:2\"]\n");
        assert!(both.contains("t.toml:3: store.redis_url: set either redis_url"), "{both}");
        let bad = problems("[store]\nhash_key = \"s\"\nredis_url = \"http://nope\"\n");
        let secret = problems("[store]\nhash_key = \"s\"\nredis_url = \"http://:hunter2@nope\"\n");
        assert!(!secret.contains("hunter2") && secret.contains("***@nope"), "{secret}");
        assert!(bad.contains("t.toml:3: store.redis_url: \"http://nope\" is not a Redis URL"), "{bad}");
        assert_eq!(redact_url("redis://user:secret@10.0.0.5:6379/0"), "redis://***@10.0.0.5:6379/0");
        assert_eq!(redact_url("redis://:secret@h:1"), "redis://***@h:1");
        assert_eq!(redact_url("redis://h:1/2"), "redis://h:1/2");
        for (url, redacted) in [
            ("redis+unix:///run/r.sock?db=2&pass=hunter2", "redis+unix:///run/r.sock?db=2&pass=***"),
            ("unix:///run/r.sock?user=bob&pass=hunter2", "unix:///run/r.sock?user=***&pass=***"),
            ("redis://h:1/0?password=hunter2", "redis://h:1/0?password=***"),
            ("redis://h:1/0?p%61ss=hunter2;x=1#hunter2", "redis://h:1/0?p%61ss=***&x=1"),
            ("rediss://:hunter2@h:1/0?protocol=resp3", "rediss://***@h:1/0?protocol=resp3"),
        ] {
            assert_eq!(redact_url(url), redacted);
            let target = format!("{:?}", RedisTarget::Single(url.into()));
            assert!(!target.contains("hunter2"), "{target}");
        }
        let target = RedisTarget::Cluster(vec!["redis://:pw@a:1".into()]);
        assert!(!format!("{target:?}").contains("pw"));
        if std::env::var_os("PALISADE_HASH_KEY").is_none() {
            let unkeyed = problems("[store]\nredis_url = \"redis://b:2\"\n");
            assert!(unkeyed.contains("t.toml:2: store.hash_key: replicas sharing Redis"), "{unkeyed}");
        }
    }
}
