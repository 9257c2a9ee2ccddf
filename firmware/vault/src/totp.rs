//! TOTP (RFC 6238: HMAC-SHA-1, 6 digits, 30-second steps) as an administrator account's
//! optional second factor.
//!
//! The box makes the secret (160 random bits, RFC 4226's recommended length) and shows it
//! once, as an `otpauth://` URI and in base32; it is stored in the account's record sealed
//! with AES-256-GCM under the vault key (associated data: the account's name, so a sealed
//! secret cannot be moved to another account), like the TLS key. It becomes active only when
//! a first valid code confirms it, so a scan that went wrong never locks anyone out.
//!
//! A code is accepted for the step before, the current and the next one (clock drift), and
//! each step is usable once: the account keeps the last step that logged in (in the same
//! write transaction that checks it, so two requests racing with one code cannot both pass),
//! and only a later step is taken, across restarts too.

use aws_lc_rs::hmac;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::cipher;
use crate::error::{Result, VaultError};
use crate::store::Vault;

/// Seconds per step.
pub const TOTP_STEP_SECS: i64 = 30;
/// Digits of a code.
pub const TOTP_DIGITS: u32 = 6;
/// Bytes of a secret (RFC 4226 §4 recommends 160 bits).
const SECRET_BYTES: usize = 20;

/// A TOTP secret as it leaves the vault once, at enrolment. Its `Debug` shows nothing.
pub struct TotpSecret(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSecret(..)")
    }
}

impl TotpSecret {
    /// The secret in base32 (RFC 4648, no padding), as authenticator apps take it typed.
    pub fn base32(&self) -> Zeroizing<String> {
        Zeroizing::new(base32(&self.0))
    }

    /// The `otpauth://totp/` URI (Google Authenticator's key URI format) for a QR code.
    pub fn otpauth_uri(&self, issuer: &str, account: &str) -> Zeroizing<String> {
        let label = format!("{}:{}", uri_escape(issuer), uri_escape(account));
        Zeroizing::new(format!(
            "otpauth://totp/{label}?secret={}&issuer={}&algorithm=SHA1&digits={TOTP_DIGITS}&period={TOTP_STEP_SECS}",
            self.base32().as_str(),
            uri_escape(issuer)
        ))
    }
}

/// HOTP (RFC 4226) of `counter` under `secret`, `digits` long.
pub(crate) fn hotp(secret: &[u8], counter: u64, digits: u32) -> u32 {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = hmac::sign(&key, &counter.to_be_bytes());
    let mac = tag.as_ref();
    // Dynamic truncation (RFC 4226 §5.3); an HMAC-SHA-1 tag is 20 bytes.
    let offset = usize::from(mac[mac.len() - 1] & 0x0f);
    let bin = (u32::from(mac[offset] & 0x7f) << 24)
        | (u32::from(mac[offset + 1]) << 16)
        | (u32::from(mac[offset + 2]) << 8)
        | u32::from(mac[offset + 3]);
    bin % 10u32.pow(digits)
}

/// The step of Unix time `now`.
pub(crate) fn step_at(now: i64) -> u64 {
    u64::try_from(now.div_euclid(TOTP_STEP_SECS)).unwrap_or(0)
}

/// The step (of `now - 1 step ..= now + 1 step`) whose code is `code`, if any; `None` also
/// for anything that is not exactly [`TOTP_DIGITS`] digits.
fn matching_step(secret: &[u8], code: &str, now: i64) -> Option<u64> {
    let code = code.trim();
    if code.len() != TOTP_DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = step_at(now);
    let mut found = None;
    // Every candidate is computed and compared in constant time, whichever matches.
    for step in [now.saturating_sub(1), now, now + 1] {
        let want = format!(
            "{:0width$}",
            hotp(secret, step, TOTP_DIGITS),
            width = TOTP_DIGITS as usize
        );
        if aws_lc_rs::constant_time::verify_slices_are_equal(want.as_bytes(), code.as_bytes())
            .is_ok()
        {
            found = Some(step);
        }
    }
    found
}

/// RFC 4648 base32, upper case, no padding.
fn base32(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let (mut buf, mut bits) = (0u32, 0u32);
    for &b in data {
        buf = (buf << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            out.push(char::from(ALPHABET[((buf >> (bits - 5)) & 31) as usize]));
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buf << (5 - bits)) & 31) as usize]));
    }
    out
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn uri_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// An account's TOTP as stored in its record.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoredTotp {
    /// `nonce || ciphertext || tag` of the secret, AAD = [`totp_aad`] of the account.
    #[serde(with = "crate::record::b64")]
    pub sealed: Vec<u8>,
    /// Confirmed by a first valid code (only then does login ask for one).
    pub active: bool,
    /// The last step that was used (each is used once).
    pub last_step: u64,
}

fn totp_aad(username: &str) -> Vec<u8> {
    format!("sealgate admin totp {username}").into_bytes()
}

impl Vault {
    fn open_totp(&self, username: &str, t: &StoredTotp) -> Result<Zeroizing<Vec<u8>>> {
        cipher::open(self.key.bytes(), &totp_aad(username), &t.sealed).ok_or_else(|| {
            VaultError::Corrupt(format!("the TOTP secret of {username:?} does not decrypt"))
        })
    }

    /// Starts (or restarts) `username`'s TOTP enrolment: a new secret, shown once, that
    /// becomes active at [`Vault::confirm_totp`]. Refused while TOTP is active. Audited
    /// (`admin.totp-enrol`, the account as actor).
    pub fn start_totp_enrolment(&self, username: &str) -> Result<TotpSecret> {
        let mut secret = Zeroizing::new(vec![0u8; SECRET_BYTES]);
        cipher::random(&mut secret)?;
        let name = crate::normalise_username(username)?;
        let sealed = cipher::seal(self.key.bytes(), &totp_aad(&name), &secret)?;
        self.audited_by(
            &name,
            |txn| {
                self.update_account(txn, &name, |a| {
                    if a.totp.as_ref().is_some_and(|t| t.active) {
                        return Err(VaultError::Usage(
                            "TOTP is on for this account already: turn it off first".into(),
                        ));
                    }
                    a.totp = Some(StoredTotp {
                        sealed,
                        active: false,
                        last_step: 0,
                    });
                    Ok(())
                })
            },
            "admin.totp-enrol",
            &name,
            "",
        )?;
        Ok(TotpSecret(secret))
    }

    /// Confirms `username`'s pending enrolment with a first code at Unix time `now`:
    /// `Ok(true)` and TOTP is active (audited `admin.totp-enable`); `Ok(false)`: wrong code,
    /// nothing changed.
    pub fn confirm_totp(&self, username: &str, code: &str, now: i64) -> Result<bool> {
        let name = crate::normalise_username(username)?;
        let r = self.audited_by(
            &name,
            |txn| {
                self.update_account(txn, &name, |a| {
                    let t = match &a.totp {
                        Some(t) if !t.active => t.clone(),
                        Some(_) => {
                            return Err(VaultError::Usage("TOTP is on already".into()));
                        }
                        None => {
                            return Err(VaultError::Usage(
                                "no TOTP enrolment is pending: start one first".into(),
                            ));
                        }
                    };
                    let secret = self.open_totp(&name, &t)?;
                    match matching_step(&secret, code, now) {
                        Some(step) => {
                            a.totp = Some(StoredTotp {
                                active: true,
                                last_step: step,
                                ..t
                            });
                            Ok(())
                        }
                        None => Err(VaultError::Usage(WRONG_CODE.into())),
                    }
                })
            },
            "admin.totp-enable",
            &name,
            "",
        );
        match r {
            Ok(()) => Ok(true),
            Err(VaultError::Usage(t)) if t == WRONG_CODE => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether `username` has TOTP active.
    pub fn totp_active(&self, username: &str) -> Result<bool> {
        let name = crate::normalise_username(username).unwrap_or_default();
        Ok(self
            .stored_accounts()?
            .iter()
            .any(|a| a.username == name && a.totp.as_ref().is_some_and(|t| t.active)))
    }

    /// Checks a login's code for `username` at Unix time `now`: `Ok(true)` once per step
    /// (the step is recorded in the same write transaction), `Ok(false)` for a wrong,
    /// malformed or already used code, or an account without active TOTP.
    pub fn check_totp(&self, username: &str, code: &str, now: i64) -> Result<bool> {
        let name = crate::normalise_username(username).unwrap_or_default();
        let txn = self.begin_write()?;
        let r = self.update_account(&txn, &name, |a| {
            let Some(t) = a.totp.as_mut().filter(|t| t.active) else {
                return Err(VaultError::Usage(WRONG_CODE.into()));
            };
            let secret = self.open_totp(&name, t)?;
            match matching_step(&secret, code, now) {
                Some(step) if step > t.last_step => {
                    t.last_step = step;
                    Ok(())
                }
                _ => Err(VaultError::Usage(WRONG_CODE.into())),
            }
        });
        match r {
            Ok(()) => {
                txn.commit()?;
                Ok(true)
            }
            Err(VaultError::Usage(t)) if t == WRONG_CODE => Ok(false),
            Err(VaultError::NoKey(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Turns `username`'s TOTP off (active or pending): `Ok(false)` if it had none. Audited
    /// (`admin.totp-disable`, `actor` = who asked).
    pub fn disable_totp(&self, actor: &str, username: &str) -> Result<bool> {
        let name = crate::normalise_username(username)?;
        if !self
            .stored_accounts()?
            .iter()
            .any(|a| a.username == name && a.totp.is_some())
        {
            if self.admin_account(&name)?.is_none() {
                return Err(VaultError::NoKey(format!("no account {name:?}")));
            }
            return Ok(false);
        }
        self.audited_by(
            actor,
            |txn| {
                self.update_account(txn, &name, |a| {
                    a.totp = None;
                    Ok(())
                })
            },
            "admin.totp-disable",
            &name,
            "",
        )?;
        Ok(true)
    }
}

const WRONG_CODE: &str = "the TOTP code is wrong";

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::SoftwareSealer;

    /// RFC 6238 appendix B, SHA-1 (8 digits there; the box uses the low 6 of the same value).
    #[test]
    fn rfc6238_vectors() {
        let secret = b"12345678901234567890";
        for (t, code) in [
            (59i64, 94287082u32),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
            (20000000000, 65353130),
        ] {
            assert_eq!(hotp(secret, step_at(t), 8), code, "T = {t}");
            assert_eq!(hotp(secret, step_at(t), 6), code % 1_000_000, "T = {t}");
        }
        // RFC 4226 appendix D (HOTP, counter 0 and 9).
        assert_eq!(hotp(secret, 0, 6), 755224);
        assert_eq!(hotp(secret, 9, 6), 520489);
        // 6 digits, zero-padded, within one step either side only.
        assert_eq!(matching_step(secret, "081804", 1111111109), Some(37037036));
        assert_eq!(
            matching_step(secret, "081804", 1111111109 + 30),
            Some(37037036)
        );
        assert_eq!(matching_step(secret, "081804", 1111111109 + 60), None);
        assert_eq!(matching_step(secret, "81804", 1111111109), None);
        assert_eq!(matching_step(secret, "0818O4", 1111111109), None);
        assert_eq!(matching_step(secret, "", 1111111109), None);
    }

    #[test]
    fn base32_and_uri() {
        // RFC 4648 §10.
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"f"), "MY");
        assert_eq!(
            base32(b"12345678901234567890"),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
        let s = TotpSecret(Zeroizing::new(b"12345678901234567890".to_vec()));
        assert_eq!(
            s.otpauth_uri("Sealgate box", "root").as_str(),
            "otpauth://totp/Sealgate%20box:root?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Sealgate%20box&algorithm=SHA1&digits=6&period=30"
        );
        assert_eq!(format!("{s:?}"), "TotpSecret(..)");
    }

    fn code(secret: &TotpSecret, now: i64) -> String {
        format!("{:06}", hotp(&secret.0, step_at(now), 6))
    }

    #[test]
    fn enrol_confirm_login_once_per_step_and_disable() {
        let d = tempfile::tempdir().unwrap();
        let (v, _) = Vault::init(d.path(), &mut SoftwareSealer::danger_new()).unwrap();
        v.create_first_admin("setup-token", "root", "correct horse battery")
            .unwrap();
        let now = 1_700_000_000;
        assert!(!v.check_totp("root", "123456", now).unwrap(), "not on yet");
        let s = v.start_totp_enrolment("root").unwrap();
        assert!(!v.totp_active("root").unwrap(), "pending until confirmed");
        assert!(!v.check_totp("root", &code(&s, now), now).unwrap());
        assert!(!v.confirm_totp("root", "000000", now).unwrap() || code(&s, now) == "000000");
        assert!(v.confirm_totp("root", &code(&s, now), now).unwrap());
        assert!(v.totp_active("root").unwrap());
        assert!(v.admin_account("root").unwrap().unwrap().totp);
        assert!(v.start_totp_enrolment("root").is_err(), "on already");
        // The confirming step is used; the next works once; an older one never.
        assert!(!v.check_totp("root", &code(&s, now), now).unwrap());
        let later = now + 30;
        assert!(v.check_totp("root", &code(&s, later), later).unwrap());
        assert!(
            !v.check_totp("root", &code(&s, later), later).unwrap(),
            "replayed"
        );
        assert!(!v.check_totp("root", &code(&s, now), later).unwrap());
        // The secret is sealed, never in clear in the record.
        let stored = v.stored_accounts().unwrap();
        let json = String::from_utf8(serde_json::to_vec(&stored[0].totp).unwrap()).unwrap();
        assert!(!json.contains(s.base32().as_str()));
        assert!(v.disable_totp("root", "root").unwrap());
        assert!(!v.disable_totp("root", "root").unwrap());
        assert!(matches!(
            v.disable_totp("root", "nobody"),
            Err(VaultError::NoKey(_))
        ));
        assert!(!v.totp_active("root").unwrap());
        let log = v.audit().unwrap();
        for a in [
            "admin.totp-enrol",
            "admin.totp-enable",
            "admin.totp-disable",
        ] {
            assert!(log.iter().any(|e| e.action == a), "{a}");
        }
    }
}
