//! The MX's recipient check at the next hop (`[inbound] verify_recipients`, off by default):
//! at RCPT for an accepted domain the box asks the internal server (`[inbound] next_hop`,
//! with its TLS settings) `MAIL FROM:<>` / `RCPT TO:<address>` / `RSET` on a kept session
//! of that hop, and answers its client from that: taken `250`, refused (`5xx`) `550 5.1.1`,
//! anything else (a `4xx`, the null sender refused, the next hop down or slow) `450 4.4.3`,
//! so the sender tries again later and nothing is accepted that would bounce (Postfix's
//! `reject_unverified_recipient` with `unverified_recipient_defer_code = 450`). The answers
//! are cached in memory only (`verify_positive_ttl_secs`, `verify_negative_ttl_secs`, at
//! most `verify_cache_entries` addresses); temporary answers are not cached, but a next hop
//! that did not answer is not asked again for [`DOWN_FOR`].
//!
//! Attacker: **anyone on the Internet**, who would like to enumerate the organisation's
//! addresses (a dictionary of RCPTs, each answered from the internal server) and to make the
//! box hammer the internal server with probes. Bounds: every probe counts against the
//! client's address (IPv6: its /64), `verify_probes_per_minute` (answers from the cache are
//! free; beyond it `450 4.7.1`, no probe); at most [`PROBES_AT_ONCE`] probes run at once for
//! all clients; the cache answers repeated addresses. The probe never carries the client's
//! `MAIL FROM` (always `<>`) nor its text: the next hop's reply goes to the box's log only.
//! `postmaster` is never probed (RFC 5321 §4.5.1: it must be accepted).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sealgate_smtp::Reply;
use tokio::sync::Semaphore;

use super::client::{self, NextHop, Probe};
use crate::settings::Inbound;

/// Probes running at once, for all clients together.
pub(super) const PROBES_AT_ONCE: usize = 8;
/// How long a next hop that did not answer is not asked again (every RCPT meanwhile gets
/// `450`).
pub(super) const DOWN_FOR: Duration = Duration::from_secs(10);
/// How long one probe may take, waiting for a free slot included.
const PROBE_DEADLINE: Duration = Duration::from_secs(30);

/// The cache, the per-client budget and the next hop's state.
pub(super) struct Verifier {
    cache: Mutex<HashMap<String, (Instant, bool)>>,
    rate: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    running: Semaphore,
    down_until: Mutex<Option<Instant>>,
    positive: Duration,
    negative: Duration,
    entries: usize,
    per_minute: u32,
}

/// What to answer the client.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Answer {
    Accept,
    Refuse(Reply),
}

fn unknown(address: &str) -> Reply {
    Reply::new(
        550,
        [5, 1, 1],
        format!("<{}>: no such mailbox here", shown(address)),
    )
}

fn unsure() -> Reply {
    Reply::new(
        450,
        [4, 4, 3],
        "the recipient cannot be checked now, try again later",
    )
}

fn too_many() -> Reply {
    Reply::new(
        450,
        [4, 7, 1],
        "too many recipient checks from your address, try again later",
    )
}

fn shown(address: &str) -> String {
    address
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect()
}

impl Verifier {
    pub(super) fn new(i: &Inbound) -> Verifier {
        Verifier {
            cache: Mutex::new(HashMap::new()),
            rate: Mutex::new(HashMap::new()),
            running: Semaphore::new(PROBES_AT_ONCE),
            down_until: Mutex::new(None),
            positive: i.verify_positive_ttl_secs.duration(),
            negative: i.verify_negative_ttl_secs.duration(),
            entries: i.verify_cache_entries,
            per_minute: i.verify_probes_per_minute,
        }
    }

    /// The cached answer for `address`, if it is still fresh.
    fn cached(&self, address: &str) -> Option<bool> {
        let mut c = self.cache.lock().ok()?;
        match c.get(address) {
            Some((until, known)) if *until > Instant::now() => Some(*known),
            Some(_) => {
                c.remove(address);
                None
            }
            None => None,
        }
    }

    fn remember(&self, address: &str, known: bool) {
        let Ok(mut c) = self.cache.lock() else {
            return;
        };
        if c.len() >= self.entries && !c.contains_key(address) {
            let now = Instant::now();
            c.retain(|_, (until, _)| *until > now);
            // Still full: the entry closest to its end goes.
            if c.len() >= self.entries
                && let Some(k) = c
                    .iter()
                    .min_by_key(|(_, (u, _))| *u)
                    .map(|(k, _)| k.clone())
            {
                c.remove(&k);
            }
        }
        let ttl = if known { self.positive } else { self.negative };
        c.insert(address.to_string(), (Instant::now() + ttl, known));
    }

    /// Whether `ip` may cause one more probe this minute; counts it.
    fn budget(&self, ip: IpAddr) -> bool {
        const WINDOW: Duration = Duration::from_secs(60);
        let Ok(mut m) = self.rate.lock() else {
            return false;
        };
        if m.len() >= 65_536 {
            m.retain(|_, (t, _)| t.elapsed() < WINDOW);
        }
        let e = m
            .entry(super::inbound::rate_key(ip))
            .or_insert((Instant::now(), 0));
        if e.0.elapsed() >= WINDOW {
            *e = (Instant::now(), 0);
        }
        if e.1 >= self.per_minute {
            return false;
        }
        e.1 += 1;
        true
    }

    fn down(&self) -> bool {
        self.down_until
            .lock()
            .ok()
            .and_then(|d| *d)
            .is_some_and(|d| d > Instant::now())
    }

    fn set_down(&self) {
        if let Ok(mut d) = self.down_until.lock() {
            *d = Some(Instant::now() + DOWN_FOR);
        }
    }

    /// The answer for RCPT `address` (already accepted as one of the domains) from `ip`.
    pub(super) async fn check(
        &self,
        hop: &NextHop,
        hostname: &str,
        ip: IpAddr,
        address: &str,
    ) -> Answer {
        let local = address.rsplit_once('@').map_or(address, |(l, _)| l);
        if local.eq_ignore_ascii_case("postmaster") {
            return Answer::Accept;
        }
        match self.cached(address) {
            Some(true) => return Answer::Accept,
            Some(false) => return Answer::Refuse(unknown(address)),
            None => {}
        }
        if self.down() {
            return Answer::Refuse(unsure());
        }
        if !self.budget(ip) {
            tracing::info!(client = %ip, "recipient checks from this address over [inbound] verify_probes_per_minute");
            return Answer::Refuse(too_many());
        }
        let probe = tokio::time::timeout(PROBE_DEADLINE, async {
            let Ok(_slot) = self.running.acquire().await else {
                return Probe::Unsure("stopping".into());
            };
            client::probe(hop, hostname, address).await
        })
        .await
        .unwrap_or_else(|_| Probe::Unsure("the next hop did not answer in time".into()));
        match probe {
            Probe::Known => {
                self.remember(address, true);
                Answer::Accept
            }
            Probe::Unknown(why) => {
                tracing::info!(rcpt = %address.escape_debug(), next_hop = %why, "recipient unknown at the next hop");
                self.remember(address, false);
                Answer::Refuse(unknown(address))
            }
            Probe::Unsure(why) => {
                tracing::warn!(rcpt = %address.escape_debug(), next_hop = %why, "recipient check at the next hop failed: 450");
                if !why.starts_with("4") {
                    // No SMTP answer (connection, TLS, timeout): the next hop is down.
                    self.set_down();
                }
                Answer::Refuse(unsure())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Seconds;

    fn verifier(entries: usize) -> Verifier {
        Verifier::new(&Inbound {
            verify_cache_entries: entries,
            verify_probes_per_minute: 2,
            verify_negative_ttl_secs: Seconds(1),
            ..Inbound::default()
        })
    }

    #[test]
    fn the_cache_is_bounded_and_forgets() {
        let v = verifier(2);
        v.remember("a@example.org", true);
        v.remember("b@example.org", false);
        assert_eq!(v.cached("a@example.org"), Some(true));
        assert_eq!(v.cached("b@example.org"), Some(false));
        v.remember("c@example.org", true);
        assert_eq!(v.cache.lock().expect("cache").len(), 2);
        // The negative answer (1 s) was closest to its end.
        assert_eq!(v.cached("b@example.org"), None);
        assert_eq!(v.cached("c@example.org"), Some(true));
    }

    #[test]
    fn probes_per_client_are_bounded() {
        let v = verifier(10);
        let a: IpAddr = "192.0.2.1".parse().expect("address");
        let b: IpAddr = "2001:db8::1".parse().expect("address");
        let b2: IpAddr = "2001:db8::2".parse().expect("address");
        assert!(v.budget(a) && v.budget(a) && !v.budget(a));
        assert!(v.budget(b) && v.budget(b2) && !v.budget(b));
    }
}
