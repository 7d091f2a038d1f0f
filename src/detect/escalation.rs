//! The escalation ladder the abuse stages share: a source that fails too
//! often (failed logins, declined payments) is challenged from half its
//! threshold, answered 429 at the threshold, and blocked (and banned) at
//! twice it, refused attempts counting. Written once so that the login
//! and payment routes escalate alike; each stage keeps its own penalties.

use std::sync::Arc;
use std::time::Duration;

use crate::signal::{Action, Signal};

/// How far a signal escalates, in increasing severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    Challenge,
    RateLimit,
    Block,
}

/// The score penalty of each step, per stage.
#[derive(Debug, Clone, Copy)]
pub struct Penalties {
    pub challenge: u8,
    pub rate_limit: u8,
    pub block: u8,
}

impl Step {
    /// The step for `failures` against `threshold` (the caller has checked
    /// that half the threshold is reached): block at twice the threshold,
    /// `refused` attempts counting (a client refused at 429 that keeps
    /// trying climbs on), 429 at the threshold, a challenge below.
    pub fn for_failures(failures: f64, refused: f64, threshold: f64) -> Step {
        if failures + refused >= 2.0 * threshold {
            Step::Block
        } else if failures >= threshold {
            Step::RateLimit
        } else {
            Step::Challenge
        }
    }

    /// The step's signal under `id`: its action, its penalty, and for a 429
    /// a `Retry-After` of a tenth of the counting window (at least 1 s).
    pub fn signal(self, id: &'static str, penalties: Penalties, window_secs: u64) -> Signal {
        let (action, penalty) = match self {
            Step::Challenge => (Action::Challenge, penalties.challenge),
            Step::RateLimit => (Action::RateLimit, penalties.rate_limit),
            Step::Block => (Action::Block, penalties.block),
        };
        let mut signal = Signal::new(Arc::from(id), penalty);
        signal.action = Some(action);
        if action == Action::RateLimit {
            signal.retry_after = Some(Duration::from_secs((window_secs / 10).max(1)));
        }
        signal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ladder_and_its_signals() {
        assert_eq!(Step::for_failures(5.0, 0.0, 10.0), Step::Challenge);
        assert_eq!(Step::for_failures(10.0, 0.0, 10.0), Step::RateLimit);
        assert_eq!(Step::for_failures(10.0, 9.0, 10.0), Step::RateLimit);
        assert_eq!(Step::for_failures(10.0, 10.0, 10.0), Step::Block);
        assert_eq!(Step::for_failures(20.0, 0.0, 10.0), Step::Block);
        let penalties = Penalties { challenge: 1, rate_limit: 2, block: 3 };
        let limited = Step::RateLimit.signal("x.y", penalties, 600);
        assert_eq!(
            (limited.action, limited.penalty, limited.retry_after),
            (Some(Action::RateLimit), 2, Some(Duration::from_secs(60)))
        );
        assert_eq!(Step::RateLimit.signal("x.y", penalties, 5).retry_after, Some(Duration::from_secs(1)));
        let blocked = Step::Block.signal("x.y", penalties, 600);
        assert_eq!((blocked.action, blocked.penalty, blocked.retry_after), (Some(Action::Block), 3, None));
        assert_eq!(&*blocked.id, "x.y");
    }
}
