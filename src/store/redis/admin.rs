//! What the admin API asks of the shared store: list the bans in force,
//! lift one everywhere, and hear about bans lifted through other replicas.
//!
//! None of this is on a request's path. Bans are listed from each shard's
//! ban index (a sorted set the counter script keeps beside the bans). A
//! lift deletes the ban from Redis and appends its key to a small stream,
//! the lift feed; every replica reads the feed about once a second and
//! forgets the lifted ban where it remembered it (its denial cache, its
//! local counters, its not-yet-written bans), so the client's next request
//! passes on every replica, not only on the one that lifted it.

use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::Value;

use super::script::{ban_index, entry, group_and_field, redis_key};
use super::{Connection, RedisStore, Shared};
use crate::clock::Nanos;
use crate::error::Error;
use crate::store::{BanEntry, Key};

/// How often a replica reads the lift feed.
const LIFT_POLL: Duration = Duration::from_millis(500);
/// Lifts kept in the feed (older ones are trimmed; a replica that was away
/// longer re-learns from Redis on each client's next request anyway).
const FEED_LENGTH: usize = 1000;

/// Deletes a ban with the other counters of its scope (the group and its
/// distinct-count sketches) and its index entry, in one step; replies 1
/// when a ban was there (an entry `;NAME=` in the group's text).
const LIFT_SCRIPT: &str = r"
local group = redis.call('GET', KEYS[1])
local held = group and string.find(group, ';' .. ARGV[1] .. '=', 1, true)
redis.call('DEL', KEYS[1], KEYS[3], KEYS[4])
redis.call('ZREM', KEYS[2], ARGV[2])
if held then return 1 else return 0 end
";

fn feed_key(prefix: &str) -> String {
    format!("{prefix}:lifts")
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        Value::Int(n) => Some(n.to_string()),
        Value::Double(n) => Some(n.to_string()),
        _ => None,
    }
}

fn items(value: &Value) -> &[Value] {
    match value {
        Value::Array(items) | Value::Set(items) => items,
        _ => &[],
    }
}

impl RedisStore {
    /// The bans in force under `shards`, from Redis; this replica's own
    /// when Redis is unavailable.
    pub async fn bans(&self, shards: &[Key], now: Nanos) -> Vec<BanEntry> {
        match self.shared.remote_bans(shards).await {
            Some(bans) => bans,
            None => self.shared.local.bans(now),
        }
    }

    /// Lift a ban here and in Redis, and tell the other replicas.
    pub async fn lift(&self, shard: &Key, key: &str, now: Nanos) -> Result<bool, Error> {
        let shared = &self.shared;
        let here = shared.forget_ban(key, now);
        let connection = shared.live_connection().ok_or_else(|| {
            Error::store(
                "Redis is unavailable: the ban was lifted on this replica only; lift it again when Redis is back",
            )
        })?;
        let prefix = &shared.settings.key_prefix;
        let (group, field) = group_and_field(key);
        let script = redis::Script::new(LIFT_SCRIPT);
        let mut invocation = script.prepare_invoke();
        // The scope's distinct-username sketches, named as `script::command` names them.
        let sketch = redis_key(prefix, shard, &format!("{group}:users"));
        invocation.key(redis_key(prefix, shard, group)).key(ban_index(prefix, shard));
        invocation.key(format!("{sketch}:e")).key(format!("{sketch}:o")).arg(field).arg(key);
        let mut conn = (*connection).clone();
        let removed = tokio::time::timeout(shared.settings.write_timeout, conn.invoke(&invocation))
            .await
            .map_err(|_| Error::store("Redis did not answer in time"))?
            .map_err(|error| Error::store(format!("Redis: {error}")))?;
        let mut announce = redis::cmd("XADD");
        announce.arg(feed_key(prefix)).arg("MAXLEN").arg("~").arg(FEED_LENGTH).arg("*").arg("key").arg(key);
        tokio::time::timeout(shared.settings.write_timeout, conn.query(&announce))
            .await
            .map_err(|_| Error::store("Redis did not answer in time"))?
            .map_err(|error| Error::store(format!("Redis: {error}")))?;
        Ok(here || matches!(removed, Value::Int(n) if n > 0))
    }
}

impl Shared {
    fn live_connection(&self) -> Option<Arc<Connection>> {
        self.connection.load_full().filter(|_| self.up.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Forget a lifted ban wherever this replica remembers it.
    fn forget_ban(&self, key: &str, now: Nanos) -> bool {
        self.denials.forget(key);
        self.pending_bans.remove(key);
        self.local.lift(key, now)
    }

    async fn remote_bans(&self, shards: &[Key]) -> Option<Vec<BanEntry>> {
        let mut connection = (*self.live_connection()?).clone();
        let timeout = self.settings.write_timeout;
        let time = tokio::time::timeout(timeout, connection.query(&redis::cmd("TIME"))).await.ok()?.ok()?;
        let parts: Vec<u64> = items(&time).iter().filter_map(|v| text(v)?.parse().ok()).collect();
        let now_us = parts.first()? * 1_000_000 + parts.get(1)?;
        let prefix = &self.settings.key_prefix;
        let mut bans = Vec::new();
        for shard in shards {
            let mut range = redis::cmd("ZRANGE");
            range.arg(ban_index(prefix, shard)).arg(now_us).arg("+inf").arg("BYSCORE").arg("WITHSCORES");
            let listed = tokio::time::timeout(timeout, connection.query(&range)).await.ok()?.ok()?;
            for pair in items(&listed).chunks(2) {
                let (Some(key), Some(ends)) = (text(&pair[0]), pair.get(1).and_then(text)) else { continue };
                let Ok(ends) = ends.parse::<f64>() else { continue };
                let (group, field) = group_and_field(&key);
                let mut get = redis::cmd("GET");
                get.arg(redis_key(prefix, shard, group));
                let stored = tokio::time::timeout(timeout, connection.query(&get)).await.ok()?.ok()?;
                let stored = text(&stored).unwrap_or_default();
                // The index may name a ban lifted by hand: the group decides.
                let Some((held, why)) = entry(&stored, field).map(|ban| ban.split_once(',').unwrap_or((ban, "")))
                else {
                    continue;
                };
                let Ok(held) = held.parse::<f64>() else { continue };
                let left_us = held.min(ends) - now_us as f64;
                if left_us <= 0.0 {
                    continue;
                }
                bans.push(BanEntry {
                    key: key.clone(),
                    left: Duration::from_micros(left_us as u64),
                    reason: why.to_string(),
                });
            }
        }
        bans.sort_by(|a, b| a.key.cmp(&b.key));
        Some(bans)
    }
}

/// Read the lift feed until the store is dropped, forgetting every ban
/// lifted through any replica (this one's own lifts included: harmless).
pub async fn follow_lifts(shared: Weak<Shared>) {
    let mut last_seen: Option<String> = None;
    let mut first = true;
    loop {
        // The first look is at once, so that a lift made right after this
        // replica started is not taken for an old one.
        if !std::mem::take(&mut first) {
            tokio::time::sleep(LIFT_POLL).await;
        }
        let Some(shared) = shared.upgrade() else { return };
        let Some(connection) = shared.live_connection() else { continue };
        let mut connection = (*connection).clone();
        let feed = feed_key(&shared.settings.key_prefix);
        let timeout = shared.settings.write_timeout;
        let Some(since) = last_seen.clone() else {
            // Start from the newest lift: earlier ones were in Redis already.
            let mut newest = redis::cmd("XREVRANGE");
            newest.arg(&feed).arg("+").arg("-").arg("COUNT").arg(1);
            if let Ok(Ok(reply)) = tokio::time::timeout(timeout, connection.query(&newest)).await {
                let id = items(&reply).first().and_then(|entry| items(entry).first()).and_then(text);
                last_seen = Some(id.unwrap_or_else(|| "0-0".to_string()));
            }
            continue;
        };
        let mut read = redis::cmd("XRANGE");
        read.arg(&feed).arg(format!("({since}")).arg("+").arg("COUNT").arg(100);
        let Ok(Ok(reply)) = tokio::time::timeout(timeout, connection.query(&read)).await else { continue };
        let now = shared.clock.now();
        for entry in items(&reply) {
            let entry = items(entry);
            let Some(id) = entry.first().and_then(text) else { continue };
            let fields = entry.get(1).map(items).unwrap_or_default();
            for pair in fields.chunks(2) {
                if let (Some(name), Some(key)) = (text(&pair[0]), pair.get(1).and_then(text))
                    && name == "key"
                {
                    shared.forget_ban(&key, now);
                }
            }
            last_seen = Some(id);
        }
    }
}
