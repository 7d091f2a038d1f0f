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

    proptest::proptest! {
        #[test]
        fn normalizing_is_idempotent(path in "[/a-zA-Z0-9%.;\\\\]{0,40}") {
            let once = normalize_path(&path, true);
            proptest::prop_assert_eq!(normalize_path(&once, true), once.clone());
            proptest::prop_assert!(once.starts_with('/'));
        }
    }
}
