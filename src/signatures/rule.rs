//! The rule file format (`signatures/*.toml`), as parsed.
//!
//! ```toml
//! [[rule]]
//! id = "tool.sqlmap"
//! description = "sqlmap names itself in User-Agent"
//! false_positives = "None known: no browser or library sends it."
//! tags = ["attack-tool"]
//! field = "user_agent"
//! contains = "sqlmap"
//! score = 79
//! action = "block"
//!
//! [[rule]]
//! id = "shape.chrome_without_accept_language"
//! all = [
//!   { field = "user_agent", regex = 'Chrome/\d+' },
//!   { field = "header:accept-language", absent = true },
//! ]
//! score = 20
//! ```

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    #[serde(default, rename = "rule")]
    pub rules: Vec<Spanned<RuleSpec>>,
}

/// One string or a list of them; a list matches when any item does.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn items(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(one) => vec![one.as_str()],
            OneOrMany::Many(many) => many.iter().map(String::as_str).collect(),
        }
    }
}

/// A single test of one request field.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct ConditionSpec {
    /// `user_agent`, `path`, `query`, `method`, `version`, `header:<name>`,
    /// `header_names`, `body`, `fingerprint`, `ja4`, `profile`, `route`, `asn` or `asn_org`.
    pub field: Option<String>,
    pub contains: Option<OneOrMany>,
    pub prefix: Option<OneOrMany>,
    pub equals: Option<OneOrMany>,
    pub regex: Option<OneOrMany>,
    /// `true`: the field is missing (for `user_agent`: missing or blank).
    pub absent: Option<bool>,
    /// Literals and regexes ignore case unless this is `true`.
    #[serde(default)]
    pub case_sensitive: bool,
}

impl ConditionSpec {
    pub fn is_empty(&self) -> bool {
        self.field.is_none()
            && self.contains.is_none()
            && self.prefix.is_none()
            && self.equals.is_none()
            && self.regex.is_none()
            && self.absent.is_none()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub id: String,
    #[serde(default)]
    pub description: String,
    /// What could set the rule off by mistake, for whoever tunes it.
    #[serde(default)]
    pub false_positives: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Points taken off the bot score when the rule fires.
    #[serde(default)]
    pub score: u8,
    /// An action regardless of the score: `log`, `challenge` or `block`.
    pub action: Option<String>,
    /// `enforce` (default) or `shadow`.
    pub mode: Option<String>,
    // A condition written inline on the rule (serde's `flatten` would lose
    // `deny_unknown_fields`, so the fields are repeated here).
    pub field: Option<String>,
    pub contains: Option<OneOrMany>,
    pub prefix: Option<OneOrMany>,
    pub equals: Option<OneOrMany>,
    pub regex: Option<OneOrMany>,
    pub absent: Option<bool>,
    #[serde(default)]
    pub case_sensitive: bool,
    /// Every one of these must hold.
    #[serde(default)]
    pub all: Vec<ConditionSpec>,
    /// At least one of these must hold.
    #[serde(default)]
    pub any: Vec<ConditionSpec>,
}

impl RuleSpec {
    /// The inline condition, if the rule has one.
    pub fn inline(&self) -> Option<ConditionSpec> {
        let condition = ConditionSpec {
            field: self.field.clone(),
            contains: self.contains.clone(),
            prefix: self.prefix.clone(),
            equals: self.equals.clone(),
            regex: self.regex.clone(),
            absent: self.absent,
            case_sensitive: self.case_sensitive,
        };
        (!condition.is_empty()).then_some(condition)
    }
}
