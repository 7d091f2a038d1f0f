//! TLS termination and JA4, end to end: a self-signed certificate made
//! with rcgen, the real palisade server with `[tls]` in front of the real
//! test upstream, and a real rustls client speaking HTTP/2 or HTTP/1.1
//! through hyper's client connection. No mocks.

mod common;
use common::*;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Bound on every wait, only so a broken server fails the test instead of
/// hanging it.
const PATIENCE: Duration = Duration::from_secs(10);

/// The JA4 of the ClientHello the test client below sends: rustls 0.23
/// with the *ring* provider, its default cipher suites, TLS 1.3 and 1.2,
/// the webpki verifier, a fresh configuration (nothing to resume), SNI
/// `localhost`. Derived by hand from the JA4 definition (FoxIO-LLC/ja4,
/// technical_details/JA4.md) and rustls 0.23's ClientHello
/// (`client/hs.rs`, `crypto/ring/mod.rs`), not copied from palisade:
///
/// JA4_a `t13d1011h2` / `t13d1011h1`:
/// - `t`: TLS over TCP;
/// - `13`: supported_versions offers 0304 and 0303;
/// - `d`: server_name is sent (`localhost` is a DNS name);
/// - `10` cipher suites: ring's defaults 1302 1301 1303 (TLS 1.3), c02c
///   c02b cca9 (ECDHE-ECDSA), c030 c02f cca8 (ECDHE-RSA), and 00ff
///   (TLS_EMPTY_RENEGOTIATION_INFO_SCSV, added because TLS 1.2 is on);
/// - `11` extensions: server_name 0000, status_request 0005 (always
///   requested), supported_groups 000a, ec_point_formats 000b (ECDHE
///   groups offered), signature_algorithms 000d, ALPN 0010,
///   extended_master_secret 0017, session_ticket 0023 (TLS 1.2 resumption
///   by ticket is on by default), supported_versions 002b,
///   psk_key_exchange_modes 002d, key_share 0033. No pre_shared_key (no
///   cached session), no compress_certificate (no brotli/zlib feature), no
///   GREASE (rustls sends none);
/// - `h2` / `h1`: first and last character of `h2` / `http/1.1`.
///
/// JA4_b: sha256("00ff,1301,1302,1303,c02b,c02c,c02f,c030,cca8,cca9"),
/// first 12 hex digits: `61a7ad8aa9b6`.
///
/// JA4_c: the extensions sorted without 0000 and 0010, then the signature
/// schemes webpki-with-ring supports, in rustls's order (ECDSA P-384
/// SHA-384 0503, ECDSA P-256 SHA-256 0403, Ed25519 0807, RSA-PSS
/// SHA-512/384/256 0806 0805 0804, RSA PKCS#1 SHA-512/384/256 0601 0501
/// 0401):
/// sha256("0005,000a,000b,000d,0017,0023,002b,002d,0033_0503,0403,0807,0806,0805,0804,0601,0501,0401"),
/// first 12 hex digits: `3fcd1a44f3e3`.
const RUSTLS_JA4_H2: &str = "t13d1011h2_61a7ad8aa9b6_3fcd1a44f3e3";
const RUSTLS_JA4_HTTP11: &str = "t13d1011h1_61a7ad8aa9b6_3fcd1a44f3e3";

/// A self-signed certificate for `localhost`, written as PEM files.
struct TestCert {
    dir: tempfile::TempDir,
    der: rustls::pki_types::CertificateDer<'static>,
}

impl TestCert {
    fn new() -> TestCert {
        let dir = tempfile::tempdir().unwrap();
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(dir.path().join("cert.pem"), generated.cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), generated.signing_key.serialize_pem()).unwrap();
        TestCert { der: generated.cert.der().clone(), dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// palisade's configuration: TLS with this certificate, every allowed
    /// request in the decision log, plus `extra`.
    fn config(&self, extra: &str) -> String {
        format!(
            "[tls]\ncert_path = {:?}\nkey_path = {:?}\n\n[decision_log]\nsample_allowed = 1.0\n\n{extra}",
            self.path("cert.pem"),
            self.path("key.pem")
        )
    }

    /// A fresh client configuration (so nothing is resumed) that trusts
    /// only this certificate and offers `alpn`.
    fn client(&self, alpn: &[&[u8]]) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }

    async fn connect(&self, palisade: &Palisade, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(palisade.addr()).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        tokio::time::timeout(PATIENCE, self.client(alpn).connect(name, tcp)).await.unwrap().expect("TLS handshake")
    }
}

/// Send one GET over an established TLS stream with hyper's client
/// connection for `version`; the status, body and response version.
async fn get(tls: TlsStream<TcpStream>, version: http::Version, path: &str) -> (u16, String, http::Version) {
    let io = TokioIo::new(tls);
    let request = |uri: String| {
        Request::get(uri).header("user-agent", "palisade-tls-test/1.0").body(Full::new(Bytes::new())).unwrap()
    };
    let response = if version == http::Version::HTTP_2 {
        let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.unwrap();
        tokio::spawn(connection);
        sender.send_request(request(format!("https://localhost{path}"))).await.unwrap()
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(connection);
        let mut request = request(path.to_string());
        request.headers_mut().insert("host", "localhost".parse().unwrap());
        sender.send_request(request).await.unwrap()
    };
    let (status, response_version) = (response.status().as_u16(), response.version());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned(), response_version)
}

#[test]
fn the_expected_ja4_strings_follow_from_their_lists() {
    // Guards the hand derivation above against a slip in the hex.
    use sha2::{Digest, Sha256};
    let hash12 = |text: &str| hex::encode(&Sha256::digest(text.as_bytes())[..6]);
    let b = hash12("00ff,1301,1302,1303,c02b,c02c,c02f,c030,cca8,cca9");
    let c = hash12("0005,000a,000b,000d,0017,0023,002b,002d,0033_0503,0403,0807,0806,0805,0804,0601,0501,0401");
    assert_eq!(RUSTLS_JA4_H2, format!("t13d1011h2_{b}_{c}"));
    assert_eq!(RUSTLS_JA4_HTTP11, format!("t13d1011h1_{b}_{c}"));
}

#[tokio::test]
async fn http2_over_tls_reaches_the_upstream_and_logs_the_ja4() {
    let upstream = Upstream::start().await;
    let cert = TestCert::new();
    let palisade = Palisade::start(&cert.config(""), &upstream).await;

    let tls = cert.connect(&palisade, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "ALPN chose HTTP/2");
    let (status, body, version) = get(tls, http::Version::HTTP_2, "/hello").await;
    assert_eq!((status, body.as_str(), version), (200, "echo /hello", http::Version::HTTP_2));
    assert_eq!(upstream.last().uri, "/hello");

    let lines = palisade.log_lines(1).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["ja4"], RUSTLS_JA4_H2, "{}", lines[0]);
    assert_eq!(lines[0]["path"], "/hello");
    palisade.running.shutdown().await;
}

#[tokio::test]
async fn http1_over_tls_reaches_the_upstream_and_logs_the_ja4() {
    let upstream = Upstream::start().await;
    let cert = TestCert::new();
    let palisade = Palisade::start(&cert.config(""), &upstream).await;

    let tls = cert.connect(&palisade, &[b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (status, body, version) = get(tls, http::Version::HTTP_11, "/one").await;
    assert_eq!((status, body.as_str(), version), (200, "echo /one", http::Version::HTTP_11));

    let lines = palisade.log_lines(1).await;
    assert_eq!(lines[0]["ja4"], RUSTLS_JA4_HTTP11, "{}", lines[0]);
    palisade.running.shutdown().await;
}

#[tokio::test]
async fn plain_http_on_the_tls_port_is_refused_and_tls_keeps_working() {
    let upstream = Upstream::start().await;
    let cert = TestCert::new();
    let palisade = Palisade::start(&cert.config(""), &upstream).await;

    let answer = raw_request(palisade.addr(), b"GET /plain HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert_eq!(raw_status(&answer), Some(400), "{}", String::from_utf8_lossy(&answer));
    assert!(String::from_utf8_lossy(&answer).contains("plain_http_to_tls_port"));
    // Bytes that are neither TLS nor HTTP: the connection is just closed.
    let answer = raw_request(palisade.addr(), b"\x00\x01\x02garbage\r\n").await;
    assert!(answer.is_empty(), "{answer:?}");
    // A handshake record that is not a ClientHello: rustls refuses it.
    let answer = raw_request(palisade.addr(), b"\x16\x03\x01\x00\x04\x02\x00\x00\x00").await;
    assert!(raw_status(&answer).is_none());
    assert!(upstream.seen().is_empty(), "nothing reached the upstream");

    let tls = cert.connect(&palisade, &[b"h2"]).await;
    let (status, _, _) = get(tls, http::Version::HTTP_2, "/after").await;
    assert_eq!(status, 200);
    palisade.running.shutdown().await;
}

#[tokio::test]
async fn a_silent_client_is_cut_off_by_the_header_timeout() {
    let upstream = Upstream::start().await;
    let cert = TestCert::new();
    let palisade = Palisade::start(&cert.config("[timeouts]\nheader_read_ms = 300\n"), &upstream).await;

    let mut silent = TcpStream::connect(palisade.addr()).await.unwrap();
    // Half a ClientHello, then nothing: the same timeout applies.
    let mut partial = TcpStream::connect(palisade.addr()).await.unwrap();
    partial.write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03").await.unwrap();

    // Meanwhile other clients are served.
    let tls = cert.connect(&palisade, &[b"h2"]).await;
    assert_eq!(get(tls, http::Version::HTTP_2, "/busy").await.0, 200);

    for stream in [&mut silent, &mut partial] {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await.expect("palisade closed it");
        // Closed: end of stream, or a reset.
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    palisade.running.shutdown().await;
}

#[tokio::test]
async fn a_failed_handshake_leaves_other_connections_alone() {
    let upstream = Upstream::start().await;
    let cert = TestCert::new();
    let palisade = Palisade::start(&cert.config(""), &upstream).await;

    // A client that trusts another certificate aborts the handshake.
    let stranger = TestCert::new();
    let tcp = TcpStream::connect(palisade.addr()).await.unwrap();
    let refused = stranger.client(&[b"h2"]).connect(ServerName::try_from("localhost").unwrap(), tcp).await;
    assert!(refused.is_err(), "an untrusted certificate was accepted");

    let tls = cert.connect(&palisade, &[b"h2"]).await;
    assert_eq!(get(tls, http::Version::HTTP_2, "/still").await.0, 200);
    palisade.running.shutdown().await;
}

// ---------------------------------------------------------------------------
// Configuration problems, as `palisade check` reports them
// ---------------------------------------------------------------------------

fn check(config: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("palisade.toml");
    std::fs::write(&path, config).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("palisade check runs");
    let text = String::from_utf8_lossy(&output.stderr).replace(&path.display().to_string(), "FILE");
    (output.status.success(), text)
}

#[test]
fn check_accepts_a_good_certificate_and_key() {
    let cert = TestCert::new();
    let (ok, text) = check(&cert.config(""));
    assert!(ok, "{text}");
}

#[test]
fn check_reports_unreadable_files_with_key_and_line() {
    let (ok, text) = check("[tls]\ncert_path = \"/nonexistent/cert.pem\"\nkey_path = \"/nonexistent/key.pem\"\n");
    assert!(!ok);
    assert!(text.contains("FILE:2: tls.cert_path: cannot read /nonexistent/cert.pem"), "{text}");
    assert!(text.contains("FILE:3: tls.key_path: cannot read /nonexistent/key.pem"), "{text}");
}

#[test]
fn check_reports_pem_files_without_a_certificate_or_a_key() {
    let cert = TestCert::new();
    // Each file where the other belongs: the key file has no certificate
    // and the certificate file no key.
    let swapped = format!("[tls]\ncert_path = {:?}\nkey_path = {:?}\n", cert.path("key.pem"), cert.path("cert.pem"));
    let (ok, text) = check(&swapped);
    assert!(!ok);
    assert!(text.contains("FILE:2: tls.cert_path:") && text.contains("holds no PEM certificate"), "{text}");
    assert!(text.contains("FILE:3: tls.key_path:") && text.contains("holds no PEM private key"), "{text}");
}

#[test]
fn check_reports_a_key_that_does_not_match_the_certificate() {
    let (cert, other) = (TestCert::new(), TestCert::new());
    let mismatched = format!(
        "# a comment line\n[tls]\ncert_path = {:?}\nkey_path = {:?}\n",
        cert.path("cert.pem"),
        other.path("key.pem")
    );
    let (ok, text) = check(&mismatched);
    assert!(!ok);
    assert!(text.contains("FILE:4: tls.key_path: the key in") && text.contains("does not match"), "{text}");
}

#[test]
fn check_rejects_unknown_keys_in_the_tls_section() {
    let (ok, text) = check("[tls]\ncert_path = \"a\"\nkey_path = \"b\"\nciphers = \"all\"\n");
    assert!(!ok);
    assert!(text.contains("FILE:4: tls.ciphers: unknown field `ciphers`"), "{text}");
}
