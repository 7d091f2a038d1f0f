//! Redaction: secret fields are replaced by `<redacted>` before a record is
//! written anywhere (capture mode, imports).
//!
//! A field matches when its name, lowercased and without `_`, `-` and `.`,
//! equals a configured name treated the same way (`cardNumber`,
//! `card-number` and `CARD_NUMBER` all match `card_number`); in form
//! bodies and query strings, the last `[...]` part of a name counts too
//! (`user[password]`). Where it is:
//! - form bodies (`application/x-www-form-urlencoded`) and query strings:
//!   the value of each secret field;
//! - JSON bodies: the value (of any type) of each secret key, at any depth;
//!   the rest of the text is kept byte for byte;
//! - any other body (multipart, XML, text, binary) that mentions a secret
//!   field name anywhere, and a JSON body that does not parse: the whole
//!   body. A body is never stored unless it could be redacted;
//! - a body that is not plain UTF-8 text (NUL bytes, as UTF-16 has, or a
//!   charset other than UTF-8/ASCII/Latin-1) is never parsed as a form or
//!   JSON: it is dropped whole when it mentions a field in any spelling
//!   (NULs removed, `%xx` decoded); so is a multipart body with encoded
//!   parameter names (`name*=`, `=?…?=`), which cannot be read with
//!   certainty;
//! - a compressed body (`Content-Encoding`, or gzip's magic bytes) is
//!   decoded (gzip, deflate; bounded) and checked as above: kept as sent
//!   when it holds no secret, dropped whole otherwise or when it cannot be
//!   decoded;
//! - headers named in `redact_headers` (`Authorization`, `Cookie`, …): the
//!   whole value;
//! - and whatever its field's name, any value that is a card number (13 to
//!   19 digits, spaces or dashes allowed, a card network's first digit,
//!   passing the Luhn check): payment bodies name the number `number`,
//!   `pan`, `cardNo` or anything else.

use std::borrow::Cow;

use super::record::{CaptureRecord, body_bytes, encode_body};

/// What a secret is replaced by.
pub const REDACTED: &str = "<redacted>";

pub use crate::config::{DEFAULT_REDACT_FIELDS, DEFAULT_REDACT_HEADERS};

const MAX_JSON_DEPTH: usize = 128;

/// The most a compressed body is expanded to when checking it: a larger
/// one is dropped (a capture line does not need it, and a bomb must not
/// cost memory).
const MAX_DECODED_BODY: u64 = 4 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Redactor {
    /// Normalized field names.
    fields: Vec<String>,
    /// Lowercase header names.
    headers: Vec<String>,
}

impl Default for Redactor {
    fn default() -> Self {
        Redactor::new(DEFAULT_REDACT_FIELDS.iter().copied(), DEFAULT_REDACT_HEADERS.iter().copied())
    }
}

fn normalize(name: &str) -> String {
    name.chars().filter(|c| !matches!(c, '_' | '-' | '.') && !c.is_whitespace()).flat_map(char::to_lowercase).collect()
}

/// Only the letters and digits of a name, lowercased: the last resort
/// for names dressed up with other characters (`password!`, `\0password`).
fn loose(name: &str) -> String {
    name.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
}

impl Redactor {
    pub fn new<'a>(fields: impl IntoIterator<Item = &'a str>, headers: impl IntoIterator<Item = &'a str>) -> Self {
        Redactor {
            fields: fields.into_iter().map(normalize).filter(|f| !f.is_empty()).collect(),
            headers: headers.into_iter().map(str::to_ascii_lowercase).collect(),
        }
    }

    /// Whether a JSON key or field name is secret.
    pub fn is_secret(&self, name: &str) -> bool {
        let name = normalize(name);
        self.fields.contains(&name)
    }

    /// Like [`Redactor::is_secret`], also looking at every `[...]` part of
    /// a form field name (`user[password]`, `password[]`), and at the
    /// name with everything but letters and digits left out.
    fn is_secret_form_name(&self, name: &str) -> bool {
        if self.is_secret(name) || name.split(['[', ']']).any(|part| self.is_secret(part)) {
            return true;
        }
        let bare = loose(name);
        !bare.is_empty() && self.fields.iter().any(|field| loose(field) == bare)
    }

    pub fn is_secret_header(&self, name: &str) -> bool {
        self.headers.iter().any(|h| h.eq_ignore_ascii_case(name))
    }

    /// Redact every secret of a record in place: target query, headers and
    /// body (`body` or `body_b64`).
    pub fn redact_record(&self, record: &mut CaptureRecord) {
        if let Cow::Owned(target) = self.redact_target(&record.target) {
            record.target = target;
        }
        for (name, value) in &mut record.headers {
            if self.is_secret_header(name) {
                *value = REDACTED.to_string();
            }
        }
        let content_type = record
            .headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
            .map(|(_, value)| value.clone());
        let content_encoding = record
            .headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("content-encoding"))
            .map(|(_, value)| value.trim().to_ascii_lowercase())
            .filter(|value| !value.is_empty() && value != "identity");
        match body_bytes(record.body.as_deref(), record.body_b64.as_deref()) {
            Ok(Some(bytes)) if content_encoding.is_some() || bytes.starts_with(&[0x1f, 0x8b]) => {
                // Compressed: kept as sent only when its decoded text
                // holds no secret at all.
                let clean = decode_body(content_encoding.as_deref().unwrap_or("gzip"), &bytes).is_some_and(|decoded| {
                    matches!(self.redact_body(content_type.as_deref(), &decoded), Cow::Borrowed(_))
                        && !self.mentions_anywhere(&decoded)
                });
                if !clean {
                    (record.body, record.body_b64) = (Some(REDACTED.to_string()), None);
                }
            }
            Ok(Some(bytes)) => {
                let redacted = self.redact_body(content_type.as_deref(), &bytes);
                (record.body, record.body_b64) = encode_body(&redacted);
            }
            Ok(None) => {}
            Err(_) => (record.body, record.body_b64) = (Some(REDACTED.to_string()), None),
        }
    }

    /// The target with secret query parameters redacted.
    pub fn redact_target<'t>(&self, target: &'t str) -> Cow<'t, str> {
        match target.split_once('?') {
            Some((path, query)) => match self.redact_form(query) {
                Cow::Borrowed(_) => Cow::Borrowed(target),
                Cow::Owned(query) => Cow::Owned(format!("{path}?{query}")),
            },
            None => Cow::Borrowed(target),
        }
    }

    /// A body with its secrets redacted (see the module documentation).
    pub fn redact_body<'b>(&self, content_type: Option<&str>, body: &'b [u8]) -> Cow<'b, [u8]> {
        if self.fields.is_empty() || body.is_empty() {
            return Cow::Borrowed(body);
        }
        let content_type = content_type.unwrap_or("").to_ascii_lowercase();
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        let whole = || Cow::Owned(REDACTED.as_bytes().to_vec());
        // Only plain text is parsed: UTF-16 (NUL bytes) and other
        // charsets would hide names from the parsers below.
        let plain_charset = charset(&content_type)
            .is_none_or(|c| matches!(c, "utf-8" | "utf8" | "us-ascii" | "ascii" | "iso-8859-1" | "latin1"));
        let text = std::str::from_utf8(body).ok().filter(|text| plain_charset && !text.contains('\0'));
        // RFC 2231 parameters (`name*=`, `name*0=`) and RFC 2047 words
        // (`=?utf-8?b?…?=`) can spell a field name in pieces or encoded.
        let uncertain_multipart = content_type.starts_with("multipart/")
            && body.windows(2).any(|w| (w[0] == b'*' && (w[1] == b'=' || w[1].is_ascii_digit())) || w == b"=?");
        if text.is_none() || uncertain_multipart {
            return if uncertain_multipart || self.mentions_anywhere(body) || mentions_a_card_number(body) {
                whole()
            } else {
                Cow::Borrowed(body)
            };
        }
        if content_type.contains("json") || matches!(first, Some(b'{' | b'[')) {
            return match text.and_then(|text| self.redact_json(text)) {
                Some(Cow::Borrowed(_)) => Cow::Borrowed(body),
                Some(Cow::Owned(redacted)) => Cow::Owned(redacted.into_bytes()),
                None => whole(),
            };
        }
        let form = content_type.contains("x-www-form-urlencoded") || content_type.is_empty();
        match text {
            Some(text) if form => match self.redact_form(text) {
                Cow::Borrowed(_) => Cow::Borrowed(body),
                Cow::Owned(redacted) => Cow::Owned(redacted.into_bytes()),
            },
            _ if self.mentions_anywhere(body) || mentions_a_card_number(body) => whole(),
            _ => Cow::Borrowed(body),
        }
    }

    /// Whether a field name appears in `bytes` as sent, or once `%xx`
    /// escapes are decoded.
    fn mentions_anywhere(&self, bytes: &[u8]) -> bool {
        self.mentions_a_field(bytes) || (bytes.contains(&b'%') && self.mentions_a_field(&percent_decode(bytes)))
    }

    /// Whether any field name appears in `bytes`, ignoring case, `_`, `-`
    /// and `.`.
    fn mentions_a_field(&self, bytes: &[u8]) -> bool {
        // NULs go too: UTF-16 text of ASCII names is the name with NULs.
        let squeezed: Vec<u8> =
            bytes.iter().filter(|b| !matches!(b, b'_' | b'-' | b'.' | 0)).map(u8::to_ascii_lowercase).collect();
        self.fields.iter().any(|field| squeezed.windows(field.len()).any(|w| w == field.as_bytes()))
    }

    /// `a=1&password=x` → `a=1&password=<redacted>`; names and every other
    /// byte kept as sent. `;` separates pairs too, as some servers read it.
    fn redact_form<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let mut out = String::new();
        let mut changed = false;
        let mut rest = Some(text);
        while let Some(current) = rest {
            let (pair, separator) = match current.find(['&', ';']) {
                Some(at) => (&current[..at], Some(&current[at..at + 1])),
                None => (current, None),
            };
            rest = separator.map(|_| &current[pair.len() + 1..]);
            let (raw_name, value) = match pair.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (pair, None),
            };
            let name: String =
                form_urlencoded::parse(raw_name.as_bytes()).next().map(|(n, _)| n.into_owned()).unwrap_or_default();
            match value {
                Some(value) if (self.is_secret_form_name(&name) || form_value_is_card(value)) && value != REDACTED => {
                    changed = true;
                    out.push_str(raw_name);
                    out.push('=');
                    out.push_str(REDACTED);
                }
                _ => out.push_str(pair),
            }
            if let Some(separator) = separator {
                out.push_str(separator);
            }
        }
        if changed { Cow::Owned(out) } else { Cow::Borrowed(text) }
    }

    /// The JSON text with the value of every secret key replaced by
    /// `"<redacted>"`, or `None` when it is not JSON.
    fn redact_json<'t>(&self, text: &'t str) -> Option<Cow<'t, str>> {
        let mut scanner = JsonScanner { bytes: text.as_bytes(), pos: 0, replace: Vec::new(), redactor: self };
        scanner.value(0)?;
        scanner.whitespace();
        if scanner.pos != text.len() {
            return None;
        }
        if scanner.replace.is_empty() {
            return Some(Cow::Borrowed(text));
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (start, end) in scanner.replace {
            out.push_str(&text[at..start]);
            out.push('"');
            out.push_str(REDACTED);
            out.push('"');
            at = end;
        }
        out.push_str(&text[at..]);
        Some(Cow::Owned(out))
    }
}

/// The `charset` parameter of a (lowercased) content type.
fn charset(content_type: &str) -> Option<&str> {
    content_type.split(';').skip(1).find_map(|parameter| {
        let (name, value) = parameter.split_once('=')?;
        (name.trim() == "charset").then(|| value.trim().trim_matches('"'))
    })
}

/// `%xx` escapes decoded, `+` read as a space; anything else as it is.
fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    out.push((high * 16 + low) as u8);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            byte => out.push(byte),
        }
        i += 1;
    }
    out
}

/// A body decoded from its `Content-Encoding` (codings listed in the
/// order applied; gzip and deflate), or `None` when a coding is unknown,
/// the data is corrupt, or it expands past [`MAX_DECODED_BODY`].
fn decode_body(encoding: &str, body: &[u8]) -> Option<Vec<u8>> {
    use std::io::Read as _;
    let mut data = body.to_vec();
    for coding in encoding.split(',').map(str::trim).rev() {
        if matches!(coding, "identity" | "") {
            continue;
        }
        let mut decoded = Vec::new();
        let limit = MAX_DECODED_BODY + 1;
        let read = match coding {
            "gzip" | "x-gzip" => flate2::read::MultiGzDecoder::new(&data[..]).take(limit).read_to_end(&mut decoded),
            "deflate" => match flate2::read::ZlibDecoder::new(&data[..]).take(limit).read_to_end(&mut decoded) {
                Ok(n) => Ok(n),
                // Some clients send raw deflate under this name.
                Err(_) => {
                    decoded.clear();
                    flate2::read::DeflateDecoder::new(&data[..]).take(limit).read_to_end(&mut decoded)
                }
            },
            _ => return None,
        };
        if read.is_err() || decoded.len() as u64 > MAX_DECODED_BODY {
            return None;
        }
        data = decoded;
    }
    Some(data)
}

/// Whether `text` is a card number: 13 to 19 digits (single spaces or
/// dashes between them allowed), starting with a card network's digit (2
/// to 6: not a nanosecond timestamp), passing the Luhn check.
fn is_card_number(text: &str) -> bool {
    let mut digits = Vec::with_capacity(19);
    let mut separator = false;
    for byte in text.bytes() {
        match byte {
            b'0'..=b'9' => {
                digits.push(byte - b'0');
                separator = false;
            }
            b' ' | b'-' if !separator && !digits.is_empty() => separator = true,
            _ => return false,
        }
    }
    if separator || !(13..=19).contains(&digits.len()) || !(2..=6).contains(&digits[0]) {
        return false;
    }
    // Luhn: every second digit from the right doubled.
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 { if d * 2 > 9 { d * 2 - 9 } else { d * 2 } } else { d }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// A form value (still percent-encoded) that is a card number.
fn form_value_is_card(value: &str) -> bool {
    value.len() <= 64 && {
        let decoded: String =
            form_urlencoded::parse(format!("v={value}").as_bytes()).map(|(_, v)| v.into_owned()).collect();
        is_card_number(&decoded)
    }
}

/// Whether any run of digits (with single spaces or dashes) in `bytes` is
/// a card number.
fn mentions_a_card_number(bytes: &[u8]) -> bool {
    let mut start = None;
    for (i, byte) in bytes.iter().enumerate().chain(std::iter::once((bytes.len(), &b'x'))) {
        let in_run = byte.is_ascii_digit() || (start.is_some() && matches!(byte, b' ' | b'-'));
        match (in_run, start) {
            (true, None) => start = Some(i),
            (false, Some(from)) => {
                let run = std::str::from_utf8(&bytes[from..i]).unwrap_or("").trim_end_matches([' ', '-']);
                if is_card_number(run) {
                    return true;
                }
                start = None;
            }
            _ => {}
        }
    }
    false
}

/// Just enough of a JSON parser to find each object member's value span.
struct JsonScanner<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Value spans to replace, in order, not overlapping.
    replace: Vec<(usize, usize)>,
    redactor: &'a Redactor,
}

impl JsonScanner<'_> {
    fn whitespace(&mut self) {
        while self.bytes.get(self.pos).is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        self.whitespace();
        (self.bytes.get(self.pos) == Some(&byte)).then(|| self.pos += 1)
    }

    /// A value starting at the current position (after whitespace).
    fn value(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_JSON_DEPTH {
            return None;
        }
        self.whitespace();
        match *self.bytes.get(self.pos)? {
            b'{' => self.object(depth),
            b'[' => {
                self.pos += 1;
                if self.eat(b']').is_some() {
                    return Some(());
                }
                loop {
                    self.value(depth + 1)?;
                    if self.eat(b',').is_none() {
                        return self.eat(b']');
                    }
                }
            }
            b'"' => {
                let start = self.pos;
                let text = self.string()?;
                if is_card_number(&text) {
                    self.replace.push((start, self.pos));
                }
                Some(())
            }
            _ => {
                let start = self.pos;
                while self.bytes.get(self.pos).is_some_and(|b| b.is_ascii_alphanumeric() || b"+-.".contains(b)) {
                    self.pos += 1;
                }
                let literal = std::str::from_utf8(&self.bytes[start..self.pos]).ok()?;
                serde_json::from_str::<serde_json::Value>(literal).ok()?;
                if is_card_number(literal) {
                    self.replace.push((start, self.pos));
                }
                Some(())
            }
        }
    }

    fn object(&mut self, depth: usize) -> Option<()> {
        self.pos += 1;
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            self.whitespace();
            let key = self.string()?;
            self.eat(b':')?;
            self.whitespace();
            let start = self.pos;
            if self.redactor.is_secret(&key) {
                // Scanned without looking inside: the whole value goes.
                let kept = self.replace.len();
                self.value(depth + 1)?;
                self.replace.truncate(kept);
                let already = &self.bytes[start..self.pos] == format!("\"{REDACTED}\"").as_bytes();
                if !already {
                    self.replace.push((start, self.pos));
                }
            } else {
                self.value(depth + 1)?;
            }
            if self.eat(b',').is_none() {
                return self.eat(b'}');
            }
        }
    }

    /// A string at the current position, unescaped.
    fn string(&mut self) -> Option<String> {
        if self.bytes.get(self.pos) != Some(&b'"') {
            return None;
        }
        let start = self.pos;
        self.pos += 1;
        let mut escaped = false;
        loop {
            match *self.bytes.get(self.pos)? {
                b'\\' => {
                    escaped = true;
                    self.pos += 2;
                }
                b'"' => {
                    self.pos += 1;
                    break;
                }
                _ => self.pos += 1,
            }
        }
        let raw = std::str::from_utf8(self.bytes.get(start..self.pos)?).ok()?;
        if escaped { serde_json::from_str(raw).ok() } else { Some(raw[1..raw.len() - 1].to_string()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(redactor: &Redactor, content_type: &str, text: &str) -> String {
        String::from_utf8(redactor.redact_body(Some(content_type), text.as_bytes()).into_owned()).unwrap()
    }

    #[test]
    fn form_fields_are_redacted_and_the_rest_kept() {
        let r = Redactor::default();
        let form = "application/x-www-form-urlencoded";
        assert_eq!(body(&r, form, "username=alice&password=hunter2&x=1"), "username=alice&password=<redacted>&x=1");
        assert_eq!(
            body(&r, form, "user%5Bpassword%5D=a+b&PIN=1234&a"),
            "user%5Bpassword%5D=<redacted>&PIN=<redacted>&a"
        );
        assert_eq!(body(&r, form, "username=alice"), "username=alice");
        assert_eq!(body(&r, "", "user=root&pass=x"), "user=root&pass=<redacted>");
    }

    #[test]
    fn json_keys_are_redacted_at_any_depth_text_kept() {
        let r = Redactor::default();
        let text = r#"{"username": "alice", "password": "p\"w", "card": {"cardNumber": 4111111111111111, "cvv": "123"}, "list": [{"otp": [1, 2]}], "ok": true}"#;
        assert_eq!(
            body(&r, "application/json", text),
            r#"{"username": "alice", "password": "<redacted>", "card": {"cardNumber": "<redacted>", "cvv": "<redacted>"}, "list": [{"otp": "<redacted>"}], "ok": true}"#
        );
        assert_eq!(body(&r, "application/json", r#"{"username":"a"}"#), r#"{"username":"a"}"#);
    }

    #[test]
    fn card_numbers_are_redacted_whatever_their_field() {
        let r = Redactor::default();
        let json = r#"{"card":{"number":"4242 4242 4242 4242","exp_month":12,"exp_year":2031,"cvc":"123"},"cards":[5555555555554444],"order":4242424242424241,"ts":1795916406123456789}"#;
        assert_eq!(
            body(&r, "application/json", json),
            r#"{"card":{"number":"<redacted>","exp_month":"<redacted>","exp_year":"<redacted>","cvc":"<redacted>"},"cards":["<redacted>"],"order":4242424242424241,"ts":1795916406123456789}"#
        );
        let form = "application/x-www-form-urlencoded";
        assert_eq!(
            body(&r, form, "amount=1.00&card%5Bnumber%5D=4000-0000-0000-0002&ref=12345"),
            "amount=1.00&card%5Bnumber%5D=<redacted>&ref=12345"
        );
        assert_eq!(body(&r, "text/plain", "pay 378282246310005 now"), REDACTED);
        assert_eq!(body(&r, "text/plain", "order 4242424242424241"), "order 4242424242424241");
    }

    #[test]
    fn bodies_that_cannot_be_parsed_are_dropped_when_they_mention_a_secret() {
        let r = Redactor::default();
        assert_eq!(body(&r, "application/json", r#"{"password": "x""#), REDACTED);
        let multipart = "--b\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\nx\r\n--b--";
        assert_eq!(body(&r, "multipart/form-data; boundary=b", multipart), REDACTED);
        assert_eq!(body(&r, "text/plain", "hello"), "hello");
    }

    #[test]
    fn records_lose_query_secrets_and_secret_headers() {
        let r = Redactor::default();
        let mut record = CaptureRecord::new(
            1.0,
            "192.0.2.1".parse().unwrap(),
            "POST",
            "/login?next=/&password=x",
            vec![("Cookie".into(), "s=1".into()), ("Content-Type".into(), "application/json".into())],
        );
        record.body = Some(r#"{"username":"bob","password":"x"}"#.into());
        r.redact_record(&mut record);
        assert_eq!(record.target, "/login?next=/&password=<redacted>");
        assert_eq!(record.headers[0].1, REDACTED);
        assert_eq!(record.body.as_deref(), Some(r#"{"username":"bob","password":"<redacted>"}"#));
    }

    #[test]
    fn dressed_up_form_names_are_redacted() {
        let r = Redactor::default();
        let form = "application/x-www-form-urlencoded";
        for (text, expected) in [
            ("password[]=hunter2&x=1", "password[]=<redacted>&x=1"),
            ("password%5B%5D=hunter2", "password%5B%5D=<redacted>"),
            ("a=b;password=hunter2", "a=b;password=<redacted>"),
            ("password+=hunter2", "password+=<redacted>"),
            ("%00password=hunter2", "%00password=<redacted>"),
            ("user[password][]=hunter2;;x", "user[password][]=<redacted>;;x"),
        ] {
            assert_eq!(body(&r, form, text), expected, "{text}");
        }
        assert_eq!(r.redact_target("/login?a=b;pass=hunter2"), "/login?a=b;pass=<redacted>");
        assert_eq!(body(&r, form, "note=a;b&c=d"), "note=a;b&c=d", "separators kept as sent");
    }

    #[test]
    fn utf16_and_encoded_multipart_bodies_are_dropped() {
        let r = Redactor::default();
        let utf16 = |text: &str, big_endian: bool| -> Vec<u8> {
            text.encode_utf16().flat_map(|u| if big_endian { u.to_be_bytes() } else { u.to_le_bytes() }).collect()
        };
        for big_endian in [false, true] {
            for content_type in ["application/x-www-form-urlencoded; charset=utf-16", "", "application/json"] {
                for text in ["username=alice&password=hunter2", r#"{"username":"alice","password":"hunter2"}"#] {
                    let bytes = utf16(text, big_endian);
                    assert_eq!(
                        &*r.redact_body(Some(content_type), &bytes),
                        REDACTED.as_bytes(),
                        "{content_type} {text}"
                    );
                }
            }
        }
        let extended = "--b\r\nContent-Disposition: form-data; name*=UTF-8''p%61ssword\r\n\r\nhunter2\r\n--b--";
        assert_eq!(body(&r, "multipart/form-data; boundary=b", extended), REDACTED);
        let continued = "--b\r\nContent-Disposition: form-data; name*0=\"pa\"; name*1=\"ssw\"\r\n\r\nhunter2\r\n--b--";
        assert_eq!(body(&r, "multipart/form-data; boundary=b", continued), REDACTED);
        let plain = "--b\r\nContent-Disposition: form-data; name=\"q\"\r\n\r\nhello\r\n--b--";
        assert_eq!(body(&r, "multipart/form-data; boundary=b", plain), plain);
    }

    #[test]
    fn compressed_bodies_are_kept_only_without_secrets() {
        use std::io::Write as _;
        let r = Redactor::default();
        let gzip = |text: &str| {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(text.as_bytes()).unwrap();
            encoder.finish().unwrap()
        };
        let record = |headers: Vec<(String, String)>, bytes: &[u8]| {
            let mut record = CaptureRecord::new(1.0, "192.0.2.1".parse().unwrap(), "POST", "/login", headers);
            (record.body, record.body_b64) = encode_body(bytes);
            record
        };
        let form = ("Content-Type".to_string(), "application/x-www-form-urlencoded".to_string());
        let gzipped = ("Content-Encoding".to_string(), "gzip".to_string());
        for headers in [vec![form.clone(), gzipped.clone()], vec![form.clone()]] {
            let mut secret = record(headers, &gzip("username=alice&password=hunter2"));
            r.redact_record(&mut secret);
            assert_eq!(secret.body.as_deref(), Some(REDACTED));
            assert_eq!(secret.body_b64, None);
        }
        let harmless = gzip("q=shoes&page=2");
        let mut kept = record(vec![form.clone(), gzipped.clone()], &harmless);
        r.redact_record(&mut kept);
        assert_eq!(kept.body_bytes().unwrap().as_deref(), Some(&harmless[..]));
        let mut unknown = record(vec![form, ("Content-Encoding".into(), "br".into())], b"\x0b\x02\x80pass");
        r.redact_record(&mut unknown);
        assert_eq!(unknown.body.as_deref(), Some(REDACTED));
    }

    #[test]
    fn binary_bodies_mentioning_a_secret_are_dropped() {
        let r = Redactor::default();
        let mut bytes = b"\xff\xfepassword=1".to_vec();
        assert_eq!(&*r.redact_body(Some("application/octet-stream"), &bytes), REDACTED.as_bytes());
        bytes.truncate(2);
        assert_eq!(&*r.redact_body(Some("application/octet-stream"), &bytes), &bytes[..]);
    }
}
