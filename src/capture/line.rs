//! A capture line read by hand, for replay's hot loop: the fields of
//! [`RecordRef`] straight from the line's bytes, strings borrowed unless
//! they hold escapes. serde_json took a third of replay's reading time
//! walking its generic visitor machinery for the same result.
//!
//! The reader only takes lines it is sure of and gives up (returns `None`)
//! on anything else: an unknown or repeated field, a missing one, `null`
//! where a value is required, a control character in a string, a lone
//! surrogate, anything malformed. [`RecordRef::parse`] then reads the line
//! with serde_json, so every line serde_json reads gets the same record
//! and every line it refuses the same error message, whichever reader ran.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr};

use super::record::{Header, RecordRef};

// Here rather than in `record`, which this file reads from: the two
// files would import each other.
impl<'a> RecordRef<'a> {
    /// Read a capture line: by hand when it has the shape palisade writes
    /// (see this file), else by serde_json. The same record either way,
    /// and serde_json's own error for a line it refuses.
    pub fn parse(line: &'a str) -> Result<RecordRef<'a>, serde_json::Error> {
        Self::parse_into(line, Vec::new()).map(|(record, _)| record)
    }

    /// [`RecordRef::parse`], with the header list in the allocation of
    /// `headers` (emptied first; [`recycle_headers`] keeps one from line to
    /// line): replay reads line after line, and a new list for each was an
    /// allocation and a free per request. With the record, the `headers`
    /// array as it is on the line (`[` to `]`) when the hand reader read it:
    /// the same text is the same headers, whatever the line around it.
    pub fn parse_into(
        line: &'a str,
        headers: Vec<Header<'a>>,
    ) -> Result<(RecordRef<'a>, Option<&'a str>), serde_json::Error> {
        let no_block = |_: &str| None::<()>;
        Self::parse_known(line, headers, no_block).map(|(record, read)| (record, read.text()))
    }

    /// [`RecordRef::parse_into`], asking `known` about the line's `headers`
    /// array first: when it knows the text (replay keeps a block per text),
    /// the headers are not read at all and the record's list stays empty.
    /// Most of a line is its headers, and a capture repeats a few dozen
    /// blocks, so reading each one's strings again was half of parsing.
    pub fn parse_known<K>(
        line: &'a str,
        mut headers: Vec<Header<'a>>,
        known: impl FnMut(&'a str) -> Option<K>,
    ) -> Result<(RecordRef<'a>, HeadersRead<'a, K>), serde_json::Error> {
        headers.clear();
        match parse_into(line, headers, known) {
            Some((record, read)) => Ok((record, read)),
            None => serde_json::from_str(line).map(|record| (record, HeadersRead::Unknown)),
        }
    }
}

/// An optional string field of a record.
type Text<'a> = Option<Cow<'a, str>>;

/// How a line's `headers` array was read.
#[derive(Debug)]
pub enum HeadersRead<'a, K> {
    /// By serde_json (the hand reader gave the line up): its text unknown.
    Unknown,
    /// Into the record's list; the array's text (`[` to `]`) on the line.
    Listed(&'a str),
    /// Not read: its text is one `known` recognised, and what it said.
    /// Only a text the hand reader read whole before can be recognised,
    /// and the same text at the same place in a line reads the same (a
    /// JSON value ends where its text ends, whatever follows), so this
    /// line has those very headers.
    Known(&'a str, K),
}

impl<'a, K> HeadersRead<'a, K> {
    /// The array's text, when the hand reader read the line.
    pub fn text(&self) -> Option<&'a str> {
        match self {
            HeadersRead::Unknown => None,
            HeadersRead::Listed(text) | HeadersRead::Known(text, _) => Some(text),
        }
    }
}

/// A header list emptied, to hold another line's headers: the same
/// allocation (collecting a vector's own iterator into a vector of a type
/// of the same size and alignment reuses its buffer).
// `filter`, which clippy suggests, cannot change the list's lifetime.
#[allow(clippy::unnecessary_filter_map)]
pub fn recycle_headers<'b>(headers: Vec<Header<'_>>) -> Vec<Header<'b>> {
    headers.into_iter().filter_map(|_| None).collect()
}

/// The record on `line`, or `None` when serde_json should read it.
#[cfg(test)]
pub(crate) fn parse(line: &str) -> Option<RecordRef<'_>> {
    parse_into(line, Vec::new(), |_| None::<()>).map(|(record, _)| record)
}

/// The record on `line` with its headers in `headers` (empty) unless
/// `known` knows their text, and how they were read; `None` when
/// serde_json should read the line.
fn parse_into<'a, K>(
    line: &'a str,
    headers: Vec<Header<'a>>,
    known: impl FnMut(&'a str) -> Option<K>,
) -> Option<(RecordRef<'a>, HeadersRead<'a, K>)> {
    let mut reader = Reader { text: line, at: 0, headers: Some(headers), read: None, known };
    let record = match reader.record_in_order() {
        Some(record) => record,
        None => {
            // Read again from the start, fields in any order, blanks
            // anywhere (the header list is back in the reader unless its
            // own reading failed, which it would again here).
            (reader.at, reader.read) = (0, None);
            reader.record()?
        }
    };
    reader.skip_whitespace();
    // serde_json refuses anything after the object.
    (reader.at == line.len()).then_some(())?;
    Some((record, reader.read?))
}

/// Where the reader is in the line.
struct Reader<'a, K, F> {
    text: &'a str,
    at: usize,
    /// The list to read the headers into (taken by the `headers` field).
    headers: Option<Vec<Header<'a>>>,
    /// How the `headers` array was read, once it was.
    read: Option<HeadersRead<'a, K>>,
    /// Asked about the `headers` array's text before reading it.
    known: F,
}

/// The fields of a record.
#[derive(Debug, Clone, Copy)]
enum Field {
    Ts,
    ClientIp,
    Method,
    Target,
    Version,
    Headers,
    Body,
    BodyB64,
    Status,
    Label,
    Source,
    Id,
}

/// The field `rest` (a line after a key's opening quote) names, and the
/// length of its key with the closing quote; told apart by the first
/// letter, then compared in full. Each key is a constant array, so the
/// comparison is a load or two and a compare (taken from a table as a
/// slice, each was a call to `memcmp`: 80 instructions a key).
fn field(rest: &[u8]) -> Option<(Field, usize)> {
    use Field::*;
    match rest.first()? {
        b't' => key(rest, b"ts\"", Ts).or_else(|| key(rest, b"target\"", Target)),
        b'c' => key(rest, b"client_ip\"", ClientIp),
        b'm' => key(rest, b"method\"", Method),
        b'v' => key(rest, b"version\"", Version),
        b'h' => key(rest, b"headers\"", Headers),
        b'b' => key(rest, b"body\"", Body).or_else(|| key(rest, b"body_b64\"", BodyB64)),
        b's' => key(rest, b"status\"", Status).or_else(|| key(rest, b"source\"", Source)),
        b'l' => key(rest, b"label\"", Label),
        b'i' => key(rest, b"id\"", Id),
        _ => None,
    }
}

/// `field` and the key's length when `rest` starts with `key` (the key as
/// it follows the opening quote, with its closing quote).
fn key<const N: usize>(rest: &[u8], key: &[u8; N], field: Field) -> Option<(Field, usize)> {
    (rest.get(..N)? == key).then_some((field, N))
}

/// Keep `value` in `slot`; `None` when the slot is already filled, which
/// serde_json reports as a duplicate field.
fn fill<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    match slot {
        Some(_) => None,
        None => {
            *slot = Some(value);
            Some(())
        }
    }
}

impl<'a, K, F: FnMut(&'a str) -> Option<K>> Reader<'a, K, F> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    /// JSON's whitespace, nothing else.
    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// The next non-blank byte is `byte`; step past it. Looked for before
    /// any blanks: palisade writes none.
    fn expect(&mut self, byte: u8) -> Option<()> {
        if self.peek() != Some(byte) {
            self.skip_whitespace();
            (self.peek()? == byte).then_some(())?;
        }
        self.at += 1;
        Some(())
    }

    /// After a value: `true` at `,` (another follows), `false` at `close`.
    fn more(&mut self, close: u8) -> Option<bool> {
        if self.peek() == Some(b',') {
            self.at += 1;
            return Some(true);
        }
        self.skip_whitespace();
        let next = self.peek()?;
        self.at += 1;
        match next {
            b',' => Some(true),
            _ if next == close => Some(false),
            _ => None,
        }
    }

    /// A record as palisade writes it: every field in the order of
    /// `CaptureRecord`, no blanks, the optional ones left out or `null`.
    /// Each key is then one comparison with the bytes expected next, where
    /// [`Reader::record`] finds which key it is, checks it is not a
    /// repeat, and steps over blanks around it (a sixth of reading a
    /// line). `None` at anything else, and [`Reader::record`] reads the
    /// line; the values are read by the same functions either way.
    fn record_in_order(&mut self) -> Option<RecordRef<'a>> {
        self.literal(b"{\"ts\":")?;
        let ts = self.number()?;
        self.literal(b",\"client_ip\":")?;
        let client_ip = ip_address(&self.string()?)?;
        self.literal(b",\"method\":")?;
        let method = self.string()?;
        self.literal(b",\"target\":")?;
        let target = self.string()?;
        let version = self.optional(b",\"version\":", Self::optional_string)?;
        self.literal(b",\"headers\":")?;
        let headers = self.headers()?;
        match self.rest_in_order() {
            Some(Rest { body, body_b64, status, label, source, id }) => Some(RecordRef {
                ts,
                client_ip,
                method,
                target,
                version,
                headers,
                body,
                body_b64,
                status,
                label,
                source,
                id,
            }),
            None => {
                // Emptied, for the reader that reads the line again.
                let mut headers = headers;
                headers.clear();
                self.headers = Some(headers);
                None
            }
        }
    }

    /// The fields after the headers, for [`Reader::record_in_order`].
    fn rest_in_order(&mut self) -> Option<Rest<'a>> {
        let body = self.optional(b",\"body\":", Self::optional_string)?;
        let body_b64 = self.optional(b",\"body_b64\":", Self::optional_string)?;
        let status = self.optional(b",\"status\":", Self::status)?;
        let label = self.optional(b",\"label\":", Self::optional_string)?;
        let source = self.optional(b",\"source\":", Self::optional_string)?;
        let id = self.optional(b",\"id\":", Self::optional_string)?;
        self.literal(b"}")?;
        Some(Rest { body, body_b64, status, label, source, id })
    }

    /// Step past `literal` if the line goes on with it.
    fn literal<const N: usize>(&mut self, literal: &[u8; N]) -> Option<()> {
        (self.text.as_bytes().get(self.at..self.at + N)? == literal).then(|| self.at += N)
    }

    /// An optional field's value after its `key` (with the comma before
    /// it), or `None` inside when the key is not next.
    fn optional<const N: usize, T>(
        &mut self,
        key: &[u8; N],
        value: impl FnOnce(&mut Self) -> Option<Option<T>>,
    ) -> Option<Option<T>> {
        match self.literal(key) {
            Some(()) => value(self),
            None => Some(None),
        }
    }

    fn record(&mut self) -> Option<RecordRef<'a>> {
        let (mut ts, mut client_ip, mut method, mut target, mut headers) = (None, None, None, None, None);
        // The optional fields: outer `Some` once seen (a second time is a
        // duplicate), inner `None` for `null`, as serde reads an `Option`.
        let (mut version, mut body, mut body_b64, mut status) = (None, None, None, None);
        let (mut label, mut source, mut id) = (None, None, None);
        self.expect(b'{')?;
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            // `{}` lacks the required fields: serde_json names the first.
            return None;
        }
        loop {
            let key = self.key()?;
            self.expect(b':')?;
            match key {
                Field::Ts => fill(&mut ts, self.number()?)?,
                Field::ClientIp => fill(&mut client_ip, ip_address(&self.string()?)?)?,
                Field::Method => fill(&mut method, self.string()?)?,
                Field::Target => fill(&mut target, self.string()?)?,
                Field::Version => fill(&mut version, self.optional_string()?)?,
                Field::Headers => fill(&mut headers, self.headers()?)?,
                Field::Body => fill(&mut body, self.optional_string()?)?,
                Field::BodyB64 => fill(&mut body_b64, self.optional_string()?)?,
                Field::Status => fill(&mut status, self.status()?)?,
                Field::Label => fill(&mut label, self.optional_string()?)?,
                Field::Source => fill(&mut source, self.optional_string()?)?,
                Field::Id => fill(&mut id, self.optional_string()?)?,
            }
            if !self.more(b'}')? {
                break;
            }
        }
        Some(RecordRef {
            ts: ts?,
            client_ip: client_ip?,
            method: method?,
            target: target?,
            version: version.flatten(),
            headers: headers?,
            body: body.flatten(),
            body_b64: body_b64.flatten(),
            status: status.flatten(),
            label: label.flatten(),
            source: source.flatten(),
            id: id.flatten(),
        })
    }

    /// A key naming one of the record's fields. Anything else, an escaped
    /// key included, is left to serde_json (which skips unknown fields).
    /// Matched against the names as bytes, with their closing quote: taking
    /// each key as a string first was a sixth of reading a line.
    fn key(&mut self) -> Option<Field> {
        self.expect(b'"')?;
        let (field, length) = field(self.text.as_bytes().get(self.at..)?)?;
        self.at += length;
        Some(field)
    }

    /// `null` (step past it) or not.
    fn null(&mut self) -> bool {
        self.skip_whitespace();
        let null = self.text.as_bytes().get(self.at..self.at + 4) == Some(b"null");
        if null {
            self.at += 4;
        }
        null
    }

    fn optional_string(&mut self) -> Option<Option<Cow<'a, str>>> {
        match self.null() {
            true => Some(None),
            false => self.string().map(Some),
        }
    }

    /// A number's characters, parsed as serde_json parses them: its float
    /// parsing is not always correctly rounded, and the record must hold
    /// the very `f64` serde_json would have made. A timestamp as palisade
    /// writes it is read here ([`short_decimal`]); anything else by
    /// serde_json itself.
    fn number(&mut self) -> Option<f64> {
        self.skip_whitespace();
        let start = self.at;
        if let Some((value, length)) = plain_decimal(self.text.as_bytes().get(start..)?) {
            self.at += length;
            return Some(value);
        }
        while matches!(self.peek(), Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')) {
            self.at += 1;
        }
        let text = self.text.get(start..self.at)?;
        short_decimal(text).or_else(|| serde_json::from_str::<f64>(text).ok())
    }

    /// `null`, or a status as plain digits that fit a `u16` (anything else,
    /// serde_json either refuses or reads in ways left to it).
    fn status(&mut self) -> Option<Option<u16>> {
        if self.null() {
            return Some(None);
        }
        let start = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        let digits = self.text.get(start..self.at)?;
        // JSON has no leading zeros; at most five digits cannot overflow a u32.
        if digits.is_empty() || digits.len() > 5 || (digits.len() > 1 && digits.starts_with('0')) {
            return None;
        }
        let value = digits.bytes().fold(0u32, |n, digit| n * 10 + u32::from(digit - b'0'));
        u16::try_from(value).ok().map(Some)
    }

    /// `[["name", "value"], …]`, or one whose text `known` knows.
    fn headers(&mut self) -> Option<Vec<Header<'a>>> {
        // A repeated field is a duplicate (the caller gives up on it).
        let mut headers = self.headers.take()?;
        self.expect(b'[')?;
        let start = self.at - 1;
        let bytes = self.text.as_bytes();
        let last = last_block_end(bytes, start);
        // The first `]]` only when the last one is not a kept text.
        if last.is_some_and(|end| self.known_block(start, end))
            || first_block_end(bytes, start).is_some_and(|end| Some(end) != last && self.known_block(start, end))
        {
            return Some(headers);
        }
        if headers.capacity() == 0 {
            // Room for a browser's header block.
            headers.reserve_exact(16);
        }
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.at += 1;
        } else {
            loop {
                self.expect(b'[')?;
                let name = self.string()?;
                self.expect(b',')?;
                let value = self.string()?;
                self.expect(b']')?;
                headers.push((name, value));
                if !self.more(b']')? {
                    break;
                }
            }
        }
        self.read = Some(HeadersRead::Listed(self.text.get(start..self.at)?));
        Some(headers)
    }

    /// Whether the text from `start` to `end` is a `headers` array `known`
    /// knows; if so, the reader steps past it.
    fn known_block(&mut self, start: usize, end: usize) -> bool {
        let Some(text) = self.text.get(start..end) else { return false };
        let Some(found) = (self.known)(text) else { return false };
        self.at = end;
        self.read = Some(HeadersRead::Known(text, found));
        true
    }

    /// A string, borrowed from the line when it has no escapes.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.expect(b'"')?;
        let start = self.at;
        let bytes = self.text.as_bytes();
        self.at += plain_run(bytes.get(start..)?);
        match *bytes.get(self.at)? {
            b'"' => {
                let text = self.text.get(start..self.at)?;
                self.at += 1;
                Some(Cow::Borrowed(text))
            }
            b'\\' => self.unescape(start).map(Cow::Owned),
            // serde_json refuses raw control characters in strings.
            _ => None,
        }
    }

    /// The rest of a string from `start`, which has an escape at `self.at`.
    fn unescape(&mut self, start: usize) -> Option<String> {
        let bytes = self.text.as_bytes();
        let mut text = String::with_capacity(self.at - start + 16);
        text.push_str(self.text.get(start..self.at)?);
        loop {
            match *bytes.get(self.at)? {
                b'"' => {
                    self.at += 1;
                    return Some(text);
                }
                b'\\' => {
                    let escape = *bytes.get(self.at + 1)?;
                    self.at += 2;
                    text.push(match escape {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.code_unit()?,
                        _ => return None,
                    });
                }
                0..=0x1f => return None,
                _ => {
                    let run = self.at;
                    self.at += plain_run(bytes.get(run..)?);
                    text.push_str(self.text.get(run..self.at)?);
                }
            }
        }
    }

    /// The four hex digits of `\u`; a surrogate (half of a pair, or a
    /// lone one serde_json refuses) is left to serde_json.
    fn code_unit(&mut self) -> Option<char> {
        let hex = self.text.get(self.at..self.at + 4)?;
        // `from_str_radix` would also take a sign.
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.at += 4;
        char::from_u32(u32::from_str_radix(hex, 16).ok()?)
    }
}

/// Where the `headers` array opening at `start` would end if it is one
/// seen before: just past a `]]` (a non-empty list of pairs ends so).
/// Only a guess, to look the text up by: a `]]` inside a string, or a
/// blank between the brackets, makes a text that is not one kept, and the
/// array is read. `None` for `[]`, which is quicker read than looked up.
///
/// The last `]` on the line first: palisade writes the headers after the
/// target, and what follows them (body, label, source, id) seldom holds a
/// `]`, so one search from the end mostly finds it where a search from the
/// start stops at every pair's `]`.
/// The optional fields a line has after its headers, in the order
/// palisade writes them ([`Reader::rest_in_order`]).
struct Rest<'a> {
    body: Text<'a>,
    body_b64: Text<'a>,
    status: Option<u16>,
    label: Text<'a>,
    source: Text<'a>,
    id: Text<'a>,
}

fn last_block_end(bytes: &[u8], start: usize) -> Option<usize> {
    if bytes.get(start + 1) == Some(&b']') {
        return None;
    }
    let at = start + memchr::memrchr(b']', bytes.get(start..)?)?;
    (at > start + 1 && bytes.get(at - 1) == Some(&b']')).then_some(at + 1)
}

/// [`last_block_end`] from the start of the array: the first `]]`.
fn first_block_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut from = start + 1;
    if bytes.get(from) == Some(&b']') {
        return None;
    }
    loop {
        let at = from + memchr::memchr(b']', bytes.get(from..)?)?;
        if bytes.get(at + 1) == Some(&b']') {
            return Some(at + 2);
        }
        from = at + 1;
    }
}

/// A client address as `IpAddr`'s parser reads it: an IPv4 address in
/// dotted decimal read here, byte by byte (the standard parser's generic
/// reader was 200 instructions an address), anything else by that parser.
fn ip_address(text: &str) -> Option<IpAddr> {
    ipv4(text).map(IpAddr::V4).or_else(|| text.parse().ok())
}

/// Four decimal numbers of one to three digits, each at most 255 and
/// without a leading zero, separated by dots: what the standard parser
/// takes as IPv4 (`None` for anything else, which it reads). One pass,
/// a byte at a time.
fn ipv4(text: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    // The octet being read, its value and its digits so far.
    let (mut octet, mut value, mut digits) = (0, 0u16, 0);
    for &byte in text.as_bytes() {
        if byte == b'.' {
            if digits == 0 {
                return None;
            }
            *octets.get_mut(octet)? = u8::try_from(value).ok()?;
            (octet, value, digits) = (octet + 1, 0, 0);
            continue;
        }
        let digit = byte.wrapping_sub(b'0');
        // A digit after a leading zero, or a fourth one, is refused.
        if digit > 9 || digits == 3 || digits == 1 && value == 0 {
            return None;
        }
        (value, digits) = (value * 10 + u16::from(digit), digits + 1);
    }
    if octet != 3 || digits == 0 {
        return None;
    }
    octets[3] = u8::try_from(value).ok()?;
    Some(Ipv4Addr::from(octets))
}

/// Exact powers of ten (every one up to 10^22 is an `f64`), as
/// serde_json's table has them.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20,
    1e21, 1e22,
];

/// Largest significand an `f64` holds exactly.
const EXACT: u64 = 1 << 53;

/// `digits` or `digits.digits` of at most 2^53 as an integer (so at most
/// 16 digits), no sign, no exponent, no leading zero: the `f64` serde_json
/// makes of it, without building a deserializer for it (a tenth of reading
/// a line). serde_json reads the digits as an integer and divides it by
/// the power of ten the fraction's length gives (an integer it converts as
/// it is); both are exact here, so the one rounding is the division's,
/// done the same way. `None` for anything else (serde_json reads it).
fn short_decimal(text: &str) -> Option<f64> {
    let bytes = text.as_bytes();
    let (whole, fraction) = match memchr::memchr(b'.', bytes) {
        Some(at) => (bytes.get(..at)?, bytes.get(at + 1..)?),
        None => (bytes, &[][..]),
    };
    let pointed = whole.len() < bytes.len();
    // Sixteen digits cannot overflow a u64. JSON has no leading zeros
    // ("0" and "0.5" are fine), nor an empty part on either side of a point.
    if whole.is_empty() || pointed && fraction.is_empty() || whole.len() + fraction.len() > 16 {
        return None;
    }
    if whole.len() > 1 && whole.first() == Some(&b'0') {
        return None;
    }
    // A second point, a sign or an exponent is not a digit.
    let significand = digits(digits(0, whole)?, fraction)?;
    if significand > EXACT {
        return None;
    }
    match fraction.len() {
        0 => Some(significand as f64),
        places => Some(significand as f64 / POW10[places]),
    }
}

/// [`short_decimal`] of the number at the start of `bytes`, with its
/// length, in the pass that finds where it ends (a timestamp was scanned
/// once for its end and again for its digits: ~0.45k instructions a
/// line). `None` when the number goes on with what only the general scan
/// takes (a sign, an exponent, a second point) or is not a short decimal;
/// [`Reader::number`] then reads it as before.
fn plain_decimal(bytes: &[u8]) -> Option<(f64, usize)> {
    let (mut at, mut point, mut significand) = (0, None, 0u64);
    while let Some(&byte) = bytes.get(at) {
        let digit = byte.wrapping_sub(b'0');
        if digit < 10 {
            // Past sixteen digits the value is refused below, wrapped or not.
            significand = significand.wrapping_mul(10).wrapping_add(u64::from(digit));
        } else if byte == b'.' && point.is_none() {
            point = Some(at);
        } else {
            break;
        }
        at += 1;
    }
    if matches!(bytes.get(at), Some(b'-' | b'+' | b'.' | b'e' | b'E')) {
        return None;
    }
    // The checks of `short_decimal`, on the same text.
    let whole = point.unwrap_or(at);
    let places = point.map_or(0, |point| at - point - 1);
    if whole == 0 || point.is_some() && places == 0 || whole + places > 16 || significand > EXACT {
        return None;
    }
    if whole > 1 && bytes.first() == Some(&b'0') {
        return None;
    }
    match places {
        0 => Some((significand as f64, at)),
        places => Some((significand as f64 / POW10.get(places)?, at)),
    }
}

/// `start` followed by the decimal `digits`; `None` at anything else.
fn digits(start: u64, digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(start, |value, &byte| {
        let digit = byte.wrapping_sub(b'0');
        (digit < 10).then(|| value * 10 + u64::from(digit))
    })
}

/// How many bytes at the start of `bytes` a JSON string holds as they
/// are: up to the first quote, backslash or control character. Eight bytes
/// at a time (the bit tricks for "has a zero byte" and "has a byte less
/// than"), as serde_json does: strings are most of a line, and a byte at a
/// time cost 14 instructions a byte.
fn plain_run(bytes: &[u8]) -> usize {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let Ok(array) = <[u8; 8]>::try_from(chunk) else { break };
        // Little-endian, so the first byte is the lowest and the lowest
        // flag is the first match (a borrow can only flag bytes after it).
        let word = u64::from_le_bytes(array);
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        let flags = (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (word.wrapping_sub(ONES * 0x20) & !word);
        let flags = flags & HIGHS;
        if flags != 0 {
            return at + (flags.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    let rest = bytes.get(at..).unwrap_or_default();
    at + rest.iter().position(|b| matches!(b, b'"' | b'\\' | 0..=0x1f)).unwrap_or(rest.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::xorshift;

    /// What serde_json makes of the line, for comparison.
    fn serde(line: &str) -> Option<String> {
        serde_json::from_str::<RecordRef<'_>>(line).ok().map(|r| format!("{r:?}"))
    }

    fn fast(line: &str) -> Option<String> {
        parse(line).map(|r| format!("{r:?}"))
    }

    #[test]
    fn takes_what_serde_takes_and_reads_it_the_same() {
        let lines = [
            r#"{"ts":1795915654.8674,"client_ip":"198.51.100.23","method":"GET","target":"/item?id=1","version":"HTTP/1.1","headers":[["Host","a"],["User-Agent","sqlmap/1.7.2#stable (https://sqlmap.org)"]],"label":"bot","source":"sqlmap"}"#,
            r#" { "ts" : 1 , "client_ip" : "::1" , "method" : "POST" , "target" : "/login" , "headers" : [ ] , "status" : 401 , "body" : "{\"u\":\"a\\b\/c\u00e9\n\"}" } "#,
            r#"{"ts":1.5e9,"client_ip":"192.0.2.1","method":"GET","target":"/","headers":[["X","say \"hi\" \ud7ff"]],"version":null,"body":null,"status":null,"label":null,"source":null,"id":"x-1","body_b64":"YQ=="}"#,
            r#"{"ts":-2.5E-3,"client_ip":"192.0.2.1","method":"GET","target":"/é","headers":[],"status":0}"#,
            r#"{"ts":0.1,"client_ip":"192.0.2.1","method":"GET","target":"/","headers":[],"status":65535}"#,
        ];
        for line in lines {
            assert!(fast(line).is_some(), "the fast reader takes {line}");
            assert_eq!(fast(line), serde(line), "{line}");
        }
    }

    #[test]
    fn leaves_to_serde_what_it_is_not_sure_of() {
        let base = r#""client_ip":"192.0.2.1","method":"GET","target":"/","headers":[]"#;
        let lines = [
            format!(r#"{{"ts":1,{base},"extra":true}}"#),
            format!(r#"{{"ts":1,{base},"ts":2}}"#),
            format!(r#"{{{base}}}"#),
            format!(r#"{{"ts":"1",{base}}}"#),
            format!(r#"{{"ts":1,{base},"status":65536}}"#),
            format!(r#"{{"ts":1,{base},"status":-1}}"#),
            format!(r#"{{"ts":1,{base},"status":0200}}"#),
            format!(r#"{{"ts":1,{base},"status":200.0}}"#),
            format!(r#"{{"ts":1,{base},"id":"\ud83d\ude00"}}"#),
            format!(r#"{{"ts":1,{base},"id":"\ud83d"}}"#),
            format!(r#"{{"ts":1,{base},"id":"\u+123"}}"#),
            format!("{{\"ts\":1,{base},\"id\":\"a\tb\"}}"),
            format!(r#"{{"ts":1,{base},"id":"\x"}}"#),
            format!(r#"{{"t\u0073":1,{base}}}"#),
            format!(r#"{{"ts":1,{base}}} x"#),
            format!(r#"{{"ts":1,{base},}}"#),
            format!(r#"{{"ts":1,{base},"method":null}}"#),
            r#"{"ts":1,"client_ip":"nope","method":"GET","target":"/","headers":[]}"#.to_string(),
            r#"{"ts":1,"client_ip":"192.0.2.1","method":"GET","target":"/","headers":[["a"]]}"#.to_string(),
            r#"{"ts":1,"client_ip":"192.0.2.1","method":"GET","target":"/","headers":[["a","b","c"]]}"#.to_string(),
            "{}".to_string(),
            "[]".to_string(),
            String::new(),
        ];
        for line in &lines {
            assert_eq!(fast(line), None, "left to serde: {line}");
        }
        // Whatever serde_json makes of an out-of-range number, the fast
        // reader makes the same or defers.
        let huge = format!(r#"{{"ts":1e999,{base}}}"#);
        assert!(fast(&huge).is_none() || fast(&huge) == serde(&huge));
        // Those serde_json reads, it reads whichever reader is asked.
        for line in &lines {
            let record = RecordRef::parse(line);
            assert_eq!(record.as_ref().ok().map(|r| format!("{r:?}")), serde(line), "{line}");
        }
    }

    #[test]
    fn mutated_lines_are_read_as_serde_reads_them_or_left_to_it() {
        let templates = [
            r#"{"ts":1795915654.8674,"client_ip":"198.51.100.23","method":"POST","target":"/login?a=1","version":"HTTP/1.1","headers":[["Host","a"],["X","say \"hi\" \u00e9"]],"body":"{\"u\":\"a\"}","status":200,"label":"bot","id":"n"}"#,
            r#"{"ts":1,"client_ip":"::1","method":"GET","target":"/","headers":[],"version":null,"status":null}"#,
        ];
        // Bytes that matter to JSON, so mutations reach the reader's edges.
        let alphabet = b"{}[]\":,\\/ \tnul0123456789.eE+-uabfrt";
        let mut next = xorshift(0x2545_f491_4f6c_dd1d_u64);
        let (mut taken, mut deferred) = (0, 0);
        for round in 0..20_000 {
            let mut bytes = templates[round % templates.len()].as_bytes().to_vec();
            for _ in 0..=(next() % 3) {
                let at = (next() % bytes.len() as u64) as usize;
                let byte = alphabet[(next() % alphabet.len() as u64) as usize];
                match next() % 3 {
                    0 => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    _ => {
                        bytes.remove(at);
                    }
                }
            }
            let Ok(line) = std::str::from_utf8(&bytes) else { continue };
            match fast(line) {
                Some(read) => {
                    taken += 1;
                    assert_eq!(Some(read), serde(line), "{line}");
                }
                None => deferred += 1,
            }
        }
        assert!(taken > 1000 && deferred > 1000, "both paths exercised: {taken} taken, {deferred} deferred");
    }

    #[test]
    fn the_projects_captures_are_all_read_by_hand() {
        let mut lines = 0;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("replay");
        let dirs = [root.join("regression"), root.join("captures")];
        for entry in dirs.iter().flat_map(|dir| std::fs::read_dir(dir).unwrap()) {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !name.ends_with(".jsonl") || name.contains(".expect") {
                continue;
            }
            for line in std::fs::read_to_string(&path).unwrap().lines().filter(|l| !l.trim().is_empty()) {
                lines += 1;
                assert!(fast(line).is_some(), "{name}: {line}");
                assert_eq!(fast(line), serde(line), "{name}: {line}");
            }
        }
        assert!(lines > 0);
    }

    #[test]
    fn short_decimals_are_the_numbers_serde_makes() {
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15_u64);
        let mut texts: Vec<String> = [
            "0",
            "0.0",
            "1.5",
            "1795915654.8674",
            "1795915664.658123",
            "9007199254740992",
            "900719925.4740992",
            "0.000000000000001",
            "10.50",
        ]
        .iter()
        .map(|t| t.to_string())
        .collect();
        for _ in 0..50_000 {
            let digits = 1 + next() % 16;
            let whole = 1 + next() % digits;
            let number = next() % 10u64.pow(digits as u32);
            let text = format!("{number:0width$}", width = digits as usize);
            let (w, f) = text.split_at(whole as usize);
            texts.push(if f.is_empty() { w.to_string() } else { format!("{w}.{f}") });
        }
        let mut read = 0;
        for text in &texts {
            let serde = serde_json::from_str::<f64>(text).ok();
            match short_decimal(text) {
                Some(value) => {
                    read += 1;
                    assert_eq!(Some(value.to_bits()), serde.map(f64::to_bits), "{text}");
                }
                None => {
                    let past_exact = text.replace('.', "").parse::<u64>().is_ok_and(|n| n > EXACT);
                    assert!(serde.is_none() || past_exact, "{text}");
                }
            }
        }
        assert!(read > 40_000, "{read}");
        let past_exact = ["9007199254740993", "900719925.4740993", "12345678901234567", "1.2345678901234567"];
        for deferred in ["", ".5", "1.", "01", "-1", "1e5", "1.5E3", "+1", "1..2", "1.2.3"].iter().chain(&past_exact) {
            assert_eq!(short_decimal(deferred), None, "{deferred}");
        }
    }

    #[test]
    fn client_addresses_are_read_as_the_standard_parser_reads_them() {
        let mut texts: Vec<String> = [
            "0.0.0.0",
            "255.255.255.255",
            "256.0.0.1",
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            "1.2.3.04",
            "1.2.3.4.",
            ".1.2.3",
            "1..2.3",
            "1.2.3.-4",
            "1.2.3.+4",
            "1.2.3.4 ",
            "::1",
            "::ffff:1.2.3.4",
            "1234.1.1.1",
            "",
        ]
        .iter()
        .map(|t| t.to_string())
        .collect();
        let mut next = xorshift(0x2545_f491_4f6c_dd1d_u64);
        let alphabet = b"0123456789.:af";
        for round in 0..50_000 {
            let text = match round % 2 {
                // Near an address: four parts or not, octets up to 999,
                // sometimes with a leading zero.
                0 => (0..if next().is_multiple_of(2) { 4 } else { 3 + next() % 3 })
                    .map(|_| match next() % 8 {
                        0 => format!("0{}", next() % 100),
                        1 => (next() % 1000).to_string(),
                        _ => (next() % 256).to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join("."),
                _ => (0..next() % 16).map(|_| alphabet[(next() % alphabet.len() as u64) as usize] as char).collect(),
            };
            texts.push(text);
        }
        let mut fast = 0;
        for text in &texts {
            fast += usize::from(ipv4(text).is_some());
            assert_eq!(ip_address(text), text.parse::<IpAddr>().ok(), "{text:?}");
        }
        assert!(fast > 3_000, "{fast}");
    }

    #[test]
    fn numbers_read_in_one_pass_are_the_ones_read_in_two() {
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15_u64);
        let alphabet = b"0123456789.-+eE";
        let mut texts = vec!["1795915654.8674".to_string(), "0".into(), "01".into(), "1.".into(), ".5".into()];
        for round in 0..50_000 {
            texts.push(match round % 2 {
                0 => {
                    let digits = 1 + next() % 18;
                    let number = (next() % 10u64.pow(digits.min(19) as u32)).to_string();
                    let at = (next() % (number.len() as u64 + 1)) as usize;
                    format!("{}.{}", &number[..at], &number[at..])
                        .replace(".", if next().is_multiple_of(4) { "" } else { "." })
                }
                _ => {
                    (0..1 + next() % 20).map(|_| alphabet[(next() % alphabet.len() as u64) as usize] as char).collect()
                }
            });
        }
        let mut one_pass = 0;
        for text in &texts {
            let line = format!("{text},");
            let two_passes = |text: &str| short_decimal(text).or_else(|| serde_json::from_str::<f64>(text).ok());
            let mut reader = Reader { text: &line, at: 0, headers: None, read: None, known: |_| None::<()> };
            let read = reader.number();
            one_pass += usize::from(plain_decimal(line.as_bytes()).is_some());
            assert_eq!(read.map(f64::to_bits), two_passes(text).map(f64::to_bits), "{text}");
            if read.is_some() {
                assert_eq!(reader.at, text.len(), "{text}");
            }
        }
        assert!(one_pass > 15_000, "{one_pass}");
    }

    #[test]
    fn header_lists_are_recycled_in_place() {
        let line = r#"{"ts":1,"client_ip":"192.0.2.1","method":"GET","target":"/","headers":[["Host","h"],["A","b"]]}"#;
        let record = RecordRef::parse(line).unwrap();
        let (capacity, address) = (record.headers.capacity(), record.headers.as_ptr() as usize);
        let recycled = recycle_headers(record.headers);
        assert_eq!((recycled.len(), recycled.capacity(), recycled.as_ptr() as usize), (0, capacity, address));
        let (again, text) = RecordRef::parse_into(line, recycled).unwrap();
        assert_eq!(again.headers.as_ptr() as usize, address);
        assert_eq!(again.headers.len(), 2);
        assert_eq!(text, Some(r#"[["Host","h"],["A","b"]]"#));
    }

    #[test]
    fn a_known_header_text_is_not_read_and_anything_else_is() {
        let block = r#"[["Host","a"],["X","b"]]"#;
        let known = |text: &str| (text == block).then_some(7);
        let line = format!(
            r#"{{"ts":1,"client_ip":"192.0.2.1","method":"GET","target":"/","headers":{block},"label":"bot"}}"#
        );
        let (record, read) = RecordRef::parse_known(&line, Vec::new(), known).unwrap();
        assert!(matches!(read, HeadersRead::Known(text, 7) if text == block), "{read:?}");
        assert!(record.headers.is_empty());
        assert_eq!(record.label.as_deref(), Some("bot"));
        // A `]` or `]]` after the headers: found from the start instead.
        for label in ["a]", "a]]", "]]]"] {
            let line = line.replace(r#""bot""#, &format!("{label:?}"));
            let (record, read) = RecordRef::parse_known(&line, Vec::new(), known).unwrap();
            assert!(matches!(read, HeadersRead::Known(text, 7) if text == block), "{line}: {read:?}");
            assert_eq!(record.label.as_deref(), Some(label));
        }
        // What would end the guess early, or not be found by it, or a text
        // not kept: read, and the same as without asking.
        let others = [
            r#"[["Host","a"],["X","]]"]]"#,
            r#"[["Host","a"],["X","b"] ]"#,
            r#"[ ["Host","a"],["X","b"]]"#,
            r#"[["Host","a"],["X","c"]]"#,
            "[]",
        ];
        for other in others {
            let line = line.replace(block, other);
            let (record, read) = RecordRef::parse_known(&line, Vec::new(), known).unwrap();
            assert!(matches!(read, HeadersRead::Listed(text) if text == other), "{other}: {read:?}");
            assert_eq!(format!("{record:?}"), serde(&line).unwrap(), "{other}");
        }
        // A known text followed by what makes the line bad, or one the
        // hand reader leaves to serde_json: serde_json's answer, as before.
        for bad in [format!("{line} x"), line.replace(r#""label""#, r#""headers""#), line.replace("label", "extra")] {
            let parsed = RecordRef::parse_known(&bad, Vec::new(), known);
            assert!(parsed.as_ref().is_err() || matches!(parsed, Ok((_, HeadersRead::Unknown))), "{bad}");
            let serde =
                serde_json::from_str::<RecordRef<'_>>(&bad).map(|r| format!("{r:?}")).map_err(|e| e.to_string());
            assert_eq!(parsed.map(|(r, _)| format!("{r:?}")).map_err(|e| e.to_string()), serde, "{bad}");
        }
    }

    /// The record `Reader::record_in_order` makes of `line`, if it takes it.
    fn in_order(line: &str) -> Option<String> {
        let mut reader = Reader { text: line, at: 0, headers: Some(Vec::new()), read: None, known: |_| None::<()> };
        reader.record_in_order().filter(|_| reader.at == line.len()).map(|r| format!("{r:?}"))
    }

    #[test]
    fn lines_as_palisade_writes_them_are_read_in_order() {
        use super::super::record::CaptureRecord;
        let headers = vec![("Host".to_string(), "a".to_string()), ("X".to_string(), "say \"hi\" ]]".to_string())];
        let mut record = CaptureRecord::new(1795915654.8674, "198.51.100.23".parse().unwrap(), "GET", "/a", headers);
        let mut lines = vec![serde_json::to_string(&record).unwrap()];
        record.version = Some("HTTP/1.1".into());
        record.body = Some("{\"u\":[\"a\"]}".into());
        record.status = Some(200);
        record.label = Some("bot".into());
        record.source = Some("a \u{e9}".into());
        record.id = Some("n-1".into());
        lines.push(serde_json::to_string(&record).unwrap());
        (record.body, record.body_b64, record.client_ip) = (None, Some("YQ==".into()), "::1".parse().unwrap());
        lines.push(serde_json::to_string(&record).unwrap());
        for line in &lines {
            assert!(in_order(line).is_some(), "{line}");
            assert_eq!(in_order(line), serde(line), "{line}");
        }
        // Out of order, blanks, a repeat, something after: the other reader's.
        let without_last = lines[1].strip_suffix('}').unwrap();
        let reordered = format!(r#"{},"label":"bot"}}"#, without_last.replace(r#""label":"bot","#, ""));
        for line in [reordered, lines[1].replacen(',', ", ", 1)] {
            assert_eq!(in_order(&line), None, "{line}");
            assert!(fast(&line).is_some(), "{line}");
            assert_eq!(fast(&line), serde(&line), "{line}");
        }
        let repeated = format!(r#"{without_last},"id":"x"}}"#);
        assert_eq!((in_order(&repeated), fast(&repeated)), (None, None), "{repeated}");
    }

    #[test]
    fn plain_runs_stop_at_the_first_quote_backslash_or_control_byte() {
        for length in 0..20 {
            for stop in [b'"', b'\\', 0x00, 0x1f] {
                for at in 0..=length {
                    let mut bytes = vec![b'a'; length];
                    // Bytes around the edges of each test: just above a
                    // control character, UTF-8 continuation bytes.
                    for (i, byte) in bytes.iter_mut().enumerate() {
                        *byte = [b'a', 0x20, 0x21, 0x23, 0x5b, 0x5d, 0x80, 0xe9, 0xff][i % 9];
                    }
                    if at < length {
                        bytes[at] = stop;
                        // A second stop later must not be taken first.
                        if at + 3 < length {
                            bytes[at + 3] = 0x01;
                        }
                    }
                    assert_eq!(plain_run(&bytes), at.min(length), "{bytes:?}");
                }
            }
        }
    }

    #[test]
    fn unescaped_strings_are_borrowed_and_escaped_ones_owned() {
        let line = r#"{"ts":1,"client_ip":"192.0.2.1","method":"GET","target":"/a\/b","headers":[["Host","h"]]}"#;
        let record = parse(line).unwrap();
        assert!(matches!(record.method, Cow::Borrowed("GET")));
        assert!(matches!(&record.target, Cow::Owned(t) if t == "/a/b"));
        assert!(matches!(record.headers[0].1, Cow::Borrowed("h")));
    }
}
