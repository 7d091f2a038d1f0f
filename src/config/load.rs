//! Reading a configuration file and reporting every problem in it with the
//! file, the key and the line, so an operator can fix them all in one pass.
//!
//! serde stops at the first structural error (unknown key, wrong type). To
//! still report all of them, a failed parse comments out the offending line
//! and parses again; line numbers stay the same because only the line's
//! first character changes. Semantic problems (bad CIDR, unknown profile,
//! bad regex) come from the stage builders, which know each value's span.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::schema::Config;

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The file the problem is in, when it is not the configuration file
    /// itself (a signature rule file, a certificate).
    pub file: Option<String>,
    /// 1-based line, when the problem has a place in the file.
    pub line: Option<usize>,
    /// Dotted key path, e.g. `route[1].profile`.
    pub key: String,
    pub message: String,
}

/// A problem found by a stage builder, before it is mapped to a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Byte range in the configuration text (`0..0` when unknown).
    pub span: Range<usize>,
    pub key: String,
    pub message: String,
    /// Set when the problem is in another file: that file and its line.
    pub elsewhere: Option<(String, Option<usize>)>,
}

impl Invalid {
    pub fn new(span: Range<usize>, key: impl Into<String>, message: impl Into<String>) -> Self {
        Invalid { span, key: key.into(), message: message.into(), elsewhere: None }
    }

    /// A problem at `line` of `file`, another file than the configuration.
    pub fn in_file(
        file: impl Into<String>,
        line: Option<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Invalid { span: 0..0, key: key.into(), message: message.into(), elsewhere: Some((file.into(), line)) }
    }

    /// Map to a reportable problem, finding the line in `text` (the
    /// configuration) when the problem is in it.
    pub fn locate(self, text: Option<&str>) -> ConfigProblem {
        match self.elsewhere {
            Some((file, line)) => ConfigProblem { file: Some(file), line, key: self.key, message: self.message },
            None => ConfigProblem {
                file: None,
                // Checks on plain numbers have no span: find the key's own line.
                line: text.and_then(|text| match self.span != (0..0) {
                    true => Some(line_of(text, self.span.start)),
                    false => key_line(text, &self.key),
                }),
                key: self.key,
                message: self.message,
            },
        }
    }
}

/// Why a configuration could not be used.
#[derive(Debug)]
pub enum ConfigError {
    Read { file: PathBuf, error: std::io::Error },
    Invalid { file: String, problems: Vec<ConfigProblem> },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { file, error } => {
                write!(f, "cannot read configuration file {}: {error}", file.display())
            }
            ConfigError::Invalid { file, problems } => {
                for (i, problem) in problems.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    let file = problem.file.as_deref().unwrap_or(file);
                    match problem.line {
                        Some(line) => write!(f, "{file}:{line}: {}: {}", problem.key, problem.message)?,
                        None => write!(f, "{file}: {}: {}", problem.key, problem.message)?,
                    }
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    pub fn problems(&self) -> &[ConfigProblem] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { problems, .. } => problems,
        }
    }
}

/// Problems a parsed configuration has beyond its structure (a bad CIDR,
/// an unknown profile): the caller's compiler finds them, so this module
/// stays a leaf that knows nothing of the stages it configures.
pub type Validate<'v> = &'v mut dyn FnMut(&Config) -> Vec<Invalid>;

/// Read and parse a configuration file (its structure only; see
/// [`load_file_with`] for the whole check).
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    load_file_with(path, &mut |_| Vec::new())
}

/// Read and parse a configuration file, then `validate` it, reporting the
/// problems of both with their lines.
pub fn load_file_with(path: &Path, validate: Validate<'_>) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read { file: path.to_path_buf(), error })?;
    parse_in(&text, &path.display().to_string(), path.parent(), validate)
}

/// Parse configuration text (its structure only); `file` names it in
/// errors. Relative paths in it are relative to the current directory.
pub fn parse_str(text: &str, file: &str) -> Result<Config, ConfigError> {
    parse_in(text, file, None, &mut |_| Vec::new())
}

/// Parse configuration text and `validate` it.
pub fn parse_str_with(text: &str, file: &str, validate: Validate<'_>) -> Result<Config, ConfigError> {
    parse_in(text, file, None, validate)
}

/// Parse and validate, with relative paths resolved against `base_dir`
/// (the configuration file's folder) during validation already.
fn parse_in(text: &str, file: &str, base_dir: Option<&Path>, validate: Validate<'_>) -> Result<Config, ConfigError> {
    const MAX_STRUCTURAL_ERRORS: usize = 50;
    let mut problems = Vec::new();
    let mut attempt = text.to_string();
    let config = loop {
        match toml::from_str::<Config>(&attempt) {
            Ok(mut config) => {
                config.base_dir = base_dir.map(Path::to_path_buf);
                config.source = super::schema::SourceText(Some(std::sync::Arc::from(text)));
                break Some(config);
            }
            Err(error) => {
                let span = error.span();
                let line = span.as_ref().map(|s| line_of(text, s.start));
                problems.push(ConfigProblem {
                    file: None,
                    line,
                    key: span.as_ref().map(|s| key_path_at(text, s.start)).unwrap_or_else(|| "(file)".into()),
                    message: error.message().trim().to_string(),
                });
                let Some(span) = span else { break None };
                if problems.len() >= MAX_STRUCTURAL_ERRORS || !comment_out(&mut attempt, span.start) {
                    break None;
                }
            }
        }
    };
    if let Some(config) = &config {
        problems.extend(validate(config).into_iter().map(|invalid| invalid.locate(Some(text))));
    }
    problems.sort_by_key(|problem| (problem.file.is_some(), problem.line.unwrap_or(usize::MAX)));
    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => Err(ConfigError::Invalid { file: file.to_string(), problems }),
    }
}

/// 1-based line number of a byte offset.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// Comment out the line holding `offset`; false when it already is one
/// (the parser would loop on the same error). A table header goes with its
/// table's lines: a table that cannot be read (a required key missing) is
/// left out whole, or its keys would be read as the previous table's and
/// reported as unknown there.
///
/// Lines are overwritten with `#` and spaces of the same byte length, so
/// byte offsets of later lines stay what the next error's span says. (It
/// used to insert `#` and remove the line's last byte, which panicked when
/// that byte was inside a multi-byte character: found by the fuzzer.)
fn comment_out(text: &mut String, offset: usize) -> bool {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = |from: usize| text[from..].find('\n').map_or(text.len(), |i| from + i);
    let mut end = line_end(start);
    if end == start || text[start..].starts_with('#') {
        return false;
    }
    if text[start..end].trim_start().starts_with('[') {
        // The table's lines run to the next header.
        while end < text.len() {
            let next = end + 1;
            let next_end = line_end(next);
            if text[next..next_end].trim_start().starts_with('[') {
                break;
            }
            end = next_end;
        }
    }
    let blanked: String = text[start..end]
        .split('\n')
        .map(|line| if line.is_empty() { String::new() } else { format!("#{}", " ".repeat(line.len() - 1)) })
        .collect::<Vec<_>>()
        .join("\n");
    text.replace_range(start..end, &blanked);
    true
}

/// The dotted key of the line holding `offset`, from the table headers above it.
fn key_path_at(text: &str, offset: usize) -> String {
    let target_line = line_of(text, offset);
    line_keys(text).nth(target_line - 1).unwrap_or_default()
}

/// The 1-based line where `key` (as [`key_path_at`] spells it) is set or
/// its table opens, so problems found on plain values still get a line.
pub(crate) fn key_line(text: &str, key: &str) -> Option<usize> {
    if key.is_empty() {
        return None;
    }
    line_keys(text).position(|line_key| line_key == key).map(|index| index + 1)
}

/// The dotted key of every line in turn: the key a `k = v` line sets,
/// the table a header opens, and for other lines (comments, values
/// continued) the last key seen.
fn line_keys(text: &str) -> impl Iterator<Item = String> + '_ {
    let mut table = String::new();
    let mut array_counts: std::collections::HashMap<String, usize> = Default::default();
    let mut key = String::new();
    text.lines().map(move |raw| {
        let line = raw.trim();
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
            let name = name.trim().to_string();
            let count = array_counts.entry(name.clone()).or_insert(0);
            table = format!("{name}[{count}]");
            *count += 1;
            key.clear();
            return table.clone();
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            table = name.trim().to_string();
            key.clear();
            return table.clone();
        } else if let Some((k, _)) = line.split_once('=')
            && !line.starts_with('#')
        {
            key = k.trim().trim_matches('"').to_string();
        }
        match (table.is_empty(), key.is_empty()) {
            (true, _) => key.clone(),
            (false, true) => table.clone(),
            (false, false) => format!("{table}.{key}"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_checked_against_the_files_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rules")).unwrap();
        std::fs::write(
            dir.path().join("rules/extra.toml"),
            "[[rule]]\nid = \"x.y\"\nfield = \"path\"\nprefix = \"/x\"\nscore = 5\n",
        )
        .unwrap();
        let config = dir.path().join("palisade.toml");
        std::fs::write(&config, "[signatures]\npaths = [\"rules\"]\n").unwrap();
        let loaded = load_file(&config).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded.base_dir.as_deref(), Some(dir.path()));
    }

    #[test]
    fn empty_text_is_the_default_configuration() {
        let config = parse_str("", "empty.toml").unwrap();
        assert_eq!(config.routes.len(), 2);
    }

    #[test]
    fn every_unknown_key_is_reported_with_its_line() {
        let text = "[server]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n\n[limits]\nmax_headerz = 3\n";
        let error = parse_str(text, "p.toml").unwrap_err();
        let problems = error.problems();
        assert_eq!(problems.len(), 2, "{error}");
        assert_eq!(problems[0].line, Some(3));
        assert_eq!(problems[0].key, "server.lisen");
        assert!(problems[0].message.contains("unknown field `lisen`"));
        assert_eq!(problems[1].line, Some(6));
        assert_eq!(problems[1].key, "limits.max_headerz");
        assert!(error.to_string().starts_with("p.toml:3: server.lisen: unknown field"));
    }

    #[test]
    fn lines_ending_in_multibyte_characters_are_reported_not_a_panic() {
        // Found by the fuzzer (config): two bytes of one character.
        assert!(parse_str("\u{29e}", "p.toml").is_err());
        let error = parse_str("[server]\nnam\u{e9} = \"\u{fc}\"\nother = 1\n", "p.toml").unwrap_err();
        let lines: Vec<_> = error.problems().iter().map(|p| p.line).collect();
        assert_eq!(lines, [Some(2), Some(3)], "{error}");
    }

    /// A table missing a required key is reported once, at its header, and
    /// its keys are not blamed on the table before it.
    #[test]
    fn a_table_that_cannot_be_read_is_reported_once_not_as_the_previous_tables_keys() {
        let text = "[store]\nhash_key = \"x\"\n[[route]]\nname = \"a\"\npath = \"/a\"\n\n[[route]]\nname = \"b\"\nprofile = \"api\"\npath = \"/b\"\nlisen = 1\n[server]\nlisten = \"127.0.0.1:1\"\n";
        let error = parse_str(text, "p.toml").unwrap_err();
        let problems: Vec<(Option<usize>, &str)> = error.problems().iter().map(|p| (p.line, p.key.as_str())).collect();
        assert_eq!(problems, [(Some(3), "route[0]"), (Some(11), "route[1].lisen")], "{error}");
        assert!(error.problems()[0].message.contains("missing field `profile`"), "{error}");
    }

    #[test]
    fn array_tables_are_numbered_in_key_paths() {
        let text =
            "[[route]]\nname = \"a\"\nprofile = \"login\"\npath = \"/a\"\n[[route]]\nname = \"b\"\nprofle = \"x\"\n";
        let error = parse_str(text, "p.toml").unwrap_err();
        let unknown = error.problems().iter().find(|p| p.message.contains("profle")).expect("unknown key reported");
        assert_eq!((unknown.key.as_str(), unknown.line), ("route[1].profle", Some(7)));
        let missing = error.problems().iter().find(|p| p.message.contains("missing field `profile`"));
        assert_eq!(missing.map(|p| p.key.as_str()), Some("route[1]"), "{error}");
    }
}
