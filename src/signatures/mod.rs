//! The signature engine: rules, written by analysts in TOML files, that
//! describe bad automation by what a request looks like.
//!
//! Rule files are read at start and on reload: the set shipped in
//! `signatures/` (built into the binary) plus any files or folders the
//! configuration names. A file with a bad regex, an unknown field or a
//! duplicate id is rejected with the file, the line, the rule id and the
//! reason, and (on reload) the running rules stay. See [`rule`] for the
//! format and [`compile`] for how matching stays cheap with many rules.

mod compile;
mod field;
pub mod rule;
mod scan_cache;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

pub use field::{Field, version_name};

use compile::{CompiledSet, RuleInput};
use rule::RuleFile;

use crate::config::{Config, Invalid, Spanned, line_of};
use crate::detect::{RequestContext, Stage};
use crate::error::Error;
use crate::signal::Signal;
use crate::store::CounterReadings;
use crate::view::RequestView;

include!(concat!(env!("OUT_DIR"), "/builtin_signatures.rs"));

/// What an analyst needs to know about a loaded rule.
#[derive(Debug, Clone)]
pub struct RuleInfo {
    pub id: String,
    pub description: String,
    pub false_positives: String,
    pub tags: Vec<String>,
    pub file: String,
}

#[derive(Debug)]
pub struct SignatureSet {
    compiled: CompiledSet,
    rules: Vec<RuleInfo>,
}

/// A rule file's name (for errors) and text.
#[derive(Debug, Clone)]
pub struct RuleSource {
    pub name: String,
    pub text: String,
}

impl SignatureSet {
    /// The rules the configuration asks for: built-in files, then `paths`.
    pub fn from_config(config: &Config) -> Result<Self, Vec<Invalid>> {
        let settings = &config.signatures;
        let mut problems = Vec::new();
        let mut sources = Vec::new();
        if settings.builtin {
            sources.extend(
                BUILTIN_RULE_FILES
                    .iter()
                    .map(|(name, text)| RuleSource { name: (*name).to_string(), text: (*text).to_string() }),
            );
        }
        for (index, path) in settings.paths.iter().enumerate() {
            let resolved = config.resolve_path(path.get_ref());
            match read_rule_files(&resolved) {
                Ok(mut found) => sources.append(&mut found),
                Err(error) => {
                    problems.push(Invalid::new(path.span(), format!("signatures.paths[{index}]"), error.to_string()))
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Self::from_sources(&sources, &settings.shadow, &settings.disable)
    }

    /// Compile rule files. `shadow` and `disable` list rule ids (from the
    /// configuration) to run in shadow mode or not at all.
    pub fn from_sources(
        sources: &[RuleSource],
        shadow: &[Spanned<String>],
        disable: &[Spanned<String>],
    ) -> Result<Self, Vec<Invalid>> {
        let mut problems = Vec::new();
        let mut parsed = Vec::new();
        for source in sources {
            match toml::from_str::<RuleFile>(&source.text) {
                Ok(file) => parsed.push((source, file)),
                Err(error) => problems.push(Invalid::in_file(
                    &source.name,
                    error.span().map(|s| line_of(&source.text, s.start)),
                    "rule file",
                    error.message().trim(),
                )),
            }
        }
        let shadow_ids: HashSet<&str> = shadow.iter().map(|s| s.get_ref().as_str()).collect();
        let disabled_ids: HashSet<&str> = disable.iter().map(|s| s.get_ref().as_str()).collect();
        let mut seen: HashMap<&str, (String, usize)> = HashMap::new();
        let mut inputs = Vec::new();
        let mut places = Vec::new();
        let mut rules = Vec::new();
        for (source, file) in &parsed {
            for spanned in &file.rules {
                let spec = spanned.get_ref();
                let line = line_of(&source.text, spanned.span().start);
                let key = format!("rule {}", spec.id);
                if !valid_id(&spec.id) {
                    problems.push(Invalid::in_file(
                        &source.name,
                        Some(line),
                        key.clone(),
                        "an id is letters, digits, '.', '_' and '-', like \"tool.sqlmap\"",
                    ));
                }
                if let Some((other_file, other_line)) = seen.insert(&spec.id, (source.name.clone(), line)) {
                    problems.push(Invalid::in_file(
                        &source.name,
                        Some(line),
                        key.clone(),
                        format!("duplicate rule id, first defined at {other_file}:{other_line}"),
                    ));
                }
                if disabled_ids.contains(spec.id.as_str()) {
                    continue;
                }
                inputs.push(RuleInput { spec, shadow: shadow_ids.contains(spec.id.as_str()) });
                places.push((source.name.clone(), line, key));
                rules.push(RuleInfo {
                    id: spec.id.clone(),
                    description: spec.description.clone(),
                    false_positives: spec.false_positives.clone(),
                    tags: spec.tags.clone(),
                    file: source.name.clone(),
                });
            }
        }
        for (list, name) in [(shadow, "signatures.shadow"), (disable, "signatures.disable")] {
            for (index, id) in list.iter().enumerate() {
                if !seen.contains_key(id.get_ref().as_str()) {
                    problems.push(Invalid::new(
                        id.span(),
                        format!("{name}[{index}]"),
                        format!("no rule has the id {:?}", id.get_ref()),
                    ));
                }
            }
        }
        let compiled = match CompiledSet::compile(&inputs) {
            Ok(compiled) => Some(compiled),
            Err(errors) => {
                for (index, message) in errors {
                    let (file, line, key) = &places[index.min(places.len().saturating_sub(1))];
                    problems.push(Invalid::in_file(file, Some(*line), key.clone(), message));
                }
                None
            }
        };
        match compiled {
            Some(compiled) if problems.is_empty() => Ok(SignatureSet { compiled, rules }),
            _ => Err(problems),
        }
    }

    pub fn rules(&self) -> &[RuleInfo] {
        &self.rules
    }

    pub fn rule_count(&self) -> usize {
        self.compiled.rule_count()
    }

    /// Signals for every rule the request sets off.
    pub fn scan(&self, view: &RequestView<'_>, signals: &mut Vec<Signal>) {
        self.compiled.matches(view, signals);
    }
}

impl Stage for SignatureSet {
    fn name(&self) -> &'static str {
        "signatures"
    }

    fn detect(
        &self,
        view: &RequestView<'_>,
        _context: &mut RequestContext,
        _readings: &CounterReadings,
        signals: &mut Vec<Signal>,
    ) {
        self.scan(view, signals);
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// Largest rule file read. The shipped rule sets are a few kilobytes; a
/// path pointing at `/dev/zero` or a log file by mistake was read without
/// end, in memory, at start and on every reload.
pub const MAX_RULE_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// A rule file, or every `*.toml` in a folder (sorted, so ids clash the
/// same way on every machine).
fn read_rule_files(path: &Path) -> Result<Vec<RuleSource>, Error> {
    let read = |file: &PathBuf| {
        read_capped(file, MAX_RULE_FILE_BYTES)
            .map(|text| RuleSource { name: file.display().to_string(), text })
            .map_err(|e| Error::read(format!("cannot read rule file {}: {e}", file.display())))
    };
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| Error::read(format!("cannot read rule folder {}: {e}", path.display())))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|ext| ext == "toml"))
            .collect();
        files.sort();
        files.iter().map(read).collect()
    } else {
        read(&path.to_path_buf()).map(|source| vec![source])
    }
}

/// A text file of at most `limit` bytes. Read through `take`, not sized by
/// its metadata: devices and pipes report no length.
fn read_capped(file: &Path, limit: u64) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(file)?.take(limit + 1).read_to_string(&mut text)?;
    if text.len() as u64 > limit {
        return Err(std::io::Error::other(format!("larger than {limit} bytes, the most a rule file may be")));
    }
    Ok(text)
}

#[cfg(test)]
mod tests;
