//! The request fields rules can look at, and how each is read from the
//! request view.

use std::borrow::Cow;

use http::HeaderName;

use crate::view::RequestView;

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

    /// The field's values in this request; empty when the field is absent.
    /// (Only headers can have more than one value.)
    pub fn values<'v>(&self, view: &'v RequestView<'_>, out: &mut Vec<Cow<'v, [u8]>>) {
        out.clear();
        let bytes = |s: &'v str| Cow::Borrowed(s.as_bytes());
        match self {
            Field::UserAgent => {
                if let Some(value) = view.headers.get(http::header::USER_AGENT) {
                    let trimmed = value.as_bytes().trim_ascii();
                    if !trimmed.is_empty() {
                        out.push(Cow::Borrowed(trimmed));
                    }
                }
            }
            Field::Path => out.push(bytes(view.path)),
            Field::Query => {
                if let Some(query) = view.query {
                    if query.contains(['%', '+']) {
                        out.push(Cow::Owned(decode_query(query.as_bytes())));
                    } else {
                        out.push(bytes(query));
                    }
                }
            }
            Field::Method => out.push(bytes(view.method.as_str())),
            Field::Version => out.push(Cow::Borrowed(version_name(view.version).as_bytes())),
            Field::Header(name) => out.extend(view.headers.get_all(name).iter().map(|v| Cow::Borrowed(v.as_bytes()))),
            Field::HeaderNames => {
                let mut joined = Vec::with_capacity(view.headers.keys_len() * 12);
                for (i, name) in view.header_names().enumerate() {
                    if i > 0 {
                        joined.push(b',');
                    }
                    joined.extend_from_slice(name.as_bytes());
                }
                out.push(Cow::Owned(joined));
            }
            Field::Body => out.extend(view.body.map(Cow::Borrowed)),
            Field::Fingerprint => out.push(bytes(view.fingerprint())),
            Field::Ja4 => out.extend(view.ja4.map(bytes)),
            Field::Profile => out.push(bytes(view.route.profile.as_str())),
            Field::Route => out.push(bytes(&view.route.name)),
            Field::Asn => out.extend(view.asn.as_ref().map(|asn| Cow::Owned(asn.number.to_string().into_bytes()))),
            Field::AsnOrg => {
                out.extend(view.asn.as_ref().and_then(|asn| asn.organisation.as_deref()).map(bytes));
            }
        }
    }
}

/// A query string as a form decodes it: `+` is a space, `%XX` the byte it
/// names, and anything else (a `%` without two hex digits) as it is. One
/// pass into one buffer (percent-decoding after replacing `+` cost two
/// buffers and an iterator step per byte).
fn decode_query(query: &[u8]) -> Vec<u8> {
    fn hex(digit: u8) -> Option<u8> {
        char::from(digit).to_digit(16).map(|value| value as u8)
    }
    let mut out = Vec::with_capacity(query.len());
    let mut index = 0;
    while let Some(&byte) = query.get(index) {
        let decoded = match byte {
            b'+' => Some((b' ', 1)),
            b'%' => match (query.get(index + 1).copied().and_then(hex), query.get(index + 2).copied().and_then(hex)) {
                (Some(high), Some(low)) => Some((high << 4 | low, 3)),
                _ => None,
            },
            _ => None,
        };
        let (value, width) = decoded.unwrap_or((byte, 1));
        out.push(value);
        index += width;
    }
    out
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
    use super::*;

    #[test]
    fn queries_decode_as_percent_decoding_after_plus_as_space() {
        let cases: [&[u8]; 9] = [
            b"a+b",
            b"%2B",
            b"id=1%27%20UNION+SELECT",
            b"%",
            b"%4",
            b"%zz%41",
            b"100%",
            b"%e2%82%ac+%E2%82%AC",
            b"++%%2b",
        ];
        for case in cases {
            let text = std::str::from_utf8(case).unwrap().replace('+', " ");
            let expected: Vec<u8> = percent_encoding::percent_decode_str(&text).collect();
            assert_eq!(decode_query(case), expected, "{:?}", std::str::from_utf8(case));
        }
    }
}
