//! Keyed hashes of what palisade must count but never store in clear:
//! usernames, client addresses, session ids.
//!
//! Each value is replaced by a keyed BLAKE3 hash with a secret from
//! `[store] hash_key` or `PALISADE_HASH_KEY`. The same secret on every
//! replica gives the same keys, so replicas share counters; without the
//! secret the store's contents cannot be turned back into usernames by
//! guessing.

use std::net::IpAddr;

use crate::config::Config;
use crate::thread_cache::{self, SetAssociative};

#[derive(Clone)]
pub struct KeyHasher {
    key: [u8; 32],
    /// Names this secret without revealing it, so that what is cached per
    /// secret (see `credential::keys`) is never mixed between two.
    tag: u64,
}

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHasher(<secret>)")
    }
}

/// Inputs up to this long (one BLAKE3 block) are hashed in one call.
const SHORT_INPUT: usize = 64;

impl KeyHasher {
    /// From the configured secret, the environment, or (when neither is
    /// set) a random key for this process — one for the whole process, so
    /// a configuration reload keeps every counter and ban.
    pub fn from_config(config: &Config) -> Self {
        let secret = if !config.store.hash_key.is_empty() {
            config.store.hash_key.clone().into_bytes()
        } else if let Ok(from_env) = std::env::var("PALISADE_HASH_KEY") {
            from_env.into_bytes()
        } else {
            process_secret().to_vec()
        };
        KeyHasher::from_key(blake3::derive_key("palisade 2026 counter keys v1", &secret))
    }

    fn from_key(key: [u8; 32]) -> Self {
        let derived = blake3::derive_key("palisade 2026 key hasher tag", &key);
        let mut tag = [0u8; 8];
        tag.copy_from_slice(&derived[..8]);
        KeyHasher { key, tag: u64::from_le_bytes(tag) }
    }

    /// Equal for equal secrets, different (but for a 2^-64 chance) otherwise.
    pub fn tag(&self) -> u64 {
        self.tag
    }

    /// A short keyed hash (16 hex characters) of `value` in `domain`.
    pub fn hash(&self, domain: &str, value: &[u8]) -> String {
        Self::hex(u64::from_le_bytes(self.digest(domain, &[value])))
    }

    /// [`KeyHasher::item_hex`] as a string (`hex::encode` collects its
    /// digits one `char` at a time, several times the cost).
    pub fn hex(item: u64) -> String {
        // The digits are ASCII: no lossy decoding (which walks them as
        // UTF-8 chunks) and one allocation of the right size.
        String::from(std::str::from_utf8(&Self::item_hex(item)).unwrap_or_default())
    }

    /// A keyed 64-bit item for distinct-count sketches.
    pub fn item(&self, domain: &str, value: &[u8]) -> u64 {
        u64::from_le_bytes(self.digest(domain, &[value]))
    }

    /// The keyed item of a client address: [`KeyHasher::item`] of its
    /// canonical text in the `ip` domain. Three stages hash the address of
    /// every client they meet (its rate-limit key, its login keys, the
    /// classifier's address keys): from this thread's cache, a new client
    /// costs one keyed hash rather than one per stage.
    pub fn address_item(&self, ip: IpAddr) -> u64 {
        let (tag, ip) = (self.tag, crate::cidr::canonical_ip(ip));
        thread_cache::remember(
            &ADDRESS_ITEMS,
            (tag, ip),
            |held: &AddressItem| (held.tag == tag && held.ip == ip).then_some(held.item),
            || {
                let mut buffer = [0u8; 64];
                let item = self.item("ip", crate::cidr::ip_text(ip, &mut buffer).as_bytes());
                (item, Some(AddressItem { tag, ip, item }))
            },
        )
    }

    /// The item of `parts` laid end to end, without laying them out.
    pub fn item_of(&self, domain: &str, parts: &[&[u8]]) -> u64 {
        u64::from_le_bytes(self.digest(domain, parts))
    }

    /// The text [`KeyHasher::hash`] gives for the value whose item is
    /// `item` (both are the same first 8 bytes of the keyed hash), on the
    /// stack: for keys put together without allocating.
    pub fn item_hex(item: u64) -> [u8; 16] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 16];
        for (pair, byte) in out.chunks_exact_mut(2).zip(item.to_le_bytes()) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0xf)];
        }
        out
    }

    /// [`KeyHasher::hash`] and [`KeyHasher::item`] of the same value, for
    /// the price of one.
    pub fn hash_and_item(&self, domain: &str, value: &[u8]) -> (String, u64) {
        let digest = self.digest(domain, &[value]);
        let item = u64::from_le_bytes(digest);
        (Self::hex(item), item)
    }

    /// The first 8 bytes of the keyed BLAKE3 of `domain`, a zero byte and
    /// the value (given in parts): BLAKE3's output is one stream, whose
    /// first 32 bytes are its hash.
    fn digest(&self, domain: &str, value: &[&[u8]]) -> [u8; 8] {
        // A short input (an address, a fingerprint, a username: nearly all)
        // is laid out on the stack and hashed in one call, which skips the
        // incremental hasher's set-up and buffering (about a third of the
        // cost); the bytes hashed are the same either way.
        let mut input = [0u8; SHORT_INPUT];
        let len = domain.len() + 1 + value.iter().map(|part| part.len()).sum::<usize>();
        if len <= SHORT_INPUT {
            input[..domain.len()].copy_from_slice(domain.as_bytes());
            let mut at = domain.len() + 1;
            for part in value {
                input[at..at + part.len()].copy_from_slice(part);
                at += part.len();
            }
            let hash = blake3::keyed_hash(&self.key, &input[..len]);
            let mut first = [0u8; 8];
            first.copy_from_slice(&hash.as_bytes()[..8]);
            return first;
        }
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(domain.as_bytes());
        hasher.update(&[0]);
        for part in value {
            hasher.update(part);
        }
        let mut first = [0u8; 8];
        hasher.finalize_xof().fill(&mut first);
        first
    }
}

/// Address items cached per thread (a power of two): a few thousand new
/// clients a second each asked for by three stages within one request.
const ADDRESS_SLOTS: usize = 512;

/// One address's item under one secret.
struct AddressItem {
    /// The secret's tag: a reload with a new secret misses.
    tag: u64,
    /// Canonical (an IPv4-mapped IPv6 address as IPv4).
    ip: IpAddr,
    item: u64,
}

thread_local! {
    static ADDRESS_ITEMS: std::cell::RefCell<SetAssociative<AddressItem>> =
        std::cell::RefCell::new(SetAssociative::new(ADDRESS_SLOTS));
}

/// The per-process random secret, made once.
fn process_secret() -> [u8; 32] {
    static SECRET: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    *SECRET.get_or_init(random_secret)
}

fn random_secret() -> [u8; 32] {
    // Unpredictable enough for a per-process key: time, process id and the
    // address-space layout, mixed by BLAKE3.
    let mut hasher = blake3::Hasher::new();
    hasher.update(&crate::clock::Clock::now(&crate::clock::SystemClock).to_le_bytes());
    hasher.update(&std::process::id().to_le_bytes());
    let local = 0u8;
    hasher.update(&(&local as *const u8 as usize).to_le_bytes());
    hasher.update(&(random_secret as fn() -> [u8; 32] as usize).to_le_bytes());
    *hasher.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_item_are_the_two_of_one_digest() {
        let hasher = KeyHasher::from_key([7; 32]);
        assert_eq!(hasher.tag(), KeyHasher::from_key([7; 32]).tag());
        assert_ne!(hasher.tag(), KeyHasher::from_key([8; 32]).tag());
        let (hash, item) = hasher.hash_and_item("user", b"alice");
        assert_eq!(hash, hasher.hash("user", b"alice"));
        assert_eq!(item, hasher.item("user", b"alice"));
        assert_eq!(hash.len(), 16);
        assert_eq!(std::str::from_utf8(&KeyHasher::item_hex(item)).unwrap(), hash);
        for value in [&b""[..], b"10.0.0.1", &[b'x'; 300]] {
            let item = hasher.item("ip", value);
            assert_eq!(std::str::from_utf8(&KeyHasher::item_hex(item)).unwrap(), hasher.hash("ip", value));
        }
        assert_eq!(hasher.item_of("fp", &[b"a", b"|", b"bc"]), hasher.item("fp", b"a|bc"));
        // Pinned: stored keys and sketches must not change between versions.
        let mut full = blake3::Hasher::new_keyed(&[7; 32]);
        full.update(b"user\0alice");
        assert_eq!(hash, hex::encode(&full.finalize().as_bytes()[..8]));
        // Short inputs are hashed in one call, long ones incrementally: the
        // same digest on both sides of the line, in one part or several.
        for len in [0, 1, 58, 59, 60, 61, 100, 300] {
            let value: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let mut full = blake3::Hasher::new_keyed(&[7; 32]);
            full.update(b"ua\0");
            full.update(&value);
            let expected = u64::from_le_bytes(full.finalize().as_bytes()[..8].try_into().unwrap());
            assert_eq!(hasher.item("ua", &value), expected, "{len} bytes");
            let (head, tail) = value.split_at(len / 2);
            assert_eq!(hasher.item_of("ua", &[head, tail]), expected, "{len} bytes in two parts");
        }
    }

    /// An address's cached item is the item of its canonical text, for
    /// each secret, asked once or again, IPv4, IPv6 and IPv4-mapped.
    #[test]
    fn an_address_item_is_the_item_of_its_canonical_text() {
        let one = KeyHasher::from_key([1; 32]);
        let two = KeyHasher::from_key([2; 32]);
        let mut addresses: Vec<IpAddr> = ["192.0.2.1", "10.0.0.255", "2001:db8::7", "::ffff:198.18.3.4", "::1"]
            .iter()
            .map(|text| text.parse().unwrap())
            .collect();
        // More than a set holds, so that entries are replaced as well.
        addresses.extend((0..2000u32).map(|n| IpAddr::from([198, 18, (n >> 8) as u8, n as u8])));
        for _ in 0..2 {
            for &ip in &addresses {
                let text = crate::cidr::canonical_ip(ip).to_string();
                for hasher in [&one, &two] {
                    assert_eq!(hasher.address_item(ip), hasher.item("ip", text.as_bytes()), "{ip}");
                }
            }
        }
        assert_eq!(KeyHasher::hex(one.address_item(addresses[0])), one.hash("ip", b"192.0.2.1"));
    }
}
