//! Login throttling and sessions per user.
//!
//! Attacker: a password guesser that reaches the listener. Every login the server refuses
//! counts against the client's address (IPv6 per /64) and against the login name; past
//! [`MAX_FAILURES`] in [`WINDOW`] further logins are refused by the box without asking the
//! server, so the box cannot be used to guess at the server's speed nor to get the box's
//! own address penalised there. A user logged in too often at once (`[imap]
//! max_sessions_per_user`) gets `NO [LIMIT]`: each session costs the box two server
//! connections. Both tables are bounded.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Refused logins counted per address and per login name before further ones are refused.
pub const MAX_FAILURES: u32 = 10;
/// The window of [`MAX_FAILURES`].
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Keys kept at most in each table (the oldest go first).
const MAX_KEYS: usize = 10_000;

/// The key an address is counted under: IPv4 as it is, IPv6 by its /64.
pub fn address_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => {
            let s = a.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// Failures and sessions, shared by all sessions.
pub struct Logins {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
    sessions: Mutex<HashMap<String, usize>>,
    max_per_user: usize,
}

/// A session slot of one user, given back when dropped.
pub struct UserSlot {
    logins: Arc<Logins>,
    user: String,
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        if let Ok(mut m) = self.logins.sessions.lock()
            && let Some(n) = m.get_mut(&self.user)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.user);
            }
        }
    }
}

impl Logins {
    /// Tables allowing `max_per_user` sessions per login name.
    pub fn new(max_per_user: usize) -> Arc<Logins> {
        Arc::new(Logins {
            failures: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            max_per_user,
        })
    }

    fn count(&self, key: &str, now: Instant) -> u32 {
        let Ok(m) = self.failures.lock() else {
            return MAX_FAILURES;
        };
        match m.get(key) {
            Some((n, since)) if now.duration_since(*since) < WINDOW => *n,
            _ => 0,
        }
    }

    /// Whether a login from `ip` (and as `user`, when known) is refused now.
    pub fn throttled(&self, ip: IpAddr, user: Option<&str>) -> bool {
        let now = Instant::now();
        self.count(&format!("a:{}", address_key(ip)), now) >= MAX_FAILURES
            || user.is_some_and(|u| {
                self.count(&format!("u:{}", u.trim().to_lowercase()), now) >= MAX_FAILURES
            })
    }

    /// Counts a login the server refused.
    pub fn failed(&self, ip: IpAddr, user: Option<&str>) {
        let now = Instant::now();
        let Ok(mut m) = self.failures.lock() else {
            return;
        };
        if m.len() >= MAX_KEYS {
            m.retain(|_, (_, since)| now.duration_since(*since) < WINDOW);
            if m.len() >= MAX_KEYS
                && let Some(oldest) = m
                    .iter()
                    .min_by_key(|(_, (_, s))| *s)
                    .map(|(k, _)| k.clone())
            {
                m.remove(&oldest);
            }
        }
        let mut keys = vec![format!("a:{}", address_key(ip))];
        if let Some(u) = user {
            keys.push(format!("u:{}", u.trim().to_lowercase()));
        }
        for k in keys {
            let e = m.entry(k).or_insert((0, now));
            if now.duration_since(e.1) >= WINDOW {
                *e = (0, now);
            }
            e.0 += 1;
        }
    }

    /// A session slot for `user`; `None` when the user has the most sessions allowed.
    pub fn take_user(self: &Arc<Self>, user: &str) -> Option<UserSlot> {
        let user = user.trim().to_lowercase();
        let mut m = self.sessions.lock().ok()?;
        let n = m.entry(user.clone()).or_insert(0);
        if *n >= self.max_per_user {
            return None;
        }
        *n += 1;
        Some(UserSlot {
            logins: self.clone(),
            user,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_throttle_the_address_and_the_user() {
        let l = Logins::new(2);
        let a: IpAddr = "192.0.2.7".parse().expect("ip");
        let b: IpAddr = "192.0.2.8".parse().expect("ip");
        for _ in 0..MAX_FAILURES {
            assert!(!l.throttled(a, Some("alice@x")));
            l.failed(a, Some("alice@x"));
        }
        assert!(l.throttled(a, Some("bob@x")));
        // Another address, the same user (case-insensitive): throttled too.
        assert!(l.throttled(b, Some("Alice@X")));
        assert!(!l.throttled(b, Some("bob@x")));
        // IPv6 counts per /64.
        let v6a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let v6b: IpAddr = "2001:db8:1:2::ffff".parse().expect("ip");
        for _ in 0..MAX_FAILURES {
            l.failed(v6a, None);
        }
        assert!(l.throttled(v6b, None));
    }

    #[test]
    fn sessions_per_user_are_bounded_and_given_back() {
        let l = Logins::new(2);
        let s1 = l.take_user("alice@x").expect("1");
        let _s2 = l.take_user("ALICE@x").expect("2");
        assert!(l.take_user("alice@x").is_none());
        assert!(l.take_user("bob@x").is_some());
        drop(s1);
        assert!(l.take_user("alice@x").is_some());
    }
}
