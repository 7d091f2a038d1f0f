//! One worker's HTTP/1.1 connections to the upstream, kept alive and
//! reused by that worker alone.
//!
//! hyper-util's pooled client did more per request than a worker needs: a
//! pool keyed by scheme and authority behind a lock shared by all threads,
//! a race between the checkout and a lazily built connect future, and,
//! whenever a connection was not idle again the moment its response head
//! arrived, a task spawned to wait for it. Here a connection leaves the
//! pool with its request and goes back when its response body has been
//! read to the end (see [`UpstreamBody`]); a connection whose body was
//! dropped half read, or that the upstream closed, is not reused.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
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
    state: Mutex<PoolState>,
    connect_timeout: Duration,
}

#[derive(Debug, Default)]
struct PoolState {
    /// Idle connections, the most recently used last, all to `authority`.
    idle: VecDeque<Idle>,
    /// The upstream of the last checkout. After a reload that changes
    /// `server.upstream`, connections to the old one are closed, not reused.
    authority: Option<Authority>,
    /// Counts changes of `authority`: a lent connection goes back to the
    /// pool only if the upstream has not changed since it was lent. A
    /// number, where each lease used to hold a clone of the authority,
    /// whose reference count every worker's requests moved between cores.
    generation: u64,
}

#[derive(Debug)]
struct Idle {
    sender: SendRequest<ProxyBody>,
    since: Instant,
}

// === impl UpstreamClient ===

impl UpstreamClient {
    pub fn new(connect_timeout: Duration) -> Self {
        UpstreamClient { pool: Arc::new(Pool { state: Mutex::default(), connect_timeout }) }
    }

    /// Send `request` (origin-form URI, `Host` set) to `authority` on an
    /// idle connection, or a new one. A request that never left because
    /// its idle connection had just been closed by the upstream is sent
    /// again on another one; once written it never is. `now` is the time
    /// the caller took when it started the exchange (idle connections are
    /// aged by it: one clock read fewer per request).
    pub async fn request(
        &self,
        authority: &Authority,
        mut request: Request<ProxyBody>,
        now: Instant,
    ) -> Result<Response<UpstreamBody>, BoxError> {
        loop {
            let (idle, generation) = self.pool.checkout(authority, now);
            let (mut sender, reused) = match idle {
                Some(sender) => (sender, true),
                None => (self.connect(authority).await?, false),
            };
            // An idle connection is ready once hyper has finished reading
            // its last response, which happens on this thread, right after
            // the body's end was handed on.
            if let Err(error) = sender.ready().await {
                if reused {
                    continue;
                }
                return Err(Box::new(error));
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let lease = Lease { pool: self.pool.clone(), generation, sender };
                    return Ok(response.map(|body| UpstreamBody { body, lease: Some(lease), done: false }));
                }
                Err(mut error) => match error.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(Box::new(error.into_error())),
                },
            }
        }
    }

    /// A new connection: TCP (no Nagle delay: heads and bodies are written
    /// whole), then hyper's HTTP/1 client on it, driven by a task of this
    /// worker.
    async fn connect(&self, authority: &Authority) -> Result<SendRequest<ProxyBody>, BoxError> {
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
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

// === impl Pool ===

impl Pool {
    fn state(&self) -> MutexGuard<'_, PoolState> {
        // A poisoned lock is still usable: the state is consistent after every operation.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The most recently used idle connection to `authority` that is still
    /// open, and the pool's generation to lend it (or a new one) under;
    /// closed and stale connections are dropped on the way, and all of
    /// them when the upstream changed.
    fn checkout(&self, authority: &Authority, now: Instant) -> (Option<SendRequest<ProxyBody>>, u64) {
        let mut state = self.state();
        if !state.authority.as_ref().is_some_and(|current| same_authority(current, authority)) {
            state.idle.clear();
            state.authority = Some(authority.clone());
            state.generation += 1;
        }
        let generation = state.generation;
        while let Some(front) = state.idle.front() {
            if now.saturating_duration_since(front.since) < IDLE_TIMEOUT {
                break;
            }
            state.idle.pop_front();
        }
        while let Some(connection) = state.idle.pop_back() {
            if !connection.sender.is_closed() {
                return (Some(connection.sender), generation);
            }
        }
        (None, generation)
    }

    fn give_back(&self, generation: u64, sender: SendRequest<ProxyBody>) {
        if sender.is_closed() {
            return;
        }
        let mut state = self.state();
        if state.generation != generation {
            return;
        }
        if state.idle.len() >= MAX_IDLE {
            state.idle.pop_front();
        }
        state.idle.push_back(Idle { sender, since: Instant::now() });
    }
}

/// Whether two authorities name the same upstream: the same text (every
/// request of one configuration passes the same one), or equal as
/// authorities (a reload that kept `server.upstream`).
fn same_authority(current: &Authority, requested: &Authority) -> bool {
    std::ptr::eq(current.as_str(), requested.as_str()) || current == requested
}

/// A connection lent to one exchange.
#[derive(Debug)]
struct Lease {
    pool: Arc<Pool>,
    /// The pool's generation when lent (see [`PoolState::generation`]).
    generation: u64,
    sender: SendRequest<ProxyBody>,
}

/// The upstream's response body. Read to its end, it gives its connection
/// back to the worker's pool; dropped before that, the connection is
/// closed with it, since the rest of the body would still be on the wire.
#[derive(Debug)]
pub struct UpstreamBody {
    body: Incoming,
    lease: Option<Lease>,
    done: bool,
}

// === impl UpstreamBody ===

impl UpstreamBody {
    fn release(&mut self) {
        self.done = true;
        if let Some(lease) = self.lease.take() {
            lease.pool.give_back(lease.generation, lease.sender);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = std::task::ready!(Pin::new(&mut self.body).poll_frame(cx));
        match &frame {
            None => self.release(),
            // A broken body leaves the connection in an unknown state.
            Some(Err(_)) => self.lease = None,
            Some(Ok(_)) if self.body.is_end_stream() => self.release(),
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
        if self.lease.is_some() && self.body.is_end_stream() {
            self.release();
        }
    }
}
