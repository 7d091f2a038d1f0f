//! Allowed logins waiting for their outcome, in sidecar mode.
//!
//! A sidecar decides before the application has answered, so a login's
//! outcome arrives later, in a report keyed by palisade's request id. The
//! decided exchange waits here until then — bounded in count and in time,
//! so that an application that never reports cannot grow it: the oldest
//! waiting exchange is given up first, and given-up exchanges are still
//! logged (without an outcome).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::lifecycle::Exchange;
use crate::request_id::RequestId;

#[derive(Debug)]
pub struct PendingOutcomes {
    waiting: HashMap<u64, Exchange>,
    /// Request ids in arrival order with their deadlines (ids already
    /// reported are skipped when they come up).
    order: VecDeque<(Instant, u64)>,
    wait: Duration,
    capacity: usize,
}

impl PendingOutcomes {
    pub fn new(wait: Duration, capacity: usize) -> Self {
        PendingOutcomes { waiting: HashMap::new(), order: VecDeque::new(), wait, capacity: capacity.max(1) }
    }

    /// Keep `exchange` until its outcome is reported; returns the exchanges
    /// given up to make room or because their time is over.
    pub fn insert(&mut self, id: RequestId, exchange: Exchange, now: Instant) -> Vec<Exchange> {
        let mut given_up = self.expire(now);
        while self.waiting.len() >= self.capacity {
            match self.order.pop_front() {
                Some((_, oldest)) => given_up.extend(self.waiting.remove(&oldest)),
                None => break,
            }
        }
        self.order.push_back((now + self.wait, id.0));
        self.waiting.insert(id.0, exchange);
        given_up
    }

    /// The exchange a report names, if it is still waiting.
    pub fn take(&mut self, id: RequestId) -> Option<Exchange> {
        self.waiting.remove(&id.0)
    }

    /// Exchanges whose time is over.
    pub fn expire(&mut self, now: Instant) -> Vec<Exchange> {
        let mut expired = Vec::new();
        while let Some(&(deadline, id)) = self.order.front() {
            if deadline > now && self.order.len() <= self.capacity.saturating_mul(2) {
                break;
            }
            self.order.pop_front();
            expired.extend(self.waiting.remove(&id));
        }
        expired
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}
