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
//!   queued and sent by a background writer, merged per hash tag, never
//!   awaited by a request.
//! - **Never wait on Redis that is not there.** Every call has a short
//!   timeout. A failed call marks Redis down; from then on requests use the
//!   in-process counters at once (fail open, or answer 503 on routes set
//!   to fail closed) while one probe task reconnects in the background and
//!   marks Redis up again when a `PING` succeeds.
//! - **The in-process store is always warm.** Every plan also runs against
//!   a local [`LocalStore`], which counts this replica's own traffic: a
//!   fallback starts from what the replica saw, not from zero. Denials
//!   (bans, exhausted limits) are remembered locally until they expire, and
//!   a request whose key is already denied costs no Redis call.
//!
//! Bans reach other replicas through Redis itself: the ban check is part
//! of every login request's script, and replicas cache only denials, never
//! the absence of a ban, so a ban set by one replica holds on the others
//! from their next request.

mod script;
mod settings;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use tokio::sync::mpsc;

pub use script::{SOURCE as SCRIPT_SOURCE, redis_key};
pub use settings::{RedisSettings, RedisTarget, TimeSource};

use super::{CounterOp, CounterPlan, CounterReadings, GcraReading, Key, LocalStore, Reading};
use crate::clock::{Nanos, SharedClock};
use crate::metrics::StoreMetrics;

/// What the background writer is asked to do.
enum WriteJob {
    Plan(CounterPlan),
    /// Answer once every write queued before has been sent.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// A live connection; both kinds are cheap handles to clone.
#[derive(Clone)]
enum Connection {
    Single(redis::aio::ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Connection {
    async fn invoke(&mut self, invocation: &redis::ScriptInvocation<'_>) -> redis::RedisResult<redis::Value> {
        match self {
            Connection::Single(connection) => invocation.invoke_async(connection).await,
            Connection::Cluster(connection) => invocation.invoke_async(connection).await,
        }
    }

    /// Whether Redis can take scripts again. For a Cluster, a `PING` that
    /// one node answers is not enough: the cluster must cover every slot.
    async fn ping(&mut self) -> redis::RedisResult<()> {
        match self {
            Connection::Single(connection) => redis::cmd("PING").query_async::<()>(connection).await,
            Connection::Cluster(connection) => {
                let info: String = redis::cmd("CLUSTER").arg("INFO").query_async(connection).await?;
                if info.contains("cluster_state:ok") {
                    Ok(())
                } else {
                    Err(redis::RedisError::from((redis::ErrorKind::Client, "cluster_state is not ok")))
                }
            }
        }
    }
}

struct Shared {
    settings: RedisSettings,
    script: redis::Script,
    local: LocalStore,
    clock: SharedClock,
    connection: ArcSwapOption<Connection>,
    up: AtomicBool,
    probing: AtomicBool,
    denials: std::sync::Mutex<hashbrown::HashMap<Key, Nanos>>,
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

/// Denials remembered at most this long, whatever Redis said: a ban lifted
/// by hand in Redis is honoured within this time.
const MAX_CACHED_DENIAL: Duration = Duration::from_secs(60);
const MAX_CACHED_DENIALS: usize = 100_000;
/// Plans the writer merges into one script call per hash tag.
const WRITE_BATCH: usize = 256;

impl RedisStore {
    /// Start the store: try to connect once (bounded by the connect
    /// timeout), and start the background writer. Redis being unreachable
    /// is not an error: the store starts in fallback and keeps probing.
    /// Must be called within a Tokio runtime.
    pub async fn start(settings: RedisSettings, clock: SharedClock) -> Result<RedisStore, String> {
        settings.validate()?;
        let (writes, queue) = mpsc::channel(settings.write_queue.max(1));
        let store = RedisStore {
            shared: Arc::new(Shared {
                script: redis::Script::new(script::SOURCE),
                local: LocalStore::new(clock.clone()),
                clock,
                connection: ArcSwapOption::empty(),
                up: AtomicBool::new(false),
                probing: AtomicBool::new(true),
                denials: Default::default(),
                writes,
                metrics: Arc::new(StoreMetrics::default()),
                settings,
            }),
        };
        store.shared.metrics.set_up(false);
        if !store.shared.try_connect().await {
            tracing::warn!(target = ?store.shared.settings.target, "Redis unreachable at start: counting locally until it answers");
        }
        if !store.shared.up.load(Ordering::Relaxed) {
            tokio::spawn(probe(store.shared.clone()));
        } else {
            store.shared.probing.store(false, Ordering::Relaxed);
        }
        tokio::spawn(write_behind(Arc::downgrade(&store.shared), queue));
        Ok(store)
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
        if shared.settings.cache_denials && shared.answer_from_denials(plan, now, base, readings) {
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
        match shared.round_trip(&connection, plan, now).await {
            Ok((reply, _)) => {
                let mut remote = CounterReadings::default();
                match script::decode(plan, &reply, &mut remote) {
                    Ok(_) => {
                        shared.remember_denials(plan, &remote, now);
                        readings.truncate(base);
                        readings.append(remote);
                    }
                    Err(error) => {
                        tracing::error!(%error, "Redis counter script replied in an unexpected shape; using local counters");
                        shared.metrics.record_error("reply");
                        shared.metrics.fallback_requests.fetch_add(1, Ordering::Relaxed);
                        readings.set_degraded(true);
                    }
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
        let mut readings = CounterReadings::default();
        shared.local.execute(&plan, now, &mut readings);
        for op in plan.ops() {
            if let CounterOp::Ban { key, ttl } = op {
                shared.remember_denial(key, now, *ttl);
            }
        }
        if plan.is_empty() || !shared.up.load(Ordering::Relaxed) {
            return;
        }
        if shared.writes.try_send(WriteJob::Plan(plan)).is_err() {
            shared.metrics.writes_dropped.fetch_add(1, Ordering::Relaxed);
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
    /// One script call, timed and bounded; a failure marks Redis down.
    async fn round_trip(
        self: &Arc<Self>,
        connection: &Connection,
        plan: &CounterPlan,
        now: Nanos,
    ) -> Result<(redis::Value, Duration), ()> {
        let mut invocation = self.script.prepare_invoke();
        let time = (self.settings.time == TimeSource::Clock).then_some(now);
        script::encode(plan, &self.settings.key_prefix, time, &mut invocation);
        let mut connection = connection.clone();
        let started = Instant::now();
        let result = tokio::time::timeout(self.settings.timeout, connection.invoke(&invocation)).await;
        let elapsed = started.elapsed();
        match result {
            Ok(Ok(reply)) => {
                self.metrics.roundtrip.record(elapsed);
                Ok((reply, elapsed))
            }
            Ok(Err(error)) => {
                self.mark_down("error", &error.to_string());
                Err(())
            }
            Err(_) => {
                self.mark_down("timeout", &format!("no answer within {:?}", self.settings.timeout));
                Err(())
            }
        }
    }

    fn mark_down(self: &Arc<Self>, kind: &'static str, detail: &str) {
        self.metrics.record_error(kind);
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(kind, detail, "Redis unavailable: counting locally until it answers again");
            self.metrics.set_up(false);
        }
        if !self.probing.swap(true, Ordering::Relaxed) {
            tokio::spawn(probe(self.clone()));
        }
    }

    /// Connect when there is no connection, then `PING`. Marks Redis up on
    /// success; on failure drops the connection so the next try starts over.
    async fn try_connect(&self) -> bool {
        let connection = match self.connection.load_full() {
            Some(connection) => connection,
            None => match tokio::time::timeout(self.settings.connect_timeout, self.connect()).await {
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
        let mut pinger = (*connection).clone();
        match tokio::time::timeout(self.settings.connect_timeout, pinger.ping()).await {
            Ok(Ok(())) => {
                if !self.up.swap(true, Ordering::Relaxed) {
                    tracing::info!(target = ?self.settings.target, "Redis available: counting in shared state");
                }
                self.metrics.set_up(true);
                true
            }
            _ => {
                self.connection.store(None);
                false
            }
        }
    }

    async fn connect(&self) -> redis::RedisResult<Connection> {
        match &self.settings.target {
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

    /// Answer the plan from remembered denials when one of its limits or
    /// bans is known to be in force: no Redis call until it runs out.
    fn answer_from_denials(&self, plan: &CounterPlan, now: Nanos, base: usize, readings: &mut CounterReadings) -> bool {
        let denials = self.denials.lock().expect("denial cache poisoned");
        if denials.is_empty() {
            return false;
        }
        let mut denied = false;
        for (index, op) in plan.ops().iter().enumerate() {
            let Some(&until) = denials.get(op.key()).filter(|until| **until > now) else { continue };
            let left = Duration::from_nanos(until - now);
            match op {
                CounterOp::Gcra { .. } => {
                    readings.replace(base + index, Reading::Gcra(GcraReading::Limited { retry_after: left }));
                    denied = true;
                }
                CounterOp::BanCheck { .. } => {
                    readings.replace(base + index, Reading::Ban(Some(left)));
                    denied = true;
                }
                _ => {}
            }
        }
        denied
    }

    fn remember_denials(&self, plan: &CounterPlan, readings: &CounterReadings, now: Nanos) {
        for (op, (_, reading)) in plan.ops().iter().zip(readings.entries()) {
            match reading {
                Reading::Gcra(GcraReading::Limited { retry_after }) => {
                    self.remember_denial(op.key(), now, *retry_after)
                }
                Reading::Ban(Some(left)) => self.remember_denial(op.key(), now, *left),
                _ => {}
            }
        }
    }

    fn remember_denial(&self, key: &Key, now: Nanos, left: Duration) {
        let until = now + left.min(MAX_CACHED_DENIAL).as_nanos() as u64;
        let mut denials = self.denials.lock().expect("denial cache poisoned");
        if denials.len() >= MAX_CACHED_DENIALS {
            denials.retain(|_, until| *until > now);
        }
        if denials.len() < MAX_CACHED_DENIALS {
            let entry = denials.entry(key.clone()).or_insert(until);
            *entry = (*entry).max(until);
        }
    }
}

/// Reconnect in the background until Redis answers, then stop.
async fn probe(shared: Arc<Shared>) {
    loop {
        if shared.try_connect().await {
            shared.probing.store(false, Ordering::Relaxed);
            return;
        }
        tokio::time::sleep(shared.settings.retry_interval).await;
    }
}

/// Send queued writes, merging the plans waiting at one time into one
/// script call per hash tag. Ends when the store is dropped.
async fn write_behind(shared: std::sync::Weak<Shared>, mut queue: mpsc::Receiver<WriteJob>) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while queue.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        let Some(shared) = shared.upgrade() else { return };
        let mut merged: Vec<CounterPlan> = Vec::new();
        let mut flushed = Vec::new();
        for job in batch.drain(..) {
            match job {
                WriteJob::Plan(plan) => match merged.iter_mut().find(|m| m.shard() == plan.shard()) {
                    Some(into) => into.extend(plan),
                    None => merged.push(plan),
                },
                WriteJob::Flush(done) => flushed.push(done),
            }
        }
        if let Some(connection) = shared.connection.load_full().filter(|_| shared.up.load(Ordering::Relaxed)) {
            for plan in &merged {
                let now = shared.clock.now();
                if shared.round_trip(&connection, plan, now).await.is_err() {
                    break;
                }
            }
        }
        for done in flushed {
            let _ = done.send(());
        }
    }
}
