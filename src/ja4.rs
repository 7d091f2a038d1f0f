//! JA4, the TLS client fingerprint: what this module owns is turning the
//! first bytes a client sends on a TLS connection (TLS records carrying
//! the handshake ClientHello) into the JA4 string, and nothing else. It is
//! pure: no I/O, no clock, no configuration. The listen stage
//! ([`crate::listen`]) reads those bytes before the TLS library consumes
//! them, asks [`client_hello`] whether they hold a whole ClientHello yet,
//! and puts [`ClientHello::ja4`] on the connection; the request view
//! ([`crate::view::RequestView::ja4`]) and the decision log carry it on.
//!
//! # The definition
//!
//! JA4 is part of FoxIO's JA4+ suite; JA4 itself (TLS client) is licensed
//! BSD 3-Clause. The specification is `technical_details/JA4.md` in the
//! FoxIO-LLC/ja4 repository. A fingerprint looks like
//! `t13d1516h2_8daaf6152771_e5627efa2ab1`:
//!
//! - JA4_a: `t` (TLS over TCP; palisade never sees QUIC or DTLS), the TLS
//!   version (the highest non-GREASE value of the supported_versions
//!   extension, else the ClientHello's legacy version; the record-layer
//!   version is ignored) as `13`, `12`, `11`, `10`, `s3`, `s2`, `d1`, `d2`,
//!   `d3` or `00` when unknown, `d` when the server_name extension is
//!   present else `i`, the number of cipher suites and of extensions as two
//!   digits each (GREASE excluded, capped at 99, SNI and ALPN included),
//!   and the first and last character of the first ALPN protocol (`00`
//!   when there is none or it is empty).
//! - JA4_b: the first 12 hex digits of the SHA-256 of the cipher suites as
//!   4-digit lowercase hex, sorted, comma-separated; `000000000000` when
//!   there are none.
//! - JA4_c: the first 12 hex digits of the SHA-256 of the extensions the
//!   same way but without SNI (`0000`) and ALPN (`0010`), then `_` and the
//!   signature algorithms (extension `000d`) in the order sent; without
//!   signature algorithms the string ends without the `_`;
//!   `000000000000` when the sorted extension list is empty.
//!
//! GREASE values (RFC 8701: `0x?a?a` with both bytes equal) are ignored
//! everywhere. Where FoxIO's reference implementations and the written
//! specification disagree, this module follows the specification:
//!
//! - a one-character first ALPN value is used as both first and last
//!   character (`x` gives `xx`; some reference versions print `x0`);
//! - when the first or last byte of the first ALPN value is not ASCII
//!   alphanumeric, the first and last characters of the hex form of the
//!   whole value are used (`0xba 0xad` gives `bd`; Envoy's test vectors
//!   print `baad`).
//!
//! # What it cannot see
//!
//! JA4 describes the TLS library and its configuration, not the program
//! that drives it: every client built on the same library with the same
//! settings has the same JA4, and a client can imitate another's
//! ClientHello. It changes with resumption (a resumed session adds
//! `pre_shared_key`) and with the offered ALPN. A ClientHello that does not
//! fit in [`MAX_HELLO_BYTES`] is not fingerprinted.

use std::fmt;

use sha2::{Digest, Sha256};

/// The largest ClientHello handshake message fingerprinted (the 4-byte
/// header included). Real ones are well under 4 KiB, post-quantum key
/// shares and ECH included.
pub const MAX_HELLO_BYTES: usize = 32 * 1024;

/// The most raw bytes (record headers included) looked at to reassemble a
/// ClientHello split over several records. Bounds what a client that
/// sends one-byte records can make palisade buffer.
pub const MAX_RECORD_BYTES: usize = 2 * MAX_HELLO_BYTES;

const RECORD_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_CLIENT_HELLO: u8 = 0x01;
/// TLSPlaintext.length must not exceed 2^14 (RFC 8446, section 5.1).
const MAX_RECORD_PAYLOAD: usize = 1 << 14;

const EXT_SERVER_NAME: u16 = 0x0000;
const EXT_SIGNATURE_ALGORITHMS: u16 = 0x000d;
const EXT_ALPN: u16 = 0x0010;
const EXT_SUPPORTED_VERSIONS: u16 = 0x002b;

/// Why bytes did not give a fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ja4Error {
    /// The bytes end before the ClientHello does; more may complete it.
    Incomplete,
    /// The first byte is not a TLS handshake record: not TLS at all (plain
    /// HTTP sent to the TLS port, a scanner) or SSL 2.
    NotTls,
    /// A handshake message other than ClientHello came first.
    NotClientHello,
    /// The ClientHello is larger than [`MAX_HELLO_BYTES`], or split into
    /// more than [`MAX_RECORD_BYTES`] of records.
    TooLarge,
    /// The bytes break the TLS encoding; the text says where.
    Malformed(&'static str),
}

impl fmt::Display for Ja4Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ja4Error::Incomplete => write!(f, "the ClientHello is incomplete"),
            Ja4Error::NotTls => write!(f, "not a TLS handshake record"),
            Ja4Error::NotClientHello => write!(f, "the first handshake message is not a ClientHello"),
            Ja4Error::TooLarge => write!(f, "the ClientHello is larger than {MAX_HELLO_BYTES} bytes"),
            Ja4Error::Malformed(what) => write!(f, "malformed ClientHello: {what}"),
        }
    }
}

impl std::error::Error for Ja4Error {}

/// What JA4 needs from a ClientHello, GREASE already removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// `ClientHello.legacy_version`.
    pub legacy_version: u16,
    /// Cipher suites in the order sent.
    pub cipher_suites: Vec<u16>,
    /// Extension types in the order sent.
    pub extensions: Vec<u16>,
    /// The supported_versions extension's list, in the order sent.
    pub supported_versions: Vec<u16>,
    /// The first ALPN protocol, when the extension has one.
    pub first_alpn: Option<Vec<u8>>,
    /// The signature_algorithms extension's list, in the order sent.
    pub signature_algorithms: Vec<u16>,
}

/// The ClientHello at the start of `bytes` (TLS records as read from the
/// socket), and how many bytes of records it took.
///
/// [`Ja4Error::Incomplete`] means the bytes so far are a valid beginning:
/// read more and ask again.
pub fn client_hello(bytes: &[u8]) -> Result<(ClientHello, usize), Ja4Error> {
    let (message, consumed) = handshake_message(bytes)?;
    Ok((ClientHello::parse(&message)?, consumed))
}

/// The JA4 of the ClientHello at the start of `bytes`.
pub fn fingerprint(bytes: &[u8]) -> Result<String, Ja4Error> {
    client_hello(bytes).map(|(hello, _)| hello.ja4())
}

/// Reassemble the first handshake message from consecutive handshake
/// records; returns it with its 4-byte header, and the bytes consumed.
fn handshake_message(bytes: &[u8]) -> Result<(Vec<u8>, usize), Ja4Error> {
    let mut message = Vec::new();
    let mut offset = 0;
    loop {
        if let Some(total) = message_len(&message)?
            && message.len() >= total
        {
            // A record may carry more than the ClientHello (it must not,
            // but that is for the TLS library to refuse).
            message.truncate(total);
            return Ok((message, offset));
        }
        if offset >= MAX_RECORD_BYTES {
            return Err(Ja4Error::TooLarge);
        }
        let header = match bytes.get(offset..offset + 5) {
            Some(header) => header,
            None => {
                // Even a partial header tells a non-TLS stream apart.
                return match bytes.get(offset) {
                    Some(&kind) if kind != RECORD_HANDSHAKE => Err(not_handshake(offset)),
                    _ => Err(Ja4Error::Incomplete),
                };
            }
        };
        if header[0] != RECORD_HANDSHAKE {
            return Err(not_handshake(offset));
        }
        if header[1] != 0x03 {
            return Err(Ja4Error::Malformed("record version is not 3.x"));
        }
        let length = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if length > MAX_RECORD_PAYLOAD {
            return Err(Ja4Error::Malformed("record longer than 2^14 bytes"));
        }
        let Some(payload) = bytes.get(offset + 5..offset + 5 + length) else {
            return Err(Ja4Error::Incomplete);
        };
        message.extend_from_slice(payload);
        offset += 5 + length;
    }
}

fn not_handshake(offset: usize) -> Ja4Error {
    if offset == 0 {
        Ja4Error::NotTls
    } else {
        // An alert or data between the fragments of a ClientHello.
        Ja4Error::Malformed("ClientHello fragments interleaved with another record type")
    }
}

/// The full length of the handshake message once its header is there.
fn message_len(message: &[u8]) -> Result<Option<usize>, Ja4Error> {
    let Some(header) = message.get(..4) else { return Ok(None) };
    if header[0] != HANDSHAKE_CLIENT_HELLO {
        return Err(Ja4Error::NotClientHello);
    }
    let length = usize::from(header[1]) << 16 | usize::from(header[2]) << 8 | usize::from(header[3]);
    if length + 4 > MAX_HELLO_BYTES {
        return Err(Ja4Error::TooLarge);
    }
    Ok(Some(length + 4))
}

/// RFC 8701 GREASE values: `0x0a0a`, `0x1a1a`, … `0xfafa`.
pub fn is_grease(value: u16) -> bool {
    value & 0x0f0f == 0x0a0a && value >> 8 == value & 0xff
}

/// A bounds-checked reader over TLS's big-endian vectors.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Ja4Error> {
        if n > self.bytes.len() {
            return Err(Ja4Error::Malformed(what));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, Ja4Error> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, Ja4Error> {
        let bytes = self.take(2, what)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    /// A vector with a one-byte length prefix.
    fn vec8(&mut self, what: &'static str) -> Result<Reader<'a>, Ja4Error> {
        let length = usize::from(self.u8(what)?);
        Ok(Reader { bytes: self.take(length, what)? })
    }

    /// A vector with a two-byte length prefix.
    fn vec16(&mut self, what: &'static str) -> Result<Reader<'a>, Ja4Error> {
        let length = usize::from(self.u16(what)?);
        Ok(Reader { bytes: self.take(length, what)? })
    }

    /// A list of u16 values (cipher suites, versions, schemes).
    fn u16_list(mut self, what: &'static str) -> Result<Vec<u16>, Ja4Error> {
        if !self.bytes.len().is_multiple_of(2) {
            return Err(Ja4Error::Malformed(what));
        }
        let mut values = Vec::with_capacity(self.bytes.len() / 2);
        while !self.bytes.is_empty() {
            values.push(self.u16(what)?);
        }
        Ok(values)
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl ClientHello {
    /// Parse a ClientHello handshake message (its 4-byte header included).
    pub fn parse(message: &[u8]) -> Result<ClientHello, Ja4Error> {
        let mut reader = Reader { bytes: message };
        if reader.u8("handshake type")? != HANDSHAKE_CLIENT_HELLO {
            return Err(Ja4Error::NotClientHello);
        }
        let length = reader.take(3, "handshake length")?;
        let length = usize::from(length[0]) << 16 | usize::from(length[1]) << 8 | usize::from(length[2]);
        let mut body = Reader { bytes: reader.take(length, "handshake body")? };

        let legacy_version = body.u16("legacy_version")?;
        body.take(32, "random")?;
        let session_id = body.vec8("legacy_session_id")?;
        if session_id.bytes.len() > 32 {
            return Err(Ja4Error::Malformed("legacy_session_id longer than 32 bytes"));
        }
        let cipher_suites = body.vec16("cipher_suites")?.u16_list("cipher_suites")?;
        let compression = body.vec8("legacy_compression_methods")?;
        if compression.is_empty() {
            return Err(Ja4Error::Malformed("no compression methods"));
        }

        let mut hello = ClientHello {
            legacy_version,
            cipher_suites: cipher_suites.into_iter().filter(|&v| !is_grease(v)).collect(),
            extensions: Vec::new(),
            supported_versions: Vec::new(),
            first_alpn: None,
            signature_algorithms: Vec::new(),
        };
        // Extensions are optional (a bare TLS 1.0-style hello ends here).
        if body.is_empty() {
            return Ok(hello);
        }
        let mut extensions = body.vec16("extensions")?;
        if !body.is_empty() {
            return Err(Ja4Error::Malformed("bytes after the extensions"));
        }
        let (mut seen_alpn, mut seen_sigalgs, mut seen_versions) = (false, false, false);
        while !extensions.is_empty() {
            let kind = extensions.u16("extension type")?;
            let data = extensions.vec16("extension data")?;
            if is_grease(kind) {
                continue;
            }
            hello.extensions.push(kind);
            // A repeated extension is counted as often as it appears; its
            // contents are taken from the first one.
            match kind {
                EXT_ALPN if !seen_alpn => {
                    seen_alpn = true;
                    hello.first_alpn = first_alpn(data)?;
                }
                EXT_SIGNATURE_ALGORITHMS if !seen_sigalgs => {
                    seen_sigalgs = true;
                    let mut data = data;
                    let list = data.vec16("signature_algorithms")?.u16_list("signature_algorithms")?;
                    hello.signature_algorithms = list.into_iter().filter(|&v| !is_grease(v)).collect();
                }
                EXT_SUPPORTED_VERSIONS if !seen_versions => {
                    seen_versions = true;
                    let mut data = data;
                    let list = data.vec8("supported_versions")?.u16_list("supported_versions")?;
                    hello.supported_versions = list.into_iter().filter(|&v| !is_grease(v)).collect();
                }
                _ => {}
            }
        }
        Ok(hello)
    }

    /// Whether the client sent the server_name extension.
    pub fn has_sni(&self) -> bool {
        self.extensions.contains(&EXT_SERVER_NAME)
    }

    /// The version JA4 reports: the highest offered in supported_versions,
    /// else the legacy version.
    pub fn version(&self) -> u16 {
        self.supported_versions.iter().copied().max().unwrap_or(self.legacy_version)
    }

    /// The JA4 fingerprint, e.g. `t13d1516h2_8daaf6152771_e5627efa2ab1`.
    pub fn ja4(&self) -> String {
        let (ciphers, extensions) = self.sorted_lists();
        let b = if self.cipher_suites.is_empty() { EMPTY_HASH.to_string() } else { hash12(&ciphers) };
        let c = if extensions.is_empty() { EMPTY_HASH.to_string() } else { hash12(&self.extensions_and_sigalgs()) };
        format!("{}_{b}_{c}", self.ja4_a())
    }

    /// JA4_r: the same with the lists in clear instead of hashed.
    pub fn ja4_r(&self) -> String {
        let (ciphers, _) = self.sorted_lists();
        format!("{}_{ciphers}_{}", self.ja4_a(), self.extensions_and_sigalgs())
    }

    fn ja4_a(&self) -> String {
        let version = match self.version() {
            0x0304 => "13",
            0x0303 => "12",
            0x0302 => "11",
            0x0301 => "10",
            0x0300 => "s3",
            0x0002 => "s2",
            0xfeff => "d1",
            0xfefd => "d2",
            0xfefc => "d3",
            _ => "00",
        };
        let sni = if self.has_sni() { 'd' } else { 'i' };
        let ciphers = self.cipher_suites.len().min(99);
        let extensions = self.extensions.len().min(99);
        format!("t{version}{sni}{ciphers:02}{extensions:02}{}", alpn_chars(self.first_alpn.as_deref()))
    }

    /// The sorted cipher list and the sorted extension list without SNI
    /// and ALPN, both as comma-separated 4-digit hex.
    fn sorted_lists(&self) -> (String, String) {
        let mut ciphers = self.cipher_suites.clone();
        ciphers.sort_unstable();
        let mut extensions: Vec<u16> =
            self.extensions.iter().copied().filter(|&e| e != EXT_SERVER_NAME && e != EXT_ALPN).collect();
        extensions.sort_unstable();
        (hex_list(&ciphers), hex_list(&extensions))
    }

    fn extensions_and_sigalgs(&self) -> String {
        let (_, extensions) = self.sorted_lists();
        if self.signature_algorithms.is_empty() {
            extensions
        } else {
            format!("{extensions}_{}", hex_list(&self.signature_algorithms))
        }
    }
}

const EMPTY_HASH: &str = "000000000000";

/// The first protocol of an ALPN extension's data.
fn first_alpn(mut data: Reader<'_>) -> Result<Option<Vec<u8>>, Ja4Error> {
    let mut list = data.vec16("application_layer_protocol_negotiation")?;
    if list.is_empty() {
        return Ok(None);
    }
    let first = list.vec8("application_layer_protocol_negotiation")?;
    Ok((!first.is_empty()).then(|| first.bytes.to_vec()))
}

/// The two JA4_a characters for the first ALPN value.
fn alpn_chars(alpn: Option<&[u8]>) -> String {
    let Some(value) = alpn.filter(|value| !value.is_empty()) else { return "00".into() };
    let (first, last) = (value[0], value[value.len() - 1]);
    if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric() {
        return format!("{}{}", char::from(first), char::from(last));
    }
    let hex = hex::encode(value);
    let hex = hex.as_bytes();
    format!("{}{}", char::from(hex[0]), char::from(hex[hex.len() - 1]))
}

fn hex_list(values: &[u16]) -> String {
    let mut out = String::with_capacity(values.len() * 5);
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!("{value:04x}"));
    }
    out
}

/// The first 12 lowercase hex digits of the SHA-256 of `text`.
fn hash12(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    hex::encode(&digest[..6])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(parts: &[&str]) -> Vec<u8> {
        hex::decode(parts.concat()).expect("test vector is hex")
    }

    // Published vectors. The ClientHello bytes were captured in the pcaps of
    // the FoxIO-LLC/ja4 repository (pcap/) and published as hex, with the
    // JA4 FoxIO's tools give for them, in Envoy's
    // test/extensions/filters/listener/tls_inspector/tls_inspector_ja4_test.cc.
    // Each JA4 below was also recomputed by hand from the bytes.

    /// Envoy's "Browser-1" (a Chromium browser to edge.microsoft.com):
    /// GREASE in the ciphers, extensions, supported_versions and groups.
    /// Its JA4 is the one the JA4 specification uses as its example.
    const BROWSER_1: &[&str] = &[
        "1603010200010001fc0303528b4e00213672e534980dfed836dd5b375ab164dcc65ba6a3c87e7e2a1f9d61201bf29",
        "c9dffaa31ed2df524d3a113edb4e6fd3b7fb3d6d57d5d9aafb213e83c420020aaaa130113021303c02bc02fc02cc0",
        "30cca9cca8c013c014009c009d002f0035010001936a6a0000000d001200100403080404010503080505010806060",
        "1000000170015000012656467652e6d6963726f736f66742e636f6d000a000a00084a4a001d001700180005000501",
        "00000000000b00020100002b0007069a9a03040303001b0003020002ff010001000033002b00294a4a000100001d0",
        "020c4ce4268d58f0c703855163f4754b883742487a5ce87a6016a30208c18e07f69446900050003026832002d0002",
        "01010023000000170000001200000010000e000c02683208687474702f312e310a0a000100001500c500000000000",
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "00000000000",
    ];

    /// Envoy's "IPv6": the ClientHello of the ja4 repository's
    /// tls-alpn-h2.pcap, whose JA4 FoxIO's own Rust tool records in its
    /// snapshot (rust/ja4/src/snapshots/ja4__insta@tls-alpn-h2.pcap.snap).
    /// TLS 1.2 only (no supported_versions), 46 ciphers.
    const TLS_ALPN_H2: &[&str] = &[
        "16030100e8010000e40303858226c04fbaeddef4246093b4cfdab38f9dcfef145360e417686575cac49c7000005cc",
        "030c02cc028c024c014c00a009f006b0039cca9cca8ccaaff8500c400880081009d003d003500c00084c02fc02bc0",
        "27c023c013c009009e0067003300be0045009c003c002f00ba0041c011c00700050004c012c0080016000a00ff010",
        "0005f0000001700150000127777772e636c6f7564666c6172652e636f6d000b00020100000a00080006001d001700",
        "18000d001c001a06010603efef0501050304010403eeeeeded03010303020102030010000e000c026832086874747",
        "02f312e31",
    ];

    /// Envoy's "SSH2-Example-3" (from the ja4 repository's ssh2 pcaps): a
    /// TLS 1.2 ClientHello without ALPN.
    const NO_ALPN: &[&str] = &[
        "16030300e0010000dc030364a71a6456b6985c700f3ec255853855cbe3cb56b866a7dc1a90098ae693599220db3b0",
        "000320a99ad9cc36f1fbf707f67fb588945c078880cb2f67a37dd5749670026c02cc02bc030c02fc024c023c028c0",
        "27c00ac009c014c013009d009c003d003c0035002f000a0100006d00000023002100001e73656c662e6576656e747",
        "32e646174612e6d6963726f736f66742e636f6d000500050100000000000a00080006001d00170018000b00020100",
        "000d001a00180804080508060401050102010403050302030202060106030023000000170000ff01000100",
    ];

    /// Envoy's "Edge-Slack-Connection": a resumption, so pre_shared_key
    /// (0029) joins the extensions and changes JA4_c.
    const RESUMPTION: &[&str] = &[
        "16030102210100021d0303e324ad3940b1fc2faac32dfb616b20ade4da5e229307ccf91cedfd6e17a5617b2094062",
        "214534b45539c73dc7e9534660571aa298b29d37c8653f81c9bf813876e00200a0a130113021303c02bc02fc02cc0",
        "30cca9cca8c013c014009c009d002f0035010001b45a5a0000000d001200100403080404010503080505010806060",
        "10010000e000c02683208687474702f312e3100000012001000000d6170702e736c61636b2e636f6d000b00020100",
        "00230000446900050003026832ff010001000033002b0029baba000100001d00208fdbbcb9960aadf4c716c17de6b",
        "eefe959125b2c0f9ffb95f620cfee1a8e0b78000a000a0008baba001d00170018002d00020101002b0007066a6a03",
        "0403030005000501000000000017000000120000001b00030200026a6a000100002900eb00c600c00534e03d93445",
        "e10b01a3a73b2186cf74d47163aee499d3704619ee0b74ffc1caa7f088708f4dff06ac42f9df8aaa16e8551d8e206",
        "da1d77b19f9f7e5400b142420b7c8ed0ae8841d58a3cf73da84b7f49b11f93d4a1630276dbec257e6883abd0aa876",
        "eea50f122ddfd506694bb949d38dca486e39a0ef9331a6782bb8392a5bc7395189340732a15909e9c309fc4c7c0bd",
        "4102a78c99979e1eb8dcde030c469c38c3f79cee81c9da56db0ab4a3fe19d54da17bf67fc7efce7bb939a292e7c10",
        "82ac2880021201e639a41e760bacf644eeb7b751c0109159373ffdc666c640b661e2be906aa6c",
    ];

    /// Envoy's "TLS-Non-ASCII-ALPN" (the ja4 repository's
    /// tls-non-ascii-alpn.pcapng): the first ALPN value is `0xba 0xad`.
    const NON_ASCII_ALPN: &[&str] = &[
        "1603010200010001fc03030f9e38acb9a54a7c6e00e29a70ac2feee180ff76d7f25dca84932a66a42d1e5a20bc58b",
        "92f865e6b9aa4a6371cadcb0afe1da1c0f705209a11d52357f56d5dd9620020aaaa130113021303c02bc02fc02cc0",
        "30cca9cca8c013c014009c009d002f0035010001939a9a0000ff010001000033002b00290a0a000100001d0020cf5",
        "5af2603e92f59eb321779706a18fa6b96b16c16404c2264ed687a59401878002d0002010100050005010000000044",
        "6900050003026832000d00120010040308040401050308050501080606010010000e000c02baad08687474702f312",
        "e3100230000001b0003020002002b0007060a0a0304030300000022002000001d636c69656e747365727669636573",
        "2e676f6f676c65617069732e636f6d00120000000a000a00080a0a001d0017001800170000000b000201006a6a000",
        "100001500ba0000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "00000000000",
    ];

    /// The ClientHello record of RFC 8448, section 3 (simple 1-RTT
    /// handshake). No JA4 is published for it; derived by hand:
    /// TLS 1.3 (supported_versions 0304), SNI "server", 3 ciphers, 9
    /// extensions (0000 ff01 000a 0023 0033 002b 000d 002d 001c), no ALPN
    /// → `t13d030900`; ciphers 1301,1302,1303 → 55b375c5d22e; extensions
    /// 000a,000d,001c,0023,002b,002d,0033,ff01 then the 15 signature
    /// schemes in order → 59cd3dafc54d.
    const RFC8448: &[&str] = &[
        "16030100c4010000c00303cb34ecb1e78163ba1c38c6dacb196a6dffa21a8d9912ec18a2ef6283024dece7000006",
        "130113031302010000910000000b0009000006736572766572ff01000100000a00140012001d001700180019010001",
        "0101020103010400230000003300260024001d002099381de560e4bd43d23d8e435a7dbafeb3c06e51c13cae4d5413",
        "691e529aaf2c002b0003020304000d0020001e040305030603020308040805080604010501060102010402050206",
        "020202002d00020101001c00024001",
    ];

    #[test]
    fn published_client_hellos_give_their_published_ja4() {
        for (name, hello, expected) in [
            ("Browser-1", BROWSER_1, "t13d1516h2_8daaf6152771_e5627efa2ab1"),
            ("tls-alpn-h2", TLS_ALPN_H2, "t12d4605h2_85626a9a5f7f_aaf95bb78ec9"),
            ("no ALPN", NO_ALPN, "t12d190800_d83cc789557e_7af1ed941c26"),
            ("resumption", RESUMPTION, "t13d1516h2_8daaf6152771_9b887d9acb53"),
            ("RFC 8448", RFC8448, "t13d030900_55b375c5d22e_59cd3dafc54d"),
        ] {
            let bytes = unhex(hello);
            assert_eq!(fingerprint(&bytes).as_deref(), Ok(expected), "{name}");
            let (_, consumed) = client_hello(&bytes).unwrap();
            assert_eq!(consumed, bytes.len(), "{name}: one record, all of it");
        }
    }

    #[test]
    fn raw_form_matches_the_specification_example() {
        // JA4.md, "Raw Output": JA4_r of the example fingerprint.
        let (hello, _) = client_hello(&unhex(BROWSER_1)).unwrap();
        assert_eq!(
            hello.ja4_r(),
            "t13d1516h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_\
             0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01_\
             0403,0804,0401,0503,0805,0501,0806,0601"
        );
    }

    #[test]
    fn non_alphanumeric_alpn_uses_the_hex_form() {
        // The spec's rule gives "bd" for 0xba 0xad (Envoy prints "baad").
        let bytes = unhex(NON_ASCII_ALPN);
        assert_eq!(fingerprint(&bytes).as_deref(), Ok("t13d1516bd_8daaf6152771_e5627efa2ab1"));
        // The specification's own examples.
        for (value, expected) in [
            (&[0xab][..], "ab"),
            (&[0xab, 0xcd], "ad"),
            (&[0x30, 0xab], "3b"),
            (&[0x30, 0x31, 0xab, 0xcd], "3d"),
            (&[0x30, 0xab, 0xcd, 0x31], "01"),
            (b"h2", "h2"),
            (b"http/1.1", "h1"),
            (b"x", "xx"),
        ] {
            assert_eq!(alpn_chars(Some(value)), expected, "{value:02x?}");
        }
        assert_eq!(alpn_chars(None), "00");
    }

    /// A ClientHello built field by field, for the cases no capture covers.
    struct Builder {
        legacy_version: u16,
        ciphers: Vec<u16>,
        extensions: Vec<(u16, Vec<u8>)>,
    }

    impl Builder {
        fn new() -> Self {
            Builder { legacy_version: 0x0303, ciphers: vec![0x1301], extensions: Vec::new() }
        }

        fn extension(mut self, kind: u16, data: Vec<u8>) -> Self {
            self.extensions.push((kind, data));
            self
        }

        fn u16_vec(values: &[u16], prefix: usize) -> Vec<u8> {
            let body: Vec<u8> = values.iter().flat_map(|v| v.to_be_bytes()).collect();
            let mut out = if prefix == 1 { vec![body.len() as u8] } else { (body.len() as u16).to_be_bytes().to_vec() };
            out.extend(body);
            out
        }

        fn message(&self) -> Vec<u8> {
            let mut body = self.legacy_version.to_be_bytes().to_vec();
            body.extend([7; 32]);
            body.push(0);
            body.extend(Self::u16_vec(&self.ciphers, 2));
            body.extend([1, 0]);
            if !self.extensions.is_empty() {
                let mut exts = Vec::new();
                for (kind, data) in &self.extensions {
                    exts.extend(kind.to_be_bytes());
                    exts.extend((data.len() as u16).to_be_bytes());
                    exts.extend(data);
                }
                body.extend((exts.len() as u16).to_be_bytes());
                body.extend(exts);
            }
            let mut message = vec![1, 0, (body.len() >> 8) as u8, body.len() as u8];
            message.extend(body);
            message
        }

        fn records(&self, split: usize) -> Vec<u8> {
            let message = self.message();
            let mut out = Vec::new();
            for chunk in message.chunks(split) {
                out.extend([0x16, 0x03, 0x01]);
                out.extend((chunk.len() as u16).to_be_bytes());
                out.extend(chunk);
            }
            out
        }
    }

    #[test]
    fn grease_is_ignored_everywhere() {
        let grease = [0x0a0a, 0x1a1a, 0x2a2a, 0x3a3a, 0x4a4a, 0x5a5a, 0x6a6a, 0x7a7a];
        assert!(
            grease
                .iter()
                .chain(&[0x8a8a, 0x9a9a, 0xaaaa, 0xbaba, 0xcaca, 0xdada, 0xeaea, 0xfafa])
                .all(|&g| is_grease(g))
        );
        assert!(![0x0a0b, 0x1a2a, 0x0000, 0x1301, 0xeeee, 0xff01].iter().any(|&v| is_grease(v)));

        let plain = Builder {
            legacy_version: 0x0303,
            ciphers: vec![0x1301, 0x1302],
            extensions: vec![
                (0x002b, Builder::u16_vec(&[0x0304, 0x0303], 1)),
                (0x000d, Builder::u16_vec(&[0x0403, 0x0804], 2)),
                (0x0017, vec![]),
            ],
        };
        let greased = Builder {
            legacy_version: 0x0303,
            ciphers: vec![0x3a3a, 0x1301, 0x1302, 0xfafa],
            extensions: vec![
                (0x0a0a, vec![]),
                (0x002b, Builder::u16_vec(&[0x7a7a, 0x0304, 0x0303], 1)),
                (0x000d, Builder::u16_vec(&[0x0403, 0x6a6a, 0x0804], 2)),
                (0x0017, vec![]),
                (0xdada, vec![0]),
            ],
        };
        let expected = fingerprint(&plain.records(1 << 14)).unwrap();
        assert!(expected.starts_with("t13i0203"), "{expected}");
        assert_eq!(fingerprint(&greased.records(1 << 14)).unwrap(), expected);

        // supported_versions holding only GREASE: the legacy version counts.
        let only_grease = Builder::new().extension(0x002b, Builder::u16_vec(&[0x2a2a], 1));
        assert!(fingerprint(&only_grease.records(1 << 14)).unwrap().starts_with("t12i0101"));
    }

    #[test]
    fn empty_lists_give_zero_hashes() {
        let bare = Builder { legacy_version: 0x0301, ciphers: vec![], extensions: vec![] };
        assert_eq!(fingerprint(&bare.records(100)).unwrap(), "t10i000000_000000000000_000000000000");
        // Only SNI and ALPN: counted in JA4_a, nothing left for JA4_c.
        let sni_alpn = Builder::new().extension(0x0000, vec![]).extension(0x0010, vec![0, 3, 2, b'h', b'2']);
        assert_eq!(fingerprint(&sni_alpn.records(100)).unwrap(), format!("t12d0102h2_{}_000000000000", hash12("1301")));
        // Extensions but no signature algorithms: no trailing underscore.
        let no_sigalgs = Builder::new().extension(0x0017, vec![]);
        assert_eq!(
            fingerprint(&no_sigalgs.records(100)).unwrap(),
            format!("t12i010100_{}_{}", hash12("1301"), hash12("0017"))
        );
        // An empty first ALPN value is "00".
        let empty_alpn = Builder::new().extension(0x0010, vec![0, 1, 0]);
        assert!(fingerprint(&empty_alpn.records(100)).unwrap().starts_with("t12i010100_"));
    }

    #[test]
    fn counts_are_capped_at_99() {
        let mut many = Builder::new();
        many.ciphers = (0x0100..0x0100 + 120).collect();
        for kind in 0x1000..0x1000 + 120 {
            many = many.extension(kind, vec![]);
        }
        assert!(fingerprint(&many.records(1 << 14)).unwrap().starts_with("t12i999900_"));
    }

    #[test]
    fn a_hello_split_over_records_is_reassembled() {
        let whole = unhex(BROWSER_1);
        let expected = fingerprint(&whole).unwrap();
        let message = &whole[5..];
        for split in [1, 7, 100, 300] {
            let mut records = Vec::new();
            for chunk in message.chunks(split) {
                records.extend([0x16, 0x03, 0x01]);
                records.extend((chunk.len() as u16).to_be_bytes());
                records.extend(chunk);
            }
            let (hello, consumed) = client_hello(&records).unwrap();
            assert_eq!((hello.ja4(), consumed), (expected.clone(), records.len()), "split {split}");
            // Every proper prefix is incomplete, never an error or a panic.
            for end in (0..records.len()).step_by(split.max(13)) {
                assert_eq!(client_hello(&records[..end]).map(|_| ()), Err(Ja4Error::Incomplete), "{split}/{end}");
            }
        }
        // What follows the ClientHello (early data, a second record) is left alone.
        let mut followed = whole.clone();
        followed.extend([0x14, 0x03, 0x03, 0x00, 0x01, 0x01]);
        assert_eq!(client_hello(&followed).map(|(h, n)| (h.ja4(), n)), Ok((expected, whole.len())));
    }

    #[test]
    fn truncated_input_is_incomplete() {
        let bytes = unhex(BROWSER_1);
        for end in 0..bytes.len() {
            assert_eq!(fingerprint(&bytes[..end]), Err(Ja4Error::Incomplete), "prefix of {end} bytes");
        }
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(fingerprint(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), Err(Ja4Error::NotTls));
        assert_eq!(fingerprint(b"G"), Err(Ja4Error::NotTls));
        assert_eq!(fingerprint(b"\x80\x2e\x01\x03\x01"), Err(Ja4Error::NotTls), "SSL 2 hello");
        assert_eq!(fingerprint(b"\x16\x03\x01\x00\x04\x02\x00\x00\x00"), Err(Ja4Error::NotClientHello));
        assert_eq!(fingerprint(b"\x16\x03\x01\x40\x01"), Err(Ja4Error::Malformed("record longer than 2^14 bytes")));
        assert_eq!(fingerprint(b"\x16\x03\x01\x00\x04\x01\xff\xff\xff"), Err(Ja4Error::TooLarge));
        assert_eq!(fingerprint(b"\x16\x03\x01\x00\x04\x01\x00\x00\x00"), Err(Ja4Error::Malformed("legacy_version")));
        // A record of the right kind but a body that lies about its lengths.
        let mut lying = unhex(BROWSER_1);
        lying[5 + 4 + 2 + 32] = 200; // session id length
        assert!(matches!(fingerprint(&lying), Err(Ja4Error::Malformed(_))));
        // Alert between fragments.
        let mut interleaved = b"\x16\x03\x01\x00\x02\x01\x00".to_vec();
        interleaved.extend(b"\x15\x03\x01\x00\x02\x02\x28");
        assert!(matches!(fingerprint(&interleaved), Err(Ja4Error::Malformed(_))));
    }

    #[test]
    fn every_single_byte_corruption_is_handled() {
        let bytes = unhex(RFC8448);
        for index in 0..bytes.len() {
            for value in [0x00, 0x01, 0x7f, 0xff] {
                let mut corrupt = bytes.clone();
                corrupt[index] = value;
                let _ = fingerprint(&corrupt);
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = fingerprint(&bytes);
            let mut framed = vec![0x16, 0x03, 0x01, (bytes.len() >> 8) as u8, bytes.len() as u8];
            framed.extend(&bytes);
            let _ = fingerprint(&framed);
        }
    }
}
