//! What a million tracked keys cost: the in-process store at its default
//! budget is filled with the keys an address-rotating login flood makes
//! (per client address: a distinct-username sketch, a refused-attempts
//! count and a rate-limit state), and the process's RSS is read before and
//! after. One test alone in its binary, so no other test's memory counts.

use std::sync::Arc;
use std::time::Duration;

use palisade::clock::ManualClock;
use palisade::config::RateLimitConfig;
use palisade::store::{CounterOp, CounterPlan, CounterReadings, Key, LocalStore};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("VmRSS in KiB")
}

#[test]
fn a_million_tracked_keys_fit_in_256_mib() {
    const CLIENTS: u64 = 340_000;
    let start = 1_800_000_000_000_000_000;
    let clock = Arc::new(ManualClock::new(start));
    let before = rss_kib();
    let store = LocalStore::new(clock);
    let window = Duration::from_secs(600);
    let limit = RateLimitConfig { requests: 30, period_secs: 60, burst: Some(20) };
    let mut plan = CounterPlan::default();
    let mut readings = CounterReadings::default();
    for client in 0..CLIENTS {
        // Key shapes as the login stage makes them: a 16-hex-digit keyed
        // hash per address.
        let id = format!("{:016x}", client.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        plan.clear();
        readings.clear();
        plan.push(CounterOp::Distinct {
            key: Key::from(format!("login:login:ip:{id}:users")),
            window,
            item: Some(client.wrapping_mul(0xff51_afd7_ed55_8ccd)),
        });
        plan.push(CounterOp::Count { key: Key::from(format!("login:login:ip:{id}:x")), window, add: 1 });
        plan.gcra(Key::from(format!("rate:login:{id}")), limit);
        store.execute(&plan, start + client * 1_000, &mut readings);
    }
    store.maintain(start + CLIENTS * 1_000);
    let after = rss_kib();
    let gauges = store.gauges();
    let keys = store.len();
    let accounted = gauges.bytes.load(std::sync::atomic::Ordering::Relaxed);
    let evicted = gauges.evicted.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "{keys} keys ({CLIENTS} clients), {evicted} evicted; store accounting {} MiB of {} MiB; \
         RSS {} MiB before, {} MiB after ({} MiB for the store)",
        accounted >> 20,
        palisade::store::DEFAULT_MAX_MEMORY_MB,
        before >> 10,
        after >> 10,
        (after - before) >> 10
    );
    assert!(keys >= 1_000_000, "{keys} keys held ({evicted} evicted)");
    assert!(after < 256 * 1024, "RSS {after} KiB with a million keys");
}
