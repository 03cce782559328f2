//! Console sessions, in memory: looked up by the SHA-256 of their id (the
//! id itself is never stored), each with its CSRF token and expiry. The
//! store is bounded: when full, expired sessions go first, then the oldest.

use std::collections::HashMap;
use std::time::Instant;

/// One logged-in session.
#[derive(Clone)]
pub(super) struct Session {
    /// The user it belongs to.
    pub user: String,
    /// SHA-256 of the user's password hash at login: a changed password
    /// ends the user's sessions.
    pub credential: [u8; 32],
    /// The token state-changing requests must carry in `X-CSRF-Token`.
    pub csrf: String,
    /// Signed in through the OpenID provider: the user's groups, mapped to
    /// a role by the configuration in force at each request.
    pub sso: Option<Vec<String>>,
    pub created: Instant,
    pub expires: Instant,
}

/// Sessions by the SHA-256 of their id.
pub(super) struct Sessions {
    map: HashMap<[u8; 32], Session>,
    max: usize,
}

impl Sessions {
    pub fn new(max: usize) -> Self {
        Sessions {
            map: HashMap::new(),
            max: max.max(1),
        }
    }

    /// Adds a session, making room first when the store is full.
    pub fn insert(&mut self, key: [u8; 32], session: Session, now: Instant) {
        if self.map.len() >= self.max {
            self.map.retain(|_, s| s.expires > now);
        }
        while self.map.len() >= self.max {
            let oldest = self
                .map
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => {
                    self.map.remove(&k);
                }
                None => break,
            }
        }
        self.map.insert(key, session);
    }

    /// The session under `key` if it has not expired (an expired one is removed).
    pub fn get(&mut self, key: &[u8; 32], now: Instant) -> Option<Session> {
        match self.map.get(key) {
            Some(s) if s.expires > now => Some(s.clone()),
            Some(_) => {
                self.map.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn remove(&mut self, key: &[u8; 32]) {
        self.map.remove(key);
    }

    /// Keeps only the sessions `keep` accepts (after a reload: those of
    /// users still configured with the same password).
    pub fn retain(&mut self, mut keep: impl FnMut(&Session) -> bool) {
        self.map.retain(|_, s| keep(s));
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn session(user: &str, created: Instant, ttl: Duration) -> Session {
        Session {
            user: user.into(),
            credential: [0; 32],
            csrf: "c".into(),
            sso: None,
            created,
            expires: created + ttl,
        }
    }

    #[test]
    fn bounded_expired_first_then_oldest() {
        let t0 = Instant::now();
        let hour = Duration::from_secs(3600);
        let mut s = Sessions::new(3);
        s.insert([1; 32], session("a", t0, hour), t0);
        s.insert([2; 32], session("b", t0 + Duration::from_secs(1), hour), t0);
        s.insert(
            [3; 32],
            session("c", t0 + Duration::from_secs(2), Duration::from_secs(5)),
            t0,
        );
        // Full, nothing expired: the oldest (a) goes.
        s.insert([4; 32], session("d", t0 + Duration::from_secs(3), hour), t0);
        assert_eq!(s.len(), 3);
        assert!(s.get(&[1; 32], t0).is_none());
        // Full, c expired: c goes, b stays although it is older.
        let later = t0 + Duration::from_secs(10);
        s.insert([5; 32], session("e", later, hour), later);
        assert!(s.get(&[2; 32], later).is_some());
        assert!(s.get(&[3; 32], later).is_none());
        assert_eq!(s.len(), 3);
        // Expired sessions are not handed out.
        assert!(s.get(&[4; 32], t0 + 2 * hour).is_none());
        assert_eq!(s.len(), 2);
        s.retain(|x| x.user != "e");
        assert_eq!(s.len(), 1);
    }
}
