//! Expectation files: the action each request must get, checked by
//! `palisade replay --expect FILE`.
//!
//! JSON Lines, one expectation a line; blank lines and lines starting
//! with `#` are skipped:
//!
//! ```text
//! {"capture": "mixed.jsonl", "line": 12, "action": "block"}
//! {"capture": "mixed.jsonl", "line": 40, "action": ["rate_limit", "block"], "note": "hydra burst"}
//! {"id": "checkout-7", "action": "allow"}
//! ```
//!
//! - `capture` + `line`: the capture's file name (no folder) and the
//!   1-based line of the request in it; or `id`: the request's `id` field.
//! - `action`: one action (`allow`, `log`, `challenge`, `rate_limit`,
//!   `block`) or a list of acceptable ones.
//! - `note`: free text, shown when the expectation fails.
//!
//! An expectation whose request is not replayed (no such line, or no such
//! capture on the command line) fails too, so a shrunken capture cannot
//! pass silently.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::signal::Action;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    capture: Option<String>,
    line: Option<usize>,
    id: Option<String>,
    action: OneOrMany,
    note: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct Expectation {
    /// Where it is in the expectation file.
    pub expect_line: usize,
    pub actions: Vec<Action>,
    pub note: Option<String>,
    met: Option<Action>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Line(String, usize),
    Id(String),
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Line(capture, line) => write!(f, "{capture}:{line}"),
            Key::Id(id) => write!(f, "id {id:?}"),
        }
    }
}

/// The expectations of one file, and what the replay did about them.
#[derive(Debug, Default)]
pub struct Expectations {
    file: String,
    by_key: HashMap<Key, Expectation>,
    /// Requests whose action was not one of those expected.
    pub failures: Vec<ExpectFailure>,
    checked: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExpectFailure {
    pub request: String,
    pub expect_line: usize,
    pub expected: Vec<Action>,
    /// `None` when the request was never replayed.
    pub got: Option<Action>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl std::fmt::Display for ExpectFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let expected: Vec<&str> = self.expected.iter().map(|a| a.as_str()).collect();
        match self.got {
            Some(got) => write!(f, "{}: expected {}, got {got}", self.request, expected.join(" or "))?,
            None => write!(f, "{}: expected {}, but it was not replayed", self.request, expected.join(" or "))?,
        }
        write!(f, " (expectation line {})", self.expect_line)?;
        if let Some(note) = &self.note {
            write!(f, ": {note}")?;
        }
        Ok(())
    }
}

impl Expectations {
    pub fn load(path: &Path) -> Result<Expectations, Error> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::read(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, file: &str) -> Result<Expectations, Error> {
        let mut by_key = HashMap::new();
        for (index, raw) in text.lines().enumerate() {
            let number = index + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let problem = |message: String| Error::malformed(format!("{file}:{number}: {message}"));
            let line: Line = serde_json::from_str(trimmed).map_err(|e| problem(e.to_string()))?;
            let key = match (line.capture, line.line, line.id) {
                (Some(capture), Some(at), None) => Key::Line(capture, at),
                (None, None, Some(id)) => Key::Id(id),
                _ => return Err(problem("give either `capture` and `line`, or `id`".into())),
            };
            let names = match line.action {
                OneOrMany::One(name) => vec![name],
                OneOrMany::Many(names) => names,
            };
            let mut actions = Vec::new();
            for name in names {
                actions.push(Action::parse(&name).ok_or_else(|| {
                    problem(format!("unknown action {name:?} (allow, log, challenge, rate_limit, block)"))
                })?);
            }
            if actions.is_empty() {
                return Err(problem("`action` lists no action".into()));
            }
            let expectation = Expectation { expect_line: number, actions, note: line.note, met: None };
            if let Some(first) = by_key.insert(key.clone(), expectation) {
                return Err(problem(format!("{key} is already expected at line {}", first.expect_line)));
            }
        }
        Ok(Expectations { file: file.to_string(), by_key, failures: Vec::new(), checked: 0 })
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    /// Check one replayed request.
    pub fn check(&mut self, capture: &str, line: usize, id: Option<&str>, got: Action) {
        if self.by_key.is_empty() {
            return;
        }
        let mut keys = vec![Key::Line(capture.to_string(), line)];
        keys.extend(id.map(|id| Key::Id(id.to_string())));
        for key in keys {
            if let Some(expectation) = self.by_key.get_mut(&key) {
                self.checked += 1;
                expectation.met = Some(got);
                if !expectation.actions.contains(&got) {
                    self.failures.push(ExpectFailure {
                        request: key.to_string(),
                        expect_line: expectation.expect_line,
                        expected: expectation.actions.clone(),
                        got: Some(got),
                        note: expectation.note.clone(),
                    });
                }
            }
        }
    }

    /// After the replay: expectations whose request never came are
    /// failures too. Failures come out in expectation-file order.
    pub fn finish(&mut self) {
        for (key, expectation) in &self.by_key {
            if expectation.met.is_none() {
                self.failures.push(ExpectFailure {
                    request: key.to_string(),
                    expect_line: expectation.expect_line,
                    expected: expectation.actions.clone(),
                    got: None,
                    note: expectation.note.clone(),
                });
            }
        }
        self.failures.sort_by_key(|f| f.expect_line);
    }

    pub fn checked(&self) -> u64 {
        self.checked
    }
}

/// One line of an expectation file, as `--write-expect` writes it.
pub fn expectation_line(capture: &str, line: usize, id: Option<&str>, action: Action) -> String {
    match id {
        Some(id) => serde_json::json!({ "id": id, "action": action }).to_string(),
        None => serde_json::json!({ "capture": capture, "line": line, "action": action }).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_checks_and_reports_missing_requests() {
        let text = "# expectations\n{\"capture\":\"a.jsonl\",\"line\":1,\"action\":\"block\"}\n\n{\"capture\":\"a.jsonl\",\"line\":2,\"action\":[\"allow\",\"log\"],\"note\":\"a person\"}\n{\"id\":\"x\",\"action\":\"allow\"}\n";
        let mut e = Expectations::parse(text, "e.jsonl").unwrap();
        assert_eq!(e.len(), 3);
        e.check("a.jsonl", 1, None, Action::Block);
        e.check("a.jsonl", 2, None, Action::Challenge);
        e.finish();
        let failures: Vec<String> = e.failures.iter().map(|f| f.to_string()).collect();
        assert_eq!(
            failures,
            [
                "a.jsonl:2: expected allow or log, got challenge (expectation line 4): a person",
                "id \"x\": expected allow, but it was not replayed (expectation line 5)",
            ]
        );
    }

    #[test]
    fn bad_lines_name_their_number() {
        let error = Expectations::parse("{\"line\":1,\"action\":\"block\"}", "e.jsonl").unwrap_err();
        assert!(error.to_string().starts_with("e.jsonl:1: give either"), "{error}");
        let error = Expectations::parse("\n{\"id\":\"a\",\"action\":\"ban\"}", "e.jsonl").unwrap_err();
        assert!(error.to_string().starts_with("e.jsonl:2: unknown action \"ban\""), "{error}");
    }
}
