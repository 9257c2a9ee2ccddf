//! Browser sessions of the admin API and the login lockout, both in memory and bounded.
//!
//! A session is a random 256-bit id in a `Secure; HttpOnly; SameSite=Strict` cookie (the map
//! holds only its SHA-256) with a random CSRF token that every state-changing call must send
//! in `X-CSRF-Token`. It ends after [`IDLE_TIMEOUT`] without a call, after
//! [`ABSOLUTE_TIMEOUT`] whatever happens, at logout, when its account is deleted, and when the
//! daemon restarts.
//!
//! Lockout: failed logins are counted per (account, source address) and per source address;
//! an account is locked only *for the address that failed*, so an attacker on the LAN cannot
//! lock the administrator out from another address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sealgate_vault::Role;

use crate::identity::{hex, random, sha256};

/// A session ends after this long without a call.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// A session ends this long after login, whatever happens.
pub const ABSOLUTE_TIMEOUT: Duration = Duration::from_secs(8 * 60 * 60);
/// Sessions held at most (the oldest goes first beyond it).
pub const MAX_SESSIONS: usize = 256;
/// The session cookie's name.
pub const COOKIE: &str = "sealgate_admin";

/// Failed logins of one account from one address before that pair is locked.
pub const MAX_ACCOUNT_FAILURES: u32 = 5;
/// Failed logins (or setup claims) from one address before the address is locked.
pub const MAX_ADDRESS_FAILURES: u32 = 20;
/// How long failures are counted (and a lock lasts).
pub const LOCKOUT_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Counters kept at most.
const MAX_COUNTERS: usize = 16_384;

/// One logged-in administrator.
#[derive(Clone)]
pub struct Session {
    /// The account.
    pub username: String,
    /// Its role at login (re-read from the vault on every call).
    pub role: Role,
    /// The CSRF token.
    pub csrf: String,
    created: Instant,
    last_seen: Instant,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("username", &self.username)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// The live sessions, by SHA-256 of their id.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Starts a session: (cookie id, CSRF token).
    pub fn create(&self, username: &str, role: Role) -> anyhow::Result<(String, String)> {
        let id = hex(&random(32)?);
        let csrf = hex(&random(32)?);
        let now = Instant::now();
        let mut map = self
            .map
            .lock()
            .map_err(|_| anyhow::anyhow!("session table poisoned"))?;
        map.retain(|_, s| alive(s, now));
        while map.len() >= MAX_SESSIONS {
            let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            map.remove(&oldest);
        }
        map.insert(
            hex(&sha256(id.as_bytes())),
            Session {
                username: username.to_string(),
                role,
                csrf: csrf.clone(),
                created: now,
                last_seen: now,
            },
        );
        Ok((id, csrf))
    }

    /// The session of cookie `id`, if alive (its idle clock restarts).
    pub fn touch(&self, id: &str) -> Option<Session> {
        let key = hex(&sha256(id.as_bytes()));
        let now = Instant::now();
        let mut map = self.map.lock().ok()?;
        match map.get_mut(&key) {
            Some(s) if alive(s, now) => {
                s.last_seen = now;
                Some(s.clone())
            }
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends the session of cookie `id`.
    pub fn end(&self, id: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(&hex(&sha256(id.as_bytes())));
        }
    }

    /// Ends every session of `username` (account deleted).
    pub fn end_all(&self, username: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.retain(|_, s| s.username != username);
        }
    }

    /// Ends every session of `username` but the one of cookie `keep` (password changed).
    pub fn end_others(&self, username: &str, keep: &str) {
        let keep = hex(&sha256(keep.as_bytes()));
        if let Ok(mut map) = self.map.lock() {
            map.retain(|k, s| s.username != username || *k == keep);
        }
    }

    /// Ends every session (reset of admin access).
    pub fn end_everyone(&self) {
        if let Ok(mut map) = self.map.lock() {
            map.clear();
        }
    }

    /// Sessions held now.
    pub fn count(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// The live sessions, oldest first, each named by its handle (see [`handle`]).
    pub fn list(&self) -> Vec<SessionInfo> {
        let now = Instant::now();
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let ago = |t: Instant| wall.saturating_sub(now.duration_since(t).as_secs());
        let Ok(map) = self.map.lock() else {
            return Vec::new();
        };
        let mut out: Vec<(Instant, SessionInfo)> = map
            .iter()
            .filter(|(_, s)| alive(s, now))
            .map(|(k, s)| {
                (
                    s.created,
                    SessionInfo {
                        id: k[..HANDLE_HEX].to_string(),
                        username: s.username.clone(),
                        role: s.role,
                        created: ago(s.created),
                        last_seen: ago(s.last_seen),
                    },
                )
            })
            .collect();
        out.sort_by_key(|(c, _)| *c);
        out.into_iter().map(|(_, i)| i).collect()
    }

    /// Ends the session whose handle is `handle`; its account, if there was one.
    pub fn end_handle(&self, handle: &str) -> Option<String> {
        if handle.len() != HANDLE_HEX {
            return None;
        }
        let mut map = self.map.lock().ok()?;
        let key = map.keys().find(|k| k[..HANDLE_HEX] == *handle)?.clone();
        map.remove(&key).map(|s| s.username)
    }

    /// The account of the session named `handle`, if alive.
    pub fn owner(&self, handle: &str) -> Option<String> {
        let now = Instant::now();
        let map = self.map.lock().ok()?;
        map.iter()
            .find(|(k, s)| {
                handle.len() == HANDLE_HEX && k[..HANDLE_HEX] == *handle && alive(s, now)
            })
            .map(|(_, s)| s.username.clone())
    }
}

/// Hex digits of a session's handle: the first half of the SHA-256 of its cookie id (the
/// cookie cannot be had from it; the map holds only the hash anyway).
pub const HANDLE_HEX: usize = 32;

/// The handle of the session of cookie `id`.
pub fn handle(id: &str) -> String {
    hex(&sha256(id.as_bytes()))[..HANDLE_HEX].to_string()
}

/// A session as `GET /sessions` shows it (never its cookie or CSRF token).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionInfo {
    /// The handle `DELETE /sessions/{id}` takes.
    pub id: String,
    /// The account.
    pub username: String,
    /// Its role at login.
    pub role: Role,
    /// Login (Unix seconds).
    pub created: u64,
    /// Last call (Unix seconds).
    pub last_seen: u64,
}

fn alive(s: &Session, now: Instant) -> bool {
    now.duration_since(s.last_seen) < IDLE_TIMEOUT
        && now.duration_since(s.created) < ABSOLUTE_TIMEOUT
}

/// The key an address is counted under: IPv6 by its /64, mapped IPv4 as IPv4.
fn address_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let mut o = v6.octets();
                o[8..].fill(0);
                format!("{}/64", std::net::Ipv6Addr::from(o))
            }
        },
    }
}

/// Failed logins per (account, address) and per address, in fixed windows, bounded.
#[derive(Default)]
pub struct Lockout {
    counts: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Lockout {
    fn keys(ip: IpAddr, account: Option<&str>) -> (String, Option<String>) {
        let a = address_key(ip);
        let pair = account.map(|u| format!("{u}\n{a}"));
        (format!("addr\n{a}"), pair)
    }

    /// Seconds until `account` may try again from `ip`, if locked (the address as a whole,
    /// or this account from it).
    pub fn locked(&self, ip: IpAddr, account: Option<&str>) -> Option<u64> {
        let (addr, pair) = Lockout::keys(ip, account);
        let map = self.counts.lock().ok()?;
        let left = |key: &str, max: u32| {
            let (n, start) = map.get(key)?;
            let left = LOCKOUT_WINDOW.checked_sub(start.elapsed())?;
            (*n >= max).then(|| left.as_secs().max(1))
        };
        left(&addr, MAX_ADDRESS_FAILURES)
            .or_else(|| pair.as_deref().and_then(|p| left(p, MAX_ACCOUNT_FAILURES)))
    }

    /// Counts one failure of `account` (if named) from `ip`.
    pub fn fail(&self, ip: IpAddr, account: Option<&str>) {
        let (addr, pair) = Lockout::keys(ip, account);
        let Ok(mut map) = self.counts.lock() else {
            return;
        };
        if map.len() + 2 > MAX_COUNTERS {
            map.retain(|_, (_, start)| start.elapsed() < LOCKOUT_WINDOW);
        }
        // Still full: forget the oldest windows (each failure costs a password hash, so the
        // scan is cheap beside it).
        while map.len() + 2 > MAX_COUNTERS {
            let Some(oldest) = map
                .iter()
                .min_by_key(|(_, (_, s))| *s)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            map.remove(&oldest);
        }
        for key in std::iter::once(addr).chain(pair) {
            let e = map.entry(key).or_insert((0, Instant::now()));
            if e.1.elapsed() >= LOCKOUT_WINDOW {
                *e = (0, Instant::now());
            }
            e.0 = e.0.saturating_add(1);
        }
    }

    /// A successful login clears its (account, address) counter.
    pub fn succeed(&self, ip: IpAddr, account: &str) {
        let (_, pair) = Lockout::keys(ip, Some(account));
        if let (Ok(mut map), Some(p)) = (self.counts.lock(), pair) {
            map.remove(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_found_by_id_and_end() {
        let s = Sessions::default();
        let (id, csrf) = s.create("root", Role::Admin).expect("session");
        assert_ne!(id, csrf);
        let got = s.touch(&id).expect("alive");
        assert_eq!(
            (got.username.as_str(), got.csrf.as_str()),
            ("root", csrf.as_str())
        );
        assert!(s.touch("nope").is_none());
        assert!(
            !format!("{got:?}").contains(&csrf),
            "no CSRF token in Debug"
        );
        s.end(&id);
        assert!(s.touch(&id).is_none());
        let (a, _) = s.create("aud", Role::Auditor).expect("session");
        s.end_all("aud");
        assert!(s.touch(&a).is_none());
    }

    #[test]
    fn sessions_are_bounded() {
        let s = Sessions::default();
        let (first, _) = s.create("root", Role::Admin).expect("session");
        for _ in 0..MAX_SESSIONS {
            s.create("root", Role::Admin).expect("session");
        }
        assert_eq!(s.count(), MAX_SESSIONS);
        assert!(s.touch(&first).is_none(), "the oldest went first");
    }

    #[test]
    fn lockout_is_per_account_and_address() {
        let l = Lockout::default();
        let attacker: IpAddr = [192, 0, 2, 66].into();
        let admin: IpAddr = [192, 0, 2, 10].into();
        for _ in 0..MAX_ACCOUNT_FAILURES {
            assert!(l.locked(attacker, Some("root")).is_none());
            l.fail(attacker, Some("root"));
        }
        assert!(l.locked(attacker, Some("root")).is_some());
        assert!(l.locked(attacker, Some("other")).is_none(), "per account");
        assert!(
            l.locked(admin, Some("root")).is_none(),
            "not from another address"
        );
        for _ in 0..MAX_ADDRESS_FAILURES {
            l.fail(attacker, Some("x"));
        }
        assert!(
            l.locked(attacker, Some("other")).is_some(),
            "the address as a whole"
        );
        assert!(l.locked(admin, None).is_none());
        // IPv6 counts per /64.
        let a: IpAddr = "2001:db8::1".parse().expect("ip");
        let b: IpAddr = "2001:db8::2".parse().expect("ip");
        for _ in 0..MAX_ACCOUNT_FAILURES {
            l.fail(a, Some("root"));
        }
        assert!(l.locked(b, Some("root")).is_some());
        l.succeed(b, "root");
        assert!(l.locked(a, Some("root")).is_none());
    }
}
