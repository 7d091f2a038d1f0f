//! The decide stage: the one place where signals become a score and an
//! action.
//!
//! The score starts at `base_score` and each enforced signal takes its
//! penalty off, clamped to 1 (certainly automated) ..= 99 (certainly
//! human). The action is the most severe of what the score thresholds say
//! and what signals demand directly. Shadow signals and monitor-mode routes
//! are scored separately: they produce the "would have" outcome, and the
//! request is logged instead.

use std::time::Duration;

use crate::config::{DecisionConfig, Invalid, RouteMode};
use crate::signal::{Action, Signal};

#[derive(Debug, Clone)]
pub struct Decider {
    base_score: u8,
    log_at: u8,
    challenge_at: u8,
    block_at: u8,
}

/// Score and action of one set of signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub score: u8,
    pub action: Action,
    pub retry_after: Option<Duration>,
}

/// What the decide stage concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// What is carried out.
    pub enforced: Outcome,
    /// What would have been carried out without shadow rules and monitor
    /// mode, when that differs.
    pub would: Option<Outcome>,
}

impl Decider {
    pub fn from_config(config: &DecisionConfig) -> Result<Self, Vec<Invalid>> {
        let ordered = config.block_at_or_below <= config.challenge_at_or_below
            && config.challenge_at_or_below <= config.log_at_or_below
            && config.log_at_or_below < config.base_score
            && config.base_score <= 99
            && config.block_at_or_below >= 1;
        if !ordered {
            return Err(vec![Invalid::new(
                0..0,
                "decision",
                "thresholds must satisfy 1 <= block_at_or_below <= challenge_at_or_below <= log_at_or_below < base_score <= 99",
            )]);
        }
        Ok(Decider {
            base_score: config.base_score,
            log_at: config.log_at_or_below,
            challenge_at: config.challenge_at_or_below,
            block_at: config.block_at_or_below,
        })
    }

    /// A score for requests detectors are not run on (partners).
    pub fn trusted_score(&self) -> u8 {
        99
    }

    pub fn decide(&self, signals: &[Signal], mode: RouteMode) -> Verdict {
        let all = self.outcome(signals.iter());
        let enforced = match mode {
            RouteMode::Monitor => self.outcome(std::iter::empty()),
            RouteMode::Enforce => self.outcome(signals.iter().filter(|s| !s.shadow)),
        };
        if all == enforced {
            return Verdict { enforced, would: None };
        }
        // Something was held back: make sure the request is at least logged.
        let logged = Outcome { action: enforced.action.max(Action::Log), ..enforced };
        Verdict { enforced: logged, would: Some(all) }
    }

    fn outcome<'a>(&self, signals: impl Iterator<Item = &'a Signal>) -> Outcome {
        let mut penalty: u32 = 0;
        let mut demanded = Action::Allow;
        let mut retry_after: Option<Duration> = None;
        for signal in signals {
            penalty += u32::from(signal.penalty);
            if let Some(action) = signal.action {
                demanded = demanded.max(action);
            }
            if let Some(wait) = signal.retry_after {
                retry_after = Some(retry_after.map_or(wait, |w| w.max(wait)));
            }
        }
        let score = (i64::from(self.base_score) - i64::from(penalty)).clamp(1, 99) as u8;
        let by_score = if score <= self.block_at {
            Action::Block
        } else if score <= self.challenge_at {
            Action::Challenge
        } else if score <= self.log_at {
            Action::Log
        } else {
            Action::Allow
        };
        let action = by_score.max(demanded);
        Outcome { score, action, retry_after: (action == Action::RateLimit).then_some(retry_after).flatten() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn decider() -> Decider {
        Decider::from_config(&DecisionConfig::default()).unwrap()
    }

    fn signal(penalty: u8, action: Option<Action>, shadow: bool) -> Signal {
        let mut s = Signal::new(Arc::from("t"), penalty);
        s.action = action;
        s.shadow = shadow;
        s
    }

    #[test]
    fn no_signals_allow_at_base_score() {
        let verdict = decider().decide(&[], RouteMode::Enforce);
        assert_eq!(verdict.enforced, Outcome { score: 80, action: Action::Allow, retry_after: None });
        assert_eq!(verdict.would, None);
    }

    #[test]
    fn penalties_add_up_through_the_thresholds() {
        let d = decider();
        assert_eq!(d.decide(&[signal(30, None, false)], RouteMode::Enforce).enforced.action, Action::Log);
        assert_eq!(
            d.decide(&[signal(30, None, false), signal(20, None, false)], RouteMode::Enforce).enforced.action,
            Action::Challenge
        );
        let blocked = d.decide(&[signal(79, None, false), signal(50, None, false)], RouteMode::Enforce).enforced;
        assert_eq!((blocked.score, blocked.action), (1, Action::Block));
    }

    #[test]
    fn shadow_and_monitor_log_what_would_have_happened() {
        let d = decider();
        let shadow = d.decide(&[signal(79, Some(Action::Block), true)], RouteMode::Enforce);
        assert_eq!(shadow.enforced.action, Action::Log);
        assert_eq!(shadow.enforced.score, 80);
        assert_eq!(shadow.would.unwrap().action, Action::Block);
        let monitored = d.decide(&[signal(79, Some(Action::Block), false)], RouteMode::Monitor);
        assert_eq!(monitored.enforced.action, Action::Log);
        assert_eq!(monitored.would.unwrap().action, Action::Block);
    }

    #[test]
    fn bad_threshold_order_is_rejected() {
        let config = DecisionConfig { block_at_or_below: 60, ..DecisionConfig::default() };
        assert!(Decider::from_config(&config).is_err());
    }
}
