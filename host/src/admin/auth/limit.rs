//! The login rate limit: at most [`MAX_FAILURES`] failed attempts per
//! client address in [`WINDOW`], attempts still being checked counted too.
//! IPv6 clients are counted by their /64 network (one host usually has a
//! whole one). The map is bounded: when full, clients with nothing to hold
//! against them go first, then the one whose last failure is oldest.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

/// Failed logins allowed per client address in [`WINDOW`].
pub const MAX_FAILURES: usize = 10;
/// The window failed logins are counted over.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Client addresses remembered at most.
const MAX_CLIENTS: usize = 10_000;

#[derive(Default)]
struct Client {
    /// When recent attempts failed, oldest first (at most [`MAX_FAILURES`]).
    failures: VecDeque<Instant>,
    /// Attempts being checked now.
    pending: usize,
}

impl Client {
    fn forget_before(&mut self, now: Instant) {
        while self
            .failures
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW)
        {
            self.failures.pop_front();
        }
    }
}

/// Failed logins by client address.
pub(super) struct LoginLimiter {
    clients: HashMap<IpAddr, Client>,
    max_clients: usize,
}

/// The address a client's failures are counted under.
pub(super) fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let network = u128::from(v6) & !(u128::from(u64::MAX));
                IpAddr::V6(Ipv6Addr::from(network))
            }
        },
    }
}

impl LoginLimiter {
    pub fn new() -> Self {
        Self::with_capacity(MAX_CLIENTS)
    }

    fn with_capacity(max_clients: usize) -> Self {
        LoginLimiter {
            clients: HashMap::new(),
            max_clients: max_clients.max(1),
        }
    }

    /// Lets one more attempt from `key` be checked, or says how long until
    /// the client may try again.
    pub fn begin(&mut self, key: IpAddr, now: Instant) -> Result<(), Duration> {
        if !self.clients.contains_key(&key) {
            self.make_room(now);
        }
        let client = self.clients.entry(key).or_default();
        client.forget_before(now);
        if client.failures.len() + client.pending >= MAX_FAILURES {
            let wait = client
                .failures
                .front()
                .map(|t| WINDOW.saturating_sub(now.saturating_duration_since(*t)))
                .unwrap_or(Duration::from_secs(1));
            return Err(wait.max(Duration::from_secs(1)));
        }
        client.pending += 1;
        Ok(())
    }

    /// Records how an attempt [`begin`](Self::begin) let through ended.
    pub fn end(&mut self, key: IpAddr, failed: bool, now: Instant) {
        let client = self.clients.entry(key).or_default();
        client.pending = client.pending.saturating_sub(1);
        if failed {
            client.forget_before(now);
            client.failures.push_back(now);
            while client.failures.len() > MAX_FAILURES {
                client.failures.pop_front();
            }
        }
    }

    fn make_room(&mut self, now: Instant) {
        if self.clients.len() < self.max_clients {
            return;
        }
        self.clients.retain(|_, c| {
            c.forget_before(now);
            c.pending > 0 || !c.failures.is_empty()
        });
        while self.clients.len() >= self.max_clients {
            let stalest = self
                .clients
                .iter()
                .filter(|(_, c)| c.pending == 0)
                .min_by_key(|(_, c)| c.failures.back().copied())
                .map(|(k, _)| *k);
            match stalest {
                Some(k) => {
                    self.clients.remove(&k);
                }
                None => break,
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.clients.len()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        client_key(s.parse().unwrap())
    }

    #[test]
    fn ten_failures_a_minute_then_wait() {
        let mut l = LoginLimiter::new();
        let t0 = Instant::now();
        let a = ip("10.0.0.1");
        for i in 0..MAX_FAILURES {
            let at = t0 + Duration::from_secs(i as u64);
            l.begin(a, at).unwrap();
            l.end(a, true, at);
        }
        let wait = l.begin(a, t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        // Another address is not held back.
        l.begin(ip("10.0.0.2"), t0).unwrap();
        // A minute after the first failure, one more attempt is allowed.
        l.begin(a, t0 + Duration::from_secs(60)).unwrap();
        assert!(l.begin(a, t0 + Duration::from_secs(60)).is_err());
    }

    #[test]
    fn attempts_in_flight_count_and_successes_do_not() {
        let mut l = LoginLimiter::new();
        let t0 = Instant::now();
        let a = ip("192.0.2.7");
        for _ in 0..MAX_FAILURES {
            l.begin(a, t0).unwrap();
        }
        assert!(l.begin(a, t0).is_err());
        for _ in 0..MAX_FAILURES {
            l.end(a, false, t0);
        }
        l.begin(a, t0).unwrap();
    }

    #[test]
    fn ipv6_counts_by_network_and_mapped_v4_as_v4() {
        assert_eq!(ip("2001:db8:1:2:aaaa::1"), ip("2001:db8:1:2:bbbb::9"));
        assert_ne!(ip("2001:db8:1:2::1"), ip("2001:db8:1:3::1"));
        assert_eq!(
            ip("::ffff:10.1.2.3"),
            IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))
        );
    }

    #[test]
    fn bounded() {
        let mut l = LoginLimiter::with_capacity(3);
        let t0 = Instant::now();
        for i in 0..3u8 {
            let k = IpAddr::V4(Ipv4Addr::new(10, 0, 0, i));
            l.begin(k, t0 + Duration::from_secs(u64::from(i))).unwrap();
            l.end(k, true, t0 + Duration::from_secs(u64::from(i)));
        }
        let newcomer = IpAddr::V4(Ipv4Addr::new(10, 0, 1, 0));
        l.begin(newcomer, t0 + Duration::from_secs(5)).unwrap();
        assert_eq!(l.len(), 3);
        // The client whose last failure was oldest was forgotten.
        assert!(
            !l.clients
                .contains_key(&IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)))
        );
    }
}
