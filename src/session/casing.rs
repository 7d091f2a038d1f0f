//! Header-name case as evidence. On HTTP/1 a client writes header names in
//! its own case, and real clients are consistent: browsers and most
//! libraries send `Title-Case` names (Chromium adds its `sec-ch-*` client
//! hints in lowercase), others send everything lowercase. A request that
//! mixes the two for ordinary headers, or writes a name like `uSer-Agent`,
//! was made by hand — typically to mint a new fingerprint per request.

/// How one header name is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Casing {
    Lower,
    /// Every dash-separated word capitalized (`Accept-Language`), or in
    /// capitals (`DNT`, `X-CSRF-Token`).
    Title,
    /// Anything else: a capital after a small letter inside a word, or a
    /// word starting small while another starts capitalized.
    Odd,
}

fn casing(name: &str) -> Casing {
    if !name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Casing::Lower;
    }
    for word in name.split('-').filter(|w| !w.is_empty()) {
        let bytes = word.as_bytes();
        let starts_capital = !bytes[0].is_ascii_lowercase();
        let rest_capitals = bytes[1..].iter().any(|b| b.is_ascii_uppercase());
        let rest_small = bytes[1..].iter().any(|b| b.is_ascii_lowercase());
        // `Token`, `CSRF`, `X` are fine; `token` next to `X-` is not, nor `ToKen`.
        if !starts_capital || (rest_capitals && rest_small) {
            return Casing::Odd;
        }
    }
    Casing::Title
}

/// Names browsers send in lowercase among Title-Case ones.
fn lowercase_by_design(name: &str) -> bool {
    name.starts_with("sec-ch-")
}

/// The first header name whose case no known client writes, given the
/// request's other names: `None` when the casing is consistent.
pub fn odd_name<'a>(names: impl Iterator<Item = &'a str> + Clone) -> Option<&'a str> {
    let mut title = false;
    let mut lower = false;
    for name in names.clone() {
        match casing(name) {
            Casing::Odd => return Some(name),
            Casing::Title => title = true,
            Casing::Lower if !lowercase_by_design(name) => lower = true,
            Casing::Lower => {}
        }
    }
    if title && lower {
        // Mixed: the lowercase ordinary name is the odd one out.
        return names.into_iter().find(|name| casing(name) == Casing::Lower && !lowercase_by_design(name));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_clients_are_consistent() {
        let chromium = [
            "Host",
            "Connection",
            "Cache-Control",
            "sec-ch-ua",
            "sec-ch-ua-mobile",
            "Upgrade-Insecure-Requests",
            "User-Agent",
            "Accept",
            "Sec-Fetch-Site",
            "Accept-Encoding",
            "Accept-Language",
            "Cookie",
            "DNT",
            "X-CSRF-Token",
        ];
        assert_eq!(odd_name(chromium.iter().copied()), None);
        let lower = ["host", "user-agent", "accept", "content-type"];
        assert_eq!(odd_name(lower.iter().copied()), None);
    }

    #[test]
    fn changed_case_is_noticed() {
        assert_eq!(odd_name(["Host", "uSer-Agent"].iter().copied()), Some("uSer-Agent"));
        assert_eq!(odd_name(["Host", "user-agent", "Accept"].iter().copied()), Some("user-agent"));
        assert_eq!(odd_name(["Host", "USER-AGENT"].iter().copied()), None, "all capitals is a style");
        assert_eq!(odd_name(["Host", "User-agent"].iter().copied()), Some("User-agent"));
    }
}
