//! `palisade train`: labelled captures in, a model file out, with held-out
//! metrics printed. It lives with replay because it is one: the trainer
//! itself ([`crate::model::train`]) knows nothing of captures.
//!
//! The captures are replayed through the pipeline exactly as `palisade
//! replay` does (same engine, clock and counters) with the feature stage
//! on, so a model learns from the very features it will see when it
//! serves. Rows are split by their capture's `source` field: sources that
//! match a `--test-source` pattern are held out whole.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::capture::read::OnBadLine;
use crate::error::Error;
use crate::model::features::{FEATURES, FeatureVector};
use crate::model::file::ModelFile;
use crate::model::train::{Dataset, Learner, LogisticParams, Metrics, TreeParams, evaluate, predict, train};
use crate::replay::cli::load_config;
use crate::replay::run::{Engine, Inputs, file_name};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LearnerKind {
    /// Gradient-boosted trees.
    Trees,
    /// Logistic regression.
    Logistic,
}

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Labelled captures (format v1 with `label` and `source`), replayed together in time order.
    #[arg(value_name = "CAPTURE")]
    pub captures: Vec<PathBuf>,
    /// Configuration to replay with (routes, login fields); the built-in defaults without it.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Hold out every source containing this text (case-insensitive); repeat for several.
    #[arg(long = "test-source", value_name = "TEXT")]
    pub test_sources: Vec<String>,
    #[arg(long, value_enum, default_value_t = LearnerKind::Trees)]
    pub learner: LearnerKind,
    /// Seed of the row sampling; the same captures and seed give the same file.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Number of trees.
    #[arg(long, default_value_t = TreeParams::default().trees)]
    pub trees: usize,
    /// Depth of each tree.
    #[arg(long, default_value_t = TreeParams::default().depth)]
    pub depth: usize,
    /// The model's name, as recorded in the file.
    #[arg(long, default_value = "palisade")]
    pub name: String,
    /// Where to write the model file.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Also write every row's features as CSV (named columns, then label and source),
    /// e.g. to train LightGBM in Python.
    #[arg(long, value_name = "CSV")]
    pub dump_features: Option<PathBuf>,
    /// Instead of training: import this LightGBM text model (written to --out).
    #[arg(long, value_name = "MODEL_TXT")]
    pub import_lightgbm: Option<PathBuf>,
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("palisade train: {message}");
    ExitCode::from(crate::replay::cli::EXIT_ERROR)
}

/// `palisade train`.
pub fn train_command(args: TrainArgs) -> ExitCode {
    if let Some(path) = &args.import_lightgbm {
        return import_command(path, &args);
    }
    if args.captures.is_empty() {
        return fail("no captures given");
    }
    if args.test_sources.is_empty() {
        return fail("name at least one --test-source: metrics are measured on sources held out of training");
    }
    let data = match collect(&args) {
        Ok(data) => data,
        Err(error) => return fail(error),
    };
    if let Some(path) = &args.dump_features
        && let Err(error) = dump_csv(path, &data)
    {
        return fail(format!("cannot write {}: {error}", path.display()));
    }
    let patterns: Vec<String> = args.test_sources.iter().map(|p| p.to_lowercase()).collect();
    let held_out = |source: &str| {
        let source = source.to_lowercase();
        patterns.iter().any(|p| source.contains(p))
    };
    let (train_set, test_set) = data.split_by_source(held_out);
    if train_set.is_empty() || test_set.is_empty() {
        return fail(format!(
            "the split left {} training and {} test rows; check the --test-source patterns against the sources",
            train_set.len(),
            test_set.len()
        ));
    }
    let learner = match args.learner {
        LearnerKind::Trees => {
            Learner::Trees(TreeParams { trees: args.trees, depth: args.depth, ..TreeParams::default() })
        }
        LearnerKind::Logistic => Learner::Logistic(LogisticParams::default()),
    };
    let started = std::time::Instant::now();
    let mut file = train(&train_set, learner, args.seed, &args.name);
    let model = match file.compile() {
        Ok(model) => model,
        Err(error) => return fail(format!("the trained model does not compile: {error}")),
    };
    let probabilities = predict(&model, &test_set);
    let metrics = evaluate(&probabilities, &test_set.y, 0.5);
    record_training(&mut file, &args, &train_set, &test_set, &metrics);
    let report = report(&file, &test_set, &probabilities, &metrics);
    print!("{report}");
    eprintln!("palisade train: {} rows, trained in {:.1} s", data.len(), started.elapsed().as_secs_f64());
    if let Some(out) = &args.out {
        if let Err(error) = std::fs::write(out, file.to_json()) {
            return fail(format!("cannot write {}: {error}", out.display()));
        }
        println!("model written to {}", out.display());
    }
    ExitCode::SUCCESS
}

fn import_command(path: &std::path::Path, args: &TrainArgs) -> ExitCode {
    let Some(out) = &args.out else { return fail("--import-lightgbm needs --out") };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) => return fail(format!("cannot read {}: {error}", path.display())),
    };
    let file = match crate::model::lightgbm::import(&text, &args.name).and_then(|file| file.compile().map(|_| file)) {
        Ok(file) => file,
        Err(error) => return fail(format!("{}: {error}", path.display())),
    };
    if let Err(error) = std::fs::write(out, file.to_json()) {
        return fail(format!("cannot write {}: {error}", out.display()));
    }
    println!("imported {} trees from {} into {}", file.trees.len(), path.display(), out.display());
    ExitCode::SUCCESS
}

/// Replay the captures with the feature stage on and collect labelled rows.
pub fn collect(args: &TrainArgs) -> Result<Dataset, Error> {
    let mut config = load_config(args.config.as_deref())?;
    // Features only: no model's decision may change the counters the
    // features are computed from.
    config.models.clear();
    config.collect_features = true;
    let engine = Engine::new(&config).map_err(|problems| {
        Error::config(problems.into_iter().map(|p| format!("{}: {}", p.key, p.message)).collect::<Vec<_>>().join("; "))
    })?;
    let mut inputs = Inputs::open(&args.captures, OnBadLine::Skip)?;
    let names: Vec<String> = args.captures.iter().map(|p| file_name(p)).collect();
    let mut data = Dataset::default();
    let mut skipped = 0usize;
    inputs.for_each(|request, meta| {
        let (decision, _) = engine.run(request);
        let (Some(label), Some(model)) = (meta.label.as_deref(), decision.model()) else {
            skipped += 1;
            return;
        };
        let source = meta.source.as_deref().unwrap_or(&names[meta.capture]);
        data.push(model.features, label == "bot", source);
    });
    let bad: usize = inputs.summaries().iter().map(|s| s.bad.len()).sum();
    if skipped > 0 || bad > 0 {
        eprintln!(
            "palisade train: {skipped} requests without a label or features (partners skip the model) and {bad} unreadable lines left out"
        );
    }
    if data.is_empty() {
        return Err(Error::malformed("no labelled requests in the captures"));
    }
    Ok(data)
}

fn dump_csv(path: &std::path::Path, data: &Dataset) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let header: Vec<&str> = FEATURES.iter().map(|f| f.name).chain(["label", "source"]).collect();
    writeln!(out, "{}", header.join(","))?;
    for i in 0..data.len() {
        let row: &FeatureVector = &data.x[i];
        let mut line = String::new();
        for value in row {
            if !value.is_nan() {
                let _ = write!(line, "{value}");
            }
            line.push(',');
        }
        let source = data.sources[data.source[i]].replace([',', '"'], " ");
        let _ = write!(line, "{},{source}", data.y[i]);
        writeln!(out, "{line}")?;
    }
    out.flush()
}

fn round6(value: f64) -> f64 {
    if value.is_nan() { -1.0 } else { (value * 1e6).round() / 1e6 }
}

fn record_training(file: &mut ModelFile, args: &TrainArgs, train: &Dataset, test: &Dataset, metrics: &Metrics) {
    let mut command = format!("palisade train --seed {} --name {}", args.seed, args.name);
    // The command must train this model again: the trees' shape goes in
    // even when it is the default (a default can change between releases).
    if args.learner == LearnerKind::Logistic {
        command.push_str(" --learner logistic");
    } else {
        let _ = write!(command, " --trees {} --depth {}", args.trees, args.depth);
    }
    for pattern in &args.test_sources {
        let _ = write!(command, " --test-source '{pattern}'");
    }
    for capture in &args.captures {
        let _ = write!(command, " {}", file_name(capture));
    }
    let info = &mut file.training;
    info.trainer = command;
    let mut train_sources = train.sources.clone();
    train_sources.sort();
    let mut test_sources = test.sources.clone();
    test_sources.sort();
    info.train_sources = train_sources;
    info.test_sources = test_sources;
    let bots = |d: &Dataset| d.y.iter().filter(|y| **y > 0.5).count() as u64;
    info.rows.insert("train".into(), train.len() as u64);
    info.rows.insert("train_bots".into(), bots(train));
    info.rows.insert("test".into(), test.len() as u64);
    info.rows.insert("test_bots".into(), bots(test));
    for (name, value) in [
        ("precision", metrics.precision),
        ("recall", metrics.recall),
        ("false_positive_rate", metrics.false_positive_rate),
        ("roc_auc", metrics.roc_auc),
        ("recall_at_fpr_0.1pct", metrics.recall_at_fpr_0_1pct),
        ("threshold_at_fpr_0.1pct", metrics.threshold_at_fpr_0_1pct),
        ("brier", metrics.brier),
        ("calibration_error", metrics.calibration_error),
    ] {
        info.metrics.insert(name.into(), round6(value));
    }
}

/// The report printed after training.
fn report(file: &ModelFile, test: &Dataset, p: &[f64], metrics: &Metrics) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "model {} ({} trees)", file.name, file.trees.len());
    let _ = writeln!(
        out,
        "trained on {} sources: {}",
        file.training.train_sources.len(),
        file.training.train_sources.join("; ")
    );
    let _ = writeln!(
        out,
        "held out {} sources: {}",
        file.training.test_sources.len(),
        file.training.test_sources.join("; ")
    );
    let _ = writeln!(out, "\nheld-out metrics ({} rows, {} bots):", metrics.rows, metrics.bots);
    let _ = writeln!(out, "  ROC-AUC                 {:.4}", metrics.roc_auc);
    let _ = writeln!(
        out,
        "  recall at 0.1% FPR      {:.4}  (threshold {:.4})",
        metrics.recall_at_fpr_0_1pct, metrics.threshold_at_fpr_0_1pct
    );
    let _ = writeln!(
        out,
        "  at p >= 0.5: precision {:.4}, recall {:.4}, false-positive rate {:.4}",
        metrics.precision, metrics.recall, metrics.false_positive_rate
    );
    let _ = writeln!(
        out,
        "  Brier score {:.4}, expected calibration error {:.4}",
        metrics.brier, metrics.calibration_error
    );
    let _ = writeln!(out, "  calibration (mean predicted -> observed bot share, rows):");
    for (predicted, observed, rows) in &metrics.calibration {
        let _ = writeln!(out, "    {predicted:.3} -> {observed:.3}  ({rows})");
    }
    let _ = writeln!(out, "\nheld-out sources (share flagged at p >= 0.5 / above the 0.1% FPR threshold):");
    for (index, source) in test.sources.iter().enumerate() {
        let rows: Vec<usize> = (0..test.len()).filter(|&i| test.source[i] == index).collect();
        let flagged = rows.iter().filter(|&&i| p[i] >= 0.5).count();
        let strict = rows.iter().filter(|&&i| p[i] > metrics.threshold_at_fpr_0_1pct).count();
        let label = if rows.first().is_some_and(|&i| test.y[i] > 0.5) { "bot" } else { "not bot" };
        let _ = writeln!(
            out,
            "  {source} [{label}, {} rows]: {:.3} / {:.3}",
            rows.len(),
            flagged as f64 / rows.len().max(1) as f64,
            strict as f64 / rows.len().max(1) as f64
        );
    }
    let _ = writeln!(out, "\nmost important features:");
    for (name, importance) in file.training.top_features.iter().take(10) {
        let _ = writeln!(out, "  {name:<32} {importance:.3}");
    }
    out
}
