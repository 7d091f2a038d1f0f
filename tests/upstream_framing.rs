//! Response framing from the upstream, against a raw TCP upstream written
//! here: palisade's own HTTP/1.1 client must refuse what could smuggle a
//! response (both `Transfer-Encoding` and `Content-Length`, conflicting
//! lengths, broken chunks, bytes after the response) with a 502 or a cut
//! body, close that connection and never reuse it; and reuse a connection
//! whose response ended cleanly.

mod common;
use common::*;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0";

/// Bound on every wait, only so a broken server fails the test instead of
/// hanging it. Nothing asserts how long anything took.
const PATIENCE: Duration = Duration::from_secs(10);

/// What the raw upstream saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    /// A request for this path arrived on connection N.
    Request(usize, String),
    /// Connection N was closed by palisade.
    Closed(usize),
}

/// The upstream's answer to a path, and whether it closes the connection
/// after it.
fn answer(path: &str) -> (&'static [u8], bool) {
    match path {
        "/ok" => (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", false),
        "/te-and-cl" => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n",
            false,
        ),
        "/two-lengths" => (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 30\r\n\r\nok", false),
        "/bad-length" => (b"HTTP/1.1 200 OK\r\ncontent-length: 2x\r\n\r\nok", false),
        "/te-on-http10" => (b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", false),
        "/bad-chunk" => {
            (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\nzz\r\nevil\r\n0\r\n\r\n", false)
        }
        "/long-chunk" => (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nokevil\r\n0\r\n\r\n", false),
        "/trailing-bytes" => {
            (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nevil", false)
        }
        "/chunked" => {
            (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\none\r\n4;x=y\r\n,two\r\n0\r\n\r\n", false)
        }
        "/until-close" => (b"HTTP/1.1 200 OK\r\n\r\nall of it", true),
        "/close" => (b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok", true),
        "/continue" => (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfinal", false),
        "/head" => (b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n", false),
        _ => (b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n", false),
    }
}

/// A raw upstream answering from [`answer`], recording [`Event`]s.
struct RawUpstream {
    addr: SocketAddr,
    events: Arc<Mutex<Vec<Event>>>,
}

impl RawUpstream {
    async fn start() -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let events: Arc<Mutex<Vec<Event>>> = Arc::default();
        let record = events.clone();
        tokio::spawn(async move {
            let mut next = 0;
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, next, record.clone()));
                next += 1;
            }
        });
        RawUpstream { addr, events }
    }

    fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// The connection the request for `path` arrived on.
    fn connection_of(&self, path: &str) -> usize {
        self.events()
            .iter()
            .find_map(|event| match event {
                Event::Request(connection, seen) if seen == path => Some(*connection),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no request for {path}: {:?}", self.events()))
    }

    /// Wait until palisade has closed `connection`.
    async fn closed(&self, connection: usize) {
        let wait = async {
            while !self.events().contains(&Event::Closed(connection)) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(PATIENCE, wait)
            .await
            .unwrap_or_else(|_| panic!("connection {connection} stayed open: {:?}", self.events()));
    }
}

/// Serve one connection: read each request head (and a Content-Length
/// body), answer from [`answer`].
async fn serve(mut stream: TcpStream, connection: usize, events: Arc<Mutex<Vec<Event>>>) {
    let mut buffer = Vec::new();
    loop {
        let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") else {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    events.lock().unwrap().push(Event::Closed(connection));
                    return;
                }
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
        let length: usize = head
            .lines()
            .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
            .map_or(0, |value| value.parse().unwrap());
        while buffer.len() < end + 4 + length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        buffer.drain(..end + 4 + length);
        let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
        events.lock().unwrap().push(Event::Request(connection, path.clone()));
        let (bytes, close) = answer(&path);
        if stream.write_all(bytes).await.is_err() {
            return;
        }
        if close {
            return;
        }
    }
}

async fn palisade_before(upstream: &RawUpstream) -> Palisade {
    Palisade::start("", &Upstream::at(upstream.addr)).await
}

/// A GET through palisade: the status, and the body or `None` when it
/// did not arrive whole.
async fn get(palisade: &Palisade, method: &str, path: &str) -> (u16, Option<String>) {
    let client = http1_client();
    let request = request(method, &palisade.url(path), &[("user-agent", BROWSER), ("accept", "text/html")], "");
    let response = match tokio::time::timeout(PATIENCE, client.request(request)).await {
        Ok(Ok(response)) => response,
        Ok(Err(_)) => return (0, None),
        Err(_) => panic!("no answer for {path}"),
    };
    let status = response.status().as_u16();
    let body = tokio::time::timeout(PATIENCE, response.into_body().collect()).await.expect("the body ends");
    (status, body.ok().map(|body| String::from_utf8_lossy(&body.to_bytes()).into_owned()))
}

#[tokio::test]
async fn a_clean_response_leaves_its_connection_for_the_next_request() {
    let upstream = RawUpstream::start().await;
    let palisade = palisade_before(&upstream).await;
    assert_eq!(get(&palisade, "GET", "/ok").await, (200, Some("ok".into())));
    assert_eq!(get(&palisade, "GET", "/chunked").await, (200, Some("one,two".into())));
    assert_eq!(get(&palisade, "HEAD", "/head").await.0, 200);
    assert_eq!(get(&palisade, "GET", "/continue").await, (200, Some("final".into())), "a 1xx is read past");
    let first = upstream.connection_of("/ok");
    for path in ["/chunked", "/head", "/continue"] {
        assert_eq!(upstream.connection_of(path), first, "{path} went on the same connection: {:?}", upstream.events());
    }
}

#[tokio::test]
async fn a_response_delimited_by_close_or_saying_close_is_whole_and_its_connection_not_reused() {
    let upstream = RawUpstream::start().await;
    let palisade = palisade_before(&upstream).await;
    assert_eq!(get(&palisade, "GET", "/until-close").await, (200, Some("all of it".into())));
    assert_eq!(get(&palisade, "GET", "/close").await, (200, Some("ok".into())));
    assert_eq!(get(&palisade, "GET", "/ok").await, (200, Some("ok".into())));
    let connections = ["/until-close", "/close", "/ok"].map(|path| upstream.connection_of(path));
    assert!(connections[0] != connections[1] && connections[1] != connections[2], "{:?}", upstream.events());
}

#[tokio::test]
async fn ambiguous_response_framing_is_a_502_and_the_connection_is_closed() {
    let upstream = RawUpstream::start().await;
    let palisade = palisade_before(&upstream).await;
    for path in ["/te-and-cl", "/two-lengths", "/bad-length", "/te-on-http10"] {
        let (status, body) = get(&palisade, "GET", path).await;
        assert_eq!(status, 502, "{path}: {body:?}");
        assert!(body.is_some_and(|body| body.contains("upstream_unavailable")), "{path}");
        upstream.closed(upstream.connection_of(path)).await;
        // The next request is answered, on a connection of its own.
        assert_eq!(get(&palisade, "GET", "/ok").await, (200, Some("ok".into())), "after {path}");
    }
    // Nothing follows a refused response on its connection.
    let events = upstream.events();
    for (at, event) in events.iter().enumerate() {
        if let Event::Request(connection, path) = event
            && path != "/ok"
        {
            let reused = events[at + 1..].iter().any(|later| matches!(later, Event::Request(c, _) if c == connection));
            assert!(!reused, "the connection of {path} was reused: {events:?}");
        }
    }
}

#[tokio::test]
async fn a_broken_chunk_cuts_the_body_and_closes_the_connection() {
    let upstream = RawUpstream::start().await;
    let palisade = palisade_before(&upstream).await;
    for path in ["/bad-chunk", "/long-chunk"] {
        let (_, body) = get(&palisade, "GET", path).await;
        assert!(body.is_none(), "{path}: the client must not get a whole body, got {body:?}");
        upstream.closed(upstream.connection_of(path)).await;
        assert_eq!(get(&palisade, "GET", "/ok").await, (200, Some("ok".into())), "after {path}");
    }
}

#[tokio::test]
async fn bytes_after_a_response_are_never_read_as_the_next_one() {
    let upstream = RawUpstream::start().await;
    let palisade = palisade_before(&upstream).await;
    assert_eq!(get(&palisade, "GET", "/trailing-bytes").await, (200, Some("ok".into())));
    upstream.closed(upstream.connection_of("/trailing-bytes")).await;
    // Were the connection reused, this would be answered "evil".
    assert_eq!(get(&palisade, "GET", "/ok").await, (200, Some("ok".into())));
    assert_ne!(upstream.connection_of("/ok"), upstream.connection_of("/trailing-bytes"));
}
