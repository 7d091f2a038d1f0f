//! A plan as one Lua script call, and the script's reply as readings.
//!
//! The script (`plan.lua`) keeps the same state the in-process store keeps
//! (GCRA arrival times, two fixed windows per count, two HyperLogLogs per
//! distinct count, decayed sums, bans as keys with a TTL) and replies with
//! raw window state; the numbers are computed here by the same functions
//! the in-process store uses, so both backends answer alike.

use std::time::Duration;

use redis::Value;

use crate::clock::Nanos;
use crate::config::RateLimitConfig;
use crate::store::window::{Rhythm, sliding_estimate};
use crate::store::{CounterOp, CounterPlan, CounterReadings, GcraReading, Reading};

pub const SOURCE: &str = include_str!("plan.lua");

fn micros(duration: Duration) -> u64 {
    (duration.as_micros() as u64).max(1)
}

/// GCRA emission interval and tolerance in microseconds, as governor
/// derives them from the same quota.
fn gcra_params(limit: &RateLimitConfig) -> (u64, u64) {
    let requests = u64::from(limit.requests.max(1));
    let period = Duration::from_secs(limit.period_secs.max(1));
    let interval = (period.as_micros() as u64 / requests).max(1);
    let burst = u64::from(limit.burst.unwrap_or(limit.requests).max(1));
    (interval, interval * (burst - 1))
}

/// The Redis key of a plan key: `PREFIX:{SHARD}:KEY`. The braces are a
/// Cluster hash tag, so every key of one plan lands in one slot.
pub fn redis_key(prefix: &str, shard: &str, key: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + shard.len() + key.len() + 4);
    out.push_str(prefix);
    out.push_str(":{");
    out.push_str(shard);
    out.push_str("}:");
    out.push_str(key);
    out
}

/// Fill `invocation` with the plan's keys and arguments. `now` overrides
/// Redis `TIME` (replaying a capture against Redis; tests).
pub fn encode(plan: &CounterPlan, prefix: &str, now: Option<Nanos>, invocation: &mut redis::ScriptInvocation<'_>) {
    invocation.arg(now.map(|n| (n / 1_000).to_string()).unwrap_or_default());
    let shard = plan.shard();
    for op in plan.ops() {
        match op {
            CounterOp::Gcra { key, limit } => {
                let (interval, tolerance) = gcra_params(limit);
                invocation.key(redis_key(prefix, shard, key)).arg("g").arg(interval).arg(tolerance);
            }
            CounterOp::Count { key, window, add } => {
                let (group, name) = group_and_field(key);
                invocation.key(redis_key(prefix, shard, group)).arg("c").arg(name).arg(micros(*window)).arg(*add);
            }
            CounterOp::Distinct { key, window, item } => {
                let (group, name) = group_and_field(key);
                let sketch = redis_key(prefix, shard, key);
                invocation.key(redis_key(prefix, shard, group)).key(format!("{sketch}:e")).key(format!("{sketch}:o"));
                invocation.arg("d").arg(name).arg(micros(*window));
                invocation.arg(item.map(|i| i.to_string()).unwrap_or_default());
            }
            CounterOp::DistinctIfHeld { key, window, item } => {
                let (group, name) = group_and_field(key);
                let sketch = redis_key(prefix, shard, key);
                invocation.key(redis_key(prefix, shard, group)).key(format!("{sketch}:e")).key(format!("{sketch}:o"));
                invocation.arg("h").arg(name).arg(micros(*window)).arg(item.to_string());
            }
            CounterOp::Decay { key, half_life, add } => {
                let (group, name) = group_and_field(key);
                invocation.key(redis_key(prefix, shard, group)).arg("y").arg(name);
                invocation.arg(micros(*half_life)).arg(format!("{add:e}"));
            }
            CounterOp::Rhythm { key, window } => {
                let (group, name) = group_and_field(key);
                invocation.key(redis_key(prefix, shard, group)).arg("r").arg(name).arg(micros(*window));
            }
            CounterOp::BanCheck { key } => {
                let (group, name) = group_and_field(key);
                invocation.key(redis_key(prefix, shard, group)).arg("b").arg(name);
            }
            CounterOp::Ban { key, ttl, reason } => {
                let (group, name) = group_and_field(key);
                invocation.key(redis_key(prefix, shard, group)).key(ban_index(prefix, shard));
                invocation.arg("B").arg(name).arg(micros(*ttl)).arg(&**reason).arg(&**key);
            }
        }
    }
}

/// The sorted set of a shard's bans (member: the ban's key, score: when
/// it ends, in microseconds), so that they can be listed without scanning.
pub fn ban_index(prefix: &str, shard: &str) -> String {
    redis_key(prefix, shard, "bans")
}

/// The group hash a counter lives in, and its field name there: the key
/// up to its last `:` (one scope, e.g. one client address), and the rest
/// (`f`, `s`, `users`, …). A key without `:` is a group of its own.
pub fn group_and_field(key: &str) -> (&str, &str) {
    match key.rsplit_once(':') {
        Some((group, name)) if !group.is_empty() && !name.is_empty() => (group, name),
        _ => (key, "_"),
    }
}

/// A reply the script should never give: a bug or a foreign script under
/// the same SHA.
#[derive(Debug)]
pub struct BadReply(pub String);

impl std::fmt::Display for BadReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unexpected reply from the counter script: {}", self.0)
    }
}

fn int(value: &Value) -> Result<i64, BadReply> {
    match value {
        Value::Int(n) => Ok(*n),
        Value::BulkString(bytes) => {
            std::str::from_utf8(bytes).ok().and_then(|s| s.parse().ok()).ok_or_else(|| BadReply(format!("{value:?}")))
        }
        other => Err(BadReply(format!("{other:?}"))),
    }
}

fn float(value: &Value) -> Result<f64, BadReply> {
    match value {
        Value::Int(n) => Ok(*n as f64),
        Value::BulkString(bytes) => {
            std::str::from_utf8(bytes).ok().and_then(|s| s.parse().ok()).ok_or_else(|| BadReply(format!("{value:?}")))
        }
        other => Err(BadReply(format!("{other:?}"))),
    }
}

fn array(value: &Value) -> Result<&[Value], BadReply> {
    match value {
        Value::Array(items) => Ok(items),
        other => Err(BadReply(format!("{other:?}"))),
    }
}

/// Turn the script's reply into readings, in plan order. Returns the time
/// the script ran at.
pub fn decode(plan: &CounterPlan, reply: &Value, readings: &mut CounterReadings) -> Result<Nanos, BadReply> {
    let items = array(reply)?;
    if items.len() != plan.ops().len() + 1 {
        return Err(BadReply(format!("{} items for {} operations", items.len(), plan.ops().len())));
    }
    let now = int(&items[0])?.max(0) as u64 * 1_000;
    for (op, item) in plan.ops().iter().zip(&items[1..]) {
        let reading = match op {
            CounterOp::Gcra { .. } => {
                let pair = array(item)?;
                if pair.len() != 2 {
                    return Err(BadReply(format!("{item:?}")));
                }
                if int(&pair[0])? == 1 {
                    Reading::Gcra(GcraReading::Allowed)
                } else {
                    let wait = Duration::from_micros(int(&pair[1])?.max(0) as u64);
                    Reading::Gcra(GcraReading::Limited { retry_after: wait.max(Duration::from_millis(1)) })
                }
            }
            CounterOp::Count { window, .. } => {
                let state = array(item)?;
                if state.len() != 3 {
                    return Err(BadReply(format!("{item:?}")));
                }
                let width = (window.as_nanos() as u64).max(1);
                let (index, current, previous) = (int(&state[0])?, int(&state[1])?, int(&state[2])?);
                Reading::Number(sliding_estimate(
                    now / width,
                    (now % width) as f64 / width as f64,
                    index.max(0) as u64,
                    current.max(0) as u64,
                    previous.max(0) as u64,
                ))
            }
            CounterOp::Distinct { .. } | CounterOp::DistinctIfHeld { .. } => Reading::Number(int(item)?.max(0) as f64),
            CounterOp::Decay { .. } => Reading::Number(float(item)?),
            CounterOp::Rhythm { .. } => {
                let state = array(item)?;
                if state.len() != 3 {
                    return Err(BadReply(format!("{item:?}")));
                }
                let gaps = u32::try_from(int(&state[0])?.max(0)).unwrap_or(u32::MAX);
                Reading::Number(Rhythm::variation(gaps, float(&state[1])?, float(&state[2])?))
            }
            CounterOp::BanCheck { .. } => {
                let left = int(item)?;
                Reading::Ban((left > 0).then(|| Duration::from_micros(left as u64)))
            }
            CounterOp::Ban { .. } => Reading::Done,
        };
        readings.push(op.key().clone(), reading);
    }
    Ok(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_parameters_match_governor_quota() {
        let limit = RateLimitConfig { requests: 30, period_secs: 60, burst: Some(20) };
        assert_eq!(gcra_params(&limit), (2_000_000, 38_000_000));
        let quota = crate::store::local::quota(&limit);
        assert_eq!(quota.replenish_interval(), Duration::from_micros(2_000_000));
        assert_eq!(quota.burst_size().get(), 20);
    }

    #[test]
    fn counters_of_one_scope_share_a_group() {
        assert_eq!(group_and_field("login:ip:ab:f"), ("login:ip:ab", "f"));
        assert_eq!(group_and_field("login:site:all:a0"), ("login:site:all", "a0"));
        assert_eq!(group_and_field("seen"), ("seen", "_"));
    }

    #[test]
    fn keys_share_one_hash_tag_per_plan() {
        assert_eq!(redis_key("palisade", "login", "login:ip:ab:f"), "palisade:{login}:login:ip:ab:f");
    }
}
