//! Accepting connections, serving them with hyper (HTTP/1.1 and HTTP/2 on
//! the same port), connection caps (per client address and in all), idle
//! and header timeouts, configuration reload, and graceful shutdown that
//! lets in-flight requests finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::connections::{ConnectionLimiter, ConnectionSlot, Refusal};
use super::forward::UpstreamClient;
use super::idle::{ActivityClock, InFlight, Tracked};
use super::pending::PendingOutcomes;
use super::runtime::{ConnectionInfo, Runtime};
use super::tls::TlsSettings;
use super::wire_head::{HeadRecorder, WireHeads};
use super::woken::Gate;
use super::{App, ProxyBody};
use crate::decision_log::DecisionLog;
use crate::metrics::Metrics;

#[derive(Debug)]
pub struct Server {
    runtime: Arc<Runtime>,
}

/// A started server: its addresses and the handle to stop it.
#[derive(Debug)]
pub struct Running {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    runtime: Arc<Runtime>,
    admin: Arc<crate::admin::AdminContext<App>>,
    shutdown: watch::Sender<bool>,
    /// Done when every accept loop is (their connections drained).
    finished: tokio::task::JoinHandle<()>,
    /// Lets the worker threads end, once dropped.
    release: Vec<oneshot::Sender<()>>,
}

/// A stopped server whose worker threads are kept until this is dropped,
/// for whatever work they still carry for others (see
/// [`Server::bind_and_start`]).
#[derive(Debug)]
pub struct Stopped {
    _release: Vec<oneshot::Sender<()>>,
}

impl Server {
    pub fn new(app: App, log: DecisionLog, metrics: Arc<Metrics>) -> Self {
        if let crate::store::CounterStore::Redis(redis) = &**app.pipeline().store() {
            metrics.attach_store(redis.metrics());
        }
        metrics.attach_local_store(app.pipeline().store().local_gauges());
        let client = UpstreamClient::new(app.proxy.timeouts.upstream_connect);
        let pending = match &app.proxy.sidecar {
            Some(sidecar) => PendingOutcomes::new(sidecar.outcome_wait, sidecar.max_pending_outcomes),
            None => PendingOutcomes::new(std::time::Duration::from_secs(30), 1),
        };
        let pending = Arc::new(std::sync::Mutex::new(pending));
        let app = Arc::new(ArcSwap::from_pointee(app));
        let connections = Arc::new(ConnectionLimiter::new());
        Server { runtime: Arc::new(Runtime { app, metrics, log, client, pending, connections }) }
    }

    /// Bind the configured addresses and start serving with `workers`
    /// threads (at least one). Each worker is a thread with a
    /// current-thread runtime, its own listening socket on the listen
    /// address (`SO_REUSEPORT`: the kernel spreads new connections over
    /// them) and its own upstream pool, so a request is read, decided,
    /// forwarded and answered on one thread; a multi-thread runtime handed
    /// each request between threads, which cost more CPU than the decision
    /// (see benches/README.md). Configuration, metrics, the decision log and
    /// the connection counts stay shared by all workers. The admin listener,
    /// store maintenance and reloads run on the caller's runtime.
    pub async fn bind_and_start(self, workers: usize) -> std::io::Result<Running> {
        let (listen, admin) = {
            let app = self.runtime.app.load();
            (app.proxy.listen, app.proxy.admin)
        };
        let proxy = bind_workers(listen, workers.max(1)).map_err(|e| bind_error(listen, "listen", e))?;
        let admin = TcpListener::bind(admin).await.map_err(|e| bind_error(admin, "admin", e))?;
        self.start_workers(proxy, admin)
    }

    /// Serve on listeners the caller bound (tests bind port 0), with the
    /// connections on the caller's runtime.
    pub fn start(self, proxy: TcpListener, admin: TcpListener) -> std::io::Result<Running> {
        let proxy_addr = proxy.local_addr()?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (admin_addr, admin) = self.start_admin(admin, shutdown_rx.clone())?;
        let finished = tokio::spawn(accept_loop(self.runtime.clone(), proxy, shutdown_rx));
        Ok(Running { proxy_addr, admin_addr, runtime: self.runtime, admin, shutdown, finished, release: Vec::new() })
    }

    /// Serve each of `listeners` on a worker thread of its own.
    fn start_workers(self, listeners: Vec<std::net::TcpListener>, admin: TcpListener) -> std::io::Result<Running> {
        let proxy_addr = match listeners.first() {
            Some(listener) => listener.local_addr()?,
            None => return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "no listener to serve")),
        };
        let connect_timeout = self.runtime.app.load().proxy.timeouts.upstream_connect;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (admin_addr, admin) = self.start_admin(admin, shutdown_rx.clone())?;
        let mut finished = Vec::with_capacity(listeners.len());
        let mut releases = Vec::with_capacity(listeners.len());
        for (index, listener) in listeners.into_iter().enumerate() {
            let worker = Arc::new(self.runtime.for_worker(UpstreamClient::new(connect_timeout)));
            let (done, done_rx) = oneshot::channel::<()>();
            let (release, released) = oneshot::channel::<()>();
            // If a later worker fails to start, dropping `shutdown` and
            // `releases` on the way out stops the ones already started.
            let thread = std::thread::Builder::new().name(format!("palisade-worker-{index}"));
            let shutdown_rx = shutdown_rx.clone();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let listener = {
                let _entered = runtime.enter();
                TcpListener::from_std(listener)?
            };
            thread.spawn(move || {
                runtime.block_on(async move {
                    accept_loop(worker, listener, shutdown_rx).await;
                    let _ = done.send(());
                    // Tasks started on this thread that others still use
                    // (a Redis connection reconnected by a request here)
                    // run until the process has flushed what it owes.
                    let _ = released.await;
                });
            })?;
            finished.push(done_rx);
            releases.push(release);
        }
        let finished = tokio::spawn(async move {
            for worker in finished {
                let _ = worker.await;
            }
        });
        Ok(Running { proxy_addr, admin_addr, runtime: self.runtime, admin, shutdown, finished, release: releases })
    }

    /// The admin listener and store maintenance on the caller's runtime; the
    /// caller adds the client connections' accept loops. The admin
    /// listener's address and the admin API's context.
    fn start_admin(
        &self,
        admin: TcpListener,
        shutdown_rx: watch::Receiver<bool>,
    ) -> std::io::Result<(SocketAddr, Arc<crate::admin::AdminContext<App>>)> {
        let admin_addr = admin.local_addr()?;
        let runtime = self.runtime.clone();
        let admin_context = Arc::new(crate::admin::AdminContext::new(
            runtime.app.clone(),
            runtime.metrics.clone(),
            runtime.log.clone(),
        ));
        tokio::spawn(crate::admin::serve(admin, admin_context.clone(), shutdown_rx.clone()));
        tokio::spawn(maintain_store(runtime, shutdown_rx));
        Ok((admin_addr, admin_context))
    }
}

/// Pending connections the kernel queues per listening socket (tokio's
/// own default for `TcpListener::bind`).
const LISTEN_BACKLOG: u32 = 1024;

/// `count` listening sockets on `addr` with `SO_REUSEPORT`, so that each
/// worker accepts on its own and the kernel spreads connections over them
/// (one shared socket would wake every worker for each connection). Port 0
/// picks a port for the first and binds the others to the same one.
fn bind_workers(addr: SocketAddr, count: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let socket = |addr: SocketAddr| if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() };
    if addr.port() != 0 {
        // SO_REUSEPORT would let a second palisade on the same port share
        // its connections silently; a plain bind fails if anything listens
        // there, as binding without it always did.
        let probe = socket(addr)?;
        probe.set_reuseaddr(true)?;
        probe.bind(addr)?;
    }
    let mut addr = addr;
    let mut listeners = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = socket(addr)?;
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(LISTEN_BACKLOG)?;
        addr = listener.local_addr()?;
        listeners.push(listener.into_std()?);
    }
    Ok(listeners)
}

/// How often the counter store drops what has expired, whatever the
/// traffic: the keys of clients who went quiet must not wait for other
/// requests to be pruned.
const STORE_MAINTENANCE: Duration = Duration::from_secs(2);

async fn maintain_store(runtime: Arc<Runtime>, mut shutdown: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(STORE_MAINTENANCE);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.changed() => return,
        }
        let app = runtime.app.load();
        let pipeline = app.pipeline();
        let now = pipeline.clock().now();
        let store = pipeline.store().clone();
        // A full pass locks each shard in turn for a few milliseconds at
        // most; off the async workers all the same.
        let _ = tokio::task::spawn_blocking(move || store.maintain(now)).await;
    }
}

fn bind_error(addr: SocketAddr, what: &str, error: std::io::Error) -> std::io::Error {
    std::io::Error::new(error.kind(), format!("cannot bind the {what} address {addr}: {error}"))
}

impl Running {
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.runtime.metrics
    }

    /// Swap in a new compiled configuration; requests already running keep
    /// the one they started with.
    pub fn reload(&self, app: App) {
        <App as crate::admin::Served>::swap_in(&self.runtime.app, app, &self.runtime.metrics);
    }

    /// How the admin API reloads (what SIGHUP does); without one it
    /// answers that this process has no configuration file to reload.
    pub fn set_reloader(&self, reloader: crate::admin::Reloader<App>) {
        self.admin.set_reloader(reloader);
    }

    pub fn record_failed_reload(&self) {
        self.runtime.metrics.reloads_failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Stop accepting, let in-flight requests finish (up to the grace
    /// period), then return. The worker threads end when the returned
    /// [`Stopped`] is dropped.
    pub async fn shutdown(self) -> Stopped {
        let _ = self.shutdown.send(true);
        let _ = self.finished.await;
        Stopped { _release: self.release }
    }
}

async fn accept_loop(runtime: Arc<Runtime>, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    let tracker = TaskTracker::new();
    // Cancelled when the grace period is over: whatever is still open then
    // is dropped, so `shutdown` really leaves nothing serving behind it.
    let force_close = CancellationToken::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let accepted = Instant::now();
                    // Read per connection, so a reload's new certificate (and limits) serve new connections.
                    let app = runtime.app.load();
                    let tls = app.proxy.tls.clone();
                    let Some(slot) = admit(&runtime, &app, &stream, peer, tls.is_some()) else { continue };
                    drop(app);
                    let _ = stream.set_nodelay(true);
                    match tls {
                        None => {
                            let connection = ConnectionInfo { peer, ja4: None, client_cert: None };
                            tracker.spawn(serve_connection(runtime.clone(), stream, connection, (accepted, slot), shutdown.clone(), force_close.clone()));
                        }
                        Some(tls) => {
                            tracker.spawn(serve_tls(runtime.clone(), stream, peer, tls, (accepted, slot), shutdown.clone(), force_close.clone()));
                        }
                    }
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    tracker.close();
    let grace = runtime.app.load().proxy.timeouts.shutdown_grace;
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(remaining = tracker.len(), "shutdown grace period over; closing remaining connections");
        force_close.cancel();
        tracker.wait().await;
    }
}

/// A place for a new connection, or a refusal: a client address over its
/// cap, or the process at its cap (near the file-descriptor limit). Plain
/// HTTP connections are told why (429 or 503, `Retry-After`) in one write
/// that never waits; TLS ones are just closed, as no handshake happened.
fn admit(runtime: &Arc<Runtime>, app: &App, stream: &TcpStream, peer: SocketAddr, tls: bool) -> Option<ConnectionSlot> {
    let limits = &app.proxy.limits;
    let peer_ip = crate::cidr::canonical_ip(peer.ip());
    let exempt = app.proxy.trusted_proxies.contains(peer_ip);
    let max_total = runtime.connections.max_connections(limits.max_connections);
    let ordering = std::sync::atomic::Ordering::Relaxed;
    match runtime.connections.admit(peer_ip, exempt, limits.max_connections_per_client, max_total) {
        Ok(slot) => Some(slot),
        Err(refusal) => {
            let answer: &[u8] = match refusal {
                Refusal::ClientFull => {
                    runtime.metrics.connections_refused_client.fetch_add(1, ordering);
                    b"HTTP/1.1 429 Too Many Requests\r\nconnection: close\r\nretry-after: 1\r\ncontent-length: 0\r\n\r\n"
                }
                Refusal::ServerFull => {
                    runtime.metrics.connections_refused_capacity.fetch_add(1, ordering);
                    b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\nretry-after: 1\r\ncontent-length: 0\r\n\r\n"
                }
            };
            if !tls {
                let _ = stream.try_write(answer);
            }
            tracing::debug!(%peer, ?refusal, "connection refused");
            None
        }
    }
}

/// Terminate TLS on an accepted connection (reading its ClientHello for
/// JA4 first), then serve HTTP on it. The ClientHello and the handshake
/// must both arrive within the header read timeout; a connection that
/// fails either is closed and affects no other.
async fn serve_tls(
    runtime: Arc<Runtime>,
    stream: TcpStream,
    peer: SocketAddr,
    tls: TlsSettings,
    admitted: (Instant, ConnectionSlot),
    shutdown: watch::Receiver<bool>,
    force_close: CancellationToken,
) {
    let header_read = runtime.app.load().proxy.timeouts.header_read;
    let handshake = tokio::select! {
        handshake = tokio::time::timeout(header_read, super::tls::accept(stream, &tls)) => handshake,
        _ = force_close.cancelled() => return,
    };
    match handshake {
        Ok(Ok((stream, ja4))) => {
            let client_cert = super::tls::client_cert(&stream).map(Arc::new);
            let connection = ConnectionInfo { peer, ja4, client_cert };
            serve_connection(runtime, stream, connection, admitted, shutdown, force_close).await;
        }
        Ok(Err(refused)) => tracing::debug!(%peer, %refused, "TLS connection closed"),
        Err(_) => tracing::debug!(%peer, "no TLS handshake within the header read timeout; closed"),
    }
}

/// Serve HTTP on an accepted stream (plain TCP, or TLS once the handshake
/// is done) until the client leaves, it idles out, or shutdown.
async fn serve_connection<S>(
    runtime: Arc<Runtime>,
    stream: S,
    connection_info: ConnectionInfo,
    (accepted, _slot): (Instant, ConnectionSlot),
    mut shutdown: watch::Receiver<bool>,
    force_close: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = connection_info.peer;
    let connection_info = Arc::new(connection_info);
    let (limits, timeouts) = {
        let app = runtime.app.load();
        (app.proxy.limits.clone(), app.proxy.timeouts)
    };
    let max_connections = runtime.connections.max_connections(limits.max_connections);
    let activity = ActivityClock::new(accepted);
    let wire_heads = WireHeads::default();
    let recorder = HeadRecorder::new(wire_heads.clone(), limits.max_header_bytes, limits.max_headers);
    let io = TokioIo::new(Tracked::new(stream, activity.clone(), Some(recorder)));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let mut http1 = builder.http1();
    http1
        .timer(TokioTimer::new())
        // The head deadline is kept below, from accept (see `idle`); hyper's
        // would restart on every keep-alive wait.
        .header_read_timeout(None::<Duration>)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    // hyper's own limit is 100, in slots on the stack; a limit set (even to
    // 100) makes it allocate and fill two arrays of that many for every
    // head it parses (~1.7k instructions per request). Set only when it
    // differs: the same limit either way.
    if limits.max_headers != HYPER_MAX_HEADERS {
        http1.max_headers(limits.max_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes.min(u32::MAX as usize) as u32)
        .keep_alive_interval(Some(h2_ping_interval(timeouts.idle)))
        .keep_alive_timeout(Duration::from_secs(20));
    let service_runtime = runtime.clone();
    let service_activity = activity.clone();
    let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
        let runtime = service_runtime.clone();
        let connection = connection_info.clone();
        let wire_heads = wire_heads.clone();
        let in_flight = service_activity.request_started(request.version() == http::Version::HTTP_2);
        async move {
            // Read per request, so a reload can switch between proxy and
            // sidecar; the proxy's handler serves with the same load.
            let app = runtime.app.load_full();
            let response = match app.proxy.sidecar.clone() {
                Some(settings) => {
                    // The sidecar loads what it needs itself.
                    drop(app);
                    super::sidecar::handle(runtime, request, connection, settings).await
                }
                None => super::handler::handle(runtime, app, request, connection, wire_heads).await,
            };
            Ok::<_, std::convert::Infallible>(response?.map(|inner| InFlightBody { inner, _in_flight: in_flight }))
        }
    });
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    // The activity clock notes moving bytes only when checked, so a
    // connection is seen idle up to two checks late: every timeout/8 keeps
    // that within the quarter of the timeout an idle/4 check used to give.
    let shortest = timeouts.idle.min(timeouts.header_read);
    let mut idle_check = tokio::time::interval((shortest / 8).clamp(Duration::from_millis(10), Duration::from_secs(1)));
    let mut draining = *shutdown.borrow();
    let mut draining_since = None;
    if draining {
        connection.as_mut().graceful_shutdown();
        draining_since = Some(Instant::now());
    }
    let ordering = std::sync::atomic::Ordering::Relaxed;
    // The watchdogs are polled only when one of them woke the task, not on
    // every read and write of the connection (see `woken`).
    let gate = Gate::default();
    loop {
        let watched = {
            let watchdogs = std::pin::pin!(async {
                tokio::select! {
                    _ = force_close.cancelled() => Watchdog::ForceClose,
                    _ = shutdown.changed(), if !draining => Watchdog::Shutdown,
                    _ = idle_check.tick() => Watchdog::IdleCheck,
                }
            });
            tokio::select! {
                biased;
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "client connection ended with an error");
                    }
                    break;
                }
                watched = gate.wrap(watchdogs) => watched,
            }
        };
        match watched {
            // Grace period over: dropping the connection closes the socket.
            Watchdog::ForceClose => break,
            Watchdog::Shutdown => {
                draining = true;
                draining_since = Some(Instant::now());
                connection.as_mut().graceful_shutdown();
            }
            Watchdog::IdleCheck => {
                // Near the connection cap, connections that only sit there
                // give their place to ones that will send requests.
                let pressure = runtime.connections.under_pressure(max_connections);
                let limit = |timeout: Duration| {
                    let timeout = if pressure { timeout.min(SHED_AFTER) } else { timeout };
                    timeout.as_millis() as u64
                };
                if activity.head_waiting_ms().is_some_and(|waited| waited >= limit(timeouts.header_read)) {
                    // No complete head in time (from accept for the first):
                    // nothing was asked, so closing loses nothing.
                    let counter = if pressure {
                        &runtime.metrics.connections_shed
                    } else {
                        &runtime.metrics.connections_head_timeout
                    };
                    counter.fetch_add(1, ordering);
                    tracing::debug!(%peer, "no request head within the header read timeout; closed");
                    break;
                }
                let idle_ms = activity.idle_ms();
                if draining {
                    // A client told to go (GOAWAY, `Connection: close`) that
                    // stays without anything in flight is closed, not waited
                    // on until pings time out.
                    if draining_since.is_some_and(|since: Instant| since.elapsed() >= DRAIN_AFTER)
                        && activity.in_flight() == 0
                    {
                        break;
                    }
                } else if idle_ms >= limit(timeouts.idle) {
                    if pressure && idle_ms < timeouts.idle.as_millis() as u64 {
                        runtime.metrics.connections_shed.fetch_add(1, ordering);
                    }
                    draining = true;
                    draining_since = Some(Instant::now());
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// What woke a client connection's loop besides the connection itself.
enum Watchdog {
    ForceClose,
    Shutdown,
    IdleCheck,
}

/// hyper's limit on the headers of a request when none is set
/// (`DEFAULT_MAX_HEADERS`, private to hyper; `tests/listen_header_limits.rs`
/// holds palisade to it).
const HYPER_MAX_HEADERS: usize = 100;

/// Under connection pressure, how long a connection may wait for a head
/// or sit idle before it is shed.
const SHED_AFTER: Duration = Duration::from_secs(2);

/// How long a connection told to close (idle, shutdown) may stay open
/// with nothing in flight before it is dropped.
const DRAIN_AFTER: Duration = Duration::from_secs(2);

/// A response body that marks its request finished when it is done or
/// dropped, so the connection knows whether it is between requests.
struct InFlightBody {
    inner: ProxyBody,
    _in_flight: InFlight,
}

impl hyper::body::Body for InFlightBody {
    type Data = bytes::Bytes;
    type Error = super::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// How often hyper pings a quiet HTTP/2 client. A ping and its answer are
/// bytes moving, which is exactly what the idle check looks for, so pings
/// more frequent than the idle timeout would keep every idle HTTP/2
/// connection open for ever. Pinging only well past the idle timeout leaves
/// idle connections to the idle check, and pings still find dead peers
/// where it does not look (connections draining after shutdown).
fn h2_ping_interval(idle: Duration) -> Duration {
    (idle * 2).max(Duration::from_secs(20))
}
