//! Per-request decision latency percentiles (criterion reports means; the
//! project's aim is p99 < 10 µs).
//!
//! Each decision (route + view + evaluate, as `listen::handler` runs it,
//! over the requests of `replay/captures/`) is timed on its own with
//! `Instant` and recorded in an HDR histogram.
//!
//! ```text
//! cargo run --release --example decision_latency -- [--evaluations N] [--threads T]
//! ```
//!
//! `--evaluations` is per scenario and thread (default 1,000,000);
//! `--threads 2` runs two threads on one shared pipeline, as the proxy's
//! two tokio workers would on this machine. `--only PREFIX` times just the
//! mix's requests from capture files whose name starts with PREFIX (e.g.
//! `hydra`), for a profiler's view of one kind of request. `--slowest N`
//! also lists the N requests of the mix with the highest median time
//! (their capture file, method, target and p50/p99): what a tail is made of.

#[path = "../benches/support/captures.rs"]
mod captures;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use hdrhistogram::Histogram;

use captures::{Captured, MIX_STEP, clean_browser, decide, default_pipeline, load_all, mix_actions, shuffled};

/// The allocator `palisade` itself runs with (see `src/main.rs`), so that
/// these numbers are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WARM_UP: usize = 50_000;
/// With `--threads` > 1, the manual clock moves every this many requests.
const CLOCK_BATCH: usize = 32;

struct Args {
    evaluations: usize,
    threads: usize,
    only: Option<String>,
    slowest: usize,
}

fn parse_args() -> Args {
    let mut args = Args { evaluations: 1_000_000, threads: 1, only: None, slowest: 0 };
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        let mut value = || -> usize {
            argv.next().and_then(|v| v.replace('_', "").parse().ok()).unwrap_or_else(|| {
                eprintln!("{flag} needs a number");
                std::process::exit(2)
            })
        };
        match flag.as_str() {
            "--evaluations" | "-n" => args.evaluations = value().max(1),
            "--threads" | "-t" => args.threads = value().max(1),
            "--only" => args.only = argv.next(),
            "--slowest" => args.slowest = value(),
            _ => {
                eprintln!("usage: decision_latency [--evaluations N] [--threads T] [--only PREFIX] [--slowest N]");
                std::process::exit(2)
            }
        }
    }
    args
}

fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

/// What [`measure`] found: nanoseconds per decision in total, by capture
/// file, and each request's own samples (by its index in the requests).
struct Measured<'a> {
    total: Histogram<u64>,
    by_file: BTreeMap<&'a str, Histogram<u64>>,
    by_request: Vec<Vec<u64>>,
}

/// Time `evaluations` decisions over `requests` (cycled) on each of
/// `threads` threads sharing one fresh pipeline.
fn measure<'a>(requests: &[&'a Captured], evaluations: usize, threads: usize) -> Measured<'a> {
    let (pipeline, clock) = default_pipeline();
    // With several threads, each writing the shared manual clock on every
    // request would add cache-line ping-pong that the real clock (a vDSO
    // read) does not have; advance it in batches there instead.
    let clock_batch = if threads > 1 { CLOCK_BATCH } else { 1 };
    let run = |offset: usize| {
        let mut by_file: BTreeMap<&str, Histogram<u64>> = BTreeMap::new();
        let mut by_request: Vec<Vec<u64>> = vec![Vec::new(); requests.len()];
        let mut samples: Vec<(usize, u64)> = Vec::with_capacity(evaluations);
        for i in 0..WARM_UP + evaluations {
            let index = (offset + i) % requests.len();
            if i % clock_batch == 0 {
                clock.advance(MIX_STEP * clock_batch as u32);
            }
            let started = Instant::now();
            let decision = decide(&pipeline, black_box(requests[index]));
            let elapsed = started.elapsed();
            drop(black_box(decision));
            if i >= WARM_UP {
                samples.push((index, elapsed.as_nanos() as u64));
            }
        }
        for (index, nanos) in samples {
            by_file.entry(requests[index].file.as_str()).or_insert_with(histogram).saturating_record(nanos);
            by_request[index].push(nanos);
        }
        (by_file, by_request)
    };
    std::thread::scope(|scope| {
        let run = &run;
        let handles: Vec<_> = (0..threads).map(|t| scope.spawn(move || run(t * requests.len() / threads))).collect();
        let mut total = histogram();
        let mut by_file: BTreeMap<&str, Histogram<u64>> = BTreeMap::new();
        let mut by_request: Vec<Vec<u64>> = vec![Vec::new(); requests.len()];
        for handle in handles {
            let (files, requests) = handle.join().expect("measuring thread");
            for (file, h) in files {
                total.add(&h).expect("same bounds");
                by_file.entry(file).or_insert_with(histogram).add(&h).expect("same bounds");
            }
            for (all, some) in by_request.iter_mut().zip(requests) {
                all.extend(some);
            }
        }
        Measured { total, by_file, by_request }
    })
}

/// What timing itself costs: two `Instant::now()` around nothing.
fn timer_overhead() -> u64 {
    let mut histogram = Histogram::<u64>::new(3).expect("histogram");
    for _ in 0..200_000 {
        let started = Instant::now();
        let elapsed = black_box(started).elapsed();
        histogram.saturating_record(elapsed.as_nanos() as u64);
    }
    histogram.value_at_quantile(0.5)
}

fn us(nanos: u64) -> String {
    format!("{:.2}", nanos as f64 / 1000.0)
}

fn main() {
    let args = parse_args();
    let all = load_all();
    let mix = shuffled(load_all());
    println!(
        "{} evaluations per scenario and thread, {} thread(s), {} warm-up; timer overhead (p50 of an empty \
         Instant pair): {} ns",
        args.evaluations,
        args.threads,
        WARM_UP,
        timer_overhead()
    );
    if args.only.is_none() {
        println!(
            "capture mix: {} requests; actions at {MIX_STEP:?}/request: {}",
            mix.len(),
            mix_actions(&mix, 100_000)
        );
    }
    println!();
    println!("| scenario | evaluations | mean µs | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let scenarios: Vec<(&str, Vec<&Captured>)> = match &args.only {
        Some(prefix) => {
            let only: Vec<&Captured> = mix.iter().filter(|c| c.file.starts_with(prefix.as_str())).collect();
            if only.is_empty() {
                eprintln!("--only {prefix}: no capture file of replay/captures/ starts with that");
                std::process::exit(2)
            }
            vec![("capture_mix, only", only)]
        }
        None => vec![
            ("capture_mix", mix.iter().collect()),
            ("clean_browser", vec![clean_browser(&all)]),
            ("sqlmap_blocked", vec![captures::sqlmap_attack(&all)]),
        ],
    };
    let mut slowest = Vec::new();
    for (index, (name, requests)) in scenarios.iter().enumerate() {
        let measured = measure(requests, args.evaluations, args.threads);
        row(name, &measured.total);
        if measured.by_file.len() > 1 {
            for (file, h) in &measured.by_file {
                row(&format!("↳ {}", file.trim_end_matches(".jsonl")), h);
            }
        }
        if index == 0 {
            slowest = slowest_requests(requests, measured.by_request, args.slowest);
        }
    }
    if !slowest.is_empty() {
        println!();
        println!("| slowest requests of the first scenario (by p50) | samples | p50 µs | p99 µs |");
        println!("|---|---:|---:|---:|");
        for line in slowest {
            println!("{line}");
        }
    }
}

/// The `n` requests with the highest median time, as table rows.
fn slowest_requests(requests: &[&Captured], by_request: Vec<Vec<u64>>, n: usize) -> Vec<String> {
    let mut medians: Vec<(u64, u64, usize, usize)> = by_request
        .into_iter()
        .enumerate()
        .filter(|(_, samples)| !samples.is_empty())
        .map(|(index, mut samples)| {
            samples.sort_unstable();
            let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
            (at(0.5), at(0.99), samples.len(), index)
        })
        .collect();
    medians.sort_unstable_by(|a, b| b.cmp(a));
    medians
        .into_iter()
        .take(n)
        .map(|(p50, p99, count, index)| {
            let captured = requests[index];
            let target: String = captured.request.uri.to_string().chars().take(60).collect();
            format!(
                "| {} {} {} | {count} | {} | {} |",
                captured.file.trim_end_matches(".jsonl"),
                captured.request.method,
                target,
                us(p50),
                us(p99)
            )
        })
        .collect()
}

fn row(name: &str, h: &Histogram<u64>) {
    println!(
        "| {name} | {} | {:.2} | {} | {} | {} | {} | {} |",
        h.len(),
        h.mean() / 1000.0,
        us(h.value_at_quantile(0.5)),
        us(h.value_at_quantile(0.9)),
        us(h.value_at_quantile(0.99)),
        us(h.value_at_quantile(0.999)),
        us(h.max()),
    );
}
