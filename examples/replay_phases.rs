//! Where replay's time goes, phase by phase, on one core: reading and
//! parsing the capture (replay's own work), then routing and building the
//! view, then the pipeline's `evaluate`, then `observe`.
//!
//! ```sh
//! cargo run --release --example replay_corpus -- /tmp/corpus.jsonl 1000000
//! cargo run --release --example replay_phases -- /tmp/corpus.jsonl [CONFIG]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use palisade::replay::{Engine, Inputs};

fn main() {
    let mut args = std::env::args().skip(1);
    let capture = PathBuf::from(args.next().expect("a capture file"));
    let config = match args.next() {
        Some(path) => palisade::app::load_file(std::path::Path::new(&path)).unwrap_or_else(|e| panic!("{e}")),
        None => palisade::config::Config::default(),
    };
    let phases: [(&str, u8); 4] =
        [("read + parse", 0), ("+ route + view", 1), ("+ evaluate", 2), ("+ observe (whole replay)", 3)];
    let mut previous = 0.0;
    for (name, phase) in phases {
        let engine = Engine::new(&config).unwrap_or_else(|e| panic!("{e:?}"));
        let mut inputs = Inputs::open(std::slice::from_ref(&capture), Default::default()).expect("capture");
        let mut count = 0u64;
        let mut sink = 0usize;
        let started = Instant::now();
        inputs.for_each(|request, _| {
            count += 1;
            match phase {
                0 => sink += request.headers().len(),
                1 | 2 => {
                    engine.set_clock(request.at);
                    let pipeline = engine.pipeline();
                    sink += request.with_view(engine.lifecycle(), |view| {
                        view.headers.len() + if phase == 2 { pipeline.evaluate(view).signals.len() } else { 0 }
                    });
                }
                _ => sink += engine.run(request).0.signals.len(),
            }
        });
        let seconds = started.elapsed().as_secs_f64();
        let per_request_us = seconds * 1e6 / count as f64;
        println!(
            "{name:<26} {count} requests in {seconds:.3} s: {:>9.0} requests/s, {per_request_us:.2} µs/request (+{:.2} µs) [{sink}]",
            count as f64 / seconds,
            per_request_us - previous
        );
        previous = per_request_us;
    }
    per_detector(&config, &capture);
}

/// Each stage's plan, counter execution and detect, timed on its own
/// (what is left of `evaluate` is identify, decide and the decision itself).
fn per_detector(config: &palisade::config::Config, capture: &std::path::Path) {
    use palisade::store::{CounterPlan, CounterReadings};
    let engine = Engine::new(config).unwrap_or_else(|e| panic!("{e:?}"));
    let mut inputs = Inputs::open(&[capture.to_path_buf()], Default::default()).expect("capture");
    let detectors = engine.pipeline().stages();
    let mut spent = vec![std::time::Duration::ZERO; detectors.len()];
    let mut count = 0u64;
    inputs.for_each(|request, _| {
        count += 1;
        engine.set_clock(request.at);
        let pipeline = engine.pipeline();
        request.with_view(engine.lifecycle(), |view| {
            let identity = pipeline.allowlist().identify(view, request.at).identity;
            for (detector, spent) in detectors.iter().zip(&mut spent) {
                if !detector.audience().includes(&identity) {
                    continue;
                }
                let started = Instant::now();
                let mut context = palisade::detect::RequestContext::new(identity.clone()).with_time(request.at);
                let mut plan = CounterPlan::default();
                let mut readings = CounterReadings::default();
                let mut signals = Vec::new();
                detector.plan(view, &mut context, &mut plan);
                pipeline.store().execute(&plan, request.at, &mut readings);
                detector.detect(view, &mut context, &readings, &mut signals);
                *spent += started.elapsed();
            }
        });
    });
    for (detector, spent) in detectors.iter().zip(spent) {
        println!("  stage {:<12} {:.2} µs/request", detector.name(), spent.as_secs_f64() * 1e6 / count as f64);
    }
}
