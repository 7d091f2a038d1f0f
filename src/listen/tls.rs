//! TLS termination: the server certificate from `[tls]`, and the accept
//! path that reads a client's ClientHello, fingerprints it ([`crate::ja4`])
//! and only then hands the connection to rustls.
//!
//! The ClientHello bytes are read, not peeked: `TcpStream::peek` cannot
//! wait for *more* bytes than are already there, so a ClientHello split
//! over several TCP segments would have to be polled for. What was read is
//! replayed to rustls first ([`Replay`]), so rustls sees the stream exactly
//! as the client sent it. Everything here runs in the connection's own
//! task, under the header read timeout, so a slow or silent client holds
//! only its own connection.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use rustls::ServerConfig;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::{Config, Invalid, Spanned, TlsConfig};
use crate::ja4::{self, Ja4Error};

/// ALPN protocols offered to clients, in preference order.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The compiled `[tls]` section: a rustls server configuration with the
/// certificate and key loaded and checked against each other.
#[derive(Clone)]
pub struct TlsSettings {
    acceptor: TlsAcceptor,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings").field("alpn", &["h2", "http/1.1"]).finish_non_exhaustive()
    }
}

impl TlsSettings {
    /// Load the certificate chain and key `config.tls` names (relative
    /// paths from the configuration file's folder). Every problem
    /// (unreadable file, no certificate, no key, key not matching the
    /// certificate) is reported against the key and line that caused it.
    pub fn from_config(root: &Config, config: &TlsConfig) -> Result<TlsSettings, Vec<Invalid>> {
        let read_pem = |path: &Spanned<String>, key: &str| {
            let file = root.resolve_path(path.get_ref());
            std::fs::read(&file)
                .map_err(|error| Invalid::new(path.span(), key, format!("cannot read {}: {error}", file.display())))
        };
        let certs = read_pem(&config.cert_path, "tls.cert_path").and_then(|text| {
            let bad = |message: String| Invalid::new(config.cert_path.span(), "tls.cert_path", message);
            let path = config.cert_path.get_ref();
            match CertificateDer::pem_slice_iter(&text).collect::<Result<Vec<_>, _>>() {
                Ok(certs) if certs.is_empty() => {
                    Err(bad(format!("{path:?} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")))
                }
                Ok(certs) => Ok(certs),
                Err(error) => Err(bad(format!("{path:?} is not valid PEM: {error}"))),
            }
        });
        let key = read_pem(&config.key_path, "tls.key_path").and_then(|text| {
            let path = config.key_path.get_ref();
            PrivateKeyDer::from_pem_slice(&text).map_err(|error| {
                let message = match error {
                    pem::Error::NoItemsFound => format!(
                        "{path:?} holds no PEM private key (PKCS#8 \"PRIVATE KEY\", \"RSA PRIVATE KEY\" \
                         or \"EC PRIVATE KEY\")"
                    ),
                    other => format!("{path:?} is not valid PEM: {other}"),
                };
                Invalid::new(config.key_path.span(), "tls.key_path", message)
            })
        });
        let (certs, key) = match (certs, key) {
            (Ok(certs), Ok(key)) => (certs, key),
            (certs, key) => return Err(certs.err().into_iter().chain(key.err()).collect()),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder =
            ServerConfig::builder_with_provider(provider).with_safe_default_protocol_versions().map_err(|error| {
                vec![Invalid::new(config.cert_path.span(), "tls", format!("TLS is unavailable: {error}"))]
            })?;
        // with_single_cert parses the key and checks that its public half
        // is the certificate's.
        // Client certificates are asked for (never required) when a partner
        // is proven by one; they must chain to a partner's CA.
        let roots = crate::identify::mtls::client_roots(root);
        let builder = if roots.is_empty() {
            builder.with_no_client_auth()
        } else {
            let mut store = rustls::RootCertStore::empty();
            for root in roots {
                store.add(root).map_err(|error| {
                    vec![Invalid::new(0..0, "partner.mtls.ca_path", format!("not a usable CA certificate: {error}"))]
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(store),
                Arc::new(rustls::crypto::ring::default_provider()),
            )
            .allow_unauthenticated()
            .build()
            .map_err(|error| {
                vec![Invalid::new(0..0, "partner.mtls.ca_path", format!("cannot verify client certificates: {error}"))]
            })?;
            builder.with_client_cert_verifier(verifier)
        };
        let mut server = builder.with_single_cert(certs, key).map_err(|error| {
            vec![match error {
                rustls::Error::InconsistentKeys(_) => Invalid::new(
                    config.key_path.span(),
                    "tls.key_path",
                    format!(
                        "the key in {:?} does not match the certificate in {:?}",
                        config.key_path.get_ref(),
                        config.cert_path.get_ref()
                    ),
                ),
                rustls::Error::InvalidCertificate(why) => Invalid::new(
                    config.cert_path.span(),
                    "tls.cert_path",
                    format!("the certificate in {:?} cannot be used: {why:?}", config.cert_path.get_ref()),
                ),
                other => Invalid::new(
                    config.key_path.span(),
                    "tls.key_path",
                    format!("the key in {:?} cannot be used: {other}", config.key_path.get_ref()),
                ),
            }]
        })?;
        server.alpn_protocols = ALPN.iter().map(|protocol| protocol.to_vec()).collect();
        Ok(TlsSettings { acceptor: TlsAcceptor::from(Arc::new(server)) })
    }
}

/// The facts of the client certificate the handshake verified, if any.
pub(super) fn client_cert<S>(stream: &TlsStream<S>) -> Option<crate::view::ClientCert> {
    let (_, connection) = stream.get_ref();
    let leaf = connection.peer_certificates()?.first()?;
    crate::view::ClientCert::from_der(leaf)
}

/// Why a connection on the TLS port was closed before any request.
#[derive(Debug)]
pub(super) enum Refused {
    /// The client spoke plain HTTP; it was told so with a 400.
    PlainHttp,
    /// The first bytes were neither TLS nor HTTP.
    NotTls,
    /// The client closed, or the socket failed, before the handshake ended.
    Io(io::Error),
    /// rustls refused the handshake.
    Handshake(io::Error),
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::PlainHttp => write!(f, "plain HTTP sent to the TLS port"),
            Refused::NotTls => write!(f, "the client did not start a TLS handshake"),
            Refused::Io(error) => write!(f, "before the TLS handshake ended: {error}"),
            Refused::Handshake(error) => write!(f, "TLS handshake failed: {error}"),
        }
    }
}

/// Read the ClientHello, compute its JA4, then run the TLS handshake.
/// The JA4 is `None` when the ClientHello could not be parsed but rustls
/// still accepted the handshake. The caller bounds this in time.
pub(super) async fn accept<S>(
    mut stream: S,
    settings: &TlsSettings,
) -> Result<(TlsStream<Replay<S>>, Option<Arc<str>>), Refused>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (read, hello) = read_client_hello(&mut stream).await.map_err(Refused::Io)?;
    let ja4 = match hello {
        Ok(hello) => Some(Arc::from(hello.ja4())),
        Err(Ja4Error::NotTls) => return Err(refuse_non_tls(stream, &read).await),
        Err(error) => {
            // rustls has the last word on whether this is a ClientHello.
            tracing::debug!(%error, "no JA4 for this ClientHello");
            None
        }
    };
    let stream = settings.acceptor.accept(Replay::new(read.freeze(), stream)).await.map_err(Refused::Handshake)?;
    Ok((stream, ja4))
}

/// Read until the buffer holds a whole ClientHello, or shows it never
/// will; returns everything read (to be replayed) and the parse.
async fn read_client_hello<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> io::Result<(BytesMut, Result<ja4::ClientHello, Ja4Error>)> {
    const CHUNK: usize = 4096;
    let mut buf = BytesMut::with_capacity(CHUNK);
    loop {
        match ja4::client_hello(&buf) {
            Err(Ja4Error::Incomplete) if buf.len() < ja4::MAX_RECORD_BYTES => {}
            Err(Ja4Error::Incomplete) => return Ok((buf, Err(Ja4Error::TooLarge))),
            outcome => return Ok((buf, outcome.map(|(hello, _)| hello))),
        }
        buf.reserve(CHUNK);
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the client closed before its ClientHello ended"));
        }
    }
}

/// A client that is not speaking TLS: if it looks like plain HTTP, say
/// so in a 400 (operators and curl users see why), then close.
async fn refuse_non_tls<S: AsyncWrite + Unpin>(mut stream: S, read: &[u8]) -> Refused {
    let looks_like_http = read.iter().take_while(|b| b.is_ascii_uppercase()).count() > 0
        && read.iter().find(|b| !b.is_ascii_uppercase()).is_none_or(|&b| b == b' ');
    if !looks_like_http {
        return Refused::NotTls;
    }
    const BODY: &str = "{\"error\":\"plain_http_to_tls_port\",\"message\":\"this port speaks HTTPS\"}\n";
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
    Refused::PlainHttp
}

/// A stream that first yields bytes already read from `inner`, then reads
/// from `inner`; writes go straight to `inner`.
#[derive(Debug)]
pub(super) struct Replay<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Replay<S> {
    fn new(prefix: Bytes, inner: S) -> Self {
        Replay { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = self.prefix.len().min(buf.remaining());
        buf.put_slice(&self.prefix[..n]);
        self.prefix.advance(n);
        if self.prefix.is_empty() {
            // Let the buffer go once it is replayed.
            self.prefix = Bytes::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn replay_yields_the_prefix_then_the_stream() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b" world").await.unwrap();
        drop(client);
        let mut replay = Replay::new(Bytes::from_static(b"hello"), server);
        let mut out = String::new();
        replay.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello world");
    }

    #[tokio::test]
    async fn a_client_hello_split_over_writes_is_read_whole() {
        let hello = hex::decode(concat!(
            "16030100c4010000c00303cb34ecb1e78163ba1c38c6dacb196a6dffa21a8d9912ec18a2ef6283024dece7000006",
            "130113031302010000910000000b0009000006736572766572ff01000100000a00140012001d001700180019010001",
            "0101020103010400230000003300260024001d002099381de560e4bd43d23d8e435a7dbafeb3c06e51c13cae4d5413",
            "691e529aaf2c002b0003020304000d0020001e040305030603020308040805080604010501060102010402050206",
            "020202002d00020101001c00024001",
        ))
        .unwrap();
        let (mut client, mut server) = tokio::io::duplex(16);
        let sent = hello.clone();
        tokio::spawn(async move {
            for chunk in sent.chunks(10) {
                client.write_all(chunk).await.unwrap();
                tokio::task::yield_now().await;
            }
            client.write_all(b"after").await.unwrap();
        });
        let (read, parsed) = read_client_hello(&mut server).await.unwrap();
        assert_eq!(parsed.unwrap().ja4(), "t13d030900_55b375c5d22e_59cd3dafc54d");
        assert_eq!(&read[..hello.len()], &hello[..]);
    }

    #[tokio::test]
    async fn plain_http_gets_a_400_and_other_bytes_nothing() {
        for (sent, answered) in [(&b"GET / HTTP/1.1\r\n\r\n"[..], true), (b"\x00\x01\x02\x03\x04\x05", false)] {
            let (mut client, server) = tokio::io::duplex(1024);
            client.write_all(sent).await.unwrap();
            let Err(refused) = accept(server, &test_settings()).await else { panic!("accepted {sent:?}") };
            let mut answer = Vec::new();
            client.read_to_end(&mut answer).await.unwrap();
            assert_eq!(answer.starts_with(b"HTTP/1.1 400 "), answered, "{refused}");
            assert_eq!(matches!(refused, Refused::PlainHttp), answered);
        }
    }

    fn test_settings() -> TlsSettings {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let resolver = Arc::new(rustls::server::ResolvesServerCertUsingSni::new());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        TlsSettings { acceptor: TlsAcceptor::from(Arc::new(config)) }
    }
}
