//! The request fields rules can look at, and how each is read from the
//! request view.

use std::borrow::Cow;

use http::HeaderName;

use crate::form::decode_into as decode_query;
use crate::routes::RouteProfile;
use crate::view::RequestView;

/// The standard methods: the words of the `method` field scanned at
/// compile time (an extension method is scanned per request).
const METHODS: [&str; 9] = ["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE"];
/// Every name [`version_name`] gives.
const VERSIONS: [&str; 5] = ["HTTP/0.9", "HTTP/1.0", "HTTP/1.1", "HTTP/2", "HTTP/3"];

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Field {
    UserAgent,
    /// The normalized path (what routes match on).
    Path,
    /// The query string without `?`, percent-decoded (`+` read as a
    /// space), so an encoded payload cannot hide from a rule.
    Query,
    Method,
    /// `HTTP/1.0`, `HTTP/1.1`, `HTTP/2`.
    Version,
    Header(HeaderName),
    /// Header names in wire order, joined by `,` (as sent on HTTP/1, else
    /// lowercase; rules ignore case unless told otherwise).
    HeaderNames,
    /// The body, on routes that inspect it (login).
    Body,
    /// palisade's HTTP fingerprint of the request.
    Fingerprint,
    /// JA4 TLS fingerprint, when palisade terminates TLS.
    Ja4,
    /// The route's profile: `login`, `payment`, `api` or `default`.
    Profile,
    /// The route's name from the configuration.
    Route,
    /// The client address's autonomous system number (`[network]`).
    Asn,
    /// The organisation of that autonomous system.
    AsnOrg,
}

impl Field {
    pub const NAMES: &'static str = "user_agent, path, query, method, version, header:<name>, header_names, body, fingerprint, ja4, profile, route, asn, asn_org";

    pub fn parse(name: &str) -> Option<Field> {
        Some(match name {
            "user_agent" => Field::UserAgent,
            "path" => Field::Path,
            "query" => Field::Query,
            "method" => Field::Method,
            "version" => Field::Version,
            "header_names" => Field::HeaderNames,
            "body" => Field::Body,
            "fingerprint" => Field::Fingerprint,
            "ja4" => Field::Ja4,
            "profile" => Field::Profile,
            "route" => Field::Route,
            "asn" => Field::Asn,
            "asn_org" => Field::AsnOrg,
            other => {
                let header = other.strip_prefix("header:")?;
                Field::Header(HeaderName::from_bytes(header.trim().as_bytes()).ok()?)
            }
        })
    }

    pub fn name(&self) -> Cow<'static, str> {
        match self {
            Field::UserAgent => "user_agent".into(),
            Field::Path => "path".into(),
            Field::Query => "query".into(),
            Field::Method => "method".into(),
            Field::Version => "version".into(),
            Field::Header(name) => format!("header:{name}").into(),
            Field::HeaderNames => "header_names".into(),
            Field::Body => "body".into(),
            Field::Fingerprint => "fingerprint".into(),
            Field::Ja4 => "ja4".into(),
            Field::Profile => "profile".into(),
            Field::Route => "route".into(),
            Field::Asn => "asn".into(),
            Field::AsnOrg => "asn_org".into(),
        }
    }

    /// The values this field takes, when they are few and known before any
    /// request: the method's standard names, the versions, the profiles.
    /// Their scans are made once, at compile, and a request only looks its
    /// word up (see [`Field::word`]); empty for other fields.
    pub fn vocabulary(&self) -> &'static [&'static str] {
        match self {
            Field::Method => &METHODS,
            Field::Version => &VERSIONS,
            Field::Profile => &RouteProfile::NAMES,
            _ => &[],
        }
    }

    /// Which word of [`Field::vocabulary`] is this request's (only) value
    /// of the field; `None` when it is not one of them (an extension
    /// method, or a field without a vocabulary).
    pub fn word(&self, view: &RequestView<'_>) -> Option<usize> {
        match self {
            Field::Method => match *view.method {
                http::Method::GET => Some(0),
                http::Method::POST => Some(1),
                http::Method::HEAD => Some(2),
                http::Method::PUT => Some(3),
                http::Method::DELETE => Some(4),
                http::Method::OPTIONS => Some(5),
                http::Method::PATCH => Some(6),
                http::Method::CONNECT => Some(7),
                http::Method::TRACE => Some(8),
                _ => None,
            },
            Field::Version => Some(match view.version {
                http::Version::HTTP_09 => 0,
                http::Version::HTTP_10 => 1,
                http::Version::HTTP_2 => 3,
                http::Version::HTTP_3 => 4,
                _ => 2,
            }),
            Field::Profile => Some(view.route.profile as usize),
            _ => None,
        }
    }

    /// Hands each of the field's values in this request to `each`, in
    /// order, and says whether there was any (a field with none is
    /// absent). Only headers can have more than one value. A value palisade
    /// has to build (a decoded query, the joined header names, an ASN) is
    /// built in `text`, the caller's reused buffer, so reading a field
    /// allocates nothing once the buffer has grown.
    pub fn each_value(&self, view: &RequestView<'_>, text: &mut Vec<u8>, mut each: impl FnMut(&[u8])) -> bool {
        let mut one = |value: &[u8]| {
            each(value);
            true
        };
        match self {
            Field::UserAgent => {
                // The view has already looked the header up (as text, which
                // is the same bytes); only a value that is not visible
                // ASCII needs the map again.
                let value = match view.user_agent {
                    Some(agent) => Some(agent.as_bytes()),
                    None => view.headers.get(http::header::USER_AGENT).map(|value| value.as_bytes()),
                };
                match value.map(<[u8]>::trim_ascii) {
                    Some(trimmed) if !trimmed.is_empty() => one(trimmed),
                    _ => false,
                }
            }
            Field::Path => one(view.path.as_bytes()),
            Field::Query => match view.query {
                Some(query) if memchr::memchr2(b'%', b'+', query.as_bytes()).is_some() => {
                    decode_query(query.as_bytes(), text);
                    one(text)
                }
                Some(query) => one(query.as_bytes()),
                None => false,
            },
            Field::Method => one(view.method.as_str().as_bytes()),
            Field::Version => one(version_name(view.version).as_bytes()),
            Field::Header(name) => {
                let mut any = false;
                for value in view.headers.get_all(name) {
                    any = true;
                    each(value.as_bytes());
                }
                any
            }
            Field::HeaderNames => {
                text.clear();
                for (i, name) in view.header_names().enumerate() {
                    if i > 0 {
                        text.push(b',');
                    }
                    text.extend_from_slice(name.as_bytes());
                }
                one(text)
            }
            Field::Body => view.body.is_some_and(one),
            Field::Fingerprint => one(view.fingerprint().as_bytes()),
            Field::Ja4 => view.ja4.is_some_and(|ja4| one(ja4.as_bytes())),
            Field::Profile => one(view.route.profile.as_str().as_bytes()),
            Field::Route => one(view.route.name.as_bytes()),
            Field::Asn => match &view.asn {
                Some(asn) => {
                    text.clear();
                    decimal(asn.number, text);
                    one(text)
                }
                None => false,
            },
            Field::AsnOrg => match view.asn.as_ref().and_then(|asn| asn.organisation.as_deref()) {
                Some(organisation) => one(organisation.as_bytes()),
                None => false,
            },
        }
    }
}

/// `number` in decimal, appended to `out` (what `to_string` writes,
/// without its allocation).
fn decimal(number: u32, out: &mut Vec<u8>) {
    let start = out.len();
    let mut rest = number;
    loop {
        out.push(b'0' + (rest % 10) as u8);
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out[start..].reverse();
}

pub fn version_name(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

#[cfg(test)]
mod tests {
    use crate::form::decode_into as decode_query;

    use super::*;

    #[test]
    fn queries_decode_as_percent_decoding_after_plus_as_space() {
        let cases: [&[u8]; 12] = [
            b"a+b",
            b"%2B",
            b"id=1%27%20UNION+SELECT",
            b"%",
            b"%4",
            b"%zz%41",
            b"100%",
            b"%e2%82%ac+%E2%82%AC",
            b"++%%2b",
            b"%%41%4",
            b"%g1%1g%Ff%fF",
            b"",
        ];
        for case in cases {
            let text = std::str::from_utf8(case).unwrap().replace('+', " ");
            let expected: Vec<u8> = percent_encoding::percent_decode_str(&text).collect();
            let mut decoded = b"left over".to_vec();
            decode_query(case, &mut decoded);
            assert_eq!(decoded, expected, "{:?}", std::str::from_utf8(case));
        }
    }

    /// The decoder before it wrote into a sized buffer: `+` and `%XX`
    /// read one byte at a time with `char::to_digit`, each byte pushed.
    fn decode_query_pushing(query: &[u8], out: &mut Vec<u8>) {
        fn hex(digit: u8) -> Option<u8> {
            char::from(digit).to_digit(16).map(|value| value as u8)
        }
        out.clear();
        let mut index = 0;
        while let Some(&byte) = query.get(index) {
            let decoded = match byte {
                b'+' => Some((b' ', 1)),
                b'%' => {
                    match (query.get(index + 1).copied().and_then(hex), query.get(index + 2).copied().and_then(hex)) {
                        (Some(high), Some(low)) => Some((high << 4 | low, 3)),
                        _ => None,
                    }
                }
                _ => None,
            };
            let (value, width) = decoded.unwrap_or((byte, 1));
            out.push(value);
            index += width;
        }
    }

    #[test]
    fn random_queries_decode_as_the_pushing_decoder_and_percent_decoding_do() {
        // Bytes a query's escapes are made of, and some that are not.
        let alphabet = b"%%%++0123456789abcdefABCDEFgGzZ=&/ \x00\xff\xe2";
        let mut next = crate::test_support::xorshift(0x5eed_dec0de);
        let (mut decoded, mut expected) = (b"left over".to_vec(), Vec::new());
        for _ in 0..20_000 {
            let length = (next() % 24) as usize;
            let query: Vec<u8> = (0..length).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect();
            decode_query(&query, &mut decoded);
            decode_query_pushing(&query, &mut expected);
            assert_eq!(decoded, expected, "{query:?}");
            let spaced: Vec<u8> = query.iter().map(|&byte| if byte == b'+' { b' ' } else { byte }).collect();
            assert_eq!(decoded, percent_encoding::percent_decode(&spaced).collect::<Vec<u8>>(), "{query:?}");
        }
    }

    #[test]
    fn every_byte_decodes_as_percent_decoding_does() {
        for byte in 0..=255u8 {
            let query = format!("a%{byte:02X}b%{byte:02x}+");
            let text = query.replace('+', " ");
            let expected: Vec<u8> = percent_encoding::percent_decode_str(&text).collect();
            let mut decoded = Vec::new();
            decode_query(query.as_bytes(), &mut decoded);
            assert_eq!(decoded, expected, "{query}");
        }
    }

    #[test]
    fn a_requests_word_is_the_value_the_field_reads() {
        let methods = ["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE", "PROPFIND"];
        let config = crate::config::Config::default();
        let routes = crate::routes::RouteTable::from_config(&config).unwrap();
        let mut profiles = std::collections::HashSet::new();
        for method in methods {
            for target in ["/", "/login", "/api/x", "/checkout"] {
                for version in [
                    http::Version::HTTP_09,
                    http::Version::HTTP_10,
                    http::Version::HTTP_11,
                    http::Version::HTTP_2,
                    http::Version::HTTP_3,
                ] {
                    let method: http::Method = method.parse().unwrap();
                    let uri: http::Uri = target.parse().unwrap();
                    let headers = http::HeaderMap::new();
                    let route = routes.find(&method, target).clone();
                    let ip = "192.0.2.1".parse().unwrap();
                    let view = RequestView::new(&method, version, &uri, target, &headers, ip, &route, None);
                    for field in [Field::Method, Field::Version, Field::Profile] {
                        let mut read = Vec::new();
                        field.each_value(&view, &mut Vec::new(), |value| read.push(value.to_vec()));
                        match field.word(&view) {
                            Some(word) => assert_eq!(read, [field.vocabulary()[word].as_bytes()], "{field:?}"),
                            None => assert_eq!((&field, method.as_str()), (&Field::Method, "PROPFIND")),
                        }
                    }
                    assert_eq!(Field::UserAgent.word(&view), None);
                    profiles.insert(route.profile);
                }
            }
        }
        assert!(profiles.len() > 1, "{profiles:?}");
    }

    #[test]
    fn numbers_are_written_as_to_string_writes_them() {
        for number in [0, 7, 10, 64_496, 4_294_967_295] {
            let mut out = b"x".to_vec();
            decimal(number, &mut out);
            assert_eq!(out, format!("x{number}").into_bytes());
        }
    }
}
