//! The shared counter store: Redis (or Redis Cluster), so that replicas
//! meet one set of limits and one set of bans.
//!
//! Three rules shape it:
//!
//! - **One round trip per request.** A request's plan is one call of one
//!   Lua script (`plan.lua`) that reads and updates every counter and takes
//!   the time from Redis `TIME`. Every key of a plan shares one hash tag
//!   (the route's name), so the script touches one Cluster slot. Writes
//!   that follow the decision (refused attempts, bans, login outcomes) are
//!   queued and sent by a background writer ([`writer`]), merged per hash
//!   tag, never awaited by a request. A request on a proxy worker's own
//!   single-threaded runtime calls through a connection of that worker's
//!   ([`worker`]), so no request is handed to another thread and back.
//! - **Never wait on Redis that is not there.** Every call has a short
//!   timeout. A failed call marks Redis down; from then on requests use the
//!   in-process counters at once (fail open, or answer 503 on routes set
//!   to fail closed) while one probe task reconnects in the background and
//!   marks Redis up again when a `PING` succeeds.
//! - **The in-process store is always warm.** Every plan also runs against
//!   a local [`LocalStore`], which counts this replica's own traffic: a
//!   fallback starts from what the replica saw, not from zero. Denials
//!   (bans, exhausted limits) are remembered ([`denials`]), and a request
//!   that would only be refused again costs no Redis call.
//!
//! Bans reach other replicas through Redis itself: the ban check is part
//! of every login request's script, and replicas remember only denials,
//! never the absence of a ban, so a ban set by one replica holds on the
//! others from their next request. A ban that could not be written (Redis
//! down, a failed write) is kept and written when Redis answers again.

mod admin;
mod denials;
mod script;
mod settings;
mod worker;
mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use tokio::sync::mpsc;

pub use script::redis_key;
pub use settings::{RedisSettings, RedisTarget, TimeSource, redact_url};

use super::{CounterOp, CounterPlan, CounterReadings, LocalStore};
use crate::clock::{Nanos, SharedClock};
use crate::error::Error;
use crate::metrics::StoreMetrics;
use denials::Denials;
use writer::{PendingBans, WriteJob};

/// A live connection; every kind is a cheap handle to clone.
#[derive(Clone)]
enum Connection {
    /// The store's shared connection to one Redis: reconnects by itself.
    Single(redis::aio::ConnectionManager),
    /// A worker thread's own connection to one Redis ([`worker`]): replaced
    /// after an outage instead.
    Worker(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Connection {
    async fn invoke(&mut self, invocation: &redis::ScriptInvocation<'_>) -> redis::RedisResult<redis::Value> {
        match self {
            Connection::Single(connection) => invocation.invoke_async(connection).await,
            Connection::Worker(connection) => invocation.invoke_async(connection).await,
            Connection::Cluster(connection) => invocation.invoke_async(connection).await,
        }
    }

    /// Run a script call built as a command (`EVALSHA`); when Redis does
    /// not know the script (a restart, `SCRIPT FLUSH`), load it and retry.
    async fn eval(&mut self, command: &redis::Cmd, source: &str) -> redis::RedisResult<redis::Value> {
        match self.query(command).await {
            Err(error) if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                let mut load = redis::cmd("SCRIPT");
                load.arg("LOAD").arg(source);
                self.query(&load).await?;
                self.query(command).await
            }
            other => other,
        }
    }

    async fn query(&mut self, command: &redis::Cmd) -> redis::RedisResult<redis::Value> {
        match self {
            Connection::Single(connection) => command.query_async(connection).await,
            Connection::Worker(connection) => command.query_async(connection).await,
            Connection::Cluster(connection) => command.query_async(connection).await,
        }
    }
}

struct Shared {
    settings: RedisSettings,
    script: redis::Script,
    local: LocalStore,
    clock: SharedClock,
    connection: ArcSwapOption<Connection>,
    /// Whether requests go to Redis. Only the change from up to down
    /// starts a probe, and only a probe sets it up again.
    up: AtomicBool,
    /// Counts the changes from up to down: a worker's connection opened
    /// before the last one is not used again ([`worker`]).
    generation: AtomicU64,
    denials: Denials,
    pending_bans: PendingBans,
    writes: mpsc::Sender<WriteJob>,
    metrics: Arc<StoreMetrics>,
}

/// The Redis-backed counter store. See the module documentation.
#[derive(Clone)]
pub struct RedisStore {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("target", &self.shared.settings.target)
            .field("up", &self.shared.up.load(Ordering::Relaxed))
            .finish()
    }
}

impl RedisStore {
    /// Start the store: try to connect once (bounded by the connect
    /// timeout), and start the background writer. Redis being unreachable
    /// is not an error: the store starts in fallback and keeps probing.
    /// Must be called within a Tokio runtime.
    pub async fn start(settings: RedisSettings, clock: SharedClock) -> Result<RedisStore, Error> {
        settings.validate()?;
        let (writes, queue) = mpsc::channel(settings.write_queue.max(1));
        let shared = Arc::new(Shared {
            script: redis::Script::new(script::SOURCE),
            local: LocalStore::with_budget(clock.clone(), settings.local_budget),
            clock,
            connection: ArcSwapOption::empty(),
            up: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            denials: Denials::default(),
            pending_bans: PendingBans::default(),
            writes,
            metrics: Arc::new(StoreMetrics::default()),
            settings,
        });
        shared.metrics.set_up(false);
        if shared.check().await {
            shared.mark_up();
        } else {
            tracing::warn!(target = ?shared.settings.target, "Redis unreachable at start: counting locally until it answers");
            tokio::spawn(probe(shared.clone()));
        }
        tokio::spawn(writer::run(Arc::downgrade(&shared), queue));
        tokio::spawn(admin::follow_lifts(Arc::downgrade(&shared)));
        Ok(RedisStore { shared })
    }

    pub fn metrics(&self) -> Arc<StoreMetrics> {
        self.shared.metrics.clone()
    }

    /// Whether requests currently count in Redis.
    pub fn is_up(&self) -> bool {
        self.shared.up.load(Ordering::Relaxed)
    }

    /// The in-process counters this replica keeps beside Redis.
    pub fn local(&self) -> &LocalStore {
        &self.shared.local
    }

    /// Execute a plan: in Redis when it is up, locally otherwise. The
    /// readings say whether they came from the fallback.
    pub async fn execute(&self, plan: &CounterPlan, now: Nanos, readings: &mut CounterReadings) {
        let shared = &self.shared;
        let base = readings.len();
        shared.local.execute(plan, now, readings);
        if plan.is_empty() {
            return;
        }
        if shared.settings.cache_denials && shared.denials.answer(plan, now, base, readings) {
            shared.metrics.cached_denials.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let connection = match shared.connection.load_full() {
            Some(connection) if shared.up.load(Ordering::Relaxed) => connection,
            _ => {
                shared.metrics.fallback_requests.fetch_add(1, Ordering::Relaxed);
                readings.set_degraded(true);
                return;
            }
        };
        let own = worker::connection(shared);
        let connection = own.as_ref().unwrap_or(&connection);
        let layout = script::layout(plan);
        let reply = shared.call(connection, plan, &layout, Some(now), shared.settings.timeout).await;
        let mut remote = Vec::new();
        let decoded = match reply {
            Ok((reply, elapsed)) => {
                shared.metrics.roundtrip.record(elapsed);
                script::decode(plan, &layout, &reply, &mut remote)
            }
            .map_err(|error| {
                tracing::error!(%error, "the Redis counter script replied in an unexpected shape; using local counters");
                shared.metrics.record_error("reply");
            }),
            Err(kind) => {
                shared.mark_down(kind);
                Err(())
            }
        };
        match decoded {
            Ok(_) => {
                shared.denials.remember_readings(plan, &remote, now);
                // The local readings' keys are the plan's, as Redis' are:
                // only the values change.
                for (index, reading) in remote.into_iter().enumerate() {
                    readings.replace(base + index, reading);
                }
            }
            Err(()) => {
                shared.metrics.fallback_requests.fetch_add(1, Ordering::Relaxed);
                readings.set_degraded(true);
            }
        }
    }

    /// A plan that only writes (after the decision, after the outcome):
    /// counted locally at once, sent to Redis by the background writer.
    pub fn write(&self, plan: CounterPlan, now: Nanos) {
        let shared = &self.shared;
        shared.local.apply(&plan, now);
        for op in plan.ops() {
            if let CounterOp::Ban { key, ttl, reason } = op {
                shared.denials.remember(key, now, *ttl);
                shared.pending_bans.add(plan.shard_key(), key, now, *ttl, reason);
            }
        }
        if plan.is_empty() {
            return;
        }
        if !shared.up.load(Ordering::Relaxed) {
            shared.metrics.writes_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if shared.writes.try_send(WriteJob::Plan(plan, now)).is_err() {
            shared.metrics.writes_dropped.fetch_add(1, Ordering::Relaxed);
            shared.pending_bans.retry_all();
        }
    }

    /// Wait until every write queued so far has been sent (or dropped
    /// because Redis is down): at shutdown, and where a test needs a
    /// sequence of requests to see each other's outcomes.
    pub async fn flush(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.shared.writes.send(WriteJob::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

impl Shared {
    /// One script call, bounded by `timeout`; the kind of failure.
    async fn call(
        &self,
        connection: &Connection,
        plan: &CounterPlan,
        layout: &script::Layout<'_>,
        now: Option<Nanos>,
        timeout: Duration,
    ) -> Result<(redis::Value, Duration), &'static str> {
        let time = now.filter(|_| self.settings.time == TimeSource::Clock);
        let command = script::command(self.script.get_hash(), plan, layout, &self.settings.key_prefix, time);
        let mut connection = connection.clone();
        let started = Instant::now();
        match tokio::time::timeout(timeout, connection.eval(&command, script::SOURCE)).await {
            Ok(Ok(reply)) => Ok((reply, started.elapsed())),
            Ok(Err(error)) => {
                tracing::debug!(%error, "Redis call failed");
                Err("error")
            }
            Err(_) => Err("timeout"),
        }
    }

    /// A request's call failed: count locally from now on and probe.
    fn mark_down(self: &Arc<Self>, kind: &'static str) {
        self.metrics.record_error(kind);
        if self.up.swap(false, Ordering::Relaxed) {
            self.generation.fetch_add(1, Ordering::Release);
            tracing::warn!(kind, "Redis unavailable: counting locally until it answers again");
            self.metrics.set_up(false);
            tokio::spawn(probe(self.clone()));
        }
    }

    fn mark_up(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!(target = ?self.settings.target, "Redis available: counting in shared state");
            self.metrics.set_up(true);
            // Bans made while Redis was away go out now.
            self.pending_bans.retry_all();
            let _ = self.writes.try_send(WriteJob::Wake);
        }
    }

    /// Whether Redis can take a request's script now: connect when there is
    /// no connection, then a call that must answer within the request
    /// timeout. A failure drops the connection so the next try starts over.
    async fn check(&self) -> bool {
        let connection = match self.connection.load_full() {
            Some(connection) => connection,
            None => match tokio::time::timeout(self.settings.connect_timeout, self.connect(true)).await {
                Ok(Ok(connection)) => {
                    let connection = Arc::new(connection);
                    self.connection.store(Some(connection.clone()));
                    connection
                }
                Ok(Err(error)) => {
                    tracing::debug!(%error, "Redis connect failed");
                    return false;
                }
                Err(_) => return false,
            },
        };
        let healthy = match &*connection {
            Connection::Single(_) | Connection::Worker(_) => {
                // A script with nothing to do: loads the script if Redis
                // lost it, and proves scripts run in time.
                let empty = CounterPlan::default();
                let timeout = self.settings.timeout.max(Duration::from_millis(1));
                self.call(&connection, &empty, &script::layout(&empty), None, timeout).await.is_ok()
            }
            Connection::Cluster(cluster) => {
                // One node answering is not enough: every slot must be served.
                let mut cluster = cluster.clone();
                let mut command = redis::cmd("CLUSTER");
                command.arg("INFO");
                let info = command.query_async::<String>(&mut cluster);
                matches!(
                    tokio::time::timeout(self.settings.connect_timeout, info).await,
                    Ok(Ok(info)) if info.contains("cluster_state:ok")
                )
            }
        };
        if !healthy {
            self.connection.store(None);
        }
        healthy
    }

    /// A new connection: for one Redis, `shared` is the store's own (which
    /// reconnects by itself), or else a worker's (which is replaced).
    async fn connect(&self, shared: bool) -> redis::RedisResult<Connection> {
        match &self.settings.target {
            RedisTarget::Single(url) if !shared => {
                let client = redis::Client::open(url.as_str())?;
                // No response timeout of its own: every call has the
                // request's.
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.settings.connect_timeout))
                    .set_response_timeout(None);
                Ok(Connection::Worker(client.get_multiplexed_async_connection_with_config(&config).await?))
            }
            RedisTarget::Single(url) => {
                let client = redis::Client::open(url.as_str())?;
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.settings.connect_timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(self.settings.retry_interval);
                Ok(Connection::Single(redis::aio::ConnectionManager::new_with_config(client, config).await?))
            }
            RedisTarget::Cluster(nodes) => {
                let client = redis::cluster::ClusterClientBuilder::new(nodes.iter().map(String::as_str))
                    .connection_timeout(self.settings.connect_timeout)
                    .retries(0)
                    .build()?;
                Ok(Connection::Cluster(client.get_async_connection().await?))
            }
        }
    }
}

/// Check Redis every retry interval until it can take requests again,
/// then mark it up and stop. Started only by the change from up to down.
async fn probe(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(shared.settings.retry_interval).await;
        if shared.check().await {
            shared.mark_up();
            return;
        }
    }
}
