//! The `palisade replay`, `palisade import` and `palisade explain`
//! commands. Exit status: 0 when everything passed, 1 when a gate failed,
//! 2 when the inputs could not be used (configuration, captures, files).

use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::diff::{DiffTally, Example};
use super::expect::{Expectations, expectation_line};
use super::gates::{GateResult, Gates};
use super::html::{Case, HtmlTally, ReportContext, evidence_text};
use super::report::Tally;
use super::run::{CaptureSummary, Engine, Inputs};
use crate::capture::import_har::{HAR_CLIENT_IP, Imported, import_har};
use crate::capture::import_nginx::import_nginx;
use crate::capture::read::OnBadLine;
use crate::capture::write::write_records;
use crate::capture::{BadLine, Redactor};
use crate::config::{Config, ConfigError};
use crate::error::Error;
use crate::pipeline::Decision;
use crate::signal::{Action, Signal};

pub const EXIT_GATE_FAILED: u8 = 1;
pub const EXIT_ERROR: u8 = 2;

/// Report format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Configuration to replay with; the built-in defaults without it.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// A configuration to compare with: the report adds every request whose
    /// action differs, grouped by the detection that made the difference.
    #[arg(long, value_name = "OLD_CONFIG")]
    pub baseline: Option<PathBuf>,
    /// Capture files (JSON Lines, plain or gzip), replayed together in time order.
    #[arg(required = true, value_name = "CAPTURE")]
    pub captures: Vec<PathBuf>,
    /// Report format on standard output.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Write every request's decision here (JSON Lines).
    #[arg(long, value_name = "FILE")]
    pub decisions: Option<PathBuf>,
    /// Also write the report as one self-contained HTML page (summary,
    /// confusion matrix and score histograms per label, false positives and
    /// misses with evidence, and the diff against `--baseline`).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Fail (exit 1) when more than this fraction of the requests labeled human,
    /// or of those labeled partner, is stopped (rate-limited or blocked).
    #[arg(long, value_name = "FRACTION")]
    pub max_false_positive_rate: Option<f64>,
    /// Fail (exit 1) when less than this fraction of the requests labeled bot is stopped.
    #[arg(long, value_name = "FRACTION")]
    pub min_bot_recall: Option<f64>,
    /// Fail (exit 1) when a request's action is not the one this file expects
    /// (JSON Lines: {"capture": NAME, "line": N, "action": A} or {"id": ID, "action": A}).
    #[arg(long, value_name = "FILE")]
    pub expect: Option<PathBuf>,
    /// Write the actions of this replay as an expectation file (to edit and keep).
    #[arg(long, value_name = "FILE")]
    pub write_expect: Option<PathBuf>,
    /// At a capture line that cannot be read: report it and skip it, or stop reading that capture.
    #[arg(long, value_enum, default_value_t = OnBadLine::Skip)]
    pub on_bad_line: OnBadLine,
    /// No progress bar and no timing line on standard error.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    #[command(subcommand)]
    pub source: ImportSource,
}

#[derive(Debug, clap::Subcommand)]
pub enum ImportSource {
    /// HAR 1.2 files saved from browser devtools.
    Har {
        #[command(flatten)]
        common: ImportCommon,
        /// The client address of every request (a HAR does not record it).
        #[arg(long, default_value = HAR_CLIENT_IP)]
        client_ip: std::net::IpAddr,
    },
    /// nginx access logs in the "combined" format.
    Nginx {
        #[command(flatten)]
        common: ImportCommon,
        /// At a line that cannot be read: report it and skip it, or stop.
        #[arg(long, value_enum, default_value_t = OnBadLine::Skip)]
        on_bad_line: OnBadLine,
    },
}

#[derive(Debug, clap::Args)]
pub struct ImportCommon {
    /// Files to import, in order.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// The capture to write (`-` for standard output; gzip when it ends in .gz).
    #[arg(long, short, default_value = "-")]
    pub output: PathBuf,
    /// Label every request (human, bot or partner).
    #[arg(long)]
    pub label: Option<String>,
    /// Take the redaction lists from this configuration's [capture] section.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

/// A configuration file, or the defaults; problems printed as `check` does.
pub fn load_config(path: Option<&Path>) -> Result<Config, Error> {
    match path {
        Some(path) => crate::app::load_file(path).map_err(|error: ConfigError| Error::config(error.to_string())),
        None => Ok(Config::default()),
    }
}

fn engine(config: &Config, name: &str) -> Result<Engine, Error> {
    Engine::new(config).map_err(|invalid| Error::config(crate::app::located(config, name, invalid).to_string()))
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("palisade: {message}");
    ExitCode::from(EXIT_ERROR)
}

/// One line of `--decisions`.
#[derive(Serialize)]
struct DecisionLine<'a> {
    capture: &'a str,
    line: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<&'a str>,
    request_id: String,
    route: &'a str,
    score: u8,
    action: Action,
    detections: Vec<&'a str>,
    signals: &'a [Signal],
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline: Option<BaselineLine<'a>>,
}

#[derive(Serialize)]
struct BaselineLine<'a> {
    score: u8,
    action: Action,
    detections: Vec<&'a str>,
}

#[derive(Serialize)]
struct CaptureJson<'a> {
    name: &'a str,
    requests: u64,
    bad_lines: &'a [BadLineJson],
    on_bad_line: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    stopped_at: Option<usize>,
}

#[derive(Serialize)]
struct BadLineJson {
    line: usize,
    reason: String,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    captures: Vec<CaptureJson<'a>>,
    summary: &'a super::report::Summary,
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline: Option<&'a super::report::Summary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    diff: Option<&'a super::diff::Diff>,
    gates: &'a [GateResult],
    passed: bool,
}

/// `palisade replay`.
pub fn replay(args: ReplayArgs) -> ExitCode {
    let config_name = args.config.as_ref().map_or_else(|| "(defaults)".to_string(), |p| p.display().to_string());
    let new_config = match load_config(args.config.as_deref()) {
        Ok(config) => config,
        Err(error) => return fail(error),
    };
    let new = match engine(&new_config, &config_name) {
        Ok(engine) => engine,
        Err(error) => return fail(error),
    };
    let baseline = match &args.baseline {
        Some(path) => match load_config(Some(path)).and_then(|c| engine(&c, &path.display().to_string())) {
            Ok(engine) => Some(engine),
            Err(error) => return fail(error),
        },
        None => None,
    };
    let mut expectations = match &args.expect {
        Some(path) => match Expectations::load(path) {
            Ok(e) => Some(e),
            Err(error) => return fail(error),
        },
        None => None,
    };
    for (name, value) in
        [("--max-false-positive-rate", args.max_false_positive_rate), ("--min-bot-recall", args.min_bot_recall)]
    {
        if value.is_some_and(|v| !(0.0..=1.0).contains(&v)) {
            return fail(format!("{name} is a fraction between 0 and 1"));
        }
    }
    let mut inputs = match Inputs::open(&args.captures, args.on_bad_line) {
        Ok(inputs) => inputs,
        Err(error) => return fail(error),
    };
    let file_names: Vec<String> = inputs.summaries().iter().map(|s| s.file_name.clone()).collect();
    let create = |path: &Option<PathBuf>| -> Result<Option<BufWriter<std::fs::File>>, Error> {
        path.as_ref()
            .map(|p| {
                std::fs::File::create(p)
                    .map(BufWriter::new)
                    .map_err(|e| Error::write(format!("cannot write {}: {e}", p.display())))
            })
            .transpose()
    };
    let (mut decisions, mut write_expect) = match (create(&args.decisions), create(&args.write_expect)) {
        (Ok(d), Ok(w)) => (d, w),
        (Err(error), _) | (_, Err(error)) => return fail(error),
    };

    let progress = (!args.quiet && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(inputs.total_bytes);
        bar.set_style(
            indicatif::ProgressStyle::with_template("replay {bar:40} {bytes}/{total_bytes} {msg} ({eta})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let read_bytes = inputs.read_bytes.clone();
    let started = std::time::Instant::now();
    let model_names = |engine: &Engine| -> Vec<(String, f64)> {
        let models = engine.pipeline().models().map(|stage| stage.models()).unwrap_or_default();
        models.iter().map(|m| (m.name.to_string(), m.min_probability)).collect()
    };
    let mut tally = Tally::with_models(model_names(&new));
    let mut baseline_tally = baseline.as_ref().map_or_else(Tally::default, |old| Tally::with_models(model_names(old)));
    let mut diff = DiffTally::default();
    let mut html = args.report.as_ref().map(|_| HtmlTally::default());
    let mut write_error: Option<std::io::Error> = None;
    let mut count: u64 = 0;
    inputs.for_each(|request, meta| {
        let capture = &file_names[meta.capture];
        let (decision, route) = new.run(request);
        tally.add(&decision, &route, meta.label.as_ref(), request.at);
        if let Some(html) = &mut html {
            html.add(&decision, meta.label.as_deref(), || Case {
                capture: capture.clone(),
                line: meta.line,
                label: meta.label.as_deref().unwrap_or("").to_string(),
                method: request.method.to_string(),
                target: request.uri.to_string(),
                client_ip: request.client_ip.to_string(),
                score: decision.score(),
                action: decision.action(),
                signals: decision
                    .signals
                    .iter()
                    .map(|s| (s.id.to_string(), s.penalty, s.action, evidence_text(s)))
                    .collect(),
            });
        }
        let old = baseline.as_ref().map(|engine| {
            let (old, old_route) = engine.run(request);
            baseline_tally.add(&old, &old_route, meta.label.as_ref(), request.at);
            diff.add(&decision, &old, meta.label.as_deref(), |baseline_score, score| Example {
                capture: capture.clone(),
                line: meta.line,
                id: meta.id.as_deref().map(str::to_string),
                label: meta.label.as_deref().map(str::to_string),
                method: request.method.to_string(),
                target: request.uri.to_string(),
                client_ip: request.client_ip.to_string(),
                baseline_action: Action::Allow,
                action: Action::Allow,
                baseline_score,
                score,
            });
            old
        });
        if let Some(expectations) = &mut expectations {
            expectations.check(capture, meta.line, meta.id.as_deref(), decision.action());
        }
        if write_error.is_none() {
            let result =
                write_outputs(&mut decisions, &mut write_expect, capture, meta, &route, &decision, old.as_ref());
            write_error = result.err();
        }
        count += 1;
        if let Some(bar) = &progress
            && count.is_multiple_of(16 * 1024)
        {
            bar.set_position(read_bytes.load(Ordering::Relaxed));
            bar.set_message(format!("{count} requests"));
        }
    });
    let elapsed = started.elapsed();
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    for writer in [&mut decisions, &mut write_expect].into_iter().flatten() {
        if let Err(error) = writer.flush() {
            write_error.get_or_insert(error);
        }
    }
    if let Some(error) = write_error {
        return fail(format!("cannot write the decisions or expectations: {error}"));
    }
    if !args.quiet {
        let rate = count as f64 / elapsed.as_secs_f64().max(1e-9);
        eprintln!("palisade replay: {count} requests in {:.3} s ({rate:.0} requests/s)", elapsed.as_secs_f64());
    }
    report_bad_lines(inputs.summaries(), args.on_bad_line);

    if let Some(expectations) = &mut expectations {
        expectations.finish();
    }
    let summary = tally.report();
    let baseline_summary = baseline.as_ref().map(|_| baseline_tally.report());
    let diff_report = baseline.as_ref().map(|_| diff.report());
    let gates = Gates { max_false_positive_rate: args.max_false_positive_rate, min_bot_recall: args.min_bot_recall };
    let results = gates.check(&summary, expectations.as_ref());
    let passed = results.iter().all(|r| r.passed);
    if let (Some(path), Some(html)) = (&args.report, &html) {
        let decision = &new_config.decision;
        let context = ReportContext {
            configuration: &config_name,
            baseline: args.baseline.as_ref().map(|p| p.to_str().unwrap_or("(baseline)")),
            captures: inputs.summaries().iter().map(|s| (s.name.clone(), s.requests)).collect(),
            thresholds: (decision.log_at_or_below, decision.challenge_at_or_below, decision.block_at_or_below),
        };
        let page = super::html::render(&context, &summary, html, diff_report.as_ref(), &results);
        if let Err(error) = std::fs::write(path, page) {
            return fail(format!("cannot write the report {}: {error}", path.display()));
        }
    }

    let mut out = String::new();
    match args.format {
        Format::Json => {
            let bad: Vec<Vec<BadLineJson>> = inputs
                .summaries()
                .iter()
                .map(|s| s.bad.iter().map(|b| BadLineJson { line: b.line, reason: b.reason.clone() }).collect())
                .collect();
            let report = JsonReport {
                captures: inputs
                    .summaries()
                    .iter()
                    .zip(&bad)
                    .map(|(s, bad)| CaptureJson {
                        name: &s.name,
                        requests: s.requests,
                        bad_lines: bad,
                        on_bad_line: match args.on_bad_line {
                            OnBadLine::Skip => "skip",
                            OnBadLine::Stop => "stop",
                        },
                        stopped_at: s.stopped_at,
                    })
                    .collect(),
                summary: &summary,
                baseline: baseline_summary.as_ref(),
                diff: diff_report.as_ref(),
                gates: &results,
                passed,
            };
            out = serde_json::to_string_pretty(&report).expect("reports serialize");
            out.push('\n');
        }
        Format::Text => {
            out.push_str(&format!("configuration: {config_name}\n"));
            if let Some(path) = &args.baseline {
                out.push_str(&format!("baseline: {}\n", path.display()));
            }
            for s in inputs.summaries() {
                out.push_str(&format!("capture: {} ({} requests", s.name, s.requests));
                if !s.bad.is_empty() {
                    out.push_str(&format!(", {} bad lines {}", s.bad.len(), args.on_bad_line.done()));
                }
                out.push_str(")\n");
            }
            out.push('\n');
            summary.render_text(&mut out);
            if let (Some(old), Some(diff)) = (&baseline_summary, &diff_report) {
                out.push_str("\nbaseline\n");
                let mut text = String::new();
                old.render_text(&mut text);
                for line in text.lines() {
                    out.push_str(if line.is_empty() { "" } else { "  " });
                    out.push_str(line);
                    out.push('\n');
                }
                diff.render_text(&mut out);
            }
            if !results.is_empty() {
                out.push_str("\ngates\n");
                for result in &results {
                    out.push_str(&format!("  {} {}\n", if result.passed { "pass" } else { "FAIL" }, result.message));
                }
            }
        }
    }
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout.write_all(out.as_bytes()).and_then(|_| stdout.flush()) {
        return fail(format!("cannot write the report: {error}"));
    }
    if inputs.stopped() {
        eprintln!(
            "palisade replay: stopped at a bad capture line (--on-bad-line stop); the report covers what was read"
        );
        return ExitCode::from(EXIT_ERROR);
    }
    if !passed {
        for result in results.iter().filter(|r| !r.passed) {
            eprintln!("palisade replay: gate failed: {}", result.message);
        }
        return ExitCode::from(EXIT_GATE_FAILED);
    }
    ExitCode::SUCCESS
}

fn write_outputs(
    decisions: &mut Option<BufWriter<std::fs::File>>,
    write_expect: &mut Option<BufWriter<std::fs::File>>,
    capture: &str,
    meta: &super::Meta,
    route: &str,
    decision: &Decision,
    baseline: Option<&Decision>,
) -> std::io::Result<()> {
    if let Some(out) = decisions {
        let line = DecisionLine {
            capture,
            line: meta.line,
            id: meta.id.as_deref(),
            label: meta.label.as_deref(),
            request_id: decision.request_id.to_string(),
            route,
            score: decision.score(),
            action: decision.action(),
            detections: decision.enforced_detections().collect(),
            signals: &decision.signals,
            baseline: baseline.map(|old| BaselineLine {
                score: old.score(),
                action: old.action(),
                detections: old.enforced_detections().collect(),
            }),
        };
        serde_json::to_writer(&mut *out, &line).map_err(std::io::Error::other)?;
        out.write_all(b"\n")?;
    }
    if let Some(out) = write_expect {
        writeln!(out, "{}", expectation_line(capture, meta.line, meta.id.as_deref(), decision.action()))?;
    }
    Ok(())
}

fn report_bad_lines(summaries: &[CaptureSummary], on_bad: OnBadLine) {
    for summary in summaries {
        print_bad_lines(&summary.name, &summary.bad, on_bad);
    }
}

fn print_bad_lines(name: &str, bad: &[BadLine], on_bad: OnBadLine) {
    const SHOWN: usize = 10;
    for line in bad.iter().take(SHOWN) {
        eprintln!("palisade: {name}: {line} ({})", on_bad.done());
    }
    if bad.len() > SHOWN {
        eprintln!("palisade: {name}: {} more bad lines ({})", bad.len() - SHOWN, on_bad.done());
    }
}

/// `palisade import har|nginx`.
pub fn import(args: ImportArgs) -> ExitCode {
    let (common, har_ip, on_bad) = match &args.source {
        ImportSource::Har { common, client_ip } => (common, Some(*client_ip), OnBadLine::Skip),
        ImportSource::Nginx { common, on_bad_line } => (common, None, *on_bad_line),
    };
    let redactor = match load_config(common.config.as_deref()) {
        Ok(config) => match &config.capture {
            Some(capture) => Redactor::new(
                capture.redact_fields.iter().map(String::as_str),
                capture.redact_headers.iter().map(|h| h.get_ref().as_str()),
            ),
            None => Redactor::default(),
        },
        Err(error) => return fail(error),
    };
    let mut records = Vec::new();
    let mut stopped = false;
    for file in &common.files {
        let text = match std::fs::read(file) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(error) => return fail(format!("cannot read {}: {error}", file.display())),
        };
        let imported: Imported = match har_ip {
            Some(ip) => match import_har(&text, ip) {
                Ok(imported) => imported,
                Err(error) => return fail(format!("{}: {error}", file.display())),
            },
            None => import_nginx(&text, on_bad),
        };
        print_bad_lines(&file.display().to_string(), &imported.bad, on_bad);
        stopped |= on_bad == OnBadLine::Stop && !imported.bad.is_empty();
        records.extend(imported.records);
        if stopped {
            break;
        }
    }
    for record in &mut records {
        // Secrets go before anything is written.
        redactor.redact_record(record);
        if let Some(label) = &common.label {
            record.label = Some(label.clone());
        }
    }
    match write_records(&common.output, &records) {
        Ok(count) => {
            eprintln!("palisade import: {count} requests written to {}", common.output.display());
            if stopped { ExitCode::from(EXIT_ERROR) } else { ExitCode::SUCCESS }
        }
        Err(error) => fail(format!("cannot write {}: {error}", common.output.display())),
    }
}
