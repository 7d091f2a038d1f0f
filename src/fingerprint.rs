//! palisade's HTTP fingerprint: how a client speaks HTTP, as a short
//! stable string.
//!
//! ```text
//! 11po-rl09_4b2a8c0d1e9f
//! ││├┘│││├┘ └─ first 12 hex of SHA-256 over the header names, in wire
//! ││││││││      order and case as sent, joined with ","
//! │││││││└─ number of those header names (2 digits, at most 99)
//! ││││││└─ "l" when Accept-Language is present, else "-"
//! │││││└─ "r" when Referer is present, else "-"
//! ││││└─ "c" when Cookie is present, else "-"
//! ││└┴─ method, first two letters, lowercase
//! └┴─ protocol version: 10, 11 or 20
//! ```
//!
//! Headers that proxies add on the way (`X-Forwarded-*`, `Forwarded`,
//! `Via`, `X-Real-IP`, `CDN-*`, `CF-*`, `True-Client-IP`) are left out, so
//! a client keeps its fingerprint whatever path its requests take. Values
//! are never part of it: the same client sending different cookies or user
//! agents keeps the same header-order hash. The design is palisade's own
//! (it is not JA4H).

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::thread_cache::{self, SetAssociative};

/// Whether a proxy, not the client, is likely to have added this header.
pub fn added_by_proxies(name: &str) -> bool {
    let lower = |prefix: &str| name.len() >= prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix);
    lower("x-forwarded-")
        || lower("cdn-")
        || lower("cf-")
        || ["forwarded", "via", "x-real-ip", "true-client-ip"].iter().any(|n| name.eq_ignore_ascii_case(n))
}

/// The fingerprint of a request with these header names (wire order, as
/// sent; repeated names repeated).
pub fn http_fingerprint<'a, I>(version: http::Version, method: &http::Method, names: I) -> Arc<str>
where
    I: IntoIterator<Item = &'a str>,
    I::IntoIter: Clone,
{
    http_fingerprints(version, method, names).as_sent
}

/// The fingerprint with every header name folded to lowercase first: what
/// counters key on, so that a client's HTTP/1 (case as sent) and HTTP/2
/// (always lowercase) requests count together. The same as
/// [`http_fingerprint`] over lowercased names, without allocating them.
pub fn folded_http_fingerprint<'a, I>(version: http::Version, method: &http::Method, names: I) -> Arc<str>
where
    I: IntoIterator<Item = &'a str>,
    I::IntoIter: Clone,
{
    http_fingerprints(version, method, names).folded
}

/// A request's two fingerprints: over its header names as sent, and folded
/// to lowercase (the same text when no name has an upper-case letter).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fingerprints {
    pub as_sent: Arc<str>,
    pub folded: Arc<str>,
}

/// Both fingerprints of a request, from one look into the layouts this
/// thread remembers (an HTTP/1 request needs both: the one as sent for its
/// decision, the folded one for its counters).
pub fn http_fingerprints<'a, I>(version: http::Version, method: &http::Method, names: I) -> Fingerprints
where
    I: IntoIterator<Item = &'a str>,
    I::IntoIter: Clone,
{
    remembered(version, method, names.into_iter())
}

// === Remembered fingerprints ===
//
// A site's clients speak in a few hundred header layouts (one per browser
// version and library), and every request needs its fingerprint, on
// HTTP/1 twice (as sent and folded). Hashing the names with SHA-256 again
// each time was a tenth of a login's decision; comparing them with a
// remembered layout costs a fraction of that, and both fingerprints are
// remembered together so that one comparison gives both. The cache is per
// thread, set-associative and bounded, compares the names in full (so a
// collision only costs a recomputation) and holds only header names.

/// Remembered layouts per thread (a power of two).
const REMEMBERED: usize = 256;
/// Layouts with longer name lists (length-prefixed) are computed every time.
const MAX_REMEMBERED_NAMES: usize = 1024;

struct Remembered {
    version: http::Version,
    method: http::Method,
    /// Each name as its length (two bytes) and bytes: unambiguous whatever
    /// a name holds.
    names: Box<[u8]>,
    /// Shared with every request of this layout (the view, the decision,
    /// the counter keys): a hit costs no copy.
    fingerprints: Fingerprints,
}

thread_local! {
    static LAYOUTS: std::cell::RefCell<SetAssociative<Remembered>> =
        std::cell::RefCell::new(SetAssociative::new(REMEMBERED));
}

/// What a layout is remembered by: its version, method and names.
struct Layout<'m, I> {
    version: http::Version,
    method: &'m http::Method,
    names: I,
}

impl<'a, I: Iterator<Item = &'a str> + Clone> std::hash::Hash for Layout<'_, I> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.version.hash(state);
        self.method.as_str().hash(state);
        for name in self.names.clone() {
            name.hash(state);
        }
    }
}

/// `names` in the form [`Remembered::names`] keeps them, when not too long.
fn encode<'a>(names: impl Iterator<Item = &'a str>) -> Option<Box<[u8]>> {
    let mut encoded = Vec::with_capacity(256);
    for name in names {
        let len = u16::try_from(name.len()).ok()?;
        encoded.extend_from_slice(&len.to_le_bytes());
        encoded.extend_from_slice(name.as_bytes());
        if encoded.len() > MAX_REMEMBERED_NAMES {
            return None;
        }
    }
    Some(encoded.into_boxed_slice())
}

/// Whether `names` are the names `encoded` holds.
fn same_names<'a>(mut encoded: &[u8], names: impl Iterator<Item = &'a str>) -> bool {
    for name in names {
        let Some((len, rest)) = encoded.split_first_chunk::<2>() else { return false };
        let len = usize::from(u16::from_le_bytes(*len));
        if rest.len() < len || &rest[..len] != name.as_bytes() {
            return false;
        }
        encoded = &rest[len..];
    }
    encoded.is_empty()
}

fn remembered<'a>(
    version: http::Version,
    method: &http::Method,
    names: impl Iterator<Item = &'a str> + Clone,
) -> Fingerprints {
    thread_cache::remember(
        &LAYOUTS,
        Layout { version, method, names: names.clone() },
        |held| {
            (held.version == version && held.method == method && same_names(&held.names, names.clone()))
                .then(|| held.fingerprints.clone())
        },
        || {
            let as_sent: Arc<str> = Arc::from(fingerprint_of(version, method, names.clone(), false));
            let has_upper = names.clone().any(|name| name.bytes().any(|b| b.is_ascii_uppercase()));
            let folded = if has_upper {
                Arc::from(fingerprint_of(version, method, names.clone(), true))
            } else {
                as_sent.clone()
            };
            let fingerprints = Fingerprints { as_sent, folded };
            let entry = encode(names.clone()).map(|names| Remembered {
                version,
                method: method.clone(),
                names,
                fingerprints: fingerprints.clone(),
            });
            (fingerprints, entry)
        },
    )
}

fn fingerprint_of<'a>(
    version: http::Version,
    method: &http::Method,
    names: impl IntoIterator<Item = &'a str>,
    fold: bool,
) -> String {
    let version = match version {
        http::Version::HTTP_10 | http::Version::HTTP_09 => "10",
        http::Version::HTTP_2 => "20",
        http::Version::HTTP_3 => "30",
        _ => "11",
    };
    let mut hasher = Sha256::new();
    let (mut count, mut cookie, mut referer, mut language) = (0usize, false, false, false);
    for name in names.into_iter().filter(|name| !added_by_proxies(name)) {
        if count > 0 {
            hasher.update(b",");
        }
        if fold {
            update_lowercase(&mut hasher, name.as_bytes());
        } else {
            hasher.update(name.as_bytes());
        }
        count += 1;
        cookie |= name.eq_ignore_ascii_case("cookie");
        referer |= name.eq_ignore_ascii_case("referer");
        language |= name.eq_ignore_ascii_case("accept-language");
    }
    let digest = hasher.finalize();
    let method = method.as_str();
    let mut out = String::with_capacity(24);
    out.push_str(version);
    out.extend(method.chars().take(2).map(|c| c.to_ascii_lowercase()));
    if method.len() < 2 {
        out.push('-');
    }
    out.push(if cookie { 'c' } else { '-' });
    out.push(if referer { 'r' } else { '-' });
    out.push(if language { 'l' } else { '-' });
    let count = count.min(99);
    out.push(char::from(b'0' + (count / 10) as u8));
    out.push(char::from(b'0' + (count % 10) as u8));
    out.push('_');
    out.push_str(&hex::encode(&digest[..6]));
    out
}

/// Hash `bytes` as if ASCII-lowercased, through a small stack buffer.
fn update_lowercase(hasher: &mut Sha256, bytes: &[u8]) {
    let mut buffer = [0u8; 64];
    for chunk in bytes.chunks(buffer.len()) {
        let lower = &mut buffer[..chunk.len()];
        lower.copy_from_slice(chunk);
        lower.make_ascii_lowercase();
        hasher.update(&*lower);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Method, Version};

    #[test]
    fn a_remembered_fingerprint_is_the_one_computed_afresh() {
        let layouts: [&[&str]; 6] = [
            &["Host", "User-Agent", "Accept", "Cookie"],
            &["host", "user-agent", "accept", "cookie"],
            &["Host", "User-Agent", "Accept"],
            // Names that would join alike with a plain separator.
            &["a,b", "c"],
            &["a", "b,c"],
            &[],
        ];
        for _ in 0..2 {
            for names in layouts {
                for version in [Version::HTTP_11, Version::HTTP_2] {
                    for method in [Method::GET, Method::POST, Method::from_bytes(b"PURGE").unwrap()] {
                        let remembered = remembered(version, &method, names.iter().copied());
                        let as_sent = fingerprint_of(version, &method, names.iter().copied(), false);
                        let folded = fingerprint_of(version, &method, names.iter().copied(), true);
                        assert_eq!((&*remembered.as_sent, &*remembered.folded), (&*as_sent, &*folded));
                    }
                }
            }
        }
        assert!(same_names(&encode(["ab", "c"].into_iter()).unwrap(), ["ab", "c"].into_iter()));
        assert!(!same_names(&encode(["ab", "c"].into_iter()).unwrap(), ["a", "bc"].into_iter()));
        assert!(!same_names(&encode(["ab"].into_iter()).unwrap(), ["ab", ""].into_iter()));
        let long = "x".repeat(MAX_REMEMBERED_NAMES);
        assert!(encode([long.as_str()].into_iter()).is_none(), "too long to remember");
    }

    #[test]
    fn the_folded_fingerprint_is_the_fingerprint_of_the_lowercased_names() {
        let long = "X-A-Very-Long-Header-Name-That-Spans-More-Than-One-Sixty-Four-Byte-Chunk-Of-The-Buffer";
        let names = ["Host", "User-Agent", "Accept-Language", long, "cookie"];
        let lower: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
        for version in [Version::HTTP_11, Version::HTTP_2] {
            assert_eq!(
                folded_http_fingerprint(version, &Method::POST, names),
                http_fingerprint(version, &Method::POST, lower.iter().map(String::as_str))
            );
        }
        assert_ne!(
            folded_http_fingerprint(Version::HTTP_11, &Method::GET, names),
            http_fingerprint(Version::HTTP_11, &Method::GET, names)
        );
    }

    #[test]
    fn layout_and_flags() {
        let fp = http_fingerprint(
            Version::HTTP_11,
            &Method::POST,
            ["Host", "User-Agent", "Referer", "Accept-Language", "Content-Length"],
        );
        assert!(fp.starts_with("11po-rl05_"), "{fp}");
        assert_eq!(fp.len(), "11po-rl05_".len() + 12);
    }

    #[test]
    fn order_and_case_change_the_hash_values_do_not_enter() {
        let a = http_fingerprint(Version::HTTP_11, &Method::GET, ["Host", "User-Agent", "Accept"]);
        let b = http_fingerprint(Version::HTTP_11, &Method::GET, ["Host", "Accept", "User-Agent"]);
        let c = http_fingerprint(Version::HTTP_11, &Method::GET, ["host", "user-agent", "accept"]);
        assert_ne!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn proxy_headers_are_ignored() {
        let direct = http_fingerprint(Version::HTTP_11, &Method::GET, ["Host", "User-Agent"]);
        let proxied = http_fingerprint(
            Version::HTTP_11,
            &Method::GET,
            ["Host", "X-Forwarded-For", "User-Agent", "Via", "X-Real-IP", "CF-Connecting-IP", "Forwarded"],
        );
        assert_eq!(direct, proxied);
    }
}
