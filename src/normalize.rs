//! Path normalization for route matching.
//!
//! Routes are matched on a canonical form of the path so that `/Login`,
//! `/login/`, `/%6cogin`, `//login`, `/./login`, `/x/../login` and
//! `/login;jsessionid=1` cannot slip past a rule for `/login`. The
//! canonical form is only used for matching and rules; the request is
//! forwarded exactly as the client sent it.

use percent_encoding::percent_decode_str;

/// Canonical path: percent-decoded until nothing changes (so double
/// encoding does not hide a character), control characters removed, backslashes as slashes, `;params` removed from each
/// segment, empty and `.` segments dropped, `..` resolved without escaping
/// the root, no trailing slash, lowercased when `case_insensitive`.
pub fn normalize_path(raw_path: &str, case_insensitive: bool) -> String {
    if is_canonical(raw_path.as_bytes(), case_insensitive) {
        return raw_path.to_owned();
    }
    decode_and_resolve(raw_path, case_insensitive)
}

/// Whether `path` is already its own canonical form, so that normalizing
/// it would give it back unchanged: it starts with `/`, every segment is
/// non-empty and neither `.` nor `..`, there is no trailing slash (but for
/// `/` itself), and every byte is printable ASCII other than `%`, `\` and
/// `;` (and, when `case_insensitive`, not an upper-case letter). Nearly
/// every request's path is (`/login`, `/api/v1/items`); checking costs one
/// pass over its bytes, where decoding and rebuilding it cost a
/// `Vec` of segments and several passes.
fn is_canonical(path: &[u8], case_insensitive: bool) -> bool {
    if path == b"/" {
        return true;
    }
    let Some((&b'/', rest)) = path.split_first() else { return false };
    rest.split(|&b| b == b'/').all(|segment| {
        !segment.is_empty()
            && segment != b"."
            && segment != b".."
            && segment.iter().all(|&b| {
                b.is_ascii_graphic()
                    && !matches!(b, b'%' | b'\\' | b';')
                    && !(case_insensitive && b.is_ascii_uppercase())
            })
    })
}

/// [`normalize_path`] the long way: decode, split, resolve, join.
fn decode_and_resolve(raw_path: &str, case_insensitive: bool) -> String {
    // `raw_path` is the path alone (`Uri::path`); a `?` or `#` that appears
    // only after decoding is part of the path, as the application sees it.
    let path = raw_path;
    let mut decoded = std::borrow::Cow::Borrowed(path);
    // Decode, and drop control characters and NULs (they never belong in a
    // route key), until neither changes anything: dropping a character can
    // join a new escape ("%\n0a"). Every round that changes the text makes
    // it shorter or takes away a '%', so this ends.
    loop {
        let mut changed = false;
        if decoded.contains('%') {
            let next = percent_decode_str(&decoded).decode_utf8_lossy().into_owned();
            if next != decoded {
                decoded = std::borrow::Cow::Owned(next);
                changed = true;
            }
        }
        if decoded.contains(|c: char| c.is_control()) {
            decoded = std::borrow::Cow::Owned(decoded.chars().filter(|c| !c.is_control()).collect());
            changed = true;
        }
        if !changed {
            break;
        }
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split(['/', '\\']) {
        let segment = segment.split(';').next().unwrap_or("");
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let mut out = String::with_capacity(path.len() + 1);
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() {
        out.push('/');
    }
    if case_insensitive {
        out.make_ascii_lowercase();
        if !out.is_ascii() {
            out = out.to_lowercase();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::normalize_path;

    #[test]
    fn bypass_variants_normalize_to_the_same_path() {
        for variant in [
            "/login",
            "/Login",
            "/LOGIN",
            "/login/",
            "//login",
            "/./login",
            "/x/../login",
            "/%6cogin",
            "/%6Cogin",
            "/%256cogin",
            "/login;jsessionid=1",
            "/login%2f",
            "\\login",
            "/login/.",
            "/../login",
            "/login%00",
        ] {
            assert_eq!(normalize_path(variant, true), "/login", "variant {variant}");
        }
    }

    #[test]
    fn dropping_a_control_character_cannot_leave_a_new_escape() {
        // "%\n0a" loses its newline and becomes "%0a", itself a newline.
        assert_eq!(normalize_path("/%%0a0a", true), "/");
        for input in ["/%25%0a0a", "/x%%0A0a", "/%%%0a0a0a"] {
            let once = normalize_path(input, true);
            assert_eq!(normalize_path(&once, true), once, "{input}");
        }
    }

    #[test]
    fn case_is_kept_when_asked() {
        assert_eq!(normalize_path("/Login/", false), "/Login");
    }

    #[test]
    fn canonical_paths_are_recognised() {
        for path in ["/", "/login", "/api/v1/items", "/a.b/c-d_e~f", "/x/.y", "/..z"] {
            assert!(super::is_canonical(path.as_bytes(), true), "{path}");
        }
        for path in [
            "", "login", "//", "/login/", "//login", "/./login", "/x/..", "/Login", "/%6c", "/a;b", "/a\\b", "/a b",
            "/é",
        ] {
            assert!(!super::is_canonical(path.as_bytes(), true), "{path}");
        }
        assert!(super::is_canonical(b"/Login", false));
    }

    proptest::proptest! {
        /// The quick answer for a canonical path is the long way's.
        #[test]
        fn canonical_paths_normalize_to_themselves(
            path in "[/a-zA-Z0-9%.;\\\\ ~_-]{0,24}|/[a-z.]{0,3}(/[a-zA-Z.]{0,3}){0,4}",
            case_insensitive: bool,
        ) {
            let long_way = super::decode_and_resolve(&path, case_insensitive);
            proptest::prop_assert_eq!(normalize_path(&path, case_insensitive), long_way.clone());
            if super::is_canonical(path.as_bytes(), case_insensitive) {
                proptest::prop_assert_eq!(long_way, path);
            }
        }

        #[test]
        fn normalizing_is_idempotent(path in "[/a-zA-Z0-9%.;\\\\]{0,40}") {
            let once = normalize_path(&path, true);
            proptest::prop_assert_eq!(normalize_path(&once, true), once.clone());
            proptest::prop_assert!(once.starts_with('/'));
        }
    }
}
