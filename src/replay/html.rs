//! `palisade replay --report FILE`: the replay as one self-contained HTML
//! page (styles inline, charts as inline SVG, no script, nothing fetched),
//! readable when mailed to a colleague: the summary, a confusion matrix per
//! label, score histograms per label, the false positives and misses with
//! their evidence, and with `--baseline` what changes, grouped by the
//! detection that made the difference, with example requests.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::diff::Diff;
use super::gates::GateResult;
use super::report::{Outcome, Summary};
use crate::pipeline::Decision;
use crate::signal::{Action, EvidenceValue};

/// Cases kept per list (false positives, misses); the rest are counted.
const CASES_KEPT: usize = 50;
/// Score histogram bins: 1–5, 6–10, …, 96–99.
const BINS: usize = 20;

/// One request as the report lists it.
#[derive(Debug, Clone)]
pub struct Case {
    pub capture: String,
    pub line: usize,
    pub label: String,
    pub method: String,
    pub target: String,
    pub client_ip: String,
    pub score: u8,
    pub action: Action,
    /// Each signal: id, penalty, action demanded, and its evidence as text.
    pub signals: Vec<(String, u8, Option<Action>, String)>,
}

/// What the HTML report needs beyond the summary, gathered while replaying.
#[derive(Debug, Default)]
pub struct HtmlTally {
    histograms: BTreeMap<String, [u64; BINS]>,
    false_positives: Vec<Case>,
    false_positive_total: u64,
    misses: Vec<Case>,
    miss_total: u64,
}

impl HtmlTally {
    /// Count one request; `case` makes its listing, only when one is kept.
    pub fn add(&mut self, decision: &Decision, label: Option<&str>, case: impl FnOnce() -> Case) {
        let label = label.unwrap_or("(unlabeled)");
        let bin = (usize::from(decision.score().clamp(1, 99)) - 1) / 5;
        self.histograms.entry(label.to_string()).or_insert([0; BINS])[bin.min(BINS - 1)] += 1;
        let outcome = Outcome::of(decision.action());
        let (list, total) = match label {
            // People and partners stopped: false positives.
            "human" | "partner" if outcome.stopped() => (&mut self.false_positives, &mut self.false_positive_total),
            // Bots that got through (allowed or only challenged): misses.
            "bot" if !outcome.stopped() => (&mut self.misses, &mut self.miss_total),
            _ => return,
        };
        *total += 1;
        if list.len() < CASES_KEPT {
            list.push(case());
        }
    }
}

/// The evidence of a signal as one line of text.
pub fn evidence_text(signal: &crate::signal::Signal) -> String {
    signal
        .evidence
        .iter()
        .map(|e| {
            let value = match &e.value {
                EvidenceValue::Number(n) => format!("{n}"),
                EvidenceValue::Text(t) => t.to_string(),
            };
            match e.threshold {
                Some(threshold) => format!("{}={value} (threshold {threshold})", e.name),
                None => format!("{}={value}", e.name),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 { "–".into() } else { format!("{:.1}%", part as f64 * 100.0 / whole as f64) }
}

fn rate(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".into(), |v| format!("{:.1}%", v * 100.0))
}

/// What the page says about where it came from.
pub struct ReportContext<'a> {
    pub configuration: &'a str,
    pub baseline: Option<&'a str>,
    pub captures: Vec<(String, u64)>,
    /// The new configuration's thresholds: log, challenge, block (score at or below).
    pub thresholds: (u8, u8, u8),
}

const STYLE: &str = r#"
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2733; margin: 0; background: #f5f7fa; }
main { max-width: 1180px; margin: 0 auto; padding: 20px 24px 40px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 10px; border-bottom: 2px solid #d9e0e8; padding-bottom: 4px; }
h3 { font-size: 14px; margin: 16px 0 6px; }
.meta { color: #5b6b7b; margin: 0 0 4px; }
table { border-collapse: collapse; background: #fff; font-variant-numeric: tabular-nums; margin: 4px 0 10px; }
th, td { border: 1px solid #d9e0e8; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #eef2f6; font-weight: 600; } td.n { text-align: right; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { background: #fff; border: 1px solid #d9e0e8; border-radius: 6px; padding: 10px 14px; min-width: 150px; }
.card b { display: block; font-size: 22px; }
.pass { color: #1e7d4f; } .fail { color: #b3261e; }
code { font-size: 12.5px; } .ev { color: #4a5866; font-size: 12.5px; }
.hists { display: flex; flex-wrap: wrap; gap: 16px; } .hist { background: #fff; border: 1px solid #d9e0e8; border-radius: 6px; padding: 8px; }
.stricter { color: #b3261e; } .looser { color: #1e7d4f; }
table.requests { table-layout: fixed; width: 100%; } table.requests td { overflow-wrap: anywhere; }
table.requests code { word-break: break-all; }
"#;

/// Render the report.
pub fn render(
    context: &ReportContext<'_>,
    summary: &Summary,
    tally: &HtmlTally,
    diff: Option<&Diff>,
    gates: &[GateResult],
) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>palisade replay report</title>\
         <style>{STYLE}</style></head><body><main>\n<h1>palisade replay report</h1>\n"
    );
    let _ = writeln!(out, "<p class=\"meta\">configuration: <code>{}</code></p>", esc(context.configuration));
    if let Some(baseline) = context.baseline {
        let _ = writeln!(out, "<p class=\"meta\">baseline: <code>{}</code></p>", esc(baseline));
    }
    for (name, requests) in &context.captures {
        let _ = writeln!(out, "<p class=\"meta\">capture: <code>{}</code> ({requests} requests)</p>", esc(name));
    }
    summary_section(&mut out, summary, diff, gates);
    confusion_section(&mut out, summary);
    histogram_section(&mut out, tally, context.thresholds);
    // What a change would do comes first: it is what the report is read for.
    if let Some(diff) = diff {
        diff_section(&mut out, diff);
    }
    cases_section(
        &mut out,
        "false-positives",
        "False positives: people and partners stopped",
        &tally.false_positives,
        tally.false_positive_total,
    );
    cases_section(
        &mut out,
        "misses",
        "Misses: bots not stopped (allowed or only challenged)",
        &tally.misses,
        tally.miss_total,
    );
    detections_section(&mut out, summary);
    out.push_str("</main></body></html>\n");
    out
}

fn summary_section(out: &mut String, summary: &Summary, diff: Option<&Diff>, gates: &[GateResult]) {
    out.push_str("<h2>Summary</h2>\n<div class=\"cards\">\n");
    let _ = writeln!(out, "<div class=\"card\">requests<b id=\"requests\">{}</b></div>", summary.requests);
    for action in Action::ALL {
        let n = summary.by_action.get(action.as_str()).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "<div class=\"card\">{action}<b id=\"action-{action}\">{n}</b>{}</div>",
            percent(n, summary.requests)
        );
    }
    let r = &summary.rates;
    for (id, name, value) in [
        ("bot-recall", "bot recall (stopped)", r.bot_recall),
        ("bot-precision", "bot precision (stopped)", r.bot_precision),
        ("human-fpr", "human false-positive rate", r.human_false_positive_rate),
        ("partner-fpr", "partner false-positive rate", r.partner_false_positive_rate),
    ] {
        let _ = writeln!(out, "<div class=\"card\">{name}<b id=\"{id}\">{}</b></div>", rate(value));
    }
    if let Some(diff) = diff {
        let _ = writeln!(
            out,
            "<div class=\"card\">change action vs baseline<b id=\"changed\">{}</b>{} stricter, {} looser</div>",
            diff.changed, diff.stricter, diff.looser
        );
    }
    out.push_str("</div>\n");
    if !gates.is_empty() {
        out.push_str("<h3>Gates</h3><table><tr><th>gate</th><th>result</th><th>detail</th></tr>\n");
        for gate in gates {
            let (class, word) = if gate.passed { ("pass", "passed") } else { ("fail", "FAILED") };
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td class=\"{class}\">{word}</td><td>{}</td></tr>",
                esc(&gate.gate),
                esc(&gate.message)
            );
        }
        out.push_str("</table>\n");
    }
}

fn confusion_section(out: &mut String, summary: &Summary) {
    out.push_str("<h2>Confusion matrix per label</h2>\n");
    if summary.labels.is_empty() {
        out.push_str("<p>No labels in the captures: no confusion matrix.</p>\n");
        return;
    }
    out.push_str(
        "<p class=\"meta\"><code>log</code> counts as allowed; stopped = limited or blocked.</p>\n\
         <table id=\"confusion\"><tr><th>label</th><th>requests</th>",
    );
    for outcome in Outcome::ALL {
        let _ = write!(out, "<th>{}</th>", outcome.as_str());
    }
    out.push_str("<th>stopped</th></tr>\n");
    for (label, row) in &summary.labels {
        let _ = write!(
            out,
            "<tr data-label=\"{}\"><td>{}</td><td class=\"n\">{}</td>",
            esc(label),
            esc(label),
            row.requests
        );
        for (outcome, n) in [
            (Outcome::Allowed, row.allowed),
            (Outcome::Challenged, row.challenged),
            (Outcome::Limited, row.limited),
            (Outcome::Blocked, row.blocked),
        ] {
            // Shade by share of the row: what most of a label got stands out.
            let share = if row.requests == 0 { 0.0 } else { n as f64 / row.requests as f64 };
            let _ = write!(
                out,
                "<td class=\"n\" data-outcome=\"{}\" style=\"background:rgba(59,91,122,{:.2})\">{n}</td>",
                outcome.as_str(),
                share * 0.45
            );
        }
        let _ = writeln!(out, "<td class=\"n\">{}</td></tr>", percent(row.stopped(), row.requests));
    }
    out.push_str("</table>\n");
}

fn histogram_section(out: &mut String, tally: &HtmlTally, (log, challenge, block): (u8, u8, u8)) {
    out.push_str(
        "<h2>Score distribution per label</h2>\n<p class=\"meta\">Bot score 1 (automated) to 99 (human), in bins of 5; \
         dashed lines: the thresholds of the configuration (block, challenge, log at or below).</p>\n<div class=\"hists\">\n",
    );
    let (width, height, left, bottom) = (360.0, 150.0, 34.0, 22.0);
    let plot_w = width - left - 6.0;
    let plot_h = height - bottom - 8.0;
    for (label, bins) in &tally.histograms {
        let max = bins.iter().copied().max().unwrap_or(0).max(1) as f64;
        let total: u64 = bins.iter().sum();
        let _ = write!(
            out,
            "<div class=\"hist\"><h3>{} ({total} requests)</h3><svg class=\"histogram\" data-label=\"{}\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">",
            esc(label),
            esc(label)
        );
        let _ = write!(
            out,
            "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#9aa8b5\"/>",
            8.0 + plot_h,
            left + plot_w,
            8.0 + plot_h
        );
        let _ = write!(out, "<text x=\"2\" y=\"16\" font-size=\"10\" fill=\"#5b6b7b\">{}</text>", max as u64);
        for (index, count) in bins.iter().enumerate() {
            let bar_h = *count as f64 / max * plot_h;
            let x = left + index as f64 * plot_w / BINS as f64;
            let _ = write!(
                out,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bar_h:.1}\" fill=\"#3b5b7a\" data-count=\"{count}\"><title>scores {}–{}: {count}</title></rect>",
                8.0 + plot_h - bar_h,
                plot_w / BINS as f64 - 1.0,
                index * 5 + 1,
                (index * 5 + 5).min(99)
            );
        }
        for (threshold, color) in [(block, "#b3261e"), (challenge, "#d08a00"), (log, "#3b78b0")] {
            let x = left + f64::from(threshold) / 100.0 * plot_w;
            let _ = write!(
                out,
                "<line x1=\"{x:.1}\" y1=\"8\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"{color}\" stroke-dasharray=\"4 3\"/>",
                8.0 + plot_h
            );
        }
        for tick in [1, 25, 50, 75, 99] {
            let x = left + f64::from(tick) / 100.0 * plot_w;
            let _ = write!(
                out,
                "<text x=\"{x:.1}\" y=\"{}\" font-size=\"10\" fill=\"#5b6b7b\" text-anchor=\"middle\">{tick}</text>",
                height - 6.0
            );
        }
        out.push_str("</svg></div>\n");
    }
    out.push_str("</div>\n");
}

fn cases_section(out: &mut String, id: &str, title: &str, cases: &[Case], total: u64) {
    let _ = writeln!(out, "<h2>{title}</h2>");
    if total == 0 {
        let _ = writeln!(out, "<p id=\"{id}-none\">None.</p>");
        return;
    }
    let _ = writeln!(
        out,
        "<p class=\"meta\"><span id=\"{id}-total\">{total}</span> requests{}.</p>",
        if total as usize > cases.len() { format!("; the first {} listed", cases.len()) } else { String::new() }
    );
    let _ = writeln!(
        out,
        "<table id=\"{id}\" class=\"requests\"><colgroup><col style=\"width:14%\"><col style=\"width:6%\"><col style=\"width:24%\"><col style=\"width:10%\"><col style=\"width:6%\"><col style=\"width:8%\"><col style=\"width:32%\"></colgroup><tr><th>capture:line</th><th>label</th><th>request</th><th>client</th><th>score</th><th>action</th><th>signals and evidence</th></tr>"
    );
    for case in cases {
        let signals: Vec<String> = case
            .signals
            .iter()
            .map(|(id, penalty, action, evidence)| {
                let demands = action.map(|a| format!(", demands {a}")).unwrap_or_default();
                format!("<code>{}</code> −{penalty}{demands}<br><span class=\"ev\">{}</span>", esc(id), esc(evidence))
            })
            .collect();
        let _ = writeln!(
            out,
            "<tr><td>{}:{}</td><td>{}</td><td><code>{} {}</code></td><td>{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&case.capture),
            case.line,
            esc(&case.label),
            esc(&case.method),
            esc(&case.target),
            esc(&case.client_ip),
            case.score,
            case.action,
            if signals.is_empty() { "none".to_string() } else { signals.join("<br>") }
        );
    }
    out.push_str("</table>\n");
}

fn diff_section(out: &mut String, diff: &Diff) {
    out.push_str("<h2>Changes against the baseline</h2>\n");
    let _ = writeln!(
        out,
        "<p><span id=\"diff-changed\">{}</span> requests change action: {} stricter, {} looser.</p>",
        diff.changed, diff.stricter, diff.looser
    );
    if !diff.transitions.is_empty() {
        out.push_str("<table id=\"transitions\"><tr><th>from</th><th>to</th><th>requests</th></tr>\n");
        for t in &diff.transitions {
            let _ = writeln!(out, "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td></tr>", t.from, t.to, t.requests);
        }
        out.push_str("</table>\n");
    }
    out.push_str("<h3>By detection id</h3>\n");
    for group in &diff.groups {
        let change = match group.change {
            super::diff::Change::Stricter => "stricter",
            super::diff::Change::Looser => "looser",
        };
        let _ = writeln!(
            out,
            "<div class=\"diff-group\" data-detection=\"{}\" data-requests=\"{}\"><h3 class=\"{change}\">{}</h3>",
            esc(&group.detection),
            group.requests,
            esc(&group.summary)
        );
        out.push_str(
            "<table class=\"requests\"><colgroup><col style=\"width:20%\"><col style=\"width:8%\"><col style=\"width:32%\"><col style=\"width:12%\"><col style=\"width:14%\"><col style=\"width:14%\"></colgroup>\
             <tr><th>capture:line</th><th>label</th><th>request</th><th>client</th><th>baseline</th><th>new</th></tr>\n",
        );
        for example in &group.examples {
            let _ = writeln!(
                out,
                "<tr><td>{}:{}</td><td>{}</td><td><code>{} {}</code></td><td>{}</td><td>{} (score {})</td><td>{} (score {})</td></tr>",
                esc(&example.capture),
                example.line,
                esc(example.label.as_deref().unwrap_or("")),
                esc(&example.method),
                esc(&example.target),
                esc(&example.client_ip),
                example.baseline_action,
                example.baseline_score,
                example.action,
                example.score
            );
        }
        out.push_str("</table></div>\n");
    }
}

fn detections_section(out: &mut String, summary: &Summary) {
    out.push_str("<h2>Requests by detection id</h2>\n<table id=\"detections\"><tr><th>id</th><th>enforced</th><th>shadow or monitor</th></tr>\n");
    let mut rows: Vec<_> = summary.by_detection.iter().collect();
    rows.sort_by(|a, b| (b.1.enforced + b.1.shadow).cmp(&(a.1.enforced + a.1.shadow)).then(a.0.cmp(b.0)));
    for (id, row) in rows {
        let _ = writeln!(
            out,
            "<tr><td><code>{}</code></td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(id),
            row.enforced,
            row.shadow
        );
    }
    out.push_str("</table>\n<h2>Requests by route</h2>\n<table><tr><th>route</th>");
    for action in Action::ALL {
        let _ = write!(out, "<th>{action}</th>");
    }
    out.push_str("</tr>\n");
    for (route, counts) in &summary.by_route {
        let _ = write!(out, "<tr><td>{}</td>", esc(route));
        for action in Action::ALL {
            let _ = write!(out, "<td class=\"n\">{}</td>", counts.get(action.as_str()).copied().unwrap_or(0));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_captures_may_hold() {
        assert_eq!(esc("<script>alert('x')&\"</script>"), "&lt;script&gt;alert(&#39;x&#39;)&amp;&quot;&lt;/script&gt;");
    }
}
