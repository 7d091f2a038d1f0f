//! The counter keys of a payment attempt, with typed scopes and counters.
//!
//! A key is `pay:{route}:{scope}:{id}:{counter}`. Every id that names a
//! person, an address or a card is a keyed hash (see
//! [`crate::keyed_hash`]); a card's id is the hash of its number, so the
//! store holds no card number, expiry or CVV, and without the secret the
//! hashes cannot be turned back into cards by trying every number of a BIN.

use std::net::IpAddr;

// Payments count subnets as logins do (/24, /64).
use crate::credential::subnet;
use crate::keyed_hash::KeyHasher;
use crate::store::Key;

use super::card::PaymentFacts;

/// What a counter is counted per.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Ip,
    /// A subnet together with one fingerprint.
    Subnet,
    /// A subnet, whatever the fingerprint.
    Net,
    Fingerprint,
    /// The logged-in account (`account_header` / `account_cookie`).
    Account,
    /// A palisade session (`[session]`).
    Session,
    /// One card (its keyed hash).
    Card,
    /// One BIN from one address, and from one fingerprint.
    IpBin,
    FingerprintBin,
    /// The whole route.
    Site,
}

impl Scope {
    const COUNT: usize = 10;

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ip => "ip",
            Scope::Subnet => "net",
            Scope::Net => "subnet",
            Scope::Fingerprint => "fp",
            Scope::Account => "account",
            Scope::Session => "session",
            Scope::Card => "card",
            Scope::IpBin => "ipbin",
            Scope::FingerprintBin => "fpbin",
            Scope::Site => "site",
        }
    }
}

/// One counter of a scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Declined payments (sliding window).
    Declines,
    /// Approved payments.
    Approvals,
    /// Attempts palisade refused.
    Refused,
    /// A ban in force.
    Ban,
    /// Attempts whatever their outcome, counted on arrival.
    Attempts,
    /// Distinct cards (HyperLogLog).
    Cards,
    /// Distinct accounts (HyperLogLog).
    Accounts,
    /// Attempts with an amount under `small_amount_below`.
    SmallAmounts,
    /// Site-wide decayed sums: attempts and declines over the last
    /// minute, and over the learned baseline.
    RecentAttempts,
    RecentDeclines,
    BaselineAttempts,
    BaselineDeclines,
}

impl Counter {
    const COUNT: usize = 12;

    /// The last part of the counter's key.
    pub fn suffix(self) -> &'static str {
        match self {
            Counter::Declines => "declines",
            Counter::Approvals => "approvals",
            Counter::Refused => "refused",
            Counter::Ban => "ban",
            Counter::Attempts => "attempts",
            Counter::Cards => "cards",
            Counter::Accounts => "accounts",
            Counter::SmallAmounts => "small",
            Counter::RecentAttempts => "attempts_1m",
            Counter::RecentDeclines => "declines_1m",
            Counter::BaselineAttempts => "attempts_base",
            Counter::BaselineDeclines => "declines_base",
        }
    }
}

/// The scopes a source of attempts is judged by.
pub const SOURCES: [Scope; 6] =
    [Scope::Ip, Scope::Subnet, Scope::Net, Scope::Fingerprint, Scope::Account, Scope::Session];

/// Every counter kept per scope.
const USED: &[(Scope, &[Counter])] = &[
    (Scope::Ip, &SOURCE_COUNTERS),
    (Scope::Subnet, &SOURCE_COUNTERS),
    (Scope::Net, &SOURCE_COUNTERS),
    (Scope::Fingerprint, &SOURCE_COUNTERS),
    (Scope::Account, &SOURCE_COUNTERS),
    (Scope::Session, &SOURCE_COUNTERS),
    (Scope::Card, &[Counter::Declines, Counter::Approvals, Counter::Ban, Counter::Attempts, Counter::Accounts]),
    (Scope::IpBin, &[Counter::Cards]),
    (Scope::FingerprintBin, &[Counter::Cards]),
    (
        Scope::Site,
        &[Counter::RecentAttempts, Counter::RecentDeclines, Counter::BaselineAttempts, Counter::BaselineDeclines],
    ),
];

const SOURCE_COUNTERS: [Counter; 6] =
    [Counter::Declines, Counter::Approvals, Counter::Refused, Counter::Ban, Counter::Cards, Counter::SmallAmounts];

/// Every counter key of one payment attempt, built once and shared by the
/// plan, the readings and the store. Scopes the attempt has no id for (no
/// card in the body, no account, no session) have no keys.
#[derive(Debug, Clone)]
pub struct PaymentKeys {
    keys: Vec<Option<Key>>,
}

impl PaymentKeys {
    pub fn new(
        hasher: &KeyHasher,
        route: &str,
        ip: IpAddr,
        fingerprint: &str,
        session: Option<&str>,
        facts: &PaymentFacts,
    ) -> PaymentKeys {
        let ip_id = hasher.hash("ip", crate::cidr::canonical_ip(ip).to_string().as_bytes());
        let fingerprint = hasher.hash("fp", fingerprint.as_bytes());
        let net = hasher.hash("net", subnet(ip).as_bytes());
        let card = facts.card.as_ref();
        let id = |scope: Scope| -> Option<String> {
            match scope {
                Scope::Ip => Some(ip_id.clone()),
                Scope::Subnet => Some(format!("{net}.{fingerprint}")),
                Scope::Net => Some(net.clone()),
                Scope::Fingerprint => Some(fingerprint.clone()),
                Scope::Account => facts.account.as_ref().map(|(hash, _)| hash.clone()),
                Scope::Session => session.map(|id| hasher.hash("session", id.as_bytes())),
                Scope::Card => card.map(|card| card.hash.clone()),
                Scope::IpBin => card.map(|card| format!("{ip_id}.{}", card.bin_hash)),
                Scope::FingerprintBin => card.map(|card| format!("{fingerprint}.{}", card.bin_hash)),
                Scope::Site => Some("all".to_string()),
            }
        };
        let mut keys = vec![None; Scope::COUNT * Counter::COUNT];
        for (scope, counters) in USED {
            let Some(id) = id(*scope) else { continue };
            let prefix = format!("pay:{route}:{}:{id}:", scope.as_str());
            for counter in *counters {
                let mut key = String::with_capacity(prefix.len() + 16);
                key.push_str(&prefix);
                key.push_str(counter.suffix());
                keys[*scope as usize * Counter::COUNT + *counter as usize] = Some(Key::from(key));
            }
        }
        PaymentKeys { keys }
    }

    /// The key of one counter of one scope, when the attempt has it.
    pub fn key(&self, scope: Scope, counter: Counter) -> Option<&Key> {
        self.keys[scope as usize * Counter::COUNT + counter as usize].as_ref()
    }

    /// Whether the attempt has an id in `scope`.
    pub fn has(&self, scope: Scope) -> bool {
        (0..Counter::COUNT).any(|c| self.keys[scope as usize * Counter::COUNT + c].is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payment::card::{Card, PaymentFacts};

    #[test]
    fn keys_hash_every_id_and_name_their_counter() {
        let mut config = crate::config::Config::default();
        config.store.hash_key = "k".into();
        let hasher = KeyHasher::from_config(&config);
        let facts = PaymentFacts {
            card: Card::from_number(&hasher, "4000000000000002", 6),
            amount: Some(1.0),
            account: Some((hasher.hash("account", b"alice"), 1)),
        };
        let keys = PaymentKeys::new(&hasher, "checkout", "203.0.113.7".parse().unwrap(), "fp", Some("s1"), &facts);
        let card = keys.key(Scope::Card, Counter::Accounts).unwrap();
        assert!(card.starts_with("pay:checkout:card:") && card.ends_with(":accounts"), "{card}");
        for scope in SOURCES {
            let key = keys.key(scope, Counter::Declines).unwrap();
            assert!(!key.contains("203.0.113") && !key.contains("alice") && !key.contains("400000"), "{key}");
        }
        assert!(keys.key(Scope::Card, Counter::Refused).is_none(), "not a card counter");
        let anonymous =
            PaymentKeys::new(&hasher, "checkout", "203.0.113.7".parse().unwrap(), "fp", None, &PaymentFacts::default());
        assert!(!anonymous.has(Scope::Card) && !anonymous.has(Scope::Account) && !anonymous.has(Scope::Session));
        assert!(anonymous.has(Scope::Ip));
    }
}
