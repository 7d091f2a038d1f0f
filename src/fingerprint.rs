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

use sha2::{Digest, Sha256};

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
pub fn http_fingerprint<'a>(
    version: http::Version,
    method: &http::Method,
    names: impl IntoIterator<Item = &'a str>,
) -> String {
    fingerprint_of(version, method, names, false)
}

/// The fingerprint with every header name folded to lowercase first: what
/// counters key on, so that a client's HTTP/1 (case as sent) and HTTP/2
/// (always lowercase) requests count together. The same as
/// [`http_fingerprint`] over lowercased names, without allocating them.
pub fn folded_http_fingerprint<'a>(
    version: http::Version,
    method: &http::Method,
    names: impl IntoIterator<Item = &'a str>,
) -> String {
    fingerprint_of(version, method, names, true)
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
