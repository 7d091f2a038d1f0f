//! The counter keys of a login attempt.
//!
//! Usernames and client addresses never reach the store in clear: each is
//! replaced by a keyed BLAKE3 hash (a secret from `[store] hash_key` or
//! `PALISADE_HASH_KEY`). The same secret on every replica gives the same
//! keys, so replicas share counters; without the secret the store's
//! contents cannot be turned back into usernames by guessing.

use std::net::IpAddr;

use crate::store::Key;
use crate::thread_cache::{self, SetAssociative};

pub use crate::keyed_hash::KeyHasher;

/// The subnet an address belongs to for counting: /24 for IPv4, /64 for
/// IPv6 (one link: what one customer or one host is handed).
pub fn subnet(ip: IpAddr) -> String {
    match network(ip) {
        IpAddr::V4(network) => {
            let mut buffer = [0u8; 64];
            [crate::cidr::ip_text(IpAddr::V4(network), &mut buffer), "/24"].concat()
        }
        // Written out rather than by `Display`, which would shorten a zero
        // segment among the first four (`2001:db8::/64` for
        // `2001:db8:0:0::/64`) and so change the keys.
        IpAddr::V6(network) => {
            let s = network.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// A username as its account is counted: lower-cased. Most usernames
/// are lower-case ASCII already (addresses as typed), which `to_lowercase`
/// would copy all the same.
pub fn folded(username: &str) -> std::borrow::Cow<'_, str> {
    if username.bytes().all(|byte| byte.is_ascii() && !byte.is_ascii_uppercase()) {
        std::borrow::Cow::Borrowed(username)
    } else {
        std::borrow::Cow::Owned(username.to_lowercase())
    }
}

/// One counter of a scope. The suffixes are what the stores hold (short,
/// because every key of every attempt carries one); code names counters
/// only through this type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Failed logins in the window.
    Failures,
    /// Successful logins in the window.
    Successes,
    /// Attempts palisade refused in the window.
    Refused,
    /// A ban in force.
    Ban,
    /// Distinct usernames tried (a sketch).
    Usernames,
    /// Distinct client addresses that tried one account (a sketch).
    Addresses,
    /// Site-wide attempts, decayed over the last minutes.
    RecentAttempts,
    /// Site-wide failures, decayed over the last minutes.
    RecentFailures,
    /// Site-wide attempts, decayed over the baseline half-life.
    BaselineAttempts,
    /// Site-wide failures, decayed over the baseline half-life.
    BaselineFailures,
    /// Attempts let through to the upstream (over a short window): with
    /// [`Counter::Resolved`], the attempts still in flight.
    Forwarded,
    /// Attempts let through whose request has ended (answered or not).
    Resolved,
    /// Distinct accounts that logged in successfully (a sketch).
    SuccessAccounts,
}

impl Counter {
    /// The key suffix the stores hold.
    pub fn suffix(self) -> &'static str {
        match self {
            Counter::Failures => "f",
            Counter::Successes => "s",
            Counter::Refused => "x",
            Counter::Ban => "ban",
            Counter::Usernames => "users",
            Counter::Addresses => "addrs",
            Counter::RecentAttempts => "a1",
            Counter::RecentFailures => "f1",
            Counter::BaselineAttempts => "a0",
            Counter::BaselineFailures => "f0",
            Counter::Forwarded => "p",
            Counter::Resolved => "r",
            Counter::SuccessAccounts => "sa",
        }
    }
}

/// The counters kept per scope, in the order the stage plans them: a ban,
/// failures, successes, refused attempts, distinct usernames, attempts in
/// flight (forwarded, resolved), accounts that logged in.
pub const SCOPE_COUNTERS: [Counter; 8] = [
    Counter::Ban,
    Counter::Failures,
    Counter::Successes,
    Counter::Refused,
    Counter::Usernames,
    Counter::Forwarded,
    Counter::Resolved,
    Counter::SuccessAccounts,
];

/// The site-wide decayed sums of a route, in the order the stage plans them.
pub const SITE_COUNTERS: [Counter; 4] =
    [Counter::RecentAttempts, Counter::RecentFailures, Counter::BaselineAttempts, Counter::BaselineFailures];

/// The account's counters: failures and distinct addresses.
const USER_COUNTERS: [Counter; 2] = [Counter::Failures, Counter::Addresses];

/// The scopes whose keys are kept per client, [`SCOPE_COUNTERS`] each, in
/// [`ClientKeys::scopes`]' order.
const CLIENT_SCOPES: [Scope; 4] = [Scope::Ip, Scope::Subnet, Scope::Fingerprint, Scope::Net];

/// Every `(scope, counter)` with a key built in advance: the client scopes'
/// counters, the route's, then the account's. Those before [`CLIENT_KEYS`]
/// depend only on the route and the client (address and fingerprint), so
/// they are shared by a client's attempts; the account's come last.
const COUNTERS: [(Scope, Counter); 38] = {
    let mut all = [(Scope::Site, Counter::Ban); 38];
    let mut index = 0;
    let mut scope = 0;
    while scope < CLIENT_SCOPES.len() {
        let mut counter = 0;
        while counter < SCOPE_COUNTERS.len() {
            all[index] = (CLIENT_SCOPES[scope], SCOPE_COUNTERS[counter]);
            index += 1;
            counter += 1;
        }
        scope += 1;
    }
    let mut counter = 0;
    while counter < SITE_COUNTERS.len() {
        all[index] = (Scope::Site, SITE_COUNTERS[counter]);
        index += 1;
        counter += 1;
    }
    let mut counter = 0;
    while counter < USER_COUNTERS.len() {
        all[index] = (Scope::User, USER_COUNTERS[counter]);
        index += 1;
        counter += 1;
    }
    all
};

/// How many of [`COUNTERS`] belong to the client scopes.
const SCOPE_KEYS: usize = CLIENT_SCOPES.len() * SCOPE_COUNTERS.len();
/// How many of [`COUNTERS`] belong to the route and the client.
const CLIENT_KEYS: usize = SCOPE_KEYS + SITE_COUNTERS.len();

/// Where each `(scope, counter)` of [`COUNTERS`] sits in it, so that a
/// key is found by index rather than by a search (detectors ask for keys
/// some forty times per attempt).
const POSITION: [[u8; COUNTER_KINDS]; SCOPE_KINDS] = {
    let mut table = [[u8::MAX; COUNTER_KINDS]; SCOPE_KINDS];
    let mut index = 0;
    while index < COUNTERS.len() {
        let (scope, counter) = COUNTERS[index];
        table[scope as usize][counter as usize] = index as u8;
        index += 1;
    }
    table
};
const SCOPE_KINDS: usize = Scope::Site as usize + 1;
const COUNTER_KINDS: usize = Counter::SuccessAccounts as usize + 1;

/// The part of an attempt's keys that depends only on the route and the
/// client: built once and shared by that client's attempts.
#[derive(Debug, PartialEq, Eq)]
struct ClientKeys {
    route: String,
    ip: String,
    /// The subnet together with the fingerprint.
    subnet: Key,
    /// The subnet alone, whatever the fingerprint (an attacker controls
    /// the fingerprint, not the network).
    net: Key,
    fingerprint: Key,
    ip_item: u64,
    /// Each of [`CLIENT_SCOPES`]' keys, [`SCOPE_COUNTERS`] each: the stage
    /// plans a scope's eight operations from one array, with no lookup
    /// per key.
    scopes: [[Key; SCOPE_COUNTERS.len()]; CLIENT_SCOPES.len()],
    /// The route's [`SITE_COUNTERS`] keys.
    site: [Key; SITE_COUNTERS.len()],
}

/// Every counter key of one login attempt (hashed where they name a person
/// or an address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginKeys {
    client: std::sync::Arc<ClientKeys>,
    /// The keyed hash of the username, when the attempt names one.
    pub user: Option<String>,
    /// Sketch items: this address, this username.
    pub ip_item: u64,
    pub user_item: Option<u64>,
    /// The account's [`USER_COUNTERS`] keys, when there is a username.
    user_keys: Option<[Key; USER_COUNTERS.len()]>,
}

impl LoginKeys {
    /// The same attempt's keys once its username is known (a sidecar
    /// learns it from the application's outcome report).
    pub fn with_user(&self, hasher: &KeyHasher, username: &str) -> LoginKeys {
        let (user, user_item) = hasher.hash_and_item("user", folded(username).as_bytes());
        let user_keys = Some(user_keys(&self.client.route, &user));
        LoginKeys {
            client: self.client.clone(),
            user: Some(user),
            ip_item: self.ip_item,
            user_item: Some(user_item),
            user_keys,
        }
    }

    pub fn new(hasher: &KeyHasher, route: &str, ip: IpAddr, fingerprint: &str, username: Option<&str>) -> Self {
        let client = client_keys(hasher, route, ip, fingerprint);
        let user = username.map(|u| hasher.hash_and_item("user", folded(u).as_bytes()));
        let user_keys = user.as_ref().map(|(hash, _)| user_keys(route, hash));
        LoginKeys {
            ip_item: client.ip_item,
            client,
            user_item: user.as_ref().map(|(_, item)| *item),
            user: user.map(|(hash, _)| hash),
            user_keys,
        }
    }

    /// The keys of one client scope (ip, subnet, fingerprint or net), in
    /// [`SCOPE_COUNTERS`]' order; `None` for the other scopes.
    pub fn scope_keys(&self, scope: Scope) -> Option<&[Key; SCOPE_COUNTERS.len()]> {
        let index = CLIENT_SCOPES.iter().position(|held| *held == scope)?;
        self.client.scopes.get(index)
    }

    /// The route's keys, in [`SITE_COUNTERS`]' order.
    pub fn site_keys(&self) -> &[Key; SITE_COUNTERS.len()] {
        &self.client.site
    }

    /// The key's text, to look a reading up by (no `Arc` to clone: the
    /// detectors look keys up some forty times per attempt).
    pub fn name(&self, scope: Scope, counter: Counter) -> std::borrow::Cow<'_, str> {
        match self.built(scope, counter) {
            Some(key) => std::borrow::Cow::Borrowed(&**key),
            None => std::borrow::Cow::Owned(self.text(scope, counter)),
        }
    }

    /// The key of one counter of one scope, to plan an operation on.
    pub fn key(&self, scope: Scope, counter: Counter) -> Key {
        match self.built(scope, counter) {
            Some(key) => key.clone(),
            None => Key::from(self.text(scope, counter)),
        }
    }

    fn built(&self, scope: Scope, counter: Counter) -> Option<&Key> {
        let index = usize::from(POSITION[scope as usize][counter as usize]);
        if index < SCOPE_KEYS {
            let scope = &self.client.scopes[index / SCOPE_COUNTERS.len()];
            return scope.get(index % SCOPE_COUNTERS.len());
        }
        match index.checked_sub(CLIENT_KEYS) {
            None => self.client.site.get(index - SCOPE_KEYS),
            Some(user_index) => self.user_keys.as_ref()?.get(user_index),
        }
    }

    fn text(&self, scope: Scope, counter: Counter) -> String {
        let mut text = String::new();
        write_key(&mut text, &self.client, self.user.as_deref(), scope, counter);
        text
    }
}

/// `login:{route}:{scope}:{id}:{counter}`; Redis Cluster hash tags come
/// with the shared backend.
fn write_key(key: &mut String, client: &ClientKeys, user: Option<&str>, scope: Scope, counter: Counter) {
    write_prefix(key, &client.route, scope, scope_id(client, user, scope));
    key.push_str(counter.suffix());
}

/// The id a scope's keys carry for this client (and account).
fn scope_id<'a>(client: &'a ClientKeys, user: Option<&'a str>, scope: Scope) -> &'a str {
    match scope {
        Scope::Ip => &client.ip,
        Scope::Subnet => &client.subnet,
        Scope::Fingerprint => &client.fingerprint,
        Scope::Net => &client.net,
        Scope::User => user.unwrap_or("-"),
        Scope::Site => "all",
    }
}

/// `login:{route}:{scope}:{id}:`, what a scope's keys share, appended to `key`.
fn write_prefix(key: &mut String, route: &str, scope: Scope, id: &str) {
    // Plain appends: the formatting machinery costs more than the copying.
    for part in ["login:", route, ":", scope.as_str(), ":", id, ":"] {
        key.push_str(part);
    }
}

/// The keys of `counters` of one scope, written in `text`: the scope's
/// prefix once, each counter's name put after it (one allocation per key).
fn scope_counter_keys<const N: usize>(
    text: &mut String,
    route: &str,
    scope: Scope,
    id: &str,
    counters: [Counter; N],
) -> [Key; N] {
    text.clear();
    write_prefix(text, route, scope, id);
    let prefix = text.len();
    counters.map(|counter| {
        text.truncate(prefix);
        text.push_str(counter.suffix());
        Key::from(text.as_str())
    })
}

/// The account's keys of an attempt on `route`.
fn user_keys(route: &str, user: &str) -> [Key; USER_COUNTERS.len()] {
    scope_counter_keys(&mut String::with_capacity(96), route, Scope::User, user, USER_COUNTERS)
}

/// The route's and the client's keys: from this thread's cache when the
/// client tried to log in recently, else built (three keyed hashes and 36
/// keys) and remembered.
///
/// A stuffing run from one address sends attempt after attempt with the
/// same address and fingerprint; building their keys each time was most of
/// what an attempt cost. The cache is set-associative and bounded
/// ([`CLIENT_SLOTS`] per thread), compares route, address, fingerprint and
/// the hashing secret in full, and holds nothing that is not already in
/// the store's keys.
fn client_keys(hasher: &KeyHasher, route: &str, ip: IpAddr, fingerprint: &str) -> std::sync::Arc<ClientKeys> {
    thread_cache::remember(
        &CLIENT_CACHE,
        (hasher.tag(), route, ip, fingerprint),
        |held| {
            (held.tag == hasher.tag()
                && held.ip == ip
                && *held.keys.route == *route
                && *held.fingerprint == *fingerprint)
                .then(|| held.keys.clone())
        },
        || {
            let keys = std::sync::Arc::new(build_client_keys(hasher, route, ip, fingerprint));
            let entry = CachedClient { tag: hasher.tag(), ip, fingerprint: Box::from(fingerprint), keys: keys.clone() };
            (keys, Some(entry))
        },
    )
}

fn build_client_keys(hasher: &KeyHasher, route: &str, ip: IpAddr, fingerprint: &str) -> ClientKeys {
    // The address's item is shared with the other stages that hash it
    // (its rate-limit key, the classifier): one keyed hash per new client.
    let ip_item = hasher.address_item(ip);
    let ip_hash = KeyHasher::hex(ip_item);
    // A scope's `login:{route}:{scope}:{id}:` is written once and each
    // counter's name put after it. Only the address's own keys are new
    // to every client: the keys of its fingerprint, its subnet and its
    // route are those of the clients before it (see `shared_scope`).
    let mut text = String::with_capacity(96);
    let ip_keys = scope_counter_keys(&mut text, route, Scope::Ip, &ip_hash, SCOPE_COUNTERS);
    let network = Some(network(ip));
    // The fingerprint is not personal, but hashing keeps keys short.
    let fp = shared_scope(hasher, route, Scope::Fingerprint, None, fingerprint, || {
        Key::from(hasher.hash("fp", fingerprint.as_bytes()))
    });
    let net =
        shared_scope(hasher, route, Scope::Net, network, "", || Key::from(hasher.hash("net", subnet(ip).as_bytes())));
    let subnet_scope =
        shared_scope(hasher, route, Scope::Subnet, network, fingerprint, || Key::from([&*net.0, ".", &*fp.0].concat()));
    let site = shared_scope(hasher, route, Scope::Site, None, "", || Key::from("all"));
    ClientKeys {
        route: route.to_string(),
        ip: ip_hash,
        subnet: subnet_scope.0,
        net: net.0,
        fingerprint: fp.0,
        ip_item,
        scopes: [ip_keys, keys_of(&subnet_scope.1), keys_of(&fp.1), keys_of(&net.1)],
        site: keys_of(&site.1),
    }
}

/// The network an address counts in (its /24 or /64, as an address;
/// [`subnet`] is its text).
fn network(ip: IpAddr) -> IpAddr {
    match crate::cidr::canonical_ip(ip) {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
        }
    }
}

/// The first `N` of `keys` (all of them: a scope's keys come as many as
/// its counters), shared.
fn keys_of<const N: usize>(keys: &[Key]) -> [Key; N] {
    std::array::from_fn(|index| keys[index].clone())
}

/// The id and keys of one scope that many clients share (a fingerprint,
/// a subnet with or without a fingerprint, a route's site-wide sums),
/// found by what the id is made from: from this thread's cache when a
/// client of the same scope was seen, else `id` made (a keyed hash) and
/// the keys built. An address-rotating run brings a new address with
/// every attempt but the same fingerprint and few subnets: only the
/// address's own hash and eight keys are then new (the other 28 keys and
/// two keyed hashes were two-thirds of a new client's keys).
fn shared_scope(
    hasher: &KeyHasher,
    route: &str,
    scope: Scope,
    network: Option<IpAddr>,
    fingerprint: &str,
    id: impl FnOnce() -> Key,
) -> (Key, std::rc::Rc<[Key]>) {
    thread_cache::remember(
        &SCOPE_CACHE,
        (hasher.tag(), scope as u8, route, network, fingerprint),
        |held| {
            (held.tag == hasher.tag()
                && held.scope == scope
                && held.network == network
                && *held.route == *route
                && *held.fingerprint == *fingerprint)
                .then(|| (held.id.clone(), held.keys.clone()))
        },
        || {
            let id = id();
            let mut text = String::with_capacity(96);
            let keys: std::rc::Rc<[Key]> = match scope {
                Scope::Site => std::rc::Rc::new(scope_counter_keys(&mut text, route, scope, &id, SITE_COUNTERS)),
                _ => std::rc::Rc::new(scope_counter_keys(&mut text, route, scope, &id, SCOPE_COUNTERS)),
            };
            let entry = SharedScope {
                tag: hasher.tag(),
                scope,
                route: Box::from(route),
                network,
                fingerprint: Box::from(fingerprint),
                id: id.clone(),
                keys: keys.clone(),
            };
            ((id, keys), Some(entry))
        },
    )
}

/// Cached shared scopes per thread (a power of two).
const SCOPE_SLOTS: usize = 256;

/// A [`shared_scope`]: what it is found by, its id and its keys.
struct SharedScope {
    tag: u64,
    scope: Scope,
    route: Box<str>,
    network: Option<IpAddr>,
    /// The fingerprint as given (before hashing); empty for scopes
    /// without one.
    fingerprint: Box<str>,
    id: Key,
    keys: std::rc::Rc<[Key]>,
}

thread_local! {
    static SCOPE_CACHE: std::cell::RefCell<SetAssociative<SharedScope>> =
        std::cell::RefCell::new(SetAssociative::new(SCOPE_SLOTS));
}

/// Cached clients per thread (a power of two).
const CLIENT_SLOTS: usize = 512;

struct CachedClient {
    tag: u64,
    ip: IpAddr,
    /// The fingerprint as given (before hashing).
    fingerprint: Box<str>,
    keys: std::sync::Arc<ClientKeys>,
}

thread_local! {
    static CLIENT_CACHE: std::cell::RefCell<SetAssociative<CachedClient>> =
        std::cell::RefCell::new(SetAssociative::new(CLIENT_SLOTS));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Ip,
    /// A subnet together with one fingerprint.
    Subnet,
    Fingerprint,
    /// A subnet, whatever the fingerprint.
    Net,
    User,
    Site,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ip => "ip",
            Scope::Subnet => "net",
            Scope::Fingerprint => "fp",
            Scope::Net => "subnet",
            Scope::User => "user",
            Scope::Site => "site",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn without_a_configured_key_every_pipeline_of_a_process_shares_one() {
        if std::env::var("PALISADE_HASH_KEY").is_ok() {
            return;
        }
        let config = Config::default();
        let (a, b) = (KeyHasher::from_config(&config), KeyHasher::from_config(&config));
        assert_eq!(a.hash("ip", b"192.0.2.1"), b.hash("ip", b"192.0.2.1"), "a reload must keep the counters' keys");
    }

    #[test]
    fn every_key_is_found_by_position_and_reads_as_its_scope_and_counter() {
        let hasher = KeyHasher::from_config(&Config::default());
        let keys = LoginKeys::new(&hasher, "login", "203.0.113.7".parse().unwrap(), "11po", Some("alice"));
        for (scope, counter) in COUNTERS {
            let key = keys.key(scope, counter);
            assert_eq!(&*key, keys.text(scope, counter), "{scope:?} {counter:?}");
            let id = scope_id(&keys.client, keys.user.as_deref(), scope);
            assert_eq!(&*key, format!("login:login:{}:{id}:{}", scope.as_str(), counter.suffix()));
            assert_eq!(keys.name(scope, counter), keys.text(scope, counter));
            assert!(key.starts_with(&format!("login:login:{}:", scope.as_str())), "{key}");
            assert!(key.ends_with(&format!(":{}", counter.suffix())), "{key}");
        }
        // A counter no scope keeps is still named, not lost.
        assert_eq!(&*keys.key(Scope::Site, Counter::Ban), "login:login:site:all:ban");
        // Without a username, the account's keys name no one.
        let anonymous = LoginKeys::new(&hasher, "login", "203.0.113.7".parse().unwrap(), "11po", None);
        assert_eq!(&*anonymous.key(Scope::User, Counter::Failures), "login:login:user:-:f");
        assert_eq!(anonymous.with_user(&hasher, "Alice"), keys);
    }

    /// The arrays the stage plans from hold, in their counters' order,
    /// the very keys looked up one by one.
    #[test]
    fn scope_and_site_arrays_are_the_keys_by_scope_and_counter() {
        let hasher = KeyHasher::from_config(&Config::default());
        for username in [Some("alice"), None] {
            let keys = LoginKeys::new(&hasher, "login", "2001:db8::7".parse().unwrap(), "11po", username);
            for scope in CLIENT_SCOPES {
                let held = keys.scope_keys(scope).expect("a client scope");
                for (key, counter) in held.iter().zip(SCOPE_COUNTERS) {
                    assert!(std::sync::Arc::ptr_eq(key, &keys.key(scope, counter)), "{scope:?} {counter:?}");
                    assert_eq!(**key, keys.text(scope, counter));
                }
            }
            for (key, counter) in keys.site_keys().iter().zip(SITE_COUNTERS) {
                assert!(std::sync::Arc::ptr_eq(key, &keys.key(Scope::Site, counter)), "{counter:?}");
                assert_eq!(**key, keys.text(Scope::Site, counter));
            }
            assert!(keys.scope_keys(Scope::User).is_none() && keys.scope_keys(Scope::Site).is_none());
            for counter in USER_COUNTERS {
                assert_eq!(keys.key(Scope::User, counter).to_string(), keys.text(Scope::User, counter));
            }
        }
    }

    #[test]
    fn cached_client_keys_are_the_keys_built_afresh() {
        let mut config = Config::default();
        config.store.hash_key = "one".into();
        let one = KeyHasher::from_config(&config);
        config.store.hash_key = "two".into();
        let two = KeyHasher::from_config(&config);
        let ip: IpAddr = "198.51.100.9".parse().unwrap();
        for _ in 0..2 {
            for (hasher, route, ip, fingerprint) in [
                (&one, "login", ip, "11po"),
                (&two, "login", ip, "11po"),
                (&one, "admin", ip, "11po"),
                (&one, "login", ip, "20po"),
            ] {
                let cached = client_keys(hasher, route, ip, fingerprint);
                assert_eq!(*cached, build_client_keys(hasher, route, ip, fingerprint), "{route} {fingerprint}");
            }
        }
        // Same client, same secret: the very same keys, shared.
        assert!(std::sync::Arc::ptr_eq(
            &client_keys(&one, "login", ip, "11po"),
            &client_keys(&one, "login", ip, "11po")
        ));
    }

    /// Clients of one fingerprint, subnet and route share those scopes'
    /// keys, built once; each scope's id is the keyed hash it always was,
    /// and nothing is shared across secrets, routes, fingerprints or
    /// networks.
    #[test]
    fn shared_scopes_are_shared_only_where_their_ids_are_equal() {
        let mut config = Config::default();
        config.store.hash_key = "shared".into();
        let one = KeyHasher::from_config(&config);
        config.store.hash_key = "another".into();
        let two = KeyHasher::from_config(&config);
        let check = |hasher: &KeyHasher, route: &str, ip: &str, fingerprint: &str| {
            let ip: IpAddr = ip.parse().unwrap();
            let keys = build_client_keys(hasher, route, ip, fingerprint);
            let fp = hasher.hash("fp", fingerprint.as_bytes());
            let net = hasher.hash("net", subnet(ip).as_bytes());
            assert_eq!(*keys.fingerprint, fp);
            assert_eq!(*keys.net, net);
            assert_eq!(*keys.subnet, format!("{net}.{fp}"));
            for (scope, id) in
                [(Scope::Subnet, &keys.subnet), (Scope::Fingerprint, &keys.fingerprint), (Scope::Net, &keys.net)]
            {
                let index = CLIENT_SCOPES.iter().position(|held| *held == scope).unwrap();
                for (key, counter) in keys.scopes[index].iter().zip(SCOPE_COUNTERS) {
                    assert_eq!(**key, format!("login:{route}:{}:{id}:{}", scope.as_str(), counter.suffix()));
                }
            }
            for (key, counter) in keys.site.iter().zip(SITE_COUNTERS) {
                assert_eq!(**key, format!("login:{route}:site:all:{}", counter.suffix()));
            }
            keys
        };
        let same = |a: &ClientKeys, b: &ClientKeys, scope: Scope| {
            let index = CLIENT_SCOPES.iter().position(|held| *held == scope).unwrap();
            std::sync::Arc::ptr_eq(&a.scopes[index][0], &b.scopes[index][0])
        };
        let first = check(&one, "login", "203.0.113.7", "11po");
        let neighbour = check(&one, "login", "203.0.113.8", "11po");
        assert!(same(&first, &neighbour, Scope::Fingerprint) && same(&first, &neighbour, Scope::Net));
        assert!(same(&first, &neighbour, Scope::Subnet) && !same(&first, &neighbour, Scope::Ip));
        assert!(std::sync::Arc::ptr_eq(&first.site[0], &neighbour.site[0]));
        let elsewhere = check(&one, "login", "203.0.114.7", "11po");
        assert!(same(&first, &elsewhere, Scope::Fingerprint) && !same(&first, &elsewhere, Scope::Net));
        assert!(!same(&first, &elsewhere, Scope::Subnet));
        let other_browser = check(&one, "login", "203.0.113.9", "20po");
        assert!(same(&first, &other_browser, Scope::Net) && !same(&first, &other_browser, Scope::Fingerprint));
        assert!(!same(&first, &other_browser, Scope::Subnet));
        let other_route = check(&one, "signin", "203.0.113.7", "11po");
        assert!(!same(&first, &other_route, Scope::Fingerprint) && !same(&first, &other_route, Scope::Net));
        let other_secret = check(&two, "login", "203.0.113.7", "11po");
        assert!(!same(&first, &other_secret, Scope::Fingerprint) && !same(&first, &other_secret, Scope::Net));
        let v6 = check(&one, "login", "2001:db8:1:2::5", "11po");
        let v6_neighbour = check(&one, "login", "2001:db8:1:2:ffff::9", "11po");
        assert!(same(&v6, &v6_neighbour, Scope::Net) && !same(&v6, &first, Scope::Net));
        assert!(!same(&v6, &check(&one, "login", "2001:db8:1:3::5", "11po"), Scope::Net));
        // An IPv4 address written as IPv6 counts in its IPv4 subnet.
        assert!(same(&first, &check(&one, "login", "::ffff:203.0.113.99", "11po"), Scope::Net));
    }

    #[test]
    fn subnets_and_hashes() {
        assert_eq!(subnet("203.0.113.77".parse().unwrap()), "203.0.113.0/24");
        assert_eq!(subnet("2001:db8:1:2::5".parse().unwrap()), "2001:db8:1:2::/64");
        let mut config = Config::default();
        config.store.hash_key = "k".into();
        let hasher = KeyHasher::from_config(&config);
        let keys = LoginKeys::new(&hasher, "login", "203.0.113.7".parse().unwrap(), "11po", Some("Alice@Example.com"));
        let key = keys.key(Scope::User, Counter::Failures);
        assert!(!key.to_lowercase().contains("alice"), "{key}");
        assert_eq!(
            keys.user,
            LoginKeys::new(&hasher, "login", "198.51.100.1".parse().unwrap(), "x", Some("alice@example.com")).user
        );
        config.store.hash_key = "other".into();
        let other = KeyHasher::from_config(&config);
        assert_ne!(
            LoginKeys::new(&other, "login", "203.0.113.7".parse().unwrap(), "11po", Some("alice@example.com")).user,
            keys.user
        );
    }

    /// A username folds as `to_lowercase` folds it, ASCII or not.
    #[test]
    fn usernames_fold_as_lowercased() {
        for name in [
            "alice",
            "Alice",
            "ALICE@EXAMPLE.COM",
            "user1@example.com",
            "",
            "İstanbul",
            "ÉLODIE",
            "straße",
            "ΣΊΣΥΦΟΣ",
            "a\u{0}b",
        ] {
            assert_eq!(folded(name), name.to_lowercase(), "{name:?}");
        }
    }
}
