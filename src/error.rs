//! palisade's error type: a kind a caller can match on, and a message that
//! says what went wrong and, where it can, what to do about it.
//!
//! In the style of regex-automata's errors: one small struct, a `kind()`
//! for programs and a `Display` for people. Configuration problems have
//! their own type ([`crate::config::Invalid`], which carries the key and
//! the line); model files theirs ([`crate::model::ModelError`]). Everything
//! else that can fail on input, output or the shared store says so with
//! this one.
//!
//! A leaf: it imports nothing from the crate.

use std::fmt;

/// What failed, for a caller deciding what to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A file or stream could not be read (missing, unreadable, too large).
    Read,
    /// Output could not be written.
    Write,
    /// Input was read but is not what it should be: a capture line, a
    /// rule file, a key directory, a breach list, a HAR file.
    Malformed,
    /// A configuration that parsed but cannot be put to work (a store
    /// setting, a TLS certificate, a compiled rule set).
    Config,
    /// The shared counter store failed or could not be reached.
    Store,
    /// A replay's results differ from what was expected of them.
    Expectation,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Read => "read",
            ErrorKind::Write => "write",
            ErrorKind::Malformed => "malformed",
            ErrorKind::Config => "config",
            ErrorKind::Store => "store",
            ErrorKind::Expectation => "expectation",
        }
    }
}

/// An error with a kind and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into() }
    }

    pub fn read(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Read, message)
    }

    pub fn write(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Write, message)
    }

    pub fn malformed(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Malformed, message)
    }

    pub fn config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Config, message)
    }

    pub fn store(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Store, message)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error with `context` in front: `context: message`.
    pub fn context(self, context: impl fmt::Display) -> Self {
        Error { kind: self.kind, message: format!("{context}: {}", self.message) }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// palisade's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keeps_the_kind_and_prefixes_the_message() {
        let error = Error::malformed("line 3: not JSON").context("captures/a.jsonl");
        assert_eq!(error.kind(), ErrorKind::Malformed);
        assert_eq!(error.to_string(), "captures/a.jsonl: line 3: not JSON");
    }
}
