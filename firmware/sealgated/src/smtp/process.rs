//! What happens to a spooled message: result headers from outside removed, the loop marker
//! checked, the docking operation run (under `catch_unwind`), result headers added.
//!
//! Attackers: whoever writes the message (an outside sender for the decrypt listener, an
//! inside user for the encrypt one). Forged `X-Sealgate-*` fields (`X-Sealgate-Signature:
//! valid`, `X-Sealgate-Docking: ...; result=decrypted`) are removed on every path; a loop
//! marker is trusted only if its HMAC (per-box random key, never leaves the box) verifies over
//! this box's id, its time and the message's Message-ID; an encryption failure never relays
//! cleartext unless the policy says so.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use anyhow::Context;
use aws_lc_rs::hmac;
use sealgate_smime::message::RESULT_HEADER_PREFIX;
use sealgate_smime::mime::Entity;
use sealgate_vault::Vault;
use zeroize::Zeroizing;

use super::{Direction, Shared};
use crate::docking;
use crate::identity::{destroy_file, hex, random};
use crate::settings::{EncryptFailure, MissingPolicy};

/// The loop-stopping header.
pub(super) const LOOP_HEADER: &str = "X-Sealgate-Loop";
/// The result header of the hand-off.
pub(super) const RESULT_HEADER: &str = "X-Sealgate-Docking";
/// How old a loop marker may be and still stop processing (mail can wait in queues for
/// days); in the future, a few minutes of clock skew.
const LOOP_MAX_AGE: i64 = 7 * 86_400;
const LOOP_MAX_SKEW: i64 = 300;

/// What to do with a processed message.
#[derive(Debug)]
pub(super) enum Processed {
    /// Relay this to the next hop; the audit outcome.
    Relay { out: Vec<u8>, outcome: String },
    /// Keep it in `held/`, with the reason.
    Hold { reason: String, outcome: String },
    /// Stored in the quarantine (`quarantine.rs`) under this id: nothing to relay.
    Quarantined { qid: String },
}

/// The per-box loop key: random, kept in the vault encrypted under the vault key
/// ([`Vault::smtp_loop_key`]), created on first use. A clear `DATA/smtp-loop.key` of an
/// earlier version is moved into the vault (the same key, so markers already sent still
/// verify) and then overwritten and removed.
pub fn loop_key(data_dir: &Path, vault: &Vault) -> anyhow::Result<hmac::Key> {
    let clear = data_dir.join("smtp-loop.key");
    if clear.exists() {
        let old = Zeroizing::new(std::fs::read_to_string(&clear)?);
        if old.trim().len() == 64 && vault.smtp_loop_key()?.is_none() {
            vault
                .store_smtp_loop_key(
                    old.trim().as_bytes(),
                    "moved from smtp-loop.key into the vault",
                )
                .context("storing the SMTP loop key in the vault")?;
        }
        destroy_file(&clear)?;
    }
    let _ = std::fs::remove_file(data_dir.join("smtp-loop.key.tmp"));
    let key = match vault.smtp_loop_key()? {
        Some(k) => k,
        None => {
            let k = Zeroizing::new(hex(&random(32)?).into_bytes());
            vault
                .store_smtp_loop_key(&k, "created")
                .context("storing the SMTP loop key in the vault")?;
            k
        }
    };
    Ok(hmac::Key::new(hmac::HMAC_SHA256, &key))
}

/// Runs `f`, turning a panic into an error (its message).
pub(super) fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into())
    })
}

/// The message without any `X-Sealgate-*` header field (folded lines included), read by
/// the engine's MIME parser; the rest is kept byte for byte.
pub(super) fn strip_result_headers(msg: &[u8]) -> Vec<u8> {
    let entity = Entity::parse(msg);
    let mut header = entity.header_list();
    if header.remove_headers_with_prefix(RESULT_HEADER_PREFIX) == 0 {
        return msg.to_vec();
    }
    header.write_entity(&entity)
}

fn loop_input(box_id: &str, dir: &str, t: i64, message_id: &str) -> Vec<u8> {
    format!("sealgate-loop-v1\n{box_id}\n{dir}\n{t}\n{message_id}").into_bytes()
}

/// The loop header's value for a message the `dir` listener sends.
pub(super) fn loop_value(key: &hmac::Key, box_id: &str, dir: &str, msg: &[u8], now: i64) -> String {
    let mid = docking::message_id(msg).unwrap_or_default();
    let tag = hmac::sign(key, &loop_input(box_id, dir, now, &mid));
    super::marker::format(box_id, dir, now, tag.as_ref())
}

/// Whether the message carries a loop marker that this box's `dir` listener made and that
/// verifies. (A marker of the other listener does not count: a message this box decrypted
/// must still be encrypted when it comes to the encrypt listener.)
pub(super) fn loop_verified(
    key: &hmac::Key,
    box_id: &str,
    dir: &str,
    msg: &[u8],
    now: i64,
) -> bool {
    own_markers(key, box_id, msg, now)
        .iter()
        .any(|(d, _)| d == dir)
}

/// The loop markers in `msg` that this box made and that verify (over its id, the listener,
/// the time within [`LOOP_MAX_AGE`], the message's Message-ID): each one's listener and its
/// field value as it was written (unfolded). Anything else named `X-Sealgate-Loop` is not
/// one.
pub(super) fn own_markers(
    key: &hmac::Key,
    box_id: &str,
    msg: &[u8],
    now: i64,
) -> Vec<(String, String)> {
    let mid = docking::message_id(msg).unwrap_or_default();
    let entity = Entity::parse(msg);
    entity
        .headers_named(LOOP_HEADER)
        .filter_map(|field| {
            let value: String = field
                .value()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            let m = super::marker::parse(&value)?;
            let ok = m.box_id == box_id
                && m.t <= now.saturating_add(LOOP_MAX_SKEW)
                && now.saturating_sub(m.t) <= LOOP_MAX_AGE
                && hmac::verify(key, &loop_input(box_id, m.dir, m.t, &mid), &m.mac).is_ok();
            ok.then(|| (m.dir.to_string(), value.clone()))
        })
        .collect()
}

pub(super) fn header_value(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `X-Sealgate-Loop` and `X-Sealgate-Docking: VERB; RESULT` prepended to `body`.
fn with_headers(sh: &Shared, verb: &str, result: &str, body: &[u8], now: i64) -> Vec<u8> {
    let loop_line = format!(
        "{LOOP_HEADER}: {}\r\n",
        loop_value(&sh.loop_key, &sh.box_id, verb, body, now)
    );
    let header = format!("{RESULT_HEADER}: {verb}; {}\r\n", header_value(result));
    let mut out = Vec::with_capacity(body.len() + loop_line.len() + header.len());
    out.extend_from_slice(loop_line.as_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(body);
    out
}

/// Runs the docking operation and decides what to relay.
pub(super) fn process(
    sh: &Shared,
    direction: Direction,
    actor: &str,
    from: &str,
    to: &[String],
    msg: Vec<u8>,
    now: i64,
) -> Processed {
    let looped = loop_verified(&sh.loop_key, &sh.box_id, direction.verb(), &msg, now);
    let msg = strip_result_headers(&msg);
    let verb = direction.verb();
    if looped {
        return Processed::Relay {
            out: with_headers(sh, verb, "result=loop-not-processed", &msg, now),
            outcome: "loop-passed-unchanged".into(),
        };
    }
    let acting = crate::keys::Acting::new(sh.h.keys.as_ref(), actor.to_string());
    let keys = &acting;
    let failed = |p: &crate::problem::Problem| {
        let mut r = format!("result=failed; problem=\"{}\"", p.uri());
        if let Some(m) = &p.missing {
            r.push_str(&format!("; missing-certificates={}", m.join(",")));
        }
        r
    };
    match direction {
        // Processed by `inbound.rs` (the delivery loop calls it directly).
        Direction::Inbound | Direction::Submission => Processed::Hold {
            reason: "an inbound or submitted message reached the hand-off's processing".into(),
            outcome: "held:internal".into(),
        },
        Direction::Decrypt => match docking::decrypt(keys, &sh.h.anchors, &msg, to, false) {
            Ok((out, r)) => Processed::Relay {
                out: with_headers(sh, verb, &format!("result={}", r.status), &out, now),
                outcome: r.status.into(),
            },
            // Still encrypted (or not ours): passing it on leaks nothing.
            Err(p) => Processed::Relay {
                out: with_headers(sh, verb, &failed(&p), &msg, now),
                outcome: format!("failed:{}", p.kind),
            },
        },
        Direction::Encrypt => {
            let policy = &sh.h.settings;
            let plain_allowed = policy.smtp.encrypt_failure == EncryptFailure::SendPlain;
            let from = (!from.is_empty()).then_some(from);
            match docking::encrypt(
                keys,
                &policy.docking,
                &msg,
                from,
                to,
                policy.docking.missing,
                now,
            ) {
                Ok((out, r))
                    if r.status == "encrypted"
                        || plain_allowed
                        || policy.docking.missing == MissingPolicy::SendPlain =>
                {
                    let mut status = r.status.to_string();
                    if !r.missing.is_empty() {
                        status.push_str(&format!("; missing-certificates={}", r.missing.join(",")));
                    }
                    Processed::Relay {
                        out: with_headers(sh, verb, &format!("result={status}"), &out, now),
                        outcome: status,
                    }
                }
                Ok((_, r)) => Processed::Hold {
                    reason: format!(
                        "not encrypted: no recipient has a certificate ({})",
                        r.missing.join(", ")
                    ),
                    outcome: "held:not-encrypted".into(),
                },
                Err(p) if plain_allowed => Processed::Relay {
                    out: with_headers(sh, verb, &failed(&p), &msg, now),
                    outcome: format!("failed:{}", p.kind),
                },
                Err(p) => Processed::Hold {
                    reason: format!("cannot encrypt ({}): {}", p.kind, p.detail),
                    outcome: format!("held:{}", p.kind),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealgate_vault::SoftwareSealer;

    fn vault(dir: &Path) -> Vault {
        Vault::init(dir, &mut SoftwareSealer::danger_new())
            .expect("vault")
            .0
    }

    fn tag(k: &hmac::Key) -> Vec<u8> {
        hmac::sign(k, b"marker").as_ref().to_vec()
    }

    #[test]
    fn the_loop_key_is_kept_in_the_vault_not_in_a_file() {
        let d = tempfile::tempdir().expect("tmp");
        let v = vault(d.path());
        let k = loop_key(d.path(), &v).expect("create");
        assert!(
            !d.path().join("smtp-loop.key").exists(),
            "no clear key file"
        );
        let stored = v.smtp_loop_key().expect("read").expect("stored");
        assert_eq!(stored.len(), 64);
        for entry in std::fs::read_dir(d.path()).expect("dir").flatten() {
            if entry.path().is_file() {
                let bytes = std::fs::read(entry.path()).expect("read");
                assert!(
                    !bytes.windows(stored.len()).any(|w| w == stored.as_slice()),
                    "{} holds the loop key in clear",
                    entry.path().display()
                );
            }
        }
        // A restart uses the same key: markers sent before it still verify.
        let again = loop_key(d.path(), &v).expect("load");
        assert_eq!(tag(&k), tag(&again));
        // Another box has another key.
        let other = tempfile::tempdir().expect("tmp");
        let theirs = loop_key(other.path(), &vault(other.path())).expect("other");
        assert_ne!(tag(&k), tag(&theirs));
    }

    /// Regression: the key was kept in clear at DATA/smtp-loop.key.
    #[test]
    fn a_clear_loop_key_file_of_an_earlier_version_moves_into_the_vault() {
        let d = tempfile::tempdir().expect("tmp");
        let old = "ab".repeat(32);
        std::fs::write(d.path().join("smtp-loop.key"), format!("{old}\n")).expect("old file");
        let v = vault(d.path());
        let k = loop_key(d.path(), &v).expect("migrate");
        assert!(
            !d.path().join("smtp-loop.key").exists(),
            "the clear file is gone"
        );
        assert_eq!(
            tag(&k),
            tag(&hmac::Key::new(hmac::HMAC_SHA256, old.as_bytes())),
            "the same key as before"
        );
        assert_eq!(
            v.smtp_loop_key().expect("read").expect("stored").as_slice(),
            old.as_bytes()
        );
        let audit = v.audit().expect("audit");
        assert!(
            audit.iter().any(|e| e.action == "vault.smtp-loop-key"
                && e.detail.contains("moved from smtp-loop.key"))
        );
        // A clear file left beside a stored key (e.g. restored from a backup) does not
        // replace the vault's key; it is removed all the same.
        std::fs::write(d.path().join("smtp-loop.key"), "cd".repeat(32)).expect("stray file");
        let again = loop_key(d.path(), &v).expect("load");
        assert_eq!(tag(&again), tag(&k));
        assert!(!d.path().join("smtp-loop.key").exists());
    }

    #[test]
    fn every_result_header_is_removed_with_its_continuation_lines() {
        let msg = b"X-Sealgate-Signature: valid\r\nFrom: a@b\r\nx-sealgate-docking: decrypt;\r\n result=decrypted\r\nX-Sealgatex: keep\r\nX-SEALGATE-LOOP : x\r\nSubject: s\r\n\r\nX-Sealgate-Signature: body text stays\r\n";
        assert_eq!(
            strip_result_headers(msg),
            b"From: a@b\r\nX-Sealgatex: keep\r\nSubject: s\r\n\r\nX-Sealgate-Signature: body text stays\r\n".to_vec()
        );
        // No body, LF line ends, nothing to remove.
        assert_eq!(
            strip_result_headers(b"X-Sealgate-A: 1\nB: 2\n"),
            b"B: 2\n".to_vec()
        );
        assert_eq!(strip_result_headers(b""), b"".to_vec());
    }

    #[test]
    fn only_a_keyed_loop_marker_over_this_message_id_verifies() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"k1");
        let other = hmac::Key::new(hmac::HMAC_SHA256, b"k2");
        let body = b"Message-ID: <1@x>\r\nSubject: s\r\n\r\nbody\r\n";
        let now = 1_700_000_000;
        let mark = |k: &hmac::Key, id: &str, t: i64, body: &[u8]| {
            let mut m = format!(
                "X-Sealgate-Loop: {}\r\n",
                loop_value(k, id, "decrypt", body, t)
            )
            .into_bytes();
            m.extend_from_slice(body);
            m
        };
        assert!(loop_verified(
            &key,
            "box",
            "decrypt",
            &mark(&key, "box", now, body),
            now
        ));
        assert!(loop_verified(
            &key,
            "box",
            "decrypt",
            &mark(&key, "box", now - 3600, body),
            now
        ));
        // Unkeyed (the old format), another key, another box, too old, from the future.
        assert!(!loop_verified(
            &key,
            "box",
            "decrypt",
            b"X-Sealgate-Loop: box\r\n\r\n",
            now
        ));
        assert!(!loop_verified(
            &key,
            "box",
            "decrypt",
            &mark(&other, "box", now, body),
            now
        ));
        assert!(!loop_verified(
            &key,
            "box",
            "decrypt",
            &mark(&key, "box2", now, body),
            now
        ));
        assert!(!loop_verified(
            &key,
            "box",
            "decrypt",
            &mark(&key, "box", now - 8 * 86_400, body),
            now
        ));
        assert!(!loop_verified(
            &key,
            "box",
            "decrypt",
            &mark(&key, "box", now + 3600, body),
            now
        ));
        // Made by the other listener.
        let mut enc = format!(
            "X-Sealgate-Loop: {}\r\n",
            loop_value(&key, "box", "encrypt", body, now)
        )
        .into_bytes();
        enc.extend_from_slice(body);
        assert!(loop_verified(&key, "box", "encrypt", &enc, now));
        assert!(!loop_verified(&key, "box", "decrypt", &enc, now));
        // Moved onto another message (another Message-ID).
        let mut moved = mark(&key, "box", now, body);
        let at = moved.windows(5).position(|w| w == b"<1@x>").expect("id");
        moved[at + 1] = b'2';
        assert!(!loop_verified(&key, "box", "decrypt", &moved, now));
        // Garbage values do not panic.
        for v in [
            "",
            ";;;",
            "box; t=; mac=",
            "box; t=1; mac=zz",
            "box; t=99999999999999999999; mac=00",
            "box; t=-9223372036854775808; mac=0",
            "box; dir=decrypt; t=1; mac=0",
            "box; dir=decrypt; t=x; mac=00",
            ";;;;;",
        ] {
            let m = format!("X-Sealgate-Loop: {v}\r\n\r\n");
            assert!(!loop_verified(&key, "box", "decrypt", m.as_bytes(), now));
        }
    }

    #[test]
    #[allow(clippy::panic)]
    fn a_panic_becomes_an_error() {
        assert_eq!(guarded(|| 7), Ok(7));
        let r: Result<(), String> = guarded(|| panic!("engine bug"));
        assert_eq!(r, Err("engine bug".into()));
    }
}
