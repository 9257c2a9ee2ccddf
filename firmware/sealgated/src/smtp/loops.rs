//! The box's loop marker on the mail the MX and submission relay (the hand-off's
//! `X-Sealgate-Loop`, the same key, format and check: `process.rs`).
//!
//! Every message the MX or submission relays carries `X-Sealgate-Loop: BOX-ID; dir=VERB;
//! t=UNIX; mac=HEX` (HMAC-SHA256 with the per-box key kept in the vault, over the box id, the
//! listener, the time and the Message-ID), after the markers of this box it already carried
//! (kept, since they verified). A message that arrives with more of this box's valid markers
//! than `[queue] max_loop_markers` has passed through the box that often: it is refused
//! (`554 5.4.6`, before the `250`), so a loop through another server ends with the sender's
//! bounce instead of endless traffic. (`[queue] max_received` ends the loops the marker does
//! not see, such as a server that rewrites the Message-ID.)
//!
//! Attacker: the sender of the message (anyone on the Internet at the MX, a user at
//! submission), who would like a marker to make the box skip its policy or scanning. Here a
//! marker never does: the MX and submission process every message whatever it carries; a
//! marker only counts towards a refusal. A forged or foreign marker (another box id, a bad
//! MAC, too old, another Message-ID) is not counted and is removed with every incoming
//! `X-Sealgate-*` field. A marker copied from mail the box once sent verifies only for that
//! Message-ID for a week; copying it only makes the box refuse the copier's own message.

use sealgate_smtp::Reply;

use super::process::{LOOP_HEADER, loop_value, own_markers};

/// The marker key, the box id and the limit.
pub(crate) struct Loops {
    key: aws_lc_rs::hmac::Key,
    box_id: String,
    max: usize,
}

impl Loops {
    pub(crate) fn new(key: aws_lc_rs::hmac::Key, box_id: String, max: usize) -> Loops {
        Loops { key, box_id, max }
    }

    /// The markers for submission's listeners: the key from the vault, the box id from the
    /// data directory (both as the hand-off's).
    pub(crate) fn open(
        data_dir: &std::path::Path,
        vault: &sealgate_vault::Vault,
        settings: &crate::settings::Settings,
    ) -> anyhow::Result<Loops> {
        Ok(Loops::new(
            super::loop_key(data_dir, vault)?,
            super::box_id(data_dir)?,
            settings.queue.max_loop_markers,
        ))
    }

    /// This box's valid markers in `msg` (their values, to be carried on).
    pub(crate) fn own(&self, msg: &[u8], now: i64) -> Vec<String> {
        own_markers(&self.key, &self.box_id, msg, now)
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    }

    /// `554 5.4.6` when `own` (from [`Loops::own`]) says the message is looping.
    pub(crate) fn refusal(&self, own: &[String]) -> Option<Reply> {
        (own.len() > self.max).then(|| {
            Reply::new(
                554,
                [5, 4, 6],
                format!(
                    "mail loop: the message passed through this box {} times already",
                    own.len()
                ),
            )
        })
    }

    /// `msg` with the markers `kept` and a new one of listener `dir` prepended.
    pub(crate) fn stamp(&self, dir: &str, kept: &[String], msg: &[u8], now: i64) -> Vec<u8> {
        let mut head = String::new();
        for v in kept {
            head.push_str(&format!("{LOOP_HEADER}: {v}\r\n"));
        }
        head.push_str(&format!(
            "{LOOP_HEADER}: {}\r\n",
            loop_value(&self.key, &self.box_id, dir, msg, now)
        ));
        let mut out = Vec::with_capacity(head.len() + msg.len());
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(msg);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loops(id: &str, key: &[u8]) -> Loops {
        Loops::new(
            aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key),
            id.into(),
            2,
        )
    }

    #[test]
    fn markers_count_only_when_they_are_this_boxs_and_verify() {
        let l = loops("box1", b"k1");
        let msg = b"Message-ID: <m1@example.org>\r\nSubject: s\r\n\r\nbody\r\n";
        let t = 1_700_000_000;
        let once = l.stamp("inbound", &[], msg, t);
        let kept = l.own(&once, t + 10);
        assert_eq!(kept.len(), 1);
        assert!(l.refusal(&kept).is_none());
        let twice = l.stamp("submit", &kept, msg, t + 20);
        let thrice = l.stamp("inbound", &l.own(&twice, t + 30), msg, t + 30);
        let own = l.own(&thrice, t + 40);
        assert_eq!(own.len(), 3);
        let r = l.refusal(&own).expect("loop");
        assert!(String::from_utf8_lossy(&r.to_bytes()).starts_with("554 5.4.6"));
        // Another box's markers, a forged MAC, another Message-ID, an old one: none count.
        let other = loops("box2", b"k2");
        assert!(other.own(&thrice, t + 40).is_empty());
        let forged = format!(
            "X-Sealgate-Loop: box1; dir=inbound; t={t}; mac={}\r\n",
            "00".repeat(32)
        );
        let mut m = forged.repeat(5).into_bytes();
        m.extend_from_slice(msg);
        assert!(l.own(&m, t).is_empty());
        let moved = String::from_utf8_lossy(&thrice).replace("m1@", "m2@");
        assert!(l.own(moved.as_bytes(), t + 40).is_empty());
        assert!(l.own(&thrice, t + 8 * 86_400).is_empty());
    }
}
