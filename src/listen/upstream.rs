//! One worker's HTTP/1.1 connections to the upstream, kept alive and
//! reused by that worker alone, each driven by whoever is using it.
//!
//! hyper-util's pooled client did more per request than a worker needs: a
//! pool keyed by scheme and authority behind a lock shared by all threads,
//! a race between the checkout and a lazily built connect future, and,
//! whenever a connection was not idle again the moment its response head
//! arrived, a task spawned to wait for it. Here a connection leaves the
//! pool with its request and goes back when its response body has been
//! read to the end (see [`UpstreamBody`]); a connection whose body was
//! dropped half read, or that the upstream closed, is not reused.
//!
//! hyper's HTTP/1 client is two halves: the `SendRequest` handle and the
//! `Connection` future that does the reading and writing. Spawning the
//! future as a task of its own (hyper's usual way) cost a task wakeup and
//! a hand-off each way for every request: about a seventh of the CPU of a
//! forwarded request under callgrind. So the two halves stay together
//! ([`Upstream`]) and the connection is polled by the request's own task:
//! while the request waits for its response head, then by the response
//! body each time the client side asks it for more. An idle connection in
//! the pool is polled by nobody; one the upstream closed meanwhile is
//! found closed when it is next taken out, or when it is evicted.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{BoxError, ProxyBody};

/// Idle connections kept per worker, as the shared pool kept per upstream.
const MAX_IDLE: usize = 256;

/// An idle connection older than this is closed rather than reused: the
/// upstream may be about to close it (servers time idle keep-alive
/// connections out; 60 s is longer than few of them wait).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// One worker's upstream connections (cheap to clone: clones share them).
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    pool: Arc<Pool>,
}

#[derive(Debug)]
struct Pool {
    /// Idle connections, the most recently used last.
    idle: Mutex<VecDeque<Idle>>,
    connect_timeout: Duration,
}

#[derive(Debug)]
struct Idle {
    /// Where it goes: after a reload that changes `server.upstream`,
    /// connections to the old one are closed, not reused.
    authority: Authority,
    upstream: Box<Upstream>,
    since: Instant,
}

/// One HTTP/1 connection to the upstream: the handle requests are sent
/// with, and the future that reads and writes the socket, which makes
/// progress only when polled (see the module documentation). Boxed where
/// it is kept: hyper's connection state is large, and it moves from the
/// pool to the request to the response body and back for every request.
#[derive(Debug)]
struct Upstream {
    sender: SendRequest<ProxyBody>,
    connection: Connection<TokioIo<TcpStream>, ProxyBody>,
}

// === impl UpstreamClient ===

impl UpstreamClient {
    pub fn new(connect_timeout: Duration) -> Self {
        UpstreamClient { pool: Arc::new(Pool { idle: Mutex::default(), connect_timeout }) }
    }

    /// Send `request` (origin-form URI, `Host` set) to `authority` on an
    /// idle connection, or a new one. A request that never left because
    /// its idle connection had just been closed by the upstream is sent
    /// again on another one; once written it never is.
    pub async fn request(
        &self,
        authority: &Authority,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<UpstreamBody>, BoxError> {
        loop {
            let (mut upstream, reused) = match self.pool.checkout(authority) {
                Some(upstream) => (upstream, true),
                None => (self.connect(authority).await?, false),
            };
            // An idle connection is ready at once; a new one once hyper
            // has polled it.
            if let Err(error) = std::future::poll_fn(|cx| upstream.poll_ready(cx)).await {
                if reused {
                    continue;
                }
                return Err(error);
            }
            let mut sending = std::pin::pin!(upstream.sender.try_send_request(request));
            let mut live = Some(upstream);
            let sent = std::future::poll_fn(|cx| {
                // The connection writes the request and reads the answer
                // only while polled. Once it has ended it is dropped, which
                // answers a request it still held with an error.
                if live.as_mut().is_some_and(|upstream| !upstream.drive(cx)) {
                    live = None;
                }
                sending.as_mut().poll(cx)
            })
            .await;
            match sent {
                Ok(response) => {
                    let lease =
                        live.map(|upstream| Lease { pool: self.pool.clone(), authority: authority.clone(), upstream });
                    return Ok(response.map(|body| UpstreamBody { body, lease, done: false }));
                }
                Err(mut error) => match error.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(Box::new(error.into_error())),
                },
            }
        }
    }

    /// A new connection: TCP (no Nagle delay: heads and bodies are written
    /// whole), then hyper's HTTP/1 client on it.
    async fn connect(&self, authority: &Authority) -> Result<Box<Upstream>, BoxError> {
        let address =
            (authority.host().trim_start_matches('[').trim_end_matches(']'), authority.port_u16().unwrap_or(80));
        let stream = match tokio::time::timeout(self.pool.connect_timeout, TcpStream::connect(address)).await {
            Ok(connected) => connected?,
            Err(_) => {
                return Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection to {authority} within the connect timeout"),
                )));
            }
        };
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        Ok(Box::new(Upstream { sender, connection }))
    }
}

// === impl Upstream ===

impl Upstream {
    /// Let the connection read and write what it can. False once it has
    /// ended (closed by either side, or broken): it must not be polled
    /// again, and is dropped.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        match Pin::new(&mut self.connection).poll(cx) {
            Poll::Pending => true,
            Poll::Ready(Ok(())) => false,
            Poll::Ready(Err(error)) => {
                tracing::debug!(%error, "upstream connection ended with an error");
                false
            }
        }
    }

    /// Ready for a request: the connection has finished the last exchange
    /// and is still open. A connection that went back to the pool was
    /// ready then, and is not polled again here: if the upstream has
    /// closed it since, the request comes back unsent and goes out on
    /// another (see [`UpstreamClient::request`]).
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.sender.is_ready() {
            return Poll::Ready(Ok(()));
        }
        if !self.drive(cx) {
            return Poll::Ready(Err(Box::new(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "the upstream connection closed",
            ))));
        }
        self.sender.poll_ready(cx).map_err(|error| Box::new(error) as BoxError)
    }
}

// === impl Pool ===

impl Pool {
    fn idle(&self) -> MutexGuard<'_, VecDeque<Idle>> {
        // A poisoned lock is still usable: the queue is consistent after every operation.
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The most recently used idle connection to `authority` not known to
    /// be closed; stale and other upstreams' connections are dropped on
    /// the way.
    fn checkout(&self, authority: &Authority) -> Option<Box<Upstream>> {
        let mut idle = self.idle();
        while let Some(front) = idle.front() {
            if front.since.elapsed() < IDLE_TIMEOUT {
                break;
            }
            idle.pop_front();
        }
        while let Some(connection) = idle.pop_back() {
            if !connection.upstream.sender.is_closed() && connection.authority == *authority {
                return Some(connection.upstream);
            }
        }
        None
    }

    /// Take a connection back after its exchange, once it has been polled
    /// past the end of the response body.
    fn give_back(&self, authority: Authority, upstream: Box<Upstream>) {
        let mut idle = self.idle();
        if idle.len() >= MAX_IDLE {
            idle.pop_front();
        }
        idle.push_back(Idle { authority, upstream, since: Instant::now() });
    }
}

/// A connection lent to one exchange.
#[derive(Debug)]
struct Lease {
    pool: Arc<Pool>,
    authority: Authority,
    upstream: Box<Upstream>,
}

/// The upstream's response body, which drives its connection while it is
/// read. Read to its end, it gives its connection back to the worker's
/// pool; dropped before that, the connection is closed with it, since the
/// rest of the body would still be on the wire.
#[derive(Debug)]
pub struct UpstreamBody {
    body: Incoming,
    /// None once the connection has ended, or has gone back to the pool.
    lease: Option<Lease>,
    done: bool,
}

// === impl UpstreamBody ===

impl UpstreamBody {
    fn release(&mut self, cx: &mut Context<'_>) {
        self.done = true;
        if let Some(mut lease) = self.lease.take() {
            // hyper is ready for the next request once it has seen the end
            // of the body go by, usually in the same turn that read it;
            // else one more turn lets it see. A connection that is not
            // ready even then (still writing a request body the upstream
            // answered before reading it all, or told to close) would wait
            // in the pool with nobody to drive it: it is closed instead.
            let upstream = &mut lease.upstream;
            if upstream.sender.is_ready() || (upstream.drive(cx) && upstream.sender.is_ready()) {
                lease.pool.give_back(lease.authority, lease.upstream);
            }
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        // The body's bytes come off the socket only while the connection
        // is polled; one that ended has handed on all it read.
        if self.lease.as_mut().is_some_and(|lease| !lease.upstream.drive(cx)) {
            self.lease = None;
        }
        let frame = std::task::ready!(Pin::new(&mut self.body).poll_frame(cx));
        match &frame {
            None => self.release(cx),
            // A broken body leaves the connection in an unknown state.
            Some(Err(_)) => self.lease = None,
            Some(Ok(_)) if self.body.is_end_stream() => self.release(cx),
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // An empty body (204, HEAD, `content-length: 0`) is never polled.
        // Nobody is waiting on this last turn of its connection: whatever
        // it registers to be woken for later is re-registered by the
        // request that takes it out of the pool.
        if self.lease.is_some() && self.body.is_end_stream() {
            self.release(&mut Context::from_waker(Waker::noop()));
        }
    }
}
