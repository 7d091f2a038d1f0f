//! What stages share about one request across its hooks: the per-request
//! context, the decision as stages see it, and the upstream's answer.

use std::any::{Any, TypeId};

use crate::decide::Verdict;
use crate::identify::Identity;
use crate::outcome::{LoginOutcome, ResponseFacts};
use crate::signal::Signal;

/// State a request carries from one stage hook to the next (plan →
/// detect → after decision → observe), like pingora's per-request `CTX`.
///
/// Each stage keeps its own state under its own type (the credential
/// stage its login attempt), so this module needs to know none of them
/// and stages stay independent of each other.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// Who the identify step says sent the request (set before any stage runs).
    pub identity: Identity,
    /// When the request arrived, on the pipeline's clock (set before any
    /// stage runs; 0 when a caller runs stages on their own).
    pub at: crate::clock::Nanos,
    state: StageStates,
}

impl RequestContext {
    pub fn new(identity: Identity) -> Self {
        RequestContext { identity, at: 0, state: StageStates::default() }
    }

    /// The same, arrived at `at`.
    pub fn with_time(mut self, at: crate::clock::Nanos) -> Self {
        self.at = at;
        self
    }

    /// Keep a stage's state for this request (replacing one of the same type).
    pub fn insert<T: Clone + Send + Sync + 'static>(&mut self, value: T) {
        self.state.insert(value);
    }

    /// A stage's state, when it kept one.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.state.get::<T>()
    }

    pub fn get_mut<T: Send + Sync + 'static>(&mut self) -> Option<&mut T> {
        self.state.get_mut::<T>()
    }

    pub fn is_partner(&self) -> bool {
        matches!(self.identity, Identity::Partner { .. })
    }
}

// === impl StageStates ===

/// The stages' states of one request, one per type: a short list searched
/// in order. A request has a handful at most (rate key, login attempt,
/// session facts), so this costs one allocation per state and one for the
/// list, where `http::Extensions` also hashed and grew a map. Not inline:
/// the context moves with its decision several times per request, and a
/// bigger one cost more in copies than the allocation it saved.
#[derive(Default)]
struct StageStates {
    slots: Vec<(TypeId, Box<dyn StageState>)>,
}

/// A stage's state as kept: any cloneable value, seen as `Any` to get it back.
trait StageState: Any + Send + Sync {
    fn clone_box(&self) -> Box<dyn StageState>;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Clone + Send + Sync + 'static> StageState for T {
    fn clone_box(&self) -> Box<dyn StageState> {
        Box::new(self.clone())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl StageStates {
    fn insert<T: Clone + Send + Sync + 'static>(&mut self, value: T) {
        let id = TypeId::of::<T>();
        let value: Box<dyn StageState> = Box::new(value);
        match self.slots.iter_mut().find(|(kept, _)| *kept == id) {
            Some((_, slot)) => *slot = value,
            None => {
                if self.slots.capacity() == 0 {
                    self.slots.reserve_exact(4);
                }
                self.slots.push((id, value))
            }
        }
    }

    fn get<T: 'static>(&self) -> Option<&T> {
        let id = TypeId::of::<T>();
        self.slots.iter().find(|(kept, _)| *kept == id).and_then(|(_, value)| (**value).as_any().downcast_ref())
    }

    fn get_mut<T: 'static>(&mut self) -> Option<&mut T> {
        let id = TypeId::of::<T>();
        self.slots.iter_mut().find(|(kept, _)| *kept == id).and_then(|(_, value)| (**value).as_any_mut().downcast_mut())
    }
}

impl Clone for StageStates {
    fn clone(&self) -> Self {
        StageStates { slots: self.slots.iter().map(|(id, value)| (*id, (**value).clone_box())).collect() }
    }
}

impl std::fmt::Debug for StageStates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageStates").field("count", &self.slots.len()).finish()
    }
}

/// A valid session or clearance cookie vouches for the client: set by the
/// session stage, read by stages that judge scopes many clients share (a
/// subnet, a fingerprint), which then leave the request to the cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vouched;

/// The decision, as the after-decision hook sees it.
#[derive(Debug, Clone, Copy)]
pub struct Decided<'a> {
    pub verdict: &'a Verdict,
    pub signals: &'a [Signal],
    /// The request is refused for something the client did (not only
    /// because the shared store is down on a fail-closed route).
    pub refused: bool,
}

/// The upstream's answer, as the observe hook sees it.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    pub response: &'a ResponseFacts<'a>,
    /// On login routes: the outcome the route's login settings read from it.
    pub login: Option<LoginOutcome>,
    /// The login's username, when it was learned only with the outcome (a
    /// sidecar behind nginx cannot see the login body; the application
    /// reports it).
    pub username: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct First(u32);
    #[derive(Debug, Clone, PartialEq)]
    struct Second(String);

    #[test]
    fn each_type_keeps_one_state_that_clones_with_the_context() {
        let mut context = RequestContext::new(Identity::Anonymous);
        assert_eq!(context.get::<First>(), None);
        context.insert(First(1));
        context.insert(Second("a".into()));
        context.insert(First(2));
        assert_eq!(context.get::<First>(), Some(&First(2)));
        if let Some(second) = context.get_mut::<Second>() {
            second.0.push('b');
        }
        for (n, state) in (0u8..6).enumerate() {
            context.insert((n, state));
        }
        let copy = context.clone();
        context.insert(First(3));
        assert_eq!(copy.get::<First>(), Some(&First(2)));
        assert_eq!(copy.get::<Second>(), Some(&Second("ab".into())));
        assert_eq!(copy.get::<(usize, u8)>(), Some(&(5, 5)));
        assert_eq!(context.get::<First>(), Some(&First(3)));
        assert_eq!(context.get::<u64>(), None);
    }
}
