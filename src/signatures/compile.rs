//! Compiling rules into per-field automata, and matching a request.
//!
//! Each rule condition becomes one or more *atoms* (a literal, a regex, or
//! "field absent"). For every field, all literal atoms go into one
//! aho-corasick automaton (one for case-insensitive literals, one for
//! case-sensitive ones) and all regex atoms into one multi-pattern
//! `meta::Regex` with `MatchKind::All`, so one pass over a field reports
//! every atom that matches it. Rules are then evaluated only if one of
//! their atoms matched: matching cost grows with the request and the number
//! of hits, not with the number of rules.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind as AcMatchKind};
use regex_automata::meta::Regex;
use regex_automata::{Input, MatchKind, PatternSet};

use super::field::Field;
use super::rule::{ConditionSpec, RuleSpec};
use super::scan_cache;
use crate::error::Error;
use crate::signal::{Action, Evidence, Signal};
use crate::view::RequestView;

type AtomId = usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LiteralKind {
    Contains,
    Prefix,
    Equals,
}

#[derive(Debug)]
enum AtomKind {
    Literal(Arc<str>),
    Regex(Arc<str>),
    Absent,
}

#[derive(Debug)]
struct Atom {
    field: usize,
    kind: AtomKind,
}

/// One literal automaton and, per automaton pattern, its atom and kind.
#[derive(Debug)]
struct LiteralSet {
    automaton: AhoCorasick,
    patterns: Vec<(AtomId, LiteralKind)>,
}

#[derive(Debug)]
struct FieldMatcher {
    field: Field,
    /// Whether scans of this field's values are remembered (see `scan_cache`).
    cached: bool,
    literals_nocase: Option<LiteralSet>,
    literals_case: Option<LiteralSet>,
    regex: Option<(Regex, Vec<AtomId>)>,
    absent: Vec<AtomId>,
}

/// A compiled rule: fires when its inline condition (if any), every `all`
/// condition and at least one `any` condition (if any) hold. A condition
/// holds when any of its atoms matched.
#[derive(Debug)]
struct CompiledRule {
    id: Arc<str>,
    penalty: u8,
    action: Option<Action>,
    shadow: bool,
    required: Vec<Vec<AtomId>>,
    any: Vec<Vec<AtomId>>,
}

/// Rules as they were read, before compiling; `key` names each rule in errors.
#[derive(Debug)]
pub struct RuleInput<'a> {
    pub spec: &'a RuleSpec,
    pub shadow: bool,
}

#[derive(Debug)]
pub struct CompiledSet {
    /// This compilation's number, unique in the process: remembered scans
    /// (see `scan_cache`) belong to one set, and a reload makes another.
    id: u64,
    fields: Vec<FieldMatcher>,
    atoms: Vec<Atom>,
    atom_rules: Vec<Vec<u32>>,
    rules: Vec<CompiledRule>,
}

/// Pending literal atoms of one field, before the automata are built.
#[derive(Default)]
struct FieldBuild {
    nocase: Vec<(String, AtomId, LiteralKind)>,
    case: Vec<(String, AtomId, LiteralKind)>,
    regexes: Vec<(String, AtomId)>,
    absent: Vec<AtomId>,
}

impl CompiledSet {
    /// Compile rules; an error names the rule and says what is wrong.
    pub fn compile(rules: &[RuleInput<'_>]) -> Result<CompiledSet, Vec<(usize, String)>> {
        let mut problems = Vec::new();
        let mut fields: Vec<Field> = Vec::new();
        let mut builds: Vec<FieldBuild> = Vec::new();
        let mut atoms: Vec<Atom> = Vec::new();
        let mut compiled = Vec::new();
        for (index, input) in rules.iter().enumerate() {
            let spec = input.spec;
            let mut fail = |message: String| problems.push((index, message));
            let action = match spec.action.as_deref() {
                None => None,
                Some(text) => match Action::parse(text) {
                    Some(action @ (Action::Log | Action::Challenge | Action::Block)) => Some(action),
                    _ => {
                        fail(format!("unknown action {text:?}; use log, challenge or block"));
                        None
                    }
                },
            };
            let shadow = match spec.mode.as_deref() {
                None | Some("enforce") => input.shadow,
                Some("shadow") => true,
                Some(other) => {
                    fail(format!("unknown mode {other:?}; use enforce or shadow"));
                    false
                }
            };
            if spec.score == 0 && action.is_none() {
                fail("the rule neither scores nor acts: give `score` (1..=98) or `action`".into());
            }
            let mut add_condition = |condition: &ConditionSpec| -> Result<Vec<AtomId>, Error> {
                add_atoms(condition, &mut fields, &mut builds, &mut atoms)
            };
            let mut required = Vec::new();
            let mut any = Vec::new();
            let mut ok = true;
            if let Some(inline) = spec.inline() {
                match add_condition(&inline) {
                    Ok(ids) => required.push(ids),
                    Err(error) => {
                        fail(error.to_string());
                        ok = false;
                    }
                }
            }
            for (list, target) in [(&spec.all, &mut required), (&spec.any, &mut any)] {
                for condition in list {
                    match add_condition(condition) {
                        Ok(ids) => target.push(ids),
                        Err(error) => {
                            fail(error.to_string());
                            ok = false;
                        }
                    }
                }
            }
            if ok && required.is_empty() && any.is_empty() {
                fail("the rule has no condition: give `field` with a match, or `all`/`any`".into());
            }
            compiled.push(CompiledRule {
                id: Arc::from(spec.id.as_str()),
                penalty: spec.score.min(98),
                action,
                shadow,
                required,
                any,
            });
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut atom_rules = vec![Vec::new(); atoms.len()];
        for (rule_index, rule) in compiled.iter().enumerate() {
            for atom in rule.required.iter().chain(&rule.any).flatten() {
                if atom_rules[*atom].last() != Some(&(rule_index as u32)) {
                    atom_rules[*atom].push(rule_index as u32);
                }
            }
        }
        let matchers = fields
            .into_iter()
            .zip(builds)
            .map(|(field, build)| build_field(field, build))
            .collect::<Result<Vec<_>, Error>>()
            .map_err(|error| vec![(0, error.to_string())])?;
        static COMPILED: AtomicU64 = AtomicU64::new(0);
        let id = COMPILED.fetch_add(1, Ordering::Relaxed);
        Ok(CompiledSet { id, fields: matchers, atoms, atom_rules, rules: compiled })
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Signals for every rule the request sets off.
    pub fn matches(&self, view: &RequestView<'_>, signals: &mut Vec<Signal>) {
        let mut matched = vec![0u64; self.atoms.len().div_ceil(64)];
        // Sized for a typical request, so that they do not grow while
        // scanning (the growth steps were a visible share of a decision).
        let mut hits: Vec<AtomId> = Vec::with_capacity(32);
        let mut values: Vec<Cow<'_, [u8]>> = Vec::with_capacity(8);
        for (index, matcher) in self.fields.iter().enumerate() {
            matcher.field.values(view, &mut values);
            if values.is_empty() {
                hits.extend_from_slice(&matcher.absent);
                continue;
            }
            for value in &values {
                if matcher.cached {
                    scan_cache::scan_with(self.id, index, value, &mut hits, |hits| matcher.scan(value, hits));
                } else {
                    matcher.scan(value, &mut hits);
                }
            }
        }
        for &atom in &hits {
            matched[atom / 64] |= 1 << (atom % 64);
        }
        let is_set = |atom: AtomId| matched[atom / 64] & (1 << (atom % 64)) != 0;
        let holds = |condition: &Vec<AtomId>| condition.iter().any(|&a| is_set(a));
        let mut evaluated = vec![0u64; self.rules.len().div_ceil(64)];
        for &atom in &hits {
            for &rule_index in &self.atom_rules[atom] {
                let rule_index = rule_index as usize;
                if evaluated[rule_index / 64] & (1 << (rule_index % 64)) != 0 {
                    continue;
                }
                evaluated[rule_index / 64] |= 1 << (rule_index % 64);
                let rule = &self.rules[rule_index];
                if rule.required.iter().all(holds) && (rule.any.is_empty() || rule.any.iter().any(holds)) {
                    signals.push(self.signal(rule, atom));
                }
            }
        }
    }

    fn signal(&self, rule: &CompiledRule, first_atom: AtomId) -> Signal {
        let mut signal = Signal::new(rule.id.clone(), rule.penalty);
        signal.action = rule.action;
        signal.shadow = rule.shadow;
        let atom = &self.atoms[first_atom];
        signal.evidence.push(Evidence::text("field", self.fields[atom.field].field.name()));
        // Only the rule's own text goes in the evidence, never request text:
        // a body rule must not copy a password into the log.
        match &atom.kind {
            AtomKind::Literal(text) => signal.evidence.push(Evidence::text("matched", text.clone())),
            AtomKind::Regex(pattern) => signal.evidence.push(Evidence::text("regex", pattern.clone())),
            AtomKind::Absent => signal.evidence.push(Evidence::text("absent", "true")),
        }
        signal
    }
}

impl FieldMatcher {
    fn scan(&self, value: &[u8], hits: &mut Vec<AtomId>) {
        for set in [&self.literals_nocase, &self.literals_case].into_iter().flatten() {
            for found in set.automaton.find_overlapping_iter(value) {
                let (atom, kind) = set.patterns[found.pattern().as_usize()];
                let fits = match kind {
                    LiteralKind::Contains => true,
                    LiteralKind::Prefix => found.start() == 0,
                    LiteralKind::Equals => found.start() == 0 && found.end() == value.len(),
                };
                if fits {
                    hits.push(atom);
                }
            }
        }
        // Most values match no regex: a plain `is_match` answers that
        // without the overlapping search or the pattern set.
        if let Some((regex, atom_ids)) = &self.regex
            && regex.is_match(value)
        {
            let mut set = PatternSet::new(regex.pattern_len());
            regex.which_overlapping_matches(&Input::new(value), &mut set);
            hits.extend(set.iter().map(|pattern| atom_ids[pattern.as_usize()]));
        }
    }
}

fn add_atoms(
    condition: &ConditionSpec,
    fields: &mut Vec<Field>,
    builds: &mut Vec<FieldBuild>,
    atoms: &mut Vec<Atom>,
) -> Result<Vec<AtomId>, Error> {
    let field_name = condition.field.as_deref().ok_or_else(|| Error::config("a condition needs `field`"))?;
    let field = Field::parse(field_name)
        .ok_or_else(|| Error::config(format!("unknown field {field_name:?}; fields are {}", Field::NAMES)))?;
    let kinds = [
        condition.contains.as_ref().map(|v| (Some(LiteralKind::Contains), v)),
        condition.prefix.as_ref().map(|v| (Some(LiteralKind::Prefix), v)),
        condition.equals.as_ref().map(|v| (Some(LiteralKind::Equals), v)),
        condition.regex.as_ref().map(|v| (None, v)),
    ];
    let given = kinds.iter().flatten().count() + usize::from(condition.absent.is_some());
    if given != 1 {
        return Err(Error::config(format!(
            "field {field_name:?} needs exactly one of contains, prefix, equals, regex or absent (found {given})"
        )));
    }
    let field_index = match fields.iter().position(|f| *f == field) {
        Some(index) => index,
        None => {
            fields.push(field);
            builds.push(FieldBuild::default());
            fields.len() - 1
        }
    };
    let build = &mut builds[field_index];
    let mut ids = Vec::new();
    if let Some(absent) = condition.absent {
        if !absent {
            return Err(Error::config("`absent = false` matches nothing; use `regex = '.'` to require a field"));
        }
        atoms.push(Atom { field: field_index, kind: AtomKind::Absent });
        build.absent.push(atoms.len() - 1);
        return Ok(vec![atoms.len() - 1]);
    }
    for (literal_kind, values) in kinds.into_iter().flatten() {
        for item in values.items() {
            if item.is_empty() {
                return Err(Error::config(format!("an empty pattern on {field_name:?} would match every request")));
            }
            let id = atoms.len();
            match literal_kind {
                Some(kind) => {
                    atoms.push(Atom { field: field_index, kind: AtomKind::Literal(Arc::from(item)) });
                    let list = if condition.case_sensitive { &mut build.case } else { &mut build.nocase };
                    list.push((item.to_string(), id, kind));
                }
                None => {
                    let pattern = if condition.case_sensitive { item.to_string() } else { format!("(?i:{item})") };
                    Regex::new(&pattern).map_err(|e| Error::config(crate::routes::regex_problem(&e)))?;
                    atoms.push(Atom { field: field_index, kind: AtomKind::Regex(Arc::from(item)) });
                    build.regexes.push((pattern, id));
                }
            }
            ids.push(id);
        }
    }
    Ok(ids)
}

fn build_field(field: Field, build: FieldBuild) -> Result<FieldMatcher, Error> {
    let literal_set = |items: Vec<(String, AtomId, LiteralKind)>, nocase: bool| -> Result<Option<LiteralSet>, Error> {
        if items.is_empty() {
            return Ok(None);
        }
        let automaton = AhoCorasickBuilder::new()
            .ascii_case_insensitive(nocase)
            .match_kind(AcMatchKind::Standard)
            .build(items.iter().map(|(text, _, _)| text.as_bytes()))
            .map_err(|e| Error::config(format!("cannot compile the literals of {}: {e}", field.name())))?;
        Ok(Some(LiteralSet { automaton, patterns: items.into_iter().map(|(_, id, kind)| (id, kind)).collect() }))
    };
    let regex = if build.regexes.is_empty() {
        None
    } else {
        let patterns: Vec<&str> = build.regexes.iter().map(|(p, _)| p.as_str()).collect();
        let regex = Regex::builder()
            .configure(Regex::config().match_kind(MatchKind::All))
            .build_many(&patterns)
            .map_err(|e| Error::config(format!("cannot compile the regexes of {}: {e}", field.name())))?;
        Some((regex, build.regexes.into_iter().map(|(_, id)| id).collect()))
    };
    Ok(FieldMatcher {
        literals_nocase: literal_set(build.nocase, true)?,
        literals_case: literal_set(build.case, false)?,
        regex,
        absent: build.absent,
        cached: field.repeats_across_clients(),
        field,
    })
}
