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

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aho_corasick::automaton::Automaton;
use aho_corasick::{Anchored, MatchKind as AcMatchKind, PatternID, dfa, nfa};
use http::{HeaderName, HeaderValue};
use regex_automata::meta::Regex;
use regex_automata::{Input, MatchKind, PatternSet};
use regex_syntax::hir::literal::{ExtractKind, Extractor};

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

/// One literal automaton and, per automaton pattern, its atom and kind;
/// `None` for a regex anchor (see [`FieldRegex::gated`]), which is no atom.
#[derive(Debug)]
struct LiteralSet {
    automaton: Literals,
    patterns: Vec<Option<(AtomId, LiteralKind)>>,
}

/// A literal set's Aho-Corasick automaton, of the kind `AhoCorasick`
/// would pick (a DFA for up to [`DFA_PATTERNS`] patterns, else a contiguous
/// NFA, else the one it is built from), walked by [`overlapping`] rather
/// than through `AhoCorasick::find_overlapping_iter`: the iterator's
/// search is re-entered for every match and set up (start state, anchor
/// checks, prefilter) for every value, ~300 instructions for a six-byte
/// path against ~60 for the walk.
#[derive(Debug)]
enum Literals {
    Dfa(dfa::DFA),
    Contiguous(nfa::contiguous::NFA),
    Noncontiguous(nfa::noncontiguous::NFA),
}

/// The most patterns a literal set is built as a DFA for (what
/// `AhoCorasick` chooses by).
const DFA_PATTERNS: usize = 100;

impl Literals {
    fn build<'a>(
        patterns: impl IntoIterator<Item = &'a [u8]>,
        nocase: bool,
    ) -> Result<Literals, aho_corasick::BuildError> {
        // No prefilter: the walk does not use one.
        let noncontiguous = nfa::noncontiguous::Builder::new()
            .ascii_case_insensitive(nocase)
            .match_kind(AcMatchKind::Standard)
            .prefilter(false)
            .build(patterns)?;
        if noncontiguous.patterns_len() <= DFA_PATTERNS
            && let Ok(dfa) = dfa::Builder::new().prefilter(false).build_from_noncontiguous(&noncontiguous)
        {
            return Ok(Literals::Dfa(dfa));
        }
        Ok(match nfa::contiguous::Builder::new().prefilter(false).build_from_noncontiguous(&noncontiguous) {
            Ok(contiguous) => Literals::Contiguous(contiguous),
            Err(_) => Literals::Noncontiguous(noncontiguous),
        })
    }
}

impl Literals {
    /// Every occurrence of a pattern in `value`, as `(pattern, start, end)`.
    fn each_match(&self, value: &[u8], found: impl FnMut(PatternID, usize, usize)) {
        match self {
            Literals::Dfa(automaton) => overlapping(automaton, value, found),
            Literals::Contiguous(automaton) => overlapping(automaton, value, found),
            Literals::Noncontiguous(automaton) => overlapping(automaton, value, found),
        }
    }
}

/// Every occurrence of every pattern of `automaton` (built with
/// `MatchKind::Standard`, no pattern empty) in `value`, in the order
/// `find_overlapping_iter` reports them: by where they end, then in the
/// order the matching state lists them.
///
/// Not inlined: in the caller's body the loop's invariants (the transition
/// table, its length, the last special state) were kept on the stack and
/// reloaded for every byte, 15 instructions a byte.
#[inline(never)]
fn overlapping<A: Automaton>(automaton: &A, value: &[u8], mut found: impl FnMut(PatternID, usize, usize)) {
    let Ok(mut state) = automaton.start_state(Anchored::No) else { return };
    let mut bytes = value.iter();
    while let Some(&byte) = bytes.next() {
        state = automaton.next_state(Anchored::No, state, byte);
        if automaton.is_special(state) {
            if automaton.is_dead(state) {
                return;
            }
            if automaton.is_match(state) {
                let end = value.len() - bytes.as_slice().len();
                for index in 0..automaton.match_len(state) {
                    let pattern = automaton.match_pattern(state, index);
                    found(pattern, end - automaton.pattern_len(pattern), end);
                }
            }
        }
    }
}

/// A field's regexes, one multi-pattern regex, and the atom of each pattern.
#[derive(Debug)]
struct FieldRegex {
    regex: Regex,
    atoms: Vec<AtomId>,
    /// Whether the regex runs only on a value in which the field's
    /// case-insensitive literal automaton found an *anchor*: a literal
    /// that every match of one of the patterns starts with (see
    /// [`regex_anchors`]). The literal pass reads every value anyway, so
    /// most values (no `union`, quote or `<` in a query; no `${` in a
    /// cookie) skip the regex without reading the value again. A gated
    /// regex is built without its own prefilter: the anchors have already
    /// said a match may be there, and the prefilter re-entered at every
    /// quote of a sqlmap query cost more than the search (callgrind,
    /// replay of the 30,000-request corpus: the signature stage went from
    /// ~5.9k to ~5.2k instructions a request). Not gated when a pattern
    /// has no such literals (it may start anywhere, like `.` or `[a-z]+`).
    gated: bool,
}

#[derive(Debug)]
struct FieldMatcher {
    field: Field,
    /// The field's name as signals' evidence gives it, made once (it was
    /// formatted and copied for every signal).
    name: Arc<str>,
    /// Whether scans of this field's values are remembered (see `scan_cache`).
    cached: bool,
    /// Whether this is the `query` field, whose scans of encoded queries
    /// are remembered by the query as sent (see [`Scratch::queries`]).
    query: bool,
    literals_nocase: Option<LiteralSet>,
    literals_case: Option<LiteralSet>,
    regex: Option<FieldRegex>,
    absent: Vec<AtomId>,
    /// For a field with a vocabulary (see [`Field::vocabulary`]), the atoms
    /// each word matches, scanned at compile.
    words: Vec<Box<[AtomId]>>,
    /// For a header field, its place in [`CompiledSet::headers`].
    header: Option<usize>,
}

/// A compiled rule: fires when its inline condition (if any), every `all`
/// condition and at least one `any` condition (if any) hold. A condition
/// holds when any of its atoms matched. Conditions are numbered across
/// the set (see [`CompiledSet::atom_condition`]).
#[derive(Debug)]
struct CompiledRule {
    id: Arc<str>,
    penalty: u8,
    action: Option<Action>,
    shadow: bool,
    required: Vec<ConditionId>,
    any: Vec<ConditionId>,
}

type ConditionId = u32;

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
    /// The condition each atom belongs to (every atom is made for one
    /// condition): a request marks the conditions its atoms matched, so
    /// that a rule is evaluated by testing a bit per condition instead of
    /// searching each condition's atoms (up to ~100, for the crawler
    /// lists) for one that matched.
    atom_condition: Vec<ConditionId>,
    /// How many conditions the set has.
    condition_count: usize,
    rules: Vec<CompiledRule>,
    /// The `absent` evidence's value, made once.
    absent_text: Arc<str>,
    /// The most patterns one field's regex has (the size of the pattern
    /// set a scan reports regex matches in).
    regex_patterns: usize,
    /// Whether a request's signals are a function of its shape (see
    /// [`crate::view::Known::shape`]): no rule looks at the body, the ASN
    /// or JA4, which requests of one shape need not share.
    by_shape: bool,
    /// The headers rules look at (the first [`HEADER_SLOTS`]), found in
    /// one pass over the request's headers: a `get_all` per header field
    /// hashed each name again, ~150 instructions a field.
    headers: Vec<HeaderName>,
    /// By a name's length (63 standing for longer), which of `headers`
    /// have it, one bit each: most request headers are passed over
    /// without a comparison, and the rest are compared with only the
    /// names of their length.
    headers_by_length: [u32; 64],
}

fn length_index(name: &HeaderName) -> usize {
    name.as_str().len().min(63)
}

/// Header fields found in the one pass; more are looked up one by one.
const HEADER_SLOTS: usize = 32;
const _: () = assert!(HEADER_SLOTS <= 32, "headers_by_length holds a slot per bit of a u32");

/// The working memory of [`CompiledSet::matches`], kept per thread and
/// reused, so that matching a request allocates nothing (it made four or
/// five allocations per request before). Buffers that a huge request
/// grows are given back after it (see [`Scratch::trim`]).
struct Scratch {
    /// One bit per condition: holds in this request.
    holds: Vec<u64>,
    /// One bit per rule: already evaluated for this request.
    evaluated: Vec<u64>,
    /// Atoms that matched, in the order they were found (which orders the
    /// signals and picks each signal's evidence).
    hits: Vec<AtomId>,
    /// A field value palisade builds: a decoded query, the header names.
    text: Vec<u8>,
    /// Which patterns of a field's regex matched.
    patterns: Option<PatternSet>,
    /// Remembered scans (see `scan_cache`), kept here so that a request
    /// borrows the thread's cache once rather than once per cached field.
    cache: scan_cache::Cache,
    /// Remembered scans of encoded queries, by the query as sent (before
    /// decoding), apart from `cache` so that a stream of distinct queries
    /// cannot push the user agents out. An encoded query (a scanner's
    /// payload: 24 % of the million-request corpus, up to ~440 bytes) was
    /// decoded (~16 instructions a byte), scanned and often run through
    /// the regexes on every request, while a scanner sends the same
    /// payloads to many targets and clients.
    queries: scan_cache::Cache,
    /// The signals of requests by compiled set and shape (see
    /// [`CompiledSet::by_shape`]): in replay, requests of a few hundred
    /// shapes make the stage's scans, ~4,000 instructions a request, the
    /// same again and again.
    shapes: hashbrown::HashMap<(u64, u64), Box<[Signal]>>,
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch {
            holds: Vec::new(),
            evaluated: Vec::new(),
            hits: Vec::new(),
            text: Vec::new(),
            patterns: None,
            cache: scan_cache::Cache::default(),
            queries: scan_cache::Cache::with_slots(QUERY_SLOTS),
            shapes: hashbrown::HashMap::new(),
        }
    }
}

/// Slots of [`Scratch::queries`] per thread.
const QUERY_SLOTS: usize = 256;
/// Most shapes [`Scratch::shapes`] keeps per thread (emptied when full).
const MAX_SHAPES: usize = 4096;

/// Larger buffers are dropped after the request that grew them.
const SCRATCH_KEEP: usize = 64 * 1024;

impl Scratch {
    fn trim(&mut self) {
        if self.text.capacity() > SCRATCH_KEEP {
            self.text = Vec::new();
        }
        if self.hits.capacity() > SCRATCH_KEEP {
            self.hits = Vec::new();
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
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
        Self::compile_with(rules, true)
    }

    /// [`CompiledSet::compile`]; `gate` as [`build_field`] takes it.
    fn compile_with(rules: &[RuleInput<'_>], gate: bool) -> Result<CompiledSet, Vec<(usize, String)>> {
        let mut problems = Vec::new();
        let mut fields: Vec<Field> = Vec::new();
        let mut builds: Vec<FieldBuild> = Vec::new();
        let mut atoms: Vec<Atom> = Vec::new();
        let mut compiled = Vec::new();
        // Each condition's atoms, by condition number.
        let mut conditions: Vec<Vec<AtomId>> = Vec::new();
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
            let mut add_condition = |condition: &ConditionSpec| -> Result<ConditionId, Error> {
                let ids = add_atoms(condition, &mut fields, &mut builds, &mut atoms)?;
                conditions.push(ids);
                Ok((conditions.len() - 1) as ConditionId)
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
            for &condition in rule.required.iter().chain(&rule.any) {
                for &atom in &conditions[condition as usize] {
                    if atom_rules[atom].last() != Some(&(rule_index as u32)) {
                        atom_rules[atom].push(rule_index as u32);
                    }
                }
            }
        }
        let mut atom_condition = vec![0; atoms.len()];
        for (condition, members) in conditions.iter().enumerate() {
            for &atom in members {
                atom_condition[atom] = condition as ConditionId;
            }
        }
        let mut matchers = fields
            .into_iter()
            .zip(builds)
            .map(|(field, build)| build_field(field, build, gate))
            .collect::<Result<Vec<_>, Error>>()
            .map_err(|error| vec![(0, error.to_string())])?;
        let mut headers = Vec::new();
        for matcher in &mut matchers {
            if let Field::Header(name) = &matcher.field
                && headers.len() < HEADER_SLOTS
            {
                matcher.header = Some(headers.len());
                headers.push(name.clone());
            }
        }
        static COMPILED: AtomicU64 = AtomicU64::new(0);
        let id = COMPILED.fetch_add(1, Ordering::Relaxed);
        let mut headers_by_length = [0u32; 64];
        for (slot, name) in headers.iter().enumerate() {
            headers_by_length[length_index(name)] |= 1 << slot;
        }
        let regex_patterns =
            matchers.iter().filter_map(|m| m.regex.as_ref()).map(|r| r.regex.pattern_len()).max().unwrap_or(0);
        let by_shape =
            matchers.iter().all(|m| !matches!(m.field, Field::Body | Field::Asn | Field::AsnOrg | Field::Ja4));
        Ok(CompiledSet {
            id,
            fields: matchers,
            atoms,
            atom_rules,
            atom_condition,
            condition_count: conditions.len(),
            rules: compiled,
            absent_text: Arc::from("true"),
            regex_patterns,
            by_shape,
            headers,
            headers_by_length,
        })
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Signals for every rule the request sets off.
    pub fn matches(&self, view: &RequestView<'_>, signals: &mut Vec<Signal>) {
        let done = SCRATCH
            .try_with(|scratch| match scratch.try_borrow_mut() {
                Ok(mut scratch) => {
                    match view.shape.filter(|_| self.by_shape) {
                        Some(shape) => self.matches_by_shape(view, shape, signals, &mut scratch),
                        None => self.matches_with(view, signals, &mut scratch),
                    }
                    scratch.trim();
                    true
                }
                Err(_) => false,
            })
            .unwrap_or(false);
        if !done {
            // Re-entered on this thread, or the thread is ending: fresh
            // buffers and an empty scan cache, same answer.
            self.matches_with(view, signals, &mut Scratch::default());
        }
    }

    /// [`CompiledSet::matches_with`] once per shape: the signals of a shape
    /// seen before are its first request's (a signal holds only the rule's
    /// own text).
    fn matches_by_shape(&self, view: &RequestView<'_>, shape: u64, signals: &mut Vec<Signal>, scratch: &mut Scratch) {
        if let Some(kept) = scratch.shapes.get(&(self.id, shape)) {
            signals.extend_from_slice(kept);
            return;
        }
        let start = signals.len();
        self.matches_with(view, signals, scratch);
        if scratch.shapes.len() >= MAX_SHAPES {
            scratch.shapes.clear();
        }
        scratch.shapes.insert((self.id, shape), Box::from(&signals[start..]));
    }

    fn matches_with(&self, view: &RequestView<'_>, signals: &mut Vec<Signal>, scratch: &mut Scratch) {
        let Scratch { holds, evaluated, hits, text, patterns, cache, queries, .. } = scratch;
        // A set made for a smaller compiled set (before a reload) is made again.
        if patterns.as_ref().is_none_or(|set| set.capacity() < self.regex_patterns) {
            *patterns = Some(PatternSet::new(self.regex_patterns));
        }
        let Some(patterns) = patterns.as_mut() else { return };
        hits.clear();
        // The first value of each header rules look at; a header sent
        // more than once is marked and read again with `get_all`, in order.
        let mut found: [Option<&HeaderValue>; HEADER_SLOTS] = [None; HEADER_SLOTS];
        let mut repeated = 0u64;
        if !self.headers.is_empty() {
            for (name, value) in view.headers {
                let mut slots = self.headers_by_length[length_index(name)];
                while slots != 0 {
                    let slot = slots.trailing_zeros() as usize;
                    slots &= slots - 1;
                    if self.headers.get(slot) == Some(name) {
                        match &found[slot] {
                            None => found[slot] = Some(value),
                            Some(_) => repeated |= 1 << slot,
                        }
                        break;
                    }
                }
            }
        }
        for (index, matcher) in self.fields.iter().enumerate() {
            if !matcher.words.is_empty()
                && let Some(atoms) = matcher.field.word(view).and_then(|word| matcher.words.get(word))
            {
                hits.extend_from_slice(atoms);
                continue;
            }
            let mut scan = |value: &[u8]| {
                if matcher.cached {
                    cache.scan_with(self.id, index, value, hits, |hits| matcher.scan(value, hits, patterns));
                } else {
                    matcher.scan(value, hits, patterns);
                }
            };
            let present = match matcher.header {
                // What an encoded query matches is what its decoded text
                // matches: remembered by the query as sent, a repeat skips
                // the decoding too.
                _ if matcher.query
                    && let Some(query) = view.query
                    && memchr::memchr2(b'%', b'+', query.as_bytes()).is_some() =>
                {
                    queries.scan_with(self.id, index, query.as_bytes(), hits, |hits| {
                        matcher.field.each_value(view, text, |value| matcher.scan(value, hits, patterns));
                    });
                    true
                }
                Some(slot) if repeated & (1 << slot) == 0 => match found[slot] {
                    Some(value) => {
                        scan(value.as_bytes());
                        true
                    }
                    None => false,
                },
                _ => matcher.field.each_value(view, text, &mut scan),
            };
            if !present {
                hits.extend_from_slice(&matcher.absent);
            }
        }
        holds.clear();
        holds.resize(self.condition_count.div_ceil(64), 0);
        for &atom in hits.iter() {
            let condition = self.atom_condition[atom] as usize;
            holds[condition / 64] |= 1 << (condition % 64);
        }
        let condition_holds = |&condition: &ConditionId| holds[condition as usize / 64] & (1 << (condition % 64)) != 0;
        evaluated.clear();
        evaluated.resize(self.rules.len().div_ceil(64), 0);
        for &atom in hits.iter() {
            for &rule_index in &self.atom_rules[atom] {
                let rule_index = rule_index as usize;
                if evaluated[rule_index / 64] & (1 << (rule_index % 64)) != 0 {
                    continue;
                }
                evaluated[rule_index / 64] |= 1 << (rule_index % 64);
                let rule = &self.rules[rule_index];
                if rule.required.iter().all(condition_holds)
                    && (rule.any.is_empty() || rule.any.iter().any(condition_holds))
                {
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
        // Only the rule's own text goes in the evidence, never request text:
        // a body rule must not copy a password into the log.
        let matched = match &atom.kind {
            AtomKind::Literal(text) => Evidence::text("matched", text.clone()),
            AtomKind::Regex(pattern) => Evidence::text("regex", pattern.clone()),
            AtomKind::Absent => Evidence::text("absent", self.absent_text.clone()),
        };
        signal.evidence = vec![Evidence::text("field", self.fields[atom.field].name.clone()), matched];
        signal
    }
}

impl FieldMatcher {
    /// Appends the atoms `value` matches to `hits`; `patterns` is scratch
    /// space at least as large as this field's regex.
    fn scan(&self, value: &[u8], hits: &mut Vec<AtomId>, patterns: &mut PatternSet) {
        let mut anchored = false;
        for set in [&self.literals_nocase, &self.literals_case].into_iter().flatten() {
            set.automaton.each_match(value, |pattern, start, end| {
                let Some((atom, kind)) = set.patterns[pattern.as_usize()] else {
                    anchored = true;
                    return;
                };
                let fits = match kind {
                    LiteralKind::Contains => true,
                    LiteralKind::Prefix => start == 0,
                    LiteralKind::Equals => start == 0 && end == value.len(),
                };
                if fits {
                    hits.push(atom);
                }
            });
        }
        // Most values match no regex: a plain `is_match` answers that
        // without the overlapping search or the pattern set.
        if let Some(FieldRegex { regex, atoms, gated }) = &self.regex
            && (anchored || !gated)
            && regex.is_match(value)
        {
            patterns.clear();
            regex.which_overlapping_matches(&Input::new(value), patterns);
            hits.extend(patterns.iter().map(|pattern| atoms[pattern.as_usize()]));
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
                    // Built only to report a bad pattern against its rule:
                    // a bad pattern fails in parsing or in compiling the
                    // forward or reverse NFA, which this still does; the
                    // full DFA and the one-pass engine (whose failures the
                    // builder only falls back from) were most of the set's
                    // compile, and the field's regex builds its own.
                    Regex::builder()
                        .configure(Regex::config().dfa(false).onepass(false))
                        .build(&pattern)
                        .map_err(|e| Error::config(crate::routes::regex_problem(&e)))?;
                    atoms.push(Atom { field: field_index, kind: AtomKind::Regex(Arc::from(item)) });
                    build.regexes.push((pattern, id));
                }
            }
            ids.push(id);
        }
    }
    Ok(ids)
}

/// A field's automata; `gate` says whether its regex may be gated by
/// anchors (tests build the same fields without, to compare).
fn build_field(field: Field, build: FieldBuild, gate: bool) -> Result<FieldMatcher, Error> {
    type Pattern = (Vec<u8>, Option<(AtomId, LiteralKind)>);
    let literal_set = |items: Vec<Pattern>, nocase: bool| -> Result<Option<LiteralSet>, Error> {
        if items.is_empty() {
            return Ok(None);
        }
        let automaton = Literals::build(items.iter().map(|(text, _)| text.as_slice()), nocase)
            .map_err(|e| Error::config(format!("cannot compile the literals of {}: {e}", field.name())))?;
        Ok(Some(LiteralSet { automaton, patterns: items.into_iter().map(|(_, pattern)| pattern).collect() }))
    };
    let literals = |items: Vec<(String, AtomId, LiteralKind)>| -> Vec<Pattern> {
        items.into_iter().map(|(text, id, kind)| (text.into_bytes(), Some((id, kind)))).collect()
    };
    let mut nocase = literals(build.nocase);
    let anchors = if gate { regex_anchors(build.regexes.iter().map(|(pattern, _)| pattern.as_str())) } else { None };
    let gated = anchors.is_some();
    // Anchors go in the case-insensitive automaton whatever the regex's
    // case: there they are found in every case, a superset of what a
    // case-sensitive pattern needs.
    nocase.extend(anchors.into_iter().flatten().map(|anchor| (anchor, None)));
    let regex = if build.regexes.is_empty() {
        None
    } else {
        let patterns: Vec<&str> = build.regexes.iter().map(|(p, _)| p.as_str()).collect();
        let regex = Regex::builder()
            .configure(Regex::config().match_kind(MatchKind::All).auto_prefilter(!gated))
            .build_many(&patterns)
            .map_err(|e| Error::config(format!("cannot compile the regexes of {}: {e}", field.name())))?;
        Some(FieldRegex { regex, atoms: build.regexes.into_iter().map(|(_, id)| id).collect(), gated })
    };
    let mut matcher = FieldMatcher {
        literals_nocase: literal_set(nocase, true)?,
        literals_case: literal_set(literals(build.case), false)?,
        regex,
        absent: build.absent,
        cached: field.repeats_across_clients(),
        query: field == Field::Query,
        name: Arc::from(field.name()),
        words: Vec::new(),
        header: None,
        field,
    };
    let vocabulary = matcher.field.vocabulary();
    if !vocabulary.is_empty() {
        let mut patterns = PatternSet::new(matcher.regex.as_ref().map_or(0, |r| r.regex.pattern_len()));
        matcher.words = vocabulary
            .iter()
            .map(|word| {
                let mut hits = Vec::new();
                matcher.scan(word.as_bytes(), &mut hits, &mut patterns);
                hits.into_boxed_slice()
            })
            .collect();
    }
    Ok(matcher)
}

/// Literals that every match of one of `patterns` starts with, ASCII
/// lowercased and without repeats (they are looked for without regard to
/// ASCII case); `None` when there are no patterns or a pattern has none (a
/// match could start with anything, or with nothing). The patterns are
/// parsed as the regex builder parses them, and the literals are
/// regex-syntax's prefix extraction: a finite set of prefixes, every one
/// non-empty, is one that every match begins with (cut short when the
/// exact set would be too large, which keeps it a set of prefixes).
fn regex_anchors<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Option<Vec<Vec<u8>>> {
    let mut extractor = Extractor::new();
    extractor.kind(ExtractKind::Prefix);
    let mut anchors = Vec::new();
    for pattern in patterns {
        let hir = regex_automata::util::syntax::parse(pattern).ok()?;
        let prefixes = extractor.extract(&hir);
        let literals = prefixes.literals()?;
        if literals.is_empty() || literals.iter().any(|literal| literal.as_bytes().is_empty()) {
            return None;
        }
        anchors.extend(literals.iter().map(|literal| literal.as_bytes().to_ascii_lowercase()));
    }
    anchors.sort_unstable();
    anchors.dedup();
    (!anchors.is_empty()).then_some(anchors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signatures::BUILTIN_RULE_FILES;
    use crate::signatures::rule::RuleFile;

    fn builtin_rules() -> Vec<RuleFile> {
        BUILTIN_RULE_FILES
            .iter()
            .map(|(name, text)| toml::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}")))
            .collect()
    }

    fn builtin(files: &[RuleFile], gate: bool) -> CompiledSet {
        let inputs: Vec<RuleInput<'_>> = files
            .iter()
            .flat_map(|file| &file.rules)
            .map(|spanned| RuleInput { spec: spanned.get_ref(), shadow: false })
            .collect();
        CompiledSet::compile_with(&inputs, gate).unwrap_or_else(|e| panic!("{e:?}"))
    }

    /// Pieces of what the shipped rules look for (anchors, payload words,
    /// separators, non-ASCII case variants) and of ordinary values.
    const FRAGMENTS: [&str; 48] = [
        "union",
        "UNION",
        "select",
        "all",
        " ",
        "/**/",
        "/*x*/",
        "'",
        "\"",
        "<",
        ">",
        "script",
        "on",
        "error",
        "load=",
        "${",
        "jndi:",
        "}",
        "sleep",
        "pg_",
        "(",
        "5",
        ")",
        "waitfor delay ",
        "benchmark(",
        "load_file(",
        "into outfile",
        "or",
        "and",
        "1=1",
        "a=a",
        "{{",
        "7*7",
        "}}",
        "javascript:",
        "/etc/passwd",
        "../",
        "..\\",
        "Chrome/",
        "120.0",
        "Mozilla/5.0",
        "user-agent,accept-encoding,accept,connection",
        "ſ",
        "\u{212a}",
        "/.env",
        "phpinfo(",
        "id=1&q=",
        "%",
    ];

    /// A value of 0 to 9 fragments, each in its case or flipped to upper.
    fn value(next: &mut impl FnMut() -> u64) -> Vec<u8> {
        let mut value = Vec::new();
        for _ in 0..next() % 10 {
            let fragment = FRAGMENTS[(next() % FRAGMENTS.len() as u64) as usize].as_bytes();
            if next().is_multiple_of(3) {
                value.extend(fragment.to_ascii_uppercase());
            } else {
                value.extend_from_slice(fragment);
            }
        }
        value
    }

    /// A request's signals, ids and evidence, as text to compare.
    fn signals_of(set: &CompiledSet, target: &str, scratch: &mut Scratch) -> Vec<String> {
        let mut signals = Vec::new();
        crate::test_support::view_with("GET", target, &[("user-agent", "a")], None, |view| {
            set.matches_with(view, &mut signals, scratch)
        });
        signals.iter().map(|signal| format!("{signal:?}")).collect()
    }

    #[test]
    fn remembered_query_scans_fire_what_fresh_scans_fire() {
        let files = builtin_rules();
        let set = builtin(&files, true);
        let mut next = crate::test_support::xorshift(0x0e5c_a9ed_9e77);
        let mut queries: Vec<String> = (0..3_000)
            .map(|_| {
                let value = value(&mut next);
                let encoded: String = percent_encoding::percent_encode(&value, percent_encoding::NON_ALPHANUMERIC)
                    .to_string()
                    .replace("%20", if next().is_multiple_of(2) { "+" } else { "%20" });
                format!("id=1&q={encoded}")
            })
            .collect();
        queries.push(format!("q={}", "%27+union+select".repeat(scan_cache::MAX_VALUE / 8)));
        queries.extend(["id=1", "q=a+b", "q=%27%20or%201%3D1", "q=%2"].map(String::from));
        let (mut kept, mut fired) = (Scratch::default(), 0);
        // Twice over: the second pass answers from the remembered scans.
        for query in queries.iter().chain(&queries) {
            let target = format!("/x?{query}");
            let fresh = signals_of(&set, &target, &mut Scratch::default());
            assert_eq!(signals_of(&set, &target, &mut kept), fresh, "{query}");
            fired += fresh.len();
        }
        assert!(fired > 1_000, "{fired}");
    }

    /// Method, target, headers and body.
    type Request<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], Option<&'a [u8]>);

    /// The signals of a request as [`signals_of`] gives them, through
    /// [`CompiledSet::matches`] (this thread's scratch), its view saying
    /// its shape when `shape` is given.
    fn signals_shaped(
        set: &CompiledSet,
        (method, target, headers, body): Request<'_>,
        shape: Option<u64>,
    ) -> Vec<String> {
        let config = crate::config::Config::default();
        let routes = crate::routes::RouteTable::from_config(&config).unwrap();
        let method: http::Method = method.parse().unwrap();
        let uri: http::Uri = target.parse().unwrap();
        let mut map = http::HeaderMap::new();
        for (name, value) in headers {
            map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        let path = crate::normalize::normalize_path(uri.path(), true);
        let route = routes.find(&method, &path).clone();
        let ip = "192.0.2.1".parse().unwrap();
        let view = RequestView::new(&method, http::Version::HTTP_11, &uri, &path, &map, ip, &route, body)
            .with_known(crate::view::Known { fingerprints: None, shape });
        let mut signals = Vec::new();
        set.matches(&view, &mut signals);
        signals.iter().map(|signal| format!("{signal:?}")).collect()
    }

    #[test]
    fn a_shapes_signals_are_what_each_of_its_requests_fires() {
        let files = builtin_rules();
        let set = builtin(&files, true);
        assert!(set.by_shape);
        let agents = ["sqlmap/1.7.2#stable (https://sqlmap.org)", "python-requests/2.31.0", "Mozilla/5.0 (Hydra)", ""];
        let targets = ["/", "/login", "/item?id=1%27%20UNION%20SELECT%20NULL--", "/.env", "/a?q=%3Cscript%3E"];
        let mut requests = Vec::new();
        for agent in agents {
            for target in targets {
                for method in ["GET", "POST"] {
                    let headers: Vec<(&str, &str)> =
                        if agent.is_empty() { vec![("accept", "*/*")] } else { vec![("user-agent", agent)] };
                    requests.push((method, target, headers));
                }
            }
        }
        let mut fired = 0;
        for _ in 0..2 {
            for (shape, (method, target, headers)) in requests.iter().enumerate() {
                let request = (*method, *target, &headers[..], None);
                let fresh = signals_shaped(&set, request, None);
                let shape = Some(u64::MAX - shape as u64);
                assert_eq!(signals_shaped(&set, request, shape), fresh, "{request:?}");
                fired += fresh.len();
            }
        }
        assert!(fired > 40, "{fired}");
    }

    #[test]
    fn a_set_that_reads_the_body_does_not_go_by_shape() {
        let file: RuleFile = toml::from_str(
            r#"
[[rule]]
id = "b"
field = "body"
contains = "admin"
score = 10
"#,
        )
        .unwrap();
        let inputs: Vec<RuleInput<'_>> =
            file.rules.iter().map(|spanned| RuleInput { spec: spanned.get_ref(), shadow: false }).collect();
        let set = CompiledSet::compile(&inputs).unwrap();
        assert!(!set.by_shape);
        let shape = Some(u64::MAX);
        for (body, expected) in [(&b"user=admin"[..], 1), (b"user=guest", 0), (b"user=admin", 1)] {
            let request = ("POST", "/login", &[("content-type", "application/x-www-form-urlencoded")][..], Some(body));
            assert_eq!(signals_shaped(&set, request, shape).len(), expected, "{body:?}");
        }
    }

    #[test]
    fn gated_regexes_find_what_ungated_ones_find() {
        let files = builtin_rules();
        let (gated, plain) = (builtin(&files, true), builtin(&files, false));
        let names: Vec<String> = gated
            .fields
            .iter()
            .filter(|m| m.regex.as_ref().is_some_and(|r| r.gated))
            .map(|m| m.name.to_string())
            .collect();
        for field in ["query", "path", "header:cookie", "header:referer", "header_names"] {
            assert!(names.iter().any(|name| name == field), "{field} is not gated: {names:?}");
        }
        // The rules' own texts, then generated values.
        let mut values: Vec<Vec<u8>> = gated
            .atoms
            .iter()
            .filter_map(|atom| match &atom.kind {
                AtomKind::Literal(text) | AtomKind::Regex(text) => Some(text.as_bytes().to_vec()),
                AtomKind::Absent => None,
            })
            .collect();
        let mut next = crate::test_support::xorshift(0x9a7e_d5ca_4e11);
        values.extend((0..20_000).map(|_| value(&mut next)));
        let mut patterns = PatternSet::new(gated.regex_patterns);
        let (mut found, mut expected) = (Vec::new(), Vec::new());
        let mut regex_hits = 0;
        for value in &values {
            for (with, without) in gated.fields.iter().zip(&plain.fields) {
                found.clear();
                expected.clear();
                with.scan(value, &mut found, &mut patterns);
                without.scan(value, &mut expected, &mut patterns);
                assert_eq!(found, expected, "{} on {:?}", with.name, String::from_utf8_lossy(value));
                regex_hits +=
                    found.iter().filter(|&&atom| matches!(gated.atoms[atom].kind, AtomKind::Regex(_))).count();
            }
        }
        assert!(regex_hits > 1_000, "{regex_hits}");
    }

    #[test]
    fn walked_literals_are_found_as_find_overlapping_iter_finds_them() {
        let files = builtin_rules();
        let set = builtin(&files, true);
        // Each field's literals, the user agent's ~440 (a contiguous NFA)
        // and the path's (a DFA) among them, and ones that overlap.
        let mut lists: Vec<Vec<Vec<u8>>> = (0..set.fields.len())
            .map(|field| {
                set.atoms
                    .iter()
                    .filter(|atom| atom.field == field)
                    .filter_map(|atom| match &atom.kind {
                        AtomKind::Literal(text) => Some(text.as_bytes().to_vec()),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
            })
            .filter(|list| !list.is_empty())
            .collect();
        lists.push(
            ["a", "aa", "aaa", "ab", "ba", "/.env", "/.env.", "env", "\u{212a}", "S"]
                .map(|p| p.as_bytes().to_vec())
                .into(),
        );
        let mut next = crate::test_support::xorshift(0x0e1a_99ed);
        let mut kinds = std::collections::HashSet::new();
        for patterns in &lists {
            for nocase in [true, false] {
                let reference = aho_corasick::AhoCorasick::builder()
                    .ascii_case_insensitive(nocase)
                    .match_kind(AcMatchKind::Standard)
                    .build(patterns)
                    .unwrap();
                let noncontiguous = nfa::noncontiguous::Builder::new()
                    .ascii_case_insensitive(nocase)
                    .match_kind(AcMatchKind::Standard)
                    .prefilter(false)
                    .build(patterns)
                    .unwrap();
                let built = Literals::build(patterns.iter().map(Vec::as_slice), nocase).unwrap();
                kinds.insert(std::mem::discriminant(&built));
                let mut each = vec![
                    built,
                    Literals::Contiguous(
                        nfa::contiguous::Builder::new().build_from_noncontiguous(&noncontiguous).unwrap(),
                    ),
                    Literals::Noncontiguous(noncontiguous),
                ];
                if patterns.len() <= DFA_PATTERNS {
                    let dfa = dfa::Builder::new().build_from_noncontiguous(match &each[2] {
                        Literals::Noncontiguous(nfa) => nfa,
                        _ => unreachable!(),
                    });
                    each.push(Literals::Dfa(dfa.unwrap()));
                }
                let fragments: Vec<&[u8]> =
                    patterns.iter().map(Vec::as_slice).chain(FRAGMENTS.map(str::as_bytes)).collect();
                for _ in 0..2_000 {
                    let mut value = Vec::new();
                    for _ in 0..next() % 8 {
                        let fragment = fragments[(next() % fragments.len() as u64) as usize];
                        let cut = (next() % (fragment.len() as u64 + 1)) as usize;
                        let piece = if next().is_multiple_of(4) { &fragment[..cut] } else { fragment };
                        if next().is_multiple_of(3) {
                            value.extend(piece.to_ascii_uppercase());
                        } else {
                            value.extend_from_slice(piece);
                        }
                    }
                    let expected: Vec<(usize, usize, usize)> = reference
                        .find_overlapping_iter(&value)
                        .map(|found| (found.pattern().as_usize(), found.start(), found.end()))
                        .collect();
                    for automaton in &each {
                        let mut walked = Vec::new();
                        automaton
                            .each_match(&value, |pattern, start, end| walked.push((pattern.as_usize(), start, end)));
                        assert_eq!(walked, expected, "{:?}", String::from_utf8_lossy(&value));
                    }
                }
            }
        }
        assert!(kinds.len() >= 2, "the shipped sets are built as more than one kind");
    }

    #[test]
    fn a_bad_regex_is_reported_as_regex_new_reports_it() {
        let cases = [
            "(unclosed",
            "a{2,1}",
            r"\p{NoSuchClass}",
            "union|select|[",
            "x{1000}{1000}",
            "(?i:[a-z]{100}){100}",
            "[[:word:]]{500}{50}",
            "ok",
            "a|b|c",
        ];
        for (index, pattern) in cases.iter().enumerate() {
            let expected = Regex::new(pattern).err().map(|e| crate::routes::regex_problem(&e));
            let text = format!("[[rule]]\nid = \"r{index}\"\nfield = \"query\"\nregex = '''{pattern}'''\nscore = 1\n");
            let file: RuleFile = toml::from_str(&text).unwrap();
            let inputs: Vec<RuleInput<'_>> =
                file.rules.iter().map(|spanned| RuleInput { spec: spanned.get_ref(), shadow: false }).collect();
            let found = CompiledSet::compile(&inputs).err().map(|problems| problems[0].1.clone());
            assert_eq!(found, expected, "{pattern}");
            // Syntax errors, and one the NFA's size limit finds.
            assert_eq!(found.is_some(), index < 4 || *pattern == "x{1000}{1000}", "{pattern}: {found:?}");
        }
    }

    #[test]
    fn anchors_are_the_prefixes_every_match_starts_with() {
        let anchors = |patterns: &[&str]| {
            regex_anchors(patterns.iter().copied()).map(|found| {
                found.iter().map(|anchor| String::from_utf8_lossy(anchor).into_owned()).collect::<Vec<_>>()
            })
        };
        assert_eq!(anchors(&["a|b", "x*y"]), Some(vec!["a".into(), "b".into(), "x".into(), "y".into()]));
        assert_eq!(anchors(&[r"(?i:\bUnion\s+select)"]), Some(vec!["union".into()]));
        // Unicode case folding: `s` also matches the long s.
        assert_eq!(anchors(&["(?i:s)"]), Some(vec!["s".into(), "ſ".into()]));
        for ungated in [&["."][..], &["[a-z]+"], &["^"], &["a", "b*"], &[]] {
            assert_eq!(anchors(ungated), None, "{ungated:?}");
        }
    }
}
