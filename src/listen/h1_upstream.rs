//! palisade's own HTTP/1.1 client to the upstream, for requests whose body
//! is already in hand (none, or a login body read for inspection): the
//! request head and body go out in one write from the request's parts,
//! the response head is parsed with `httparse`, and the body is streamed
//! back by RFC 9112 framing, all from the request's own task.
//!
//! hyper's client put a dispatcher, a channel and a task of its own
//! between the request and the socket; that connection task alone was
//! ~14k of the ~73k instructions a forwarded `GET /` costs (see
//! benches/README.md, "Forwarding path, fourth pass"). Requests that stream
//! a client body of unknown extent still go through hyper's client
//! ([`super::upstream`]), which writes the body while it reads the answer.
//!
//! This is where response smuggling would live, so framing is strict: a
//! response with both `Transfer-Encoding` and `Content-Length`, with
//! `Content-Length`s that disagree or are not numbers, with
//! `Transfer-Encoding` on HTTP/1.0, or with a broken chunk fails the
//! exchange (502 before the head was passed on), and its connection is
//! closed, never reused. A connection goes back to the pool only when its
//! response ended where its framing said, with no byte after it, and the
//! upstream did not ask to close.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Authority;
use http::{Method, Response, StatusCode, Version};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::BoxError;

/// Idle connections kept per worker (as hyper's pool kept).
const MAX_IDLE: usize = 256;

/// An idle connection older than this is closed rather than reused: the
/// upstream may be about to close it.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Header fields accepted in one response head (hyper's default).
const MAX_HEADERS: usize = 100;

/// The largest response head accepted (hyper's default buffer limit).
const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;

/// The largest chunk-size line (size and extensions) and trailer section.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILER_BYTES: usize = 64 * 1024;

/// Bytes asked of the socket per read.
const READ_SIZE: usize = 16 * 1024;

/// A body up to this size is copied behind the head, for one write.
const COALESCE_BODY: usize = 64 * 1024;

/// Why an exchange failed; every one leaves its connection closed.
#[derive(Debug)]
pub enum H1Error {
    Io(std::io::Error),
    /// The upstream closed (or reset) a reused connection before sending
    /// a byte of the answer: it had likely timed the connection out.
    ClosedBeforeAnswer(std::io::Error),
    /// A response whose framing or syntax palisade does not accept.
    Invalid(&'static str),
}

impl std::fmt::Display for H1Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            H1Error::Io(error) => write!(f, "upstream connection: {error}"),
            H1Error::ClosedBeforeAnswer(error) => write!(f, "upstream closed the connection before answering: {error}"),
            H1Error::Invalid(why) => write!(f, "invalid upstream response: {why}"),
        }
    }
}

impl std::error::Error for H1Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            H1Error::Io(error) | H1Error::ClosedBeforeAnswer(error) => Some(error),
            H1Error::Invalid(_) => None,
        }
    }
}

impl From<std::io::Error> for H1Error {
    fn from(error: std::io::Error) -> Self {
        H1Error::Io(error)
    }
}

/// One TCP connection to the upstream and what was read from it but not
/// yet used.
#[derive(Debug)]
struct Connection {
    stream: TcpStream,
    read: BytesMut,
    /// The request head being written (its allocation reused).
    write: Vec<u8>,
}

impl Connection {
    /// Whether the upstream has closed the connection (or sent bytes no
    /// request asked for) while it was idle. Costs no system call unless
    /// the reactor saw the socket become readable.
    fn closed_while_idle(&self) -> bool {
        let mut probe = [0u8; 1];
        !matches!(self.stream.try_read(&mut probe), Err(error) if error.kind() == std::io::ErrorKind::WouldBlock)
    }
}

#[derive(Debug)]
struct Idle {
    /// After a reload that changes `server.upstream`, connections to the
    /// old one are closed, not reused.
    authority: Authority,
    connection: Connection,
    since: Instant,
}

/// One worker's idle connections for this client.
#[derive(Debug)]
pub struct Pool {
    /// The most recently used last.
    idle: Mutex<VecDeque<Idle>>,
    connect_timeout: Duration,
}

impl Pool {
    pub fn new(connect_timeout: Duration) -> Self {
        Pool { idle: Mutex::default(), connect_timeout }
    }

    fn idle(&self) -> MutexGuard<'_, VecDeque<Idle>> {
        // A poisoned lock is still usable: the queue is consistent after every operation.
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The most recently used idle connection to `authority` still open.
    /// Stale ones, other upstreams' and closed ones met on the way are
    /// dropped, and so is the oldest when the upstream closed it: without
    /// a task watching idle connections, that is what keeps connections
    /// the upstream closed from lingering half closed.
    fn checkout(&self, authority: &Authority) -> Option<Connection> {
        let mut idle = self.idle();
        while let Some(front) = idle.front() {
            if front.since.elapsed() < IDLE_TIMEOUT && !front.connection.closed_while_idle() {
                break;
            }
            idle.pop_front();
        }
        while let Some(entry) = idle.pop_back() {
            if entry.authority == *authority && !entry.connection.closed_while_idle() {
                return Some(entry.connection);
            }
        }
        None
    }

    fn give_back(&self, authority: Authority, connection: Connection) {
        let mut idle = self.idle();
        if idle.len() >= MAX_IDLE {
            idle.pop_front();
        }
        idle.push_back(Idle { authority, connection, since: Instant::now() });
    }

    async fn connect(&self, authority: &Authority) -> Result<Connection, H1Error> {
        let address =
            (authority.host().trim_start_matches('[').trim_end_matches(']'), authority.port_u16().unwrap_or(80));
        let stream = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(address)).await {
            Ok(connected) => connected?,
            Err(_) => {
                return Err(H1Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection to {authority} within the connect timeout"),
                )));
            }
        };
        // Heads and bodies are written whole: no Nagle delay.
        stream.set_nodelay(true)?;
        Ok(Connection { stream, read: BytesMut::with_capacity(READ_SIZE), write: Vec::with_capacity(1024) })
    }

    /// Send one request (origin-form URI, `Host` set, hop-by-hop headers
    /// gone) with `body` (empty: none) and read the response head. A
    /// request whose reused connection failed before it was written, or a
    /// `GET`/`HEAD` whose reused connection was closed without a byte of
    /// answer, is sent again on a new connection; nothing else is.
    pub async fn send(
        self: &Arc<Self>,
        authority: &Authority,
        request: &http::request::Parts,
        body: Bytes,
    ) -> Result<Response<H1Body>, H1Error> {
        let retry_when_closed = request.method == Method::GET || request.method == Method::HEAD;
        loop {
            let (mut connection, reused) = match self.checkout(authority) {
                Some(connection) => (connection, true),
                None => (self.connect(authority).await?, false),
            };
            write_head(&mut connection.write, request, body.len());
            let written = if body.len() <= COALESCE_BODY {
                connection.write.extend_from_slice(&body);
                connection.stream.write_all(&connection.write).await
            } else {
                match connection.stream.write_all(&connection.write).await {
                    Ok(()) => connection.stream.write_all(&body).await,
                    Err(error) => Err(error),
                }
            };
            if let Err(error) = written {
                if reused {
                    continue;
                }
                return Err(H1Error::Io(error));
            }
            match read_response(&mut connection, &request.method).await {
                Ok((parts, framing, keep_alive)) => {
                    let body = H1Body::new(connection, framing, keep_alive, self.clone(), authority.clone());
                    return Ok(Response::from_parts(parts, body));
                }
                Err(H1Error::ClosedBeforeAnswer(_)) if reused && retry_when_closed => continue,
                Err(error) => return Err(error),
            }
        }
    }
}

/// The request head, as hyper's client wrote it: request line, the
/// headers in map order (names lower case), `Content-Length` set to the
/// body's length in place, or added last, when there is a body.
fn write_head(out: &mut Vec<u8>, request: &http::request::Parts, body_len: usize) {
    use std::io::Write as _;
    out.clear();
    out.extend_from_slice(request.method.as_str().as_bytes());
    out.push(b' ');
    let target = request.uri.path_and_query().map_or("/", |path| path.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut length_written = body_len == 0;
    for (name, value) in &request.headers {
        // This client frames the body itself.
        if name == header::TRANSFER_ENCODING {
            continue;
        }
        let is_length = name == header::CONTENT_LENGTH && body_len > 0;
        if is_length && length_written {
            // One Content-Length, however often the client repeated it.
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        if is_length {
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{body_len}");
            length_written = true;
        } else {
            out.extend_from_slice(value.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    if !length_written {
        let _ = write!(out, "content-length: {body_len}\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// How the response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection.
    Close,
}

/// Read the final response head (1xx interim heads are read past), and
/// decide the body's framing and whether the connection may be reused.
async fn read_response(
    connection: &mut Connection,
    method: &Method,
) -> Result<(http::response::Parts, Framing, bool), H1Error> {
    let mut received_any = !connection.read.is_empty();
    loop {
        if !connection.read.is_empty() {
            match parse_head(&mut connection.read, method)? {
                Some(Parsed::Interim) => continue,
                Some(Parsed::Final(head)) => return Ok(head),
                None => {}
            }
            if connection.read.len() > MAX_HEAD_BYTES {
                return Err(H1Error::Invalid("response head too large"));
            }
        }
        connection.read.reserve(READ_SIZE);
        match connection.stream.read_buf(&mut connection.read).await {
            Ok(0) if !received_any => {
                let closed = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed");
                return Err(H1Error::ClosedBeforeAnswer(closed));
            }
            Ok(0) => return Err(H1Error::Invalid("connection closed within the response head")),
            Ok(_) => received_any = true,
            Err(error) if !received_any && error.kind() == std::io::ErrorKind::ConnectionReset => {
                return Err(H1Error::ClosedBeforeAnswer(error));
            }
            Err(error) => return Err(H1Error::Io(error)),
        }
    }
}

enum Parsed {
    /// A 1xx head (not 101), consumed: the final one follows.
    Interim,
    Final((http::response::Parts, Framing, bool)),
}

/// Parse one response head from the front of `read`, consuming it when
/// complete; `None` when more bytes are needed.
fn parse_head(read: &mut BytesMut, method: &Method) -> Result<Option<Parsed>, H1Error> {
    // Left uninitialized: 100 empty slots written on every response cost
    // more than the parse of a short head.
    let mut slots = [std::mem::MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let length =
        match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut response, read, &mut slots) {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(H1Error::Invalid("too many header fields")),
            Err(_) => return Err(H1Error::Invalid("malformed head")),
        };
    let code = response.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| H1Error::Invalid("bad status code"))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        // Upgrade is hop-by-hop and never forwarded: nothing asked for this.
        return Err(H1Error::Invalid("unrequested protocol switch"));
    }
    if status.is_informational() {
        read.advance(length);
        return Ok(Some(Parsed::Interim));
    }
    let http10 = response.version == Some(0);
    let base = read.as_ptr() as usize;
    // Where each value lies in the head, so the values can share its bytes.
    let mut fields: Vec<(HeaderName, std::ops::Range<usize>)> = Vec::with_capacity(response.headers.len());
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = TransferEncoding::None;
    let mut close = http10;
    for field in response.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| H1Error::Invalid("bad header name"))?;
        let start = field.value.as_ptr() as usize - base;
        let value = field.value;
        if name == header::CONTENT_LENGTH {
            for item in value.split(|&byte| byte == b',') {
                let parsed = parse_content_length(trim(item)).ok_or(H1Error::Invalid("bad content-length"))?;
                if content_length.is_some_and(|previous| previous != parsed) {
                    return Err(H1Error::Invalid("conflicting content-lengths"));
                }
                content_length = Some(parsed);
            }
        } else if name == header::TRANSFER_ENCODING {
            transfer_encoding = transfer_encoding.and(value)?;
        } else if name == header::CONNECTION {
            for token in value.split(|&byte| byte == b',').map(trim) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if http10 && token.eq_ignore_ascii_case(b"keep-alive") {
                    close = false;
                }
            }
        }
        fields.push((name, start..start + value.len()));
    }
    if transfer_encoding != TransferEncoding::None && content_length.is_some() {
        return Err(H1Error::Invalid("both transfer-encoding and content-length"));
    }
    if transfer_encoding != TransferEncoding::None && http10 {
        return Err(H1Error::Invalid("transfer-encoding on HTTP/1.0"));
    }
    let framing = if method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || (method == Method::CONNECT && status.is_success())
    {
        Framing::Empty
    } else {
        match (transfer_encoding, content_length) {
            (TransferEncoding::Chunked, _) => Framing::Chunked,
            (TransferEncoding::Other, _) => Framing::Close,
            (TransferEncoding::None, Some(0)) => Framing::Empty,
            (TransferEncoding::None, Some(length)) => Framing::Length(length),
            (TransferEncoding::None, None) => Framing::Close,
        }
    };
    // A tunnel is not something this client serves after the head.
    let keep_alive = !close && framing != Framing::Close && method != Method::CONNECT;

    let head = read.split_to(length).freeze();
    let mut headers = HeaderMap::with_capacity(fields.len());
    for (name, range) in fields {
        let value =
            HeaderValue::from_maybe_shared(head.slice(range)).map_err(|_| H1Error::Invalid("bad header value"))?;
        headers.append(name, value);
    }
    let mut parts = Response::new(()).into_parts().0;
    parts.status = status;
    parts.version = if http10 { Version::HTTP_10 } else { Version::HTTP_11 };
    parts.headers = headers;
    Ok(Some(Parsed::Final((parts, framing, keep_alive))))
}

/// What the `Transfer-Encoding` fields seen so far say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TransferEncoding {
    None,
    /// The last coding is chunked.
    Chunked,
    /// Codings of which the last is not chunked: delimited by close.
    Other,
}

impl TransferEncoding {
    /// Add one field's codings. `chunked` may only be the last coding of
    /// all (RFC 9112 §6.1); anything after it, or twice, is refused.
    fn and(self, value: &[u8]) -> Result<TransferEncoding, H1Error> {
        let mut state = self;
        for coding in value.split(|&byte| byte == b',').map(trim) {
            if coding.is_empty() {
                continue;
            }
            if state == TransferEncoding::Chunked {
                return Err(H1Error::Invalid("a transfer coding after chunked"));
            }
            state = if coding.eq_ignore_ascii_case(b"chunked") {
                TransferEncoding::Chunked
            } else {
                TransferEncoding::Other
            };
        }
        if state == TransferEncoding::None {
            return Err(H1Error::Invalid("empty transfer-encoding"));
        }
        Ok(state)
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !matches!(b, b' ' | b'\t')).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !matches!(b, b' ' | b'\t')).map_or(start, |last| last + 1);
    &bytes[start..end.max(start)]
}

/// `1*DIGIT`, no sign, no spaces inside, no overflow.
fn parse_content_length(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 19 {
        return None;
    }
    text.iter().try_fold(0u64, |total, &byte| byte.is_ascii_digit().then(|| total * 10 + u64::from(byte - b'0')))
}

/// Decoding state of a chunked body (RFC 9112 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields, then an empty line.
    Trailers,
    Done,
}

impl Chunked {
    /// Decode what `read` holds: a frame, or `None` when more bytes are
    /// needed (or the body has ended: then the state is `Done`).
    fn decode(&mut self, read: &mut BytesMut) -> Result<Option<Frame<Bytes>>, H1Error> {
        loop {
            match *self {
                Chunked::Size => {
                    let Some(line_end) = find_crlf(read, MAX_CHUNK_LINE)? else { return Ok(None) };
                    let size = parse_chunk_size(&read[..line_end])?;
                    read.advance(line_end + 2);
                    *self = if size == 0 { Chunked::Trailers } else { Chunked::Data(size) };
                }
                Chunked::Data(left) => {
                    if read.is_empty() {
                        return Ok(None);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(read.len());
                    let data = read.split_to(take).freeze();
                    let left = left - take as u64;
                    *self = if left == 0 { Chunked::DataEnd } else { Chunked::Data(left) };
                    return Ok(Some(Frame::data(data)));
                }
                Chunked::DataEnd => {
                    if read.len() < 2 {
                        return Ok(None);
                    }
                    if &read[..2] != b"\r\n" {
                        return Err(H1Error::Invalid("chunk data longer than its size"));
                    }
                    read.advance(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailers => {
                    if read.len() >= 2 && &read[..2] == b"\r\n" {
                        read.advance(2);
                        *self = Chunked::Done;
                        return Ok(None);
                    }
                    let mut slots = [httparse::EMPTY_HEADER; 32];
                    match httparse::parse_headers(read, &mut slots) {
                        Ok(httparse::Status::Complete((length, fields))) => {
                            let mut trailers = HeaderMap::with_capacity(fields.len());
                            for field in fields {
                                let name = HeaderName::from_bytes(field.name.as_bytes());
                                let value = HeaderValue::from_bytes(field.value);
                                match (name, value) {
                                    (Ok(name), Ok(value)) => {
                                        trailers.append(name, value);
                                    }
                                    _ => return Err(H1Error::Invalid("bad trailer field")),
                                }
                            }
                            read.advance(length);
                            *self = Chunked::Done;
                            return Ok(Some(Frame::trailers(trailers)));
                        }
                        Ok(httparse::Status::Partial) if read.len() <= MAX_TRAILER_BYTES => return Ok(None),
                        Ok(httparse::Status::Partial) => return Err(H1Error::Invalid("trailer section too large")),
                        Err(_) => return Err(H1Error::Invalid("malformed trailer section")),
                    }
                }
                Chunked::Done => return Ok(None),
            }
        }
    }
}

/// Where the first CRLF is; a lone CR or LF before it, or no CRLF within
/// `limit` bytes, is refused (a bare LF is how chunk framing is smuggled).
fn find_crlf(bytes: &[u8], limit: usize) -> Result<Option<usize>, H1Error> {
    for (index, &byte) in bytes.iter().enumerate().take(limit + 1) {
        match byte {
            b'\r' => {
                return match bytes.get(index + 1) {
                    Some(b'\n') => Ok(Some(index)),
                    Some(_) => Err(H1Error::Invalid("bare CR in chunk framing")),
                    None => Ok(None),
                };
            }
            b'\n' => return Err(H1Error::Invalid("bare LF in chunk framing")),
            _ => {}
        }
    }
    if bytes.len() > limit { Err(H1Error::Invalid("chunk-size line too long")) } else { Ok(None) }
}

/// `1*HEXDIG` then, optionally, `BWS ";" extensions` (ignored).
fn parse_chunk_size(line: &[u8]) -> Result<u64, H1Error> {
    let digits = line.iter().take_while(|byte| byte.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(H1Error::Invalid("chunk size not hexadecimal"));
    }
    if digits > 16 {
        return Err(H1Error::Invalid("chunk size too large"));
    }
    let rest = &line[digits..];
    let after_space = &rest[rest.iter().take_while(|b| matches!(b, b' ' | b'\t')).count()..];
    if !after_space.is_empty() && after_space[0] != b';' {
        return Err(H1Error::Invalid("bad chunk-size line"));
    }
    if after_space.iter().any(|&byte| byte < 0x20 && byte != b'\t' || byte == 0x7f) {
        return Err(H1Error::Invalid("control character in chunk extension"));
    }
    let size = line[..digits].iter().fold(0u64, |total, &byte| {
        let digit = (byte as char).to_digit(16).unwrap_or(0);
        total << 4 | u64::from(digit)
    });
    Ok(size)
}

/// The upstream's response body, read from the connection as its framing
/// says. Read to its end, with the connection fit for another request, it
/// gives the connection back to the worker's pool; dropped before that or
/// broken, the connection is closed with it.
#[derive(Debug)]
pub struct H1Body {
    connection: Option<Connection>,
    state: BodyState,
    keep_alive: bool,
    pool: Arc<Pool>,
    authority: Authority,
}

#[derive(Debug)]
enum BodyState {
    Length(u64),
    Chunked(Chunked),
    Close,
    Done,
}

impl H1Body {
    fn new(connection: Connection, framing: Framing, keep_alive: bool, pool: Arc<Pool>, authority: Authority) -> Self {
        let state = match framing {
            Framing::Empty => BodyState::Done,
            Framing::Length(length) => BodyState::Length(length),
            Framing::Chunked => BodyState::Chunked(Chunked::Size),
            Framing::Close => BodyState::Close,
        };
        let mut body = H1Body { connection: Some(connection), state, keep_alive, pool, authority };
        if matches!(body.state, BodyState::Done) {
            body.finish();
        }
        body
    }

    /// The body ended: the connection goes back to the pool if the
    /// upstream may take another request on it, and nothing but this
    /// response was sent (a byte after it would be read as the next
    /// response's: that is how responses are smuggled).
    fn finish(&mut self) {
        self.state = BodyState::Done;
        if let Some(connection) = self.connection.take()
            && self.keep_alive
            && connection.read.is_empty()
        {
            self.pool.give_back(self.authority.clone(), connection);
        }
    }

    fn fail(&mut self, error: H1Error) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.state = BodyState::Done;
        self.connection = None;
        Poll::Ready(Some(Err(Box::new(error))))
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let Some(connection) = this.connection.as_mut() else { return Poll::Ready(None) };
            match &mut this.state {
                BodyState::Done => return Poll::Ready(None),
                BodyState::Length(left) => {
                    if !connection.read.is_empty() {
                        let take = usize::try_from(*left).unwrap_or(usize::MAX).min(connection.read.len());
                        let data = connection.read.split_to(take).freeze();
                        *left -= take as u64;
                        if *left == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                BodyState::Chunked(chunked) => match chunked.decode(&mut connection.read) {
                    Ok(Some(frame)) => {
                        if *chunked == Chunked::Done {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    Ok(None) if *chunked == Chunked::Done => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(None) => {}
                    Err(error) => return this.fail(error),
                },
                BodyState::Close => {
                    if !connection.read.is_empty() {
                        let data = connection.read.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
            }
            // More bytes are needed.
            connection.read.reserve(READ_SIZE);
            let read = std::task::ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut connection.stream),
                cx,
                &mut connection.read
            ));
            match read {
                Ok(0) if matches!(this.state, BodyState::Close) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(H1Error::Invalid("connection closed before the body's end")),
                Ok(_) => {}
                Err(error) => return this.fail(H1Error::Io(error)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, BodyState::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            BodyState::Done => SizeHint::with_exact(0),
            BodyState::Length(left) => SizeHint::with_exact(left),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn head(raw: &[u8], method: &Method) -> Result<Option<Parsed>, H1Error> {
        parse_head(&mut BytesMut::from(raw), method)
    }

    fn framing(raw: &[u8]) -> Result<(Framing, bool), H1Error> {
        match head(raw, &Method::GET)? {
            Some(Parsed::Final((_, framing, keep_alive))) => Ok((framing, keep_alive)),
            _ => Err(H1Error::Invalid("no final head")),
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let table: [(&[u8], Framing, bool); 9] = [
            (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", Framing::Length(5), true),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n", Framing::Length(5), true),
            (b"HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n", Framing::Length(5), true),
            (b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", Framing::Empty, true),
            (b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, Chunked\r\n\r\n", Framing::Chunked, true),
            (b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n", Framing::Close, false),
            (b"HTTP/1.1 200 OK\r\n\r\n", Framing::Close, false),
            (b"HTTP/1.1 200 OK\r\nconnection: Close\r\ncontent-length: 1\r\n\r\n", Framing::Length(1), false),
            (b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\n", Framing::Length(1), true),
        ];
        for (raw, expected, keep_alive) in table {
            let (found, reusable) = framing(raw).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(raw)));
            assert_eq!((found, reusable), (expected, keep_alive), "{}", String::from_utf8_lossy(raw));
        }
        assert_eq!(framing(b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n").unwrap(), (Framing::Length(1), false));
        // No body, whatever the headers say.
        for (raw, method) in [
            (&b"HTTP/1.1 204 No Content\r\ncontent-length: 7\r\n\r\n"[..], Method::GET),
            (b"HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n", Method::GET),
            (b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n", Method::HEAD),
        ] {
            match head(raw, &method) {
                Ok(Some(Parsed::Final((_, framing, true)))) => assert_eq!(framing, Framing::Empty),
                _ => panic!("{}", String::from_utf8_lossy(raw)),
            }
        }
        assert!(matches!(head(b"HTTP/1.1 100 Continue\r\n\r\n", &Method::GET), Ok(Some(Parsed::Interim))));
        assert!(matches!(head(b"HTTP/1.1 200 OK\r\ncontent-le", &Method::GET), Ok(None)));
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        let refused: [&[u8]; 12] = [
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0x5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: \r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip, chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n",
            b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\n\r\n",
        ];
        for raw in refused {
            assert!(
                matches!(head(raw, &Method::GET), Err(H1Error::Invalid(_))),
                "accepted: {}",
                String::from_utf8_lossy(raw)
            );
        }
        assert!(matches!(head(b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n", &Method::GET), Err(H1Error::Invalid(_))));
    }

    #[test]
    fn the_request_head_is_what_hyper_wrote() {
        let request = http::Request::builder()
            .method("POST")
            .uri("/login?next=%2F")
            .header("host", "app")
            .header("content-length", "3")
            .header("x-palisade-score", "99")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let mut out = Vec::new();
        write_head(&mut out, &request, 3);
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "POST /login?next=%2F HTTP/1.1\r\nhost: app\r\ncontent-length: 3\r\nx-palisade-score: 99\r\n\r\n"
        );
        // A body without Content-Length gets one, last; no body, none.
        let request = http::Request::builder().uri("/").header("host", "app").body(()).unwrap().into_parts().0;
        write_head(&mut out, &request, 2);
        assert_eq!(String::from_utf8(out.clone()).unwrap(), "GET / HTTP/1.1\r\nhost: app\r\ncontent-length: 2\r\n\r\n");
        write_head(&mut out, &request, 0);
        assert_eq!(String::from_utf8(out).unwrap(), "GET / HTTP/1.1\r\nhost: app\r\n\r\n");
    }

    /// Decode all of `wire` fed in pieces cut at `cuts`: the data, the
    /// trailers, and whether the body ended with nothing left over.
    fn decode_in_pieces(wire: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, Option<HeaderMap>, bool), H1Error> {
        let mut state = Chunked::Size;
        let mut read = BytesMut::new();
        let mut data = Vec::new();
        let mut trailers = None;
        let mut fed = 0;
        let mut points: Vec<usize> = cuts.iter().map(|cut| cut % (wire.len() + 1)).collect();
        points.push(wire.len());
        points.sort_unstable();
        for point in points {
            read.extend_from_slice(&wire[fed..point.max(fed)]);
            fed = point.max(fed);
            while let Some(frame) = state.decode(&mut read)? {
                match frame.into_data() {
                    Ok(bytes) => data.extend_from_slice(&bytes),
                    Err(frame) => trailers = frame.into_trailers().ok(),
                }
            }
        }
        Ok((data, trailers, state == Chunked::Done && read.is_empty()))
    }

    fn encode(body: &[u8], sizes: &[usize], extension: bool, trailer: bool) -> Vec<u8> {
        let mut wire = Vec::new();
        let mut rest = body;
        let mut sizes = sizes.iter().cycle();
        while !rest.is_empty() {
            let size = sizes.next().copied().unwrap_or(1).clamp(1, rest.len());
            wire.extend_from_slice(format!("{size:X}").as_bytes());
            if extension {
                wire.extend_from_slice(b" ;name=\"va;l\"");
            }
            wire.extend_from_slice(b"\r\n");
            wire.extend_from_slice(&rest[..size]);
            wire.extend_from_slice(b"\r\n");
            rest = &rest[size..];
        }
        wire.extend_from_slice(b"0\r\n");
        if trailer {
            wire.extend_from_slice(b"x-checksum: abc\r\n");
        }
        wire.extend_from_slice(b"\r\n");
        wire
    }

    proptest! {
        #[test]
        fn chunked_bodies_decode_whole_however_they_arrive(
            body in proptest::collection::vec(any::<u8>(), 0..600),
            sizes in proptest::collection::vec(1usize..80, 1..6),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
            extension in any::<bool>(),
            trailer in any::<bool>(),
        ) {
            let wire = encode(&body, &sizes, extension, trailer);
            let (data, trailers, ended) = decode_in_pieces(&wire, &cuts).unwrap();
            prop_assert_eq!(data, body);
            prop_assert!(ended);
            prop_assert_eq!(trailers.is_some(), trailer);
            if let Some(trailers) = trailers {
                prop_assert_eq!(&trailers["x-checksum"], "abc");
            }
        }

        #[test]
        fn a_chunk_longer_than_its_size_is_refused(
            body in proptest::collection::vec(any::<u8>(), 1..100),
            extra in 1usize..5,
            cuts in proptest::collection::vec(any::<usize>(), 0..4),
        ) {
            let mut wire = format!("{:x}\r\n", body.len()).into_bytes();
            wire.extend_from_slice(&body);
            wire.extend(std::iter::repeat_n(b'a', extra));
            wire.extend_from_slice(b"\r\n0\r\n\r\n");
            prop_assert!(decode_in_pieces(&wire, &cuts).is_err());
        }
    }

    #[test]
    fn broken_chunk_framing_is_refused() {
        let broken: [&[u8]; 8] = [
            b"zz\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"5 5\r\nhello\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"5\rhello\r\n0\r\n\r\n",
            b"0\r\nbad trailer\r\n\r\n",
        ];
        for wire in broken {
            assert!(decode_in_pieces(wire, &[]).is_err(), "accepted: {}", String::from_utf8_lossy(wire));
        }
        // Incomplete is not broken: more bytes may come.
        assert!(matches!(decode_in_pieces(b"5\r\nhel", &[]), Ok((_, None, false))));
    }
}
