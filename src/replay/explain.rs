//! `palisade explain`: one request through every stage, printed: the
//! route and its profile, the identity, each signal with the detector
//! that raised it, its penalty, action and evidence, then the score and
//! the action.
//!
//! For `--capture-line N FILE`, the lines before N are replayed first, so
//! counters (rate limits, credential counters) are what they were when the
//! request came; the decision is the one `palisade replay` makes for that
//! line. A raw request on standard input is explained on fresh counters.

use std::fmt::Write as _;
use std::io::Read;
use std::net::IpAddr;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;

use super::cli::{EXIT_ERROR, load_config};
use super::run::{Engine, Inputs, Meta, Prepared};
use crate::capture::import_har::HAR_CLIENT_IP;
use crate::capture::raw::parse_raw_request;
use crate::capture::read::OnBadLine;
use crate::capture::record::RecordRef;
use crate::config::{Config, RouteMode};
use crate::decision_log::rfc3339_millis;
use crate::detect::RequestContext;
use crate::error::Error;
use crate::identify::Identity;
use crate::pipeline::Decision;
use crate::signal::{EvidenceValue, Signal};
use crate::store::{CounterPlan, CounterReadings};

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// Configuration to decide with; the built-in defaults without it.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Explain line N of a capture file (the lines before it are replayed first).
    #[arg(long, num_args = 2, value_names = ["N", "FILE"])]
    pub capture_line: Option<Vec<String>>,
    /// `-` to read one raw HTTP/1.x request (head, empty line, body) from standard input.
    #[arg(value_name = "-")]
    pub stdin: Option<String>,
    /// The client address of a request read from standard input.
    #[arg(long, default_value = HAR_CLIENT_IP)]
    pub client_ip: IpAddr,
    /// With --capture-line: explain the line on fresh counters, without replaying the lines before it.
    #[arg(long)]
    pub fresh: bool,
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("palisade explain: {message}");
    ExitCode::from(EXIT_ERROR)
}

/// `palisade explain`.
pub fn explain(args: ExplainArgs) -> ExitCode {
    let config = match load_config(args.config.as_deref()) {
        Ok(config) => config,
        Err(error) => return fail(error),
    };
    // Two engines over the same history: one decides, the other runs each
    // detector on its own to tell which raised which signal.
    let (engine, twin) = match (Engine::new(&config), Engine::new(&config)) {
        (Ok(engine), Ok(twin)) => (engine, twin),
        _ => return fail("the configuration has problems; run `palisade check` for the list"),
    };
    let text = match (&args.capture_line, args.stdin.as_deref()) {
        (Some(spec), None) => {
            let (Ok(line), Some(file)) = (spec[0].parse::<usize>(), spec.get(1)) else {
                return fail("--capture-line takes a line number and a capture file");
            };
            explain_capture_line(&config, &engine, &twin, line, &PathBuf::from(file), args.fresh)
        }
        (None, Some("-")) => explain_stdin(&config, &engine, &twin, args.client_ip),
        _ => return fail("give --capture-line N FILE, or - to read a raw request from standard input"),
    };
    match text {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => fail(error),
    }
}

fn explain_capture_line(
    config: &Config,
    engine: &Engine,
    twin: &Engine,
    wanted: usize,
    file: &std::path::Path,
    fresh: bool,
) -> Result<String, Error> {
    let mut inputs = Inputs::open(&[file.to_path_buf()], OnBadLine::Skip)?;
    let mut earlier = 0usize;
    let mut text = None;
    inputs.for_each_until(|request, meta| {
        if meta.line < wanted {
            if !fresh {
                engine.run(request);
                twin.run(request);
                earlier += 1;
            }
            return ControlFlow::Continue(());
        }
        if meta.line == wanted {
            let origin = format!(
                "{} line {wanted}{}{}",
                file.display(),
                meta.label.as_deref().map(|l| format!(", label {l}")).unwrap_or_default(),
                if fresh {
                    ", fresh counters".to_string()
                } else {
                    format!(", {earlier} earlier requests replayed first")
                }
            );
            text = Some(render(config, engine, twin, request, meta, &origin));
        }
        ControlFlow::Break(())
    });
    if let Some(text) = text {
        return Ok(text);
    }
    let bad = inputs.summaries()[0].bad.iter().find(|b| b.line == wanted).map(|b| b.reason.clone());
    Err(match bad {
        Some(reason) => {
            Error::malformed(format!("{} line {wanted} is not a readable request: {reason}", file.display()))
        }
        None => Error::malformed(format!("{} has no request on line {wanted}", file.display())),
    })
}

fn explain_stdin(config: &Config, engine: &Engine, twin: &Engine, client_ip: IpAddr) -> Result<String, Error> {
    let mut bytes = Vec::new();
    std::io::stdin().read_to_end(&mut bytes).map_err(|e| Error::read(format!("cannot read standard input: {e}")))?;
    let now = crate::clock::Clock::now(&crate::clock::SystemClock);
    let record = parse_raw_request(&bytes, client_ip, crate::capture::record::nanos_to_ts(now))?;
    let borrowed = RecordRef {
        ts: record.ts,
        client_ip: record.client_ip,
        method: record.method.as_str().into(),
        target: record.target.as_str().into(),
        version: record.version.as_deref().map(Into::into),
        headers: record.headers.iter().map(|(n, v)| (n.as_str().into(), v.as_str().into())).collect(),
        body: record.body.as_deref().map(Into::into),
        body_b64: record.body_b64.as_deref().map(Into::into),
        status: None,
        label: None,
        source: None,
        id: None,
    };
    let mut request = Prepared::default();
    request.fill(&borrowed)?;
    Ok(render(config, engine, twin, &request, &Meta::default(), "standard input, fresh counters"))
}

/// Which detector raises which signal ids for this request, run one by
/// one on the twin engine.
fn attribute(twin: &Engine, request: &Prepared) -> Vec<(&'static str, Vec<Signal>)> {
    let pipeline = twin.pipeline();
    request.with_view(twin.lifecycle(), |view| {
        let mut found = Vec::new();
        let identified = pipeline.allowlist().identify(view, request.at);
        if !identified.signals.is_empty() {
            found.push(("identify", identified.signals.clone()));
        }
        let identity = identified.identity;
        for stage in pipeline.stages().iter().filter(|stage| stage.audience().includes(&identity)) {
            let mut context = RequestContext::new(identity.clone()).with_time(request.at);
            let mut plan = CounterPlan::default();
            let mut readings = CounterReadings::default();
            stage.plan(view, &mut context, &mut plan);
            pipeline.store().execute(&plan, request.at, &mut readings);
            let mut signals = Vec::new();
            stage.detect(view, &mut context, &readings, &mut signals);
            found.push((stage.name(), signals));
        }
        found
    })
}

fn render(config: &Config, engine: &Engine, twin: &Engine, request: &Prepared, meta: &Meta, origin: &str) -> String {
    twin.set_clock(request.at);
    let attributed = attribute(twin, request);
    let (decision, _) = engine.run(request);
    let pipeline = engine.pipeline();
    let (path, route) = pipeline.route(&request.method, request.uri.path());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "request      {} {} {:?} from {}",
        request.method, request.uri, request.version, request.client_ip
    );
    let _ = writeln!(out, "             at {} ({origin})", rfc3339_millis(request.at));
    if let Some(id) = &meta.id {
        let _ = writeln!(out, "id           {id}");
    }
    let limit = route.rate_limit.map_or_else(
        || "no rate limit".to_string(),
        |l| format!("rate limit {} per {} s, burst {}", l.requests, l.period_secs, l.burst.unwrap_or(l.requests)),
    );
    let mode = match route.mode {
        RouteMode::Enforce => "enforce",
        RouteMode::Monitor => "monitor (decide and log, never act)",
    };
    let _ = writeln!(out, "path         {path} (normalized)");
    let _ = writeln!(out, "route        {} (profile {}, mode {mode}; {limit})", route.name, route.profile.as_str());
    if route.inspects_body() {
        let content_type = request.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let username =
            route.login.as_ref().and_then(|login| login.username(content_type, request.body.as_deref().unwrap_or(&[])));
        let _ = writeln!(out, "username     {}", username.as_deref().unwrap_or("(none found in the body)"));
    }
    match &decision.identity {
        Identity::Anonymous => {
            let _ = writeln!(out, "identity     anonymous (no partner's certificate, signature, API key or network)");
        }
        Identity::Partner { partner, by, .. } => {
            let _ = writeln!(
                out,
                "identity     partner {} (by {}): bot detectors are skipped, only the partner's quota applies",
                partner.name,
                by.as_str()
            );
        }
    }
    let _ = writeln!(out, "fingerprint  {}", decision.fingerprint);
    render_signals(&mut out, &decision, &attributed);
    render_models(&mut out, engine, &decision);
    render_score(&mut out, config, &decision);
    out
}

/// Each model's probability and the features that moved it most.
fn render_models(out: &mut String, engine: &Engine, decision: &Decision) {
    let (Some(stage), Some(report)) = (engine.pipeline().models(), decision.model()) else { return };
    for (configured, probability) in stage.models().iter().zip(report.probabilities()) {
        let mode = match configured.mode {
            crate::config::ModelMode::Shadow => "shadow",
            crate::config::ModelMode::Enforce => "enforce",
        };
        let _ = writeln!(
            out,
            "model        {} ({mode}): probability {probability:.3}, penalty {} (min_probability {})",
            configured.name,
            configured.penalty(*probability),
            configured.min_probability
        );
        for contribution in configured.model.top_contributions(&report.features, 5) {
            let value = report.features[contribution.feature];
            let value = if value.is_nan() { "missing".to_string() } else { format!("{value}") };
            let _ = writeln!(
                out,
                "               {:<32} = {value:<10} moved the log-odds by {:+.3}",
                crate::model::features::FEATURES[contribution.feature].name,
                contribution.value
            );
        }
    }
}

fn render_signals(out: &mut String, decision: &Decision, attributed: &[(&'static str, Vec<Signal>)]) {
    let partner = matches!(decision.identity, Identity::Partner { .. });
    let _ = writeln!(out, "signals");
    if decision.signals.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    let width = decision.signals.iter().map(|s| s.id.len()).max().unwrap_or(0);
    let monitored = decision.mode == RouteMode::Monitor;
    for signal in &decision.signals {
        let source = attributed
            .iter()
            .find(|(_, signals)| signals.iter().any(|s| s.id == signal.id))
            .map_or("credential", |(name, _)| *name);
        let action = signal.action.map_or_else(|| "-".to_string(), |a| a.to_string());
        let shadow = if signal.shadow {
            "  [shadow: not acted on]"
        } else if monitored {
            "  [monitor route: not acted on]"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {source:<11} {:<width$}  penalty {:>3}  action {action}{shadow}",
            signal.id, signal.penalty
        );
        if !signal.evidence.is_empty() {
            let evidence: Vec<String> = signal
                .evidence
                .iter()
                .map(|e| {
                    let value = match &e.value {
                        EvidenceValue::Number(n) => n.to_string(),
                        EvidenceValue::Text(t) => format!("{:?}", t.as_ref()),
                    };
                    match e.threshold {
                        Some(threshold) => format!("{} = {value} (threshold {threshold})", e.name),
                        None => format!("{} = {value}", e.name),
                    }
                })
                .collect();
            let _ = writeln!(out, "  {:<11} {}", "", evidence.join(", "));
        }
    }
    if !partner {
        let silent: Vec<&str> =
            attributed.iter().filter(|(_, signals)| signals.is_empty()).map(|(name, _)| *name).collect();
        if !silent.is_empty() {
            let _ = writeln!(out, "  no finding from: {}", silent.join(", "));
        }
    }
}

fn render_score(out: &mut String, config: &Config, decision: &Decision) {
    let d = &config.decision;
    let partner = matches!(decision.identity, Identity::Partner { .. });
    let monitored = decision.mode == RouteMode::Monitor;
    let acted: Vec<&Signal> = decision.signals.iter().filter(|s| !s.shadow && !monitored).collect();
    if partner {
        let _ = writeln!(out, "score        {} (partners are trusted)", decision.score());
    } else {
        let mut terms = format!("{} (base)", d.base_score);
        let mut total = i64::from(d.base_score);
        for signal in &acted {
            let _ = write!(terms, " - {} ({})", signal.penalty, signal.id);
            total -= i64::from(signal.penalty);
        }
        let clamped = if total != i64::from(decision.score()) {
            format!(", clamped to {}", decision.score())
        } else {
            String::new()
        };
        let _ = writeln!(out, "score        {terms} = {total}{clamped}");
        let _ = writeln!(
            out,
            "thresholds   log <= {}, challenge <= {}, block <= {}",
            d.log_at_or_below, d.challenge_at_or_below, d.block_at_or_below
        );
    }
    let mut reasons: Vec<String> = Vec::new();
    if !partner {
        let score = decision.score();
        let by_score = if score <= d.block_at_or_below {
            "block"
        } else if score <= d.challenge_at_or_below {
            "challenge"
        } else if score <= d.log_at_or_below {
            "log"
        } else {
            "allow"
        };
        reasons.push(format!("the score says {by_score}"));
    }
    reasons.extend(acted.iter().filter_map(|s| s.action.map(|a| format!("{} demands {a}", s.id))));
    let why = format!(" ({}; the most severe wins)", reasons.join(", "));
    let why = if reasons.is_empty() { String::new() } else { why };
    let _ = writeln!(out, "action       {}{why}", decision.action());
    if let Some(would) = decision.verdict.would {
        let _ = writeln!(
            out,
            "would        {} with score {} if shadow rules and monitor mode were enforced",
            would.action, would.score
        );
    }
    if let Some(wait) = decision.verdict.enforced.retry_after {
        let _ = writeln!(out, "retry after  {} s", crate::decision_log::retry_after_secs(wait));
    }
}
