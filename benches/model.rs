//! The classifier's cost per request, on real traffic: the requests of
//! `models/corpus/holdout.jsonl.gz` (people, apps, partners, bots).
//!
//! - `model/inference`: the shipped model (`models/palisade-gbdt-v2.json`,
//!   120 trees of depth 4) on each request's feature vector;
//! - `model/features_and_inference`: the model stage's hooks — plan its
//!   counters, run them on the in-process store, compute the features and
//!   score them — on each request's view.
//!
//! `cargo bench --bench model` (add `-- --warm-up-time 1 --measurement-time
//! 3` for a quicker run). Before criterion's means, each part's p50 and
//! p99 over single timed calls are printed (each includes ~20 ns of clock
//! reading).

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use palisade::capture::read::OnBadLine;
use palisade::config::parse_str;
use palisade::detect::{RequestContext, Stage};
use palisade::identify::Identity;
use palisade::model::{FeatureVector, Model};
use palisade::replay::{Engine, Inputs, Prepared};
use palisade::store::{CounterPlan, CounterReadings};

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

fn percentiles(name: &str, mut sample: impl FnMut(usize)) {
    let mut histogram = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    for round in 0..50 {
        for i in 0..REQUESTS {
            let started = Instant::now();
            sample(i);
            let took = started.elapsed().as_nanos() as u64;
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

fn model(c: &mut Criterion) {
    let (requests, vectors) = load();
    let model = Model::load(&root().join("models/palisade-gbdt-v2.json")).expect("the shipped model");
    percentiles("model/inference", |i| {
        black_box(model.probability(black_box(&vectors[i])));
    });

    let config = parse_str(&config(), "bench.toml").expect("bench configuration");
    let engine = Engine::new(&config).expect("bench engine");
    let stage = engine.pipeline().models().expect("the model stage").clone();
    let store = engine.pipeline().store().clone();
    let mut at = requests[0].at;
    let mut plan = CounterPlan::default();
    let mut readings = CounterReadings::default();
    let mut one = |i: usize| {
        let request = &requests[i];
        at = at.max(request.at) + 1_000;
        request.with_view(engine.lifecycle(), |view| {
            let mut context = RequestContext::new(Identity::Anonymous);
            plan.clear();
            readings.clear();
            stage.plan(view, &mut context, &mut plan);
            store.execute(&plan, at, &mut readings);
            let mut signals = Vec::new();
            stage.detect(view, &mut context, &readings, &mut signals);
            black_box(signals);
        })
    };
    percentiles("model/features_and_inference", &mut one);

    let mut group = c.benchmark_group("model");
    group.throughput(Throughput::Elements(1));
    let mut next = 0;
    group.bench_function("inference", |b| {
        b.iter(|| {
            next = (next + 1) % vectors.len();
            model.probability(black_box(&vectors[next]))
        })
    });
    group.bench_function("features_and_inference", |b| {
        b.iter(|| {
            next = (next + 1) % requests.len();
            one(next)
        })
    });
    group.finish();
}

criterion_group!(benches, model);
criterion_main!(benches);
