//! A plan as one Lua script call, and the script's reply as readings.
//!
//! The script (`plan.lua`) keeps the same state the in-process store keeps
//! (GCRA arrival times, two fixed windows per count, two HyperLogLogs per
//! distinct count, decayed sums, bans as entries of their scope's value
//! with their end time) and replies with raw window state; the numbers are
//! computed here by the same functions the in-process store uses, so both
//! backends answer alike.
//!
//! The call is built as one `EVALSHA` command (one buffer, not one
//! allocation per argument): the operations of one group are sent
//! together ([`Layout::order`]), each key once, and counters that are only read
//! carry no window, so a login's call has about half the arguments it
//! would have op by op.

use std::fmt::Write as _;
use std::time::Duration;

use redis::Value;

use crate::clock::Nanos;
use crate::config::RateLimitConfig;
use crate::store::window::{Rhythm, sliding_estimate};
use crate::store::{CounterOp, CounterPlan, GcraReading, Reading};

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
    let gcra = |i: usize| matches!(ops[i], CounterOp::Gcra { .. });
    for op in ops {
        units.push(match op {
            CounterOp::Gcra { key, .. } => (&**key, ""),
            other => group_and_field(other.key()),
        });
    }
    if ops.len() <= 64 {
        // A request's few groups: a scan is cheaper than hashing.
        // Stages plan a scope's operations together: the previous
        // operation's unit is tried first.
        let mut seen: Vec<(bool, &str)> = Vec::new();
        let mut last = 0;
        for (i, &(unit, _)) in units.iter().enumerate() {
            let unit = (gcra(i), unit);
            let tag = if seen.get(last) == Some(&unit) {
                last
            } else {
                seen.iter().position(|u| *u == unit).unwrap_or_else(|| {
                    seen.push(unit);
                    seen.len() - 1
                })
            };
            tags.push(tag);
            last = tag;
        }
    } else {
        // A merged write of many requests.
        let mut seen: hashbrown::HashMap<(bool, &str), usize> = hashbrown::HashMap::new();
        for (i, &(unit, _)) in units.iter().enumerate() {
            let next = seen.len();
            tags.push(*seen.entry((gcra(i), unit)).or_insert(next));
        }
    }
    let mut order: Vec<usize> = (0..ops.len()).collect();
    // Stable by position within a group, without the buffer a stable sort allocates.
    order.sort_unstable_by_key(|&i| (tags[i], i));
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
        if gcra(i) || position == 0 || tags[order[position - 1]] != tags[i] {
            starts[position] = true;
            keys += 1;
            group_start = (!gcra(i)).then_some(position);
        }
        bans |= matches!(op, CounterOp::Ban { .. });
        let only_read = matches!(op, CounterOp::Count { add: 0, .. } | CounterOp::BanCheck { .. })
            || matches!(op, CounterOp::Decay { add, .. } if *add == 0.0);
        if only_read && !written.iter().any(|key| **key == **op.key()) {
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

/// An operation as it is sent to the script: its opcode and arguments
/// (what [`command`] writes). Two groups whose operations are sent alike
/// send them once ([`REPEAT`]).
#[derive(Clone, Copy, PartialEq)]
enum Sent<'p> {
    /// A count, decayed sum or ban check read by the script (`C`, `Y`, `b`).
    Read(&'static str, &'p str),
    Count(&'p str, u64, u64),
    /// `d` or `h`: field, window, item (`None`: only read).
    Distinct(&'static str, &'p str, u64, Option<u64>),
    /// Field, half-life, the add's bits.
    Decay(&'p str, u64, u64),
    Rhythm(&'p str, u64),
    /// Field, TTL, reason, the ban's key.
    Ban(&'p str, u64, &'p str, &'p str),
}

/// The argument that stands for "the operations of the last group whose
/// operations were sent, again, on this group": the four credential scopes
/// of a login (address, subnet and fingerprint, fingerprint, subnet) run
/// the same operations, and each argument sent costs Redis ~0.75k
/// instructions (parsed, made an object and a Lua string, freed).
const REPEAT: &str = "=";

impl<'p> Sent<'p> {
    /// The operation `op` (of field `field`, in a group) as sent.
    fn of(op: &'p CounterOp, field: &'p str) -> Sent<'p> {
        match op {
            // Reads need neither window nor half-life: Rust computes them.
            CounterOp::Count { add: 0, .. } => Sent::Read("C", field),
            CounterOp::Count { window, add, .. } => Sent::Count(field, micros(*window), *add),
            CounterOp::Decay { add, .. } if *add == 0.0 => Sent::Read("Y", field),
            CounterOp::Distinct { window, item, .. } => Sent::Distinct("d", field, micros(*window), *item),
            CounterOp::DistinctIfHeld { window, item, .. } => Sent::Distinct("h", field, micros(*window), Some(*item)),
            CounterOp::Decay { half_life, add, .. } => Sent::Decay(field, micros(*half_life), add.to_bits()),
            CounterOp::Rhythm { window, .. } => Sent::Rhythm(field, micros(*window)),
            CounterOp::BanCheck { .. } => Sent::Read("b", field),
            CounterOp::Ban { key, ttl, reason } => Sent::Ban(field, micros(*ttl), reason, key),
            // A rate limit is a unit of its own, never part of a group:
            // `command` sends it itself and never asks for this.
            CounterOp::Gcra { .. } => Sent::Read("g", field),
        }
    }

    fn write(&self, command: &mut redis::Cmd, scratch: &mut String) {
        match *self {
            Sent::Read(opcode, field) => {
                command.arg(opcode).arg(field);
            }
            Sent::Count(field, window, add) => {
                command.arg("c").arg(field).arg(window).arg(add);
            }
            Sent::Distinct(opcode, field, window, item) => {
                command.arg(opcode).arg(field).arg(window);
                match item {
                    Some(item) => command.arg(item),
                    None => command.arg(""),
                };
            }
            Sent::Decay(field, half_life, add) => {
                scratch.clear();
                let _ = write!(scratch, "{:e}", f64::from_bits(add));
                command.arg("y").arg(field).arg(half_life).arg(scratch.as_bytes());
            }
            Sent::Rhythm(field, window) => {
                command.arg("r").arg(field).arg(window);
            }
            Sent::Ban(field, ttl, reason, key) => {
                reason_text(reason, scratch);
                command.arg("B").arg(field).arg(ttl).arg(scratch.as_bytes()).arg(key);
            }
        }
    }
}

/// The script call for a plan, with its operations in the layout's order: the keys of
/// its groups and rate limits (and the ban index), then one `G` (or `R`)
/// per group and its operations, or [`REPEAT`] when they are sent as the
/// last group's were. `now` overrides Redis
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
    // The operations sent for the group being built, and for the last
    // group whose operations were sent.
    let (mut group, mut last): (Vec<Sent>, Vec<Sent>) = (Vec::new(), Vec::new());
    let mut position = 0;
    while position < layout.order.len() {
        let i = layout.order[position];
        if let CounterOp::Gcra { limit, .. } = &ops[i] {
            let (interval, tolerance) = gcra_params(limit);
            command.arg("g").arg(interval).arg(tolerance);
            position += 1;
            continue;
        }
        command.arg(if layout.raw[position] { "R" } else { "G" });
        group.clear();
        loop {
            let i = layout.order[position];
            if !layout.text[i] {
                group.push(Sent::of(&ops[i], layout.units[i].1));
            }
            position += 1;
            if position == layout.order.len() || layout.starts[position] {
                break;
            }
        }
        if !group.is_empty() && group == last {
            command.arg(REPEAT);
        } else if !group.is_empty() {
            for sent in &group {
                sent.write(&mut command, &mut scratch);
            }
            std::mem::swap(&mut group, &mut last);
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
    // The last `:` is a few bytes from the end: a byte loop from there
    // finds it sooner than `rsplit_once`'s searcher is set up.
    match key.bytes().rposition(|b| b == b':') {
        Some(at) if at > 0 && at + 1 < key.len() => (&key[..at], &key[at + 1..]),
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
        // A one-char array, not a `char` pattern: it walks the chars, and
        // these texts are a few bytes, shorter than a memchr searcher pays off.
        for (slot, value) in out.iter_mut().zip(text.split([','])) {
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

/// A group's text (`;NAME=V1,V2;…`, or `-`) split into its entries once:
/// a login reads some twenty-five counters from six groups' texts, and
/// scanning the text again for each ([`entry`]) was most of the reply's
/// decoding.
fn split_group<'a>(group: &'a str, entries: &mut Vec<(&'a str, &'a str)>) {
    // One pass over the bytes (the separators are ASCII, so every cut is
    // at a character boundary): as `split(';')` and `split_once('=')`
    // would cut it, without a searcher set up for each short piece.
    entries.clear();
    let (mut start, mut equals) = (0, None);
    for (at, byte) in group.bytes().enumerate() {
        match byte {
            b';' => {
                if let Some(equals) = equals {
                    entries.push((&group[start..equals], &group[equals + 1..at]));
                }
                (start, equals) = (at + 1, None);
            }
            b'=' if equals.is_none() => equals = Some(at),
            _ => {}
        }
    }
    if let Some(equals) = equals {
        entries.push((&group[start..equals], &group[equals + 1..]));
    }
}

/// The text of the entry `name` among a group's entries, as [`entry`]
/// finds it in the group's text (the first of that name).
fn find<'a>(entries: &[(&'a str, &'a str)], name: &str) -> Option<&'a str> {
    entries.iter().find(|(entry, _)| *entry == name).map(|(_, value)| *value)
}

/// Turn the script's reply (one string of values, operations in the
/// layout's order) into readings, in plan order: `read` gets one per
/// operation. Returns the time the script ran at.
pub fn decode(plan: &CounterPlan, layout: &Layout, reply: &Value, read: &mut Vec<Reading>) -> Result<Nanos, BadReply> {
    let text = match reply {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).map_err(|_| BadReply(format!("{reply:?}")))?,
        other => return Err(BadReply(format!("{other:?}"))),
    };
    let ops = plan.ops();
    let mut items = text.split(' ');
    let mut next = || items.next().ok_or_else(|| BadReply(format!("too few values for {} operations", ops.len())));
    let now_us = int(next()?)?.max(0) as u64;
    let now = now_us * 1_000;
    read.clear();
    read.resize(ops.len(), Reading::Done);
    let mut group = Vec::new();
    for (position, &i) in layout.order.iter().enumerate() {
        let op = &ops[i];
        if layout.raw[position] {
            split_group(next()?, &mut group);
        }
        let name = layout.units[i].1;
        if layout.text[i] {
            read[i] = match op {
                CounterOp::Count { window, .. } => count_reading(values(find(&group, name)), *window, now)?,
                CounterOp::Decay { half_life, .. } => decay_reading(values(find(&group, name)), *half_life, now_us)?,
                _ => {
                    let [ends] = values(find(&group, name));
                    ban_reading(int_or(ends, 0)?.saturating_sub(now_us as i64))
                }
            };
            continue;
        }
        read[i] = match op {
            CounterOp::Gcra { .. } => {
                let (allowed, wait) = (next()?, next()?);
                if int(allowed)? == 1 {
                    Reading::Gcra(GcraReading::Allowed)
                } else {
                    let wait = Duration::from_micros(int(wait)?.max(0) as u64);
                    Reading::Gcra(GcraReading::Limited { retry_after: wait.max(Duration::from_millis(1)) })
                }
            }
            CounterOp::Count { window, .. } => count_reading([next()?, next()?, next()?], *window, now)?,
            CounterOp::Distinct { .. } | CounterOp::DistinctIfHeld { .. } => {
                let count = match next()? {
                    // The count kept in the group (counted, even, odd, count).
                    "=" => values::<4>(find(&group, name))[3],
                    count => count,
                };
                Reading::Number(int(count)?.max(0) as f64)
            }
            CounterOp::Decay { half_life, add, .. } if *add == 0.0 => {
                decay_reading([next()?, next()?], *half_life, now_us)?
            }
            CounterOp::Decay { .. } => Reading::Number(float(next()?)?),
            CounterOp::Rhythm { .. } => {
                let (n, m, q) = (next()?, next()?, next()?);
                let gaps = u32::try_from(int(n)?.max(0)).unwrap_or(u32::MAX);
                Reading::Number(Rhythm::variation(gaps, float(m)?, float(q)?))
            }
            CounterOp::BanCheck { .. } => ban_reading(int(next()?)?),
            CounterOp::Ban { .. } => {
                next()?;
                Reading::Done
            }
        };
    }
    if items.next().is_some() {
        return Err(BadReply(format!("too many values for {} operations", ops.len())));
    }
    Ok(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CounterReadings, Key};

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
        // As `rsplit_once(':')` cut them, which it replaced: keys of every
        // short shape, colons anywhere.
        fn rsplit(key: &str) -> (&str, &str) {
            match key.rsplit_once(':') {
                Some((group, name)) if !group.is_empty() && !name.is_empty() => (group, name),
                _ => (key, "_"),
            }
        }
        let mut next = crate::test_support::xorshift(0xc01);
        for _ in 0..5_000 {
            let len = (next() % 8) as usize;
            let key: String = (0..len).map(|_| ['a', ':', 'é'][(next() % 3) as usize]).collect();
            assert_eq!(group_and_field(&key), rsplit(&key), "{key:?}");
        }
    }

    /// The readings of a reply, keyed by the plan's keys as a store gives them.
    fn decoded(plan: &CounterPlan, layout: &Layout, reply: &Value) -> Result<(Nanos, CounterReadings), BadReply> {
        let mut read = Vec::new();
        let now = decode(plan, layout, reply, &mut read)?;
        assert_eq!(read.len(), plan.ops().len());
        let mut readings = CounterReadings::default();
        for (op, reading) in plan.ops().iter().zip(read) {
            readings.push(op.key().clone(), reading);
        }
        Ok((now, readings))
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
    fn a_groups_operations_sent_as_the_last_groups_are_sent_once() {
        let minute = Duration::from_secs(60);
        let mut plan = CounterPlan::new(Key::from("login"));
        let limit = RateLimitConfig { requests: 5, period_secs: 60, burst: None };
        for scope in ["ip:a", "net:b", "fp:c", "sub:d"] {
            plan.push(CounterOp::BanCheck { key: Key::from(format!("{scope}:ban")) });
            if scope == "fp:c" {
                // Another amount: sent in full, and the last group's from then on.
                plan.push(CounterOp::Count { key: Key::from(format!("{scope}:f")), window: minute, add: 2 });
            } else {
                plan.push(CounterOp::Count { key: Key::from(format!("{scope}:f")), window: minute, add: 1 });
            }
            plan.push(CounterOp::Distinct { key: Key::from(format!("{scope}:users")), window: minute, item: Some(7) });
            if scope == "ip:a" {
                plan.push(CounterOp::Gcra { key: Key::from("rl:a"), limit });
            }
        }
        // A group that sends nothing (its ban check is read from its text)
        // is no group's "last".
        plan.push(CounterOp::BanCheck { key: Key::from("user:e:ban") });
        plan.push(CounterOp::Count { key: Key::from("site:all:f"), window: minute, add: 1 });
        plan.push(CounterOp::Distinct { key: Key::from("site:all:users"), window: minute, item: Some(7) });
        let layout = layout(&plan);
        let sent = args(&command("sha", &plan, &layout, "palisade", None));
        let ops: Vec<&str> = sent[3 + 7 + 2..].iter().map(String::as_str).collect();
        let one = ["c", "f", "60000000", "1", "d", "users", "60000000", "7"];
        let two = ["c", "f", "60000000", "2", "d", "users", "60000000", "7"];
        let mut expected = vec!["R"];
        expected.extend(one);
        expected.extend(["g", "12000000", "48000000", "R", "=", "R"]);
        expected.extend(two);
        expected.push("R");
        expected.extend(one);
        expected.extend(["R", "R", "="]);
        assert_eq!(ops, expected);
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
        let (_, readings) = decoded(&plan, &layout, &bulk("5000000 ;f=0,2,0;s=0,3,0 0 3 0 0 3 0")).unwrap();
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
        let (now, readings) = decoded(&plan, &layout, &reply).unwrap();
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
        let (_, readings) = decoded(&plan, &layout, &banned).unwrap();
        assert_eq!(readings.ban("ip:a:ban"), Some(Duration::from_secs(2)));
        assert_eq!(readings.number("ip:a:users"), 5.0);
        assert_eq!(readings.number("ip:a:f"), 0.0);
        assert_eq!(readings.number("site:all:a0"), 0.0);
        let short = bulk(format!("{now_us} -"));
        assert!(decoded(&plan, &layout, &short).is_err());
        let long = bulk(format!("{now_us} ;a=1 3 1 0 - 2.5 7"));
        assert!(decoded(&plan, &layout, &long).is_err(), "a value too many");
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
    fn a_groups_entries_split_once_are_found_as_in_its_text() {
        // Texts of names and values from a small alphabet (so that names
        // repeat, prefix one another and turn up in values), with the
        // separators in every place.
        let mut next = crate::test_support::xorshift(0x5eed);
        let alphabet = ['a', 'b', 's', '=', ',', ';', '-', '1', '@'];
        for _ in 0..5_000 {
            let mut entries = Vec::new();
            let len = (next() % 24) as usize;
            let group: String = (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect();
            split_group(&group, &mut entries);
            for name in ["a", "b", "sa", "ab", "@", "-", "1"] {
                assert_eq!(find(&entries, name), entry(&group, name), "{group:?} {name:?}");
            }
        }
    }

    #[test]
    fn keys_share_one_hash_tag_per_plan() {
        assert_eq!(redis_key("palisade", "login", "login:ip:ab:f"), "palisade:{login}:v2:login:ip:ab:f");
    }
}
