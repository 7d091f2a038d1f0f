//! A plan as one Lua script call, and the script's reply as readings.
//!
//! The script (`plan.lua`) keeps the same state the in-process store keeps
//! (GCRA arrival times, two fixed windows per count, two HyperLogLogs per
//! distinct count, decayed sums, bans as fields of their scope's hash with
//! their end time) and replies with raw window state; the numbers are
//! computed here by the same functions the in-process store uses, so both
//! backends answer alike.
//!
//! The call is built as one `EVALSHA` command (one buffer, not one
//! allocation per argument): the operations of one group hash are sent
//! together ([`order`]), each key once, and counters that are only read
//! carry no window, so a login's call has about half the arguments it
//! would have op by op.

use std::fmt::Write as _;
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

/// The layout of the keys and values the script keeps, part of every key:
/// replicas of a release with another layout count under other keys (a
/// rolling upgrade does not mix them), and the old keys run out by their
/// TTLs. `v2`: each scope's counters in one string value (`v1`, unnamed,
/// kept them as fields of a hash).
const LAYOUT: &str = "v2";

/// The Redis key of a plan key: `PREFIX:{SHARD}:LAYOUT:KEY`. The braces are
/// a Cluster hash tag, so every key of one plan lands in one slot.
pub fn redis_key(prefix: &str, shard: &str, key: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + shard.len() + LAYOUT.len() + key.len() + 5);
    out.push_str(prefix);
    out.push_str(":{");
    out.push_str(shard);
    out.push_str("}:");
    out.push_str(LAYOUT);
    out.push(':');
    out.push_str(key);
    out
}

/// How a plan is sent, worked out once per call (the command and the
/// reply's decoding both need it; walking the plan and splitting its keys
/// once for each was a tenth of palisade's CPU per login with Redis).
pub struct Layout<'p> {
    /// The order the script runs the operations in: those of one group
    /// together (in plan order among themselves), groups in the order
    /// they first appear. Operations of different groups touch different
    /// keys, so the order between groups changes nothing; each group is
    /// then read and written once per call.
    pub order: Vec<usize>,
    /// By operation: its group's key (up to the last `:`) or, for a GCRA
    /// limit, its own key; and its field in the group.
    units: Vec<(&'p str, &'p str)>,
    /// By position in the order: a group or a limit starts here.
    starts: Vec<bool>,
    /// By operation: read from its group's text, not sent to the script.
    text: Vec<bool>,
    /// By position in the order: a group starts here whose text is sent (`R`).
    raw: Vec<bool>,
    /// Keys sent: one per group and limit.
    keys: usize,
    bans: bool,
}

/// Work out how `plan` is sent.
///
/// Counts and decayed sums only read, and ban checks, are read from their
/// group's text (as the script read it, before this call's writes) unless
/// an operation of this call before them wrote the same counter: the
/// script then reads them itself (`C`, `Y`, `b`). A group with a distinct
/// count sends its text too: a kept count that holds is read from it (the
/// script answers `=`).
pub fn layout(plan: &CounterPlan) -> Layout<'_> {
    let ops = plan.ops();
    let mut units = Vec::with_capacity(ops.len());
    let mut tags = Vec::with_capacity(ops.len());
    let mut gcra = Vec::with_capacity(ops.len());
    for op in ops {
        let (unit, field) = match op {
            CounterOp::Gcra { key, .. } => (&**key, ""),
            other => group_and_field(other.key()),
        };
        units.push((unit, field));
        gcra.push(matches!(op, CounterOp::Gcra { .. }));
    }
    if ops.len() <= 64 {
        // A request's few groups: a scan is cheaper than hashing.
        let mut seen: Vec<(bool, &str)> = Vec::new();
        for (i, &(unit, _)) in units.iter().enumerate() {
            let unit = (gcra[i], unit);
            let tag = seen.iter().position(|u| *u == unit).unwrap_or_else(|| {
                seen.push(unit);
                seen.len() - 1
            });
            tags.push(tag);
        }
    } else {
        // A merged write of many requests.
        let mut seen: hashbrown::HashMap<(bool, &str), usize> = hashbrown::HashMap::new();
        for (i, &(unit, _)) in units.iter().enumerate() {
            let next = seen.len();
            tags.push(*seen.entry((gcra[i], unit)).or_insert(next));
        }
    }
    let mut order: Vec<usize> = (0..ops.len()).collect();
    order.sort_by_key(|&i| tags[i]);
    let mut starts = vec![false; order.len()];
    let mut text = vec![false; ops.len()];
    let mut raw = vec![false; order.len()];
    let mut written: Vec<&str> = Vec::new();
    let mut group_start = None;
    let mut keys = 0;
    let mut bans = false;
    for (position, &i) in order.iter().enumerate() {
        let op = &ops[i];
        // Every limit is a unit of its own (taken once per operation).
        if gcra[i] || position == 0 || tags[order[position - 1]] != tags[i] {
            starts[position] = true;
            keys += 1;
            group_start = (!gcra[i]).then_some(position);
        }
        bans |= matches!(op, CounterOp::Ban { .. });
        let only_read = matches!(op, CounterOp::Count { add: 0, .. } | CounterOp::BanCheck { .. })
            || matches!(op, CounterOp::Decay { add, .. } if *add == 0.0);
        if only_read && !written.contains(&&**op.key()) {
            text[i] = true;
        } else if !only_read {
            written.push(op.key());
        }
        let distinct = matches!(op, CounterOp::Distinct { .. } | CounterOp::DistinctIfHeld { .. });
        if let Some(start) = group_start.filter(|_| text[i] || distinct) {
            raw[start] = true;
        }
    }
    Layout { order, units, starts, text, raw, keys, bans }
}

/// Write `PREFIX:{SHARD}:LAYOUT:KEY` and a suffix into `out` and append it to `command`.
fn key_arg(command: &mut redis::Cmd, out: &mut String, base: &str, key: &str, suffix: &str) {
    out.clear();
    out.push_str(base);
    out.push_str(key);
    out.push_str(suffix);
    command.arg(out.as_bytes());
}

/// A ban's reason as the group's text can hold it: the text separates
/// entries with `;`, names from values with `=`, values with `,`, and
/// the reply separates values with spaces. Detection ids have none of them.
fn reason_text(reason: &str, out: &mut String) {
    out.clear();
    out.extend(reason.chars().map(|c| if matches!(c, ';' | '=' | ',' | ' ') || c.is_control() { '_' } else { c }));
}

/// The script call for a plan, with its operations in the layout's order: the keys of
/// its groups and rate limits (and the ban index), then one `G` (or `R`)
/// per group and its operations. `now` overrides Redis
/// `TIME` (replaying a capture against Redis; tests).
pub fn command(hash: &str, plan: &CounterPlan, layout: &Layout, prefix: &str, now: Option<Nanos>) -> redis::Cmd {
    let ops = plan.ops();
    let shard = plan.shard();
    let base = redis_key(prefix, shard, "");
    let keys = layout.keys + usize::from(layout.bans);
    let mut command = redis::Cmd::with_capacity(5 + keys + 4 * ops.len(), 48 * keys + 24 * ops.len());
    command.arg("EVALSHA").arg(hash).arg(keys);
    let mut scratch = String::with_capacity(base.len() + 48);
    // The groups and rate limits, in the order used; then the ban index.
    for (position, &i) in layout.order.iter().enumerate() {
        if layout.starts[position] {
            key_arg(&mut command, &mut scratch, &base, layout.units[i].0, "");
        }
    }
    if layout.bans {
        key_arg(&mut command, &mut scratch, &base, "bans", "");
    }
    match now {
        Some(now) => command.arg(now / 1_000),
        None => command.arg(""),
    };
    command.arg(layout.keys);
    for (position, &i) in layout.order.iter().enumerate() {
        let op = &ops[i];
        let field = layout.units[i].1;
        if layout.starts[position] && !matches!(op, CounterOp::Gcra { .. }) {
            command.arg(if layout.raw[position] { "R" } else { "G" });
        }
        if layout.text[i] {
            continue;
        }
        match op {
            CounterOp::Gcra { limit, .. } => {
                let (interval, tolerance) = gcra_params(limit);
                command.arg("g").arg(interval).arg(tolerance);
            }
            // Reads need neither window nor half-life: Rust computes them.
            CounterOp::Count { add: 0, .. } => {
                command.arg("C").arg(field);
            }
            CounterOp::Count { window, add, .. } => {
                command.arg("c").arg(field).arg(micros(*window)).arg(*add);
            }
            CounterOp::Decay { add, .. } if *add == 0.0 => {
                command.arg("Y").arg(field);
            }
            CounterOp::Distinct { window, item, .. } => {
                command.arg("d").arg(field).arg(micros(*window));
                match item {
                    Some(item) => command.arg(*item),
                    None => command.arg(""),
                };
            }
            CounterOp::DistinctIfHeld { window, item, .. } => {
                command.arg("h").arg(field).arg(micros(*window)).arg(*item);
            }
            CounterOp::Decay { half_life, add, .. } => {
                scratch.clear();
                let _ = write!(scratch, "{add:e}");
                command.arg("y").arg(field).arg(micros(*half_life)).arg(scratch.as_bytes());
            }
            CounterOp::Rhythm { window, .. } => {
                command.arg("r").arg(field).arg(micros(*window));
            }
            CounterOp::BanCheck { .. } => {
                command.arg("b").arg(field);
            }
            CounterOp::Ban { key, ttl, reason } => {
                reason_text(reason, &mut scratch);
                command.arg("B").arg(field).arg(micros(*ttl)).arg(scratch.as_bytes()).arg(&**key);
            }
        }
    }
    command
}

/// A group's entries as the script stores them (`;NAME=V1,V2;…`): the
/// entry `name`'s text, if any.
pub fn entry<'a>(group: &'a str, name: &str) -> Option<&'a str> {
    group.split(';').find_map(|entry| entry.strip_prefix(name)?.strip_prefix('='))
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

/// A whole number the script wrote (Lua writes numbers of 1e14 and more
/// with an exponent).
fn int(text: &str) -> Result<i64, BadReply> {
    text.parse::<i64>()
        .or_else(|_| text.parse::<f64>().map(|n| n as i64))
        .map_err(|_| BadReply(format!("{text:?} is not a number")))
}

fn float(text: &str) -> Result<f64, BadReply> {
    text.parse().map_err(|_| BadReply(format!("{text:?} is not a number")))
}

/// A field as stored, or `default` when it is not (`-`).
fn int_or(text: &str, default: i64) -> Result<i64, BadReply> {
    if text == "-" { Ok(default) } else { int(text) }
}

fn float_or(text: &str, default: f64) -> Result<f64, BadReply> {
    if text == "-" { Ok(default) } else { float(text) }
}

/// A decayed sum `value` set at `at`, read at `now` (microseconds): the
/// script's own formula, in the same double arithmetic.
fn decayed(value: f64, at: f64, now: f64, half_life: f64) -> f64 {
    value * (-(now - at).max(0.0) / half_life * std::f64::consts::LN_2).exp()
}

/// The values of an entry's text (`V1,V2,…`), `-` for those missing.
fn values<const N: usize>(text: Option<&str>) -> [&str; N] {
    let mut out = ["-"; N];
    if let Some(text) = text {
        for (slot, value) in out.iter_mut().zip(text.split(',')) {
            if !value.is_empty() {
                *slot = value;
            }
        }
    }
    out
}

/// A count's reading from its window state (as stored: `-` when missing).
fn count_reading(state: [&str; 3], window: Duration, now: Nanos) -> Result<Reading, BadReply> {
    let width = (window.as_nanos() as u64).max(1);
    let (index, current, previous) = (int_or(state[0], -1)?, int_or(state[1], 0)?, int_or(state[2], 0)?);
    Ok(Reading::Number(sliding_estimate(
        now / width,
        (now % width) as f64 / width as f64,
        index.max(0) as u64,
        current.max(0) as u64,
        previous.max(0) as u64,
    )))
}

fn decay_reading(state: [&str; 2], half_life: Duration, now_us: u64) -> Result<Reading, BadReply> {
    let (value, at) = (float_or(state[0], 0.0)?, float_or(state[1], 0.0)?);
    Ok(Reading::Number(decayed(value, at, now_us as f64, micros(half_life) as f64)))
}

fn ban_reading(left: i64) -> Reading {
    Reading::Ban((left > 0).then(|| Duration::from_micros(left as u64)))
}

/// Turn the script's reply (one string of values, operations in the
/// layout's order) into readings, in plan order. Returns the time the script ran at.
pub fn decode(
    plan: &CounterPlan,
    layout: &Layout,
    reply: &Value,
    readings: &mut CounterReadings,
) -> Result<Nanos, BadReply> {
    let text = match reply {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).map_err(|_| BadReply(format!("{reply:?}")))?,
        other => return Err(BadReply(format!("{other:?}"))),
    };
    let items: Vec<&str> = text.split(' ').collect();
    let ops = plan.ops();
    let now_us = int(items[0])?.max(0) as u64;
    let now = now_us * 1_000;
    let mut read = vec![Reading::Done; ops.len()];
    let mut next = 1;
    let mut take = |count: usize| -> Result<&[&str], BadReply> {
        let values = items
            .get(next..next + count)
            .ok_or_else(|| BadReply(format!("{} values for {} operations", items.len(), ops.len())))?;
        next += count;
        Ok(values)
    };
    let mut group = "";
    for (position, &i) in layout.order.iter().enumerate() {
        let op = &ops[i];
        if layout.raw[position] {
            group = take(1)?[0];
        }
        let name = layout.units[i].1;
        if layout.text[i] {
            read[i] = match op {
                CounterOp::Count { window, .. } => count_reading(values(entry(group, name)), *window, now)?,
                CounterOp::Decay { half_life, .. } => decay_reading(values(entry(group, name)), *half_life, now_us)?,
                _ => {
                    let [ends] = values(entry(group, name));
                    ban_reading(int_or(ends, 0)?.saturating_sub(now_us as i64))
                }
            };
            continue;
        }
        read[i] = match op {
            CounterOp::Gcra { .. } => {
                let pair = take(2)?;
                if int(pair[0])? == 1 {
                    Reading::Gcra(GcraReading::Allowed)
                } else {
                    let wait = Duration::from_micros(int(pair[1])?.max(0) as u64);
                    Reading::Gcra(GcraReading::Limited { retry_after: wait.max(Duration::from_millis(1)) })
                }
            }
            CounterOp::Count { window, .. } => {
                let state = take(3)?;
                count_reading([state[0], state[1], state[2]], *window, now)?
            }
            CounterOp::Distinct { .. } | CounterOp::DistinctIfHeld { .. } => {
                let count = match take(1)?[0] {
                    // The count kept in the group (counted, even, odd, count).
                    "=" => values::<4>(entry(group, name))[3],
                    count => count,
                };
                Reading::Number(int(count)?.max(0) as f64)
            }
            CounterOp::Decay { half_life, add, .. } if *add == 0.0 => {
                let state = take(2)?;
                decay_reading([state[0], state[1]], *half_life, now_us)?
            }
            CounterOp::Decay { .. } => Reading::Number(float(take(1)?[0])?),
            CounterOp::Rhythm { .. } => {
                let state = take(3)?;
                let gaps = u32::try_from(int(state[0])?.max(0)).unwrap_or(u32::MAX);
                Reading::Number(Rhythm::variation(gaps, float(state[1])?, float(state[2])?))
            }
            CounterOp::BanCheck { .. } => ban_reading(int(take(1)?[0])?),
            CounterOp::Ban { .. } => {
                take(1)?;
                Reading::Done
            }
        };
    }
    if next != items.len() {
        return Err(BadReply(format!("{} values for {} operations", items.len(), ops.len())));
    }
    for (op, reading) in ops.iter().zip(read) {
        readings.push(op.key().clone(), reading);
    }
    Ok(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Key;

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

    fn login_like_plan() -> CounterPlan {
        let minute = Duration::from_secs(60);
        let mut plan = CounterPlan::new(Key::from("login"));
        let limit = RateLimitConfig { requests: 5, period_secs: 60, burst: None };
        plan.push(CounterOp::BanCheck { key: Key::from("ip:a:ban") });
        plan.push(CounterOp::Count { key: Key::from("ip:a:f"), window: minute, add: 0 });
        plan.push(CounterOp::Gcra { key: Key::from("rl:a"), limit });
        plan.push(CounterOp::Decay { key: Key::from("site:all:a0"), half_life: minute, add: 0.0 });
        plan.push(CounterOp::Distinct { key: Key::from("ip:a:users"), window: minute, item: Some(7) });
        plan.push(CounterOp::Decay { key: Key::from("site:all:a1"), half_life: minute, add: 1.0 });
        plan
    }

    fn args(command: &redis::Cmd) -> Vec<String> {
        command
            .args_iter()
            .map(|arg| match arg {
                redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                _ => "<not a plain argument>".to_string(),
            })
            .collect()
    }

    #[test]
    fn a_groups_operations_are_sent_together_and_its_key_once() {
        let plan = login_like_plan();
        let layout = layout(&plan);
        assert_eq!(
            layout.order,
            [0, 1, 4, 2, 3, 5],
            "the ip group's three operations, the limit, the site group's two"
        );
        let command = command("sha", &plan, &layout, "palisade", None);
        let base = "palisade:{login}:v2:";
        let expected = [
            "EVALSHA".to_string(),
            "sha".to_string(),
            "3".to_string(),
            format!("{base}ip:a"),
            format!("{base}rl:a"),
            format!("{base}site:all"),
            String::new(),
            "3".to_string(),
        ];
        let sent = args(&command);
        assert_eq!(sent[..expected.len()], expected);
        let ops: Vec<&str> = sent[expected.len()..].iter().map(String::as_str).collect();
        // The ban check, the count and the decayed sum only read are read
        // from their groups' texts ('R'): not sent.
        assert_eq!(
            ops,
            ["R", "d", "users", "60000000", "7", "g", "12000000", "48000000", "R", "y", "a1", "60000000", "1e0"]
        );
    }

    #[test]
    fn a_read_after_a_write_of_the_same_counter_is_the_scripts() {
        let minute = Duration::from_secs(60);
        let mut plan = CounterPlan::new(Key::from("login"));
        plan.push(CounterOp::Count { key: Key::from("ip:a:f"), window: minute, add: 1 });
        plan.push(CounterOp::Count { key: Key::from("ip:a:f"), window: minute, add: 0 });
        plan.push(CounterOp::Count { key: Key::from("ip:a:s"), window: minute, add: 0 });
        let layout = layout(&plan);
        let sent = args(&command("sha", &plan, &layout, "palisade", Some(5_000_000_000)));
        assert_eq!(sent[..6], ["EVALSHA", "sha", "1", "palisade:{login}:v2:ip:a", "5000000", "1"]);
        let ops: Vec<&str> = sent[6..].iter().map(String::as_str).collect();
        assert_eq!(ops, ["R", "c", "f", "60000000", "1", "C", "f"]);
        let bulk = |text: &str| Value::BulkString(text.as_bytes().to_vec());
        let mut readings = CounterReadings::default();
        decode(&plan, &layout, &bulk("5000000 ;f=0,2,0;s=0,3,0 0 3 0 0 3 0"), &mut readings).unwrap();
        assert_eq!(readings.values().len(), 3);
        assert_eq!(readings.number("ip:a:s"), 3.0, "read from the group's text");
    }

    #[test]
    fn replies_are_read_back_in_plan_order() {
        let plan = login_like_plan();
        let layout = layout(&plan);
        let now_us: i64 = 1_800_000_000_000_000;
        let at = (now_us - 60_000_000).to_string();
        let bulk = |text: String| Value::BulkString(text.into_bytes());
        // In sent order: the ip group's text (a count, no ban), the
        // distinct count, the limit, the site group's text (a decayed sum
        // read), the decayed sum written.
        let ip = format!(";users=1,2,3,4;f={},4,-;@=5", now_us / 60_000_000);
        let reply = bulk(format!("{now_us} {ip} 3 1 0 ;a0=8,{at} 2.5"));
        let mut readings = CounterReadings::default();
        let now = decode(&plan, &layout, &reply, &mut readings).unwrap();
        assert_eq!(now, now_us as u64 * 1_000);
        let keys: Vec<&str> = readings.keys().iter().map(|key| &**key).collect();
        assert_eq!(keys, ["ip:a:ban", "ip:a:f", "rl:a", "site:all:a0", "ip:a:users", "site:all:a1"]);
        assert_eq!(readings.ban("ip:a:ban"), None);
        assert_eq!(readings.gcra("rl:a"), Some(GcraReading::Allowed));
        assert_eq!(readings.number("ip:a:users"), 3.0);
        assert_eq!(readings.number("site:all:a1"), 2.5);
        // Window start with 4 counted and nothing before: the sliding estimate is 4.
        assert_eq!(readings.number("ip:a:f"), 4.0);
        // 8 set a minute (one half-life) ago: 4.
        assert!((readings.number("site:all:a0") - 4.0).abs() < 1e-12);
        // A ban in the group's text, and groups not stored ('-').
        // The distinct count answered `=`: the count kept in the text.
        let banned = bulk(format!("{now_us} ;ban={},cred.ip_failures;users=9,9,8,5 = 1 0 - 2.5", now_us + 2_000_000));
        let mut readings = CounterReadings::default();
        decode(&plan, &layout, &banned, &mut readings).unwrap();
        assert_eq!(readings.ban("ip:a:ban"), Some(Duration::from_secs(2)));
        assert_eq!(readings.number("ip:a:users"), 5.0);
        assert_eq!(readings.number("ip:a:f"), 0.0);
        assert_eq!(readings.number("site:all:a0"), 0.0);
        let short = bulk(format!("{now_us} -"));
        assert!(decode(&plan, &layout, &short, &mut CounterReadings::default()).is_err());
    }

    #[test]
    fn entries_are_found_by_their_whole_name() {
        let group = ";sa=1,2;a=3,4;ban=9,why";
        assert_eq!(entry(group, "a"), Some("3,4"));
        assert_eq!(entry(group, "sa"), Some("1,2"));
        assert_eq!(entry(group, "ban"), Some("9,why"));
        assert_eq!(entry(group, "b"), None);
        assert_eq!(entry("-", "a"), None);
        let mut out = String::new();
        reason_text("a b;c=d,e", &mut out);
        assert_eq!(out, "a_b_c_d_e");
    }

    #[test]
    fn keys_share_one_hash_tag_per_plan() {
        assert_eq!(redis_key("palisade", "login", "login:ip:ab:f"), "palisade:{login}:v2:login:ip:ab:f");
    }
}
