//! The background writer: counter writes that follow a decision (refused
//! attempts, bans) or an upstream's answer (login outcomes), sent to Redis
//! without any request waiting for them.
//!
//! Whatever is queued at one time is merged into one script call per hash
//! tag (at most [`MAX_OPS_PER_CALL`] operations each), bounded by its own,
//! longer timeout: a slow write is counted, never a reason to send
//! requests to the fallback. Bans are special: one that could not be
//! written is kept ([`PendingBans`]) and sent again with the next batch, or
//! when Redis comes back, with the time it has left.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::Shared;
use crate::clock::Nanos;
use crate::store::{CounterOp, CounterPlan, Key};

/// Queued plans taken at once.
const BATCH: usize = 256;
/// Operations per script call: a long script would block Redis for every
/// other replica's requests.
const MAX_OPS_PER_CALL: usize = 512;

pub enum WriteJob {
    /// A plan and the time it was decided at.
    Plan(CounterPlan, Nanos),
    /// Answer once every write queued before has been sent.
    Flush(oneshot::Sender<()>),
    /// Look at the pending bans (Redis came back).
    Wake,
}

#[derive(Debug, Clone)]
struct PendingBan {
    shard: Key,
    until: Nanos,
    reason: Key,
    /// Send it with the next batch (a write of it failed or was dropped).
    retry: bool,
}

/// Bans not yet confirmed written to Redis.
#[derive(Debug, Default)]
pub struct PendingBans(Mutex<hashbrown::HashMap<Key, PendingBan>>);

impl PendingBans {
    pub fn add(&self, shard: &Key, key: &Key, now: Nanos, ttl: Duration, reason: &Key) {
        let until = now.saturating_add(ttl.as_nanos() as u64);
        let mut bans = self.0.lock().expect("pending bans poisoned");
        let ban = bans.entry(key.clone()).or_insert(PendingBan {
            shard: shard.clone(),
            until,
            reason: reason.clone(),
            retry: false,
        });
        ban.until = ban.until.max(until);
    }

    /// Forget a ban that was lifted, so it is never sent again.
    pub fn remove(&self, key: &str) {
        self.0.lock().expect("pending bans poisoned").remove(key);
    }

    /// Send every pending ban again with the next batch.
    pub fn retry_all(&self) {
        for ban in self.0.lock().expect("pending bans poisoned").values_mut() {
            ban.retry = true;
        }
    }

    fn confirm(&self, plan: &CounterPlan) {
        let mut bans = self.0.lock().expect("pending bans poisoned");
        for op in plan.ops() {
            if let CounterOp::Ban { key, .. } = op {
                bans.remove(key);
            }
        }
    }

    fn retry_later(&self, plan: &CounterPlan) {
        let mut bans = self.0.lock().expect("pending bans poisoned");
        for op in plan.ops() {
            if let CounterOp::Ban { key, .. } = op
                && let Some(ban) = bans.get_mut(key)
            {
                ban.retry = true;
            }
        }
    }

    /// Bans to send again, as plans per shard (those run out are dropped).
    fn take_retries(&self, now: Nanos) -> Vec<CounterPlan> {
        let mut bans = self.0.lock().expect("pending bans poisoned");
        bans.retain(|_, ban| ban.until > now);
        let mut plans: Vec<CounterPlan> = Vec::new();
        for (key, ban) in bans.iter_mut().filter(|(_, ban)| ban.retry) {
            ban.retry = false;
            let op = CounterOp::Ban {
                key: key.clone(),
                ttl: Duration::from_nanos(ban.until - now),
                reason: ban.reason.clone(),
            };
            match plans.iter_mut().find(|plan| plan.shard_key() == &ban.shard) {
                Some(plan) => plan.push(op),
                None => {
                    let mut plan = CounterPlan::new(ban.shard.clone());
                    plan.push(op);
                    plans.push(plan);
                }
            }
        }
        plans
    }
}

/// Merge plans per hash tag (and per time, when the scripts take the time
/// from the caller), splitting calls that would grow too long.
fn merge(batch: Vec<(CounterPlan, Nanos)>, by_time: bool) -> Vec<(CounterPlan, Nanos)> {
    let mut merged: Vec<(CounterPlan, Nanos)> = Vec::new();
    for (plan, now) in batch {
        let fits = |(into, at): &&mut (CounterPlan, Nanos)| {
            into.shard() == plan.shard()
                && (!by_time || *at == now)
                && into.ops().len() + plan.ops().len() <= MAX_OPS_PER_CALL
        };
        match merged.iter_mut().find(fits) {
            Some((into, _)) => into.extend(plan),
            None => merged.push((plan, now)),
        }
    }
    merged
}

/// What identifies repeats of one write in a merged plan: the kind of
/// operation, its key, its window (or half-life) and, for a distinct
/// count, the item.
type Repeat = (u8, Key, u128, u64);

/// Fold the repeats of a merged plan: every operation of one call runs at
/// the same time (the script's `TIME`, or one caller time: see [`merge`]),
/// so adds to one count or decayed sum sum up, a distinct item added twice
/// is added once, and reads (whose replies a write never uses) can go.
/// What is left changes the counters exactly as the plans one by one
/// would (a decayed sum up to the rounding of its last bit). Rate limits,
/// rhythms, bans and adds-if-held keep every operation, in order.
fn coalesce(plan: CounterPlan) -> CounterPlan {
    let mut out = CounterPlan::new(plan.shard_key().clone());
    let mut ops: Vec<CounterOp> = Vec::with_capacity(plan.ops().len());
    let mut seen: hashbrown::HashMap<Repeat, usize> = hashbrown::HashMap::new();
    for op in plan.ops() {
        let repeat = match op {
            CounterOp::Count { add: 0, .. } | CounterOp::Distinct { item: None, .. } | CounterOp::BanCheck { .. } => {
                continue;
            }
            CounterOp::Decay { add, .. } if *add == 0.0 => continue,
            CounterOp::Count { key, window, .. } => (0, key.clone(), window.as_nanos(), 0),
            CounterOp::Decay { key, half_life, .. } => (1, key.clone(), half_life.as_nanos(), 0),
            CounterOp::Distinct { key, window, item: Some(item) } => (2, key.clone(), window.as_nanos(), *item),
            other => {
                ops.push(other.clone());
                continue;
            }
        };
        match seen.get(&repeat).and_then(|&i| ops.get_mut(i)) {
            Some(CounterOp::Count { add: into, .. }) => {
                if let CounterOp::Count { add, .. } = op {
                    *into = into.saturating_add(*add);
                }
            }
            Some(CounterOp::Decay { add: into, .. }) => {
                if let CounterOp::Decay { add, .. } = op {
                    *into += *add;
                }
            }
            Some(_) => {}
            None => {
                seen.insert(repeat, ops.len());
                ops.push(op.clone());
            }
        }
    }
    for op in ops {
        out.push(op);
    }
    out
}

/// The writer task. Ends when the store is dropped.
pub async fn run(shared: Weak<Shared>, mut queue: mpsc::Receiver<WriteJob>) {
    let mut jobs = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut jobs, BATCH).await > 0 {
        let Some(shared) = shared.upgrade() else { return };
        let mut plans = Vec::new();
        let mut flushed = Vec::new();
        for job in jobs.drain(..) {
            match job {
                WriteJob::Plan(plan, now) => plans.push((plan, now)),
                WriteJob::Flush(done) => flushed.push(done),
                WriteJob::Wake => {}
            }
        }
        let now = shared.clock.now();
        plans.extend(shared.pending_bans.take_retries(now).into_iter().map(|plan| (plan, now)));
        let merged = merge(plans, shared.settings.time == super::TimeSource::Clock);
        send(&shared, merged.into_iter().map(|(plan, now)| (coalesce(plan), now)).filter(|(plan, _)| !plan.is_empty()))
            .await;
        for done in flushed {
            let _ = done.send(());
        }
    }
}

async fn send(shared: &Arc<Shared>, plans: impl Iterator<Item = (CounterPlan, Nanos)>) {
    let connection = shared.connection.load_full().filter(|_| shared.up.load(std::sync::atomic::Ordering::Relaxed));
    for (plan, now) in plans {
        let result = match &connection {
            Some(connection) => {
                let layout = super::script::layout(&plan);
                shared.call(connection, &plan, &layout, Some(now), shared.settings.write_timeout).await
            }
            None => Err("down"),
        };
        match result {
            Ok(_) => shared.pending_bans.confirm(&plan),
            Err(kind) => {
                if kind != "down" {
                    shared.metrics.record_error(if kind == "timeout" { "write_timeout" } else { "write_error" });
                }
                shared.metrics.writes_dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                shared.pending_bans.retry_later(&plan);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(shard: &str, ops: usize) -> CounterPlan {
        let mut plan = CounterPlan::new(Key::from(shard));
        for i in 0..ops {
            plan.push(CounterOp::Count { key: Key::from(format!("k{i}")), window: Duration::from_secs(60), add: 1 });
        }
        plan
    }

    #[test]
    fn merges_per_shard_and_caps_each_call() {
        let batch =
            vec![(plan("login", 300), 1), (plan("api", 1), 1), (plan("login", 300), 2), (plan("login", 100), 3)];
        let merged = merge(batch, false);
        let shape: Vec<(&str, usize)> = merged.iter().map(|(p, _)| (p.shard(), p.ops().len())).collect();
        assert_eq!(shape, [("login", 400), ("api", 1), ("login", 300)]);
        let by_time = merge(vec![(plan("login", 1), 1), (plan("login", 1), 2), (plan("login", 1), 2)], true);
        assert_eq!(by_time.len(), 2, "plans of different times stay apart when the time is the caller's");
    }

    #[test]
    fn merged_writes_fold_their_repeats() {
        let (key, other) = (Key::from("login:ip:ab:f"), Key::from("login:site:all:a0"));
        let minute = Duration::from_secs(60);
        let mut plan = CounterPlan::new(Key::from("login"));
        for _ in 0..3 {
            plan.push(CounterOp::Count { key: key.clone(), window: minute, add: 2 });
            plan.push(CounterOp::Count { key: key.clone(), window: minute, add: 0 });
            plan.push(CounterOp::Decay { key: other.clone(), half_life: minute, add: 1.0 });
            plan.push(CounterOp::Distinct { key: key.clone(), window: minute, item: Some(7) });
            plan.push(CounterOp::Rhythm { key: other.clone(), window: minute });
        }
        plan.push(CounterOp::Distinct { key: key.clone(), window: minute, item: Some(8) });
        plan.push(CounterOp::BanCheck { key: key.clone() });
        let folded = coalesce(plan);
        let rhythm = CounterOp::Rhythm { key: other.clone(), window: minute };
        assert_eq!(
            folded.ops(),
            [
                CounterOp::Count { key: key.clone(), window: minute, add: 6 },
                CounterOp::Decay { key: other.clone(), half_life: minute, add: 3.0 },
                CounterOp::Distinct { key: key.clone(), window: minute, item: Some(7) },
                rhythm.clone(),
                rhythm.clone(),
                rhythm,
                CounterOp::Distinct { key, window: minute, item: Some(8) },
            ]
        );
    }

    #[test]
    fn pending_bans_are_retried_with_the_time_they_have_left() {
        let bans = PendingBans::default();
        let (shard, key) = (Key::from("login"), Key::from("login:ip:ab:ban"));
        let reason = Key::from("cred.ip_failures");
        bans.add(&shard, &key, 0, Duration::from_secs(900), &reason);
        assert!(bans.take_retries(1).is_empty(), "not retried before a failure or a reconnect");
        bans.retry_all();
        let retries = bans.take_retries(100_000_000_000);
        assert_eq!(retries.len(), 1);
        assert_eq!(retries[0].ops(), [CounterOp::Ban { key: key.clone(), ttl: Duration::from_secs(800), reason }]);
        bans.confirm(&retries[0]);
        bans.retry_all();
        assert!(bans.take_retries(1).is_empty(), "confirmed bans are forgotten");
    }
}
