//! Header names exactly as the client sent them on HTTP/1: wire order,
//! original case, repeats kept.
//!
//! hyper hands palisade a `HeaderMap`, which lowercases names and groups
//! repeated ones, and its record of the original case is private. So the
//! connection's read side is watched here instead: a small state machine
//! follows the byte stream (request head, then the body as its framing
//! says: `Content-Length`, chunked, or none) and records the header names
//! of each head. The handler takes them in order, one per request, and
//! checks they describe the same request before using them. When anything
//! is unexpected (HTTP/2, an upgrade, a head too large, a parse error) the
//! recorder turns itself off and the fingerprint falls back to the
//! `HeaderMap` order.
//!
//! Clients on a keep-alive connection send the same header names request
//! after request. The recorder keeps the last head's names and, when the
//! next head is whole in one read, first checks it line by line against
//! them ([`quick_head`]): the same names share one allocation, and only a
//! head that differs goes through httparse (and allocates its names).

use std::collections::VecDeque;
use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex};

use crate::words::{ONES, short_word, word};

/// Names of one request head, as sent.
pub type WireNames = Arc<[Box<str>]>;

/// The heads recorded on one connection, oldest first.
#[derive(Debug, Clone, Default)]
pub struct WireHeads(Arc<Mutex<VecDeque<Recorded>>>);

/// One head's names as sent and, once a connection has sent the same names
/// twice, the same names as hyper's keys (lower case, [`Keys`]).
#[derive(Debug, Clone)]
struct Recorded {
    names: WireNames,
    keys: Option<Keys>,
}

/// A head's names as `HeaderName`s, one per name sent: each matches its
/// key in hyper's map by a plain comparison (a standard name's is one
/// byte) instead of lowering the sent name ([`is_name_of`]).
type Keys = Arc<[http::HeaderName]>;

impl Recorded {
    #[cfg(test)]
    fn new(names: WireNames) -> Recorded {
        Recorded { names, keys: None }
    }
}

impl WireHeads {
    /// The names of the next request on this connection, if they were seen
    /// and match `headers` (same set of names, case aside).
    pub fn take_matching(&self, headers: &http::HeaderMap) -> Option<WireNames> {
        let Recorded { names, keys } = self.0.lock().ok()?.pop_front()?;
        let in_order = match &keys {
            Some(keys) => in_key_order_by(keys.len(), headers, |i, key| keys[i] == *key),
            None => in_key_order(&names, headers),
        };
        let consistent = in_order
            || (names.iter().all(|name| headers.contains_key(name.as_ref()))
                && distinct_lowercase(&names) == headers.keys_len());
        consistent.then_some(names)
    }

    fn push(&self, head: Recorded) {
        if let Ok(mut queue) = self.0.lock() {
            // A client cannot make this grow: hyper serves requests in
            // order, and the handler takes one per request.
            if queue.len() < 64 {
                queue.push_back(head);
            }
        }
    }
}

/// Whether the names, first occurrences only, are the map's keys in the
/// map's order: then every name is in the map and there are as many
/// different names as keys, which is what [`WireHeads::take_matching`]
/// checks, found without hashing a name. A map filled from one head lists
/// its keys in the order they first appear; when it does not, the check
/// falls back to looking each name up. Linear when no name repeats: a
/// name is either the next key or, rarely, one already seen.
fn in_key_order(names: &[Box<str>], headers: &http::HeaderMap) -> bool {
    in_key_order_by(names.len(), headers, |i, key| is_name_of(&names[i], key))
}

/// [`in_key_order`] for `count` names, `is(i, key)` saying whether the
/// `i`th is `key`.
fn in_key_order_by(count: usize, headers: &http::HeaderMap, is: impl Fn(usize, &http::HeaderName) -> bool) -> bool {
    let mut keys = headers.keys().peekable();
    let mut seen = 0;
    for i in 0..count {
        if keys.next_if(|key| is(i, key)).is_some() {
            seen += 1;
        } else if !headers.keys().take(seen).any(|key| is(i, key)) {
            return false;
        }
    }
    keys.next().is_none()
}

/// Whether `name`, as sent, is `key` (case aside): what
/// `key.as_str().eq_ignore_ascii_case(name)` says, eight bytes at a time.
/// A key is already lower case, so only the sent name needs lowering;
/// comparing byte by byte was most of the cost of matching a head to its
/// request (a dozen names of a dozen bytes, every request). The bytes
/// after the last whole word are compared as the last eight (which
/// overlap the word before), or, in a name shorter than a word, gathered
/// byte by byte: copying them into a padded word called `memcpy` twice
/// per name.
fn is_name_of(name: &str, key: &http::HeaderName) -> bool {
    let (name, key) = (name.as_bytes(), key.as_str().as_bytes());
    let length = name.len();
    if length != key.len() {
        return false;
    }
    if length < 8 {
        return lowercase_word(short_word(name)) == short_word(key);
    }
    let mut name_words = name.chunks_exact(8);
    let mut key_words = key.chunks_exact(8);
    for (n, k) in (&mut name_words).zip(&mut key_words) {
        if lowercase_word(word(n)) != word(k) {
            return false;
        }
    }
    name_words.remainder().is_empty() || lowercase_word(word(&name[length - 8..])) == word(&key[length - 8..])
}

/// Each byte of `x` lowered as `u8::to_ascii_lowercase` does: `A`–`Z`
/// become `a`–`z`, every other byte (non-ASCII ones too) is unchanged.
fn lowercase_word(x: u64) -> u64 {
    let low = x & (0x7f * ONES);
    // Per byte, with no carry between bytes (0x7f + 0x3f < 0x100): the
    // high bit is set where the low seven bits are at least `A`, and where
    // they are beyond `Z`.
    let from_a = low + 0x3f * ONES;
    let beyond_z = low + 0x25 * ONES;
    let upper = from_a & !beyond_z & !x & (0x80 * ONES);
    x | (upper >> 2)
}

/// How many different names there are, case aside. Quadratic, but a head
/// has a few dozen names at most, and this runs per request: comparing in
/// place allocates nothing.
fn distinct_lowercase(names: &[Box<str>]) -> usize {
    names
        .iter()
        .enumerate()
        .filter(|(i, name)| !names[..*i].iter().any(|earlier| earlier.eq_ignore_ascii_case(name)))
        .count()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailers,
    Off,
}

/// Follows one connection's incoming bytes.
#[derive(Debug)]
pub struct HeadRecorder {
    state: State,
    buffer: Vec<u8>,
    /// httparse's header slots, kept for the connection's life and left
    /// uninitialized: a fresh `max_headers`-long array per head was
    /// kilobytes allocated, zeroed and freed for every request. Empty
    /// between heads (it borrows nothing then); see [`recycle_slots`].
    slots: Vec<MaybeUninit<httparse::Header<'static>>>,
    max_head_bytes: usize,
    max_headers: usize,
    heads: WireHeads,
    /// The names of the last head recorded, for the next one to share.
    last: Option<LastHead>,
}

/// The last head's names, and which of them frame the body.
#[derive(Debug)]
struct LastHead {
    names: WireNames,
    kinds: Box<[Kind]>,
    /// Whether a request took these names already.
    taken: bool,
    /// Built when a second request sends the same names (a connection
    /// that sends one request does not pay for them); `Some(None)` when a
    /// name is not a `HeaderName` (hyper refuses such a head).
    keys: Option<Option<Keys>>,
}

impl LastHead {
    fn new(headers: &[httparse::Header<'_>]) -> LastHead {
        LastHead {
            names: headers.iter().map(|h| Box::from(h.name)).collect(),
            kinds: headers.iter().map(|h| Kind::of(h.name)).collect(),
            taken: false,
            keys: None,
        }
    }

    /// These names, for one more request.
    fn record(&mut self, heads: &WireHeads) {
        let keys = if self.taken {
            let names = &self.names;
            self.keys
                .get_or_insert_with(|| {
                    names.iter().map(|name| http::HeaderName::from_bytes(name.as_bytes()).ok()).collect()
                })
                .clone()
        } else {
            self.taken = true;
            None
        };
        heads.push(Recorded { names: self.names.clone(), keys });
    }
}

/// The names the recorder reads the value of: those that say what follows
/// a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Other,
    Upgrade,
    TransferEncoding,
    ContentLength,
}

impl Kind {
    fn of(name: &str) -> Kind {
        if name.eq_ignore_ascii_case("content-length") {
            Kind::ContentLength
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            Kind::TransferEncoding
        } else if name.eq_ignore_ascii_case("upgrade") {
            Kind::Upgrade
        } else {
            Kind::Other
        }
    }
}

/// What a head's framing headers say, gathered one header at a time.
#[derive(Debug, Default)]
struct Framing {
    upgrade: bool,
    chunked: bool,
    /// The first `Content-Length`, and whether it was a number.
    content_length: Option<Option<u64>>,
}

impl Framing {
    fn add(&mut self, kind: Kind, value: &[u8]) {
        match kind {
            Kind::Other => {}
            Kind::Upgrade => self.upgrade = true,
            // Any `chunked`, case aside (the bytes around it do not matter).
            Kind::TransferEncoding => {
                self.chunked |= value.windows(7).any(|word| word.eq_ignore_ascii_case(b"chunked"));
            }
            Kind::ContentLength if self.content_length.is_none() => {
                self.content_length = Some(std::str::from_utf8(value).ok().and_then(|s| s.trim().parse().ok()));
            }
            Kind::ContentLength => {}
        }
    }

    /// What follows the head: an upgrade or CONNECT is not followed, then
    /// chunked wins over a length, and a length that is not a number stops
    /// the recorder.
    fn next(&self, connect: bool) -> State {
        if self.upgrade || connect {
            return State::Off;
        }
        if self.chunked {
            return State::ChunkSize;
        }
        match self.content_length {
            Some(Some(length)) => State::Body(length),
            Some(None) => State::Off,
            None => State::Head,
        }
    }
}

/// A head whole in `head`, with exactly the names of `last`, each line as
/// plain as `Name:value\r\n`: its length and what follows it, without
/// httparse (about a third of its instructions for a browser's head).
/// `None` sends the head to httparse: anything else (other names, another
/// case, a bare LF, a head not all there, `CONNECT`).
///
/// The names it accepts are the ones httparse finds in such a head, which
/// the tests hold it to. It does not check what httparse would refuse in
/// the request line or the values; hyper parses every head with httparse
/// too, and answers such a head 400 and closes the connection, so a name
/// list recorded for it is never taken.
fn quick_head(last: &LastHead, head: &[u8]) -> Option<(usize, State)> {
    let line_end = memchr::memchr(b'\n', head)?;
    // A request line of at least one byte (httparse would skip an empty one).
    if line_end < 2 || head[line_end - 1] != b'\r' || head.starts_with(b"CONNECT ") {
        return None;
    }
    let mut at = line_end + 1;
    let mut framing = Framing::default();
    for (name, kind) in last.names.iter().zip(&last.kinds[..]) {
        let name = name.as_bytes();
        let line = head.get(at..)?;
        if line.get(name.len()) != Some(&b':') || !line.starts_with(name) {
            return None;
        }
        let value_start = at + name.len() + 1;
        let end = value_start + memchr::memchr(b'\n', &head[value_start..])?;
        // `end - 1` is at least the colon.
        if head[end - 1] != b'\r' {
            return None;
        }
        if *kind != Kind::Other {
            framing.add(*kind, &head[value_start..end - 1]);
        }
        at = end + 1;
    }
    if head.get(at..at + 2)? != b"\r\n" {
        return None;
    }
    Some((at + 2, framing.next(false)))
}

/// Record `headers`' names: the last head's when they are the same bytes
/// (one shared allocation), new ones otherwise.
fn remember(last: &mut Option<LastHead>, heads: &WireHeads, headers: &[httparse::Header<'_>]) {
    let same = last.as_ref().is_some_and(|last| {
        last.names.len() == headers.len()
            && last.names.iter().zip(headers).all(|(name, header)| name.as_bytes() == header.name.as_bytes())
    });
    if !same {
        *last = Some(LastHead::new(headers));
    }
    if let Some(last) = last {
        last.record(heads);
    }
}

impl HeadRecorder {
    pub fn new(heads: WireHeads, max_head_bytes: usize, max_headers: usize) -> Self {
        HeadRecorder {
            state: State::Head,
            buffer: Vec::new(),
            slots: Vec::new(),
            max_head_bytes,
            max_headers,
            heads,
            last: None,
        }
    }

    pub fn is_off(&self) -> bool {
        self.state == State::Off
    }

    /// Feed bytes just read from the client.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            data = match self.state {
                State::Off => return,
                State::Head => self.feed_head(data),
                State::Body(remaining) => {
                    let taken = remaining.min(data.len() as u64);
                    self.state = if taken == remaining { State::Head } else { State::Body(remaining - taken) };
                    &data[taken as usize..]
                }
                State::ChunkSize | State::ChunkDataEnd | State::Trailers => self.feed_line(data),
                State::ChunkData(remaining) => {
                    let taken = remaining.min(data.len() as u64);
                    self.state =
                        if taken == remaining { State::ChunkDataEnd } else { State::ChunkData(remaining - taken) };
                    &data[taken as usize..]
                }
            };
        }
    }

    fn feed_head<'d>(&mut self, data: &'d [u8]) -> &'d [u8] {
        let data = if self.buffer.is_empty() {
            // Empty lines before a request line are allowed (RFC 9112 §2.2).
            let start = data.iter().position(|b| *b != b'\r' && *b != b'\n').unwrap_or(data.len());
            &data[start..]
        } else {
            data
        };
        if data.is_empty() {
            return data;
        }
        let already = self.buffer.len();
        // A head nearly always arrives in one read: it is parsed where it
        // lies, and copied only when it is split over reads.
        let in_place = already == 0;
        if !in_place {
            self.buffer.extend_from_slice(data);
        }
        let head: &[u8] = if in_place { data } else { &self.buffer };
        if head.starts_with(b"PRI * HTTP/2") {
            self.state = State::Off;
            return &[];
        }
        if in_place
            && let Some(last) = &mut self.last
            && let Some((head_length, next)) = quick_head(last, head)
        {
            last.record(&self.heads);
            self.state = next;
            return &data[head_length..];
        }
        let mut slots = recycle_slots(std::mem::take(&mut self.slots));
        slots.resize_with(self.max_headers.clamp(1, 512), MaybeUninit::uninit);
        let mut request = httparse::Request::new(&mut []);
        let (parsed, next) = match request.parse_with_uninit_headers(head, &mut slots) {
            Ok(httparse::Status::Complete(head_length)) => {
                remember(&mut self.last, &self.heads, request.headers);
                let mut framing = Framing::default();
                for header in request.headers.iter() {
                    framing.add(Kind::of(header.name), header.value);
                }
                (Some(head_length), framing.next(request.method == Some("CONNECT")))
            }
            Ok(httparse::Status::Partial) if head.len() <= self.max_head_bytes => (None, State::Head),
            // Too large or malformed: hyper answers it; stop following.
            _ => (None, State::Off),
        };
        self.slots = recycle_slots(slots);
        self.state = next;
        match parsed {
            Some(head_length) => {
                self.buffer.clear();
                &data[head_length.saturating_sub(already).min(data.len())..]
            }
            None => {
                if in_place && next == State::Head {
                    self.buffer.extend_from_slice(data);
                }
                &[]
            }
        }
    }

    /// Chunk-size lines, the CRLF after chunk data, and trailer lines.
    fn feed_line<'d>(&mut self, data: &'d [u8]) -> &'d [u8] {
        let Some(end) = data.iter().position(|b| *b == b'\n') else {
            self.buffer.extend_from_slice(data);
            if self.buffer.len() > 4096 {
                self.state = State::Off;
            }
            return &[];
        };
        self.buffer.extend_from_slice(&data[..end]);
        let line = String::from_utf8_lossy(&self.buffer).trim().to_string();
        self.buffer.clear();
        self.state = match self.state {
            State::ChunkSize => {
                let size = line.split(';').next().unwrap_or("").trim();
                match u64::from_str_radix(size, 16) {
                    Ok(0) => State::Trailers,
                    Ok(size) => State::ChunkData(size),
                    Err(_) => State::Off,
                }
            }
            State::ChunkDataEnd => State::ChunkSize,
            State::Trailers if line.is_empty() => State::Head,
            other => other,
        };
        &data[end + 1..]
    }
}

/// The header slots emptied of any borrow of the last head, keeping their
/// allocation (collecting a vector's own items in place reuses its memory).
fn recycle_slots<'a>(mut slots: Vec<MaybeUninit<httparse::Header<'_>>>) -> Vec<MaybeUninit<httparse::Header<'a>>> {
    slots.clear();
    slots.into_iter().map(|_| MaybeUninit::uninit()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(chunks: &[&[u8]]) -> (Vec<Vec<String>>, bool) {
        let heads = WireHeads::default();
        let mut recorder = HeadRecorder::new(heads.clone(), 16 * 1024, 100);
        for chunk in chunks {
            recorder.feed(chunk);
        }
        let names = heads.0.lock().unwrap().iter().map(|n| n.names.iter().map(|s| s.to_string()).collect()).collect();
        (names, recorder.is_off())
    }

    #[test]
    fn keeps_case_order_and_repeats() {
        let (heads, off) =
            record(&[b"GET / HTTP/1.1\r\nHost: a\r\nuser-agent: x\r\nAccept: */*\r\nX-Dup: 1\r\nX-Dup: 2\r\n\r\n"]);
        assert_eq!(heads, [["Host", "user-agent", "Accept", "X-Dup", "X-Dup"]]);
        assert!(!off);
    }

    #[test]
    fn follows_bodies_across_reads_and_requests() {
        let (heads, off) = record(&[
            b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhe",
            b"lloGET /b HTTP/1.1\r\nHOST: b\r\n",
            b"\r\nPOST /c HTTP/1.1\r\nHost: c\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nTrailer: 1\r\n\r\n",
            b"GET /d HTTP/1.1\r\nHost: d\r\nAccept: *\r\n\r\n",
        ]);
        assert_eq!(heads.len(), 4, "{heads:?}");
        assert_eq!(heads[1], ["HOST"]);
        assert_eq!(heads[3], ["Host", "Accept"]);
        assert!(!off);
    }

    #[test]
    fn turns_off_for_http2_and_garbage() {
        assert!(record(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]).1);
        assert!(record(&[b"\x16\x03\x01 garbage\r\n\r\n"]).1);
        assert!(record(&[b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"]).1);
    }

    #[test]
    fn header_slots_keep_their_memory() {
        let mut slots: Vec<MaybeUninit<httparse::Header<'_>>> = Vec::with_capacity(100);
        slots.resize_with(100, MaybeUninit::uninit);
        let before = slots.as_ptr() as usize;
        let recycled = recycle_slots(slots);
        assert!(recycled.is_empty());
        assert_eq!((recycled.as_ptr() as usize, recycled.capacity()), (before, 100));
    }

    #[test]
    fn distinct_names_ignore_case() {
        let names: Vec<Box<str>> = ["Host", "X-Dup", "x-dup", "Accept", "HOST"].into_iter().map(Box::from).collect();
        assert_eq!(distinct_lowercase(&names), 3);
        assert_eq!(distinct_lowercase(&[]), 0);
    }

    #[test]
    fn a_head_split_over_reads_is_recorded_whole() {
        let (heads, off) =
            record(&[b"\r\nGET / HT", b"TP/1.1\r\nHost: a\r", b"\nX-A: 1\r\n\r\nGET /b HTTP/1.1\r\nHost: b\r\n\r\n"]);
        assert_eq!(heads, [vec!["Host", "X-A"], vec!["Host"]]);
        assert!(!off);
    }

    #[test]
    fn names_out_of_key_order_still_match() {
        let mut map = http::HeaderMap::new();
        map.insert("accept", "a".parse().unwrap());
        map.insert("host", "a".parse().unwrap());
        map.append("accept", "b".parse().unwrap());
        let names: Vec<Box<str>> = ["Accept", "Host", "ACCEPT"].into_iter().map(Box::from).collect();
        assert!(in_key_order(&names, &map));
        let reordered: Vec<Box<str>> = ["Host", "Accept", "accept"].into_iter().map(Box::from).collect();
        assert!(!in_key_order(&reordered, &map), "the quick check wants the map's order");
        let heads = WireHeads::default();
        heads.push(Recorded::new(Arc::from(reordered)));
        assert_eq!(heads.take_matching(&map).unwrap().len(), 3, "the full check accepts any order");
        let missing: Vec<Box<str>> = ["Accept"].into_iter().map(Box::from).collect();
        assert!(!in_key_order(&missing, &map));
        heads.push(Recorded::new(Arc::from(missing)));
        assert!(heads.take_matching(&map).is_none());
    }

    #[test]
    fn only_matching_heads_are_used() {
        let heads = WireHeads::default();
        heads.push(Recorded::new(Arc::from(vec![Box::from("Host"), Box::from("User-Agent")])));
        let mut map = http::HeaderMap::new();
        map.insert("host", "a".parse().unwrap());
        assert!(heads.take_matching(&map).is_none(), "a head for another request is dropped");
        heads.push(Recorded::new(Arc::from(vec![Box::from("Host")])));
        assert_eq!(heads.take_matching(&map).unwrap().len(), 1);
    }

    #[test]
    fn names_match_their_keys_case_aside() {
        let key = http::HeaderName::from_static("sec-ch-ua-platform");
        for name in ["sec-ch-ua-platform", "Sec-CH-UA-Platform", "SEC-CH-UA-PLATFORM"] {
            assert!(is_name_of(name, &key), "{name}");
        }
        for name in ["sec-ch-ua-platfor", "sec-ch-ua-platforn", "sec_ch-ua-platform", "sec-ch-ua-platform "] {
            assert!(!is_name_of(name, &key), "{name}");
        }
        assert!(is_name_of("X", &http::HeaderName::from_static("x")));
        assert!(!is_name_of("@", &http::HeaderName::from_static("`")), "only letters change case");
    }

    /// The names and what follows, as httparse and the framing headers
    /// give them: what the recorder did for every head before the quick
    /// path, and still does for a head the quick path does not take.
    fn parsed(head: &[u8]) -> Option<(usize, Vec<String>, State)> {
        let mut slots = [httparse::EMPTY_HEADER; 100];
        let mut request = httparse::Request::new(&mut slots);
        let httparse::Status::Complete(length) = request.parse(head).ok()? else { return None };
        let mut framing = Framing::default();
        for header in request.headers.iter() {
            framing.add(Kind::of(header.name), header.value);
        }
        let names = request.headers.iter().map(|h| h.name.to_string()).collect();
        Some((length, names, framing.next(request.method == Some("CONNECT"))))
    }

    fn last_head(names: &[String]) -> LastHead {
        LastHead {
            names: names.iter().map(|n| Box::from(n.as_str())).collect(),
            kinds: names.iter().map(|n| Kind::of(n)).collect(),
            taken: false,
            keys: None,
        }
    }

    /// A request head from generated parts: names (any case), values, and
    /// the separator after each colon.
    fn head_text(request_line: &str, headers: &[(String, String, &str)]) -> Vec<u8> {
        let mut head = format!("{request_line}\r\n");
        for (name, value, gap) in headers {
            head.push_str(&format!("{name}:{gap}{value}\r\n"));
        }
        head.push_str("\r\n");
        head.into_bytes()
    }

    fn header_strategy() -> impl proptest::strategy::Strategy<Value = (String, String, &'static str)> {
        use proptest::prelude::*;
        let name = prop_oneof![
            Just("Host".to_string()),
            Just("user-agent".to_string()),
            Just("Accept".to_string()),
            Just("Content-Length".to_string()),
            Just("content-length".to_string()),
            Just("Transfer-Encoding".to_string()),
            Just("Upgrade".to_string()),
            "[A-Za-z][A-Za-z0-9-]{0,20}",
        ];
        let value = prop_oneof![
            Just("5".to_string()),
            Just(" 12 ".to_string()),
            Just("gzip, chunked".to_string()),
            "[ -~]{0,40}"
        ];
        (name, value, prop_oneof![Just(""), Just(" "), Just("\t")])
    }

    #[test]
    fn the_quick_path_takes_a_repeated_head_and_shares_its_names() {
        let heads = WireHeads::default();
        let mut recorder = HeadRecorder::new(heads.clone(), 16 * 1024, 100);
        let get = b"GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: x\r\nAccept: */*\r\n\r\n";
        recorder.feed(get);
        recorder.feed(b"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc");
        recorder.feed(b"POST /c HTTP/1.1\r\nHost: b\r\nContent-Length:  10 \r\n\r\n0123456789");
        recorder.feed(b"POST /c HTTP/1.1\r\nHost: b\r\nContent-Length: 2\r\n\r\nxy");
        recorder.feed(get);
        recorder.feed(b"GET / HTTP/1.1\r\nHOST: a\r\nUser-Agent: x\r\nAccept: */*\r\n\r\n");
        assert!(!recorder.is_off());
        assert_eq!(recorder.state, State::Head, "every body was followed to its end");
        let queue = heads.0.lock().unwrap();
        let names: Vec<Vec<&str>> = queue.iter().map(|n| n.names.iter().map(|s| &**s).collect()).collect();
        assert_eq!(
            names,
            [
                vec!["Host", "User-Agent", "Accept"],
                vec!["Host", "Content-Length"],
                vec!["Host", "Content-Length"],
                vec!["Host", "Content-Length"],
                vec!["Host", "User-Agent", "Accept"],
                vec!["HOST", "User-Agent", "Accept"],
            ]
        );
        assert!(
            Arc::ptr_eq(&queue[1].names, &queue[2].names) && Arc::ptr_eq(&queue[2].names, &queue[3].names),
            "the same names are shared"
        );
        assert!(!Arc::ptr_eq(&queue[0].names, &queue[4].names), "only the last head's names are kept");
        let keys: Vec<Option<Vec<&str>>> =
            queue.iter().map(|n| n.keys.as_ref().map(|k| k.iter().map(http::HeaderName::as_str).collect())).collect();
        assert_eq!(
            keys,
            [None, None, Some(vec!["host", "content-length"]), Some(vec!["host", "content-length"]), None, None],
            "keys from the second request with the same names on"
        );
        assert!(Arc::ptr_eq(queue[2].keys.as_ref().unwrap(), queue[3].keys.as_ref().unwrap()), "built once");
    }

    #[test]
    fn the_quick_path_leaves_anything_unusual_to_httparse() {
        let last = last_head(&["Host".to_string(), "Accept".to_string()]);
        for head in
            [&b"GET / HTTP/1.1\r\nHost: a\r\nAccept: b\r\n\r\n"[..], b"GET / HTTP/1.1\r\nHost:\r\nAccept:\r\n\r\n"]
        {
            assert_eq!(quick_head(&last, head), Some((head.len(), State::Head)), "{}", String::from_utf8_lossy(head));
        }
        for head in [
            &b"GET / HTTP/1.1\r\nhost: a\r\nAccept: b\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost : a\r\nAccept: b\r\n\r\n",
            b"GET / HTTP/1.1\nHost: a\r\nAccept: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\nAccept: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nAccept: b\r\n\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nAccept: b\r\nX: c\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nAccept: b\r\n\r",
            b"GET / HTTP/1.1\r\nHost: a\r\nAccept: b",
            b"GET / HTTP/1.1\r\nHost",
            b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\nAccept: b\r\n\r\n",
            b"\r\nHost: a\r\nAccept: b\r\n\r\n",
        ] {
            assert_eq!(quick_head(&last, head), None, "{}", String::from_utf8_lossy(head));
        }
    }

    proptest::proptest! {
        /// The quick path against httparse, on heads httparse parses: the
        /// same length, names and framing for the head's own names, and no
        /// answer for another head's.
        #[test]
        fn the_quick_path_agrees_with_httparse(
            headers in proptest::collection::vec(header_strategy(), 0..12),
            other in proptest::collection::vec("[A-Za-z-]{1,8}", 0..12),
            method in proptest::prop_oneof![proptest::strategy::Just("GET"), proptest::strategy::Just("POST"), proptest::strategy::Just("CONNECT")],
        ) {
            let head = head_text(&format!("{method} /p?q HTTP/1.1"), &headers);
            let Some((length, names, state)) = parsed(&head) else { return Ok(()) };
            let quick = quick_head(&last_head(&names), &head);
            if method == "CONNECT" {
                proptest::prop_assert_eq!(quick, None);
            } else {
                proptest::prop_assert_eq!(quick, Some((length, state)));
            }
            if other != names {
                proptest::prop_assert_eq!(quick_head(&last_head(&other), &head), None);
            }
        }

        /// Whatever bytes a head is turned into, a head the quick path takes
        /// is one httparse finds the same names, length and framing in, or
        /// one httparse (and so hyper) refuses.
        #[test]
        fn the_quick_path_never_disagrees_with_httparse(
            headers in proptest::collection::vec(header_strategy(), 1..8),
            edits in proptest::collection::vec((proptest::num::usize::ANY, proptest::num::u8::ANY), 1..4),
        ) {
            let head = head_text("POST /p HTTP/1.1", &headers);
            let (_, names, _) = parsed(&head).expect("a generated head parses");
            let mut edited = head.clone();
            for (at, byte) in edits {
                let at = at % edited.len();
                edited[at] = byte;
            }
            if let Some((length, state)) = quick_head(&last_head(&names), &edited) {
                let mut slots = [httparse::EMPTY_HEADER; 100];
                let mut request = httparse::Request::new(&mut slots);
                if let Ok(httparse::Status::Complete(_)) = request.parse(&edited) {
                    proptest::prop_assert_eq!(parsed(&edited), Some((length, names, state)));
                }
            }
        }

        /// Requests with bodies, one after another on one connection, cut
        /// into reads anywhere: every head's names, in order, whichever
        /// path each took.
        #[test]
        fn a_connection_of_repeated_heads_is_recorded_whole(
            requests in proptest::collection::vec((0..3usize, 0..20usize), 1..10),
            cuts in proptest::collection::vec(0..2000usize, 0..6),
        ) {
            let families: [&[&str]; 3] = [&["Host", "User-Agent", "Accept"], &["Host", "content-length", "X-A"], &["host", "Transfer-Encoding"]];
            let mut stream = Vec::new();
            let mut expected = Vec::new();
            for (family, size) in &requests {
                let names = families[*family];
                stream.extend_from_slice(b"POST /x HTTP/1.1\r\n");
                for name in names {
                    let value = match *name {
                        "content-length" => size.to_string(),
                        "Transfer-Encoding" => "chunked".to_string(),
                        _ => "v".to_string(),
                    };
                    stream.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
                }
                stream.extend_from_slice(b"\r\n");
                match *family {
                    1 => stream.extend(std::iter::repeat_n(b'b', *size)),
                    2 if *size > 0 => {
                        stream.extend_from_slice(format!("{size:x}\r\n{}\r\n0\r\n\r\n", "c".repeat(*size)).as_bytes());
                    }
                    2 => stream.extend_from_slice(b"0\r\n\r\n"),
                    _ => {}
                }
                expected.push(names.iter().map(|n| n.to_string()).collect::<Vec<_>>());
            }
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut from = 0;
            for cut in cuts {
                chunks.push(&stream[from..cut]);
                from = cut;
            }
            chunks.push(&stream[from..]);
            let (heads, off) = record(&chunks);
            proptest::prop_assert!(!off);
            proptest::prop_assert_eq!(heads, expected);
        }

        #[test]
        fn words_are_lowered_as_each_byte_is(bytes in proptest::array::uniform8(proptest::num::u8::ANY)) {
            let lowered = lowercase_word(u64::from_le_bytes(bytes)).to_le_bytes();
            proptest::prop_assert_eq!(lowered, bytes.map(|b| b.to_ascii_lowercase()));
        }

        /// A sent name's `HeaderName` is the key it matches, as
        /// [`is_name_of`] says, whenever the name is one.
        #[test]
        fn keys_match_as_names_do(
            name in proptest::prop_oneof![
                "[!#$%&'*+.^_`|~0-9A-Za-z-]{1,24}",
                proptest::strategy::Strategy::prop_map(
                    proptest::sample::select(vec!["Host", "USER-AGENT", "accept", "Content-Length", "Sec-Fetch-Mode", "x-dup"]),
                    String::from,
                ),
            ],
            key in proptest::prop_oneof![
                "[a-z0-9!#$%&'*+.^_`|~-]{1,24}",
                proptest::strategy::Strategy::prop_map(
                    proptest::sample::select(vec!["host", "user-agent", "accept", "content-length", "sec-fetch-mode", "x-dup"]),
                    String::from,
                ),
            ],
        ) {
            let key = http::HeaderName::from_bytes(key.as_bytes()).unwrap();
            if let Ok(sent) = http::HeaderName::from_bytes(name.as_bytes()) {
                proptest::prop_assert_eq!(sent == key, is_name_of(&name, &key));
            }
        }

        #[test]
        fn name_matching_is_eq_ignore_ascii_case(name in "[!-~]{0,24}", key in "[a-z0-9!#$%&'*+.^_`|~-]{1,24}") {
            let key = http::HeaderName::from_bytes(key.as_bytes()).unwrap();
            proptest::prop_assert_eq!(is_name_of(&name, &key), key.as_str().eq_ignore_ascii_case(&name));
            proptest::prop_assert!(is_name_of(&key.as_str().to_ascii_uppercase(), &key));
        }

        #[test]
        fn never_panics_on_any_bytes(chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..64), 0..8)) {
            let heads = WireHeads::default();
            let mut recorder = HeadRecorder::new(heads, 1024, 10);
            for chunk in &chunks {
                recorder.feed(chunk);
            }
        }
    }
}
