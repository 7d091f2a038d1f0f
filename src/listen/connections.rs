//! Counting client connections, per client address and in all, so that
//! one address cannot pile up sockets until the process runs out of file
//! descriptors (about 20,000 silent connections from one address once left
//! every other client unanswered for 25 s), and so that palisade keeps
//! serving near its limit: idle connections are shed from 90 % of it, and
//! at it new connections are answered 503 and closed at once.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The connections open now, and per client address.
#[derive(Debug)]
pub struct ConnectionLimiter {
    open: AtomicUsize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
    /// What `limits.max_connections = 0` means in this process: half the
    /// file-descriptor limit, as each client connection may need an
    /// upstream socket beside it.
    derived_max: usize,
}

/// Why a connection was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its address already holds `limits.max_connections_per_client`.
    ClientFull,
    /// The process holds `limits.max_connections`.
    ServerFull,
}

/// A connection's place in the counts, given back when it is dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    limiter: Arc<ConnectionLimiter>,
    client: Option<IpAddr>,
}

impl ConnectionLimiter {
    /// Raise the soft file-descriptor limit to the hard one (as the Go
    /// runtime does for every server: the soft default of 1024 is a
    /// historical accident, not a budget) and derive the default cap.
    pub fn new() -> Self {
        let fds = raise_fd_limit();
        ConnectionLimiter { open: AtomicUsize::new(0), per_client: Mutex::default(), derived_max: (fds / 2).max(16) }
    }

    /// The cap in force: the configured one, else the derived one.
    pub fn max_connections(&self, configured: usize) -> usize {
        if configured == 0 { self.derived_max } else { configured }
    }

    /// Take a place for a connection from `peer`, unless its address or the
    /// process is full. Trusted proxies carry many clients' connections and
    /// count only towards the total.
    pub fn admit(
        self: &Arc<Self>,
        peer: IpAddr,
        exempt: bool,
        per_client: usize,
        max_total: usize,
    ) -> Result<ConnectionSlot, Refusal> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= max_total {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::ServerFull);
        }
        let client = if exempt {
            None
        } else {
            let key = client_key(peer);
            let mut counts = self.counts();
            let count = counts.entry(key).or_insert(0);
            if *count >= per_client {
                drop(counts);
                self.open.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal::ClientFull);
            }
            *count += 1;
            Some(key)
        };
        Ok(ConnectionSlot { limiter: self.clone(), client })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// At 90 % of the cap: time to shed connections that only sit there.
    pub fn under_pressure(&self, max_total: usize) -> bool {
        self.open() * 10 >= max_total * 9
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // The map is consistent after every operation: a poisoned lock is usable.
        self.per_client.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for ConnectionLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if let Some(client) = self.client {
            let mut counts = self.limiter.counts();
            if let Some(count) = counts.get_mut(&client) {
                *count -= 1;
                // Addresses with nothing open take no memory.
                if *count == 0 {
                    counts.remove(&client);
                }
            }
        }
        self.limiter.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The address a connection counts against: IPv4 as it is, IPv6 by its
/// /64, the block one host (or one attacker) is routinely given.
fn client_key(peer: IpAddr) -> IpAddr {
    match crate::cidr::canonical_ip(peer) {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit and return the limit
/// in force (1024, the usual soft default, when it cannot be read).
fn raise_fd_limit() -> usize {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if let Some(maximum) = limit.maximum
        && maximum > current
        && setrlimit(Resource::Nofile, Rlimit { current: Some(maximum), maximum: Some(maximum) }).is_ok()
    {
        return usize::try_from(maximum).unwrap_or(usize::MAX);
    }
    match limit.current {
        Some(current) => usize::try_from(current).unwrap_or(usize::MAX),
        // Unlimited: the kernel's own cap still applies; take a large, sane number.
        None => 1 << 20,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn one_address_is_capped_others_are_not() {
        let limiter = Arc::new(ConnectionLimiter::new());
        let held: Vec<_> = (0..3).map(|_| limiter.admit(ip("192.0.2.1"), false, 3, 100).unwrap()).collect();
        assert_eq!(limiter.admit(ip("192.0.2.1"), false, 3, 100).unwrap_err(), Refusal::ClientFull);
        assert!(limiter.admit(ip("192.0.2.2"), false, 3, 100).is_ok(), "another address is not affected");
        assert!(limiter.admit(ip("192.0.2.1"), true, 3, 100).is_ok(), "a trusted proxy is exempt");
        drop(held);
        assert!(limiter.admit(ip("192.0.2.1"), false, 3, 100).is_ok(), "closed connections give their place back");
        assert_eq!(limiter.open(), 0);
        assert!(limiter.counts().is_empty(), "no address is remembered once it has nothing open");
    }

    #[test]
    fn the_total_is_capped_and_ipv6_counts_per_64() {
        let limiter = Arc::new(ConnectionLimiter::new());
        let a = limiter.admit(ip("2001:db8:1:2::1"), false, 1, 2).unwrap();
        assert_eq!(limiter.admit(ip("2001:db8:1:2::ffff"), false, 1, 2).unwrap_err(), Refusal::ClientFull);
        let b = limiter.admit(ip("2001:db8:1:3::1"), false, 1, 2).unwrap();
        assert!(limiter.under_pressure(2));
        assert_eq!(limiter.admit(ip("192.0.2.9"), false, 1, 2).unwrap_err(), Refusal::ServerFull);
        drop((a, b));
        assert_eq!(limiter.open(), 0);
    }
}
