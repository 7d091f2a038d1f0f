//! The counter keys of a login attempt.
//!
//! Usernames and client addresses never reach the store in clear: each is
//! replaced by a keyed BLAKE3 hash (a secret from `[store] hash_key` or
//! `PALISADE_HASH_KEY`). The same secret on every replica gives the same
//! keys, so replicas share counters; without the secret the store's
//! contents cannot be turned back into usernames by guessing.

use std::net::IpAddr;

use crate::store::Key;

pub use crate::keyed_hash::KeyHasher;

/// The subnet an address belongs to for counting: /24 for IPv4, /64 for
/// IPv6 (one link: what one customer or one host is handed).
pub fn subnet(ip: IpAddr) -> String {
    match crate::cidr::canonical_ip(ip) {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
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

/// The counters kept per scope: failures, successes, refused attempts,
/// bans, distinct usernames, attempts in flight, accounts that logged in;
/// per account: failures and distinct addresses; per route: the site-wide
/// decayed sums.
const COUNTERS: [(Scope, Counter); 38] = [
    (Scope::Ip, Counter::Failures),
    (Scope::Ip, Counter::Successes),
    (Scope::Ip, Counter::Refused),
    (Scope::Ip, Counter::Ban),
    (Scope::Ip, Counter::Usernames),
    (Scope::Subnet, Counter::Failures),
    (Scope::Subnet, Counter::Successes),
    (Scope::Subnet, Counter::Refused),
    (Scope::Subnet, Counter::Ban),
    (Scope::Subnet, Counter::Usernames),
    (Scope::Fingerprint, Counter::Failures),
    (Scope::Fingerprint, Counter::Successes),
    (Scope::Fingerprint, Counter::Refused),
    (Scope::Fingerprint, Counter::Ban),
    (Scope::Fingerprint, Counter::Usernames),
    (Scope::Net, Counter::Failures),
    (Scope::Net, Counter::Successes),
    (Scope::Net, Counter::Refused),
    (Scope::Net, Counter::Ban),
    (Scope::Net, Counter::Usernames),
    (Scope::Ip, Counter::Forwarded),
    (Scope::Ip, Counter::Resolved),
    (Scope::Ip, Counter::SuccessAccounts),
    (Scope::Subnet, Counter::Forwarded),
    (Scope::Subnet, Counter::Resolved),
    (Scope::Subnet, Counter::SuccessAccounts),
    (Scope::Fingerprint, Counter::Forwarded),
    (Scope::Fingerprint, Counter::Resolved),
    (Scope::Fingerprint, Counter::SuccessAccounts),
    (Scope::Net, Counter::Forwarded),
    (Scope::Net, Counter::Resolved),
    (Scope::Net, Counter::SuccessAccounts),
    (Scope::User, Counter::Failures),
    (Scope::User, Counter::Addresses),
    (Scope::Site, Counter::RecentAttempts),
    (Scope::Site, Counter::RecentFailures),
    (Scope::Site, Counter::BaselineAttempts),
    (Scope::Site, Counter::BaselineFailures),
];

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

/// Every counter key of one login attempt (hashed where they name a person
/// or an address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginKeys {
    /// `{route}` prefix shared by all keys of this route.
    pub route: String,
    pub ip: String,
    pub subnet: String,
    /// The subnet alone, whatever the fingerprint (an attacker controls
    /// the fingerprint, not the network).
    pub net: String,
    pub fingerprint: String,
    pub user: Option<String>,
    /// Sketch items: this address, this username.
    pub ip_item: u64,
    pub user_item: Option<u64>,
    /// Every key of [`COUNTERS`], built once per attempt and shared by the
    /// plan, the readings and the store.
    built: Vec<Key>,
}

impl LoginKeys {
    /// The same attempt's keys once its username is known (a sidecar
    /// learns it from the application's outcome report).
    pub fn with_user(&self, hasher: &KeyHasher, username: &str) -> LoginKeys {
        let (user, user_item) = hasher.hash_and_item("user", username.to_lowercase().as_bytes());
        let mut keys = LoginKeys { user: Some(user), user_item: Some(user_item), built: Vec::new(), ..self.clone() };
        keys.build();
        keys
    }

    pub fn new(hasher: &KeyHasher, route: &str, ip: IpAddr, fingerprint: &str, username: Option<&str>) -> Self {
        let ip_text = crate::cidr::canonical_ip(ip).to_string();
        let (ip_hash, ip_item) = hasher.hash_and_item("ip", ip_text.as_bytes());
        // The fingerprint is not personal, but hashing keeps keys short.
        let fingerprint = hasher.hash("fp", fingerprint.as_bytes());
        let net = hasher.hash("net", subnet(ip).as_bytes());
        let user = username.map(|u| hasher.hash_and_item("user", u.to_lowercase().as_bytes()));
        let mut keys = LoginKeys {
            route: route.to_string(),
            ip: ip_hash,
            subnet: format!("{net}.{fingerprint}"),
            net,
            fingerprint,
            user_item: user.as_ref().map(|(_, item)| *item),
            user: user.map(|(hash, _)| hash),
            ip_item,
            built: Vec::new(),
        };
        keys.build();
        keys
    }

    /// Build every key of [`COUNTERS`] (one allocation each: the text is
    /// assembled in one reused buffer, then copied into its `Arc`).
    fn build(&mut self) {
        let mut text = String::with_capacity(96);
        let built = COUNTERS
            .iter()
            .map(|(scope, counter)| {
                text.clear();
                self.write(&mut text, *scope, *counter);
                Key::from(text.as_str())
            })
            .collect();
        self.built = built;
    }

    /// `login:{route}:{scope}:{id}:{counter}`; Redis Cluster hash tags come
    /// with the shared backend.
    fn write(&self, key: &mut String, scope: Scope, counter: Counter) {
        let id = match scope {
            Scope::Ip => &self.ip,
            Scope::Subnet => &self.subnet,
            Scope::Fingerprint => &self.fingerprint,
            Scope::Net => &self.net,
            Scope::User => self.user.as_deref().unwrap_or("-"),
            Scope::Site => "all",
        };
        // Plain appends: this runs 38 times per login attempt, and the
        // formatting machinery costs more than the copying.
        for part in ["login:", &self.route, ":", scope.as_str(), ":", id, ":", counter.suffix()] {
            key.push_str(part);
        }
    }

    /// The key's text, to look a reading up by (no `Arc` to clone: the
    /// detectors look keys up some forty times per attempt).
    pub fn name(&self, scope: Scope, counter: Counter) -> std::borrow::Cow<'_, str> {
        let index = POSITION[scope as usize][counter as usize];
        match self.built.get(usize::from(index)) {
            Some(key) => std::borrow::Cow::Borrowed(&**key),
            None => {
                let mut text = String::new();
                self.write(&mut text, scope, counter);
                std::borrow::Cow::Owned(text)
            }
        }
    }

    /// The key of one counter of one scope, to plan an operation on.
    pub fn key(&self, scope: Scope, counter: Counter) -> Key {
        let index = POSITION[scope as usize][counter as usize];
        match self.built.get(usize::from(index)) {
            Some(key) => key.clone(),
            None => {
                let mut text = String::new();
                self.write(&mut text, scope, counter);
                Key::from(text)
            }
        }
    }
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
            let mut text = String::new();
            keys.write(&mut text, scope, counter);
            assert_eq!(&*key, text, "{scope:?} {counter:?}");
            assert_eq!(keys.name(scope, counter), text);
            assert!(key.starts_with(&format!("login:login:{}:", scope.as_str())), "{key}");
            assert!(key.ends_with(&format!(":{}", counter.suffix())), "{key}");
        }
        // A counter no scope keeps is still named, not lost.
        assert_eq!(&*keys.key(Scope::Site, Counter::Ban), "login:login:site:all:ban");
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
}
