//! The Redis store against the in-process store, operation by operation,
//! on a real `redis-server`: the same plans at the same (manual) times must
//! read the same numbers.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::redis::{RedisCluster, RedisServer};
use palisade::clock::{Clock, ManualClock, SharedClock};
use palisade::config::RateLimitConfig;
use palisade::store::{
    CounterOp, CounterPlan, CounterReadings, GcraReading, Key, LocalStore, Reading, RedisSettings, RedisStore,
    RedisTarget, TimeSource,
};

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

async fn redis_store(server: &RedisServer, clock: SharedClock, time: TimeSource) -> RedisStore {
    let mut settings = RedisSettings::new(RedisTarget::Single(server.url()));
    settings.time = time;
    // Compared operation by operation: every plan must reach Redis (the
    // denial cache is tested on its own).
    settings.cache_denials = false;
    settings.timeout = Duration::from_secs(2);
    let store = RedisStore::start(settings, clock).await.unwrap();
    assert!(store.is_up(), "the store connects to the test's redis-server");
    store
}

fn random_plan(rng: &mut Rng) -> CounterPlan {
    let limit = RateLimitConfig { requests: 5, period_secs: 10, burst: Some(3) };
    let mut plan = CounterPlan::new(Key::from("login"));
    for _ in 0..1 + rng.below(4) {
        let key = |rng: &mut Rng, kind: &str| Key::from(format!("{kind}:{}", rng.below(3)));
        let op = match rng.below(9) {
            8 => CounterOp::Rhythm { key: key(rng, "r"), window: Duration::from_secs(5) },
            0 | 1 => CounterOp::Gcra { key: key(rng, "g"), limit },
            2 => CounterOp::Count { key: key(rng, "c"), window: Duration::from_secs(60), add: rng.below(3) },
            3 => {
                let item = (rng.below(4) > 0).then(|| rng.below(40).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                CounterOp::Distinct { key: key(rng, "d"), window: Duration::from_secs(30), item }
            }
            4 => CounterOp::Decay {
                key: key(rng, "y"),
                half_life: Duration::from_secs(60),
                add: [0.0, 1.0, 0.5][rng.below(3) as usize],
            },
            5 | 6 => CounterOp::BanCheck { key: key(rng, "b") },
            _ => CounterOp::Ban {
                key: key(rng, "b"),
                ttl: Duration::from_secs(1 + rng.below(20)),
                reason: Key::from("test"),
            },
        };
        plan.push(op);
    }
    plan
}

fn assert_same(step: usize, op: &CounterOp, local: Reading, redis: Reading) {
    let close = |a: f64, b: f64, tolerance: f64| (a - b).abs() <= tolerance * a.abs().max(1.0);
    let same = match (local, redis) {
        (Reading::Gcra(GcraReading::Allowed), Reading::Gcra(GcraReading::Allowed)) => true,
        (
            Reading::Gcra(GcraReading::Limited { retry_after: a }),
            Reading::Gcra(GcraReading::Limited { retry_after: b }),
        ) => a.abs_diff(b) <= Duration::from_millis(1),
        // A rhythm is NaN until it has three gaps, on both sides alike.
        (Reading::Number(a), Reading::Number(b)) if a.is_nan() || b.is_nan() => a.is_nan() && b.is_nan(),
        (Reading::Number(a), Reading::Number(b)) => match op {
            CounterOp::Distinct { .. } => close(a, b, 0.02),
            _ => close(a, b, 1e-9),
        },
        (Reading::Ban(None), Reading::Ban(None)) => true,
        (Reading::Ban(Some(a)), Reading::Ban(Some(b))) => a.abs_diff(b) <= Duration::from_millis(1),
        (Reading::Done, Reading::Done) => true,
        _ => false,
    };
    assert!(same, "step {step}: {op:?}: in-process read {local:?}, Redis read {redis:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_reads_the_same_in_redis_as_in_process() {
    let server = RedisServer::start();
    compare_with_in_process(&server, 0x5eed_1234_abcd_0001, 3_000, random_plan).await;
    // Every key is under the prefix and the plan's hash tag, with a TTL
    // (-1 is a key without one; -2, one that expired since the scan).
    for key in server.keys() {
        assert!(key.starts_with("palisade:{login}:"), "{key}");
        let ttl: i64 = server.cli(&["PTTL", &key]).trim().parse().unwrap();
        assert!(ttl != -1, "{key} has no TTL");
    }
}

/// A plan whose scopes (groups) run the same operations, as a login's
/// credential scopes do: the call sends them once for several groups
/// (`=`). One scope of four now and then runs one operation fewer or adds
/// another amount, and rate limits come between scopes.
fn scoped_plan(rng: &mut Rng) -> CounterPlan {
    let limit = RateLimitConfig { requests: 5, period_secs: 10, burst: Some(3) };
    let mut plan = CounterPlan::new(Key::from("login"));
    let template: Vec<(u64, u64, u64)> =
        (0..1 + rng.below(4)).map(|_| (rng.below(7), rng.below(2), rng.below(3))).collect();
    for _ in 0..1 + rng.below(4) {
        let scope = rng.below(5);
        if rng.below(5) == 0 {
            plan.push(CounterOp::Gcra { key: Key::from(format!("g:{}", rng.below(2))), limit });
        }
        let odd = rng.below(6) == 0;
        for (n, &(kind, field, param)) in template.iter().enumerate() {
            if odd && n == 0 && template.len() > 1 {
                continue;
            }
            let param = if odd { (param + 1) % 3 } else { param };
            // One kind of counter per key (as stages plan them); bans and
            // their checks share theirs.
            let kind_name = ["c", "d", "h", "y", "b", "r", "b"][kind as usize];
            let key = Key::from(format!("s{scope}:{kind_name}{field}"));
            let op = match kind {
                0 => CounterOp::Count { key, window: Duration::from_secs(60), add: param },
                1 => CounterOp::Distinct {
                    key,
                    window: Duration::from_secs(30),
                    item: (param > 0).then(|| param.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                },
                2 => CounterOp::DistinctIfHeld {
                    key,
                    window: Duration::from_secs(30),
                    item: (param + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                },
                3 => CounterOp::Decay { key, half_life: Duration::from_secs(60), add: [0.0, 1.0, 0.5][param as usize] },
                4 => CounterOp::BanCheck { key },
                5 => CounterOp::Rhythm { key, window: Duration::from_secs(5) },
                _ => CounterOp::Ban { key, ttl: Duration::from_secs(1 + param), reason: Key::from("test") },
            };
            plan.push(op);
        }
    }
    plan
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_running_the_same_operations_read_the_same_in_redis_as_in_process() {
    let server = RedisServer::start();
    compare_with_in_process(&server, 0x5eed_1234_abcd_0002, 2_000, scoped_plan).await;
}

/// Runs `steps` plans made by `make_plan` through an in-process store and
/// a Redis store on one manual clock, and holds every reading of the two
/// to each other.
async fn compare_with_in_process(
    server: &RedisServer,
    seed: u64,
    steps: usize,
    make_plan: fn(&mut Rng) -> CounterPlan,
) {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000_000_000));
    let local = LocalStore::new(clock.clone());
    let redis = redis_store(server, clock.clone(), TimeSource::Clock).await;
    let mut rng = Rng(seed);
    let mut compared = 0;
    for step in 0..steps {
        // Mostly small steps (limits and bans bite), sometimes whole windows.
        let advance = match rng.below(10) {
            0 => Duration::from_secs(rng.below(90)),
            _ => Duration::from_millis(rng.below(1_500)),
        };
        clock.advance(advance);
        let plan = make_plan(&mut rng);
        let now = clock.now();
        let mut from_local = CounterReadings::default();
        local.execute(&plan, now, &mut from_local);
        let mut from_redis = CounterReadings::default();
        redis.execute(&plan, now, &mut from_redis).await;
        assert!(!from_redis.degraded(), "step {step}: Redis did not answer");
        assert_eq!(from_local.len(), from_redis.len());
        for (op, (a, b)) in plan.ops().iter().zip(from_local.values().iter().zip(from_redis.values())) {
            assert_same(step, op, *a, *b);
            compared += 1;
        }
    }
    println!("{compared} readings compared, all equal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_time_drives_limits_and_bans() {
    let server = RedisServer::start();
    // The store's own clock is far off: Redis TIME must be what counts.
    let clock = Arc::new(ManualClock::new(0));
    let redis = redis_store(&server, clock.clone(), TimeSource::Redis).await;
    let limit = RateLimitConfig { requests: 2, period_secs: 60, burst: Some(2) };
    let mut plan = CounterPlan::new(Key::from("api"));
    plan.gcra(Key::from("client"), limit);
    plan.push(CounterOp::Count { key: Key::from("seen"), window: Duration::from_secs(60), add: 1 });
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let mut readings = CounterReadings::default();
        redis.execute(&plan, clock.now(), &mut readings).await;
        outcomes.push((readings.gcra("client").unwrap(), readings.number("seen")));
    }
    assert_eq!(outcomes[0], (GcraReading::Allowed, 1.0));
    assert_eq!(outcomes[1], (GcraReading::Allowed, 2.0));
    match outcomes[2].0 {
        GcraReading::Limited { retry_after } => {
            assert!(retry_after > Duration::from_secs(25) && retry_after <= Duration::from_secs(30), "{retry_after:?}")
        }
        other => panic!("third request within the minute should be limited, got {other:?}"),
    }
    let mut ban = CounterPlan::new(Key::from("api"));
    ban.push(CounterOp::Ban { key: Key::from("ban"), ttl: Duration::from_secs(30), reason: Key::from("test") });
    redis.execute(&ban, clock.now(), &mut CounterReadings::default()).await;
    let mut check = CounterPlan::new(Key::from("api"));
    check.push(CounterOp::BanCheck { key: Key::from("ban") });
    let mut readings = CounterReadings::default();
    redis.execute(&check, clock.now(), &mut readings).await;
    let left = readings.ban("ban").expect("the ban is in Redis");
    assert!(left > Duration::from_secs(29) && left <= Duration::from_secs(30), "{left:?}");
    let ttl: i64 = server.cli(&["PTTL", "palisade:{api}:v2:ban"]).trim().parse().unwrap();
    assert!(ttl > 29_000 && ttl <= 31_000, "the ban's group expires with the ban (and a second): {ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_denial_costs_no_redis_call_until_it_runs_out() {
    let server = RedisServer::start();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000_000_000));
    let mut settings = RedisSettings::new(RedisTarget::Single(server.url()));
    settings.timeout = Duration::from_secs(2);
    settings.time = TimeSource::Clock;
    let redis = RedisStore::start(settings, clock.clone()).await.unwrap();
    let limit = RateLimitConfig { requests: 1, period_secs: 1, burst: Some(1) };
    let mut plan = CounterPlan::new(Key::from("api"));
    plan.gcra(Key::from("client"), limit);
    let run = async || {
        let mut readings = CounterReadings::default();
        redis.execute(&plan, clock.now(), &mut readings).await;
        readings.gcra("client").unwrap()
    };
    assert_eq!(run().await, GcraReading::Allowed);
    assert!(matches!(run().await, GcraReading::Limited { .. }), "the second request within a second is limited");
    let calls = server.command_calls("evalsha");
    for _ in 0..10 {
        clock.advance(Duration::from_millis(50));
        assert!(matches!(run().await, GcraReading::Limited { .. }));
    }
    assert_eq!(server.command_calls("evalsha"), calls, "denied requests were answered without Redis");
    assert_eq!(redis.metrics().cached_denials.load(std::sync::atomic::Ordering::Relaxed), 10);
    clock.advance(Duration::from_millis(600));
    assert_eq!(run().await, GcraReading::Allowed, "after the retry time the request goes to Redis again");
    assert_eq!(server.command_calls("evalsha"), calls + 1);
}

/// Palisade connections to `server` (every client but the `redis-cli`
/// asking).
fn palisade_clients(server: &RedisServer) -> usize {
    server.cli(&["CLIENT", "LIST"]).lines().filter(|line| !line.contains("cmd=client")).count()
}

/// On a single-threaded runtime (what each proxy worker runs) the store
/// calls Redis through a connection of that runtime's own, opened in the
/// background by its first request. After Redis restarts, that connection
/// is never used again: every request after the recovery is counted in
/// Redis, and the worker opens a fresh one.
#[tokio::test]
async fn a_worker_runtime_calls_redis_on_a_connection_of_its_own_and_reopens_it_after_a_restart() {
    let mut server = RedisServer::start();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000_000_000));
    let mut settings = RedisSettings::new(RedisTarget::Single(server.url()));
    settings.timeout = Duration::from_secs(2);
    settings.retry_interval = Duration::from_millis(20);
    settings.cache_denials = false;
    let redis = RedisStore::start(settings, clock.clone()).await.unwrap();
    assert!(redis.is_up());
    assert_eq!(palisade_clients(&server), 1, "the store's shared connection");
    let mut plan = CounterPlan::new(Key::from("api"));
    plan.push(CounterOp::Count { key: Key::from("client"), window: Duration::from_secs(60), add: 1 });
    let run = async || {
        let mut readings = CounterReadings::default();
        redis.execute(&plan, clock.now(), &mut readings).await;
        !readings.degraded()
    };
    // A bound, not a measurement: the test fails rather than hangs.
    let waited = async |what: &str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}: not within 10 s");
            run().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };

    assert!(run().await, "the first request is counted in Redis, on the shared connection");
    waited("the worker's connection opens", &|| palisade_clients(&server) == 2).await;
    let calls = server.command_calls("evalsha");
    for _ in 0..20 {
        assert!(run().await, "counted in Redis");
    }
    assert_eq!(server.command_calls("evalsha"), calls + 20, "one script call per request");
    assert_eq!(palisade_clients(&server), 2, "requests reuse the worker's connection");

    server.restart();
    waited("Redis is marked down", &|| !redis.is_up()).await;
    waited("Redis is marked up again", &|| redis.is_up()).await;
    let calls = server.command_calls("evalsha");
    for _ in 0..20 {
        assert!(run().await, "every request after the recovery is counted in Redis");
    }
    assert!(server.command_calls("evalsha") >= calls + 20);
    waited("the worker opens a fresh connection", &|| palisade_clients(&server) == 2).await;
}

/// The same on Redis Cluster: once a worker's own cluster connection is
/// open it carries the worker's requests, each one counted in Redis.
#[tokio::test]
async fn a_worker_runtime_counts_in_a_redis_cluster_on_a_connection_of_its_own() {
    let cluster = RedisCluster::start(3);
    let clock = Arc::new(ManualClock::new(1_700_000_000_000_000_000));
    let mut settings = RedisSettings::new(RedisTarget::Cluster(cluster.urls()));
    settings.timeout = Duration::from_secs(2);
    // The test's clock, which stands still: the count is exact.
    settings.time = TimeSource::Clock;
    settings.cache_denials = false;
    let redis = RedisStore::start(settings, clock.clone()).await.unwrap();
    assert!(redis.is_up());
    let clients = || cluster.nodes.iter().map(palisade_clients).sum::<usize>();
    let shared = clients();
    let mut plan = CounterPlan::new(Key::from("api"));
    plan.push(CounterOp::Count { key: Key::from("client"), window: Duration::from_secs(600), add: 1 });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut sent = 0;
    while sent < 50 || clients() == shared {
        assert!(std::time::Instant::now() < deadline, "the worker's cluster connection did not open within 10 s");
        let mut readings = CounterReadings::default();
        redis.execute(&plan, clock.now(), &mut readings).await;
        sent += 1;
        assert!(!readings.degraded(), "request {sent} is counted in Redis");
        assert_eq!(readings.number("client"), sent as f64, "request {sent} sees every one before it");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(clients() > shared, "the worker opened connections of its own");
}
