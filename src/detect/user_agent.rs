//! User-agent rules: attack tools named in `User-Agent`, and requests with
//! no user agent at all.
//!
//! All literals of all rules compile into one case-insensitive
//! aho-corasick automaton, so matching costs one pass over the user agent
//! however many rules there are. (The signature engine generalises this to
//! every request field.)

use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use super::Detector;
use crate::config::{Config, Invalid, RuleMode};
use crate::signal::{Action, Evidence, Signal};
use crate::store::CounterReadings;
use crate::view::RequestView;

#[derive(Debug)]
struct Rule {
    id: Arc<str>,
    penalty: u8,
    action: Option<Action>,
    shadow: bool,
    on_empty: bool,
}

#[derive(Debug)]
pub struct UserAgentRules {
    rules: Vec<Rule>,
    literals: AhoCorasick,
    /// For each literal, the rule it belongs to, and the literal's text.
    literal_owner: Vec<(usize, Arc<str>)>,
}

impl UserAgentRules {
    pub fn from_config(config: &Config) -> Result<Self, Vec<Invalid>> {
        let mut problems = Vec::new();
        let mut rules = Vec::new();
        let mut literals = Vec::new();
        let mut literal_owner = Vec::new();
        let mut seen_ids = std::collections::HashSet::new();
        for (index, rule) in config.user_agent_rules.iter().enumerate() {
            let key = |field: &str| format!("user_agent_rule[{index}].{field}");
            let id = rule.id.get_ref();
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
                problems.push(Invalid::new(
                    rule.id.span(),
                    key("id"),
                    "an id is made of letters, digits, '.', '_' and '-'",
                ));
            }
            if !seen_ids.insert(id.clone()) {
                problems.push(Invalid::new(rule.id.span(), key("id"), format!("duplicate rule id {id:?}")));
            }
            let action = match &rule.action {
                None => None,
                Some(text) => match Action::parse(text.get_ref()) {
                    Some(action @ (Action::Log | Action::Challenge | Action::Block)) => Some(action),
                    _ => {
                        problems.push(Invalid::new(
                            text.span(),
                            key("action"),
                            format!("unknown action {:?}; use log, challenge or block", text.get_ref()),
                        ));
                        None
                    }
                },
            };
            if rule.contains.is_empty() && !rule.empty {
                problems.push(Invalid::new(
                    rule.id.span(),
                    key("contains"),
                    "the rule matches nothing: give `contains` or `empty = true`",
                ));
            }
            for literal in &rule.contains {
                if literal.is_empty() {
                    problems.push(Invalid::new(
                        rule.id.span(),
                        key("contains"),
                        "empty literal would match every request",
                    ));
                    continue;
                }
                literals.push(literal.clone());
                literal_owner.push((index, Arc::from(literal.as_str())));
            }
            rules.push(Rule {
                id: Arc::from(id.as_str()),
                penalty: rule.score.min(98),
                action,
                shadow: rule.mode == RuleMode::Shadow,
                on_empty: rule.empty,
            });
        }
        let automaton = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(&literals)
            .map_err(|error| vec![Invalid::new(0..0, "user_agent_rule", format!("cannot compile literals: {error}"))]);
        let literals = match automaton {
            Ok(automaton) => automaton,
            Err(mut errs) => {
                problems.append(&mut errs);
                return Err(problems);
            }
        };
        if problems.is_empty() { Ok(UserAgentRules { rules, literals, literal_owner }) } else { Err(problems) }
    }

    fn signal(&self, rule: &Rule, evidence: Evidence) -> Signal {
        let mut signal = Signal::new(rule.id.clone(), rule.penalty);
        signal.action = rule.action;
        signal.shadow = rule.shadow;
        signal.evidence.push(evidence);
        signal
    }

    /// Signals for a `User-Agent` value (`None` when the header is absent).
    fn match_user_agent(&self, raw: Option<&[u8]>, signals: &mut Vec<Signal>) {
        let user_agent = raw.unwrap_or_default().trim_ascii();
        if user_agent.is_empty() {
            let missing = if raw.is_none() { "absent" } else { "blank" };
            for rule in self.rules.iter().filter(|rule| rule.on_empty) {
                signals.push(self.signal(rule, Evidence::text("user_agent", missing)));
            }
            return;
        }
        // One signal per rule, naming the first literal that matched it.
        let mut fired: Vec<usize> = Vec::new();
        for found in self.literals.find_overlapping_iter(user_agent) {
            let (rule_index, literal) = &self.literal_owner[found.pattern().as_usize()];
            if fired.contains(rule_index) {
                continue;
            }
            fired.push(*rule_index);
            signals.push(self.signal(&self.rules[*rule_index], Evidence::text("matched", literal.clone())));
        }
    }
}

impl Detector for UserAgentRules {
    fn name(&self) -> &'static str {
        "user_agent"
    }

    fn detect(&self, view: &RequestView<'_>, _readings: &CounterReadings, signals: &mut Vec<Signal>) {
        // The raw bytes, not `view.user_agent`: that is `None` for any value
        // with a byte outside ASCII (legal obs-text, and what phones with
        // UTF-8 device names send), which would read as "no user agent" and
        // let `sqlmap/1.7 (caf\xe9)` past the attack-tool rule.
        let raw = view.headers.get(http::header::USER_AGENT).map(|value| value.as_bytes());
        self.match_user_agent(raw, signals);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::view_for;

    fn ids(ua: Option<&str>) -> Vec<String> {
        let rules = UserAgentRules::from_config(&Config::default()).unwrap();
        let mut signals = Vec::new();
        view_for("GET", "/", ua, |view| rules.detect(view, &CounterReadings::default(), &mut signals));
        signals.iter().map(|s| s.id.to_string()).collect()
    }

    #[test]
    fn attack_tools_and_empty_agents_are_flagged() {
        assert_eq!(ids(Some("sqlmap/1.7.2#stable (https://sqlmap.org)")), ["ua.attack_tool"]);
        assert_eq!(ids(Some("Mozilla/5.0 (Hydra)")), ["ua.attack_tool"]);
        assert_eq!(ids(None), ["ua.empty"]);
        assert_eq!(ids(Some("  ")), ["ua.empty"]);
    }

    #[test]
    fn user_agents_outside_ascii_are_matched_on_their_bytes() {
        let rules = UserAgentRules::from_config(&Config::default()).unwrap();
        let ids = |raw: &[u8]| {
            let mut signals = Vec::new();
            rules.match_user_agent(Some(raw), &mut signals);
            signals.iter().map(|s| s.id.to_string()).collect::<Vec<_>>()
        };
        assert_eq!(ids(b"sqlmap/1.7.2 (caf\xe9)"), ["ua.attack_tool"]);
        assert!(ids("Mozilla/5.0 (Linux; Android 12; HUAWEI 畅享 50) Chrome/156.0".as_bytes()).is_empty());
        assert_eq!(ids(b" \t "), ["ua.empty"]);
    }

    #[test]
    fn browsers_and_app_libraries_are_not_flagged() {
        assert!(
            ids(Some(
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36"
            ))
            .is_empty()
        );
        assert!(ids(Some("okhttp/4.12.0")).is_empty());
        assert!(ids(Some("curl/7.88.1")).is_empty());
    }
}
