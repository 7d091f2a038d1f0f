//! State every connection of the proxy reads: the compiled configuration
//! (swapped on reload), metrics, the decision log and the connection
//! counts, shared by all workers; the upstream pool, which each worker
//! owns; and what is known about one connection. The server fills it, the
//! handler reads it; neither imports the other.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;

use super::App;
use super::connections::ConnectionLimiter;
use super::forward::UpstreamClient;
use super::pending::PendingOutcomes;
use crate::decision_log::DecisionLog;
use crate::metrics::Metrics;

/// What one worker's connections read: the current compiled
/// configuration (swapped atomically on reload), metrics, the decision log,
/// the pending outcomes and the connection counts, all shared with every
/// other worker; and the worker's own upstream connection pool.
#[derive(Debug)]
pub struct Runtime {
    /// Shared with the admin API, which reloads it too.
    pub app: Arc<ArcSwap<App>>,
    pub metrics: Arc<Metrics>,
    pub log: DecisionLog,
    /// This worker's pool: an upstream connection is used only by the
    /// thread that opened it, so a request and the connection it goes out
    /// on are served by one thread with no hand-off between threads.
    pub client: UpstreamClient,
    /// Sidecar mode: allowed logins waiting for their outcome report (an
    /// outcome may come in on another worker than its login).
    pub pending: Arc<Mutex<PendingOutcomes>>,
    /// Client connections open, per address and in all.
    pub connections: Arc<ConnectionLimiter>,
}

impl Runtime {
    /// The state for another worker: everything shared, but a pool of
    /// its own.
    pub fn for_worker(&self, client: UpstreamClient) -> Runtime {
        Runtime {
            app: self.app.clone(),
            metrics: self.metrics.clone(),
            log: self.log.clone(),
            client,
            pending: self.pending.clone(),
            connections: self.connections.clone(),
        }
    }

    /// The logins waiting for an outcome (a poisoned lock is still usable:
    /// the map is consistent after every operation).
    pub fn pending_outcomes(&self) -> MutexGuard<'_, PendingOutcomes> {
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What is known about a client connection before any request on it.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The socket peer (the client, or a proxy in front of it).
    pub peer: SocketAddr,
    /// The JA4 fingerprint of the TLS ClientHello, when palisade terminates TLS.
    pub ja4: Option<Arc<str>>,
    /// The client certificate the TLS handshake verified (mutual TLS).
    pub client_cert: Option<Arc<crate::view::ClientCert>>,
}
