//! The decision pipeline without the network: route + view + evaluate per
//! request (what `listen::handler` runs between reading a request and
//! forwarding or answering it), over the real requests in
//! `replay/captures/`.
//!
//! `cargo bench --bench pipeline` (add `-- --warm-up-time 1
//! --measurement-time 3` for a quicker run). Latency percentiles are in
//! `examples/decision_latency.rs`; see `benches/README.md`.

#[path = "support/captures.rs"]
mod captures;

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use palisade::signal::Action;

use captures::{Captured, MIX_STEP, clean_browser, decide, default_pipeline, load_all, mix_actions, shuffled};

/// The allocator `palisade` itself runs with (see `src/main.rs`), so that
/// these numbers are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The whole capture mix, one request per iteration, cycling through it
/// with the manual clock moving [`MIX_STEP`] per request.
fn capture_mix(c: &mut Criterion) {
    let mix = shuffled(load_all());
    println!("capture mix: {} requests; actions at {MIX_STEP:?}/request: {}", mix.len(), mix_actions(&mix, 100_000));
    let (pipeline, clock) = default_pipeline();
    let mut group = c.benchmark_group("decision");
    group.throughput(Throughput::Elements(1));
    let mut next = 0usize;
    group.bench_function("capture_mix", |b| {
        b.iter(|| {
            clock.advance(MIX_STEP);
            let captured = &mix[next];
            next = if next + 1 == mix.len() { 0 } else { next + 1 };
            decide(&pipeline, black_box(captured))
        })
    });
    group.finish();
}

/// One request over and over, checking first that it gets `expected`.
fn one_request(c: &mut Criterion, name: &str, captured: &Captured, expected: Action) {
    let (pipeline, clock) = default_pipeline();
    let action = decide(&pipeline, captured).action();
    assert_eq!(action, expected, "{name}: {} {}", captured.request.method, captured.request.uri);
    let mut group = c.benchmark_group("decision");
    group.throughput(Throughput::Elements(1));
    group.bench_function(name, |b| {
        b.iter(|| {
            clock.advance(MIX_STEP);
            decide(&pipeline, black_box(captured))
        })
    });
    group.finish();
}

fn clean_and_blocked(c: &mut Criterion) {
    let all = load_all();
    one_request(c, "clean_browser", clean_browser(&all), Action::Allow);
    one_request(c, "sqlmap_blocked", captures::sqlmap_attack(&all), Action::Block);
}

/// The steps of a decision separately, over the capture mix, to see where
/// the time goes. Each iteration is one pass over the whole mix. The view
/// computes the HTTP fingerprint lazily and caches it, so the steps after
/// routing build a fresh view every time, as the handler does:
/// `view_mix` is the view alone, `view_fingerprint_mix` adds the
/// fingerprint, `view_evaluate_mix` adds evaluate (which asks for the
/// fingerprint itself).
fn stages(c: &mut Criterion) {
    let mix = shuffled(load_all());
    let (lifecycle, clock) = default_pipeline();
    let pipeline = lifecycle.pipeline();
    let routed: Vec<palisade::lifecycle::Routed> =
        mix.iter().map(|c| lifecycle.route(&c.request.method, &c.request.uri)).collect();
    let arrivals: Vec<_> = mix.iter().map(captures::arrival).collect();
    let view = |i: usize| {
        let body = routed[i].inspects_body().then(|| mix[i].request.body.as_deref().unwrap_or(&[]));
        lifecycle.view(&routed[i], &arrivals[i], body)
    };

    let mut group = c.benchmark_group("stage");
    group.throughput(Throughput::Elements(mix.len() as u64));
    group.bench_function("route_mix", |b| {
        b.iter(|| {
            for c in &mix {
                black_box(lifecycle.route(&c.request.method, black_box(&c.request.uri)));
            }
        })
    });
    group.bench_function("view_mix", |b| {
        b.iter(|| {
            for i in 0..mix.len() {
                black_box(view(black_box(i)));
            }
        })
    });
    group.bench_function("view_fingerprint_mix", |b| {
        b.iter(|| {
            for i in 0..mix.len() {
                let view = view(black_box(i));
                black_box(view.fingerprint());
            }
        })
    });
    group.bench_function("view_evaluate_mix", |b| {
        b.iter(|| {
            for i in 0..mix.len() {
                clock.advance(MIX_STEP);
                black_box(pipeline.evaluate(&view(black_box(i))));
            }
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(5));
    targets = capture_mix, clean_and_blocked, stages
}
criterion_main!(benches);
