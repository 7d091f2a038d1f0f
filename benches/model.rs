//! The classifier's cost per request, on real traffic: the requests of
//! `models/corpus/holdout.jsonl.gz` (people, apps, partners, bots).
//!
//! - `model/inference`: the shipped model (`models/palisade-gbdt-v2.json`,
//!   80 trees of depth 4) on each request's feature vector;
//! - `model/features_and_inference`: the model stage's hooks — plan its
//!   counters, run them on the in-process store, compute the features and
//!   score them — on each request's view, the HTTP fingerprint (SHA-256
//!   over the header names) included;
//! - `model/features_and_inference_shared_fingerprint`: the same with the
//!   HTTP fingerprint computed before the clock starts. The pipeline
//!   computes it once per request for every decision (`Decision::fingerprint`)
//!   and the view caches it, so in a full pipeline it is not the model's
//!   cost; the first part charges it anyway, as an upper bound;
//! - `model/features_and_inference_over_readings`: the `detect` hook alone
//!   — compute the 52 features from the request's view and the counter
//!   readings the store already answered, score them, and, when the model
//!   signals, rank the features that moved it and build the signal. This
//!   is issue 11's "features + inference": features computed "from the
//!   request view and the counter readings the pipeline already has". The
//!   plan and the store's execution run before the clock starts (the
//!   two parts above charge them; `model/hooks/*` splits them out), on an
//!   engine and store of its own.
//!
//! Building the view (routing, header lookups) is the pipeline's and is
//! left out of every part: the clock starts once the view exists. The store runs
//! the plan as the pipeline does (`CounterStore::execute_taking`: the
//! plan's keys move into the readings; until 2026-12-07 the bench cloned
//! them, a dozen atomic increments the pipeline does not make).
//!
//! `cargo bench --bench model` (add `-- --warm-up-time 1 --measurement-time
//! 3` for a quicker run). Before criterion's means, each part's p50, p99
//! and p99.9 over single timed calls are printed (each includes ~20 ns of
//! clock reading), then each hook's own (`model/hooks/plan`, `execute`,
//! `detect`) on a store of its own. `PALISADE_BENCH_ROUNDS` (default 50) sets how many
//! times those calls go over the requests, e.g. 2 under
//! `valgrind --tool=callgrind` with a filter that matches no criterion
//! bench, for instruction counts. With `PALISADE_BENCH_TAIL` set, one more
//! pass of features + inference (not counted in the percentiles) lists
//! which requests its slowest 1 % of calls were (method, path, user
//! agent): a tail spread over hundreds of requests is noise, one held by
//! a few kinds of request is work to look at.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use palisade::capture::read::OnBadLine;
use palisade::config::parse_str;
use palisade::detect::{RequestContext, Stage};
use palisade::identify::Identity;
use palisade::model::{FeatureVector, Model};
use palisade::replay::{Engine, Inputs, Prepared};
use palisade::store::{CounterPlan, CounterReadings};

/// The allocator `palisade` itself runs with (see `src/main.rs`), so that
/// these numbers are the binary's (as in the pipeline and login benches).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const REQUESTS: usize = 4000;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn config() -> String {
    format!(
        "[store]\nhash_key = \"bench\"\n[[model]]\nname = \"gbdt\"\npath = {:?}\nmode = \"shadow\"\n",
        root().join("models/palisade-gbdt-v2.json").display().to_string()
    )
}

/// The first requests of the holdout capture, and the feature vectors a
/// replay computes for them.
fn load() -> (Vec<Prepared>, Vec<FeatureVector>) {
    let config = parse_str(&config(), "bench.toml").expect("bench configuration");
    let engine = Engine::new(&config).expect("bench engine");
    let mut inputs =
        Inputs::open(&[root().join("models/corpus/holdout.jsonl.gz")], OnBadLine::Stop).expect("holdout capture");
    let mut vectors = Vec::new();
    let mut requests = Vec::new();
    inputs.for_each_until(|request, _| {
        let (decision, _) = engine.run(request);
        vectors.push(decision.model().expect("the model stage ran").features);
        requests.push(request.clone());
        if vectors.len() == REQUESTS { std::ops::ControlFlow::Break(()) } else { std::ops::ControlFlow::Continue(()) }
    });
    (requests, vectors)
}

fn rounds() -> usize {
    std::env::var("PALISADE_BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(50).max(2)
}

/// p50, p99 and p99.9 of `sample(i)`, which times one call itself and
/// returns how long it took; the first round over the requests warms up.
fn percentiles(name: &str, mut sample: impl FnMut(usize) -> Duration) {
    let mut histogram = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    for round in 0..rounds() {
        for i in 0..REQUESTS {
            let took = sample(i).as_nanos() as u64;
            if round > 0 {
                let _ = histogram.record(took.max(1));
            }
        }
    }
    println!(
        "{name}: p50 {} ns, p99 {} ns, p99.9 {} ns over {} calls",
        histogram.value_at_quantile(0.5),
        histogram.value_at_quantile(0.99),
        histogram.value_at_quantile(0.999),
        histogram.len()
    );
}

/// The model stage's hooks run by hand on an engine of its own: plan the
/// counters, execute them on the in-process store, detect.
struct Hooks {
    engine: Engine,
    plan: CounterPlan,
    readings: CounterReadings,
    signals: Vec<palisade::signal::Signal>,
    at: palisade::clock::Nanos,
}

impl Hooks {
    fn new(first: &Prepared) -> Self {
        let config = parse_str(&config(), "bench.toml").expect("bench configuration");
        Hooks {
            engine: Engine::new(&config).expect("bench engine"),
            plan: CounterPlan::default(),
            readings: CounterReadings::default(),
            signals: Vec::new(),
            at: first.at,
        }
    }

    /// One request through the hooks, its view built (and, with
    /// `shared_fingerprint`, its fingerprint computed) before `mark(0)`;
    /// `mark(1..=3)` follow plan, execute and detect.
    fn run(&mut self, request: &Prepared, shared_fingerprint: bool, mut mark: impl FnMut(usize)) {
        self.at = self.at.max(request.at) + 1_000;
        let Hooks { engine, plan, readings, signals, at } = self;
        let stage = engine.pipeline().models().expect("the model stage");
        let store = engine.pipeline().store();
        request.with_view(engine.lifecycle(), |view| {
            if shared_fingerprint {
                black_box(view.fingerprint());
            }
            mark(0);
            let mut context = RequestContext::new(Identity::Anonymous);
            plan.clear();
            readings.clear();
            signals.clear();
            stage.plan(view, &mut context, plan);
            mark(1);
            store.execute_taking(plan, *at, readings);
            mark(2);
            stage.detect(view, &mut context, readings, signals);
            mark(3);
            black_box(&signals);
            black_box(context);
        })
    }
}

/// p50, p90 and p99 of each hook on its own (the fingerprint computed
/// before the clock starts), on a store of its own: where a slow request's
/// time went.
fn hook_percentiles(requests: &[Prepared]) {
    let mut hooks = Hooks::new(&requests[0]);
    let mut histograms = [(); 3].map(|_| hdrhistogram::Histogram::<u64>::new(3).expect("histogram"));
    for round in 0..rounds() {
        for request in requests {
            let mut marks = [Instant::now(); 4];
            hooks.run(request, true, |at| marks[at] = Instant::now());
            if round > 0 {
                for (histogram, took) in histograms.iter_mut().zip(marks.windows(2).map(|w| w[1] - w[0])) {
                    let _ = histogram.record((took.as_nanos() as u64).max(1));
                }
            }
        }
    }
    for (name, histogram) in ["plan", "execute", "detect"].iter().zip(&histograms) {
        println!(
            "model/hooks/{name}: p50 {} ns, p90 {} ns, p99 {} ns",
            histogram.value_at_quantile(0.5),
            histogram.value_at_quantile(0.9),
            histogram.value_at_quantile(0.99)
        );
    }
}

/// Which requests the slowest 1 % of `sample`'s calls were: the requests
/// (method, path, user agent) that took most of those calls.
fn tail(requests: &[Prepared], mut sample: impl FnMut(usize) -> Duration) {
    let mut calls = Vec::new();
    for round in 0..rounds() {
        for i in 0..REQUESTS {
            let took = sample(i);
            if round > 0 {
                calls.push((took, i));
            }
        }
    }
    calls.sort_unstable_by(|a, b| b.cmp(a));
    let slowest = &calls[..calls.len() / 100];
    let mut by_request = std::collections::HashMap::<usize, usize>::new();
    for (_, i) in slowest {
        *by_request.entry(*i).or_default() += 1;
    }
    let hooks = Hooks::new(&requests[0]);
    let mut by_label = std::collections::HashMap::<String, (usize, usize)>::new();
    for (i, n) in &by_request {
        let label = requests[*i].with_view(hooks.engine.lifecycle(), |view| {
            format!(
                "{} {} {}",
                view.method,
                view.path,
                view.user_agent.unwrap_or("-").chars().take(40).collect::<String>()
            )
        });
        let entry = by_label.entry(label).or_default();
        entry.0 += n;
        entry.1 += 1;
    }
    let mut labels: Vec<_> = by_label.into_iter().collect();
    labels.sort_by_key(|label| std::cmp::Reverse(label.1));
    println!(
        "slowest 1 % ({} calls, from {}): {} distinct requests",
        slowest.len(),
        slowest.last().map_or(0, |c| c.0.as_nanos()),
        by_request.len()
    );
    for (label, (n, distinct)) in labels.iter().take(25) {
        println!("  {n:6} calls, {distinct:4} requests: {label}");
    }
}

fn model(c: &mut Criterion) {
    let (requests, vectors) = load();
    let model = Model::load(&root().join("models/palisade-gbdt-v2.json")).expect("the shipped model");
    percentiles("model/inference", |i| {
        let started = Instant::now();
        black_box(model.probability(black_box(&vectors[i])));
        started.elapsed()
    });

    // One request through the stage's hooks; the clock starts once the view
    // is built (and, with `shared_fingerprint`, its fingerprint computed)
    // and stops after `detect`.
    let mut hooks = Hooks::new(&requests[0]);
    let mut one = |i: usize, shared_fingerprint: bool| -> Duration {
        let mut started = None;
        let mut took = Duration::ZERO;
        hooks.run(&requests[i], shared_fingerprint, |mark| match mark {
            0 => started = Some(Instant::now()),
            3 => took = started.map_or(Duration::ZERO, |started| started.elapsed()),
            _ => {}
        });
        took
    };
    if std::env::var_os("PALISADE_BENCH_TAIL").is_some() {
        tail(&requests, |i| one(i, false));
    }
    percentiles("model/features_and_inference", |i| one(i, false));
    percentiles("model/features_and_inference_shared_fingerprint", |i| one(i, true));
    // The detect hook alone: plan and execute run, untimed, first.
    let mut over_readings = Hooks::new(&requests[0]);
    let mut detect_only = |i: usize| -> Duration {
        let mut started = None;
        let mut took = Duration::ZERO;
        over_readings.run(&requests[i], true, |mark| match mark {
            2 => started = Some(Instant::now()),
            3 => took = started.map_or(Duration::ZERO, |started| started.elapsed()),
            _ => {}
        });
        took
    };
    percentiles("model/features_and_inference_over_readings", &mut detect_only);
    hook_percentiles(&requests);

    let mut group = c.benchmark_group("model");
    group.throughput(Throughput::Elements(1));
    let mut next = 0;
    group.bench_function("inference", |b| {
        b.iter(|| {
            next = (next + 1) % vectors.len();
            model.probability(black_box(&vectors[next]))
        })
    });
    for (name, shared) in [("features_and_inference", false), ("features_and_inference_shared_fingerprint", true)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        next = (next + 1) % requests.len();
                        one(next, shared)
                    })
                    .sum()
            })
        });
    }
    group.bench_function("features_and_inference_over_readings", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    next = (next + 1) % requests.len();
                    detect_only(next)
                })
                .sum()
        })
    });
    group.finish();
}

criterion_group!(benches, model);
criterion_main!(benches);
