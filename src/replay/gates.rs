//! Gates: conditions a replay must meet, checked after it; a violated
//! gate makes `palisade replay` exit with status 1 and say why.

use serde::Serialize;

use super::expect::Expectations;
use super::report::Summary;

/// The gates asked for on the command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gates {
    /// Most share of people, and of partners, that may be stopped.
    pub max_false_positive_rate: Option<f64>,
    /// Least share of bots that must be stopped.
    pub min_bot_recall: Option<f64>,
}

/// The result of one gate.
#[derive(Debug, Clone, Serialize)]
pub struct GateResult {
    pub gate: String,
    pub passed: bool,
    pub message: String,
}

impl Gates {
    pub fn check(&self, summary: &Summary, expectations: Option<&Expectations>) -> Vec<GateResult> {
        let mut results = Vec::new();
        if let Some(limit) = self.max_false_positive_rate {
            let mut checked_any = false;
            for (label, rate) in [
                ("human", summary.rates.human_false_positive_rate),
                ("partner", summary.rates.partner_false_positive_rate),
            ] {
                let Some(rate) = rate else { continue };
                checked_any = true;
                let row = summary.labels.get(label).copied().unwrap_or_default();
                let passed = rate <= limit;
                results.push(GateResult {
                    gate: format!("max_false_positive_rate.{label}"),
                    passed,
                    message: format!(
                        "{label} false-positive rate {} ({} of {} {label} requests stopped) is {} --max-false-positive-rate {limit}",
                        fraction(rate),
                        row.stopped(),
                        row.requests,
                        if passed { "within" } else { "above" },
                    ),
                });
            }
            if !checked_any {
                results.push(GateResult {
                    gate: "max_false_positive_rate".into(),
                    passed: false,
                    message:
                        "--max-false-positive-rate needs requests labeled human or partner; the captures have none"
                            .into(),
                });
            }
        }
        if let Some(limit) = self.min_bot_recall {
            let bots = summary.labels.get("bot").copied().unwrap_or_default();
            results.push(match summary.rates.bot_recall {
                Some(recall) => {
                    let passed = recall >= limit;
                    GateResult {
                        gate: "min_bot_recall".into(),
                        passed,
                        message: format!(
                            "bot recall {} ({} of {} bot requests stopped) is {} --min-bot-recall {limit}",
                            fraction(recall),
                            bots.stopped(),
                            bots.requests,
                            if passed { "at or above" } else { "below" },
                        ),
                    }
                }
                None => GateResult {
                    gate: "min_bot_recall".into(),
                    passed: false,
                    message: "--min-bot-recall needs requests labeled bot; the captures have none".into(),
                },
            });
        }
        if let Some(expectations) = expectations {
            let failed = expectations.failures.len();
            let mut message = format!(
                "{} of {} expectations in {} met",
                expectations.len() - failed.min(expectations.len()),
                expectations.len(),
                expectations.file()
            );
            for failure in expectations.failures.iter().take(20) {
                message.push_str("\n    ");
                message.push_str(&failure.to_string());
            }
            if failed > 20 {
                message.push_str(&format!("\n    … and {} more", failed - 20));
            }
            results.push(GateResult { gate: "expect".into(), passed: failed == 0, message });
        }
        results
    }
}

fn fraction(value: f64) -> String {
    format!("{value:.4}")
}
