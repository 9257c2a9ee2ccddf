//! Messages per hour, counted in memory from the docking audit log's records (every message
//! the box handles, over the docking API, SMTP, submission or IMAP, is recorded there once):
//! signed, encrypted, decrypted, verified and refused, for the last [`HOURS`] hours since the
//! daemon started. Shown by `GET /api/v1/admin/status` (`messages`) and the web UI's
//! dashboard. Not persisted: a restart starts from zero.
//!
//! What counts is what the record says: SMTP records name the result (`encrypted`, `signed`,
//! `decrypted`; `not-encrypted` and the like are not counted), docking calls only their
//! operation, so a 2xx docking `decrypt` counts as decrypted even when the message it was
//! given was plain and passed through. Refused: a 4xx/5xx answer, a held or bounced message;
//! calls refused for who made them (401, 403, 429) are not messages and are not counted.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

/// Hours kept.
pub const HOURS: usize = 24;

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Signed,
    Encrypted,
    Decrypted,
    Verified,
    Refused,
}

/// One hour's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Hour {
    /// Its start (Unix seconds, a multiple of 3600).
    pub start: u64,
    pub signed: u64,
    pub encrypted: u64,
    pub decrypted: u64,
    pub verified: u64,
    pub refused: u64,
}

/// The counters.
#[derive(Default)]
pub struct Counters {
    hours: Mutex<VecDeque<Hour>>,
}

/// Outcomes of a call that never got to a message (who called, not what they sent).
const NOT_A_MESSAGE: [&str; 3] = ["unauthorized", "forbidden", "too-many-failed-attempts"];

/// The kind of a docking audit record, or `None` when it is not about a message.
pub fn classify(operation: &str, outcome: &str, status: u16) -> Option<Kind> {
    let op = operation.split_whitespace().next().unwrap_or("");
    let message = matches!(
        op,
        "decrypt"
            | "encrypt"
            | "sign"
            | "verify"
            | "smtp-decrypt"
            | "smtp-encrypt"
            | "smtp-inbound"
            | "submission"
            | "imap-decrypt"
    );
    if !message || NOT_A_MESSAGE.contains(&outcome) {
        return None;
    }
    if status >= 400
        || outcome.starts_with("failed")
        || outcome.starts_with("held")
        || outcome == "bounced"
    {
        return Some(Kind::Refused);
    }
    // SMTP records name what was done; docking calls say `ok` for their operation.
    match (outcome, op) {
        ("encrypted", _) | (_, "encrypt" | "submission") => Some(Kind::Encrypted),
        ("signed", _) | (_, "sign") => Some(Kind::Signed),
        ("decrypted", _) | (_, "decrypt" | "imap-decrypt") => Some(Kind::Decrypted),
        (_, "verify") => Some(Kind::Verified),
        _ => None,
    }
}

impl Counters {
    /// Counts one record made at `now` (Unix seconds).
    pub fn count(&self, kind: Kind, now: u64) {
        let start = now - now % 3600;
        let Ok(mut hours) = self.hours.lock() else {
            return;
        };
        if hours.back().is_none_or(|h| h.start != start) {
            hours.push_back(Hour {
                start,
                ..Hour::default()
            });
        }
        while hours
            .front()
            .is_some_and(|h| h.start + (HOURS as u64) * 3600 <= start)
        {
            hours.pop_front();
        }
        if let Some(h) = hours.back_mut() {
            let c = match kind {
                Kind::Signed => &mut h.signed,
                Kind::Encrypted => &mut h.encrypted,
                Kind::Decrypted => &mut h.decrypted,
                Kind::Verified => &mut h.verified,
                Kind::Refused => &mut h.refused,
            };
            *c += 1;
        }
    }

    /// The last [`HOURS`] hours before `now`, oldest first, hours without messages included.
    pub fn hours(&self, now: u64) -> Vec<Hour> {
        let current = now - now % 3600;
        let kept: Vec<Hour> = self
            .hours
            .lock()
            .map(|h| h.iter().copied().collect())
            .unwrap_or_default();
        (0..HOURS as u64)
            .rev()
            .map(|back| current.saturating_sub(back * 3600))
            .map(|start| {
                kept.iter()
                    .find(|h| h.start == start)
                    .copied()
                    .unwrap_or(Hour {
                        start,
                        ..Hour::default()
                    })
            })
            .collect()
    }
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_sorted_into_kinds() {
        assert_eq!(classify("decrypt", "ok", 200), Some(Kind::Decrypted));
        assert_eq!(classify("encrypt", "ok", 200), Some(Kind::Encrypted));
        assert_eq!(classify("sign", "ok", 200), Some(Kind::Signed));
        assert_eq!(classify("verify", "ok", 200), Some(Kind::Verified));
        assert_eq!(
            classify("smtp-encrypt", "encrypted", 250),
            Some(Kind::Encrypted)
        );
        assert_eq!(classify("smtp-encrypt", "signed", 250), Some(Kind::Signed));
        assert_eq!(
            classify("smtp-decrypt", "decrypted", 250),
            Some(Kind::Decrypted)
        );
        assert_eq!(classify("smtp-decrypt", "not-encrypted", 250), None);
        assert_eq!(
            classify("smtp-encrypt", "held:not-encrypted", 550),
            Some(Kind::Refused)
        );
        assert_eq!(
            classify("smtp-encrypt", "bounced", 550),
            Some(Kind::Refused)
        );
        assert_eq!(
            classify("imap-decrypt INBOX uidvalidity=1 uid=2", "ok", 200),
            Some(Kind::Decrypted)
        );
        assert_eq!(
            classify("decrypt", "invalid-message", 422),
            Some(Kind::Refused)
        );
        // Who called, not a message: not counted.
        assert_eq!(classify("decrypt", "unauthorized", 401), None);
        assert_eq!(classify("certificates", "ok", 200), None);
    }

    #[test]
    fn hours_roll_over_and_old_ones_go() {
        let c = Counters::default();
        let t0: u64 = 500_000 * 3600;
        c.count(Kind::Encrypted, t0 + 10);
        c.count(Kind::Encrypted, t0 + 20);
        c.count(Kind::Refused, t0 + 3600);
        let h = c.hours(t0 + 3600 + 5);
        assert_eq!(h.len(), HOURS);
        assert_eq!(h[HOURS - 1].refused, 1);
        assert_eq!(h[HOURS - 2].encrypted, 2);
        assert_eq!(h[HOURS - 2].start, t0);
        // A day later the first hour is gone.
        c.count(Kind::Signed, t0 + 25 * 3600);
        let h = c.hours(t0 + 25 * 3600);
        assert!(h.iter().all(|x| x.encrypted == 0));
        assert_eq!(h[HOURS - 1].signed, 1);
        assert_eq!(c.hours.lock().expect("lock").len(), 1);
    }
}
