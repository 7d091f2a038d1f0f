//! Per-client, per-route rate limit: the route's GCRA limit, keyed by the
//! client address and the route.

use std::sync::Arc;

use super::{RequestContext, Stage};
use crate::keyed_hash::KeyHasher;
use crate::signal::{Evidence, Signal};
use crate::store::{CounterPlan, CounterReadings, GcraReading, Key};
use crate::thread_cache::{self, SetAssociative};
use crate::view::RequestView;

pub const DETECTION_ID: &str = "rate.client_route";

/// Points a limited request loses. Small: being over a rate is answered
/// by the 429 itself and says little about who is asking (a carrier NAT
/// trips limits too), so it must not push a request into a block.
const PENALTY: u8 = 10;

/// The request's limit key, from plan to detect.
#[derive(Debug, Clone)]
struct RateKey(Key);

#[derive(Debug)]
pub struct ClientRouteRateLimit {
    id: Arc<str>,
    /// Client addresses are keyed by their keyed hash, never in clear.
    hasher: KeyHasher,
}

impl ClientRouteRateLimit {
    pub fn new(hasher: KeyHasher) -> Self {
        ClientRouteRateLimit { id: Arc::from(DETECTION_ID), hasher }
    }

    /// `rl:{route}:{hashed address}`: from this thread's cache when the
    /// client asked recently (a keyed hash and a key allocation saved on
    /// every request of a busy client), else built and remembered.
    fn counter_key(&self, view: &RequestView<'_>) -> Key {
        let (tag, route, ip) = (self.hasher.tag(), &*view.route.name, view.client_ip);
        // Laid out by appends, the address's item shared with the other
        // stages that hash it (`KeyHasher::address_item`): a new client's
        // key cost ~3.7k instructions with `format!`, the address's text
        // and a keyed hash of its own.
        let build = || limit_key(route, &KeyHasher::item_hex(self.hasher.address_item(ip)));
        thread_cache::remember(
            &RATE_KEYS,
            (tag, route, ip),
            |held| (held.tag == tag && held.ip == ip && *held.route == *route).then(|| held.key.clone()),
            || {
                let key = build();
                (key.clone(), Some(CachedKey { tag, ip, route: view.route.name.clone(), key }))
            },
        )
    }
}

/// `rl:{route}:{hash}`, laid out on the stack when it fits: one
/// allocation, the key's own.
fn limit_key(route: &str, hash: &[u8; 16]) -> Key {
    let parts = ["rl:", route, ":", std::str::from_utf8(hash).unwrap_or_default()];
    let mut buffer = [0u8; 96];
    let len = parts.iter().map(|part| part.len()).sum::<usize>();
    if len > buffer.len() {
        return Key::from(parts.concat());
    }
    let mut at = 0;
    for part in parts {
        buffer[at..at + part.len()].copy_from_slice(part.as_bytes());
        at += part.len();
    }
    Key::from(std::str::from_utf8(&buffer[..len]).unwrap_or_default())
}

/// Rate keys cached per thread (a power of two).
const RATE_KEY_SLOTS: usize = 512;

struct CachedKey {
    /// The hashing secret's tag: a reload with a new secret misses.
    tag: u64,
    ip: std::net::IpAddr,
    /// The route's name, shared with the route (no copy per client).
    route: Arc<str>,
    key: Key,
}

thread_local! {
    static RATE_KEYS: std::cell::RefCell<SetAssociative<CachedKey>> =
        std::cell::RefCell::new(SetAssociative::new(RATE_KEY_SLOTS));
}

impl Stage for ClientRouteRateLimit {
    fn name(&self) -> &'static str {
        "rate"
    }

    fn plan(&self, view: &RequestView<'_>, context: &mut RequestContext, plan: &mut CounterPlan) {
        if let Some(limit) = view.route.rate_limit {
            let key = self.counter_key(view);
            plan.gcra(key.clone(), limit);
            // Detect finds its reading under the same key: keep it rather
            // than hash the address a second time.
            context.insert(RateKey(key));
        }
    }

    fn detect(
        &self,
        view: &RequestView<'_>,
        context: &mut RequestContext,
        readings: &CounterReadings,
        signals: &mut Vec<Signal>,
    ) {
        // `plan` left the key in the context whenever the route has a limit.
        let (Some(limit), Some(RateKey(key))) = (view.route.rate_limit, context.get::<RateKey>()) else { return };
        if let Some(GcraReading::Limited { retry_after }) = readings.gcra(key) {
            signals.push(Signal::rate_limited(
                self.id.clone(),
                PENALTY,
                retry_after,
                [
                    Evidence::number("limit_requests", f64::from(limit.requests), None),
                    Evidence::number("limit_period_s", limit.period_secs as f64, None),
                    Evidence::number("burst", f64::from(limit.burst.unwrap_or(limit.requests)), None),
                ],
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn hasher(secret: &str) -> KeyHasher {
        let mut config = Config::default();
        config.store.hash_key = secret.into();
        KeyHasher::from_config(&config)
    }

    /// What `counter_key` builds when nothing is cached.
    fn built(hasher: &KeyHasher, view: &RequestView<'_>) -> String {
        let address = crate::cidr::canonical_ip(view.client_ip).to_string();
        format!("rl:{}:{}", view.route.name, hasher.hash("ip", address.as_bytes()))
    }

    #[test]
    fn a_cached_rate_key_is_the_key_built_afresh_for_its_secret_route_and_address() {
        crate::test_support::view_with("GET", "/", &[], None, |view| {
            let first = ClientRouteRateLimit::new(hasher("one"));
            let again = first.counter_key(view);
            let cached = first.counter_key(view);
            assert_eq!(&*cached, built(&hasher("one"), view));
            assert!(Arc::ptr_eq(&again, &cached), "the second ask is served from the cache");
            // Another secret (a reload with a new hash key) gets its own key.
            let other = ClientRouteRateLimit::new(hasher("two"));
            let key = other.counter_key(view);
            assert_eq!(&*key, built(&hasher("two"), view));
            assert_ne!(key, cached);
            // Another address of the same route.
            let uri: http::Uri = view.target.parse().unwrap();
            let ip = "2001:db8::7".parse().unwrap();
            let moved =
                RequestView::new(view.method, view.version, &uri, view.path, view.headers, ip, view.route, None);
            assert_eq!(&*first.counter_key(&moved), built(&hasher("one"), &moved));
            assert_ne!(first.counter_key(&moved), cached);
        });
    }

    #[test]
    fn a_limit_key_is_laid_out_as_formatted_for_any_route_length() {
        let hash = KeyHasher::item_hex(0x0123_4567_89ab_cdef);
        let hex = std::str::from_utf8(&hash).unwrap();
        for len in [0, 1, 5, 75, 76, 77, 200] {
            let route = "r".repeat(len);
            assert_eq!(&*limit_key(&route, &hash), format!("rl:{route}:{hex}"), "{len}");
        }
    }
}
